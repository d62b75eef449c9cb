//! `resellerctl portal`: the customer portal (role customer).

use reseller_proto::v1 as pb;

use super::paged;
use crate::cli::PortalCommand;
use crate::client::Portal;
use crate::errors::CliError;
use crate::output::Printer;

/// Runs a `portal` command.
///
/// # Errors
/// The service's refusal or a lost connection.
pub async fn run(portal: &Portal, printer: Printer, cmd: PortalCommand) -> Result<(), CliError> {
    let PortalCommand::Devices { paging } = cmd;
    paged(portal, printer, &paging, |page| async move {
        portal
            .customers()
            .list_my_devices(pb::ListMyDevicesRequest::from(page))
            .await
    })
    .await?;
    Ok(())
}
