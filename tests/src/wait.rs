//! Waiting on a condition with a deadline instead of sleeping.

use std::future::Future;
use std::time::Duration;

/// Polls `check` until it returns `Some`, for up to 15 s.
///
/// # Panics
/// When the deadline passes; `what` says what was awaited.
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
