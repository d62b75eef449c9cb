//! Health that means ready, and reflection for every client: each service's health name
//! follows whether the program reaches PostgreSQL and NATS (a proxy in between is cut
//! and restored), `""` stays `SERVING`, both reflection versions list the services, and
//! `GRPC_MAX_CONNECTION_AGE_SECONDS` makes clients reconnect (so they reach new replicas).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use reseller_tests::clients::reseller;
use reseller_tests::db::TestDb;
use reseller_tests::fixtures::{active_customer, devices_shown, imei, upload};
use reseller_tests::nats::NatsServer;
use reseller_tests::proxy::TcpProxy;
use reseller_tests::reflection::{self, services_v1, services_v1alpha};
use reseller_tests::{StackOptions, TestStack, eventually};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

/// The health names of the services `reseller-portal` serves.
const SERVICES: [&str; 5] = [
    "reseller.v1.AccountService",
    "reseller.v1.CustomerService",
    "reseller.v1.DeviceService",
    "reseller.v1.MspService",
    "reseller.v1.ReportingService",
];

/// `url` with its `host:port` replaced by `addr`.
fn via(url: &str, addr: SocketAddr) -> String {
    let start = url.find("://").expect("a URL") + 3;
    let rest = &url[start..];
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let host_start = rest[..authority_end].rfind('@').map(|i| i + 1).unwrap_or(0);
    format!(
        "{}{}{addr}{}",
        &url[..start],
        &rest[..host_start],
        &rest[authority_end..]
    )
}

/// The `host:port` a URL names.
async fn address_of(url: &str) -> SocketAddr {
    let options: sqlx::postgres::PgConnectOptions = url.parse().expect("a PostgreSQL URL");
    tokio::net::lookup_host((options.get_host(), options.get_port()))
        .await
        .expect("resolve")
        .next()
        .expect("an address")
}

async fn status(health: &mut HealthClient<tonic::transport::Channel>, name: &str) -> ServingStatus {
    let answer = health
        .check(HealthCheckRequest {
            service: name.into(),
        })
        .await
        .unwrap_or_else(|e| panic!("health of {name:?}: {e:?}"))
        .into_inner();
    ServingStatus::try_from(answer.status).expect("a known status")
}

/// Waits until every service name reports `want`, checking `""` stays `SERVING` all the
/// while; returns how long it took.
async fn wait_for_services(
    health: &mut HealthClient<tonic::transport::Channel>,
    want: ServingStatus,
) -> Duration {
    let started = Instant::now();
    let deadline = started + Duration::from_secs(15);
    loop {
        assert_eq!(
            status(health, "").await,
            ServingStatus::Serving,
            "\"\" while waiting for {want:?}"
        );
        let mut all = true;
        for name in SERVICES {
            all &= status(health, name).await == want;
        }
        if all {
            return started.elapsed();
        }
        assert!(
            Instant::now() < deadline,
            "services not {want:?} within 15 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn health_names_follow_postgres_and_nats_while_the_process_stays_serving() {
    let db = TestDb::create().await;
    let nats = NatsServer::start().await;
    let postgres_proxy = TcpProxy::start(address_of(&db.url).await).await;
    let nats_port: u16 = nats.url.rsplit(':').next().unwrap().parse().unwrap();
    let nats_proxy = TcpProxy::start(SocketAddr::from(([127, 0, 0, 1], nats_port))).await;
    let database_url = via(&db.url, postgres_proxy.addr);
    let stack = TestStack::start_on(
        StackOptions::default(),
        db,
        Some(nats),
        &format!("nats://{}", nats_proxy.addr),
        |config| config.database_url = database_url,
    )
    .await;
    let mut health = HealthClient::new(stack.channel.clone());
    wait_for_services(&mut health, ServingStatus::Serving).await;

    // Each dependency in turn: cut, then restored.
    for (dependency, proxy) in [("PostgreSQL", &postgres_proxy), ("NATS", &nats_proxy)] {
        proxy.cut();
        let took = wait_for_services(&mut health, ServingStatus::NotServing).await;
        eprintln!("{dependency} cut: NOT_SERVING after {took:?}");
        proxy.restore();
        let took = wait_for_services(&mut health, ServingStatus::Serving).await;
        eprintln!("{dependency} restored: SERVING after {took:?}");
    }

    // And it works again end to end: a command, its event, the projection.
    active_customer(&stack, "acme", "100000000001", "Acme").await;
    let ids: Vec<String> = (0..3).map(imei).collect();
    upload(&stack, "acme", "100000000001", &ids)
        .await
        .expect("upload");
    eventually("the upload in the reseller's view", || async {
        (devices_shown(&reseller(&stack, "acme"), "100000000001").await == 3).then_some(())
    })
    .await;
}

#[tokio::test]
async fn both_reflection_versions_list_the_services() {
    let stack = TestStack::start().await;
    let v1 = services_v1(stack.channel.clone()).await;
    let v1alpha = services_v1alpha(stack.channel.clone()).await;
    for (names, own) in [
        (&v1, "grpc.reflection.v1.ServerReflection"),
        (&v1alpha, "grpc.reflection.v1alpha.ServerReflection"),
    ] {
        reflection::assert_lists(names, reflection::SERVICES.into_iter().chain([own]));
    }
}

#[tokio::test]
async fn connections_older_than_the_max_age_are_ended_without_failing_calls() {
    let nats = NatsServer::start().await;
    let nats_url = nats.url.clone();
    let stack = TestStack::start_on(
        StackOptions::default(),
        TestDb::create().await,
        Some(nats),
        &nats_url,
        |config| config.grpc_max_connection_age_seconds = Some(1),
    )
    .await;
    // Count the client's TCP connections on their way to the server.
    let proxy = TcpProxy::start(stack.addr).await;
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", proxy.addr))
        .unwrap()
        .connect()
        .await
        .expect("connect through the proxy");
    let mut health = HealthClient::new(channel);
    let started = Instant::now();
    let mut calls = 0;
    while started.elapsed() < Duration::from_millis(3500) {
        let request = HealthCheckRequest {
            service: String::new(),
        };
        health
            .check(request)
            .await
            .unwrap_or_else(|e| panic!("call {calls} failed across a connection's end: {e}"));
        calls += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let connections = proxy.connections();
    eprintln!("{calls} calls over {connections} connections");
    assert!(
        connections >= 2,
        "the server ended no connection in 3.5 s with a 1 s max age ({connections} used)"
    );
}
