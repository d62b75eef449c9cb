//! A private PostgreSQL server for one test, on a free port, never the shared one: for
//! tests that need a server of their own (TLS with a throwaway CA, restarts).
//!
//! It uses the installed PostgreSQL binaries (`/usr/lib/postgresql/<version>/bin`, the
//! newest), runs `initdb` and `postgres` as the `postgres` OS user (they refuse root, and
//! the tests run as root), trusts every local connection (the tests are about transport,
//! not passwords), and is stopped and deleted when dropped. With TLS, certificates are
//! made with the `openssl` command: a CA of the test's own and a server certificate for
//! `localhost` and `127.0.0.1`, and only TLS connections are accepted (`hostssl`).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use sqlx::{Connection, PgConnection};
use tokio::process::{Child, Command};

use crate::nats::free_port;

/// A running private server.
#[derive(Debug)]
pub struct PrivatePostgres {
    /// Its port on 127.0.0.1.
    pub port: u16,
    /// The CA that signed its certificate (TLS servers only).
    pub ca_cert: Option<PathBuf>,
    child: Option<Child>,
    data: PathBuf,
    dir: tempfile::TempDir,
    tls: bool,
}

impl PrivatePostgres {
    /// Creates a cluster and starts it; `tls`: TLS only, with a certificate from a CA of
    /// its own ([`ca_cert`](Self::ca_cert)).
    ///
    /// # Panics
    /// When PostgreSQL or `openssl` is missing, or the server does not come up.
    pub async fn start(tls: bool) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        // The postgres user must reach the data directory inside.
        set_mode(dir.path(), 0o755);
        let (uid, gid) = postgres_user();
        let data = dir.path().join("data");
        std::fs::create_dir(&data).expect("data dir");
        chown(&data, uid, gid);
        set_mode(&data, 0o700);
        let initdb = Command::new(bin_dir().join("initdb"))
            .args(["-D"])
            .arg(&data)
            .args(["-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync"])
            .uid(uid)
            .gid(gid)
            .current_dir(dir.path())
            .output()
            .await
            .expect("run initdb");
        assert!(
            initdb.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&initdb.stderr)
        );
        let ca_cert = tls.then(|| {
            let ca = make_ca(dir.path(), "ca");
            make_server_cert(dir.path(), &ca, &data, uid, gid);
            ca.0
        });
        let hba = if tls {
            "local all all trust\nhostssl all all 127.0.0.1/32 trust\nhostssl all all ::1/128 trust\n"
        } else {
            "local all all trust\nhost all all 127.0.0.1/32 trust\nhost all all ::1/128 trust\n"
        };
        std::fs::write(data.join("pg_hba.conf"), hba).expect("pg_hba.conf");
        chown(&data.join("pg_hba.conf"), uid, gid);
        let mut server = Self {
            port: 0,
            ca_cert,
            child: None,
            data,
            dir,
            tls,
        };
        for _attempt in 0..5 {
            server.port = free_port();
            if server.launch().await {
                return server;
            }
        }
        panic!(
            "the private PostgreSQL did not start; its log: {}",
            std::fs::read_to_string(server.dir.path().join("postgres.log")).unwrap_or_default()
        );
    }

    /// A URL for database `postgres` as user `postgres`, with `params` (e.g.
    /// `sslmode=verify-full&sslrootcert=/path`) when not empty.
    pub fn url(&self, params: &str) -> String {
        let base = format!("postgres://postgres@127.0.0.1:{}/postgres", self.port);
        if params.is_empty() {
            base
        } else {
            format!("{base}?{params}")
        }
    }

    /// Stops the server (fast shutdown: sessions are cut) and starts it again on the same
    /// port and data.
    ///
    /// # Panics
    /// When it does not come back.
    pub async fn restart(&mut self) {
        self.stop();
        assert!(
            self.launch().await,
            "the private PostgreSQL did not restart"
        );
    }

    /// Stops the server and waits up to 10 s for it to exit.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            if let Some(pid) = child.id() {
                // SIGINT: PostgreSQL's fast shutdown (SIGKILL would strand its backends).
                let _ = std::process::Command::new("kill")
                    .args(["-INT", &pid.to_string()])
                    .status();
            }
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            while std::time::Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.start_kill();
        }
    }

    /// Starts `postgres` on `self.port`; true once it accepts a session.
    async fn launch(&mut self) -> bool {
        let (uid, gid) = postgres_user();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("postgres.log"))
            .expect("log file");
        let mut command = Command::new(bin_dir().join("postgres"));
        command
            .arg("-D")
            .arg(&self.data)
            .args([
                "-p",
                &self.port.to_string(),
                "-c",
                "listen_addresses=127.0.0.1",
            ])
            // The socket goes in the data directory, not /var/run/postgresql (the shared
            // server's).
            .arg("-k")
            .arg(&self.data)
            .args(["-c", "max_connections=100"]);
        if self.tls {
            command.args([
                "-c",
                "ssl=on",
                "-c",
                "ssl_cert_file=server.crt",
                "-c",
                "ssl_key_file=server.key",
            ]);
        }
        let child = command
            .uid(uid)
            .gid(gid)
            .current_dir(&self.data)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .expect("start postgres");
        self.child = Some(child);
        let url = self.url(if self.tls { "sslmode=require" } else { "" });
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while tokio::time::Instant::now() < deadline {
            if let Some(Ok(Some(_exited))) = self.child.as_mut().map(Child::try_wait) {
                return false; // e.g. the port was taken in between
            }
            if PgConnection::connect(&url).await.is_ok() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The newest installed PostgreSQL's `bin` directory.
fn bin_dir() -> PathBuf {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL is installed under /usr/lib/postgresql; run deploy/local/test.sh")
        .filter_map(Result::ok)
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").is_file().then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions
        .pop()
        .expect("no PostgreSQL with initdb under /usr/lib/postgresql")
        .1
}

/// The `postgres` OS user's uid and gid.
fn postgres_user() -> (u32, u32) {
    let passwd = std::fs::read_to_string("/etc/passwd").expect("/etc/passwd");
    passwd
        .lines()
        .find_map(|line| {
            let fields: Vec<&str> = line.split(':').collect();
            (fields.first() == Some(&"postgres") && fields.len() > 3)
                .then(|| Some((fields[2].parse().ok()?, fields[3].parse().ok()?)))
                .flatten()
        })
        .expect("the postgres OS user exists (the PostgreSQL package makes it)")
}

fn chown(path: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::chown(path, Some(uid), Some(gid)).expect("chown");
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

/// Runs `openssl` with `args` in `dir`.
fn openssl(dir: &Path, args: &[&str]) {
    let out = std::process::Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("the openssl command is installed (package openssl)");
    assert!(
        out.status.success(),
        "openssl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Makes a throwaway CA in `dir`: `(<name>.crt, <name>.key)`.
pub fn make_ca(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
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
    );
    (dir.join(crt), dir.join(key))
}

/// A server certificate for `localhost` and `127.0.0.1` signed by `ca`, written to
/// `data` as `server.crt` and `server.key` (owned by the server's user, key mode 0600 as
/// PostgreSQL demands).
fn make_server_cert(dir: &Path, ca: &(PathBuf, PathBuf), data: &Path, uid: u32, gid: u32) {
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n\
         keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n",
    )
    .expect("server.ext");
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
    );
    let (ca_crt, ca_key) = (ca.0.to_str().expect("path"), ca.1.to_str().expect("path"));
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            ca_crt,
            "-CAkey",
            ca_key,
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "server.ext",
            "-out",
            "server.crt",
        ],
    );
    for file in ["server.crt", "server.key"] {
        let target = data.join(file);
        std::fs::copy(dir.join(file), &target).expect("copy certificate");
        chown(&target, uid, gid);
        set_mode(&target, 0o600);
    }
}
