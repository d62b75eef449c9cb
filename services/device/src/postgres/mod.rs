//! device-service's repository: uploads (`COPY` straight into the registrations, or a staged
//! exact path when an upload has duplicates; see `uploads`), deletions and
//! receipts. Every command is one transaction that also writes its events to the outbox.

mod deletions;
mod spool;
mod uploads;

pub use deletions::{DeletionSampler, record_receipt};

use reseller_kit::outbox::Outbox;
use sqlx::PgPool;

/// The service's outbox.
pub const OUTBOX: Outbox = Outbox::new(crate::SCHEMA);

/// Uploads, registrations and deletions in PostgreSQL.
#[derive(Debug, Clone)]
pub struct Repository {
    pool: PgPool,
}

impl Repository {
    /// A repository over `pool`.
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }
}
