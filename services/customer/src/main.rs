//! `customer-service`: accounts, reseller customers, approvals and the customer portal.

use reseller_kit::app::{NoSettings, run_service};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    run_service(
        "customer-service",
        "customer-service: accounts, reseller customers, approvals",
        async |platform, NoSettings {}| customer_service::CustomerModule::start(platform).await,
    )
    .await
}
