//! What msp-link's events tell the reseller views: a customer's link to an MSP, and the
//! registrations an MSP moved.

use reseller_kit::ids::KnoxId;

use super::devices::UploadedDevice;
use super::placement::UploadRef;

/// A customer's MSP link as one msp-link event states it (`msp_customer_linked`,
/// `msp_management_mode_changed`, `msp_customer_delinked`). The fact with the highest
/// `seq` is the current one; the mode (fully or jointly managed) does not matter to
/// placements, only whether the customer is linked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkFact {
    /// The customer.
    pub customer: KnoxId,
    /// The MSP.
    pub msp_id: KnoxId,
    /// Linked (fully or jointly managed); `false` for a delink.
    pub linked: bool,
    /// msp-link's sequence number of the event.
    pub seq: i64,
}

#[cfg(test)]
impl LinkFact {
    /// A fact from its parts, for tests (the Knox IDs must parse).
    pub fn of(customer: &str, msp_id: &str, linked: bool, seq: i64) -> Self {
        LinkFact {
            customer: KnoxId::parse(customer).unwrap(),
            msp_id: KnoxId::parse(msp_id).unwrap(),
            linked,
            seq,
        }
    }
}

/// One registration an MSP moved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MovedRegistration {
    /// Its upload (an upload of the registration's reseller).
    pub upload: UploadRef,
    /// The device.
    pub device: UploadedDevice,
    /// Who held it before the move.
    pub from_knox_id: String,
}

/// One part of a move (`msp_devices_moved`, at most 1,000 registrations; the parts of one
/// move share its `seq`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MovedPart {
    /// The MSP that moved them.
    pub msp_id: KnoxId,
    /// The customer they were moved to.
    pub to: KnoxId,
    /// msp-link's sequence number of the move.
    pub seq: i64,
    /// When the MSP moved them.
    pub moved_at: time::OffsetDateTime,
    /// The registrations.
    pub registrations: Vec<MovedRegistration>,
}

impl MovedPart {
    /// The link fact the move implies: MSP moves only to a customer it links, so the
    /// customer was linked to it at the move's `seq`.
    pub fn implied_link(&self) -> LinkFact {
        LinkFact {
            customer: self.to.clone(),
            msp_id: self.msp_id.clone(),
            linked: true,
            seq: self.seq,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_move_implies_its_target_was_linked_to_the_moving_msp() {
        let part = MovedPart {
            msp_id: KnoxId::parse("700001").unwrap(),
            to: KnoxId::parse("600001").unwrap(),
            seq: 9,
            moved_at: time::OffsetDateTime::UNIX_EPOCH,
            registrations: Vec::new(),
        };
        assert_eq!(
            part.implied_link(),
            LinkFact::of("600001", "700001", true, 9)
        );
    }
}
