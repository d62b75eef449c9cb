//! Who may link, change, delink and move to a customer (DOMAIN.md "MSPs and their
//! customers" and "Who may do what"), decided from the customer's live link (read under
//! the customer's lock) and the accounts' kinds, with no I/O.
//!
//! A customer is linked to at most one MSP. An MSP sees only its own links: another
//! MSP's link answers exactly as no link ([`MspError::LinkNotFound`]), except when
//! linking, where "linked elsewhere" is the answer the caller can act on.

use reseller_kit::ids::KnoxId;

use super::{Link, Mode, MspError};

/// An account's kind, as customer-service registered it (the kit's one definition).
pub use reseller_kit::accounts::AccountKind;

/// The caller of an MSP call must be a registered MSP account; `kind` is its account's
/// kind, `None` when unregistered.
///
/// # Errors
/// [`MspError::NotAnMsp`] otherwise.
pub fn check_msp(caller: &KnoxId, kind: Option<AccountKind>) -> Result<(), MspError> {
    match kind {
        Some(AccountKind::Msp) => Ok(()),
        _ => Err(MspError::NotAnMsp(caller.to_string())),
    }
}

/// Only a registered customer account can be linked (an MSP is never managed).
///
/// # Errors
/// [`MspError::AccountNotFound`] when `customer` is unregistered,
/// [`MspError::NotACustomer`] when it is an MSP.
pub fn check_linkable(customer: &KnoxId, kind: Option<AccountKind>) -> Result<(), MspError> {
    match kind {
        Some(AccountKind::Customer) => Ok(()),
        Some(AccountKind::Msp) => Err(MspError::NotACustomer(customer.to_string())),
        None => Err(MspError::AccountNotFound(customer.to_string())),
    }
}

/// `msp` may link `customer` only while the customer has no live link.
///
/// # Errors
/// [`MspError::AlreadyLinked`] when `msp` links it already,
/// [`MspError::LinkedElsewhere`] when another MSP does.
pub fn check_link(msp: &KnoxId, customer: &KnoxId, live: Option<&Link>) -> Result<(), MspError> {
    match live {
        None => Ok(()),
        Some(link) if link.msp_id == msp.as_str() => {
            Err(MspError::AlreadyLinked(customer.to_string()))
        }
        Some(_) => Err(MspError::LinkedElsewhere(customer.to_string())),
    }
}

/// The live link by which `msp` manages `customer`: what `SetJointlyManaged`, an MSP's
/// delink and the MSP portal of one customer act on.
///
/// # Errors
/// [`MspError::LinkNotFound`] when the customer has no live link, or one to another MSP.
pub fn managed_by<'a>(
    msp: &KnoxId,
    customer: &KnoxId,
    live: Option<&'a Link>,
) -> Result<&'a Link, MspError> {
    live.filter(|link| link.msp_id == msp.as_str())
        .ok_or_else(|| MspError::LinkNotFound {
            msp_id: msp.to_string(),
            customer: customer.to_string(),
        })
}

/// `msp` moves devices only to a customer it links.
///
/// # Errors
/// [`MspError::TargetNotLinked`] otherwise.
pub fn check_move_target(
    msp: &KnoxId,
    target: &KnoxId,
    live: Option<&Link>,
) -> Result<(), MspError> {
    managed_by(msp, target, live)
        .map(|_| ())
        .map_err(|_| MspError::TargetNotLinked(target.to_string()))
}

impl Mode {
    /// `SetJointlyManaged`: the mode to switch to, or `None` when the link is jointly
    /// managed already (nothing changes, nothing is published). Fully managed →
    /// jointly managed is allowed at any time; the way back is not.
    pub fn to_jointly_managed(self) -> Option<Mode> {
        match self {
            Mode::JointlyManaged => None,
            Mode::FullyManaged | Mode::Delinked => Some(Mode::JointlyManaged),
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

/// Who asks to end a link: the MSP, or the customer itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delinker {
    /// An MSP account (role `msp`): it delinks its own customers.
    Msp(KnoxId),
    /// A customer account (role `customer`): it delinks itself only.
    Customer(KnoxId),
}

/// `DelinkCustomer`: end the live link of `customer`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DelinkRequest {
    /// Who asks.
    pub by: Delinker,
    /// The customer to delink.
    pub customer: KnoxId,
    /// The MSP the link is with, when the caller names it (`msp_id`, optional): an MSP
    /// may name only itself; a customer names the MSP it leaves.
    pub msp_id: Option<KnoxId>,
}

impl DelinkRequest {
    /// Decides the request against the customer's live link: the link to end.
    ///
    /// # Errors
    /// [`MspError::LinkNotFound`] when the caller may not see a link to end: an MSP
    /// naming another MSP or not linking the customer, a customer delinking another
    /// account, having no link, or naming another MSP than its own. The message names the
    /// MSP the caller named (an MSP caller naming none: itself).
    /// [`MspError::FullyManaged`] when the link is fully managed.
    pub fn decide<'a>(&self, live: Option<&'a Link>) -> Result<&'a Link, MspError> {
        let named = self.msp_id.as_ref().map_or("", KnoxId::as_str);
        let not_found = || MspError::LinkNotFound {
            msp_id: named.to_owned(),
            customer: self.customer.to_string(),
        };
        let link = match &self.by {
            Delinker::Msp(me) => {
                if self.msp_id.as_ref().is_some_and(|given| given != me) {
                    return Err(not_found());
                }
                managed_by(me, &self.customer, live)?
            }
            Delinker::Customer(me) => {
                let link = live
                    .filter(|_| *me == self.customer)
                    .ok_or_else(not_found)?;
                if !named.is_empty() && named != link.msp_id {
                    return Err(not_found());
                }
                link
            }
        };
        check_delink(link.mode, self.customer.as_str())?;
        Ok(link)
    }
}

#[cfg(test)]
mod tests {
    use time::OffsetDateTime;

    use super::*;

    const MSP: &str = "980000001";
    const OTHER_MSP: &str = "980000002";
    const CUSTOMER: &str = "970000001";
    const OTHER_CUSTOMER: &str = "970000002";

    fn knox(id: &str) -> KnoxId {
        KnoxId::parse(id).unwrap()
    }

    fn link(msp: &str, mode: Mode) -> Link {
        Link {
            msp_id: msp.into(),
            customer_knox_id: CUSTOMER.into(),
            mode,
            since: OffsetDateTime::UNIX_EPOCH,
        }
    }

    /// The `msp_id` a `LinkNotFound` names, or the error itself when it is another.
    fn not_found_names(err: MspError) -> String {
        match err {
            MspError::LinkNotFound { msp_id, customer } => {
                assert_eq!(customer, CUSTOMER);
                msp_id
            }
            other => panic!("not LinkNotFound: {other:?}"),
        }
    }

    #[test]
    fn only_a_registered_msp_calls_as_an_msp() {
        assert!(check_msp(&knox(MSP), Some(AccountKind::Msp)).is_ok());
        for kind in [Some(AccountKind::Customer), None] {
            assert!(matches!(
                check_msp(&knox(MSP), kind),
                Err(MspError::NotAnMsp(id)) if id == MSP
            ));
        }
    }

    #[test]
    fn only_a_registered_customer_account_is_linked() {
        let customer = knox(CUSTOMER);
        assert!(check_linkable(&customer, Some(AccountKind::Customer)).is_ok());
        assert!(matches!(
            check_linkable(&customer, Some(AccountKind::Msp)),
            Err(MspError::NotACustomer(_))
        ));
        assert!(matches!(
            check_linkable(&customer, None),
            Err(MspError::AccountNotFound(_))
        ));
    }

    #[test]
    fn a_customer_is_linked_to_at_most_one_msp() {
        let (msp, customer) = (knox(MSP), knox(CUSTOMER));
        assert!(check_link(&msp, &customer, None).is_ok());
        let mine = link(MSP, Mode::JointlyManaged);
        assert!(matches!(
            check_link(&msp, &customer, Some(&mine)),
            Err(MspError::AlreadyLinked(_))
        ));
        let theirs = link(OTHER_MSP, Mode::FullyManaged);
        assert!(matches!(
            check_link(&msp, &customer, Some(&theirs)),
            Err(MspError::LinkedElsewhere(_))
        ));
    }

    #[test]
    fn an_msp_acts_only_on_its_own_links() {
        let (msp, customer) = (knox(MSP), knox(CUSTOMER));
        let mine = link(MSP, Mode::FullyManaged);
        assert_eq!(managed_by(&msp, &customer, Some(&mine)).unwrap(), &mine);
        let theirs = link(OTHER_MSP, Mode::FullyManaged);
        for live in [None, Some(&theirs)] {
            let err = managed_by(&msp, &customer, live).unwrap_err();
            assert_eq!(not_found_names(err), MSP);
        }
    }

    #[test]
    fn devices_move_only_to_a_customer_the_msp_links() {
        let (msp, target) = (knox(MSP), knox(CUSTOMER));
        let mine = link(MSP, Mode::FullyManaged);
        assert!(check_move_target(&msp, &target, Some(&mine)).is_ok());
        let theirs = link(OTHER_MSP, Mode::JointlyManaged);
        for live in [None, Some(&theirs)] {
            assert!(matches!(
                check_move_target(&msp, &target, live),
                Err(MspError::TargetNotLinked(id)) if id == CUSTOMER
            ));
        }
    }

    #[test]
    fn fully_managed_becomes_jointly_managed_and_never_back() {
        assert_eq!(
            Mode::FullyManaged.to_jointly_managed(),
            Some(Mode::JointlyManaged)
        );
        assert_eq!(Mode::JointlyManaged.to_jointly_managed(), None);
    }

    #[test]
    fn only_jointly_managed_customers_can_be_delinked() {
        assert!(matches!(
            check_delink(Mode::FullyManaged, "1"),
            Err(MspError::FullyManaged(_))
        ));
        assert!(check_delink(Mode::JointlyManaged, "1").is_ok());
    }

    fn delink(by: Delinker, customer: &str, msp_id: Option<&str>) -> DelinkRequest {
        DelinkRequest {
            by,
            customer: knox(customer),
            msp_id: msp_id.map(knox),
        }
    }

    #[test]
    fn an_msp_delinks_its_own_jointly_managed_customer() {
        let live = link(MSP, Mode::JointlyManaged);
        for named in [None, Some(MSP)] {
            let request = delink(Delinker::Msp(knox(MSP)), CUSTOMER, named);
            assert_eq!(request.decide(Some(&live)).unwrap(), &live);
        }
    }

    #[test]
    fn an_msp_naming_another_msp_finds_no_link() {
        let live = link(MSP, Mode::JointlyManaged);
        let request = delink(Delinker::Msp(knox(MSP)), CUSTOMER, Some(OTHER_MSP));
        let err = request.decide(Some(&live)).unwrap_err();
        assert_eq!(not_found_names(err), OTHER_MSP);
    }

    #[test]
    fn an_msp_delinking_a_customer_it_does_not_link_finds_no_link() {
        let theirs = link(OTHER_MSP, Mode::JointlyManaged);
        for live in [None, Some(&theirs)] {
            let request = delink(Delinker::Msp(knox(MSP)), CUSTOMER, None);
            assert_eq!(not_found_names(request.decide(live).unwrap_err()), MSP);
        }
    }

    #[test]
    fn a_customer_delinks_itself_from_its_msp() {
        let live = link(MSP, Mode::JointlyManaged);
        for named in [None, Some(MSP)] {
            let request = delink(Delinker::Customer(knox(CUSTOMER)), CUSTOMER, named);
            assert_eq!(request.decide(Some(&live)).unwrap(), &live);
        }
    }

    #[test]
    fn a_customer_delinking_another_account_finds_no_link() {
        let live = link(MSP, Mode::JointlyManaged);
        for named in [None, Some(MSP)] {
            let request = delink(Delinker::Customer(knox(OTHER_CUSTOMER)), CUSTOMER, named);
            let err = request.decide(Some(&live)).unwrap_err();
            assert_eq!(not_found_names(err), named.unwrap_or(""));
        }
    }

    #[test]
    fn a_customer_without_a_link_finds_none() {
        for named in [None, Some(MSP)] {
            let request = delink(Delinker::Customer(knox(CUSTOMER)), CUSTOMER, named);
            let err = request.decide(None).unwrap_err();
            assert_eq!(not_found_names(err), named.unwrap_or(""));
        }
    }

    #[test]
    fn a_customer_naming_another_msp_than_its_own_finds_no_link() {
        let live = link(MSP, Mode::JointlyManaged);
        let request = delink(
            Delinker::Customer(knox(CUSTOMER)),
            CUSTOMER,
            Some(OTHER_MSP),
        );
        let err = request.decide(Some(&live)).unwrap_err();
        assert_eq!(not_found_names(err), OTHER_MSP);
    }

    #[test]
    fn a_fully_managed_customer_is_delinked_by_no_one() {
        let live = link(MSP, Mode::FullyManaged);
        for by in [Delinker::Msp(knox(MSP)), Delinker::Customer(knox(CUSTOMER))] {
            let request = delink(by, CUSTOMER, None);
            assert!(matches!(
                request.decide(Some(&live)),
                Err(MspError::FullyManaged(id)) if id == CUSTOMER
            ));
        }
    }
}
