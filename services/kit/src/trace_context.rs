//! Trace context across processes: the W3C `traceparent`
//! (`00-<32 hex trace ID>-<16 hex span ID>-<2 hex flags>`) of a span, and a span's parent
//! taken from one.
//!
//! Where it travels: a gRPC call's `traceparent` metadata ([`crate::rpc_layer`]), an
//! outbox row's `traceparent` column ([`crate::outbox`]) and its event's NATS header
//! `traceparent` ([`crate::subjects::headers::TRACEPARENT`]), read by the consumer that
//! applies it ([`crate::inbox`]).
//!
//! Everything here does nothing when the process exports no traces
//! ([`crate::telemetry::traces_enabled`]): no context is then taken or passed on.

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::TraceContextExt;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::telemetry::traces_enabled;

/// The header (gRPC metadata, NATS header) that carries the context.
pub const TRACEPARENT: &str = "traceparent";

/// The `traceparent` of the current span; `None` when traces are off or there is no
/// span.
pub fn current() -> Option<String> {
    traceparent_of(&Span::current())
}

/// The `traceparent` of `span`; `None` when traces are off or `span` is disabled.
pub fn traceparent_of(span: &Span) -> Option<String> {
    if !traces_enabled() {
        return None;
    }
    let context = span.context();
    if !context.span().span_context().is_valid() {
        return None;
    }
    let mut carrier = Carrier(None);
    TraceContextPropagator::new().inject_context(&context, &mut carrier);
    carrier.0
}

/// The trace ID of `span` (32 hex digits), for logs; `None` when traces are off.
pub fn trace_id_of(span: &Span) -> Option<String> {
    if !traces_enabled() {
        return None;
    }
    let context = span.context();
    let span_context = context.span().span_context().clone();
    span_context
        .is_valid()
        .then(|| span_context.trace_id().to_string())
}

/// Whether `traceparent` is a valid context whose sampled flag is set: a caller that
/// records this trace.
pub fn is_sampled(traceparent: &str) -> bool {
    let parent = TraceContextPropagator::new().extract(&Carrier(Some(traceparent.to_owned())));
    let span_context = parent.span().span_context().clone();
    span_context.is_valid() && span_context.is_sampled()
}

/// Makes the span `traceparent` names the parent of `span`, which must not have been
/// entered yet. Does nothing when traces are off, or when `traceparent` is not a valid
/// one (a caller's garbage starts a new trace instead).
pub fn set_parent(span: &Span, traceparent: &str) {
    if !traces_enabled() {
        return;
    }
    let parent = TraceContextPropagator::new().extract(&Carrier(Some(traceparent.to_owned())));
    if parent.span().span_context().is_valid() {
        // Fails only for a disabled or already started span: it then keeps its parent.
        let _ = span.set_parent(parent);
    }
}

/// The context a client sends to start a trace of its own: a fresh `traceparent` (random
/// trace and span IDs, sampled) and its trace ID. Needs no traces in the client's process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewTrace {
    /// `00-<trace ID>-<span ID>-01`, for the call's `traceparent` metadata.
    pub traceparent: String,
    /// The trace ID, 32 hex digits: what to look the trace (and the access-log line) up by.
    pub trace_id: String,
}

impl NewTrace {
    /// A new trace.
    pub fn new() -> Self {
        use opentelemetry_sdk::trace::{IdGenerator, RandomIdGenerator};
        let ids = RandomIdGenerator::default();
        let trace_id = ids.new_trace_id().to_string();
        let span_id = ids.new_span_id();
        Self {
            traceparent: format!("00-{trace_id}-{span_id}-01"),
            trace_id,
        }
    }
}

impl Default for NewTrace {
    fn default() -> Self {
        Self::new()
    }
}

/// A carrier of the one header this module reads and writes.
struct Carrier(Option<String>);

impl Injector for Carrier {
    fn set(&mut self, key: &str, value: String) {
        if key == TRACEPARENT {
            self.0 = Some(value);
        }
    }
}

impl Extractor for Carrier {
    fn get(&self, key: &str) -> Option<&str> {
        (key == TRACEPARENT).then_some(self.0.as_deref()).flatten()
    }

    fn keys(&self) -> Vec<&str> {
        vec![TRACEPARENT]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_traces_nothing_is_taken_or_passed_on() {
        // No OpenTelemetry layer is installed in the kit's unit tests.
        let span = tracing::info_span!("x");
        set_parent(
            &span,
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        );
        assert_eq!(traceparent_of(&span), None);
        assert_eq!(trace_id_of(&span), None);
        assert_eq!(current(), None);
    }

    #[test]
    fn a_new_trace_is_a_valid_sampled_traceparent() {
        let trace = NewTrace::new();
        let cx = TraceContextPropagator::new().extract(&Carrier(Some(trace.traceparent.clone())));
        let span_context = cx.span().span_context().clone();
        assert!(span_context.is_valid() && span_context.is_sampled());
        assert_eq!(span_context.trace_id().to_string(), trace.trace_id);
        assert_ne!(NewTrace::new().trace_id, trace.trace_id);
    }

    #[test]
    fn the_carrier_holds_only_the_traceparent() {
        let value = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        let cx = TraceContextPropagator::new().extract(&Carrier(Some(value.into())));
        assert_eq!(
            cx.span().span_context().trace_id().to_string(),
            "0af7651916cd43dd8448eb211c80319c"
        );
        let mut carrier = Carrier(None);
        TraceContextPropagator::new().inject_context(&cx, &mut carrier);
        assert_eq!(carrier.0.as_deref(), Some(value));
        let garbage = TraceContextPropagator::new().extract(&Carrier(Some("junk".into())));
        assert!(!garbage.span().span_context().is_valid());
    }
}
