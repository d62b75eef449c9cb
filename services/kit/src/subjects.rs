//! Every NATS name the services use, built in one place.

use reseller_proto::v1::{Event, event::Payload};

/// The JetStream stream that holds every event.
pub const EVENTS_STREAM: &str = "RESELLER_EVENTS";
/// The subjects `EVENTS_STREAM` captures.
pub const ALL_EVENTS: &str = "reseller.events.v1.>";
/// The subjects of the deletion's aggregate: the portals' `portal_deletion_applied`
/// receipts, which device-service folds.
pub const DELETION_EVENTS: &str = "reseller.events.v1.deletion.>";
/// The subject of an event without a payload this build knows (never one it builds).
pub const UNKNOWN_EVENT: &str = "reseller.events.v1.unknown.unknown";
/// The JetStream stream that keeps dead letters for inspection and replay.
pub const DEAD_LETTER_STREAM: &str = "RESELLER_DEAD_LETTERS";
/// The subjects `DEAD_LETTER_STREAM` captures.
pub const ALL_DEAD_LETTERS: &str = "reseller.deadletter.v1.>";

/// Headers of dead letters.
pub mod headers {
    /// Why the event could not be applied.
    pub const DEAD_LETTER_REASON: &str = "Dead-Letter-Reason";
    /// The consumer that gave up on it.
    pub const DEAD_LETTER_CONSUMER: &str = "Dead-Letter-Consumer";
    /// The subject the event was published on.
    pub const ORIGINAL_SUBJECT: &str = "Original-Subject";
    /// Its sequence number in `EVENTS_STREAM`.
    pub const ORIGINAL_SEQUENCE: &str = "Original-Sequence";
    /// The protobuf content type of event payloads.
    pub const CONTENT_TYPE_PROTOBUF: &str = "application/protobuf";
    /// The W3C trace context of the span that wrote the event (see
    /// [`crate::trace_context`]); absent when that process exports no traces.
    pub const TRACEPARENT: &str = crate::trace_context::TRACEPARENT;
}

/// The subject an event with `payload` is published on:
/// `reseller.events.v1.<aggregate>.<event>`.
pub fn event_subject(payload: &Payload) -> &'static str {
    match payload {
        Payload::AccountRegistered(_) => "reseller.events.v1.account.registered",
        Payload::CustomerAdded(_) => "reseller.events.v1.customer.added",
        Payload::CustomerReferenceUpdated(_) => "reseller.events.v1.customer.reference_updated",
        Payload::CustomerStatusChanged(_) => "reseller.events.v1.customer.status_changed",
        Payload::DevicesUploaded(_) => "reseller.events.v1.device.uploaded",
        Payload::DevicesDeleted(_) => "reseller.events.v1.device.deleted",
        Payload::UploadRecorded(_) => "reseller.events.v1.device.upload_recorded",
        Payload::DeletionRecorded(_) => "reseller.events.v1.device.deletion_recorded",
        Payload::DeletionCompleted(_) => "reseller.events.v1.device.deletion_completed",
        Payload::MspCustomerLinked(_) => "reseller.events.v1.msp.customer_linked",
        Payload::MspManagementModeChanged(_) => "reseller.events.v1.msp.management_mode_changed",
        Payload::MspCustomerDelinked(_) => "reseller.events.v1.msp.customer_delinked",
        Payload::MspDevicesMoved(_) => "reseller.events.v1.msp.devices_moved",
        Payload::PortalDeletionApplied(_) => "reseller.events.v1.deletion.portal_applied",
    }
}

/// The subject `event` is published on: [`event_subject`] of its payload, or
/// [`UNKNOWN_EVENT`] without one.
pub fn subject_of(event: &Event) -> &'static str {
    event.payload.as_ref().map_or(UNKNOWN_EVENT, event_subject)
}

/// Where `consumer` sends the events it can never apply.
pub fn dead_letter_subject(consumer: &str) -> String {
    format!("reseller.deadletter.v1.{consumer}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use reseller_proto::v1::PortalDeletionApplied;

    #[test]
    fn receipts_are_deletion_events() {
        let receipt = Payload::PortalDeletionApplied(PortalDeletionApplied::default());
        let aggregate = DELETION_EVENTS.trim_end_matches('>');
        assert!(event_subject(&receipt).starts_with(aggregate));
        assert!(event_subject(&receipt).starts_with(ALL_EVENTS.trim_end_matches('>')));
        assert_eq!(subject_of(&Event::default()), UNKNOWN_EVENT);
    }
}
