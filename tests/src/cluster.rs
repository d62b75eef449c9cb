//! The deployed shape on one machine, for tests that need it whole: a private PostgreSQL
//! server ([`postgres::PostgresServer`]), a NATS JetStream cluster ([`nats::NatsCluster`])
//! and every service as its own OS process — the real `customer-service`,
//! `device-service`, `msp-link-service` and `reporting-service` binaries
//! ([`binaries`]) — in replicas, each on its own port ([`Cluster`]). Everything runs on
//! free loopback ports under one temp dir and is stopped on drop, also when the test
//! panics (the temp dir, with every log, is then kept and its path printed).
//!
//! Each replica connects to PostgreSQL with `application_name=<binary>-<index>`, so a
//! test can see in `pg_stat_activity` and `pg_locks` which replica holds what (the relay
//! leadership: [`Cluster::relay_leader`]). Each serves its Prometheus metrics on a port
//! of its own ([`Replica::metrics_addr`], `METRICS_ADDR`). `deploy/local/cluster.sh`
//! starts the same shape for people.

pub mod balancer;
pub mod binaries;
pub mod nats;
pub mod postgres;

use std::net::{SocketAddr, TcpListener};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::Context;
use reseller_kit::auth::{JwtAuth, Role};
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;
use tokio::process::{Child, Command};
use tonic::transport::Channel;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

use crate::clients::Caller;

/// One of the four service programs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Service {
    /// `customer-service`.
    Customer,
    /// `device-service`.
    Device,
    /// `msp-link-service`.
    MspLink,
    /// `reporting-service`.
    Reporting,
}

impl Service {
    /// All four.
    pub const ALL: [Self; 4] = [Self::Customer, Self::Device, Self::MspLink, Self::Reporting];

    /// Its binary (and package) name.
    pub fn binary(self) -> &'static str {
        match self {
            Self::Customer => "customer-service",
            Self::Device => "device-service",
            Self::MspLink => "msp-link-service",
            Self::Reporting => "reporting-service",
        }
    }

    /// The name its readiness is reported under in `grpc.health.v1`.
    pub fn health_name(self) -> &'static str {
        match self {
            Self::Customer => "reseller.v1.CustomerService",
            Self::Device => "reseller.v1.DeviceService",
            Self::MspLink => "reseller.v1.MspService",
            Self::Reporting => "reseller.v1.ReportingService",
        }
    }

    /// The PostgreSQL schema it owns (and whose outbox its relay publishes).
    pub fn schema(self) -> &'static str {
        match self {
            Self::Customer => "customer",
            Self::Device => "device",
            Self::MspLink => "msp",
            Self::Reporting => "reporting",
        }
    }

    /// Whether it calls customer-service (`CUSTOMER_SERVICE_URL`).
    fn calls_customer_service(self) -> bool {
        matches!(self, Self::Device | Self::MspLink)
    }
}

/// How big a cluster to start.
#[derive(Debug, Clone, Copy)]
pub struct ClusterOptions {
    /// Processes per service.
    pub replicas: usize,
    /// NATS servers.
    pub nats_nodes: usize,
    /// `NATS_STREAM_REPLICAS`.
    pub stream_replicas: usize,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        Self {
            replicas: 2,
            nats_nodes: 3,
            stream_replicas: 3,
        }
    }
}

/// One process of a service.
#[derive(Debug)]
pub struct Replica {
    /// Which service.
    pub service: Service,
    /// Its index among the service's replicas.
    pub index: usize,
    /// Its gRPC address.
    pub addr: SocketAddr,
    /// Where it serves its metrics (`METRICS_ADDR`): `http://<metrics_addr>/metrics`.
    pub metrics_addr: SocketAddr,
    /// A lazily connected channel to it (reconnects after a restart).
    pub channel: Channel,
    env: Vec<(&'static str, String)>,
    log: PathBuf,
    child: Option<Child>,
}

impl Replica {
    /// `<binary>-<index>`, also its PostgreSQL `application_name`.
    pub fn name(&self) -> String {
        format!("{}-{}", self.service.binary(), self.index)
    }
}

/// The running cluster. Dropping it kills every process and removes its files.
#[derive(Debug)]
pub struct Cluster {
    /// The JWT secret every replica trusts.
    pub secret: String,
    /// The services' database.
    pub database_url: String,
    // Drop order (fields drop in order): the services, then NATS, then PostgreSQL, then
    // the directory.
    replicas: Vec<Replica>,
    customer_front: balancer::Balancer,
    /// The NATS cluster.
    pub nats: nats::NatsCluster,
    /// The private PostgreSQL server.
    pub postgres: postgres::PostgresServer,
    /// A small pool on the services' database, for inspection.
    pub db: PgPool,
    bin_dir: PathBuf,
    dir: Option<tempfile::TempDir>,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let keep = std::thread::panicking() || std::env::var_os("RESELLER_CLUSTER_KEEP").is_some();
        if keep && let Some(dir) = self.dir.take() {
            eprintln!(
                "the cluster's logs are kept in {} (each process's log, postgres/server.log, nats-*/server.log)",
                dir.keep().display()
            );
        }
    }
}

/// A free loopback port (free when asked; the caller binds it soon after).
pub fn free_port() -> u16 {
    free_ports(1)[0]
}

/// `n` distinct free loopback ports.
pub fn free_ports(n: usize) -> Vec<u16> {
    // Held together, so that the OS hands out distinct ones, then released.
    let listeners: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("a free port"))
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().expect("a bound port").port())
        .collect()
}

impl Cluster {
    /// Starts PostgreSQL, NATS and `options.replicas` processes of every service, all at
    /// once (as a Kubernetes rollout would), and waits until every replica reports its
    /// service `SERVING`.
    ///
    /// # Errors
    /// When a part does not come up; the error names the log to read.
    pub async fn start(options: ClusterOptions) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("reseller-cluster-")
            .tempdir()?;
        match Self::start_in(dir.path(), options).await {
            Ok(mut cluster) => {
                cluster.dir = Some(dir);
                Ok(cluster)
            }
            Err(err) => {
                // What did start is stopped as the error drops it; its logs stay.
                let kept = dir.keep();
                Err(err.context(format!("the logs are kept in {}", kept.display())))
            }
        }
    }

    async fn start_in(dir: &Path, options: ClusterOptions) -> anyhow::Result<Self> {
        let bin_dir = tokio::task::spawn_blocking(binaries::service_binaries_dir).await??;
        let postgres = postgres::PostgresServer::start(dir).await?;
        let admin = postgres.url("postgres");
        let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&admin).await?;
        sqlx::query("CREATE DATABASE reseller")
            .execute(&mut conn)
            .await?;
        let database_url = postgres.url("reseller");
        let db = PgPoolOptions::new()
            .max_connections(2)
            .connect(&database_url)
            .await?;
        let nats = nats::NatsCluster::start(dir, options.nats_nodes).await?;
        let secret = format!("cluster-secret-{}", uuid::Uuid::new_v4());
        // Per replica: its gRPC port, then its metrics port.
        let count = Service::ALL.len() * options.replicas;
        let ports = free_ports(2 * count);
        let (ports, metrics_ports) = ports.split_at(count);
        // customer-service behind one address, as a Kubernetes Service puts it.
        let customer_front = balancer::Balancer::start(
            ports[..options.replicas]
                .iter()
                .map(|&port| SocketAddr::from(([127, 0, 0, 1], port)))
                .collect(),
        )
        .await?;
        let mut replicas = Vec::new();
        for (s, service) in Service::ALL.into_iter().enumerate() {
            for index in 0..options.replicas {
                let port = ports[s * options.replicas + index];
                let addr: SocketAddr = ([127, 0, 0, 1], port).into();
                let metrics_addr: SocketAddr =
                    ([127, 0, 0, 1], metrics_ports[s * options.replicas + index]).into();
                let name = format!("{}-{index}", service.binary());
                let mut env = vec![
                    (
                        "DATABASE_URL",
                        format!("{database_url}?application_name={name}"),
                    ),
                    ("NATS_URL", nats.url_list()),
                    ("NATS_STREAM_REPLICAS", options.stream_replicas.to_string()),
                    ("GRPC_ADDR", addr.to_string()),
                    ("METRICS_ADDR", metrics_addr.to_string()),
                    ("AUTH_JWT_SECRET", secret.clone()),
                    ("LOG_FORMAT", "text".into()),
                    (
                        "RUST_LOG",
                        std::env::var("CLUSTER_RUST_LOG").unwrap_or_else(|_| "info".into()),
                    ),
                    ("SHUTDOWN_GRACE_SECONDS", "5".into()),
                    ("DATABASE_MAX_CONNECTIONS", "8".into()),
                    ("TMPDIR", dir.display().to_string()),
                ];
                if service.calls_customer_service() {
                    env.push((
                        "CUSTOMER_SERVICE_URL",
                        format!("http://{}", customer_front.addr()),
                    ));
                }
                replicas.push(Replica {
                    service,
                    index,
                    addr,
                    metrics_addr,
                    channel: Channel::from_shared(format!("http://{addr}"))?
                        .connect_timeout(Duration::from_secs(2))
                        .timeout(Duration::from_secs(60))
                        .connect_lazy(),
                    env,
                    log: dir.join(format!("{name}.log")),
                    child: None,
                });
            }
        }
        let mut cluster = Self {
            secret,
            database_url,
            replicas,
            customer_front,
            nats,
            postgres,
            db,
            bin_dir,
            dir: None,
        };
        for i in 0..cluster.replicas.len() {
            cluster.spawn(i)?;
        }
        let waits: Vec<_> = (0..cluster.replicas.len())
            .map(|i| cluster.wait_serving(i, Duration::from_secs(120)))
            .collect();
        futures::future::try_join_all(waits).await?;
        Ok(cluster)
    }

    /// The directory holding every log.
    pub fn dir(&self) -> &Path {
        self.dir
            .as_ref()
            .map(tempfile::TempDir::path)
            .unwrap_or(Path::new("/"))
    }

    /// Where customer-service answers for the other services (its load balancer).
    pub fn customer_service_addr(&self) -> SocketAddr {
        self.customer_front.addr()
    }

    /// The replicas of `service`.
    pub fn replicas(&self, service: Service) -> impl Iterator<Item = &Replica> {
        self.replicas.iter().filter(move |r| r.service == service)
    }

    /// Replica `index` of `service`.
    ///
    /// # Panics
    /// When there is no such replica.
    pub fn replica(&self, service: Service, index: usize) -> &Replica {
        self.replicas
            .iter()
            .find(|r| r.service == service && r.index == index)
            .expect("no such replica")
    }

    fn position(&self, service: Service, index: usize) -> usize {
        self.replicas
            .iter()
            .position(|r| r.service == service && r.index == index)
            .expect("no such replica")
    }

    /// A valid token for `subject` in `role`.
    ///
    /// # Panics
    /// Only if minting fails.
    pub fn token(&self, role: Role, subject: &str) -> String {
        JwtAuth::new(&self.secret)
            .mint(role, subject, Duration::from_secs(3600))
            .expect("mint")
    }

    /// Clients of every replica, usable while the cluster is killed and restarted.
    pub fn clients(&self) -> Clients {
        Clients {
            channels: self
                .replicas
                .iter()
                .map(|r| (r.service, r.index, r.channel.clone()))
                .collect(),
            secret: self.secret.clone(),
        }
    }

    /// Kills replica `index` of `service` with `SIGKILL` and reaps it.
    ///
    /// # Errors
    /// When it was not running or had exited on its own.
    pub async fn kill(&mut self, service: Service, index: usize) -> anyhow::Result<()> {
        let position = self.position(service, index);
        let replica = &mut self.replicas[position];
        let mut child = replica.child.take().context("the replica is not running")?;
        if let Some(status) = child.try_wait()? {
            anyhow::bail!("{} had exited on its own: {status}", replica.name());
        }
        child.start_kill()?;
        let status = child.wait().await?;
        anyhow::ensure!(
            status.signal() == Some(9),
            "{} ended with {status}",
            replica.name()
        );
        Ok(())
    }

    /// Starts replica `index` of `service` again (same port, same settings) and waits
    /// until it reports `SERVING`.
    ///
    /// # Errors
    /// When it does not come up within 120 s.
    pub async fn restart(&mut self, service: Service, index: usize) -> anyhow::Result<()> {
        let position = self.position(service, index);
        self.spawn(position)?;
        self.wait_serving(position, Duration::from_secs(120)).await
    }

    /// Programs that exited although the test did not kill them: every replica and NATS
    /// node (`name: status`), and PostgreSQL.
    pub async fn exited_on_their_own(&mut self) -> Vec<String> {
        let mut exited: Vec<String> = self
            .replicas
            .iter_mut()
            .filter_map(|r| {
                let status = r.child.as_mut()?.try_wait().ok()??;
                Some(format!("{}: {status}", r.name()))
            })
            .collect();
        exited.extend(
            self.nats
                .exited_on_their_own()
                .into_iter()
                .map(|(name, status)| format!("{name}: {status}")),
        );
        if !self.postgres.is_running().await {
            exited.push("postgres: not running".into());
        }
        exited
    }

    /// Which replica of `service` holds its schema's relay leadership (the session
    /// advisory lock `hashtext('outbox:<schema>')` of `reseller_kit::outbox`), if any.
    ///
    /// # Errors
    /// When PostgreSQL cannot be asked.
    pub async fn relay_leader(&self, service: Service) -> anyhow::Result<Option<usize>> {
        // A one-key advisory lock shows its 64-bit key as classid (high half) and objid
        // (low half), with objsubid 1.
        let holder: Option<String> = sqlx::query_scalar(
            "SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid \
             WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1 \
               AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()) \
               AND l.classid = ((hashtext($1)::bigint >> 32) & 4294967295)::oid \
               AND l.objid = (hashtext($1)::bigint & 4294967295)::oid",
        )
        .bind(format!("outbox:{}", service.schema()))
        .fetch_optional(&self.db)
        .await?;
        let prefix = format!("{}-", service.binary());
        Ok(holder.and_then(|name| name.strip_prefix(&prefix)?.parse().ok()))
    }

    /// The `ERROR` and `WARN` lines of every replica's log, without their timestamps and
    /// with repeats counted, most frequent first: what went wrong, for the test's report.
    pub fn log_problems(&self) -> Vec<(usize, String)> {
        let mut counts: std::collections::BTreeMap<String, usize> = Default::default();
        for replica in &self.replicas {
            let text = std::fs::read_to_string(&replica.log).unwrap_or_default();
            for line in text.lines() {
                let plain = strip_ansi(line);
                let Some(at) = plain.find(" ERROR ").or_else(|| plain.find(" WARN ")) else {
                    continue;
                };
                let message: String = plain[at..].trim().chars().take(300).collect();
                *counts
                    .entry(format!("{}: {message}", replica.name()))
                    .or_default() += 1;
            }
        }
        let mut problems: Vec<(usize, String)> = counts.into_iter().map(|(m, n)| (n, m)).collect();
        problems.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
        problems
    }

    fn spawn(&mut self, position: usize) -> anyhow::Result<()> {
        let binary = self.bin_dir.join(self.replicas[position].service.binary());
        let replica = &mut self.replicas[position];
        // Appended to, so a restart's log follows the killed run's.
        let mut log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&replica.log)?;
        std::io::Write::write_all(
            &mut log,
            format!("=== starting {} ===\n", replica.name()).as_bytes(),
        )?;
        let child = Command::new(&binary)
            // A setting of the caller's environment that the replicas must not share (the
            // caller's METRICS_ADDR is replaced by each replica's own, in `env`).
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            .envs(replica.env.iter().map(|(k, v)| (k, v)))
            // Never /dev/null, which is a plain file on some sandboxes.
            .stdin(Stdio::piped())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        replica.child = Some(child);
        Ok(())
    }

    /// Waits until the replica at `position` reports its service `SERVING`; fails at
    /// once, with its log, if it exits.
    async fn wait_serving(&self, position: usize, timeout: Duration) -> anyhow::Result<()> {
        let replica = &self.replicas[position];
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let last = match health(&replica.channel, replica.service.health_name()).await {
                Ok(ServingStatus::Serving) => return Ok(()),
                Ok(other) => format!("{other:?}"),
                Err(status) => status.to_string(),
            };
            if replica.child.as_ref().is_none_or(has_exited) {
                anyhow::bail!(
                    "{} is not running; its log ends:\n{}",
                    replica.name(),
                    tail(&replica.log, 30)
                );
            }
            if tokio::time::Instant::now() >= deadline {
                anyhow::bail!(
                    "{} did not report SERVING within {timeout:?} (last: {last}); its log ends:\n{}",
                    replica.name(),
                    tail(&replica.log, 30)
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// One health check of `name` on `channel`, bounded to 2 s.
async fn health(channel: &Channel, name: &str) -> Result<ServingStatus, tonic::Status> {
    let mut client = HealthClient::new(channel.clone());
    let answer = tokio::time::timeout(
        Duration::from_secs(2),
        client.check(HealthCheckRequest {
            service: name.to_owned(),
        }),
    )
    .await
    .map_err(|_| tonic::Status::deadline_exceeded("health check timed out"))??;
    Ok(ServingStatus::try_from(answer.into_inner().status).unwrap_or(ServingStatus::Unknown))
}

/// Whether `child` has exited (a zombie not yet reaped), seen without `&mut`.
fn has_exited(child: &Child) -> bool {
    let Some(pid) = child.id() else {
        return true; // reaped already
    };
    // /proc/<pid>/stat: "pid (comm) state ..."; comm may hold spaces, state follows ')'.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|stat| {
            stat.rsplit_once(')')
                .is_some_and(|(_, rest)| rest.trim_start().starts_with(['Z', 'X']))
        })
        .unwrap_or(true)
}

/// `line` without terminal escape sequences (`ESC [ ... m` colours, and any other
/// `ESC [ ...` sequence up to its final letter), which text logs written to a file carry.
/// The bench reads the services' logs with it too.
pub fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Clients of every replica, detached from the [`Cluster`] (cheap to clone).
#[derive(Debug, Clone)]
pub struct Clients {
    channels: Vec<(Service, usize, Channel)>,
    secret: String,
}

impl Clients {
    /// How many replicas `service` has.
    pub fn replicas(&self, service: Service) -> usize {
        self.channels.iter().filter(|(s, ..)| *s == service).count()
    }

    /// A caller in `role` as `subject`, talking to replica `index` of `service`.
    ///
    /// # Panics
    /// When there is no such replica.
    pub fn client(&self, service: Service, index: usize, role: Role, subject: &str) -> Caller {
        let channel = self
            .channels
            .iter()
            .find(|(s, i, _)| *s == service && *i == index)
            .map(|(.., c)| c.clone())
            .expect("no such replica");
        let token = JwtAuth::new(&self.secret)
            .mint(role, subject, Duration::from_secs(3600))
            .expect("mint");
        Caller::on(channel, Some(format!("Bearer {token}")))
    }
}
