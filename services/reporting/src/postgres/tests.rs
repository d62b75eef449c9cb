//! The projection and the views against a real PostgreSQL (`#[sqlx::test]`: a database
//! per test on `DATABASE_URL`'s server): events applied through the handler, in and out
//! of order, read back through the repository.

use futures::StreamExt;
use prost::Message;
use reseller_kit::events::{self, ReceivedEvent};
use reseller_kit::ids::{KnoxId, ResellerId};
use reseller_kit::inbox::{self, Outcome};
use reseller_proto::v1::{self as pb, event::Payload};
use sqlx::PgPool;
use time::OffsetDateTime;
use uuid::Uuid;

use super::Repository;
use crate::Projection;
use crate::domain::{
    AccountKind, ListCustomerDevices, ListCustomers, Placement, PlacementDelta, UploadRef,
};
use crate::grpc::csv::stream_csv;

const RESELLER: &str = "acme";
const CUSTOMER: &str = "600000001";
const MSP: &str = "700000001";

/// Applies `payload` as the reporting consumer does (in its own transaction or
/// statement), applying it again after a conflict with a concurrent apply, as the
/// consumer does.
async fn apply(pool: &PgPool, payload: Payload) {
    let event = events::encode(&events::new_event(payload, OffsetDateTime::now_utc()));
    let outcome =
        inbox::apply_retrying(crate::module::spec(), pool.clone(), Projection, &event, 5).await;
    let outcome = outcome.unwrap_or_else(|failure| panic!("not applied: {failure:?}"));
    assert_eq!(outcome, Outcome::Applied);
}

fn at(seconds: i64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: 1_700_000_000 + seconds,
        nanos: 0,
    }
}

fn time(seconds: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(1_700_000_000 + seconds).unwrap()
}

fn added(knox_id: &str, kind: pb::AccountKind, name: &str) -> Payload {
    Payload::CustomerAdded(pb::CustomerAdded {
        reseller_id: RESELLER.into(),
        knox_id: knox_id.into(),
        kind: kind as i32,
        company_name: name.into(),
        country: "DE".into(),
        internal_reference: String::new(),
        status: pb::CustomerStatus::Active as i32,
        added_at: Some(at(0)),
        ..Default::default()
    })
}

fn uploaded(
    upload_id: Uuid,
    target: &str,
    kind: pb::AccountKind,
    seconds: i64,
    ids: &[&str],
) -> Payload {
    Payload::DevicesUploaded(pb::DevicesUploaded {
        upload_id: upload_id.to_string(),
        reseller_id: RESELLER.into(),
        target_knox_id: target.into(),
        device_ids: ids.iter().map(|id| (*id).to_owned()).collect(),
        devices: ids
            .iter()
            .map(|id| pb::UploadedDevice {
                device_id: (*id).to_owned(),
                id_kind: pb::DeviceIdKind::Serial as i32,
                model: format!("model of {id}"),
                ..Default::default()
            })
            .collect(),
        target_kind: kind as i32,
        order_number: format!("PO-{seconds}"),
        uploaded_at: Some(at(seconds)),
        part: 1,
        part_count: 1,
        accepted_count: ids.len() as i64,
        ..Default::default()
    })
}

/// An upload of `ids` to the customer [`CUSTOMER`], `seconds` into the test's time.
fn to_customer(upload_id: Uuid, seconds: i64, ids: &[&str]) -> Payload {
    uploaded(upload_id, CUSTOMER, pb::AccountKind::Customer, seconds, ids)
}

/// An upload of `ids` to the MSP [`MSP`], `seconds` into the test's time.
fn to_msp(upload_id: Uuid, seconds: i64, ids: &[&str]) -> Payload {
    uploaded(upload_id, MSP, pb::AccountKind::Msp, seconds, ids)
}

fn deleted(deletion_id: Uuid, registrations: &[(&str, Uuid)]) -> Payload {
    Payload::DevicesDeleted(pb::DevicesDeleted {
        deletion_id: deletion_id.to_string(),
        reseller_id: RESELLER.into(),
        device_ids: registrations
            .iter()
            .map(|(id, _)| (*id).to_owned())
            .collect(),
        part: 1,
        part_count: 1,
        devices: registrations
            .iter()
            .map(|(id, upload)| pb::DeletedDevice {
                device_id: (*id).to_owned(),
                upload_id: upload.to_string(),
                target_knox_id: CUSTOMER.into(),
            })
            .collect(),
        ..Default::default()
    })
}

fn reseller() -> ResellerId {
    ResellerId::parse(RESELLER).unwrap()
}

fn knox(id: &str) -> KnoxId {
    KnoxId::parse(id).unwrap()
}

/// (UPLOADS, DEVICES, LAST UPLOADED) of a listed row, or `None`.
async fn counters(repo: &Repository, knox_id: &str) -> Option<(i64, i64, Option<OffsetDateTime>)> {
    repo.customer_detail(&reseller(), &knox(knox_id))
        .await
        .unwrap()
        .map(|d| {
            (
                d.row.uploaded_devices,
                d.row.devices,
                d.row.last_uploaded_at,
            )
        })
}

/// Every live device ID under a row, paging `page_size` at a time.
async fn all_devices(repo: &Repository, knox_id: &str, page_size: i32) -> Vec<String> {
    let mut ids = Vec::new();
    let mut token = String::new();
    loop {
        let list = ListCustomerDevices::parse(knox_id, page_size, &token).unwrap();
        let page = repo
            .customer_devices(&reseller(), &list)
            .await
            .unwrap()
            .unwrap();
        assert!(page.devices.len() <= page_size as usize);
        ids.extend(page.devices.iter().map(|d| d.device_id.clone()));
        match page.next {
            Some(key) => token = list.next_token(key),
            None => return ids,
        }
    }
}

/// The receipts in the outbox, oldest first, as the relay publishes them.
async fn receipts(pool: &PgPool) -> Vec<pb::PortalDeletionApplied> {
    let mut conn = pool.acquire().await.unwrap();
    let subject =
        reseller_kit::subjects::event_subject(&Payload::PortalDeletionApplied(Default::default()));
    crate::postgres::OUTBOX
        .unpublished(&mut conn, i64::MAX)
        .await
        .unwrap()
        .iter()
        .filter(|e| e.subject == subject)
        .map(
            |e| match pb::Event::decode(e.payload.as_slice()).unwrap().payload {
                Some(Payload::PortalDeletionApplied(r)) => r,
                other => panic!("not a receipt: {other:?}"),
            },
        )
        .collect()
}

/// Every row of the Customers page in the default order, paging `page_size` at a time.
async fn all_rows(repo: &Repository, query: &str, page_size: i32) -> Vec<(String, String)> {
    let mut rows = Vec::new();
    let mut token = String::new();
    loop {
        let list = ListCustomers::parse(query, "", page_size, &token).unwrap();
        let page = repo.list_customers(&reseller(), &list).await.unwrap();
        rows.extend(page.rows.into_iter().map(|r| (r.company_name, r.knox_id)));
        match page.next {
            Some(key) => token = list.next_token(key),
            None => return rows,
        }
    }
}

#[sqlx::test(migrator = "crate::MIGRATOR")]
async fn company_names_page_and_export_in_the_icu_root_collation(pool: PgPool) {
    let repo = Repository::new(pool.clone());
    let names = [
        ("600000011", "Zeta"),
        ("600000012", "Ärzte Nord"),
        ("600000013", "acme"),
        ("600000014", "Acme"),
        ("600000015", "Beta"),
        ("600000016", "émile"),
        ("600000017", "Émile"),
        ("600000018", "Acme"),
        ("600000019", "Ångström AB"),
        ("600000020", "acme b"),
    ];
    for (knox_id, name) in names {
        apply(&pool, added(knox_id, pb::AccountKind::Customer, name)).await;
    }
    let expected: Vec<(String, String)> = [
        ("acme", "600000013"),
        ("Acme", "600000014"),
        ("Acme", "600000018"),
        ("acme b", "600000020"),
        ("Ångström AB", "600000019"),
        ("Ärzte Nord", "600000012"),
        ("Beta", "600000015"),
        ("émile", "600000016"),
        ("Émile", "600000017"),
        ("Zeta", "600000011"),
    ]
    .iter()
    .map(|(name, knox_id)| ((*name).to_owned(), (*knox_id).to_owned()))
    .collect();
    for page_size in [1, 2, 3, 1000] {
        assert_eq!(
            all_rows(&repo, "", page_size).await,
            expected,
            "pages of {page_size}"
        );
    }
    // A search pages in the same order among its hits.
    assert_eq!(all_rows(&repo, "mile", 1).await, expected[7..9].to_vec());

    // The CSV's cursor, in the same order.
    let cursor = repo
        .export_customers(&reseller(), &crate::domain::SearchQuery::parse("").unwrap())
        .await
        .unwrap();
    let chunks: Vec<_> = stream_csv(cursor, (), true).collect().await;
    let bytes: Vec<u8> = chunks.into_iter().flat_map(|c| c.unwrap().data).collect();
    let text = String::from_utf8(bytes).unwrap();
    let text = text.strip_prefix('\u{feff}').expect("the byte-order mark");
    let exported: Vec<(String, String)> = text
        .split("\r\n")
        .skip(1)
        .filter(|line| !line.is_empty())
        .map(|line| {
            let mut cells = line.split(',');
            let name = cells.next().unwrap().to_owned();
            (name, cells.next().unwrap().to_owned())
        })
        .collect();
    assert_eq!(exported, expected);
}

/// `total_size` of every page of the Customers page, in the default order, paging
/// `page_size` at a time.
async fn totals(repo: &Repository, query: &str, page_size: i32) -> Vec<i64> {
    let mut totals = Vec::new();
    let mut token = String::new();
    loop {
        let list = ListCustomers::parse(query, "", page_size, &token).unwrap();
        let page = repo.list_customers(&reseller(), &list).await.unwrap();
        totals.push(page.total);
        match page.next {
            Some(key) => token = list.next_token(key),
            None => return totals,
        }
    }
}

/// Issue #12: the count of the list comes from a maintained per-reseller count, and a
/// search's from its page when the page is the whole result; on every page it is still
/// the number of the reseller's listed rows matching the query.
#[sqlx::test(migrator = "crate::MIGRATOR")]
async fn every_page_counts_the_rows_matching_its_query(pool: PgPool) {
    let repo = Repository::new(pool.clone());
    assert_eq!(totals(&repo, "", 2).await, [0]);
    for i in 1..=5 {
        let name = format!("Acme {i}");
        apply(
            &pool,
            added(&format!("60000001{i}"), pb::AccountKind::Customer, &name),
        )
        .await;
    }
    apply(
        &pool,
        added("600000029", pb::AccountKind::Customer, "Globex"),
    )
    .await;
    // Neither another reseller's customer nor a row not added (an upload's counters)
    // is on the list.
    apply(
        &pool,
        added_by(
            "other",
            "600000039",
            pb::AccountKind::Customer,
            "Acme other",
        ),
    )
    .await;
    apply(&pool, to_customer(Uuid::now_v7(), 10, &["T1"])).await;

    assert_eq!(totals(&repo, "", 2).await, [6, 6, 6]);
    assert_eq!(totals(&repo, "", 50).await, [6]);
    // A search whose first page is the whole result, and one over several pages.
    assert_eq!(totals(&repo, "acme", 50).await, [5]);
    assert_eq!(totals(&repo, "ACME", 5).await, [5]);
    assert_eq!(totals(&repo, "acme", 2).await, [5, 5, 5]);
    assert_eq!(totals(&repo, "acme", 4).await, [5, 5]);
    assert_eq!(totals(&repo, "globex", 1).await, [1]);
    assert_eq!(totals(&repo, "initech", 50).await, [0]);

    // Adding the customer whose counters waited lists it: one more, on every page.
    apply(
        &pool,
        added(CUSTOMER, pb::AccountKind::Customer, "Acme late"),
    )
    .await;
    assert_eq!(totals(&repo, "", 2).await, [7, 7, 7, 7]);
    assert_eq!(totals(&repo, "acme", 3).await, [6, 6]);
    // Added again (a replay): still one row.
    apply(
        &pool,
        added(CUSTOMER, pb::AccountKind::Customer, "Acme late"),
    )
    .await;
    assert_eq!(totals(&repo, "", 50).await, [7]);
    assert_listed_counts_add_up(&pool).await;
}

/// The maintained count of each reseller's listed rows (migration 0011) is the count of
/// its listed rows.
async fn assert_listed_counts_add_up(pool: &PgPool) {
    let wrong: Vec<(String, i64, i64)> = sqlx::query_as(
        "SELECT reseller_id, COALESCE(n.listed, 0), COALESCE(r.rows, 0) \
         FROM reporting.listed_counts n \
         FULL JOIN (SELECT reseller_id, count(*) AS rows FROM reporting.customer_rows \
                    WHERE listed GROUP BY reseller_id) r USING (reseller_id) \
         WHERE COALESCE(n.listed, 0) <> COALESCE(r.rows, 0)",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    assert!(wrong.is_empty(), "(reseller, kept, listed rows): {wrong:?}");
}

#[sqlx::test(migrator = "crate::MIGRATOR")]
async fn counters_that_arrive_before_the_customer_wait_unlisted(pool: PgPool) {
    let repo = Repository::new(pool.clone());
    let upload = Uuid::now_v7();
    apply(&pool, to_customer(upload, 10, &["A1", "A2", "A3"])).await;

    // Not added: not listed anywhere, and not found.
    let list = ListCustomers::parse("", "", 50, "").unwrap();
    let page = repo.list_customers(&reseller(), &list).await.unwrap();
    assert_eq!((page.rows.len(), page.total), (0, 0));
    assert!(counters(&repo, CUSTOMER).await.is_none());
    let devices = ListCustomerDevices::parse(CUSTOMER, 10, "").unwrap();
    assert!(
        repo.customer_devices(&reseller(), &devices)
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        repo.export_customer_devices(&reseller(), &knox(CUSTOMER))
            .await
            .unwrap()
            .is_none()
    );

    // Added later: listed, with the counters kept.
    apply(&pool, added(CUSTOMER, pb::AccountKind::Customer, "Globex")).await;
    let page = repo.list_customers(&reseller(), &list).await.unwrap();
    assert_eq!(page.total, 1);
    assert_eq!(page.rows[0].company_name, "Globex");
    assert_eq!(
        counters(&repo, CUSTOMER).await,
        Some((3, 3, Some(time(10))))
    );
    let detail = repo
        .customer_detail(&reseller(), &knox(CUSTOMER))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(detail.uploads.len(), 1);
    assert_eq!(detail.uploads[0].upload_id, upload);
    assert_eq!(detail.uploads[0].device_count, 3);
    assert_eq!(detail.uploads[0].order_number, "PO-10");
    assert!(!detail.uploads[0].virtual_upload);

    // A repeated part (another event ID) changes nothing.
    apply(&pool, to_customer(upload, 10, &["A1", "A2", "A3"])).await;
    assert_eq!(
        counters(&repo, CUSTOMER).await,
        Some((3, 3, Some(time(10))))
    );

    // Another reseller sees nothing.
    let other = ResellerId::parse("other").unwrap();
    assert!(
        repo.customer_detail(&other, &knox(CUSTOMER))
            .await
            .unwrap()
            .is_none()
    );
}

#[sqlx::test(migrator = "crate::MIGRATOR")]
async fn deletions_keep_uploads_drop_devices_and_answer_with_receipts(pool: PgPool) {
    let repo = Repository::new(pool.clone());
    apply(&pool, added(CUSTOMER, pb::AccountKind::Customer, "Globex")).await;
    let first = Uuid::now_v7();
    let second = Uuid::now_v7();
    apply(&pool, to_customer(first, 10, &["A1", "A2"])).await;
    apply(&pool, to_customer(second, 20, &["B1"])).await;
    assert_eq!(
        counters(&repo, CUSTOMER).await,
        Some((3, 3, Some(time(20))))
    );

    let deletion = Uuid::now_v7();
    let event = events::encode(&events::new_event(
        deleted(deletion, &[("A1", first), ("B1", second)]),
        OffsetDateTime::now_utc(),
    ));
    for expected in [Outcome::Applied, Outcome::Duplicate] {
        // Redelivered: the inbox row fails the one statement, which changes nothing.
        let outcome = inbox::apply_once(crate::module::spec(), pool.clone(), Projection, &event)
            .await
            .unwrap();
        assert_eq!(outcome, expected);
    }
    // UPLOADS keeps deleted devices, DEVICES drops them, LAST UPLOADED stays.
    assert_eq!(
        counters(&repo, CUSTOMER).await,
        Some((3, 1, Some(time(20))))
    );
    assert_live_counts_add_up(&pool).await;
    assert_eq!(all_devices(&repo, CUSTOMER, 10).await, ["A2"]);
    let detail = repo
        .customer_detail(&reseller(), &knox(CUSTOMER))
        .await
        .unwrap()
        .unwrap();
    let counts: Vec<_> = detail
        .uploads
        .iter()
        .map(|u| (u.upload_id, u.device_count))
        .collect();
    assert_eq!(
        counts,
        [(second, 1), (first, 2)],
        "newest first, deleted included"
    );

    let receipts_now = receipts(&pool).await;
    assert_eq!(receipts_now.len(), 1);
    let receipt = &receipts_now[0];
    assert_eq!(receipt.deletion_id, deletion.to_string());
    assert_eq!(receipt.portal, pb::Portal::Reseller as i32);
    assert_eq!(receipt.state, pb::PortalState::Removed as i32);
    assert_eq!((receipt.part, receipt.part_count), (1, 1));
    let mut removed = receipt.removed_device_ids.clone();
    removed.sort();
    assert_eq!(removed, ["A1", "B1"]);

    // Deleting again (or a registration of another upload) removes nothing.
    apply(
        &pool,
        deleted(Uuid::now_v7(), &[("A1", first), ("A2", second)]),
    )
    .await;
    let last = receipts(&pool).await.pop().unwrap();
    assert_eq!(last.state, pb::PortalState::NotApplicable as i32);
    assert!(last.removed_device_ids.is_empty());
    assert_eq!(
        counters(&repo, CUSTOMER).await,
        Some((3, 1, Some(time(20))))
    );
}

#[sqlx::test(migrator = "crate::MIGRATOR")]
async fn a_deletion_that_overtakes_its_upload_never_shows_the_device(pool: PgPool) {
    let repo = Repository::new(pool.clone());
    apply(&pool, added(MSP, pb::AccountKind::Msp, "Pool")).await;
    let upload = Uuid::now_v7();
    apply(&pool, deleted(Uuid::now_v7(), &[("P1", upload)])).await;
    assert_eq!(
        receipts(&pool).await[0].state,
        pb::PortalState::NotApplicable as i32
    );
    apply(&pool, to_msp(upload, 5, &["P1", "P2"])).await;
    // Counted in UPLOADS like any deleted device, never among the devices.
    assert_eq!(counters(&repo, MSP).await, Some((2, 1, Some(time(5)))));
    assert_eq!(all_devices(&repo, MSP, 10).await, ["P2"]);
}

#[sqlx::test(migrator = "crate::MIGRATOR")]
async fn device_pages_follow_the_detail_order_across_equal_upload_times(pool: PgPool) {
    let repo = Repository::new(pool.clone());
    apply(&pool, added(CUSTOMER, pb::AccountKind::Customer, "Globex")).await;
    // Two uploads at the same time, one older, one newer.
    let (u1, u2, u3, u4) = (
        Uuid::from_u128(1),
        Uuid::from_u128(2),
        Uuid::from_u128(3),
        Uuid::from_u128(4),
    );
    let ids = |prefix: &str, n: usize| -> Vec<String> {
        (0..n).map(|i| format!("{prefix}{i:02}")).collect()
    };
    for (upload, seconds, prefix, n) in [
        (u2, 20, "B", 7),
        (u1, 20, "A", 6),
        (u3, 10, "C", 5),
        (u4, 30, "D", 3),
    ] {
        let devices = ids(prefix, n);
        let refs: Vec<&str> = devices.iter().map(String::as_str).collect();
        apply(&pool, to_customer(upload, seconds, &refs)).await;
    }
    apply(&pool, deleted(Uuid::now_v7(), &[("A03", u1), ("C00", u3)])).await;

    let mut expected = Vec::new();
    for (prefix, n) in [("D", 3), ("A", 6), ("B", 7), ("C", 5)] {
        expected.extend(ids(prefix, n));
    }
    expected.retain(|id| id != "A03" && id != "C00");
    for page_size in [1, 2, 4, 5, 19, 1000] {
        assert_eq!(
            all_devices(&repo, CUSTOMER, page_size).await,
            expected,
            "pages of {page_size}"
        );
    }

    // The CSV has the same devices in the same order.
    let cursor = repo
        .export_customer_devices(&reseller(), &knox(CUSTOMER))
        .await
        .unwrap()
        .unwrap();
    let chunks: Vec<_> = stream_csv(cursor, (), false).collect().await;
    let bytes: Vec<u8> = chunks.into_iter().flat_map(|c| c.unwrap().data).collect();
    let text = String::from_utf8(bytes).unwrap();
    let mut lines = text.split("\r\n");
    assert_eq!(
        lines.next().unwrap(),
        "Upload ID,Uploaded At,Order Number,Device ID,Device Type,Model,Virtual Upload,Via MSP"
    );
    let rows: Vec<&str> = lines.filter(|l| !l.is_empty()).collect();
    assert_eq!(rows.len(), expected.len());
    assert_eq!(
        rows[0],
        format!("{u4},2023-11-14T22:13:50Z,PO-30,D00,Serial,model of D00,no,")
    );
    let csv_ids: Vec<&str> = rows.iter().map(|r| r.split(',').nth(3).unwrap()).collect();
    assert_eq!(csv_ids, expected);
}

#[sqlx::test(migrator = "crate::MIGRATOR")]
async fn deltas_move_counts_between_rows_and_empty_placements_go(pool: PgPool) {
    // The plumbing issue #4's moves and delinks use: a virtual upload taking devices from
    // the MSP's placement creates (and lists) the customer's row.
    let repo = Repository::new(pool.clone());
    apply(&pool, added(MSP, pb::AccountKind::Msp, "Pool")).await;
    let old = Uuid::now_v7();
    let new = Uuid::now_v7();
    apply(&pool, to_msp(old, 10, &["M1", "M2"])).await;
    apply(&pool, to_msp(new, 20, &["M3"])).await;
    assert_eq!(counters(&repo, MSP).await, Some((3, 3, Some(time(20)))));

    let upload = UploadRef {
        reseller_id: RESELLER.into(),
        upload_id: new,
        uploaded_at: time(20),
        order_number: "PO-20".into(),
    };
    let from = Placement {
        knox_id: MSP,
        kind: AccountKind::Msp,
        virtual_upload: false,
        via_msp_id: "",
    };
    let to = Placement {
        knox_id: CUSTOMER,
        kind: AccountKind::Customer,
        virtual_upload: true,
        via_msp_id: MSP,
    };
    let mut tx = pool.begin().await.unwrap();
    super::apply_deltas(
        &mut tx,
        crate::domain::transfer(&upload, Some(&from), Some(&to), 1, 1),
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();

    // The MSP's newest upload left entirely: LAST UPLOADED falls back to the older one.
    assert_eq!(counters(&repo, MSP).await, Some((2, 2, Some(time(10)))));
    let detail = repo
        .customer_detail(&reseller(), &knox(MSP))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(detail.uploads.len(), 1);
    // The customer was never added, yet is listed through its virtual upload.
    assert_eq!(
        counters(&repo, CUSTOMER).await,
        Some((1, 1, Some(time(20))))
    );
    let detail = repo
        .customer_detail(&reseller(), &knox(CUSTOMER))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(detail.row.status, crate::domain::CustomerStatus::Active);
    assert_eq!(detail.uploads.len(), 1);
    assert!(detail.uploads[0].virtual_upload);
    assert_eq!(detail.uploads[0].via_msp_id, MSP);
    let list = ListCustomers::parse("", "", 50, "").unwrap();
    assert_eq!(
        repo.list_customers(&reseller(), &list).await.unwrap().total,
        2
    );

    // And back: the virtual upload empties, the customer's row is no longer listed.
    let mut tx = pool.begin().await.unwrap();
    super::apply_deltas(
        &mut tx,
        vec![
            PlacementDelta::new(&upload, &to, -1, -1),
            PlacementDelta::new(&upload, &from, 1, 1),
        ],
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(counters(&repo, MSP).await, Some((3, 3, Some(time(20)))));
    assert!(counters(&repo, CUSTOMER).await.is_none());
    assert_eq!(
        repo.list_customers(&reseller(), &list).await.unwrap().total,
        1
    );
}

// ---- Issue #4: MSP links, moves, delinks and virtual uploads; revisions. ----

const OTHER_CUSTOMER: &str = "600000002";

fn added_by(reseller_id: &str, knox_id: &str, kind: pb::AccountKind, name: &str) -> Payload {
    let Payload::CustomerAdded(mut e) = added(knox_id, kind, name) else {
        unreachable!()
    };
    e.reseller_id = reseller_id.into();
    e.reference_revision = 1;
    Payload::CustomerAdded(e)
}

fn registered(knox_id: &str, kind: pb::AccountKind, name: &str) -> Payload {
    Payload::AccountRegistered(pb::AccountRegistered {
        knox_id: knox_id.into(),
        kind: kind as i32,
        company_name: name.into(),
        country: "DE".into(),
        created_at: None,
    })
}

fn linked(customer: &str, seq: i64) -> Payload {
    Payload::MspCustomerLinked(pb::MspCustomerLinked {
        msp_id: MSP.into(),
        customer_knox_id: customer.into(),
        mode: pb::ManagementMode::JointlyManaged as i32,
        since: None,
        seq,
    })
}

fn delinked(customer: &str, seq: i64) -> Payload {
    Payload::MspCustomerDelinked(pb::MspCustomerDelinked {
        msp_id: MSP.into(),
        customer_knox_id: customer.into(),
        delinked_at: None,
        requested_by: customer.into(),
        seq,
    })
}

/// MSP moves registrations (device, upload, the upload's `seconds`) to `to` at `seq`.
fn moved(to: &str, seq: i64, registrations: &[(&str, Uuid, i64)]) -> Payload {
    Payload::MspDevicesMoved(pb::MspDevicesMoved {
        msp_id: MSP.into(),
        to_customer_knox_id: to.into(),
        device_ids: registrations
            .iter()
            .map(|(id, _, _)| (*id).to_owned())
            .collect(),
        devices: registrations
            .iter()
            .map(|(id, upload, seconds)| pb::MovedDevice {
                device_id: (*id).to_owned(),
                reseller_id: RESELLER.into(),
                upload_id: upload.to_string(),
                from_knox_id: MSP.into(),
                id_kind: pb::DeviceIdKind::Serial as i32,
                model: format!("model of {id}"),
                uploaded_at: Some(at(*seconds)),
                order_number: format!("PO-{seconds}"),
            })
            .collect(),
        moved_at: None,
        seq,
    })
}

/// A listed row as the list shows it: (display ID, managing MSP, UPLOADS, DEVICES).
async fn shown(
    repo: &Repository,
    reseller_id: &str,
    knox_id: &str,
) -> Option<(String, String, i64, i64)> {
    repo.customer_detail(&ResellerId::parse(reseller_id).unwrap(), &knox(knox_id))
        .await
        .unwrap()
        .map(|d| {
            (
                d.row.display_id().to_owned(),
                d.row.managing_msp_id.clone(),
                d.row.uploaded_devices,
                d.row.devices,
            )
        })
}

/// The uploads under a row: (upload, device count, virtual, via MSP).
async fn uploads_under(repo: &Repository, knox_id: &str) -> Vec<(Uuid, i64, bool, String)> {
    repo.customer_detail(&reseller(), &knox(knox_id))
        .await
        .unwrap()
        .map(|d| {
            d.uploads
                .into_iter()
                .map(|u| (u.upload_id, u.device_count, u.virtual_upload, u.via_msp_id))
                .collect()
        })
        .unwrap_or_default()
}

#[sqlx::test(migrator = "crate::MIGRATOR")]
async fn a_move_projected_before_its_upload_waits_for_it(pool: PgPool) {
    let repo = Repository::new(pool.clone());
    apply(&pool, added(MSP, pb::AccountKind::Msp, "Pool")).await;
    let upload = Uuid::now_v7();
    // The link and the move first: the registration is known, placed nowhere.
    apply(&pool, linked(CUSTOMER, 1)).await;
    apply(&pool, moved(CUSTOMER, 2, &[("A1", upload, 10)])).await;
    assert_eq!(counters(&repo, MSP).await, Some((0, 0, None)));
    assert!(counters(&repo, CUSTOMER).await.is_none());

    // The upload: the moved device under the MSP (its customer is linked), with the rest.
    apply(&pool, to_msp(upload, 10, &["A1", "A2"])).await;
    assert_eq!(counters(&repo, MSP).await, Some((2, 2, Some(time(10)))));
    assert!(
        counters(&repo, CUSTOMER).await.is_none(),
        "only moved devices: not listed"
    );
    // Redelivered, the upload changes nothing.
    apply(&pool, to_msp(upload, 10, &["A1", "A2"])).await;
    assert_eq!(counters(&repo, MSP).await, Some((2, 2, Some(time(10)))));

    // The delink: the moved device becomes a virtual upload under the customer.
    apply(&pool, delinked(CUSTOMER, 3)).await;
    assert_eq!(counters(&repo, MSP).await, Some((1, 1, Some(time(10)))));
    assert_eq!(
        counters(&repo, CUSTOMER).await,
        Some((1, 1, Some(time(10))))
    );
    assert_eq!(all_devices(&repo, CUSTOMER, 10).await, ["A1"]);
    assert_eq!(all_devices(&repo, MSP, 10).await, ["A2"]);

    // A move whose delink is already projected, before its upload: virtual at once.
    let later = Uuid::now_v7();
    apply(&pool, moved(OTHER_CUSTOMER, 4, &[("B1", later, 20)])).await;
    apply(&pool, delinked(OTHER_CUSTOMER, 5)).await;
    assert!(counters(&repo, OTHER_CUSTOMER).await.is_none());
    apply(&pool, to_msp(later, 20, &["B1", "B2"])).await;
    assert_eq!(
        counters(&repo, OTHER_CUSTOMER).await,
        Some((1, 1, Some(time(20))))
    );
    assert_eq!(counters(&repo, MSP).await, Some((2, 2, Some(time(20)))));
    assert_eq!(
        uploads_under(&repo, OTHER_CUSTOMER).await,
        [(later, 1, true, MSP.to_owned())]
    );
}

#[sqlx::test(migrator = "crate::MIGRATOR")]
async fn delinks_make_virtual_uploads_that_a_relink_keeps(pool: PgPool) {
    let repo = Repository::new(pool.clone());
    apply(&pool, added(MSP, pb::AccountKind::Msp, "Pool")).await;
    apply(
        &pool,
        added_by(RESELLER, CUSTOMER, pb::AccountKind::Customer, "Globex"),
    )
    .await;
    apply(
        &pool,
        added_by("other", CUSTOMER, pb::AccountKind::Customer, "Globex"),
    )
    .await;
    let upload = Uuid::now_v7();
    apply(&pool, to_msp(upload, 10, &["A", "B", "C"])).await;

    // Linked: every reseller's row of the customer shows the MSP.
    apply(&pool, linked(CUSTOMER, 1)).await;
    let managed =
        |uploads: i64, devices: i64| Some((MSP.to_owned(), MSP.to_owned(), uploads, devices));
    let own =
        |uploads: i64, devices: i64| Some((CUSTOMER.to_owned(), String::new(), uploads, devices));
    assert_eq!(shown(&repo, RESELLER, CUSTOMER).await, managed(0, 0));
    assert_eq!(shown(&repo, "other", CUSTOMER).await, managed(0, 0));
    assert_eq!(
        shown(&repo, RESELLER, MSP).await,
        Some((MSP.to_owned(), String::new(), 3, 3))
    );

    // Moved: still under the MSP (rule 2).
    apply(
        &pool,
        moved(CUSTOMER, 2, &[("A", upload, 10), ("B", upload, 10)]),
    )
    .await;
    assert_eq!(shown(&repo, RESELLER, CUSTOMER).await, managed(0, 0));
    assert_eq!(counters(&repo, MSP).await, Some((3, 3, Some(time(10)))));

    // Delinked: the moved devices are one virtual upload under the customer (rule 3).
    apply(&pool, delinked(CUSTOMER, 3)).await;
    assert_eq!(shown(&repo, RESELLER, CUSTOMER).await, own(2, 2));
    assert_eq!(shown(&repo, "other", CUSTOMER).await, own(0, 0));
    assert_eq!(counters(&repo, MSP).await, Some((1, 1, Some(time(10)))));
    assert_eq!(
        uploads_under(&repo, CUSTOMER).await,
        [(upload, 2, true, MSP.to_owned())]
    );

    // Linked again: the virtual upload stays; rows added from now on show the MSP too.
    apply(&pool, linked(CUSTOMER, 4)).await;
    assert_eq!(shown(&repo, RESELLER, CUSTOMER).await, managed(2, 2));
    apply(
        &pool,
        added_by("third", CUSTOMER, pb::AccountKind::Customer, "Globex"),
    )
    .await;
    assert_eq!(shown(&repo, "third", CUSTOMER).await, managed(0, 0));

    // A device moved after the re-link is under the MSP until the next delink, which
    // adds it to the same virtual upload.
    apply(&pool, moved(CUSTOMER, 5, &[("C", upload, 10)])).await;
    assert_eq!(shown(&repo, RESELLER, CUSTOMER).await, managed(2, 2));
    assert_eq!(counters(&repo, MSP).await, Some((1, 1, Some(time(10)))));
    apply(&pool, delinked(CUSTOMER, 6)).await;
    assert_eq!(shown(&repo, RESELLER, CUSTOMER).await, own(3, 3));
    assert_eq!(shown(&repo, "third", CUSTOMER).await, own(0, 0));
    assert_eq!(
        uploads_under(&repo, CUSTOMER).await,
        [(upload, 3, true, MSP.to_owned())]
    );
    // The MSP row keeps no upload: nothing placed under it, no LAST UPLOADED.
    assert_eq!(counters(&repo, MSP).await, Some((0, 0, None)));
    assert!(uploads_under(&repo, MSP).await.is_empty());

    // Devices the MSP moves on from the delinked customer... cannot be: it no longer
    // links it. Moved from it after a re-link, to another customer it links, they are
    // under the MSP again (rule 2 for the new move).
    apply(&pool, linked(CUSTOMER, 7)).await;
    apply(&pool, linked(OTHER_CUSTOMER, 8)).await;
    apply(&pool, moved(OTHER_CUSTOMER, 9, &[("A", upload, 10)])).await;
    assert_eq!(shown(&repo, RESELLER, CUSTOMER).await, managed(2, 2));
    assert_eq!(counters(&repo, MSP).await, Some((1, 1, Some(time(10)))));
}

#[sqlx::test(migrator = "crate::MIGRATOR")]
async fn deletions_racing_moves_and_delinks_end_the_same(pool: PgPool) {
    let repo = Repository::new(pool.clone());
    apply(&pool, added(MSP, pb::AccountKind::Msp, "Pool")).await;
    let upload = Uuid::now_v7();
    // The deletion first, then the move, then the upload: never shown, never removed.
    apply(&pool, deleted(Uuid::now_v7(), &[("A", upload)])).await;
    apply(
        &pool,
        moved(CUSTOMER, 2, &[("A", upload, 10), ("B", upload, 10)]),
    )
    .await;
    // A deletion of a registration known only from its move: it was never shown.
    apply(&pool, deleted(Uuid::now_v7(), &[("B", upload)])).await;
    let states: Vec<_> = receipts(&pool).await.iter().map(|r| r.state).collect();
    assert_eq!(states, [pb::PortalState::NotApplicable as i32; 2]);
    apply(&pool, to_msp(upload, 10, &["A", "B", "C"])).await;
    // The move implied the link: both moved (deleted) devices are under the MSP.
    assert_eq!(counters(&repo, MSP).await, Some((3, 1, Some(time(10)))));
    apply(&pool, delinked(CUSTOMER, 3)).await;
    assert_eq!(counters(&repo, MSP).await, Some((1, 1, Some(time(10)))));
    // Listed through its virtual upload, whose devices are all deleted.
    assert_eq!(
        counters(&repo, CUSTOMER).await,
        Some((2, 0, Some(time(10))))
    );
    assert!(all_devices(&repo, CUSTOMER, 10).await.is_empty());
    // The device left at the MSP, deleted after the delink: removed from the MSP's row.
    apply(&pool, deleted(Uuid::now_v7(), &[("C", upload)])).await;
    let last = receipts(&pool).await.pop().unwrap();
    assert_eq!(last.state, pb::PortalState::Removed as i32);
    assert_eq!(last.removed_device_ids, ["C"]);
    assert_eq!(counters(&repo, MSP).await, Some((1, 0, Some(time(10)))));
}

/// Everything the projection keeps that a view can show, as text: the rows that are
/// listed or count something, the uploads under rows, the registrations' placements and
/// the rows as the list reads them (the managing MSP).
async fn snapshot(pool: &PgPool) -> String {
    let mut out = String::new();
    for sql in [
        "SELECT COALESCE(string_agg(t::text, E'\\n' ORDER BY t::text), '') FROM ( \
           SELECT reseller_id, knox_id, kind, company_name, country, internal_reference, \
             status, added, last_uploaded_at, uploaded_devices, devices, virtual_devices, listed \
           FROM reporting.customer_rows \
           WHERE listed OR uploaded_devices <> 0 OR devices <> 0) t",
        "SELECT COALESCE(string_agg(t::text, E'\\n' ORDER BY t::text), '') \
         FROM reporting.upload_placements t",
        "SELECT COALESCE(string_agg(t::text, E'\\n' ORDER BY t::text), '') FROM ( \
           SELECT device_id, upload_id, uploaded_to, holder_knox_id, move_seq, placed_knox_id, \
             virtual, via_msp_id, deleted FROM reporting.registrations) t",
    ] {
        let text: String = sqlx::query_scalar(sql).fetch_one(pool).await.unwrap();
        out += &text;
        out += "\n--\n";
    }
    let repo = Repository::new(pool.clone());
    let list = ListCustomers::parse("", "", 1000, "").unwrap();
    for row in repo.list_customers(&reseller(), &list).await.unwrap().rows {
        out += &format!("{row:?}\n");
    }
    out
}

/// Empties every table the projection writes.
async fn reset(pool: &PgPool) {
    sqlx::query(
        "TRUNCATE reporting.accounts, reporting.customer_rows, reporting.approvals, \
         reporting.registrations, reporting.deleted_registrations, reporting.upload_placements, \
         reporting.msp_links, reporting.outbox",
    )
    .execute(pool)
    .await
    .unwrap();
}

/// A deterministic shuffle (xorshift), so a failure can be reproduced from its seed.
fn shuffled(events: &[Payload], seed: u64) -> Vec<Payload> {
    let mut out = events.to_vec();
    let mut state = seed;
    for i in (1..out.len()).rev() {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        out.swap(i, (state % (i as u64 + 1)) as usize);
    }
    out
}

#[sqlx::test(migrator = "crate::MIGRATOR")]
async fn msp_events_in_any_order_end_in_the_same_views(pool: PgPool) {
    let first = Uuid::from_u128(1);
    let second = Uuid::from_u128(2);
    let direct = Uuid::from_u128(3);
    // A history in stream order: uploads to the MSP, links, moves, a deletion before and
    // after a delink, a re-link with a further move, a direct upload to a managed
    // customer, reference and status changes.
    let events = vec![
        registered(MSP, pb::AccountKind::Msp, "Pool"),
        registered(CUSTOMER, pb::AccountKind::Customer, "Globex"),
        registered(OTHER_CUSTOMER, pb::AccountKind::Customer, "Initech"),
        added_by(RESELLER, MSP, pb::AccountKind::Msp, "Pool"),
        added_by(
            RESELLER,
            OTHER_CUSTOMER,
            pb::AccountKind::Customer,
            "Initech",
        ),
        to_msp(first, 10, &["A", "B", "C", "D"]),
        to_msp(second, 20, &["E", "F"]),
        linked(CUSTOMER, 1),
        linked(OTHER_CUSTOMER, 2),
        moved(
            CUSTOMER,
            3,
            &[("A", first, 10), ("B", first, 10), ("E", second, 20)],
        ),
        moved(OTHER_CUSTOMER, 4, &[("C", first, 10)]),
        uploaded(
            direct,
            OTHER_CUSTOMER,
            pb::AccountKind::Customer,
            30,
            &["G", "H"],
        ),
        deleted(Uuid::from_u128(10), &[("B", first)]),
        delinked(CUSTOMER, 5),
        deleted(
            Uuid::from_u128(11),
            &[("A", first), ("D", first), ("G", direct)],
        ),
        linked(CUSTOMER, 6),
        moved(CUSTOMER, 7, &[("C", first, 10), ("F", second, 20)]),
        delinked(OTHER_CUSTOMER, 8),
        Payload::CustomerReferenceUpdated(pb::CustomerReferenceUpdated {
            reseller_id: RESELLER.into(),
            knox_id: OTHER_CUSTOMER.into(),
            internal_reference: "second".into(),
            revision: 2,
            ..Default::default()
        }),
        Payload::CustomerStatusChanged(pb::CustomerStatusChanged {
            reseller_id: RESELLER.into(),
            knox_id: OTHER_CUSTOMER.into(),
            status: pb::CustomerStatus::Inactive as i32,
            revision: 1,
        }),
    ];
    for event in &events {
        apply(&pool, event.clone()).await;
    }
    let expected = snapshot(&pool).await;
    assert_listed_counts_add_up(&pool).await;
    // Sanity: the stream order's truth.
    let repo = Repository::new(pool.clone());
    // Globex: A, B (both deleted) and E became virtual at the delink; C and F, moved
    // after the re-link, are under the MSP.
    assert_eq!(
        shown(&repo, RESELLER, CUSTOMER).await,
        Some((MSP.to_owned(), MSP.to_owned(), 3, 1))
    );
    // Initech: its direct upload (G deleted), and nothing virtual (C left it before its
    // delink).
    assert_eq!(
        shown(&repo, RESELLER, OTHER_CUSTOMER).await,
        Some((OTHER_CUSTOMER.to_owned(), String::new(), 2, 1))
    );
    // The MSP: C and D (deleted) of the first upload, F of the second.
    assert_eq!(
        shown(&repo, RESELLER, MSP).await,
        Some((MSP.to_owned(), String::new(), 3, 2))
    );

    let mut orders = vec![events.iter().rev().cloned().collect::<Vec<_>>()];
    for seed in 1..=16u64 {
        orders.push(shuffled(&events, seed.wrapping_mul(0x9E37_79B9_7F4A_7C15)));
    }
    for (i, order) in orders.iter().enumerate() {
        reset(&pool).await;
        for event in order {
            apply(&pool, event.clone()).await;
        }
        let got = snapshot(&pool).await;
        assert_eq!(got, expected, "order #{i} gave different views");
        assert_listed_counts_add_up(&pool).await;
        // Everything again (a redelivery): nothing changes.
        for event in order {
            apply(&pool, event.clone()).await;
        }
        assert_eq!(snapshot(&pool).await, expected, "order #{i} redelivered");
        assert_listed_counts_add_up(&pool).await;
    }
}

#[sqlx::test(migrator = "crate::MIGRATOR")]
async fn customer_events_keep_the_newest_revision_in_any_order(pool: PgPool) {
    let repo = Repository::new(pool.clone());
    let reference = |text: &str, revision: i64| {
        Payload::CustomerReferenceUpdated(pb::CustomerReferenceUpdated {
            reseller_id: RESELLER.into(),
            knox_id: CUSTOMER.into(),
            internal_reference: text.into(),
            revision,
            ..Default::default()
        })
    };
    let status = |status: pb::CustomerStatus, revision: i64| {
        Payload::CustomerStatusChanged(pb::CustomerStatusChanged {
            reseller_id: RESELLER.into(),
            knox_id: CUSTOMER.into(),
            status: status as i32,
            revision,
        })
    };
    let row = || async {
        repo.customer_detail(&reseller(), &knox(CUSTOMER))
            .await
            .unwrap()
            .map(|d| (d.row.internal_reference, d.row.status))
    };
    use crate::domain::CustomerStatus as S;

    // Before the customer is added: kept, not listed (and nothing to retry).
    apply(&pool, reference("third", 3)).await;
    apply(&pool, status(pb::CustomerStatus::Inactive, 2)).await;
    assert_eq!(row().await, None);
    // Added with older revisions (reference 1, status as of decision 1): the newer win.
    let Payload::CustomerAdded(mut add) = added(CUSTOMER, pb::AccountKind::Customer, "Globex")
    else {
        unreachable!()
    };
    add.internal_reference = "first".into();
    add.reference_revision = 1;
    add.status = pb::CustomerStatus::Active as i32;
    add.status_revision = 1;
    apply(&pool, Payload::CustomerAdded(add.clone())).await;
    assert_eq!(row().await, Some(("third".to_owned(), S::Inactive)));
    // Late, older events change nothing; a redelivered add neither.
    apply(&pool, reference("second", 2)).await;
    apply(&pool, status(pb::CustomerStatus::Active, 1)).await;
    apply(&pool, Payload::CustomerAdded(add.clone())).await;
    assert_eq!(row().await, Some(("third".to_owned(), S::Inactive)));
    // Newer ones do.
    apply(&pool, reference("", 4)).await;
    apply(&pool, status(pb::CustomerStatus::Active, 3)).await;
    assert_eq!(row().await, Some((String::new(), S::Active)));

    // Added as of a newer decision than the one recorded: the event's status wins until
    // its own status change arrives (the same decision).
    let Payload::CustomerAdded(mut other) =
        added(OTHER_CUSTOMER, pb::AccountKind::Customer, "Initech")
    else {
        unreachable!()
    };
    other.reference_revision = 1;
    other.status = pb::CustomerStatus::Active as i32;
    other.status_revision = 2;
    let other_status = |status: pb::CustomerStatus, revision: i64| {
        Payload::CustomerStatusChanged(pb::CustomerStatusChanged {
            reseller_id: RESELLER.into(),
            knox_id: OTHER_CUSTOMER.into(),
            status: status as i32,
            revision,
        })
    };
    apply(&pool, other_status(pb::CustomerStatus::Inactive, 1)).await;
    apply(&pool, Payload::CustomerAdded(other)).await;
    let other_row = || async {
        repo.customer_detail(&reseller(), &knox(OTHER_CUSTOMER))
            .await
            .unwrap()
            .map(|d| d.row.status)
    };
    assert_eq!(other_row().await, Some(S::Active));
    apply(&pool, other_status(pb::CustomerStatus::Active, 2)).await;
    assert_eq!(other_row().await, Some(S::Active));
    // A row that exists only through virtual uploads shows ACTIVE whatever the decision.
    apply(&pool, added(MSP, pb::AccountKind::Msp, "Pool")).await;
    let upload = Uuid::now_v7();
    apply(&pool, to_msp(upload, 5, &["V"])).await;
    let third = "600000003";
    apply(
        &pool,
        Payload::CustomerStatusChanged(pb::CustomerStatusChanged {
            reseller_id: RESELLER.into(),
            knox_id: third.into(),
            status: pb::CustomerStatus::Inactive as i32,
            revision: 1,
        }),
    )
    .await;
    apply(&pool, moved(third, 1, &[("V", upload, 5)])).await;
    apply(&pool, delinked(third, 2)).await;
    let detail = repo
        .customer_detail(&reseller(), &knox(third))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(detail.row.status, S::Active);
}

/// Each row's DEVICES is the sum of the live devices of the uploads placed under it,
/// each placement's live count is its registrations not deleted, and each reseller's
/// maintained count of listed rows is right.
async fn assert_live_counts_add_up(pool: &PgPool) {
    assert_listed_counts_add_up(pool).await;
    let rows: Vec<(String, i64, i64)> = sqlx::query_as(
        "SELECT c.knox_id, c.devices, COALESCE((SELECT sum(p.live_count)::bigint \
           FROM reporting.upload_placements p \
           WHERE p.reseller_id = c.reseller_id AND p.placed_knox_id = c.knox_id), 0) \
         FROM reporting.customer_rows c ORDER BY c.knox_id",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    for (knox_id, devices, live) in rows {
        assert_eq!(
            devices, live,
            "row {knox_id}: DEVICES against its placements"
        );
    }
    let placements: Vec<(Uuid, String, i64, i64)> = sqlx::query_as(
        "SELECT p.upload_id, p.placed_knox_id, p.live_count, (SELECT count(*) \
           FROM reporting.registrations r WHERE r.reseller_id = p.reseller_id \
             AND r.upload_id = p.upload_id AND r.placed_knox_id = p.placed_knox_id \
             AND r.virtual = p.virtual AND NOT r.deleted) \
         FROM reporting.upload_placements p",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    for (upload, knox_id, live_count, live) in placements {
        assert_eq!(live_count, live, "placement {upload} under {knox_id}");
    }
}

/// Applies `payload` in a transaction left open, as a consumer of another replica would
/// be holding it.
async fn begin_applying(
    pool: &PgPool,
    payload: Payload,
) -> sqlx::Transaction<'static, sqlx::Postgres> {
    let event = ReceivedEvent {
        id: Uuid::now_v7(),
        occurred_at: OffsetDateTime::now_utc(),
        payload,
    };
    let mut tx = pool.begin_with(inbox::BEGIN_SERIALIZABLE).await.unwrap();
    inbox::apply_uncommitted(&crate::module::spec(), &Projection, &mut tx, &event)
        .await
        .unwrap_or_else(|failure| panic!("not applied: {failure:?}"));
    tx
}

/// Applies `next` while `holding` (another replica's apply, left open) holds rows it
/// needs: `next` must wait for it (`waits` says what waits for what), then apply once
/// `holding` commits.
async fn apply_behind(
    pool: &PgPool,
    holding: sqlx::Transaction<'static, sqlx::Postgres>,
    next: Payload,
    waits: &str,
) {
    let next = tokio::spawn({
        let pool = pool.clone();
        async move { apply(&pool, next).await }
    });
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(!next.is_finished(), "{waits}");
    holding.commit().await.unwrap();
    next.await.unwrap();
}

#[sqlx::test(migrator = "crate::MIGRATOR")]
async fn a_deletion_concurrent_with_a_delink_counts_where_the_delink_leaves_it(pool: PgPool) {
    let repo = Repository::new(pool.clone());
    apply(&pool, added(MSP, pb::AccountKind::Msp, "Pool")).await;
    let upload = Uuid::now_v7();
    apply(&pool, to_msp(upload, 10, &["A", "B", "C"])).await;
    apply(&pool, linked(CUSTOMER, 1)).await;
    apply(
        &pool,
        moved(CUSTOMER, 2, &[("A", upload, 10), ("B", upload, 10)]),
    )
    .await;

    // The delink holds its transaction open; the deletion of A waits for it, then
    // removes A from the virtual upload the delink made.
    let delink = begin_applying(&pool, delinked(CUSTOMER, 3)).await;
    apply_behind(
        &pool,
        delink,
        deleted(Uuid::now_v7(), &[("A", upload)]),
        "the deletion waits for the delink's rows",
    )
    .await;
    assert_eq!(
        counters(&repo, CUSTOMER).await,
        Some((2, 1, Some(time(10))))
    );
    assert_eq!(counters(&repo, MSP).await, Some((1, 1, Some(time(10)))));
    assert_live_counts_add_up(&pool).await;

    // The other way round: the deletion of B holds its transaction open; a move of B
    // (the customer linked again, the MSP moves B on to another customer) waits, then
    // moves B as deleted.
    apply(&pool, linked(CUSTOMER, 4)).await;
    let deletion = begin_applying(&pool, deleted(Uuid::now_v7(), &[("B", upload)])).await;
    apply_behind(
        &pool,
        deletion,
        moved(OTHER_CUSTOMER, 5, &[("B", upload, 10)]),
        "the move waits for the deletion's rows",
    )
    .await;
    // B, deleted, moved on to a linked customer: under the MSP again, not live.
    assert_eq!(
        counters(&repo, CUSTOMER).await,
        Some((1, 0, Some(time(10))))
    );
    assert_eq!(counters(&repo, MSP).await, Some((2, 1, Some(time(10)))));
    assert_live_counts_add_up(&pool).await;
    let receipts = receipts(&pool).await;
    assert!(
        receipts
            .iter()
            .all(|r| r.state == pb::PortalState::Removed as i32),
        "both devices were shown when deleted"
    );
}

/// Two consumer replicas apply a customer's `customer_added` and its next decision at the
/// same time (the chaos test found it): whichever commits second must see the first, or
/// the row keeps the older status for good.
#[sqlx::test(migrator = "crate::MIGRATOR")]
async fn a_decision_applied_beside_the_add_is_never_lost(pool: PgPool) {
    use crate::domain::CustomerStatus as S;
    let repo = Repository::new(pool.clone());
    let Payload::CustomerAdded(mut add) = added(CUSTOMER, pb::AccountKind::Customer, "Globex")
    else {
        unreachable!()
    };
    add.status = pb::CustomerStatus::PendingVerification as i32;
    add.status_revision = 1;
    let decision = Payload::CustomerStatusChanged(pb::CustomerStatusChanged {
        reseller_id: RESELLER.into(),
        knox_id: CUSTOMER.into(),
        status: pb::CustomerStatus::Active as i32,
        revision: 2,
    });

    // The add holds its transaction open; the decision waits for it, then shows.
    let adding = begin_applying(&pool, Payload::CustomerAdded(add)).await;
    apply_behind(&pool, adding, decision, "the decision waits for the add").await;
    let status = repo
        .customer_detail(&reseller(), &knox(CUSTOMER))
        .await
        .unwrap()
        .map(|d| d.row.status);
    assert_eq!(status, Some(S::Active));
}
