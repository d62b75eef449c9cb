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
    /// The reseller that uploaded.
    pub reseller_id: &'a str,
    /// Who acted for it: the person its token names, else the reseller ID.
    pub actor: &'a str,
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
            actor: ctx.actor.to_owned(),
        }),
        ctx.uploaded_at,
    )
}

/// `upload_recorded`: one per upload, whatever it accepted, with its counts (the activity
/// log's entry; DOMAIN.md "Finding devices, history and the activity log").
pub fn upload_recorded(ctx: &UploadContext<'_>, rejected_count: i64) -> pb::Event {
    new_event(
        Payload::UploadRecorded(pb::UploadRecorded {
            upload_id: ctx.upload_id.to_string(),
            reseller_id: ctx.reseller_id.to_owned(),
            target_knox_id: ctx.target.knox_id.to_string(),
            target_kind: ctx.target.kind,
            order_number: ctx.order_number.to_owned(),
            uploaded_at: Some(timestamp::to_proto(ctx.uploaded_at)),
            accepted_count: ctx.accepted_count,
            rejected_count,
            actor: ctx.actor.to_owned(),
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

/// What every event of one deletion shares.
#[derive(Debug)]
pub struct DeletionContext<'a> {
    /// The deletion.
    pub deletion_id: Uuid,
    /// The reseller whose devices it deletes.
    pub reseller_id: &'a str,
    /// Who acted for it: the person its token names, else the reseller ID.
    pub actor: &'a str,
    /// When it was asked for (the database's clock, as `GetDeletion` answers it).
    pub requested_at: OffsetDateTime,
    /// How many parts its `devices_deleted` events have (0 when it deleted nothing).
    pub part_count: u32,
}

/// One part of `devices_deleted`.
pub fn devices_deleted(
    ctx: &DeletionContext<'_>,
    part: u32,
    devices: &[DeletedRegistration],
) -> pb::Event {
    new_event(
        Payload::DevicesDeleted(pb::DevicesDeleted {
            deletion_id: ctx.deletion_id.to_string(),
            reseller_id: ctx.reseller_id.to_owned(),
            device_ids: devices.iter().map(|d| d.device_id.clone()).collect(),
            part,
            part_count: ctx.part_count,
            devices: devices
                .iter()
                .map(|d| pb::DeletedDevice {
                    device_id: d.device_id.clone(),
                    upload_id: d.upload_id.to_string(),
                    target_knox_id: d.target_knox_id.clone(),
                })
                .collect(),
            actor: ctx.actor.to_owned(),
            requested_at: Some(timestamp::to_proto(ctx.requested_at)),
        }),
        OffsetDateTime::now_utc(),
    )
}

/// `deletion_recorded`: one per deletion, whatever it found, with its counts (the
/// activity log's entry; DOMAIN.md "Finding devices, history and the activity log"):
/// `deleted_count` counts devices (a device asked by two of its identifiers is one),
/// `not_found_count` identifiers, as `GetDeletion` does.
pub fn deletion_recorded(
    ctx: &DeletionContext<'_>,
    deleted_count: i64,
    not_found_count: i64,
) -> pb::Event {
    new_event(
        Payload::DeletionRecorded(pb::DeletionRecorded {
            deletion_id: ctx.deletion_id.to_string(),
            reseller_id: ctx.reseller_id.to_owned(),
            requested_at: Some(timestamp::to_proto(ctx.requested_at)),
            deleted_count,
            not_found_count,
            part_count: ctx.part_count,
            actor: ctx.actor.to_owned(),
        }),
        ctx.requested_at,
    )
}

/// `deletion_completed`: the receipt that completed deletion `deletion_id` of
/// `reseller_id` found each portal's final state (reseller, MSP, customer).
pub fn deletion_completed(
    deletion_id: uuid::Uuid,
    reseller_id: &str,
    [reseller_portal, msp_portal, customer_portal]: [crate::domain::PortalState; 3],
) -> pb::Event {
    let now = OffsetDateTime::now_utc();
    new_event(
        Payload::DeletionCompleted(pb::DeletionCompleted {
            deletion_id: deletion_id.to_string(),
            reseller_id: reseller_id.to_owned(),
            reseller_portal: i32::from(reseller_portal.as_i16()),
            msp_portal: i32::from(msp_portal.as_i16()),
            customer_portal: i32::from(customer_portal.as_i16()),
            completed_at: Some(timestamp::to_proto(now)),
        }),
        now,
    )
}
