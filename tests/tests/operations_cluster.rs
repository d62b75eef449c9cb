//! The deployed NATS shape on one machine: a three-node JetStream cluster, `NATS_URL`
//! listing all three, streams and consumers with three replicas. Replicas starting
//! together on a fresh cluster all start; losing the node a program is connected to
//! does not stop an upload and its event.

use std::time::{Duration, Instant};

use async_nats::jetstream;
use reseller_kit::app::Platform;
use reseller_kit::config::CommonConfig;
use reseller_kit::subjects;
use reseller_tests::clients::reseller;
use reseller_tests::cluster::nats::NatsCluster;
use reseller_tests::db::TestDb;
use reseller_tests::fixtures::{active_customer, devices_shown, imei, upload};
use reseller_tests::wait::eventually_within;
use reseller_tests::{StackOptions, TestStack};

/// How many servers hold the stream (the leader and its followers).
async fn stream_copies(js: &jetstream::Context) -> usize {
    let mut stream = js
        .get_stream(subjects::EVENTS_STREAM)
        .await
        .expect("stream");
    let info = stream.info().await.expect("stream info");
    info.cluster
        .as_ref()
        .map(|c| usize::from(c.leader.is_some()) + c.replicas.len())
        .unwrap_or(1)
}

#[tokio::test]
async fn eight_replicas_starting_together_on_a_fresh_cluster_all_start() {
    reseller_kit::telemetry::init_with_default(reseller_kit::config::LogFormat::Text, "warn");
    let dir = tempfile::tempdir().expect("temp dir");
    let mut cluster = NatsCluster::unstarted(dir.path(), 3);
    let db = TestDb::create().await;
    let mut config = CommonConfig::new(&db.url, &cluster.url_list(), "secret");
    config.nats_stream_replicas = 3;
    config.database_max_connections = 2;
    // All at once, before the servers even listen (as Kubernetes starts them beside a
    // new cluster); the cluster then comes up and elects its JetStream leader.
    let started = Instant::now();
    let replicas: Vec<_> = (0..8)
        .map(|_| {
            let config = config.clone();
            tokio::spawn(async move { Platform::connect(&config).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    cluster
        .start_all()
        .await
        .unwrap_or_else(|e| panic!("the NATS cluster did not start: {e:#}"));
    let mut platforms = Vec::new();
    for (i, replica) in futures::future::join_all(replicas)
        .await
        .into_iter()
        .enumerate()
    {
        platforms.push(
            replica
                .unwrap()
                .unwrap_or_else(|e| panic!("replica {i}: {e:#}")),
        );
    }
    eprintln!(
        "8 replicas started with the cluster 0.5 s behind them; all set up after {:?}",
        started.elapsed()
    );
    assert_eq!(stream_copies(&platforms[0].js).await, 3);
    let dead_letters = platforms[0]
        .js
        .get_stream(subjects::DEAD_LETTER_STREAM)
        .await
        .expect("dead-letter stream");
    assert_eq!(dead_letters.cached_info().config.num_replicas, 3);
}

/// Waits up to 30 s until the view shows `n` devices; returns how long it took.
async fn until_shown(stack: &TestStack, knox_id: &str, n: usize) -> Duration {
    let started = Instant::now();
    let acme = reseller(stack, "acme");
    let what = format!("{n} devices shown");
    eventually_within(&what, Duration::from_secs(30), || async {
        (devices_shown(&acme, knox_id).await == n).then_some(())
    })
    .await;
    started.elapsed()
}

#[tokio::test]
async fn an_upload_and_its_event_flow_after_the_connected_node_is_killed() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut cluster = NatsCluster::start(dir.path(), 3)
        .await
        .unwrap_or_else(|e| panic!("the NATS cluster did not start: {e:#}"));
    let db = TestDb::create().await;
    let stack = TestStack::start_on(
        StackOptions::default(),
        db,
        None,
        &cluster.url_list(),
        |config| {
            config.nats_stream_replicas = 3;
        },
    )
    .await;
    assert_eq!(stream_copies(&stack.platform.js).await, 3);

    active_customer(&stack, "acme", "100000000001", "Acme").await;
    let first: Vec<String> = (0..5).map(imei).collect();
    upload(&stack, "acme", "100000000001", &first)
        .await
        .expect("upload");
    until_shown(&stack, "100000000001", 5).await;

    // The durable consumers keep as many replicas as the stream.
    let stream = stack
        .platform
        .js
        .get_stream(subjects::EVENTS_STREAM)
        .await
        .unwrap();
    let consumer = stream
        .consumer_info(reporting_service::CONSUMER)
        .await
        .unwrap();
    let copies = consumer
        .cluster
        .as_ref()
        .map(|c| usize::from(c.leader.is_some()) + c.replicas.len());
    assert_eq!(copies, Some(3), "{:?}", consumer.cluster);

    let port = stack.platform.nats.server_info().port;
    let node = cluster
        .node_on(port)
        .expect("connected to a node of the cluster");
    cluster.kill(node).await.expect("kill the connected node");
    let killed = Instant::now();

    let second: Vec<String> = (5..10).map(imei).collect();
    // The upload itself needs only PostgreSQL and customer-service; its event needs the
    // relay to find another node and the stream its leader.
    upload(&stack, "acme", "100000000001", &second)
        .await
        .expect("upload after the kill");
    until_shown(&stack, "100000000001", 10).await;
    let moved_to = stack.platform.nats.server_info().port;
    eprintln!(
        "killed node {node} (port {port}); the client moved to port {moved_to}; the upload's \
         event was in the view {:?} after the kill",
        killed.elapsed()
    );
    assert_ne!(moved_to, port);
}
