//! `reporting-service`: the reseller's Customers page, search and CSV downloads.

use clap::Parser;
use reseller_kit::app::{ProgramArgs, ServiceModule, run_program};

#[derive(Debug, Parser)]
#[command(
    version,
    about = "reporting-service: the reseller views, search and CSV downloads"
)]
struct Args {
    #[command(flatten)]
    program: ProgramArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    run_program(args.program, |platform, _own_url| async move {
        let module = reporting_service::ReportingModule::start(&platform).await?;
        Ok(vec![Box::new(module) as Box<dyn ServiceModule>])
    })
    .await
}
