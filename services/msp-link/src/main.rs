//! `msp-link-service`: MSP links, moves and the MSP portal.

use clap::Parser;
use reseller_kit::app::{ProgramArgs, ServiceModule, run_program};

#[derive(Debug, Parser)]
#[command(
    version,
    about = "msp-link-service: MSP links, moves and the MSP portal"
)]
struct Args {
    #[command(flatten)]
    program: ProgramArgs,

    /// Where customer-service answers (accounts are checked there).
    #[arg(
        long,
        env = "CUSTOMER_SERVICE_URL",
        default_value = "http://127.0.0.1:50051"
    )]
    customer_service_url: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let customer_service_url = args.customer_service_url;
    run_program(args.program, |platform, _own_url| async move {
        let module =
            msp_link_service::MspLinkModule::start(&platform, &customer_service_url).await?;
        Ok(vec![Box::new(module) as Box<dyn ServiceModule>])
    })
    .await
}
