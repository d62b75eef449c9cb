//! The deletion receipts that the portals build in SQL (`portal_receipt_cte`, so that a
//! deletion is applied in one statement) are byte for byte what prost encodes for the same
//! receipt: any protobuf reader decodes them, and their `Nats-Msg-Id` is their event ID.

use prost::Message;
use reseller_kit::events::{portal_receipt, portal_receipt_cte};
use reseller_kit::one_statement::Params;
use reseller_proto::v1::{self as pb, event::Payload};
use sqlx::{AssertSqlSafe, Connection, PgConnection};

/// Runs the receipt CTE for `removed` and returns its row `(event_id, subject, payload)`.
async fn receipt_row(
    conn: &mut PgConnection,
    deleted: &pb::DevicesDeleted,
    portal: pb::Portal,
    removed: &[String],
) -> (uuid::Uuid, String, Vec<u8>) {
    let mut params = Params::default();
    let ids = params.bind(removed.to_vec());
    let receipt = portal_receipt_cte(deleted, portal, "removed", &mut params);
    let sql = format!(
        "WITH removed AS (SELECT unnest({ids}::text[]) AS device_id), {receipt} \
         SELECT event_id, subject, payload FROM receipt"
    );
    sqlx::query_as_with(AssertSqlSafe(sql), params.into_arguments().unwrap())
        .fetch_one(conn)
        .await
        .expect("the receipt row")
}

/// The protobuf varint of `n`, written out here so the SQL is checked against a second
/// implementation.
fn varint(mut n: u64) -> Vec<u8> {
    let mut bytes = Vec::new();
    while n >= 0x80 {
        bytes.push((n as u8 & 0x7f) | 0x80);
        n >>= 7;
    }
    bytes.push(n as u8);
    bytes
}

#[tokio::test]
async fn lengths_are_varints_up_to_256_mib_and_null_beyond() {
    let mut conn = PgConnection::connect(&reseller_tests::db::admin_url())
        .await
        .expect("PostgreSQL");
    let sql = format!(
        "SELECT n::bigint, {} FROM unnest(ARRAY[0, 1, 127, 128, 300, 16383, 16384, 2097151, \
           2097152, 268435455, 268435456]) AS v (n) ORDER BY n",
        reseller_kit::one_statement::varint_sql("n")
    );
    let rows: Vec<(i64, Option<Vec<u8>>)> = sqlx::query_as(AssertSqlSafe(sql))
        .fetch_all(&mut conn)
        .await
        .unwrap();
    assert_eq!(rows.len(), 11);
    for (n, bytes) in rows {
        let expected = (n < 1 << 28).then(|| varint(n as u64));
        assert_eq!(bytes, expected, "the varint of {n}");
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

#[tokio::test]
async fn receipts_built_in_sql_are_what_prost_encodes() {
    let mut conn = PgConnection::connect(&reseller_tests::db::admin_url())
        .await
        .expect("PostgreSQL");
    let imei = "356938035643809".to_owned();
    let cases: Vec<(pb::DevicesDeleted, pb::Portal, Vec<String>)> = vec![
        // Nothing removed: NOT_APPLICABLE, part 0 (a default, so not on the wire).
        (deletion(0, 1), pb::Portal::Customer, vec![]),
        (deletion(0, 1), pb::Portal::Reseller, vec![imei.clone()]),
        // IDs out of order, one of 200 bytes (a two-byte length), non-ASCII.
        (
            deletion(3, 7),
            pb::Portal::Msp,
            vec![
                "R58N00Z".into(),
                "A".repeat(200),
                imei.clone(),
                "SÉRIE-Ø".into(),
            ],
        ),
        // 100 devices: a two-byte body length.
        (
            deletion(2, 3),
            pb::Portal::Customer,
            (0..100).map(|i| format!("SERIAL-{i:013}")).collect(),
        ),
        // A full part: the message body needs a three-byte length.
        (
            deletion(1, 2),
            pb::Portal::Reseller,
            (0..1000).map(|i| format!("SERIAL-{i:013}")).collect(),
        ),
    ];
    for (deleted, portal, removed) in cases {
        let (event_id, subject, payload) = receipt_row(&mut conn, &deleted, portal, &removed).await;
        let decoded = pb::Event::decode(payload.as_slice()).expect("a reseller.v1.Event");
        assert_eq!(decoded.event_id, event_id.to_string());
        assert_eq!(subject, "reseller.events.v1.deletion.portal_applied");
        let mut sorted = removed.clone();
        sorted.sort();
        // The Rust receipt for the same removal, with the SQL one's ID and time.
        let mut expected = portal_receipt(&deleted, portal, sorted);
        expected.event_id = event_id.to_string();
        expected.occurred_at = decoded.occurred_at;
        assert!(decoded.occurred_at.is_some());
        let Some(Payload::PortalDeletionApplied(receipt)) = &decoded.payload else {
            panic!("not a receipt: {decoded:?}");
        };
        let state = if removed.is_empty() {
            pb::PortalState::NotApplicable
        } else {
            pb::PortalState::Removed
        };
        assert_eq!(receipt.state, state as i32);
        assert_eq!(decoded, expected);
        assert_eq!(
            payload,
            expected.encode_to_vec(),
            "byte for byte prost's encoding ({} removed)",
            removed.len()
        );
    }
}
