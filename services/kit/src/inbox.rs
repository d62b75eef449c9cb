//! The idempotent consumer.
//!
//! A durable JetStream pull consumer with explicit acks feeds an [`EventHandler`]. For each
//! message the consumer opens a transaction, records the event ID in `<schema>.inbox`
//! (skipping the event if it is already there), lets the handler apply it, commits, and
//! only then acks. A redelivered or republished event therefore changes nothing. A
//! handler may instead give its change as one statement ([`Change::OneStatement`], see
//! [`crate::one_statement`]), which carries the inbox row and the emitted events too.
//!
//! Batches: when several events are waiting, up to [`MAX_BATCH`] of them are applied one
//! after the other in one transaction and committed once, then acked. A commit waits for
//! its WAL flush (2.5 ms on the machine of issue #12's bench, more than the statements of
//! a small event), so a consumer that falls behind catches up by committing less often
//! rather than by doing less: every event still has its inbox row and its own change, in
//! stream order. If an event fails its batch (a duplicate, a conflict, a poison event),
//! the batch is rolled back; the events before it are applied again as a batch, the
//! failing one by itself as above (with its own outcome: skipped, dead-lettered,
//! retried), and the rest as a batch. A conflict with a concurrent apply is tried again
//! in place a few times before the event is nakked for redelivery.
//!
//! An event that can never be applied (undecodable, or rejected by the handler as
//! poison, or failing the same way [`MAX_ATTEMPTS`] times) is published to the consumer's
//! dead-letter subject with the reason and terminated, so it does not block the events
//! behind it. While PostgreSQL is unreachable, events are retried without limit.
//!
//! Traces: an event the handler applies (not one it ignores) is applied in a span of its
//! own, `apply <consumer>` (level INFO, kind consumer), whose parent is the message's
//! `traceparent` header (the span that wrote the event: see [`crate::outbox`]). The
//! events the change emits keep that span's context in turn, so a trace runs on through
//! every hop (a deletion, the portals' receipts, device-service folding them).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use async_nats::jetstream::{
    self, AckKind,
    consumer::{AckPolicy, DeliverPolicy, FromConsumer, PullConsumer, pull},
    context::ConsumerInfoErrorKind,
    message::PublishMessage,
};
use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
use sqlx::{PgConnection, PgPool};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::events::{self, ReceivedEvent};
use crate::lost_events::{self, LossWatch};
use crate::one_statement::{OneStatement, Params};
use crate::sql::Schema;
use crate::subjects::{self, headers};

/// Failures (other than an unreachable database) tolerated before an event is
/// dead-lettered.
pub const MAX_ATTEMPTS: i64 = 5;
/// PostgreSQL's SQLSTATE for a unique violation (the event is in the inbox already).
const UNIQUE_VIOLATION: &str = "23505";
/// PostgreSQL's SQLSTATEs for transactions that conflicted with a concurrent one.
const SERIALIZATION_FAILURE: &str = "40001";
const DEADLOCK_DETECTED: &str = "40P01";
/// How every event is applied (the statement that opens its transaction; tests that
/// hold a consumer's transaction open use it too): as if the replicas applying events at the same time had
/// applied them one after the other. Under READ COMMITTED two replicas could interleave
/// into a state no order gives: one applies a move, checking that no tombstone exists,
/// while the other applies the device's deletion, deleting the rows it can see; neither
/// sees the other's uncommitted write and the deleted device stays in the portal for good
/// (the chaos test found it). PostgreSQL's serializable snapshot isolation aborts one of
/// the two instead (40001), and the consumer applies it again.
pub const BEGIN_SERIALIZABLE: &str = "BEGIN ISOLATION LEVEL SERIALIZABLE";
/// How long JetStream waits for an ack before redelivering. It is also how long the
/// events a killed replica had pulled wait before another replica gets them, so it is
/// short; an event that takes longer to apply says it is still in progress every
/// [`PROGRESS_EVERY`].
const ACK_WAIT: Duration = Duration::from_secs(10);
/// How often a consumer tells JetStream an event it is still applying is in progress.
const PROGRESS_EVERY: Duration = Duration::from_secs(3);
/// Events pulled ahead per event applied at once: enough to keep the consumer busy
/// between pulls, few enough that the last one pulled is applied well inside
/// [`ACK_WAIT`] (its clock starts on delivery, not when its turn comes).
const PULLED_AHEAD_PER_WORKER: usize = 64;
/// The pauses before applying an event again in place after a conflict with a
/// concurrent apply (serialization failure, deadlock): long enough for the transaction
/// it conflicted with to commit. After the last, the event is nakked and redelivered.
const CONFLICT_PAUSES: [Duration; 3] = [
    Duration::from_millis(2),
    Duration::from_millis(10),
    Duration::from_millis(50),
];
/// Most events applied in one transaction (see the module doc): enough to amortise the
/// commit, few enough that a batch of upload parts (1,000 devices each) commits well
/// inside [`ACK_WAIT`] and that a failed batch costs little to apply again one by one.
pub const MAX_BATCH: usize = 32;

/// Why an event was not applied.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// The event can never be applied (its content breaks a rule of the projection).
    #[error("poison event: {0}")]
    Poison(String),
    /// Applying failed; it may work on a later attempt.
    #[error(transparent)]
    Failed(#[from] anyhow::Error),
}

impl From<sqlx::Error> for ApplyError {
    fn from(err: sqlx::Error) -> Self {
        Self::Failed(err.into())
    }
}

/// A projection or reaction fed by events.
pub trait EventHandler: Send + Sync + 'static {
    /// How this handler applies `event`: not at all ([`Change::Ignored`]: most events are
    /// someone else's, since consumers read the whole event stream, nats-server 2.9 having
    /// one filter subject per consumer), in the consumer's transaction, or as one
    /// statement. Values of a [`Change::OneStatement`] are bound with `params` (the inbox
    /// row's come first).
    ///
    /// # Errors
    /// [`ApplyError::Poison`] for an event that can never be applied; the consumer
    /// dead-letters it.
    fn change(&self, event: ReceivedEvent, params: &mut Params) -> Result<Change, ApplyError>;
}

/// How a handler applies one event ([`EventHandler::change`]).
#[must_use]
pub enum Change {
    /// Not this handler's event: acked with nothing written, not even the inbox row.
    Ignored,
    /// Applied inside the consumer's serializable transaction ([`BEGIN_SERIALIZABLE`]),
    /// which also records the event in the inbox, then committed. Made by
    /// [`Change::in_transaction`].
    InTransaction(InTransaction),
    /// Applied as one statement with the inbox row and the events it emits (see
    /// [`crate::one_statement`]), in a serializable transaction of its own.
    OneStatement(OneStatement),
}

/// A change applied in the consumer's transaction, given the transaction.
pub struct InTransaction(Box<dyn for<'c> FnOnce(&'c mut PgConnection) -> Applying<'c> + Send>);

/// The work of an [`InTransaction`] change, borrowing the transaction for `'c`.
pub type Applying<'c> = BoxFuture<'c, Result<(), ApplyError>>;

impl Change {
    /// The change `apply` makes in the consumer's transaction (the event already in the
    /// inbox): `move |tx| Box::pin(async move { … })`, owning what it needs of the event.
    pub fn in_transaction<F>(apply: F) -> Self
    where
        F: for<'c> FnOnce(&'c mut PgConnection) -> Applying<'c> + Send + 'static,
    {
        Self::InTransaction(InTransaction(Box::new(apply)))
    }
}

impl std::fmt::Debug for Change {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Change::Ignored => f.write_str("Ignored"),
            Change::InTransaction(_) => f.write_str("InTransaction"),
            Change::OneStatement(statement) => {
                f.debug_tuple("OneStatement").field(statement).finish()
            }
        }
    }
}

/// The inbox row that makes applying an event once: a plain insert, so that a duplicate
/// fails it (and with it the change) rather than costing a round trip to ask first.
const INBOX_INSERT: &str = "INSERT INTO {schema}.inbox (consumer, event_id) VALUES ($1, $2)";

/// What became of one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Applied now.
    Applied,
    /// Already applied before; nothing changed.
    Duplicate,
    /// Not for this handler ([`Change::Ignored`]); nothing was written.
    Ignored,
}

impl Outcome {
    /// Its `outcome` label in `reseller_consumer_events_total`.
    fn label(self) -> &'static str {
        match self {
            Outcome::Applied => "applied",
            Outcome::Duplicate => "duplicate",
            Outcome::Ignored => "ignored",
        }
    }

    /// Its place among the three.
    fn index(self) -> usize {
        self as usize
    }
}

/// Why one message was not applied, and what to do about it.
#[derive(Debug)]
pub enum Failure {
    /// Dead-letter it now.
    Poison(String),
    /// Retry later; `unlimited` when the cause is an unreachable dependency or a
    /// conflict with a concurrent apply.
    Retry {
        /// What went wrong.
        error: anyhow::Error,
        /// True while PostgreSQL is unreachable, or when another replica's concurrent
        /// apply conflicted (serialization failure, deadlock): never dead-letter for that.
        unlimited: bool,
    },
}

impl Failure {
    /// Whether this is a conflict with a concurrent apply (serialization failure,
    /// deadlock): worth trying again at once.
    fn is_conflict(&self) -> bool {
        matches!(self, Failure::Retry { error, .. }
            if error.downcast_ref::<sqlx::Error>().is_some_and(is_conflict))
    }
}

/// The durable consumer's identity.
#[derive(Debug, Clone)]
pub struct ConsumerSpec {
    /// Durable consumer name, also the inbox key and the dead-letter subject's last token.
    pub name: String,
    /// The service's schema, which holds `inbox`.
    pub schema: &'static str,
    /// The subjects it reads (one filter: nats-server 2.9 has no multi-filter consumers).
    pub filter_subject: String,
}

/// An idempotent consumer running `H`.
pub struct IdempotentConsumer<H> {
    ack_wait: Duration,
    concurrency: usize,
    sample_pending: bool,
    js: jetstream::Context,
    applier: Applier<H>,
}

/// What applies one event: shared with the task each event runs in.
struct Applier<H> {
    spec: Arc<ConsumerSpec>,
    pool: PgPool,
    handler: Arc<H>,
    /// `apply <consumer>`: its spans' name, made once.
    span_name: Arc<str>,
    metrics: Arc<ConsumerMetrics>,
}

impl<H> Applier<H> {
    fn new(spec: ConsumerSpec, pool: PgPool, handler: H) -> Self {
        Self {
            span_name: format!("apply {}", spec.name).into(),
            metrics: Arc::new(ConsumerMetrics::new(&spec.name)),
            spec: Arc::new(spec),
            pool,
            handler: Arc::new(handler),
        }
    }
}

impl<H> Clone for Applier<H> {
    fn clone(&self) -> Self {
        Self {
            spec: self.spec.clone(),
            pool: self.pool.clone(),
            handler: self.handler.clone(),
            span_name: self.span_name.clone(),
            metrics: self.metrics.clone(),
        }
    }
}

impl<H> std::fmt::Debug for IdempotentConsumer<H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdempotentConsumer")
            .field("spec", &self.applier.spec)
            .finish()
    }
}

impl<H: EventHandler> IdempotentConsumer<H> {
    /// A consumer of `spec` applying events with `handler`.
    pub fn new(spec: ConsumerSpec, pool: PgPool, js: jetstream::Context, handler: H) -> Self {
        Self {
            applier: Applier::new(spec, pool, handler),
            ack_wait: ACK_WAIT,
            concurrency: 1,
            sample_pending: false,
            js,
        }
    }

    /// Sets how long JetStream waits for an ack before redelivering (when the durable
    /// consumer is first created). Tests that kill consumers use a short one.
    pub fn with_ack_wait(mut self, ack_wait: Duration) -> Self {
        self.ack_wait = ack_wait;
        self
    }

    /// Applies up to `n` events (or batches) at once instead of one after the other (acks
    /// may then leave out of stream order). Only for handlers whose events never read
    /// what each other write, or for which the order does not matter; others conflict
    /// (serializable) and are applied again.
    pub fn with_concurrency(mut self, n: usize) -> Self {
        self.concurrency = n.max(1);
        self
    }

    /// Whether [`run`](Self::run) also samples the durable consumer's pending events into
    /// [`crate::metrics::CONSUMER_PENDING`] (when metrics are on).
    pub fn sampling_pending(mut self, on: bool) -> Self {
        self.sample_pending = on;
        self
    }

    /// Applies one encoded event exactly once: the pull loop's step, callable by tests.
    ///
    /// # Errors
    /// [`Failure`] saying whether to dead-letter or retry.
    pub async fn apply(&self, payload: &[u8]) -> Result<Outcome, Failure> {
        self.apply_traced(payload, None).await
    }

    /// [`apply`](Self::apply), continuing the trace of `traceparent` (the message's
    /// header) when traces are on.
    ///
    /// # Errors
    /// [`Failure`] saying whether to dead-letter or retry.
    pub async fn apply_traced(
        &self,
        payload: &[u8],
        traceparent: Option<String>,
    ) -> Result<Outcome, Failure> {
        // The work runs in its own task, to the end, even when the caller is cancelled
        // (a consumer task aborted mid-event): a transaction cut off between two
        // statements must never go back to the pool still open, holding an inbox row
        // whose handler never ran. The caller then just does not ack.
        let applier = self.applier.clone();
        let payload = payload.to_vec();
        tokio::spawn(async move {
            // A conflict with a concurrent apply (another replica's, or a batch beside
            // this one) is tried again here after a pause, rather than by a redelivery
            // that JetStream makes wait for the nak's backoff (200 ms at least).
            let mut attempt = 0;
            loop {
                let applied = applier.apply(&payload, traceparent.as_deref()).await;
                match &applied {
                    Err(failure) if failure.is_conflict() && attempt < CONFLICT_PAUSES.len() => {
                        tokio::time::sleep(CONFLICT_PAUSES[attempt]).await;
                        attempt += 1;
                    }
                    _ => return applied,
                }
            }
        })
        .await
        .map_err(|err| Failure::Retry {
            error: anyhow::anyhow!("applying the event panicked: {err}"),
            unlimited: false,
        })?
    }

    /// Creates the durable consumer if missing and returns it.
    ///
    /// # Errors
    /// When JetStream refuses.
    pub async fn durable(&self) -> anyhow::Result<PullConsumer> {
        Ok(self.open().await?.consumer)
    }

    /// The stream and the durable consumer, created if missing. The consumer keeps as many
    /// replicas as the stream (`num_replicas` 0: JetStream scales it with the stream when
    /// `NATS_STREAM_REPLICAS` raises that); one created with fewer of its own is raised.
    async fn open(&self) -> anyhow::Result<Opened> {
        let name = &self.applier.spec.name;
        let stream = crate::stream::quick(&self.js)
            .get_stream(subjects::EVENTS_STREAM)
            .await
            .map_err(|e| anyhow::anyhow!("stream {}: {e}", subjects::EVENTS_STREAM))?;
        let consumer_error = |e: &dyn std::fmt::Display| anyhow::anyhow!("consumer {name}: {e}");
        let existing = match stream.consumer_info(name).await {
            Ok(info) => Some(info),
            Err(err) if err.kind() == ConsumerInfoErrorKind::NotFound => None,
            Err(err) => return Err(consumer_error(&err)),
        };
        let Some(existing) = existing else {
            // Created by every replica at once, it is created once: JetStream answers an
            // identical create with the consumer.
            let consumer = stream
                .create_consumer(pull::Config {
                    durable_name: Some(name.clone()),
                    filter_subject: self.applier.spec.filter_subject.clone(),
                    deliver_policy: DeliverPolicy::All,
                    ack_policy: AckPolicy::Explicit,
                    ack_wait: self.ack_wait,
                    max_deliver: -1,
                    max_ack_pending: 1024,
                    num_replicas: 0,
                    ..Default::default()
                })
                .await
                .map_err(|e| consumer_error(&e))?;
            return Ok(Opened {
                stream,
                consumer,
                created: true,
            });
        };
        let stream_replicas = stream.cached_info().config.num_replicas.max(1);
        let own = existing.config.num_replicas;
        let consumer = if own != 0 && own < stream_replicas {
            let mut config = pull::Config::try_from_consumer_config(existing.config)
                .map_err(|e| consumer_error(&e))?;
            config.num_replicas = stream_replicas;
            let raised = stream.create_consumer(config).await;
            match raised {
                Ok(consumer) => {
                    tracing::info!(consumer = %name, from = own, to = stream_replicas, "consumer replicas raised to the stream's");
                    consumer
                }
                Err(err) => {
                    tracing::warn!(consumer = %name, error = %err, "could not raise the consumer's replicas; running with it as it is");
                    stream
                        .get_consumer(name)
                        .await
                        .map_err(|e| consumer_error(&e))?
                }
            }
        } else {
            stream
                .get_consumer(name)
                .await
                .map_err(|e| consumer_error(&e))?
        };
        Ok(Opened {
            stream,
            consumer,
            created: false,
        })
    }
}

/// What [`IdempotentConsumer::open`] found or made.
struct Opened {
    stream: jetstream::stream::Stream,
    consumer: PullConsumer,
    /// Whether the consumer was created just now.
    created: bool,
}

/// Applies one encoded event once with `handler`, as the consumer `spec` does (inbox,
/// transaction or [`OneStatement`], outbox), without JetStream: for a handler's tests
/// against a real database.
///
/// # Errors
/// [`Failure`] saying whether the consumer would dead-letter or retry.
pub async fn apply_once<H: EventHandler>(
    spec: ConsumerSpec,
    pool: PgPool,
    handler: H,
    payload: &[u8],
) -> Result<Outcome, Failure> {
    Applier::new(spec, pool, handler).apply(payload, None).await
}

/// Applies one encoded event with `handler` as [`apply_once`] does, and again after a
/// failure the consumer would retry without limit (a conflict with a concurrent apply,
/// PostgreSQL unreachable), as the consumer would, up to `attempts` times in all: for
/// tests that apply events beside one another.
///
/// # Errors
/// The first [`Failure`] the consumer would not retry that way, or the last one after
/// `attempts`.
pub async fn apply_retrying<H: EventHandler>(
    spec: ConsumerSpec,
    pool: PgPool,
    handler: H,
    payload: &[u8],
    attempts: u32,
) -> Result<Outcome, Failure> {
    let applier = Applier::new(spec, pool, handler);
    let mut attempt = 1;
    loop {
        match applier.apply(payload, None).await {
            Err(Failure::Retry {
                unlimited: true, ..
            }) if attempt < attempts => attempt += 1,
            result => return result,
        }
    }
}

/// Applies `event` with `handler` on `tx`, as the consumer `spec` does, but inside the
/// caller's transaction and without committing: for tests that hold a consumer's
/// transaction open while another one runs.
///
/// # Errors
/// [`Failure`] saying whether the consumer would dead-letter or retry; an event already in
/// the inbox is a retry here (the consumer reports it as [`Outcome::Duplicate`]), and
/// leaves `tx` failed.
pub async fn apply_uncommitted<H: EventHandler>(
    spec: &ConsumerSpec,
    handler: &H,
    tx: &mut PgConnection,
    event: &ReceivedEvent,
) -> Result<(), Failure> {
    let mut params = inbox_params(spec, event);
    match handler.change(event.clone(), &mut params)? {
        Change::Ignored => {}
        Change::OneStatement(statement) => {
            one_statement_query(spec, statement, params)?
                .execute(&mut *tx)
                .await
                .map_err(retry)?;
        }
        Change::InTransaction(InTransaction(apply)) => {
            insert_inbox_row(spec, event.id, tx).await.map_err(retry)?;
            apply(tx).await?;
        }
    }
    Ok(())
}

/// Records the event `event_id` in the inbox of `spec`, in the caller's transaction.
async fn insert_inbox_row(
    spec: &ConsumerSpec,
    event_id: uuid::Uuid,
    tx: &mut PgConnection,
) -> Result<(), sqlx::Error> {
    sqlx::query(Schema::new(spec.schema).sql(INBOX_INSERT))
        .bind(&spec.name)
        .bind(event_id)
        .execute(tx)
        .await
        .map(drop)
}

/// The statement's first parameters: the inbox row (`$1` consumer, `$2` event ID, as in
/// [`INBOX_INSERT`]).
fn inbox_params(spec: &ConsumerSpec, event: &ReceivedEvent) -> Params {
    let mut params = Params::default();
    params.bind(spec.name.as_str());
    params.bind(event.id);
    params
}

/// A handler's [`OneStatement`] as the query the consumer runs.
fn one_statement_query(
    spec: &ConsumerSpec,
    statement: OneStatement,
    params: Params,
) -> Result<sqlx::query::Query<'static, sqlx::Postgres, sqlx::postgres::PgArguments>, Failure> {
    // A value that does not encode never will: dead-letter the event at once. The events
    // it emits continue the current span's trace (the event's, see `Applier::apply`).
    statement
        .into_query(
            Schema::new(spec.schema),
            params,
            crate::trace_context::current(),
        )
        .map_err(|err| Failure::Poison(format!("encoding the statement's values: {err}")))
}

/// Whether `err` is the inbox row's unique violation: the event was applied before.
fn is_duplicate(err: &sqlx::Error) -> bool {
    matches!(err, sqlx::Error::Database(db)
        if db.code().as_deref() == Some(UNIQUE_VIOLATION) && db.constraint() == Some("inbox_pkey"))
}

/// A database error as a retry (without limit while PostgreSQL is unreachable).
fn retry(err: sqlx::Error) -> Failure {
    Failure::Retry {
        unlimited: is_unreachable(&err),
        error: err.into(),
    }
}

impl<H: EventHandler> Applier<H> {
    /// Applies the event `payload`, in a span continuing `traceparent` unless the handler
    /// ignores it (most events are someone else's: a span each would bury the traces).
    async fn apply(&self, payload: &[u8], traceparent: Option<&str>) -> Result<Outcome, Failure> {
        let (change, params, applied, subject) =
            self.prepare(payload, time::OffsetDateTime::now_utc())?;
        if let Change::Ignored = change {
            return Ok(Outcome::Ignored);
        }
        let span = self.event_span(subject, &applied, traceparent);
        let outcome = async {
            match change {
                Change::Ignored => Ok(Outcome::Ignored),
                Change::OneStatement(statement) => self.apply_one(statement, params, applied).await,
                Change::InTransaction(change) => self.apply_in(change, applied).await,
            }
        }
        .instrument(span.clone())
        .await;
        match &outcome {
            Ok(Outcome::Applied) => span.record("outcome", "applied"),
            Ok(Outcome::Duplicate) => span.record("outcome", "duplicate"),
            Ok(Outcome::Ignored) => span.record("outcome", "ignored"),
            Err(_) => span.record("otel.status_code", "ERROR"),
        };
        outcome
    }

    /// Decodes `payload` and asks the handler how to apply it: the change, its
    /// parameters (the inbox row's first), what the log says of it and its subject.
    ///
    /// # Errors
    /// [`Failure::Poison`] for an event that does not decode or that the handler refuses.
    fn prepare(
        &self,
        payload: &[u8],
        received_at: time::OffsetDateTime,
    ) -> Result<(Change, Params, Applied, &'static str), Failure> {
        let event = events::decode(payload).map_err(|e| Failure::Poison(e.to_string()))?;
        let applied = Applied {
            event_id: event.id,
            occurred_at: event.occurred_at,
            received_at,
        };
        let subject = subjects::event_subject(&event.payload);
        let mut params = inbox_params(&self.spec, &event);
        let change = self.handler.change(event, &mut params)?;
        Ok((change, params, applied, subject))
    }

    /// The span an event is applied in (see the module doc), continuing `traceparent`.
    fn event_span(
        &self,
        subject: &str,
        applied: &Applied,
        traceparent: Option<&str>,
    ) -> tracing::Span {
        let span = tracing::info_span!(
            "event",
            otel.name = &*self.span_name,
            otel.kind = "consumer",
            messaging.system = "nats",
            messaging.operation.type = "process",
            messaging.consumer.group.name = self.spec.name.as_str(),
            messaging.destination.name = subject,
            messaging.message.id = %applied.event_id,
            outcome = tracing::field::Empty,
            otel.status_code = tracing::field::Empty,
        );
        if let Some(traceparent) = traceparent {
            crate::trace_context::set_parent(&span, traceparent);
        }
        span
    }

    /// Applies `events` (payload and `traceparent`, in stream order) in one serializable
    /// transaction (see [`BEGIN_SERIALIZABLE`]), each in its own span with its inbox row
    /// and its change, committed once.
    ///
    /// # Errors
    /// [`BatchFailed`] when anything fails: then nothing was applied, and it says which
    /// event failed when that is known.
    async fn apply_batch(
        &self,
        events: &[(bytes::Bytes, Option<String>)],
    ) -> Result<Vec<Outcome>, BatchFailed> {
        let received_at = time::OffsetDateTime::now_utc();
        let mut prepared = Vec::with_capacity(events.len());
        for (index, (payload, traceparent)) in events.iter().enumerate() {
            let (change, params, applied, subject) = self
                .prepare(payload, received_at)
                .map_err(|_| BatchFailed::At(index))?;
            prepared.push((change, params, applied, subject, traceparent.as_deref()));
        }
        let mut outcomes = vec![Outcome::Ignored; prepared.len()];
        if prepared.iter().all(|p| matches!(p.0, Change::Ignored)) {
            return Ok(outcomes);
        }
        let mut tx = self
            .pool
            .begin_with(BEGIN_SERIALIZABLE)
            .await
            .map_err(|_| BatchFailed::Whole)?;
        let mut spans = Vec::new();
        for (index, (change, params, applied, subject, traceparent)) in
            prepared.into_iter().enumerate()
        {
            if let Change::Ignored = change {
                continue;
            }
            let span = self.event_span(subject, &applied, traceparent);
            let done = async {
                match change {
                    Change::Ignored => Ok(()),
                    Change::OneStatement(statement) => {
                        let query =
                            one_statement_query(&self.spec, statement, params).map_err(drop)?;
                        query.execute(&mut *tx).await.map(drop).map_err(drop)
                    }
                    Change::InTransaction(InTransaction(apply)) => {
                        insert_inbox_row(&self.spec, applied.event_id, &mut tx)
                            .await
                            .map_err(drop)?;
                        apply(&mut tx).await.map_err(drop)
                    }
                }
            }
            .instrument(span.clone())
            .await;
            spans.push((span, applied));
            outcomes[index] = Outcome::Applied;
            if done.is_err() {
                break_batch(&spans);
                return Err(BatchFailed::At(index));
            }
        }
        if tx.commit().await.is_err() {
            break_batch(&spans);
            return Err(BatchFailed::Whole);
        }
        for (span, applied) in spans {
            span.record("outcome", "applied");
            self.log_applied(&applied);
        }
        Ok(outcomes)
    }

    /// Runs a handler's [`OneStatement`] with the inbox row (`$1`, `$2`) and the outbox
    /// rows of what it emits, in a serializable transaction of its own (see
    /// [`BEGIN_SERIALIZABLE`]; the statement itself is one round trip): applied and
    /// committed, or not at all.
    ///
    /// PostgreSQL runs a data-modifying CTE that nothing reads, like the inbox insert,
    /// after the rest: a redelivered event does the handler's work, then fails on the
    /// inbox row and rolls it all back. Correct, and rare enough not to cost a round trip
    /// up front.
    async fn apply_one(
        &self,
        statement: OneStatement,
        params: Params,
        applied: Applied,
    ) -> Result<Outcome, Failure> {
        let query = one_statement_query(&self.spec, statement, params)?;
        let mut tx = self
            .pool
            .begin_with(BEGIN_SERIALIZABLE)
            .await
            .map_err(retry)?;
        let done = match query.execute(&mut *tx).await {
            Ok(_) => tx.commit().await,
            Err(err) => Err(err),
        };
        match done {
            Ok(()) => {}
            // The inbox insert is a plain one: a duplicate fails the statement, which
            // then changed nothing.
            Err(err) if is_duplicate(&err) => return Ok(Outcome::Duplicate),
            Err(err) => return Err(retry(err)),
        }
        self.log_applied(&applied);
        Ok(Outcome::Applied)
    }

    /// Opens a serializable transaction (see [`BEGIN_SERIALIZABLE`]), records the event in
    /// the inbox (a plain insert: a duplicate fails it, and nothing is applied), applies
    /// `change` and commits.
    async fn apply_in(
        &self,
        InTransaction(change): InTransaction,
        applied: Applied,
    ) -> Result<Outcome, Failure> {
        let mut tx = self
            .pool
            .begin_with(BEGIN_SERIALIZABLE)
            .await
            .map_err(retry)?;
        match insert_inbox_row(&self.spec, applied.event_id, &mut tx).await {
            Ok(_) => {}
            Err(err) if is_duplicate(&err) => {
                tx.rollback().await.map_err(retry)?;
                return Ok(Outcome::Duplicate);
            }
            // The transaction rolls back when dropped.
            Err(err) => return Err(retry(err)),
        }
        change(&mut tx).await.map_err(Failure::from)?;
        tx.commit().await.map_err(retry)?;
        self.log_applied(&applied);
        Ok(Outcome::Applied)
    }

    /// How long events take to get here and to apply: the hops of propagation.
    fn log_applied(&self, applied: &Applied) {
        tracing::debug!(
            consumer = %self.spec.name,
            event_id = %applied.event_id,
            age_received_us = (applied.received_at - applied.occurred_at).whole_microseconds() as i64,
            age_applied_us = (time::OffsetDateTime::now_utc() - applied.occurred_at).whole_microseconds() as i64,
            "event applied"
        );
    }
}

/// Why a batch was rolled back ([`Applier::apply_batch`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BatchFailed {
    /// The event at this index could not be applied; those before it could.
    At(usize),
    /// The transaction failed as a whole (it could not begin or commit).
    Whole,
}

/// Marks the spans of a batch that was rolled back (its events are applied again one by
/// one, each in a span of its own).
fn break_batch(spans: &[(tracing::Span, Applied)]) {
    for (span, _) in spans {
        span.record("outcome", "rolled back with its batch");
    }
}

/// What [`Applier::log_applied`] says of an event, kept when the handler takes the event.
struct Applied {
    event_id: uuid::Uuid,
    occurred_at: time::OffsetDateTime,
    received_at: time::OffsetDateTime,
}

impl From<ApplyError> for Failure {
    fn from(err: ApplyError) -> Self {
        match err {
            ApplyError::Poison(reason) => Failure::Poison(reason),
            ApplyError::Failed(error) => {
                let unlimited = error
                    .downcast_ref::<sqlx::Error>()
                    .is_some_and(is_unreachable);
                Failure::Retry { error, unlimited }
            }
        }
    }
}

impl<H: EventHandler> IdempotentConsumer<H> {
    /// Pulls and applies events until `shutdown`; the message in hand is finished first.
    /// Reports events the stream removed before this consumer read them (see
    /// [`crate::lost_events`]).
    pub async fn run(self, shutdown: CancellationToken) {
        let mut losses = LossWatch::new(
            &self.applier.spec.name,
            self.applier.spec.filter_subject != subjects::ALL_EVENTS,
        );
        // The counters an alert watches exist from the start, at 0, so that the first
        // increment shows as one.
        for counter in [
            crate::metrics::CONSUMER_DEAD_LETTERS,
            crate::metrics::CONSUMER_LOST_EVENTS,
            crate::metrics::CONSUMER_REDELIVERIES,
        ] {
            ::metrics::counter!(counter, "consumer" => self.applier.spec.name.clone()).increment(0);
        }
        // The sampler stops with this consumer (the guard) or on shutdown.
        let _sampling = self.sample_pending.then(|| {
            let stop = shutdown.child_token();
            self.spawn_pending_sampler(&stop);
            stop.drop_guard()
        });
        loop {
            if shutdown.is_cancelled() {
                return;
            }
            if let Err(err) = self.pull_until_error(&shutdown, &mut losses).await {
                tracing::warn!(consumer = %self.applier.spec.name, error = %err, "consumer interrupted; resuming");
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
        }
    }

    async fn pull_until_error(
        &self,
        shutdown: &CancellationToken,
        losses: &mut LossWatch,
    ) -> anyhow::Result<()> {
        let Opened {
            stream,
            consumer,
            created,
        } = self.open().await?;
        // Before pulling: a consumer that was down while the stream removed events it had
        // not read still shows the gap (JetStream skips it silently on the next pull).
        self.check_losses(losses, &stream, created).await;
        let mut checks = tokio::time::interval_at(
            tokio::time::Instant::now() + lost_events::CHECK_INTERVAL,
            lost_events::CHECK_INTERVAL,
        );
        let mut messages = consumer
            .stream()
            .max_messages_per_batch((self.concurrency * PULLED_AHEAD_PER_WORKER).min(256))
            // A pull waiting at a consumer leader that died goes unanswered: two missed
            // heartbeats end the stream and the loop pulls again from the new leader.
            .heartbeat(Duration::from_secs(2))
            .expires(Duration::from_secs(30))
            .messages()
            .await?;
        let mut in_flight = futures::stream::FuturesUnordered::new();
        loop {
            let message = tokio::select! {
                _ = shutdown.cancelled() => break,
                Some(handled) = in_flight.next(), if !in_flight.is_empty() => {
                    handled?;
                    continue;
                }
                _ = checks.tick() => {
                    self.check_losses(losses, &stream, false).await;
                    continue;
                }
                next = messages.next(), if in_flight.len() < self.concurrency => match next {
                    Some(message) => message.map_err(|e| anyhow::anyhow!("pulling: {e}"))?,
                    None => anyhow::bail!("message stream ended"),
                },
            };
            // The events already here join it (never waiting for more): a batch grows
            // only when the consumer is behind.
            self.log_pulled(&message);
            let mut batch = vec![message];
            let mut interrupted = None;
            while batch.len() < MAX_BATCH {
                match messages.next().now_or_never() {
                    Some(Some(Ok(message))) => {
                        self.log_pulled(&message);
                        batch.push(message);
                    }
                    Some(Some(Err(err))) => {
                        interrupted = Some(anyhow::anyhow!("pulling: {err}"));
                        break;
                    }
                    Some(None) => {
                        interrupted = Some(anyhow::anyhow!("message stream ended"));
                        break;
                    }
                    None => break,
                }
            }
            in_flight.push(self.handle_batch(batch));
            if let Some(err) = interrupted {
                // Finish what was pulled, then pull again.
                while let Some(handled) = in_flight.next().await {
                    handled?;
                }
                return Err(err);
            }
        }
        // Finish the messages in hand.
        while let Some(handled) = in_flight.next().await {
            handled?;
        }
        Ok(())
    }

    /// One [`LossWatch::check`], bounded in time; a check that fails is only logged (the
    /// next one compares with the last that worked).
    async fn check_losses(
        &self,
        losses: &mut LossWatch,
        stream: &jetstream::stream::Stream,
        created: bool,
    ) {
        match tokio::time::timeout(Duration::from_secs(5), losses.check(stream, created)).await {
            Ok(Ok(())) => {}
            Ok(Err(err)) => {
                tracing::debug!(consumer = %self.applier.spec.name, error = %format!("{err:#}"), "could not compare the consumer with the stream")
            }
            Err(_) => {
                tracing::debug!(consumer = %self.applier.spec.name, "comparing the consumer with the stream timed out")
            }
        }
    }

    /// Samples JetStream's `num_pending` of the durable consumer every
    /// [`crate::metrics::SAMPLE_EVERY`] (one request each) until `stop`.
    fn spawn_pending_sampler(&self, stop: &CancellationToken) {
        let (js, name) = (self.js.clone(), self.applier.spec.name.clone());
        crate::metrics::spawn_sampler("consumer pending", stop, move || {
            let (js, name) = (crate::stream::quick(&js), name.clone());
            async move {
                let stream = js.get_stream_no_info(subjects::EVENTS_STREAM).await?;
                let info = match stream.consumer_info(&name).await {
                    Ok(info) => info,
                    // Not created yet: the consumer is starting.
                    Err(err) if err.kind() == ConsumerInfoErrorKind::NotFound => return Ok(()),
                    Err(err) => anyhow::bail!("consumer {name}: {err}"),
                };
                ::metrics::gauge!(crate::metrics::CONSUMER_PENDING, "consumer" => name)
                    .set(info.num_pending as f64);
                Ok(())
            }
        });
    }

    /// Applies `batch` (in stream order) in one transaction and acks it. When an event
    /// fails it, the events before it are applied again as a batch, the failing one by
    /// itself ([`handle`](Self::handle): a duplicate, a poison event, a conflict to retry),
    /// and the rest as a batch; when the transaction fails as a whole, each one by itself.
    async fn handle_batch(&self, batch: Vec<jetstream::Message>) -> anyhow::Result<()> {
        // Segments still to apply, the next one last.
        let mut segments = vec![batch];
        while let Some(mut segment) = segments.pop() {
            if segment.len() <= 1 {
                if let Some(message) = segment.pop() {
                    self.handle(message).await?;
                }
                continue;
            }
            match self.try_batch(&segment).await? {
                Ok(()) => {}
                Err(BatchFailed::At(index)) => {
                    let mut rest = segment.split_off(index);
                    let tail = rest.split_off(1);
                    segments.extend([tail, rest, segment]);
                }
                Err(BatchFailed::Whole) => {
                    segments.extend(segment.into_iter().rev().map(|message| vec![message]));
                }
            }
        }
        Ok(())
    }

    /// One attempt at applying `batch` in one transaction; acks it when it is applied.
    async fn try_batch(
        &self,
        batch: &[jetstream::Message],
    ) -> anyhow::Result<Result<(), BatchFailed>> {
        let started = std::time::Instant::now();
        let events: Vec<_> = batch
            .iter()
            .map(|message| (message.payload.clone(), traceparent(message)))
            .collect();
        let applier = self.applier.clone();
        // In its own task to the end, like a single event (see `apply_traced`).
        let applying = tokio::spawn(async move { applier.apply_batch(&events).await });
        tokio::pin!(applying);
        let mut progress =
            tokio::time::interval_at(tokio::time::Instant::now() + PROGRESS_EVERY, PROGRESS_EVERY);
        let applied = loop {
            tokio::select! {
                applied = &mut applying => break applied.unwrap_or(Err(BatchFailed::Whole)),
                _ = progress.tick() => {
                    for message in batch {
                        let _ = message.ack_with(AckKind::Progress).await;
                    }
                }
            }
        };
        let outcomes = match applied {
            Ok(outcomes) => outcomes,
            Err(failed) => return Ok(Err(failed)),
        };
        for (message, outcome) in batch.iter().zip(outcomes) {
            self.count_redelivery(message);
            self.applier
                .metrics
                .record(&message.subject, outcome, started.elapsed());
            message
                .ack_with(AckKind::Ack)
                .await
                .map_err(|e| anyhow::anyhow!("ack: {e}"))?;
        }
        Ok(Ok(()))
    }

    /// Counts `message` if JetStream delivered it before.
    fn count_redelivery(&self, message: &jetstream::Message) {
        if message.info().is_ok_and(|i| i.delivered > 1) {
            self.applier.metrics.redelivered();
        }
    }

    /// Logs (at DEBUG) that `message` was pulled, and how long after the stream stored it.
    fn log_pulled(&self, message: &jetstream::Message) {
        if tracing::enabled!(tracing::Level::DEBUG)
            && let Ok(info) = message.info()
        {
            // The stream's own clock splits an event's age in two: before the stream
            // stored it (command, outbox relay) and after (delivery to this consumer).
            tracing::debug!(
                consumer = %self.applier.spec.name,
                stream_sequence = info.stream_sequence,
                since_stored_us = (time::OffsetDateTime::now_utc() - info.published).whole_microseconds() as i64,
                "event pulled"
            );
        }
    }

    async fn handle(&self, message: jetstream::Message) -> anyhow::Result<()> {
        self.count_redelivery(&message);
        let started = std::time::Instant::now();
        let ack = |kind| message.ack_with(kind);
        let applying = self.apply_traced(&message.payload, traceparent(&message));
        tokio::pin!(applying);
        let mut progress =
            tokio::time::interval_at(tokio::time::Instant::now() + PROGRESS_EVERY, PROGRESS_EVERY);
        let applied = loop {
            tokio::select! {
                applied = &mut applying => break applied,
                // A lost progress ack only risks a redelivery, which the inbox absorbs.
                _ = progress.tick() => { let _ = ack(AckKind::Progress).await; }
            }
        };
        if let Ok(outcome) = &applied {
            self.applier
                .metrics
                .record(&message.subject, *outcome, started.elapsed());
        }
        match applied {
            Ok(_) => ack(AckKind::Ack)
                .await
                .map_err(|e| anyhow::anyhow!("ack: {e}"))?,
            Err(Failure::Poison(reason)) => {
                self.dead_letter(&message, &reason).await?;
                ack(AckKind::Term)
                    .await
                    .map_err(|e| anyhow::anyhow!("term: {e}"))?;
            }
            Err(Failure::Retry { error, unlimited }) => {
                let delivered = message.info().map(|i| i.delivered).unwrap_or(1);
                if !unlimited && delivered >= MAX_ATTEMPTS {
                    let reason = format!("failed {delivered} times: {error:#}");
                    self.dead_letter(&message, &reason).await?;
                    ack(AckKind::Term)
                        .await
                        .map_err(|e| anyhow::anyhow!("term: {e}"))?;
                } else {
                    tracing::warn!(consumer = %self.applier.spec.name, delivered, error = %format!("{error:#}"), "event not applied; will retry");
                    let delay = Duration::from_millis(100 * 2u64.pow(delivered.clamp(1, 7) as u32));
                    ack(AckKind::Nak(Some(delay)))
                        .await
                        .map_err(|e| anyhow::anyhow!("nak: {e}"))?;
                }
            }
        }
        Ok(())
    }

    async fn dead_letter(&self, message: &jetstream::Message, reason: &str) -> anyhow::Result<()> {
        let sequence = message.info().map(|i| i.stream_sequence).unwrap_or(0);
        tracing::error!(consumer = %self.applier.spec.name, subject = %message.subject, sequence, reason, "dead-lettering event");
        // Header values must be one line.
        let reason_header: String = reason
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .take(1024)
            .collect();
        let publish = PublishMessage::build()
            .payload(message.payload.clone())
            .message_id(format!("{}:{sequence}", self.applier.spec.name))
            .header("Content-Type", headers::CONTENT_TYPE_PROTOBUF)
            .header(headers::DEAD_LETTER_REASON, reason_header.as_str())
            .header(
                headers::DEAD_LETTER_CONSUMER,
                self.applier.spec.name.as_str(),
            )
            .header(headers::ORIGINAL_SUBJECT, message.subject.as_str())
            .header(headers::ORIGINAL_SEQUENCE, sequence.to_string().as_str());
        self.js
            .send_publish(
                subjects::dead_letter_subject(&self.applier.spec.name),
                publish,
            )
            .await?
            .await?;
        ::metrics::counter!(crate::metrics::CONSUMER_DEAD_LETTERS, "consumer" => self.applier.spec.name.clone())
            .increment(1);
        Ok(())
    }
}

/// The message's `traceparent` header, if any.
fn traceparent(message: &jetstream::Message) -> Option<String> {
    message
        .headers
        .as_ref()
        .and_then(|map| map.get(headers::TRACEPARENT))
        .map(|value| value.as_str().to_owned())
}

/// A consumer's metric handles, registered on first use once the process records
/// metrics ([`crate::metrics::recording`]): the `metrics` macros hash the name and labels
/// and look the series up on every call, and copy the labels into new strings.
#[derive(Debug)]
struct ConsumerMetrics {
    consumer: String,
    apply_duration: OnceLock<::metrics::Histogram>,
    redeliveries: OnceLock<::metrics::Counter>,
    /// `reseller_consumer_events_total` by event type, then by outcome (as
    /// [`Outcome::index`]).
    events: Mutex<HashMap<String, [Option<::metrics::Counter>; 3]>>,
}

impl ConsumerMetrics {
    fn new(consumer: &str) -> Self {
        Self {
            consumer: consumer.to_owned(),
            apply_duration: OnceLock::new(),
            redeliveries: OnceLock::new(),
            events: Mutex::new(HashMap::new()),
        }
    }

    /// Counts an event JetStream delivered before.
    fn redelivered(&self) {
        if !crate::metrics::recording() {
            return;
        }
        self.redeliveries
            .get_or_init(|| {
                ::metrics::counter!(crate::metrics::CONSUMER_REDELIVERIES, "consumer" => self.consumer.clone())
            })
            .increment(1);
    }

    /// Counts an event handled with `outcome`, by its type (the subject after
    /// `reseller.events.v1.`, e.g. `device.deleted`), and times it unless it was ignored.
    fn record(&self, subject: &str, outcome: Outcome, took: Duration) {
        if !crate::metrics::recording() {
            return;
        }
        let event_type = subject
            .strip_prefix(subjects::ALL_EVENTS.trim_end_matches('>'))
            .unwrap_or(subject);
        {
            let mut events = self.events.lock().unwrap_or_else(|e| e.into_inner());
            if !events.contains_key(event_type) {
                events.insert(event_type.to_owned(), Default::default());
            }
            let slots = events.get_mut(event_type).expect("inserted above");
            slots[outcome.index()]
                .get_or_insert_with(|| {
                    ::metrics::counter!(crate::metrics::CONSUMER_EVENTS,
                        "consumer" => self.consumer.clone(),
                        "event_type" => event_type.to_owned(),
                        "outcome" => outcome.label())
                })
                .increment(1);
        }
        if outcome != Outcome::Ignored {
            self.apply_duration
                .get_or_init(|| {
                    ::metrics::histogram!(crate::metrics::CONSUMER_APPLY_DURATION, "consumer" => self.consumer.clone())
                })
                .record(took);
        }
    }
}

/// True when the error means PostgreSQL could not be reached (retry without limit).
fn is_unreachable(err: &sqlx::Error) -> bool {
    matches!(
        err,
        sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
    ) || is_conflict(err)
}

/// A serialization failure (40001) or deadlock (40P01): another replica applied a
/// conflicting event at the same time and this one must run again. Never a reason to
/// dead-letter the event.
fn is_conflict(err: &sqlx::Error) -> bool {
    matches!(err, sqlx::Error::Database(db)
        if matches!(db.code().as_deref(), Some(SERIALIZATION_FAILURE | DEADLOCK_DETECTED)))
}
