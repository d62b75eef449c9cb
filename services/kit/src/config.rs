//! Settings every service shares, read from the environment and the same-named flags.

use std::time::Duration;

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// The settings of CONTRACT.md "Programs and their settings" that all programs take.
#[derive(Debug, Clone, clap::Args)]
pub struct CommonConfig {
    /// PostgreSQL connection URL.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: String,

    /// NATS server URL (JetStream must be enabled).
    #[arg(long, env = "NATS_URL", default_value = "nats://127.0.0.1:4222")]
    pub nats_url: String,

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
}

impl CommonConfig {
    /// A configuration for tests and embedding: defaults for everything but the three
    /// values every deployment must choose.
    pub fn new(database_url: &str, nats_url: &str, auth_jwt_secret: &str) -> Self {
        Self {
            database_url: database_url.to_owned(),
            nats_url: nats_url.to_owned(),
            auth_jwt_secret: auth_jwt_secret.to_owned(),
            log_format: LogFormat::Text,
            shutdown_grace_seconds: 20,
            database_max_connections: 16,
            grpc_max_message_bytes: 8 * 1024 * 1024,
        }
    }

    /// The shutdown grace period.
    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_secs(self.shutdown_grace_seconds)
    }
}
