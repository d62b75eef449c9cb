//! Conversions between protobuf and the domain, done once at the edge.

use reseller_kit::timestamp;
use reseller_proto::v1 as pb;

use crate::domain::{AccountKind, CustomerDevice, CustomerRow, CustomerStatus, UploadSummary};

/// Domain kind → protobuf.
pub fn kind_to_proto(kind: AccountKind) -> pb::AccountKind {
    match kind {
        AccountKind::Customer => pb::AccountKind::Customer,
        AccountKind::Msp => pb::AccountKind::Msp,
    }
}

/// Protobuf kind → domain.
///
/// # Errors
/// When unspecified or unknown.
pub fn kind_from_proto(value: i32) -> Result<AccountKind, String> {
    match pb::AccountKind::try_from(value) {
        Ok(pb::AccountKind::Customer) => Ok(AccountKind::Customer),
        Ok(pb::AccountKind::Msp) => Ok(AccountKind::Msp),
        _ => Err(format!(
            "kind must be ACCOUNT_KIND_CUSTOMER or ACCOUNT_KIND_MSP, got {value}"
        )),
    }
}

/// Domain status → protobuf.
pub fn status_to_proto(status: CustomerStatus) -> pb::CustomerStatus {
    match status {
        CustomerStatus::PendingVerification => pb::CustomerStatus::PendingVerification,
        CustomerStatus::Active => pb::CustomerStatus::Active,
        CustomerStatus::Inactive => pb::CustomerStatus::Inactive,
    }
}

/// Protobuf status → domain.
///
/// # Errors
/// When unspecified or unknown.
pub fn status_from_proto(value: i32) -> Result<CustomerStatus, String> {
    match pb::CustomerStatus::try_from(value) {
        Ok(pb::CustomerStatus::PendingVerification) => Ok(CustomerStatus::PendingVerification),
        Ok(pb::CustomerStatus::Active) => Ok(CustomerStatus::Active),
        Ok(pb::CustomerStatus::Inactive) => Ok(CustomerStatus::Inactive),
        _ => Err(format!(
            "status must be a CUSTOMER_STATUS other than UNSPECIFIED, got {value}"
        )),
    }
}

impl From<CustomerRow> for pb::CustomerRow {
    fn from(row: CustomerRow) -> Self {
        pb::CustomerRow {
            display_id: row.display_id().to_owned(),
            kind: kind_to_proto(row.kind) as i32,
            status: status_to_proto(row.status) as i32,
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
    fn enums_round_trip_and_unspecified_is_refused() {
        for kind in [AccountKind::Customer, AccountKind::Msp] {
            assert_eq!(kind_from_proto(kind_to_proto(kind) as i32).unwrap(), kind);
        }
        for status in [
            CustomerStatus::PendingVerification,
            CustomerStatus::Active,
            CustomerStatus::Inactive,
        ] {
            assert_eq!(
                status_from_proto(status_to_proto(status) as i32).unwrap(),
                status
            );
        }
        assert!(kind_from_proto(0).is_err());
        assert!(status_from_proto(0).is_err());
        assert!(status_from_proto(42).is_err());
    }
}
