//! reporting-service's repository: the projection's writes (inside the consumer's
//! transaction, see `write`) and the views' reads (see `read`).

mod read;
mod write;

pub use read::Repository;
pub use write::{add_customer, change_status, update_reference, upsert_account};

use reseller_kit::outbox::Outbox;

/// The service's outbox (reporting publishes nothing yet; the relay runs regardless).
pub const OUTBOX: Outbox = Outbox::new(crate::SCHEMA);
