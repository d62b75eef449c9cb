//! Start-up set-up that waits out what is only not ready yet.
//!
//! A program's set-up (connecting, migrations, streams) meets dependencies that are still
//! coming up: PostgreSQL starting beside it, a fresh NATS cluster electing its JetStream
//! leader ("jetstream request timed out"), a peer replica creating the same stream a
//! moment earlier. Those failures are [`SetupError::Transient`] and are retried with
//! exponential backoff for up to [`STARTUP_BUDGET`]. A failure that waiting cannot fix (a
//! malformed URL, a refused password, a migration that fails) is
//! [`SetupError::Permanent`] and ends the set-up at once, with its message.

use std::future::Future;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};

/// How long set-up waits for a dependency that fails transiently (the sum of the pauses
/// between attempts; each attempt also takes its own time, up to its own timeout).
pub const STARTUP_BUDGET: Duration = Duration::from_secs(60);

/// Why one attempt of a set-up step failed.
#[derive(Debug)]
pub enum SetupError {
    /// It may work on a later attempt (a dependency not up yet, a timeout, a race).
    Transient(anyhow::Error),
    /// It never will: retrying is pointless.
    Permanent(anyhow::Error),
}

impl SetupError {
    fn is_transient(&self) -> bool {
        matches!(self, SetupError::Transient(_))
    }

    fn into_inner(self) -> anyhow::Error {
        match self {
            SetupError::Transient(err) | SetupError::Permanent(err) => err,
        }
    }
}

/// Runs `attempt` until it succeeds, fails permanently, or has failed transiently for
/// [`STARTUP_BUDGET`]; pauses grow from 100 ms to 5 s, with jitter so that replicas
/// started together do not retry in step. Each transient failure is logged as a warning
/// naming `what`.
///
/// # Errors
/// The permanent failure, or the last transient one once the budget is spent, with
/// `what` as context.
pub async fn retry<T, F, Fut>(what: &str, attempt: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, SetupError>>,
{
    retry_within(what, STARTUP_BUDGET, attempt).await
}

/// [`retry`] with its own budget (tests use short ones).
///
/// # Errors
/// As [`retry`].
pub async fn retry_within<T, F, Fut>(what: &str, budget: Duration, attempt: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, SetupError>>,
{
    let backoff = ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(100))
        .with_max_delay(Duration::from_secs(5))
        .with_jitter()
        .without_max_times()
        .with_total_delay(Some(budget));
    attempt
        .retry(backoff)
        .when(SetupError::is_transient)
        .notify(|err, pause| {
            tracing::warn!(
                step = what,
                error = %format!("{:#}", match err {
                    SetupError::Transient(e) | SetupError::Permanent(e) => e,
                }),
                retry_in_ms = pause.as_millis() as u64,
                "start-up step not ready yet; retrying"
            );
        })
        .await
        .map_err(|err| {
            let gave_up = err.is_transient();
            let err = err.into_inner();
            if gave_up {
                err.context(format!(
                    "{what}: still failing after retrying for {budget:?}"
                ))
            } else {
                err.context(what.to_owned())
            }
        })
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    #[tokio::test]
    async fn transient_failures_are_retried_and_permanent_ones_are_not() {
        let attempts = AtomicU32::new(0);
        let value = retry_within("flaky", Duration::from_secs(5), || async {
            match attempts.fetch_add(1, Ordering::Relaxed) {
                0 | 1 => Err(SetupError::Transient(anyhow::anyhow!("not yet"))),
                _ => Ok(7),
            }
        })
        .await
        .unwrap();
        assert_eq!((value, attempts.load(Ordering::Relaxed)), (7, 3));

        let attempts = AtomicU32::new(0);
        let err = retry_within("broken", Duration::from_secs(5), || async {
            attempts.fetch_add(1, Ordering::Relaxed);
            Err::<(), _>(SetupError::Permanent(anyhow::anyhow!("bad password")))
        })
        .await
        .unwrap_err();
        assert_eq!(attempts.load(Ordering::Relaxed), 1);
        assert_eq!(format!("{err:#}"), "broken: bad password");

        let started = std::time::Instant::now();
        let err = retry_within("down", Duration::from_millis(500), || async {
            Err::<(), _>(SetupError::Transient(anyhow::anyhow!("refused")))
        })
        .await
        .unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(2));
        assert!(format!("{err:#}").contains("still failing"), "{err:#}");
    }
}
