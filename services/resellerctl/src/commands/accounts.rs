//! `resellerctl accounts`: AccountService (role admin).

use reseller_proto::v1 as pb;

use crate::cli::{AccountKindArg, AccountsCommand};
use crate::client::Portal;
use crate::errors::CliError;
use crate::output::Printer;
use crate::views::AccountView;

/// Runs an `accounts` command.
///
/// # Errors
/// The service's refusal or a lost connection.
pub async fn run(portal: &Portal, printer: Printer, cmd: AccountsCommand) -> Result<(), CliError> {
    let mut client = portal.accounts();
    let account = match cmd {
        AccountsCommand::Register {
            knox_id,
            kind,
            name,
            country,
        } => {
            let kind = match kind {
                AccountKindArg::Customer => pb::AccountKind::Customer,
                AccountKindArg::Msp => pb::AccountKind::Msp,
            };
            client
                .register_account(pb::RegisterAccountRequest {
                    knox_id,
                    kind: kind as i32,
                    company_name: name,
                    country,
                })
                .await
        }
        AccountsCommand::Get { knox_id } => {
            client.get_account(pb::GetAccountRequest { knox_id }).await
        }
    }
    .map_err(|s| portal.fail(s))?
    .into_inner();
    printer.one(&AccountView::from(account))
}
