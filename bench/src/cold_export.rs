//! (c') The **cold** export (issue #12): the first `ExportCustomerCsv` of rows nobody has
//! read since they were written, against a `COPY TO` of twin rows nobody has read either.
//!
//! Each round uploads N devices to a customer A and the same N devices' twin (same shape
//! and widths, other IDs) to a customer B, both through `UploadDevices` and each left to
//! settle before the next, so that each customer's rows sit on pages of their own and
//! were projected the same way. After a `CHECKPOINT` it times the first download of A
//! through the service and the first `COPY (the statement the service declares its cursor
//! for, for B) TO STDOUT (FORMAT csv)`; a round alternates which goes first, with another
//! `CHECKPOINT` between the two, so neither side writes back pages the other dirtied.
//! Then it times both again (warm), for the ratio the warm benchmark would give on the
//! same data.
//!
//! A first read of a freshly written row sets its hint bits (`HEAP_XMIN_COMMITTED`), which
//! dirties its page; with shared buffers smaller than the rows, the reader then writes
//! those pages back itself as it evicts them. The per-side counters printed
//! (`pg_stat_bgwriter`, `pg_statio_user_tables`, WAL bytes) show that work; each side's
//! CPU seconds by program (`/proc`) show what else the machine was doing.

use std::time::Duration;

use anyhow::Context;
use async_nats::jetstream;
use reseller_proto::v1::AccountKind;
use serde_json::{Value, json};
use sqlx::{AssertSqlSafe, Connection, PgConnection, Row};

use crate::export::{
    Download, download_json, reference_copy, reference_query_of, service_export_of,
};
use crate::stack::Stack;
use crate::stats::{round3, secs};
use crate::{cpu, setup};

/// Device numbers of the cold export's uploads (see [`setup::device_id`]): round `r`'s
/// customer A gets `COLD_BASE + 2rN ..`, its twin B `COLD_BASE + (2r + 1)N ..`; below
/// [`setup::IMEI2_OFFSET`] for up to 400,000,000 devices in all.
pub const COLD_BASE: u64 = 100_000_000;

/// How long counters take to reach `pg_stat_*` (see [`Counters::read`]).
const STATS_DELAY: Duration = Duration::from_millis(11_000);

/// Settings of the cold export benchmark.
#[derive(Debug, Clone)]
pub struct ColdExportConfig {
    /// Devices of each side (A's and B's upload).
    pub devices: usize,
    /// Rounds, each on two fresh customers; odd rounds time the service first.
    pub rounds: usize,
    /// Devices per `DeviceBatch` of an upload.
    pub batch: usize,
    /// Every device also carries an IMEI 2.
    pub imei2: bool,
    /// `CHECKPOINT` before the first downloads and between them.
    pub checkpoint: bool,
    /// The target: reference seconds / service seconds.
    pub target_ratio: f64,
    /// How long the projections may take to settle after an upload.
    pub settle_timeout: Duration,
}

/// The two customers of round `round`: A (exported by the service) and its twin B
/// (copied by the reference). Twelve digits, like every Knox ID of the bench.
fn customers(round: usize) -> (String, String) {
    (
        format!("9000000{:05}", 100 + 2 * round),
        format!("9000000{:05}", 101 + 2 * round),
    )
}

/// Server-wide and table counters read around one side's download.
#[derive(Debug, Clone, Copy, Default)]
struct Counters {
    /// `pg_stat_bgwriter`: buffers written by backends (evicting a dirty buffer), by the
    /// background writer, by checkpoints; buffers allocated.
    buffers_backend: i64,
    buffers_clean: i64,
    buffers_checkpoint: i64,
    buffers_alloc: i64,
    /// `pg_statio_user_tables` of `reporting.registrations`.
    heap_read: i64,
    heap_hit: i64,
    idx_read: i64,
    idx_hit: i64,
    /// WAL position, bytes.
    wal: i64,
}

impl Counters {
    async fn read(conn: &mut PgConnection) -> anyhow::Result<Self> {
        // An idle backend reports its counters up to 10 s late (PostgreSQL 15's
        // PGSTAT_IDLE_INTERVAL): wait for the last download's (and the CHECKPOINT's) to
        // arrive.
        tokio::time::sleep(STATS_DELAY).await;
        sqlx::raw_sql("SELECT pg_stat_clear_snapshot()")
            .execute(&mut *conn)
            .await?;
        let row = sqlx::query(
            "SELECT b.buffers_backend, b.buffers_clean, b.buffers_checkpoint, b.buffers_alloc, \
               COALESCE(s.heap_blks_read, 0), COALESCE(s.heap_blks_hit, 0), \
               COALESCE(s.idx_blks_read, 0), COALESCE(s.idx_blks_hit, 0), \
               (pg_current_wal_lsn() - '0/0'::pg_lsn)::bigint \
             FROM pg_stat_bgwriter b \
             LEFT JOIN pg_statio_user_tables s \
               ON s.relid = to_regclass('reporting.registrations')",
        )
        .fetch_one(&mut *conn)
        .await?;
        Ok(Self {
            buffers_backend: row.try_get(0)?,
            buffers_clean: row.try_get(1)?,
            buffers_checkpoint: row.try_get(2)?,
            buffers_alloc: row.try_get(3)?,
            heap_read: row.try_get(4)?,
            heap_hit: row.try_get(5)?,
            idx_read: row.try_get(6)?,
            idx_hit: row.try_get(7)?,
            wal: row.try_get(8)?,
        })
    }

    fn delta_json(&self, before: &Self) -> Value {
        json!({
            "buffers_written_by_backends": self.buffers_backend - before.buffers_backend,
            "buffers_written_by_bgwriter": self.buffers_clean - before.buffers_clean,
            "buffers_written_by_checkpoints": self.buffers_checkpoint - before.buffers_checkpoint,
            "buffers_allocated": self.buffers_alloc - before.buffers_alloc,
            "registrations_heap_blocks_read": self.heap_read - before.heap_read,
            "registrations_heap_blocks_hit": self.heap_hit - before.heap_hit,
            "registrations_index_blocks_read": self.idx_read - before.idx_read,
            "registrations_index_blocks_hit": self.idx_hit - before.idx_hit,
            "wal_bytes": self.wal - before.wal,
        })
    }
}

/// One side's download with the counters around it.
struct Side {
    download: Download,
    /// PostgreSQL's counters (cold downloads with the `CHECKPOINT`s only: reading them
    /// takes seconds, which would let the write-back finish).
    counters: Option<Value>,
    /// CPU seconds of every process on the machine during the download (it is shared).
    cpu: Value,
}

async fn checkpoint(stack: &Stack) -> bool {
    match stack.execute("CHECKPOINT").await {
        Ok(()) => true,
        Err(err) => {
            // Only superusers (and pg_checkpoint members) may; measure anyway.
            eprintln!("    CHECKPOINT refused ({err:#}); measuring without it");
            false
        }
    }
}

async fn time_service(
    stack: &Stack,
    conn: &mut PgConnection,
    customer: &str,
    counters: bool,
) -> anyhow::Result<Side> {
    let before = if counters {
        Some(Counters::read(conn).await?)
    } else {
        None
    };
    let cpu = cpu::Snapshot::take();
    let download = service_export_of(stack, customer)
        .await
        .map_err(|s| anyhow::anyhow!("ExportCustomerCsv of {customer}: {s}"))?;
    let cpu = cpu.report(&cpu::Snapshot::take(), 0);
    let counters = match before {
        Some(before) => Some(Counters::read(conn).await?.delta_json(&before)),
        None => None,
    };
    Ok(Side {
        download,
        counters,
        cpu,
    })
}

async fn time_reference(
    conn: &mut PgConnection,
    statement: &str,
    counters: bool,
) -> anyhow::Result<Side> {
    let before = if counters {
        Some(Counters::read(conn).await?)
    } else {
        None
    };
    let cpu = cpu::Snapshot::take();
    let download = reference_copy(conn, statement)
        .await
        .context("the reference COPY")?;
    let cpu = cpu.report(&cpu::Snapshot::take(), 0);
    let counters = match before {
        Some(before) => Some(Counters::read(conn).await?.delta_json(&before)),
        None => None,
    };
    Ok(Side {
        download,
        counters,
        cpu,
    })
}

/// The plan of `select` as the service runs it (a cursor: `cursor_tuple_fraction` applies;
/// the service binds the two IDs, which it plans with as with these literals) or as `COPY`
/// does, without running it (planning reads the catalog and the index's metapage, never
/// the rows).
async fn plan(conn: &mut PgConnection, select: &str, cursor: bool) -> anyhow::Result<String> {
    let mut tx = conn.begin().await?;
    let sql = if cursor {
        format!("EXPLAIN DECLARE bench_plan NO SCROLL CURSOR FOR {select}")
    } else {
        format!("EXPLAIN {select}")
    };
    let lines: Vec<String> = sqlx::query_scalar(AssertSqlSafe(sql))
        .fetch_all(&mut *tx)
        .await?;
    tx.rollback().await?;
    Ok(lines.join("\n"))
}

fn side_json(side: &Side, first: bool) -> Value {
    json!({
        "download": download_json(&side.download),
        "went_first": first,
        "counters_during": side.counters,
        "cpu_during": side.cpu,
    })
}

/// Runs the benchmark's rounds; returns its JSON result.
///
/// # Errors
/// When the stack fails (a missed target is reported, not an error).
pub async fn run(
    stack: &Stack,
    js: &jetstream::Context,
    config: &ColdExportConfig,
) -> anyhow::Result<Value> {
    let mut conn = PgConnection::connect(&stack.database_url).await?;
    let n = config.devices as u64;
    let mut rounds = Vec::new();
    let (mut cold_service, mut cold_reference) = (Vec::new(), Vec::new());
    let (mut warm_service, mut warm_reference) = (Vec::new(), Vec::new());
    let mut rows_match = true;
    for round in 0..config.rounds {
        let (a, b) = customers(round);
        setup::onboard(
            stack,
            &a,
            AccountKind::Customer,
            &format!("Cold Export A{round} GmbH"),
        )
        .await?;
        setup::onboard(
            stack,
            &b,
            AccountKind::Customer,
            &format!("Cold Export B{round} GmbH"),
        )
        .await?;
        setup::settle(stack, js, config.settle_timeout).await?;
        let mut uploads = Vec::new();
        for (i, customer) in [&a, &b].into_iter().enumerate() {
            eprintln!("==> cold export, round {round}: uploading {n} devices to {customer}");
            let first = COLD_BASE + (2 * round as u64 + i as u64) * n;
            let messages = setup::upload_messages(
                customer,
                "BENCH-COLD",
                first,
                config.devices,
                config.batch,
                config.imei2,
            );
            let (_, took) = setup::upload(stack, messages).await?;
            // Settled before the twin's upload: each customer's rows on pages of their own.
            let settled = setup::settle(stack, js, config.settle_timeout).await?;
            uploads.push(json!({
                "customer": customer,
                "upload_seconds": secs(took),
                "settled_seconds_after": secs(settled),
            }));
        }

        let (statement, source) = reference_query_of(&mut conn, &b).await?;
        let select = statement
            .strip_prefix("COPY (")
            .and_then(|s| s.strip_suffix(") TO STDOUT (FORMAT csv)"))
            .context("the reference statement's shape")?;
        let (service_select, _) = reference_query_of(&mut conn, &a).await?;
        let service_select = service_select
            .strip_prefix("COPY (")
            .and_then(|s| s.strip_suffix(") TO STDOUT (FORMAT csv)"))
            .context("the reference statement's shape")?
            .to_owned();
        let service_plan = plan(&mut conn, &service_select, true).await?;
        let reference_plan = plan(&mut conn, select, false).await?;

        let service_first = round % 2 == 0;
        eprintln!(
            "==> cold export, round {round}: {}the first downloads ({} first)",
            if config.checkpoint {
                "CHECKPOINT, then "
            } else {
                ""
            },
            if service_first {
                "service"
            } else {
                "reference"
            }
        );
        let mut checkpointed = config.checkpoint && checkpoint(stack).await;
        let (service, reference) = if service_first {
            let s = time_service(stack, &mut conn, &a, config.checkpoint).await?;
            checkpointed &= config.checkpoint && checkpoint(stack).await;
            let r = time_reference(&mut conn, &statement, config.checkpoint).await?;
            (s, r)
        } else {
            let r = time_reference(&mut conn, &statement, config.checkpoint).await?;
            checkpointed &= config.checkpoint && checkpoint(stack).await;
            let s = time_service(stack, &mut conn, &a, config.checkpoint).await?;
            (s, r)
        };
        eprintln!(
            "    cold: service {:.3} s ({} lines), COPY {:.3} s ({} lines)",
            service.download.took.as_secs_f64(),
            service.download.lines,
            reference.download.took.as_secs_f64(),
            reference.download.lines
        );
        if config.checkpoint {
            checkpoint(stack).await;
        }
        let warm_s = time_service(stack, &mut conn, &a, false).await?;
        let warm_r = time_reference(&mut conn, &statement, false).await?;
        eprintln!(
            "    warm: service {:.3} s, COPY {:.3} s",
            warm_s.download.took.as_secs_f64(),
            warm_r.download.took.as_secs_f64()
        );

        // The service's file has a header line; the reference has none.
        let matched = service.download.lines == n + 1
            && reference.download.lines == n
            && warm_s.download.lines == n + 1
            && warm_r.download.lines == n;
        rows_match &= matched;
        let cold_ratio =
            reference.download.took.as_secs_f64() / service.download.took.as_secs_f64();
        let warm_ratio = warm_r.download.took.as_secs_f64() / warm_s.download.took.as_secs_f64();
        cold_service.push(service.download.took.as_secs_f64());
        cold_reference.push(reference.download.took.as_secs_f64());
        warm_service.push(warm_s.download.took.as_secs_f64());
        warm_reference.push(warm_r.download.took.as_secs_f64());
        rounds.push(json!({
            "round": round,
            "uploads": uploads,
            "checkpointed": checkpointed,
            "cold": {
                "service": side_json(&service, service_first),
                "reference": side_json(&reference, !service_first),
                "ratio": round3(cold_ratio),
            },
            "warm": {
                "service": side_json(&warm_s, true),
                "reference": side_json(&warm_r, false),
                "ratio": round3(warm_ratio),
            },
            "rows_match": matched,
            "plans": { "service_cursor": service_plan, "reference_copy": reference_plan },
            "reference_source": source,
        }));
    }

    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
    let cold_ratio = mean(&cold_reference) / mean(&cold_service);
    let warm_ratio = mean(&warm_reference) / mean(&warm_service);
    let pass = cold_ratio >= config.target_ratio && rows_match;
    Ok(json!({
        "name": "export_cold",
        "devices": config.devices,
        "rounds": rounds,
        "service": {
            "what": "the first ExportCustomerCsv of customer A right after its upload settled and a CHECKPOINT (first message sent to last byte received; own connection)",
            "cold_seconds_mean": round3(mean(&cold_service)),
            "warm_seconds_mean": round3(mean(&warm_service)),
        },
        "reference": {
            "what": "the first COPY (the service's cursor statement, for twin customer B) TO STDOUT (FORMAT csv) after B's upload settled and a CHECKPOINT",
            "cold_seconds_mean": round3(mean(&cold_reference)),
            "warm_seconds_mean": round3(mean(&warm_reference)),
        },
        "rows_match": rows_match,
        "ratio": round3(cold_ratio),
        "warm_ratio": round3(warm_ratio),
        "ratio_definition": "mean reference seconds / mean service seconds, over the rounds (first downloads)",
        "target": format!("cold ratio >= {}", config.target_ratio),
        "pass": pass,
    }))
}
