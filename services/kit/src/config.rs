//! Settings every service shares, read from the environment and the same-named flags.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// Which reads start a trace of their own (`TRACE_READS`; see [`crate::rpc_layer`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum TraceReads {
    /// A read (`Get…`, `List…`, `Find…`, `Export…`) is traced only within a caller's
    /// sampled trace (a `traceparent` whose sampled flag is set); commands always are.
    #[default]
    Caller,
    /// Every read is traced like a command.
    All,
}

/// A limit of the event stream (`NATS_STREAM_MAX_AGE`, `NATS_STREAM_MAX_BYTES`), parsed from
/// `unlimited` or a value of `T`.
///
/// Settings only grow (see [`crate::stream`]): a program raises a smaller limit it finds
/// on the stream to this one, and never lowers one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit<T> {
    /// No limit: raises any limit the stream has to none.
    Unlimited,
    /// At most this much.
    AtMost(T),
}

impl<T: PartialOrd> Limit<T> {
    /// True when `self` keeps at least what `other` keeps (unlimited keeps everything).
    pub fn covers(&self, other: &Self) -> bool {
        match (self, other) {
            (Limit::Unlimited, _) => true,
            (Limit::AtMost(_), Limit::Unlimited) => false,
            (Limit::AtMost(a), Limit::AtMost(b)) => a >= b,
        }
    }
}

impl<T: fmt::Display> fmt::Display for Limit<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Limit::Unlimited => f.write_str("unlimited"),
            Limit::AtMost(value) => value.fmt(f),
        }
    }
}

/// How long the event stream keeps an event: `unlimited`, or a duration such as `30d`,
/// `720h` or `1y 6months` (humantime's units: s, m, h, d, w, months, y).
pub type MaxAge = Limit<humantime::Duration>;

/// How many bytes the event stream keeps: `unlimited`, or a size such as `50GiB`, `500MB`
/// or `1073741824` (bytes; KiB/MiB/GiB are powers of 1024, KB/MB/GB of 1000).
pub type MaxBytes = Limit<bytesize::ByteSize>;

impl<T: FromStr> FromStr for Limit<T>
where
    T::Err: fmt::Display,
    T: IsZero,
{
    type Err = String;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let input = input.trim();
        if input.eq_ignore_ascii_case("unlimited") {
            return Ok(Limit::Unlimited);
        }
        let value: T = input
            .parse()
            .map_err(|e| format!("{input:?} is neither `unlimited` nor a valid value ({e})"))?;
        if value.is_zero() {
            return Err(format!(
                "{input:?} would keep nothing: give a positive value, or `unlimited`"
            ));
        }
        Ok(Limit::AtMost(value))
    }
}

/// Values a [`Limit`] refuses when zero.
pub trait IsZero {
    /// True for the zero value.
    fn is_zero(&self) -> bool;
}

impl IsZero for humantime::Duration {
    fn is_zero(&self) -> bool {
        Duration::from(*self).is_zero()
    }
}

impl IsZero for bytesize::ByteSize {
    fn is_zero(&self) -> bool {
        self.as_u64() == 0
    }
}

/// The settings of CONTRACT.md "Programs and their settings" that all programs take.
#[derive(Debug, Clone, clap::Args)]
pub struct CommonConfig {
    /// PostgreSQL connection URL. `sslmode` (`disable`, `prefer`, `require`, `verify-ca`,
    /// `verify-full`) and `sslrootcert=<CA file>` choose TLS.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: String,

    /// NATS server URLs, comma-separated (JetStream must be enabled); the client fails
    /// over among them.
    #[arg(long, env = "NATS_URL", default_value = "nats://127.0.0.1:4222")]
    pub nats_url: String,

    /// Replicas of the JetStream streams and the durable consumers (1, 3 or 5; more
    /// than 1 needs a NATS cluster). Only ever raised on an existing stream.
    #[arg(long, env = "NATS_STREAM_REPLICAS", default_value_t = 1,
          value_parser = clap::value_parser!(u8).range(1..=5))]
    pub nats_stream_replicas: u8,

    /// Longest time RESELLER_EVENTS keeps an event (`30d`, `unlimited`). Unset: a new
    /// stream keeps events forever and an existing stream's limit is left as it is.
    #[arg(long, env = "NATS_STREAM_MAX_AGE")]
    pub nats_stream_max_age: Option<MaxAge>,

    /// Most bytes RESELLER_EVENTS keeps (`50GiB`, `unlimited`); the oldest events go
    /// first. Unset: as `NATS_STREAM_MAX_AGE`.
    #[arg(long, env = "NATS_STREAM_MAX_BYTES")]
    pub nats_stream_max_bytes: Option<MaxBytes>,

    /// Secret that signs the HS256 bearer tokens.
    #[arg(long, env = "AUTH_JWT_SECRET", hide_env_values = true)]
    pub auth_jwt_secret: String,

    /// `text` or `json`.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,

    /// Seconds in-flight work may take to finish after SIGTERM/SIGINT.
    #[arg(long, env = "SHUTDOWN_GRACE_SECONDS", default_value_t = 20)]
    pub shutdown_grace_seconds: u64,

    /// Largest connection pool to PostgreSQL.
    #[arg(long, env = "DATABASE_MAX_CONNECTIONS", default_value_t = 16)]
    pub database_max_connections: u32,

    /// Largest gRPC message accepted or sent, in bytes.
    #[arg(long, env = "GRPC_MAX_MESSAGE_BYTES", default_value_t = 8 * 1024 * 1024)]
    pub grpc_max_message_bytes: usize,

    /// Seconds after which the server ends a client's connection (HTTP/2 GOAWAY; calls in
    /// flight finish and the client reconnects), so long-lived clients spread onto new
    /// replicas. Unset: connections last as long as the client keeps them.
    #[arg(long, env = "GRPC_MAX_CONNECTION_AGE_SECONDS",
          value_parser = clap::value_parser!(u64).range(1..))]
    pub grpc_max_connection_age_seconds: Option<u64>,

    /// Address to serve Prometheus metrics on, at `http://<addr>/metrics` in the text
    /// format (`0.0.0.0:9090` in a container). Unset: no metrics are recorded or served.
    #[arg(long, env = "METRICS_ADDR")]
    pub metrics_addr: Option<std::net::SocketAddr>,

    /// Where to export traces: an OpenTelemetry collector's OTLP/gRPC endpoint, such as
    /// `http://otel-collector:4317` (plaintext). Unset: no spans are exported and no trace
    /// context is passed on (see `deploy/OBSERVABILITY.md` "Traces").
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT")]
    pub otel_exporter_otlp_endpoint: Option<String>,

    /// The `service.name` of the exported spans. Unset: the program's name
    /// (`device-service`, `reseller-portal`).
    #[arg(long, env = "OTEL_SERVICE_NAME")]
    pub otel_service_name: Option<String>,

    /// Which reads start a trace of their own when traces are exported: `caller` (a read
    /// is traced only within the caller's sampled trace, its `traceparent`) or `all`.
    /// Commands are always traced (see `deploy/OBSERVABILITY.md` "Traces").
    #[arg(long, env = "TRACE_READS", value_enum, default_value_t = TraceReads::Caller)]
    pub trace_reads: TraceReads,
}

impl CommonConfig {
    /// A configuration for tests and embedding: defaults for everything but the three
    /// values every deployment must choose.
    pub fn new(database_url: &str, nats_url: &str, auth_jwt_secret: &str) -> Self {
        Self {
            database_url: database_url.to_owned(),
            nats_url: nats_url.to_owned(),
            nats_stream_replicas: 1,
            nats_stream_max_age: None,
            nats_stream_max_bytes: None,
            auth_jwt_secret: auth_jwt_secret.to_owned(),
            log_format: LogFormat::Text,
            shutdown_grace_seconds: 20,
            database_max_connections: 16,
            grpc_max_message_bytes: 8 * 1024 * 1024,
            grpc_max_connection_age_seconds: None,
            metrics_addr: None,
            otel_exporter_otlp_endpoint: None,
            otel_service_name: None,
            trace_reads: TraceReads::Caller,
        }
    }

    /// The shutdown grace period.
    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_secs(self.shutdown_grace_seconds)
    }

    /// The gRPC connection age limit, if any.
    pub fn grpc_max_connection_age(&self) -> Option<Duration> {
        self.grpc_max_connection_age_seconds
            .map(Duration::from_secs)
    }

    /// What the JetStream streams should be (see [`crate::stream::StreamSettings`]).
    pub fn stream_settings(&self) -> crate::stream::StreamSettings {
        crate::stream::StreamSettings {
            replicas: usize::from(self.nats_stream_replicas),
            max_age: self.nats_stream_max_age,
            max_bytes: self.nats_stream_max_bytes,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Program {
        #[command(flatten)]
        common: CommonConfig,
    }

    fn parse(args: &[&str]) -> Result<CommonConfig, clap::Error> {
        let base = [
            "program",
            "--database-url",
            "postgres://x",
            "--auth-jwt-secret",
            "s",
        ];
        Program::try_parse_from(base.iter().chain(args)).map(|p| p.common)
    }

    #[test]
    fn stream_limits_parse_durations_sizes_and_unlimited() {
        let config = parse(&[
            "--nats-stream-max-age",
            "30d",
            "--nats-stream-max-bytes",
            "50GiB",
        ])
        .unwrap();
        assert_eq!(
            config.nats_stream_max_age,
            Some(Limit::AtMost(Duration::from_secs(30 * 86_400).into()))
        );
        assert_eq!(
            config.nats_stream_max_bytes,
            Some(Limit::AtMost(bytesize::ByteSize::gib(50)))
        );
        let config = parse(&["--nats-stream-max-age", "unlimited"]).unwrap();
        assert_eq!(config.nats_stream_max_age, Some(Limit::Unlimited));
        assert_eq!(config.nats_stream_max_bytes, None);
        assert_eq!(config.nats_stream_replicas, 1);

        for bad in [
            ["--nats-stream-max-age", "0s"],
            ["--nats-stream-max-age", "a month"],
            ["--nats-stream-max-bytes", "0"],
            ["--nats-stream-max-bytes", "lots"],
            ["--nats-stream-replicas", "0"],
            ["--nats-stream-replicas", "7"],
        ] {
            assert!(parse(&bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn unlimited_covers_every_limit_and_larger_covers_smaller() {
        let day = Limit::AtMost(1);
        let week = Limit::AtMost(7);
        assert!(Limit::<u32>::Unlimited.covers(&week));
        assert!(!week.covers(&Limit::Unlimited));
        assert!(week.covers(&day) && week.covers(&week) && !day.covers(&week));
    }
}
