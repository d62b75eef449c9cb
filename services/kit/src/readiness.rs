//! Whether a program can do its work now: PostgreSQL and NATS both answering.
//!
//! A background task ([`watch`]) probes both every [`PROBE_INTERVAL`], each check bounded
//! by [`PROBE_TIMEOUT`], and publishes the result; the gRPC server
//! ([`crate::grpc::GrpcServer::ready_when`]) reports each service's own health name
//! `NOT_SERVING` while a dependency is unreachable and `SERVING` again once both answer.
//! Kubernetes' readiness probe asks that name, so an outage takes replicas out of
//! rotation; the liveness probe asks `""`, which stays `SERVING` while the process runs,
//! so the same outage does not restart them all.
//!
//! PostgreSQL is probed with `SELECT 1` on a connection of the probe's own, outside the
//! pool: a pool busy with a long export must not read as an outage. NATS is probed with
//! the connection's state and a stream-info round trip for `RESELLER_EVENTS` (the relays
//! and consumers need the stream's JetStream leader, not just a TCP connection).

use std::time::Duration;

use async_nats::connection::State;
use async_nats::jetstream;
use sqlx::{Connection, PgConnection, PgPool};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// How often the dependencies are probed.
pub const PROBE_INTERVAL: Duration = Duration::from_secs(1);
/// Longest one probe of one dependency may take before it counts as failed.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// Whether the program's dependencies answered the latest probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Readiness {
    /// Both answered.
    Ready,
    /// At least one did not; says which and why.
    Unready(String),
}

impl Readiness {
    /// True for [`Readiness::Ready`].
    pub fn is_ready(&self) -> bool {
        matches!(self, Readiness::Ready)
    }
}

/// What a program depends on.
#[derive(Debug, Clone)]
pub struct Dependencies {
    pool: PgPool,
    nats: async_nats::Client,
    js: jetstream::Context,
}

impl Dependencies {
    /// The dependencies behind `pool`, `nats` and `js`.
    pub fn new(pool: PgPool, nats: async_nats::Client, js: jetstream::Context) -> Self {
        Self { pool, nats, js }
    }
}

/// Starts probing `deps` until `shutdown`; the receiver holds the latest result, starting
/// from [`Readiness::Ready`] (a program has just reached both while starting).
pub fn watch(
    deps: Dependencies,
    shutdown: CancellationToken,
) -> (watch::Receiver<Readiness>, JoinHandle<()>) {
    let (tx, rx) = watch::channel(Readiness::Ready);
    let task = tokio::spawn(async move {
        let mut probe = Probe {
            deps,
            connection: None,
        };
        loop {
            let now = probe.check().await;
            let was = tx.borrow().clone();
            if now != was {
                match &now {
                    Readiness::Ready => tracing::info!("PostgreSQL and NATS answer again: serving"),
                    Readiness::Unready(why) => {
                        tracing::warn!(reason = %why, "a dependency is unreachable: health NOT_SERVING")
                    }
                }
                tx.send_replace(now);
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(PROBE_INTERVAL) => {}
            }
        }
    });
    (rx, task)
}

/// The probe's state: its own PostgreSQL connection, kept between probes.
struct Probe {
    deps: Dependencies,
    connection: Option<PgConnection>,
}

impl Probe {
    async fn check(&mut self) -> Readiness {
        let (postgres, nats) = tokio::join!(
            tokio::time::timeout(
                PROBE_TIMEOUT,
                probe_postgres(&self.deps.pool, &mut self.connection)
            ),
            tokio::time::timeout(PROBE_TIMEOUT, probe_nats(&self.deps.nats, &self.deps.js)),
        );
        let mut reasons = Vec::new();
        match postgres {
            Ok(Ok(())) => {}
            Ok(Err(err)) => {
                self.connection = None;
                reasons.push(format!("PostgreSQL: {err}"));
            }
            Err(_) => {
                // A connection that stopped answering is dropped: the next probe dials anew.
                self.connection = None;
                reasons.push(format!("PostgreSQL: no answer within {PROBE_TIMEOUT:?}"));
            }
        }
        match nats {
            Ok(Ok(())) => {}
            Ok(Err(err)) => reasons.push(format!("NATS: {err}")),
            Err(_) => reasons.push(format!("NATS: no answer within {PROBE_TIMEOUT:?}")),
        }
        if reasons.is_empty() {
            Readiness::Ready
        } else {
            Readiness::Unready(reasons.join("; "))
        }
    }
}

/// `SELECT 1` on the probe's own connection, dialled when missing.
async fn probe_postgres(
    pool: &PgPool,
    connection: &mut Option<PgConnection>,
) -> anyhow::Result<()> {
    let conn = match connection {
        Some(conn) => conn,
        None => connection.insert(PgConnection::connect_with(&pool.connect_options()).await?),
    };
    sqlx::query("SELECT 1").execute(conn).await?;
    Ok(())
}

/// The connection is up and JetStream answers for the event stream (the stream's leader
/// is there: relays can publish and consumers pull). Not `$JS.API.INFO`: async-nats
/// 0.51 cannot parse a 2.9 server's account info.
async fn probe_nats(nats: &async_nats::Client, js: &jetstream::Context) -> anyhow::Result<()> {
    match nats.connection_state() {
        State::Connected => {}
        state => anyhow::bail!("not connected ({state:?})"),
    }
    js.get_stream_no_info(crate::subjects::EVENTS_STREAM)
        .await?
        .get_info()
        .await?;
    Ok(())
}
