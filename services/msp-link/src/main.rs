//! `msp-link-service`: uploads, devices and deletions.

use clap::Parser;
use reseller_kit::app::{ProgramArgs, ServiceModule, run_program};

#[derive(Debug, Parser)]
#[command(version, about = "msp-link-service: MSP links, moves and the MSP portal")]
struct Args {
    #[command(flatten)]
    program: ProgramArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    run_program(args.program, |platform, _own_url| async move {
        let module = msp_link_service::MspLinkModule::start(&platform).await?;
        Ok(vec![Box::new(module) as Box<dyn ServiceModule>])
    })
    .await
}
