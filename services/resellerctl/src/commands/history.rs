//! `resellerctl devices history`: what happened to one device, oldest first
//! (`GetDeviceHistory`; DOMAIN.md "Finding devices, history and the activity log").

use reseller_proto::v1 as pb;
use serde::Serialize;

use crate::cli::OutputFormat;
use crate::client::Portal;
use crate::errors::CliError;
use crate::output::{Printer, Record, note};
use crate::views::{cell_time, time};

/// Runs `devices history ID`: a table (or CSV) of the entries, or in JSON the device's
/// primary identifier and its entries.
///
/// # Errors
/// The service's refusal (`NOT_FOUND` for a device the reseller did not upload,
/// `INVALID_ARGUMENT` for an ID no device can have) or a lost connection.
pub async fn run(portal: &Portal, printer: Printer, device_id: String) -> Result<(), CliError> {
    let history = portal
        .reporting()
        .get_device_history(pb::GetDeviceHistoryRequest { device_id })
        .await
        .map_err(|s| portal.fail(s))?
        .into_inner();
    let view = HistoryView::from(history);
    match printer.format() {
        OutputFormat::Json => printer.json(&view),
        OutputFormat::Csv => printer.all(view.entries),
        OutputFormat::Table => {
            note(format!("device {}", view.device_id));
            printer.all(view.entries)
        }
    }
}

/// A device's history (`reseller.v1.DeviceHistory`).
#[derive(Debug, Serialize)]
pub struct HistoryView {
    /// The device's primary identifier.
    pub device_id: String,
    /// Oldest first.
    pub entries: Vec<HistoryEntryView>,
}

impl From<pb::DeviceHistory> for HistoryView {
    fn from(h: pb::DeviceHistory) -> Self {
        Self {
            device_id: h.device_id,
            entries: h.entries.into_iter().map(HistoryEntryView::from).collect(),
        }
    }
}

/// `reseller.v1.DeviceEventKind` as a code (JSON; a table shows it in words).
pub fn event_kind(kind: i32) -> &'static str {
    match pb::DeviceEventKind::try_from(kind) {
        Ok(pb::DeviceEventKind::Uploaded) => "uploaded",
        Ok(pb::DeviceEventKind::MovedByMsp) => "moved_by_msp",
        Ok(pb::DeviceEventKind::Delinked) => "delinked",
        Ok(pb::DeviceEventKind::Deleted) => "deleted",
        _ => "unspecified",
    }
}

/// An event kind code as a table shows it.
fn event_label(code: &'static str) -> &'static str {
    match code {
        "moved_by_msp" => "moved by MSP",
        other => other,
    }
}

/// One entry of a device's history.
#[derive(Debug, Serialize)]
pub struct HistoryEntryView {
    pub occurred_at: Option<String>,
    pub kind: &'static str,
    /// The reseller's person (or reseller ID) for uploads and deletions; the MSP's or
    /// customer's Knox ID for moves and delinks.
    pub actor: String,
    pub upload_id: String,
    pub deletion_id: String,
    pub from_knox_id: String,
    pub to_knox_id: String,
}

impl From<pb::DeviceHistoryEntry> for HistoryEntryView {
    fn from(e: pb::DeviceHistoryEntry) -> Self {
        Self {
            occurred_at: time(e.occurred_at.as_ref()),
            kind: event_kind(e.kind),
            actor: e.actor,
            upload_id: e.upload_id,
            deletion_id: e.deletion_id,
            from_knox_id: e.from_knox_id,
            to_knox_id: e.to_knox_id,
        }
    }
}

impl Record for HistoryEntryView {
    fn headers() -> &'static [&'static str] {
        &["TIME", "KIND", "ACTOR", "UPLOAD", "DELETION", "FROM → TO"]
    }
    fn cells(&self) -> Vec<String> {
        let moved = match (self.from_knox_id.as_str(), self.to_knox_id.as_str()) {
            ("", "") => String::new(),
            ("", to) => format!("→ {to}"),
            (from, "") => format!("{from} →"),
            (from, to) => format!("{from} → {to}"),
        };
        vec![
            cell_time(&self.occurred_at),
            event_label(self.kind).into(),
            self.actor.clone(),
            self.upload_id.clone(),
            self.deletion_id.clone(),
            moved,
        ]
    }
}
