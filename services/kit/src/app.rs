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
use crate::readiness::{self, Dependencies};
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
    /// Connects to PostgreSQL and NATS and sets up the JetStream streams, waiting out
    /// dependencies that are still coming up (see [`crate::startup`]).
    ///
    /// # Errors
    /// At once for a malformed `NATS_URL` or `DATABASE_URL`, refused credentials or
    /// certificates; when a dependency stays unreachable for
    /// [`crate::startup::STARTUP_BUDGET`] or refuses the set-up.
    pub async fn connect(config: &CommonConfig) -> anyhow::Result<Self> {
        // Check NATS_URL before waiting on anything: a typo must not look like an outage.
        stream::parse_servers(&config.nats_url)?;
        let pool = db::connect(config).await?;
        let (nats, js) = stream::connect(&config.nats_url).await?;
        stream::ensure_streams(&js, &config.stream_settings()).await?;
        Ok(Self {
            pool,
            nats,
            js,
            auth: JwtAuth::new(&config.auth_jwt_secret),
            config: config.clone(),
        })
    }

    /// What the program depends on, for its readiness probe.
    pub fn dependencies(&self) -> Dependencies {
        Dependencies::new(self.pool.clone(), self.nats.clone(), self.js.clone())
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
    max_connection_age: Option<std::time::Duration>,
    dependencies: Option<Dependencies>,
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
            max_connection_age: config.grpc_max_connection_age(),
            dependencies: None,
        })
    }

    /// The bound address.
    ///
    /// # Errors
    /// Only if the OS cannot tell.
    pub fn local_addr(&self) -> anyhow::Result<SocketAddr> {
        Ok(self.listener.local_addr()?)
    }

    /// Reports the services' health `NOT_SERVING` while `platform`'s PostgreSQL or NATS
    /// is unreachable (see [`crate::readiness`]); without it they are `SERVING` until
    /// shutdown. [`run_program`] always sets it.
    pub fn ready_when_reachable(mut self, platform: &Platform) -> Self {
        self.dependencies = Some(platform.dependencies());
        self
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
        server.max_connection_age(self.max_connection_age);
        let mut tasks = Vec::new();
        if let Some(deps) = self.dependencies {
            let (readiness, probe) = readiness::watch(deps, shutdown.clone());
            server.ready_when(readiness);
            tasks.push(probe);
        }
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
    let mut app = App::bind(&args.grpc_addr, &args.common)
        .await?
        .ready_when_reachable(&platform);
    let own_url = format!("http://{}", app.local_addr()?);
    app.modules = start(platform, own_url).await?;
    app.run_until_stopped(shutdown).await
}
