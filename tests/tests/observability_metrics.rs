//! The Prometheus endpoint (`METRICS_ADDR`) of a running stack, scraped over HTTP as
//! Prometheus would: uploads and deletions add up in the counters an operator reads, the
//! samplers see the outbox drain, the relays lead and the deletions finish.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use reseller_tests::clients::reseller;
use reseller_tests::fixtures::{active_customer, imei, upload};
use reseller_tests::stack::StackOptions;
use reseller_tests::wait::eventually_within;
use reseller_tests::{TestStack, db::TestDb, eventually, nats::NatsServer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Long enough for two rounds of the samplers (every 5 s).
const SAMPLED: Duration = Duration::from_secs(30);

/// One scrape: each sample line's value by its series, the labels in a fixed order
/// (`name{a="1",b="2"}`), so that tests do not depend on the order the exporter writes.
#[derive(Debug)]
struct Scrape(BTreeMap<String, f64>);

impl Scrape {
    async fn of(addr: SocketAddr) -> Self {
        let mut stream = tokio::net::TcpStream::connect(addr)
            .await
            .expect("connect to /metrics");
        stream
            .write_all(b"GET /metrics HTTP/1.0\r\nHost: test\r\n\r\n")
            .await
            .expect("send the request");
        let mut response = String::new();
        stream
            .read_to_string(&mut response)
            .await
            .expect("read the answer");
        let (head, body) = response.split_once("\r\n\r\n").expect("an HTTP answer");
        assert!(
            head.starts_with("HTTP/1.0 200") || head.starts_with("HTTP/1.1 200"),
            "{head}"
        );
        assert!(
            head.to_ascii_lowercase()
                .contains("content-type: text/plain"),
            "{head}"
        );
        let mut samples = BTreeMap::new();
        for line in body
            .lines()
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
        {
            let (series, value) = line.rsplit_once(' ').expect("a sample line");
            let value: f64 = value.parse().unwrap_or_else(|_| panic!("{line}"));
            samples.insert(canonical(series), value);
        }
        Self(samples)
    }

    /// The value of `name` with exactly `labels`, if exported.
    fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.0.get(&series(name, labels)).copied()
    }

    /// Like [`Scrape::get`], failing when the series is missing.
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.get(name, labels).unwrap_or_else(|| {
            panic!(
                "{} is not exported; these are:\n{:#?}",
                series(name, labels),
                self.0
                    .keys()
                    .filter(|k| k.starts_with(name))
                    .collect::<Vec<_>>()
            )
        })
    }
}

fn series(name: &str, labels: &[(&str, &str)]) -> String {
    let mut labels = labels.to_vec();
    labels.sort();
    let labels: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
    if labels.is_empty() {
        name.to_owned()
    } else {
        format!("{name}{{{}}}", labels.join(","))
    }
}

/// `series` as [`series`] writes it (no label value here holds a comma or a quote).
fn canonical(series_text: &str) -> String {
    match series_text.split_once('{') {
        None => series_text.to_owned(),
        Some((name, rest)) => {
            let mut labels: Vec<&str> = rest.trim_end_matches('}').split(',').collect();
            labels.sort();
            format!("{name}{{{}}}", labels.join(","))
        }
    }
}

async fn stack_with_metrics() -> TestStack {
    let db = TestDb::create().await;
    let nats = NatsServer::start().await;
    let nats_url = nats.url.clone();
    TestStack::start_on(
        StackOptions::default(),
        db,
        Some(nats),
        &nats_url,
        |config| {
            config.metrics_addr = Some("127.0.0.1:0".parse().unwrap());
        },
    )
    .await
}

#[tokio::test]
async fn uploads_deletions_and_the_outbox_add_up_on_the_metrics_endpoint() {
    let stack = stack_with_metrics().await;
    let addr = stack.metrics_addr.expect("a metrics address");
    active_customer(&stack, "acme", "600000001", "Globex").await;

    // 10 valid devices, two invalid ones and one repeat: 10 accepted, 3 rejected.
    let mut ids: Vec<String> = (1..=10).map(imei).collect();
    ids.extend(["bad serial!".into(), String::new(), imei(3)]);
    let first = upload(&stack, "acme", "600000001", &ids)
        .await
        .expect("upload");
    assert_eq!((first.accepted_count, first.rejected_count), (10, 3));
    // One registered already, one new.
    let second = upload(&stack, "acme", "600000001", &[imei(1), imei(11)])
        .await
        .expect("upload");
    assert_eq!((second.accepted_count, second.rejected_count), (1, 1));

    // A deletion, answered by the three portals.
    let deletion = reseller(&stack, "acme")
        .delete_devices([imei(1), imei(2)])
        .await
        .expect("delete");
    eventually("the deletion to complete", || {
        let caller = reseller(&stack, "acme");
        let id = deletion.deletion_id.clone();
        async move { caller.get_deletion(&id).await.ok()?.complete.then_some(()) }
    })
    .await;

    let scrape = Scrape::of(addr).await;
    assert_eq!(
        scrape.value("reseller_upload_devices_accepted_total", &[]),
        11.0
    );
    for (reason, count) in [
        ("INVALID_ID", 2.0),
        ("DUPLICATE_IN_UPLOAD", 1.0),
        ("ALREADY_REGISTERED", 1.0),
    ] {
        assert_eq!(
            scrape.value(
                "reseller_upload_devices_rejected_total",
                &[("reason", reason)]
            ),
            count,
            "{reason}"
        );
    }
    assert_eq!(scrape.value("reseller_upload_rows_total", &[]), 15.0);
    assert_eq!(
        scrape.value("reseller_upload_duration_seconds_count", &[]),
        2.0
    );
    assert_eq!(
        scrape.value("reseller_upload_duration_seconds_bucket", &[("le", "+Inf")]),
        2.0,
        "a histogram with buckets, not a summary"
    );
    assert_eq!(
        scrape.value(
            "reseller_build_info",
            &[
                ("program", "reseller-tests"),
                ("version", env!("CARGO_PKG_VERSION"))
            ]
        ),
        1.0
    );

    // Once the relays are idle: nothing unsent, everything written published, one leader
    // per schema (this process runs every relay), and the deletion no longer pending.
    let schemas = ["customer", "device", "msp", "reporting"];
    let consumers = [
        "customer-portal",
        "device-receipts",
        "msp-portal",
        "reporting",
    ];
    let written = stack.count("SELECT count(*) FROM device.outbox").await as f64;
    let scrape = eventually_within(
        "the samplers to see the outboxes drained",
        SAMPLED,
        || async {
            let scrape = Scrape::of(addr).await;
            let drained = schemas.iter().all(|schema| {
                scrape.get("reseller_outbox_unsent_events", &[("schema", schema)]) == Some(0.0)
            });
            let pending = ["reseller", "msp", "customer"].iter().any(|portal| {
                scrape.get("reseller_deletions_pending", &[("portal", portal)]) != Some(0.0)
            });
            // Every consumer of the stack has been given every event.
            let behind = consumers.iter().any(|consumer| {
                scrape.get(
                    "reseller_consumer_pending_events",
                    &[("consumer", consumer)],
                ) != Some(0.0)
            });
            (drained && !pending && !behind).then_some(scrape)
        },
    )
    .await;
    assert_eq!(
        scrape.value(
            "reseller_outbox_published_events_total",
            &[("schema", "device")]
        ),
        written,
        "every device-service event written to the outbox was published once"
    );
    for schema in schemas {
        assert_eq!(
            scrape.value("reseller_outbox_relay_leader", &[("schema", schema)]),
            1.0,
            "{schema}"
        );
        assert_eq!(
            scrape.value(
                "reseller_outbox_oldest_unsent_age_seconds",
                &[("schema", schema)]
            ),
            0.0,
            "{schema}"
        );
    }
    assert_eq!(
        scrape.value("reseller_deletion_oldest_incomplete_age_seconds", &[]),
        0.0
    );
    // The three portals' receipts, each applied once by device-service.
    assert_eq!(
        scrape.value(
            "reseller_consumer_events_total",
            &[
                ("consumer", "device-receipts"),
                ("event_type", "deletion.portal_applied"),
                ("outcome", "applied"),
            ]
        ),
        3.0
    );
    assert_eq!(
        scrape.value(
            "reseller_consumer_dead_letters_total",
            &[("consumer", "device-receipts")]
        ),
        0.0
    );
    assert_eq!(scrape.value("reseller_nats_connected", &[]), 1.0);
    let pool = scrape.value("reseller_db_pool_connections", &[("state", "in_use")])
        + scrape.value("reseller_db_pool_connections", &[("state", "idle")]);
    assert!(pool >= 1.0, "the pool has connections: {pool}");

    // A deletion no portal answers (its events never sent): pending in all three, and
    // its age shows.
    sqlx::query(
        "INSERT INTO device.deletions (deletion_id, reseller_id, requested_at, part_count,
           deleted_device_ids, not_found_device_ids)
         VALUES ($1, 'acme', now() - interval '90 seconds', 1, '{}', '{}')",
    )
    .bind(uuid::Uuid::now_v7())
    .execute(&stack.platform.pool)
    .await
    .expect("insert a stuck deletion");
    let scrape = eventually_within("the sampler to see the stuck deletion", SAMPLED, || async {
        let scrape = Scrape::of(addr).await;
        (scrape.get("reseller_deletion_oldest_incomplete_age_seconds", &[]) > Some(0.0))
            .then_some(scrape)
    })
    .await;
    for portal in ["reseller", "msp", "customer"] {
        assert_eq!(
            scrape.value("reseller_deletions_pending", &[("portal", portal)]),
            1.0,
            "{portal}"
        );
    }
    let age = scrape.value("reseller_deletion_oldest_incomplete_age_seconds", &[]);
    assert!(
        (90.0..120.0).contains(&age),
        "the stuck deletion's age: {age}"
    );

    stack.stop().await;
}
