//! Logging and traces: tracing-subscriber with `RUST_LOG` filtering, as text or JSON
//! lines, and, when `OTEL_EXPORTER_OTLP_ENDPOINT` is set, OpenTelemetry spans exported
//! over OTLP.
//!
//! Logs go to standard output. Text lines carry ANSI colour codes only when standard
//! output is a terminal (and `NO_COLOR` is not set): a log collector or a file gets plain
//! text.
//!
//! Traces: a [`tracing_opentelemetry`] layer turns the program's `tracing` spans at level
//! INFO and above (the RPC spans of [`crate::rpc_layer`], the consumer's spans of
//! [`crate::inbox`]) into OpenTelemetry spans, and its events at WARN and above into span
//! events, whatever `RUST_LOG` lets through to the log. Without an endpoint there is no
//! such layer at all, so nothing is recorded for traces, and [`crate::trace_context`]
//! passes no context on. Sampling is the SDK's, from `OTEL_TRACES_SAMPLER` and
//! `OTEL_TRACES_SAMPLER_ARG` (default: every trace).
//!
//! Export: the SDK's default [`BatchSpanProcessor`](opentelemetry_sdk::trace::BatchSpanProcessor)
//! (a thread of its own that exports every 5 s or 512 spans, dropping spans beyond a
//! queue of 2,048 rather than slowing calls down) with the OTLP/gRPC exporter on tonic,
//! which the services already build. That processor drives the export future with
//! `block_on` on its own thread; a tonic channel works there because it is created inside
//! the program's Tokio runtime (its connection task runs on the runtime, the thread only
//! waits), which is why [`Telemetry::otlp`] must be called inside the runtime. The async
//! processor (`span_processor_with_async_runtime`, an experimental feature) is not
//! needed, and the HTTP exporter would bring reqwest and a TLS stack of its own.
//! [`TelemetryGuard::shutdown`] flushes what is queued at exit.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{SdkTracerProvider, SpanExporter};
use tracing_subscriber::filter::{LevelFilter, filter_fn};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::{EnvFilter, Layer, fmt, prelude::*};

use crate::config::{LogFormat, TraceReads};

/// Set once an OpenTelemetry layer is installed: [`crate::trace_context`] reads it before
/// anything else, so that a program without traces pays one atomic load.
static TRACING: AtomicBool = AtomicBool::new(false);

/// Whether this process exports traces (an OpenTelemetry layer is installed).
pub fn traces_enabled() -> bool {
    TRACING.load(Ordering::Relaxed)
}

/// Set when every read starts a trace of its own ([`TraceReads::All`]).
static TRACE_EVERY_READ: AtomicBool = AtomicBool::new(false);

/// Which reads start a trace of their own (`TRACE_READS`; [`crate::rpc_layer`] reads it).
pub fn set_trace_reads(reads: TraceReads) {
    TRACE_EVERY_READ.store(reads == TraceReads::All, Ordering::Relaxed);
}

/// Whether every read starts a trace of its own, not only those within a caller's trace.
pub fn traces_every_read() -> bool {
    TRACE_EVERY_READ.load(Ordering::Relaxed)
}

/// Installs the global subscriber (logs only). Safe to call more than once (later calls
/// do nothing), so tests and embedded services can all call it.
pub fn init(format: LogFormat) {
    init_with_default(format, "info");
}

/// Like [`init`], with `default_filter` when `RUST_LOG` is not set (tests use `warn`).
pub fn init_with_default(format: LogFormat, default_filter: &str) {
    let _ = Telemetry::new(format, default_filter).install();
}

/// A program's logging and traces as its settings say: logs in `format` (`RUST_LOG`, or
/// `info`), and spans exported to `otlp_endpoint` when one is set (not empty), as
/// `service_name`. Call it inside the Tokio runtime (see the module docs).
///
/// # Errors
/// When the OTLP exporter cannot be built from `otlp_endpoint` (not a URL). Nothing is
/// installed then.
pub fn init_program(
    format: LogFormat,
    otlp_endpoint: Option<&str>,
    service_name: &str,
) -> anyhow::Result<TelemetryGuard> {
    let mut telemetry = Telemetry::new(format, "info");
    if let Some(endpoint) = otlp_endpoint.map(str::trim).filter(|e| !e.is_empty()) {
        telemetry = telemetry.otlp(endpoint, service_name)?;
    }
    Ok(telemetry.install().unwrap_or_default())
}

/// What [`Telemetry::install`] sets up: the log's format, filter and writer, and the span
/// exporter, if any.
pub struct Telemetry<W> {
    format: LogFormat,
    default_filter: String,
    /// Used instead of `RUST_LOG` when set.
    fixed_filter: Option<String>,
    writer: W,
    ansi: bool,
    spans: Option<SdkTracerProvider>,
}

impl<W> std::fmt::Debug for Telemetry<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Telemetry")
            .field("format", &self.format)
            .field("default_filter", &self.default_filter)
            .field("traces", &self.spans.is_some())
            .finish()
    }
}

impl Telemetry<fn() -> std::io::Stdout> {
    /// Logs in `format` to standard output, filtered by `RUST_LOG` or else
    /// `default_filter`; no traces.
    pub fn new(format: LogFormat, default_filter: &str) -> Self {
        Self {
            format,
            default_filter: default_filter.to_owned(),
            fixed_filter: None,
            writer: std::io::stdout,
            ansi: std::io::stdout().is_terminal()
                && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()),
            spans: None,
        }
    }
}

impl<W> Telemetry<W>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    /// Writes the log to `writer` instead (tests read what the program writes), without
    /// colour codes.
    pub fn writer<V>(self, writer: V) -> Telemetry<V>
    where
        V: for<'w> MakeWriter<'w> + Send + Sync + 'static,
    {
        Telemetry {
            format: self.format,
            default_filter: self.default_filter,
            fixed_filter: self.fixed_filter,
            writer,
            ansi: false,
            spans: self.spans,
        }
    }

    /// Filters the log with `directives` (`RUST_LOG`'s syntax) whatever `RUST_LOG` says:
    /// for tests that read the log.
    pub fn filter(self, directives: &str) -> Self {
        Self {
            fixed_filter: Some(directives.to_owned()),
            ..self
        }
    }

    /// Exports spans over OTLP/gRPC to `endpoint` (`http://collector:4317`) as
    /// `service_name`, in batches (see the module docs). Must be called inside the Tokio
    /// runtime.
    ///
    /// # Errors
    /// When the exporter cannot be built (`endpoint` is not a URL, or `https` without
    /// TLS support).
    pub fn otlp(self, endpoint: &str, service_name: &str) -> anyhow::Result<Self> {
        use opentelemetry_otlp::WithExportConfig;
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(endpoint)
            .build()
            .map_err(|e| anyhow::anyhow!("OTEL_EXPORTER_OTLP_ENDPOINT {endpoint:?}: {e}"))?;
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(resource(service_name))
            .build();
        Ok(Self {
            spans: Some(provider),
            ..self
        })
    }

    /// Exports spans to `exporter` as each one ends, as `service_name`: for tests, with
    /// an in-process exporter (`opentelemetry_sdk`'s `InMemorySpanExporter`, feature
    /// `testing`).
    pub fn exporter(self, exporter: impl SpanExporter + 'static, service_name: &str) -> Self {
        let provider = SdkTracerProvider::builder()
            .with_simple_exporter(exporter)
            .with_resource(resource(service_name))
            .build();
        Self {
            spans: Some(provider),
            ..self
        }
    }

    /// Installs the global subscriber, with an OpenTelemetry layer when spans are
    /// exported, and the W3C TraceContext propagator. `None` when a subscriber was
    /// installed before (this one is then dropped: the first wins).
    pub fn install(self) -> Option<TelemetryGuard> {
        let filter = match &self.fixed_filter {
            Some(directives) => EnvFilter::new(directives),
            None => EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| EnvFilter::new(&self.default_filter)),
        };
        // Each layer has its own filter: `RUST_LOG` decides what is logged, never which
        // spans a trace has.
        let log = match self.format {
            LogFormat::Text => fmt::layer()
                .with_target(true)
                .with_ansi(self.ansi)
                .with_writer(self.writer)
                .with_filter(filter)
                .boxed(),
            LogFormat::Json => fmt::layer()
                .json()
                .flatten_event(true)
                .with_current_span(false)
                .with_ansi(self.ansi)
                .with_writer(self.writer)
                .with_filter(filter)
                .boxed(),
        };
        let traces = self.spans.as_ref().map(|provider| {
            tracing_opentelemetry::layer()
                .with_tracer(provider.tracer("reseller-kit"))
                // What a span costs is paid on every call and every event, so it carries
                // what a trace is read for and nothing more: no thread ID and name (an
                // async task moves between threads, and the name is a new string per
                // span), no busy/idle times (two clock reads on every poll), no source
                // location (the span's name says where it is), and no OpenTelemetry
                // context attached on every poll (nothing here reads
                // `Context::current`: `trace_context` reads the span's own).
                .with_context_activation(false)
                .with_threads(false)
                .with_tracked_inactivity(false)
                .with_location(false)
                // The hint says what the filter can let through, so that what it cannot
                // is refused where it is written: without it the process's maximum level
                // is TRACE, and every `log` record (sqlx writes one per statement) and
                // dynamic `enabled!` check asks the subscriber, and sqlx then formats
                // each statement's summary for nobody.
                .with_filter(filter_fn(spans_and_warnings).with_max_level_hint(LevelFilter::INFO))
        });
        let installed = tracing_subscriber::registry()
            .with(log)
            .with(traces)
            .try_init()
            .is_ok();
        if !installed {
            return None;
        }
        if self.spans.is_some() {
            opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
            TRACING.store(true, Ordering::Relaxed);
        }
        Some(TelemetryGuard {
            provider: self.spans,
        })
    }
}

/// What the OpenTelemetry layer records: spans at INFO and above, and events at WARN and
/// above (as span events). The INFO events, the access log line above all, are already in
/// the log; copying each into its span would build them even when `RUST_LOG` filters them
/// out of the log.
fn spans_and_warnings(meta: &tracing::Metadata<'_>) -> bool {
    let least = if meta.is_span() {
        tracing::Level::INFO
    } else {
        tracing::Level::WARN
    };
    *meta.level() <= least
}

/// The resource every span of the program carries: `service.name` (and what the SDK
/// detects, such as `OTEL_RESOURCE_ATTRIBUTES`).
fn resource(service_name: &str) -> Resource {
    Resource::builder()
        .with_service_name(service_name.to_owned())
        .build()
}

/// Keeps the span exporter of an installed [`Telemetry`]; [`TelemetryGuard::shutdown`]
/// exports what is still queued.
#[derive(Debug, Default)]
pub struct TelemetryGuard {
    provider: Option<SdkTracerProvider>,
}

impl TelemetryGuard {
    /// Exports the spans still queued and stops the exporter (a program's last step).
    /// Runs on a blocking thread: the batch processor's thread needs the runtime's
    /// workers free to send its last export.
    pub async fn shutdown(self) {
        let Some(provider) = self.provider else {
            return;
        };
        let done = tokio::task::spawn_blocking(move || provider.shutdown()).await;
        match done {
            Ok(Ok(())) => {}
            Ok(Err(err)) => tracing::warn!(error = %err, "exporting the last spans failed"),
            Err(err) => tracing::warn!(error = %err, "stopping the span exporter failed"),
        }
    }
}
