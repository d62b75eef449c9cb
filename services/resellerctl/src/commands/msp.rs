//! `resellerctl msp`: MspService — links, modes, delinks, moves, the MSP's customers and
//! the MSP portal (role msp; a customer may delink itself).

use reseller_proto::v1 as pb;

use super::{device_ids, paged};
use crate::cli::{ModeArg, MspCommand};
use crate::client::Portal;
use crate::errors::CliError;
use crate::output::Printer;
use crate::views::{ManagedCustomerView, MoveView};

/// Runs an `msp` command.
///
/// # Errors
/// The service's refusal, a lost connection or an unreadable file.
pub async fn run(portal: &Portal, printer: Printer, cmd: MspCommand) -> Result<(), CliError> {
    let mut client = portal.msp();
    match cmd {
        MspCommand::Link {
            customer_knox_id,
            mode,
        } => {
            let mode = match mode {
                ModeArg::Fully => pb::ManagementMode::FullyManaged,
                ModeArg::Jointly => pb::ManagementMode::JointlyManaged,
            };
            let link = client
                .link_customer(pb::LinkCustomerRequest {
                    customer_knox_id,
                    mode: mode as i32,
                })
                .await
                .map_err(|s| portal.fail(s))?
                .into_inner();
            printer.one(&ManagedCustomerView::from(link))
        }
        MspCommand::Jointly { customer_knox_id } => {
            let link = client
                .set_jointly_managed(pb::SetJointlyManagedRequest { customer_knox_id })
                .await
                .map_err(|s| portal.fail(s))?
                .into_inner();
            printer.one(&ManagedCustomerView::from(link))
        }
        MspCommand::Delink {
            customer_knox_id,
            msp,
        } => {
            let link = client
                .delink_customer(pb::DelinkCustomerRequest {
                    customer_knox_id,
                    msp_id: msp,
                })
                .await
                .map_err(|s| portal.fail(s))?
                .into_inner();
            printer.one(&ManagedCustomerView::from(link))
        }
        MspCommand::Move {
            device_ids: ids,
            to,
            file,
        } => {
            let ids = device_ids(ids, file.as_deref())?;
            let moved = client
                .move_devices(pb::MoveDevicesRequest {
                    device_ids: ids,
                    to_customer_knox_id: to.clone(),
                })
                .await
                .map_err(|s| portal.fail(s))?
                .into_inner();
            printer.one(&MoveView {
                to_customer_knox_id: to,
                // The counts, not the lists: at most 1,000 rejected IDs are listed.
                moved: (moved.moved_count as usize).max(moved.moved_device_ids.len()),
                rejected: (moved.rejected_count as usize).max(moved.rejected_device_ids.len()),
                moved_device_ids: moved.moved_device_ids,
                rejected_device_ids: moved.rejected_device_ids,
                rejections: moved.rejections.into_iter().map(Into::into).collect(),
            })
        }
        MspCommand::Customers { paging } => {
            paged(portal, printer, &paging, |page| async move {
                portal
                    .msp()
                    .list_managed_customers(pb::ListManagedCustomersRequest::from(page))
                    .await
            })
            .await?;
            Ok(())
        }
        MspCommand::Devices { customer, paging } => {
            let customer_knox_id = customer.unwrap_or_default();
            let customer_knox_id = &customer_knox_id;
            paged(portal, printer, &paging, |page| async move {
                let request = pb::ListMspDevicesRequest {
                    customer_knox_id: customer_knox_id.clone(),
                    ..page.into()
                };
                portal.msp().list_msp_devices(request).await
            })
            .await?;
            Ok(())
        }
    }
}
