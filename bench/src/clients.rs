//! gRPC clients that send a bearer token, as any outside caller would.

use std::time::Duration;

use reseller_kit::auth::{JwtAuth, Role};
use reseller_proto::v1::{
    account_service_client::AccountServiceClient, customer_service_client::CustomerServiceClient,
    device_service_client::DeviceServiceClient, msp_service_client::MspServiceClient,
    reporting_service_client::ReportingServiceClient,
};
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tonic::{Request, Status};

/// Responses may be large (an upload's rejections, CSV chunks).
const MAX_MESSAGE: usize = 256 * 1024 * 1024;

/// Adds `authorization: Bearer <token>`.
#[derive(Debug, Clone)]
pub struct Bearer(MetadataValue<Ascii>);

impl Interceptor for Bearer {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        request
            .metadata_mut()
            .insert("authorization", self.0.clone());
        Ok(request)
    }
}

/// A channel that authenticates.
pub type Authed = InterceptedService<Channel, Bearer>;

/// One principal's clients.
#[derive(Debug, Clone)]
pub struct Caller {
    channel: Channel,
    auth: Bearer,
}

impl Caller {
    /// A caller for `subject` in `role` with a day-long token.
    ///
    /// # Errors
    /// Only if minting fails.
    pub fn new(
        channel: Channel,
        auth: &JwtAuth,
        role: Role,
        subject: &str,
    ) -> anyhow::Result<Self> {
        let token = auth.mint(role, subject, Duration::from_secs(86_400))?;
        Ok(Self {
            channel,
            auth: Bearer(format!("Bearer {token}").parse()?),
        })
    }

    /// AccountService.
    pub fn accounts(&self) -> AccountServiceClient<Authed> {
        AccountServiceClient::with_interceptor(self.channel.clone(), self.auth.clone())
            .max_decoding_message_size(MAX_MESSAGE)
    }

    /// CustomerService.
    pub fn customers(&self) -> CustomerServiceClient<Authed> {
        CustomerServiceClient::with_interceptor(self.channel.clone(), self.auth.clone())
            .max_decoding_message_size(MAX_MESSAGE)
    }

    /// DeviceService.
    pub fn devices(&self) -> DeviceServiceClient<Authed> {
        DeviceServiceClient::with_interceptor(self.channel.clone(), self.auth.clone())
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE)
    }

    /// MspService.
    pub fn msp(&self) -> MspServiceClient<Authed> {
        MspServiceClient::with_interceptor(self.channel.clone(), self.auth.clone())
            .max_decoding_message_size(MAX_MESSAGE)
    }

    /// ReportingService.
    pub fn reporting(&self) -> ReportingServiceClient<Authed> {
        ReportingServiceClient::with_interceptor(self.channel.clone(), self.auth.clone())
            .max_decoding_message_size(MAX_MESSAGE)
    }
}
