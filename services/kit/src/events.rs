//! The `reseller.v1.Event` envelope: building, encoding and decoding events.

use prost::Message;
use reseller_proto::v1::{Event, event::Payload};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::timestamp;

/// A new event with a fresh, time-ordered ID.
pub fn new_event(payload: Payload, occurred_at: OffsetDateTime) -> Event {
    Event {
        event_id: Uuid::now_v7().to_string(),
        occurred_at: Some(timestamp::to_proto(occurred_at)),
        payload: Some(payload),
    }
}

/// The wire form of an event.
pub fn encode(event: &Event) -> Vec<u8> {
    event.encode_to_vec()
}

/// Why bytes are not an applicable event.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// Not a protobuf `Event`.
    #[error("not a reseller.v1.Event: {0}")]
    Protobuf(#[from] prost::DecodeError),
    /// The event ID is not a UUID.
    #[error("event_id {0:?} is not a UUID")]
    EventId(String),
    /// No payload (or one this build does not know).
    #[error("event {0} has no payload this version understands")]
    NoPayload(String),
}

/// An event decoded from the wire, with its ID parsed.
#[derive(Debug, Clone)]
pub struct ReceivedEvent {
    /// The event ID (the inbox key).
    pub id: Uuid,
    /// When it happened.
    pub occurred_at: OffsetDateTime,
    /// What happened.
    pub payload: Payload,
}

/// Decodes and checks an event.
///
/// # Errors
/// [`DecodeError`] when the bytes can never be applied.
pub fn decode(bytes: &[u8]) -> Result<ReceivedEvent, DecodeError> {
    let event = Event::decode(bytes)?;
    let id = Uuid::parse_str(&event.event_id)
        .map_err(|_| DecodeError::EventId(event.event_id.clone()))?;
    let payload = event
        .payload
        .ok_or(DecodeError::NoPayload(event.event_id))?;
    Ok(ReceivedEvent {
        id,
        occurred_at: timestamp::from_proto(event.occurred_at.as_ref()),
        payload,
    })
}

/// A portal's receipt for one part of a deletion: `REMOVED` when the portal held (and
/// removed) at least one of the part's devices, else `NOT_APPLICABLE`. The portals build
/// it in SQL ([`portal_receipt_cte`]); this is the reference that SQL is tested against.
pub fn portal_receipt(
    deleted: &reseller_proto::v1::DevicesDeleted,
    portal: reseller_proto::v1::Portal,
    removed: Vec<String>,
) -> Event {
    use reseller_proto::v1::{PortalDeletionApplied, PortalState};
    let state = if removed.is_empty() {
        PortalState::NotApplicable
    } else {
        PortalState::Removed
    };
    new_event(
        Payload::PortalDeletionApplied(PortalDeletionApplied {
            deletion_id: deleted.deletion_id.clone(),
            portal: portal as i32,
            state: state as i32,
            part: deleted.part,
            part_count: deleted.part_count,
            removed_device_ids: removed,
        }),
        OffsetDateTime::now_utc(),
    )
}

/// The field number of `Event.portal_deletion_applied` (in the `payload` oneof).
const PORTAL_DELETION_APPLIED_FIELD: u32 = 40;
/// The field number of `PortalDeletionApplied.removed_device_ids`.
const REMOVED_DEVICE_IDS_FIELD: u32 = 6;

/// [`portal_receipt`] built by SQL, for a handler's
/// [`OneStatement`](crate::one_statement::OneStatement): a CTE named `receipt` yielding
/// the receipt's outbox row `(event_id, subject, payload)`, for the devices in the
/// `device_id` column of the CTE `removed`.
///
/// The payload is the encoding prost gives the same event (fields in number order, the
/// removed IDs in byte order): Rust encodes every field but the state and the removed
/// IDs, and SQL adds those with the two lengths around them.
pub fn portal_receipt_cte(
    deleted: &reseller_proto::v1::DevicesDeleted,
    portal: reseller_proto::v1::Portal,
    removed: &str,
    params: &mut crate::one_statement::Params,
) -> String {
    use crate::one_statement::varint_sql;
    use reseller_proto::v1::{PortalDeletionApplied, PortalState};

    let event_id = Uuid::now_v7();
    // The envelope without its payload: the event ID and the time.
    let envelope = Event {
        event_id: event_id.to_string(),
        occurred_at: Some(timestamp::to_proto(OffsetDateTime::now_utc())),
        payload: None,
    };
    let subject = crate::subjects::event_subject(&Payload::PortalDeletionApplied(
        PortalDeletionApplied::default(),
    ));
    let body = |fields: PortalDeletionApplied| fields.encode_to_vec();
    let body_head = body(PortalDeletionApplied {
        deletion_id: deleted.deletion_id.clone(),
        portal: portal as i32,
        ..Default::default()
    });
    let state = |state: PortalState| {
        body(PortalDeletionApplied {
            state: state as i32,
            ..Default::default()
        })
    };
    let body_tail = body(PortalDeletionApplied {
        part: deleted.part,
        part_count: deleted.part_count,
        ..Default::default()
    });
    let payload_key = length_delimited_key(PORTAL_DELETION_APPLIED_FIELD);
    let removed_key = length_delimited_key(REMOVED_DEVICE_IDS_FIELD);
    format!(
        "receipt AS (SELECT {event_id}::uuid AS event_id, {subject}::text AS subject, \
           {head}::bytea || {payload_key}::bytea || {body_length} || body AS payload \
         FROM (SELECT body, octet_length(body) AS body_length FROM ( \
           SELECT {body_head}::bytea \
             || CASE WHEN count(*) > 0 THEN {removed_state}::bytea ELSE {none_state}::bytea END \
             || {body_tail}::bytea \
             || COALESCE(string_agg({removed_key}::bytea || {id_length} || id, ''::bytea ORDER BY id), \
                         ''::bytea) AS body \
           FROM (SELECT convert_to(device_id, 'UTF8') AS id, \
                        octet_length(convert_to(device_id, 'UTF8')) AS id_length FROM {removed}) AS r \
         ) AS b) AS p)",
        event_id = params.bind(event_id),
        subject = params.bind(subject),
        head = params.bind(envelope.encode_to_vec()),
        payload_key = params.bind(payload_key),
        body_length = varint_sql("body_length"),
        body_head = params.bind(body_head),
        removed_state = params.bind(state(PortalState::Removed)),
        none_state = params.bind(state(PortalState::NotApplicable)),
        body_tail = params.bind(body_tail),
        removed_key = params.bind(removed_key),
        id_length = varint_sql("id_length"),
    )
}

/// The protobuf key of a length-delimited field: the varint of `field << 3 | 2`.
fn length_delimited_key(field: u32) -> Vec<u8> {
    let mut key = (field << 3) | 2;
    let mut bytes = Vec::with_capacity(2);
    while key >= 0x80 {
        bytes.push((key as u8 & 0x7f) | 0x80);
        key >>= 7;
    }
    bytes.push(key as u8);
    bytes
}

/// An event field that must hold a UUID; a message for the dead letter when it does not
/// (the event can never apply).
///
/// # Errors
/// [`ApplyError::Poison`](crate::inbox::ApplyError::Poison) naming the field.
pub fn uuid_field(field: &str, value: &str) -> Result<Uuid, crate::inbox::ApplyError> {
    Uuid::parse_str(value)
        .map_err(|_| crate::inbox::ApplyError::Poison(format!("{field} {value:?} is not a UUID")))
}

/// The registrations of a `devices_deleted` event as columns, for one set-based
/// statement (`UNNEST($1::text[], $2::uuid[])`) per event.
#[derive(Debug, Default)]
pub struct DeletedColumns {
    /// Device IDs.
    pub device_ids: Vec<String>,
    /// The uploads that registered them.
    pub upload_ids: Vec<Uuid>,
}

impl DeletedColumns {
    /// Splits an event into columns.
    ///
    /// # Errors
    /// A message for the dead letter when the deletion or an upload ID is not a UUID.
    pub fn of(
        event: &reseller_proto::v1::DevicesDeleted,
    ) -> Result<Self, crate::inbox::ApplyError> {
        uuid_field("deletion_id", &event.deletion_id)?;
        let mut columns = Self::default();
        for d in &event.devices {
            let upload_id = uuid_field("upload_id", &d.upload_id)?;
            columns.device_ids.push(d.device_id.clone());
            columns.upload_ids.push(upload_id);
        }
        Ok(columns)
    }
}

/// `tombstones AS (…)`: the CTE with which a projection's deletion statement remembers the
/// deleted registrations (`device_ids`, `upload_ids`: placeholders of `text[]` and
/// `uuid[]`) in `<schema>.deleted_registrations`, so that an upload event arriving later
/// never shows them again.
pub fn tombstones_cte(schema: &str, device_ids: &str, upload_ids: &str) -> String {
    format!(
        "tombstones AS ( \
           INSERT INTO {schema}.deleted_registrations (device_id, upload_id) \
           SELECT * FROM UNNEST({device_ids}::text[], {upload_ids}::uuid[]) ON CONFLICT DO NOTHING)"
    )
}

/// The registrations of an `msp_devices_moved` event as columns, for one set-based
/// statement (`UNNEST`) per event.
#[derive(Debug, Default)]
pub struct MovedColumns {
    /// Device IDs.
    pub device_ids: Vec<String>,
    /// Upload IDs.
    pub upload_ids: Vec<Uuid>,
    /// `reseller.v1.DeviceIdKind` numbers.
    pub id_kinds: Vec<i16>,
    /// Models.
    pub models: Vec<String>,
    /// Resellers that uploaded them.
    pub reseller_ids: Vec<String>,
    /// When they were uploaded.
    pub uploaded_at: Vec<OffsetDateTime>,
    /// Their uploads' order numbers.
    pub order_numbers: Vec<String>,
}

impl MovedColumns {
    /// Splits an event into columns.
    ///
    /// # Errors
    /// A message for the dead letter when an upload ID is not a UUID.
    pub fn of(
        event: &reseller_proto::v1::MspDevicesMoved,
    ) -> Result<Self, crate::inbox::ApplyError> {
        let mut columns = Self::default();
        for d in &event.devices {
            let upload_id = uuid_field("upload_id", &d.upload_id)?;
            columns.device_ids.push(d.device_id.clone());
            columns.upload_ids.push(upload_id);
            columns.id_kinds.push(d.id_kind as i16);
            columns.models.push(d.model.clone());
            columns.reseller_ids.push(d.reseller_id.clone());
            columns
                .uploaded_at
                .push(timestamp::from_proto(d.uploaded_at.as_ref()));
            columns.order_numbers.push(d.order_number.clone());
        }
        Ok(columns)
    }
}
