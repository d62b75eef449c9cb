//! The gRPC edge of msp-link-service: authorise, parse, call the repository, convert.

pub(crate) mod accounts;

use reseller_kit::auth::{Principal, Role};
use reseller_kit::ids::KnoxId;
use reseller_kit::{ApiError, FieldViolations, Reason, Refusal, paging, text, timestamp};
use reseller_proto::v1::{self as pb, msp_service_server::MspService};
use serde::de::DeserializeOwned;
use tonic::{Request, Response, Status};

use crate::domain::{
    DelinkRequest, Delinker, Link, Mode, MoveAnswer, MoveRequest, MspError, RejectedBecause,
    check_linkable, check_msp, managed_by,
};
use crate::postgres::Repository;
use accounts::AccountDirectory;

/// `reseller.v1.MspService`.
#[derive(Debug, Clone)]
pub struct MspApi {
    repo: Repository,
    accounts: AccountDirectory,
}

impl MspApi {
    /// The API over `repo`, asking `accounts` what accounts are.
    pub fn new(repo: Repository, accounts: AccountDirectory) -> Self {
        Self { repo, accounts }
    }

    /// The caller as an MSP account that exists.
    async fn calling_msp<T>(&self, request: &Request<T>) -> Result<KnoxId, ApiError> {
        let msp = Principal::of(request)?.account(&[Role::Msp])?;
        check_msp(&msp, self.accounts.kind(msp.as_str()).await?)?;
        Ok(msp)
    }
}

/// The reason (and so the gRPC code) of each refusal (CONTRACT.md "Errors" and
/// "Additions"), with the accounts it names as `ErrorInfo.metadata`.
impl From<MspError> for ApiError {
    fn from(err: MspError) -> Self {
        let message = err.to_string();
        let refusal = match &err {
            MspError::AccountNotFound(knox_id) => {
                Refusal::new(Reason::AccountNotFound, message).with("knox_id", knox_id)
            }
            MspError::LinkNotFound { msp_id, customer } => {
                let refusal =
                    Refusal::new(Reason::LinkNotFound, message).with("customer_knox_id", customer);
                if msp_id.is_empty() {
                    refusal
                } else {
                    refusal.with("msp_id", msp_id)
                }
            }
            MspError::AlreadyLinked(customer) => {
                Refusal::new(Reason::CustomerAlreadyLinked, message)
                    .with("customer_knox_id", customer)
            }
            MspError::NotACustomer(knox_id) => {
                Refusal::new(Reason::AccountIsMsp, message).with("knox_id", knox_id)
            }
            MspError::NotAnMsp(knox_id) => {
                Refusal::new(Reason::NotAnMsp, message).with("knox_id", knox_id)
            }
            MspError::LinkedElsewhere(customer) => {
                Refusal::new(Reason::LinkedToAnotherMsp, message).with("customer_knox_id", customer)
            }
            MspError::FullyManaged(customer) => {
                Refusal::new(Reason::FullyManagedCannotDelink, message)
                    .with("customer_knox_id", customer)
            }
            MspError::TargetNotLinked(customer) => {
                Refusal::new(Reason::CustomerNotLinked, message).with("customer_knox_id", customer)
            }
        };
        refusal.into()
    }
}

fn knox(field: &str, value: &str) -> Result<KnoxId, ApiError> {
    KnoxId::parse(value).map_err(|e| ApiError::invalid(field, e))
}

/// A page token's cursor, with `plain` saying whether its text could have come from
/// this list. A token is the caller's input like any field: one whose text holds a NUL
/// or another control character was not issued here (stored IDs never hold one), and
/// PostgreSQL would refuse the NUL, so it is refused as a bad `page_token`.
fn cursor<T: DeserializeOwned>(
    token: &str,
    plain: impl Fn(&T) -> bool,
) -> Result<Option<T>, ApiError> {
    match paging::decode_token::<T>(token)? {
        Some(after) if !plain(&after) => Err(ApiError::invalid(
            "page_token",
            "is not a token this list issued",
        )),
        after => Ok(after),
    }
}

fn move_to_proto(answer: MoveAnswer) -> pb::MoveDevicesResponse {
    let rejections: Vec<pb::MoveRejection> = answer
        .rejected
        .into_iter()
        .map(|rejected| pb::MoveRejection {
            reason: match rejected.because {
                RejectedBecause::NotADeviceId => pb::MoveRejectionReason::NotADeviceId,
                RejectedBecause::NotHeld => pb::MoveRejectionReason::NotHeld,
            }
            .into(),
            device_id: rejected.device_id,
        })
        .collect();
    pb::MoveDevicesResponse {
        moved_device_ids: answer.moved,
        rejected_device_ids: rejections.iter().map(|r| r.device_id.clone()).collect(),
        rejections,
        moved_count: answer.moved_count,
        rejected_count: answer.rejected_count,
        rejected_truncated: answer.rejected_truncated,
    }
}

fn link_to_proto(link: Link) -> pb::ManagedCustomer {
    pb::ManagedCustomer {
        msp_id: link.msp_id,
        customer_knox_id: link.customer_knox_id,
        mode: i32::from(link.mode.as_i16()),
        since: Some(timestamp::to_proto(link.since)),
    }
}

#[tonic::async_trait]
impl MspService for MspApi {
    async fn link_customer(
        &self,
        request: Request<pb::LinkCustomerRequest>,
    ) -> Result<Response<pb::ManagedCustomer>, Status> {
        Principal::of(&request)?.require(&[Role::Msp])?;
        let req = request.get_ref();
        let mut v = reseller_kit::FieldViolations::new();
        let customer = v.check("customer_knox_id", KnoxId::parse(&req.customer_knox_id));
        let mode = v.check("mode", Mode::for_new_link(req.mode));
        v.finish()?;
        let (customer, mode) = (customer.expect("checked"), mode.expect("checked"));
        let msp = self.calling_msp(&request).await?;
        check_linkable(&customer, self.accounts.kind(customer.as_str()).await?)
            .map_err(ApiError::from)?;
        let link = self
            .repo
            .link(&msp, &customer, mode)
            .await
            .map_err(ApiError::from)?;
        Ok(Response::new(link_to_proto(link)))
    }

    async fn set_jointly_managed(
        &self,
        request: Request<pb::SetJointlyManagedRequest>,
    ) -> Result<Response<pb::ManagedCustomer>, Status> {
        Principal::of(&request)?.require(&[Role::Msp])?;
        let customer = knox("customer_knox_id", &request.get_ref().customer_knox_id)?;
        let msp = self.calling_msp(&request).await?;
        let link = self
            .repo
            .set_jointly_managed(&msp, &customer)
            .await
            .map_err(ApiError::from)?;
        Ok(Response::new(link_to_proto(link)))
    }

    async fn delink_customer(
        &self,
        request: Request<pb::DelinkCustomerRequest>,
    ) -> Result<Response<pb::ManagedCustomer>, Status> {
        let principal = Principal::of(&request)?
            .require(&[Role::Msp, Role::Customer])?
            .clone();
        // `msp_id` is optional; given, it must be a Knox ID (it is echoed in answers).
        let req = request.get_ref();
        let mut v = FieldViolations::new();
        let customer = v.check("customer_knox_id", KnoxId::parse(&req.customer_knox_id));
        let msp_id = match req.msp_id.trim() {
            "" => None,
            named => v.check("msp_id", KnoxId::parse(named)),
        };
        v.finish()?;
        let by = match principal.role {
            Role::Msp => Delinker::Msp(principal.account(&[Role::Msp])?),
            _ => Delinker::Customer(principal.account(&[Role::Customer])?),
        };
        let delink = DelinkRequest {
            by,
            customer: customer.expect("checked"),
            msp_id,
        };
        let link = self
            .repo
            .delink(&delink, &principal.subject)
            .await
            .map_err(ApiError::from)?;
        Ok(Response::new(link_to_proto(link)))
    }

    async fn move_devices(
        &self,
        request: Request<pb::MoveDevicesRequest>,
    ) -> Result<Response<pb::MoveDevicesResponse>, Status> {
        Principal::of(&request)?.require(&[Role::Msp])?;
        let req = request.get_ref();
        let mut v = FieldViolations::new();
        let target = v.check(
            "to_customer_knox_id",
            KnoxId::parse(&req.to_customer_knox_id),
        );
        let named = v.check("device_ids", MoveRequest::parse(&req.device_ids));
        v.finish()?;
        let (target, named) = (target.expect("checked"), named.expect("checked"));
        let msp = self.calling_msp(&request).await?;
        let held = self
            .repo
            .move_devices(&msp, &target, &named.keys())
            .await
            .map_err(ApiError::from)?;
        Ok(Response::new(move_to_proto(named.answer(&held))))
    }

    async fn list_managed_customers(
        &self,
        request: Request<pb::ListManagedCustomersRequest>,
    ) -> Result<Response<pb::ListManagedCustomersResponse>, Status> {
        let msp = Principal::of(&request)?.account(&[Role::Msp])?;
        let req = request.get_ref();
        let limit = paging::page_size(req.page_size)?;
        let after = cursor(&req.page_token, |knox: &String| KnoxId::parse(knox).is_ok())?;
        let mut links = self
            .repo
            .links(&msp, after, limit + 1)
            .await
            .map_err(ApiError::from)?;
        let next_page_token =
            paging::finish_page(&mut links, limit, |l| l.customer_knox_id.clone());
        Ok(Response::new(pb::ListManagedCustomersResponse {
            customers: links.into_iter().map(link_to_proto).collect(),
            next_page_token,
        }))
    }

    async fn list_msp_devices(
        &self,
        request: Request<pb::ListMspDevicesRequest>,
    ) -> Result<Response<pb::ListMspDevicesResponse>, Status> {
        let msp = Principal::of(&request)?.account(&[Role::Msp])?;
        let req = request.get_ref();
        let customer = match req.customer_knox_id.trim() {
            "" => None,
            id => Some(knox("customer_knox_id", id)?),
        };
        let limit = paging::page_size(req.page_size)?;
        let after = cursor(&req.page_token, |(device_id, _): &(String, uuid::Uuid)| {
            text::is_plain(device_id)
        })?;
        if let Some(customer) = &customer {
            // Only a customer this MSP links (someone else's answers as if unknown).
            let linked = self.repo.link_of(customer).await.map_err(ApiError::from)?;
            managed_by(&msp, customer, linked.as_ref()).map_err(ApiError::from)?;
        }
        let mut devices = self
            .repo
            .portal(&msp, customer.as_ref(), after, limit + 1)
            .await
            .map_err(ApiError::from)?;
        let next_page_token =
            paging::finish_page(&mut devices, limit, |d| (d.device_id.clone(), d.upload_id));
        Ok(Response::new(pb::ListMspDevicesResponse {
            devices: devices.into_iter().map(Into::into).collect(),
            next_page_token,
        }))
    }
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;
    use crate::domain::{MAX_MOVE_IDS, MAX_REJECTED_LISTED, Rejected};

    /// A default gRPC client takes answers up to 4 MiB.
    const DEFAULT_CLIENT_LIMIT: usize = 4 * 1024 * 1024;

    #[test]
    fn the_largest_move_answer_fits_a_default_client() {
        // Every named ID moved, each a 32-character serial (the longest canonical
        // identifier), and the rejected list full of 64-character echoes of 4-byte
        // characters (the longest echo).
        let answer = MoveAnswer {
            moved: vec!["S".repeat(32); MAX_MOVE_IDS],
            rejected: vec![
                Rejected {
                    device_id: "📱".repeat(64),
                    because: RejectedBecause::NotADeviceId,
                };
                MAX_REJECTED_LISTED
            ],
            moved_count: MAX_MOVE_IDS as i64,
            rejected_count: MAX_MOVE_IDS as i64,
            rejected_truncated: true,
        };
        let size = move_to_proto(answer).encoded_len();
        assert!(size < DEFAULT_CLIENT_LIMIT, "{size} bytes");
    }
}
