//! `reseller-bench`: the benchmarks of issues #3 and #10, each against its reference
//! measured in the same run, printed as JSON (one object per line on stdout; progress on
//! stderr).
//!
//! - `ingest`: N devices through `UploadDevices` vs `COPY` of the same rows into a table
//!   shaped and indexed like `device.registrations`; then `views_catch_up`: from the
//!   upload's answer until the reseller's list, the customer portal and the MSP portal
//!   show all N, vs the upload's own duration ([`catchup`]);
//! - `deletion_propagation`: single-device deletions at a steady rate until gone from the
//!   three portals and `complete`, vs a JetStream publish → durable consumer → ack and vs
//!   the durable-hop floor (outbox → stream → inbox, every PostgreSQL write durable);
//! - `export`: `ExportCustomerCsv` of the N devices vs `COPY (...) TO STDOUT (FORMAT csv)`,
//!   and the service's peak memory meanwhile;
//! - `export_cold` (`--only cold-export`): the first `ExportCustomerCsv` of N devices
//!   nobody has read since they were written, vs the first `COPY TO` of N twin devices
//!   ([`cold_export`]);
//! - `throughput`: a sustained mixed load; events applied per second, each replica's
//!   share, and that nothing was applied twice;
//! - `lookup` (`--only lookup`): `FindDevices` of 1,000 identifiers among
//!   `--lookup-devices` devices seeded into the projection, vs the same statement as
//!   bare SQL ([`lookup`]);
//! - `list_at_scale` (`--only list`): `ListCustomers` (first page, a deep page, a search)
//!   over `--list-customers` customers and `--list-devices` devices, and `ListActivity`
//!   (first page, one customer's) over `--activity-entries` entries, all seeded into the
//!   projection, each vs its statements as bare SQL ([`list_scale`]);
//! - `telemetry_overhead` (`--telemetry-rounds N`): the ingest and deletion benchmarks
//!   with metrics and tracing on and off, alternately in one run, each side's medians
//!   compared; traces go to an OTLP receiver the bench hosts ([`telemetry`]).
//!
//! It starts its own stack (`--shape`): `single`, a fresh database on `DATABASE_URL`'s
//! server, a private `nats-server` with JetStream, and `reseller-portal serve` as a
//! subprocess; or `cluster`, every service as its own processes in replicas on a NATS
//! cluster and a private PostgreSQL (`reseller_tests::cluster`). A missed target is a
//! result, not a failure: the exit status is 0 unless the bench itself fails.

mod catchup;
mod clients;
mod cold_export;
mod cpu;
mod deletion;
mod durable_floor;
mod export;
mod hops;
mod ingest;
mod list_scale;
mod lookup;
mod otlp;
mod scrape;
mod setup;
mod stack;
mod stats;
mod telemetry;
mod throughput;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clap::Parser;
use reseller_tests::cluster::ClusterOptions;
use serde_json::{Value, json};

use crate::stack::{Shape, ShapeConfig, Stack, StackConfig};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Bench {
    Ingest,
    Deletion,
    Export,
    /// The first export of freshly written rows (`export_cold`).
    ColdExport,
    Throughput,
    Lookup,
    List,
}

/// Benchmarks the reseller portal against its references; prints JSON.
///
/// Shapes: `--shape single` (default) runs `reseller-portal serve`, all four services in
/// one process; `--shape cluster` runs each service as its own processes (`--replicas`
/// of each), a NATS cluster (`--nats-nodes`, `--stream-replicas`) and a private
/// PostgreSQL, through `reseller_tests::cluster` (it needs the four service binaries:
/// `RESELLER_SERVICE_BIN_DIR`, default the directory of this program). `ingest` and
/// `export` run on the single shape only; `deletion` and `throughput` on both.
#[derive(Debug, Clone, Parser)]
#[command(version)]
struct Args {
    /// The stack to run on.
    #[arg(long, value_enum, default_value = "single")]
    shape: Shape,

    /// The benchmarks to run (default: ingest,deletion,export on the single shape,
    /// deletion,throughput on the cluster shape, ingest,deletion with
    /// `--telemetry-rounds`). Export needs the ingest's devices: without `ingest` they
    /// are uploaded unmeasured. Ingest and the exports: single shape only.
    #[arg(long, value_enum, value_delimiter = ',')]
    only: Option<Vec<Bench>>,

    /// Cluster shape: processes per service. A list (`1,2`) runs the benchmarks on a
    /// fresh cluster of each size in turn (e.g. the throughput with one and with two
    /// replicas of each service).
    #[arg(long, value_delimiter = ',', default_value = "2")]
    replicas: Vec<usize>,

    /// Cluster shape: NATS servers.
    #[arg(long, default_value_t = 3)]
    nats_nodes: usize,

    /// Cluster shape: `NATS_STREAM_REPLICAS` of the services, and the replicas of the
    /// floors' streams.
    #[arg(long, default_value_t = 3)]
    stream_replicas: usize,

    /// Devices in the ingest upload and the exported customer.
    #[arg(long, env = "BENCH_DEVICES", default_value_t = 1_000_000)]
    devices: usize,

    /// Cold export: rounds, each uploading `--devices` devices to a fresh customer and
    /// their twin to another, then timing the first download of each (the service first
    /// in even rounds, the reference in odd ones).
    #[arg(long, default_value_t = 2)]
    cold_export_rounds: usize,

    /// Cold export: `CHECKPOINT` after the uploads and between the two first downloads
    /// (false: time them while the uploads' pages are still being written back, as right
    /// after an ingest; then the side that goes first also meets that write-back).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    cold_export_checkpoint: bool,

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

    /// Lookup: devices seeded into reporting-service's projection (the scale is
    /// 10,000,000).
    #[arg(long, default_value_t = 10_000_000)]
    lookup_devices: usize,

    /// Lookup: measured lookups of each side.
    #[arg(long, default_value_t = 200)]
    lookup_rounds: usize,

    /// List at scale: customers seeded into the reseller's list (the scale).
    #[arg(long, default_value_t = 100_000)]
    list_customers: usize,

    /// List at scale: devices seeded, spread over those customers (the scale is
    /// 10,000,000; seeding them takes minutes).
    #[arg(long, default_value_t = 10_000_000)]
    list_devices: usize,

    /// List at scale: activity log entries seeded.
    #[arg(long, default_value_t = 1_000_000)]
    activity_entries: usize,

    /// List at scale: measured calls of each side, per case.
    #[arg(long, default_value_t = 200)]
    list_rounds: usize,

    /// List at scale: the search (a substring of a few seeded company names).
    #[arg(long, default_value = "Company 00123")]
    list_query: String,

    /// Throughput: seconds of load.
    #[arg(long, env = "BENCH_THROUGHPUT_SECONDS", default_value_t = 30.0)]
    throughput_seconds: f64,

    /// Throughput: concurrent upload loops.
    #[arg(long, default_value_t = 2)]
    throughput_uploaders: usize,

    /// Throughput: devices per upload.
    #[arg(long, default_value_t = 200)]
    throughput_upload_devices: usize,

    /// Throughput: concurrent deletion loops.
    #[arg(long, default_value_t = 2)]
    throughput_deleters: usize,

    /// Throughput: devices per deletion.
    #[arg(long, default_value_t = 5)]
    throughput_delete_devices: usize,

    /// Throughput: devices per MSP move (one move loop).
    #[arg(long, default_value_t = 20)]
    throughput_move_devices: usize,

    /// Throughput: milliseconds between two customers onboarded and linked to the MSP.
    #[arg(long, default_value_t = 2_000)]
    throughput_onboard_interval_ms: u64,

    /// The `reseller-portal` binary (default: next to this one).
    #[arg(long, env = "BENCH_PORTAL_BIN")]
    portal_bin: Option<PathBuf>,

    /// `RUST_LOG` of the service (of every process on the cluster shape).
    #[arg(long, default_value = "warn")]
    service_log_level: String,

    /// Where the service's log goes (default: a file in the temp directory); on the
    /// cluster shape a directory, into which every process's log is copied at the end.
    #[arg(long)]
    service_log: Option<PathBuf>,

    /// Extra settings for the service, `KEY=VALUE` (repeatable; single shape only).
    #[arg(long = "service-env", value_parser = parse_key_value)]
    service_env: Vec<(String, String)>,

    /// PostgreSQL settings for the bench database, `KEY=VALUE` (repeatable; single shape
    /// only), e.g. `log_min_duration_statement=100` to profile.
    #[arg(long = "database-setting", value_parser = parse_key_value)]
    database_settings: Vec<(String, String)>,

    /// Keep the bench database (print its URL) instead of dropping it, to inspect it
    /// (single shape only: the cluster's PostgreSQL goes with the cluster).
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

    /// What metrics and tracing cost: run the ingest and deletion benchmarks (or those of
    /// `--only`) N times with telemetry on and N times off, alternately (on, off, on,
    /// off, ...), each on a fresh stack, and compare the medians (single shape). On:
    /// `reseller-portal` gets `METRICS_ADDR` (scraped every `--scrape-interval-ms`) and
    /// `OTEL_EXPORTER_OTLP_ENDPOINT` (an OTLP receiver in this process, gRPC and HTTP);
    /// off: neither. 0: not this mode.
    #[arg(long, default_value_t = 0)]
    telemetry_rounds: usize,

    /// With `--telemetry-rounds`: milliseconds between two scrapes of `/metrics` during
    /// a run with telemetry on (Prometheus scrapes every 15-60 s; 1,000 is the
    /// pessimistic case).
    #[arg(long, default_value_t = 1_000)]
    scrape_interval_ms: u64,

    /// With `--telemetry-rounds`: what the runs with telemetry on turn on, to tell the
    /// parts' costs apart (`metrics`: `METRICS_ADDR` and the scrapes; `traces`: the
    /// OTLP export). The figure is both, the default.
    #[arg(long, value_delimiter = ',', default_value = "metrics,traces")]
    telemetry_on: Vec<telemetry::Part>,

    /// Variables removed from the service's environment (set by the telemetry mode).
    #[arg(skip)]
    env_remove: Vec<String>,

    /// Run `CHECKPOINT` before the deletion benchmark, so that the write-back of what
    /// the ingest and the export phases wrote (gigabytes, on the same disk as the WAL)
    /// happens before it rather than stalling its commits.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    checkpoint_before_deletion: bool,
}

impl Args {
    fn benches(&self) -> Vec<Bench> {
        self.only.clone().unwrap_or_else(|| match self.shape {
            Shape::Single if self.telemetry_rounds > 0 => vec![Bench::Ingest, Bench::Deletion],
            Shape::Single => vec![Bench::Ingest, Bench::Deletion, Bench::Export],
            Shape::Cluster => vec![Bench::Deletion, Bench::Throughput],
        })
    }

    fn runs(&self, bench_dir: &Path) -> Vec<ShapeConfig> {
        match self.shape {
            Shape::Single => vec![ShapeConfig::Single {
                portal_bin: self
                    .portal_bin
                    .clone()
                    .unwrap_or_else(|| bench_dir.join("reseller-portal")),
            }],
            Shape::Cluster => self
                .replicas
                .iter()
                .map(|&replicas| {
                    ShapeConfig::Cluster(ClusterOptions {
                        replicas,
                        nats_nodes: self.nats_nodes,
                        stream_replicas: self.stream_replicas,
                    })
                })
                .collect(),
        }
    }

    /// Where run `run` of `runs` logs.
    fn log_path(&self, shape: &ShapeConfig, runs: usize) -> PathBuf {
        let pid = std::process::id();
        match shape {
            ShapeConfig::Single { .. } => self
                .service_log
                .clone()
                .unwrap_or_else(|| std::env::temp_dir().join(format!("reseller-bench-{pid}.log"))),
            ShapeConfig::Cluster(o) => {
                let base = self.service_log.clone().unwrap_or_else(|| {
                    std::env::temp_dir().join(format!("reseller-bench-{pid}-cluster"))
                });
                if runs > 1 || self.service_log.is_none() {
                    base.join(format!("replicas-{}", o.replicas))
                } else {
                    base
                }
            }
        }
    }
}

fn parse_key_value(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("{s:?} is not KEY=VALUE"))
}

fn emit(value: &Value) {
    println!("{value}");
}

/// Prints a result with the shape it ran on, as soon as it is there.
fn emit_result(mut result: Value, shape: &Value) -> Value {
    result["shape"] = shape.clone();
    emit(&result);
    result
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
        "fsync": setting("fsync").await,
        "load_average": std::fs::read_to_string("/proc/loadavg").ok().map(|s| s.trim().to_owned()),
    })
}

/// The cluster harness reads `RESELLER_SERVICE_BIN_DIR` (where the service binaries are)
/// and `CLUSTER_RUST_LOG` (their `RUST_LOG`) from this process's environment, which safe
/// Rust cannot change at run time: when they are not what this run needs, the bench runs
/// itself again with them set, and exits with that run's status.
fn rerun_with_cluster_environment(args: &Args, bench_dir: &Path) -> anyhow::Result<Option<i32>> {
    if args.shape != Shape::Cluster {
        return Ok(None);
    }
    let bin_dir = std::env::var_os("RESELLER_SERVICE_BIN_DIR");
    let rust_log = std::env::var("CLUSTER_RUST_LOG").ok();
    if bin_dir.is_some() && rust_log.as_deref() == Some(args.service_log_level.as_str()) {
        return Ok(None);
    }
    anyhow::ensure!(
        std::env::var_os("RESELLER_BENCH_RERUN").is_none(),
        "the bench ran itself again but the cluster's environment is still not set"
    );
    let status = std::process::Command::new(std::env::current_exe()?)
        .args(std::env::args_os().skip(1))
        .env(
            "RESELLER_SERVICE_BIN_DIR",
            bin_dir.unwrap_or_else(|| bench_dir.as_os_str().to_owned()),
        )
        .env("CLUSTER_RUST_LOG", &args.service_log_level)
        .env("RESELLER_BENCH_RERUN", "1")
        .status()?;
    Ok(Some(status.code().unwrap_or(1)))
}

/// The services' events stream as JetStream has it: its replicas and where they are.
async fn events_stream(js: &async_nats::jetstream::Context) -> Value {
    let info = async {
        let mut stream = js
            .get_stream(reseller_kit::subjects::EVENTS_STREAM)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        anyhow::Ok(stream.info().await?.clone())
    }
    .await;
    match info {
        Ok(info) => json!({
            "name": info.config.name,
            "replicas": info.config.num_replicas,
            "leader": info.cluster.as_ref().and_then(|c| c.leader.clone()),
            "messages": info.state.messages,
        }),
        Err(err) => json!({ "error": format!("{err:#}") }),
    }
}

/// What one stack's run produced.
struct Run {
    results: Vec<Value>,
    summary: Value,
}

/// Starts the stack of `shape`, runs the chosen benchmarks on it, stops it. `label`'s
/// fields (an object, or null) are added to every result's `shape`.
async fn run_on(
    args: &Args,
    shape: ShapeConfig,
    log_path: PathBuf,
    label: &Value,
) -> anyhow::Result<Run> {
    let benches = args.benches();
    let run_ingest = benches.contains(&Bench::Ingest);
    let run_deletion = benches.contains(&Bench::Deletion);
    let run_export = benches.contains(&Bench::Export);
    let run_cold_export = benches.contains(&Bench::ColdExport);
    let run_throughput = benches.contains(&Bench::Throughput);
    let run_lookup = benches.contains(&Bench::Lookup);
    let run_list = benches.contains(&Bench::List);
    let mut shape_json = shape.describe();
    if let Some(label) = label.as_object() {
        for (key, value) in label {
            shape_json[key] = value.clone();
        }
    }
    let config = StackConfig {
        shape: shape.clone(),
        rust_log: args.service_log_level.clone(),
        log_path,
        env: args.service_env.clone(),
        env_remove: args.env_remove.clone(),
        database_settings: args.database_settings.clone(),
    };
    let deletion_config = deletion::DeletionConfig {
        rate: args.delete_rate,
        seconds: args.delete_seconds,
        warmup_seconds: args.delete_warmup_seconds,
        floor_seconds: args.floor_seconds.unwrap_or(args.delete_seconds),
        poll_interval: Duration::from_micros(args.poll_interval_us),
        timeout: Duration::from_millis(args.propagation_timeout_ms),
        stream_replicas: shape.stream_replicas(),
    };
    let throughput_config = throughput::ThroughputConfig {
        seconds: args.throughput_seconds,
        uploaders: args.throughput_uploaders,
        upload_devices: args.throughput_upload_devices,
        deleters: args.throughput_deleters,
        delete_devices: args.throughput_delete_devices,
        move_devices: args.throughput_move_devices,
        onboard_interval: Duration::from_millis(args.throughput_onboard_interval_ms.max(1)),
        settle_timeout: Duration::from_secs(600),
    };

    let started = Instant::now();
    eprintln!("==> starting the stack: {shape_json}");
    let mut stack = Stack::start(&config).await?;
    eprintln!("    {}", stack.describe());
    let js = async_nats::jetstream::new(stack.nats_client().await?);
    let environment = environment(&stack, args.delete_rate).await;

    let outcome = async {
        setup::accounts(&stack).await?;
        if run_deletion {
            deletion::prepare(&stack, &deletion_config).await?;
        }
        if run_throughput {
            throughput::prepare(&stack).await?;
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
            let (result, catch_up) = match ingest::run(&stack, &js, &ingest_config).await {
                Ok((result, catch_up)) => (result, Some(catch_up)),
                Err(e) => (failed("ingest", &e), None),
            };
            results.push(emit_result(result, &shape_json));
            if let Some(catch_up) = catch_up {
                let catch_up = catch_up.unwrap_or_else(|e| failed("views_catch_up", &e));
                results.push(emit_result(catch_up, &shape_json));
            }
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

        if run_cold_export {
            let cold_config = cold_export::ColdExportConfig {
                devices: args.devices,
                rounds: args.cold_export_rounds.max(1),
                batch: args.upload_batch,
                imei2: args.imei2,
                checkpoint: args.cold_export_checkpoint,
                target_ratio: 0.7,
                settle_timeout: Duration::from_secs(1800),
            };
            let result = cold_export::run(&stack, &js, &cold_config)
                .await
                .unwrap_or_else(|e| failed("export_cold", &e));
            results.push(emit_result(result, &shape_json));
        }

        if run_export {
            let export_config = export::ExportConfig {
                target_ratio: 0.7,
                memory_budget_mib: 64.0,
            };
            let result = export::run(&stack, &export_config, args.devices)
                .await
                .unwrap_or_else(|e| failed("export", &e));
            results.push(emit_result(result, &shape_json));
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
            results.push(emit_result(result, &shape_json));
        }

        if run_throughput {
            let result = throughput::run(&stack, &js, &throughput_config)
                .await
                .unwrap_or_else(|e| failed("throughput", &e));
            results.push(emit_result(result, &shape_json));
        }

        if run_lookup {
            let lookup_config = lookup::LookupConfig {
                devices: args.lookup_devices,
                rounds: args.lookup_rounds,
                batch: 1000,
                target_ratio: 2.0,
            };
            let result = lookup::run(&stack, &lookup_config)
                .await
                .unwrap_or_else(|e| failed("lookup", &e));
            results.push(emit_result(result, &shape_json));
        }

        if run_list {
            let list_config = list_scale::ListConfig {
                customers: args.list_customers,
                devices: args.list_devices,
                activity_entries: args.activity_entries,
                rounds: args.list_rounds,
                page_size: 50,
                deep_rows: 1000,
                query: args.list_query.clone(),
                target_ratio: 2.0,
                search_target: Duration::from_millis(10),
            };
            let result = list_scale::run(&stack, &list_config)
                .await
                .unwrap_or_else(|e| failed("list_at_scale", &e));
            results.push(emit_result(result, &shape_json));
        }
        anyhow::Ok(results)
    }
    .await;

    let events_stream = events_stream(&js).await;
    let exited = stack.exited().await;
    stack.stop().await;
    let service_log = stack.log_location().display().to_string();
    if args.keep_database {
        match stack.keep_database() {
            Some(url) => eprintln!("==> keeping the database {url}"),
            None => eprintln!("==> --keep-database: the cluster's PostgreSQL goes with it"),
        }
    }
    let results = match outcome {
        Ok(results) => results,
        Err(err) => {
            eprintln!("==> the bench failed: {err:#}\n==> service logs: {service_log}");
            if let Ok(text) = std::fs::read_to_string(&service_log) {
                let tail: Vec<&str> = text.lines().rev().take(20).collect();
                eprintln!(
                    "==> its last lines:\n{}",
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                );
            }
            return Err(err);
        }
    };
    Ok(Run {
        results,
        summary: json!({
            "shape": shape_json,
            "events_stream": events_stream,
            "processes_exited_on_their_own": exited,
            "service_log": service_log,
            "seconds": stats::secs(started.elapsed()),
            "environment": environment,
        }),
    })
}

/// The throughput with each replica count, side by side, when more than one ran.
fn throughput_scaling(results: &[Value]) -> Option<Value> {
    let runs: Vec<(Value, Value)> = results
        .iter()
        .filter(|r| r["name"] == "throughput" && r["pass"].is_boolean())
        .filter_map(|r| {
            Some((
                r["shape"]["replicas"].clone(),
                r.get("service")?.get("events_applied_per_second")?.clone(),
            ))
        })
        .collect();
    if runs.len() < 2 {
        return None;
    }
    let base = runs[0].1.as_f64().filter(|b| *b > 0.0)?;
    Some(json!(
        runs.iter()
            .map(|(replicas, eps)| json!({
                "replicas": replicas,
                "events_applied_per_second": eps,
                "over_the_first": eps.as_f64().map(|e| stats::round3(e / base)),
            }))
            .collect::<Vec<_>>()
    ))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let bench_dir = std::env::current_exe()?
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    if let Some(code) = rerun_with_cluster_environment(&args, &bench_dir)? {
        std::process::exit(code);
    }
    let benches = args.benches();
    if args.shape == Shape::Cluster
        && (benches.contains(&Bench::Ingest)
            || benches.contains(&Bench::Export)
            || benches.contains(&Bench::ColdExport))
    {
        anyhow::bail!(
            "ingest and the exports run on the single shape only: use --only deletion,throughput with --shape cluster"
        );
    }

    let started = Instant::now();
    let mut results = Vec::new();
    let mut run_summaries = Vec::new();
    if args.telemetry_rounds > 0 {
        if benches
            .iter()
            .any(|b| !matches!(b, Bench::Ingest | Bench::Deletion))
        {
            anyhow::bail!("--telemetry-rounds runs the ingest and deletion benchmarks only");
        }
        if args
            .service_env
            .iter()
            .any(|(key, _)| key == "METRICS_ADDR" || key.starts_with("OTEL_EXPORTER_OTLP"))
        {
            anyhow::bail!(
                "--telemetry-rounds sets METRICS_ADDR and OTEL_EXPORTER_OTLP_ENDPOINT itself"
            );
        }
        (results, run_summaries) = telemetry::run(
            &args,
            &bench_dir,
            args.telemetry_rounds,
            &args.telemetry_on,
            Duration::from_millis(args.scrape_interval_ms.max(1)),
            telemetry::TARGET_PERCENT,
        )
        .await?;
    } else {
        let runs = args.runs(&bench_dir);
        for shape in &runs {
            let log_path = args.log_path(shape, runs.len());
            let run = run_on(&args, shape.clone(), log_path, &Value::Null).await?;
            results.extend(run.results);
            run_summaries.push(run.summary);
        }
    }

    let summary: Vec<Value> = results
        .iter()
        .map(|r| {
            let mut s =
                json!({ "name": r["name"], "shape": r["shape"]["name"], "pass": r["pass"] });
            if r["shape"]["name"] == "cluster" {
                s["replicas"] = r["shape"]["replicas"].clone();
            }
            for key in ["telemetry", "round"] {
                if let Some(v) = r["shape"].get(key) {
                    s[key] = v.clone();
                }
            }
            for key in [
                "ratio",
                "ratios",
                "p99_ratios",
                "search_p99_ms",
                "overhead_percent",
                "traces_exported",
                "metrics_scraped",
                "pass_durable",
                "peak_memory_growth_mib",
                "error",
                "target",
                "durable_target",
            ] {
                if let Some(v) = r.get(key) {
                    s[key] = v.clone();
                }
            }
            if let Some(v) = r
                .get("service")
                .and_then(|s| s.get("events_applied_per_second"))
            {
                s["events_applied_per_second"] = v.clone();
            }
            s
        })
        .collect();
    // Issue #10's durable-floor targets count too where a result has them.
    let passed =
        |r: &Value| r["pass"] == json!(true) && r.get("pass_durable") != Some(&json!(false));
    let all_pass = results.iter().all(passed);
    emit(&json!({
        "name": "summary",
        "all_pass": all_pass,
        "results": summary,
        "throughput_by_replicas": throughput_scaling(&results),
        "runs": run_summaries,
        "what_if_sql": args.what_if_sql,
        "seconds": stats::secs(started.elapsed()),
    }));
    eprintln!(
        "==> {}",
        if all_pass {
            "every target holds".to_owned()
        } else {
            let missed: Vec<String> = results
                .iter()
                .filter(|r| !passed(r))
                .map(|r| r["name"].as_str().unwrap_or("?").to_owned())
                .collect();
            format!("targets missed: {}", missed.join(", "))
        }
    );
    Ok(())
}
