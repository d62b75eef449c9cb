//! The stack under test: a fresh database, a private `nats-server` with JetStream, and the
//! release `reseller-portal serve` as a subprocess (so its memory can be read from
//! `/proc/<pid>/status`).

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use reseller_kit::auth::{JwtAuth, Role};
use reseller_proto::v1 as pb;
use reseller_tests::db::TestDb;
use reseller_tests::nats::NatsServer;
use sqlx::postgres::PgPoolOptions;
use sqlx::{AssertSqlSafe, PgPool};
use tokio::process::{Child, Command};
use tonic::transport::{Channel, Endpoint};

use crate::clients::Caller;

/// How the stack is started.
#[derive(Debug, Clone)]
pub struct StackConfig {
    /// The `reseller-portal` binary.
    pub portal_bin: PathBuf,
    /// `RUST_LOG` of the service.
    pub rust_log: String,
    /// Where the service's output goes.
    pub log_path: PathBuf,
    /// Extra `KEY=VALUE` settings for the service (e.g. `DATABASE_MAX_CONNECTIONS=32`).
    pub env: Vec<(String, String)>,
    /// PostgreSQL settings for the bench database (`ALTER DATABASE ... SET`), applied
    /// before the service connects: for profiling (e.g. `log_min_duration_statement`).
    pub database_settings: Vec<(String, String)>,
}

/// The running stack. Fields drop in order: the service, then NATS, then the database.
pub struct Stack {
    child: Option<Child>,
    /// The service's process ID.
    pub pid: u32,
    /// Its gRPC address.
    pub addr: SocketAddr,
    /// A channel to it.
    pub channel: Channel,
    /// Mints the bench's tokens with the service's secret.
    pub auth: JwtAuth,
    /// A small pool on the service's database, for the references and for settling.
    pub pool: PgPool,
    /// The private NATS server.
    pub nats: NatsServer,
    /// The service's database.
    pub db: TestDb,
    /// Where the service logs.
    pub log_path: PathBuf,
}

impl std::fmt::Debug for Stack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stack")
            .field("pid", &self.pid)
            .field("addr", &self.addr)
            .finish()
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// A channel to `addr` with the settings the bench wants (no Nagle, big messages).
pub async fn connect(addr: SocketAddr) -> anyhow::Result<Channel> {
    Ok(Endpoint::from_shared(format!("http://{addr}"))?
        .tcp_nodelay(true)
        .connect_timeout(Duration::from_secs(5))
        .initial_stream_window_size(Some(4 * 1024 * 1024))
        .initial_connection_window_size(Some(8 * 1024 * 1024))
        .connect()
        .await?)
}

impl Stack {
    /// Every NATS server of the stack, comma-separated (one for this stack).
    pub fn nats_url(&self) -> String {
        self.nats.url.clone()
    }

    /// Creates the database and NATS server, starts the service and waits until it
    /// answers.
    ///
    /// # Errors
    /// When a part does not start.
    pub async fn start(config: &StackConfig) -> anyhow::Result<Self> {
        if !config.portal_bin.is_file() {
            bail!(
                "{} not found: build it with `cargo build --release -p reseller-portal`",
                config.portal_bin.display()
            );
        }
        let db = TestDb::create().await;
        if !config.database_settings.is_empty() {
            let name = db
                .url
                .rsplit('/')
                .next()
                .unwrap_or_default()
                .split('?')
                .next()
                .unwrap_or_default()
                .to_owned();
            let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&db.url).await?;
            for (key, value) in &config.database_settings {
                let valid = |s: &str| {
                    !s.is_empty()
                        && s.chars()
                            .all(|c| c.is_ascii_alphanumeric() || "_.,-".contains(c))
                };
                if !valid(key) || !valid(value) {
                    bail!(
                        "database setting {key}={value}: only letters, digits and _ . , - are allowed"
                    );
                }
                sqlx::query(AssertSqlSafe(format!(
                    "ALTER DATABASE {name} SET {key} = '{value}'"
                )))
                .execute(&mut conn)
                .await
                .with_context(|| format!("setting {key}"))?;
            }
        }
        let nats = NatsServer::start().await;
        let secret = uuid::Uuid::new_v4().simple().to_string();
        let port = free_port()?;
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse()?;
        let log = std::fs::File::create(&config.log_path)
            .with_context(|| format!("creating {}", config.log_path.display()))?;
        let mut command = Command::new(&config.portal_bin);
        command
            .arg("serve")
            .env("DATABASE_URL", &db.url)
            .env("NATS_URL", &nats.url)
            .env("GRPC_ADDR", addr.to_string())
            .env("AUTH_JWT_SECRET", &secret)
            .env("RUST_LOG", &config.rust_log)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true);
        for (key, value) in &config.env {
            command.env(key, value);
        }
        let mut child = command
            .spawn()
            .with_context(|| format!("starting {}", config.portal_bin.display()))?;
        let pid = child.id().context("the service has no pid")?;
        let pool = PgPoolOptions::new()
            .max_connections(4)
            .connect(&db.url)
            .await
            .context("connecting to the bench database")?;
        let auth = JwtAuth::new(&secret);

        // Ready when a real call gets a real answer (migrations run before serving).
        let deadline = Instant::now() + Duration::from_secs(120);
        let channel = loop {
            if let Some(status) = child.try_wait()? {
                bail!(
                    "reseller-portal exited with {status} during start-up:\n{}",
                    tail(&config.log_path, 30)
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "reseller-portal did not answer within 120 s:\n{}",
                    tail(&config.log_path, 30)
                );
            }
            if let Ok(channel) = connect(addr).await {
                let caller = Caller::new(channel.clone(), &auth, Role::Admin, "bench-admin")?;
                let answer = tokio::time::timeout(
                    Duration::from_secs(5),
                    caller.accounts().get_account(pb::GetAccountRequest {
                        knox_id: "999999999999".into(),
                    }),
                )
                .await;
                match answer {
                    Ok(Ok(_)) => break channel,
                    Ok(Err(status)) if status.code() == tonic::Code::NotFound => break channel,
                    _ => {}
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        Ok(Self {
            child: Some(child),
            pid,
            addr,
            channel,
            auth,
            pool,
            nats,
            db,
            log_path: config.log_path.clone(),
        })
    }

    /// A caller with a token for `subject` in `role`.
    ///
    /// # Errors
    /// Only if minting fails.
    pub fn caller(&self, role: Role, subject: &str) -> anyhow::Result<Caller> {
        Caller::new(self.channel.clone(), &self.auth, role, subject)
    }

    /// A caller on a channel of its own (its own HTTP/2 connection).
    ///
    /// # Errors
    /// When connecting fails.
    pub async fn caller_own_channel(&self, role: Role, subject: &str) -> anyhow::Result<Caller> {
        Caller::new(connect(self.addr).await?, &self.auth, role, subject)
    }

    /// The service's memory now.
    ///
    /// # Errors
    /// When `/proc/<pid>/status` cannot be read.
    pub fn memory(&self) -> anyhow::Result<Memory> {
        Memory::of(self.pid)
    }

    /// Resets the service's peak resident set (`VmHWM`) to its current size
    /// (`echo 5 > /proc/<pid>/clear_refs`).
    ///
    /// # Errors
    /// When the kernel refuses.
    pub fn reset_peak(&self) -> anyhow::Result<()> {
        std::fs::write(format!("/proc/{}/clear_refs", self.pid), "5")
            .context("resetting VmHWM through /proc/<pid>/clear_refs")
    }

    /// Whether the service is still running.
    pub fn alive(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Stops the service with SIGTERM (it drains), killing it after 15 s.
    pub async fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(self.pid.to_string())
                .status()
                .await;
            if tokio::time::timeout(Duration::from_secs(15), child.wait())
                .await
                .is_err()
            {
                let _ = child.kill().await;
            }
        }
        self.pool.close().await;
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
