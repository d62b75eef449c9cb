//! gRPC clients that send a bearer token, as any outside caller would.

use std::time::Duration;

use reseller_kit::auth::{JwtAuth, Role};
use reseller_proto::v1::{
    account_service_client::AccountServiceClient, customer_service_client::CustomerServiceClient,
    device_service_client::DeviceServiceClient, msp_service_client::MspServiceClient,
    reporting_service_client::ReportingServiceClient,
};
// resellerctl's interceptor: the benchmarks call the portal as its client does.
use resellerctl::{Authed, Bearer};
use tonic::transport::Channel;

/// Responses may be large (an upload's rejections, CSV chunks).
const MAX_MESSAGE: usize = 256 * 1024 * 1024;

/// A channel per service program. In the single-process stack all four are the same
/// channel (one `reseller-portal` serves every service); on the cluster shape each is a
/// [`Channel::balance_list`] over that service's replicas, so calls spread over them.
#[derive(Debug, Clone)]
pub struct ServiceChannels {
    /// customer-service: `AccountService` and `CustomerService`.
    pub customer: Channel,
    /// device-service: `DeviceService`.
    pub device: Channel,
    /// msp-link-service: `MspService`.
    pub msp: Channel,
    /// reporting-service: `ReportingService`.
    pub reporting: Channel,
}

impl ServiceChannels {
    /// The same channel for every service (one process serves them all).
    pub fn same(channel: Channel) -> Self {
        Self {
            customer: channel.clone(),
            device: channel.clone(),
            msp: channel.clone(),
            reporting: channel,
        }
    }
}

/// One principal's clients.
#[derive(Debug, Clone)]
pub struct Caller {
    channels: ServiceChannels,
    auth: Bearer,
}

impl Caller {
    /// A caller for `subject` in `role` with a day-long token.
    ///
    /// # Errors
    /// Only if minting fails.
    pub fn new(
        channels: ServiceChannels,
        auth: &JwtAuth,
        role: Role,
        subject: &str,
    ) -> anyhow::Result<Self> {
        let token = auth.mint(role, subject, Duration::from_secs(86_400))?;
        Ok(Self {
            channels,
            auth: Bearer::new(&token)?,
        })
    }

    /// `grpc.health.v1.Health` on ReportingService's channel, without the token: a call
    /// that does no work, so its time is the transport's (HTTP/2 on loopback, both
    /// processes woken).
    pub fn health(&self) -> tonic_health::pb::health_client::HealthClient<Channel> {
        tonic_health::pb::health_client::HealthClient::new(self.channels.reporting.clone())
    }

    /// AccountService.
    pub fn accounts(&self) -> AccountServiceClient<Authed> {
        AccountServiceClient::with_interceptor(self.channels.customer.clone(), self.auth.clone())
            .max_decoding_message_size(MAX_MESSAGE)
    }

    /// CustomerService.
    pub fn customers(&self) -> CustomerServiceClient<Authed> {
        CustomerServiceClient::with_interceptor(self.channels.customer.clone(), self.auth.clone())
            .max_decoding_message_size(MAX_MESSAGE)
    }

    /// DeviceService.
    pub fn devices(&self) -> DeviceServiceClient<Authed> {
        DeviceServiceClient::with_interceptor(self.channels.device.clone(), self.auth.clone())
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE)
    }

    /// MspService.
    pub fn msp(&self) -> MspServiceClient<Authed> {
        MspServiceClient::with_interceptor(self.channels.msp.clone(), self.auth.clone())
            .max_decoding_message_size(MAX_MESSAGE)
    }

    /// ReportingService.
    pub fn reporting(&self) -> ReportingServiceClient<Authed> {
        ReportingServiceClient::with_interceptor(self.channels.reporting.clone(), self.auth.clone())
            .max_decoding_message_size(MAX_MESSAGE)
    }
}
