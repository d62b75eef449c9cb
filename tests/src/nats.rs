//! A private `nats-server` with JetStream per test, on a free port, killed on drop.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};

/// A running `nats-server`.
#[derive(Debug)]
pub struct NatsServer {
    child: Child,
    /// Its client URL.
    pub url: String,
    _store: tempfile::TempDir,
}

/// The `nats-server` binary: `NATS_SERVER_BIN`, else `nats-server` on `PATH`, else
/// `/usr/sbin/nats-server`.
pub fn binary() -> PathBuf {
    if let Ok(path) = std::env::var("NATS_SERVER_BIN") {
        return PathBuf::from(path);
    }
    if let Some(paths) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&paths) {
            let candidate = dir.join("nats-server");
            if candidate.is_file() {
                return candidate;
            }
        }
    }
    PathBuf::from("/usr/sbin/nats-server")
}

/// A port free on 127.0.0.1 now (the OS may hand it out again later: callers retry).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

impl NatsServer {
    /// Starts a server and waits until it accepts connections.
    ///
    /// # Panics
    /// When `nats-server` is missing or does not come up.
    pub async fn start() -> Self {
        let bin = binary();
        for _attempt in 0..5 {
            let store = tempfile::tempdir().expect("temp dir");
            let port = free_port();
            // The server's log goes to a file in its store, never to /dev/null (which is
            // a plain file on some sandboxes, where it would poison other readers).
            let log =
                std::fs::File::create(store.path().join("nats-server.log")).expect("log file");
            let child = Command::new(&bin)
                .args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"])
                .arg(store.path())
                .stdin(Stdio::piped())
                .stdout(log.try_clone().expect("log file"))
                .stderr(log)
                .kill_on_drop(true)
                .spawn()
                .unwrap_or_else(|e| {
                    panic!(
                        "cannot start {} ({e}); run deploy/local/test.sh",
                        bin.display()
                    )
                });
            let mut server = Self {
                child,
                url: format!("nats://127.0.0.1:{port}"),
                _store: store,
            };
            if server.wait_ready(port).await {
                return server;
            }
        }
        panic!("nats-server did not start");
    }

    async fn wait_ready(&mut self, port: u16) -> bool {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while tokio::time::Instant::now() < deadline {
            if let Ok(Some(_exited)) = self.child.try_wait() {
                return false; // e.g. the port was taken in between
            }
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        false
    }
}
