//! The PostgreSQL pool and each service's migrations.
//!
//! `DATABASE_URL` is a libpq-style URL; `sslmode` and `sslrootcert` choose TLS (sqlx with
//! rustls): `require` encrypts without checking the server's certificate, `verify-ca`
//! checks it against the system's roots and `sslrootcert`, `verify-full` also checks that
//! it names the host.

use std::time::Duration;

use sqlx::PgPool;
use sqlx::migrate::{MigrateError, Migrator};
use sqlx::postgres::PgPoolOptions;

use crate::config::CommonConfig;
use crate::startup::{self, SetupError};

/// Connects a pool, retrying while PostgreSQL is not reachable yet (for up to
/// [`startup::STARTUP_BUDGET`]), so a service started beside its database (Kubernetes,
/// the local script) does not crash-loop while it comes up.
///
/// # Errors
/// At once when waiting cannot help (a malformed URL, a refused password, a database that
/// does not exist, a certificate that does not verify); otherwise when PostgreSQL is
/// still unreachable after the wait.
pub async fn connect(config: &CommonConfig) -> anyhow::Result<PgPool> {
    let options = config
        .database_url
        .parse::<sqlx::postgres::PgConnectOptions>()
        .map_err(|e| anyhow::anyhow!("DATABASE_URL is not a valid PostgreSQL URL: {e}"))?;
    startup::retry("connecting to PostgreSQL", || async {
        PgPoolOptions::new()
            .max_connections(config.database_max_connections)
            .acquire_timeout(Duration::from_secs(5))
            // No ping before every acquire: a dead connection fails its query and is
            // replaced; the ping cost one round trip per transaction on every hot path.
            .test_before_acquire(false)
            .connect_with(options.clone())
            .await
            .map_err(classify)
    })
    .await
}

/// Runs a service's migrations (its own schema, its own history table; see its
/// `sqlx.toml`). Replicas starting together take turns: sqlx holds a PostgreSQL advisory
/// lock (one per database) around the whole run, so the second finds the work done. A
/// lost connection is retried like [`connect`].
///
/// # Errors
/// When a migration fails, or the history does not match the files: at once.
pub async fn migrate(pool: &PgPool, migrator: &Migrator, service: &str) -> anyhow::Result<()> {
    startup::retry(&format!("running {service} migrations"), || async {
        migrator.run(pool).await.map_err(|err| match err {
            MigrateError::Execute(inner) if is_transient(&inner) => {
                SetupError::Transient(MigrateError::Execute(inner).into())
            }
            err => SetupError::Permanent(err.into()),
        })
    })
    .await
}

/// Sorts a connection failure: worth waiting for, or not.
fn classify(err: sqlx::Error) -> SetupError {
    if is_transient(&err) {
        SetupError::Transient(err.into())
    } else {
        SetupError::Permanent(err.into())
    }
}

/// True for failures that waiting can cure: the server unreachable or starting, out of
/// connections, or restarting (SQLSTATE classes 08, 53, 57).
pub(crate) fn is_transient(err: &sqlx::Error) -> bool {
    match err {
        // A certificate that does not verify arrives as an I/O error carrying rustls'
        // (`InvalidData`); refused, reset and cut connections are the other kinds.
        sqlx::Error::Io(io) => io.kind() != std::io::ErrorKind::InvalidData,
        sqlx::Error::PoolTimedOut => true,
        sqlx::Error::Database(db) => db
            .code()
            .is_some_and(|code| ["08", "53", "57"].iter().any(|c| code.starts_with(c))),
        // Bad URL, refused TLS, closed pool, protocol errors: a retry changes nothing.
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unreachable_servers_are_transient_and_configuration_errors_are_not() {
        let refused = sqlx::Error::Io(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        assert!(is_transient(&refused));
        assert!(is_transient(&sqlx::Error::PoolTimedOut));
        assert!(!is_transient(&sqlx::Error::Configuration("bad".into())));
        assert!(!is_transient(&sqlx::Error::Tls("unknown issuer".into())));
        let bad_certificate = std::io::Error::new(std::io::ErrorKind::InvalidData, "UnknownIssuer");
        assert!(!is_transient(&sqlx::Error::Io(bad_certificate)));
    }
}
