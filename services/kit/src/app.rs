//! Assembling a program: shared connections ([`Platform`]), the services it hosts
//! ([`ServiceModule`]), and the [`App`] that binds, runs and drains them.

use std::net::SocketAddr;

use async_nats::jetstream;
use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::auth::JwtAuth;
use crate::config::CommonConfig;
use crate::grpc::GrpcServer;
use crate::{db, stream};

/// The connections every service of a program shares.
#[derive(Clone, Debug)]
pub struct Platform {
    /// PostgreSQL.
    pub pool: PgPool,
    /// The NATS connection.
    pub nats: async_nats::Client,
    /// JetStream on that connection.
    pub js: jetstream::Context,
    /// Token verification (and minting, for tools and tests).
    pub auth: JwtAuth,
    /// The settings it was built from.
    pub config: CommonConfig,
}

impl Platform {
    /// Connects to PostgreSQL and NATS and creates the JetStream streams.
    ///
    /// # Errors
    /// When a dependency cannot be reached or refuses the set-up.
    pub async fn connect(config: &CommonConfig) -> anyhow::Result<Self> {
        let pool = db::connect(config).await?;
        let (nats, js) = stream::connect(&config.nats_url).await?;
        stream::ensure_streams(&js).await?;
        Ok(Self {
            pool,
            nats,
            js,
            auth: JwtAuth::new(&config.auth_jwt_secret),
            config: config.clone(),
        })
    }
}

/// One service hosted by a program.
pub trait ServiceModule: Send + Sync {
    /// Its name, for logs.
    fn name(&self) -> &'static str;
    /// Adds its gRPC services.
    fn register(&self, server: &mut GrpcServer);
    /// Starts its background work (outbox relay, consumers); each task stops on `shutdown`.
    fn spawn_background(&self, shutdown: CancellationToken) -> Vec<JoinHandle<()>>;
}

/// A program: its listener, its services and their background work.
pub struct App {
    listener: TcpListener,
    modules: Vec<Box<dyn ServiceModule>>,
    grace: std::time::Duration,
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App")
            .field("listener", &self.listener)
            .finish()
    }
}

impl App {
    /// Binds `addr` (port 0 picks a free port; see [`App::local_addr`]).
    ///
    /// # Errors
    /// When the address cannot be bound.
    pub async fn bind(addr: &str, config: &CommonConfig) -> anyhow::Result<Self> {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|e| anyhow::anyhow!("binding gRPC address {addr}: {e}"))?;
        Ok(Self {
            listener,
            modules: Vec::new(),
            grace: config.shutdown_grace(),
        })
    }

    /// The bound address.
    ///
    /// # Errors
    /// Only if the OS cannot tell.
    pub fn local_addr(&self) -> anyhow::Result<SocketAddr> {
        Ok(self.listener.local_addr()?)
    }

    /// Hosts `module`.
    pub fn with(mut self, module: impl ServiceModule + 'static) -> Self {
        self.modules.push(Box::new(module));
        self
    }

    /// Runs until `shutdown`: serves gRPC and the background work; on shutdown stops
    /// taking calls and events, and drains what is in flight within the grace period.
    ///
    /// # Errors
    /// When the gRPC transport fails.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let mut server = GrpcServer::new();
        let mut tasks = Vec::new();
        for module in &self.modules {
            module.register(&mut server);
            tasks.extend(module.spawn_background(shutdown.clone()));
            tracing::info!(service = module.name(), "started");
        }
        let addr = self.listener.local_addr()?;
        tracing::info!(%addr, "serving gRPC");
        let serving = tokio::spawn(server.serve(self.listener, shutdown.clone()));
        shutdown.cancelled().await;
        let drained = async {
            crate::shutdown::drain(tasks, self.grace).await;
        };
        let (served, ()) = tokio::join!(
            async {
                match tokio::time::timeout(self.grace, serving).await {
                    Ok(Ok(result)) => result,
                    Ok(Err(join)) => Err(anyhow::anyhow!("gRPC server task failed: {join}")),
                    Err(_) => {
                        tracing::warn!("in-flight calls outlived the grace period");
                        Ok(())
                    }
                }
            },
            drained
        );
        tracing::info!("stopped");
        served
    }
}

/// The settings of a program that serves gRPC.
#[derive(Debug, Clone, clap::Args)]
pub struct ProgramArgs {
    /// Settings every service shares.
    #[command(flatten)]
    pub common: CommonConfig,

    /// Address the gRPC server binds (`0.0.0.0:50051` in a container).
    #[arg(long, env = "GRPC_ADDR", default_value = "127.0.0.1:50051")]
    pub grpc_addr: String,
}

/// A program's `main`: logging, connections, the modules `start` builds, serving until
/// SIGTERM/SIGINT, then draining.
///
/// # Errors
/// When start-up fails (a dependency unreachable, a migration failing, the address taken).
pub async fn run_program<F, Fut>(args: ProgramArgs, start: F) -> anyhow::Result<()>
where
    F: FnOnce(Platform, String) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<Vec<Box<dyn ServiceModule>>>>,
{
    crate::telemetry::init(args.common.log_format);
    let shutdown = crate::shutdown::on_signal();
    let platform = Platform::connect(&args.common).await?;
    let mut app = App::bind(&args.grpc_addr, &args.common).await?;
    let own_url = format!("http://{}", app.local_addr()?);
    app.modules = start(platform, own_url).await?;
    app.run_until_stopped(shutdown).await
}
