//! Traces really leave the process (issue 11): with `OTEL_EXPORTER_OTLP_ENDPOINT` set, a
//! program exports its spans over OTLP/gRPC, as the kit's telemetry sets it up for
//! production (the batch processor on its own thread, the tonic exporter), and what is
//! still queued is sent when the program stops, well before the batch's 5-second delay.
//!
//! The collector is a real OTLP/gRPC `TraceService` served in the test, on a free port.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use reseller_kit::config::LogFormat;
use reseller_kit::trace_context::{NewTrace, TRACEPARENT};
use reseller_proto::v1 as pb;
use reseller_tests::TestStack;
use reseller_tests::clients::reseller;
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status};

/// What the collector received.
#[derive(Clone, Default)]
struct Collector(Arc<Mutex<Vec<ExportTraceServiceRequest>>>);

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        self.0.lock().unwrap().push(request.into_inner());
        Ok(Response::new(ExportTraceServiceResponse::default()))
    }
}

impl Collector {
    /// `(service.name, span name, trace ID in hex)` of every span received.
    fn spans(&self) -> Vec<(String, String, String)> {
        let mut spans = Vec::new();
        for request in self.0.lock().unwrap().iter() {
            for resource_spans in &request.resource_spans {
                let service = resource_spans
                    .resource
                    .iter()
                    .flat_map(|r| &r.attributes)
                    .find(|kv| kv.key == "service.name")
                    .and_then(|kv| kv.value.as_ref()?.value.as_ref())
                    .map(|value| match value {
                        AnyValue::StringValue(name) => name.clone(),
                        other => format!("{other:?}"),
                    })
                    .unwrap_or_default();
                for scope in &resource_spans.scope_spans {
                    for span in &scope.spans {
                        let trace_id: String =
                            span.trace_id.iter().map(|b| format!("{b:02x}")).collect();
                        spans.push((service.clone(), span.name.clone(), trace_id));
                    }
                }
            }
        }
        spans
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_are_exported_over_otlp_and_flushed_when_the_program_stops() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let collector = Collector::default();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(collector.clone()))
            .serve_with_incoming(TcpIncoming::from(listener)),
    );
    let telemetry = reseller_kit::telemetry::init_program(
        LogFormat::Text,
        Some(&endpoint),
        "otlp-test-service",
    )
    .expect("the OTLP exporter");
    let stack = TestStack::start().await;

    let trace = NewTrace::new();
    let mut request = tonic::Request::new(pb::ListCustomersRequest::default());
    request
        .metadata_mut()
        .insert(TRACEPARENT, trace.traceparent.parse().unwrap());
    reseller(&stack, "acme")
        .reporting()
        .list_customers(request)
        .await
        .expect("ListCustomers");
    stack.stop().await;

    // The batch processor exports every 5 s; stopping sends what is queued at once.
    let stopping = Instant::now();
    telemetry.shutdown().await;
    assert!(
        stopping.elapsed() < Duration::from_secs(4),
        "{:?}",
        stopping.elapsed()
    );
    let spans = collector.spans();
    assert!(
        spans.contains(&(
            "otlp-test-service".to_owned(),
            "reseller.v1.ReportingService/ListCustomers".to_owned(),
            trace.trace_id.clone(),
        )),
        "the call's span, under the caller's trace, as the program's service: {spans:#?}"
    );
}
