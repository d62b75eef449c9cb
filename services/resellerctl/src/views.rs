//! The results as resellerctl prints them: plain structs mapped from the protobuf
//! messages (prost types do not serialise), with their table and CSV columns.

use prost_types::Timestamp;
use reseller_kit::accounts::CustomerStatus;
use reseller_kit::csv::{CsvChunker, CsvLine, CustomerLine, DeviceLine};
use reseller_kit::device_id::DeviceIdKind;
use reseller_proto::v1 as pb;
use serde::Serialize;
use time::OffsetDateTime;

use crate::output::{CsvDialect, Record};

/// The instant a protobuf timestamp names; `None` when absent.
fn instant(ts: Option<&Timestamp>) -> Option<OffsetDateTime> {
    ts.map(|ts| reseller_kit::timestamp::from_proto(Some(ts)))
}

/// RFC 3339 in UTC, full precision (JSON); `None` when absent.
pub fn time(ts: Option<&Timestamp>) -> Option<String> {
    instant(ts).map(reseller_kit::timestamp::rfc3339_utc)
}

/// A time for a table or CSV cell: RFC 3339 in UTC to the second; empty when absent.
pub(crate) fn cell_time(at: &Option<String>) -> String {
    match at {
        Some(at) => match at.split_once('.') {
            Some((seconds, _)) => format!("{seconds}Z"),
            None => at.clone(),
        },
        None => String::new(),
    }
}

/// A code for a table cell: `not_applicable` → `not applicable`.
pub fn words(code: &str) -> String {
    code.replace('_', " ")
}

pub(crate) fn yes_no(b: bool) -> String {
    if b { "yes" } else { "no" }.into()
}

/// `reseller.v1.AccountKind` in words.
pub fn account_kind(kind: i32) -> &'static str {
    match pb::AccountKind::try_from(kind) {
        Ok(pb::AccountKind::Customer) => "customer",
        Ok(pb::AccountKind::Msp) => "msp",
        _ => "unspecified",
    }
}

/// `reseller.v1.CustomerStatus` as a code (JSON).
pub fn status_code(status: i32) -> &'static str {
    match pb::CustomerStatus::try_from(status) {
        Ok(pb::CustomerStatus::PendingVerification) => "pending_verification",
        Ok(pb::CustomerStatus::Active) => "active",
        Ok(pb::CustomerStatus::Inactive) => "inactive",
        _ => "unspecified",
    }
}

/// A status code as the STATUS column and the CSV downloads label it (the kit's
/// [`CustomerStatus::label`]); an unknown code as is.
fn status_label(code: &'static str) -> &'static str {
    let status = match code {
        "pending_verification" => CustomerStatus::PendingVerification,
        "active" => CustomerStatus::Active,
        "inactive" => CustomerStatus::Inactive,
        other => return other,
    };
    status.label()
}

/// `reseller.v1.DeviceIdKind` in words.
pub fn device_kind(kind: i32) -> &'static str {
    match pb::DeviceIdKind::try_from(kind) {
        Ok(pb::DeviceIdKind::Imei) => "imei",
        Ok(pb::DeviceIdKind::Meid) => "meid",
        Ok(pb::DeviceIdKind::Serial) => "serial",
        _ => "unspecified",
    }
}

/// `reseller.v1.ManagementMode` in words.
pub fn mode(mode: i32) -> &'static str {
    match pb::ManagementMode::try_from(mode) {
        Ok(pb::ManagementMode::FullyManaged) => "fully_managed",
        Ok(pb::ManagementMode::JointlyManaged) => "jointly_managed",
        Ok(pb::ManagementMode::Delinked) => "delinked",
        _ => "unspecified",
    }
}

/// `reseller.v1.PortalState` in words.
pub fn portal_state(state: i32) -> &'static str {
    match pb::PortalState::try_from(state) {
        Ok(pb::PortalState::Pending) => "pending",
        Ok(pb::PortalState::Removed) => "removed",
        Ok(pb::PortalState::NotApplicable) => "not_applicable",
        _ => "unspecified",
    }
}

/// `reseller.v1.RejectionReason` in words.
pub fn rejection_reason(reason: i32) -> &'static str {
    match pb::RejectionReason::try_from(reason) {
        Ok(pb::RejectionReason::InvalidId) => "invalid_id",
        Ok(pb::RejectionReason::DuplicateInUpload) => "duplicate_in_upload",
        Ok(pb::RejectionReason::AlreadyRegistered) => "already_registered",
        _ => "unspecified",
    }
}

/// An enrollment account.
#[derive(Debug, Serialize)]
pub struct AccountView {
    pub knox_id: String,
    pub kind: &'static str,
    pub company_name: String,
    pub country: String,
    pub created_at: Option<String>,
}

impl From<pb::Account> for AccountView {
    fn from(a: pb::Account) -> Self {
        Self {
            created_at: time(a.created_at.as_ref()),
            knox_id: a.knox_id,
            kind: account_kind(a.kind),
            company_name: a.company_name,
            country: a.country,
        }
    }
}

impl Record for AccountView {
    fn headers() -> &'static [&'static str] {
        &["KNOX ID", "KIND", "COMPANY NAME", "COUNTRY", "CREATED"]
    }
    fn cells(&self) -> Vec<String> {
        vec![
            self.knox_id.clone(),
            self.kind.into(),
            self.company_name.clone(),
            self.country.clone(),
            cell_time(&self.created_at),
        ]
    }
}

/// One of a reseller's customers.
#[derive(Debug, Serialize)]
pub struct CustomerView {
    pub knox_id: String,
    pub kind: &'static str,
    pub company_name: String,
    pub country: String,
    pub internal_reference: String,
    pub status: &'static str,
    pub added_at: Option<String>,
}

impl From<pb::Customer> for CustomerView {
    fn from(c: pb::Customer) -> Self {
        Self {
            added_at: time(c.added_at.as_ref()),
            knox_id: c.knox_id,
            kind: account_kind(c.kind),
            company_name: c.company_name,
            country: c.country,
            internal_reference: c.internal_reference,
            status: status_code(c.status),
        }
    }
}

impl Record for CustomerView {
    fn headers() -> &'static [&'static str] {
        &[
            "KNOX ID",
            "KIND",
            "COMPANY NAME",
            "INTERNAL REFERENCE",
            "COUNTRY",
            "STATUS",
            "ADDED",
        ]
    }
    fn cells(&self) -> Vec<String> {
        vec![
            self.knox_id.clone(),
            self.kind.into(),
            self.company_name.clone(),
            self.internal_reference.clone(),
            self.country.clone(),
            status_label(self.status).into(),
            cell_time(&self.added_at),
        ]
    }
}

/// A row of the Customers page.
#[derive(Debug, Serialize)]
pub struct CustomerRowView {
    pub knox_id: String,
    pub kind: &'static str,
    pub company_name: String,
    pub internal_reference: String,
    pub display_id: String,
    pub managing_msp_id: String,
    pub country: String,
    pub last_uploaded_at: Option<String>,
    pub uploads: i64,
    pub devices: i64,
    pub status: &'static str,
    /// The last upload's instant, for the customers file's `Last Uploaded` (to its full
    /// precision, as the download writes it).
    #[serde(skip)]
    pub last_uploaded: Option<OffsetDateTime>,
}

impl From<pb::CustomerRow> for CustomerRowView {
    fn from(r: pb::CustomerRow) -> Self {
        Self {
            last_uploaded_at: time(r.last_uploaded_at.as_ref()),
            last_uploaded: instant(r.last_uploaded_at.as_ref()),
            knox_id: r.knox_id,
            kind: account_kind(r.kind),
            company_name: r.company_name,
            internal_reference: r.internal_reference,
            display_id: r.display_id,
            managing_msp_id: r.managing_msp_id,
            country: r.country,
            uploads: r.uploaded_devices,
            devices: r.devices,
            status: status_code(r.status),
        }
    }
}

impl CustomerRowView {
    /// COMPANY NAME / Internal reference.
    fn name_cell(&self) -> String {
        if self.internal_reference.is_empty() {
            self.company_name.clone()
        } else {
            format!("{} / {}", self.company_name, self.internal_reference)
        }
    }

    /// The shown ID: the display ID (the managing MSP's for a customer an MSP manages),
    /// else the Knox ID.
    fn shown_id(&self) -> &str {
        if self.display_id.is_empty() {
            &self.knox_id
        } else {
            &self.display_id
        }
    }

    /// CUSTOMER ID/MSP ID: the shown ID, tagged MSP for an MSP row or a managed customer.
    fn id_cell(&self) -> String {
        let id = self.shown_id();
        if self.kind == "msp" || !self.managing_msp_id.is_empty() {
            format!("{id} [MSP]")
        } else {
            id.to_owned()
        }
    }
}

impl Record for CustomerRowView {
    /// The same file as the customers download (`customers export`).
    const CSV_DIALECT: CsvDialect = CsvDialect::Download(CustomerLine::HEADER);

    fn headers() -> &'static [&'static str] {
        &[
            "COMPANY NAME / Internal reference",
            "CUSTOMER ID/MSP ID",
            "COUNTRY",
            "LAST UPLOADED",
            "UPLOADS",
            "DEVICES",
            "STATUS",
        ]
    }
    fn cells(&self) -> Vec<String> {
        vec![
            self.name_cell(),
            self.id_cell(),
            self.country.clone(),
            cell_time(&self.last_uploaded_at),
            self.uploads.to_string(),
            self.devices.to_string(),
            status_label(self.status).into(),
        ]
    }

    /// As the download writes the row: the bare shown ID (no MSP tag), the last upload
    /// to its full precision.
    fn write_download(&self, out: &mut CsvChunker) {
        CustomerLine {
            company_name: &self.company_name,
            internal_reference: &self.internal_reference,
            customer_id: self.shown_id(),
            country: &self.country,
            last_uploaded: self.last_uploaded,
            uploads: self.uploads,
            devices: self.devices,
            status: status_label(self.status),
        }
        .write(out);
    }
}

/// An upload placed under a customer row.
#[derive(Debug, Serialize)]
pub struct UploadSummaryView {
    pub upload_id: String,
    pub uploaded_at: Option<String>,
    pub order_number: String,
    pub device_count: i64,
    #[serde(rename = "virtual")]
    pub is_virtual: bool,
    pub via_msp_id: String,
}

impl From<pb::UploadSummary> for UploadSummaryView {
    fn from(u: pb::UploadSummary) -> Self {
        Self {
            uploaded_at: time(u.uploaded_at.as_ref()),
            upload_id: u.upload_id,
            order_number: u.order_number,
            device_count: u.device_count,
            is_virtual: u.r#virtual,
            via_msp_id: u.via_msp_id,
        }
    }
}

impl Record for UploadSummaryView {
    fn headers() -> &'static [&'static str] {
        &[
            "UPLOAD ID",
            "UPLOADED",
            "ORDER NUMBER",
            "DEVICES",
            "VIRTUAL",
            "VIA MSP",
        ]
    }
    fn cells(&self) -> Vec<String> {
        vec![
            self.upload_id.clone(),
            cell_time(&self.uploaded_at),
            self.order_number.clone(),
            self.device_count.to_string(),
            yes_no(self.is_virtual),
            self.via_msp_id.clone(),
        ]
    }
}

/// A customer's detail: its row and its uploads.
#[derive(Debug, Serialize)]
pub struct CustomerDetailView {
    pub summary: Option<CustomerRowView>,
    pub uploads: Vec<UploadSummaryView>,
}

impl From<pb::CustomerDetail> for CustomerDetailView {
    fn from(d: pb::CustomerDetail) -> Self {
        Self {
            summary: d.summary.map(Into::into),
            uploads: d.uploads.into_iter().map(Into::into).collect(),
        }
    }
}

/// A device placed under a customer row.
#[derive(Debug, Serialize)]
pub struct CustomerDeviceView {
    pub device_id: String,
    pub kind: &'static str,
    pub model: String,
    pub upload_id: String,
    pub uploaded_at: Option<String>,
    pub order_number: String,
    #[serde(rename = "virtual")]
    pub is_virtual: bool,
    /// The kind, for the devices file's `Device Type` (`None` when unspecified).
    #[serde(skip)]
    pub id_kind: Option<DeviceIdKind>,
    /// The upload's instant, for the devices file's `Uploaded At`.
    #[serde(skip)]
    pub uploaded: Option<OffsetDateTime>,
    /// The virtual upload's MSP, for the `Via MSP` column ("" when not virtual). Not in
    /// `ListCustomerDevices`' answer: `customers devices -o csv` fills it from the
    /// customer's detail.
    #[serde(skip)]
    pub via_msp_id: String,
}

impl From<pb::CustomerDevice> for CustomerDeviceView {
    fn from(d: pb::CustomerDevice) -> Self {
        Self {
            uploaded_at: time(d.uploaded_at.as_ref()),
            uploaded: instant(d.uploaded_at.as_ref()),
            id_kind: i16::try_from(d.id_kind)
                .ok()
                .and_then(DeviceIdKind::from_i16),
            device_id: d.device_id,
            kind: device_kind(d.id_kind),
            model: d.model,
            upload_id: d.upload_id,
            order_number: d.order_number,
            is_virtual: d.r#virtual,
            via_msp_id: String::new(),
        }
    }
}

impl Record for CustomerDeviceView {
    /// The same file as the customer's download (`customers export KNOX_ID`).
    const CSV_DIALECT: CsvDialect = CsvDialect::Download(DeviceLine::HEADER);

    fn headers() -> &'static [&'static str] {
        &[
            "DEVICE ID",
            "KIND",
            "MODEL",
            "UPLOAD ID",
            "UPLOADED",
            "ORDER NUMBER",
            "VIRTUAL",
        ]
    }
    fn cells(&self) -> Vec<String> {
        vec![
            self.device_id.clone(),
            self.kind.into(),
            self.model.clone(),
            self.upload_id.clone(),
            cell_time(&self.uploaded_at),
            self.order_number.clone(),
            yes_no(self.is_virtual),
        ]
    }

    /// As the download writes the line: the upload time to its full precision, the kind
    /// as a label.
    fn write_download(&self, out: &mut CsvChunker) {
        DeviceLine {
            upload_id: &self.upload_id,
            uploaded_at: self.uploaded,
            order_number: &self.order_number,
            device_id: &self.device_id,
            kind: self.id_kind,
            model: &self.model,
            virtual_upload: self.is_virtual,
            via_msp_id: &self.via_msp_id,
        }
        .write(out);
    }
}

/// A device as the MSP portal and the customer portal show it.
#[derive(Debug, Serialize)]
pub struct PortalDeviceView {
    pub device_id: String,
    pub kind: &'static str,
    pub model: String,
    pub reseller_id: String,
    pub upload_id: String,
    pub holder_knox_id: String,
    pub moved_by_msp: bool,
    pub msp_id: String,
    pub uploaded_at: Option<String>,
}

impl From<pb::PortalDevice> for PortalDeviceView {
    fn from(d: pb::PortalDevice) -> Self {
        Self {
            uploaded_at: time(d.uploaded_at.as_ref()),
            device_id: d.device_id,
            kind: device_kind(d.id_kind),
            model: d.model,
            reseller_id: d.reseller_id,
            upload_id: d.upload_id,
            holder_knox_id: d.holder_knox_id,
            moved_by_msp: d.moved_by_msp,
            msp_id: d.msp_id,
        }
    }
}

impl Record for PortalDeviceView {
    fn headers() -> &'static [&'static str] {
        &[
            "DEVICE ID",
            "KIND",
            "MODEL",
            "RESELLER",
            "HOLDER",
            "MOVED BY MSP",
            "MSP",
            "UPLOAD ID",
            "UPLOADED",
        ]
    }
    fn cells(&self) -> Vec<String> {
        vec![
            self.device_id.clone(),
            self.kind.into(),
            self.model.clone(),
            self.reseller_id.clone(),
            self.holder_knox_id.clone(),
            yes_no(self.moved_by_msp),
            self.msp_id.clone(),
            self.upload_id.clone(),
            cell_time(&self.uploaded_at),
        ]
    }
}

/// An account's decision about a reseller.
#[derive(Debug, Serialize)]
pub struct ApprovalView {
    pub reseller_id: String,
    pub knox_id: String,
    pub approved: bool,
}

impl From<pb::ResellerApproval> for ApprovalView {
    fn from(a: pb::ResellerApproval) -> Self {
        Self {
            reseller_id: a.reseller_id,
            knox_id: a.knox_id,
            approved: a.approved,
        }
    }
}

impl Record for ApprovalView {
    fn headers() -> &'static [&'static str] {
        &["RESELLER", "KNOX ID", "APPROVED"]
    }
    fn cells(&self) -> Vec<String> {
        vec![
            self.reseller_id.clone(),
            self.knox_id.clone(),
            yes_no(self.approved),
        ]
    }
}

/// One rejected device of an upload (also the rejects file's row).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RejectionView {
    pub index: i64,
    pub device_id: String,
    pub reason: &'static str,
    pub message: String,
}

impl From<pb::DeviceRejection> for RejectionView {
    fn from(r: pb::DeviceRejection) -> Self {
        Self {
            index: r.index,
            device_id: r.device_id,
            reason: rejection_reason(r.reason),
            message: r.message,
        }
    }
}

impl Record for RejectionView {
    fn headers() -> &'static [&'static str] {
        &["index", "device_id", "reason", "message"]
    }
    fn cells(&self) -> Vec<String> {
        vec![
            self.index.to_string(),
            self.device_id.clone(),
            self.reason.into(),
            self.message.clone(),
        ]
    }
}

/// Rejections counted by reason.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ReasonCounts {
    pub invalid_id: i64,
    pub duplicate_in_upload: i64,
    pub already_registered: i64,
}

impl ReasonCounts {
    /// Counts one rejection.
    pub fn add(&mut self, reason: &str) {
        match reason {
            "invalid_id" => self.invalid_id += 1,
            "duplicate_in_upload" => self.duplicate_in_upload += 1,
            "already_registered" => self.already_registered += 1,
            _ => {}
        }
    }

    /// Every rejection counted.
    pub fn total(&self) -> i64 {
        self.invalid_id + self.duplicate_in_upload + self.already_registered
    }

    /// "invalid ID 3, duplicate in the file 2, already registered 0".
    pub fn describe(&self) -> String {
        format!(
            "invalid ID {}, duplicate in the upload {}, already registered {}",
            self.invalid_id, self.duplicate_in_upload, self.already_registered
        )
    }
}

/// An upload's result.
#[derive(Debug, Serialize)]
pub struct UploadView {
    pub upload_id: String,
    pub target_knox_id: String,
    pub order_number: String,
    pub client_upload_id: String,
    pub uploaded_at: Option<String>,
    /// Who uploaded: the person the token named, else the reseller ID ("" for a
    /// validation, which records nothing).
    pub actor: String,
    pub accepted: i64,
    pub rejected: i64,
    /// `None` when the answer carried only the first rejections and they were not all
    /// paged: counts of a part would mislead.
    pub rejected_by_reason: Option<ReasonCounts>,
    /// The answer carries only the first 1,000 rejections.
    pub rejections_truncated: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rejects_file: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seconds: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stream_seconds: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub devices_per_second: Option<f64>,
}

impl From<pb::Upload> for UploadView {
    fn from(upload: pb::Upload) -> Self {
        Self::new(&upload)
    }
}

impl UploadView {
    /// The view of `upload` (its rejections are written elsewhere); the counts by
    /// reason are those of its rejections when it carries them all.
    pub fn new(upload: &pb::Upload) -> Self {
        let mut counts = ReasonCounts::default();
        for r in &upload.rejections {
            counts.add(rejection_reason(r.reason));
        }
        Self {
            upload_id: upload.upload_id.clone(),
            target_knox_id: upload.target_knox_id.clone(),
            order_number: upload.order_number.clone(),
            client_upload_id: upload.client_upload_id.clone(),
            uploaded_at: time(upload.uploaded_at.as_ref()),
            actor: upload.actor.clone(),
            accepted: upload.accepted_count,
            rejected: upload.rejected_count,
            rejected_by_reason: (!upload.rejections_truncated).then_some(counts),
            rejections_truncated: upload.rejections_truncated,
            rejects_file: None,
            seconds: None,
            stream_seconds: None,
            devices_per_second: None,
        }
    }
}

impl Record for UploadView {
    fn headers() -> &'static [&'static str] {
        &[
            "UPLOAD ID",
            "TARGET",
            "ORDER NUMBER",
            "CLIENT UPLOAD ID",
            "UPLOADED",
            "BY",
            "ACCEPTED",
            "REJECTED",
            "REJECTED BY REASON",
            "REJECTS FILE",
            "DEVICES/S",
        ]
    }
    fn cells(&self) -> Vec<String> {
        vec![
            self.upload_id.clone(),
            self.target_knox_id.clone(),
            self.order_number.clone(),
            self.client_upload_id.clone(),
            cell_time(&self.uploaded_at),
            self.actor.clone(),
            self.accepted.to_string(),
            self.rejected.to_string(),
            self.rejected_by_reason
                .map(|c| c.describe())
                .unwrap_or_default(),
            self.rejects_file.clone().unwrap_or_default(),
            self.devices_per_second
                .map(|r| format!("{r:.0}"))
                .unwrap_or_default(),
        ]
    }
}

/// A deletion and each portal's progress.
#[derive(Debug, Serialize)]
pub struct DeletionView {
    pub deletion_id: String,
    pub deleted: usize,
    pub not_found: usize,
    pub deleted_device_ids: Vec<String>,
    pub not_found_device_ids: Vec<String>,
    pub reseller_portal: &'static str,
    pub msp_portal: &'static str,
    pub customer_portal: &'static str,
    pub complete: bool,
    pub requested_at: Option<String>,
    /// Who deleted: the person the token named, else the reseller ID.
    pub actor: String,
}

impl From<pb::Deletion> for DeletionView {
    fn from(d: pb::Deletion) -> Self {
        Self {
            requested_at: time(d.requested_at.as_ref()),
            deletion_id: d.deletion_id,
            // The count: a list's summaries carry no device lists.
            deleted: (d.deleted_count as usize).max(d.deleted_device_ids.len()),
            // The count, not the list: the answer lists at most the first 1,000.
            not_found: (d.not_found_count as usize).max(d.not_found_device_ids.len()),
            deleted_device_ids: d.deleted_device_ids,
            not_found_device_ids: d.not_found_device_ids,
            reseller_portal: portal_state(d.reseller_portal),
            msp_portal: portal_state(d.msp_portal),
            customer_portal: portal_state(d.customer_portal),
            complete: d.complete,
            actor: d.actor,
        }
    }
}

/// At most a few IDs, then "… and N more", where `total` is how many there are in all
/// (an answer may carry only the first 1,000 of them).
fn some_ids(ids: &[String], total: usize) -> String {
    const SHOWN: usize = 10;
    let mut text = ids
        .iter()
        .take(SHOWN)
        .cloned()
        .collect::<Vec<_>>()
        .join(" ");
    let shown = ids.len().min(SHOWN);
    let total = total.max(ids.len());
    if total > shown {
        text.push_str(&format!(" … and {} more", total - shown));
    }
    text
}

impl Record for DeletionView {
    fn headers() -> &'static [&'static str] {
        &[
            "DELETION ID",
            "DELETED",
            "NOT FOUND",
            "RESELLER PORTAL",
            "MSP PORTAL",
            "CUSTOMER PORTAL",
            "COMPLETE",
            "REQUESTED",
            "BY",
        ]
    }
    fn cells(&self) -> Vec<String> {
        let not_found = if self.not_found == 0 {
            "0".to_owned()
        } else {
            format!(
                "{} ({})",
                self.not_found,
                some_ids(&self.not_found_device_ids, self.not_found)
            )
        };
        vec![
            self.deletion_id.clone(),
            self.deleted.to_string(),
            not_found,
            words(self.reseller_portal),
            words(self.msp_portal),
            words(self.customer_portal),
            yes_no(self.complete),
            cell_time(&self.requested_at),
            self.actor.clone(),
        ]
    }
}

/// A customer an MSP links.
#[derive(Debug, Serialize)]
pub struct ManagedCustomerView {
    pub msp_id: String,
    pub customer_knox_id: String,
    pub mode: &'static str,
    pub since: Option<String>,
}

impl From<pb::ManagedCustomer> for ManagedCustomerView {
    fn from(m: pb::ManagedCustomer) -> Self {
        Self {
            since: time(m.since.as_ref()),
            msp_id: m.msp_id,
            customer_knox_id: m.customer_knox_id,
            mode: mode(m.mode),
        }
    }
}

impl Record for ManagedCustomerView {
    fn headers() -> &'static [&'static str] {
        &["MSP ID", "CUSTOMER", "MODE", "SINCE"]
    }
    fn cells(&self) -> Vec<String> {
        vec![
            self.msp_id.clone(),
            self.customer_knox_id.clone(),
            words(self.mode),
            cell_time(&self.since),
        ]
    }
}

/// The result of a move.
#[derive(Debug, Serialize)]
pub struct MoveView {
    pub to_customer_knox_id: String,
    pub moved: usize,
    pub rejected: usize,
    pub moved_device_ids: Vec<String>,
    pub rejected_device_ids: Vec<String>,
    /// Why each listed identifier was rejected (the first 1,000).
    pub rejections: Vec<MoveRejectionView>,
}

/// One identifier a move did not move, and why.
#[derive(Debug, Serialize)]
pub struct MoveRejectionView {
    pub device_id: String,
    /// `not_a_device_id` or `not_held`.
    pub reason: &'static str,
}

impl From<pb::MoveRejection> for MoveRejectionView {
    fn from(rejection: pb::MoveRejection) -> Self {
        let reason = match pb::MoveRejectionReason::try_from(rejection.reason) {
            Ok(pb::MoveRejectionReason::NotADeviceId) => "not_a_device_id",
            Ok(pb::MoveRejectionReason::NotHeld) => "not_held",
            _ => "unspecified",
        };
        Self {
            device_id: rejection.device_id,
            reason,
        }
    }
}

impl Record for MoveView {
    fn headers() -> &'static [&'static str] {
        &["TO", "MOVED", "REJECTED", "REJECTED IDS"]
    }
    fn cells(&self) -> Vec<String> {
        // Each ID with its reason when the portal said one (older portals do not).
        let shown: Vec<String> = if self.rejections.is_empty() {
            self.rejected_device_ids.clone()
        } else {
            self.rejections
                .iter()
                .map(|r| format!("{} ({})", r.device_id, words(r.reason)))
                .collect()
        };
        vec![
            self.to_customer_knox_id.clone(),
            self.moved.to_string(),
            self.rejected.to_string(),
            some_ids(&shown, self.rejected),
        ]
    }
}

/// A minted token.
#[derive(Debug, Serialize)]
pub struct TokenView {
    pub token: String,
    pub role: &'static str,
    pub sub: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub expires_in_seconds: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_deletion_counts_every_id_not_found_even_when_the_list_is_cut() {
        let view = DeletionView::from(pb::Deletion {
            not_found_device_ids: (0..1000).map(|n| format!("X{n}")).collect(),
            not_found_count: 100_000,
            not_found_truncated: true,
            ..Default::default()
        });
        assert_eq!(view.not_found, 100_000);
        let cells = view.cells();
        assert!(
            cells.iter().any(|c| c.ends_with("… and 99990 more)")),
            "{cells:?}"
        );
    }

    #[test]
    fn customer_rows_show_the_portal_columns() {
        let row = CustomerRowView::from(pb::CustomerRow {
            knox_id: "100000000001".into(),
            kind: pb::AccountKind::Customer as i32,
            company_name: "Acme GmbH".into(),
            internal_reference: "PO-7".into(),
            display_id: "200000000002".into(),
            managing_msp_id: "200000000002".into(),
            country: "DE".into(),
            last_uploaded_at: Some(Timestamp {
                seconds: 1_700_000_000,
                nanos: 5,
            }),
            uploaded_devices: 3,
            devices: 2,
            status: pb::CustomerStatus::Active as i32,
        });
        assert_eq!(
            row.cells(),
            [
                "Acme GmbH / PO-7",
                "200000000002 [MSP]",
                "DE",
                "2023-11-14T22:13:20Z",
                "3",
                "2",
                "Active"
            ]
        );
        assert_eq!(CustomerRowView::headers().len(), 7);
    }
}
