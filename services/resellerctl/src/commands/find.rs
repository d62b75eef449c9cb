//! `resellerctl devices find`: where the reseller's devices are now, by any identifier
//! (`FindDevices`; DOMAIN.md "Finding devices, history and the activity log").

use std::path::PathBuf;

use clap::Args;
use reseller_proto::v1 as pb;
use serde::Serialize;

use super::device_ids;
use crate::client::Portal;
use crate::errors::CliError;
use crate::output::{Printer, Record};
use crate::views::{cell_time, device_kind, time, yes_no};

/// Most identifiers one `FindDevices` call may name (the contract's limit).
pub const MAX_FIND_IDS: usize = 1000;

/// `devices find --help`.
pub const FIND_ABOUT: &str = "\
Where your devices are now, by any identifier (IMEI, IMEI 2, serial, MEID), in any
spelling an upload accepts: the row of your Customers page each is placed under, the
account holding it, whether an MSP moved it, its upload and whether it was deleted.

A device you did not upload is not found, exactly like an unknown one. The answer keeps
the order asked. The portal answers at most 1,000 identifiers per call: more are asked
for in calls of 1,000, one after another.";

/// `devices find` arguments.
#[derive(Debug, Args)]
pub struct FindArgs {
    /// Identifiers to look up.
    pub device_ids: Vec<String>,
    /// Also look up the devices listed in this file (same format as an upload file).
    #[arg(long)]
    pub file: Option<PathBuf>,
}

/// Runs `devices find`: every identifier's location, in the order asked, in calls of at
/// most [`MAX_FIND_IDS`].
///
/// # Errors
/// A usage error when no identifier is named; an unreadable file; the service's
/// refusal (e.g. `INVALID_ARGUMENT` for an empty identifier) or a lost connection.
pub async fn run(portal: &Portal, printer: Printer, args: FindArgs) -> Result<(), CliError> {
    let ids = device_ids(args.device_ids, args.file.as_deref())?;
    let mut list = printer.list::<LocationView>();
    for chunk in ids.chunks(MAX_FIND_IDS) {
        let found = portal
            .reporting()
            .find_devices(pb::FindDevicesRequest {
                device_ids: chunk.to_vec(),
            })
            .await
            .map_err(|s| portal.fail(s))?
            .into_inner();
        list.push(found.devices.into_iter().map(LocationView::from).collect())?;
    }
    list.finish()?;
    Ok(())
}

/// Where one device is (`reseller.v1.DeviceLocation`).
#[derive(Debug, Serialize)]
pub struct LocationView {
    /// The identifier as asked (canonical).
    pub device_id: String,
    pub found: bool,
    /// The device's primary identifier (differs when a secondary one was asked).
    pub primary_device_id: String,
    pub kind: &'static str,
    pub model: String,
    pub secondary_ids: Vec<String>,
    pub placed_under_knox_id: String,
    pub holder_knox_id: String,
    pub moved_by_msp: bool,
    pub msp_id: String,
    pub upload_id: String,
    pub order_number: String,
    pub uploaded_at: Option<String>,
    #[serde(rename = "virtual")]
    pub is_virtual: bool,
    pub deleted: bool,
    pub deletion_id: String,
    pub deleted_at: Option<String>,
}

impl From<pb::DeviceLocation> for LocationView {
    fn from(d: pb::DeviceLocation) -> Self {
        Self {
            uploaded_at: time(d.uploaded_at.as_ref()),
            deleted_at: time(d.deleted_at.as_ref()),
            kind: if d.found { device_kind(d.id_kind) } else { "" },
            device_id: d.device_id,
            found: d.found,
            primary_device_id: d.primary_device_id,
            model: d.model,
            secondary_ids: d.secondary_ids,
            placed_under_knox_id: d.placed_under_knox_id,
            holder_knox_id: d.holder_knox_id,
            moved_by_msp: d.moved_by_msp,
            msp_id: d.msp_id,
            upload_id: d.upload_id,
            order_number: d.order_number,
            is_virtual: d.r#virtual,
            deleted: d.deleted,
            deletion_id: d.deletion_id,
        }
    }
}

impl Record for LocationView {
    fn headers() -> &'static [&'static str] {
        &[
            "ASKED ID",
            "FOUND",
            "DEVICE ID",
            "KIND",
            "MODEL",
            "PLACED UNDER",
            "HOLDER",
            "MOVED BY MSP",
            "MSP",
            "UPLOAD",
            "ORDER",
            "UPLOADED",
            "VIRTUAL",
            "DELETED",
        ]
    }

    /// A device not found shows only the identifier and `no`: every other column is
    /// empty, as the answer is.
    fn cells(&self) -> Vec<String> {
        if !self.found {
            let mut cells = vec![String::new(); Self::headers().len()];
            cells[0] = self.device_id.clone();
            cells[1] = "no".into();
            return cells;
        }
        let deleted = if self.deleted {
            format!("{} ({})", self.deletion_id, cell_time(&self.deleted_at))
        } else {
            "no".into()
        };
        vec![
            self.device_id.clone(),
            "yes".into(),
            self.primary_device_id.clone(),
            self.kind.into(),
            self.model.clone(),
            self.placed_under_knox_id.clone(),
            self.holder_knox_id.clone(),
            yes_no(self.moved_by_msp),
            self.msp_id.clone(),
            self.upload_id.clone(),
            self.order_number.clone(),
            cell_time(&self.uploaded_at),
            yes_no(self.is_virtual),
            deleted,
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_device_not_found_shows_only_its_identifier() {
        let view = LocationView::from(pb::DeviceLocation {
            device_id: "359999999999999".into(),
            ..Default::default()
        });
        let cells = view.cells();
        assert_eq!(cells.len(), LocationView::headers().len());
        assert_eq!((&*cells[0], &*cells[1]), ("359999999999999", "no"));
        assert!(cells[2..].iter().all(String::is_empty), "{cells:?}");
    }

    #[test]
    fn a_deleted_device_names_its_deletion_and_time() {
        let view = LocationView::from(pb::DeviceLocation {
            device_id: "A1".into(),
            found: true,
            deleted: true,
            deletion_id: "d-1".into(),
            deleted_at: Some(prost_types::Timestamp {
                seconds: 1_700_000_000,
                nanos: 5,
            }),
            ..Default::default()
        });
        assert_eq!(view.cells().last().unwrap(), "d-1 (2023-11-14T22:13:20Z)");
    }
}
