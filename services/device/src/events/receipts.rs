//! Folds `portal_deletion_applied` receipts into deletions.

use reseller_kit::events::{ReceivedEvent, uuid_field};
use reseller_kit::inbox::{ApplyError, Change, EventHandler};
use reseller_kit::one_statement::{OneStatement, Params};
use reseller_proto::v1::event::Payload;

use crate::domain::PortalState;
use crate::postgres::record_receipt_cte;

/// The receipts consumer's handler.
#[derive(Debug, Clone, Default)]
pub struct Receipts;

impl EventHandler for Receipts {
    fn change(&self, event: ReceivedEvent, params: &mut Params) -> Result<Change, ApplyError> {
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
        let ctes = record_receipt_cte(
            params,
            deletion_id,
            receipt.portal as i16,
            receipt.part as i32,
            state,
        );
        Ok(Change::OneStatement(OneStatement { ctes, emits: None }))
    }
}
