//! The rules of accounts, reseller customers and approvals (DOMAIN.md), free of I/O.

mod approval;

pub use approval::{ApprovalRejected, ApprovalRequest};
pub use reseller_kit::accounts::{AccountKind, CompanyName, CustomerStatus, InternalReference};
pub use reseller_kit::country::Country;

use reseller_kit::ids::{KnoxId, ResellerId};
use time::OffsetDateTime;

/// An account to register.
#[derive(Debug, Clone)]
pub struct NewAccount {
    /// Its Knox ID.
    pub knox_id: KnoxId,
    /// Customer or MSP.
    pub kind: AccountKind,
    /// Its company name.
    pub company_name: CompanyName,
    /// Its country.
    pub country: Country,
}

/// A reseller's internal reference for one of its customers, as AddCustomer and
/// UpdateInternalReference give it (DOMAIN.md "Parties and accounts").
#[derive(Debug, Clone)]
pub struct CustomerReference {
    /// The reseller.
    pub reseller_id: ResellerId,
    /// The customer's account.
    pub knox_id: KnoxId,
    /// The reseller's reference for it ("" for none).
    pub reference: InternalReference,
    /// Who acts: the person the reseller's token names, else the reseller ID
    /// (`reseller_kit::auth::Principal::actor`).
    pub actor: String,
}

/// A registered account.
#[derive(Debug, Clone)]
pub struct Account {
    /// Its Knox ID.
    pub knox_id: String,
    /// Customer or MSP.
    pub kind: AccountKind,
    /// Its company name.
    pub company_name: String,
    /// ISO 3166-1 alpha-2.
    pub country: String,
    /// When it was registered.
    pub created_at: OffsetDateTime,
}

/// An account as one reseller's customer.
#[derive(Debug, Clone)]
pub struct Customer {
    /// The reseller that added it.
    pub reseller_id: ResellerId,
    /// The account.
    pub account: Account,
    /// The reseller's internal reference ("" when none).
    pub internal_reference: String,
    /// Bumped by every change of the reference (1 when added).
    pub reference_revision: i64,
    /// Bumped by every change of the account's decision (0: never decided).
    pub status_revision: i64,
    /// The reseller-customer status.
    pub status: CustomerStatus,
    /// When the reseller added it.
    pub added_at: OffsetDateTime,
}

/// An account's decision about a reseller.
#[derive(Debug, Clone)]
pub struct Approval {
    /// The reseller.
    pub reseller_id: ResellerId,
    /// The deciding account.
    pub knox_id: KnoxId,
    /// Approved now?
    pub approved: bool,
}

/// Why customer-service refuses a command (a rule, never an I/O failure); mapped to gRPC
/// codes in `grpc`.
#[derive(Debug, thiserror::Error)]
pub enum CustomerError {
    /// No registered account with that Knox ID (or not of the caller's kind).
    #[error("account {0} not found: check the Knox ID; a platform admin registers accounts")]
    AccountNotFound(String),
    /// The Knox ID is registered already.
    #[error("account {0} is already registered")]
    AccountExists(String),
    /// The reseller has not added that account.
    #[error("customer {0} not found: add the account as your customer first")]
    CustomerNotFound(String),
    /// The reseller added that account already.
    #[error("customer {0} has already been added")]
    CustomerExists(String),
    /// Revoking an approval that was never given.
    #[error(
        "account {knox_id} has not approved reseller {reseller_id}; there is nothing to revoke"
    )]
    NotApproved {
        /// The account.
        knox_id: String,
        /// The reseller.
        reseller_id: String,
    },
}
