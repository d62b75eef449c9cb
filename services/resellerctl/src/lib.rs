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

/// Adds `authorization: Bearer <token>` to every call; with
/// [`Bearer::print_trace_ids`], also a `traceparent` (W3C trace context) that starts a new
/// trace, flagged sampled, and prints its ID: a portal that exports traces records the
/// call, and everything it caused, under that ID.
///
/// Without it no `traceparent` is sent, so the portal's own sampler
/// (`OTEL_TRACES_SAMPLER`) decides whether the call is traced. A sampled `traceparent` on
/// every call would oblige a parent-based sampler (the OpenTelemetry default) to record
/// every call, whatever ratio the operator set; one flagged not sampled would forbid it.
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

    /// Starts a sampled trace for each call and prints its ID to standard error
    /// (`resellerctl --verbose`).
    #[must_use]
    pub fn print_trace_ids(mut self, print: bool) -> Self {
        self.print_trace_ids = print;
        self
    }
}

impl Interceptor for Bearer {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        let metadata = request.metadata_mut();
        metadata.insert("authorization", self.authorization.clone());
        if self.print_trace_ids {
            let trace = reseller_kit::trace_context::NewTrace::new();
            let traceparent = trace
                .traceparent
                .parse()
                .map_err(|_| Status::internal("a traceparent is plain ASCII"))?;
            metadata.insert(reseller_kit::trace_context::TRACEPARENT, traceparent);
            eprintln!("trace ID: {}", trace.trace_id);
        }
        Ok(request)
    }
}

/// A channel that authenticates.
pub type Authed = InterceptedService<Channel, Bearer>;

#[cfg(test)]
mod tests {
    use super::*;

    fn traceparent_sent(bearer: &mut Bearer) -> Option<String> {
        let request = bearer.call(Request::new(())).expect("intercepted");
        assert!(request.metadata().get("authorization").is_some());
        request
            .metadata()
            .get(reseller_kit::trace_context::TRACEPARENT)
            .map(|v| v.to_str().unwrap().to_owned())
    }

    #[test]
    fn a_trace_is_started_only_when_its_id_is_printed() {
        let mut quiet = Bearer::new("token").unwrap();
        assert_eq!(
            traceparent_sent(&mut quiet),
            None,
            "the portal's sampler decides"
        );
        let mut verbose = Bearer::new("token").unwrap().print_trace_ids(true);
        let sent = traceparent_sent(&mut verbose).expect("a traceparent");
        assert!(sent.starts_with("00-") && sent.ends_with("-01"), "{sent}");
    }
}
