//! Conversions between protobuf and the domain, done once at the edge.

use reseller_kit::timestamp;
use reseller_proto::v1 as pb;

use crate::domain::{Account, AccountKind, Approval, Customer, CustomerStatus};
use crate::postgres::PortalDevice;

/// Domain kind → protobuf.
pub fn kind_to_proto(kind: AccountKind) -> pb::AccountKind {
    match kind {
        AccountKind::Customer => pb::AccountKind::Customer,
        AccountKind::Msp => pb::AccountKind::Msp,
    }
}

/// Protobuf kind → domain.
///
/// # Errors
/// When unspecified or unknown.
pub fn kind_from_proto(value: i32) -> Result<AccountKind, String> {
    match pb::AccountKind::try_from(value) {
        Ok(pb::AccountKind::Customer) => Ok(AccountKind::Customer),
        Ok(pb::AccountKind::Msp) => Ok(AccountKind::Msp),
        _ => Err("must be ACCOUNT_KIND_CUSTOMER or ACCOUNT_KIND_MSP".into()),
    }
}

/// Domain status → protobuf.
pub fn status_to_proto(status: CustomerStatus) -> pb::CustomerStatus {
    match status {
        CustomerStatus::PendingVerification => pb::CustomerStatus::PendingVerification,
        CustomerStatus::Active => pb::CustomerStatus::Active,
        CustomerStatus::Inactive => pb::CustomerStatus::Inactive,
    }
}

impl From<Account> for pb::Account {
    fn from(a: Account) -> Self {
        pb::Account {
            knox_id: a.knox_id,
            kind: kind_to_proto(a.kind) as i32,
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
            kind: kind_to_proto(c.account.kind) as i32,
            company_name: c.account.company_name,
            country: c.account.country,
            internal_reference: c.internal_reference,
            status: status_to_proto(c.status) as i32,
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

/// A customer-portal row → protobuf.
pub fn portal_device(d: PortalDevice) -> pb::PortalDevice {
    pb::PortalDevice {
        device_id: d.device_id,
        id_kind: i32::from(d.id_kind),
        model: d.model,
        reseller_id: d.reseller_id,
        upload_id: d.upload_id.to_string(),
        holder_knox_id: d.holder_knox_id,
        moved_by_msp: d.moved_by_msp,
        msp_id: d.msp_id,
        uploaded_at: Some(timestamp::to_proto(d.uploaded_at)),
    }
}
