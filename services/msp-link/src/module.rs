//! Wiring msp-link-service into a program: migrations, gRPC, outbox relay, consumer.

use reseller_kit::app::{Platform, ServiceModule};
use reseller_kit::grpc::GrpcServer;
use reseller_kit::inbox::{ConsumerSpec, IdempotentConsumer};
use reseller_proto::v1::msp_service_server::MspServiceServer;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::events::portal::MspPortal;
use crate::grpc::MspApi;
use crate::grpc::accounts::AccountDirectory;
use crate::postgres::{OUTBOX, Repository};

/// msp-link-service as hosted by a program.
#[derive(Debug, Clone)]
pub struct MspLinkModule {
    platform: Platform,
    api: MspApi,
}

impl MspLinkModule {
    /// Runs the migrations and builds the service; `customer_service_url` is where
    /// customer-service answers (`CUSTOMER_SERVICE_URL`, or the program's own address).
    ///
    /// # Errors
    /// When the migrations fail or the URL is invalid.
    pub async fn start(platform: &Platform, customer_service_url: &str) -> anyhow::Result<Self> {
        reseller_kit::db::migrate(&platform.pool, &crate::MIGRATOR, "msp-link-service").await?;
        let accounts = AccountDirectory::new(customer_service_url, platform.auth.clone())?;
        let api = MspApi::new(Repository::new(platform.pool.clone()), accounts);
        Ok(Self {
            platform: platform.clone(),
            api,
        })
    }
}

impl ServiceModule for MspLinkModule {
    fn name(&self) -> &'static str {
        "msp-link-service"
    }

    fn register(&self, server: &mut GrpcServer) {
        self.platform
            .serve(server, MspServiceServer::new(self.api.clone()));
    }

    fn spawn_background(&self, shutdown: CancellationToken) -> Vec<JoinHandle<()>> {
        let portal = portal_consumer(&self.platform);
        self.platform
            .spawn_relay_and(OUTBOX, &shutdown, portal.run(shutdown.clone()))
    }
}

/// The consumer that keeps msp-link's device view (tests run it by hand or feed it
/// events directly).
pub fn portal_consumer(platform: &Platform) -> IdempotentConsumer<MspPortal> {
    platform.consumer(
        ConsumerSpec {
            name: "msp-portal".into(),
            schema: crate::SCHEMA,
            filter_subject: reseller_kit::subjects::ALL_EVENTS.into(),
        },
        MspPortal,
    )
}
