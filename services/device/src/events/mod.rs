//! The events device-service publishes (through its outbox).

use reseller_kit::device_id::DeviceIdKind;
use reseller_kit::events::new_event;
use reseller_kit::timestamp;
use reseller_proto::v1::{self as pb, event::Payload};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::domain::Target;

pub mod receipts;

/// What every part of one upload's events shares.
#[derive(Debug)]
pub struct UploadContext<'a> {
    /// The upload.
    pub upload_id: Uuid,
    /// Who uploaded.
    pub reseller_id: &'a str,
    /// To whom.
    pub target: &'a Target,
    /// The order number.
    pub order_number: &'a str,
    /// When.
    pub uploaded_at: OffsetDateTime,
    /// How many parts the upload's events have.
    pub part_count: u32,
    /// Accepted devices in the whole upload.
    pub accepted_count: i64,
}

/// One registered device.
#[derive(Debug)]
pub struct AcceptedDevice {
    /// Normalised identifier.
    pub device_id: String,
    /// Its kind.
    pub kind: DeviceIdKind,
    /// Its model.
    pub model: String,
    /// Its secondary identifiers, canonical (DOMAIN.md "Secondary identifiers").
    pub secondary_ids: Vec<String>,
}

/// One part of `devices_uploaded`.
pub fn devices_uploaded(
    ctx: &UploadContext<'_>,
    part: u32,
    devices: Vec<AcceptedDevice>,
) -> pb::Event {
    new_event(
        Payload::DevicesUploaded(pb::DevicesUploaded {
            upload_id: ctx.upload_id.to_string(),
            reseller_id: ctx.reseller_id.to_owned(),
            target_knox_id: ctx.target.knox_id.to_string(),
            device_ids: devices.iter().map(|d| d.device_id.clone()).collect(),
            devices: devices
                .into_iter()
                .map(|d| pb::UploadedDevice {
                    device_id: d.device_id,
                    id_kind: i32::from(d.kind.as_i16()),
                    model: d.model,
                    secondary_ids: d.secondary_ids,
                })
                .collect(),
            target_kind: ctx.target.kind,
            order_number: ctx.order_number.to_owned(),
            uploaded_at: Some(timestamp::to_proto(ctx.uploaded_at)),
            part,
            part_count: ctx.part_count,
            accepted_count: ctx.accepted_count,
            // Until commands record the token's `name` (issue #12), the reseller acts.
            actor: ctx.reseller_id.to_owned(),
        }),
        ctx.uploaded_at,
    )
}

/// One deleted registration.
#[derive(Debug, Clone)]
pub struct DeletedRegistration {
    /// The device.
    pub device_id: String,
    /// The upload that registered it.
    pub upload_id: Uuid,
    /// The account it was uploaded to.
    pub target_knox_id: String,
}

/// One part of `devices_deleted`.
pub fn devices_deleted(
    deletion_id: Uuid,
    reseller_id: &str,
    part: u32,
    part_count: u32,
    devices: &[DeletedRegistration],
) -> pb::Event {
    new_event(
        Payload::DevicesDeleted(pb::DevicesDeleted {
            deletion_id: deletion_id.to_string(),
            reseller_id: reseller_id.to_owned(),
            device_ids: devices.iter().map(|d| d.device_id.clone()).collect(),
            part,
            part_count,
            devices: devices
                .iter()
                .map(|d| pb::DeletedDevice {
                    device_id: d.device_id.clone(),
                    upload_id: d.upload_id.to_string(),
                    target_knox_id: d.target_knox_id.clone(),
                })
                .collect(),
            // Until commands record the token's `name` (issue #12), the reseller acts.
            actor: reseller_id.to_owned(),
            requested_at: None,
        }),
        OffsetDateTime::now_utc(),
    )
}
