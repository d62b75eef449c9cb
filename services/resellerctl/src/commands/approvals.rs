//! `resellerctl approvals`: an account approves or revokes a reseller (role customer or
//! msp).

use reseller_proto::v1 as pb;

use crate::cli::ApprovalsCommand;
use crate::client::Portal;
use crate::errors::CliError;
use crate::output::Printer;
use crate::views::ApprovalView;

/// Runs an `approvals` command.
///
/// # Errors
/// The service's refusal or a lost connection.
pub async fn run(portal: &Portal, printer: Printer, cmd: ApprovalsCommand) -> Result<(), CliError> {
    let mut client = portal.customers();
    let approval = match cmd {
        ApprovalsCommand::Approve { reseller_id } => {
            client
                .approve_reseller(pb::ApproveResellerRequest { reseller_id })
                .await
        }
        ApprovalsCommand::Revoke { reseller_id } => {
            client
                .revoke_reseller(pb::RevokeResellerRequest { reseller_id })
                .await
        }
    }
    .map_err(|s| portal.fail(s))?
    .into_inner();
    printer.one(&ApprovalView::from(approval))
}
