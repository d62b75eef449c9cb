//! Wiring customer-service into a program: migrations, gRPC services, outbox relay and
//! the customer portal's consumer.

use reseller_kit::app::{Platform, ServiceModule};
use reseller_kit::grpc::GrpcServer;
use reseller_kit::inbox::{ConsumerSpec, IdempotentConsumer};
use reseller_proto::v1::{
    account_service_server::AccountServiceServer, customer_service_server::CustomerServiceServer,
};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::events::portal::CustomerPortal;
use crate::grpc::CustomerApi;
use crate::postgres::{OUTBOX, Repository};

/// customer-service as hosted by a program.
#[derive(Debug, Clone)]
pub struct CustomerModule {
    platform: Platform,
    api: CustomerApi,
}

impl CustomerModule {
    /// Runs the migrations and builds the service.
    ///
    /// # Errors
    /// When the migrations fail.
    pub async fn start(platform: &Platform) -> anyhow::Result<Self> {
        reseller_kit::db::migrate(&platform.pool, &crate::MIGRATOR, "customer-service").await?;
        Ok(Self {
            platform: platform.clone(),
            api: CustomerApi::new(Repository::new(platform.pool.clone())),
        })
    }
}

impl ServiceModule for CustomerModule {
    fn name(&self) -> &'static str {
        "customer-service"
    }

    fn register(&self, server: &mut GrpcServer) {
        self.platform
            .serve(server, AccountServiceServer::new(self.api.clone()));
        self.platform
            .serve(server, CustomerServiceServer::new(self.api.clone()));
    }

    fn spawn_background(&self, shutdown: CancellationToken) -> Vec<JoinHandle<()>> {
        let portal = portal_consumer(&self.platform);
        self.platform
            .spawn_relay_and(OUTBOX, &shutdown, portal.run(shutdown.clone()))
    }
}

/// The customer portal's consumer (tests run it by hand or feed it events directly).
pub fn portal_consumer(platform: &Platform) -> IdempotentConsumer<CustomerPortal> {
    platform.consumer(
        ConsumerSpec {
            name: crate::PORTAL_CONSUMER.into(),
            schema: crate::SCHEMA,
            filter_subject: reseller_kit::subjects::ALL_EVENTS.into(),
        },
        CustomerPortal,
    )
}
