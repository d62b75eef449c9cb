//! The outbox and the idempotent consumer under trouble: a consumer killed and restarted
//! mid-stream, a republished event, and poison messages.

use std::time::Duration;

use futures::StreamExt;
use prost::Message;
use reseller_kit::events::new_event;
use reseller_kit::outbox::{Outbox, Relay};
use reseller_kit::subjects;
use reseller_proto::v1::{self as pb, AccountKind, event::Payload};
use reseller_tests::clients::{Caller, reseller};
use reseller_tests::fixtures::{active_customer, event_stream, imei, register, upload};
use reseller_tests::{StackOptions, TestStack, eventually};
use tokio_util::sync::CancellationToken;

async fn list(caller: &Caller, query: &str) -> pb::ListCustomersResponse {
    caller
        .list_customers(pb::ListCustomersRequest {
            query: query.into(),
            page_size: 1000,
            ..Default::default()
        })
        .await
        .expect("list customers")
}

/// Every message in RESELLER_EVENTS, in stream order.
async fn stream_messages(stack: &TestStack) -> Vec<async_nats::jetstream::message::StreamMessage> {
    event_stream(stack).await.into_iter().flatten().collect()
}

/// Waits until reporting's consumer has been delivered every event and acked each, so
/// that no redelivery is still to come.
async fn every_event_acked(stack: &TestStack) {
    eventually("every event delivered and acked", || async {
        let info = stack
            .platform
            .js
            .get_stream(subjects::EVENTS_STREAM)
            .await
            .ok()?
            .consumer_info(reporting_service::CONSUMER)
            .await
            .ok()?;
        (info.num_pending == 0 && info.num_ack_pending == 0).then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_consumer_killed_and_restarted_mid_stream_applies_every_event_exactly_once() {
    let stack = TestStack::start_with(StackOptions {
        reporting_consumer: false,
        ..Default::default()
    })
    .await;
    let acme = reseller(&stack, "acme");
    // Commands keep producing events while the consumer is killed and restarted.
    let producer = {
        let stack_addr = stack.addr;
        let _ = stack_addr;
        async {
            for i in 0..40u64 {
                let knox = format!("{}", 800000000 + i);
                active_customer(&stack, "acme", &knox, &format!("Customer {i:02}")).await;
                acme.customers()
                    .update_internal_reference(pb::UpdateInternalReferenceRequest {
                        knox_id: knox.clone(),
                        internal_reference: format!("final {i}"),
                    })
                    .await
                    .unwrap();
                let ids: Vec<String> = (0..3).map(|d| imei(i * 10 + d)).collect();
                assert_eq!(
                    upload(&stack, "acme", &knox, &ids)
                        .await
                        .unwrap()
                        .accepted_count,
                    3
                );
            }
        }
    };
    let chaos = async {
        // Kill the consumer abruptly (no drain: an applied event may miss its ack) or
        // stop it gracefully, again and again.
        for round in 0..30u64 {
            let consumer = reporting_service::consumer(&stack.platform)
                .with_ack_wait(Duration::from_millis(700));
            let token = CancellationToken::new();
            let task = tokio::spawn(consumer.run(token.clone()));
            tokio::time::sleep(Duration::from_millis(15 + (round * 37) % 60)).await;
            if round % 2 == 0 {
                task.abort();
            } else {
                token.cancel();
            }
            let _ = task.await;
        }
    };
    tokio::join!(producer, chaos);

    // Then let it run to the end.
    let token = CancellationToken::new();
    let consumer =
        reporting_service::consumer(&stack.platform).with_ack_wait(Duration::from_millis(700));
    let task = tokio::spawn(consumer.run(token.clone()));
    eventually(
        "every customer with its final reference and its 3 devices",
        || async {
            let page = list(&acme, "").await;
            let done = page.total_size == 40
                && page.customers.iter().all(|c| {
                    c.internal_reference.starts_with("final")
                        && c.uploaded_devices == 3
                        && c.devices == 3
                });
            done.then_some(())
        },
    )
    .await;
    // Redeliveries changed nothing: still 3 devices each, and the inbox holds each event once.
    // Checked once the consumer has delivered everything and had every delivery acked,
    // so that no redelivery is still to come.
    every_event_acked(&stack).await;
    let page = list(&acme, "").await;
    assert!(
        page.customers
            .iter()
            .all(|c| c.uploaded_devices == 3 && c.devices == 3),
        "{:?}",
        page.customers
    );
    let applied: i64 =
        sqlx::query_scalar("SELECT count(*) FROM reporting.inbox WHERE consumer = 'reporting'")
            .fetch_one(&stack.platform.pool)
            .await
            .unwrap();
    assert_eq!(
        applied as usize,
        stream_messages(&stack).await.len(),
        "one inbox row per event in the stream"
    );
    token.cancel();
    let _ = task.await;
}

#[tokio::test]
async fn a_republished_event_changes_nothing() {
    let stack = TestStack::start().await;
    register(&stack, "810000001", AccountKind::Customer, "Globex").await;
    let acme = reseller(&stack, "acme");
    acme.add_customer("810000001", "v1").await.unwrap();
    for reference in ["v2", "v3"] {
        acme.update_internal_reference("810000001", reference)
            .await
            .unwrap();
    }
    eventually("v3 on the page", || async {
        (list(&acme, "").await.customers.first()?.internal_reference == "v3").then_some(())
    })
    .await;

    // Republish the "v2" event, with a new Nats-Msg-Id so JetStream's duplicate window
    // does not catch it: only the consumers' inboxes stand in the way.
    let v2 = stream_messages(&stack)
        .await
        .into_iter()
        .find(|m| {
            matches!(pb::Event::decode(m.payload.as_ref()).ok().and_then(|e| e.payload),
                Some(Payload::CustomerReferenceUpdated(u)) if u.internal_reference == "v2")
        })
        .expect("the v2 event in the stream");
    let mut publish = async_nats::jetstream::message::PublishMessage::build()
        .payload(v2.payload.clone())
        .message_id("republished-v2");
    publish = publish.header("Content-Type", "application/protobuf");
    stack
        .platform
        .js
        .send_publish(v2.subject.to_string(), publish)
        .await
        .unwrap()
        .await
        .unwrap();
    // A later event proves the consumer has gone past the republished one.
    register(&stack, "810000002", AccountKind::Customer, "Sentinel").await;
    acme.customers()
        .add_customer(pb::AddCustomerRequest {
            knox_id: "810000002".into(),
            internal_reference: String::new(),
        })
        .await
        .unwrap();
    eventually("the sentinel on the page", || async {
        (list(&acme, "").await.total_size == 2).then_some(())
    })
    .await;
    assert_eq!(
        list(&acme, "globex").await.customers[0].internal_reference,
        "v3",
        "the old event was not applied again"
    );
}

#[tokio::test]
async fn poison_messages_are_dead_lettered_and_later_events_still_apply() {
    let stack = TestStack::start().await;
    let mut dead_letters = stack.subscribe("reseller.deadletter.v1.reporting").await;

    // Not an event at all, and an event whose content can never apply.
    stack
        .platform
        .js
        .publish("reseller.events.v1.customer.added", "garbage \u{1}".into())
        .await
        .unwrap()
        .await
        .unwrap();
    let bad = new_event(
        Payload::CustomerAdded(pb::CustomerAdded {
            reseller_id: "acme".into(),
            knox_id: "not a knox id".into(),
            kind: AccountKind::Customer as i32,
            company_name: "Bad".into(),
            country: "DE".into(),
            ..Default::default()
        }),
        time::OffsetDateTime::now_utc(),
    );
    stack
        .platform
        .js
        .publish(
            "reseller.events.v1.customer.added",
            bad.encode_to_vec().into(),
        )
        .await
        .unwrap()
        .await
        .unwrap();

    // Events behind them still apply.
    register(&stack, "820000001", AccountKind::Customer, "Globex").await;
    let acme = reseller(&stack, "acme");
    acme.customers()
        .add_customer(pb::AddCustomerRequest {
            knox_id: "820000001".into(),
            internal_reference: String::new(),
        })
        .await
        .unwrap();
    eventually("the good customer on the page", || async {
        (list(&acme, "").await.total_size == 1).then_some(())
    })
    .await;

    let mut reasons = Vec::new();
    for _ in 0..2 {
        let letter = tokio::time::timeout(Duration::from_secs(15), dead_letters.next())
            .await
            .expect("a dead letter")
            .unwrap();
        let headers = letter.headers.clone().expect("headers");
        assert_eq!(
            headers
                .get(subjects::headers::ORIGINAL_SUBJECT)
                .unwrap()
                .as_str(),
            "reseller.events.v1.customer.added"
        );
        assert_eq!(
            headers
                .get(subjects::headers::DEAD_LETTER_CONSUMER)
                .unwrap()
                .as_str(),
            "reporting"
        );
        reasons.push(
            headers
                .get(subjects::headers::DEAD_LETTER_REASON)
                .unwrap()
                .as_str()
                .to_owned(),
        );
    }
    assert!(
        reasons[0].contains("not a reseller.v1.Event"),
        "{reasons:?}"
    );
    assert!(reasons[1].contains("knox"), "{reasons:?}");
    // Dead letters are kept in their own stream for inspection and replay.
    let mut dead_stream = stack
        .platform
        .js
        .get_stream(subjects::DEAD_LETTER_STREAM)
        .await
        .unwrap();
    assert!(dead_stream.info().await.unwrap().state.messages >= 2);
}

/// The knox IDs of the `account_registered` events in RESELLER_EVENTS, once there are
/// `count` of them, checking each one's headers. The relay delivers at least once (a poll
/// and a commit notification can both publish a row); the stream's duplicate window keeps
/// one copy, and the stream is what consumers read.
async fn registrations_in_stream(stack: &TestStack, count: usize) -> Vec<String> {
    let messages = eventually("the registrations in the stream", || async {
        let registrations: Vec<_> = stream_messages(stack)
            .await
            .into_iter()
            .filter(|m| m.subject.as_str() == "reseller.events.v1.account.registered")
            .collect();
        (registrations.len() >= count).then_some(registrations)
    })
    .await;
    messages
        .iter()
        .map(|message| {
            let event = pb::Event::decode(message.payload.as_ref()).expect("a reseller.v1.Event");
            assert_eq!(
                message.headers.get("Nats-Msg-Id").map(|v| v.as_str()),
                Some(event.event_id.as_str())
            );
            assert_eq!(
                message.headers.get("Content-Type").map(|v| v.as_str()),
                Some("application/protobuf")
            );
            match event.payload {
                Some(Payload::AccountRegistered(e)) => e.knox_id,
                other => panic!("not account_registered: {other:?}"),
            }
        })
        .collect()
}

/// Two relays for one schema, as two replicas run them: one publishes while the other
/// waits; when the first stops, the second takes over and events keep flowing.
#[tokio::test]
async fn a_second_relay_takes_over_when_the_first_stops() {
    let stack = TestStack::start_with(StackOptions {
        background: false,
        ..Default::default()
    })
    .await;
    let relay = || {
        Relay::new(
            Outbox::new("customer"),
            stack.platform.pool.clone(),
            stack.platform.js.clone(),
        )
    };
    let first_stop = CancellationToken::new();
    let first = tokio::spawn(relay().run(first_stop.clone()));
    register(&stack, "910000001", AccountKind::Customer, "First").await;
    assert_eq!(registrations_in_stream(&stack, 1).await, ["910000001"]);

    let second_stop = CancellationToken::new();
    let second = tokio::spawn(relay().run(second_stop.clone()));
    // A waiting relay retries the lock every second: give it time to have tried (there is
    // no condition to await, since what is checked is that it did not become leader).
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let leaders: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted \
         AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
    )
    .fetch_one(&stack.platform.pool)
    .await
    .unwrap();
    assert_eq!(leaders, 1, "one relay leads the schema");

    first_stop.cancel();
    first.await.unwrap();
    register(&stack, "910000002", AccountKind::Customer, "Second").await;
    assert_eq!(
        registrations_in_stream(&stack, 2).await,
        ["910000001", "910000002"],
        "the waiting relay took over"
    );
    second_stop.cancel();
    second.await.unwrap();
}

#[tokio::test]
async fn a_backlog_is_applied_in_batches_each_event_once_past_a_duplicate_and_a_poison_message() {
    let stack = TestStack::start_with(StackOptions {
        reporting_consumer: false,
        ..Default::default()
    })
    .await;
    let acme = reseller(&stack, "acme");
    // A backlog while reporting's consumer is down: 12 customers with 3 devices each,
    // and in the middle a message that is not an event.
    for i in 0..12u64 {
        let knox = format!("{}", 830000000 + i);
        active_customer(&stack, "acme", &knox, &format!("Backlog {i:02}")).await;
        let ids: Vec<String> = (0..3).map(|d| imei(500 + i * 10 + d)).collect();
        upload(&stack, "acme", &knox, &ids).await.unwrap();
        if i == 6 {
            stack
                .platform
                .js
                .publish("reseller.events.v1.customer.added", "garbage \u{1}".into())
                .await
                .unwrap()
                .await
                .unwrap();
        }
    }
    let messages = eventually("the backlog in the stream", || async {
        let messages = stream_messages(&stack).await;
        let uploads = messages
            .iter()
            .filter(|m| m.subject.as_str().ends_with("device.uploaded"))
            .count();
        (uploads == 12).then_some(messages)
    })
    .await;
    // One event of the backlog was applied already (a redelivery after a crash looks
    // like this): the batch holding it must not stop at it.
    let applied_before = messages
        .iter()
        .find(|m| m.subject.as_str().ends_with("device.uploaded"))
        .unwrap();
    let outcome = reseller_kit::inbox::apply_once(
        reporting_service::spec(),
        stack.platform.pool.clone(),
        reporting_service::Projection,
        &applied_before.payload,
    )
    .await
    .unwrap();
    assert_eq!(outcome, reseller_kit::inbox::Outcome::Applied);

    let mut dead_letters = stack.subscribe("reseller.deadletter.v1.reporting").await;
    let token = CancellationToken::new();
    let task = tokio::spawn(reporting_service::consumer(&stack.platform).run(token.clone()));
    every_event_acked(&stack).await;
    token.cancel();
    let _ = task.await;

    let page = list(&acme, "").await;
    assert_eq!(page.total_size, 12);
    assert!(
        page.customers
            .iter()
            .all(|c| c.uploaded_devices == 3 && c.devices == 3),
        "each customer's 3 devices counted once: {:?}",
        page.customers
    );
    let letter = tokio::time::timeout(Duration::from_secs(15), dead_letters.next())
        .await
        .expect("the message that is not an event dead-lettered")
        .unwrap();
    assert!(
        letter
            .headers
            .unwrap()
            .get(subjects::headers::DEAD_LETTER_REASON)
            .unwrap()
            .as_str()
            .contains("not a reseller.v1.Event")
    );
    // Every event of the stream once in the inbox (the poison message is not an
    // event), and the backlog committed in far fewer transactions than events: rows
    // written by one transaction share its `xmin`.
    let (rows, transactions): (i64, i64) = sqlx::query_as(
        "SELECT count(*), count(DISTINCT xmin::text) FROM reporting.inbox WHERE consumer = 'reporting'",
    )
    .fetch_one(&stack.platform.pool)
    .await
    .unwrap();
    let events = messages.len() as i64 - 1;
    assert_eq!(rows, events, "one inbox row per event");
    let ignored_or_applied_alone = 4;
    assert!(
        transactions * ignored_or_applied_alone <= rows,
        "{rows} events applied in {transactions} transactions: not in batches"
    );
}
