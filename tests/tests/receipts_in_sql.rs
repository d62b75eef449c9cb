//! The deletion receipts that the portals write in SQL (`portal_receipt_cte`, so that a
//! deletion is applied in one statement) hold the receipt's fields, and the outbox relay
//! encodes them with prost: the event it publishes, by either of its paths (the commit
//! notification, the outbox read), is byte for byte the receipt the domain rule gives,
//! and the same bytes every time it is read (a republish after a crash is the same
//! event).

use prost::Message;
use reseller_kit::events::{self, ReceivedEvent, portal_receipt_cte};
use reseller_kit::inbox::{self, ApplyError, Change, ConsumerSpec, EventHandler, Outcome};
use reseller_kit::one_statement::{OneStatement, Params};
use reseller_kit::outbox::{Outbox, OutboxEvent};
use reseller_proto::v1::{self as pb, event::Payload};
use sqlx::PgPool;
use sqlx::postgres::{PgListener, PgPoolOptions};
use time::OffsetDateTime;

/// The schema the receipts are written in: any service's outbox would do.
const SCHEMA: &str = "customer";

/// A portal whose deletion statement removes exactly `removed`, then answers with its
/// receipt, as the portals' handlers do.
struct Removes {
    deleted: pb::DevicesDeleted,
    portal: pb::Portal,
    removed: Vec<String>,
}

impl EventHandler for Removes {
    fn change(&self, _: ReceivedEvent, params: &mut Params) -> Result<Change, ApplyError> {
        let ids = params.bind(self.removed.clone());
        let receipt = portal_receipt_cte(&self.deleted, self.portal, "removed", params);
        Ok(Change::OneStatement(OneStatement {
            ctes: format!("removed AS (SELECT unnest({ids}::text[]) AS device_id), {receipt}"),
            emits: Some("receipt"),
        }))
    }
}

fn deletion(part: u32, part_count: u32) -> pb::DevicesDeleted {
    pb::DevicesDeleted {
        deletion_id: uuid::Uuid::now_v7().to_string(),
        reseller_id: "acme".into(),
        part,
        part_count,
        ..Default::default()
    }
}

/// The receipt the domain rule gives for `removed` (REMOVED when the portal removed at
/// least one device, NOT_APPLICABLE otherwise; the IDs in byte order), written out here
/// so that the relay's encoding is checked against a second statement of it.
fn expected_receipt(
    deleted: &pb::DevicesDeleted,
    portal: pb::Portal,
    removed: &[String],
) -> pb::PortalDeletionApplied {
    let mut sorted = removed.to_vec();
    sorted.sort();
    let state = if removed.is_empty() {
        pb::PortalState::NotApplicable
    } else {
        pb::PortalState::Removed
    };
    pb::PortalDeletionApplied {
        deletion_id: deleted.deletion_id.clone(),
        portal: portal as i32,
        state: state as i32,
        part: deleted.part,
        part_count: deleted.part_count,
        removed_device_ids: sorted,
    }
}

/// Applies `handler` as the consumer does and returns the outbox row it wrote, as the
/// relay reads it from the outbox and as its commit notification carries it.
async fn relayed(pool: &PgPool, handler: Removes) -> (OutboxEvent, Option<OutboxEvent>) {
    let mut listener = PgListener::connect_with(pool).await.expect("LISTEN");
    listener
        .listen(&format!("{SCHEMA}_outbox"))
        .await
        .expect("LISTEN");
    let spec = ConsumerSpec {
        name: "receipts-test".into(),
        schema: SCHEMA,
        filter_subject: reseller_kit::subjects::ALL_EVENTS.into(),
    };
    let event = events::encode(&events::new_event(
        Payload::DevicesDeleted(handler.deleted.clone()),
        OffsetDateTime::now_utc(),
    ));
    let outcome = inbox::apply_once(spec, pool.clone(), handler, &event)
        .await
        .unwrap_or_else(|failure| panic!("not applied: {failure:?}"));
    assert_eq!(outcome, Outcome::Applied);
    let notification = listener.recv().await.expect("the commit notification");
    let inline = OutboxEvent::from_notification(notification.payload());
    let mut conn = pool.acquire().await.unwrap();
    let outbox = Outbox::new(SCHEMA);
    let mut rows = outbox.unpublished(&mut conn, 10).await.expect("the outbox");
    assert_eq!(rows.len(), 1, "one receipt");
    // Read again, the row is the same event: a republish publishes the same bytes.
    let again = outbox.unpublished(&mut conn, 10).await.expect("the outbox");
    assert_eq!(again, rows, "the same event each time it is read");
    sqlx::query("UPDATE customer.outbox SET published_at = now()")
        .execute(&mut *conn)
        .await
        .unwrap();
    (rows.remove(0), inline)
}

#[tokio::test]
async fn receipts_written_in_sql_are_encoded_by_the_relay_as_the_domain_rule_says() {
    let db = reseller_tests::db::TestDb::create().await;
    let pool = PgPoolOptions::new()
        .max_connections(4)
        .connect(&db.url)
        .await
        .expect("the test database");
    reseller_kit::db::migrate(&pool, &customer_service::MIGRATOR, "customer-service")
        .await
        .expect("migrations");
    let imei = "356938035643809".to_owned();
    let cases: Vec<(pb::DevicesDeleted, pb::Portal, Vec<String>, bool)> = vec![
        // Nothing removed: NOT_APPLICABLE, part 0 (a default, so not on the wire).
        (deletion(0, 1), pb::Portal::Customer, vec![], true),
        (
            deletion(0, 1),
            pb::Portal::Reseller,
            vec![imei.clone()],
            true,
        ),
        // IDs out of order, one of 200 bytes (a two-byte length), non-ASCII, and ones a
        // JSON text must escape.
        (
            deletion(3, 7),
            pb::Portal::Msp,
            vec![
                "R58N00Z".into(),
                "A".repeat(200),
                imei.clone(),
                "SÉRIE-Ø".into(),
                "quote\"back\\slash tab\t".into(),
            ],
            true,
        ),
        // 100 devices: a two-byte body length.
        (
            deletion(2, 3),
            pb::Portal::Customer,
            (0..100).map(|i| format!("SERIAL-{i:013}")).collect(),
            true,
        ),
        // A full part: too large for its notification, so it is read from the outbox.
        (
            deletion(1, 2),
            pb::Portal::Reseller,
            (0..1000).map(|i| format!("SERIAL-{i:013}")).collect(),
            false,
        ),
    ];
    for (deleted, portal, removed, travels_inline) in cases {
        let handler = Removes {
            deleted: deleted.clone(),
            portal,
            removed: removed.clone(),
        };
        let (row, inline) = relayed(&pool, handler).await;
        assert_eq!(
            row.subject,
            reseller_kit::subjects::event_subject(&Payload::PortalDeletionApplied(
                Default::default()
            ))
        );
        let decoded = pb::Event::decode(row.payload.as_slice()).expect("a reseller.v1.Event");
        assert_eq!(decoded.event_id, row.event_id.to_string());
        assert!(decoded.occurred_at.is_some());
        let expected = pb::Event {
            event_id: row.event_id.to_string(),
            occurred_at: decoded.occurred_at,
            payload: Some(Payload::PortalDeletionApplied(expected_receipt(
                &deleted, portal, &removed,
            ))),
        };
        assert_eq!(decoded, expected);
        assert_eq!(
            row.payload,
            expected.encode_to_vec(),
            "byte for byte prost's encoding ({} removed)",
            removed.len()
        );
        match inline {
            Some(inline) => {
                assert!(travels_inline, "{} removed travelled inline", removed.len());
                assert_eq!(inline, row, "the notification carries the same event");
            }
            None => assert!(!travels_inline, "{} removed not inline", removed.len()),
        }
    }
    pool.close().await;
}
