//! Wiring device-service into a program: migrations, gRPC, outbox relay, receipts consumer.

use reseller_kit::app::{Platform, ServiceModule};
use reseller_kit::grpc::GrpcServer;
use reseller_kit::inbox::ConsumerSpec;
use reseller_proto::v1::device_service_server::DeviceServiceServer;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::domain::RejectionReason;
use crate::events::receipts::Receipts;
use crate::grpc::DeviceApi;
use crate::grpc::accounts::AccountsClient;
use crate::postgres::{DeletionSampler, OUTBOX, Repository};

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
        let receipts = self.platform.consumer(
            ConsumerSpec {
                name: "device-receipts".into(),
                schema: crate::SCHEMA,
                filter_subject: reseller_kit::subjects::DELETION_EVENTS.into(),
            },
            Receipts,
        );
        // One at a time (waiting ones in batches): the receipt that completes a deletion
        // reads the others, so receipts of one deletion applied side by side would
        // conflict (serializable) and be retried.
        let mut tasks =
            self.platform
                .spawn_relay_and(OUTBOX, &shutdown, receipts.run(shutdown.clone()));
        if self.platform.metrics_on() {
            use reseller_kit::metrics::{UPLOAD_ACCEPTED, UPLOAD_REJECTED, UPLOAD_ROWS};
            // The counters exist from the start, at 0, so that the first upload shows as
            // an increase.
            ::metrics::counter!(UPLOAD_ACCEPTED).increment(0);
            ::metrics::counter!(UPLOAD_ROWS).increment(0);
            for reason in RejectionReason::ALL {
                ::metrics::counter!(UPLOAD_REJECTED, "reason" => reason.name()).increment(0);
            }
            let repo = Repository::new(self.platform.pool.clone());
            let sampler = std::sync::Arc::new(tokio::sync::Mutex::new(DeletionSampler::default()));
            tasks.push(reseller_kit::metrics::spawn_sampler(
                "deletions",
                &shutdown,
                move || {
                    let (repo, sampler) = (repo.clone(), sampler.clone());
                    async move { Ok(sampler.lock().await.sample(&repo).await?) }
                },
            ));
        }
        tasks
    }
}
