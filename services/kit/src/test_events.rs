//! One device's events for the projections' unit tests (feature `test-support`, which
//! the services enable for their tests only): its upload part, its move by an MSP and
//! its deletion, built the way device-service and msp-link-service publish them, and
//! [`apply`], which applies one as a durable consumer does. The projections' fast paths
//! are tested against the same events, so each portal's test exercises what the others
//! do.

use reseller_proto::v1::{self as pb, event::Payload};
use sqlx::{AssertSqlSafe, PgPool};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::events::{self, ReceivedEvent};
use crate::inbox::{self, ConsumerSpec, EventHandler, Outcome};

/// The reseller that uploads.
pub const RESELLER: &str = "acme";
/// The MSP the device is uploaded to (by [`uploaded_to_msp`]) and moved by.
pub const MSP: &str = "980000001";
/// The customer the device is uploaded to (by [`uploaded_to_customer`]) or moved to.
pub const CUSTOMER: &str = "970000099";
/// The device: an IMEI.
pub const DEVICE: &str = "350000000049508";
/// Its IMEI 2.
pub const DEVICE_IMEI2: &str = "350000000049516";
/// Another device, never uploaded.
pub const OTHER_DEVICE: &str = "350000000049524";
/// The device's model: holds what `COPY`'s text format escapes (a tab, a backslash).
pub const MODEL: &str = "Galaxy\tS26 \\ 5G";
/// The upload's order number: a backslash, a tab and double quotes.
pub const ORDER_NUMBER: &str = "PO\\7\t\"rush\"";
/// When the device was uploaded (seconds since the Unix epoch) ...
pub const UPLOADED_AT: i64 = 1_700_000_000;
/// ... and nanoseconds, finer than PostgreSQL's microseconds: each way of writing the
/// time must store the same microsecond.
pub const UPLOADED_AT_NANOS: i32 = 123_456_789;

fn uploaded_at() -> Option<prost_types::Timestamp> {
    Some(prost_types::Timestamp {
        seconds: UPLOADED_AT,
        nanos: UPLOADED_AT_NANOS,
    })
}

fn uploaded(upload: Uuid, target: &str, kind: pb::AccountKind) -> Payload {
    Payload::DevicesUploaded(pb::DevicesUploaded {
        upload_id: upload.to_string(),
        reseller_id: RESELLER.into(),
        target_knox_id: target.into(),
        target_kind: kind as i32,
        order_number: ORDER_NUMBER.into(),
        device_ids: vec![DEVICE.into()],
        part: 1,
        part_count: 1,
        accepted_count: 1,
        uploaded_at: uploaded_at(),
        devices: vec![pb::UploadedDevice {
            device_id: DEVICE.into(),
            id_kind: pb::DeviceIdKind::Imei as i32,
            model: MODEL.into(),
            secondary_ids: vec![DEVICE_IMEI2.into()],
        }],
        ..Default::default()
    })
}

/// The one part of `upload`: [`DEVICE`] uploaded to [`MSP`].
pub fn uploaded_to_msp(upload: Uuid) -> Payload {
    uploaded(upload, MSP, pb::AccountKind::Msp)
}

/// The one part of `upload`: [`DEVICE`] uploaded to [`CUSTOMER`].
pub fn uploaded_to_customer(upload: Uuid) -> Payload {
    uploaded(upload, CUSTOMER, pb::AccountKind::Customer)
}

/// [`MSP`] moves [`DEVICE`] of `upload` from its pool to [`CUSTOMER`] (move `seq` 4).
pub fn moved(upload: Uuid) -> Payload {
    Payload::MspDevicesMoved(pb::MspDevicesMoved {
        msp_id: MSP.into(),
        to_customer_knox_id: CUSTOMER.into(),
        device_ids: vec![DEVICE.into()],
        devices: vec![pb::MovedDevice {
            device_id: DEVICE.into(),
            reseller_id: RESELLER.into(),
            upload_id: upload.to_string(),
            from_knox_id: MSP.into(),
            id_kind: pb::DeviceIdKind::Imei as i32,
            model: "Galaxy".into(),
            uploaded_at: uploaded_at(),
            order_number: String::new(),
        }],
        moved_at: None,
        seq: 4,
    })
}

/// A deletion (a new ID) of `device`'s registration in `upload`, uploaded to [`MSP`].
pub fn deleted(upload: Uuid, device: &str) -> Payload {
    Payload::DevicesDeleted(pb::DevicesDeleted {
        deletion_id: Uuid::now_v7().to_string(),
        reseller_id: RESELLER.into(),
        device_ids: vec![device.into()],
        part: 1,
        part_count: 1,
        devices: vec![pb::DeletedDevice {
            device_id: device.into(),
            upload_id: upload.to_string(),
            target_knox_id: MSP.into(),
        }],
        ..Default::default()
    })
}

/// Applies `payload` (as a new event) with `handler` as the consumer `spec` does,
/// retrying a conflict as it would.
///
/// # Panics
/// When the event is not applied (an error, poison, or a duplicate).
pub async fn apply<H: EventHandler>(
    spec: ConsumerSpec,
    pool: &PgPool,
    handler: H,
    payload: Payload,
) {
    let event = events::encode(&events::new_event(payload, OffsetDateTime::now_utc()));
    let outcome = inbox::apply_retrying(spec, pool.clone(), handler, &event, 5).await;
    let outcome = outcome.unwrap_or_else(|failure| panic!("not applied: {failure:?}"));
    assert_eq!(outcome, Outcome::Applied);
}

/// Two replicas of the consumer `spec` apply `upload` and `deletion` (of the same
/// registration) at the same time: one holds the upload's serializable transaction open,
/// its rows written, while the other applies the deletion and commits; then the upload
/// commits, or, refused, is applied again as the consumer would. The caller then checks
/// that the deleted device is not shown, whichever way it went.
///
/// # Panics
/// When either event cannot be applied.
pub async fn race_upload_with_deletion<H: EventHandler + Clone>(
    spec: ConsumerSpec,
    pool: &PgPool,
    handler: H,
    upload: Payload,
    deletion: Payload,
) {
    let mut uploading = pool
        .begin_with(inbox::BEGIN_SERIALIZABLE)
        .await
        .expect("a transaction");
    let upload_event = ReceivedEvent {
        id: Uuid::now_v7(),
        occurred_at: OffsetDateTime::now_utc(),
        payload: upload.clone(),
    };
    inbox::apply_uncommitted(&spec, &handler, &mut uploading, &upload_event)
        .await
        .unwrap_or_else(|failure| panic!("upload not applied: {failure:?}"));
    apply(spec.clone(), pool, handler.clone(), deletion).await;
    if uploading.commit().await.is_err() {
        apply(spec, pool, handler, upload).await;
    }
}

/// Asserts that `table` (schema-qualified, with `upload_id` and `uploaded_at` columns)
/// stores the upload time of `upload` cut to the microsecond, as sqlx binds it: the
/// [`UPLOADED_AT`] and [`UPLOADED_AT_NANOS`] of the events here, never rounded up.
///
/// # Panics
/// When the row is missing or its time differs.
pub async fn assert_upload_time_stored(pool: &PgPool, table: &'static str, upload: Uuid) {
    let stored_at: String = sqlx::query_scalar(AssertSqlSafe(format!(
        "SELECT to_char(uploaded_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US') \
         FROM {table} WHERE upload_id = $1"
    )))
    .bind(upload)
    .fetch_one(pool)
    .await
    .expect("the upload's row");
    assert_eq!(
        stored_at, "2023-11-14T22:13:20.123456",
        "the upload time was not cut to the microsecond"
    );
}
