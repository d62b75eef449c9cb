//! The operator's NATS and start-up settings on one server: a malformed `NATS_URL` fails
//! at once, stream settings only grow, a consumer says loudly which events a stream limit
//! removed before it read them, and replicas starting together (migrations, streams)
//! all start.

use std::time::{Duration, Instant};

use async_nats::jetstream;
use reseller_kit::app::Platform;
use reseller_kit::config::CommonConfig;
use reseller_kit::lost_events::lost_events_total;
use reseller_kit::stream::{StreamSettings, ensure_streams};
use reseller_kit::subjects;
use reseller_proto::v1::{AccountKind, AccountRegistered, event::Payload};
use reseller_tests::db::TestDb;
use reseller_tests::nats::NatsServer;
use reseller_tests::{StackOptions, TestStack, eventually};
use tokio_util::sync::CancellationToken;

fn settings(replicas: usize, max_age: Option<&str>, max_bytes: Option<&str>) -> StreamSettings {
    StreamSettings {
        replicas,
        max_age: max_age.map(|a| a.parse().unwrap()),
        max_bytes: max_bytes.map(|b| b.parse().unwrap()),
    }
}

async fn events_config(js: &jetstream::Context) -> jetstream::stream::Config {
    js.get_stream(subjects::EVENTS_STREAM)
        .await
        .expect("RESELLER_EVENTS")
        .cached_info()
        .config
        .clone()
}

#[tokio::test]
async fn a_malformed_nats_url_fails_at_once_naming_the_entry() {
    let db = TestDb::create().await;
    let config = CommonConfig::new(
        &db.url,
        "nats://127.0.0.1:4222,nats://127.0.0.1:42x3,nats://127.0.0.1:4224",
        "secret",
    );
    let started = Instant::now();
    let err = Platform::connect(&config)
        .await
        .expect_err("a malformed URL");
    let took = started.elapsed();
    let message = format!("{err:#}");
    eprintln!("refused after {took:?}: {message}");
    assert!(took < Duration::from_secs(1), "took {took:?}");
    assert!(
        message.contains("entry 2 of 3") && message.contains("nats://127.0.0.1:42x3"),
        "{message}"
    );
}

#[tokio::test]
async fn stream_settings_only_grow() {
    let nats = NatsServer::start().await;
    let (_client, js) = reseller_kit::stream::connect(&nats.url)
        .await
        .expect("NATS");

    ensure_streams(&js, &settings(1, Some("1h"), Some("1MiB")))
        .await
        .unwrap();
    let created = events_config(&js).await;
    assert_eq!(created.max_age, Duration::from_secs(3600));
    assert_eq!(created.max_bytes, 1 << 20);
    assert_eq!(created.duplicate_window, Duration::from_secs(120));

    // A replica asking for a longer age and fewer bytes raises the age, keeps the bytes.
    ensure_streams(&js, &settings(1, Some("2h"), Some("512KiB")))
        .await
        .unwrap();
    let raised = events_config(&js).await;
    assert_eq!(raised.max_age, Duration::from_secs(7200));
    assert_eq!(raised.max_bytes, 1 << 20);

    // One without an opinion, or asking for less, changes nothing.
    ensure_streams(&js, &settings(1, None, None)).await.unwrap();
    ensure_streams(&js, &settings(1, Some("1h"), Some("1KiB")))
        .await
        .unwrap();
    assert_eq!(events_config(&js).await, raised);

    // More replicas than a single server can hold: refused, logged, and the program runs.
    ensure_streams(&js, &settings(3, None, None)).await.unwrap();
    assert_eq!(events_config(&js).await.num_replicas, 1);

    // `unlimited` lifts the limits.
    ensure_streams(&js, &settings(1, Some("unlimited"), Some("unlimited")))
        .await
        .unwrap();
    let lifted = events_config(&js).await;
    assert_eq!((lifted.max_age, lifted.max_bytes), (Duration::ZERO, -1));

    // Creating streams a single server cannot hold fails at once with JetStream's reason.
    let other = NatsServer::start().await;
    let (_client, js) = reseller_kit::stream::connect(&other.url)
        .await
        .expect("NATS");
    let started = Instant::now();
    let err = ensure_streams(&js, &settings(3, None, None))
        .await
        .expect_err("3 replicas on 1 server");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert!(format!("{err:#}").contains("replicas"), "{err:#}");
}

/// Publishes `n` events that reporting's projection applies (account registrations).
async fn publish_events(js: &jetstream::Context, n: usize) {
    for i in 0..n {
        let event = reseller_kit::events::new_event(
            Payload::AccountRegistered(AccountRegistered {
                knox_id: format!("{:012}", 200_000_000_000u64 + i as u64),
                kind: AccountKind::Customer as i32,
                company_name: format!("Company {i}"),
                country: "DE".into(),
                created_at: None,
            }),
            time::OffsetDateTime::now_utc(),
        );
        js.publish(
            "reseller.events.v1.account.registered",
            reseller_kit::events::encode(&event).into(),
        )
        .await
        .expect("publish")
        .await
        .expect("ack");
    }
}

async fn first_sequence(js: &jetstream::Context) -> u64 {
    let mut stream = js.get_stream(subjects::EVENTS_STREAM).await.unwrap();
    stream.info().await.unwrap().state.first_sequence
}

/// Runs reporting's consumer until it has read everything left in the stream.
async fn consume_all(stack: &TestStack) {
    let shutdown = CancellationToken::new();
    let running = tokio::spawn(reporting_service::consumer(&stack.platform).run(shutdown.clone()));
    let js = stack.platform.js.clone();
    eventually("the consumer to read the stream", || {
        let js = js.clone();
        async move {
            let stream = js.get_stream(subjects::EVENTS_STREAM).await.ok()?;
            let info = stream
                .consumer_info(reporting_service::CONSUMER)
                .await
                .ok()?;
            (info.num_pending == 0 && info.num_ack_pending == 0).then_some(())
        }
    })
    .await;
    shutdown.cancel();
    running.await.unwrap();
}

#[tokio::test]
async fn a_consumer_reports_the_events_a_limit_removed_before_it_read_them() {
    // Small enough that a few hundred events overflow it; the oldest go first.
    let db = TestDb::create().await;
    let nats = NatsServer::start().await;
    let url = nats.url.clone();
    let stack = TestStack::start_on(
        StackOptions {
            background: false,
            ..Default::default()
        },
        db,
        Some(nats),
        &url,
        |config| config.nats_stream_max_bytes = Some("16KiB".parse().unwrap()),
    )
    .await;
    let js = stack.platform.js.clone();

    // A projection created on a stream that no longer starts at 1 lacks the beginning.
    publish_events(&js, 300).await;
    let first = first_sequence(&js).await;
    assert!(
        first > 1,
        "the limit removed nothing (first sequence {first})"
    );
    let before = lost_events_total();
    consume_all(&stack).await;
    assert_eq!(
        lost_events_total() - before,
        first - 1,
        "created on 1..={}",
        first - 1
    );

    // A consumer that was down while the limit removed events it had not read.
    publish_events(&js, 300).await;
    let first_now = first_sequence(&js).await;
    let before = lost_events_total();
    consume_all(&stack).await;
    assert_eq!(
        lost_events_total() - before,
        first_now - 1 - 300,
        "missed {}..={}",
        301,
        first_now - 1
    );

    // Caught up, it reports nothing more.
    let before = lost_events_total();
    consume_all(&stack).await;
    assert_eq!(lost_events_total(), before);
}

#[tokio::test]
async fn replicas_starting_together_all_migrate_and_set_up_the_streams() {
    let db = TestDb::create().await;
    let nats = NatsServer::start().await;
    let config = CommonConfig::new(&db.url, &nats.url, "secret");
    // Two replicas of each of the four services, on a fresh database and server.
    let replicas = (0..8).map(|i| {
        let config = config.clone();
        async move {
            let platform = Platform::connect(&config).await?;
            let migrator = match i % 4 {
                0 => &customer_service::MIGRATOR,
                1 => &device_service::MIGRATOR,
                2 => &msp_link_service::MIGRATOR,
                _ => &reporting_service::MIGRATOR,
            };
            reseller_kit::db::migrate(&platform.pool, migrator, &format!("service {i}")).await
        }
    });
    for (i, started) in futures::future::join_all(replicas)
        .await
        .into_iter()
        .enumerate()
    {
        started.unwrap_or_else(|e| panic!("replica {i}: {e:#}"));
    }
}

#[tokio::test]
async fn permanent_failures_stop_the_set_up_at_once_with_their_reason() {
    let db = TestDb::create().await;

    // Credentials the server refuses (the test servers trust local connections, so an
    // unknown role stands in for a wrong password: both are SQLSTATE class 28).
    let options: sqlx::postgres::PgConnectOptions = db.url.parse().unwrap();
    let url = format!(
        "postgres://no_such_role@{}:{}/{}",
        options.get_host(),
        options.get_port(),
        options.get_database().unwrap_or("postgres")
    );
    let started = Instant::now();
    let err = reseller_kit::db::connect(&CommonConfig::new(&url, "nats://127.0.0.1:4222", "s"))
        .await
        .expect_err("an unknown role");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert!(format!("{err:#}").contains("no_such_role"), "{err:#}");

    // A migration that fails.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("0001_broken.sql"), "CREATE TABLE broken (;").unwrap();
    let migrator = sqlx::migrate::Migrator::new(dir.path()).await.unwrap();
    let pool = reseller_kit::db::connect(&CommonConfig::new(&db.url, "nats://127.0.0.1:4222", "s"))
        .await
        .unwrap();
    let started = Instant::now();
    let err = reseller_kit::db::migrate(&pool, &migrator, "broken-service")
        .await
        .expect_err("a broken migration");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    let message = format!("{err:#}");
    assert!(
        message.starts_with("running broken-service migrations"),
        "{message}"
    );
    eprintln!("{message}");
}
