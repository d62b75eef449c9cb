//! The gRPC edge of device-service: authorise, parse, decide (`domain`), call the
//! repository, convert. `accounts` is the client of customer-service it asks about targets.

use futures::Stream;
use reseller_kit::accounts::CustomerStatus;
use reseller_kit::auth::Principal;
use reseller_kit::device_id::{echo_id, parse_input, parse_secondary_ids};
use reseller_kit::ids::KnoxId;
use reseller_kit::text::echo;
use reseller_kit::{ApiError, FieldViolations, Reason, Refusal, paging, timestamp};
use reseller_proto::v1::{
    self as pb, device_service_server::DeviceService, upload_devices_request::Item,
};
use tonic::{Code, Request, Response, Status, Streaming};
use uuid::Uuid;

use crate::domain::accounts::{TargetRefused, active_target};
use crate::domain::{
    self, ClientUploadId, Deletion, OrderNumber, ParsedBatch, PortalState, Rejection,
    RejectionReason, Upload, UploadFilter, UploadHeader, UploadRow,
};
use crate::postgres::Repository;
use accounts::AccountsClient;

pub mod accounts;

/// `reseller.v1.DeviceService`.
#[derive(Debug, Clone)]
pub struct DeviceApi {
    repo: Repository,
    accounts: AccountsClient,
}

impl DeviceApi {
    /// The API over `repo`, asking `accounts` (customer-service) about targets.
    pub fn new(repo: Repository, accounts: AccountsClient) -> Self {
        Self { repo, accounts }
    }
}

/// A refused target as the caller sees it: an account the reseller has not added is
/// `NOT_FOUND`, one that is not active `FAILED_PRECONDITION`, and a directory that cannot
/// answer `UNAVAILABLE`.
fn refused_to_api(refused: TargetRefused) -> ApiError {
    let message = refused.to_string();
    let refusal = match &refused {
        TargetRefused::NotAdded(knox_id) => {
            Refusal::new(Reason::CustomerNotFound, message).with("knox_id", knox_id)
        }
        TargetRefused::PendingVerification(knox_id) => {
            Refusal::new(Reason::CustomerNotActive, message)
                .with("knox_id", knox_id)
                .with("status", CustomerStatus::PendingVerification.as_db())
        }
        TargetRefused::Inactive(knox_id) => Refusal::new(Reason::CustomerNotActive, message)
            .with("knox_id", knox_id)
            .with("status", CustomerStatus::Inactive.as_db()),
        TargetRefused::Unavailable(_) => return ApiError::Unavailable(message),
    };
    refusal.into()
}

/// The refusal of an upload the reseller does not have (unknown or another's alike).
fn no_upload(upload_id: Uuid) -> ApiError {
    Refusal::new(
        Reason::UploadNotFound,
        format!("upload {upload_id} not found: your uploads are listed newest first"),
    )
    .with("upload_id", upload_id)
    .into()
}

/// The refusal of a deletion the reseller does not have (unknown or another's alike).
fn no_deletion(deletion_id: Uuid) -> ApiError {
    Refusal::new(
        Reason::DeletionNotFound,
        format!("deletion {deletion_id} not found: your deletions are listed newest first"),
    )
    .with("deletion_id", deletion_id)
    .into()
}

fn parse_header(header: &pb::UploadHeader) -> Result<UploadHeader, ApiError> {
    let mut v = FieldViolations::new();
    let target = v.check(
        "header.target_knox_id",
        KnoxId::parse(&header.target_knox_id),
    );
    let order_number = v.check_field(OrderNumber::parse(
        "header.order_number",
        &header.order_number,
    ));
    let client_upload_id = v
        .check_field(ClientUploadId::parse(
            "header.client_upload_id",
            &header.client_upload_id,
        ))
        .map(ClientUploadId::into_option);
    // A validation records nothing, so there is no first result to return.
    if header.validate_only && matches!(client_upload_id, Some(Some(_))) {
        v.add(
            "header.client_upload_id",
            "a validate-only upload records nothing; send it without a client upload ID",
        );
    }
    v.finish()?;
    Ok(UploadHeader {
        target: target.expect("checked"),
        order_number: order_number.expect("checked").into_string(),
        client_upload_id: client_upload_id.expect("checked"),
        validate_only: header.validate_only,
    })
}

/// A keyset page token of a newest-first list: the last item's time (microseconds since
/// the epoch, PostgreSQL's precision) and ID.
type NewestFirstToken = (i64, Uuid);

fn newest_first_token(at: time::OffsetDateTime, id: Uuid) -> NewestFirstToken {
    ((at.unix_timestamp_nanos() / 1000) as i64, id)
}

fn newest_first_after(token: &str) -> Result<Option<(time::OffsetDateTime, Uuid)>, ApiError> {
    let Some((micros, id)) = paging::decode_token::<NewestFirstToken>(token)? else {
        return Ok(None);
    };
    let at = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(micros) * 1000)
        .map_err(|_| ApiError::invalid("page_token", "is not a token this list issued"))?;
    Ok(Some((at, id)))
}

/// An optional filter of a list: `None` when left empty, else parsed (a bad one is a
/// field violation).
fn optional_filter<T>(
    v: &mut FieldViolations,
    field: &str,
    value: &str,
    parse: impl FnOnce(&str) -> Result<T, String>,
) -> Option<T> {
    if value.trim().is_empty() {
        return None;
    }
    v.check(field, parse(value))
}

/// A request-stream failure as the caller should see it.
fn stream_error(status: Status) -> ApiError {
    match status.code() {
        // tonic reports an over-sized message as OUT_OF_RANGE; the contract says
        // RESOURCE_EXHAUSTED.
        Code::OutOfRange => Refusal::new(
            Reason::MessageTooLarge,
            format!("{}; send the devices in smaller batches", status.message()),
        )
        .into(),
        _ => ApiError::InvalidArgument(vec![reseller_kit::error::FieldViolation {
            field: "batch".into(),
            description: format!("the upload stream failed: {}", status.message()),
        }]),
    }
}

/// Parses one device with the shared parser; a bad one (identifier, model or secondary
/// identifier) becomes a rejection, never an error. The rejection echoes the ID cut to
/// 64 characters with control characters escaped, so a NUL or 10 kB of junk is one
/// row's problem (DOMAIN.md "Devices and uploads").
fn parse_device(index: i64, input: &pb::DeviceInput) -> Result<UploadRow, Rejection> {
    let parsed =
        parse_input(&input.device_id, input.id_kind, &input.model).and_then(|(device, model)| {
            let secondary = parse_secondary_ids(&input.secondary_ids, &device)?;
            Ok(UploadRow {
                index,
                device,
                model,
                secondary,
            })
        });
    parsed.map_err(|message| Rejection {
        index,
        device_id: echo_id(&input.device_id),
        reason: RejectionReason::InvalidId,
        message,
    })
}

/// Turns the rest of the request stream into parsed batches, numbering devices across
/// batches.
fn parse_batches(
    stream: Streaming<pb::UploadDevicesRequest>,
) -> impl Stream<Item = Result<ParsedBatch, ApiError>> + Unpin {
    Box::pin(futures::stream::unfold(
        (stream, 0i64),
        |(mut stream, mut next_index)| async move {
            let message = match stream.message().await {
                Ok(Some(message)) => message,
                Ok(None) => return None,
                Err(status) => return Some((Err(stream_error(status)), (stream, next_index))),
            };
            let batch = match message.item {
                Some(Item::Batch(batch)) => batch,
                Some(Item::Header(_)) => {
                    let err = ApiError::invalid(
                        "header",
                        "only the first message of an upload may be a header",
                    );
                    return Some((Err(err), (stream, next_index)));
                }
                None => {
                    let err =
                        ApiError::invalid("item", "every message must hold a header or a batch");
                    return Some((Err(err), (stream, next_index)));
                }
            };
            ::metrics::counter!(reseller_kit::metrics::UPLOAD_ROWS)
                .increment(batch.devices.len() as u64);
            let mut parsed = ParsedBatch {
                rows: Vec::with_capacity(batch.devices.len()),
                rejected: Vec::new(),
            };
            for input in &batch.devices {
                match parse_device(next_index, input) {
                    Ok(row) => parsed.rows.push(row),
                    Err(rejection) => parsed.rejected.push(rejection),
                }
                next_index += 1;
            }
            Some((Ok(parsed), (stream, next_index)))
        },
    ))
}

fn parse_id(field: &str, value: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(value.trim())
        .map_err(|_| ApiError::invalid(field, format!("must be a UUID, got \"{}\"", echo(value))))
}

fn upload_to_proto(upload: Upload) -> pb::Upload {
    pb::Upload {
        upload_id: upload.upload_id.to_string(),
        target_knox_id: upload.target_knox_id,
        order_number: upload.order_number,
        accepted_count: upload.accepted_count,
        rejected_count: upload.rejected_count,
        rejections: upload
            .rejections
            .into_iter()
            .map(rejection_to_proto)
            .collect(),
        uploaded_at: Some(timestamp::to_proto(upload.uploaded_at)),
        client_upload_id: upload.client_upload_id.unwrap_or_default(),
        rejections_truncated: upload.rejections_truncated,
        actor: upload.actor,
    }
}

fn rejection_to_proto(r: Rejection) -> pb::DeviceRejection {
    pb::DeviceRejection {
        index: r.index,
        device_id: r.device_id,
        reason: i32::from(r.reason.as_i16()),
        message: r.message,
    }
}

fn state_to_proto(state: PortalState) -> i32 {
    i32::from(state.as_i16())
}

fn deletion_to_proto(deletion: Deletion) -> pb::Deletion {
    let complete = deletion.complete();
    pb::Deletion {
        deleted_count: deletion.deleted_count,
        deletion_id: deletion.deletion_id.to_string(),
        deleted_device_ids: deletion.deleted_device_ids,
        not_found_truncated: (deletion.not_found_device_ids.len() as i64)
            < deletion.not_found_count,
        not_found_count: deletion.not_found_count,
        not_found_device_ids: deletion.not_found_device_ids,
        reseller_portal: state_to_proto(deletion.reseller_portal),
        msp_portal: state_to_proto(deletion.msp_portal),
        customer_portal: state_to_proto(deletion.customer_portal),
        complete,
        requested_at: Some(timestamp::to_proto(deletion.requested_at)),
        actor: deletion.actor,
    }
}

#[tonic::async_trait]
impl DeviceService for DeviceApi {
    async fn upload_devices(
        &self,
        request: Request<Streaming<pb::UploadDevicesRequest>>,
    ) -> Result<Response<pb::Upload>, Status> {
        let started = std::time::Instant::now();
        let principal = Principal::of(&request)?;
        let reseller = principal.reseller()?;
        let actor = principal.actor().to_owned();
        let authorization = request
            .metadata()
            .get("authorization")
            .cloned()
            .ok_or_else(|| ApiError::Unauthenticated("missing bearer token".into()))?;
        let mut stream = request.into_inner();
        let header = match stream
            .message()
            .await
            .map_err(stream_error)?
            .and_then(|m| m.item)
        {
            Some(Item::Header(header)) => parse_header(&header)?,
            _ => {
                return Err(ApiError::invalid(
                    "header",
                    "the first message of an upload must be its header",
                )
                .into());
            }
        };
        // A retry of a finished upload answers with its first result.
        if let Some(client_upload_id) = &header.client_upload_id
            && let Some(first) = self
                .repo
                .upload_by_client_id(&reseller, client_upload_id)
                .await
                .map_err(ApiError::from)?
        {
            return Ok(Response::new(upload_to_proto(first)));
        }
        let target = active_target(&self.accounts.as_caller(&authorization), &header.target)
            .await
            .map_err(refused_to_api)?;
        let upload = self
            .repo
            .ingest(&reseller, &actor, &header, &target, parse_batches(stream))
            .await
            .map_err(ApiError::from)?;
        ::metrics::histogram!(reseller_kit::metrics::UPLOAD_DURATION).record(started.elapsed());
        let mut answer = upload_to_proto(upload);
        if header.validate_only {
            // Nothing was recorded: there is no upload to name, and no one did it.
            answer.upload_id.clear();
            answer.actor.clear();
        }
        Ok(Response::new(answer))
    }

    async fn get_upload(
        &self,
        request: Request<pb::GetUploadRequest>,
    ) -> Result<Response<pb::Upload>, Status> {
        let reseller = Principal::of(&request)?.reseller()?;
        let upload_id = parse_id("upload_id", &request.get_ref().upload_id)?;
        let upload = self
            .repo
            .upload(&reseller, upload_id)
            .await
            .map_err(ApiError::from)?
            .ok_or_else(|| no_upload(upload_id))?;
        Ok(Response::new(upload_to_proto(upload)))
    }

    async fn delete_devices(
        &self,
        request: Request<pb::DeleteDevicesRequest>,
    ) -> Result<Response<pb::Deletion>, Status> {
        let principal = Principal::of(&request)?;
        let reseller = principal.reseller()?;
        let actor = principal.actor().to_owned();
        let lookups = domain::deletion_lookups(&request.get_ref().device_ids)
            .map_err(|e| ApiError::invalid("device_ids", e))?;
        let deletion = self
            .repo
            .delete(&reseller, &actor, &lookups)
            .await
            .map_err(ApiError::from)?;
        Ok(Response::new(deletion_to_proto(deletion)))
    }

    async fn list_upload_rejections(
        &self,
        request: Request<pb::ListUploadRejectionsRequest>,
    ) -> Result<Response<pb::ListUploadRejectionsResponse>, Status> {
        let reseller = Principal::of(&request)?.reseller()?;
        let req = request.get_ref();
        let upload_id = parse_id("upload_id", &req.upload_id)?;
        let limit = paging::page_size(req.page_size)?;
        let after: i64 = paging::decode_token(&req.page_token)?.unwrap_or(-1);
        let mut rejections = self
            .repo
            .upload_rejections(&reseller, upload_id, after, limit + 1)
            .await
            .map_err(ApiError::from)?
            .ok_or_else(|| no_upload(upload_id))?;
        let next_page_token = paging::finish_page(&mut rejections, limit, |r| r.index);
        Ok(Response::new(pb::ListUploadRejectionsResponse {
            rejections: rejections.into_iter().map(rejection_to_proto).collect(),
            next_page_token,
        }))
    }

    async fn list_uploads(
        &self,
        request: Request<pb::ListUploadsRequest>,
    ) -> Result<Response<pb::ListUploadsResponse>, Status> {
        let reseller = Principal::of(&request)?.reseller()?;
        let req = request.get_ref();
        let mut v = FieldViolations::new();
        let target = optional_filter(&mut v, "target_knox_id", &req.target_knox_id, KnoxId::parse);
        let order_number = v
            .check_field(OrderNumber::parse("order_number", &req.order_number))
            .and_then(OrderNumber::into_option);
        v.finish()?;
        let filter = UploadFilter {
            target,
            order_number,
        };
        let limit = paging::page_size(req.page_size)?;
        let before = newest_first_after(&req.page_token)?;
        let mut uploads = self
            .repo
            .uploads(&reseller, &filter, before, limit + 1)
            .await
            .map_err(ApiError::from)?;
        let next_page_token = paging::finish_page(&mut uploads, limit, |u| {
            newest_first_token(u.uploaded_at, u.upload_id)
        });
        Ok(Response::new(pb::ListUploadsResponse {
            uploads: uploads.into_iter().map(upload_to_proto).collect(),
            next_page_token,
        }))
    }

    async fn list_deletions(
        &self,
        request: Request<pb::ListDeletionsRequest>,
    ) -> Result<Response<pb::ListDeletionsResponse>, Status> {
        let reseller = Principal::of(&request)?.reseller()?;
        let req = request.get_ref();
        let limit = paging::page_size(req.page_size)?;
        let before = newest_first_after(&req.page_token)?;
        let mut deletions = self
            .repo
            .deletions(&reseller, before, limit + 1)
            .await
            .map_err(ApiError::from)?;
        let next_page_token = paging::finish_page(&mut deletions, limit, |d| {
            newest_first_token(d.requested_at, d.deletion_id)
        });
        Ok(Response::new(pb::ListDeletionsResponse {
            deletions: deletions.into_iter().map(deletion_to_proto).collect(),
            next_page_token,
        }))
    }

    async fn get_deletion(
        &self,
        request: Request<pb::GetDeletionRequest>,
    ) -> Result<Response<pb::Deletion>, Status> {
        let reseller = Principal::of(&request)?.reseller()?;
        let deletion_id = parse_id("deletion_id", &request.get_ref().deletion_id)?;
        let deletion = self
            .repo
            .deletion(&reseller, deletion_id)
            .await
            .map_err(ApiError::from)?
            .ok_or_else(|| no_deletion(deletion_id))?;
        Ok(Response::new(deletion_to_proto(deletion)))
    }
}
