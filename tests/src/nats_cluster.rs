//! A three-node NATS JetStream cluster on free loopback ports, for tests of failover and
//! replicated streams: each node a `nats-server` (`NATS_SERVER_BIN`) with its own store,
//! routes to the other two; nodes can be killed and restarted on the same ports and
//! store. Every node is killed when the cluster is dropped.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};

use crate::nats::binary;

/// One node's fixed identity.
#[derive(Debug)]
struct Node {
    name: String,
    client_port: u16,
    cluster_port: u16,
    child: Option<Child>,
}

/// A port free on 127.0.0.1 now, below the kernel's ephemeral range: the outgoing
/// connections of everything else on the machine (clients retrying a node that is not up
/// yet, among them) take their ports from that range, and could take a port chosen there
/// before its node binds it.
fn free_port() -> u16 {
    let low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    let span = u64::from(low.saturating_sub(10_000).max(1));
    loop {
        let random = std::hash::BuildHasher::hash_one(
            &std::collections::hash_map::RandomState::new(),
            std::time::SystemTime::now(),
        );
        let port = 10_000 + (random % span) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// A running three-node cluster.
#[derive(Debug)]
pub struct NatsCluster {
    nodes: Vec<Node>,
    routes: String,
    store: tempfile::TempDir,
}

impl NatsCluster {
    /// Starts three nodes and waits until each accepts client connections (JetStream may
    /// still be electing its leader: that is for the caller's set-up to wait out).
    ///
    /// # Panics
    /// When `nats-server` is missing or a node does not come up.
    pub async fn start() -> Self {
        for _attempt in 0..5 {
            let mut cluster = Self::unstarted();
            if cluster.try_start_all().await {
                return cluster;
            }
            // A port was taken in between: try other ones.
        }
        panic!("the NATS cluster did not start");
    }

    /// A cluster with its ports chosen and no node running yet, for tests that start
    /// clients first ([`url`](Self::url) is known) and the nodes a moment later
    /// ([`start_all`](Self::start_all)).
    pub fn unstarted() -> Self {
        let mut ports = Vec::new();
        while ports.len() < 6 {
            let port = free_port();
            if !ports.contains(&port) {
                ports.push(port);
            }
        }
        let nodes: Vec<Node> = (0..3)
            .map(|i| Node {
                name: format!("n{}", i + 1),
                client_port: ports[2 * i],
                cluster_port: ports[2 * i + 1],
                child: None,
            })
            .collect();
        let routes = nodes
            .iter()
            .map(|n| format!("nats://127.0.0.1:{}", n.cluster_port))
            .collect::<Vec<_>>()
            .join(",");
        Self {
            nodes,
            routes,
            store: tempfile::tempdir().expect("temp dir"),
        }
    }

    /// Starts every node of an [`unstarted`](Self::unstarted) cluster.
    ///
    /// # Panics
    /// When a node does not come up (its port taken in the meantime, say).
    pub async fn start_all(&mut self) {
        if !self.try_start_all().await {
            let logs: Vec<String> = self
                .nodes
                .iter()
                .map(|n| {
                    let log = self.store.path().join(&n.name).join("nats-server.log");
                    format!(
                        "{}: {}",
                        n.name,
                        std::fs::read_to_string(log).unwrap_or_default()
                    )
                })
                .collect();
            panic!("the NATS cluster did not start:\n{}", logs.join("\n"));
        }
    }

    async fn try_start_all(&mut self) -> bool {
        let mut up = true;
        for i in 0..3 {
            up &= self.start_node(i).await;
        }
        up
    }

    /// The comma-separated client URLs of all three nodes (`NATS_URL`).
    pub fn url(&self) -> String {
        self.nodes
            .iter()
            .map(|n| format!("nats://127.0.0.1:{}", n.client_port))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The client port of node `i` (0, 1 or 2).
    pub fn client_port(&self, i: usize) -> u16 {
        self.nodes[i].client_port
    }

    /// Which node listens on client port `port`.
    pub fn node_on(&self, port: u16) -> Option<usize> {
        self.nodes.iter().position(|n| n.client_port == port)
    }

    /// Kills node `i` (SIGKILL) and waits for it to be gone.
    pub async fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.nodes[i].child.take() {
            let _ = child.kill().await;
        }
    }

    /// Starts node `i` again on its ports and store.
    ///
    /// # Panics
    /// When it does not come up.
    pub async fn restart(&mut self, i: usize) {
        assert!(self.start_node(i).await, "node {i} did not restart");
    }

    async fn start_node(&mut self, i: usize) -> bool {
        let dir = self.store.path().join(&self.nodes[i].name);
        std::fs::create_dir_all(&dir).expect("node store");
        let node = &mut self.nodes[i];
        let child = spawn(
            &dir,
            &node.name,
            node.client_port,
            node.cluster_port,
            &self.routes,
        );
        node.child = Some(child);
        wait_ready(node).await
    }
}

fn spawn(dir: &Path, name: &str, client_port: u16, cluster_port: u16, routes: &str) -> Child {
    // Appended, so a restarted node's log follows its first life's.
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("nats-server.log"))
        .expect("log file");
    let bin = binary();
    Command::new(&bin)
        .args(["-a", "127.0.0.1", "-p", &client_port.to_string()])
        .args(["-n", name, "--cluster_name", "reseller-test"])
        .args(["--cluster", &format!("nats://127.0.0.1:{cluster_port}")])
        .args(["--routes", routes, "-js", "-sd"])
        .arg(dir)
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log file"))
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "cannot start {} ({e}); run deploy/local/test.sh",
                bin.display()
            )
        })
}

async fn wait_ready(node: &mut Node) -> bool {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while tokio::time::Instant::now() < deadline {
        if let Some(child) = node.child.as_mut()
            && let Ok(Some(_exited)) = child.try_wait()
        {
            return false;
        }
        if tokio::net::TcpStream::connect(("127.0.0.1", node.client_port))
            .await
            .is_ok()
        {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}
