//! The gRPC edge of reporting-service: authorise (role reseller, confined to the caller's
//! own rows), parse, call the repository, convert.
//!
//! Every string field is parsed here before anything reaches PostgreSQL, so a value the
//! database cannot hold (a NUL) or a 10 kB string is the field's `INVALID_ARGUMENT`,
//! never `INTERNAL`; messages quote the value through `reseller_kit::text::echo`.

use std::sync::Arc;

use reseller_kit::auth::Principal;
use reseller_kit::paging;
use reseller_kit::{ApiError, Reason, Refusal};
use reseller_proto::v1::{self as pb, reporting_service_server::ReportingService};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::{Request, Response, Status};

use reseller_kit::ids::KnoxId;

use self::csv::{CsvStream, stream_csv};
use crate::domain::{ListCustomerDevices, ListCustomers, SearchQuery};
use crate::postgres::Repository;

pub mod activity;
pub mod convert;
pub mod csv;
pub mod lookups;

/// `reseller.v1.ReportingService`.
#[derive(Debug, Clone)]
pub struct ReportingApi {
    repo: Repository,
    /// A CSV download holds a database connection (its cursor) for as long as the client
    /// takes to read it; this bounds how many run at once.
    downloads: Arc<Semaphore>,
}

impl ReportingApi {
    /// The API over `repo`, running at most `max_downloads` CSV downloads at once.
    pub fn new(repo: Repository, max_downloads: usize) -> Self {
        Self {
            repo,
            downloads: Arc::new(Semaphore::new(max_downloads.max(1))),
        }
    }

    /// What answers for a row the reseller does not have listed: absent, another
    /// reseller's, or not listed (yet) all read alike.
    fn no_customer(knox_id: &KnoxId) -> ApiError {
        Refusal::new(
            Reason::CustomerNotFound,
            format!(
                "customer {knox_id} not found: add the account as your customer first (one just added is listed within seconds)"
            ),
        )
        .with("knox_id", knox_id)
        .into()
    }

    /// A download slot, or `RESOURCE_EXHAUSTED` while every slot is taken.
    fn download_slot(&self) -> Result<OwnedSemaphorePermit, ApiError> {
        self.downloads.clone().try_acquire_owned().map_err(|_| {
            ApiError::refused(
                Reason::TooManyDownloads,
                "too many CSV downloads in progress; retry shortly",
            )
        })
    }
}

#[tonic::async_trait]
impl ReportingService for ReportingApi {
    async fn list_customers(
        &self,
        request: Request<pb::ListCustomersRequest>,
    ) -> Result<Response<pb::ListCustomersResponse>, Status> {
        let reseller = Principal::of(&request)?.reseller()?;
        let req = request.get_ref();
        let list = ListCustomers::parse(&req.query, &req.order_by, req.page_size, &req.page_token)?;
        let page = self
            .repo
            .list_customers(&reseller, &list)
            .await
            .map_err(ApiError::from)?;
        Ok(Response::new(pb::ListCustomersResponse {
            next_page_token: page
                .next
                .map(|key| list.next_token(key))
                .unwrap_or_default(),
            customers: page.rows.into_iter().map(Into::into).collect(),
            total_size: page.total,
        }))
    }

    async fn get_customer_detail(
        &self,
        request: Request<pb::GetCustomerDetailRequest>,
    ) -> Result<Response<pb::CustomerDetail>, Status> {
        let reseller = Principal::of(&request)?.reseller()?;
        let knox_id = parse_knox_id(&request.get_ref().knox_id)?;
        let detail = self
            .repo
            .customer_detail(&reseller, &knox_id)
            .await
            .map_err(ApiError::from)?
            .ok_or_else(|| Self::no_customer(&knox_id))?;
        Ok(Response::new(pb::CustomerDetail {
            summary: Some(detail.row.into()),
            uploads: detail.uploads.into_iter().map(Into::into).collect(),
        }))
    }

    async fn list_customer_devices(
        &self,
        request: Request<pb::ListCustomerDevicesRequest>,
    ) -> Result<Response<pb::ListCustomerDevicesResponse>, Status> {
        let reseller = Principal::of(&request)?.reseller()?;
        let req = request.get_ref();
        let list = ListCustomerDevices::parse(&req.knox_id, req.page_size, &req.page_token)?;
        let page = self
            .repo
            .customer_devices(&reseller, &list)
            .await
            .map_err(ApiError::from)?
            .ok_or_else(|| Self::no_customer(&list.knox_id))?;
        Ok(Response::new(pb::ListCustomerDevicesResponse {
            next_page_token: page
                .next
                .map(|key| list.next_token(key))
                .unwrap_or_default(),
            devices: page.devices.into_iter().map(Into::into).collect(),
        }))
    }

    type ExportCustomersCsvStream = CsvStream;

    async fn export_customers_csv(
        &self,
        request: Request<pb::ExportCustomersCsvRequest>,
    ) -> Result<Response<Self::ExportCustomersCsvStream>, Status> {
        let reseller = Principal::of(&request)?.reseller()?;
        let req = request.get_ref();
        let query = SearchQuery::parse(&req.query).map_err(ApiError::from)?;
        let slot = self.download_slot()?;
        // Open the cursor before answering, so a database failure is the call's status.
        let cursor = self
            .repo
            .export_customers(&reseller, &query)
            .await
            .map_err(ApiError::from)?;
        Ok(Response::new(stream_csv(cursor, slot, req.byte_order_mark)))
    }

    type ExportCustomerCsvStream = CsvStream;

    async fn export_customer_csv(
        &self,
        request: Request<pb::ExportCustomerCsvRequest>,
    ) -> Result<Response<Self::ExportCustomerCsvStream>, Status> {
        let reseller = Principal::of(&request)?.reseller()?;
        let req = request.get_ref();
        let knox_id = parse_knox_id(&req.knox_id)?;
        let slot = self.download_slot()?;
        // Open the cursor before answering, so an unknown customer or a database failure
        // is the call's status.
        let cursor = self
            .repo
            .export_customer_devices(&reseller, &knox_id)
            .await
            .map_err(ApiError::from)?
            .ok_or_else(|| Self::no_customer(&knox_id))?;
        Ok(Response::new(stream_csv(cursor, slot, req.byte_order_mark)))
    }

    async fn find_devices(
        &self,
        request: Request<pb::FindDevicesRequest>,
    ) -> Result<Response<pb::FindDevicesResponse>, Status> {
        let reseller = Principal::of(&request)?.reseller()?;
        let found =
            lookups::find_devices(&self.repo, &reseller, &request.get_ref().device_ids).await?;
        Ok(Response::new(found))
    }

    async fn get_device_history(
        &self,
        request: Request<pb::GetDeviceHistoryRequest>,
    ) -> Result<Response<pb::DeviceHistory>, Status> {
        let reseller = Principal::of(&request)?.reseller()?;
        let history =
            lookups::device_history(&self.repo, &reseller, &request.get_ref().device_id).await?;
        Ok(Response::new(history))
    }

    async fn list_activity(
        &self,
        request: Request<pb::ListActivityRequest>,
    ) -> Result<Response<pb::ListActivityResponse>, Status> {
        let reseller = Principal::of(&request)?.reseller()?;
        let req = request.get_ref();
        let filter = activity::parse_filter(
            &req.kinds,
            &req.customer_knox_id,
            req.since.as_ref(),
            req.until.as_ref(),
        )?;
        let page_size = paging::page_size(req.page_size)?;
        let after = activity::parse_cursor(&req.page_token)?;
        let page = self
            .repo
            .list_activity(reseller.as_str(), &filter, after, page_size)
            .await
            .map_err(ApiError::from)?;
        Ok(Response::new(pb::ListActivityResponse {
            next_page_token: page
                .next
                .map(|cursor| paging::encode_token(&cursor))
                .unwrap_or_default(),
            activities: page.entries.into_iter().map(Into::into).collect(),
        }))
    }

    type ExportActivityCsvStream = CsvStream;

    async fn export_activity_csv(
        &self,
        request: Request<pb::ExportActivityCsvRequest>,
    ) -> Result<Response<Self::ExportActivityCsvStream>, Status> {
        let reseller = Principal::of(&request)?.reseller()?;
        let req = request.get_ref();
        let filter = activity::parse_filter(
            &req.kinds,
            &req.customer_knox_id,
            req.since.as_ref(),
            req.until.as_ref(),
        )?;
        let slot = self.download_slot()?;
        let source = activity::ActivitySource::new(self.repo.clone(), reseller, filter);
        Ok(Response::new(stream_csv(source, slot, req.byte_order_mark)))
    }
}

/// The `knox_id` field of a request (kit's message echoes at most 64 characters of it).
fn parse_knox_id(value: &str) -> Result<KnoxId, ApiError> {
    KnoxId::parse(value).map_err(|e| ApiError::invalid("knox_id", e))
}
