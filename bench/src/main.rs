//! `reseller-bench`: the benchmarks of issue #3, each against its reference measured in
//! the same run, printed as JSON (one object per line on stdout; progress on stderr).
//!
//! - `ingest`: N devices through `UploadDevices` vs `COPY` of the same rows into a table
//!   shaped and indexed like `device.registrations`;
//! - `deletion_propagation`: single-device deletions at a steady rate until gone from the
//!   three portals and `complete`, vs a JetStream publish → durable consumer → ack;
//! - `export`: `ExportCustomerCsv` of the N devices vs `COPY (...) TO STDOUT (FORMAT csv)`,
//!   and the service's peak memory meanwhile.
//!
//! It starts its own stack: a fresh database on `DATABASE_URL`'s server, a private
//! `nats-server` with JetStream, and `reseller-portal serve` as a subprocess. A missed
//! target is a result, not a failure: the exit status is 0 unless the bench itself fails.

mod clients;
mod deletion;
mod durable_floor;
mod export;
mod ingest;
mod setup;
mod stack;
mod stats;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Parser;
use serde_json::{Value, json};

use crate::stack::{Stack, StackConfig};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Bench {
    Ingest,
    Deletion,
    Export,
}

/// Benchmarks the reseller portal against its references; prints JSON.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// The benchmarks to run (export needs the ingest's devices: without `ingest` they
    /// are uploaded unmeasured).
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "ingest,deletion,export"
    )]
    only: Vec<Bench>,

    /// Devices in the ingest upload and the exported customer.
    #[arg(long, env = "BENCH_DEVICES", default_value_t = 1_000_000)]
    devices: usize,

    /// Devices in the ingest warm-up upload (and warm-up COPY).
    #[arg(long, env = "BENCH_WARMUP_DEVICES", default_value_t = 100_000)]
    warmup_devices: usize,

    /// Every uploaded device also carries an IMEI 2 (a dual-SIM phone: two identifiers,
    /// two registration rows; the ingest's reference copies both rows too).
    #[arg(long)]
    imei2: bool,

    /// Devices per `DeviceBatch` message of an upload.
    #[arg(long, default_value_t = 10_000)]
    upload_batch: usize,

    /// Single-device deletions per second.
    #[arg(long, env = "BENCH_DELETE_RATE", default_value_t = 50.0)]
    delete_rate: f64,

    /// Seconds of measured deletions.
    #[arg(long, env = "BENCH_DELETE_SECONDS", default_value_t = 20.0)]
    delete_seconds: f64,

    /// Seconds of unmeasured deletions before.
    #[arg(long, default_value_t = 2.0)]
    delete_warmup_seconds: f64,

    /// Seconds of floor samples (at the deletion rate); default: --delete-seconds.
    #[arg(long)]
    floor_seconds: Option<f64>,

    /// Microseconds between two polls of one view.
    #[arg(long, env = "BENCH_POLL_INTERVAL_US", default_value_t = 250)]
    poll_interval_us: u64,

    /// Milliseconds after which a deletion not seen through counts as a timeout.
    #[arg(long, default_value_t = 5_000)]
    propagation_timeout_ms: u64,

    /// The `reseller-portal` binary (default: next to this one).
    #[arg(long, env = "BENCH_PORTAL_BIN")]
    portal_bin: Option<PathBuf>,

    /// `RUST_LOG` of the service.
    #[arg(long, default_value = "warn")]
    service_log_level: String,

    /// Where the service's log goes (default: a file in the temp directory).
    #[arg(long)]
    service_log: Option<PathBuf>,

    /// Extra settings for the service, `KEY=VALUE` (repeatable).
    #[arg(long = "service-env", value_parser = parse_key_value)]
    service_env: Vec<(String, String)>,

    /// PostgreSQL settings for the bench database, `KEY=VALUE` (repeatable), e.g.
    /// `log_min_duration_statement=100` to profile.
    #[arg(long = "database-setting", value_parser = parse_key_value)]
    database_settings: Vec<(String, String)>,

    /// Keep the bench database (print its URL) instead of dropping it, to inspect it.
    #[arg(long)]
    keep_database: bool,

    /// What-if experiments: SQL run on the service's database after the ingest (before
    /// the export and deletion benchmarks), e.g. an index a fix would add. Recorded in
    /// the summary; never use for the plain measurement.
    #[arg(long = "what-if-sql")]
    what_if_sql: Vec<String>,

    /// Run `VACUUM (ANALYZE)` after the ingest settles, as autovacuum eventually would.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    vacuum_after_ingest: bool,

    /// Run `CHECKPOINT` before the deletion benchmark, so that the write-back of what
    /// the ingest and the export phases wrote (gigabytes, on the same disk as the WAL)
    /// happens before it rather than stalling its commits.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    checkpoint_before_deletion: bool,
}

fn parse_key_value(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("{s:?} is not KEY=VALUE"))
}

fn emit(value: &Value) {
    println!("{value}");
}

fn failed(name: &str, err: &anyhow::Error) -> Value {
    json!({ "name": name, "error": format!("{err:#}"), "pass": false })
}

async fn environment(stack: &Stack, paced_rate: f64) -> Value {
    let pg: Option<String> = sqlx::query_scalar("SELECT version()")
        .fetch_one(&stack.pool)
        .await
        .ok();
    let setting = |name: &'static str| async move {
        sqlx::query_scalar::<_, String>("SELECT current_setting($1)")
            .bind(name)
            .fetch_one(&stack.pool)
            .await
            .ok()
    };
    // What one PostgreSQL round trip costs from a sqlx client here (the unit every
    // service step is made of).
    let mut round_trip = stats::Samples::default();
    if let Ok(mut conn) = stack.pool.acquire().await {
        for _ in 0..500 {
            let started = Instant::now();
            let ok = sqlx::query("SELECT 1").execute(&mut *conn).await.is_ok();
            round_trip.push(ok.then(|| started.elapsed()));
        }
    }
    // The same round trip at the deletion benchmark's pace: on a mostly idle machine
    // every wake-up costs more (here 0.09 ms back to back against 0.38 ms at 50/s), and
    // the deletion path is made of such round trips.
    let mut paced = stats::Samples::default();
    if let Ok(mut conn) = stack.pool.acquire().await {
        let period = Duration::from_secs_f64(1.0 / paced_rate.max(1.0));
        let mut ticks = tokio::time::interval(period);
        for _ in 0..100 {
            ticks.tick().await;
            let started = Instant::now();
            let ok = sqlx::query("SELECT 1").execute(&mut *conn).await.is_ok();
            paced.push(ok.then(|| started.elapsed()));
        }
    }
    json!({
        "postgres_round_trip_from_sqlx": round_trip.summary(),
        "postgres_round_trip_at_the_deletion_rate": paced.summary(),
        "deletion_rate_per_second": paced_rate,
        "cpus": std::thread::available_parallelism().map(|n| n.get()).ok(),
        "postgres": pg,
        "shared_buffers": setting("shared_buffers").await,
        "synchronous_commit": setting("synchronous_commit").await,
        "load_average": std::fs::read_to_string("/proc/loadavg").ok().map(|s| s.trim().to_owned()),
    })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let portal_bin = match &args.portal_bin {
        Some(p) => p.clone(),
        None => std::env::current_exe()?
            .parent()
            .map(|d| d.join("reseller-portal"))
            .unwrap_or_else(|| PathBuf::from("reseller-portal")),
    };
    let log_path = args.service_log.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!("reseller-bench-{}.log", std::process::id()))
    });
    let config = StackConfig {
        portal_bin,
        rust_log: args.service_log_level.clone(),
        log_path,
        env: args.service_env.clone(),
        database_settings: args.database_settings.clone(),
    };
    let deletion_config = deletion::DeletionConfig {
        rate: args.delete_rate,
        seconds: args.delete_seconds,
        warmup_seconds: args.delete_warmup_seconds,
        floor_seconds: args.floor_seconds.unwrap_or(args.delete_seconds),
        poll_interval: Duration::from_micros(args.poll_interval_us),
        timeout: Duration::from_millis(args.propagation_timeout_ms),
        // The single-process stack runs one NATS server.
        stream_replicas: 1,
    };
    let run_ingest = args.only.contains(&Bench::Ingest);
    let run_deletion = args.only.contains(&Bench::Deletion);
    let run_export = args.only.contains(&Bench::Export);

    let started = Instant::now();
    eprintln!("==> starting the stack ({})", config.portal_bin.display());
    let mut stack = Stack::start(&config).await?;
    eprintln!(
        "    reseller-portal pid {} on {}, NATS {}, database {}, log {}",
        stack.pid,
        stack.addr,
        stack.nats.url,
        stack.db.url,
        stack.log_path.display()
    );
    let js = async_nats::jetstream::new(async_nats::connect(&stack.nats.url).await?);
    let environment = environment(&stack, args.delete_rate).await;

    let outcome = async {
        setup::accounts(&stack).await?;
        if run_deletion {
            deletion::prepare(&stack, &deletion_config).await?;
        }
        setup::settle(&stack, &js, Duration::from_secs(300)).await?;
        let mut results = Vec::new();

        if run_ingest {
            let ingest_config = ingest::IngestConfig {
                devices: args.devices,
                warmup_devices: args.warmup_devices,
                batch: args.upload_batch,
                target_ratio: 0.5,
                imei2: args.imei2,
            };
            let result = ingest::run(&stack, &js, &ingest_config)
                .await
                .unwrap_or_else(|e| failed("ingest", &e));
            emit(&result);
            results.push(result);
        } else if run_export {
            eprintln!(
                "==> uploading {} devices for the export (unmeasured)",
                args.devices
            );
            let messages = setup::upload_messages(
                setup::INGEST_CUSTOMER,
                "BENCH-INGEST",
                setup::INGEST_BASE,
                args.devices,
                args.upload_batch,
                args.imei2,
            );
            setup::upload(&stack, messages).await?;
        }
        if run_ingest || run_export {
            setup::settle(&stack, &js, Duration::from_secs(1800)).await?;
            if args.vacuum_after_ingest {
                eprintln!("==> VACUUM (ANALYZE) after the ingest");
                stack.execute("VACUUM (ANALYZE)").await?;
            }
        }

        for sql in &args.what_if_sql {
            eprintln!("==> what-if: {sql}");
            stack.execute(sql).await?;
        }

        if run_export {
            let export_config = export::ExportConfig {
                target_ratio: 0.7,
                memory_budget_mib: 64.0,
            };
            let result = export::run(&stack, &export_config, args.devices)
                .await
                .unwrap_or_else(|e| failed("export", &e));
            emit(&result);
            results.push(result);
        }

        if run_deletion {
            setup::settle(&stack, &js, Duration::from_secs(600)).await?;
            if args.checkpoint_before_deletion {
                eprintln!("==> CHECKPOINT before the deletion benchmark");
                if let Err(err) = stack.execute("CHECKPOINT").await {
                    // Only superusers (and pg_checkpoint members) may; measure anyway.
                    eprintln!("    CHECKPOINT refused ({err:#}); measuring without it");
                }
            }
            let result = deletion::run(&stack, &deletion_config)
                .await
                .unwrap_or_else(|e| failed("deletion_propagation", &e));
            emit(&result);
            results.push(result);
        }
        anyhow::Ok(results)
    }
    .await;

    let alive = stack.alive();
    stack.stop().await;
    let service_log = stack.log_path.display().to_string();
    if args.keep_database {
        eprintln!("==> keeping the database {}", stack.db.url);
        let Stack { db, .. } = stack;
        std::mem::forget(db);
    }
    let results = match outcome {
        Ok(results) => results,
        Err(err) => {
            let log = std::fs::read_to_string(&service_log).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(20).collect();
            eprintln!(
                "==> the bench failed: {err:#}\n==> service log tail ({}):\n{}",
                service_log,
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
            return Err(err);
        }
    };
    let summary: Vec<Value> = results
        .iter()
        .map(|r| {
            let mut s = json!({ "name": r["name"], "pass": r["pass"] });
            for key in [
                "ratio",
                "ratios",
                "peak_memory_growth_mib",
                "error",
                "target",
            ] {
                if let Some(v) = r.get(key) {
                    s[key] = v.clone();
                }
            }
            s
        })
        .collect();
    let all_pass = results.iter().all(|r| r["pass"] == json!(true));
    emit(&json!({
        "name": "summary",
        "all_pass": all_pass,
        "results": summary,
        "service_alive_at_end": alive,
        "portal_bin": config.portal_bin.display().to_string(),
        "what_if_sql": args.what_if_sql,
        "seconds": stats::secs(started.elapsed()),
        "environment": environment,
        "service_log": service_log,
    }));
    eprintln!(
        "==> {}",
        if all_pass {
            "every target holds".to_owned()
        } else {
            let missed: Vec<String> = results
                .iter()
                .filter(|r| r["pass"] != json!(true))
                .map(|r| r["name"].as_str().unwrap_or("?").to_owned())
                .collect();
            format!("targets missed: {}", missed.join(", "))
        }
    );
    Ok(())
}
