//! What every RPC leaves behind: a span, the gRPC metrics, and one access-log line. A
//! tower layer on the whole gRPC server ([`crate::grpc::GrpcServer::serve`]), so no
//! handler does any of it.
//!
//! For each call of a `reseller.v1` method the layer
//! - opens a span (level INFO, OpenTelemetry name `<service>/<method>` such as
//!   `reseller.v1.DeviceService/DeleteDevices`, kind server) whose parent is the call's
//!   `traceparent` metadata when it has a valid one; the handler runs in it, so what the
//!   handler writes to the outbox carries it on ([`crate::trace_context`]). With traces
//!   exported, a read (a method named `Get…`, `List…`, `Find…` or `Export…`) gets a span
//!   only within a caller's sampled trace, unless `TRACE_READS=all`: a read writes
//!   nothing that travels on, so its trace would be that one span, which the metrics and
//!   the access log already describe, and a portal's polls of its views would otherwise
//!   be most of the spans a process makes and exports (each costs CPU on every call,
//!   sampled or not; `README.md`, "What metrics and tracing cost");
//! - counts it in `reseller_grpc_requests_total`, `reseller_grpc_request_duration_seconds`
//!   and `reseller_grpc_requests_in_flight` (labels `service`, `method`, and `code` once
//!   the call ended), through the `metrics` facade: nothing is recorded unless the program
//!   installed a recorder;
//! - writes one access-log line: a `tracing` event of target `access` at level INFO with
//!   `service`, `method`, `principal.role`, `principal.subject`, `actor`, `code`
//!   (UPPER_SNAKE), `duration_ms` and `trace_id`. Never the token, a request or an answer:
//!   a line says who called what and how it went, not with which devices.
//!
//! A call ends when its answer's body ends, not when the handler returns: the code of an
//! OK unary answer is in its trailers, and a streamed answer (the CSV downloads) can fail
//! midway. An answer that ends before it was sent to the end (the client went away) is
//! `CANCELLED`.
//!
//! The principal is known only once the [`JwtAuth`](crate::auth::JwtAuth) interceptor,
//! inside this layer, verified the token: the layer puts an empty [`PrincipalSlot`] in the
//! request's extensions and the interceptor fills it. A call it refused has no principal.
//!
//! Health checks (`grpc.health.v1.Health`) and server reflection pass through untouched:
//! probes every few seconds, and health watches open for hours, would drown the access
//! log and skew the API's error ratio and in-flight count, and they carry no work worth
//! a trace. A path that names no method of `reseller.v1` (a caller's typo, answered
//! `UNIMPLEMENTED`) is labelled `unknown`, so that callers cannot grow the metrics' label
//! sets without bound.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Instant;

use http_body::{Body, Frame, SizeHint};
use prost::Message;
use tonic::Code;
use tower::Layer;
use tower_service::Service;
use tracing::Span;

use crate::auth::Principal;
use crate::trace_context;

/// Adds [`RpcService`] around the gRPC server's routes.
#[derive(Debug, Clone, Copy, Default)]
pub struct RpcLayer;

impl<S> Layer<S> for RpcLayer {
    type Service = RpcService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RpcService { inner }
    }
}

/// The gRPC routes, observed (see the module docs).
#[derive(Debug, Clone)]
pub struct RpcService<S> {
    inner: S,
}

/// Where the auth interceptor leaves the principal it verified, for the access log: put
/// in a request's extensions by [`RpcLayer`], filled by
/// [`JwtAuth`](crate::auth::JwtAuth).
#[derive(Debug, Clone, Default)]
pub struct PrincipalSlot(Arc<OnceLock<Principal>>);

impl PrincipalSlot {
    /// Records `principal` as the caller (the first one recorded stays).
    pub fn fill(&self, principal: &Principal) {
        let _ = self.0.set(principal.clone());
    }

    /// The caller, once known.
    pub fn get(&self) -> Option<&Principal> {
        self.0.get()
    }
}

impl<S, ReqBody, ResBody> Service<http::Request<ReqBody>> for RpcService<S>
where
    S: Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    ResBody: Body + Unpin,
{
    type Response = http::Response<RpcBody<ResBody>>;
    type Error = S::Error;
    type Future = RpcFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<ReqBody>) -> Self::Future {
        let Some(method) = Method::of(request.uri().path()) else {
            return RpcFuture {
                inner: self.inner.call(request),
                call: None,
            };
        };
        let parent = request
            .headers()
            .get(trace_context::TRACEPARENT)
            .and_then(|v| v.to_str().ok());
        let span = if method.read
            && crate::telemetry::traces_enabled()
            && !crate::telemetry::traces_every_read()
            && !parent.is_some_and(trace_context::is_sampled)
        {
            // A read outside a caller's trace (see the module docs).
            Span::none()
        } else {
            let span = tracing::info_span!(
                "rpc",
                otel.name = method.full,
                otel.kind = "server",
                rpc.system = "grpc",
                rpc.service = method.service,
                rpc.method = method.method,
                rpc.grpc.status_code = tracing::field::Empty,
                otel.status_code = tracing::field::Empty,
            );
            if let Some(parent) = parent {
                trace_context::set_parent(&span, parent);
            }
            span
        };
        let principal = PrincipalSlot::default();
        request.extensions_mut().insert(principal.clone());
        let call = Call::start(method, span, principal);
        // The handler's future is made and polled in the span.
        let inner = call.span.in_scope(|| self.inner.call(request));
        RpcFuture {
            inner,
            call: Some(call),
        }
    }
}

pin_project_lite::pin_project! {
    /// The answer of an [`RpcService`] call: the inner answer, its body observed.
    pub struct RpcFuture<F> {
        #[pin]
        inner: F,
        call: Option<Call>,
    }
}

impl<F, ResBody, E> Future for RpcFuture<F>
where
    F: Future<Output = Result<http::Response<ResBody>, E>>,
{
    type Output = Result<http::Response<RpcBody<ResBody>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let polled = {
            let _entered = this.call.as_ref().map(|call| call.span.enter());
            this.inner.poll(cx)
        };
        let Poll::Ready(answer) = polled else {
            return Poll::Pending;
        };
        let mut call = this.call.take();
        Poll::Ready(match answer {
            Ok(response) => {
                if let Some(call) = call.as_mut() {
                    // An error, or an empty answer, is all headers ("trailers-only").
                    call.header_code = grpc_status(response.headers());
                }
                Ok(response.map(|inner| RpcBody { inner, call }))
            }
            Err(err) => {
                if let Some(call) = call {
                    call.end(Code::Unknown);
                }
                Err(err)
            }
        })
    }
}

/// An answer's body, ending its call when it ends (see the module docs).
#[derive(Debug)]
pub struct RpcBody<B> {
    inner: B,
    call: Option<Call>,
}

impl<B> Body for RpcBody<B>
where
    B: Body + Unpin,
{
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.get_mut();
        let polled = {
            // A streamed answer is produced as it is polled: in the call's span.
            let _entered = this.call.as_ref().map(|call| call.span.enter());
            Pin::new(&mut this.inner).poll_frame(cx)
        };
        let ended = match &polled {
            Poll::Pending => None,
            Poll::Ready(Some(Ok(frame))) => frame.trailers_ref().map(|trailers| {
                grpc_status(trailers)
                    .or(this.call.as_ref().and_then(|c| c.header_code))
                    .unwrap_or(Code::Unknown)
            }),
            Poll::Ready(Some(Err(_))) => Some(Code::Unknown),
            Poll::Ready(None) => Some(
                this.call
                    .as_ref()
                    .and_then(|c| c.header_code)
                    .unwrap_or(Code::Unknown),
            ),
        };
        if let Some(code) = ended
            && let Some(call) = this.call.take()
        {
            call.end(code);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// One call in flight; ends once, as [`Call::end`] or when dropped unfinished.
#[derive(Debug)]
struct Call {
    method: &'static Method,
    span: Span,
    principal: PrincipalSlot,
    started: Instant,
    /// The code in the answer's headers, if it had one there.
    header_code: Option<Code>,
    ended: bool,
}

impl Call {
    fn start(method: &'static Method, span: Span, principal: PrincipalSlot) -> Self {
        if let Some(metrics) = method.metrics() {
            metrics.in_flight.increment(1.0);
        }
        Self {
            method,
            span,
            principal,
            started: Instant::now(),
            header_code: None,
            ended: false,
        }
    }

    /// Counts the call with `code`, closes its span and writes its access-log line.
    fn end(mut self, code: Code) {
        self.finish(code);
    }

    fn finish(&mut self, code: Code) {
        if std::mem::replace(&mut self.ended, true) {
            return;
        }
        let elapsed = self.started.elapsed();
        let method = self.method;
        let code_name = code_name(code);
        if let Some(metrics) = method.metrics() {
            let (requests, duration) = metrics.ended(method, code);
            requests.increment(1);
            duration.record(elapsed.as_secs_f64());
            metrics.in_flight.decrement(1.0);
        }
        self.span.record("rpc.grpc.status_code", code as i32);
        if is_server_error(code) {
            self.span.record("otel.status_code", "ERROR");
        }
        // The access log line, when the log takes it (`RUST_LOG` may leave it out, and
        // then nothing is spent on its fields).
        if !tracing::enabled!(target: "access", tracing::Level::INFO) {
            return;
        }
        let trace_id = trace_context::trace_id_of(&self.span);
        let principal = self.principal.get();
        let subject = principal.map(|p| p.subject.as_str());
        // Outside the call's span: the line carries everything it needs itself.
        tracing::info!(
            target: "access",
            service = method.service,
            method = method.method,
            principal.role = principal.map(|p| p.role.as_str()),
            principal.subject = subject,
            // Who acted for the principal: the person the token names, or the subject
            // (`Principal::actor`).
            actor = principal.map(Principal::actor),
            code = code_name,
            duration_ms = elapsed.as_secs_f64() * 1000.0,
            trace_id = trace_id.as_deref(),
            "rpc"
        );
    }
}

impl Drop for Call {
    fn drop(&mut self) {
        // Dropped before its answer ended: an error answer that was all headers, or a
        // call the client abandoned.
        let code = self.header_code.unwrap_or(Code::Cancelled);
        self.finish(code);
    }
}

/// A `reseller.v1` method, as labels and span names spell it.
#[derive(Debug)]
struct Method {
    /// `reseller.v1.DeviceService/DeleteDevices`.
    full: &'static str,
    /// `reseller.v1.DeviceService`.
    service: &'static str,
    /// `DeleteDevices`.
    method: &'static str,
    /// A read: its name starts with `Get`, `List`, `Find` or `Export`.
    read: bool,
    /// Its metric handles, once metrics are recorded.
    metrics: OnceLock<MethodMetrics>,
}

/// How the names of the contract's reads begin; every other method is a command.
const READ_PREFIXES: [&str; 4] = ["Get", "List", "Find", "Export"];

/// A method's metric handles, registered on its first call once the process records
/// metrics ([`crate::metrics::recording`]): the `metrics` macros hash the name and labels
/// and look the series up on every call.
#[derive(Debug)]
struct MethodMetrics {
    in_flight: metrics::Gauge,
    /// Requests and their duration by the code they ended with (`Code as usize`: the
    /// seventeen codes are 0-16).
    ended: [OnceLock<(metrics::Counter, metrics::Histogram)>; 17],
}

impl MethodMetrics {
    fn new(method: &Method) -> Self {
        Self {
            in_flight: metrics::gauge!(
                crate::metrics::GRPC_REQUESTS_IN_FLIGHT,
                "service" => method.service,
                "method" => method.method,
            ),
            ended: [const { OnceLock::new() }; 17],
        }
    }

    /// The handles of `method`'s calls that ended with `code`.
    fn ended(&self, method: &Method, code: Code) -> &(metrics::Counter, metrics::Histogram) {
        self.ended[code as usize].get_or_init(|| {
            let labels = [
                ("service", method.service),
                ("method", method.method),
                ("code", code_name(code)),
            ];
            (
                metrics::counter!(crate::metrics::GRPC_REQUESTS, &labels),
                metrics::histogram!(crate::metrics::GRPC_REQUEST_DURATION, &labels),
            )
        })
    }
}

/// Paths of services the layer lets through untouched (see the module docs).
const UNOBSERVED: [&str; 2] = ["/grpc.health.v1.Health/", "/grpc.reflection."];

/// A path that names no method of `reseller.v1`.
static UNKNOWN: Method = Method {
    full: "unknown",
    service: "unknown",
    method: "unknown",
    read: false,
    metrics: OnceLock::new(),
};

impl Method {
    /// The method `path` (`/<service>/<method>`) calls; `None` for a path the layer lets
    /// through untouched.
    fn of(path: &str) -> Option<&'static Method> {
        if UNOBSERVED.iter().any(|prefix| path.starts_with(prefix)) {
            return None;
        }
        Some(methods().get(path).unwrap_or(&UNKNOWN))
    }

    /// Its metric handles; `None` while the process records no metrics.
    fn metrics(&self) -> Option<&MethodMetrics> {
        if !crate::metrics::recording() {
            return None;
        }
        Some(self.metrics.get_or_init(|| MethodMetrics::new(self)))
    }
}

/// Every method of `reseller.v1` by path, read once from the contract's descriptors.
fn methods() -> &'static HashMap<String, Method> {
    static METHODS: OnceLock<HashMap<String, Method>> = OnceLock::new();
    METHODS.get_or_init(|| {
        let descriptors =
            prost_types::FileDescriptorSet::decode(reseller_proto::FILE_DESCRIPTOR_SET)
                .expect("the contract's descriptors decode");
        let mut methods = HashMap::new();
        for file in &descriptors.file {
            for service in &file.service {
                let service_name = format!("{}.{}", file.package(), service.name());
                for method in &service.method {
                    let full = format!("{service_name}/{}", method.name());
                    // A few dozen strings, made once for the life of the process: the
                    // labels borrow them for as long.
                    let full: &'static str = Box::leak(full.into_boxed_str());
                    let (service, method) = full.split_once('/').expect("a slash");
                    methods.insert(
                        format!("/{full}"),
                        Method {
                            full,
                            service,
                            method,
                            read: READ_PREFIXES.iter().any(|p| method.starts_with(p)),
                            metrics: OnceLock::new(),
                        },
                    );
                }
            }
        }
        methods
    })
}

/// The code a `grpc-status` header or trailer says.
fn grpc_status(headers: &http::HeaderMap) -> Option<Code> {
    headers
        .get("grpc-status")
        .map(|value| Code::from_bytes(value.as_bytes()))
}

/// Codes that say the server failed, for the span's status (OpenTelemetry's gRPC
/// conventions for servers); the others are the caller's.
fn is_server_error(code: Code) -> bool {
    matches!(
        code,
        Code::Unknown
            | Code::DeadlineExceeded
            | Code::Unimplemented
            | Code::Internal
            | Code::Unavailable
            | Code::DataLoss
    )
}

/// A code as gRPC's status-code list spells it: `OK`, `NOT_FOUND`.
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, VecDeque};
    use std::convert::Infallible;

    use bytes::Bytes;
    use tracing_subscriber::layer::{Context as LayerContext, SubscriberExt};

    use super::*;

    /// An answer's body: these frames, then the end.
    struct Frames(VecDeque<Frame<Bytes>>);

    impl Body for Frames {
        type Data = Bytes;
        type Error = Infallible;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
            Poll::Ready(self.0.pop_front().map(Ok))
        }

        fn is_end_stream(&self) -> bool {
            self.0.is_empty()
        }
    }

    fn trailers(code: &str) -> Frame<Bytes> {
        let mut trailers = http::HeaderMap::new();
        trailers.insert("grpc-status", code.parse().unwrap());
        Frame::trailers(trailers)
    }

    /// The fields of each access-log event.
    #[derive(Clone, Default)]
    struct AccessLog(Arc<std::sync::Mutex<Vec<BTreeMap<String, String>>>>);

    impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for AccessLog {
        fn on_event(&self, event: &tracing::Event<'_>, _: LayerContext<'_, S>) {
            if event.metadata().target() == "access" {
                let mut fields = Fields::default();
                event.record(&mut fields);
                self.0.lock().unwrap().push(fields.0);
            }
        }
    }

    #[derive(Default)]
    struct Fields(BTreeMap<String, String>);

    impl tracing::field::Visit for Fields {
        fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
            self.0.insert(field.name().to_owned(), value.to_owned());
        }

        fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
            self.0.insert(field.name().to_owned(), format!("{value:?}"));
        }
    }

    /// Calls `path` on a service answering `headers_code` in its headers and `frames`,
    /// reads `read` frames of the answer, drops it, and returns the access-log lines.
    fn call(
        path: &str,
        headers_code: Option<&str>,
        frames: Vec<Frame<Bytes>>,
        read: usize,
    ) -> Vec<BTreeMap<String, String>> {
        let log = AccessLog::default();
        let _default =
            tracing::subscriber::set_default(tracing_subscriber::registry().with(log.clone()));
        let headers_code = headers_code.map(str::to_owned);
        let mut frames = Some(frames);
        let answer = move |_request: http::Request<()>| {
            let frames = frames.take().unwrap_or_default();
            let mut response = http::Response::new(Frames(frames.into()));
            if let Some(code) = &headers_code {
                response
                    .headers_mut()
                    .insert("grpc-status", code.parse().unwrap());
            }
            std::future::ready(Ok::<_, Infallible>(response))
        };
        let mut service = RpcLayer.layer(tower::service_fn(answer));
        let request = http::Request::builder().uri(path).body(()).unwrap();
        futures::executor::block_on(async {
            let mut body = service.call(request).await.unwrap().into_body();
            for _ in 0..read {
                std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await;
            }
        });
        log.0.lock().unwrap().clone()
    }

    const DELETE: &str = "/reseller.v1.DeviceService/DeleteDevices";

    #[test]
    fn an_ok_answer_is_logged_once_from_its_trailers() {
        let data = || Frame::data(Bytes::from_static(b"x"));
        let lines = call(DELETE, None, vec![data(), trailers("0")], 3);
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert_eq!(lines[0]["code"], "OK");
        assert_eq!(lines[0]["service"], "reseller.v1.DeviceService");
        assert_eq!(lines[0]["method"], "DeleteDevices");
        assert!(!lines[0].contains_key("principal.subject"));
    }

    #[test]
    fn an_error_answer_of_headers_only_is_logged_when_dropped() {
        let lines = call(DELETE, Some("5"), vec![], 0);
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert_eq!(lines[0]["code"], "NOT_FOUND");
    }

    #[test]
    fn a_stream_failing_midway_has_its_trailers_code() {
        let data = || Frame::data(Bytes::from_static(b"row\r\n"));
        let lines = call(DELETE, None, vec![data(), data(), trailers("13")], 4);
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert_eq!(lines[0]["code"], "INTERNAL");
    }

    #[test]
    fn an_answer_dropped_before_its_end_is_cancelled() {
        let data = || Frame::data(Bytes::from_static(b"row\r\n"));
        let lines = call(DELETE, None, vec![data(), data(), trailers("0")], 1);
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert_eq!(lines[0]["code"], "CANCELLED");
    }

    #[test]
    fn health_checks_are_not_logged() {
        let lines = call("/grpc.health.v1.Health/Check", None, vec![trailers("0")], 2);
        assert!(lines.is_empty(), "{lines:?}");
    }

    #[test]
    fn paths_name_contract_methods_or_unknown_and_probes_pass() {
        let method = Method::of("/reseller.v1.DeviceService/DeleteDevices").unwrap();
        assert_eq!(method.full, "reseller.v1.DeviceService/DeleteDevices");
        assert_eq!(method.service, "reseller.v1.DeviceService");
        assert_eq!(method.method, "DeleteDevices");
        assert_eq!(
            Method::of("/reseller.v1.DeviceService/Nope")
                .unwrap()
                .service,
            "unknown"
        );
        assert_eq!(Method::of("/x/y").unwrap().method, "unknown");
        assert!(Method::of("/grpc.health.v1.Health/Check").is_none());
        assert!(Method::of("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo").is_none());
    }

    #[test]
    fn codes_are_upper_snake() {
        assert_eq!(code_name(Code::from_bytes(b"5")), "NOT_FOUND");
        assert_eq!(code_name(Code::from_bytes(b"0")), "OK");
        assert_eq!(code_name(Code::from_bytes(b"16")), "UNAUTHENTICATED");
    }
}
