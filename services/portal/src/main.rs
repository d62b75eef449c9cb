//! `reseller-portal`: all four services in one process on one gRPC address (the local
//! default), plus `dev-token` to mint development bearer tokens.

use std::time::Duration;

use clap::{Parser, Subcommand};
use reseller_kit::app::{ProgramArgs, ServiceModule, run_program};
use reseller_kit::auth::{JwtAuth, Role};

#[derive(Debug, Parser)]
#[command(
    version,
    about = "The reseller portal: customer, device, MSP-link and reporting services in one process"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve every service (the default when no subcommand is given).
    Serve(ProgramArgs),
    /// Print a development bearer token signed with AUTH_JWT_SECRET.
    DevToken {
        /// The role the token grants.
        #[arg(long, value_enum)]
        role: Role,
        /// The principal: a reseller ID, or the Knox ID of an MSP or customer.
        #[arg(long)]
        sub: String,
        /// How long the token is valid: seconds, or a number with s, m, h or d.
        #[arg(long, default_value = "24h", value_parser = parse_ttl)]
        ttl: Duration,
        /// The signing secret.
        #[arg(long, env = "AUTH_JWT_SECRET", hide_env_values = true)]
        auth_jwt_secret: String,
    },
}

fn parse_ttl(input: &str) -> Result<Duration, String> {
    let (digits, unit) = input.split_at(
        input
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(input.len()),
    );
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{input:?} is not a duration like 3600, 90m, 24h or 7d"))?;
    let seconds = match unit {
        "" | "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86_400,
        _ => return Err(format!("{input:?}: the unit must be s, m, h or d")),
    };
    Ok(Duration::from_secs(seconds))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // `reseller-portal` alone (or with only flags) means `reseller-portal serve`.
    let mut argv: Vec<String> = std::env::args().collect();
    let first = argv.get(1).map(String::as_str);
    let is_meta = matches!(first, Some("-h" | "--help" | "-V" | "--version" | "help"));
    if first.is_none() || (first.is_some_and(|a| a.starts_with('-')) && !is_meta) {
        argv.insert(1, "serve".into());
    }
    match Cli::parse_from(argv).command {
        Command::DevToken {
            role,
            sub,
            ttl,
            auth_jwt_secret,
        } => {
            println!("{}", JwtAuth::new(&auth_jwt_secret).mint(role, &sub, ttl)?);
            Ok(())
        }
        Command::Serve(args) => {
            run_program(args, |platform, own_url| async move {
                start_all(&platform, &own_url).await
            })
            .await
        }
    }
}

/// Starts the four services on one platform; they call each other at `own_url`.
async fn start_all(
    platform: &reseller_kit::app::Platform,
    own_url: &str,
) -> anyhow::Result<Vec<Box<dyn ServiceModule>>> {
    Ok(vec![
        Box::new(customer_service::CustomerModule::start(platform).await?),
        Box::new(device_service::DeviceModule::start(platform, own_url).await?),
        Box::new(msp_link_service::MspLinkModule::start(platform, own_url).await?),
        Box::new(reporting_service::ReportingModule::start(platform).await?),
    ])
}
