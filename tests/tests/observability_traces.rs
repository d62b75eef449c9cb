//! One trace from a call through the events (issue 11): a `DeleteDevices` call carrying
//! a `traceparent` leaves spans of that trace in device-service (the RPC), in each of
//! the three portals' consumers that applied the deletion (customer portal, MSP portal,
//! the reseller's Customers page), and in device-service's receipts consumer for each
//! portal's receipt, each span the child of the one whose event it applied.
//!
//! Reads start no trace of their own: they are traced within a caller's sampled trace,
//! or each on its own with `TRACE_READS=all`.
//!
//! The stack is the in-process `TestStack`; spans go to an in-process exporter
//! (`InMemorySpanExporter`) installed as the process's telemetry before the stack starts,
//! the way a program installs the OTLP exporter.

use std::collections::{BTreeSet, HashMap};

use opentelemetry::trace::SpanId;
use opentelemetry_sdk::trace::{InMemorySpanExporter, SpanData};
use reseller_kit::config::LogFormat;
use reseller_kit::telemetry::Telemetry;
use reseller_kit::trace_context::{NewTrace, TRACEPARENT};
use reseller_proto::v1 as pb;
use reseller_tests::clients::{customer, reseller};
use reseller_tests::fixtures::{active_customer, imei, my_devices, upload};
use reseller_tests::{TestStack, eventually};

/// The consumers that apply a deletion and answer with a receipt.
const PORTAL_CONSUMERS: [&str; 3] = ["customer-portal", "msp-portal", "reporting"];

/// The spans of `trace_id` finished so far.
fn spans_of(exporter: &InMemorySpanExporter, trace_id: &str) -> Vec<SpanData> {
    exporter
        .get_finished_spans()
        .expect("the exporter's spans")
        .into_iter()
        .filter(|span| span.span_context.trace_id().to_string() == trace_id)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deletion_is_one_trace_through_the_portals_and_their_receipts() {
    let exporter = InMemorySpanExporter::default();
    Telemetry::new(LogFormat::Text, "warn")
        .exporter(exporter.clone(), "reseller-tests")
        .install()
        .expect("the test's telemetry is the process's first");
    // Traces take spans at INFO and events at WARN, the log (here) WARN: nothing below
    // INFO is wanted, and the process's maximum level must say so. Otherwise every
    // `log` record and dynamic `enabled!` check asks the subscriber, and sqlx formats
    // each statement's summary for a DEBUG record nobody takes.
    assert_eq!(
        tracing::level_filters::LevelFilter::current(),
        tracing::level_filters::LevelFilter::INFO,
        "the process's maximum level with traces on and the log at WARN"
    );
    let stack = TestStack::start().await;
    active_customer(&stack, "acme", "660000001", "Globex").await;
    let device = imei(660_001);
    upload(&stack, "acme", "660000001", std::slice::from_ref(&device))
        .await
        .expect("upload");
    // Every portal has the device before it is deleted, so each one removes it.
    eventually("the customer portal to show the device", || async {
        (my_devices(&customer(&stack, "660000001")).await.len() == 1).then_some(())
    })
    .await;

    let trace = NewTrace::new();
    let mut request = tonic::Request::new(pb::DeleteDevicesRequest {
        device_ids: vec![device.clone()],
    });
    request
        .metadata_mut()
        .insert(TRACEPARENT, trace.traceparent.parse().unwrap());
    let deletion = reseller(&stack, "acme")
        .devices()
        .delete_devices(request)
        .await
        .expect("DeleteDevices")
        .into_inner();
    let acme = reseller(&stack, "acme");
    eventually("the deletion to complete", || async {
        let d = acme.get_deletion(&deletion.deletion_id).await.unwrap();
        d.complete.then_some(())
    })
    .await;

    // The receipts consumer's spans end just after the deletion completes.
    let spans = eventually("a receipt span for each portal in the trace", || async {
        let spans = spans_of(&exporter, &trace.trace_id);
        let receipts = spans
            .iter()
            .filter(|s| s.name == "apply device-receipts")
            .count();
        (receipts >= PORTAL_CONSUMERS.len()).then_some(spans)
    })
    .await;
    let named =
        |name: &str| -> Vec<&SpanData> { spans.iter().filter(|s| s.name == name).collect() };
    let names: BTreeSet<&str> = spans.iter().map(|s| s.name.as_ref()).collect();

    // device-service's RPC, the child of the caller's span.
    let rpc = named("reseller.v1.DeviceService/DeleteDevices");
    assert_eq!(rpc.len(), 1, "one RPC span; the trace has {names:?}");
    let caller_span = trace.traceparent.split('-').nth(2).unwrap();
    assert_eq!(rpc[0].parent_span_id.to_string(), caller_span);

    // Each portal's consumer applied the deletion (its `devices_deleted`) in a child of
    // the RPC's span. (The trace holds more: reporting also applies the deletion's
    // `deletion_recorded` and the other portals' receipts, for the activity log.)
    let deleted = reseller_kit::subjects::event_subject(&pb::event::Payload::DevicesDeleted(
        Default::default(),
    ));
    let applying = |name: &str, subject: &str| -> Vec<&SpanData> {
        named(name)
            .into_iter()
            .filter(|s| {
                s.attributes.iter().any(|kv| {
                    kv.key.as_str() == "messaging.destination.name" && kv.value.as_str() == subject
                })
            })
            .collect()
    };
    let mut portal_spans: HashMap<SpanId, &str> = HashMap::new();
    for consumer in PORTAL_CONSUMERS {
        let applied = applying(&format!("apply {consumer}"), deleted);
        assert_eq!(
            applied.len(),
            1,
            "{consumer} applied the deletion once; the trace has {names:?}"
        );
        assert_eq!(
            applied[0].parent_span_id,
            rpc[0].span_context.span_id(),
            "{consumer}'s span continues the RPC's"
        );
        portal_spans.insert(applied[0].span_context.span_id(), consumer);
    }

    // device-service's receipts consumer applied each portal's receipt in a child of
    // that portal's span: the receipts carried the portals' context back.
    let answered: BTreeSet<&str> = named("apply device-receipts")
        .iter()
        .map(|receipt| {
            *portal_spans
                .get(&receipt.parent_span_id)
                .unwrap_or_else(|| panic!("a receipt span's parent is a portal's: {receipt:?}"))
        })
        .collect();
    assert_eq!(answered, BTreeSet::from(PORTAL_CONSUMERS));

    // A read starts no trace of its own (`TRACE_READS` defaults to `caller`): the polls of
    // `GetDeletion` above, which sent no `traceparent`, made no span. Within a caller's
    // sampled trace the same read has its span.
    const GET_DELETION: &str = "reseller.v1.DeviceService/GetDeletion";
    let finished = exporter.get_finished_spans().expect("the exporter's spans");
    assert!(
        !finished.iter().any(|s| s.name == GET_DELETION),
        "reads outside a caller's trace made no span"
    );
    let read = NewTrace::new();
    let mut request = tonic::Request::new(pb::GetDeletionRequest {
        deletion_id: deletion.deletion_id.clone(),
    });
    request
        .metadata_mut()
        .insert(TRACEPARENT, read.traceparent.parse().unwrap());
    reseller(&stack, "acme")
        .devices()
        .get_deletion(request)
        .await
        .expect("GetDeletion");
    eventually("the read's span in the caller's trace", || async {
        spans_of(&exporter, &read.trace_id)
            .iter()
            .any(|s| s.name == GET_DELETION)
            .then_some(())
    })
    .await;

    // `TRACE_READS=all`: the same read without a `traceparent` starts a trace of its own.
    reseller_kit::telemetry::set_trace_reads(reseller_kit::config::TraceReads::All);
    acme.get_deletion(&deletion.deletion_id)
        .await
        .expect("GetDeletion");
    eventually(
        "a span of the untraced read once every read is traced",
        || async {
            let finished = exporter.get_finished_spans().expect("the exporter's spans");
            let own_traces = finished
                .iter()
                .filter(|s| s.name == GET_DELETION)
                .filter(|s| s.span_context.trace_id().to_string() != read.trace_id)
                .count();
            (own_traces == 1).then_some(())
        },
    )
    .await;

    stack.stop().await;
}
