//! The reseller's activity log (DOMAIN.md "Finding devices, history and the activity
//! log"): what each kind of entry is, what its one-line summary says, and the filters and
//! keyset cursor of `ListActivity`.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

/// What an activity entry records (`reseller.v1.ActivityKind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ActivityKind {
    /// The reseller uploaded devices (one entry per upload, whatever it accepted).
    Upload,
    /// The reseller deleted devices (one entry per deletion).
    Deletion,
    /// The reseller added a customer or MSP.
    CustomerAdded,
    /// The reseller edited a customer's internal reference.
    ReferenceUpdated,
    /// A customer approved or revoked the reseller.
    ApprovalChanged,
    /// An MSP moved devices the reseller uploaded (one entry per move).
    MspMove,
    /// A customer holding devices the reseller uploaded was delinked from its MSP.
    MspDelink,
}

impl ActivityKind {
    /// Every kind, in the enum's order.
    pub const ALL: [ActivityKind; 7] = [
        ActivityKind::Upload,
        ActivityKind::Deletion,
        ActivityKind::CustomerAdded,
        ActivityKind::ReferenceUpdated,
        ActivityKind::ApprovalChanged,
        ActivityKind::MspMove,
        ActivityKind::MspDelink,
    ];

    /// The `kind` column's spelling (migration 0008).
    pub fn as_db(self) -> &'static str {
        match self {
            ActivityKind::Upload => "UPLOAD",
            ActivityKind::Deletion => "DELETION",
            ActivityKind::CustomerAdded => "CUSTOMER_ADDED",
            ActivityKind::ReferenceUpdated => "REFERENCE_UPDATED",
            ActivityKind::ApprovalChanged => "APPROVAL_CHANGED",
            ActivityKind::MspMove => "MSP_MOVE",
            ActivityKind::MspDelink => "MSP_DELINK",
        }
    }

    /// The kind the column spells, if any.
    pub fn from_db(value: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_db() == value)
    }

    /// The CSV's `Kind` cell: lower case words.
    pub fn label(self) -> &'static str {
        match self {
            ActivityKind::Upload => "upload",
            ActivityKind::Deletion => "deletion",
            ActivityKind::CustomerAdded => "customer added",
            ActivityKind::ReferenceUpdated => "reference updated",
            ActivityKind::ApprovalChanged => "approval changed",
            ActivityKind::MspMove => "MSP move",
            ActivityKind::MspDelink => "MSP delink",
        }
    }
}

/// A deletion's state in one portal, as its activity entry shows it
/// (`reseller.v1.PortalState`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PortalProgress {
    /// Not every part answered yet (or the entry is not a deletion's).
    Pending,
    /// The portal showed at least one of the deleted devices and no longer does.
    Removed,
    /// The portal showed none of them.
    NotApplicable,
}

impl PortalProgress {
    /// The `reseller.v1.PortalState` number.
    pub fn as_proto(self) -> i32 {
        match self {
            PortalProgress::Pending => 1,
            PortalProgress::Removed => 2,
            PortalProgress::NotApplicable => 3,
        }
    }

    /// A final state from its `reseller.v1.PortalState` number (2 or 3, as migration 0009
    /// stores it); anything else is not final.
    pub fn from_db(value: Option<i16>) -> Self {
        match value {
            Some(2) => PortalProgress::Removed,
            Some(3) => PortalProgress::NotApplicable,
            _ => PortalProgress::Pending,
        }
    }

    /// In a summary and the CSV: `removed`, `not applicable`, `pending`.
    pub fn label(self) -> &'static str {
        match self {
            PortalProgress::Pending => "pending",
            PortalProgress::Removed => "removed",
            PortalProgress::NotApplicable => "not applicable",
        }
    }
}

/// One entry of the activity log, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Activity {
    /// The upload ID, deletion ID, `move:<msp>:<seq>` or the event ID.
    pub activity_id: String,
    /// When it happened.
    pub occurred_at: OffsetDateTime,
    /// What it records.
    pub kind: ActivityKind,
    /// The person's name or the reseller ID for the reseller's commands; the Knox ID of
    /// the customer or MSP for theirs.
    pub actor: String,
    /// The customer it is about ("" when it touches several or none).
    pub customer_knox_id: String,
    /// Every customer it touches.
    pub customer_knox_ids: Vec<String>,
    /// The upload, for an upload.
    pub upload_id: Option<Uuid>,
    /// The deletion, for a deletion.
    pub deletion_id: Option<Uuid>,
    /// Devices accepted (uploads).
    pub accepted_count: i64,
    /// Devices rejected (uploads).
    pub rejected_count: i64,
    /// Devices concerned (uploads: accepted; deletions: deleted; moves: moved).
    pub device_count: i64,
    /// What the summary names besides the customer (migration 0008's `detail`).
    pub detail: String,
    /// A deletion's state in the reseller, MSP and customer portals (migration 0009);
    /// meaningless for the other kinds.
    pub portal_states: [PortalProgress; 3],
}

impl Activity {
    /// The customer the entry is about: its own, or the one customer a deletion or move
    /// touched ("" when it touched several or none).
    pub fn customer(&self) -> &str {
        match (
            self.customer_knox_id.as_str(),
            self.customer_knox_ids.as_slice(),
        ) {
            ("", [only]) => only,
            (own, _) => own,
        }
    }

    /// One line for a person, in the domain's words.
    pub fn summary(&self) -> String {
        let customer = self.customer();
        match self.kind {
            ActivityKind::Upload => upload_summary(
                customer,
                &self.detail,
                self.accepted_count,
                self.rejected_count,
            ),
            ActivityKind::Deletion => {
                deletion_summary(self.device_count, self.rejected_count, self.portal_states)
            }
            ActivityKind::CustomerAdded => format!("added {customer} ({})", self.detail),
            ActivityKind::ReferenceUpdated if self.detail.is_empty() => {
                format!("cleared the internal reference of {customer}")
            }
            ActivityKind::ReferenceUpdated => format!(
                "set the internal reference of {customer} to \"{}\"",
                self.detail
            ),
            ActivityKind::ApprovalChanged => match self.detail.as_str() {
                "ACTIVE" => format!("{customer} approved the reseller"),
                "INACTIVE" => format!("{customer} revoked its approval of the reseller"),
                _ => format!("{customer} has not approved the reseller yet"),
            },
            ActivityKind::MspMove => move_summary(&self.detail, customer, self.device_count),
            ActivityKind::MspDelink => delink_summary(customer, &self.detail),
        }
    }
}

/// `n` with thousands separators, as the summaries print counts ("1,000,000").
pub fn grouped(n: i64) -> String {
    let digits = n.unsigned_abs().to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3 + 1);
    if n < 0 {
        out.push('-');
    }
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// "device" or "devices".
fn devices(n: i64) -> String {
    format!("{} device{}", grouped(n), if n == 1 { "" } else { "s" })
}

/// An upload's summary: `uploaded 998 devices to 200000001 (order PO-1); 2 rejected`.
pub fn upload_summary(target: &str, order_number: &str, accepted: i64, rejected: i64) -> String {
    let mut s = format!("uploaded {} to {target}", devices(accepted));
    if !order_number.is_empty() {
        s.push_str(&format!(" (order {order_number})"));
    }
    if rejected > 0 {
        s.push_str(&format!("; {} rejected", grouped(rejected)));
    }
    s
}

/// A deletion's summary: `deleted 3 devices (1 not found); reseller portal removed, MSP
/// portal not applicable, customer portal pending`. The states are device-service's
/// fold of the portals' receipts (its `deletion_completed`), as `GetDeletion` gives them.
pub fn deletion_summary(deleted: i64, not_found: i64, portals: [PortalProgress; 3]) -> String {
    let mut s = format!("deleted {}", devices(deleted));
    if not_found > 0 {
        s.push_str(&format!(" ({} not found)", grouped(not_found)));
    }
    let [reseller, msp, customer] = portals.map(PortalProgress::label);
    s.push_str(&format!(
        "; reseller portal {reseller}, MSP portal {msp}, customer portal {customer}"
    ));
    s
}

/// A move's summary: `MSP 300000001 moved 2 devices to 200000001`.
pub fn move_summary(msp_id: &str, to: &str, moved: i64) -> String {
    format!("MSP {msp_id} moved {} to {to}", devices(moved))
}

/// A delink's summary: `200000001 delinked from MSP 300000001`.
pub fn delink_summary(customer: &str, msp_id: &str) -> String {
    format!("{customer} delinked from MSP {msp_id}")
}

/// The filters of `ListActivity` and `ExportActivityCsv`, parsed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ActivityFilter {
    /// Only these kinds (empty: all).
    pub kinds: Vec<ActivityKind>,
    /// Only entries touching this customer.
    pub customer_knox_id: Option<String>,
    /// Only entries at or after this time.
    pub since: Option<OffsetDateTime>,
    /// Only entries before this time.
    pub until: Option<OffsetDateTime>,
}

impl ActivityFilter {
    /// The kinds as the column spells them (all kinds when none was asked for).
    pub fn kinds_db(&self) -> Vec<&'static str> {
        let kinds: &[ActivityKind] = if self.kinds.is_empty() {
            &ActivityKind::ALL
        } else {
            &self.kinds
        };
        kinds.iter().map(|k| k.as_db()).collect()
    }
}

/// Where a page of the activity log ends: its last entry's time and ID (newest first).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActivityCursor {
    /// The last entry's time, as Unix nanoseconds (exact, unlike a float).
    pub at: i128,
    /// The last entry's ID.
    pub id: String,
}

impl ActivityCursor {
    /// The cursor after `entry`.
    pub fn after(entry: &Activity) -> Self {
        ActivityCursor {
            at: entry.occurred_at.unix_timestamp_nanos(),
            id: entry.activity_id.clone(),
        }
    }

    /// The cursor's time.
    ///
    /// # Errors
    /// A time out of range (a token this list did not issue).
    pub fn time(&self) -> Result<OffsetDateTime, time::error::ComponentRange> {
        OffsetDateTime::from_unix_timestamp_nanos(self.at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_are_grouped_by_thousands() {
        assert_eq!(grouped(0), "0");
        assert_eq!(grouped(999), "999");
        assert_eq!(grouped(1000), "1,000");
        assert_eq!(grouped(1_000_000), "1,000,000");
        assert_eq!(grouped(-12_345), "-12,345");
    }

    #[test]
    fn summaries_say_what_happened_in_the_domains_words() {
        assert_eq!(
            upload_summary("200000001", "PO-1", 998, 2),
            "uploaded 998 devices to 200000001 (order PO-1); 2 rejected"
        );
        assert_eq!(
            upload_summary("200000001", "", 1, 0),
            "uploaded 1 device to 200000001"
        );
        use PortalProgress::{NotApplicable, Pending, Removed};
        assert_eq!(
            deletion_summary(3, 1, [Removed, NotApplicable, Pending]),
            "deleted 3 devices (1 not found); reseller portal removed, MSP portal not applicable, customer portal pending"
        );
        assert_eq!(
            deletion_summary(1, 0, [Removed; 3]),
            "deleted 1 device; reseller portal removed, MSP portal removed, customer portal removed"
        );
    }

    #[test]
    fn kinds_round_trip_through_the_column() {
        for kind in ActivityKind::ALL {
            assert_eq!(ActivityKind::from_db(kind.as_db()), Some(kind));
        }
    }
}
