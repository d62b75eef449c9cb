//! (c) Export: `ExportCustomerCsv` of the customer the ingest filled, against
//! `COPY (the same rows) TO STDOUT (FORMAT csv)`, and the service's peak memory during
//! the download.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use futures::StreamExt;
use reseller_kit::auth::Role;
use reseller_proto::v1 as pb;
use serde_json::{Value, json};
use sqlx::{Connection, PgConnection};

use crate::setup::{INGEST_CUSTOMER, RESELLER};
use crate::stack::{Stack, mib};
use crate::stats::{round3, secs};

/// Settings of the export benchmark.
#[derive(Debug, Clone)]
pub struct ExportConfig {
    /// The target rate ratio (service rows/s over COPY rows/s).
    pub target_ratio: f64,
    /// The largest allowed growth of the service's peak memory, MiB.
    pub memory_budget_mib: f64,
}

/// What one download produced.
#[derive(Debug, Clone, Copy, Default)]
pub struct Download {
    /// First message sent (or the `COPY` started) to the last byte received.
    pub took: Duration,
    first_byte: Duration,
    bytes: u64,
    /// Line ends received (the service's file has a header line; `COPY`'s has none).
    pub lines: u64,
    chunks: u64,
}

impl Download {
    /// Counts a chunk of a download that started at `started` (the first one's arrival
    /// is the time to the first byte).
    fn add(&mut self, started: Instant, chunk: &[u8]) {
        if self.chunks == 0 {
            self.first_byte = started.elapsed();
        }
        self.chunks += 1;
        self.bytes += chunk.len() as u64;
        self.lines += chunk.iter().filter(|&&b| b == b'\n').count() as u64;
    }
}

/// The reference: the rows the service's customer CSV reads, straight out of its
/// projection (`reporting.registrations`, in the detail's order), as Postgres's own CSV.
/// Falls back to device-service's registrations while reporting-service has no device
/// projection.
async fn reference_query(conn: &mut PgConnection) -> anyhow::Result<(String, &'static str)> {
    reference_query_of(conn, INGEST_CUSTOMER).await
}

/// [`reference_query`] of `customer`'s rows (a Knox ID: digits only, so safe to inline):
/// `COPY (the statement `export_customer_devices` declares its cursor for) TO STDOUT
/// (FORMAT csv)`, and which table it reads.
///
/// # Errors
/// When PostgreSQL cannot be asked which tables exist.
pub async fn reference_query_of(
    conn: &mut PgConnection,
    customer: &str,
) -> anyhow::Result<(String, &'static str)> {
    anyhow::ensure!(
        customer.bytes().all(|b| b.is_ascii_digit()),
        "not a Knox ID: {customer:?}"
    );
    let projected: Option<String> =
        sqlx::query_scalar("SELECT to_regclass('reporting.registrations')::text")
            .fetch_one(&mut *conn)
            .await?;
    Ok(if projected.is_some() {
        (
            format!(
                "COPY (SELECT upload_id, uploaded_at, order_number, device_id, id_kind, model, virtual, via_msp_id \
                 FROM reporting.registrations \
                 WHERE reseller_id = '{RESELLER}' AND placed_knox_id = '{customer}' AND NOT deleted \
                 ORDER BY uploaded_at DESC, upload_id, device_id) TO STDOUT (FORMAT csv)"
            ),
            "reporting.registrations",
        )
    } else {
        (
            format!(
                "COPY (SELECT r.upload_id, u.uploaded_at, u.order_number, r.device_id, r.id_kind, r.model, false, '' \
                 FROM device.registrations r JOIN device.uploads u USING (upload_id) \
                 WHERE r.reseller_id = '{RESELLER}' AND r.target_knox_id = '{customer}' AND r.deleted_at IS NULL \
                 ORDER BY u.uploaded_at DESC, r.upload_id, r.device_id) TO STDOUT (FORMAT csv)"
            ),
            "device.registrations JOIN device.uploads (reporting.registrations missing)",
        )
    })
}

/// Runs `statement` (a `COPY ... TO STDOUT`) and reads its output as fast as it comes.
///
/// # Errors
/// When the `COPY` fails.
pub async fn reference_copy(conn: &mut PgConnection, statement: &str) -> anyhow::Result<Download> {
    let started = Instant::now();
    let mut stream = conn.copy_out_raw(statement).await?;
    let mut d = Download::default();
    while let Some(chunk) = stream.next().await {
        d.add(started, &chunk?);
    }
    d.took = started.elapsed();
    Ok(d)
}

async fn service_export(stack: &Stack) -> Result<Download, tonic::Status> {
    service_export_of(stack, INGEST_CUSTOMER).await
}

/// Downloads `customer`'s `ExportCustomerCsv` as the bench's reseller, over a connection
/// of its own (made before the clock starts), reading every chunk as it comes.
///
/// # Errors
/// The call's status.
pub async fn service_export_of(stack: &Stack, customer: &str) -> Result<Download, tonic::Status> {
    let reseller = stack
        .caller_own_channel(Role::Reseller, RESELLER)
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    let started = Instant::now();
    let mut stream = reseller
        .reporting()
        .export_customer_csv(pb::ExportCustomerCsvRequest {
            knox_id: customer.into(),
            ..Default::default()
        })
        .await?
        .into_inner();
    let mut d = Download::default();
    while let Some(chunk) = stream.message().await? {
        d.add(started, &chunk.data);
    }
    d.took = started.elapsed();
    Ok(d)
}

/// Peak memory of one download: `VmRSS` before, `VmHWM` after a reset to it, and `VmRSS`
/// sampled every 2 ms meanwhile.
#[derive(Debug, Clone, Copy)]
struct MemoryUse {
    rss_before_kib: u64,
    hwm_after_kib: Option<u64>,
    sampled_peak_kib: u64,
}

impl MemoryUse {
    fn growth_kib(&self) -> u64 {
        self.hwm_after_kib
            .unwrap_or(0)
            .max(self.sampled_peak_kib)
            .saturating_sub(self.rss_before_kib)
    }

    fn json(&self) -> Value {
        json!({
            "rss_mib_before": mib(self.rss_before_kib),
            "vmhwm_mib_after_reset": self.hwm_after_kib.map(mib),
            "sampled_peak_rss_mib": mib(self.sampled_peak_kib),
            "peak_growth_mib": mib(self.growth_kib()),
        })
    }
}

async fn measured_export(
    stack: &Stack,
) -> anyhow::Result<(Result<Download, tonic::Status>, MemoryUse)> {
    let before = stack.memory()?;
    let reset = stack.reset_peak();
    if let Err(err) = &reset {
        eprintln!("==> export: cannot reset VmHWM ({err:#}); relying on sampled VmRSS");
    }
    let peak = Arc::new(AtomicU64::new(before.rss_kib));
    let done = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (peak, done, pid) = (peak.clone(), done.clone(), stack.pid()?);
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                if let Ok(m) = crate::stack::Memory::of(pid) {
                    peak.fetch_max(m.rss_kib, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(2));
            }
        })
    };
    let result = service_export(stack).await;
    done.store(true, Ordering::Relaxed);
    let _ = sampler.join();
    let after = stack.memory()?;
    Ok((
        result,
        MemoryUse {
            rss_before_kib: before.rss_kib,
            hwm_after_kib: reset.ok().map(|()| after.hwm_kib),
            sampled_peak_kib: peak.load(Ordering::Relaxed).max(after.rss_kib),
        },
    ))
}

/// A download's figures, as the results print them.
pub fn download_json(d: &Download) -> Value {
    let rows = d.lines as f64;
    json!({
        "seconds": secs(d.took),
        "first_byte_ms": (d.first_byte.as_secs_f64() * 1e6).round() / 1e3,
        "bytes": d.bytes,
        "lines": d.lines,
        "chunks": d.chunks,
        "rows_per_second": (rows / d.took.as_secs_f64()).round(),
        "mib_per_second": round3(d.bytes as f64 / 1048576.0 / d.took.as_secs_f64()),
    })
}

/// Runs the benchmark (warm-up once each way, then measure); returns its JSON result.
///
/// # Errors
/// When the stack fails (a miss of a target, or the RPC being unavailable, is reported,
/// not an error).
pub async fn run(stack: &Stack, config: &ExportConfig, devices: usize) -> anyhow::Result<Value> {
    let mut conn = PgConnection::connect(&stack.database_url).await?;
    let (statement, source) = reference_query(&mut conn).await?;
    let target = format!(
        "rows/s ratio >= {} and service peak memory growth < {} MiB",
        config.target_ratio, config.memory_budget_mib
    );

    eprintln!("==> export: warm-up (one download each way)");
    let (warmup, warmup_memory) = measured_export(stack).await?;
    if let Err(status) = &warmup {
        return Ok(json!({
            "name": "export",
            "devices": devices,
            "error": format!("ExportCustomerCsv failed: {:?}: {}", status.code(), status.message()),
            "target": target,
            "pass": false,
        }));
    }
    reference_copy(&mut conn, &statement)
        .await
        .context("the reference COPY")?;

    eprintln!("==> export: reference COPY TO STDOUT");
    let reference = reference_copy(&mut conn, &statement).await?;
    eprintln!(
        "    {:.3} s, {} lines",
        reference.took.as_secs_f64(),
        reference.lines
    );
    eprintln!("==> export: ExportCustomerCsv");
    let (service, memory) = measured_export(stack).await?;
    let service = match service {
        Ok(d) => d,
        Err(status) => anyhow::bail!("ExportCustomerCsv failed after its warm-up: {status}"),
    };
    eprintln!(
        "    {:.3} s, {} lines",
        service.took.as_secs_f64(),
        service.lines
    );

    // The service's file has a header line; the reference has none.
    let service_rows = service.lines.saturating_sub(1);
    let service_rate = service_rows as f64 / service.took.as_secs_f64();
    let reference_rate = reference.lines as f64 / reference.took.as_secs_f64();
    let ratio = service_rate / reference_rate;
    let growth_mib = mib(memory.growth_kib().max(warmup_memory.growth_kib()));
    let rows_match = service_rows == reference.lines;
    let pass_rate = ratio >= config.target_ratio;
    let pass_memory = growth_mib < config.memory_budget_mib;
    Ok(json!({
        "name": "export",
        "devices": devices,
        "service": {
            "what": "ExportCustomerCsv (server streaming CsvChunk) of the ingest customer, own connection, read as fast as possible",
            "download": download_json(&service),
            "data_rows": service_rows,
            "memory_measured_download": memory.json(),
            "memory_first_download": warmup_memory.json(),
        },
        "reference": {
            "what": "COPY (SELECT the same rows, same order) TO STDOUT (FORMAT csv)",
            "source": source,
            "download": download_json(&reference),
        },
        "rows_match": rows_match,
        "ratio": round3(ratio),
        "ratio_definition": "service rows/s / reference rows/s",
        "peak_memory_growth_mib": growth_mib,
        "peak_memory_definition": "max over the first (cold) and the measured download of max(VmHWM after resetting it, sampled VmRSS) - VmRSS before",
        "target": target,
        "pass_rate": pass_rate,
        "pass_memory": pass_memory,
        "pass": pass_rate && pass_memory && rows_match,
    }))
}
