//! The transactional outbox.
//!
//! A command writes its state change and its events' outbox rows in one transaction
//! ([`Outbox::enqueue`]); the same transaction sends `NOTIFY <schema>_outbox`, which PostgreSQL
//! delivers only on commit. The [`Relay`] listens on that channel, publishes unsent rows
//! to JetStream in order with `Nats-Msg-Id` = event ID, and marks them sent only after
//! every publish is acknowledged. A crash between the ack and the mark republishes the
//! rows; JetStream's duplicate window and the consumers' inboxes make that harmless.
//!
//! One relay per schema publishes at a time: the one whose own connection holds the
//! schema's session advisory lock (other replicas retry every second, and take over when
//! that connection goes). A small event travels in its commit notification, so the relay
//! publishes it without reading it back; a large one is announced bare and read from the
//! outbox. Notifications that arrive while the relay is publishing queue up and go
//! together, pipelined, in its next turn: the relay keeps up with commits however long a
//! JetStream ack takes (one at a time, a 20 ms ack on a busy cluster capped it at 50
//! events/s). A poll every two seconds reads whatever a lost notification missed.
//!
//! A row holds its event encoded (`payload`), as [`Outbox::enqueue`] writes it, or, for a
//! deletion receipt that a portal's one statement writes, the receipt's fields
//! (`receipt`, a [`PortalReceipt`] as jsonb): the relay encodes those with prost when it
//! publishes, the same bytes every time, since the event ID and time are the row's.
//!
//! Trace context: a row keeps the `traceparent` of the span that wrote it (the RPC's, or
//! the consumer's that applied an event: [`crate::trace_context::current`]), bound as a
//! parameter, NULL when the process exports no traces. Its notification carries it, the
//! poll reads it, and the relay sends it as the event's NATS header `traceparent`, so the
//! consumers' spans continue the writer's trace.
//!
//! Each service's migrations create `<schema>.outbox` with the columns used here
//! (`receipt` since their `0005_outbox_receipts.sql`, `traceparent` since their
//! `…_outbox_traceparent.sql`).

use std::time::Duration;

use async_nats::jetstream::{self, context::PublishAckFuture, message::PublishMessage};
use reseller_proto::v1::Event;
use sqlx::postgres::{PgListener, PgRow};
use sqlx::{Connection, PgConnection, PgPool, Row};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::events::{self, PortalReceipt};
use crate::sql::Schema;
use crate::subjects::{self, headers};

/// Rows published per relay transaction.
const BATCH: i64 = 512;
/// Longest a batch may take (read, publish, mark) before the relay gives up on its
/// connection and reconnects.
const BATCH_TIMEOUT: Duration = Duration::from_secs(30);
/// A safety poll in case a notification is missed (e.g. while the listener reconnects).
const POLL: Duration = Duration::from_secs(2);
/// Events up to this size travel in their commit notification (hex-encoded, well under
/// PostgreSQL's 8,000-byte limit for a payload).
const INLINE_MAX_BYTES: usize = 3000;
/// A receipt whose fields (as JSON text) are up to this size travels in its commit
/// notification: as long as the hex of the largest event sent inline.
const INLINE_MAX_RECEIPT_BYTES: usize = 2 * INLINE_MAX_BYTES;
/// How often a replica that is not the relay asks again.
const LEADER_RETRY: Duration = Duration::from_secs(1);
/// Longest pause between attempts after failures. Short, because what fails is mostly
/// brief: a NATS stream electing a new leader after a node is lost (about 5 s on 2.9),
/// a PostgreSQL restart; events wait in the outbox meanwhile.
const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// Sent rows are kept this long for inspection, then pruned.
const RETENTION: &str = "1 day";

/// The outbox of one service schema.
#[derive(Debug, Clone, Copy)]
pub struct Outbox {
    schema: Schema,
}

/// The outbox rows of one statement, and their notifications; see
/// [`Outbox::insert_and_notify_sql`]. `{traceparent}` is the placeholder of a bound value.
const INSERT_AND_NOTIFY: &str = "\
    outbox_rows AS (INSERT INTO {schema}.outbox (event_id, subject, payload, receipt, traceparent) \
      SELECT event_id, subject, payload, receipt, {traceparent}::text FROM {source} \
      RETURNING id, event_id, subject, payload, receipt, traceparent) \
    SELECT pg_notify('{schema}_outbox', CASE \
      WHEN length(payload) <= {inline_max_bytes} \
        THEN id || ' ' || event_id || ' ' || subject || ' ' || coalesce(traceparent, '-') \
          || ' ' || encode(payload, 'hex') \
      WHEN octet_length(receipt::text) <= {inline_max_receipt_bytes} \
        THEN id || ' ' || event_id || ' ' || subject || ' ' || coalesce(traceparent, '-') \
          || ' ' || receipt::text \
      ELSE '' END) \
    FROM outbox_rows ORDER BY id";

impl Outbox {
    /// The outbox in `schema` (the service's own schema).
    ///
    /// # Panics
    /// When `schema` is not a plain identifier ([`Schema::new`]).
    pub const fn new(schema: &'static str) -> Self {
        Self {
            schema: Schema::new(schema),
        }
    }

    /// The channel the relay listens on, as [`INSERT_AND_NOTIFY`] names it.
    fn channel(&self) -> String {
        format!("{}_outbox", self.schema.name())
    }

    /// Adds `events` to the outbox inside the caller's transaction and wakes the relay on
    /// commit. The rows keep the current span's trace context.
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
            // The ID is the payload's and `Nats-Msg-Id`'s: they must be the same.
            let id = Uuid::parse_str(&event.event_id).map_err(|e| {
                sqlx::Error::Encode(format!("event_id {:?}: {e}", event.event_id).into())
            })?;
            ids.push(id);
            subjects.push(subjects::subject_of(event).to_owned());
            payloads.push(events::encode(event));
        }
        // One round trip: the rows and their notifications (delivered on commit).
        let template = format!(
            "WITH new_events AS (SELECT *, NULL::jsonb AS receipt \
               FROM UNNEST($1::uuid[], $2::text[], $3::bytea[]) AS e (event_id, subject, payload)), {}",
            Self::insert_and_notify_sql("new_events", "$4")
        );
        sqlx::query(self.schema.sql(&template))
            .bind(&ids)
            .bind(&subjects)
            .bind(&payloads)
            .bind(crate::trace_context::current())
            .execute(&mut *tx)
            .await?;
        Ok(())
    }

    /// The end of a statement (a template for [`Schema::sql`]) that adds the rows
    /// `(event_id, subject, payload, receipt)` of the CTE `source` to the outbox and
    /// notifies the relay on commit: a CTE named `outbox_rows`, then the final `SELECT`.
    /// A row holds its event encoded (`payload`) or a deletion receipt's fields
    /// (`receipt`, a [`PortalReceipt`] as jsonb), the other column NULL. Every row keeps
    /// the `traceparent` bound at `traceparent_placeholder` (`$4`: a value, never SQL
    /// text; NULL for none). A small event travels in its notification, so the relay can
    /// publish it without reading it back; a large one is announced bare (see
    /// [`OutboxEvent::from_notification`]).
    pub(crate) fn insert_and_notify_sql(source: &str, traceparent_placeholder: &str) -> String {
        assert!(
            traceparent_placeholder
                .strip_prefix('$')
                .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit())),
            "the traceparent is a bound value's placeholder, `$n`"
        );
        INSERT_AND_NOTIFY
            .replace("{source}", source)
            .replace("{traceparent}", traceparent_placeholder)
            .replace("{inline_max_bytes}", &INLINE_MAX_BYTES.to_string())
            .replace(
                "{inline_max_receipt_bytes}",
                &INLINE_MAX_RECEIPT_BYTES.to_string(),
            )
    }

    /// Up to `limit` unpublished events, oldest first, as the relay publishes them (a
    /// receipt's fields encoded): one round trip. For the relay, and for tests that look
    /// at what a statement put in the outbox.
    ///
    /// # Errors
    /// Database errors, and a `receipt` that does not hold a [`PortalReceipt`].
    pub async fn unpublished(
        &self,
        conn: &mut PgConnection,
        limit: i64,
    ) -> anyhow::Result<Vec<OutboxEvent>> {
        sqlx::query(self.schema.sql(
            "SELECT id, event_id, subject, payload, receipt::text AS receipt, traceparent \
             FROM {schema}.outbox WHERE published_at IS NULL ORDER BY id LIMIT $1",
        ))
        .bind(limit)
        .fetch_all(&mut *conn)
        .await?
        .iter()
        .map(OutboxEvent::from_row)
        .collect()
    }

    /// Reads how many rows are unpublished and how old the oldest of them is, into
    /// [`crate::metrics::OUTBOX_UNSENT`] and [`crate::metrics::OUTBOX_OLDEST_UNSENT_AGE`]
    /// (0 s when none): one query over the partial index of unpublished rows.
    ///
    /// # Errors
    /// Database errors.
    pub async fn sample_backlog(&self, pool: &PgPool) -> anyhow::Result<()> {
        let schema = self.schema.name();
        let (unsent, oldest): (i64, f64) = sqlx::query_as(self.schema.sql(
            "SELECT count(*), coalesce(extract(epoch FROM now() - min(created_at)), 0)::float8 \
             FROM {schema}.outbox WHERE published_at IS NULL",
        ))
        .fetch_one(pool)
        .await
        .map_err(|e| anyhow::anyhow!("the {schema} outbox's backlog: {e}"))?;
        ::metrics::gauge!(crate::metrics::OUTBOX_UNSENT, "schema" => schema).set(unsent as f64);
        ::metrics::gauge!(crate::metrics::OUTBOX_OLDEST_UNSENT_AGE, "schema" => schema)
            .set(oldest.max(0.0));
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

    /// Runs until `shutdown`: waits to be this schema's relay, then publishes what is
    /// pending and again on every commit notification. Errors (NATS or PostgreSQL down)
    /// are logged and retried with backoff; nothing is marked sent that JetStream did not
    /// acknowledge.
    pub async fn run(self, shutdown: CancellationToken) {
        let schema = self.outbox.schema.name();
        // Exists at 0 from the start, so that the first events show as an increase.
        ::metrics::counter!(crate::metrics::OUTBOX_PUBLISHED, "schema" => schema).increment(0);
        let mut backoff = Duration::from_millis(50);
        loop {
            match self.relay_until_error(&shutdown, &mut backoff).await {
                Ok(()) => return,
                Err(err) => {
                    tracing::warn!(schema = self.outbox.schema.name(), error = %format!("{err:#}"), "outbox relay failed; retrying");
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }

    /// One leadership: returns `Ok` on shutdown, the error otherwise (the connection and
    /// with it the leadership are then gone).
    async fn relay_until_error(
        &self,
        shutdown: &CancellationToken,
        backoff: &mut Duration,
    ) -> anyhow::Result<()> {
        let schema = self.outbox.schema.name();
        // The relay's own connection, outside the pool: it holds the leadership.
        let mut conn = PgConnection::connect_with(&self.pool.connect_options()).await?;
        // Losing a "sent" mark in a crash only republishes the event, which JetStream's
        // duplicate window and the consumers' inboxes absorb: no need to wait for the disk.
        // The server probes this connection when idle, and gives up on data it sent that
        // goes unacknowledged for 30 s, so that a replica that vanished (a lost node)
        // releases the leadership in well under a minute rather than the system's
        // default two hours.
        sqlx::raw_sql(
            "SET synchronous_commit = off; SET tcp_keepalives_idle = 10; \
             SET tcp_keepalives_interval = 5; SET tcp_keepalives_count = 3; \
             SET tcp_user_timeout = 30000",
        )
        .execute(&mut conn)
        .await?;
        // One relay per schema at a time (replicas wait their turn), so events leave in
        // commit order. The lock belongs to the connection and goes with it.
        let leader_gauge =
            ::metrics::gauge!(crate::metrics::OUTBOX_RELAY_LEADER, "schema" => schema);
        leader_gauge.increment(0.0); // 0 while waiting, so that the series exists
        loop {
            let leader: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock(hashtext($1))")
                .bind(format!("outbox:{schema}"))
                .fetch_one(&mut conn)
                .await?;
            if leader {
                break;
            }
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                _ = tokio::time::sleep(LEADER_RETRY) => {}
            }
        }
        // 1 until this leadership ends, however it ends.
        let _leading = crate::metrics::Held::raise(leader_gauge);
        // Listen only once leading (a waiting replica would pile notifications up), then
        // read what committed before.
        let mut listener = PgListener::connect_with(&self.pool).await?;
        listener.listen(&self.outbox.channel()).await?;
        let mut notified = Notifications::spawn(listener);
        let mut last_prune = tokio::time::Instant::now();
        let mut outcome = self.publish_pending(&mut conn).await.map(drop);
        loop {
            match outcome {
                Ok(()) => *backoff = Duration::from_millis(50),
                // A failed publish keeps the leadership (see `ride_out`); read the
                // outbox again once the pause is over.
                Err(err) => {
                    if !self.ride_out(err, backoff, shutdown).await? {
                        return Ok(());
                    }
                    outcome = self.publish_pending(&mut conn).await.map(drop);
                    continue;
                }
            }
            if last_prune.elapsed() > Duration::from_secs(600) {
                last_prune = tokio::time::Instant::now();
                if let Err(err) = within_batch_timeout(self.prune(&mut conn)).await {
                    tracing::warn!(error = %err, "pruning the outbox failed");
                }
            }
            outcome = tokio::select! {
                _ = shutdown.cancelled() => {
                    // Publish what committed before the signal, then stop.
                    let _ = self.publish_pending(&mut conn).await;
                    return Ok(());
                }
                // Everything notified since the last turn at once: while a batch is
                // published, the next commits queue up and go together in the next one.
                batch = notified.next_batch() => match batch {
                    Some(inline) => within_batch_timeout(self.publish_inline(&mut conn, inline)).await,
                    // A large event, or notifications the listener may have missed.
                    None => self.publish_pending(&mut conn).await.map(drop),
                },
                _ = tokio::time::sleep(POLL) => self.publish_pending(&mut conn).await.map(drop),
            };
        }
    }

    /// After a failed step while leading: a publish JetStream refused or did not
    /// acknowledge (NATS unreachable, the stream electing a new leader after a node was
    /// lost) keeps the leadership and the connection, pauses with backoff and returns
    /// `Ok(true)` (`Ok(false)` on shutdown): the rows are still unsent and are read again,
    /// in order. Dropping the lock instead would hand leadership round the replicas on
    /// every failed publish, each paying a reconnect. Anything else (the PostgreSQL
    /// connection that holds the lock, a batch that timed out) is returned, ending the
    /// leadership.
    async fn ride_out(
        &self,
        err: anyhow::Error,
        backoff: &mut Duration,
        shutdown: &CancellationToken,
    ) -> anyhow::Result<bool> {
        if err
            .downcast_ref::<async_nats::jetstream::context::PublishError>()
            .is_none()
        {
            return Err(err);
        }
        tracing::warn!(schema = self.outbox.schema.name(), error = %format!("{err:#}"),
            "publishing to JetStream failed; keeping the relay and retrying");
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(false),
            _ = tokio::time::sleep(*backoff) => {}
        }
        *backoff = (*backoff * 2).min(MAX_BACKOFF);
        Ok(true)
    }

    /// Publishes the events notifications carried and marks them sent (see
    /// [`publish`](Self::publish)). Should a poll have sent one already, JetStream drops
    /// the repeat (same `Nats-Msg-Id`).
    async fn publish_inline(
        &self,
        conn: &mut PgConnection,
        batch: Vec<OutboxEvent>,
    ) -> anyhow::Result<()> {
        let started = std::time::Instant::now();
        let (events, acked) = self.publish(conn, batch).await?;
        tracing::debug!(
            schema = self.outbox.schema.name(),
            events,
            ack_us = acked.as_micros() as u64,
            marked_us = (started.elapsed() - acked).as_micros() as u64,
            "event relayed"
        );
        Ok(())
    }

    /// Publishes every unsent row, batch by batch. Returns how many were published.
    async fn publish_pending(&self, conn: &mut PgConnection) -> anyhow::Result<usize> {
        let mut total = 0;
        loop {
            // A server that stopped answering (half-open connection) fails the batch, and
            // the relay reconnects, instead of waiting forever.
            let n = within_batch_timeout(self.publish_batch(conn)).await?;
            total += n;
            if n < BATCH as usize {
                return Ok(total);
            }
        }
    }

    /// One round trip to read a batch, the publishes pipelined, one to mark them sent.
    async fn publish_batch(&self, conn: &mut PgConnection) -> anyhow::Result<usize> {
        let batch = self.outbox.unpublished(conn, BATCH).await?;
        if batch.is_empty() {
            return Ok(0);
        }
        Ok(self.publish(conn, batch).await?.0)
    }

    /// Publishes `batch` pipelined (every publish sent, then the acks awaited, in outbox
    /// order), then marks the rows sent in one statement. Returns how many there were,
    /// and how long the publishes took until the last ack.
    async fn publish(
        &self,
        conn: &mut PgConnection,
        batch: Vec<OutboxEvent>,
    ) -> anyhow::Result<(usize, Duration)> {
        let started = std::time::Instant::now();
        let mut acks: Vec<PublishAckFuture> = Vec::with_capacity(batch.len());
        let mut ids: Vec<i64> = Vec::with_capacity(batch.len());
        for event in batch {
            let mut message = PublishMessage::build()
                .payload(event.payload.into())
                .message_id(event.event_id.to_string())
                .header("Content-Type", headers::CONTENT_TYPE_PROTOBUF);
            if let Some(traceparent) = &event.traceparent {
                message = message.header(headers::TRACEPARENT, traceparent.as_str());
            }
            acks.push(self.js.send_publish(event.subject, message).await?);
            ids.push(event.id);
        }
        for ack in acks {
            ack.await?;
        }
        let acked = started.elapsed();
        let schema = self.outbox.schema.name();
        ::metrics::counter!(crate::metrics::OUTBOX_PUBLISHED, "schema" => schema)
            .increment(ids.len() as u64);
        ::metrics::histogram!(crate::metrics::OUTBOX_PUBLISH_DURATION, "schema" => schema)
            .record(acked);
        sqlx::query(self.outbox.schema.sql(
            "UPDATE {schema}.outbox SET published_at = now() \
             WHERE id = ANY($1) AND published_at IS NULL",
        ))
        .bind(&ids)
        .execute(&mut *conn)
        .await?;
        Ok((ids.len(), acked))
    }

    async fn prune(&self, conn: &mut PgConnection) -> anyhow::Result<()> {
        sqlx::query(
            self.outbox
                .schema
                .sql("DELETE FROM {schema}.outbox WHERE published_at < now() - $1::interval"),
        )
        .bind(RETENTION)
        .execute(conn)
        .await?;
        Ok(())
    }
}

/// `work`, failed when it takes over [`BATCH_TIMEOUT`].
async fn within_batch_timeout<T>(
    work: impl Future<Output = anyhow::Result<T>>,
) -> anyhow::Result<T> {
    tokio::time::timeout(BATCH_TIMEOUT, work)
        .await
        .map_err(|_| anyhow::anyhow!("an outbox batch took over {BATCH_TIMEOUT:?}"))?
}

/// The relay's commit notifications, received by a task of their own so that they queue
/// while the relay publishes, and are taken a batch at a time.
struct Notifications {
    queue: mpsc::UnboundedReceiver<Notified>,
    receiving: tokio::task::JoinHandle<()>,
}

/// One notification, as the relay needs it.
enum Notified {
    /// A small event, carried whole.
    Inline(OutboxEvent),
    /// A large event announced bare, or the listener's connection lost and remade
    /// (notifications sent meanwhile are gone): read the outbox.
    ReadOutbox,
}

impl Notifications {
    fn spawn(mut listener: PgListener) -> Self {
        let (sender, queue) = mpsc::unbounded_channel();
        let receiving = tokio::spawn(async move {
            loop {
                let notified = match listener.recv().await {
                    Ok(notification) => {
                        match OutboxEvent::from_notification(notification.payload()) {
                            Some(inline) => Notified::Inline(inline),
                            None => Notified::ReadOutbox,
                        }
                    }
                    // The listener reconnects by itself; the relay reads what it missed.
                    Err(err) => {
                        tracing::warn!(error = %err, "outbox LISTEN connection lost; reconnecting");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        Notified::ReadOutbox
                    }
                };
                if sender.send(notified).is_err() {
                    return; // the relay is gone
                }
            }
        });
        Self { queue, receiving }
    }

    /// Waits for a notification, then takes every one queued behind it (up to a batch):
    /// `Some` with the events when all of them were carried inline, `None` when the
    /// outbox must be read instead (it holds them all, in order).
    async fn next_batch(&mut self) -> Option<Vec<OutboxEvent>> {
        let mut taken = Vec::new();
        if self.queue.recv_many(&mut taken, BATCH as usize).await == 0 {
            // The receiving task ended (it never does while the relay runs): leave the
            // relay to its poll.
            std::future::pending::<()>().await;
        }
        taken
            .into_iter()
            .map(|n| match n {
                Notified::Inline(inline) => Some(inline),
                Notified::ReadOutbox => None,
            })
            .collect()
    }
}

impl Drop for Notifications {
    fn drop(&mut self) {
        // The LISTEN connection goes with the leadership.
        self.receiving.abort();
    }
}

/// An unpublished outbox row, as the relay publishes it.
#[derive(Debug, PartialEq, Eq)]
pub struct OutboxEvent {
    /// The row's ID: the outbox's order.
    pub id: i64,
    /// The event ID, also its `Nats-Msg-Id`.
    pub event_id: Uuid,
    /// The subject it is published on.
    pub subject: String,
    /// The encoded `reseller.v1.Event`: the row's `payload`, or the event its `receipt`
    /// says ([`PortalReceipt::into_event`]).
    pub payload: Vec<u8>,
    /// The W3C trace context of the span that wrote it, sent as the NATS header
    /// `traceparent`; `None` when that process exported no traces.
    pub traceparent: Option<String>,
}

impl OutboxEvent {
    /// The event of a row read by [`Outbox::unpublished`].
    fn from_row(row: &PgRow) -> anyhow::Result<Self> {
        let event_id: Uuid = row.try_get("event_id")?;
        let payload = match row.try_get::<Option<Vec<u8>>, _>("payload")? {
            Some(payload) => payload,
            None => {
                let receipt: Option<String> = row.try_get("receipt")?;
                let receipt = receipt.ok_or_else(|| {
                    anyhow::anyhow!("outbox event {event_id} has neither a payload nor a receipt")
                })?;
                Self::encode_receipt(event_id, &receipt)?
            }
        };
        Ok(Self {
            id: row.try_get("id")?,
            event_id,
            subject: row.try_get("subject")?,
            payload,
            traceparent: row.try_get("traceparent")?,
        })
    }

    /// The encoding of the receipt whose fields are the JSON `receipt`.
    fn encode_receipt(event_id: Uuid, receipt: &str) -> anyhow::Result<Vec<u8>> {
        let receipt: PortalReceipt = serde_json::from_str(receipt)
            .map_err(|e| anyhow::anyhow!("outbox event {event_id}: not a receipt's fields: {e}"))?;
        Ok(events::encode(&receipt.into_event(event_id)))
    }

    /// The row a commit notification carries,
    /// `<id> <event_id> <subject> <traceparent> <inline>` with `<traceparent>` the row's
    /// or `-`, and `<inline>` the payload in hex or the receipt's fields in JSON (see
    /// `Outbox::insert_and_notify_sql`); `None` for a bare one (a large event: read
    /// the outbox) or anything unexpected (the outbox is read then too: so also for the
    /// four fields a writer without the `traceparent` column sent).
    pub fn from_notification(notification: &str) -> Option<Self> {
        let mut fields = notification.splitn(5, ' ');
        let id = fields.next()?.parse().ok()?;
        let event_id = Uuid::parse_str(fields.next()?).ok()?;
        let subject = fields.next()?.to_owned();
        let traceparent = match fields.next()? {
            "-" => None,
            traceparent if is_traceparent(traceparent) => Some(traceparent.to_owned()),
            _ => return None,
        };
        let inline = fields.next()?;
        let payload = if inline.starts_with('{') {
            Self::encode_receipt(event_id, inline).ok()?
        } else {
            let hex = inline.as_bytes();
            if hex.len() % 2 != 0 {
                return None;
            }
            hex.chunks(2)
                .map(|pair| u8::from_str_radix(std::str::from_utf8(pair).ok()?, 16).ok())
                .collect::<Option<Vec<u8>>>()?
        };
        Some(Self {
            id,
            event_id,
            subject,
            payload,
            traceparent,
        })
    }
}

/// Whether `value` has the shape of a W3C `traceparent`
/// (`<2 hex>-<32 hex>-<16 hex>-<2 hex>`), as [`crate::trace_context`] writes them.
fn is_traceparent(value: &str) -> bool {
    let parts: Vec<&str> = value.split('-').collect();
    parts.len() == 4
        && parts
            .iter()
            .zip([2, 32, 16, 2])
            .all(|(part, len)| part.len() == len && part.bytes().all(|b| b.is_ascii_hexdigit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TRACEPARENT: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

    #[test]
    fn notifications_carry_small_events_and_announce_large_ones() {
        let id = Uuid::nil();
        assert_eq!(
            OutboxEvent::from_notification(&format!(
                "42 {id} reseller.events.v1.device.deleted - 0aff10"
            )),
            Some(OutboxEvent {
                id: 42,
                event_id: id,
                subject: "reseller.events.v1.device.deleted".into(),
                payload: vec![0x0a, 0xff, 0x10],
                traceparent: None,
            })
        );
        assert_eq!(OutboxEvent::from_notification(""), None);
        assert_eq!(
            OutboxEvent::from_notification("42 not-a-uuid subject - 00"),
            None
        );
        assert_eq!(
            OutboxEvent::from_notification(&format!("42 {id} subject - 0")),
            None
        );
        assert_eq!(
            OutboxEvent::from_notification(&format!("42 {id} subject - zz")),
            None
        );
        assert_eq!(
            OutboxEvent::from_notification(&format!("42 {id} subject - 00 ff")),
            None
        );
    }

    #[test]
    fn notifications_carry_the_trace_context() {
        let id = Uuid::nil();
        let notified =
            OutboxEvent::from_notification(&format!("42 {id} subject {TRACEPARENT} 0aff10"))
                .expect("an event carried inline");
        assert_eq!(notified.traceparent.as_deref(), Some(TRACEPARENT));
        assert_eq!(notified.payload, vec![0x0a, 0xff, 0x10]);
        // Anything else in its place: read the outbox.
        for junk in [
            "00-0af7-b7ad-01",
            "x",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331",
        ] {
            assert_eq!(
                OutboxEvent::from_notification(&format!("42 {id} subject {junk} 0aff10")),
                None,
                "{junk}"
            );
        }
    }

    #[test]
    fn notifications_of_writers_without_the_trace_context_read_the_outbox() {
        // `<id> <event_id> <subject> <inline>`, as services before the `traceparent`
        // column notify, during a rolling upgrade.
        let id = Uuid::nil();
        assert_eq!(
            OutboxEvent::from_notification(&format!("42 {id} subject 0aff10")),
            None
        );
        let fields = r#"{"part": 1, "portal": 3}"#;
        assert_eq!(
            OutboxEvent::from_notification(&format!("42 {id} subject {fields}")),
            None
        );
    }

    #[test]
    fn notifications_carry_receipts_as_their_fields() {
        let id = Uuid::now_v7();
        // As PostgreSQL prints a jsonb: spaces after the separators, keys reordered.
        let fields = r#"{"part": 1, "portal": 3, "part_count": 2, "deletion_id": "d", "occurred_at_nanos": 5, "occurred_at_seconds": 1700000000, "removed_device_ids": ["b", "a b"]}"#;
        let notified = OutboxEvent::from_notification(&format!(
            "7 {id} reseller.events.v1.deletion.portal_applied {TRACEPARENT} {fields}"
        ))
        .expect("a receipt carried inline");
        let receipt: PortalReceipt = serde_json::from_str(fields).unwrap();
        assert_eq!(notified.id, 7);
        assert_eq!(notified.event_id, id);
        assert_eq!(notified.payload, events::encode(&receipt.into_event(id)));
        assert_eq!(notified.traceparent.as_deref(), Some(TRACEPARENT));
        // Fields that are not a receipt's: the relay reads the outbox instead.
        assert_eq!(
            OutboxEvent::from_notification(&format!("7 {id} subject - {{\"part\": 1}}")),
            None
        );
    }

    #[test]
    fn the_trace_context_is_bound_never_spliced() {
        let sql = Outbox::insert_and_notify_sql("rows", "$7");
        assert!(sql.contains("$7::text FROM rows"), "{sql}");
    }

    #[test]
    #[should_panic(expected = "placeholder")]
    fn a_trace_context_that_is_not_a_placeholder_is_refused() {
        Outbox::insert_and_notify_sql("rows", "'00-abc'");
    }
}
