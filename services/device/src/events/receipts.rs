//! Folds `portal_deletion_applied` receipts into deletions; the receipt that completes a
//! deletion publishes `deletion_completed` with each portal's final state (the activity
//! log's deletion entry shows them: DOMAIN.md "Finding devices, history and the activity
//! log").

use reseller_kit::events::{ReceivedEvent, uuid_field};
use reseller_kit::inbox::{ApplyError, Change, EventHandler};
use reseller_kit::one_statement::Params;
use reseller_proto::v1::event::Payload;

use crate::domain::PortalState;
use crate::postgres::{OUTBOX, record_receipt};

/// The receipts consumer's handler.
#[derive(Debug, Clone, Default)]
pub struct Receipts;

impl EventHandler for Receipts {
    fn change(&self, event: ReceivedEvent, _params: &mut Params) -> Result<Change, ApplyError> {
        let Payload::PortalDeletionApplied(receipt) = &event.payload else {
            return Ok(Change::Ignored);
        };
        let deletion_id = uuid_field("deletion_id", &receipt.deletion_id)?;
        if !(1..=3).contains(&receipt.portal) {
            return Err(ApplyError::Poison(format!(
                "unknown portal {}",
                receipt.portal
            )));
        }
        let state = match PortalState::from_i16(receipt.state as i16) {
            PortalState::Pending => {
                return Err(ApplyError::Poison("a receipt cannot be pending".into()));
            }
            state => state,
        };
        let (portal, part) = (receipt.portal as i16, receipt.part as i32);
        Ok(Change::in_transaction(move |tx| {
            Box::pin(async move {
                let recorded = record_receipt(tx, deletion_id, portal, part, state).await?;
                if let Some(states) = recorded.completed {
                    let completed = crate::events::deletion_completed(
                        deletion_id,
                        &recorded.reseller_id,
                        states,
                    );
                    OUTBOX.enqueue(tx, &[completed]).await?;
                }
                Ok(())
            })
        }))
    }
}
