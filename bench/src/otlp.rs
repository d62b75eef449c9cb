//! An OTLP trace receiver the bench hosts itself, so that a run with tracing on really
//! exports its spans (to a loopback port, as a collector next to the service would
//! receive them) and the bench can tell that it did.
//!
//! One port serves both OTLP transports, whichever the services' exporter speaks: gRPC
//! (`opentelemetry.proto.collector.trace.v1.TraceService/Export`, HTTP/2) and HTTP
//! (`POST /v1/traces`, a protobuf `ExportTraceServiceRequest`, HTTP/1.1 or HTTP/2), so
//! `OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:<port>` fits either exporter. It counts
//! export requests, spans and distinct trace IDs, and keeps nothing else.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use anyhow::Context;
use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
    trace_service_server::{TraceService, TraceServiceServer},
};
use prost::Message;
use serde_json::{Value, json};
use tokio::task::JoinHandle;

/// Exports bigger than this are refused (the SDK's batches are far smaller).
const MAX_EXPORT_BYTES: usize = 64 * 1024 * 1024;

/// What the receiver has counted since it started.
#[derive(Debug, Default)]
struct Tally {
    grpc_requests: u64,
    http_requests: u64,
    /// Requests that could not be decoded (HTTP only; tonic answers gRPC's itself).
    rejected_requests: u64,
    spans: u64,
    trace_ids: HashSet<Vec<u8>>,
    /// Spans per `service.name` resource attribute.
    spans_by_service: BTreeMap<String, u64>,
}

impl Tally {
    fn add(&mut self, request: &ExportTraceServiceRequest) {
        for resource_spans in &request.resource_spans {
            let service = resource_spans
                .resource
                .as_ref()
                .and_then(|r| r.attributes.iter().find(|a| a.key == "service.name"))
                .and_then(|a| a.value.as_ref())
                .and_then(|v| match &v.value {
                    Some(
                        opentelemetry_proto::tonic::common::v1::any_value::Value::StringValue(s),
                    ) => Some(s.clone()),
                    _ => None,
                })
                .unwrap_or_else(|| "(no service.name)".into());
            for scope_spans in &resource_spans.scope_spans {
                for span in &scope_spans.spans {
                    self.spans += 1;
                    *self.spans_by_service.entry(service.clone()).or_default() += 1;
                    if !self.trace_ids.contains(&span.trace_id) {
                        self.trace_ids.insert(span.trace_id.clone());
                    }
                }
            }
        }
    }
}

/// The receiver's counts at one moment; two of them subtract ([`Counts::since`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counts {
    /// Export requests received over gRPC.
    pub grpc_requests: u64,
    /// Export requests received over HTTP (`POST /v1/traces`).
    pub http_requests: u64,
    /// HTTP export requests refused (not a protobuf `ExportTraceServiceRequest`).
    pub rejected_requests: u64,
    /// Spans received.
    pub spans: u64,
    /// Distinct trace IDs among them (trace IDs are random, so the distinct IDs of two
    /// windows add up).
    pub traces: u64,
    /// Spans per `service.name`.
    pub spans_by_service: BTreeMap<String, u64>,
}

impl Counts {
    /// What was received after `earlier` (taken from the same receiver).
    pub fn since(&self, earlier: &Counts) -> Counts {
        Counts {
            grpc_requests: self.grpc_requests - earlier.grpc_requests,
            http_requests: self.http_requests - earlier.http_requests,
            rejected_requests: self.rejected_requests - earlier.rejected_requests,
            spans: self.spans - earlier.spans,
            traces: self.traces - earlier.traces,
            spans_by_service: self
                .spans_by_service
                .iter()
                .map(|(k, v)| (k.clone(), v - earlier.spans_by_service.get(k).unwrap_or(&0)))
                .filter(|(_, v)| *v > 0)
                .collect(),
        }
    }

    /// Adds `other`'s counts to these.
    pub fn add(&mut self, other: &Counts) {
        self.grpc_requests += other.grpc_requests;
        self.http_requests += other.http_requests;
        self.rejected_requests += other.rejected_requests;
        self.spans += other.spans;
        self.traces += other.traces;
        for (k, v) in &other.spans_by_service {
            *self.spans_by_service.entry(k.clone()).or_default() += v;
        }
    }

    /// As JSON: `{export_requests_grpc, export_requests_http, rejected_requests, spans,
    /// traces, spans_by_service}`.
    pub fn to_json(&self) -> Value {
        json!({
            "export_requests_grpc": self.grpc_requests,
            "export_requests_http": self.http_requests,
            "rejected_requests": self.rejected_requests,
            "spans": self.spans,
            "traces": self.traces,
            "spans_by_service": self.spans_by_service,
        })
    }
}

#[derive(Debug, Clone, Default)]
struct Shared(Arc<Mutex<Tally>>);

impl Shared {
    fn record(&self, grpc: bool, request: &ExportTraceServiceRequest) {
        if let Ok(mut tally) = self.0.lock() {
            if grpc {
                tally.grpc_requests += 1;
            } else {
                tally.http_requests += 1;
            }
            tally.add(request);
        }
    }

    fn reject(&self) {
        if let Ok(mut tally) = self.0.lock() {
            tally.rejected_requests += 1;
        }
    }
}

#[tonic::async_trait]
impl TraceService for Shared {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.record(true, request.get_ref());
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

/// `POST /v1/traces`: OTLP/HTTP with a binary protobuf body (the JSON encoding is
/// refused with 415, as a collector without it would).
async fn http_export(
    axum::extract::State(shared): axum::extract::State<Shared>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if !content_type.starts_with("application/x-protobuf") {
        shared.reject();
        return (
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "this receiver takes application/x-protobuf only",
        )
            .into_response();
    }
    match ExportTraceServiceRequest::decode(body) {
        Ok(request) => {
            shared.record(false, &request);
            let answer = ExportTraceServiceResponse {
                partial_success: None,
            };
            (
                [(header::CONTENT_TYPE, "application/x-protobuf")],
                answer.encode_to_vec(),
            )
                .into_response()
        }
        Err(err) => {
            shared.reject();
            (StatusCode::BAD_REQUEST, format!("not an export: {err}")).into_response()
        }
    }
}

/// The running receiver; it stops when dropped.
#[derive(Debug)]
pub struct Receiver {
    addr: SocketAddr,
    shared: Shared,
    task: JoinHandle<()>,
}

impl Receiver {
    /// Starts serving on a free loopback port.
    ///
    /// # Errors
    /// When no port can be bound.
    pub async fn start() -> anyhow::Result<Self> {
        let shared = Shared::default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .context("binding the OTLP receiver")?;
        let addr = listener.local_addr()?;
        let grpc =
            TraceServiceServer::new(shared.clone()).max_decoding_message_size(MAX_EXPORT_BYTES);
        let router = tonic::service::Routes::new(grpc)
            .into_axum_router()
            .route(
                "/v1/traces",
                axum::routing::post(http_export).with_state(shared.clone()),
            )
            .layer(axum::extract::DefaultBodyLimit::max(MAX_EXPORT_BYTES));
        // axum's server speaks HTTP/1.1 and HTTP/2 without TLS (prior knowledge, as
        // gRPC's clients do) on the same port.
        let task = tokio::spawn(async move {
            if let Err(err) = axum::serve(listener, router).await {
                eprintln!("    the OTLP receiver stopped: {err}");
            }
        });
        Ok(Self { addr, shared, task })
    }

    /// `OTEL_EXPORTER_OTLP_ENDPOINT` for the services: `http://127.0.0.1:<port>` (the
    /// gRPC exporter calls it as is; the HTTP exporter appends `/v1/traces`).
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// What it has received so far.
    pub fn counts(&self) -> Counts {
        let Ok(tally) = self.shared.0.lock() else {
            return Counts::default();
        };
        Counts {
            grpc_requests: tally.grpc_requests,
            http_requests: tally.http_requests,
            rejected_requests: tally.rejected_requests,
            spans: tally.spans,
            traces: tally.trace_ids.len() as u64,
            spans_by_service: tally.spans_by_service.clone(),
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[cfg(test)]
mod tests {
    use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
    use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};

    use super::*;

    /// An export of `spans` spans of `service`, the span `i` in trace `trace(i)`.
    fn export(
        service: &str,
        spans: usize,
        trace: impl Fn(usize) -> u8,
    ) -> ExportTraceServiceRequest {
        ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![KeyValue {
                        key: "service.name".into(),
                        value: Some(AnyValue {
                            value: Some(any_value::Value::StringValue(service.into())),
                        }),
                        ..Default::default()
                    }],
                    ..Default::default()
                }),
                scope_spans: vec![ScopeSpans {
                    spans: (0..spans)
                        .map(|i| Span {
                            trace_id: vec![trace(i); 16],
                            span_id: vec![i as u8 + 1; 8],
                            name: "DeleteDevices".into(),
                            ..Default::default()
                        })
                        .collect(),
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
    }

    /// Over both transports, as the SDK's gRPC and HTTP exporters send them.
    #[tokio::test]
    async fn counts_spans_and_traces_over_grpc_and_http() -> anyhow::Result<()> {
        let receiver = Receiver::start().await?;
        let mut grpc = TraceServiceClient::connect(receiver.endpoint()).await?;
        grpc.export(export("device-service", 3, |i| (i % 2) as u8 + 1))
            .await?;

        let before_http = receiver.counts();
        let body = export("reseller-portal", 2, |_| 7).encode_to_vec();
        let http = crate::scrape::http_client();
        let url = format!("{}/v1/traces", receiver.endpoint());
        let (status, answer) =
            crate::scrape::post(&http, &url, "application/x-protobuf", body).await?;
        assert_eq!(status, 200);
        assert_eq!(
            ExportTraceServiceResponse::decode(answer)?,
            ExportTraceServiceResponse::default()
        );
        let (status, _) =
            crate::scrape::post(&http, &url, "application/json", b"{}".to_vec()).await?;
        assert_eq!(status, 415);

        let counts = receiver.counts();
        assert_eq!(counts.grpc_requests, 1);
        assert_eq!(counts.http_requests, 1);
        assert_eq!(counts.rejected_requests, 1);
        assert_eq!(counts.spans, 5);
        assert_eq!(counts.traces, 3);
        assert_eq!(counts.spans_by_service["device-service"], 3);
        let http_only = counts.since(&before_http);
        assert_eq!(http_only.spans, 2);
        assert_eq!(http_only.traces, 1);
        assert_eq!(
            http_only.spans_by_service,
            BTreeMap::from([("reseller-portal".to_owned(), 2)])
        );
        Ok(())
    }
}
