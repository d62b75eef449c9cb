//! `device-service`: uploads, devices and deletions.

use reseller_kit::app::{CustomerServiceUrl, run_service};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    run_service(
        "device-service",
        "device-service: uploads, devices and deletions",
        async |platform, customer_service: CustomerServiceUrl| {
            device_service::DeviceModule::start(platform, &customer_service.url).await
        },
    )
    .await
}
