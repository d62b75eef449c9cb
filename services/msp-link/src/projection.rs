//! The MSP portal's view of devices, fed by device events (issue #4 fills it).

use reseller_kit::events::ReceivedEvent;
use reseller_kit::inbox::{ApplyError, EventHandler};
use sqlx::PgConnection;

/// The MSP portal consumer's handler.
#[derive(Debug, Clone, Default)]
pub struct MspPortal;

impl EventHandler for MspPortal {
    async fn apply(&self, _tx: &mut PgConnection, _event: &ReceivedEvent) -> Result<(), ApplyError> {
        // Until MSP pools exist (issue #4) there is nothing to project.
        Ok(())
    }
}
