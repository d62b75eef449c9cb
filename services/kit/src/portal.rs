//! A device as the MSP portal and the customer portal show it (DOMAIN.md "What each
//! portal shows"): both answer `reseller.v1.PortalDevice`, msp-link-service from its
//! device view, customer-service from its portal table, and convert it here once.

use reseller_proto::v1 as pb;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::timestamp;

/// One registration on a portal page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortalDevice {
    /// The device ID (canonical).
    pub device_id: String,
    /// Its `reseller.v1.DeviceIdKind`.
    pub id_kind: i16,
    /// Its model ("" when none).
    pub model: String,
    /// The reseller that uploaded it.
    pub reseller_id: String,
    /// The upload.
    pub upload_id: Uuid,
    /// The account holding it now (an MSP itself for its pool).
    pub holder_knox_id: String,
    /// The MSP that moved it to its holder, when one did.
    pub moved_by_msp: Option<String>,
    /// When it was uploaded.
    pub uploaded_at: OffsetDateTime,
}

impl From<PortalDevice> for pb::PortalDevice {
    fn from(d: PortalDevice) -> Self {
        pb::PortalDevice {
            device_id: d.device_id,
            id_kind: i32::from(d.id_kind),
            model: d.model,
            reseller_id: d.reseller_id,
            upload_id: d.upload_id.to_string(),
            holder_knox_id: d.holder_knox_id,
            moved_by_msp: d.moved_by_msp.is_some(),
            msp_id: d.moved_by_msp.unwrap_or_default(),
            uploaded_at: Some(timestamp::to_proto(d.uploaded_at)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device(moved_by_msp: Option<&str>) -> PortalDevice {
        PortalDevice {
            device_id: "R58M-1".into(),
            id_kind: 3,
            model: "Galaxy".into(),
            reseller_id: "acme".into(),
            upload_id: Uuid::nil(),
            holder_knox_id: "123456".into(),
            moved_by_msp: moved_by_msp.map(str::to_owned),
            uploaded_at: OffsetDateTime::UNIX_EPOCH,
        }
    }

    #[test]
    fn a_move_by_an_msp_is_flagged_and_names_the_msp() {
        let moved = pb::PortalDevice::from(device(Some("980000001")));
        assert!(moved.moved_by_msp);
        assert_eq!(moved.msp_id, "980000001");
        assert_eq!(moved.upload_id, Uuid::nil().to_string());
        let uploaded = pb::PortalDevice::from(device(None));
        assert!(!uploaded.moved_by_msp);
        assert_eq!(uploaded.msp_id, "");
    }
}
