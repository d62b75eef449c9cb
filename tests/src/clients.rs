//! gRPC clients that send a bearer token, as any outside caller would.

use futures::StreamExt;
use reseller_kit::auth::Role;
use reseller_proto::v1::{
    self as pb, account_service_client::AccountServiceClient,
    customer_service_client::CustomerServiceClient, device_service_client::DeviceServiceClient,
    msp_service_client::MspServiceClient, reporting_service_client::ReportingServiceClient,
};
use tonic::IntoStreamingRequest;
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tonic::{Request, Status};

use crate::TestStack;

/// Adds `authorization` metadata (any value, so tests can send malformed ones).
#[derive(Debug, Clone)]
pub struct Authorization(pub Option<String>);

impl Interceptor for Authorization {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(value) = &self.0 {
            request.metadata_mut().insert(
                "authorization",
                value.parse().map_err(|_| Status::internal("bad header"))?,
            );
        }
        Ok(request)
    }
}

/// A channel that authenticates.
pub type Authed = InterceptedService<Channel, Authorization>;

/// A caller of the stack: one principal's clients.
#[derive(Debug, Clone)]
pub struct Caller {
    channel: Channel,
    auth: Authorization,
}

impl Caller {
    /// A caller sending `authorization` exactly as given (`None`: no metadata).
    pub fn raw(stack: &TestStack, authorization: Option<String>) -> Self {
        Self::on(stack.channel.clone(), authorization)
    }

    /// A caller on `channel` (e.g. one replica of a cluster), sending `authorization`
    /// exactly as given.
    pub fn on(channel: Channel, authorization: Option<String>) -> Self {
        Self {
            channel,
            auth: Authorization(authorization),
        }
    }

    /// A caller with a valid token for `subject` in `role`.
    pub fn new(stack: &TestStack, role: Role, subject: &str) -> Self {
        Self::raw(
            stack,
            Some(format!("Bearer {}", stack.token(role, subject))),
        )
    }

    /// AccountService.
    pub fn accounts(&self) -> AccountServiceClient<Authed> {
        AccountServiceClient::with_interceptor(self.channel.clone(), self.auth.clone())
    }

    /// CustomerService.
    pub fn customers(&self) -> CustomerServiceClient<Authed> {
        CustomerServiceClient::with_interceptor(self.channel.clone(), self.auth.clone())
    }

    /// DeviceService.
    pub fn devices(&self) -> DeviceServiceClient<Authed> {
        DeviceServiceClient::with_interceptor(self.channel.clone(), self.auth.clone())
    }

    /// MspService.
    pub fn msp(&self) -> MspServiceClient<Authed> {
        MspServiceClient::with_interceptor(self.channel.clone(), self.auth.clone())
    }

    /// ReportingService.
    pub fn reporting(&self) -> ReportingServiceClient<Authed> {
        ReportingServiceClient::with_interceptor(self.channel.clone(), self.auth.clone())
    }
}

/// One helper per RPC: the call as this caller, answering the inner message (or the
/// call's status), so that a test reads as the steps it takes. Requests with one or two
/// plain fields take those fields; the others take the request message. The clients
/// above stay for what a helper hides (metadata, raw streams).
///
/// # Errors
/// Every helper answers the status the service answered.
impl Caller {
    /// `AccountService.RegisterAccount`.
    pub async fn register_account(
        &self,
        request: pb::RegisterAccountRequest,
    ) -> Result<pb::Account, Status> {
        inner(self.accounts().register_account(request).await)
    }

    /// `AccountService.GetAccount`.
    pub async fn get_account(&self, knox_id: &str) -> Result<pb::Account, Status> {
        let request = pb::GetAccountRequest {
            knox_id: knox_id.into(),
        };
        inner(self.accounts().get_account(request).await)
    }

    /// `CustomerService.AddCustomer`.
    pub async fn add_customer(
        &self,
        knox_id: &str,
        internal_reference: &str,
    ) -> Result<pb::Customer, Status> {
        let request = pb::AddCustomerRequest {
            knox_id: knox_id.into(),
            internal_reference: internal_reference.into(),
        };
        inner(self.customers().add_customer(request).await)
    }

    /// `CustomerService.UpdateInternalReference`.
    pub async fn update_internal_reference(
        &self,
        knox_id: &str,
        internal_reference: &str,
    ) -> Result<pb::Customer, Status> {
        let request = pb::UpdateInternalReferenceRequest {
            knox_id: knox_id.into(),
            internal_reference: internal_reference.into(),
        };
        inner(self.customers().update_internal_reference(request).await)
    }

    /// `CustomerService.GetCustomer`.
    pub async fn get_customer(&self, knox_id: &str) -> Result<pb::Customer, Status> {
        let request = pb::GetCustomerRequest {
            knox_id: knox_id.into(),
        };
        inner(self.customers().get_customer(request).await)
    }

    /// `CustomerService.ApproveReseller`, as the account this caller is.
    pub async fn approve_reseller(
        &self,
        reseller_id: &str,
    ) -> Result<pb::ResellerApproval, Status> {
        let request = pb::ApproveResellerRequest {
            reseller_id: reseller_id.into(),
        };
        inner(self.customers().approve_reseller(request).await)
    }

    /// `CustomerService.RevokeReseller`, as the account this caller is.
    pub async fn revoke_reseller(&self, reseller_id: &str) -> Result<pb::ResellerApproval, Status> {
        let request = pb::RevokeResellerRequest {
            reseller_id: reseller_id.into(),
        };
        inner(self.customers().revoke_reseller(request).await)
    }

    /// `CustomerService.ListMyDevices`: one page.
    pub async fn list_my_devices(
        &self,
        request: pb::ListMyDevicesRequest,
    ) -> Result<pb::ListMyDevicesResponse, Status> {
        inner(self.customers().list_my_devices(request).await)
    }

    /// `DeviceService.UploadDevices`: the header and batches of `messages`, streamed.
    pub async fn upload_devices(
        &self,
        messages: impl IntoStreamingRequest<Message = pb::UploadDevicesRequest>,
    ) -> Result<pb::Upload, Status> {
        inner(self.devices().upload_devices(messages).await)
    }

    /// `DeviceService.GetUpload`.
    pub async fn get_upload(&self, upload_id: &str) -> Result<pb::Upload, Status> {
        let request = pb::GetUploadRequest {
            upload_id: upload_id.into(),
        };
        inner(self.devices().get_upload(request).await)
    }

    /// `DeviceService.DeleteDevices`.
    pub async fn delete_devices<I>(&self, device_ids: I) -> Result<pb::Deletion, Status>
    where
        I: IntoIterator,
        I::Item: Into<String>,
    {
        let request = pb::DeleteDevicesRequest {
            device_ids: device_ids.into_iter().map(Into::into).collect(),
        };
        inner(self.devices().delete_devices(request).await)
    }

    /// `DeviceService.GetDeletion`.
    pub async fn get_deletion(&self, deletion_id: &str) -> Result<pb::Deletion, Status> {
        let request = pb::GetDeletionRequest {
            deletion_id: deletion_id.into(),
        };
        inner(self.devices().get_deletion(request).await)
    }

    /// `DeviceService.ListUploadRejections`: one page.
    pub async fn list_upload_rejections(
        &self,
        request: pb::ListUploadRejectionsRequest,
    ) -> Result<pb::ListUploadRejectionsResponse, Status> {
        inner(self.devices().list_upload_rejections(request).await)
    }

    /// `DeviceService.ListUploads`: one page.
    pub async fn list_uploads(
        &self,
        request: pb::ListUploadsRequest,
    ) -> Result<pb::ListUploadsResponse, Status> {
        inner(self.devices().list_uploads(request).await)
    }

    /// `DeviceService.ListDeletions`: one page.
    pub async fn list_deletions(
        &self,
        request: pb::ListDeletionsRequest,
    ) -> Result<pb::ListDeletionsResponse, Status> {
        inner(self.devices().list_deletions(request).await)
    }

    /// `MspService.LinkCustomer`, as the MSP this caller is.
    pub async fn link_customer(
        &self,
        customer_knox_id: &str,
        mode: pb::ManagementMode,
    ) -> Result<pb::ManagedCustomer, Status> {
        let request = pb::LinkCustomerRequest {
            customer_knox_id: customer_knox_id.into(),
            mode: mode as i32,
        };
        inner(self.msp().link_customer(request).await)
    }

    /// `MspService.SetJointlyManaged`.
    pub async fn set_jointly_managed(
        &self,
        customer_knox_id: &str,
    ) -> Result<pb::ManagedCustomer, Status> {
        let request = pb::SetJointlyManagedRequest {
            customer_knox_id: customer_knox_id.into(),
        };
        inner(self.msp().set_jointly_managed(request).await)
    }

    /// `MspService.DelinkCustomer` (`msp_id` empty: the caller's own link, or the one
    /// link a customer has).
    pub async fn delink_customer(
        &self,
        customer_knox_id: &str,
        msp_id: &str,
    ) -> Result<pb::ManagedCustomer, Status> {
        let request = pb::DelinkCustomerRequest {
            customer_knox_id: customer_knox_id.into(),
            msp_id: msp_id.into(),
        };
        inner(self.msp().delink_customer(request).await)
    }

    /// `MspService.MoveDevices`.
    pub async fn move_devices<I>(
        &self,
        device_ids: I,
        to_customer_knox_id: &str,
    ) -> Result<pb::MoveDevicesResponse, Status>
    where
        I: IntoIterator,
        I::Item: Into<String>,
    {
        let request = pb::MoveDevicesRequest {
            device_ids: device_ids.into_iter().map(Into::into).collect(),
            to_customer_knox_id: to_customer_knox_id.into(),
        };
        inner(self.msp().move_devices(request).await)
    }

    /// `MspService.ListManagedCustomers`: one page.
    pub async fn list_managed_customers(
        &self,
        request: pb::ListManagedCustomersRequest,
    ) -> Result<pb::ListManagedCustomersResponse, Status> {
        inner(self.msp().list_managed_customers(request).await)
    }

    /// `MspService.ListMspDevices`: one page.
    pub async fn list_msp_devices(
        &self,
        request: pb::ListMspDevicesRequest,
    ) -> Result<pb::ListMspDevicesResponse, Status> {
        inner(self.msp().list_msp_devices(request).await)
    }

    /// `ReportingService.ListCustomers`: one page.
    pub async fn list_customers(
        &self,
        request: pb::ListCustomersRequest,
    ) -> Result<pb::ListCustomersResponse, Status> {
        inner(self.reporting().list_customers(request).await)
    }

    /// `ReportingService.GetCustomerDetail`.
    pub async fn get_customer_detail(&self, knox_id: &str) -> Result<pb::CustomerDetail, Status> {
        let request = pb::GetCustomerDetailRequest {
            knox_id: knox_id.into(),
        };
        inner(self.reporting().get_customer_detail(request).await)
    }

    /// `ReportingService.ListCustomerDevices`: one page.
    pub async fn list_customer_devices(
        &self,
        request: pb::ListCustomerDevicesRequest,
    ) -> Result<pb::ListCustomerDevicesResponse, Status> {
        inner(self.reporting().list_customer_devices(request).await)
    }

    /// `ReportingService.ExportCustomersCsv`: the whole file.
    pub async fn export_customers_csv(
        &self,
        request: pb::ExportCustomersCsvRequest,
    ) -> Result<Csv, Status> {
        Csv::read(self.reporting().export_customers_csv(request).await).await
    }

    /// `ReportingService.ExportCustomerCsv`: the whole file.
    pub async fn export_customer_csv(
        &self,
        request: pb::ExportCustomerCsvRequest,
    ) -> Result<Csv, Status> {
        Csv::read(self.reporting().export_customer_csv(request).await).await
    }
}

/// A CSV export as it arrived: its bytes, and the size of each `CsvChunk` (in bytes) that
/// carried them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Csv {
    /// The file.
    pub bytes: Vec<u8>,
    /// Each chunk's size in bytes, in the order they came.
    pub chunk_sizes: Vec<usize>,
}

impl Csv {
    /// Reads an export's stream to its end.
    ///
    /// # Errors
    /// The status the call failed with, or the first the stream carried.
    pub async fn read(
        answer: Result<tonic::Response<tonic::Streaming<pb::CsvChunk>>, Status>,
    ) -> Result<Self, Status> {
        let mut stream = answer?.into_inner();
        let mut csv = Self {
            bytes: Vec::new(),
            chunk_sizes: Vec::new(),
        };
        while let Some(chunk) = stream.next().await {
            let chunk = chunk?;
            csv.chunk_sizes.push(chunk.data.len());
            csv.bytes.extend_from_slice(&chunk.data);
        }
        Ok(csv)
    }
}

/// The inner message of an answer.
fn inner<T>(answer: Result<tonic::Response<T>, Status>) -> Result<T, Status> {
    answer.map(tonic::Response::into_inner)
}

/// Shorthand for the principals of a test.
pub fn admin(stack: &TestStack) -> Caller {
    Caller::new(stack, Role::Admin, "platform-admin")
}

/// A reseller.
pub fn reseller(stack: &TestStack, id: &str) -> Caller {
    Caller::new(stack, Role::Reseller, id)
}

/// `subject` in `role`, with a token whose `name` claim (the person acting) is `name`.
pub fn named(stack: &TestStack, role: Role, subject: &str, name: &str) -> Caller {
    Caller::raw(
        stack,
        Some(format!("Bearer {}", stack.named_token(role, subject, name))),
    )
}

/// A customer account.
pub fn customer(stack: &TestStack, knox_id: &str) -> Caller {
    Caller::new(stack, Role::Customer, knox_id)
}

/// An MSP account.
pub fn msp(stack: &TestStack, knox_id: &str) -> Caller {
    Caller::new(stack, Role::Msp, knox_id)
}
