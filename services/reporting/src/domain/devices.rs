//! Devices in the reseller views: the parts of uploads and deletions the projection
//! applies, one customer's uploads and devices as the detail shows them, and the keyset
//! pages of `ListCustomerDevices`.

use reseller_kit::ApiError;
use reseller_kit::device_id::DeviceIdKind;
use reseller_kit::ids::{KnoxId, ResellerId};
use reseller_kit::paging;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

use super::AccountKind;
use super::list::page_size_among;
use super::placement::UploadRef;

/// One accepted device of an upload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadedDevice {
    /// The normalised identifier.
    pub device_id: String,
    /// Its kind.
    pub kind: DeviceIdKind,
    /// Its model ("" when not given).
    pub model: String,
    /// Its other identifiers (IMEI 2, serial), canonical; empty when a move names it.
    pub secondary_ids: Vec<String>,
}

/// One part of an upload (`devices_uploaded`, at most 1,000 devices).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadedPart {
    /// The upload.
    pub upload: UploadRef,
    /// The account the reseller uploaded to.
    pub target: KnoxId,
    /// Its kind.
    pub target_kind: AccountKind,
    /// The part's devices.
    pub devices: Vec<UploadedDevice>,
}

/// One part of a deletion (`devices_deleted`, at most 1,000 registrations).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeletedPart {
    /// The deletion.
    pub deletion_id: Uuid,
    /// The reseller that deleted.
    pub reseller_id: ResellerId,
    /// This part's number (echoed in the receipt).
    pub part: u32,
    /// The deletion's parts.
    pub part_count: u32,
    /// The deleted registrations: (device ID, upload ID).
    pub registrations: Vec<(String, Uuid)>,
    /// When the deletion was asked for.
    pub requested_at: OffsetDateTime,
    /// Who asked ("" when the event does not say).
    pub actor: String,
}

/// One upload placed under a row, as the customer detail shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadSummary {
    /// The upload (a virtual upload keeps the original upload's ID).
    pub upload_id: Uuid,
    /// When it was uploaded.
    pub uploaded_at: OffsetDateTime,
    /// Its order number.
    pub order_number: String,
    /// Devices of the upload placed under the row, deleted ones included (the same
    /// meaning as UPLOADS, so a row's uploads add up to its UPLOADS).
    pub device_count: i64,
    /// A virtual upload (DOMAIN.md rule 3).
    pub virtual_upload: bool,
    /// The virtual upload's MSP ("" when not virtual).
    pub via_msp_id: String,
}

/// One live device placed under a row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CustomerDevice {
    /// The identifier.
    pub device_id: String,
    /// Its kind.
    pub kind: DeviceIdKind,
    /// Its model.
    pub model: String,
    /// The upload that registered it.
    pub upload_id: Uuid,
    /// When.
    pub uploaded_at: OffsetDateTime,
    /// The upload's order number.
    pub order_number: String,
    /// Part of a virtual upload.
    pub virtual_upload: bool,
}

/// Where a page of devices ends, in the detail's order: newest upload first, then upload
/// ID, then device ID (a total order, so keyset paging is exact).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceKey {
    /// `uploaded_at` in Unix microseconds (PostgreSQL's precision).
    pub at_micros: i64,
    /// The upload ID.
    pub upload_id: Uuid,
    /// The device ID.
    pub device_id: String,
}

impl DeviceKey {
    /// The key of `device`.
    pub fn of(device: &CustomerDevice) -> Self {
        Self {
            at_micros: (device.uploaded_at.unix_timestamp_nanos() / 1_000) as i64,
            upload_id: device.upload_id,
            device_id: device.device_id.clone(),
        }
    }

    /// The time the key names (the Unix epoch if out of range, which no token issued by
    /// this service holds).
    pub fn uploaded_at(&self) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp_nanos(i128::from(self.at_micros) * 1_000)
            .unwrap_or(OffsetDateTime::UNIX_EPOCH)
    }
}

/// What a device page token carries: the row it pages and where the last page ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct DevicePageToken {
    /// The row's Knox ID.
    k: String,
    /// The last device's key.
    after: DeviceKey,
}

/// A parsed `ListCustomerDevices` request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListCustomerDevices {
    /// The row.
    pub knox_id: KnoxId,
    /// Devices per page.
    pub page_size: i64,
    /// Where the previous page ended (`None`: the first page).
    pub after: Option<DeviceKey>,
}

impl ListCustomerDevices {
    /// Parses the request's fields together, so one answer names every bad one.
    ///
    /// # Errors
    /// `INVALID_ARGUMENT` on `knox_id`, `page_size`, or `page_token` (not issued by this
    /// list, or issued for another customer).
    pub fn parse(knox_id: &str, page_size: i32, page_token: &str) -> Result<Self, ApiError> {
        let mut v = reseller_kit::FieldViolations::new();
        let knox_id = v.check("knox_id", KnoxId::parse(knox_id));
        let size = page_size_among(&mut v, page_size)?;
        v.finish()?;
        let knox_id = knox_id.expect("checked");
        let after = match paging::decode_token::<DevicePageToken>(page_token)? {
            None => None,
            // A token is only base64 JSON: one written by hand may hold a NUL, which
            // PostgreSQL text refuses. No device ID this list shows holds one.
            Some(token) if token.after.device_id.contains('\0') => {
                return Err(ApiError::invalid(
                    "page_token",
                    super::TOKEN_NOT_ISSUED_HERE,
                ));
            }
            Some(token) if token.k == knox_id.as_str() => Some(token.after),
            Some(_) => {
                return Err(ApiError::invalid(
                    "page_token",
                    "was issued for another customer; repeat its knox_id or start from the first page",
                ));
            }
        };
        Ok(Self {
            knox_id,
            page_size: size.expect("checked"),
            after,
        })
    }

    /// The token that continues this list after `last`.
    pub fn next_token(&self, last: DeviceKey) -> String {
        paging::encode_token(&DevicePageToken {
            k: self.knox_id.as_str().to_owned(),
            after: last,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device(at_micros: i64) -> CustomerDevice {
        CustomerDevice {
            device_id: "R58M-1".into(),
            kind: DeviceIdKind::Serial,
            model: String::new(),
            upload_id: Uuid::from_u128(7),
            uploaded_at: OffsetDateTime::from_unix_timestamp_nanos(i128::from(at_micros) * 1_000)
                .unwrap(),
            order_number: String::new(),
            virtual_upload: false,
        }
    }

    #[test]
    fn device_keys_round_trip_in_microseconds() {
        let d = device(1_700_000_000_123_456);
        let key = DeviceKey::of(&d);
        assert_eq!(key.at_micros, 1_700_000_000_123_456);
        assert_eq!(key.uploaded_at(), d.uploaded_at);
        assert_eq!(key.upload_id, d.upload_id);
    }

    #[test]
    fn device_tokens_continue_only_the_customer_that_issued_them() {
        let first = ListCustomerDevices::parse(" 123456 ", 0, "").unwrap();
        assert_eq!(first.page_size, paging::DEFAULT_PAGE_SIZE);
        assert_eq!(first.after, None);
        let key = DeviceKey::of(&device(42));
        let token = first.next_token(key.clone());
        let next = ListCustomerDevices::parse("123456", 10, &token).unwrap();
        assert_eq!(next.after, Some(key));
        assert!(matches!(
            ListCustomerDevices::parse("654321", 10, &token),
            Err(ApiError::InvalidArgument(v)) if v[0].field == "page_token"
        ));
        assert!(matches!(
            ListCustomerDevices::parse("123456", 10, "garbage"),
            Err(ApiError::InvalidArgument(v)) if v[0].field == "page_token"
        ));
    }

    #[test]
    fn a_hand_written_token_with_a_nul_is_refused() {
        let mut key = DeviceKey::of(&device(42));
        key.device_id = "R5\u{0}X".into();
        let token = ListCustomerDevices::parse("123456", 10, "")
            .unwrap()
            .next_token(key);
        assert!(matches!(
            ListCustomerDevices::parse("123456", 10, &token),
            Err(ApiError::InvalidArgument(v)) if v[0].field == "page_token"
        ));
    }

    #[test]
    fn every_bad_field_is_named_at_once() {
        let Err(ApiError::InvalidArgument(v)) = ListCustomerDevices::parse("12ab", -1, "") else {
            panic!("expected INVALID_ARGUMENT");
        };
        let fields: Vec<_> = v.iter().map(|v| v.field.as_str()).collect();
        assert_eq!(fields, ["knox_id", "page_size"]);
    }
}
