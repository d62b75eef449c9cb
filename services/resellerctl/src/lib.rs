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

/// Adds `authorization: Bearer <token>` to every call, and a `traceparent` that starts a
/// new trace (W3C trace context): a portal that exports traces records the call, and
/// everything it caused, under that trace ID.
#[derive(Debug, Clone)]
pub struct Bearer {
    authorization: AsciiMetadataValue,
    print_trace_ids: bool,
}

impl Bearer {
    /// The interceptor sending `token` (the JWT alone, without `Bearer `).
    ///
    /// # Errors
    /// When the token holds characters a header value cannot hold.
    pub fn new(token: &str) -> Result<Self, InvalidMetadataValue> {
        Ok(Self {
            authorization: format!("Bearer {token}").parse()?,
            print_trace_ids: false,
        })
    }

    /// Prints each call's trace ID to standard error (`resellerctl --verbose`).
    #[must_use]
    pub fn print_trace_ids(mut self, print: bool) -> Self {
        self.print_trace_ids = print;
        self
    }
}

impl Interceptor for Bearer {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        let trace = reseller_kit::trace_context::NewTrace::new();
        let traceparent = trace
            .traceparent
            .parse()
            .map_err(|_| Status::internal("a traceparent is plain ASCII"))?;
        let metadata = request.metadata_mut();
        metadata.insert("authorization", self.authorization.clone());
        metadata.insert(reseller_kit::trace_context::TRACEPARENT, traceparent);
        if self.print_trace_ids {
            eprintln!("trace ID: {}", trace.trace_id);
        }
        Ok(request)
    }
}

/// A channel that authenticates.
pub type Authed = InterceptedService<Channel, Bearer>;
