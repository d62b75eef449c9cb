//! Prometheus metrics (`METRICS_ADDR`): the recorder, the `/metrics` endpoint, the names
//! of every metric the services record, and the samplers of what is read rather than
//! counted (outbox backlog, consumer lag, deletions, connection pools).
//!
//! Code records with the [`metrics`] macros (`counter!`, `histogram!`, `gauge!`) under the
//! names below; without a recorder (`METRICS_ADDR` unset) those calls do nothing. The
//! recorder is installed once per process ([`serve`]; later calls, such as several test
//! stacks in one process, share it) and rendered in the Prometheus text format on
//! `http://<METRICS_ADDR>/metrics`. Histograms are true Prometheus histograms with
//! seconds-scale buckets ([`BUCKETS`]), not summaries, so replicas can be aggregated.
//!
//! What is sampled (database and JetStream state) is read every [`SAMPLE_EVERY`] by a
//! background task of each process, never on a scrape, and only when `METRICS_ADDR` is
//! set; a failed sample logs a warning and leaves the last value. deploy/OBSERVABILITY.md
//! has the table of every metric.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::Duration;

use metrics::Unit;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::app::Platform;

/// How often the samplers read what they report.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(5);

/// Histogram buckets (seconds) of every histogram but [`UPLOAD_DURATION`]: from a 1 ms
/// RPC or apply to a 30 s batch (the relay's batch timeout).
pub const BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];
/// Buckets (seconds) of [`UPLOAD_DURATION`]: an upload of a million devices takes minutes.
pub const UPLOAD_BUCKETS: &[f64] = &[
    0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
];

/// Counter of gRPC requests (labels `service`, `method`, `code`); recorded by the RPC
/// layer.
pub const GRPC_REQUESTS: &str = "reseller_grpc_requests_total";
/// Histogram of gRPC request durations in seconds (`service`, `method`, `code`).
pub const GRPC_REQUEST_DURATION: &str = "reseller_grpc_request_duration_seconds";
/// Gauge of gRPC requests in flight (`service`, `method`).
pub const GRPC_REQUESTS_IN_FLIGHT: &str = "reseller_grpc_requests_in_flight";
/// Gauge of outbox rows not yet published (`schema`), sampled.
pub const OUTBOX_UNSENT: &str = "reseller_outbox_unsent_events";
/// Gauge of the age in seconds of the oldest unpublished outbox row (`schema`), 0 when
/// none, sampled.
pub const OUTBOX_OLDEST_UNSENT_AGE: &str = "reseller_outbox_oldest_unsent_age_seconds";
/// Counter of events the relay published and JetStream acknowledged (`schema`).
pub const OUTBOX_PUBLISHED: &str = "reseller_outbox_published_events_total";
/// Histogram of one relay batch in seconds, first publish to last ack (`schema`).
pub const OUTBOX_PUBLISH_DURATION: &str = "reseller_outbox_publish_duration_seconds";
/// Gauge: 1 while this process's relay leads the schema's outbox, else 0 (`schema`).
pub const OUTBOX_RELAY_LEADER: &str = "reseller_outbox_relay_leader";
/// Counter of events a consumer handled (`consumer`, `event_type`, `outcome`).
pub const CONSUMER_EVENTS: &str = "reseller_consumer_events_total";
/// Histogram of applying one event in seconds, inbox row to commit (`consumer`); the
/// events of a batch each count the batch's time, its start to its commit.
pub const CONSUMER_APPLY_DURATION: &str = "reseller_consumer_apply_duration_seconds";
/// Counter of messages delivered more than once (`consumer`).
pub const CONSUMER_REDELIVERIES: &str = "reseller_consumer_redeliveries_total";
/// Counter of events dead-lettered (`consumer`).
pub const CONSUMER_DEAD_LETTERS: &str = "reseller_consumer_dead_letters_total";
/// Gauge of events in the stream the durable consumer has not been given yet
/// (JetStream's `num_pending`; `consumer`), sampled.
pub const CONSUMER_PENDING: &str = "reseller_consumer_pending_events";
/// Counter of stream sequences removed before the consumer read them (`consumer`; see
/// [`crate::lost_events`]).
pub const CONSUMER_LOST_EVENTS: &str = "reseller_consumer_lost_events_total";
/// Counter of devices registered by uploads.
pub const UPLOAD_ACCEPTED: &str = "reseller_upload_devices_accepted_total";
/// Counter of devices rejected by uploads (`reason`).
pub const UPLOAD_REJECTED: &str = "reseller_upload_devices_rejected_total";
/// Counter of device rows read from upload streams.
pub const UPLOAD_ROWS: &str = "reseller_upload_rows_total";
/// Histogram of one upload in seconds, first row to answer.
pub const UPLOAD_DURATION: &str = "reseller_upload_duration_seconds";
/// Gauge of deletions a portal has not answered completely yet (`portal`), sampled.
pub const DELETIONS_PENDING: &str = "reseller_deletions_pending";
/// Gauge of the age in seconds of the oldest incomplete deletion, 0 when none, sampled.
pub const DELETION_OLDEST_INCOMPLETE_AGE: &str = "reseller_deletion_oldest_incomplete_age_seconds";
/// Gauge of PostgreSQL pool connections (`state`: `in_use`, `idle`), sampled.
pub const DB_POOL_CONNECTIONS: &str = "reseller_db_pool_connections";
/// Gauge: 1 while the NATS connection is up, else 0, sampled.
pub const NATS_CONNECTED: &str = "reseller_nats_connected";
/// Gauge = 1 with the build's `version` and the `program`.
pub const BUILD_INFO: &str = "reseller_build_info";

/// The kind of a metric, for [`CATALOG`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Only goes up.
    Counter,
    /// Goes up and down.
    Gauge,
    /// A distribution in buckets.
    Histogram,
}

/// Every metric of the project: name, kind, unit and help text (the `# HELP` line).
pub const CATALOG: &[(&str, Kind, Unit, &str)] = &[
    (
        GRPC_REQUESTS,
        Kind::Counter,
        Unit::Count,
        "gRPC requests answered, by service, method and status code.",
    ),
    (
        GRPC_REQUEST_DURATION,
        Kind::Histogram,
        Unit::Seconds,
        "Time from a gRPC request's arrival to its answer, by service, method and status code.",
    ),
    (
        GRPC_REQUESTS_IN_FLIGHT,
        Kind::Gauge,
        Unit::Count,
        "gRPC requests being handled now, by service and method.",
    ),
    (
        OUTBOX_UNSENT,
        Kind::Gauge,
        Unit::Count,
        "Outbox rows not yet published to JetStream, by schema (sampled).",
    ),
    (
        OUTBOX_OLDEST_UNSENT_AGE,
        Kind::Gauge,
        Unit::Seconds,
        "Age of the oldest outbox row not yet published, 0 when none, by schema (sampled).",
    ),
    (
        OUTBOX_PUBLISHED,
        Kind::Counter,
        Unit::Count,
        "Events the outbox relay published and JetStream acknowledged, by schema.",
    ),
    (
        OUTBOX_PUBLISH_DURATION,
        Kind::Histogram,
        Unit::Seconds,
        "Time one relay batch takes from its first publish to its last ack, by schema.",
    ),
    (
        OUTBOX_RELAY_LEADER,
        Kind::Gauge,
        Unit::Count,
        "1 while this process's relay publishes the schema's outbox (holds its advisory lock), else 0.",
    ),
    (
        CONSUMER_EVENTS,
        Kind::Counter,
        Unit::Count,
        "Events a durable consumer handled, by consumer, event type and outcome (applied, duplicate, ignored).",
    ),
    (
        CONSUMER_APPLY_DURATION,
        Kind::Histogram,
        Unit::Seconds,
        "Time to apply one event (inbox row, change, commit), by consumer; each event of a batch counts the batch's time; ignored events are not timed.",
    ),
    (
        CONSUMER_REDELIVERIES,
        Kind::Counter,
        Unit::Count,
        "Messages a consumer was given more than once (JetStream delivered > 1), by consumer.",
    ),
    (
        CONSUMER_DEAD_LETTERS,
        Kind::Counter,
        Unit::Count,
        "Events a consumer dead-lettered, by consumer.",
    ),
    (
        CONSUMER_PENDING,
        Kind::Gauge,
        Unit::Count,
        "Events in the stream not yet delivered to the durable consumer (JetStream num_pending), by consumer (sampled).",
    ),
    (
        CONSUMER_LOST_EVENTS,
        Kind::Counter,
        Unit::Count,
        "Events the stream removed (a limit, a purge) before the consumer read them, by consumer: its projection needs a rebuild.",
    ),
    (
        UPLOAD_ACCEPTED,
        Kind::Counter,
        Unit::Count,
        "Devices registered by uploads (validate-only uploads register none).",
    ),
    (
        UPLOAD_REJECTED,
        Kind::Counter,
        Unit::Count,
        "Devices rejected by uploads, by reason.",
    ),
    (
        UPLOAD_ROWS,
        Kind::Counter,
        Unit::Count,
        "Device rows read from upload streams, valid or not.",
    ),
    (
        UPLOAD_DURATION,
        Kind::Histogram,
        Unit::Seconds,
        "Time one upload takes from its first row to its answer.",
    ),
    (
        DELETIONS_PENDING,
        Kind::Gauge,
        Unit::Count,
        "Deletions a portal has not answered for every part yet, by portal (sampled).",
    ),
    (
        DELETION_OLDEST_INCOMPLETE_AGE,
        Kind::Gauge,
        Unit::Seconds,
        "Age of the oldest deletion some portal has not answered completely, 0 when none (sampled).",
    ),
    (
        DB_POOL_CONNECTIONS,
        Kind::Gauge,
        Unit::Count,
        "PostgreSQL pool connections, by state (in_use, idle) (sampled).",
    ),
    (
        NATS_CONNECTED,
        Kind::Gauge,
        Unit::Count,
        "1 while the NATS connection is up, else 0 (sampled).",
    ),
    (
        BUILD_INFO,
        Kind::Gauge,
        Unit::Count,
        "Always 1; the labels say the build's version and the program.",
    ),
];

/// The process's recorder, installed by the first [`serve`].
static RECORDER: OnceLock<Result<PrometheusHandle, String>> = OnceLock::new();

/// Whether this process records metrics: [`serve`] installed the recorder. Until then
/// every metric is a no-op, so code that keeps metric handles (registered once rather
/// than looked up on every call) registers them only after this is true: a handle
/// registered before would stay a no-op.
pub fn recording() -> bool {
    matches!(RECORDER.get(), Some(Ok(_)))
}

/// Installs the recorder (once per process) and describes every metric of [`CATALOG`].
fn recorder() -> anyhow::Result<&'static PrometheusHandle> {
    RECORDER
        .get_or_init(|| {
            let installed = PrometheusBuilder::new()
                .set_buckets(BUCKETS)
                .and_then(|b| {
                    b.set_buckets_for_metric(Matcher::Full(UPLOAD_DURATION.into()), UPLOAD_BUCKETS)
                })
                .and_then(PrometheusBuilder::install_recorder)
                .map_err(|e| format!("installing the Prometheus recorder: {e}"))?;
            for &(name, kind, unit, help) in CATALOG {
                match kind {
                    Kind::Counter => metrics::describe_counter!(name, unit, help),
                    Kind::Gauge => metrics::describe_gauge!(name, unit, help),
                    Kind::Histogram => metrics::describe_histogram!(name, unit, help),
                }
            }
            Ok(installed)
        })
        .as_ref()
        .map_err(|e| anyhow::anyhow!("{e}"))
}

/// When `platform`'s `METRICS_ADDR` is set: installs the recorder (once per process),
/// sets [`BUILD_INFO`] for `program`, serves `/metrics` on that address until `shutdown`,
/// and samples the PostgreSQL pool and the NATS connection every [`SAMPLE_EVERY`].
/// Returns the bound address (port 0 picks one), or `None` when metrics are off.
///
/// # Errors
/// When the address cannot be bound, or another metrics recorder was installed in this
/// process first.
pub async fn serve(
    platform: &Platform,
    program: &str,
    shutdown: &CancellationToken,
) -> anyhow::Result<Option<SocketAddr>> {
    let Some(addr) = platform.config.metrics_addr else {
        return Ok(None);
    };
    let handle = recorder()?;
    metrics::gauge!(BUILD_INFO, "version" => env!("CARGO_PKG_VERSION"), "program" => program.to_owned())
        .set(1.0);
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("binding METRICS_ADDR {addr}: {e}"))?;
    let bound = listener.local_addr()?;
    let render = handle.clone();
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let render = render.clone();
            async move {
                (
                    [(
                        http::header::CONTENT_TYPE,
                        "text/plain; version=0.0.4; charset=utf-8",
                    )],
                    render.render(),
                )
            }
        }),
    );
    let stop = shutdown.clone();
    tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(async move { stop.cancelled().await })
            .await;
        if let Err(err) = served {
            tracing::warn!(error = %err, "the metrics endpoint stopped");
        }
    });
    tracing::info!(addr = %bound, "serving Prometheus metrics on /metrics");

    let (pool, nats, upkeep) = (platform.pool.clone(), platform.nats.clone(), handle.clone());
    spawn_sampler("connections", shutdown, move || {
        // Drains the histograms' pending samples: the exporter's own upkeep needs its
        // HTTP listener, which this endpoint replaces.
        upkeep.run_upkeep();
        let size = pool.size() as f64;
        let idle = pool.num_idle() as f64;
        metrics::gauge!(DB_POOL_CONNECTIONS, "state" => "in_use").set(size - idle);
        metrics::gauge!(DB_POOL_CONNECTIONS, "state" => "idle").set(idle);
        let connected = nats.connection_state() == async_nats::connection::State::Connected;
        metrics::gauge!(NATS_CONNECTED).set(if connected { 1.0 } else { 0.0 });
        std::future::ready(Ok(()))
    });
    Ok(Some(bound))
}

/// Runs `sample` now and every [`SAMPLE_EVERY`] until `shutdown`, each run bounded by
/// [`SAMPLE_EVERY`]; a failure (or a timeout) is logged as a warning naming `what`, and
/// sampling goes on. The caller checks that metrics are on.
pub fn spawn_sampler<F, Fut>(
    what: &'static str,
    shutdown: &CancellationToken,
    mut sample: F,
) -> JoinHandle<()>
where
    F: FnMut() -> Fut + Send + 'static,
    Fut: Future<Output = anyhow::Result<()>> + Send,
{
    let shutdown = shutdown.clone();
    tokio::spawn(async move {
        let mut every = tokio::time::interval(SAMPLE_EVERY);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = every.tick() => {}
            }
            let sampled = tokio::select! {
                _ = shutdown.cancelled() => return,
                sampled = tokio::time::timeout(SAMPLE_EVERY, sample()) => sampled,
            };
            match sampled {
                Ok(Ok(())) => {}
                Ok(Err(err)) => {
                    tracing::warn!(sampler = what, error = %format!("{err:#}"), "a metrics sample failed")
                }
                Err(_) => {
                    tracing::warn!(sampler = what, timeout = ?SAMPLE_EVERY, "a metrics sample timed out")
                }
            }
        }
    })
}

/// A gauge raised while something holds (a relay's leadership): [`Held::raise`] adds 1,
/// dropping it takes the 1 away again, whichever way the holder ends.
#[derive(Debug)]
pub struct Held(metrics::Gauge);

impl Held {
    /// Adds 1 to `gauge` until the returned value is dropped.
    pub fn raise(gauge: metrics::Gauge) -> Self {
        gauge.increment(1.0);
        Self(gauge)
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.0.decrement(1.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_conventions_and_the_documentation_lists_them_all() {
        let doc = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../deploy/OBSERVABILITY.md"
        ))
        .expect("deploy/OBSERVABILITY.md");
        for &(name, kind, unit, help) in CATALOG {
            assert!(name.starts_with("reseller_"), "{name}");
            assert_eq!(kind == Kind::Counter, name.ends_with("_total"), "{name}");
            assert_eq!(unit == Unit::Seconds, name.ends_with("_seconds"), "{name}");
            assert!(!help.is_empty(), "{name}");
            assert!(
                doc.contains(&format!("`{name}`")),
                "{name} is not in OBSERVABILITY.md"
            );
        }
    }
}
