//! `customer-service`: accounts, reseller customers, approvals and the customer portal.

use clap::Parser;
use reseller_kit::app::{ProgramArgs, ServiceModule, run_program};

#[derive(Debug, Parser)]
#[command(
    version,
    about = "customer-service: accounts, reseller customers, approvals"
)]
struct Args {
    #[command(flatten)]
    program: ProgramArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    run_program(args.program, |platform, _own_url| async move {
        let module = customer_service::CustomerModule::start(&platform).await?;
        Ok(vec![Box::new(module) as Box<dyn ServiceModule>])
    })
    .await
}
