//! Wiring device-service into a program: migrations, gRPC, outbox relay, receipts consumer.

use reseller_kit::app::{Platform, ServiceModule};
use reseller_kit::grpc::GrpcServer;
use reseller_kit::inbox::ConsumerSpec;
use reseller_proto::v1::device_service_server::DeviceServiceServer;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::events::receipts::Receipts;
use crate::grpc::DeviceApi;
use crate::grpc::accounts::AccountsClient;
use crate::postgres::{OUTBOX, Repository};

/// device-service as hosted by a program.
#[derive(Debug, Clone)]
pub struct DeviceModule {
    platform: Platform,
    api: DeviceApi,
}

impl DeviceModule {
    /// Runs the migrations and builds the service; `customer_service_url` is where
    /// customer-service answers (`CUSTOMER_SERVICE_URL`, or the program's own address
    /// when it hosts both).
    ///
    /// # Errors
    /// When the migrations fail or the URL is invalid.
    pub async fn start(platform: &Platform, customer_service_url: &str) -> anyhow::Result<Self> {
        reseller_kit::db::migrate(&platform.pool, &crate::MIGRATOR, "device-service").await?;
        let api = DeviceApi::new(
            Repository::new(platform.pool.clone()),
            AccountsClient::new(customer_service_url)?,
        );
        Ok(Self {
            platform: platform.clone(),
            api,
        })
    }
}

impl ServiceModule for DeviceModule {
    fn name(&self) -> &'static str {
        "device-service"
    }

    fn register(&self, server: &mut GrpcServer) {
        self.platform
            .serve(server, DeviceServiceServer::new(self.api.clone()));
    }

    fn spawn_background(&self, shutdown: CancellationToken) -> Vec<JoinHandle<()>> {
        let receipts = self
            .platform
            .consumer(
                ConsumerSpec {
                    name: "device-receipts".into(),
                    schema: crate::SCHEMA,
                    filter_subject: reseller_kit::subjects::DELETION_EVENTS.into(),
                },
                Receipts,
            )
            // Each receipt is its own row: the three portals' answers apply side by side.
            .with_concurrency(4);
        self.platform
            .spawn_relay_and(OUTBOX, &shutdown, receipts.run(shutdown.clone()))
    }
}
