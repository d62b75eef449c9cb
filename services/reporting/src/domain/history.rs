//! A device's history (DOMAIN.md "Finding devices, history and the activity log"): the
//! facts the events left, put in order. The facts are stored as each event arrives,
//! whatever the order; the history is assembled here when it is read, so it is the same
//! whichever event came first.

use time::OffsetDateTime;
use uuid::Uuid;

/// What happened to a device (`reseller.v1.DeviceEventKind`), in the order entries of
/// the same instant are listed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum HistoryKind {
    /// The reseller uploaded it.
    Uploaded,
    /// An MSP moved it.
    MovedByMsp,
    /// The customer holding it was delinked from the MSP that moved it there.
    Delinked,
    /// The reseller deleted it.
    Deleted,
}

/// One entry of a device's history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryEntry {
    /// When it happened.
    pub occurred_at: OffsetDateTime,
    /// What happened.
    pub kind: HistoryKind,
    /// Who did it: the reseller's person (or reseller ID) for uploads and deletions, the
    /// MSP's or customer's Knox ID for moves and delinks ("" while the upload's or
    /// deletion's own record has not been projected yet).
    pub actor: String,
    /// The registration's upload.
    pub upload_id: Uuid,
    /// The deletion, for `Deleted`.
    pub deletion_id: Option<Uuid>,
    /// Moved from; for a delink, the MSP.
    pub from_knox_id: String,
    /// Uploaded or moved to; for a delink, the customer.
    pub to_knox_id: String,
}

/// One registration of the device (an upload of it), with its upload's actor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistrationFacts {
    /// The upload.
    pub upload_id: Uuid,
    /// When it was uploaded.
    pub uploaded_at: OffsetDateTime,
    /// The account uploaded to (`None` while only a move has told of the registration).
    pub uploaded_to: Option<String>,
    /// Who uploaded it ("" until the upload's record is projected).
    pub actor: String,
}

/// One move of a registration by an MSP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MoveFacts {
    /// The registration's upload.
    pub upload_id: Uuid,
    /// msp-link's `seq` of the move.
    pub seq: i64,
    /// The MSP that moved it.
    pub msp_id: String,
    /// Who held it before.
    pub from_knox_id: String,
    /// The customer it was moved to.
    pub to_knox_id: String,
    /// When.
    pub moved_at: OffsetDateTime,
}

/// One delink of a customer from an MSP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DelinkFacts {
    /// The customer.
    pub customer_knox_id: String,
    /// msp-link's `seq` of the delink.
    pub seq: i64,
    /// The MSP it was linked to.
    pub msp_id: String,
    /// The MSP or the customer, whichever asked.
    pub requested_by: String,
    /// When.
    pub delinked_at: OffsetDateTime,
}

/// The deletion of a registration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeletionFacts {
    /// The registration's upload.
    pub upload_id: Uuid,
    /// The deletion.
    pub deletion_id: Uuid,
    /// When it was asked for.
    pub deleted_at: OffsetDateTime,
    /// Who asked ("" until the deletion's record is projected).
    pub actor: String,
}

/// Everything stored about one device of one reseller.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeviceFacts {
    /// Its registrations.
    pub registrations: Vec<RegistrationFacts>,
    /// Their moves.
    pub moves: Vec<MoveFacts>,
    /// The delinks of the customers it was moved to.
    pub delinks: Vec<DelinkFacts>,
    /// Their deletions.
    pub deletions: Vec<DeletionFacts>,
}

/// The history the facts tell, oldest first.
///
/// A move to customer C by MSP M at `seq` s is followed by a `Delinked` entry for each
/// delink of C from M whose `seq` comes after s and before the registration's next move
/// (msp-link numbers a customer's events in commit order, so `seq` orders them exactly),
/// unless the registration was deleted before the delink. Entries of the same instant
/// are listed uploaded, moved, delinked, deleted.
pub fn assemble(facts: &DeviceFacts) -> Vec<HistoryEntry> {
    let mut entries = Vec::new();
    for r in &facts.registrations {
        // A registration known only from a move has no upload entry yet.
        let Some(to) = &r.uploaded_to else { continue };
        entries.push(HistoryEntry {
            occurred_at: r.uploaded_at,
            kind: HistoryKind::Uploaded,
            actor: r.actor.clone(),
            upload_id: r.upload_id,
            deletion_id: None,
            from_knox_id: String::new(),
            to_knox_id: to.clone(),
        });
    }
    for m in &facts.moves {
        entries.push(HistoryEntry {
            occurred_at: m.moved_at,
            kind: HistoryKind::MovedByMsp,
            actor: m.msp_id.clone(),
            upload_id: m.upload_id,
            deletion_id: None,
            from_knox_id: m.from_knox_id.clone(),
            to_knox_id: m.to_knox_id.clone(),
        });
        let next_move = facts
            .moves
            .iter()
            .filter(|n| n.upload_id == m.upload_id && n.seq > m.seq)
            .map(|n| n.seq)
            .min();
        let deleted_at = facts
            .deletions
            .iter()
            .find(|d| d.upload_id == m.upload_id)
            .map(|d| d.deleted_at);
        for d in &facts.delinks {
            let while_held = d.customer_knox_id == m.to_knox_id
                && d.msp_id == m.msp_id
                && d.seq > m.seq
                && next_move.is_none_or(|next| d.seq < next)
                && deleted_at.is_none_or(|at| d.delinked_at < at);
            if while_held {
                entries.push(HistoryEntry {
                    occurred_at: d.delinked_at,
                    kind: HistoryKind::Delinked,
                    actor: d.requested_by.clone(),
                    upload_id: m.upload_id,
                    deletion_id: None,
                    from_knox_id: d.msp_id.clone(),
                    to_knox_id: d.customer_knox_id.clone(),
                });
            }
        }
    }
    for d in &facts.deletions {
        entries.push(HistoryEntry {
            occurred_at: d.deleted_at,
            kind: HistoryKind::Deleted,
            actor: d.actor.clone(),
            upload_id: d.upload_id,
            deletion_id: Some(d.deletion_id),
            from_knox_id: String::new(),
            to_knox_id: String::new(),
        });
    }
    entries.sort_by(|a, b| {
        (a.occurred_at, a.kind, a.upload_id).cmp(&(b.occurred_at, b.kind, b.upload_id))
    });
    entries
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::Duration;

    fn at(seconds: i64) -> OffsetDateTime {
        OffsetDateTime::UNIX_EPOCH + Duration::seconds(1_800_000_000 + seconds)
    }

    fn facts(upload: Uuid) -> DeviceFacts {
        DeviceFacts {
            registrations: vec![RegistrationFacts {
                upload_id: upload,
                uploaded_at: at(0),
                uploaded_to: Some("300000001".into()),
                actor: "Jane Doe".into(),
            }],
            moves: vec![MoveFacts {
                upload_id: upload,
                seq: 5,
                msp_id: "300000001".into(),
                from_knox_id: "300000001".into(),
                to_knox_id: "200000001".into(),
                moved_at: at(10),
            }],
            delinks: vec![DelinkFacts {
                customer_knox_id: "200000001".into(),
                seq: 7,
                msp_id: "300000001".into(),
                requested_by: "200000001".into(),
                delinked_at: at(20),
            }],
            deletions: vec![DeletionFacts {
                upload_id: upload,
                deletion_id: Uuid::nil(),
                deleted_at: at(30),
                actor: "acme".into(),
            }],
        }
    }

    fn kinds(entries: &[HistoryEntry]) -> Vec<HistoryKind> {
        entries.iter().map(|e| e.kind).collect()
    }

    #[test]
    fn upload_move_delink_deletion_in_order_whatever_order_the_facts_came_in() {
        let upload = Uuid::now_v7();
        let mut f = facts(upload);
        let expected = vec![
            HistoryKind::Uploaded,
            HistoryKind::MovedByMsp,
            HistoryKind::Delinked,
            HistoryKind::Deleted,
        ];
        assert_eq!(kinds(&assemble(&f)), expected);
        f.registrations.reverse();
        f.moves.reverse();
        assert_eq!(kinds(&assemble(&f)), expected);
        let delink = &assemble(&f)[2];
        assert_eq!(delink.actor, "200000001");
        assert_eq!(delink.from_knox_id, "300000001");
    }

    #[test]
    fn a_delink_before_the_move_or_after_the_next_move_is_not_the_devices() {
        let upload = Uuid::now_v7();
        let mut f = facts(upload);
        f.delinks[0].seq = 3;
        assert!(!kinds(&assemble(&f)).contains(&HistoryKind::Delinked));
        f.delinks[0].seq = 9;
        f.moves.push(MoveFacts {
            upload_id: upload,
            seq: 8,
            msp_id: "300000001".into(),
            from_knox_id: "200000001".into(),
            to_knox_id: "200000002".into(),
            moved_at: at(15),
        });
        assert!(!kinds(&assemble(&f)).contains(&HistoryKind::Delinked));
    }

    #[test]
    fn a_delink_after_the_deletion_is_not_listed() {
        let mut f = facts(Uuid::now_v7());
        f.delinks[0].delinked_at = at(40);
        assert!(!kinds(&assemble(&f)).contains(&HistoryKind::Delinked));
    }
}
