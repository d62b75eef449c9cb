//! Conversions between protobuf and the domain, done once at the edge.

use reseller_kit::timestamp;
use reseller_proto::v1 as pb;

use crate::domain::{AccountKind, CustomerDevice, CustomerRow, CustomerStatus, UploadSummary};

/// An event's account kind → domain, for the projection; the conversion is the kit's
/// `TryFrom<i32>` ([`reseller_kit::accounts`]), this only names the field.
///
/// # Errors
/// `kind must be …, got N` when unspecified or unknown (a poison event).
pub fn kind_from_proto(value: i32) -> Result<AccountKind, String> {
    AccountKind::try_from(value).map_err(|e| format!("kind {e}"))
}

/// An event's customer status → domain, for the projection; as [`kind_from_proto`].
///
/// # Errors
/// `status must be …, got N` when unspecified or unknown (a poison event).
pub fn status_from_proto(value: i32) -> Result<CustomerStatus, String> {
    CustomerStatus::try_from(value).map_err(|e| format!("status {e}"))
}

impl From<CustomerRow> for pb::CustomerRow {
    fn from(row: CustomerRow) -> Self {
        pb::CustomerRow {
            display_id: row.display_id().to_owned(),
            kind: pb::AccountKind::from(row.kind) as i32,
            status: pb::CustomerStatus::from(row.status) as i32,
            last_uploaded_at: timestamp::opt_to_proto(row.last_uploaded_at),
            knox_id: row.knox_id,
            company_name: row.company_name,
            internal_reference: row.internal_reference,
            managing_msp_id: row.managing_msp_id,
            country: row.country,
            uploaded_devices: row.uploaded_devices,
            devices: row.devices,
        }
    }
}

impl From<UploadSummary> for pb::UploadSummary {
    fn from(upload: UploadSummary) -> Self {
        pb::UploadSummary {
            upload_id: upload.upload_id.to_string(),
            uploaded_at: Some(timestamp::to_proto(upload.uploaded_at)),
            order_number: upload.order_number,
            device_count: upload.device_count,
            r#virtual: upload.virtual_upload,
            via_msp_id: upload.via_msp_id,
        }
    }
}

impl From<CustomerDevice> for pb::CustomerDevice {
    fn from(device: CustomerDevice) -> Self {
        pb::CustomerDevice {
            device_id: device.device_id,
            id_kind: i32::from(device.kind.as_i16()),
            model: device.model,
            upload_id: device.upload_id.to_string(),
            uploaded_at: Some(timestamp::to_proto(device.uploaded_at)),
            order_number: device.order_number,
            r#virtual: device.virtual_upload,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unspecified_values_are_refused_naming_the_field() {
        assert_eq!(
            kind_from_proto(pb::AccountKind::Msp as i32),
            Ok(AccountKind::Msp)
        );
        assert_eq!(
            kind_from_proto(0).unwrap_err(),
            "kind must be ACCOUNT_KIND_CUSTOMER or ACCOUNT_KIND_MSP, got 0"
        );
        assert_eq!(
            status_from_proto(pb::CustomerStatus::Active as i32),
            Ok(CustomerStatus::Active)
        );
        assert!(
            status_from_proto(0)
                .unwrap_err()
                .starts_with("status must be")
        );
        assert!(status_from_proto(42).is_err());
    }
}
