//! The projection and the views against a real PostgreSQL (`#[sqlx::test]`: a database
//! per test on `DATABASE_URL`'s server): events applied through the handler, in and out
//! of order, read back through the repository.

use futures::StreamExt;
use prost::Message;
use reseller_kit::events::ReceivedEvent;
use reseller_kit::ids::{KnoxId, ResellerId};
use reseller_kit::inbox::EventHandler;
use reseller_proto::v1::{self as pb, event::Payload};
use sqlx::PgPool;
use time::OffsetDateTime;
use uuid::Uuid;

use super::Repository;
use crate::Projection;
use crate::domain::{
    AccountKind, ListCustomerDevices, ListCustomers, Placement, PlacementDelta, UploadRef,
};
use crate::export::stream_csv;

const RESELLER: &str = "acme";
const CUSTOMER: &str = "600000001";
const MSP: &str = "700000001";

async fn apply(pool: &PgPool, payload: Payload) {
    let event = ReceivedEvent {
        id: Uuid::now_v7(),
        occurred_at: OffsetDateTime::now_utc(),
        payload,
    };
    let mut tx = pool.begin().await.unwrap();
    Projection.apply(&mut tx, &event).await.unwrap();
    tx.commit().await.unwrap();
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
            })
            .collect(),
        target_kind: kind as i32,
        order_number: format!("PO-{seconds}"),
        uploaded_at: Some(at(seconds)),
        part: 1,
        part_count: 1,
        accepted_count: ids.len() as i64,
    })
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

/// The receipts in the outbox, oldest first.
async fn receipts(pool: &PgPool) -> Vec<pb::PortalDeletionApplied> {
    let payloads: Vec<Vec<u8>> = sqlx::query_scalar(
        "SELECT payload FROM reporting.outbox WHERE subject = 'reseller.events.v1.deletion.portal_applied' ORDER BY id",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    payloads
        .iter()
        .map(|p| match pb::Event::decode(p.as_slice()).unwrap().payload {
            Some(Payload::PortalDeletionApplied(r)) => r,
            other => panic!("not a receipt: {other:?}"),
        })
        .collect()
}

#[sqlx::test(migrator = "crate::MIGRATOR")]
async fn counters_that_arrive_before_the_customer_wait_unlisted(pool: PgPool) {
    let repo = Repository::new(pool.clone());
    let upload = Uuid::now_v7();
    apply(
        &pool,
        uploaded(
            upload,
            CUSTOMER,
            pb::AccountKind::Customer,
            10,
            &["A1", "A2", "A3"],
        ),
    )
    .await;

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
    apply(
        &pool,
        uploaded(
            upload,
            CUSTOMER,
            pb::AccountKind::Customer,
            10,
            &["A1", "A2", "A3"],
        ),
    )
    .await;
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
    apply(
        &pool,
        uploaded(
            first,
            CUSTOMER,
            pb::AccountKind::Customer,
            10,
            &["A1", "A2"],
        ),
    )
    .await;
    apply(
        &pool,
        uploaded(second, CUSTOMER, pb::AccountKind::Customer, 20, &["B1"]),
    )
    .await;
    assert_eq!(
        counters(&repo, CUSTOMER).await,
        Some((3, 3, Some(time(20))))
    );

    let deletion = Uuid::now_v7();
    apply(&pool, deleted(deletion, &[("A1", first), ("B1", second)])).await;
    // UPLOADS keeps deleted devices, DEVICES drops them, LAST UPLOADED stays.
    assert_eq!(
        counters(&repo, CUSTOMER).await,
        Some((3, 1, Some(time(20))))
    );
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
    apply(
        &pool,
        uploaded(upload, MSP, pb::AccountKind::Msp, 5, &["P1", "P2"]),
    )
    .await;
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
        apply(
            &pool,
            uploaded(upload, CUSTOMER, pb::AccountKind::Customer, seconds, &refs),
        )
        .await;
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
    let chunks: Vec<_> = stream_csv(cursor, ()).collect().await;
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
    apply(
        &pool,
        uploaded(old, MSP, pb::AccountKind::Msp, 10, &["M1", "M2"]),
    )
    .await;
    apply(&pool, uploaded(new, MSP, pb::AccountKind::Msp, 20, &["M3"])).await;
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
