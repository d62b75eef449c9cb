//! The stack under test, in one of two shapes:
//!
//! - [`Shape::Single`]: a fresh database on `DATABASE_URL`'s server, a private
//!   `nats-server` with JetStream, and the release `reseller-portal serve` (all four
//!   services in one process) as a subprocess, so its memory can be read from
//!   `/proc/<pid>/status`;
//! - [`Shape::Cluster`]: the deployed shape on one machine,
//!   [`reseller_tests::cluster::Cluster`]: a private PostgreSQL server (`initdb`), a NATS
//!   JetStream cluster, and every service as its own process of its own binary, in
//!   replicas (`RESELLER_SERVICE_BIN_DIR` names the binaries' directory).
//!
//! The benchmarks see a [`Stack`]: a database URL and pool, the NATS URLs, and callers
//! whose calls reach every replica of the service they call ([`ServiceChannels`]).

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use reseller_kit::auth::{JwtAuth, Role};
use reseller_proto::v1 as pb;
use reseller_tests::cluster::{Cluster, ClusterOptions, Service};
use reseller_tests::db::TestDb;
use reseller_tests::nats::NatsServer;
use serde_json::{Value, json};
use sqlx::postgres::PgPoolOptions;
use sqlx::{AssertSqlSafe, PgPool};
use tokio::process::{Child, Command};
use tonic::transport::{Channel, Endpoint};

use crate::clients::{Caller, ServiceChannels};

/// The PostgreSQL `application_name` of the bench's own connections.
pub const BENCH_APPLICATION_NAME: &str = "reseller-bench";
/// The `application_name` the single-process stack's `reseller-portal` connects with.
pub const PORTAL_APPLICATION_NAME: &str = "reseller-portal";

/// Which stack the benchmarks run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Shape {
    /// `reseller-portal serve`: the four services in one process, one NATS server.
    Single,
    /// Each service its own process, in replicas; a NATS cluster; a private PostgreSQL.
    Cluster,
}

/// How the stack is started.
#[derive(Debug, Clone)]
pub struct StackConfig {
    /// The shape and what only it needs.
    pub shape: ShapeConfig,
    /// `RUST_LOG` of the service (on the cluster shape the harness reads it from
    /// `CLUSTER_RUST_LOG`, which `main` sets).
    pub rust_log: String,
    /// Where the service's output goes: a file on the single shape; a directory on the
    /// cluster shape, into which every process's log is copied when the stack stops (the
    /// harness removes its own directory).
    pub log_path: PathBuf,
    /// Extra `KEY=VALUE` settings for the service (single shape only).
    pub env: Vec<(String, String)>,
    /// Variables the service does not inherit from the bench (single shape only; `env`
    /// may set them again).
    pub env_remove: Vec<String>,
    /// PostgreSQL settings for the bench database (`ALTER DATABASE ... SET`), applied
    /// before the service connects (single shape only).
    pub database_settings: Vec<(String, String)>,
}

/// What each shape needs.
#[derive(Debug, Clone)]
pub enum ShapeConfig {
    /// The single-process stack and its binary.
    Single {
        /// The `reseller-portal` binary.
        portal_bin: PathBuf,
    },
    /// The cluster shape and its size.
    Cluster(ClusterOptions),
}

impl ShapeConfig {
    /// `NATS_STREAM_REPLICAS` of the services (1 on the single shape's one server).
    pub fn stream_replicas(&self) -> usize {
        match self {
            Self::Single { .. } => 1,
            Self::Cluster(options) => options.stream_replicas,
        }
    }

    /// The shape as JSON, for every result.
    pub fn describe(&self) -> Value {
        match self {
            Self::Single { portal_bin } => json!({
                "name": "single",
                "what": "reseller-portal serve: the four services in one process; one nats-server; a database on DATABASE_URL's server",
                "replicas": 1,
                "nats_nodes": 1,
                "stream_replicas": 1,
                "portal_bin": portal_bin.display().to_string(),
            }),
            Self::Cluster(o) => json!({
                "name": "cluster",
                "what": "customer-service, device-service, msp-link-service and reporting-service each as its own processes (replicas), a NATS JetStream cluster, a private PostgreSQL (initdb); callers balance over each service's replicas",
                "replicas": o.replicas,
                "nats_nodes": o.nats_nodes,
                "stream_replicas": o.stream_replicas,
            }),
        }
    }
}

/// The running stack. Fields drop in order: the pool, then the processes.
pub struct Stack {
    /// Mints the bench's tokens with the services' secret.
    pub auth: JwtAuth,
    /// A small pool on the services' database (`application_name=reseller-bench`), for
    /// the references, for settling and for counting.
    pub pool: PgPool,
    /// The services' database.
    pub database_url: String,
    /// Every NATS server, comma-separated.
    pub nats_url: String,
    channels: ServiceChannels,
    processes: Processes,
}

/// The processes behind a [`Stack`].
enum Processes {
    Single(Box<SingleProcess>),
    Cluster(Box<ClusterProcesses>),
}

/// `reseller-portal serve` and what it runs on. Fields drop in order: the service, then
/// NATS, then the database.
struct SingleProcess {
    child: Option<Child>,
    pid: u32,
    addr: SocketAddr,
    /// Runs until dropped.
    _nats: NatsServer,
    db: TestDb,
    log_path: PathBuf,
}

/// The cluster, and where its logs are copied to when it stops.
struct ClusterProcesses {
    cluster: Cluster,
    log_dir: PathBuf,
}

impl std::fmt::Debug for Stack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stack")
            .field("database_url", &self.database_url)
            .field("nats_url", &self.nats_url)
            .finish()
    }
}

/// A loopback port free right now.
///
/// # Errors
/// When no port can be bound.
pub fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// `url` with `application_name=<name>` added to its query.
pub fn with_application_name(url: &str, name: &str) -> String {
    let separator = if url.contains('?') { '&' } else { '?' };
    format!("{url}{separator}application_name={name}")
}

/// The endpoint of `addr` with the settings the bench wants (no Nagle, big windows).
fn endpoint(addr: SocketAddr) -> anyhow::Result<Endpoint> {
    Ok(Endpoint::from_shared(format!("http://{addr}"))?
        .tcp_nodelay(true)
        .connect_timeout(Duration::from_secs(5))
        .initial_stream_window_size(Some(4 * 1024 * 1024))
        .initial_connection_window_size(Some(8 * 1024 * 1024)))
}

/// A channel to `addr`, connected.
pub async fn connect(addr: SocketAddr) -> anyhow::Result<Channel> {
    Ok(endpoint(addr)?.connect().await?)
}

/// A channel spreading calls over `addrs` (tower's power-of-two-choices balancer over
/// one connection per address; `connect` is lazy).
fn balanced(addrs: &[SocketAddr]) -> anyhow::Result<Channel> {
    let endpoints = addrs
        .iter()
        .map(|addr| endpoint(*addr))
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok(Channel::balance_list(endpoints.into_iter()))
}

/// Fresh channels to every replica of every service of `cluster`, balanced per service.
fn cluster_channels(cluster: &Cluster) -> anyhow::Result<ServiceChannels> {
    let of = |service: Service| -> anyhow::Result<Channel> {
        let addrs: Vec<SocketAddr> = cluster.replicas(service).map(|r| r.addr).collect();
        balanced(&addrs)
    };
    Ok(ServiceChannels {
        customer: of(Service::Customer)?,
        device: of(Service::Device)?,
        msp: of(Service::MspLink)?,
        reporting: of(Service::Reporting)?,
    })
}

/// Waits until a real call through `channels` gets a real answer: `GetAccount` of an
/// unknown account answers `NOT_FOUND` (migrations run before serving).
async fn wait_answering(
    channels: &ServiceChannels,
    auth: &JwtAuth,
    mut failed: impl FnMut() -> Option<String>,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(120);
    let caller = Caller::new(channels.clone(), auth, Role::Admin, "bench-admin")?;
    loop {
        if let Some(why) = failed() {
            bail!("{why}");
        }
        if Instant::now() > deadline {
            bail!("the stack did not answer within 120 s");
        }
        let answer = tokio::time::timeout(
            Duration::from_secs(5),
            caller.accounts().get_account(pb::GetAccountRequest {
                knox_id: "999999999999".into(),
            }),
        )
        .await;
        match answer {
            Ok(Ok(_)) => return Ok(()),
            Ok(Err(status)) if status.code() == tonic::Code::NotFound => return Ok(()),
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

async fn bench_pool(database_url: &str) -> anyhow::Result<PgPool> {
    PgPoolOptions::new()
        .max_connections(4)
        .connect(&with_application_name(database_url, BENCH_APPLICATION_NAME))
        .await
        .context("connecting to the bench database")
}

impl Stack {
    /// Starts the stack in `config`'s shape and waits until it answers.
    ///
    /// # Errors
    /// When a part does not start.
    pub async fn start(config: &StackConfig) -> anyhow::Result<Self> {
        match &config.shape {
            ShapeConfig::Single { portal_bin } => Self::start_single(config, portal_bin).await,
            ShapeConfig::Cluster(options) => Self::start_cluster(config, *options).await,
        }
    }

    async fn start_single(config: &StackConfig, portal_bin: &Path) -> anyhow::Result<Self> {
        if !portal_bin.is_file() {
            bail!(
                "{} not found: build it with `cargo build --release -p reseller-portal`",
                portal_bin.display()
            );
        }
        let db = TestDb::create().await;
        if !config.database_settings.is_empty() {
            alter_database(&db.url, &config.database_settings).await?;
        }
        let nats = NatsServer::start().await;
        let secret = uuid::Uuid::new_v4().simple().to_string();
        let port = free_port()?;
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse()?;
        let log = std::fs::File::create(&config.log_path)
            .with_context(|| format!("creating {}", config.log_path.display()))?;
        let mut command = Command::new(portal_bin);
        command
            .arg("serve")
            .env(
                "DATABASE_URL",
                with_application_name(&db.url, PORTAL_APPLICATION_NAME),
            )
            .env("NATS_URL", &nats.url)
            .env("GRPC_ADDR", addr.to_string())
            .env("AUTH_JWT_SECRET", &secret)
            .env("RUST_LOG", &config.rust_log)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true);
        for key in &config.env_remove {
            command.env_remove(key);
        }
        for (key, value) in &config.env {
            command.env(key, value);
        }
        let mut child = command
            .spawn()
            .with_context(|| format!("starting {}", portal_bin.display()))?;
        let pid = child.id().context("the service has no pid")?;
        let pool = bench_pool(&db.url).await?;
        let auth = JwtAuth::new(&secret);
        // One connection, made when first used (retried by the readiness wait).
        let channels = ServiceChannels::same(endpoint(addr)?.connect_lazy());
        let log_path = config.log_path.clone();
        wait_answering(&channels, &auth, || match child.try_wait() {
            Ok(Some(status)) => Some(format!(
                "reseller-portal exited with {status} during start-up:\n{}",
                tail(&log_path, 30)
            )),
            _ => None,
        })
        .await
        .with_context(|| format!("reseller-portal's log ends:\n{}", tail(&log_path, 30)))?;
        Ok(Self {
            auth,
            pool,
            database_url: db.url.clone(),
            nats_url: nats.url.clone(),
            channels,
            processes: Processes::Single(Box::new(SingleProcess {
                child: Some(child),
                pid,
                addr,
                _nats: nats,
                db,
                log_path,
            })),
        })
    }

    async fn start_cluster(config: &StackConfig, options: ClusterOptions) -> anyhow::Result<Self> {
        if !config.env.is_empty()
            || !config.env_remove.is_empty()
            || !config.database_settings.is_empty()
        {
            bail!(
                "--service-env and --database-setting work on the single shape only (the cluster harness takes no extra settings)"
            );
        }
        let cluster = Cluster::start(options)
            .await
            .context("starting the cluster (reseller_tests::cluster)")?;
        let pool = bench_pool(&cluster.database_url).await?;
        let auth = JwtAuth::new(&cluster.secret);
        let channels = cluster_channels(&cluster)?;
        wait_answering(&channels, &auth, || None).await?;
        Ok(Self {
            auth,
            pool,
            database_url: cluster.database_url.clone(),
            nats_url: cluster.nats.url_list(),
            channels,
            processes: Processes::Cluster(Box::new(ClusterProcesses {
                cluster,
                log_dir: config.log_path.clone(),
            })),
        })
    }

    /// What runs, for the progress log.
    pub fn describe(&self) -> String {
        match &self.processes {
            Processes::Single(p) => format!(
                "reseller-portal pid {} on {}, NATS {}, database {}, log {}",
                p.pid,
                p.addr,
                self.nats_url,
                self.database_url,
                p.log_path.display()
            ),
            Processes::Cluster(c) => {
                let replicas: Vec<String> = Service::ALL
                    .into_iter()
                    .flat_map(|s| c.cluster.replicas(s))
                    .map(|r| format!("{} {}", r.name(), r.addr))
                    .collect();
                format!(
                    "{}; NATS {}; PostgreSQL {}; logs in {} (copied to {} at the end)",
                    replicas.join(", "),
                    self.nats_url,
                    self.database_url,
                    c.cluster.dir().display(),
                    c.log_dir.display()
                )
            }
        }
    }

    /// Where the services' logs are (or will be, once stopped).
    pub fn log_location(&self) -> PathBuf {
        match &self.processes {
            Processes::Single(p) => p.log_path.clone(),
            Processes::Cluster(c) => c.log_dir.clone(),
        }
    }

    /// The cluster, on the cluster shape.
    pub fn cluster(&self) -> Option<&Cluster> {
        match &self.processes {
            Processes::Single(_) => None,
            Processes::Cluster(c) => Some(&c.cluster),
        }
    }

    /// The `application_name` of every process that applies events: `<binary>-<index>`
    /// on the cluster shape, `reseller-portal` on the single one.
    pub fn replica_names(&self) -> Vec<String> {
        match &self.processes {
            Processes::Single(_) => vec![PORTAL_APPLICATION_NAME.into()],
            Processes::Cluster(c) => Service::ALL
                .into_iter()
                .flat_map(|s| c.cluster.replicas(s))
                .map(|r| r.name())
                .collect(),
        }
    }

    /// Every service process's log: (process name, file). On the cluster shape the files
    /// in the cluster's directory (`<binary>-<index>.log`), readable while it runs.
    pub fn log_files(&self) -> Vec<(String, PathBuf)> {
        match &self.processes {
            Processes::Single(p) => vec![(PORTAL_APPLICATION_NAME.into(), p.log_path.clone())],
            Processes::Cluster(c) => Service::ALL
                .into_iter()
                .flat_map(|s| c.cluster.replicas(s))
                .map(|r| (r.name(), c.cluster.dir().join(format!("{}.log", r.name()))))
                .collect(),
        }
    }

    fn single(&self, what: &str) -> anyhow::Result<&SingleProcess> {
        match &self.processes {
            Processes::Single(p) => Ok(p),
            Processes::Cluster(_) => bail!("{what} works on the single-process stack only"),
        }
    }

    /// The service's process ID (single shape).
    ///
    /// # Errors
    /// On the cluster shape.
    pub fn pid(&self) -> anyhow::Result<u32> {
        Ok(self.single("reading the service's memory")?.pid)
    }

    /// A client of every NATS server.
    ///
    /// # Errors
    /// When none can be reached.
    pub async fn nats_client(&self) -> anyhow::Result<async_nats::Client> {
        nats_connect(&self.nats_url).await
    }

    /// A caller with a token for `subject` in `role`.
    ///
    /// # Errors
    /// Only if minting fails.
    pub fn caller(&self, role: Role, subject: &str) -> anyhow::Result<Caller> {
        Caller::new(self.channels.clone(), &self.auth, role, subject)
    }

    /// A caller on connections of its own (its own HTTP/2 connection to every replica).
    ///
    /// # Errors
    /// When connecting fails.
    pub async fn caller_own_channel(&self, role: Role, subject: &str) -> anyhow::Result<Caller> {
        let channels = match &self.processes {
            Processes::Single(p) => ServiceChannels::same(connect(p.addr).await?),
            Processes::Cluster(c) => cluster_channels(&c.cluster)?,
        };
        Caller::new(channels, &self.auth, role, subject)
    }

    /// The service's memory now (single shape).
    ///
    /// # Errors
    /// When `/proc/<pid>/status` cannot be read, or on the cluster shape.
    pub fn memory(&self) -> anyhow::Result<Memory> {
        Memory::of(self.pid()?)
    }

    /// Resets the service's peak resident set (`VmHWM`) to its current size
    /// (`echo 5 > /proc/<pid>/clear_refs`; single shape).
    ///
    /// # Errors
    /// When the kernel refuses, or on the cluster shape.
    pub fn reset_peak(&self) -> anyhow::Result<()> {
        std::fs::write(format!("/proc/{}/clear_refs", self.pid()?), "5")
            .context("resetting VmHWM through /proc/<pid>/clear_refs")
    }

    /// The service processes that are no longer running (empty: all are).
    pub async fn exited(&mut self) -> Vec<String> {
        match &mut self.processes {
            Processes::Single(p) => match p.child.as_mut().map(Child::try_wait) {
                Some(Ok(None)) => Vec::new(),
                Some(Ok(Some(status))) => vec![format!("reseller-portal: {status}")],
                Some(Err(err)) => vec![format!("reseller-portal: {err}")],
                None => vec!["reseller-portal: stopped".into()],
            },
            Processes::Cluster(c) => c.cluster.exited_on_their_own().await,
        }
    }

    /// Stops the service: SIGTERM (it drains) and a kill after 15 s on the single shape;
    /// on the cluster shape every process's log is copied to the log directory first (the
    /// cluster kills everything and removes its directory when dropped).
    pub async fn stop(&mut self) {
        self.pool.close().await;
        match &mut self.processes {
            Processes::Single(p) => {
                if let Some(mut child) = p.child.take() {
                    let _ = Command::new("kill")
                        .arg("-TERM")
                        .arg(p.pid.to_string())
                        .status()
                        .await;
                    if tokio::time::timeout(Duration::from_secs(15), child.wait())
                        .await
                        .is_err()
                    {
                        let _ = child.kill().await;
                    }
                }
            }
            Processes::Cluster(c) => {
                if let Err(err) = copy_logs(c.cluster.dir(), &c.log_dir) {
                    eprintln!(
                        "    could not copy the cluster's logs to {}: {err:#}",
                        c.log_dir.display()
                    );
                }
            }
        }
    }

    /// Keeps the bench database instead of dropping it (single shape: the cluster's
    /// private server goes with the cluster). Returns its URL when kept.
    pub fn keep_database(self) -> Option<String> {
        match self.processes {
            Processes::Single(p) => {
                let url = p.db.url.clone();
                std::mem::forget(p.db);
                Some(url)
            }
            Processes::Cluster(_) => None,
        }
    }

    /// Runs `sql` (one or more statements) on the service's database.
    ///
    /// # Errors
    /// Database errors.
    pub async fn execute(&self, sql: &str) -> anyhow::Result<()> {
        sqlx::raw_sql(AssertSqlSafe(sql.to_owned()))
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}

/// A client of every server in `urls` (comma-separated); it fails over among them.
///
/// # Errors
/// When none can be reached.
pub async fn nats_connect(urls: &str) -> anyhow::Result<async_nats::Client> {
    let servers: Vec<&str> = urls.split(',').map(str::trim).collect();
    async_nats::ConnectOptions::new()
        .connection_timeout(Duration::from_secs(5))
        .connect(servers.as_slice())
        .await
        .with_context(|| format!("connecting to NATS at {urls}"))
}

/// `ALTER DATABASE <the database of url> SET key = 'value'` for each setting.
async fn alter_database(url: &str, settings: &[(String, String)]) -> anyhow::Result<()> {
    let name = url
        .rsplit('/')
        .next()
        .unwrap_or_default()
        .split('?')
        .next()
        .unwrap_or_default()
        .to_owned();
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(url).await?;
    for (key, value) in settings {
        let valid = |s: &str| {
            !s.is_empty()
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_.,-".contains(c))
        };
        if !valid(key) || !valid(value) {
            bail!("database setting {key}={value}: only letters, digits and _ . , - are allowed");
        }
        sqlx::query(AssertSqlSafe(format!(
            "ALTER DATABASE {name} SET {key} = '{value}'"
        )))
        .execute(&mut conn)
        .await
        .with_context(|| format!("setting {key}"))?;
    }
    Ok(())
}

/// Copies the cluster's logs out of its directory: `<replica>.log`, `nats-<i>.log` and
/// `postgres.log`.
fn copy_logs(from: &Path, to: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if path.is_file() && name.ends_with(".log") {
            std::fs::copy(&path, to.join(&name))?;
        } else if path.is_dir() && path.join("server.log").is_file() {
            std::fs::copy(path.join("server.log"), to.join(format!("{name}.log")))?;
        }
    }
    Ok(())
}

/// Resident memory of a process, from `/proc/<pid>/status`, in KiB.
#[derive(Debug, Clone, Copy)]
pub struct Memory {
    /// `VmRSS`.
    pub rss_kib: u64,
    /// `VmHWM`: the peak of `VmRSS` (since start or the last reset).
    pub hwm_kib: u64,
}

impl Memory {
    /// Reads `/proc/<pid>/status`.
    ///
    /// # Errors
    /// When it cannot be read or lacks the fields.
    pub fn of(pid: u32) -> anyhow::Result<Self> {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
        let field = |name: &str| -> anyhow::Result<u64> {
            let line = status
                .lines()
                .find(|l| l.starts_with(name))
                .with_context(|| format!("{name} missing from /proc/{pid}/status"))?;
            Ok(line
                .split_whitespace()
                .nth(1)
                .context("no value")?
                .parse()?)
        };
        Ok(Self {
            rss_kib: field("VmRSS:")?,
            hwm_kib: field("VmHWM:")?,
        })
    }
}

/// KiB as MiB, 1 decimal.
pub fn mib(kib: u64) -> f64 {
    (kib as f64 / 1024.0 * 10.0).round() / 10.0
}
