//! FindDevices and GetDeviceHistory (DOMAIN.md "Finding devices, history and the activity
//! log") over real gRPC, PostgreSQL and NATS: a device found by any identifier in any
//! spelling, its history through upload, MSP move, delink and deletion, the same history
//! whatever order the events arrive in, and tenancy.

use reseller_kit::auth::Role;
use reseller_kit::events::{encode, new_event};
use reseller_proto::v1::{self as pb, AccountKind, ManagementMode, event::Payload};
use reseller_tests::assert::{invalid_fields, status};
use reseller_tests::clients::{Caller, customer, msp, named, reseller};
use reseller_tests::fixtures::{active_account, register, shuffled, upload_stream};
use reseller_tests::{StackOptions, TestStack, eventually};
use time::{Duration, OffsetDateTime};
use tonic::Code;

const MSP_A: &str = "930000001";
const CUST_1: &str = "931000001";
/// The dual-SIM device: IMEI 1 (its device ID), IMEI 2 and its serial.
const IMEI_1: &str = "355887999465330";
const IMEI_2: &str = "490154203237518";
const SERIAL: &str = "R58M-DUAL";
/// An MEID, and the same MEID in its 18-digit decimal form.
const MEID: &str = "A10000009296F2";
const MEID_DECIMAL: &str = "270113177609606898";

async fn find(caller: &Caller, ids: &[&str]) -> Result<Vec<pb::DeviceLocation>, tonic::Status> {
    caller
        .reporting()
        .find_devices(pb::FindDevicesRequest {
            device_ids: ids.iter().map(|s| (*s).to_owned()).collect(),
        })
        .await
        .map(|r| r.into_inner().devices)
}

async fn history(caller: &Caller, id: &str) -> Result<pb::DeviceHistory, tonic::Status> {
    caller
        .reporting()
        .get_device_history(pb::GetDeviceHistoryRequest {
            device_id: id.into(),
        })
        .await
        .map(|r| r.into_inner())
}

fn kinds(history: &pb::DeviceHistory) -> Vec<pb::DeviceEventKind> {
    history
        .entries
        .iter()
        .map(|e| pb::DeviceEventKind::try_from(e.kind).unwrap())
        .collect()
}

/// What an identifier nobody uploaded (or another reseller's) answers: only the
/// identifier, canonical, and `found: false`.
fn not_found(id: &str) -> pb::DeviceLocation {
    pb::DeviceLocation {
        device_id: id.into(),
        ..Default::default()
    }
}

#[tokio::test]
async fn a_device_is_found_by_any_identifier_and_its_history_follows_it() {
    let stack = TestStack::start().await;
    register(&stack, CUST_1, AccountKind::Customer, "Customer One").await;
    active_account(&stack, "acme", MSP_A, AccountKind::Msp, "MSP A").await;
    let a = msp(&stack, MSP_A);
    a.link_customer(CUST_1, ManagementMode::JointlyManaged)
        .await
        .unwrap();
    let acme = reseller(&stack, "acme");
    let upload = named(&stack, Role::Reseller, "acme", "Jane Doe")
        .upload_devices(futures::stream::iter(upload_stream(
            pb::UploadHeader {
                target_knox_id: MSP_A.into(),
                order_number: "PO-7".into(),
                ..Default::default()
            },
            vec![
                pb::DeviceInput {
                    device_id: IMEI_1.into(),
                    model: "Galaxy Duo".into(),
                    secondary_ids: vec![IMEI_2.into(), SERIAL.into()],
                    ..Default::default()
                },
                // A CDMA phone, named by its MEID in hex.
                pb::DeviceInput {
                    device_id: MEID.into(),
                    ..Default::default()
                },
            ],
            10,
        )))
        .await
        .expect("upload");

    // Any identifier, in any spelling, finds it; junk and unknown IDs are not found.
    let asked = [
        "35-588799-946533-0",
        "49 015420 323751 8",
        "r58m-dual",
        "490154203237500",
        "R5CW\u{0}",
    ];
    let found = eventually("the upload to be projected", || async {
        let found = find(&acme, &asked).await.unwrap();
        found[0].found.then_some(found)
    })
    .await;
    assert_eq!(
        found.iter().map(|d| d.found).collect::<Vec<_>>(),
        [true, true, true, false, false]
    );
    for (d, asked_as) in found.iter().zip([IMEI_1, IMEI_2, SERIAL]) {
        assert_eq!(
            d.device_id, asked_as,
            "each answer names the identifier asked"
        );
        assert_eq!(d.primary_device_id, IMEI_1);
        assert_eq!(d.id_kind, pb::DeviceIdKind::Imei as i32);
        assert_eq!(d.model, "Galaxy Duo");
        assert_eq!(d.secondary_ids, [IMEI_2, SERIAL]);
        assert_eq!(d.upload_id, upload.upload_id);
        assert_eq!(d.order_number, "PO-7");
        assert_eq!(
            (
                d.placed_under_knox_id.as_str(),
                d.holder_knox_id.as_str(),
                d.moved_by_msp,
                d.msp_id.as_str(),
                d.r#virtual,
                d.deleted
            ),
            (MSP_A, MSP_A, false, MSP_A, false, false),
            "in the MSP's pool"
        );
    }
    assert_eq!(found[3], not_found("490154203237500"));
    // The MEID, asked in its decimal form.
    let meid = find(&acme, &[MEID_DECIMAL]).await.unwrap().remove(0);
    assert_eq!(
        (
            meid.found,
            meid.device_id.as_str(),
            meid.primary_device_id.as_str(),
            meid.id_kind
        ),
        (true, MEID, MEID, pb::DeviceIdKind::Meid as i32)
    );
    assert_eq!(found[4].device_id, "R5CW\\u{0}");
    assert!(!found[4].found);

    // The MSP moves it by its IMEI 2: held by the customer, still placed under the MSP
    // (rule 2).
    a.move_devices([IMEI_2], CUST_1).await.unwrap();
    let moved = eventually("the move to be projected", || async {
        let d = find(&acme, &[SERIAL]).await.unwrap().remove(0);
        d.moved_by_msp.then_some(d)
    })
    .await;
    assert_eq!(
        (
            moved.placed_under_knox_id.as_str(),
            moved.holder_knox_id.as_str(),
            moved.msp_id.as_str()
        ),
        (MSP_A, CUST_1, MSP_A)
    );

    // The customer delinks itself: placed under the customer, as a virtual upload (rule 3).
    customer(&stack, CUST_1)
        .delink_customer(CUST_1, MSP_A)
        .await
        .unwrap();
    let delinked = eventually("the delink to be projected", || async {
        let d = find(&acme, &[IMEI_1]).await.unwrap().remove(0);
        d.r#virtual.then_some(d)
    })
    .await;
    assert_eq!(delinked.placed_under_knox_id, CUST_1);

    // Deleted by its serial.
    let deletion = acme.delete_devices([SERIAL]).await.unwrap();
    let deleted = eventually("the deletion to be projected", || async {
        let d = find(&acme, &[IMEI_2]).await.unwrap().remove(0);
        d.deleted.then_some(d)
    })
    .await;
    assert_eq!(deleted.deletion_id, deletion.deletion_id);
    assert!(deleted.deleted_at.is_some());

    // Its history, asked by any identifier: exactly these four entries, in order.
    let h = history(&acme, "r58m-dual").await.unwrap();
    assert_eq!(h.device_id, IMEI_1);
    assert_eq!(
        kinds(&h),
        [
            pb::DeviceEventKind::Uploaded,
            pb::DeviceEventKind::MovedByMsp,
            pb::DeviceEventKind::Delinked,
            pb::DeviceEventKind::Deleted
        ]
    );
    let e = &h.entries;
    assert_eq!(
        (e[0].upload_id.as_str(), e[0].to_knox_id.as_str()),
        (upload.upload_id.as_str(), MSP_A)
    );
    assert_eq!(
        (
            e[1].actor.as_str(),
            e[1].from_knox_id.as_str(),
            e[1].to_knox_id.as_str()
        ),
        (MSP_A, MSP_A, CUST_1),
        "an MSP's action names the MSP's Knox ID"
    );
    assert_eq!(
        (
            e[2].actor.as_str(),
            e[2].from_knox_id.as_str(),
            e[2].to_knox_id.as_str()
        ),
        (CUST_1, MSP_A, CUST_1),
        "the customer asked for the delink"
    );
    assert_eq!(e[3].deletion_id, deletion.deletion_id);
    // The reseller's own commands name the person (the token's `name` claim) or, without
    // one, the reseller, once the upload's and deletion's records are projected.
    let h = eventually("the upload's and deletion's records", || async {
        let h = history(&acme, IMEI_1).await.unwrap();
        (!h.entries[0].actor.is_empty() && !h.entries[3].actor.is_empty()).then_some(h)
    })
    .await;
    assert_eq!(
        (h.entries[0].actor.as_str(), h.entries[3].actor.as_str()),
        ("Jane Doe", "acme")
    );
    let times: Vec<i64> = h
        .entries
        .iter()
        .map(|e| reseller_tests::fixtures::nanos(&e.occurred_at).unwrap())
        .collect();
    assert!(
        times.windows(2).all(|w| w[0] <= w[1]),
        "oldest first: {times:?}"
    );

    // Another reseller's device is not found, exactly as an unknown one.
    let globex = reseller(&stack, "globex");
    assert_eq!(find(&globex, &[IMEI_1]).await.unwrap(), [not_found(IMEI_1)]);
    let theirs = status(history(&globex, IMEI_1).await, Code::NotFound);
    let unknown = status(history(&acme, "490154203237500").await, Code::NotFound);
    assert_eq!(
        theirs.message().replace(IMEI_1, "ID"),
        unknown.message().replace("490154203237500", "ID")
    );

    // Bad requests name their field.
    assert_eq!(invalid_fields(find(&acme, &[]).await), ["device_ids"]);
    let too_many: Vec<String> = (0..1001).map(|n| format!("SERIAL{n}")).collect();
    let too_many: Vec<&str> = too_many.iter().map(String::as_str).collect();
    assert_eq!(invalid_fields(find(&acme, &too_many).await), ["device_ids"]);
    assert_eq!(
        invalid_fields(history(&acme, "R5CW\u{0}").await),
        ["device_id"]
    );
    // Only resellers look devices up.
    status(find(&a, &[IMEI_1]).await, Code::PermissionDenied);
}

/// One device's life as events, fed to reporting's consumer by hand in many orders: the
/// history, the lookup and the activity log end the same whatever the order.
#[tokio::test]
async fn history_is_the_same_whatever_order_the_events_arrive_in() {
    let stack = TestStack::start_with(StackOptions {
        background: false,
        ..Default::default()
    })
    .await;
    let consumer = reporting_service::consumer(&stack.platform);
    let acme = reseller(&stack, "acme");
    // Whole seconds: PostgreSQL keeps microseconds.
    let t0 = (OffsetDateTime::now_utc() - Duration::hours(1))
        .replace_nanosecond(0)
        .unwrap();
    let at = |minutes: i64| {
        Some(reseller_kit::timestamp::to_proto(
            t0 + Duration::minutes(minutes),
        ))
    };

    let orders: Vec<u64> = (1..=12).collect();
    for seed in orders {
        // Each order has its own device, upload and customer, so one stack serves all.
        let device = format!("R58M-ORDER{seed:02}");
        let customer_knox = format!("{}", 932_000_000 + seed);
        let upload_id = uuid::Uuid::now_v7().to_string();
        let deletion_id = uuid::Uuid::now_v7().to_string();
        let events = vec![
            Payload::DevicesUploaded(pb::DevicesUploaded {
                upload_id: upload_id.clone(),
                reseller_id: "acme".into(),
                target_knox_id: MSP_A.into(),
                devices: vec![pb::UploadedDevice {
                    device_id: device.clone(),
                    id_kind: pb::DeviceIdKind::Serial as i32,
                    model: String::new(),
                    secondary_ids: vec![format!("R58M-SECOND{seed:02}")],
                }],
                target_kind: AccountKind::Msp as i32,
                order_number: "PO".into(),
                uploaded_at: at(0),
                part: 1,
                part_count: 1,
                accepted_count: 1,
                actor: "Jane Doe".into(),
                ..Default::default()
            }),
            Payload::UploadRecorded(pb::UploadRecorded {
                upload_id: upload_id.clone(),
                reseller_id: "acme".into(),
                target_knox_id: MSP_A.into(),
                target_kind: AccountKind::Msp as i32,
                order_number: "PO".into(),
                uploaded_at: at(0),
                accepted_count: 1,
                rejected_count: 0,
                actor: "Jane Doe".into(),
            }),
            Payload::MspDevicesMoved(pb::MspDevicesMoved {
                msp_id: MSP_A.into(),
                to_customer_knox_id: customer_knox.clone(),
                device_ids: vec![device.clone()],
                devices: vec![pb::MovedDevice {
                    device_id: device.clone(),
                    reseller_id: "acme".into(),
                    upload_id: upload_id.clone(),
                    from_knox_id: MSP_A.into(),
                    id_kind: pb::DeviceIdKind::Serial as i32,
                    model: String::new(),
                    uploaded_at: at(0),
                    order_number: "PO".into(),
                }],
                moved_at: at(10),
                // msp-link numbers its events once for all: each order its own.
                seq: seed as i64 * 10,
            }),
            Payload::MspCustomerDelinked(pb::MspCustomerDelinked {
                msp_id: MSP_A.into(),
                customer_knox_id: customer_knox.clone(),
                delinked_at: at(20),
                requested_by: MSP_A.into(),
                seq: seed as i64 * 10 + 1,
            }),
            Payload::DevicesDeleted(pb::DevicesDeleted {
                deletion_id: deletion_id.clone(),
                reseller_id: "acme".into(),
                device_ids: vec![device.clone()],
                part: 1,
                part_count: 1,
                devices: vec![pb::DeletedDevice {
                    device_id: device.clone(),
                    upload_id: upload_id.clone(),
                    target_knox_id: MSP_A.into(),
                }],
                actor: "John Roe".into(),
                requested_at: at(30),
            }),
            Payload::DeletionRecorded(pb::DeletionRecorded {
                deletion_id: deletion_id.clone(),
                reseller_id: "acme".into(),
                requested_at: at(30),
                deleted_count: 1,
                not_found_count: 0,
                part_count: 1,
                actor: "John Roe".into(),
            }),
            Payload::DeletionCompleted(pb::DeletionCompleted {
                deletion_id: deletion_id.clone(),
                reseller_id: "acme".into(),
                reseller_portal: pb::PortalState::Removed as i32,
                msp_portal: pb::PortalState::NotApplicable as i32,
                customer_portal: pb::PortalState::Removed as i32,
                completed_at: at(31),
            }),
        ];
        // Seed 1 keeps the natural order; 2 reverses it; the rest are shuffled.
        let order = match seed {
            1 => events.clone(),
            2 => events.iter().rev().cloned().collect(),
            _ => shuffled(&events, seed),
        };
        for payload in order {
            let event = new_event(payload, t0);
            consumer
                .apply(&encode(&event))
                .await
                .unwrap_or_else(|e| panic!("order {seed}: {e:?}"));
        }

        let h = history(&acme, &format!("r58m-second{seed:02}"))
            .await
            .unwrap_or_else(|e| panic!("order {seed}: {e:?}"));
        let seen: Vec<(pb::DeviceEventKind, &str, &str, &str)> = h
            .entries
            .iter()
            .map(|e| {
                (
                    pb::DeviceEventKind::try_from(e.kind).unwrap(),
                    e.actor.as_str(),
                    e.from_knox_id.as_str(),
                    e.to_knox_id.as_str(),
                )
            })
            .collect();
        assert_eq!(
            seen,
            [
                (pb::DeviceEventKind::Uploaded, "Jane Doe", "", MSP_A),
                (
                    pb::DeviceEventKind::MovedByMsp,
                    MSP_A,
                    MSP_A,
                    customer_knox.as_str()
                ),
                (
                    pb::DeviceEventKind::Delinked,
                    MSP_A,
                    MSP_A,
                    customer_knox.as_str()
                ),
                (pb::DeviceEventKind::Deleted, "John Roe", "", ""),
            ],
            "order {seed}"
        );
        assert_eq!(h.entries[3].deletion_id, deletion_id, "order {seed}");

        // The activity log too: the upload under the MSP uploaded to; the move, the
        // delink and the deletion under the customer, each once, with its actor, counts
        // and time, whatever came first.
        let log = acme
            .reporting()
            .list_activity(pb::ListActivityRequest {
                page_size: 100,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .activities;
        let mut mine: Vec<(pb::ActivityKind, String, i64, String, i64)> = log
            .iter()
            .filter(|e| {
                e.upload_id == upload_id
                    || e.customer_knox_ids.contains(&customer_knox)
                    || e.customer_knox_id == customer_knox
            })
            .map(|e| {
                (
                    pb::ActivityKind::try_from(e.kind).unwrap(),
                    e.actor.clone(),
                    e.device_count,
                    e.summary.clone(),
                    reseller_tests::fixtures::nanos(&e.occurred_at).unwrap(),
                )
            })
            .collect();
        mine.sort();
        let nanos = |minutes: i64| reseller_tests::fixtures::nanos(&at(minutes)).unwrap();
        assert_eq!(
            mine,
            [
                (
                    pb::ActivityKind::Upload,
                    "Jane Doe".to_owned(),
                    1,
                    format!("uploaded 1 device to {MSP_A} (order PO)"),
                    nanos(0)
                ),
                (
                    pb::ActivityKind::Deletion,
                    "John Roe".to_owned(),
                    1,
                    "deleted 1 device; reseller portal removed, MSP portal not applicable, customer portal removed".to_owned(),
                    nanos(30)
                ),
                (
                    pb::ActivityKind::MspMove,
                    MSP_A.to_owned(),
                    1,
                    format!("MSP {MSP_A} moved 1 device to {customer_knox}"),
                    nanos(10)
                ),
                (
                    pb::ActivityKind::MspDelink,
                    MSP_A.to_owned(),
                    0,
                    format!("{customer_knox} delinked from MSP {MSP_A}"),
                    nanos(20)
                ),
            ],
            "order {seed}"
        );
        let found = find(&acme, &[&device]).await.unwrap().remove(0);
        assert_eq!(
            (
                found.found,
                found.holder_knox_id.as_str(),
                found.placed_under_knox_id.as_str(),
                found.r#virtual,
                found.deleted,
                found.deletion_id.as_str()
            ),
            (
                true,
                customer_knox.as_str(),
                customer_knox.as_str(),
                true,
                true,
                deletion_id.as_str()
            ),
            "order {seed}"
        );
    }
}

/// A device deleted and then uploaded again (to another customer): the lookup answers its
/// newest registration, live; the history lists both uploads and the deletion between.
#[tokio::test]
async fn a_device_uploaded_again_after_its_deletion_is_found_where_it_is_now() {
    const CUST_2: &str = "931000002";
    let stack = TestStack::start().await;
    active_account(
        &stack,
        "acme",
        CUST_1,
        AccountKind::Customer,
        "Customer One",
    )
    .await;
    active_account(
        &stack,
        "acme",
        CUST_2,
        AccountKind::Customer,
        "Customer Two",
    )
    .await;
    let acme = reseller(&stack, "acme");
    let upload_to = |target: &'static str| {
        let acme = &acme;
        async move {
            acme.upload_devices(futures::stream::iter(upload_stream(
                pb::UploadHeader {
                    target_knox_id: target.into(),
                    ..Default::default()
                },
                vec![pb::DeviceInput {
                    device_id: IMEI_1.into(),
                    secondary_ids: vec![IMEI_2.into()],
                    ..Default::default()
                }],
                10,
            )))
            .await
            .expect("upload")
        }
    };
    let first = upload_to(CUST_1).await;
    assert_eq!(first.accepted_count, 1);
    let deletion = acme.delete_devices(vec![IMEI_2.to_owned()]).await.unwrap();
    assert_eq!(deletion.deleted_count, 1);
    let second = upload_to(CUST_2).await;
    assert_eq!(
        second.accepted_count, 1,
        "a deleted device may be uploaded again"
    );

    let history = eventually("both uploads and the deletion projected", || async {
        let h = history(&acme, IMEI_2).await.ok()?;
        (h.entries.len() == 3).then_some(h)
    })
    .await;
    assert_eq!(
        kinds(&history),
        [
            pb::DeviceEventKind::Uploaded,
            pb::DeviceEventKind::Deleted,
            pb::DeviceEventKind::Uploaded
        ]
    );
    assert_eq!(
        [
            history.entries[0].upload_id.as_str(),
            history.entries[2].upload_id.as_str()
        ],
        [first.upload_id.as_str(), second.upload_id.as_str()]
    );
    assert_eq!(history.entries[1].deletion_id, deletion.deletion_id);
    let now = find(&acme, &[IMEI_1]).await.unwrap().remove(0);
    assert_eq!(
        (
            now.found,
            now.deleted,
            now.upload_id.as_str(),
            now.holder_knox_id.as_str(),
            now.placed_under_knox_id.as_str()
        ),
        (true, false, second.upload_id.as_str(), CUST_2, CUST_2),
        "the newest registration answers: {now:#?}"
    );
}
