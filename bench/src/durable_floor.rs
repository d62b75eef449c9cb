//! The durable-hop floor (issue #10): the least one outbox → stream → inbox hop can cost
//! with every PostgreSQL write durable, measured on the same servers as the deletion
//! benchmark.
//!
//! One hop, as the services make it but with nothing else around it:
//! 1. a PostgreSQL statement inserts an outbox row and `NOTIFY`s, committed on its own
//!    (`synchronous_commit` as the server has it: on, so the WAL is fsynced);
//! 2. a listener on its own connection receives the notification and publishes the row
//!    to JetStream, awaiting the publish ack (on a clustered stream the ack comes once a
//!    quorum of replicas stored it; nats-server 2.9 fsyncs on its own schedule, every
//!    2 minutes by default, not per message);
//! 3. a durable pull consumer receives it, inserts its inbox row in PostgreSQL
//!    (committed, fsynced) and acks.
//!
//! A sample is the time from the producer's statement being sent to the consumer's ack
//! being confirmed by the server (double ack). The deletion benchmark's chain is two
//! such hops plus the portals' statements and a poll.

use std::time::{Duration, Instant};

use anyhow::Context;
use async_nats::jetstream::{self, stream};
use futures::StreamExt;
use sqlx::postgres::PgListener;
use sqlx::{Connection, PgConnection};
use tokio::sync::mpsc;

use crate::deletion::floor_messages;
use crate::stats::Samples;

const STREAM: &str = "BENCH_DURABLE_FLOOR";
const SUBJECT: &str = "bench.durable_floor";
const CHANNEL: &str = "bench_durable_floor";

const SCHEMA_DDL: &str = "\
    DROP SCHEMA IF EXISTS bench_durable_floor CASCADE; \
    CREATE SCHEMA bench_durable_floor; \
    CREATE TABLE bench_durable_floor.outbox (id bigint PRIMARY KEY, payload bytea NOT NULL, \
        created_at timestamptz NOT NULL DEFAULT now()); \
    CREATE TABLE bench_durable_floor.inbox (id bigint PRIMARY KEY, \
        applied_at timestamptz NOT NULL DEFAULT now());";

/// Where the floor runs.
#[derive(Debug, Clone)]
pub struct FloorTarget<'a> {
    /// PostgreSQL (the bench database).
    pub database_url: &'a str,
    /// Every NATS server, comma-separated.
    pub nats_url: &'a str,
    /// Replicas of the floor's stream and consumer (the services' setting).
    pub replicas: usize,
}

/// Measures `count` durable hops (after `warmup` unmeasured ones), one at a time at
/// `rate` per second.
///
/// # Errors
/// When PostgreSQL or NATS fails, or a hop does not arrive within 10 s.
pub async fn measure(
    target: &FloorTarget<'_>,
    rate: f64,
    warmup: usize,
    count: usize,
) -> anyhow::Result<Samples> {
    let mut producer = PgConnection::connect(target.database_url).await?;
    sqlx::raw_sql(SCHEMA_DDL)
        .execute(&mut producer)
        .await
        .context("creating the floor's tables")?;
    let servers: Vec<&str> = target.nats_url.split(',').map(str::trim).collect();
    let client = async_nats::connect(servers.as_slice()).await?;
    let js = jetstream::new(client);
    let _ = js.delete_stream(STREAM).await;
    let stream = js
        .create_stream(stream::Config {
            name: STREAM.into(),
            subjects: vec![SUBJECT.into()],
            storage: stream::StorageType::File,
            num_replicas: target.replicas,
            duplicate_window: Duration::from_secs(120),
            ..Default::default()
        })
        .await
        .map_err(|e| anyhow::anyhow!("creating stream {STREAM}: {e}"))?;
    let mut messages = floor_messages(&stream, "bench-durable-floor", target.replicas).await?;

    // The relay's half: LISTEN, publish, await the ack.
    let mut listener = PgListener::connect(target.database_url).await?;
    listener.listen(CHANNEL).await?;
    let relay_js = js.clone();
    let relay = tokio::spawn(async move {
        while let Ok(notification) = listener.recv().await {
            let id = notification.payload().to_owned();
            let mut headers = async_nats::HeaderMap::new();
            headers.insert("Nats-Msg-Id", id.as_str());
            let published = relay_js
                .publish_with_headers(SUBJECT, headers, id.into_bytes().into())
                .await;
            if let Ok(ack) = published {
                let _ = ack.await;
            }
        }
    });

    // The consumer's half: receive, commit the inbox row, ack.
    let mut inbox = PgConnection::connect(target.database_url).await?;
    let (applied_tx, mut applied) = mpsc::unbounded_channel::<(i64, Instant)>();
    let applier = tokio::spawn(async move {
        while let Some(Ok(message)) = messages.next().await {
            let Some(id) = std::str::from_utf8(&message.payload)
                .ok()
                .and_then(|s| s.parse::<i64>().ok())
            else {
                let _ = message.ack().await;
                continue;
            };
            let inserted = sqlx::query(
                "INSERT INTO bench_durable_floor.inbox (id) VALUES ($1) ON CONFLICT DO NOTHING",
            )
            .bind(id)
            .execute(&mut inbox)
            .await;
            if inserted.is_err() || message.double_ack().await.is_err() {
                continue;
            }
            if applied_tx.send((id, Instant::now())).is_err() {
                return;
            }
        }
    });

    let period = Duration::from_secs_f64(1.0 / rate);
    // About the size of a one-device `devices_deleted` event.
    let payload = vec![b'x'; 192];
    let mut samples = Samples::default();
    let started = tokio::time::Instant::now();
    for k in 0..(warmup + count) as i64 {
        tokio::time::sleep_until(started + period * k as u32).await;
        let sent = Instant::now();
        sqlx::query(
            "WITH row AS (INSERT INTO bench_durable_floor.outbox (id, payload) VALUES ($1, $2) \
             RETURNING id) SELECT pg_notify($3, id::text) FROM row",
        )
        .bind(k)
        .bind(&payload)
        .bind(CHANNEL)
        .execute(&mut producer)
        .await
        .context("the floor's outbox statement")?;
        let arrived = loop {
            let (id, at) = tokio::time::timeout(Duration::from_secs(10), applied.recv())
                .await
                .context("the floor's consumer applied nothing within 10 s")?
                .context("the floor's consumer stopped")?;
            if id == k {
                break at;
            }
        };
        if k as usize >= warmup {
            samples.push(Some(arrived - sent));
        }
    }
    relay.abort();
    applier.abort();
    let _ = js.delete_stream(STREAM).await;
    let _ = sqlx::raw_sql("DROP SCHEMA bench_durable_floor CASCADE")
        .execute(&mut producer)
        .await;
    Ok(samples)
}
