//! `resellerctl portal`: the customer portal (role customer).

use reseller_proto::v1 as pb;

use super::{Page, paged};
use crate::cli::PortalCommand;
use crate::client::Portal;
use crate::errors::CliError;
use crate::output::Printer;
use crate::views::PortalDeviceView;

/// Runs a `portal` command.
///
/// # Errors
/// The service's refusal or a lost connection.
pub async fn run(portal: &Portal, printer: Printer, cmd: PortalCommand) -> Result<(), CliError> {
    let PortalCommand::Devices { paging } = cmd;
    let page_size = paging.page_size;
    paged(printer, &paging, |page_token| async move {
        let page = portal
            .customers()
            .list_my_devices(pb::ListMyDevicesRequest {
                page_size,
                page_token,
            })
            .await
            .map_err(|s| portal.fail(s))?
            .into_inner();
        Ok(Page {
            rows: page
                .devices
                .into_iter()
                .map(PortalDeviceView::from)
                .collect(),
            next_page_token: page.next_page_token,
        })
    })
    .await?;
    Ok(())
}
