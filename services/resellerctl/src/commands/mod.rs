//! One module per command group; [`run`] dispatches a parsed command line.

mod accounts;
pub(crate) mod activity;
mod approvals;
mod customers;
mod deletions;
mod devices;
pub(crate) mod find;
mod history;
mod msp;
mod paging;
mod portal;
mod token;
mod uploads;

pub(crate) use paging::{paged, paged_rows};

use crate::cli::{Cli, Command, DevicesCommand};
use crate::client::Portal;
use crate::errors::{CliError, Outcome};
use crate::output::Printer;

/// Runs one command; uploads tell whether every device was accepted.
///
/// # Errors
/// Whatever the command failed with, for `main` to print.
pub async fn run(cli: Cli) -> Result<Outcome, CliError> {
    let printer = Printer::new(cli.global.output, cli.global.excel);
    let command = match cli.command {
        // No connection needed.
        Command::Token(args) => return token::run(args, printer).map(|()| Outcome::Success),
        // Checks its file before it connects, and may need no connection at all.
        Command::Devices(DevicesCommand::Upload(args)) => {
            return devices::upload_command(&cli.global, printer, &args).await;
        }
        command => command,
    };
    let portal = Portal::connect(&cli.global).await?;
    match command {
        Command::Token(args) => token::run(args, printer),
        Command::Accounts(cmd) => accounts::run(&portal, printer, cmd).await,
        Command::Customers(cmd) => customers::run(&portal, printer, cmd).await,
        Command::Approvals(cmd) => approvals::run(&portal, printer, cmd).await,
        Command::Devices(cmd) => return devices::run(&portal, printer, cmd).await,
        Command::Uploads(cmd) => uploads::run(&portal, printer, cmd).await,
        Command::Deletions(cmd) => deletions::run(&portal, printer, cmd).await,
        Command::Msp(cmd) => msp::run(&portal, printer, cmd).await,
        Command::Portal(cmd) => portal::run(&portal, printer, cmd).await,
        Command::Activity(args) => activity::run(&portal, printer, args).await,
    }?;
    Ok(Outcome::Success)
}

/// Device IDs from arguments and, optionally, a device file (same format as uploads;
/// each row's device ID).
///
/// # Errors
/// When the file cannot be read, or no ID is named at all.
pub(crate) fn device_ids(
    ids: Vec<String>,
    file: Option<&std::path::Path>,
) -> Result<Vec<String>, CliError> {
    let mut all: Vec<String> = ids
        .into_iter()
        .map(|id| id.trim().to_owned())
        .filter(|id| !id.is_empty())
        .collect();
    if let Some(path) = file {
        let mut file = crate::device_file::DeviceFile::open(path, Default::default())?;
        while let Some(device) = file.next_device()? {
            let id = device.device_id.trim();
            if !id.is_empty() {
                all.push(id.to_owned());
            }
        }
    }
    if all.is_empty() {
        return Err(CliError::Usage(
            "name at least one device ID, as arguments or with --file".into(),
        ));
    }
    Ok(all)
}
