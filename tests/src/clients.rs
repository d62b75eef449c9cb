//! gRPC clients that send a bearer token, as any outside caller would.

use reseller_kit::auth::Role;
use reseller_proto::v1::{
    account_service_client::AccountServiceClient, customer_service_client::CustomerServiceClient,
    device_service_client::DeviceServiceClient, msp_service_client::MspServiceClient,
    reporting_service_client::ReportingServiceClient,
};
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

/// Shorthand for the principals of a test.
pub fn admin(stack: &TestStack) -> Caller {
    Caller::new(stack, Role::Admin, "platform-admin")
}

/// A reseller.
pub fn reseller(stack: &TestStack, id: &str) -> Caller {
    Caller::new(stack, Role::Reseller, id)
}

/// A customer account.
pub fn customer(stack: &TestStack, knox_id: &str) -> Caller {
    Caller::new(stack, Role::Customer, knox_id)
}

/// An MSP account.
pub fn msp(stack: &TestStack, knox_id: &str) -> Caller {
    Caller::new(stack, Role::Msp, knox_id)
}
