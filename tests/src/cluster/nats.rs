//! A NATS JetStream cluster of several `nats-server` processes on free loopback ports,
//! each with its own store directory, which a test can kill (`SIGKILL`) and restart node
//! by node. Killed on drop.

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

/// The `nats-server` binary: `NATS_SERVER_BIN`, `nats-server` on `PATH`, or
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

impl NatsCluster {
    /// Starts `size` servers under `parent` and waits until each one answers JetStream
    /// requests (the cluster has elected its meta leader).
    ///
    /// # Errors
    /// When a server does not start or the cluster does not form within 60 s.
    pub async fn start(parent: &Path, size: usize) -> anyhow::Result<Self> {
        let ports = super::free_ports(2 * size);
        let mut cluster = Self {
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
        };
        for i in 0..size {
            std::fs::create_dir(&cluster.nodes[i].store)?;
            cluster.spawn(i)?;
        }
        for i in 0..size {
            cluster.wait_ready(i).await?;
        }
        Ok(cluster)
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
        self.wait_ready(index).await
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
    async fn wait_ready(&mut self, index: usize) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        let url = self.nodes[index].url();
        let mut last_error = String::from("not tried");
        while tokio::time::Instant::now() < deadline {
            let node = &mut self.nodes[index];
            if let Some(status) = node.child.as_mut().and_then(|c| c.try_wait().ok()?) {
                anyhow::bail!(
                    "{} exited while starting ({status}); see {}",
                    node.name,
                    node.log.display()
                );
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
        anyhow::bail!(
            "{} did not serve JetStream within 60 s ({last_error}); see {}",
            self.nodes[index].name,
            self.nodes[index].log.display()
        )
    }
}
