//! The events msp-link-service publishes (through its outbox).

use reseller_kit::events::new_event;
use reseller_kit::timestamp;
use reseller_proto::v1::{self as pb, event::Payload};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::domain::Link;

/// `msp_customer_linked`.
pub fn linked(link: &Link, seq: i64) -> pb::Event {
    new_event(
        Payload::MspCustomerLinked(link_fields(link, seq)),
        link.since,
    )
}

/// `msp_management_mode_changed`: the same fields as `msp_customer_linked`, the link as
/// it is from now on.
pub fn mode_changed(link: &Link, seq: i64) -> pb::Event {
    let pb::MspCustomerLinked {
        msp_id,
        customer_knox_id,
        mode,
        since,
        seq,
    } = link_fields(link, seq);
    let changed = pb::MspManagementModeChanged {
        msp_id,
        customer_knox_id,
        mode,
        since,
        seq,
    };
    new_event(Payload::MspManagementModeChanged(changed), link.since)
}

/// A link as the events that set it carry it, at `seq`.
fn link_fields(link: &Link, seq: i64) -> pb::MspCustomerLinked {
    pb::MspCustomerLinked {
        msp_id: link.msp_id.clone(),
        customer_knox_id: link.customer_knox_id.clone(),
        mode: i32::from(link.mode.as_i16()),
        since: Some(timestamp::to_proto(link.since)),
        seq,
    }
}

/// `msp_customer_delinked`.
pub fn delinked(link: &Link, requested_by: &str, seq: i64) -> pb::Event {
    new_event(
        Payload::MspCustomerDelinked(pb::MspCustomerDelinked {
            msp_id: link.msp_id.clone(),
            customer_knox_id: link.customer_knox_id.clone(),
            delinked_at: Some(timestamp::to_proto(link.since)),
            requested_by: requested_by.to_owned(),
            seq,
        }),
        link.since,
    )
}

/// One registration an MSP moved.
#[derive(Debug, Clone)]
pub struct MovedRegistration {
    /// The device.
    pub device_id: String,
    /// The upload that registered it.
    pub upload_id: Uuid,
    /// The reseller that uploaded it.
    pub reseller_id: String,
    /// Who held it before.
    pub from_knox_id: String,
    /// `reseller.v1.DeviceIdKind`.
    pub id_kind: i16,
    /// Model.
    pub model: String,
    /// When it was uploaded.
    pub uploaded_at: OffsetDateTime,
    /// The upload's order number.
    pub order_number: String,
}

/// One part of `msp_devices_moved`.
pub fn devices_moved(
    msp_id: &str,
    to_customer: &str,
    devices: &[MovedRegistration],
    seq: i64,
) -> pb::Event {
    let now = OffsetDateTime::now_utc();
    new_event(
        Payload::MspDevicesMoved(pb::MspDevicesMoved {
            msp_id: msp_id.to_owned(),
            to_customer_knox_id: to_customer.to_owned(),
            device_ids: devices.iter().map(|d| d.device_id.clone()).collect(),
            devices: devices
                .iter()
                .map(|d| pb::MovedDevice {
                    device_id: d.device_id.clone(),
                    reseller_id: d.reseller_id.clone(),
                    upload_id: d.upload_id.to_string(),
                    from_knox_id: d.from_knox_id.clone(),
                    id_kind: i32::from(d.id_kind),
                    model: d.model.clone(),
                    uploaded_at: Some(timestamp::to_proto(d.uploaded_at)),
                    order_number: d.order_number.clone(),
                })
                .collect(),
            moved_at: Some(timestamp::to_proto(now)),
            seq,
        }),
        now,
    )
}
