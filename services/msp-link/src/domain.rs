//! The rules of MSP links and moves (DOMAIN.md "MSPs and their customers"), free of I/O.

use time::OffsetDateTime;

/// How an MSP manages a linked customer (`reseller.v1.ManagementMode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// The MSP manages it alone; it cannot be delinked.
    FullyManaged,
    /// Managed together with the customer; it can be delinked.
    JointlyManaged,
    /// The link has ended.
    Delinked,
}

impl Mode {
    /// The database (and protobuf) number.
    pub fn as_i16(self) -> i16 {
        match self {
            Mode::FullyManaged => 1,
            Mode::JointlyManaged => 2,
            Mode::Delinked => 3,
        }
    }

    /// Reads [`Mode::as_i16`].
    pub fn from_i16(value: i16) -> Self {
        match value {
            1 => Mode::FullyManaged,
            2 => Mode::JointlyManaged,
            _ => Mode::Delinked,
        }
    }

    /// The mode a new link may take.
    ///
    /// # Errors
    /// For unspecified, delinked or unknown values.
    pub fn for_new_link(value: i32) -> Result<Self, String> {
        match value {
            1 => Ok(Mode::FullyManaged),
            2 => Ok(Mode::JointlyManaged),
            _ => Err(
                "must be MANAGEMENT_MODE_FULLY_MANAGED or MANAGEMENT_MODE_JOINTLY_MANAGED".into(),
            ),
        }
    }
}

/// A link between an MSP and a customer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    /// The MSP's Knox ID.
    pub msp_id: String,
    /// The customer's Knox ID.
    pub customer_knox_id: String,
    /// How it is managed.
    pub mode: Mode,
    /// Since when (the link, the mode change, or the delink).
    pub since: OffsetDateTime,
}

/// What can go wrong in msp-link-service's commands.
#[derive(Debug, thiserror::Error)]
pub enum MspError {
    /// The customer account is unknown (or the caller's own account is).
    #[error("account {0} not found")]
    AccountNotFound(String),
    /// Only customer accounts can be managed.
    #[error("account {0} is an MSP; an MSP account cannot be a managed customer")]
    NotACustomer(String),
    /// The caller is not an MSP account.
    #[error("account {0} is not a registered MSP")]
    NotAnMsp(String),
    /// The customer is linked to this MSP already.
    #[error("customer {0} is already linked to you")]
    AlreadyLinked(String),
    /// The customer is linked to another MSP.
    #[error("customer {0} is already managed by another MSP; it must be delinked there first")]
    LinkedElsewhere(String),
    /// No live link between this MSP and customer (or not the caller's).
    #[error("no link between MSP {msp_id} and customer {customer}")]
    LinkNotFound {
        /// The MSP.
        msp_id: String,
        /// The customer.
        customer: String,
    },
    /// Delinking a fully managed customer.
    #[error(
        "customer {0} is fully managed and cannot be delinked; switch it to jointly managed (SetJointlyManaged) first"
    )]
    FullyManaged(String),
    /// Moving devices to a customer this MSP does not link.
    #[error(
        "customer {0} is not linked to you (or was delinked); devices can be moved only to customers you link"
    )]
    TargetNotLinked(String),
    /// A dependency failed.
    #[error(transparent)]
    Api(#[from] reseller_kit::ApiError),
    /// The database failed.
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

impl From<MspError> for reseller_kit::ApiError {
    fn from(err: MspError) -> Self {
        use reseller_kit::ApiError;
        match err {
            MspError::AccountNotFound(_) | MspError::LinkNotFound { .. } => {
                ApiError::NotFound(err.to_string())
            }
            MspError::AlreadyLinked(_) => ApiError::AlreadyExists(err.to_string()),
            MspError::NotACustomer(_)
            | MspError::NotAnMsp(_)
            | MspError::LinkedElsewhere(_)
            | MspError::FullyManaged(_)
            | MspError::TargetNotLinked(_) => ApiError::FailedPrecondition(err.to_string()),
            MspError::Api(e) => e,
            MspError::Database(e) => e.into(),
        }
    }
}

/// Whether a link in `mode` may be delinked.
///
/// # Errors
/// [`MspError::FullyManaged`] for a fully managed customer.
pub fn check_delink(mode: Mode, customer: &str) -> Result<(), MspError> {
    match mode {
        Mode::FullyManaged => Err(MspError::FullyManaged(customer.to_owned())),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_jointly_managed_customers_can_be_delinked() {
        assert!(matches!(
            check_delink(Mode::FullyManaged, "1"),
            Err(MspError::FullyManaged(_))
        ));
        assert!(check_delink(Mode::JointlyManaged, "1").is_ok());
    }

    #[test]
    fn new_links_are_fully_or_jointly_managed() {
        assert_eq!(Mode::for_new_link(1), Ok(Mode::FullyManaged));
        assert_eq!(Mode::for_new_link(2), Ok(Mode::JointlyManaged));
        assert!(Mode::for_new_link(3).is_err());
        assert!(Mode::for_new_link(0).is_err());
    }

    #[test]
    fn the_error_for_a_fully_managed_delink_says_what_to_do() {
        let message = MspError::FullyManaged("42".into()).to_string();
        assert!(message.contains("jointly managed"), "{message}");
    }
}
