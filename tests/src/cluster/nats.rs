//! A NATS JetStream cluster of several `nats-server` processes on free loopback ports,
//! each with its own store directory, which a test can kill (`SIGKILL`) and restart node
//! by node, on the same ports and store. Killed on drop.
//!
//! The ports are taken below the kernel's ephemeral range: the outgoing connections of
//! everything else on the machine (clients retrying a node that is not up yet, among
//! them) take their local ports from that range, and could take a node's port before the
//! node binds it. A cluster can also be made with its ports chosen and no node running
//! ([`NatsCluster::unstarted`]), for tests that start their clients first and the nodes a
//! moment later ([`NatsCluster::start_all`]).

use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use anyhow::Context;
use tokio::process::{Child, Command};

/// One server of the cluster.
#[derive(Debug)]
pub struct NatsNode {
    /// Its server name (`-n`), as JetStream reports leaders.
    pub name: String,
    /// Its client port.
    pub client_port: u16,
    cluster_port: u16,
    store: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

impl NatsNode {
    /// Its client URL.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.client_port)
    }
}

/// The running cluster.
#[derive(Debug)]
pub struct NatsCluster {
    bin: PathBuf,
    nodes: Vec<NatsNode>,
}

/// The `nats-server` binary (see [`crate::nats::binary`]).
pub use crate::nats::binary;

/// `n` distinct ports free on 127.0.0.1 now, below the kernel's ephemeral range (see the
/// module docs), in random order.
fn free_ports_below_ephemeral(n: usize) -> Vec<u16> {
    let low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    let span = u64::from(low.saturating_sub(10_000).max(1));
    let mut ports = Vec::with_capacity(n);
    while ports.len() < n {
        let random = std::hash::BuildHasher::hash_one(
            &std::collections::hash_map::RandomState::new(),
            std::time::SystemTime::now(),
        );
        let port = 10_000 + (random % span) as u16;
        if !ports.contains(&port) && std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            ports.push(port);
        }
    }
    ports
}

/// Why a start failed: a node exited (its port was most likely taken in between, so
/// other ports may do), or something else.
struct StartError {
    exited: bool,
    error: anyhow::Error,
}

impl NatsCluster {
    /// Starts `size` servers under `parent` (stores `nats-<i>/`, logs
    /// `nats-<i>/server.log`) and waits until each one answers JetStream requests (the
    /// cluster has elected its meta leader). When a server exits while starting (its port
    /// taken in the meantime, say), the cluster is started again on other ports, up to
    /// five times.
    ///
    /// # Errors
    /// When a server does not start or the cluster does not form within 60 s.
    pub async fn start(parent: &Path, size: usize) -> anyhow::Result<Self> {
        let mut attempt = 1;
        loop {
            let mut cluster = Self::unstarted(parent, size);
            match cluster.try_start_all().await {
                Ok(()) => return Ok(cluster),
                Err(StartError { exited: true, .. }) if attempt < 5 => {
                    // Stop what did start, and start afresh on other ports.
                    for node in &mut cluster.nodes {
                        if let Some(mut child) = node.child.take() {
                            let _ = child.kill().await;
                        }
                    }
                    for i in 0..size {
                        let store = parent.join(format!("nats-{i}"));
                        if store.exists() {
                            std::fs::remove_dir_all(store)?;
                        }
                    }
                    attempt += 1;
                }
                Err(StartError { error, .. }) => return Err(error),
            }
        }
    }

    /// A cluster of `size` servers under `parent` with their ports chosen and none
    /// running yet, for tests that start clients first ([`url_list`](Self::url_list) is
    /// known) and the servers a moment later ([`start_all`](Self::start_all)). Nothing is
    /// made on disk until then.
    pub fn unstarted(parent: &Path, size: usize) -> Self {
        let ports = free_ports_below_ephemeral(2 * size);
        Self {
            bin: binary(),
            nodes: (0..size)
                .map(|i| {
                    let store = parent.join(format!("nats-{i}"));
                    NatsNode {
                        name: format!("nats-{i}"),
                        client_port: ports[2 * i],
                        cluster_port: ports[2 * i + 1],
                        log: store.join("server.log"),
                        store,
                        child: None,
                    }
                })
                .collect(),
        }
    }

    /// Starts every server of an [`unstarted`](Self::unstarted) cluster and waits until
    /// each one answers JetStream requests.
    ///
    /// # Errors
    /// When a server does not start (its port taken in the meantime, say: the error then
    /// quotes the end of its log) or the cluster does not form within 60 s.
    pub async fn start_all(&mut self) -> anyhow::Result<()> {
        self.try_start_all().await.map_err(|e| e.error)
    }

    async fn try_start_all(&mut self) -> Result<(), StartError> {
        let other = |error: anyhow::Error| StartError {
            exited: false,
            error,
        };
        for i in 0..self.nodes.len() {
            std::fs::create_dir_all(&self.nodes[i].store).map_err(|e| other(e.into()))?;
            self.spawn(i).map_err(other)?;
        }
        for i in 0..self.nodes.len() {
            self.wait_ready(i).await?;
        }
        Ok(())
    }

    /// The nodes.
    pub fn nodes(&self) -> &[NatsNode] {
        &self.nodes
    }

    /// Every client URL, comma-separated (the form `NATS_URL` takes).
    pub fn url_list(&self) -> String {
        self.nodes
            .iter()
            .map(NatsNode::url)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// A client that knows every node (it fails over among them).
    ///
    /// # Errors
    /// When no node can be reached.
    pub async fn client(&self) -> anyhow::Result<async_nats::Client> {
        let urls: Vec<String> = self.nodes.iter().map(NatsNode::url).collect();
        async_nats::ConnectOptions::new()
            .connection_timeout(Duration::from_secs(5))
            .connect(urls)
            .await
            .context("connecting to the NATS cluster")
    }

    /// The index of the node named `name`.
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.nodes.iter().position(|n| n.name == name)
    }

    /// The index of the node listening on client port `port` (as a client's
    /// `server_info().port` names the node it is connected to).
    pub fn node_on(&self, port: u16) -> Option<usize> {
        self.nodes.iter().position(|n| n.client_port == port)
    }

    /// Kills node `index` with `SIGKILL` and reaps it.
    ///
    /// # Errors
    /// When it was not running, or exited on its own before.
    pub async fn kill(&mut self, index: usize) -> anyhow::Result<()> {
        let node = &mut self.nodes[index];
        let mut child = node.child.take().context("the node is not running")?;
        if let Some(status) = child.try_wait()? {
            anyhow::bail!("{} had exited on its own: {status}", node.name);
        }
        child.start_kill()?;
        let status = child.wait().await?;
        anyhow::ensure!(
            status.signal() == Some(9),
            "{} ended with {status}",
            node.name
        );
        Ok(())
    }

    /// Starts node `index` again, same ports, same store, and waits until it answers
    /// JetStream requests.
    ///
    /// # Errors
    /// When it does not come back within 60 s.
    pub async fn restart(&mut self, index: usize) -> anyhow::Result<()> {
        self.spawn(index)?;
        self.wait_ready(index).await.map_err(|e| e.error)
    }

    /// Nodes that exited although nobody killed them, with their exit status.
    pub fn exited_on_their_own(&mut self) -> Vec<(String, ExitStatus)> {
        self.nodes
            .iter_mut()
            .filter_map(|node| {
                let status = node.child.as_mut()?.try_wait().ok()??;
                Some((node.name.clone(), status))
            })
            .collect()
    }

    fn spawn(&mut self, index: usize) -> anyhow::Result<()> {
        let routes = self
            .nodes
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != index)
            .map(|(_, n)| format!("nats://127.0.0.1:{}", n.cluster_port))
            .collect::<Vec<_>>()
            .join(",");
        let node = &mut self.nodes[index];
        // Appended to, so a restart's log follows the killed run's. Never /dev/null,
        // which is a plain file on some sandboxes.
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&node.log)?;
        let child = Command::new(&self.bin)
            .args(["-a", "127.0.0.1", "-p", &node.client_port.to_string()])
            .args(["-n", &node.name, "-js", "-sd"])
            .arg(&node.store)
            .args(["--cluster_name", "reseller-test"])
            .args([
                "--cluster",
                &format!("nats://127.0.0.1:{}", node.cluster_port),
            ])
            .args(["--routes", &routes])
            .stdin(Stdio::piped())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| {
                format!(
                    "cannot start {}; run deploy/local/test.sh",
                    self.bin.display()
                )
            })?;
        node.child = Some(child);
        Ok(())
    }

    /// Waits until node `index` answers a JetStream account request itself.
    async fn wait_ready(&mut self, index: usize) -> Result<(), StartError> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        let url = self.nodes[index].url();
        let mut last_error = String::from("not tried");
        while tokio::time::Instant::now() < deadline {
            let node = &mut self.nodes[index];
            if let Some(status) = node.child.as_mut().and_then(|c| c.try_wait().ok()?) {
                return Err(StartError {
                    exited: true,
                    error: anyhow::anyhow!(
                        "{} exited while starting ({status}); see {}, which ends:\n{}",
                        node.name,
                        node.log.display(),
                        log_tail(&node.log)
                    ),
                });
            }
            match tokio::time::timeout(Duration::from_secs(5), async {
                // The raw request: async-nats's typed account info does not parse a 2.9
                // server's answer.
                let client = async_nats::connect(&url).await?;
                let answer = client.request("$JS.API.INFO", "".into()).await?;
                let text = String::from_utf8_lossy(&answer.payload);
                anyhow::ensure!(
                    text.contains("account_info_response") && !text.contains("\"error\""),
                    "{text}"
                );
                anyhow::Ok(())
            })
            .await
            {
                Ok(Ok(())) => return Ok(()),
                Ok(Err(err)) => last_error = format!("{err:#}"),
                Err(_) => last_error = "timed out".into(),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(StartError {
            exited: false,
            error: anyhow::anyhow!(
                "{} did not serve JetStream within 60 s ({last_error}); see {}",
                self.nodes[index].name,
                self.nodes[index].log.display()
            ),
        })
    }
}

/// The last 20 lines of the log at `path` (it may be in a temp dir that is gone by the
/// time someone reads the error).
fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}
