//! The rules of the reseller views, free of I/O: statuses and kinds, the rows, the
//! search query (`search`), the list orders with their keyset cursors (`list`), where a
//! registration is placed and the counter deltas placements make (`placement`), the
//! devices of one row (`devices`), what MSP events state (`msp`), a device's history
//! (`history`) and the activity log (`activity`).

mod activity;
mod devices;
mod history;
mod list;
mod msp;
mod placement;
mod search;

pub use activity::{
    Activity, ActivityCursor, ActivityFilter, ActivityKind, PortalProgress, deletion_summary,
    delink_summary, grouped, move_summary, upload_summary,
};
pub use devices::{
    CustomerDevice, DeletedPart, DeviceKey, ListCustomerDevices, UploadSummary, UploadedDevice,
    UploadedPart,
};
pub use history::{
    DeletionFacts, DelinkFacts, DeviceFacts, HistoryEntry, HistoryKind, MoveFacts,
    RegistrationFacts, assemble,
};
pub use list::{ListCustomers, OrderBy, SortKey};
pub use msp::{LinkFact, MovedPart, MovedRegistration};
pub use placement::{
    PLACEMENT_KINDS, Placement, PlacementDelta, PlacementFacts, RegistrationGroup, StoredPlacement,
    UploadRef, merge, place, placement_kind, transfer,
};
pub use search::{MAX_QUERY_CHARS, SearchQuery};

pub use reseller_kit::accounts::{AccountKind, CustomerStatus};
use reseller_kit::ids::{KnoxId, ResellerId};
use time::OffsetDateTime;

/// What a `page_token` the list did not issue is told (kit's `paging::decode_token` says
/// the same of one that does not decode).
pub(crate) const TOKEN_NOT_ISSUED_HERE: &str = "is not a token this list issued";

/// An enrollment account, as events describe it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    /// Its Knox ID.
    pub knox_id: KnoxId,
    /// Customer or MSP.
    pub kind: AccountKind,
    /// Its company name.
    pub company_name: String,
    /// ISO 3166-1 alpha-2.
    pub country: String,
}

/// A reseller added an account (`customer_added`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddedCustomer {
    /// The reseller.
    pub reseller_id: ResellerId,
    /// The account.
    pub account: Account,
    /// The reseller's internal reference ("" when none).
    pub internal_reference: String,
    /// The reference's revision (1 when added).
    pub reference_revision: i64,
    /// The status when it was added.
    pub status: CustomerStatus,
    /// The revision of the account's decision that status reflects (0: none yet).
    pub status_revision: i64,
    /// When it was added.
    pub added_at: OffsetDateTime,
}

/// One row of a reseller's Customers page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CustomerRow {
    /// The account's Knox ID.
    pub knox_id: String,
    /// Customer or MSP.
    pub kind: AccountKind,
    /// The account's company name.
    pub company_name: String,
    /// The reseller's internal reference ("" when none).
    pub internal_reference: String,
    /// ISO 3166-1 alpha-2.
    pub country: String,
    /// The reseller-customer status.
    pub status: CustomerStatus,
    /// The newest upload placed under the row, if any.
    pub last_uploaded_at: Option<OffsetDateTime>,
    /// UPLOADS: devices in the uploads placed under the row, deleted ones included.
    pub uploaded_devices: i64,
    /// DEVICES: devices placed under the row and not deleted.
    pub devices: i64,
    /// The Knox ID of the MSP currently managing the account ("" when none).
    pub managing_msp_id: String,
}

impl CustomerRow {
    /// What the CUSTOMER ID/MSP ID column shows: the managing MSP's ID for a customer
    /// currently managed by an MSP, else the account's own Knox ID.
    pub fn display_id(&self) -> &str {
        if self.managing_msp_id.is_empty() {
            &self.knox_id
        } else {
            &self.managing_msp_id
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_id_is_the_managing_msp_when_there_is_one() {
        let mut row = CustomerRow {
            knox_id: "111111".into(),
            kind: AccountKind::Customer,
            company_name: "Acme".into(),
            internal_reference: String::new(),
            country: "DE".into(),
            status: CustomerStatus::Active,
            last_uploaded_at: None,
            uploaded_devices: 0,
            devices: 0,
            managing_msp_id: String::new(),
        };
        assert_eq!(row.display_id(), "111111");
        row.managing_msp_id = "222222".into();
        assert_eq!(row.display_id(), "222222");
    }
}
