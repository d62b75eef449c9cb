//! Scrapes a service's Prometheus endpoint at a fixed interval while a benchmark runs, as
//! a Prometheus server would, so that a run with metrics on pays for its scrapes too.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::{Client, connect::HttpConnector};
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};
use tokio::task::JoinHandle;

use crate::stats::Samples;

/// An HTTP/1.1 client without TLS.
pub type HttpClient<B> = Client<HttpConnector, B>;

/// An HTTP/1.1 client for bodies of type `B`.
pub fn http_client<B>() -> HttpClient<B>
where
    B: hyper::body::Body + Send + 'static + Unpin,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    Client::builder(TokioExecutor::new()).build_http()
}

/// One `GET url`: the status and the body.
///
/// # Errors
/// When the server cannot be reached or the body not read.
pub async fn get(client: &HttpClient<Empty<Bytes>>, url: &str) -> anyhow::Result<(u16, Bytes)> {
    let response = client
        .get(url.parse().with_context(|| format!("{url} is no URI"))?)
        .await?;
    let status = response.status().as_u16();
    let body = response.into_body().collect().await?.to_bytes();
    Ok((status, body))
}

/// One `POST url` of `body` with `content_type`: the status and the answer's body (the
/// receiver's tests post as the OTLP/HTTP exporter does).
///
/// # Errors
/// When the server cannot be reached or the body not read.
#[cfg(test)]
pub async fn post(
    client: &HttpClient<http_body_util::Full<Bytes>>,
    url: &str,
    content_type: &str,
    body: Vec<u8>,
) -> anyhow::Result<(u16, Bytes)> {
    let request = hyper::Request::post(url)
        .header(hyper::header::CONTENT_TYPE, content_type)
        .body(http_body_util::Full::new(Bytes::from(body)))?;
    let response = client.request(request).await?;
    let status = response.status().as_u16();
    let body = response.into_body().collect().await?.to_bytes();
    Ok((status, body))
}

/// What the scraper saw.
#[derive(Debug, Default)]
struct Seen {
    /// Scrapes answered 200.
    ok: u64,
    /// Scrapes that failed between two answers (before the first one the service is
    /// starting; after the last one it may be stopping).
    failed: u64,
    /// Scrapes that failed since the last answer.
    failed_since_last_answer: u64,
    /// Scrapes refused before the first answer.
    before_first_answer: u64,
    first_error: Option<String>,
    took: Samples,
    last_bytes: usize,
    /// Sample lines (not `#` comments) of the last answer.
    last_samples: usize,
    /// `reseller_`-prefixed metric families named in the last answer's `# TYPE` lines.
    last_reseller_families: usize,
}

/// A running scraper; [`Scraper::finish`] stops it and reports.
#[derive(Debug)]
pub struct Scraper {
    url: String,
    interval: Duration,
    stop: Arc<AtomicBool>,
    task: JoinHandle<Seen>,
}

impl Scraper {
    /// Starts scraping `http://<addr>/metrics` every `interval` (the first at once).
    pub fn start(addr: std::net::SocketAddr, interval: Duration) -> Self {
        let url = format!("http://{addr}/metrics");
        let stop = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn(scrape_loop(url.clone(), interval, stop.clone()));
        Self {
            url,
            interval,
            stop,
            task,
        }
    }

    /// Stops scraping; what it saw, as JSON.
    pub async fn finish(self) -> Value {
        self.stop.store(true, Ordering::Relaxed);
        let seen = self.task.await.unwrap_or_default();
        json!({
            "url": self.url,
            "interval_ms": self.interval.as_millis() as u64,
            "scrapes_ok": seen.ok,
            "scrapes_failed": seen.failed,
            "refused_before_first_answer": seen.before_first_answer,
            "refused_after_last_answer": seen.failed_since_last_answer,
            "first_error": seen.first_error,
            "scrape_duration": seen.took.summary(),
            "last_answer_bytes": seen.last_bytes,
            "last_answer_samples": seen.last_samples,
            "last_answer_reseller_metric_families": seen.last_reseller_families,
        })
    }
}

async fn scrape_loop(url: String, interval: Duration, stop: Arc<AtomicBool>) -> Seen {
    let client = http_client::<Empty<Bytes>>();
    let mut seen = Seen::default();
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while !stop.load(Ordering::Relaxed) {
        ticks.tick().await;
        let started = Instant::now();
        let answer = tokio::time::timeout(Duration::from_secs(10), get(&client, &url)).await;
        let error = match answer {
            Ok(Ok((200, body))) => {
                seen.ok += 1;
                seen.failed += seen.failed_since_last_answer;
                seen.failed_since_last_answer = 0;
                seen.took.push(Some(started.elapsed()));
                let text = String::from_utf8_lossy(&body);
                seen.last_bytes = body.len();
                seen.last_samples = text
                    .lines()
                    .filter(|l| !l.is_empty() && !l.starts_with('#'))
                    .count();
                seen.last_reseller_families = text
                    .lines()
                    .filter(|l| l.starts_with("# TYPE reseller_"))
                    .count();
                None
            }
            Ok(Ok((status, _))) => Some(format!("HTTP {status}")),
            Ok(Err(err)) => Some(format!("{err:#}")),
            Err(_) => Some("no answer within 10 s".to_owned()),
        };
        if let Some(error) = error {
            if seen.ok == 0 {
                seen.before_first_answer += 1;
            } else {
                seen.failed_since_last_answer += 1;
            }
            seen.first_error.get_or_insert(error);
        }
    }
    seen
}
