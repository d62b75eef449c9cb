//! Where a registration is placed in its reseller's Customers page (DOMAIN.md "What each
//! portal shows"), and the counter deltas a change of placement makes.
//!
//! Placement is a pure function of facts ([`place`]). The projection stores the facts of
//! each registration (the upload's target, the current holder) and the MSP links, derives
//! the placement with [`place`] once per group of registrations that share their facts
//! (never per device), and applies every change to the counters as a [`PlacementDelta`]
//! (UPLOADS, DEVICES, LAST UPLOADED, the detail's uploads). Because the placement depends
//! only on the facts, and each fact is kept by its own "newest wins" rule, events applied
//! in any order end in the same placements and the same counters.

use time::OffsetDateTime;
use uuid::Uuid;

use super::AccountKind;

/// The facts that decide where a registration is placed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlacementFacts<'a> {
    /// The account the reseller uploaded the device to.
    pub uploaded_to: &'a str,
    /// Whether that account is an MSP.
    pub uploaded_to_msp: bool,
    /// The account holding the device now: `uploaded_to` until an MSP moves it.
    pub holder: &'a str,
    /// The MSP the holder is linked to now (fully or jointly managed), if any.
    pub holder_msp: Option<&'a str>,
}

/// Where a registration is placed: the row of the reseller's list it is shown under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placement<'a> {
    /// The row's Knox ID.
    pub knox_id: &'a str,
    /// The kind of account the row is for (used when the placement creates the row).
    pub kind: AccountKind,
    /// Part of a virtual upload (rule 3).
    pub virtual_upload: bool,
    /// For a virtual upload, the MSP the device was uploaded to; else "".
    pub via_msp_id: &'a str,
}

/// The placement rules of DOMAIN.md:
///
/// 1. a device uploaded directly to a customer, or to an MSP and still in its pool, is
///    placed under the account it was uploaded to;
/// 2. a device uploaded to MSP M and now held by customer C is placed under M while C is
///    linked to M (fully or jointly managed);
/// 3. otherwise (C was delinked from M, and is linked to no MSP or to another one) it is
///    placed under C as part of a virtual upload via M: one virtual upload per original
///    upload, holding only the devices placed so.
///
/// A device uploaded directly to a customer stays under that customer whoever holds it
/// later (rule 1 does not depend on moves). Rule 3 names M, the MSP the reseller uploaded
/// to, as the virtual upload's MSP, so all of an upload's devices under one row form one
/// virtual upload.
pub fn place<'a>(facts: &PlacementFacts<'a>) -> Placement<'a> {
    let with_uploader = !facts.uploaded_to_msp
        || facts.holder == facts.uploaded_to
        || facts.holder_msp == Some(facts.uploaded_to);
    if with_uploader {
        Placement {
            knox_id: facts.uploaded_to,
            kind: if facts.uploaded_to_msp {
                AccountKind::Msp
            } else {
                AccountKind::Customer
            },
            virtual_upload: false,
            via_msp_id: "",
        }
    } else {
        Placement {
            knox_id: facts.holder,
            kind: AccountKind::Customer,
            virtual_upload: true,
            via_msp_id: facts.uploaded_to,
        }
    }
}

/// The upload a delta's registrations belong to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadRef {
    /// The reseller that uploaded.
    pub reseller_id: String,
    /// The upload.
    pub upload_id: Uuid,
    /// When it was uploaded.
    pub uploaded_at: OffsetDateTime,
    /// Its order number.
    pub order_number: String,
}

/// A change to the counters of one upload placement, and so of the row it is under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlacementDelta {
    /// The upload.
    pub upload: UploadRef,
    /// The row's Knox ID.
    pub knox_id: String,
    /// The kind of account the row is for (used when the delta creates the row).
    pub kind: AccountKind,
    /// Whether the placement is a virtual upload.
    pub virtual_upload: bool,
    /// The virtual upload's MSP ("" when not virtual).
    pub via_msp_id: String,
    /// Change of the placement's device count: UPLOADS, deleted devices included.
    pub devices: i64,
    /// Change of its live count: DEVICES.
    pub live: i64,
}

impl PlacementDelta {
    /// `devices` registrations, `live` of them not deleted, entering (positive) or
    /// leaving (negative) `placement`.
    pub fn new(upload: &UploadRef, placement: &Placement<'_>, devices: i64, live: i64) -> Self {
        Self {
            upload: upload.clone(),
            knox_id: placement.knox_id.to_owned(),
            kind: placement.kind,
            virtual_upload: placement.virtual_upload,
            via_msp_id: placement.via_msp_id.to_owned(),
            devices,
            live,
        }
    }

    /// Whether the delta changes nothing.
    pub fn is_empty(&self) -> bool {
        self.devices == 0 && self.live == 0
    }
}

/// The deltas of `devices` registrations of one upload (`live` of them not deleted)
/// going from one placement to another (`None`: placed nowhere, e.g. before the upload's
/// facts are known): nothing when the placement does not change.
pub fn transfer(
    upload: &UploadRef,
    from: Option<&Placement<'_>>,
    to: Option<&Placement<'_>>,
    devices: i64,
    live: i64,
) -> Vec<PlacementDelta> {
    if from == to || (devices == 0 && live == 0) {
        return Vec::new();
    }
    let mut deltas = Vec::with_capacity(2);
    if let Some(from) = from {
        deltas.push(PlacementDelta::new(upload, from, -devices, -live));
    }
    if let Some(to) = to {
        deltas.push(PlacementDelta::new(upload, to, devices, live));
    }
    deltas
}

/// Sums the deltas of the same placement (one upload under one row), in first-seen
/// order, and drops those that change nothing: each placement is then written once.
pub fn merge(deltas: Vec<PlacementDelta>) -> Vec<PlacementDelta> {
    let mut merged: Vec<PlacementDelta> = Vec::with_capacity(deltas.len());
    let mut index = std::collections::HashMap::with_capacity(deltas.len());
    for delta in deltas {
        let key = (
            delta.upload.reseller_id.clone(),
            delta.upload.upload_id,
            delta.knox_id.clone(),
        );
        match index.get(&key) {
            Some(&i) => {
                let into: &mut PlacementDelta = &mut merged[i];
                into.devices += delta.devices;
                into.live += delta.live;
            }
            None => {
                index.insert(key, merged.len());
                merged.push(delta);
            }
        }
    }
    merged.retain(|d| !d.is_empty());
    merged
}

#[cfg(test)]
mod tests {
    use super::*;

    const CUSTOMER: &str = "100001";
    const OTHER_CUSTOMER: &str = "100002";
    const MSP: &str = "200001";
    const OTHER_MSP: &str = "200002";

    fn facts<'a>(
        uploaded_to: &'a str,
        uploaded_to_msp: bool,
        holder: &'a str,
        holder_msp: Option<&'a str>,
    ) -> PlacementFacts<'a> {
        PlacementFacts {
            uploaded_to,
            uploaded_to_msp,
            holder,
            holder_msp,
        }
    }

    fn direct(knox_id: &str, kind: AccountKind) -> Placement<'_> {
        Placement {
            knox_id,
            kind,
            virtual_upload: false,
            via_msp_id: "",
        }
    }

    #[test]
    fn rule_1_a_device_is_placed_under_the_account_it_was_uploaded_to() {
        assert_eq!(
            place(&facts(CUSTOMER, false, CUSTOMER, None)),
            direct(CUSTOMER, AccountKind::Customer)
        );
        // A customer managed by an MSP: still its own upload.
        assert_eq!(
            place(&facts(CUSTOMER, false, CUSTOMER, Some(MSP))),
            direct(CUSTOMER, AccountKind::Customer)
        );
        // In the MSP's pool.
        assert_eq!(
            place(&facts(MSP, true, MSP, None)),
            direct(MSP, AccountKind::Msp)
        );
    }

    #[test]
    fn rule_1_holds_whoever_holds_a_device_uploaded_to_a_customer() {
        // An MSP moved it from its customer to another one, linked or not.
        for holder_msp in [Some(MSP), None, Some(OTHER_MSP)] {
            assert_eq!(
                place(&facts(CUSTOMER, false, OTHER_CUSTOMER, holder_msp)),
                direct(CUSTOMER, AccountKind::Customer)
            );
        }
    }

    #[test]
    fn rule_2_a_moved_device_stays_under_the_msp_while_its_customer_is_linked() {
        assert_eq!(
            place(&facts(MSP, true, CUSTOMER, Some(MSP))),
            direct(MSP, AccountKind::Msp)
        );
    }

    #[test]
    fn rule_3_after_a_delink_the_device_is_a_virtual_upload_under_its_customer() {
        let expected = Placement {
            knox_id: CUSTOMER,
            kind: AccountKind::Customer,
            virtual_upload: true,
            via_msp_id: MSP,
        };
        // Delinked and linked to no MSP, or linked to another MSP since.
        assert_eq!(place(&facts(MSP, true, CUSTOMER, None)), expected);
        assert_eq!(
            place(&facts(MSP, true, CUSTOMER, Some(OTHER_MSP))),
            expected
        );
    }

    #[test]
    fn placement_follows_the_facts_back_and_forth() {
        // Linked, delinked, linked again: the placement is a function of the current
        // facts only, so it returns with them.
        let linked = place(&facts(MSP, true, CUSTOMER, Some(MSP)));
        let delinked = place(&facts(MSP, true, CUSTOMER, None));
        let relinked = place(&facts(MSP, true, CUSTOMER, Some(MSP)));
        assert_ne!(linked, delinked);
        assert_eq!(linked, relinked);
    }

    fn upload() -> UploadRef {
        UploadRef {
            reseller_id: "acme".into(),
            upload_id: Uuid::nil(),
            uploaded_at: OffsetDateTime::UNIX_EPOCH,
            order_number: "PO-1".into(),
        }
    }

    #[test]
    fn a_transfer_moves_counts_from_one_placement_to_another() {
        let from = direct(MSP, AccountKind::Msp);
        let to = place(&facts(MSP, true, CUSTOMER, None));
        let deltas = transfer(&upload(), Some(&from), Some(&to), 5, 3);
        assert_eq!(deltas.len(), 2);
        assert_eq!(
            (
                deltas[0].knox_id.as_str(),
                deltas[0].devices,
                deltas[0].live
            ),
            (MSP, -5, -3)
        );
        assert!(!deltas[0].virtual_upload);
        assert_eq!(
            (
                deltas[1].knox_id.as_str(),
                deltas[1].devices,
                deltas[1].live
            ),
            (CUSTOMER, 5, 3)
        );
        assert!(deltas[1].virtual_upload);
        assert_eq!(deltas[1].via_msp_id, MSP);
        assert_eq!(deltas[1].kind, AccountKind::Customer);
        // The counts are conserved.
        assert_eq!(deltas.iter().map(|d| d.devices).sum::<i64>(), 0);
        assert_eq!(deltas.iter().map(|d| d.live).sum::<i64>(), 0);
    }

    #[test]
    fn a_transfer_to_the_same_placement_or_of_nothing_changes_nothing() {
        let here = direct(MSP, AccountKind::Msp);
        assert!(transfer(&upload(), Some(&here), Some(&here), 5, 3).is_empty());
        let there = direct(CUSTOMER, AccountKind::Customer);
        assert!(transfer(&upload(), Some(&here), Some(&there), 0, 0).is_empty());
    }

    #[test]
    fn merging_sums_each_placement_once_and_drops_empty_ones() {
        let msp = direct(MSP, AccountKind::Msp);
        let customer = place(&facts(MSP, true, CUSTOMER, None));
        let mut other_upload = upload();
        other_upload.upload_id = Uuid::from_u128(1);
        let deltas = merge(vec![
            PlacementDelta::new(&upload(), &msp, 3, 3),
            PlacementDelta::new(&upload(), &customer, 1, 1),
            PlacementDelta::new(&other_upload, &msp, 2, 2),
            PlacementDelta::new(&upload(), &msp, -1, -2),
            PlacementDelta::new(&upload(), &customer, -1, -1),
        ]);
        let summary: Vec<_> = deltas
            .iter()
            .map(|d| (d.upload.upload_id, d.knox_id.as_str(), d.devices, d.live))
            .collect();
        assert_eq!(
            summary,
            [(Uuid::nil(), MSP, 2, 1), (Uuid::from_u128(1), MSP, 2, 2)]
        );
    }

    #[test]
    fn placing_and_unplacing_are_one_sided_transfers() {
        let here = direct(CUSTOMER, AccountKind::Customer);
        let placed = transfer(&upload(), None, Some(&here), 2, 2);
        assert_eq!(placed, vec![PlacementDelta::new(&upload(), &here, 2, 2)]);
        let unplaced = transfer(&upload(), Some(&here), None, 2, 1);
        assert_eq!(
            unplaced,
            vec![PlacementDelta::new(&upload(), &here, -2, -1)]
        );
        assert!(PlacementDelta::new(&upload(), &here, 0, 0).is_empty());
    }
}
