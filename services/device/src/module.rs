//! Wiring device-service into a program: migrations, gRPC, outbox relay, receipts consumer.

use reseller_kit::app::{Platform, ServiceModule};
use reseller_kit::grpc::GrpcServer;
use reseller_kit::inbox::{ConsumerSpec, IdempotentConsumer};
use reseller_kit::outbox::Relay;
use reseller_proto::v1::device_service_server::DeviceServiceServer;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::service::interceptor::InterceptedService;

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
        let limit = self.platform.config.grpc_max_message_bytes;
        server.add_service(InterceptedService::new(
            DeviceServiceServer::new(self.api.clone())
                .max_decoding_message_size(limit)
                .max_encoding_message_size(limit),
            self.platform.auth.clone(),
        ));
    }

    fn spawn_background(&self, shutdown: CancellationToken) -> Vec<JoinHandle<()>> {
        let p = &self.platform;
        let relay = Relay::new(OUTBOX, p.pool.clone(), p.js.clone());
        let receipts = IdempotentConsumer::new(
            ConsumerSpec {
                name: "device-receipts".into(),
                schema: crate::SCHEMA,
                filter_subject: "reseller.events.v1.deletion.>".into(),
            },
            p.pool.clone(),
            p.js.clone(),
            Receipts,
        )
        // Each receipt is its own row: the three portals' answers apply side by side.
        .with_concurrency(4);
        vec![
            tokio::spawn(relay.run(shutdown.clone())),
            tokio::spawn(receipts.run(shutdown)),
        ]
    }
}
