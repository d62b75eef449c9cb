//! A private PostgreSQL server for one test, which the test may stop and restart: made by
//! `initdb` in the test's temp dir, on a free loopback port, run with `pg_ctl`, stopped on
//! drop. Never the shared server the other tests use.
//!
//! PostgreSQL refuses to run as root, so when the test runs as root (the container case)
//! every PostgreSQL program runs as the `postgres` OS user, which owns the server's
//! directory. The binaries are found through `PG_BIN_DIR`, then `PATH`, then the newest
//! `/usr/lib/postgresql/<version>/bin` (Debian keeps them off `PATH`).

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::Context;
use tokio::process::Command;

/// A running private server.
#[derive(Debug)]
pub struct PostgresServer {
    bin_dir: PathBuf,
    /// Owned by the user the server runs as: `data/`, the socket, `server.log`.
    dir: PathBuf,
    port: u16,
    run_as_postgres: bool,
    stopped: bool,
}

impl PostgresServer {
    /// Makes a server under `parent` and starts it.
    ///
    /// # Errors
    /// When the binaries are missing, `initdb` fails, or the server does not start.
    pub async fn start(parent: &Path) -> anyhow::Result<Self> {
        let bin_dir = bin_dir()?;
        let run_as_postgres = running_as_root();
        let dir = parent.join("postgres");
        std::fs::create_dir(&dir)?;
        if run_as_postgres {
            // The postgres user must reach its directory through the test's temp dir.
            std::fs::set_permissions(parent, std::fs::Permissions::from_mode(0o711))?;
            let (uid, gid) = postgres_ids().await?;
            std::os::unix::fs::chown(&dir, Some(uid), Some(gid))?;
        }
        let mut server = Self {
            bin_dir,
            dir,
            port: 0,
            run_as_postgres,
            stopped: true,
        };
        let data = server.data_dir();
        server
            .pg(
                "initdb",
                &[
                    "-D",
                    path_str(&data)?,
                    "-U",
                    "postgres",
                    "-A",
                    "trust",
                    "-E",
                    "UTF8",
                    "--no-locale",
                    "--no-sync",
                ],
            )
            .await?;
        // The settings live in a file of their own so that `pg_ctl restart` keeps them.
        let mut conf = std::fs::OpenOptions::new()
            .append(true)
            .open(data.join("postgresql.conf"))?;
        std::io::Write::write_all(&mut conf, b"\ninclude_if_exists = 'test.conf'\n")?;
        let mut last_error = None;
        for _attempt in 0..5 {
            server.port = super::free_port();
            // Eight replicas with pools, relays and listeners, and the test's own.
            std::fs::write(
                data.join("test.conf"),
                format!(
                    "port = {}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{}'\n\
                     max_connections = 200\n",
                    server.port,
                    server.dir.display()
                ),
            )?;
            match server.pg_ctl(&["start"]).await {
                Ok(()) => {
                    server.stopped = false;
                    return Ok(server);
                }
                // Most likely the port was taken in between: try another.
                Err(err) => last_error = Some(err),
            }
        }
        Err(last_error.unwrap_or_else(|| anyhow::anyhow!("PostgreSQL did not start")))
    }

    /// The URL of database `name` as the superuser (trust authentication on loopback).
    pub fn url(&self, name: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{name}", self.port)
    }

    /// Its port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server's log.
    pub fn log_path(&self) -> PathBuf {
        self.dir.join("server.log")
    }

    /// `pg_ctl restart -m fast`: every connection is cut, the server is back when this
    /// returns.
    ///
    /// # Errors
    /// When the server does not come back.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.pg_ctl(&["-m", "fast", "restart"]).await
    }

    /// Whether the postmaster still runs (`pg_ctl status`).
    pub async fn is_running(&self) -> bool {
        self.pg_ctl(&["status"]).await.is_ok()
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    async fn pg_ctl(&self, args: &[&str]) -> anyhow::Result<()> {
        let data = self.data_dir();
        let log = self.log_path();
        let mut all = vec![
            "-D",
            path_str(&data)?,
            "-l",
            path_str(&log)?,
            "-w",
            "-t",
            "60",
        ];
        all.extend_from_slice(args);
        self.pg("pg_ctl", &all).await
    }

    /// Runs PostgreSQL program `program` with `args`, as the postgres user when needed.
    async fn pg(&self, program: &str, args: &[&str]) -> anyhow::Result<()> {
        let binary = self.bin_dir.join(program);
        let output = self
            .command(&binary, args)
            .current_dir(&self.dir)
            .stdin(std::process::Stdio::piped())
            .output()
            .await
            .with_context(|| format!("running {}", binary.display()))?;
        anyhow::ensure!(
            output.status.success(),
            "{program} {args:?} failed ({}): {}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        Ok(())
    }

    fn command(&self, binary: &Path, args: &[&str]) -> Command {
        if self.run_as_postgres {
            let mut command = Command::new("runuser");
            command
                .args(["-u", "postgres", "--"])
                .arg(binary)
                .args(args);
            command
        } else {
            let mut command = Command::new(binary);
            command.args(args);
            command
        }
    }
}

impl Drop for PostgresServer {
    fn drop(&mut self) {
        if self.stopped {
            return;
        }
        // Drop may run on a runtime thread or after it: a plain blocking process.
        let data = self.data_dir();
        let pg_ctl = self.bin_dir.join("pg_ctl");
        let mut command = if self.run_as_postgres {
            let mut command = std::process::Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(&pg_ctl);
            command
        } else {
            std::process::Command::new(&pg_ctl)
        };
        let _ = command
            .arg("-D")
            .arg(&data)
            .args(["-m", "immediate", "-w", "stop"])
            .current_dir(&self.dir)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .output();
    }
}

fn path_str(path: &Path) -> anyhow::Result<&str> {
    path.to_str()
        .with_context(|| format!("{} is not UTF-8", path.display()))
}

/// The effective user of this process owns `/proc/self`.
fn running_as_root() -> bool {
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

async fn postgres_ids() -> anyhow::Result<(u32, u32)> {
    let id = |flag: &'static str| async move {
        let output = Command::new("id")
            .args([flag, "postgres"])
            .output()
            .await
            .context("running id")?;
        anyhow::ensure!(
            output.status.success(),
            "there is no postgres OS user to run the private PostgreSQL as (install PostgreSQL: deploy/local/test.sh does)"
        );
        String::from_utf8_lossy(&output.stdout)
            .trim()
            .parse::<u32>()
            .context("parsing the output of id")
    };
    Ok((id("-u").await?, id("-g").await?))
}

/// Where `initdb` and `pg_ctl` are.
fn bin_dir() -> anyhow::Result<PathBuf> {
    if let Some(dir) = std::env::var_os("PG_BIN_DIR") {
        return Ok(PathBuf::from(dir));
    }
    if let Some(paths) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&paths) {
            if dir.join("initdb").is_file() && dir.join("pg_ctl").is_file() {
                return Ok(dir);
            }
        }
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").is_file().then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin).context(
        "initdb and pg_ctl not found (PG_BIN_DIR, PATH, /usr/lib/postgresql/*/bin); install PostgreSQL: deploy/local/test.sh does",
    )
}
