//! `--telemetry-rounds N`: what metrics and tracing cost. The ingest and deletion
//! benchmarks run on the single shape 2N times in one run, alternately with telemetry on
//! and off (on, off, on, off, …), each time on a fresh stack (database, `nats-server`,
//! `reseller-portal serve`), and the medians of each side are compared.
//!
//! - **On**: `reseller-portal` gets `METRICS_ADDR=127.0.0.1:<free port>`, which the bench
//!   scrapes (`GET /metrics`) every `--scrape-interval-ms` for the whole run as a
//!   Prometheus server would, and `OTEL_EXPORTER_OTLP_ENDPOINT` = the bench's own OTLP
//!   receiver ([`crate::otlp`]), which counts what really arrives.
//! - **Off**: neither is set (and both are removed from what the service inherits).
//!
//! `--telemetry-on metrics` or `--telemetry-on traces` turns on only that part in the on
//! runs, to tell the parts' costs apart; such a run never passes (the figure is
//! both).
//!
//! The result `telemetry_overhead` has each side's medians, the overhead in percent, the
//! spread among each side's own runs (the noise an overhead must exceed to mean
//! anything), the receiver's counts per side and the scrapes; `pass` needs every gated
//! overhead under the target, spans and traces received during the on runs, and metrics
//! scraped.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Value, json};

use crate::otlp::{Counts, Receiver};
use crate::scrape::Scraper;
use crate::stack::ShapeConfig;
use crate::stats::round3;
use crate::{Args, Run};

/// What a run with telemetry on turns on (`--telemetry-on`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Part {
    /// `METRICS_ADDR`, scraped every `--scrape-interval-ms`.
    Metrics,
    /// `OTEL_EXPORTER_OTLP_ENDPOINT`, the bench's own receiver.
    Traces,
}

/// The overhead target of issue #11, in percent.
pub const TARGET_PERCENT: f64 = 3.0;

/// The settings a run with telemetry on sets and a run with it off removes (the last one
/// would override the endpoint for traces alone).
const TELEMETRY_VARIABLES: [&str; 3] = [
    "METRICS_ADDR",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
];

/// One figure compared between the sides.
struct Figure {
    /// Its key in the result.
    key: &'static str,
    /// The benchmark result it comes from (`name`).
    result: &'static str,
    /// Reads it from that result.
    read: fn(&Value) -> Option<f64>,
    /// A bigger value is better (the ingest ratio); otherwise smaller is (times).
    higher_is_better: bool,
    /// Counts for `pass` (the figures); the others explain them.
    gated: bool,
}

fn at(value: &Value, path: &[&str]) -> Option<f64> {
    path.iter()
        .try_fold(value, |v, key| v.get(*key))
        .and_then(Value::as_f64)
}

const FIGURES: &[Figure] = &[
    Figure {
        key: "ingest_ratio",
        result: "ingest",
        read: |r| at(r, &["ratio"]),
        higher_is_better: true,
        gated: true,
    },
    Figure {
        key: "ingest_service_seconds",
        result: "ingest",
        read: |r| at(r, &["service", "seconds"]),
        higher_is_better: false,
        gated: false,
    },
    Figure {
        key: "ingest_reference_copy_seconds",
        result: "ingest",
        read: |r| at(r, &["reference", "seconds"]),
        higher_is_better: false,
        gated: false,
    },
    Figure {
        key: "ingest_projections_settled_seconds_after_response",
        result: "ingest",
        read: |r| at(r, &["info", "projections_settled_seconds_after_response"]),
        higher_is_better: false,
        gated: false,
    },
    Figure {
        key: "deletion_absent_from_all_views_p50_ms",
        result: "deletion_propagation",
        read: |r| at(r, &["service", "absent_from_all_views", "p50_ms"]),
        higher_is_better: false,
        gated: true,
    },
    Figure {
        key: "deletion_absent_from_all_views_p99_ms",
        result: "deletion_propagation",
        read: |r| at(r, &["service", "absent_from_all_views", "p99_ms"]),
        higher_is_better: false,
        gated: true,
    },
    Figure {
        key: "deletion_complete_p50_ms",
        result: "deletion_propagation",
        read: |r| at(r, &["service", "complete", "p50_ms"]),
        higher_is_better: false,
        gated: true,
    },
    Figure {
        key: "deletion_complete_p99_ms",
        result: "deletion_propagation",
        read: |r| at(r, &["service", "complete", "p99_ms"]),
        higher_is_better: false,
        gated: true,
    },
    Figure {
        key: "deletion_delete_rpc_p50_ms",
        result: "deletion_propagation",
        read: |r| at(r, &["service", "delete_rpc", "p50_ms"]),
        higher_is_better: false,
        gated: false,
    },
    Figure {
        key: "deletion_durable_floor_p50_ms",
        result: "deletion_propagation",
        read: |r| at(r, &["durable_floor", "latency", "p50_ms"]),
        higher_is_better: false,
        gated: false,
    },
    Figure {
        key: "deletion_portal_cpu_ms_per_deletion",
        result: "deletion_propagation",
        read: |r| {
            let cpu_s = at(
                r,
                &[
                    "service",
                    "cpu_during_measurement",
                    "by_program_cpu_s",
                    crate::stack::PORTAL_APPLICATION_NAME,
                ],
            )?;
            let deletions = at(r, &["deletions"]).filter(|n| *n > 0.0)?;
            Some(1000.0 * cpu_s / deletions)
        },
        higher_is_better: false,
        gated: false,
    },
    Figure {
        key: "deletion_machine_cpu_ms_per_deletion",
        result: "deletion_propagation",
        read: |r| {
            at(
                r,
                &["service", "cpu_during_measurement", "cpu_ms_per_event"],
            )
        },
        higher_is_better: false,
        gated: false,
    },
];

/// The median of `values` (the mean of the middle two for an even count).
fn median(values: &[f64]) -> Option<f64> {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(v[n / 2]),
        _ => Some((v[n / 2 - 1] + v[n / 2]) / 2.0),
    }
}

/// The spread of `values` in percent of their median: (max − min) / median; none for
/// fewer than two values.
fn spread_percent(values: &[f64]) -> Option<f64> {
    if values.len() < 2 {
        return None;
    }
    let m = median(values).filter(|m| *m != 0.0)?;
    let max = values.iter().copied().fold(f64::MIN, f64::max);
    let min = values.iter().copied().fold(f64::MAX, f64::min);
    Some(round3(100.0 * (max - min) / m))
}

/// How much worse with telemetry on, in percent: on / off − 1 for times, off / on − 1 for
/// a higher-is-better figure.
fn overhead_percent(on: f64, off: f64, higher_is_better: bool) -> Option<f64> {
    let (worse, better) = if higher_is_better {
        (off, on)
    } else {
        (on, off)
    };
    (better != 0.0).then(|| round3(100.0 * (worse / better - 1.0)))
}

/// One of the 2N runs.
struct Side {
    round: usize,
    on: bool,
    results: Vec<Value>,
    error: Option<String>,
    received: Counts,
    scrapes: Option<Value>,
    summary: Option<Value>,
}

impl Side {
    fn name(&self) -> &'static str {
        if self.on { "on" } else { "off" }
    }

    fn figure(&self, figure: &Figure) -> Option<f64> {
        self.results
            .iter()
            .find(|r| r["name"] == figure.result && r.get("error").is_none())
            .and_then(figure.read)
    }
}

/// Where run `round`/`side` logs: next to `--service-log`, or in the temp directory.
fn log_path(args: &Args, round: usize, side: &str) -> PathBuf {
    let base = args.service_log.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!("reseller-bench-{}.log", std::process::id()))
    });
    let stem = base.with_extension("");
    PathBuf::from(format!("{}-r{round}-{side}.log", stem.display()))
}

/// Runs the ingest and deletion benchmarks `rounds` times with telemetry on and off,
/// alternately; returns every benchmark result (each labelled `shape.telemetry` and
/// `shape.round`), then the `telemetry_overhead` result, and every run's summary.
///
/// # Errors
/// When the receiver cannot start; a run that fails is recorded in the result.
pub async fn run(
    args: &Args,
    bench_dir: &Path,
    rounds: usize,
    parts: &[Part],
    scrape_interval: Duration,
    target_percent: f64,
) -> anyhow::Result<(Vec<Value>, Vec<Value>)> {
    anyhow::ensure!(
        !parts.is_empty(),
        "--telemetry-on needs metrics, traces or both"
    );
    let metrics = parts.contains(&Part::Metrics);
    let traces = parts.contains(&Part::Traces);
    let receiver = Receiver::start().await?;
    eprintln!(
        "==> telemetry overhead: {rounds} rounds (on, off), OTLP receiver on {} (gRPC and HTTP), /metrics scraped every {} ms during each run with telemetry on",
        receiver.endpoint(),
        scrape_interval.as_millis()
    );
    let shape = args
        .runs(bench_dir)
        .into_iter()
        .next()
        .ok_or_else(|| anyhow::anyhow!("no shape to run on"))?;
    anyhow::ensure!(
        matches!(shape, ShapeConfig::Single { .. }),
        "--telemetry-rounds runs on the single shape only"
    );

    let mut sides = Vec::new();
    for round in 1..=rounds {
        for on in [true, false] {
            let side_name = if on { "on" } else { "off" };
            let mut run_args = args.clone();
            run_args.env_remove = TELEMETRY_VARIABLES.map(str::to_owned).to_vec();
            let mut scraper = None;
            if on && metrics {
                let metrics_addr: SocketAddr =
                    format!("127.0.0.1:{}", crate::stack::free_port()?).parse()?;
                run_args
                    .service_env
                    .push(("METRICS_ADDR".into(), metrics_addr.to_string()));
                scraper = Some(Scraper::start(metrics_addr, scrape_interval));
            }
            if on && traces {
                run_args
                    .service_env
                    .push(("OTEL_EXPORTER_OTLP_ENDPOINT".into(), receiver.endpoint()));
            }
            eprintln!("==> telemetry overhead: round {round}/{rounds}, telemetry {side_name}");
            let before = receiver.counts();
            let label = json!({ "telemetry": side_name, "round": round });
            let outcome = crate::run_on(
                &run_args,
                shape.clone(),
                log_path(args, round, side_name),
                &label,
            )
            .await;
            // The service has exited (and flushed what it had) when run_on returns.
            let received = receiver.counts().since(&before);
            let scrapes = match scraper {
                Some(s) => Some(s.finish().await),
                None => None,
            };
            eprintln!(
                "    received {} spans in {} traces ({} gRPC, {} HTTP export requests){}",
                received.spans,
                received.traces,
                received.grpc_requests,
                received.http_requests,
                scrapes
                    .as_ref()
                    .map(|s| format!(
                        "; scrapes answered: {}, failed: {}",
                        s["scrapes_ok"], s["scrapes_failed"]
                    ))
                    .unwrap_or_default()
            );
            let (results, summary, error) = match outcome {
                Ok(Run { results, summary }) => (results, Some(summary), None),
                Err(err) => (Vec::new(), None, Some(format!("{err:#}"))),
            };
            sides.push(Side {
                round,
                on,
                results,
                error,
                received,
                scrapes,
                summary,
            });
        }
    }

    let overhead = compare(&sides, &receiver, parts, scrape_interval, target_percent);
    crate::emit(&overhead);
    let mut results: Vec<Value> = sides.iter().flat_map(|s| s.results.clone()).collect();
    results.push(overhead);
    let summaries = sides
        .iter()
        .map(|s| {
            json!({
                "round": s.round,
                "telemetry": s.name(),
                "run": s.summary,
                "error": s.error,
            })
        })
        .collect();
    Ok((results, summaries))
}

/// The `telemetry_overhead` result of `sides`.
fn compare(
    sides: &[Side],
    receiver: &Receiver,
    parts: &[Part],
    scrape_interval: Duration,
    target_percent: f64,
) -> Value {
    let (metrics, traces) = (
        parts.contains(&Part::Metrics),
        parts.contains(&Part::Traces),
    );
    let of = |on: bool| sides.iter().filter(move |s| s.on == on);
    let mut per_run = BTreeMap::<&str, Value>::new();
    let mut medians = [serde_json::Map::new(), serde_json::Map::new()];
    let mut spreads = [serde_json::Map::new(), serde_json::Map::new()];
    let mut overheads = serde_json::Map::new();
    let mut missed = Vec::new();
    for figure in FIGURES {
        let values = [true, false].map(|on| {
            of(on)
                .map(|s| s.figure(figure))
                .collect::<Vec<Option<f64>>>()
        });
        // A benchmark that did not run (--only) has no figures on either side.
        let ran = sides
            .iter()
            .any(|s| s.results.iter().any(|r| r["name"] == figure.result));
        if !ran {
            continue;
        }
        per_run.insert(figure.key, json!({ "on": values[0], "off": values[1] }));
        let done = values
            .clone()
            .map(|v| v.into_iter().flatten().collect::<Vec<f64>>());
        let m = [median(&done[0]), median(&done[1])];
        for i in 0..2 {
            medians[i].insert(figure.key.into(), json!(m[i].map(round3)));
            spreads[i].insert(figure.key.into(), json!(spread_percent(&done[i])));
        }
        let overhead = match m {
            [Some(on), Some(off)] => overhead_percent(on, off, figure.higher_is_better),
            _ => None,
        };
        overheads.insert(figure.key.into(), json!(overhead));
        if figure.gated && !overhead.is_some_and(|o| o < target_percent) {
            missed.push(match overhead {
                Some(o) => format!("{}: {o}% overhead", figure.key),
                None => format!("{}: not measured on both sides", figure.key),
            });
        }
    }

    let mut during_on = Counts::default();
    let mut during_off = Counts::default();
    for s in sides {
        if s.on {
            during_on.add(&s.received);
        } else {
            during_off.add(&s.received);
        }
    }
    let traces_exported = during_on.spans > 0 && during_on.traces > 0;
    let scrapes: Vec<Value> = of(true)
        .map(|s| json!({ "round": s.round, "scrapes": s.scrapes }))
        .collect();
    let metrics_scraped = of(true).count() > 0
        && of(true).all(|s| {
            s.scrapes
                .as_ref()
                .and_then(|v| v["scrapes_ok"].as_u64())
                .is_some_and(|n| n > 0)
        });
    let failed_runs: Vec<Value> = sides
        .iter()
        .filter_map(|s| {
            s.error
                .as_ref()
                .map(|e| json!({ "round": s.round, "telemetry": s.name(), "error": e }))
        })
        .collect();
    let mut why_not = missed;
    if traces && !traces_exported {
        why_not.push(
            "traces were not exported: the receiver got no span during the runs with telemetry on"
                .into(),
        );
    }
    if metrics && !metrics_scraped {
        why_not.push(
            "metrics were not served: a run with telemetry on answered no /metrics scrape".into(),
        );
    }
    if !failed_runs.is_empty() {
        why_not.push(format!("{} runs failed", failed_runs.len()));
    }
    if !(metrics && traces) {
        why_not.push(
            "only part of the telemetry was on (--telemetry-on): a diagnostic run, not the issue's figure"
                .into(),
        );
    }
    let runs_per_side = sides.iter().filter(|s| s.on).count();

    json!({
        "name": "telemetry_overhead",
        "rounds": runs_per_side,
        "order": sides.iter().map(|s| format!("{}{}", s.name(), s.round)).collect::<Vec<_>>(),
        "what": "the ingest and deletion benchmarks, run alternately with telemetry on and off in the same run (on, off, on, off, ...), each run on a fresh single-shape stack (database, nats-server, reseller-portal serve); medians of each side",
        "telemetry_on": format!(
            "(the parts in telemetry_on_parts) reseller-portal gets METRICS_ADDR=127.0.0.1:<free port>, scraped (GET /metrics) every {} ms during the whole run as a Prometheus server would, and OTEL_EXPORTER_OTLP_ENDPOINT={}, this bench's own OTLP receiver (gRPC TraceService and HTTP POST /v1/traces on one port), which counts the spans that arrive; the receiver and the scraper run in the bench's process, on the same cores",
            scrape_interval.as_millis(),
            receiver.endpoint()
        ),
        "telemetry_on_parts": parts.iter().map(|p| match p {
            Part::Metrics => "metrics",
            Part::Traces => "traces",
        }).collect::<Vec<_>>(),
        "telemetry_off": "neither variable set (both removed from the service's environment)",
        "median_on": medians[0],
        "median_off": medians[1],
        "overhead_percent": overheads,
        "overhead_definition": "how much worse with telemetry on, from the medians: on / off - 1 for times; off / on - 1 for the ingest ratio (higher is better); negative = faster with telemetry on (noise)",
        "spread_percent_among_runs": { "on": spreads[0], "off": spreads[1] },
        "spread_definition": "(max - min) / median of one side's runs: the noise between identical runs, which an overhead must exceed to mean anything",
        "per_run": per_run,
        "runs": sides.iter().map(|s| json!({
            "round": s.round,
            "telemetry": s.name(),
            "seconds": s.summary.as_ref().map(|r| r["seconds"].clone()),
            "load_average_at_start": s.summary.as_ref().map(|r| r["environment"]["load_average"].clone()),
            "error": s.error,
        })).collect::<Vec<_>>(),
        "receiver": {
            "endpoint": receiver.endpoint(),
            "during_runs_with_telemetry_on": during_on.to_json(),
            "during_runs_with_telemetry_off": during_off.to_json(),
            "per_run": sides.iter().map(|s| json!({
                "round": s.round,
                "telemetry": s.name(),
                "received": s.received.to_json(),
            })).collect::<Vec<_>>(),
        },
        "scrapes": scrapes,
        "failed_runs": failed_runs,
        "traces_exported": traces_exported,
        "metrics_scraped": metrics_scraped,
        "target": format!(
            "overhead < {target_percent}% for the ingest ratio and the deletion latencies (gone from all views p50 and p99, complete p50 and p99); spans and traces received during the runs with telemetry on; /metrics answered"
        ),
        "why_not": why_not,
        "pass": why_not.is_empty(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_and_overheads() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
        assert_eq!(median(&[]), None);
        // Times: slower with telemetry on is a positive overhead.
        assert_eq!(overhead_percent(10.5, 10.0, false), Some(5.0));
        // The ratio: lower with telemetry on is a positive overhead.
        assert_eq!(overhead_percent(0.5, 0.55, true), Some(10.0));
        assert_eq!(spread_percent(&[9.0, 10.0, 11.0]), Some(20.0));
        assert_eq!(spread_percent(&[9.0]), None);
    }

    fn side(on: bool, round: usize, ratio: f64, p50: f64, spans: u64) -> Side {
        Side {
            round,
            on,
            results: vec![
                json!({ "name": "ingest", "ratio": ratio }),
                json!({ "name": "deletion_propagation", "service": {
                    "absent_from_all_views": { "p50_ms": p50, "p99_ms": p50 * 2.0 },
                    "complete": { "p50_ms": p50 * 1.5, "p99_ms": p50 * 3.0 },
                }}),
            ],
            error: None,
            received: Counts {
                spans,
                traces: spans / 2,
                ..Counts::default()
            },
            scrapes: on.then(|| json!({ "scrapes_ok": 5 })),
            summary: None,
        }
    }

    #[tokio::test]
    async fn passes_only_under_the_target_with_spans_received() -> anyhow::Result<()> {
        let receiver = Receiver::start().await?;
        let interval = Duration::from_secs(1);
        let close = [
            side(true, 1, 0.70, 10.1, 40),
            side(false, 1, 0.71, 10.0, 0),
            side(true, 2, 0.69, 10.2, 40),
            side(false, 2, 0.70, 10.0, 0),
        ];
        let both = [Part::Metrics, Part::Traces];
        let result = compare(&close, &receiver, &both, interval, 3.0);
        assert_eq!(result["pass"], true, "{result:#}");
        assert_eq!(
            result["receiver"]["during_runs_with_telemetry_on"]["spans"],
            80
        );
        // Half the telemetry is a diagnostic, never the figure.
        let result = compare(&close, &receiver, &[Part::Metrics], interval, 3.0);
        assert_eq!(result["pass"], false);

        let slow = [side(true, 1, 0.70, 11.0, 40), side(false, 1, 0.70, 10.0, 0)];
        let result = compare(&slow, &receiver, &both, interval, 3.0);
        assert_eq!(result["pass"], false);
        assert_eq!(
            result["overhead_percent"]["deletion_absent_from_all_views_p50_ms"],
            10.0
        );

        let nothing_exported = [side(true, 1, 0.70, 10.0, 0), side(false, 1, 0.70, 10.0, 0)];
        let result = compare(&nothing_exported, &receiver, &both, interval, 3.0);
        assert_eq!(result["pass"], false);
        assert_eq!(result["traces_exported"], false);
        Ok(())
    }
}
