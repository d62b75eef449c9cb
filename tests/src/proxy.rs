//! A TCP proxy a test controls: it forwards connections to an upstream address until
//! [`TcpProxy::cut`] closes every connection through it and refuses new ones (they are
//! accepted and closed at once, as a dead peer looks to a client), and
//! [`TcpProxy::restore`] lets them through again. Put it between a service and
//! PostgreSQL or NATS to take the dependency away without touching the server.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// A running proxy; stops when dropped.
#[derive(Debug)]
pub struct TcpProxy {
    /// Where clients connect.
    pub addr: SocketAddr,
    open: Arc<AtomicBool>,
    accepted: Arc<AtomicUsize>,
    // Each cut bumps the generation; connections of an older one close.
    generation: watch::Sender<u64>,
    accepting: JoinHandle<()>,
}

impl TcpProxy {
    /// Listens on a free loopback port and forwards to `upstream`.
    ///
    /// # Panics
    /// When no port can be bound.
    pub async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a proxy");
        let addr = listener.local_addr().expect("proxy address");
        let open = Arc::new(AtomicBool::new(true));
        let accepted = Arc::new(AtomicUsize::new(0));
        let (generation, _) = watch::channel(0u64);
        let accepting = tokio::spawn(accept(
            listener,
            upstream,
            open.clone(),
            accepted.clone(),
            generation.clone(),
        ));
        Self {
            addr,
            open,
            accepted,
            generation,
            accepting,
        }
    }

    /// Closes every connection through the proxy and refuses new ones until
    /// [`restore`](Self::restore).
    pub fn cut(&self) {
        self.open.store(false, Ordering::SeqCst);
        self.generation.send_modify(|g| *g += 1);
    }

    /// How many connections the proxy has forwarded so far.
    pub fn connections(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    /// Lets connections through again.
    pub fn restore(&self) {
        self.open.store(true, Ordering::SeqCst);
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.cut();
        self.accepting.abort();
    }
}

async fn accept(
    listener: TcpListener,
    upstream: SocketAddr,
    open: Arc<AtomicBool>,
    accepted: Arc<AtomicUsize>,
    generation: watch::Sender<u64>,
) {
    while let Ok((client, _)) = listener.accept().await {
        if !open.load(Ordering::SeqCst) {
            drop(client); // refused: closed at once
            continue;
        }
        accepted.fetch_add(1, Ordering::SeqCst);
        let mut cut = generation.subscribe();
        let born = *cut.borrow_and_update();
        tokio::spawn(async move {
            let Ok(mut server) = TcpStream::connect(upstream).await else {
                return;
            };
            let mut client = client;
            let _ = client.set_nodelay(true);
            let _ = server.set_nodelay(true);
            tokio::select! {
                _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                _ = cut.wait_for(|g| *g != born) => {}
            }
            // Dropping both ends closes them.
        });
    }
}
