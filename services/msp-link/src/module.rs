//! Wiring msp-link-service into a program: migrations, gRPC, outbox relay, consumer.

use reseller_kit::app::{Platform, ServiceModule};
use reseller_kit::grpc::GrpcServer;
use reseller_kit::inbox::{ConsumerSpec, IdempotentConsumer};
use reseller_kit::outbox::{Outbox, Relay};
use reseller_proto::v1::msp_service_server::MspServiceServer;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::service::interceptor::InterceptedService;

use crate::grpc::MspApi;
use crate::projection::MspPortal;

/// The service's outbox.
pub const OUTBOX: Outbox = Outbox::new(crate::SCHEMA);

/// msp-link-service as hosted by a program.
#[derive(Debug, Clone)]
pub struct MspLinkModule {
    platform: Platform,
}

impl MspLinkModule {
    /// Runs the migrations and builds the service.
    ///
    /// # Errors
    /// When the migrations fail.
    pub async fn start(platform: &Platform) -> anyhow::Result<Self> {
        reseller_kit::db::migrate(&platform.pool, &crate::MIGRATOR, "msp-link-service").await?;
        Ok(Self { platform: platform.clone() })
    }
}

impl ServiceModule for MspLinkModule {
    fn name(&self) -> &'static str {
        "msp-link-service"
    }

    fn register(&self, server: &mut GrpcServer) {
        let limit = self.platform.config.grpc_max_message_bytes;
        server.add_service(InterceptedService::new(
            MspServiceServer::new(MspApi)
                .max_decoding_message_size(limit)
                .max_encoding_message_size(limit),
            self.platform.auth.clone(),
        ));
    }

    fn spawn_background(&self, shutdown: CancellationToken) -> Vec<JoinHandle<()>> {
        let p = &self.platform;
        let relay = Relay::new(OUTBOX, p.pool.clone(), p.js.clone());
        let portal = IdempotentConsumer::new(
            ConsumerSpec {
                name: "msp-portal".into(),
                schema: crate::SCHEMA,
                filter_subject: reseller_kit::subjects::ALL_EVENTS.into(),
            },
            p.pool.clone(),
            p.js.clone(),
            MspPortal,
        );
        vec![tokio::spawn(relay.run(shutdown.clone())), tokio::spawn(portal.run(shutdown))]
    }
}
