//! Creates the JetStream streams at start-up (idempotent; every program does it).

use std::time::Duration;

use async_nats::jetstream::{self, stream};

use crate::subjects;

/// Connects to NATS and returns a JetStream context, retrying for up to 30 s.
///
/// # Errors
/// When NATS cannot be reached within the wait.
pub async fn connect(url: &str) -> anyhow::Result<(async_nats::Client, jetstream::Context)> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let options = async_nats::ConnectOptions::new()
            .connection_timeout(Duration::from_secs(5))
            .retry_on_initial_connect();
        match tokio::time::timeout(Duration::from_secs(10), options.connect(url)).await {
            Ok(Ok(client)) => {
                let js = jetstream::new(client.clone());
                return Ok((client, js));
            }
            Ok(Err(err)) if tokio::time::Instant::now() < deadline => {
                tracing::warn!(error = %err, "NATS not reachable yet; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Ok(Err(err)) => return Err(anyhow::Error::new(err).context("connecting to NATS")),
            Err(_) => anyhow::bail!("connecting to NATS at {url} timed out"),
        }
    }
}

/// Creates `RESELLER_EVENTS` (all events, kept for projection rebuilds; a 2-minute
/// duplicate window for `Nats-Msg-Id`) and the dead-letter stream, when missing.
///
/// # Errors
/// When JetStream is not enabled or refuses the configuration.
pub async fn ensure_streams(js: &jetstream::Context) -> anyhow::Result<()> {
    js.get_or_create_stream(stream::Config {
        name: subjects::EVENTS_STREAM.to_owned(),
        subjects: vec![subjects::ALL_EVENTS.to_owned()],
        storage: stream::StorageType::File,
        retention: stream::RetentionPolicy::Limits,
        duplicate_window: Duration::from_secs(120),
        ..Default::default()
    })
    .await
    .map_err(|e| anyhow::anyhow!("creating stream {}: {e}", subjects::EVENTS_STREAM))?;
    js.get_or_create_stream(stream::Config {
        name: subjects::DEAD_LETTER_STREAM.to_owned(),
        subjects: vec![subjects::ALL_DEAD_LETTERS.to_owned()],
        storage: stream::StorageType::File,
        ..Default::default()
    })
    .await
    .map_err(|e| anyhow::anyhow!("creating stream {}: {e}", subjects::DEAD_LETTER_STREAM))?;
    Ok(())
}
