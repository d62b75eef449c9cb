//! The projection: applies events to the reseller views. Each event is checked here, then
//! written by `postgres` inside the consumer's transaction.
//!
//! Content that can never apply (a malformed ID, an unspecified enum) is poison and goes
//! to the dead-letter subject. A reference update for a customer that is not projected
//! yet can only mean its `customer_added` is still being retried (customer-service
//! publishes the one only after the other), so it is retried too.

use reseller_kit::events::ReceivedEvent;
use reseller_kit::ids::{KnoxId, ResellerId};
use reseller_kit::inbox::{ApplyError, EventHandler};
use reseller_kit::timestamp;
use reseller_proto::v1::{self as pb, event::Payload};
use sqlx::PgConnection;

use crate::convert;
use crate::domain::{Account, AddedCustomer};
use crate::postgres;

/// The reseller views' event handler (the `reporting` consumer's).
#[derive(Debug, Clone, Default)]
pub struct Projection;

impl EventHandler for Projection {
    async fn apply(&self, tx: &mut PgConnection, event: &ReceivedEvent) -> Result<(), ApplyError> {
        match &event.payload {
            Payload::AccountRegistered(e) => {
                let account = account(&e.knox_id, e.kind, &e.company_name, &e.country)?;
                postgres::upsert_account(tx, &account).await?;
            }
            Payload::CustomerAdded(e) => {
                let customer = added_customer(e)?;
                postgres::add_customer(tx, &customer).await?;
            }
            Payload::CustomerReferenceUpdated(e) => {
                let reseller_id = reseller_id(&e.reseller_id)?;
                let knox_id = knox_id("knox_id", &e.knox_id)?;
                let reference = text("internal_reference", &e.internal_reference, false)?;
                if !postgres::update_reference(tx, &reseller_id, &knox_id, &reference).await? {
                    return Err(ApplyError::Failed(anyhow::anyhow!(
                        "customer {knox_id} of reseller {reseller_id} is not projected yet \
                         (its customer_added has not been applied)"
                    )));
                }
            }
            Payload::CustomerStatusChanged(e) => {
                let reseller_id = reseller_id(&e.reseller_id)?;
                let knox_id = knox_id("knox_id", &e.knox_id)?;
                let status = convert::status_from_proto(e.status).map_err(ApplyError::Poison)?;
                postgres::change_status(tx, &reseller_id, &knox_id, status, event.occurred_at)
                    .await?;
            }
            // Counters, placements and receipts arrive with issues #3 and #4.
            Payload::DevicesUploaded(_)
            | Payload::DevicesDeleted(_)
            | Payload::MspCustomerLinked(_)
            | Payload::MspManagementModeChanged(_)
            | Payload::MspCustomerDelinked(_)
            | Payload::MspDevicesMoved(_)
            | Payload::PortalDeletionApplied(_) => {}
        }
        Ok(())
    }
}

fn added_customer(e: &pb::CustomerAdded) -> Result<AddedCustomer, ApplyError> {
    Ok(AddedCustomer {
        reseller_id: reseller_id(&e.reseller_id)?,
        account: account(&e.knox_id, e.kind, &e.company_name, &e.country)?,
        internal_reference: text("internal_reference", &e.internal_reference, false)?,
        status: convert::status_from_proto(e.status).map_err(ApplyError::Poison)?,
        added_at: timestamp::from_proto(e.added_at.as_ref()),
    })
}

fn account(
    knox: &str,
    kind: i32,
    company_name: &str,
    country: &str,
) -> Result<Account, ApplyError> {
    Ok(Account {
        knox_id: knox_id("knox_id", knox)?,
        kind: convert::kind_from_proto(kind).map_err(ApplyError::Poison)?,
        company_name: text("company_name", company_name, true)?,
        country: text("country", country, true)?,
    })
}

fn knox_id(field: &str, value: &str) -> Result<KnoxId, ApplyError> {
    KnoxId::parse(value).map_err(|e| ApplyError::Poison(format!("{field} {e}")))
}

fn reseller_id(value: &str) -> Result<ResellerId, ApplyError> {
    ResellerId::parse(value).map_err(|e| ApplyError::Poison(format!("reseller_id {e}")))
}

/// Free text as customer-service stores it: trimmed, without control characters (the
/// search text relies on that), and present when `required`.
fn text(field: &str, value: &str, required: bool) -> Result<String, ApplyError> {
    let value = value.trim();
    if required && value.is_empty() {
        return Err(ApplyError::Poison(format!("{field} is required")));
    }
    if value.chars().any(char::is_control) {
        return Err(ApplyError::Poison(format!(
            "{field} contains control characters"
        )));
    }
    Ok(value.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn poison<T: std::fmt::Debug>(r: Result<T, ApplyError>) -> String {
        match r {
            Err(ApplyError::Poison(reason)) => reason,
            other => panic!("expected poison, got {other:?}"),
        }
    }

    fn added() -> pb::CustomerAdded {
        pb::CustomerAdded {
            reseller_id: "acme".into(),
            knox_id: "123456".into(),
            kind: pb::AccountKind::Customer as i32,
            company_name: "Acme GmbH".into(),
            country: "DE".into(),
            internal_reference: "PO-7".into(),
            status: pb::CustomerStatus::Active as i32,
            added_at: None,
        }
    }

    #[test]
    fn well_formed_events_parse() {
        let customer = added_customer(&added()).unwrap();
        assert_eq!(customer.reseller_id.as_str(), "acme");
        assert_eq!(customer.account.knox_id.as_str(), "123456");
        assert_eq!(customer.internal_reference, "PO-7");
    }

    #[test]
    fn content_that_can_never_apply_is_poison() {
        let mut e = added();
        e.knox_id = "12ab".into();
        assert!(poison(added_customer(&e)).starts_with("knox_id"));
        let mut e = added();
        e.reseller_id = "a b".into();
        assert!(poison(added_customer(&e)).starts_with("reseller_id"));
        let mut e = added();
        e.status = 0;
        poison(added_customer(&e));
        let mut e = added();
        e.kind = 0;
        poison(added_customer(&e));
        let mut e = added();
        e.internal_reference = "a\u{1f}b".into();
        assert!(poison(added_customer(&e)).starts_with("internal_reference"));
        let mut e = added();
        e.company_name = " ".into();
        assert!(poison(added_customer(&e)).starts_with("company_name"));
    }
}
