//! The transactional outbox.
//!
//! A command writes its state change and its events' outbox rows in one transaction
//! ([`enqueue`]); the same transaction sends `NOTIFY <schema>_outbox`, which PostgreSQL
//! delivers only on commit. The [`Relay`] listens on that channel, publishes unsent rows
//! to JetStream in order with `Nats-Msg-Id` = event ID, and marks them sent only after
//! every publish is acknowledged. A crash between the ack and the mark republishes the
//! rows; JetStream's duplicate window and the consumers' inboxes make that harmless.
//!
//! Each service's migrations create `<schema>.outbox` with the columns used here.

use std::time::Duration;

use async_nats::jetstream::{self, context::PublishAckFuture, message::PublishMessage};
use reseller_proto::v1::Event;
use sqlx::postgres::PgListener;
use sqlx::{AssertSqlSafe, PgConnection, PgPool, Row};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::events;
use crate::subjects::{self, headers};

/// Rows published per relay transaction.
const BATCH: i64 = 512;
/// A safety poll in case a notification is missed (e.g. while the listener reconnects).
const POLL: Duration = Duration::from_secs(2);
/// Sent rows are kept this long for inspection, then pruned.
const RETENTION: &str = "1 day";

/// The outbox of one service schema.
#[derive(Debug, Clone, Copy)]
pub struct Outbox {
    schema: &'static str,
}

impl Outbox {
    /// The outbox in `schema` (the service's own schema).
    pub const fn new(schema: &'static str) -> Self {
        Self { schema }
    }

    fn channel(&self) -> String {
        format!("{}_outbox", self.schema)
    }

    /// Adds `events` to the outbox inside the caller's transaction and wakes the relay on
    /// commit.
    ///
    /// # Errors
    /// Database errors; the caller's transaction then rolls back as a whole.
    pub async fn enqueue(
        &self,
        tx: &mut PgConnection,
        events: &[Event],
    ) -> Result<(), sqlx::Error> {
        if events.is_empty() {
            return Ok(());
        }
        let mut ids = Vec::with_capacity(events.len());
        let mut subjects = Vec::with_capacity(events.len());
        let mut payloads = Vec::with_capacity(events.len());
        for event in events {
            let id = Uuid::parse_str(&event.event_id).unwrap_or_else(|_| Uuid::now_v7());
            ids.push(id);
            let subject = event
                .payload
                .as_ref()
                .map(subjects::event_subject)
                .unwrap_or("reseller.events.v1.unknown.unknown");
            subjects.push(subject.to_owned());
            payloads.push(events::encode(event));
        }
        sqlx::query(AssertSqlSafe(format!(
            "INSERT INTO {}.outbox (event_id, subject, payload) \
             SELECT * FROM UNNEST($1::uuid[], $2::text[], $3::bytea[])",
            self.schema
        )))
        .bind(&ids)
        .bind(&subjects)
        .bind(&payloads)
        .execute(&mut *tx)
        .await?;
        sqlx::query("SELECT pg_notify($1, '')")
            .bind(self.channel())
            .execute(&mut *tx)
            .await?;
        Ok(())
    }
}

/// Publishes a schema's outbox to JetStream.
#[derive(Debug, Clone)]
pub struct Relay {
    outbox: Outbox,
    pool: PgPool,
    js: jetstream::Context,
}

impl Relay {
    /// A relay for `outbox`.
    pub fn new(outbox: Outbox, pool: PgPool, js: jetstream::Context) -> Self {
        Self { outbox, pool, js }
    }

    /// Runs until `shutdown`: publishes what is pending, then waits for a commit
    /// notification. Errors (NATS or PostgreSQL down) are logged and retried with backoff;
    /// nothing is marked sent that JetStream did not acknowledge.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut listener = loop {
            match self.listen().await {
                Ok(listener) => break listener,
                Err(err) => {
                    tracing::warn!(schema = self.outbox.schema, error = %err, "outbox relay cannot LISTEN yet");
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    }
                }
            }
        };
        let mut backoff = Duration::from_millis(50);
        let mut last_prune = tokio::time::Instant::now();
        loop {
            match self.publish_pending().await {
                Ok(_) => backoff = Duration::from_millis(50),
                Err(err) => {
                    tracing::warn!(schema = self.outbox.schema, error = %err, "outbox relay failed; retrying");
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    continue;
                }
            }
            if last_prune.elapsed() > Duration::from_secs(600) {
                last_prune = tokio::time::Instant::now();
                if let Err(err) = self.prune().await {
                    tracing::warn!(error = %err, "pruning the outbox failed");
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => {
                    // Publish what committed before the signal, then stop.
                    let _ = self.publish_pending().await;
                    return;
                }
                notification = listener.recv() => {
                    if let Err(err) = notification {
                        tracing::warn!(error = %err, "outbox LISTEN connection lost; reconnecting");
                    }
                }
                _ = tokio::time::sleep(POLL) => {}
            }
        }
    }

    async fn listen(&self) -> Result<PgListener, sqlx::Error> {
        let mut listener = PgListener::connect_with(&self.pool).await?;
        listener.listen(&self.outbox.channel()).await?;
        Ok(listener)
    }

    /// Publishes every unsent row, batch by batch. Returns how many were published.
    ///
    /// # Errors
    /// When PostgreSQL or JetStream fails; the failed batch stays unsent.
    pub async fn publish_pending(&self) -> anyhow::Result<usize> {
        let mut total = 0;
        loop {
            let n = self.publish_batch().await?;
            total += n;
            if n < BATCH as usize {
                return Ok(total);
            }
        }
    }

    async fn publish_batch(&self) -> anyhow::Result<usize> {
        let schema = self.outbox.schema;
        let mut tx = self.pool.begin().await?;
        // One relay per schema at a time (replicas wait their turn), so events leave in
        // commit order.
        sqlx::query("SELECT pg_advisory_xact_lock(hashtext($1))")
            .bind(format!("outbox:{schema}"))
            .execute(&mut *tx)
            .await?;
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT id, event_id, subject, payload FROM {schema}.outbox \
             WHERE published_at IS NULL ORDER BY id LIMIT $1"
        )))
        .bind(BATCH)
        .fetch_all(&mut *tx)
        .await?;
        if rows.is_empty() {
            return Ok(0);
        }
        // Pipeline: send every publish, then await the acks.
        let mut acks: Vec<PublishAckFuture> = Vec::with_capacity(rows.len());
        let mut ids: Vec<i64> = Vec::with_capacity(rows.len());
        for row in &rows {
            let event_id: Uuid = row.try_get("event_id")?;
            let subject: String = row.try_get("subject")?;
            let payload: Vec<u8> = row.try_get("payload")?;
            let message = PublishMessage::build()
                .payload(payload.into())
                .message_id(event_id.to_string())
                .header("Content-Type", headers::CONTENT_TYPE_PROTOBUF);
            acks.push(self.js.send_publish(subject, message).await?);
            ids.push(row.try_get("id")?);
        }
        for ack in acks {
            ack.await?;
        }
        sqlx::query(AssertSqlSafe(format!(
            "UPDATE {schema}.outbox SET published_at = now() WHERE id = ANY($1)"
        )))
        .bind(&ids)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(ids.len())
    }

    async fn prune(&self) -> Result<(), sqlx::Error> {
        sqlx::query(AssertSqlSafe(format!(
            "DELETE FROM {}.outbox WHERE published_at < now() - interval '{RETENTION}'",
            self.outbox.schema
        )))
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}
