//! The gRPC edge of customer-service: authorise, parse, call the repository, convert.

mod convert;

use reseller_kit::auth::{Principal, Role};
use reseller_kit::ids::{KnoxId, ResellerId};
use reseller_kit::{ApiError, FieldViolations, Reason, Refusal, paging, text};
use reseller_proto::v1::{
    self as pb, account_service_server::AccountService, customer_service_server::CustomerService,
};
use tonic::{Request, Response, Status};

use crate::domain::{
    AccountKind, ApprovalRequest, CompanyName, Country, Customer, CustomerError, CustomerReference,
    InternalReference, NewAccount,
};
use crate::postgres::{self, Repository};

/// `reseller.v1.AccountService` and `reseller.v1.CustomerService`.
#[derive(Debug, Clone)]
pub struct CustomerApi {
    repo: Repository,
}

impl CustomerApi {
    /// The API over `repo`.
    pub fn new(repo: Repository) -> Self {
        Self { repo }
    }

    /// ApproveReseller and RevokeReseller: the calling account's decision about a reseller.
    async fn decide(
        &self,
        principal: &Principal,
        reseller_id: &str,
        request: ApprovalRequest,
    ) -> Result<Response<pb::ResellerApproval>, Status> {
        let (knox_id, kind) = deciding_account(principal)?;
        let reseller =
            ResellerId::parse(reseller_id).map_err(|e| ApiError::invalid("reseller_id", e))?;
        let approval = self
            .repo
            .decide(&knox_id, kind, &reseller, request)
            .await
            .map_err(ApiError::from)?;
        Ok(Response::new(approval.into()))
    }
}

/// The reason (and so the gRPC code) of each refusal (CONTRACT.md "Errors" and
/// "Additions"), with the objects it names as `ErrorInfo.metadata`.
impl From<CustomerError> for ApiError {
    fn from(err: CustomerError) -> Self {
        let message = err.to_string();
        let refusal = match &err {
            CustomerError::AccountNotFound(knox_id) => {
                Refusal::new(Reason::AccountNotFound, message).with("knox_id", knox_id)
            }
            CustomerError::CustomerNotFound(knox_id) => {
                Refusal::new(Reason::CustomerNotFound, message).with("knox_id", knox_id)
            }
            CustomerError::AccountExists(knox_id) => {
                Refusal::new(Reason::AccountAlreadyRegistered, message).with("knox_id", knox_id)
            }
            CustomerError::CustomerExists(knox_id) => {
                Refusal::new(Reason::CustomerAlreadyAdded, message).with("knox_id", knox_id)
            }
            CustomerError::NotApproved {
                knox_id,
                reseller_id,
            } => Refusal::new(Reason::ApprovalNotGiven, message)
                .with("knox_id", knox_id)
                .with("reseller_id", reseller_id),
        };
        refusal.into()
    }
}

/// The answer of the calls about one of a reseller's customers.
fn customer_answer(
    customer: Result<Customer, postgres::Error>,
) -> Result<Response<pb::Customer>, Status> {
    let customer = customer.map_err(ApiError::from)?;
    Ok(Response::new(customer.into()))
}

fn knox_id_field(field: &str, value: &str) -> Result<KnoxId, ApiError> {
    KnoxId::parse(value).map_err(|e| ApiError::invalid(field, e))
}

/// The reference an AddCustomer or UpdateInternalReference call gives: the calling
/// reseller and who acts for it, and the request's `knox_id` and `internal_reference` (picked by `fields`),
/// parsed together so one answer names both.
fn customer_reference<T>(
    request: &Request<T>,
    fields: impl FnOnce(&T) -> (&str, &str),
) -> Result<CustomerReference, ApiError> {
    let principal = Principal::of(request)?;
    let reseller_id = principal.reseller()?;
    let (knox_id, reference) = fields(request.get_ref());
    let mut v = FieldViolations::new();
    let knox_id = v.check("knox_id", KnoxId::parse(knox_id));
    let reference = v.check_field(InternalReference::parse("internal_reference", reference));
    v.finish()?;
    Ok(CustomerReference {
        reseller_id,
        knox_id: knox_id.expect("checked"),
        reference: reference.expect("checked"),
        actor: principal.actor().to_owned(),
    })
}

/// The cursor of a customer-portal page token (device ID, upload ID). A token is the
/// caller's input like any field: one whose device ID holds a NUL or another control
/// character was not issued by this list (stored IDs never hold one), and PostgreSQL
/// would refuse the NUL, so it is refused here as a bad `page_token`.
fn device_cursor(token: &str) -> Result<Option<(String, uuid::Uuid)>, ApiError> {
    match paging::decode_token::<(String, uuid::Uuid)>(token)? {
        Some((device_id, _)) if !text::is_plain(&device_id) => Err(ApiError::invalid(
            "page_token",
            "is not a token this list issued",
        )),
        after => Ok(after),
    }
}

/// The account an approving principal speaks for: customers approve as customers, MSPs
/// as MSPs.
fn deciding_account(principal: &Principal) -> Result<(KnoxId, AccountKind), ApiError> {
    let knox_id = principal.account(&[Role::Customer, Role::Msp])?;
    let kind = if principal.role == Role::Msp {
        AccountKind::Msp
    } else {
        AccountKind::Customer
    };
    Ok((knox_id, kind))
}

#[tonic::async_trait]
impl AccountService for CustomerApi {
    async fn register_account(
        &self,
        request: Request<pb::RegisterAccountRequest>,
    ) -> Result<Response<pb::Account>, Status> {
        Principal::of(&request)?.require(&[Role::Admin])?;
        let req = request.into_inner();
        let mut v = FieldViolations::new();
        let knox_id = v.check("knox_id", KnoxId::parse(&req.knox_id));
        let kind = v.check(
            "kind",
            AccountKind::try_from(req.kind).map_err(|e| e.to_string()),
        );
        let company_name = v.check_field(CompanyName::parse_required(
            "company_name",
            &req.company_name,
        ));
        let country = v.check("country", Country::parse(&req.country));
        v.finish()?;
        let new = NewAccount {
            knox_id: knox_id.expect("checked"),
            kind: kind.expect("checked"),
            company_name: company_name.expect("checked"),
            country: country.expect("checked"),
        };
        let account = self
            .repo
            .register_account(new)
            .await
            .map_err(ApiError::from)?;
        Ok(Response::new(account.into()))
    }

    async fn get_account(
        &self,
        request: Request<pb::GetAccountRequest>,
    ) -> Result<Response<pb::Account>, Status> {
        Principal::of(&request)?.require(&[Role::Admin])?;
        let knox_id = knox_id_field("knox_id", &request.get_ref().knox_id)?;
        let account = self.repo.account(&knox_id).await.map_err(ApiError::from)?;
        Ok(Response::new(account.into()))
    }
}

#[tonic::async_trait]
impl CustomerService for CustomerApi {
    async fn add_customer(
        &self,
        request: Request<pb::AddCustomerRequest>,
    ) -> Result<Response<pb::Customer>, Status> {
        let entry = customer_reference(&request, |r| (&r.knox_id, &r.internal_reference))?;
        customer_answer(self.repo.add_customer(&entry).await)
    }

    async fn update_internal_reference(
        &self,
        request: Request<pb::UpdateInternalReferenceRequest>,
    ) -> Result<Response<pb::Customer>, Status> {
        let entry = customer_reference(&request, |r| (&r.knox_id, &r.internal_reference))?;
        customer_answer(self.repo.update_reference(&entry).await)
    }

    async fn get_customer(
        &self,
        request: Request<pb::GetCustomerRequest>,
    ) -> Result<Response<pb::Customer>, Status> {
        let reseller = Principal::of(&request)?.reseller()?;
        let knox_id = knox_id_field("knox_id", &request.get_ref().knox_id)?;
        customer_answer(self.repo.customer(&reseller, &knox_id).await)
    }

    async fn approve_reseller(
        &self,
        request: Request<pb::ApproveResellerRequest>,
    ) -> Result<Response<pb::ResellerApproval>, Status> {
        let reseller_id = &request.get_ref().reseller_id;
        self.decide(
            Principal::of(&request)?,
            reseller_id,
            ApprovalRequest::Approve,
        )
        .await
    }

    async fn revoke_reseller(
        &self,
        request: Request<pb::RevokeResellerRequest>,
    ) -> Result<Response<pb::ResellerApproval>, Status> {
        let reseller_id = &request.get_ref().reseller_id;
        self.decide(
            Principal::of(&request)?,
            reseller_id,
            ApprovalRequest::Revoke,
        )
        .await
    }

    async fn list_my_devices(
        &self,
        request: Request<pb::ListMyDevicesRequest>,
    ) -> Result<Response<pb::ListMyDevicesResponse>, Status> {
        let holder = Principal::of(&request)?.account(&[Role::Customer])?;
        let req = request.get_ref();
        let limit = paging::page_size(req.page_size)?;
        let after = device_cursor(&req.page_token)?;
        let mut devices = self
            .repo
            .portal_devices(&holder, after, limit + 1)
            .await
            .map_err(ApiError::from)?;
        let next_page_token =
            paging::finish_page(&mut devices, limit, |d| (d.device_id.clone(), d.upload_id));
        Ok(Response::new(pb::ListMyDevicesResponse {
            devices: devices.into_iter().map(Into::into).collect(),
            next_page_token,
        }))
    }
}
