//! The approval state machine (DOMAIN.md "Customer status"): an account approves or
//! revokes a reseller itself, whether or not the reseller added it. The account's
//! standing decision is the reseller customer's status: none yet is
//! `PENDING_VERIFICATION`, approved is `ACTIVE`, revoked is `INACTIVE`.

use super::CustomerStatus;

/// What an account asks about a reseller: `ApproveReseller` or `RevokeReseller`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApprovalRequest {
    /// Approve the reseller (it may then upload devices to the account).
    Approve,
    /// Revoke an approval given before.
    Revoke,
}

/// Why an approval request is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApprovalRejected {
    /// Revoking an approval that was never given (the status is still pending).
    NothingToRevoke,
}

impl ApprovalRequest {
    /// Whether the account approves the reseller once the request is through.
    pub fn approves(self) -> bool {
        self == ApprovalRequest::Approve
    }

    /// Decides the request against the account's current decision, given as the status
    /// it makes: the new status to record and publish, or `None` when the request
    /// repeats the current decision (nothing changes, nothing is published).
    ///
    /// | current \ request        | approve  | revoke                 |
    /// |--------------------------|----------|------------------------|
    /// | `PENDING_VERIFICATION`   | `ACTIVE` | refused                |
    /// | `ACTIVE`                 | none     | `INACTIVE`             |
    /// | `INACTIVE`               | `ACTIVE` | none                   |
    ///
    /// # Errors
    /// [`ApprovalRejected::NothingToRevoke`] when revoking while pending.
    pub fn decide(
        self,
        current: CustomerStatus,
    ) -> Result<Option<CustomerStatus>, ApprovalRejected> {
        match (current, self) {
            (CustomerStatus::PendingVerification, ApprovalRequest::Revoke) => {
                Err(ApprovalRejected::NothingToRevoke)
            }
            (CustomerStatus::Active, ApprovalRequest::Approve)
            | (CustomerStatus::Inactive, ApprovalRequest::Revoke) => Ok(None),
            (_, ApprovalRequest::Approve) => Ok(Some(CustomerStatus::Active)),
            (_, ApprovalRequest::Revoke) => Ok(Some(CustomerStatus::Inactive)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ApprovalRequest::{Approve, Revoke};
    use CustomerStatus::{Active, Inactive, PendingVerification};

    #[test]
    fn approving_makes_a_pending_or_inactive_customer_active() {
        assert_eq!(Approve.decide(PendingVerification), Ok(Some(Active)));
        assert_eq!(Approve.decide(Inactive), Ok(Some(Active)));
    }

    #[test]
    fn revoking_an_approval_makes_the_customer_inactive() {
        assert_eq!(Revoke.decide(Active), Ok(Some(Inactive)));
    }

    #[test]
    fn repeating_the_current_decision_changes_nothing() {
        assert_eq!(Approve.decide(Active), Ok(None));
        assert_eq!(Revoke.decide(Inactive), Ok(None));
    }

    #[test]
    fn revoking_an_approval_never_given_is_refused() {
        assert_eq!(
            Revoke.decide(PendingVerification),
            Err(ApprovalRejected::NothingToRevoke)
        );
    }

    #[test]
    fn only_approve_approves() {
        assert!(Approve.approves());
        assert!(!Revoke.approves());
    }
}
