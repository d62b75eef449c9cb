//! A real Prometheus server for tests: Debian's `prometheus` (`PROMETHEUS_BIN`, default
//! `prometheus` on `PATH`; `deploy/local/test.sh` installs it), on a free loopback port,
//! its TSDB in a temp dir, scraping the targets it is given every second and evaluating
//! the project's alert rules (`deploy/monitoring/reseller-alerts.rules.yml`, the file the
//! PrometheusRule is generated from) every second. Killed on drop; its log is kept when
//! the test panics. Asked through its HTTP API (`/api/v1/...`).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::Context;
use serde_json::{Value, json};
use tokio::process::{Child, Command};

/// The alert rule file every deployment loads, from the repository.
pub fn rules_file() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/monitoring/reseller-alerts.rules.yml")
}

/// The alert names `rules_file` defines (its `- alert: <name>` lines), in file order.
///
/// # Errors
/// When the file cannot be read.
pub fn alert_names(rules: &Path) -> anyhow::Result<Vec<String>> {
    let text = std::fs::read_to_string(rules).with_context(|| rules.display().to_string())?;
    Ok(text
        .lines()
        .filter_map(|line| line.trim().strip_prefix("- alert:"))
        .map(|name| name.trim().to_owned())
        .collect())
}

/// The `prometheus` binary: `PROMETHEUS_BIN`, else `prometheus` on `PATH`.
pub fn binary() -> PathBuf {
    std::env::var_os("PROMETHEUS_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("prometheus"))
}

/// The `promtool` binary: `PROMTOOL_BIN`, else `promtool` on `PATH`.
pub fn promtool() -> PathBuf {
    std::env::var_os("PROMTOOL_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("promtool"))
}

/// A scrape job: `job` is the `job` label of its series, `targets` the `host:port`s
/// scraped at `/metrics`, each with its own extra `replica` label.
#[derive(Debug, Clone)]
pub struct ScrapeJob {
    /// The job's name.
    pub job: String,
    /// `(replica name, address)` of each target.
    pub targets: Vec<(String, SocketAddr)>,
}

/// One element of an instant vector: its labels and value.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Every label, `__name__` included when the query keeps it.
    pub labels: BTreeMap<String, String>,
    /// The value (`NaN` and the infinities as Prometheus writes them).
    pub value: f64,
}

/// The running server.
#[derive(Debug)]
pub struct Prometheus {
    /// Its HTTP address (`http://<addr>/`: the API and its web UI).
    pub addr: SocketAddr,
    http: reqwest::Client,
    log: PathBuf,
    child: Child,
    dir: Option<tempfile::TempDir>,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        // kill_on_drop ends the process; the log is kept for a failed test.
        if std::thread::panicking()
            && let Some(dir) = self.dir.take()
        {
            eprintln!(
                "Prometheus's log is kept in {}",
                dir.keep().join("prometheus.log").display()
            );
        }
    }
}

impl Prometheus {
    /// Starts Prometheus scraping `jobs` every second with the project's alert rules
    /// ([`rules_file`]) evaluated every second, and waits until it is ready (`/-/ready`).
    ///
    /// # Errors
    /// When the binary is missing, or the server exits or is not ready within 60 s (the
    /// error carries the end of its log).
    pub async fn start(jobs: &[ScrapeJob]) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("reseller-prometheus-")
            .tempdir()?;
        // YAML is a superset of JSON: the configuration is written as JSON.
        let config = json!({
            "global": {
                "scrape_interval": "1s",
                "scrape_timeout": "1s",
                "evaluation_interval": "1s",
            },
            "rule_files": [rules_file().canonicalize().context("the alert rule file")?],
            "scrape_configs": jobs.iter().map(|job| json!({
                "job_name": job.job,
                "static_configs": job.targets.iter().map(|(replica, addr)| json!({
                    "targets": [addr.to_string()],
                    "labels": {"replica": replica},
                })).collect::<Vec<_>>(),
            })).collect::<Vec<_>>(),
        });
        let config_file = dir.path().join("prometheus.yml");
        std::fs::write(&config_file, serde_json::to_vec_pretty(&config)?)?;
        let addr: SocketAddr = ([127, 0, 0, 1], crate::cluster::free_port()).into();
        let log = dir.path().join("prometheus.log");
        let out = std::fs::File::create(&log)?;
        let child = Command::new(binary())
            .arg(format!("--config.file={}", config_file.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            // Debian's default points at /usr/share/prometheus; none is needed here.
            .arg(format!("--web.console.templates={}", dir.path().display()))
            .arg(format!("--web.console.libraries={}", dir.path().display()))
            .stdin(Stdio::piped())
            .stdout(out.try_clone()?)
            .stderr(out)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| {
                format!(
                    "starting {} (install Debian's prometheus package, or set PROMETHEUS_BIN)",
                    binary().display()
                )
            })?;
        let mut server = Self {
            addr,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()?,
            log,
            child,
            dir: Some(dir),
        };
        server.wait_ready(Duration::from_secs(60)).await?;
        Ok(server)
    }

    async fn wait_ready(&mut self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + timeout;
        let url = format!("http://{}/-/ready", self.addr);
        loop {
            if let Ok(answer) = self.http.get(&url).send().await
                && answer.status().is_success()
            {
                return Ok(());
            }
            if let Some(status) = self.child.try_wait()? {
                anyhow::bail!(
                    "prometheus exited ({status}); its log ends:\n{}",
                    self.log_tail(30)
                );
            }
            if tokio::time::Instant::now() >= deadline {
                anyhow::bail!(
                    "prometheus not ready within {timeout:?}; its log ends:\n{}",
                    self.log_tail(30)
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The last `lines` lines of its log.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// `GET /api/v1/<path>` with `params`: the answer's `data` when its `status` is
    /// `success`.
    ///
    /// # Errors
    /// When the request fails or Prometheus answers an error (its `errorType` and
    /// `error`, e.g. a PromQL syntax error).
    pub async fn api(&self, path: &str, params: &[(&str, &str)]) -> anyhow::Result<Value> {
        let url = format!("http://{}/api/v1/{path}", self.addr);
        let body: Value = self
            .http
            .get(&url)
            .query(params)
            .send()
            .await
            .with_context(|| format!("GET {url}"))?
            .json()
            .await
            .with_context(|| format!("GET {url}: not JSON"))?;
        if body["status"] != "success" {
            anyhow::bail!(
                "GET {url} {params:?}: {} {}",
                body["errorType"].as_str().unwrap_or("?"),
                body["error"].as_str().unwrap_or("?")
            );
        }
        Ok(body["data"].clone())
    }

    /// An instant query (`/api/v1/query`) that must answer a vector.
    ///
    /// # Errors
    /// When the query fails or answers something other than a vector.
    pub async fn query(&self, promql: &str) -> anyhow::Result<Vec<Sample>> {
        let data = self.api("query", &[("query", promql)]).await?;
        anyhow::ensure!(
            data["resultType"] == "vector",
            "{promql}: a {} answer, not a vector",
            data["resultType"]
        );
        data["result"]
            .as_array()
            .context("no result")?
            .iter()
            .map(|element| {
                let labels = serde_json::from_value(element["metric"].clone())?;
                let value = element["value"][1]
                    .as_str()
                    .context("no value")?
                    .parse::<f64>()?;
                Ok(Sample { labels, value })
            })
            .collect()
    }

    /// Asks `promql` every 500 ms until `accept` takes its answer, and returns that
    /// answer; after `timeout`, fails with the last answer (or error) and `what`.
    ///
    /// # Errors
    /// When `accept` took no answer within `timeout`.
    pub async fn query_until(
        &self,
        what: &str,
        promql: &str,
        timeout: Duration,
        accept: impl Fn(&[Sample]) -> bool,
    ) -> anyhow::Result<Vec<Sample>> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let last = match self.query(promql).await {
                Ok(samples) if accept(&samples) => return Ok(samples),
                Ok(samples) => format!("{samples:?}"),
                Err(err) => format!("error: {err:#}"),
            };
            if tokio::time::Instant::now() >= deadline {
                anyhow::bail!(
                    "{what}: `{promql}` not as expected within {timeout:?}; last answer: {last}"
                );
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// Every scrape target (`/api/v1/targets`, active ones): `(replica label, health,
    /// last error)`.
    ///
    /// # Errors
    /// When the API fails.
    pub async fn targets(&self) -> anyhow::Result<Vec<(String, String, String)>> {
        let data = self.api("targets", &[("state", "active")]).await?;
        Ok(data["activeTargets"]
            .as_array()
            .context("no activeTargets")?
            .iter()
            .map(|t| {
                let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
                (
                    text(&t["labels"]["replica"]),
                    text(&t["health"]),
                    text(&t["lastError"]),
                )
            })
            .collect())
    }

    /// Every alerting rule loaded (`/api/v1/rules?type=alert`): its name, and its health
    /// (`ok` once evaluated without error, `unknown` before, `err` with `lastError`).
    ///
    /// # Errors
    /// When the API fails.
    pub async fn alert_rules(&self) -> anyhow::Result<Vec<(String, String, String)>> {
        let data = self.api("rules", &[("type", "alert")]).await?;
        let mut rules = Vec::new();
        for group in data["groups"].as_array().context("no groups")? {
            for rule in group["rules"].as_array().context("no rules")? {
                let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
                rules.push((
                    text(&rule["name"]),
                    text(&rule["health"]),
                    text(&rule["lastError"]),
                ));
            }
        }
        Ok(rules)
    }

    /// The text a target serves at `http://<addr>/metrics`.
    ///
    /// # Errors
    /// When the request fails or answers other than 200.
    pub async fn scrape(&self, addr: SocketAddr) -> anyhow::Result<String> {
        let url = format!("http://{addr}/metrics");
        let answer = self
            .http
            .get(&url)
            .send()
            .await
            .with_context(|| format!("GET {url}"))?;
        anyhow::ensure!(
            answer.status().is_success(),
            "GET {url}: {}",
            answer.status()
        );
        Ok(answer.text().await?)
    }
}

/// Runs `promtool check metrics` on `exposition` (Prometheus text format, fed on stdin):
/// its exit status and what it printed. It fails on a malformed exposition and on lint
/// problems (a counter without `_total`, a metric without `# HELP`, a unit that is not
/// a base unit, ...).
///
/// # Errors
/// When promtool cannot be run.
pub async fn check_metrics(exposition: &str) -> anyhow::Result<(std::process::ExitStatus, String)> {
    use tokio::io::AsyncWriteExt;
    let mut child = Command::new(promtool())
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| {
            format!(
                "starting {} (Debian's prometheus package)",
                promtool().display()
            )
        })?;
    let mut stdin = child.stdin.take().context("promtool's stdin")?;
    stdin.write_all(exposition.as_bytes()).await?;
    drop(stdin);
    let output = child.wait_with_output().await?;
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    Ok((output.status, printed))
}
