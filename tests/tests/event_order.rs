//! Order does not matter: the projections (reseller views, customer portal, msp-link's
//! device view) end up the same whatever order events from different services arrive
//! in — a move before the upload it refers to, a delink racing a move, a deletion racing
//! a delink — and redelivering everything changes nothing.
//!
//! The events come from a real run of the MSP scenario; then, for each adversarial order,
//! a fresh stack (no relays, no consumers) is fed those events by hand. An event a
//! projection cannot apply yet is retried after the others, as JetStream redelivers a
//! nak'ed message.

use prost::Message;
use reseller_kit::events::decode;
use reseller_kit::inbox::{EventHandler, Failure, IdempotentConsumer};
use reseller_proto::v1::{self as pb, AccountKind, ManagementMode, event::Payload};
use reseller_tests::clients::{customer, msp, reseller};
use reseller_tests::fixtures::{
    active_account, active_customer, customer_devices, event_stream, my_devices, register,
    shuffled, upload,
};
use reseller_tests::{StackOptions, TestStack, eventually};

const MSP: &str = "970000001";
const FULL: &str = "980000001";
const JOINT: &str = "980000002";

/// Runs the scenario on a live stack and returns every event it produced, in stream order.
async fn scenario_events() -> Vec<Vec<u8>> {
    let stack = TestStack::start().await;
    let m = msp(&stack, MSP);
    active_account(&stack, "acme", MSP, AccountKind::Msp, "Managed Services Co").await;
    register(&stack, FULL, AccountKind::Customer, "Fully Managed Ltd").await;
    active_customer(&stack, "acme", JOINT, "Jointly Managed AG").await;
    upload(
        &stack,
        "acme",
        MSP,
        &[
            "M-1".into(),
            "M-2".into(),
            "M-3".into(),
            "M-4".into(),
            "M-5".into(),
        ],
    )
    .await
    .unwrap();
    m.link_customer(FULL, ManagementMode::FullyManaged)
        .await
        .unwrap();
    m.link_customer(JOINT, ManagementMode::JointlyManaged)
        .await
        .unwrap();
    eventually("msp-link to know the pool", || async {
        let n = stack.count("SELECT count(*) FROM msp.devices").await;
        (n == 5).then_some(())
    })
    .await;
    m.move_devices(["M-1", "M-2", "M-5"], FULL).await.unwrap();
    m.move_devices(["M-3"], JOINT).await.unwrap();
    upload(&stack, "acme", JOINT, &["J-1".into(), "J-2".into()])
        .await
        .unwrap();
    reseller(&stack, "acme")
        .update_internal_reference(JOINT, "second")
        .await
        .unwrap();
    m.set_jointly_managed(FULL).await.unwrap();
    // A deletion just before the delink, and one just after.
    reseller(&stack, "acme")
        .delete_devices(["M-5"])
        .await
        .unwrap();
    customer(&stack, FULL)
        .delink_customer(FULL, MSP)
        .await
        .unwrap();
    reseller(&stack, "acme")
        .delete_devices(["M-1", "M-4", "J-1"])
        .await
        .unwrap();
    // A re-link and a further move after the delink.
    m.link_customer(FULL, ManagementMode::JointlyManaged)
        .await
        .unwrap();
    m.move_devices(["M-3"], FULL).await.unwrap();

    // Wait until every outbox is drained, then read the stream.
    eventually("every outbox published", || async {
        let mut pending = 0i64;
        for schema in ["customer", "device", "msp", "reporting"] {
            pending += sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(format!(
                "SELECT count(*) FROM {schema}.outbox WHERE published_at IS NULL"
            )))
            .fetch_one(&stack.platform.pool)
            .await
            .unwrap();
        }
        (pending == 0).then_some(())
    })
    .await;
    let mut events = Vec::new();
    for message in event_stream(&stack).await {
        let message = message.unwrap();
        // Receipts are outputs of the projections, not inputs.
        let event = pb::Event::decode(message.payload.as_ref()).unwrap();
        if !matches!(event.payload, Some(Payload::PortalDeletionApplied(_))) {
            events.push(message.payload.to_vec());
        }
    }
    events
}

/// Applies `events` in the given order; what cannot apply yet is retried after the rest.
async fn feed<H: EventHandler>(consumer: &IdempotentConsumer<H>, events: &[Vec<u8>]) {
    let mut pending: Vec<&Vec<u8>> = events.iter().collect();
    for _round in 0..20 {
        let mut retry = Vec::new();
        for event in pending {
            match consumer.apply(event).await {
                Ok(_) => {}
                Err(Failure::Retry { .. }) => retry.push(event),
                Err(Failure::Poison(reason)) => panic!("a real event was judged poison: {reason}"),
            }
        }
        if retry.is_empty() {
            return;
        }
        pending = retry;
    }
    panic!("some events never applied");
}

/// Everything the three projections show, in a canonical text form.
async fn views(stack: &TestStack) -> String {
    let acme = reseller(stack, "acme");
    let mut out = String::new();
    let page = acme
        .list_customers(pb::ListCustomersRequest {
            page_size: 100,
            ..Default::default()
        })
        .await
        .unwrap();
    for row in page.customers {
        out += &format!("row {row:?}\n");
        let detail = acme.get_customer_detail(&row.knox_id).await.unwrap();
        out += &format!("  uploads {:?}\n", detail.uploads);
        let devices = customer_devices(&acme, &row.knox_id).await;
        out += &format!("  devices {devices:?}\n");
    }
    for knox in [FULL, JOINT] {
        let devices = my_devices(&customer(stack, knox)).await;
        out += &format!("portal {knox} {devices:?}\n");
    }
    let msp_view: Vec<(String, String, String, String)> = sqlx::query_as(
        "SELECT device_id, uploaded_to, holder_knox_id, moved_by_msp FROM msp.devices ORDER BY device_id, upload_id",
    )
    .fetch_all(&stack.platform.pool)
    .await
    .unwrap();
    out += &format!("msp {msp_view:?}\n");
    out
}

async fn apply_in_order(events: &[Vec<u8>]) -> String {
    let stack = TestStack::start_with(StackOptions {
        background: false,
        ..Default::default()
    })
    .await;
    feed(&reporting_service::consumer(&stack.platform), events).await;
    feed(&customer_service::portal_consumer(&stack.platform), events).await;
    feed(&msp_link_service::portal_consumer(&stack.platform), events).await;
    let first = views(&stack).await;
    // Redelivering everything changes nothing.
    feed(&reporting_service::consumer(&stack.platform), events).await;
    feed(&customer_service::portal_consumer(&stack.platform), events).await;
    feed(&msp_link_service::portal_consumer(&stack.platform), events).await;
    assert_eq!(views(&stack).await, first, "redelivery changed a view");
    first
}

fn is_msp_event(bytes: &[u8]) -> bool {
    matches!(
        decode(bytes).map(|e| e.payload),
        Ok(Payload::MspCustomerLinked(_)
            | Payload::MspManagementModeChanged(_)
            | Payload::MspCustomerDelinked(_)
            | Payload::MspDevicesMoved(_))
    )
}

fn is_device_event(bytes: &[u8]) -> bool {
    matches!(
        decode(bytes).map(|e| e.payload),
        Ok(Payload::DevicesUploaded(_) | Payload::DevicesDeleted(_))
    )
}

#[tokio::test]
async fn projections_agree_whatever_order_events_arrive_in() {
    let events = scenario_events().await;
    assert!(events.iter().any(|e| is_msp_event(e)) && events.iter().any(|e| is_device_event(e)));
    let expected = apply_in_order(&events).await;
    // The in-order result is the scenario's truth: sanity-check a few facts.
    assert!(
        expected.contains(&format!("knox_id: \"{FULL}\"")),
        "the delinked customer is listed:\n{expected}"
    );
    assert!(
        expected.contains(&format!("(\"M-3\", \"{MSP}\", \"{FULL}\", \"{MSP}\")")),
        "msp-link's view follows the last move:\n{expected}"
    );

    let mut orders: Vec<(&str, Vec<Vec<u8>>)> = Vec::new();
    orders.push(("reversed", events.iter().rev().cloned().collect()));
    // MSP events (moves, delinks) before the device events they refer to.
    let (msp_first, rest): (Vec<_>, Vec<_>) = events.iter().cloned().partition(|e| is_msp_event(e));
    orders.push((
        "msp events first",
        msp_first.into_iter().chain(rest).collect(),
    ));
    // Device events (uploads, deletions) before any MSP event.
    let (device_first, rest): (Vec<_>, Vec<_>) =
        events.iter().cloned().partition(|e| is_device_event(e));
    orders.push((
        "device events first",
        device_first.into_iter().chain(rest).collect(),
    ));
    for seed in [7u64, 42, 2026] {
        orders.push(("shuffled", shuffled(&events, seed)));
    }
    for (name, order) in orders {
        let got = apply_in_order(&order).await;
        assert_eq!(got, expected, "order {name:?} gave different views");
    }
}
