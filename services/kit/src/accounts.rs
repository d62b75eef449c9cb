//! The vocabulary of accounts and reseller customers (DOMAIN.md "Parties and accounts",
//! "Customer status"), defined once for every service that stores or shows it
//! (customer-service owns accounts and customers, reporting-service projects them,
//! msp-link-service asks customer-service for an account's kind): the kinds of account,
//! the reseller-customer status, and the free-text fields' maximums. Every conversion
//! sits beside its type: protobuf ↔ domain (`TryFrom<i32>` / `From`) and the database
//! spelling (`as_db`, `from_db`).
//!
//! A value this version does not know is an error, never a guess: a request's field is
//! `INVALID_ARGUMENT`, an event's a poison message, a stored value a decode error.

use reseller_proto::v1 as pb;

use crate::text::FreeText;

/// An account's company name: 1 to 200 characters of free text; required, so parse it
/// with [`FreeText::parse_required`].
pub type CompanyName = FreeText<200>;

/// A reseller's internal customer reference: 0 to 100 characters of free text (DOMAIN.md
/// "Parties and accounts"); "" means none.
pub type InternalReference = FreeText<100>;

/// Whether an account is an ordinary customer or an MSP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AccountKind {
    /// A company that buys devices.
    Customer,
    /// A managed service provider.
    Msp,
}

impl AccountKind {
    /// The database spelling (the `kind` columns' CHECK allows only these).
    pub fn as_db(self) -> &'static str {
        match self {
            AccountKind::Customer => "CUSTOMER",
            AccountKind::Msp => "MSP",
        }
    }

    /// Reads the database spelling.
    ///
    /// # Errors
    /// [`UnknownValue`] for any other text.
    pub fn from_db(stored: &str) -> Result<Self, UnknownValue> {
        match stored {
            "CUSTOMER" => Ok(AccountKind::Customer),
            "MSP" => Ok(AccountKind::Msp),
            other => Err(UnknownValue::stored("account kind", other)),
        }
    }
}

impl From<AccountKind> for pb::AccountKind {
    fn from(kind: AccountKind) -> Self {
        match kind {
            AccountKind::Customer => pb::AccountKind::Customer,
            AccountKind::Msp => pb::AccountKind::Msp,
        }
    }
}

/// A `reseller.v1.AccountKind` as the wire carries it (an `i32`).
impl TryFrom<i32> for AccountKind {
    type Error = UnknownValue;

    fn try_from(value: i32) -> Result<Self, UnknownValue> {
        match pb::AccountKind::try_from(value) {
            Ok(pb::AccountKind::Customer) => Ok(AccountKind::Customer),
            Ok(pb::AccountKind::Msp) => Ok(AccountKind::Msp),
            _ => Err(UnknownValue::wire(
                "ACCOUNT_KIND_CUSTOMER or ACCOUNT_KIND_MSP",
                value,
            )),
        }
    }
}

/// A reseller customer's status (DOMAIN.md "Customer status").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CustomerStatus {
    /// Added; the account has not approved the reseller.
    PendingVerification,
    /// The account approved the reseller.
    Active,
    /// The account revoked its approval.
    Inactive,
}

impl CustomerStatus {
    /// The status that an account's approval decision gives: none yet → pending,
    /// approved → active, revoked → inactive.
    pub fn from_approval(approved: Option<bool>) -> Self {
        match approved {
            None => CustomerStatus::PendingVerification,
            Some(true) => CustomerStatus::Active,
            Some(false) => CustomerStatus::Inactive,
        }
    }

    /// The database spelling (the `status` columns' CHECK allows only these).
    pub fn as_db(self) -> &'static str {
        match self {
            CustomerStatus::PendingVerification => "PENDING_VERIFICATION",
            CustomerStatus::Active => "ACTIVE",
            CustomerStatus::Inactive => "INACTIVE",
        }
    }

    /// Reads the database spelling.
    ///
    /// # Errors
    /// [`UnknownValue`] for any other text.
    pub fn from_db(stored: &str) -> Result<Self, UnknownValue> {
        match stored {
            "PENDING_VERIFICATION" => Ok(CustomerStatus::PendingVerification),
            "ACTIVE" => Ok(CustomerStatus::Active),
            "INACTIVE" => Ok(CustomerStatus::Inactive),
            other => Err(UnknownValue::stored("customer status", other)),
        }
    }

    /// The label the CSV downloads show (DOMAIN.md "Customer status").
    pub fn label(self) -> &'static str {
        match self {
            CustomerStatus::PendingVerification => "Pending customer verification",
            CustomerStatus::Active => "Active",
            CustomerStatus::Inactive => "Inactive",
        }
    }
}

impl From<CustomerStatus> for pb::CustomerStatus {
    fn from(status: CustomerStatus) -> Self {
        match status {
            CustomerStatus::PendingVerification => pb::CustomerStatus::PendingVerification,
            CustomerStatus::Active => pb::CustomerStatus::Active,
            CustomerStatus::Inactive => pb::CustomerStatus::Inactive,
        }
    }
}

/// A `reseller.v1.CustomerStatus` as the wire carries it (an `i32`).
impl TryFrom<i32> for CustomerStatus {
    type Error = UnknownValue;

    fn try_from(value: i32) -> Result<Self, UnknownValue> {
        match pb::CustomerStatus::try_from(value) {
            Ok(pb::CustomerStatus::PendingVerification) => Ok(CustomerStatus::PendingVerification),
            Ok(pb::CustomerStatus::Active) => Ok(CustomerStatus::Active),
            Ok(pb::CustomerStatus::Inactive) => Ok(CustomerStatus::Inactive),
            _ => Err(UnknownValue::wire(
                "a CUSTOMER_STATUS other than UNSPECIFIED",
                value,
            )),
        }
    }
}

/// A value of one of these enums that this version does not know: unspecified or
/// unknown on the wire, or a stored spelling the schema does not allow. Its message is a
/// description without the field's name (`must be ACCOUNT_KIND_CUSTOMER or
/// ACCOUNT_KIND_MSP, got 0`): the caller puts the field in front, as a request's field
/// violation or a poison event's reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct UnknownValue(String);

impl UnknownValue {
    fn wire(expected: &str, got: i32) -> Self {
        Self(format!("must be {expected}, got {got}"))
    }

    fn stored(what: &str, got: &str) -> Self {
        Self(format!(
            "holds {:?}, which is not a stored {what}",
            crate::text::echo(got)
        ))
    }
}

/// A stored value the schema should not allow is a decode failure of its column: the
/// query fails (`INTERNAL` for a request, a retry for a consumer) rather than read a
/// guess.
impl From<UnknownValue> for sqlx::Error {
    fn from(err: UnknownValue) -> Self {
        sqlx::Error::Decode(Box::new(err))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KINDS: [AccountKind; 2] = [AccountKind::Customer, AccountKind::Msp];
    const STATUSES: [CustomerStatus; 3] = [
        CustomerStatus::PendingVerification,
        CustomerStatus::Active,
        CustomerStatus::Inactive,
    ];

    #[test]
    fn kinds_round_trip_through_the_wire_and_the_database() {
        for kind in KINDS {
            let wire = pb::AccountKind::from(kind) as i32;
            assert_eq!(AccountKind::try_from(wire).unwrap(), kind);
            assert_eq!(AccountKind::from_db(kind.as_db()).unwrap(), kind);
        }
    }

    #[test]
    fn statuses_round_trip_through_the_wire_and_the_database() {
        for status in STATUSES {
            let wire = pb::CustomerStatus::from(status) as i32;
            assert_eq!(CustomerStatus::try_from(wire).unwrap(), status);
            assert_eq!(CustomerStatus::from_db(status.as_db()).unwrap(), status);
        }
    }

    #[test]
    fn unspecified_and_unknown_values_are_errors_not_customers() {
        assert_eq!(
            AccountKind::try_from(0).unwrap_err().to_string(),
            "must be ACCOUNT_KIND_CUSTOMER or ACCOUNT_KIND_MSP, got 0"
        );
        assert!(AccountKind::try_from(42).is_err());
        assert!(AccountKind::from_db("").is_err());
        assert!(AccountKind::from_db("msp").is_err());
        assert_eq!(
            CustomerStatus::try_from(0).unwrap_err().to_string(),
            "must be a CUSTOMER_STATUS other than UNSPECIFIED, got 0"
        );
        assert!(CustomerStatus::try_from(42).is_err());
        assert!(CustomerStatus::from_db("DELETED").is_err());
    }

    #[test]
    fn status_follows_the_accounts_decision() {
        assert_eq!(
            CustomerStatus::from_approval(None),
            CustomerStatus::PendingVerification
        );
        assert_eq!(
            CustomerStatus::from_approval(Some(true)),
            CustomerStatus::Active
        );
        assert_eq!(
            CustomerStatus::from_approval(Some(false)),
            CustomerStatus::Inactive
        );
    }

    #[test]
    fn references_are_trimmed_bounded_and_printable() {
        let reference = |s: &str| InternalReference::parse("internal_reference", s);
        assert_eq!(reference("  PO-7 ").unwrap().as_str(), "PO-7");
        assert_eq!(reference("").unwrap().as_str(), "");
        assert!(
            reference(&"é".repeat(100)).is_ok(),
            "limit counts characters"
        );
        assert!(reference(&"x".repeat(101)).is_err());
        assert!(reference("a\u{7}b").is_err());
        assert!(reference("a\nb").is_err());
    }

    #[test]
    fn company_names_are_required_and_bounded() {
        let name = |s: &str| CompanyName::parse_required("company_name", s);
        assert!(name("   ").is_err());
        assert_eq!(name(" Acme GmbH ").unwrap().as_str(), "Acme GmbH");
        assert!(name(&"x".repeat(200)).is_ok());
        assert!(name(&"x".repeat(201)).is_err());
    }

    #[test]
    fn labels_are_the_csv_downloads() {
        let labels: Vec<_> = STATUSES.iter().map(|s| s.label()).collect();
        assert_eq!(
            labels,
            ["Pending customer verification", "Active", "Inactive"]
        );
    }
}
