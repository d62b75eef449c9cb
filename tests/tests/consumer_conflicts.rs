//! A conflict with a concurrent apply (serialization failure, SQLSTATE 40001) is applied
//! again in place, a few times, before the event goes back to JetStream: a replica that
//! loses a race pays a few milliseconds, not the redelivery's backoff. Past the last
//! in-place attempt the event is nakked and redelivered, and still applied once.
//!
//! The handler here fails with a real serialization failure from PostgreSQL (raised by a
//! function that counts its calls in a sequence, which no rollback undoes) for its first
//! `failures` attempts, then succeeds.

use std::time::Duration;

use reseller_kit::events::{self, ReceivedEvent};
use reseller_kit::inbox::{ApplyError, Change, ConsumerSpec, EventHandler, IdempotentConsumer};
use reseller_kit::one_statement::Params;
use reseller_proto::v1::{self as pb, event::Payload};
use reseller_tests::stack::{StackOptions, TestStack};
use reseller_tests::wait::eventually;
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;

/// The subject the test's events are published on (inside the events stream, read by
/// no service's consumer here: the stack runs none).
const SUBJECT: &str = "reseller.events.v1.test.conflict";

/// Fails with a serialization failure while `customer.conflict_attempts` has been drawn
/// no more than `failures` times, then succeeds.
struct ConflictsFirst;

impl EventHandler for ConflictsFirst {
    fn change(&self, _: ReceivedEvent, _: &mut Params) -> Result<Change, ApplyError> {
        Ok(Change::in_transaction(|tx| {
            Box::pin(async move {
                sqlx::query("SELECT customer.conflict_unless_drawn_enough()")
                    .execute(&mut *tx)
                    .await?;
                Ok(())
            })
        }))
    }
}

/// Runs a consumer of the test's subject until its one event is acked, and answers how
/// many times the handler ran and how many times JetStream delivered the event (the
/// consumer's delivery sequence counts redeliveries too).
async fn apply_with_conflicts(failures: i64, consumer_name: &str) -> (i64, u64) {
    let stack = TestStack::start_with(StackOptions {
        background: false,
        reporting_consumer: false,
    })
    .await;
    let pool = stack.platform.pool.clone();
    sqlx::query("CREATE SEQUENCE customer.conflict_attempts")
        .execute(&pool)
        .await
        .unwrap();
    // `failures` is a number of this test's: nothing outside it reaches the statement.
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "CREATE FUNCTION customer.conflict_unless_drawn_enough() RETURNS void LANGUAGE plpgsql AS $$
         BEGIN
           IF nextval('customer.conflict_attempts') <= {failures} THEN
             RAISE EXCEPTION 'a concurrent apply won' USING ERRCODE = 'serialization_failure';
           END IF;
         END $$"
    )))
    .execute(&pool)
    .await
    .unwrap();

    let event = events::new_event(
        Payload::CustomerAdded(pb::CustomerAdded::default()),
        OffsetDateTime::now_utc(),
    );
    let js = stack.platform.js.clone();
    js.publish(SUBJECT, events::encode(&event).into())
        .await
        .unwrap()
        .await
        .unwrap();

    let spec = ConsumerSpec {
        name: consumer_name.into(),
        schema: "customer",
        filter_subject: SUBJECT.into(),
    };
    let token = CancellationToken::new();
    let consumer = IdempotentConsumer::new(spec, pool.clone(), js.clone(), ConflictsFirst);
    let running = tokio::spawn(consumer.run(token.clone()));
    let stream = js
        .get_stream(reseller_kit::subjects::EVENTS_STREAM)
        .await
        .unwrap();
    let info = eventually("the event applied and acked", || {
        let stream = stream.clone();
        async move {
            let mut consumer: async_nats::jetstream::consumer::PullConsumer =
                stream.get_consumer(consumer_name).await.ok()?;
            let info = consumer.info().await.ok()?.clone();
            // Every delivery (redeliveries too) acked, none pending.
            let acked = info.num_ack_pending == 0
                && info.num_pending == 0
                && info.delivered.consumer_sequence >= 1
                && info.ack_floor.consumer_sequence == info.delivered.consumer_sequence;
            acked.then_some(info)
        }
    })
    .await;
    token.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(10), running).await;

    let applied: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM customer.inbox WHERE consumer = $1 AND event_id = $2",
    )
    .bind(consumer_name)
    .bind(event.event_id.parse::<uuid::Uuid>().unwrap())
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(applied, 1, "the event applied once");
    let attempts: i64 = sqlx::query_scalar("SELECT last_value FROM customer.conflict_attempts")
        .fetch_one(&pool)
        .await
        .unwrap();
    (attempts, info.delivered.consumer_sequence)
}

#[tokio::test]
async fn a_conflict_is_applied_again_in_place_without_a_redelivery() {
    let (attempts, deliveries) = apply_with_conflicts(2, "conflicts-twice").await;
    assert_eq!(attempts, 3, "two conflicts, then applied");
    assert_eq!(deliveries, 1, "applied again in place, not redelivered");
}

#[tokio::test]
async fn conflicts_past_the_in_place_attempts_are_redelivered_and_applied_once() {
    // The first attempt and its three in-place retries conflict: the event goes back to
    // JetStream, and its redelivery applies.
    let (attempts, deliveries) = apply_with_conflicts(4, "conflicts-four-times").await;
    assert_eq!(attempts, 5);
    assert_eq!(deliveries, 2, "nakked once, redelivered once");
}
