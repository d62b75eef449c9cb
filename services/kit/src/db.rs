//! The PostgreSQL pool and each service's migrations.

use std::time::Duration;

use sqlx::PgPool;
use sqlx::migrate::Migrator;
use sqlx::postgres::PgPoolOptions;

use crate::config::CommonConfig;

/// Connects a pool. Waits up to 30 s for the server, so a service started beside its
/// database (Kubernetes, the local script) does not crash-loop while it comes up.
///
/// # Errors
/// When PostgreSQL cannot be reached within the wait.
pub async fn connect(config: &CommonConfig) -> anyhow::Result<PgPool> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let attempt = PgPoolOptions::new()
            .max_connections(config.database_max_connections)
            .acquire_timeout(Duration::from_secs(5))
            // No ping before every acquire: a dead connection fails its query and is
            // replaced; the ping cost one round trip per transaction on every hot path.
            .test_before_acquire(false)
            .connect(&config.database_url)
            .await;
        match attempt {
            Ok(pool) => return Ok(pool),
            Err(err) if tokio::time::Instant::now() < deadline => {
                tracing::warn!(error = %err, "PostgreSQL not reachable yet; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(err) => return Err(anyhow::Error::new(err).context("connecting to PostgreSQL")),
        }
    }
}

/// Runs a service's migrations (its own schema, its own history table; see its
/// `sqlx.toml`).
///
/// # Errors
/// When a migration fails or the history does not match the files.
pub async fn migrate(pool: &PgPool, migrator: &Migrator, service: &str) -> anyhow::Result<()> {
    migrator
        .run(pool)
        .await
        .map_err(|e| anyhow::Error::new(e).context(format!("running {service} migrations")))
}
