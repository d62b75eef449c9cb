//! What resellerctl shares with the workspace's other clients of the portal (the
//! benchmarks): the interceptor that authenticates every call with a bearer token, as
//! CONTRACT.md asks of any caller. The command-line client itself is the `resellerctl`
//! binary (`src/main.rs`).

#![forbid(unsafe_code)]

use tonic::metadata::{AsciiMetadataValue, errors::InvalidMetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tonic::{Request, Status};

/// Adds `authorization: Bearer <token>` to every call.
#[derive(Debug, Clone)]
pub struct Bearer(AsciiMetadataValue);

impl Bearer {
    /// The interceptor sending `token` (the JWT alone, without `Bearer `).
    ///
    /// # Errors
    /// When the token holds characters a header value cannot hold.
    pub fn new(token: &str) -> Result<Self, InvalidMetadataValue> {
        Ok(Self(format!("Bearer {token}").parse()?))
    }
}

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
