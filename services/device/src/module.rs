//! Wiring device-service into a program: migrations, gRPC, outbox relay, receipts consumer.

use reseller_kit::app::{Platform, ServiceModule};
use reseller_kit::grpc::GrpcServer;
use reseller_kit::inbox::{ConsumerSpec, IdempotentConsumer};
use reseller_kit::outbox::{Outbox, Relay};
use reseller_proto::v1::device_service_server::DeviceServiceServer;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::service::interceptor::InterceptedService;

use crate::grpc::DeviceApi;
use crate::receipts::Receipts;

/// The service's outbox.
pub const OUTBOX: Outbox = Outbox::new(crate::SCHEMA);

/// device-service as hosted by a program.
#[derive(Debug, Clone)]
pub struct DeviceModule {
    platform: Platform,
}

impl DeviceModule {
    /// Runs the migrations and builds the service.
    ///
    /// # Errors
    /// When the migrations fail.
    pub async fn start(platform: &Platform) -> anyhow::Result<Self> {
        reseller_kit::db::migrate(&platform.pool, &crate::MIGRATOR, "device-service").await?;
        Ok(Self { platform: platform.clone() })
    }
}

impl ServiceModule for DeviceModule {
    fn name(&self) -> &'static str {
        "device-service"
    }

    fn register(&self, server: &mut GrpcServer) {
        let limit = self.platform.config.grpc_max_message_bytes;
        server.add_service(InterceptedService::new(
            DeviceServiceServer::new(DeviceApi)
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
        );
        vec![tokio::spawn(relay.run(shutdown.clone())), tokio::spawn(receipts.run(shutdown))]
    }
}
