//! Which accounts an upload may target (DOMAIN.md "Devices and uploads": devices are
//! uploaded only to a reseller's active customers), decided over a port to the account
//! directory, so the rule is tested without gRPC or a database.

use std::future::Future;

use reseller_kit::ids::KnoxId;

use super::Target;

/// A reseller customer's status as the account directory reports it (DOMAIN.md
/// "Customer status").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CustomerStatus {
    /// Added; the account has not approved the reseller yet.
    PendingVerification,
    /// The account approved the reseller.
    Active,
    /// The account revoked its approval.
    Inactive,
}

/// One of the caller's customers, as the directory knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Customer {
    /// `reseller.v1.AccountKind` of the account.
    pub kind: i32,
    /// Whether the account approved the reseller.
    pub status: CustomerStatus,
}

/// The directory could not be asked (a transport failure, a timeout): the reason, for
/// the caller to retry later.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct DirectoryUnavailable(pub String);

/// The port: the reseller's customers, as the one calling sees them (the directory
/// applies its own tenancy to that caller).
pub trait AccountDirectory {
    /// The caller's customer `knox_id`; `None` when the caller has not added it.
    ///
    /// # Errors
    /// [`DirectoryUnavailable`] when the directory cannot answer.
    fn customer(
        &self,
        knox_id: &KnoxId,
    ) -> impl Future<Output = Result<Option<Customer>, DirectoryUnavailable>> + Send;
}

/// Why an upload may not go to a target.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetRefused {
    /// The reseller has not added the account.
    #[error("customer {0} not found: add it as a customer before uploading devices to it")]
    NotAdded(KnoxId),
    /// The account has not approved the reseller yet.
    #[error(
        "customer {0} has not approved this reseller yet (pending customer verification); devices can be uploaded only to active customers, so the customer must approve you first"
    )]
    PendingVerification(KnoxId),
    /// The account revoked its approval.
    #[error(
        "customer {0} revoked its approval of this reseller (inactive); devices can be uploaded only to active customers, so the customer must approve you again first"
    )]
    Inactive(KnoxId),
    /// The directory could not be asked.
    #[error("customer-service is unavailable ({0}); retry later")]
    Unavailable(DirectoryUnavailable),
}

/// The rule: an upload goes only to a customer the reseller added and that is `ACTIVE`.
///
/// # Errors
/// [`TargetRefused`] naming why `knox_id` may not receive devices.
pub fn decide_target(knox_id: &KnoxId, found: Option<Customer>) -> Result<Target, TargetRefused> {
    let customer = found.ok_or_else(|| TargetRefused::NotAdded(knox_id.clone()))?;
    match customer.status {
        CustomerStatus::Active => Ok(Target {
            knox_id: knox_id.clone(),
            kind: customer.kind,
        }),
        CustomerStatus::PendingVerification => {
            Err(TargetRefused::PendingVerification(knox_id.clone()))
        }
        CustomerStatus::Inactive => Err(TargetRefused::Inactive(knox_id.clone())),
    }
}

/// Asks `directory` about `knox_id` (read-your-writes: an upload right after approval
/// works) and applies [`decide_target`].
///
/// # Errors
/// [`TargetRefused`]; [`TargetRefused::Unavailable`] when the directory cannot answer.
pub async fn active_target(
    directory: &impl AccountDirectory,
    knox_id: &KnoxId,
) -> Result<Target, TargetRefused> {
    let found = directory
        .customer(knox_id)
        .await
        .map_err(TargetRefused::Unavailable)?;
    decide_target(knox_id, found)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    /// A directory held in memory; `None` answers as unavailable.
    struct Directory(Option<HashMap<&'static str, Customer>>);

    impl AccountDirectory for Directory {
        async fn customer(
            &self,
            knox_id: &KnoxId,
        ) -> Result<Option<Customer>, DirectoryUnavailable> {
            let customers = self
                .0
                .as_ref()
                .ok_or_else(|| DirectoryUnavailable("connection refused".into()))?;
            Ok(customers.get(knox_id.as_str()).cloned())
        }
    }

    fn directory() -> Directory {
        let customer = |status| Customer { kind: 1, status };
        Directory(Some(HashMap::from([
            ("100001", customer(CustomerStatus::Active)),
            ("100002", customer(CustomerStatus::PendingVerification)),
            ("100003", customer(CustomerStatus::Inactive)),
        ])))
    }

    fn knox(id: &str) -> KnoxId {
        KnoxId::parse(id).unwrap()
    }

    #[tokio::test]
    async fn only_an_added_active_customer_receives_devices() {
        let target = active_target(&directory(), &knox("100001")).await.unwrap();
        assert_eq!((target.knox_id.as_str(), target.kind), ("100001", 1));
        for (id, refused) in [
            ("100002", TargetRefused::PendingVerification(knox("100002"))),
            ("100003", TargetRefused::Inactive(knox("100003"))),
            ("100004", TargetRefused::NotAdded(knox("100004"))),
        ] {
            assert_eq!(
                active_target(&directory(), &knox(id)).await.unwrap_err(),
                refused
            );
        }
    }

    #[tokio::test]
    async fn an_unreachable_directory_refuses_for_now() {
        let refused = active_target(&Directory(None), &knox("100001"))
            .await
            .unwrap_err();
        assert_eq!(
            refused.to_string(),
            "customer-service is unavailable (connection refused); retry later"
        );
    }

    #[test]
    fn refusals_say_what_to_do() {
        let id = knox("100002");
        assert!(
            TargetRefused::NotAdded(id.clone())
                .to_string()
                .contains("add it as a customer")
        );
        assert!(
            TargetRefused::PendingVerification(id)
                .to_string()
                .contains("pending customer verification")
        );
    }
}
