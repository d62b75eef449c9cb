//! The connection to the portal: one HTTP/2 channel, connected eagerly so an unreachable
//! address is reported as such, and an interceptor that sends the bearer token.

use std::time::Duration;

use reseller_proto::v1::{
    account_service_client::AccountServiceClient, customer_service_client::CustomerServiceClient,
    device_service_client::DeviceServiceClient, msp_service_client::MspServiceClient,
    reporting_service_client::ReportingServiceClient,
};
use resellerctl::{Authed, Bearer};
use tonic::Status;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};

use crate::cli::Global;
use crate::errors::{CliError, transport_cause};

/// How long connecting may take before the portal counts as unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest answer accepted. The portal keeps its answers small (an upload's carries at
/// most 1,000 rejections, the rest are paged), so this is headroom for older portals
/// that list every rejected device inline.
const MAX_ANSWER_BYTES: usize = 512 * 1024 * 1024;

/// A connection to the portal as one principal.
#[derive(Debug, Clone)]
pub struct Portal {
    channel: Channel,
    bearer: Bearer,
    addr: String,
}

/// `host:port` → `http://host:port`; URLs stay as they are.
///
/// # Errors
/// A usage error for schemes this client cannot speak.
pub fn normalise_addr(addr: &str) -> Result<String, CliError> {
    let addr = addr.trim().trim_end_matches('/');
    if addr.is_empty() {
        return Err(CliError::Usage(
            "the address is empty: pass --addr or set RESELLER_ADDR (e.g. 127.0.0.1:50051)".into(),
        ));
    }
    if let Some((scheme, _)) = addr.split_once("://") {
        return match scheme {
            "http" => Ok(addr.to_owned()),
            "https" => Err(CliError::Usage(format!(
                "{addr}: TLS is not supported by this build of resellerctl; use http:// (or host:port) \
                 behind a TLS-terminating proxy"
            ))),
            _ => Err(CliError::Usage(format!(
                "{addr}: the address must be http://host:port or host:port"
            ))),
        };
    }
    Ok(format!("http://{addr}"))
}

impl Portal {
    /// Connects to `global.addr` with `global.token`.
    ///
    /// # Errors
    /// A usage error when the token or address is missing or malformed;
    /// [`CliError::Unreachable`] when nothing answers there.
    pub async fn connect(global: &Global) -> Result<Self, CliError> {
        let token = global
            .token
            .as_deref()
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                CliError::Usage(
                    "no token: pass --token or set RESELLER_TOKEN \
                     (`resellerctl token --role ROLE --sub ID` mints a development token)"
                        .into(),
                )
            })?;
        let token = token.strip_prefix("Bearer ").unwrap_or(token);
        let bearer = Bearer::new(token)
            .map_err(|_| CliError::Usage("the token holds characters a token cannot hold".into()))?
            .print_trace_ids(global.verbose);
        let addr = normalise_addr(&global.addr)?;
        let endpoint = Endpoint::from_shared(addr.clone()).map_err(|e| {
            CliError::Usage(format!(
                "{addr} is not a valid address: {}",
                transport_cause(&e)
            ))
        })?;
        let channel = endpoint
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(30))
            .keep_alive_while_idle(true)
            .connect()
            .await
            .map_err(|e| CliError::Unreachable {
                addr: addr.clone(),
                cause: transport_cause(&e),
            })?;
        Ok(Self {
            channel,
            bearer,
            addr,
        })
    }

    /// Turns a failed call into a [`CliError`].
    pub fn fail(&self, status: Status) -> CliError {
        CliError::status(&self.addr, status)
    }

    fn authed(&self) -> Authed {
        InterceptedService::new(self.channel.clone(), self.bearer.clone())
    }

    /// AccountService.
    pub fn accounts(&self) -> AccountServiceClient<Authed> {
        AccountServiceClient::new(self.authed()).max_decoding_message_size(MAX_ANSWER_BYTES)
    }

    /// CustomerService.
    pub fn customers(&self) -> CustomerServiceClient<Authed> {
        CustomerServiceClient::new(self.authed()).max_decoding_message_size(MAX_ANSWER_BYTES)
    }

    /// DeviceService.
    pub fn devices(&self) -> DeviceServiceClient<Authed> {
        DeviceServiceClient::new(self.authed()).max_decoding_message_size(MAX_ANSWER_BYTES)
    }

    /// MspService.
    pub fn msp(&self) -> MspServiceClient<Authed> {
        MspServiceClient::new(self.authed()).max_decoding_message_size(MAX_ANSWER_BYTES)
    }

    /// ReportingService.
    pub fn reporting(&self) -> ReportingServiceClient<Authed> {
        ReportingServiceClient::new(self.authed()).max_decoding_message_size(MAX_ANSWER_BYTES)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_without_a_scheme_are_http() {
        assert_eq!(
            normalise_addr("127.0.0.1:50051").unwrap(),
            "http://127.0.0.1:50051"
        );
        assert_eq!(
            normalise_addr("http://portal:50051/").unwrap(),
            "http://portal:50051"
        );
        assert!(normalise_addr("https://portal").is_err());
        assert!(normalise_addr("ftp://portal").is_err());
        assert!(normalise_addr(" ").is_err());
    }
}
