//! `resellerctl deletions`: past deletions (role reseller).

use reseller_proto::v1 as pb;

use super::paged;
use crate::cli::DeletionsCommand;
use crate::client::Portal;
use crate::errors::CliError;
use crate::output::Printer;

/// Runs a `deletions` command.
///
/// # Errors
/// The service's refusal or a lost connection.
pub async fn run(portal: &Portal, printer: Printer, cmd: DeletionsCommand) -> Result<(), CliError> {
    match cmd {
        DeletionsCommand::List { paging } => {
            paged(portal, printer, &paging, |page| async move {
                portal
                    .devices()
                    .list_deletions(pb::ListDeletionsRequest::from(page))
                    .await
            })
            .await?;
            Ok(())
        }
    }
}
