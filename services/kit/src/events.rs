//! The `reseller.v1.Event` envelope: building, encoding and decoding events.

use prost::Message;
use reseller_proto::v1::{Event, PortalDeletionApplied, PortalState, event::Payload};
use serde::{Deserialize, Serialize};
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

/// A portal's answer to a deletion (DOMAIN.md, "Deleting devices"): `REMOVED` when it
/// removed at least one of the devices, `NOT_APPLICABLE` when it held none of them.
///
/// The one place this is decided: the outbox relay encodes each part's receipt with it
/// ([`PortalReceipt::into_event`]), and device-service folds a portal's receipts for all
/// the parts with it (a portal that removed something in any part removed something).
pub fn portal_state(removed_any: bool) -> PortalState {
    if removed_any {
        PortalState::Removed
    } else {
        PortalState::NotApplicable
    }
}

/// A portal's receipt for one part of a deletion, as fields: what a portal's
/// one-statement deletion writes into its outbox row (the `receipt` column, see
/// [`portal_receipt_cte`]), and what the outbox relay encodes with prost when it
/// publishes ([`PortalReceipt::into_event`]). The state is not among the fields: it
/// follows from the removed devices by [`portal_state`].
///
/// Everything is fixed when the row is written (the event ID is the row's), so a receipt
/// published again after a crash is the same event, byte for byte.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortalReceipt {
    /// The deletion, as its `devices_deleted` event names it.
    pub deletion_id: String,
    /// The `reseller.v1.Portal` number of the portal answering.
    pub portal: i32,
    /// The part answered (`DevicesDeleted.part`).
    pub part: u32,
    /// How many parts the deletion has (`DevicesDeleted.part_count`).
    pub part_count: u32,
    /// When the portal applied the part: seconds since the Unix epoch…
    pub occurred_at_seconds: i64,
    /// …and nanoseconds within that second (a protobuf `Timestamp`'s two fields).
    pub occurred_at_nanos: i32,
    /// The part's devices the portal held and removed, in any order (the event lists
    /// them in byte order). The statement adds them (see [`portal_receipt_cte`]); a row
    /// without them does not decode, rather than saying nothing was removed.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub removed_device_ids: Vec<String>,
}

/// The key under which [`portal_receipt_cte`]'s SQL adds the removed devices to a
/// [`PortalReceipt`]'s fields: the name of its field `removed_device_ids`.
const REMOVED_DEVICE_IDS_KEY: &str = "removed_device_ids";

impl PortalReceipt {
    /// The receipt of `portal` for the part `deleted`, applied now, before the removed
    /// devices are known.
    pub fn of(
        deleted: &reseller_proto::v1::DevicesDeleted,
        portal: reseller_proto::v1::Portal,
    ) -> Self {
        let occurred_at = timestamp::to_proto(OffsetDateTime::now_utc());
        Self {
            deletion_id: deleted.deletion_id.clone(),
            portal: portal as i32,
            part: deleted.part,
            part_count: deleted.part_count,
            occurred_at_seconds: occurred_at.seconds,
            occurred_at_nanos: occurred_at.nanos,
            removed_device_ids: Vec::new(),
        }
    }

    /// The `portal_deletion_applied` event `event_id` saying this receipt, its state
    /// decided by [`portal_state`] and the removed IDs in byte order: the relay
    /// publishes its encoding.
    pub fn into_event(self, event_id: Uuid) -> Event {
        let mut removed = self.removed_device_ids;
        removed.sort_unstable();
        Event {
            event_id: event_id.to_string(),
            occurred_at: Some(prost_types::Timestamp {
                seconds: self.occurred_at_seconds,
                nanos: self.occurred_at_nanos,
            }),
            payload: Some(Payload::PortalDeletionApplied(PortalDeletionApplied {
                deletion_id: self.deletion_id,
                portal: self.portal,
                state: portal_state(!removed.is_empty()) as i32,
                part: self.part,
                part_count: self.part_count,
                removed_device_ids: removed,
            })),
        }
    }
}

/// The receipt of `portal` for the part `deleted`, for a handler's
/// [`OneStatement`](crate::one_statement::OneStatement): a CTE named `receipt` yielding
/// its outbox row `(event_id, subject, payload, receipt)`, for the devices in the
/// `device_id` column (text) of the CTE `removed`. The payload is left NULL: the row
/// holds the receipt's fields (a [`PortalReceipt`] as jsonb), and the relay encodes
/// the event when it publishes it. The SQL only collects the removed IDs; what they mean
/// is decided in Rust.
pub fn portal_receipt_cte(
    deleted: &reseller_proto::v1::DevicesDeleted,
    portal: reseller_proto::v1::Portal,
    removed: &str,
    params: &mut crate::one_statement::Params,
) -> String {
    let fields = serde_json::to_string(&PortalReceipt::of(deleted, portal))
        .expect("a receipt's fields are JSON");
    let subject = crate::subjects::event_subject(&Payload::PortalDeletionApplied(
        PortalDeletionApplied::default(),
    ));
    format!(
        "receipt AS (SELECT {event_id}::uuid AS event_id, {subject}::text AS subject, \
           NULL::bytea AS payload, \
           {fields}::jsonb || jsonb_build_object({key}::text, \
             COALESCE(jsonb_agg(device_id), '[]'::jsonb)) AS receipt \
         FROM {removed})",
        event_id = params.bind(Uuid::now_v7()),
        subject = params.bind(subject),
        fields = params.bind(fields),
        key = params.bind(REMOVED_DEVICE_IDS_KEY),
    )
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
/// `uuid[]`) in `{schema}.deleted_registrations` (the consumer's schema, see
/// [`crate::sql`]), so that an upload event arriving later never shows them again.
pub fn tombstones_cte(device_ids: &str, upload_ids: &str) -> String {
    format!(
        "tombstones AS ( \
           INSERT INTO {{schema}}.deleted_registrations (device_id, upload_id) \
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

#[cfg(test)]
mod tests {
    use super::*;
    use reseller_proto::v1::{DevicesDeleted, Portal};

    #[test]
    fn a_portal_that_removed_a_device_removed_it_else_it_was_not_applicable() {
        assert_eq!(portal_state(true), PortalState::Removed);
        assert_eq!(portal_state(false), PortalState::NotApplicable);
    }

    fn receipt(removed: &[&str]) -> PortalReceipt {
        let deleted = DevicesDeleted {
            deletion_id: Uuid::now_v7().to_string(),
            part: 2,
            part_count: 3,
            ..Default::default()
        };
        PortalReceipt {
            removed_device_ids: removed.iter().map(|id| (*id).to_owned()).collect(),
            ..PortalReceipt::of(&deleted, Portal::Msp)
        }
    }

    fn encoded_receipt(event: &Event) -> &PortalDeletionApplied {
        match &event.payload {
            Some(Payload::PortalDeletionApplied(receipt)) => receipt,
            other => panic!("not a receipt: {other:?}"),
        }
    }

    #[test]
    fn a_receipt_says_the_rule_s_state_and_its_devices_in_byte_order() {
        let id = Uuid::now_v7();
        let fields = receipt(&["b", "É", "a", "Z"]);
        let event = fields.clone().into_event(id);
        assert_eq!(event.event_id, id.to_string());
        assert_eq!(
            event.occurred_at,
            Some(prost_types::Timestamp {
                seconds: fields.occurred_at_seconds,
                nanos: fields.occurred_at_nanos,
            })
        );
        let encoded = encoded_receipt(&event);
        assert_eq!(encoded.state, PortalState::Removed as i32);
        assert_eq!(encoded.removed_device_ids, ["Z", "a", "b", "É"]);
        assert_eq!(
            (encoded.portal, encoded.part, encoded.part_count),
            (Portal::Msp as i32, 2, 3)
        );
        assert_eq!(encoded.deletion_id, fields.deletion_id);

        let none = encoded_receipt(&receipt(&[]).into_event(id)).clone();
        assert_eq!(none.state, PortalState::NotApplicable as i32);
        assert!(none.removed_device_ids.is_empty());
    }

    #[test]
    fn the_same_fields_encode_to_the_same_bytes() {
        let id = Uuid::now_v7();
        let fields = receipt(&["350000000049508", "R58N00Z"]);
        let json = serde_json::to_string(&fields).unwrap();
        let again: PortalReceipt = serde_json::from_str(&json).unwrap();
        assert_eq!(
            encode(&fields.into_event(id)),
            encode(&again.into_event(id))
        );
    }

    #[test]
    fn the_statement_adds_the_removed_devices_under_the_field_s_name() {
        // Rust writes the fields without the removed devices; the SQL adds them under
        // this key. Fields missing them do not decode (rather than saying "none").
        let head = serde_json::to_value(receipt(&[])).unwrap();
        assert!(head.get(REMOVED_DEVICE_IDS_KEY).is_none());
        assert!(serde_json::from_value::<PortalReceipt>(head.clone()).is_err());
        let mut full = head;
        full[REMOVED_DEVICE_IDS_KEY] = serde_json::json!(["A"]);
        let decoded: PortalReceipt = serde_json::from_value(full).unwrap();
        assert_eq!(decoded.removed_device_ids, ["A"]);
    }
}
