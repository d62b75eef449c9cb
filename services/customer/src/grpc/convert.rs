//! Conversions between protobuf and the domain, done once at the edge.

use reseller_kit::timestamp;
use reseller_proto::v1 as pb;

use crate::domain::{Account, Approval, Customer};

impl From<Account> for pb::Account {
    fn from(a: Account) -> Self {
        pb::Account {
            knox_id: a.knox_id,
            kind: pb::AccountKind::from(a.kind) as i32,
            company_name: a.company_name,
            country: a.country,
            created_at: Some(timestamp::to_proto(a.created_at)),
        }
    }
}

impl From<Customer> for pb::Customer {
    fn from(c: Customer) -> Self {
        pb::Customer {
            knox_id: c.account.knox_id,
            kind: pb::AccountKind::from(c.account.kind) as i32,
            company_name: c.account.company_name,
            country: c.account.country,
            internal_reference: c.internal_reference,
            status: pb::CustomerStatus::from(c.status) as i32,
            added_at: Some(timestamp::to_proto(c.added_at)),
        }
    }
}

impl From<Approval> for pb::ResellerApproval {
    fn from(a: Approval) -> Self {
        pb::ResellerApproval {
            reseller_id: a.reseller_id.to_string(),
            knox_id: a.knox_id.to_string(),
            approved: a.approved,
        }
    }
}
