//! A real Prometheus (Debian's package, `PROMETHEUS_BIN`) scraping the real service
//! binaries (`Cluster`: one replica of each, each with `METRICS_ADDR`) every second, with
//! the project's alert rules loaded. A workload runs (accounts, a customer, an upload
//! with rejected rows, a deletion, one poison event); then what an operator would ask
//! Prometheus must add up: devices accepted as the upload answered, exactly one dead
//! letter (and its alert firing), every outbox drained, every relay led, every target
//! up, every alert rule of the file loaded and evaluating, every dashboard query valid.
//! One replica's `/metrics` passes `promtool check metrics`.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use prost::Message;
use reseller_kit::auth::Role;
use reseller_kit::events::new_event;
use reseller_kit::subjects;
use reseller_proto::v1::{self as pb, AccountKind, event::Payload};
use reseller_tests::cluster::{Cluster, ClusterOptions, Service};
use reseller_tests::fixtures::{account, device, imei, upload_stream};
use reseller_tests::prometheus::{self, Prometheus, Sample, ScrapeJob};
use reseller_tests::wait::eventually_within;

const RESELLER: &str = "prom-reseller";
const CUSTOMER: &str = "960000001";
/// Devices uploaded that are valid, and rows that are not devices at all.
const VALID: u64 = 120;
const INVALID: usize = 7;
/// Devices deleted again.
const DELETED: usize = 15;
/// How long Prometheus may take to show a value: a scrape and an evaluation every
/// second, plus the services' sampling of the database every few seconds.
const SHOWN_WITHIN: Duration = Duration::from_secs(60);

/// The one value of a query that must answer exactly one series.
fn single(samples: &[Sample]) -> Option<f64> {
    match samples {
        [one] => Some(one.value),
        _ => None,
    }
}

/// Asks `check` every 500 ms until it answers `Ok`; after `timeout`, panics with `what`
/// and the last `Err` (what was seen instead).
async fn poll<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        match check().await {
            Ok(value) => return value,
            Err(last) if tokio::time::Instant::now() >= deadline => {
                panic!("{what}: not within {timeout:?}; last seen: {last}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    }
}

/// `label` of every sample, with its value.
fn by_label(samples: &[Sample], label: &str) -> BTreeMap<String, f64> {
    samples
        .iter()
        .map(|s| (s.labels.get(label).cloned().unwrap_or_default(), s.value))
        .collect()
}

#[tokio::test]
async fn prometheus_scraping_the_cluster_sees_what_the_workload_did() {
    // One replica of each service is enough to count; NatsCluster needs at least two
    // servers to form a JetStream cluster, and three is the deployed shape.
    let cluster = Cluster::start(ClusterOptions {
        replicas: 1,
        nats_nodes: 3,
        stream_replicas: 1,
    })
    .await
    .unwrap_or_else(|e| panic!("cluster: {e:#}"));
    let jobs: Vec<ScrapeJob> = Service::ALL
        .into_iter()
        .map(|service| ScrapeJob {
            job: service.binary().to_owned(),
            targets: cluster
                .replicas(service)
                .map(|r| (r.name(), r.metrics_addr))
                .collect(),
        })
        .collect();
    let prom = Prometheus::start(&jobs)
        .await
        .unwrap_or_else(|e| panic!("prometheus: {e:#}"));
    eprintln!(
        "Prometheus on http://{} (its web UI while the test runs)",
        prom.addr
    );

    // Every alert of the rule file is loaded and evaluates without error.
    let alerts = prometheus::alert_names(&prometheus::rules_file()).expect("the rule file");
    assert!(
        alerts.len() >= 7,
        "the rule file names its alerts: {alerts:?}"
    );
    // Evaluated every second: each rule's health goes from `unknown` to `ok` (or `err`).
    let loaded = poll(
        "every alert rule evaluated",
        Duration::from_secs(30),
        || async {
            let loaded = prom.alert_rules().await.map_err(|e| format!("{e:#}"))?;
            let evaluated =
                !loaded.is_empty() && loaded.iter().all(|(_, health, _)| health != "unknown");
            evaluated
                .then_some(loaded.clone())
                .ok_or_else(|| format!("{loaded:?}"))
        },
    )
    .await;
    assert_eq!(
        loaded
            .iter()
            .map(|(name, ..)| name)
            .collect::<BTreeSet<_>>(),
        alerts.iter().collect::<BTreeSet<_>>(),
        "/api/v1/rules lists exactly the rule file's alerts"
    );
    let failing: Vec<_> = loaded
        .iter()
        .filter(|(_, health, _)| health != "ok")
        .collect();
    assert!(
        failing.is_empty(),
        "alert rules failing to evaluate: {failing:?}"
    );

    // Every query of the Grafana dashboard is valid PromQL to this server.
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../deploy/k8s/monitoring/grafana-dashboard.json"),
        )
        .expect("the dashboard"),
    )
    .expect("the dashboard is JSON");
    let exprs: Vec<String> = dashboard["panels"]
        .as_array()
        .expect("panels")
        .iter()
        .flat_map(|panel| panel["targets"].as_array().cloned().unwrap_or_default())
        .map(|target| target["expr"].as_str().expect("expr").to_owned())
        .collect();
    assert!(exprs.len() > 20, "the dashboard's queries: {exprs:?}");
    for expr in &exprs {
        // Grafana fills in $__rate_interval (at least four scrape intervals).
        let promql = expr.replace("$__rate_interval", "1m");
        if let Err(err) = prom.query(&promql).await {
            panic!("dashboard query `{expr}`: {err:#}");
        }
    }

    // Every replica is a target, and each is up: its /metrics answers.
    let replicas: BTreeSet<String> = Service::ALL
        .into_iter()
        .flat_map(|s| cluster.replicas(s).map(|r| r.name()))
        .collect();
    poll(
        "every replica scraped and up",
        Duration::from_secs(30),
        || async {
            let targets = prom.targets().await.map_err(|e| format!("{e:#}"))?;
            let up: BTreeSet<String> = targets
                .iter()
                .filter(|(_, health, _)| health == "up")
                .map(|(replica, ..)| replica.clone())
                .collect();
            (up == replicas)
                .then_some(())
                .ok_or_else(|| format!("{targets:?}"))
        },
    )
    .await;
    prom.query_until("up", "up", Duration::from_secs(30), |s| {
        s.len() == replicas.len() && s.iter().all(|s| s.value == 1.0)
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}"));

    // The workload: a reseller's customer, an upload with rejected rows, a deletion.
    let clients = cluster.clients();
    let admin = clients.client(Service::Customer, 0, Role::Admin, "platform-admin");
    admin
        .register_account(account(CUSTOMER, AccountKind::Customer, "Prometheus GmbH"))
        .await
        .expect("register");
    clients
        .client(Service::Customer, 0, Role::Reseller, RESELLER)
        .add_customer(CUSTOMER, "")
        .await
        .expect("add customer");
    clients
        .client(Service::Customer, 0, Role::Customer, CUSTOMER)
        .approve_reseller(RESELLER)
        .await
        .expect("approve");
    let valid: Vec<String> = (0..VALID).map(|n| imei(9_000 + n)).collect();
    let mut rows: Vec<pb::DeviceInput> = valid.iter().map(|id| device(id)).collect();
    for n in 0..INVALID {
        // Every other one an IMEI with a wrong check digit, the rest not an identifier.
        let id = if n % 2 == 0 {
            let good = imei(8_000 + n as u64);
            let last = good
                .chars()
                .last()
                .and_then(|c| c.to_digit(10))
                .expect("digit");
            format!("{}{}", &good[..good.len() - 1], (last + 1) % 10)
        } else {
            format!("not a device {n}")
        };
        rows.insert(n * 10, device(&id));
    }
    let reseller_on_device = clients.client(Service::Device, 0, Role::Reseller, RESELLER);
    let header = pb::UploadHeader {
        target_knox_id: CUSTOMER.into(),
        order_number: "PO-PROM".into(),
        client_upload_id: String::new(),
        validate_only: false,
    };
    let upload = reseller_on_device
        .upload_devices(futures::stream::iter(upload_stream(header, rows, 50)))
        .await
        .expect("upload");
    assert_eq!(
        (upload.accepted_count, upload.rejected_count),
        (VALID as i64, INVALID as i64),
        "the upload's answer"
    );
    let deletion = reseller_on_device
        .delete_devices(valid[..DELETED].iter().cloned())
        .await
        .expect("delete");
    assert_eq!(deletion.deleted_device_ids.len(), DELETED);
    eventually_within(
        "the deletion complete in all three portals",
        SHOWN_WITHIN,
        || {
            let caller = reseller_on_device.clone();
            let id = deletion.deletion_id.clone();
            async move { caller.get_deletion(&id).await.ok()?.complete.then_some(()) }
        },
    )
    .await;

    // One poison event: a CustomerAdded whose knox ID is not one. Only the reporting
    // consumer applies CustomerAdded (the portals ignore it; device-receipts reads only
    // deletions), so exactly one consumer dead-letters it.
    let poison = new_event(
        Payload::CustomerAdded(pb::CustomerAdded {
            reseller_id: RESELLER.into(),
            knox_id: "not a knox id".into(),
            kind: AccountKind::Customer as i32,
            company_name: "Poison".into(),
            country: "DE".into(),
            ..Default::default()
        }),
        time::OffsetDateTime::now_utc(),
    );
    let nats = cluster.nats.client().await.expect("nats client");
    let js = async_nats::jetstream::new(nats);
    js.publish(
        subjects::event_subject(poison.payload.as_ref().expect("payload")),
        poison.encode_to_vec().into(),
    )
    .await
    .expect("publish")
    .await
    .expect("stored");

    // What Prometheus shows now.
    prom.query_until(
        "devices accepted as the upload answered",
        "sum(reseller_upload_devices_accepted_total)",
        SHOWN_WITHIN,
        |s| single(s) == Some(VALID as f64),
    )
    .await
    .unwrap_or_else(|e| panic!("{e:#}"));
    prom.query_until(
        "devices rejected as the upload answered",
        "sum(reseller_upload_devices_rejected_total)",
        SHOWN_WITHIN,
        |s| single(s) == Some(INVALID as f64),
    )
    .await
    .unwrap_or_else(|e| panic!("{e:#}"));
    prom.query_until(
        "every row read counted",
        "sum(reseller_upload_rows_total)",
        SHOWN_WITHIN,
        |s| single(s) == Some((VALID as usize + INVALID) as f64),
    )
    .await
    .unwrap_or_else(|e| panic!("{e:#}"));
    let dead = prom
        .query_until(
            "exactly one dead letter, by the reporting consumer",
            "sum by (consumer) (reseller_consumer_dead_letters_total) > 0",
            SHOWN_WITHIN,
            |s| !s.is_empty(),
        )
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    assert_eq!(
        by_label(&dead, "consumer"),
        BTreeMap::from([("reporting".to_owned(), 1.0)]),
        "dead letters by consumer"
    );
    prom.query_until(
        "the dead letter's alert firing",
        r#"ALERTS{alertname="ResellerDeadLetters", alertstate="firing"}"#,
        SHOWN_WITHIN,
        |s| s.len() == 1 && s[0].labels.get("consumer").map(String::as_str) == Some("reporting"),
    )
    .await
    .unwrap_or_else(|e| panic!("{e:#}"));
    prom.query_until(
        "the upload and the deletion counted once each, OK, by the RPC layer",
        r#"sum by (method) (reseller_grpc_requests_total{service="reseller.v1.DeviceService", method=~"UploadDevices|DeleteDevices", code="OK"})"#,
        SHOWN_WITHIN,
        |s| {
            by_label(s, "method")
                == BTreeMap::from([
                    ("DeleteDevices".to_owned(), 1.0),
                    ("UploadDevices".to_owned(), 1.0),
                ])
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e:#}"));
    // The latencies are histograms with buckets (the dashboard's and any SLO's
    // histogram_quantile needs `_bucket`), each holding what the workload did.
    let histograms = [
        "reseller_grpc_request_duration_seconds",
        "reseller_upload_duration_seconds",
        "reseller_outbox_publish_duration_seconds",
        "reseller_consumer_apply_duration_seconds",
    ];
    for histogram in histograms {
        prom.query_until(
            &format!("{histogram} has buckets and observations"),
            &format!("count({histogram}_bucket) > 1 and on () sum({histogram}_count) > 0"),
            SHOWN_WITHIN,
            |s| !s.is_empty(),
        )
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    }
    let schemas: BTreeSet<String> = Service::ALL.iter().map(|s| s.schema().to_owned()).collect();
    prom.query_until(
        "every schema's outbox drained",
        "max by (schema) (reseller_outbox_unsent_events)",
        SHOWN_WITHIN,
        |s| {
            let by_schema = by_label(s, "schema");
            by_schema.keys().cloned().collect::<BTreeSet<_>>() == schemas
                && by_schema.values().all(|&v| v == 0.0)
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e:#}"));
    prom.query_until(
        "one relay leader for every schema",
        "sum by (schema) (reseller_outbox_relay_leader)",
        SHOWN_WITHIN,
        |s| {
            let by_schema = by_label(s, "schema");
            by_schema.keys().cloned().collect::<BTreeSet<_>>() == schemas
                && by_schema.values().all(|&v| v == 1.0)
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e:#}"));

    // What each replica serves is valid exposition format, by promtool's rules too.
    for replica in Service::ALL.iter().flat_map(|&s| cluster.replicas(s)) {
        let text = prom
            .scrape(replica.metrics_addr)
            .await
            .unwrap_or_else(|e| panic!("{}: {e:#}", replica.name()));
        let (status, printed) = prometheus::check_metrics(&text).await.expect("promtool");
        assert!(
            status.success(),
            "promtool check metrics on {}'s /metrics: {status}\n{printed}",
            replica.name()
        );
    }

    let problems = cluster.log_problems();
    eprintln!("the replicas' ERROR and WARN lines: {problems:#?}");
}
