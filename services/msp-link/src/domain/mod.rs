//! The rules of MSP links and moves (DOMAIN.md "MSPs and their customers"), free of I/O:
//! `link` decides who may link, change, delink and move to a customer; this module
//! holds the link's shape and the identifiers a move names.

mod link;

use std::collections::HashSet;

use reseller_kit::device_id::lookup_key;
use reseller_kit::text::echo;
use time::OffsetDateTime;

pub use link::{
    AccountKind, DelinkRequest, Delinker, check_delink, check_link, check_linkable,
    check_move_target, check_msp, managed_by,
};

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

/// Why msp-link-service refuses a command (a rule, never an I/O failure); mapped to gRPC
/// codes in `grpc`.
#[derive(Debug, thiserror::Error)]
pub enum MspError {
    /// The customer account is unknown (or the caller's own account is).
    #[error("account {0} not found: check the Knox ID; a platform admin registers accounts")]
    AccountNotFound(String),
    /// Only customer accounts can be managed.
    #[error(
        "account {0} is an MSP; an MSP account cannot be a managed customer, only a customer account can"
    )]
    NotACustomer(String),
    /// The caller is not an MSP account.
    #[error(
        "account {0} is not registered as an MSP; only an MSP account manages customers (a platform admin registers it as an MSP)"
    )]
    NotAnMsp(String),
    /// The customer is linked to this MSP already.
    #[error("customer {0} is already linked to you")]
    AlreadyLinked(String),
    /// The customer is linked to another MSP.
    #[error(
        "customer {0} is already managed by another MSP; the customer must leave that MSP before you can link it"
    )]
    LinkedElsewhere(String),
    /// No live link between this MSP and customer (or not the caller's).
    #[error("{}", link_not_found(msp_id, customer))]
    LinkNotFound {
        /// The MSP.
        msp_id: String,
        /// The customer.
        customer: String,
    },
    /// Delinking a fully managed customer.
    #[error(
        "customer {0} is fully managed and cannot be delinked; switch the customer to jointly managed first, then delink it"
    )]
    FullyManaged(String),
    /// Moving devices to a customer this MSP does not link.
    #[error(
        "customer {0} is not linked to you (or was delinked); devices can be moved only to customers you link, so link it first"
    )]
    TargetNotLinked(String),
}

/// The message of [`MspError::LinkNotFound`]: `msp_id` is empty when a customer
/// leaving its MSP names none.
fn link_not_found(msp_id: &str, customer: &str) -> String {
    if msp_id.is_empty() {
        format!("customer {customer} is not linked to an MSP you can see (or was delinked)")
    } else {
        format!("no link between MSP {msp_id} and customer {customer} (never linked, or delinked)")
    }
}

/// Most device IDs one `MoveDevices` call may name.
pub const MAX_MOVE_IDS: usize = 100_000;

/// Most rejected identifiers one `MoveDevices` answer lists (it counts them all).
pub const MAX_REJECTED_LISTED: usize = 1_000;

/// One identifier a move names.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Named {
    /// Its canonical form, by the one lookup rule; `None` when no device can have it.
    key: Option<String>,
    /// How the answer names it: the canonical form, or the input cut and escaped.
    shown: String,
}

/// The identifiers a `MoveDevices` request names, by the one lookup rule (DOMAIN.md
/// "Secondary identifiers"): each canonicalised like an upload, so any spelling of any
/// of a device's identifiers finds it. A string no device can have (a NUL inside, 10 kB
/// of junk) is kept only to be rejected by name; it never fails the call and never
/// reaches the database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MoveRequest {
    /// Distinct, in request order.
    named: Vec<Named>,
}

/// Why a move did not move a device (`reseller.v1.MoveRejectionReason`). A device the
/// MSP may not see reads exactly as one that does not exist (DOMAIN.md "Who may do
/// what"): unknown, another account's and deleted devices are all [`Self::NotHeld`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RejectedBecause {
    /// No device can have the identifier.
    NotADeviceId,
    /// No device the MSP holds (in its pool or at a customer it links) has it.
    NotHeld,
}

/// One identifier a move did not move.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    /// As the answer names it: the canonical form, or the input cut and escaped.
    pub device_id: String,
    /// Why.
    pub because: RejectedBecause,
}

/// What a move answers (`reseller.v1.MoveDevicesResponse`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MoveAnswer {
    /// The identifiers now held by the target (moved, or there already); complete.
    pub moved: Vec<String>,
    /// The identifiers the MSP does not hold, and why: the first
    /// [`MAX_REJECTED_LISTED`].
    pub rejected: Vec<Rejected>,
    /// Distinct identifiers moved.
    pub moved_count: i64,
    /// Distinct identifiers rejected.
    pub rejected_count: i64,
    /// `rejected` lists only the first [`MAX_REJECTED_LISTED`] of `rejected_count`.
    pub rejected_truncated: bool,
}

impl MoveRequest {
    /// Reads the request's `device_ids`: repeats (after canonicalising) and blank
    /// entries are dropped, order is kept.
    ///
    /// # Errors
    /// No identifier, more than [`MAX_MOVE_IDS`], or only blank ones.
    pub fn parse(inputs: &[String]) -> Result<Self, String> {
        if inputs.is_empty() {
            return Err("name at least one device".into());
        }
        if inputs.len() > MAX_MOVE_IDS {
            return Err(format!(
                "at most {MAX_MOVE_IDS} devices per call, got {}",
                inputs.len()
            ));
        }
        let mut keys = HashSet::new();
        // Inputs no device can have are told apart by their whole text, not by their
        // (cut) echo: two different 10 kB values are two rejected identifiers.
        let mut others = HashSet::new();
        let mut named = Vec::new();
        for input in inputs {
            let trimmed = input.trim();
            if trimmed.is_empty() {
                continue;
            }
            match lookup_key(trimmed) {
                Some(key) => {
                    if keys.insert(key.clone()) {
                        named.push(Named {
                            shown: key.clone(),
                            key: Some(key),
                        });
                    }
                }
                None => {
                    if others.insert(trimmed) {
                        named.push(Named {
                            key: None,
                            shown: echo(trimmed),
                        });
                    }
                }
            }
        }
        if named.is_empty() {
            return Err("every device ID is empty".into());
        }
        Ok(Self { named })
    }

    /// The canonical identifiers to look up, distinct.
    pub fn keys(&self) -> Vec<String> {
        self.named.iter().filter_map(|n| n.key.clone()).collect()
    }

    /// The answer, given the keys that named a device the MSP holds.
    pub fn answer(self, held: &HashSet<String>) -> MoveAnswer {
        let mut answer = MoveAnswer::default();
        for named in self.named {
            if named.key.as_ref().is_some_and(|key| held.contains(key)) {
                answer.moved.push(named.shown);
                answer.moved_count += 1;
            } else {
                if answer.rejected.len() < MAX_REJECTED_LISTED {
                    let because = match named.key {
                        None => RejectedBecause::NotADeviceId,
                        Some(_) => RejectedBecause::NotHeld,
                    };
                    answer.rejected.push(Rejected {
                        device_id: named.shown,
                        because,
                    });
                } else {
                    answer.rejected_truncated = true;
                }
                answer.rejected_count += 1;
            }
        }
        answer
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_links_are_fully_or_jointly_managed() {
        assert_eq!(Mode::for_new_link(1), Ok(Mode::FullyManaged));
        assert_eq!(Mode::for_new_link(2), Ok(Mode::JointlyManaged));
        assert!(Mode::for_new_link(3).is_err());
        assert!(Mode::for_new_link(0).is_err());
    }

    fn request(ids: &[&str]) -> MoveRequest {
        MoveRequest::parse(&ids.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
    }

    #[test]
    fn a_move_names_devices_by_the_one_lookup_rule() {
        let move_ = request(&[
            "35-588799-946533-0",
            "355887999465330",
            " r58m-1 ",
            "R5CW\u{0}10DDD",
            "\t",
            "R58M-1",
        ]);
        assert_eq!(move_.keys(), ["355887999465330", "R58M-1"]);
        let answer = move_.answer(&HashSet::from(["R58M-1".to_owned()]));
        assert_eq!(answer.moved, ["R58M-1"]);
        assert_eq!(
            answer.rejected,
            [
                Rejected {
                    device_id: "355887999465330".into(),
                    because: RejectedBecause::NotHeld,
                },
                Rejected {
                    device_id: "R5CW\\u{0}10DDD".into(),
                    because: RejectedBecause::NotADeviceId,
                },
            ]
        );
        assert_eq!((answer.moved_count, answer.rejected_count), (1, 2));
        assert!(!answer.rejected_truncated);
    }

    #[test]
    fn a_move_with_nothing_to_name_is_refused() {
        assert!(MoveRequest::parse(&[]).is_err());
        assert!(MoveRequest::parse(&[" ".into(), "\t".into()]).is_err());
        let too_many = vec!["R58M-1".to_owned(); MAX_MOVE_IDS + 1];
        assert!(
            MoveRequest::parse(&too_many)
                .unwrap_err()
                .contains("at most")
        );
    }

    #[test]
    fn different_long_junk_values_are_rejected_apart_and_echoed_cut() {
        let a = format!("{}A", "X".repeat(10_000));
        let b = format!("{}B", "X".repeat(10_000));
        let answer = MoveRequest::parse(&[a, b]).unwrap().answer(&HashSet::new());
        assert_eq!(answer.rejected_count, 2);
        assert!(
            answer
                .rejected
                .iter()
                .all(|r| r.device_id.chars().count() == 64)
        );
    }

    #[test]
    fn rejected_lists_are_capped_and_counted() {
        let ids: Vec<String> = (0..MAX_REJECTED_LISTED + 5)
            .map(|n| format!("NOPE-{n}"))
            .collect();
        let answer = MoveRequest::parse(&ids).unwrap().answer(&HashSet::new());
        assert_eq!(answer.rejected.len(), MAX_REJECTED_LISTED);
        assert_eq!(answer.rejected[0].device_id, "NOPE-0");
        assert_eq!(answer.rejected_count, (MAX_REJECTED_LISTED + 5) as i64);
        assert!(answer.rejected_truncated);
    }

    #[test]
    fn the_error_for_a_fully_managed_delink_says_what_to_do() {
        let message = MspError::FullyManaged("42".into()).to_string();
        assert!(message.contains("jointly managed"), "{message}");
        // The domain's words, never an RPC's name.
        assert!(!message.contains("SetJointlyManaged"), "{message}");
    }
}
