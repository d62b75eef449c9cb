//! `msp-link-service`: MSP links, moves and the MSP portal.

use reseller_kit::app::{CustomerServiceUrl, run_service};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    run_service(
        "msp-link-service",
        "msp-link-service: MSP links, moves and the MSP portal",
        async |platform, customer_service: CustomerServiceUrl| {
            msp_link_service::MspLinkModule::start(platform, &customer_service.url).await
        },
    )
    .await
}
