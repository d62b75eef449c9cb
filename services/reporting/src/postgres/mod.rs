//! reporting-service's repository: the projection's writes (inside the consumer's
//! transaction, see `write`, and `msp` for links, moves and re-placements) and the views'
//! reads (see `read`).

mod activity;
mod lookups;
mod msp;
mod read;
mod write;

pub use activity::{
    ActivityFact, activity_page, record_activity, relist_deletions, resellers_concerned,
};
pub use lookups::{Located, delinks_after, record_delink, record_moves, record_secondary_ids};

pub use msp::{
    Affected, lock_msp_placements, move_registrations, replace_registrations, upsert_link,
};
pub use read::Repository;
pub use write::{
    add_customer, apply_deltas, awaits_upload, change_status, copy_registrations,
    delete_registrations_ctes, insert_registrations, update_reference, upsert_account,
};

use reseller_kit::outbox::Outbox;

/// The service's outbox: its deletion receipts (`portal_deletion_applied`, portal
/// RESELLER), enqueued by the statement that applies the deletion.
pub const OUTBOX: Outbox = Outbox::new(crate::SCHEMA);

#[cfg(test)]
mod tests;
