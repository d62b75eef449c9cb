//! Waiting on a condition with a deadline instead of sleeping.

use std::future::Future;
use std::time::Duration;

/// How long [`eventually`] and [`until_eq`] wait.
pub const DEADLINE: Duration = Duration::from_secs(15);

/// Polls `check` until it returns `Some`, for up to [`DEADLINE`].
///
/// # Panics
/// When the deadline passes; `what` says what was awaited.
pub async fn eventually<T, F, Fut>(what: &str, check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    eventually_within(what, DEADLINE, check).await
}

/// Polls `check` every 20 ms until it returns `Some`, for up to `deadline`.
///
/// # Panics
/// When the deadline passes; `what` says what was awaited.
pub async fn eventually_within<T, F, Fut>(what: &str, deadline: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let started = tokio::time::Instant::now();
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(started.elapsed() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Polls `read` until it answers `expected`, for up to 15 s; answers how long it took.
///
/// # Panics
/// When the deadline passes, showing the last answer beside `expected`.
pub async fn until_eq<T, F, Fut>(what: &str, expected: &T, mut read: F) -> Duration
where
    T: PartialEq + std::fmt::Debug,
    F: FnMut() -> Fut,
    Fut: Future<Output = T>,
{
    let started = tokio::time::Instant::now();
    loop {
        let last = read().await;
        if last == *expected {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < DEADLINE,
            "{what} is\n{last:#?}\nexpected\n{expected:#?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
