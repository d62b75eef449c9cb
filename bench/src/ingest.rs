//! (a) Ingest: N devices uploaded end to end through `UploadDevices` (client streaming)
//! into the running stack, against a raw `COPY` of the same rows into a table of the same
//! shape and indexes as `device.registrations` (`LIKE ... INCLUDING ALL`: the columns and
//! the unique partial index on live devices).

use std::time::{Duration, Instant};

use anyhow::Context;
use async_nats::jetstream;
use serde_json::{Value, json};
use sqlx::{Connection, PgConnection};

use crate::setup::{
    self, INGEST_BASE, INGEST_CUSTOMER, MODEL, RESELLER, WARMUP_BASE, WARMUP_CUSTOMER,
};
use crate::stack::Stack;
use crate::stats::{round3, secs};

/// Bytes per `COPY` data message (what the service sends too).
const COPY_CHUNK: usize = 256 * 1024;

/// Settings of the ingest benchmark.
#[derive(Debug, Clone)]
pub struct IngestConfig {
    /// Devices in the measured upload.
    pub devices: usize,
    /// Devices in the warm-up upload (0: none).
    pub warmup_devices: usize,
    /// Devices per `DeviceBatch` message.
    pub batch: usize,
    /// The target ratio `reference_time / service_time`.
    pub target_ratio: f64,
    /// Every device also carries an IMEI 2 (a dual-SIM phone): two registration rows
    /// each, in the service and in the reference alike.
    pub imei2: bool,
}

/// The reference table: `device.registrations`' shape and indexes, autovacuum off so it
/// does not run into the service's measurement.
const REFERENCE_DDL: &str = "\
    DROP SCHEMA IF EXISTS bench_ref CASCADE; \
    CREATE SCHEMA bench_ref; \
    CREATE TABLE bench_ref.registrations (LIKE device.registrations INCLUDING ALL); \
    ALTER TABLE bench_ref.registrations SET (autovacuum_enabled = false);";

/// The rows the service would register for devices `first..first + count` (with
/// `imei2`, a second row per device for its IMEI 2, naming the device), as `COPY` text
/// chunks, built beforehand so that building them is not timed.
fn reference_chunks(first: u64, count: usize, target: &str, imei2: bool) -> Vec<Vec<u8>> {
    use std::io::Write;
    let upload_id = uuid::Uuid::now_v7();
    let mut chunks = Vec::new();
    let mut buf = Vec::with_capacity(COPY_CHUNK + 256);
    for n in first..first + count as u64 {
        let device_id = setup::device_id(n);
        let _ = writeln!(
            buf,
            "{device_id}\t1\t{MODEL}\t\\N\t{RESELLER}\t{upload_id}\t{target}"
        );
        if imei2 {
            let _ = writeln!(
                buf,
                "{}\t1\t{MODEL}\t{device_id}\t{RESELLER}\t{upload_id}\t{target}",
                setup::imei2(n)
            );
        }
        if buf.len() >= COPY_CHUNK {
            chunks.push(std::mem::replace(
                &mut buf,
                Vec::with_capacity(COPY_CHUNK + 256),
            ));
        }
    }
    if !buf.is_empty() {
        chunks.push(buf);
    }
    chunks
}

/// Runs one `COPY` of `chunks` into the reference table; returns its duration (the
/// statement's start to its commit).
async fn reference_copy(conn: &mut PgConnection, chunks: Vec<Vec<u8>>) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let mut copy = conn
        .copy_in_raw(
            "COPY bench_ref.registrations (device_id, id_kind, model, secondary_of, reseller_id, upload_id, target_knox_id) FROM STDIN",
        )
        .await?;
    for chunk in chunks {
        copy.send(chunk).await?;
    }
    copy.finish().await?;
    Ok(started.elapsed())
}

async fn checkpoint(stack: &Stack) {
    // Flushes the previous step's dirty pages so that neither measurement pays for the
    // other's writes (needs superuser; skipped otherwise).
    if let Err(err) = stack.execute("CHECKPOINT").await {
        eprintln!("==> CHECKPOINT skipped: {err}");
    }
}

/// Runs the benchmark; returns its JSON result and the views' catch-up after the upload
/// ([`crate::catchup`]).
///
/// # Errors
/// When the stack fails (a miss of the target is not an error).
pub async fn run(
    stack: &Stack,
    js: &jetstream::Context,
    config: &IngestConfig,
) -> anyhow::Result<(Value, anyhow::Result<Value>)> {
    stack
        .execute(REFERENCE_DDL)
        .await
        .context("creating the reference table")?;
    let mut conn = PgConnection::connect(&stack.database_url).await?;

    if config.warmup_devices > 0 {
        eprintln!(
            "==> ingest: warm-up ({} devices each way)",
            config.warmup_devices
        );
        let messages = setup::upload_messages(
            WARMUP_CUSTOMER,
            "BENCH-WARMUP",
            WARMUP_BASE,
            config.warmup_devices,
            config.batch,
            config.imei2,
        );
        setup::upload(stack, messages).await?;
        let chunks = reference_chunks(
            WARMUP_BASE,
            config.warmup_devices,
            WARMUP_CUSTOMER,
            config.imei2,
        );
        reference_copy(&mut conn, chunks).await?;
        setup::settle(stack, js, Duration::from_secs(600)).await?;
    }

    eprintln!("==> ingest: building {} rows each way", config.devices);
    let chunks = reference_chunks(INGEST_BASE, config.devices, INGEST_CUSTOMER, config.imei2);
    let copy_bytes: usize = chunks.iter().map(Vec::len).sum();
    let messages = setup::upload_messages(
        INGEST_CUSTOMER,
        "BENCH-INGEST",
        INGEST_BASE,
        config.devices,
        config.batch,
        config.imei2,
    );
    let grpc_messages = messages.len();

    checkpoint(stack).await;
    eprintln!("==> ingest: reference COPY of {} rows", config.devices);
    let reference = reference_copy(&mut conn, chunks).await?;
    eprintln!("    {:.3} s", reference.as_secs_f64());

    checkpoint(stack).await;
    let memory_before = stack.memory()?;
    eprintln!("==> ingest: UploadDevices of {} devices", config.devices);
    let (upload, service) = setup::upload(stack, messages).await?;
    eprintln!("    {:.3} s", service.as_secs_f64());
    let memory_after = stack.memory()?;
    if upload.accepted_count != config.devices as i64 {
        anyhow::bail!(
            "the upload accepted {} of {} devices",
            upload.accepted_count,
            config.devices
        );
    }
    eprintln!("==> ingest: watching the views catch up with the upload");
    let settle_started = Instant::now();
    let catch_up = crate::catchup::measure(
        stack,
        js,
        config.devices as i64,
        service,
        Duration::from_secs(1800),
    )
    .await;
    match &catch_up {
        Ok(result) => eprintln!(
            "    all views current {} s after UploadDevices answered ({}x the upload)",
            result["all_views_seconds_after_answer"], result["ratio"]
        ),
        Err(err) => eprintln!("    views catch-up: {err:#}"),
    }
    let settled = setup::settle(stack, js, Duration::from_secs(1800)).await;
    let settled = settled.map(|_| settle_started.elapsed());
    if let Ok(d) = &settled {
        eprintln!(
            "    settled {:.3} s after UploadDevices returned",
            d.as_secs_f64()
        );
    }

    let n = config.devices as f64;
    let ratio = reference.as_secs_f64() / service.as_secs_f64();
    let ingest = json!({
        "name": "ingest",
        "devices": config.devices,
        "imei2": config.imei2,
        "service": {
            "what": "UploadDevices (client streaming, one connection) of N valid IMEIs (with --imei2, each with an IMEI 2) to one customer: first message sent to response received (committed)",
            "seconds": secs(service),
            "devices_per_second": (n / service.as_secs_f64()).round(),
            "grpc_messages": grpc_messages,
            "batch_devices": config.batch,
            "accepted": upload.accepted_count,
            "rss_mib_before": crate::stack::mib(memory_before.rss_kib),
            "rss_mib_after": crate::stack::mib(memory_after.rss_kib),
            "peak_rss_mib_since_start": crate::stack::mib(memory_after.hwm_kib),
        },
        "reference": {
            "what": "COPY ... FROM STDIN (text) of the same rows (a row per identifier) into bench_ref.registrations (LIKE device.registrations INCLUDING ALL), autocommit",
            "seconds": secs(reference),
            "devices_per_second": (n / reference.as_secs_f64()).round(),
            "bytes": copy_bytes,
        },
        "ratio": round3(ratio),
        "ratio_definition": "reference_seconds / service_seconds (= service rate / COPY rate)",
        "target": format!("ratio >= {}", config.target_ratio),
        "pass": ratio >= config.target_ratio,
        "info": {
            "projections_settled_seconds_after_response": settled.as_ref().ok().map(|d| secs(*d)),
            "settle_error": settled.as_ref().err().map(|e| e.to_string()),
            "end_to_end_with_projections_seconds": settled.as_ref().ok().map(|d| secs(service + *d)),
            "warmup_devices": config.warmup_devices,
        },
    });
    Ok((ingest, catch_up))
}
