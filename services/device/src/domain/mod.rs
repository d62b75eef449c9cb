//! The rules of uploads and deletions (DOMAIN.md "Devices and uploads", "Deleting
//! devices"), free of I/O.

pub mod accounts;

use reseller_kit::device_id::{DeviceId, lookup_key};
use reseller_kit::ids::KnoxId;
use reseller_kit::text::FreeText;
use reseller_kit::text::echo;
use time::OffsetDateTime;
use uuid::Uuid;

/// Devices per event and the number of parts, one rule of the event contract
/// (CONTRACT.md: a large upload or deletion is split into events of at most 1,000
/// devices), defined in the kit for every publisher.
pub use reseller_kit::event_parts::{EVENT_PART_SIZE, part_count};
/// Most device IDs one `DeleteDevices` call may name.
pub const MAX_DELETE_IDS: usize = 100_000;
/// Most rejections an `Upload` answer carries inline, and most not-found IDs a
/// `Deletion` answer carries (DOMAIN.md: answers stay deliverable whatever their size;
/// 1,000 echoes of at most 64 characters stay far below a default client's 4 MiB).
pub const MAX_INLINE_ECHOES: usize = 1000;

/// An order number: 0 to 64 characters of free text (DOMAIN.md "Devices and uploads");
/// "" means none.
pub type OrderNumber = FreeText<64>;

/// A client upload ID: 0 to 128 characters of free text; "" means "no retry
/// protection".
pub type ClientUploadId = FreeText<128>;

/// The header of an upload, parsed.
#[derive(Debug, Clone)]
pub struct UploadHeader {
    /// The customer or MSP receiving the devices.
    pub target: KnoxId,
    /// The reseller's order number ("" when none).
    pub order_number: String,
    /// Makes a retry return the first result.
    pub client_upload_id: Option<String>,
    /// Check every rule and answer, but register and record nothing.
    pub validate_only: bool,
}

/// Which uploads `ListUploads` lists.
#[derive(Debug, Clone, Default)]
pub struct UploadFilter {
    /// Only uploads to this account.
    pub target: Option<KnoxId>,
    /// Only uploads with exactly this order number.
    pub order_number: Option<String>,
}

/// Why a device was rejected (`reseller.v1.RejectionReason`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RejectionReason {
    /// Not a valid identifier (or model).
    InvalidId,
    /// The same device earlier in this upload.
    DuplicateInUpload,
    /// Registered to an account already.
    AlreadyRegistered,
}

impl RejectionReason {
    /// The database (and protobuf) number.
    pub fn as_i16(self) -> i16 {
        match self {
            RejectionReason::InvalidId => 1,
            RejectionReason::DuplicateInUpload => 2,
            RejectionReason::AlreadyRegistered => 3,
        }
    }

    /// The protobuf name without its `REJECTION_REASON_` prefix (`INVALID_ID`), as the
    /// metrics label it.
    pub fn name(self) -> &'static str {
        match self {
            RejectionReason::InvalidId => "INVALID_ID",
            RejectionReason::DuplicateInUpload => "DUPLICATE_IN_UPLOAD",
            RejectionReason::AlreadyRegistered => "ALREADY_REGISTERED",
        }
    }

    /// Every reason.
    pub const ALL: [Self; 3] = [
        RejectionReason::InvalidId,
        RejectionReason::DuplicateInUpload,
        RejectionReason::AlreadyRegistered,
    ];

    /// Reads [`RejectionReason::as_i16`].
    pub fn from_i16(value: i16) -> Self {
        match value {
            2 => RejectionReason::DuplicateInUpload,
            3 => RejectionReason::AlreadyRegistered,
            _ => RejectionReason::InvalidId,
        }
    }

    /// What a person is told of a device rejected for this reason, for the reasons the
    /// database decides set-based (the exact path of an upload binds them): for
    /// [`DuplicateInUpload`](Self::DuplicateInUpload) the text before the index of the
    /// device's first occurrence, which the database appends; for
    /// [`AlreadyRegistered`](Self::AlreadyRegistered) the whole message. `None` for
    /// [`InvalidId`](Self::InvalidId), whose message is the parser's.
    pub fn message_stem(self) -> Option<&'static str> {
        match self {
            RejectionReason::InvalidId => None,
            RejectionReason::DuplicateInUpload => Some("duplicate of the device at index "),
            RejectionReason::AlreadyRegistered => Some("already registered to an account"),
        }
    }
}

/// One rejected device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// 0-based position in the whole upload.
    pub index: i64,
    /// The identifier as sent (normalised where it could be).
    pub device_id: String,
    /// Why.
    pub reason: RejectionReason,
    /// For a person.
    pub message: String,
}

/// One valid device of an upload, on its way to the database.
#[derive(Debug, Clone)]
pub struct UploadRow {
    /// 0-based position in the whole upload.
    pub index: i64,
    /// The normalised identifier.
    pub device: DeviceId,
    /// The model ("" when not given).
    pub model: String,
    /// The same handset's other identifiers (IMEI 2, serial), canonical, none equal to
    /// `device` or to each other.
    pub secondary: Vec<DeviceId>,
}

/// One request batch of an upload after parsing.
#[derive(Debug, Default)]
pub struct ParsedBatch {
    /// Valid devices.
    pub rows: Vec<UploadRow>,
    /// Devices rejected before reaching the database.
    pub rejected: Vec<Rejection>,
}

/// The target of an upload as customer-service knows it.
#[derive(Debug, Clone)]
pub struct Target {
    /// Its Knox ID.
    pub knox_id: KnoxId,
    /// `reseller.v1.AccountKind` of the account.
    pub kind: i32,
}

/// A finished upload.
#[derive(Debug, Clone)]
pub struct Upload {
    /// Its ID.
    pub upload_id: Uuid,
    /// The receiving account.
    pub target_knox_id: String,
    /// The reseller's order number.
    pub order_number: String,
    /// The client's retry key.
    pub client_upload_id: Option<String>,
    /// Devices registered.
    pub accepted_count: i64,
    /// Devices rejected.
    pub rejected_count: i64,
    /// The first [`MAX_INLINE_ECHOES`] rejections, by index.
    pub rejections: Vec<Rejection>,
    /// Whether `rejections` holds fewer than `rejected_count`.
    pub rejections_truncated: bool,
    /// When.
    pub uploaded_at: OffsetDateTime,
    /// Who uploaded: the person the reseller's token names, else the reseller ID.
    pub actor: String,
}

/// One identifier a caller named to delete, after the one lookup rule
/// (`reseller_kit::device_id::lookup_key`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Lookup {
    /// The canonical identifier: it may name a live device.
    Key(String),
    /// No device can have this identifier; its echo (cut, escaped) for the answer.
    Unknown(String),
}

/// The identifiers a `DeleteDevices` call names, after the one lookup rule (DOMAIN.md
/// "Deleting devices"): canonical like uploads (`reseller_kit::device_id::lookup_key`),
/// repeats dropped, order kept, empty ones skipped. An ID no device can have (a NUL,
/// 10 kB of junk) is kept as [`Lookup::Unknown`], to be answered as not found.
///
/// # Errors
/// The description for `device_ids` when the call names none, more than
/// [`MAX_DELETE_IDS`], or only empty ones.
pub fn deletion_lookups(requested: &[String]) -> Result<Vec<Lookup>, String> {
    if requested.is_empty() {
        return Err("name at least one device".into());
    }
    if requested.len() > MAX_DELETE_IDS {
        return Err(format!(
            "at most {MAX_DELETE_IDS} devices per call, got {}",
            requested.len()
        ));
    }
    let mut seen = std::collections::HashSet::new();
    let mut lookups = Vec::with_capacity(requested.len());
    for id in requested {
        let lookup = match lookup_key(id) {
            Some(key) => Lookup::Key(key),
            None if id.trim().is_empty() => continue,
            None => Lookup::Unknown(echo(id.trim())),
        };
        if seen.insert(lookup.clone()) {
            lookups.push(lookup);
        }
    }
    if lookups.is_empty() {
        return Err("every device ID is empty".into());
    }
    Ok(lookups)
}

/// One portal's progress on a deletion (`reseller.v1.PortalState`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PortalState {
    /// Not every part has been answered yet.
    Pending,
    /// The portal held at least one of the devices and removed it.
    Removed,
    /// The portal held none of the devices.
    NotApplicable,
}

impl PortalState {
    /// The database (and protobuf) number.
    pub fn as_i16(self) -> i16 {
        match self {
            PortalState::Pending => 1,
            PortalState::Removed => 2,
            PortalState::NotApplicable => 3,
        }
    }

    /// Reads [`PortalState::as_i16`].
    pub fn from_i16(value: i16) -> Self {
        match value {
            2 => PortalState::Removed,
            3 => PortalState::NotApplicable,
            _ => PortalState::Pending,
        }
    }
}

/// Folds one portal's receipts: pending until every part is answered, then removed if
/// any part removed something, else not applicable (the one rule,
/// `reseller_kit::events::portal_state`). A deletion of no devices has no parts and is
/// not applicable everywhere.
pub fn fold_portal(part_count: i32, receipts: &[PortalState]) -> PortalState {
    if part_count == 0 {
        return PortalState::NotApplicable;
    }
    if (receipts.len() as i32) < part_count {
        return PortalState::Pending;
    }
    let removed_any = receipts.contains(&PortalState::Removed);
    PortalState::from_i16(reseller_kit::events::portal_state(removed_any) as i16)
}

/// A deletion and its progress.
#[derive(Debug, Clone)]
pub struct Deletion {
    /// Its ID.
    pub deletion_id: Uuid,
    /// The identifiers asked for that named a deleted device (empty in a list's
    /// summary).
    pub deleted_device_ids: Vec<String>,
    /// How many they were.
    pub deleted_count: i64,
    /// The first [`MAX_INLINE_ECHOES`] IDs asked for that name no live device this
    /// reseller uploaded, each canonical or echoed (cut to 64 characters).
    pub not_found_device_ids: Vec<String>,
    /// How many IDs were not found in all.
    pub not_found_count: i64,
    /// The reseller portal.
    pub reseller_portal: PortalState,
    /// The MSP portal.
    pub msp_portal: PortalState,
    /// The customer portal.
    pub customer_portal: PortalState,
    /// When it was asked for.
    pub requested_at: OffsetDateTime,
    /// Who asked: the person the reseller's token names, else the reseller ID.
    pub actor: String,
}

impl Deletion {
    /// Complete when no portal is pending.
    pub fn complete(&self) -> bool {
        [self.reseller_portal, self.msp_portal, self.customer_portal]
            .iter()
            .all(|s| *s != PortalState::Pending)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_portal_is_pending_until_every_part_answers() {
        use PortalState::*;
        assert_eq!(fold_portal(2, &[Removed]), Pending);
        assert_eq!(fold_portal(2, &[NotApplicable, Removed]), Removed);
        assert_eq!(
            fold_portal(2, &[NotApplicable, NotApplicable]),
            NotApplicable
        );
        assert_eq!(fold_portal(0, &[]), NotApplicable);
    }

    #[test]
    fn a_deletion_looks_each_device_up_once_in_the_order_asked() {
        let asked: Vec<String> = ["abc-1", " ABC-1 ", "", "x\u{0}y", "def-2"]
            .iter()
            .map(|s| (*s).to_owned())
            .collect();
        let lookups = deletion_lookups(&asked).unwrap();
        assert_eq!(lookups.len(), 3);
        assert!(matches!(&lookups[0], Lookup::Key(_)));
        assert!(matches!(&lookups[1], Lookup::Unknown(_)));
        assert!(matches!(&lookups[2], Lookup::Key(_)));
        assert!(deletion_lookups(&[]).is_err());
        assert!(deletion_lookups(&[" ".to_owned()]).is_err());
        assert!(deletion_lookups(&vec![String::new(); MAX_DELETE_IDS + 1]).is_err());
    }

    #[test]
    fn header_texts_are_bounded() {
        let order_number = |s: &str| OrderNumber::parse("order_number", s);
        assert_eq!(order_number(" PO-1 ").unwrap().as_str(), "PO-1");
        assert!(order_number(&"x".repeat(65)).is_err());
        let client_upload_id = |s: &str| ClientUploadId::parse("client_upload_id", s);
        assert_eq!(client_upload_id("  ").unwrap().into_option(), None);
        assert!(client_upload_id(&"x".repeat(129)).is_err());
        assert!(client_upload_id("a\u{0}").is_err());
    }
}
