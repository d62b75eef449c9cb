//! A private PostgreSQL server for one test, which the test may stop and restart: made by
//! `initdb` in the test's temp dir, on a free loopback port, run with `pg_ctl`, stopped on
//! drop. Never the shared server the other tests use. Every connection on loopback is
//! trusted (the tests are about transport, not passwords).
//!
//! PostgreSQL refuses to run as root, so when the test runs as root (the container case)
//! every PostgreSQL program runs as the `postgres` OS user, which owns the server's
//! directory. The binaries are found through `PG_BIN_DIR`, then `PATH`, then the newest
//! `/usr/lib/postgresql/<version>/bin` (Debian keeps them off `PATH`).
//!
//! With TLS ([`PostgresServer::start_tls`]) the certificates are made with the `openssl`
//! command: a CA of the test's own ([`make_ca`]) and a server certificate for `localhost`
//! and `127.0.0.1`, and only TLS connections are accepted on loopback (`hostssl`).

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
    ca_cert: Option<PathBuf>,
}

impl PostgresServer {
    /// Makes a server under `parent` (in `parent/postgres/`) and starts it.
    ///
    /// # Errors
    /// When the binaries are missing, `initdb` fails, or the server does not start.
    pub async fn start(parent: &Path) -> anyhow::Result<Self> {
        Self::start_with(parent, false).await
    }

    /// Like [`start`](Self::start), for a server that accepts only TLS connections on
    /// loopback, with a certificate for `localhost` and `127.0.0.1` from a CA of its own
    /// ([`ca_cert`](Self::ca_cert)).
    ///
    /// # Errors
    /// As [`start`](Self::start), and when `openssl` is missing or fails.
    pub async fn start_tls(parent: &Path) -> anyhow::Result<Self> {
        Self::start_with(parent, true).await
    }

    async fn start_with(parent: &Path, tls: bool) -> anyhow::Result<Self> {
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
            ca_cert: None,
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
        let mut tls_conf = String::new();
        if tls {
            tls_conf = server.make_tls()?;
        }
        let mut last_error = None;
        for _attempt in 0..5 {
            server.port = super::free_port();
            // Eight replicas with pools, relays and listeners, and the test's own.
            std::fs::write(
                data.join("test.conf"),
                format!(
                    "port = {}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{}'\n\
                     max_connections = 200\n{tls_conf}",
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

    /// The URL of database `name` as the superuser (trust authentication on loopback),
    /// without parameters (a TLS server's client adds e.g. `?sslmode=require`).
    pub fn url(&self, name: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{name}", self.port)
    }

    /// The certificate of the CA that signed the server's certificate (a
    /// [`start_tls`](Self::start_tls) server's only).
    pub fn ca_cert(&self) -> Option<&Path> {
        self.ca_cert.as_deref()
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

    /// Makes a CA and a server certificate in `tls/`, makes loopback connections
    /// TLS-only, and returns the settings that turn TLS on.
    fn make_tls(&mut self) -> anyhow::Result<String> {
        let tls = self.dir.join("tls");
        std::fs::create_dir(&tls)?;
        let ca = make_ca(&tls, "ca")?;
        let (crt, key) = make_server_cert(&tls, &ca)?;
        // PostgreSQL demands a key of the server's user (who owns `self.dir`), readable by
        // it alone.
        let owner = self.dir.metadata()?;
        for file in [&crt, &key] {
            std::fs::set_permissions(file, std::fs::Permissions::from_mode(0o600))?;
            if self.run_as_postgres {
                std::os::unix::fs::chown(file, Some(owner.uid()), Some(owner.gid()))?;
            }
        }
        // Written over initdb's file, which keeps its owner.
        std::fs::write(
            self.data_dir().join("pg_hba.conf"),
            "local all all trust\nhostssl all all 127.0.0.1/32 trust\n\
             hostssl all all ::1/128 trust\n",
        )?;
        self.ca_cert = Some(ca.0);
        Ok(format!(
            "ssl = on\nssl_cert_file = '{}'\nssl_key_file = '{}'\n",
            crt.display(),
            key.display()
        ))
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

/// Runs `openssl` with `args` in `dir`.
fn openssl(dir: &Path, args: &[&str]) -> anyhow::Result<()> {
    let output = std::process::Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .context("running openssl (install the openssl package)")?;
    anyhow::ensure!(
        output.status.success(),
        "openssl {args:?} failed ({}): {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(())
}

/// Makes a throwaway CA (P-256, valid two days) in `dir`: `(<name>.crt, <name>.key)`.
///
/// # Errors
/// When `openssl` is missing or fails.
pub fn make_ca(dir: &Path, name: &str) -> anyhow::Result<(PathBuf, PathBuf)> {
    let (crt, key) = (format!("{name}.crt"), format!("{name}.key"));
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "2",
            "-subj",
            &format!("/CN=reseller test {name}"),
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
            "-keyout",
            &key,
            "-out",
            &crt,
        ],
    )?;
    Ok((dir.join(crt), dir.join(key)))
}

/// A server certificate for `localhost` and `127.0.0.1` signed by `ca`, made in `dir`:
/// `(server.crt, server.key)`.
fn make_server_cert(dir: &Path, ca: &(PathBuf, PathBuf)) -> anyhow::Result<(PathBuf, PathBuf)> {
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n\
         keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n",
    )?;
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-subj",
            "/CN=localhost",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
        ],
    )?;
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            path_str(&ca.0)?,
            "-CAkey",
            path_str(&ca.1)?,
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "server.ext",
            "-out",
            "server.crt",
        ],
    )?;
    Ok((dir.join("server.crt"), dir.join("server.key")))
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
