//! The whole stack of one test.

use std::net::SocketAddr;
use std::time::Duration;

use reseller_kit::app::{App, Platform, ServiceModule};
use reseller_kit::auth::{JwtAuth, Role};
use reseller_kit::config::CommonConfig;
use reseller_kit::grpc::GrpcServer;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

use crate::db::TestDb;
use crate::nats::NatsServer;

/// What to run besides the defaults.
#[derive(Debug, Clone, Copy)]
pub struct StackOptions {
    /// Run reporting-service's event consumer (tests of the consumer itself run their
    /// own and turn this off).
    pub reporting_consumer: bool,
    /// Run every service's background work (relays and consumers). Tests that feed the
    /// projections events by hand turn this off.
    pub background: bool,
}

impl Default for StackOptions {
    fn default() -> Self {
        Self {
            reporting_consumer: true,
            background: true,
        }
    }
}

/// One test's stack. Dropping it stops the services, the NATS server and drops the
/// database.
pub struct TestStack {
    /// The services' shared connections (for tests that publish or query directly).
    pub platform: Platform,
    /// The gRPC address.
    pub addr: SocketAddr,
    /// A channel to it.
    pub channel: Channel,
    /// The JWT secret the stack trusts.
    pub secret: String,
    /// Where `/metrics` answers, when the settings had a `metrics_addr` (see
    /// [`reseller_kit::metrics::serve`]).
    pub metrics_addr: Option<SocketAddr>,
    shutdown: CancellationToken,
    running: Option<JoinHandle<anyhow::Result<()>>>,
    // Drop order: services first (fields drop in order), then NATS, then the database.
    _nats: Option<NatsServer>,
    _db: TestDb,
}

impl std::fmt::Debug for TestStack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestStack")
            .field("addr", &self.addr)
            .finish()
    }
}

/// Serves a module's gRPC services without its background work.
struct GrpcOnly<M>(M);

impl<M: ServiceModule> ServiceModule for GrpcOnly<M> {
    fn name(&self) -> &'static str {
        self.0.name()
    }
    fn register(&self, server: &mut GrpcServer) {
        self.0.register(server);
    }
    fn spawn_background(&self, _shutdown: CancellationToken) -> Vec<JoinHandle<()>> {
        Vec::new()
    }
}

impl TestStack {
    /// Starts the default stack.
    pub async fn start() -> Self {
        Self::start_with(StackOptions::default()).await
    }

    /// Starts a stack with `options`.
    ///
    /// # Panics
    /// When PostgreSQL, NATS or a service does not come up.
    pub async fn start_with(options: StackOptions) -> Self {
        let db = TestDb::create().await;
        let nats = NatsServer::start().await;
        let nats_url = nats.url.clone();
        Self::start_on(options, db, Some(nats), &nats_url, |_| {}).await
    }

    /// Starts a stack with `options` on `db` and the NATS servers of `nats_url` (a
    /// private `nats` the stack keeps running, or a cluster the test owns); `configure`
    /// may change the settings first (a proxy's address, stream replicas).
    ///
    /// # Panics
    /// When PostgreSQL, NATS or a service does not come up.
    pub async fn start_on(
        options: StackOptions,
        db: TestDb,
        nats: Option<NatsServer>,
        nats_url: &str,
        configure: impl FnOnce(&mut CommonConfig),
    ) -> Self {
        reseller_kit::telemetry::init_with_default(reseller_kit::config::LogFormat::Text, "warn");
        let secret = format!("test-secret-{}", uuid::Uuid::new_v4());
        let mut config = CommonConfig::new(&db.url, nats_url, &secret);
        config.shutdown_grace_seconds = 5;
        config.database_max_connections = 8;
        configure(&mut config);
        let platform = Platform::connect(&config).await.expect("platform");
        let shutdown = CancellationToken::new();
        let metrics_addr = reseller_kit::metrics::serve(&platform, "reseller-tests", &shutdown)
            .await
            .expect("metrics endpoint");
        let app = App::bind("127.0.0.1:0", &config)
            .await
            .expect("bind")
            .ready_when_reachable(&platform);
        let addr = app.local_addr().expect("addr");
        let own_url = format!("http://{addr}");
        let reporting = reporting_service::ReportingModule::start(&platform)
            .await
            .expect("reporting");
        let customer = customer_service::CustomerModule::start(&platform)
            .await
            .expect("customer");
        let device = device_service::DeviceModule::start(&platform, &own_url)
            .await
            .expect("device");
        let msp_link = msp_link_service::MspLinkModule::start(&platform, &own_url)
            .await
            .expect("msp-link");
        let app = if !options.background {
            app.with(GrpcOnly(customer))
                .with(GrpcOnly(device))
                .with(GrpcOnly(msp_link))
                .with(GrpcOnly(reporting))
        } else if options.reporting_consumer {
            app.with(customer)
                .with(device)
                .with(msp_link)
                .with(reporting)
        } else {
            app.with(customer)
                .with(device)
                .with(msp_link)
                .with(GrpcOnly(reporting))
        };
        let running = tokio::spawn(app.run_until_stopped(shutdown.clone()));
        let channel = Channel::from_shared(format!("http://{addr}"))
            .expect("uri")
            .connect_timeout(Duration::from_secs(5))
            .connect()
            .await
            .expect("connect to the stack");
        Self {
            platform,
            addr,
            channel,
            secret,
            metrics_addr,
            shutdown,
            running: Some(running),
            _nats: nats,
            _db: db,
        }
    }

    /// A valid token for `subject` in `role`.
    pub fn token(&self, role: Role, subject: &str) -> String {
        JwtAuth::new(&self.secret)
            .mint(role, subject, Duration::from_secs(3600))
            .expect("mint")
    }

    /// A token for `subject` in `role` whose `name` claim is `name`, signed as given
    /// (valid or not: the services judge it).
    pub fn named_token(&self, role: Role, subject: &str, name: &str) -> String {
        JwtAuth::new(&self.secret)
            .mint_named(role, subject, Some(name), Duration::from_secs(3600))
            .expect("mint")
    }

    /// The number a `SELECT count(*) …` (a static query over this stack's database)
    /// answers, for tests that look past the API at what was written.
    ///
    /// # Panics
    /// When the query fails.
    pub async fn count(&self, query: &'static str) -> i64 {
        sqlx::query_scalar::<_, i64>(query)
            .fetch_one(&self.platform.pool)
            .await
            .unwrap_or_else(|e| panic!("{query}: {e}"))
    }

    /// A core-NATS subscription to `subject` on this stack's server, flushed so that it is
    /// in place before anything the test does next publishes.
    ///
    /// # Panics
    /// When NATS refuses the subscription.
    pub async fn subscribe(&self, subject: &'static str) -> async_nats::Subscriber {
        let subscription = self
            .platform
            .nats
            .subscribe(subject)
            .await
            .expect("subscribe");
        self.platform.nats.flush().await.expect("flush");
        subscription
    }

    /// Stops the services and waits for them to drain.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(running) = self.running.take() {
            let _ = running.await;
        }
    }
}

impl Drop for TestStack {
    fn drop(&mut self) {
        self.shutdown.cancel();
        if let Some(running) = self.running.take() {
            running.abort();
        }
    }
}
