//! The events customer-service publishes (through its outbox).

use reseller_kit::events::new_event;
use reseller_kit::ids::{KnoxId, ResellerId};
use reseller_kit::timestamp;
use reseller_proto::v1::{self as pb, event::Payload};
use time::OffsetDateTime;

use crate::domain::{Account, Customer, CustomerReference, CustomerStatus};

/// `account_registered`.
pub fn account_registered(account: &Account) -> pb::Event {
    new_event(
        Payload::AccountRegistered(pb::AccountRegistered {
            knox_id: account.knox_id.clone(),
            kind: pb::AccountKind::from(account.kind) as i32,
            company_name: account.company_name.clone(),
            country: account.country.clone(),
            created_at: Some(timestamp::to_proto(account.created_at)),
        }),
        account.created_at,
    )
}

/// `customer_added`, carrying the account so projections need nothing else, and who
/// added it (`actor`: the person the reseller's token names, else the reseller ID).
pub fn customer_added(customer: &Customer, actor: &str) -> pb::Event {
    new_event(
        Payload::CustomerAdded(pb::CustomerAdded {
            reseller_id: customer.reseller_id.to_string(),
            knox_id: customer.account.knox_id.clone(),
            kind: pb::AccountKind::from(customer.account.kind) as i32,
            company_name: customer.account.company_name.clone(),
            country: customer.account.country.clone(),
            internal_reference: customer.internal_reference.clone(),
            status: pb::CustomerStatus::from(customer.status) as i32,
            added_at: Some(timestamp::to_proto(customer.added_at)),
            reference_revision: customer.reference_revision,
            status_revision: customer.status_revision,
            actor: actor.to_owned(),
        }),
        customer.added_at,
    )
}

/// `customer_reference_updated`: the reference `entry` gives, now at `revision`, edited
/// by `entry.actor`.
pub fn customer_reference_updated(entry: &CustomerReference, revision: i64) -> pb::Event {
    new_event(
        Payload::CustomerReferenceUpdated(pb::CustomerReferenceUpdated {
            reseller_id: entry.reseller_id.to_string(),
            knox_id: entry.knox_id.to_string(),
            internal_reference: entry.reference.as_str().to_owned(),
            revision,
            actor: entry.actor.clone(),
        }),
        OffsetDateTime::now_utc(),
    )
}

/// `customer_status_changed`.
pub fn customer_status_changed(
    reseller_id: &ResellerId,
    knox_id: &KnoxId,
    status: CustomerStatus,
    revision: i64,
) -> pb::Event {
    new_event(
        Payload::CustomerStatusChanged(pb::CustomerStatusChanged {
            reseller_id: reseller_id.to_string(),
            knox_id: knox_id.to_string(),
            status: pb::CustomerStatus::from(status) as i32,
            revision,
        }),
        OffsetDateTime::now_utc(),
    )
}
