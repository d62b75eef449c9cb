//! Wiring msp-link-service into a program: migrations, gRPC, outbox relay, consumer.

use reseller_kit::app::{Platform, ServiceModule};
use reseller_kit::grpc::GrpcServer;
use reseller_kit::inbox::{ConsumerSpec, IdempotentConsumer};
use reseller_kit::outbox::Relay;
use reseller_proto::v1::msp_service_server::MspServiceServer;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::service::interceptor::InterceptedService;

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
        let limit = self.platform.config.grpc_max_message_bytes;
        server.add_service(InterceptedService::new(
            MspServiceServer::new(self.api.clone())
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
        vec![
            tokio::spawn(relay.run(shutdown.clone())),
            tokio::spawn(portal.run(shutdown)),
        ]
    }
}

/// The consumer that keeps msp-link's device view (tests run it by hand or feed it
/// events directly).
pub fn portal_consumer(platform: &Platform) -> IdempotentConsumer<MspPortal> {
    IdempotentConsumer::new(
        ConsumerSpec {
            name: "msp-portal".into(),
            schema: crate::SCHEMA,
            filter_subject: reseller_kit::subjects::ALL_EVENTS.into(),
        },
        platform.pool.clone(),
        platform.js.clone(),
        MspPortal,
    )
}
