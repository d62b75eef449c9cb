//! Wiring reporting-service into a program: migrations, the gRPC service, the projection's
//! consumer and the outbox relay.

use reseller_kit::app::{Platform, ServiceModule};
use reseller_kit::grpc::GrpcServer;
use reseller_kit::inbox::{ConsumerSpec, IdempotentConsumer};
use reseller_kit::subjects;
use reseller_proto::v1::reporting_service_server::ReportingServiceServer;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::events::Projection;
use crate::grpc::ReportingApi;
use crate::postgres::{OUTBOX, Repository};

/// The durable consumer that feeds the projection (also its inbox key and its
/// dead-letter subject's last token).
pub const CONSUMER: &str = "reporting";

/// The projection's consumer: its name, schema and subjects.
pub fn spec() -> ConsumerSpec {
    ConsumerSpec {
        name: CONSUMER.into(),
        schema: crate::SCHEMA,
        filter_subject: subjects::ALL_EVENTS.into(),
    }
}

/// The projection's idempotent consumer of every event. Programs run it through
/// [`ReportingModule`]; tests build their own to run, stop, or feed with
/// [`IdempotentConsumer::apply`].
pub fn consumer(platform: &Platform) -> IdempotentConsumer<Projection> {
    platform.consumer(spec(), Projection)
}

/// CSV downloads allowed at once: a quarter of the connection pool, which every service
/// of a program shares, so downloads never starve the other calls and the consumers.
fn max_downloads(pool_connections: u32) -> usize {
    (pool_connections as usize / 4).max(1)
}

/// reporting-service as hosted by a program.
#[derive(Debug, Clone)]
pub struct ReportingModule {
    platform: Platform,
    api: ReportingApi,
}

impl ReportingModule {
    /// Runs the migrations and builds the service.
    ///
    /// # Errors
    /// When the migrations fail.
    pub async fn start(platform: &Platform) -> anyhow::Result<Self> {
        reseller_kit::db::migrate(&platform.pool, &crate::MIGRATOR, "reporting-service").await?;
        Ok(Self {
            platform: platform.clone(),
            api: ReportingApi::new(
                Repository::new(platform.pool.clone()),
                max_downloads(platform.config.database_max_connections),
            ),
        })
    }
}

impl ServiceModule for ReportingModule {
    fn name(&self) -> &'static str {
        "reporting-service"
    }

    fn register(&self, server: &mut GrpcServer) {
        self.platform
            .serve(server, ReportingServiceServer::new(self.api.clone()));
    }

    fn spawn_background(&self, shutdown: CancellationToken) -> Vec<JoinHandle<()>> {
        let projection = consumer(&self.platform);
        self.platform
            .spawn_relay_and(OUTBOX, &shutdown, projection.run(shutdown.clone()))
    }
}
