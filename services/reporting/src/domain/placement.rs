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
    /// The holder has been delinked (from any MSP) since the device was moved to it.
    pub delinked_since_move: bool,
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
///
/// A virtual upload stays virtual: once C has been delinked after a device was moved to
/// it, the device stays under C even if C is linked to M again (rule 3 speaks of the
/// devices moved *before* the delink; a re-link does not undo it, and the reseller's
/// virtual upload does not vanish). Only a new move by M, to another customer it links,
/// brings such a device back under M (rule 2 applies to that move afresh). A device M
/// moves to C after the re-link is under M until C's next delink.
pub fn place<'a>(facts: &PlacementFacts<'a>) -> Placement<'a> {
    let with_uploader = !facts.uploaded_to_msp
        || facts.holder == facts.uploaded_to
        || (facts.holder_msp == Some(facts.uploaded_to) && !facts.delinked_since_move);
    if with_uploader {
        Placement::stored(facts.uploaded_to, false, "", facts.uploaded_to_msp)
    } else {
        Placement::stored(facts.holder, true, facts.uploaded_to, facts.uploaded_to_msp)
    }
}

/// The kind of row a placement is under (used when the placement creates the row): the
/// MSP's for the non-virtual devices of an upload to an MSP (rules 1 and 2), a
/// customer's for everything else (rule 1, and rule 3's virtual uploads). The one
/// definition: [`place`], [`Placement::stored`] and the deletion statement (through
/// [`PLACEMENT_KINDS`]) all use it.
pub const fn placement_kind(uploaded_to_msp: bool, virtual_upload: bool) -> AccountKind {
    if uploaded_to_msp && !virtual_upload {
        AccountKind::Msp
    } else {
        AccountKind::Customer
    }
}

/// [`placement_kind`] for every combination of its facts, `(uploaded_to_msp,
/// virtual_upload, kind)`: the table SQL looks a stored placement's kind up in, so the
/// rule is not restated there.
pub const PLACEMENT_KINDS: [(bool, bool, AccountKind); 4] = [
    (false, false, placement_kind(false, false)),
    (false, true, placement_kind(false, true)),
    (true, false, placement_kind(true, false)),
    (true, true, placement_kind(true, true)),
];

impl<'a> Placement<'a> {
    /// A placement as the projection stores it (the row's Knox ID, whether virtual, the
    /// virtual upload's MSP), for a registration of an upload to an MSP or not.
    pub fn stored(
        knox_id: &'a str,
        virtual_upload: bool,
        via_msp_id: &'a str,
        uploaded_to_msp: bool,
    ) -> Self {
        Placement {
            knox_id,
            kind: placement_kind(uploaded_to_msp, virtual_upload),
            virtual_upload,
            via_msp_id,
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

/// Where a group of registrations is stored as placed now (see [`Placement::stored`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredPlacement {
    /// The row's Knox ID.
    pub knox_id: String,
    /// Part of a virtual upload.
    pub virtual_upload: bool,
    /// The virtual upload's MSP ("" when not virtual).
    pub via_msp_id: String,
}

/// Registrations of one upload that share every placement fact and their stored
/// placement: the unit the projection re-places when a fact changes (a move, a link, a
/// delink, an upload completing registrations a move announced), with one call of
/// [`place`] however many devices it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistrationGroup {
    /// Their upload.
    pub upload: UploadRef,
    /// The account the reseller uploaded to (`None` until the upload's event is
    /// projected: such registrations are placed nowhere).
    pub uploaded_to: Option<String>,
    /// Whether that account is an MSP.
    pub uploaded_to_msp: bool,
    /// The account holding them now.
    pub holder: String,
    /// The MSP the holder is linked to now, if any.
    pub holder_msp: Option<String>,
    /// The holder has been delinked since they were moved to it.
    pub delinked_since_move: bool,
    /// Where they are placed now (`None`: nowhere).
    pub placed: Option<StoredPlacement>,
    /// How many registrations the group holds, deleted ones included.
    pub devices: i64,
    /// How many of them are not deleted.
    pub live: i64,
}

impl RegistrationGroup {
    /// Where the group is placed now.
    pub fn current(&self) -> Option<Placement<'_>> {
        self.placed.as_ref().map(|p| {
            Placement::stored(
                &p.knox_id,
                p.virtual_upload,
                &p.via_msp_id,
                self.uploaded_to_msp,
            )
        })
    }

    /// Where its facts place it (`None` while the upload is not known).
    pub fn target(&self) -> Option<Placement<'_>> {
        let uploaded_to = self.uploaded_to.as_deref()?;
        Some(place(&PlacementFacts {
            uploaded_to,
            uploaded_to_msp: self.uploaded_to_msp,
            holder: &self.holder,
            holder_msp: self.holder_msp.as_deref(),
            delinked_since_move: self.delinked_since_move,
        }))
    }

    /// The group's new placement and the deltas that move its counts there, or `None`
    /// when it is placed where its facts say already.
    pub fn replace(&self) -> Option<(Option<Placement<'_>>, Vec<PlacementDelta>)> {
        let (from, to) = (self.current(), self.target());
        if from == to {
            return None;
        }
        let deltas = transfer(
            &self.upload,
            from.as_ref(),
            to.as_ref(),
            self.devices,
            self.live,
        );
        Some((to, deltas))
    }
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
            delinked_since_move: false,
        }
    }

    /// The facts of a device moved to `holder` before the holder's latest delink.
    fn delinked_since<'a>(
        uploaded_to: &'a str,
        holder: &'a str,
        holder_msp: Option<&'a str>,
    ) -> PlacementFacts<'a> {
        PlacementFacts {
            delinked_since_move: true,
            ..facts(uploaded_to, true, holder, holder_msp)
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
    fn placement_is_a_function_of_the_current_facts() {
        // The same facts always place the same way, whatever happened before.
        let linked = place(&facts(MSP, true, CUSTOMER, Some(MSP)));
        let delinked = place(&facts(MSP, true, CUSTOMER, None));
        assert_ne!(linked, delinked);
        assert_eq!(linked, place(&facts(MSP, true, CUSTOMER, Some(MSP))));
    }

    #[test]
    fn a_virtual_upload_stays_virtual_when_its_customer_is_linked_again() {
        let virtual_under_customer = Placement {
            knox_id: CUSTOMER,
            kind: AccountKind::Customer,
            virtual_upload: true,
            via_msp_id: MSP,
        };
        // Moved, then the customer was delinked: virtual, whether it is linked to no MSP,
        // to the same MSP again, or to another one.
        for holder_msp in [None, Some(MSP), Some(OTHER_MSP)] {
            assert_eq!(
                place(&delinked_since(MSP, CUSTOMER, holder_msp)),
                virtual_under_customer
            );
        }
        // A delink does not matter to devices in the pool or uploaded to a customer.
        assert_eq!(
            place(&delinked_since(MSP, MSP, None)),
            direct(MSP, AccountKind::Msp)
        );
        assert_eq!(
            place(&PlacementFacts {
                delinked_since_move: true,
                ..facts(CUSTOMER, false, OTHER_CUSTOMER, None)
            }),
            direct(CUSTOMER, AccountKind::Customer)
        );
    }

    #[test]
    fn a_device_uploaded_to_one_msp_and_moved_by_another_is_virtual_at_its_holder() {
        // Uploaded to MSP, moved to CUSTOMER, CUSTOMER delinked and linked by OTHER_MSP,
        // which moved it on to OTHER_CUSTOMER: no longer in MSP's care.
        assert_eq!(
            place(&facts(MSP, true, OTHER_CUSTOMER, Some(OTHER_MSP))),
            Placement {
                knox_id: OTHER_CUSTOMER,
                kind: AccountKind::Customer,
                virtual_upload: true,
                via_msp_id: MSP,
            }
        );
    }

    #[test]
    fn only_the_direct_devices_of_an_upload_to_an_msp_are_under_an_msp_row() {
        let msp_rows: Vec<_> = PLACEMENT_KINDS
            .iter()
            .filter(|(_, _, kind)| *kind == AccountKind::Msp)
            .map(|(uploaded_to_msp, virtual_upload, _)| (*uploaded_to_msp, *virtual_upload))
            .collect();
        assert_eq!(msp_rows, [(true, false)]);
    }

    #[test]
    fn stored_placements_read_back_as_place_made_them() {
        for f in [
            facts(CUSTOMER, false, CUSTOMER, None),
            facts(CUSTOMER, false, OTHER_CUSTOMER, Some(MSP)),
            facts(MSP, true, MSP, None),
            facts(MSP, true, CUSTOMER, Some(MSP)),
            facts(MSP, true, CUSTOMER, None),
            delinked_since(MSP, CUSTOMER, Some(MSP)),
        ] {
            let placed = place(&f);
            assert_eq!(
                Placement::stored(
                    placed.knox_id,
                    placed.virtual_upload,
                    placed.via_msp_id,
                    f.uploaded_to_msp
                ),
                placed
            );
        }
    }

    fn group(
        holder_msp: Option<&str>,
        delinked: bool,
        placed: Option<Placement<'_>>,
    ) -> RegistrationGroup {
        RegistrationGroup {
            upload: upload(),
            uploaded_to: Some(MSP.into()),
            uploaded_to_msp: true,
            holder: CUSTOMER.into(),
            holder_msp: holder_msp.map(str::to_owned),
            delinked_since_move: delinked,
            placed: placed.map(|p| StoredPlacement {
                knox_id: p.knox_id.into(),
                virtual_upload: p.virtual_upload,
                via_msp_id: p.via_msp_id.into(),
            }),
            devices: 3,
            live: 2,
        }
    }

    #[test]
    fn a_group_placed_where_its_facts_say_is_left_alone() {
        let under_msp = direct(MSP, AccountKind::Msp);
        assert_eq!(group(Some(MSP), false, Some(under_msp)).replace(), None);
        let virtual_upload = place(&facts(MSP, true, CUSTOMER, None));
        assert_eq!(group(None, true, Some(virtual_upload)).replace(), None);
        assert_eq!(group(Some(MSP), true, Some(virtual_upload)).replace(), None);
    }

    #[test]
    fn a_delink_moves_a_group_from_the_msp_to_a_virtual_upload() {
        let under_msp = direct(MSP, AccountKind::Msp);
        let delinked = group(None, true, Some(under_msp));
        let (to, deltas) = delinked.replace().unwrap();
        let to = to.unwrap();
        assert_eq!(
            (to.knox_id, to.virtual_upload, to.via_msp_id),
            (CUSTOMER, true, MSP)
        );
        let summary: Vec<_> = deltas
            .iter()
            .map(|d| (d.knox_id.as_str(), d.virtual_upload, d.devices, d.live))
            .collect();
        assert_eq!(summary, [(MSP, false, -3, -2), (CUSTOMER, true, 3, 2)]);
    }

    #[test]
    fn registrations_placed_nowhere_are_placed_once_their_upload_is_known() {
        // Known from a move only: nowhere, and nowhere to go.
        let mut stub = group(Some(MSP), false, None);
        stub.uploaded_to = None;
        assert_eq!(stub.replace(), None);
        // The upload arrived: placed under the MSP (its customer is linked).
        stub.uploaded_to = Some(MSP.into());
        let (to, deltas) = stub.replace().unwrap();
        assert_eq!(to, Some(direct(MSP, AccountKind::Msp)));
        assert_eq!(
            deltas,
            vec![PlacementDelta::new(
                &upload(),
                &direct(MSP, AccountKind::Msp),
                3,
                2
            )]
        );
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
