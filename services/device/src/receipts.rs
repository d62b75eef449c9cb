//! Folds `portal_deletion_applied` receipts into deletions (issue #3 fills the fold).

use reseller_kit::events::ReceivedEvent;
use reseller_kit::inbox::{ApplyError, EventHandler};
use reseller_proto::v1::event::Payload;
use sqlx::PgConnection;

/// The receipts consumer's handler.
#[derive(Debug, Clone, Default)]
pub struct Receipts;

impl EventHandler for Receipts {
    async fn apply(&self, _tx: &mut PgConnection, event: &ReceivedEvent) -> Result<(), ApplyError> {
        match &event.payload {
            // No deletions exist before issue #3; nothing to fold yet.
            Payload::PortalDeletionApplied(_) => Ok(()),
            _ => Ok(()),
        }
    }
}
