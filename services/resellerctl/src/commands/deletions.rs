//! `resellerctl deletions`: past deletions (role reseller).

use reseller_proto::v1 as pb;

use super::{Page, paged};
use crate::cli::DeletionsCommand;
use crate::client::Portal;
use crate::errors::CliError;
use crate::output::Printer;
use crate::views::DeletionView;

/// Runs a `deletions` command.
///
/// # Errors
/// The service's refusal or a lost connection.
pub async fn run(portal: &Portal, printer: Printer, cmd: DeletionsCommand) -> Result<(), CliError> {
    match cmd {
        DeletionsCommand::List { paging } => {
            let page_size = paging.page_size;
            paged(printer, &paging, |page_token| async move {
                let page = portal
                    .devices()
                    .list_deletions(pb::ListDeletionsRequest {
                        page_size,
                        page_token,
                    })
                    .await
                    .map_err(|s| portal.fail(s))?
                    .into_inner();
                Ok(Page {
                    rows: page.deletions.into_iter().map(DeletionView::from).collect(),
                    next_page_token: page.next_page_token,
                })
            })
            .await?;
            Ok(())
        }
    }
}
