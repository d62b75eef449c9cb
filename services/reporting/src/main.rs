//! `reporting-service`: the reseller's Customers page, search and CSV downloads.

use reseller_kit::app::{NoSettings, run_service};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    run_service(
        "reporting-service",
        "reporting-service: the reseller views, search and CSV downloads",
        async |platform, NoSettings {}| reporting_service::ReportingModule::start(platform).await,
    )
    .await
}
