//! A TCP load balancer in front of a service's replicas, as a Kubernetes Service (kube-proxy)
//! puts them behind one address: each new connection goes to the next replica that
//! accepts it. A replica that is down refuses the connection and the next one gets it;
//! a connection whose replica dies is closed, and the client's reconnect lands on a live
//! one. gRPC channels hold their connection, so, as in Kubernetes, traffic only moves
//! when a connection is made.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// The running balancer; stops (and cuts its connections) on drop.
#[derive(Debug)]
pub struct Balancer {
    addr: SocketAddr,
    stop: CancellationToken,
}

impl Balancer {
    /// Listens on a free loopback port and forwards to `backends`.
    ///
    /// # Errors
    /// When no port can be bound.
    pub async fn start(backends: Vec<SocketAddr>) -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let stop = CancellationToken::new();
        let next = Arc::new(AtomicUsize::new(0));
        let backends = Arc::new(backends);
        let stopped = stop.clone();
        tokio::spawn(async move {
            loop {
                let (client, _) = tokio::select! {
                    _ = stopped.cancelled() => return,
                    accepted = listener.accept() => match accepted {
                        Ok(accepted) => accepted,
                        Err(_) => continue,
                    },
                };
                let (backends, next, stopped) = (backends.clone(), next.clone(), stopped.clone());
                tokio::spawn(async move {
                    let first = next.fetch_add(1, Ordering::Relaxed);
                    for i in 0..backends.len() {
                        let backend = backends[(first + i) % backends.len()];
                        let connected = tokio::time::timeout(
                            Duration::from_secs(1),
                            TcpStream::connect(backend),
                        )
                        .await;
                        if let Ok(Ok(mut server)) = connected {
                            let _ = server.set_nodelay(true);
                            let mut client = client;
                            let _ = client.set_nodelay(true);
                            tokio::select! {
                                _ = stopped.cancelled() => {}
                                _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                            }
                            return;
                        }
                    }
                    // No replica accepts: the client sees its connection closed.
                });
            }
        });
        Ok(Self { addr, stop })
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for Balancer {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}
