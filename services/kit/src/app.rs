//! Assembling a program: shared connections ([`Platform`]), the services it hosts
//! ([`ServiceModule`]), and the [`App`] that binds, runs and drains them.
//!
//! What every service does the same way is written here once: a one-service program's
//! `main` ([`run_service`]), serving a gRPC service behind the auth interceptor with the
//! message limit ([`Platform::serve`]), building a consumer ([`Platform::consumer`]) and
//! running the outbox relay beside it ([`Platform::spawn_relay_and`]).

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;

use async_nats::jetstream;
use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::body::Body;
use tonic::server::NamedService;
use tonic::service::interceptor::InterceptedService;

use crate::auth::JwtAuth;
use crate::config::CommonConfig;
use crate::grpc::{GrpcServer, MessageLimits};
use crate::inbox::{ConsumerSpec, EventHandler, IdempotentConsumer};
use crate::outbox::{Outbox, Relay};
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

    /// Adds `service` (a generated `…Server`) to `server` as every service is served:
    /// behind the bearer-token interceptor, refusing messages larger than
    /// `GRPC_MAX_MESSAGE_BYTES` both ways.
    pub fn serve<S>(&self, server: &mut GrpcServer, service: S)
    where
        S: MessageLimits,
        InterceptedService<S, JwtAuth>: tower_service::Service<http::Request<Body>, Error = Infallible>
            + NamedService
            + Clone
            + Send
            + Sync
            + 'static,
        <InterceptedService<S, JwtAuth> as tower_service::Service<http::Request<Body>>>::Response:
            axum::response::IntoResponse,
        <InterceptedService<S, JwtAuth> as tower_service::Service<http::Request<Body>>>::Future:
            Send + 'static,
    {
        let limited = service.limit_messages(self.config.grpc_max_message_bytes);
        server.add_service(InterceptedService::new(limited, self.auth.clone()));
    }

    /// The idempotent consumer `spec` running `handler` on this platform's PostgreSQL and
    /// JetStream (sampling its pending events when metrics are on).
    pub fn consumer<H: EventHandler>(
        &self,
        spec: ConsumerSpec,
        handler: H,
    ) -> IdempotentConsumer<H> {
        IdempotentConsumer::new(spec, self.pool.clone(), self.js.clone(), handler)
            .sampling_pending(self.metrics_on())
    }

    /// Whether `METRICS_ADDR` is set: the samplers run only then.
    pub fn metrics_on(&self) -> bool {
        self.config.metrics_addr.is_some()
    }

    /// The background work of a service that publishes and consumes: the relay of
    /// `outbox` and `consumer` (a consumer's `run`), each spawned, both stopping on
    /// `shutdown`; with metrics on, the sampler of the outbox's backlog too.
    pub fn spawn_relay_and(
        &self,
        outbox: Outbox,
        shutdown: &CancellationToken,
        consumer: impl Future<Output = ()> + Send + 'static,
    ) -> Vec<JoinHandle<()>> {
        let relay = Relay::new(outbox, self.pool.clone(), self.js.clone());
        let mut tasks = vec![
            tokio::spawn(relay.run(shutdown.clone())),
            tokio::spawn(consumer),
        ];
        if self.metrics_on() {
            let pool = self.pool.clone();
            tasks.push(crate::metrics::spawn_sampler(
                "outbox",
                shutdown,
                move || {
                    let pool = pool.clone();
                    async move { outbox.sample_backlog(&pool).await }
                },
            ));
        }
        tasks
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

/// A program's `main`: logging and traces, connections, the modules `start` builds,
/// serving until SIGTERM/SIGINT, then draining, and last the spans still queued for
/// export.
///
/// # Errors
/// When start-up fails (a dependency unreachable, a migration failing, the address taken,
/// `OTEL_EXPORTER_OTLP_ENDPOINT` not a URL).
pub async fn run_program<F, Fut>(args: ProgramArgs, start: F) -> anyhow::Result<()>
where
    F: FnOnce(Platform, String) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<Vec<Box<dyn ServiceModule>>>>,
{
    let service_name = match &args.common.otel_service_name {
        Some(name) => name.clone(),
        None => program_name(),
    };
    let telemetry = crate::telemetry::init_program(
        args.common.log_format,
        args.common.otel_exporter_otlp_endpoint.as_deref(),
        &service_name,
    )?;
    crate::telemetry::set_trace_reads(args.common.trace_reads);
    let ran = serve_program(args, start).await;
    telemetry.shutdown().await;
    ran
}

/// The name the program was started as (`device-service`): the default `service.name`
/// of its spans and the `program` label of its metrics.
fn program_name() -> String {
    std::env::args_os()
        .next()
        .as_deref()
        .map(std::path::Path::new)
        .and_then(std::path::Path::file_name)
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_else(|| "reseller".to_owned())
}

/// [`run_program`] once logging is set up.
async fn serve_program<F, Fut>(args: ProgramArgs, start: F) -> anyhow::Result<()>
where
    F: FnOnce(Platform, String) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<Vec<Box<dyn ServiceModule>>>>,
{
    let shutdown = crate::shutdown::on_signal();
    let platform = Platform::connect(&args.common).await?;
    crate::metrics::serve(&platform, &program_name(), &shutdown).await?;
    let mut app = App::bind(&args.grpc_addr, &args.common)
        .await?
        .ready_when_reachable(&platform);
    let own_url = format!("http://{}", app.local_addr()?);
    app.modules = start(platform, own_url).await?;
    app.run_until_stopped(shutdown).await
}

/// The settings of a program beyond [`ProgramArgs`]: none.
#[derive(Debug, Clone, Copy, Default, clap::Args)]
pub struct NoSettings {}

/// The settings of a program whose service calls customer-service (device-service checks
/// upload targets there, msp-link-service accounts).
#[derive(Debug, Clone, clap::Args)]
pub struct CustomerServiceUrl {
    /// Where customer-service answers.
    #[arg(
        long = "customer-service-url",
        value_name = "CUSTOMER_SERVICE_URL",
        env = "CUSTOMER_SERVICE_URL",
        default_value = "http://127.0.0.1:50051"
    )]
    pub url: String,
}

/// The `main` of a program that runs one service: parses [`ProgramArgs`] and the
/// service's own `Settings` from the command line and the environment (`--help` shows
/// `name` and `about`, `--version` the workspace's version), then [`run_program`] with
/// the module `start` builds.
///
/// # Errors
/// As [`run_program`]; a bad command line prints clap's message and exits.
pub async fn run_service<Settings, M>(
    name: &'static str,
    about: &'static str,
    start: impl AsyncFnOnce(&Platform, Settings) -> anyhow::Result<M>,
) -> anyhow::Result<()>
where
    Settings: clap::Args,
    M: ServiceModule + 'static,
{
    use clap::{Args, FromArgMatches};
    // `about` and `version` last: the settings' own doc comments would replace them.
    let matches = Settings::augment_args(ProgramArgs::augment_args(clap::Command::new(name)))
        .about(about)
        .long_about(None)
        .version(env!("CARGO_PKG_VERSION"))
        .get_matches();
    let parsed = ProgramArgs::from_arg_matches(&matches)
        .and_then(|program| Ok((program, Settings::from_arg_matches(&matches)?)));
    let (program, settings) = parsed.unwrap_or_else(|e| e.exit());
    run_program(program, move |platform, _own_url| async move {
        let module = start(&platform, settings).await?;
        Ok(vec![Box::new(module) as Box<dyn ServiceModule>])
    })
    .await
}
