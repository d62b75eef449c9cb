//! device-service over real gRPC, PostgreSQL and NATS: uploads and their rules,
//! preconditions, idempotent retries, deletions across the three portals, the customer
//! portal, and the events outside subscribers see.

use futures::StreamExt;
use prost::Message;
use reseller_proto::v1::{self as pb, AccountKind, PortalState, RejectionReason};
use reseller_tests::assert::{invalid_fields, status};
use reseller_tests::clients::{customer, reseller};
use reseller_tests::fixtures::{
    active_account, active_customer, all_rejections, device, imei, register, upload,
    upload_pausing, upload_stream,
};
use reseller_tests::{TestStack, eventually};
use tonic::Code;

fn rejection(index: i64, device_id: &str, reason: RejectionReason) -> (i64, String, i32) {
    (index, device_id.to_owned(), reason as i32)
}

fn rejections(upload: &pb::Upload) -> Vec<(i64, String, i32)> {
    upload
        .rejections
        .iter()
        .map(|r| (r.index, r.device_id.clone(), r.reason))
        .collect()
}

#[tokio::test]
async fn every_device_is_judged_on_its_own() {
    let stack = TestStack::start().await;
    active_customer(&stack, "acme", "600000001", "Globex").await;
    let good_imei = imei(1);
    let bad_luhn = format!(
        "{}{}",
        &good_imei[..14],
        (good_imei.as_bytes()[14] - b'0' + 1) % 10
    );
    let inputs = vec![
        device(&format!(" {good_imei} ")), // 0 IMEI, trimmed
        device(&bad_luhn),                 // 1 Luhn failure
        device("a0000000002329"),          // 2 MEID, upper-cased
        device("r58m-12ab"),               // 3 serial, upper-cased
        device("R58M-12AB"),               // 4 duplicate of 3
        device("bad serial!"),             // 5 invalid
        pb::DeviceInput {
            device_id: "G0000000002329".into(),
            id_kind: pb::DeviceIdKind::Meid as i32,
            model: "".into(),
            ..Default::default()
        }, // 6 not hex
        pb::DeviceInput {
            device_id: "12345".into(),
            id_kind: pb::DeviceIdKind::Serial as i32,
            model: "Galaxy A56".into(),
            ..Default::default()
        }, // 7 serial given
        device(""),                        // 8 empty
        device(&good_imei),                // 9 duplicate of 0
    ];
    let header = pb::UploadHeader {
        target_knox_id: "600000001".into(),
        order_number: "PO-9".into(),
        client_upload_id: String::new(),
        validate_only: false,
    };
    // Batches of 3: indexes count across batches.
    let upload = reseller(&stack, "acme")
        .upload_devices(futures::stream::iter(upload_stream(header, inputs, 3)))
        .await
        .unwrap();
    assert_eq!(upload.accepted_count, 4, "{upload:?}");
    assert_eq!(upload.rejected_count, 6);
    assert_eq!(
        rejections(&upload),
        vec![
            rejection(1, &bad_luhn, RejectionReason::InvalidId),
            rejection(4, "R58M-12AB", RejectionReason::DuplicateInUpload),
            rejection(5, "bad serial!", RejectionReason::InvalidId),
            rejection(6, "G0000000002329", RejectionReason::InvalidId),
            rejection(8, "", RejectionReason::InvalidId),
            rejection(9, &good_imei, RejectionReason::DuplicateInUpload),
        ]
    );
    assert!(
        upload.rejections[0].message.contains("Luhn"),
        "{}",
        upload.rejections[0].message
    );
    assert!(
        upload.rejections[1].message.contains("index 3"),
        "{}",
        upload.rejections[1].message
    );
    assert_eq!(upload.order_number, "PO-9");
    assert_eq!(upload.target_knox_id, "600000001");

    // GetUpload returns the same result; another reseller cannot see it.
    let read = reseller(&stack, "acme")
        .get_upload(&upload.upload_id)
        .await
        .unwrap();
    assert_eq!(read, upload);
    status(
        reseller(&stack, "other")
            .get_upload(&upload.upload_id)
            .await,
        Code::NotFound,
    );
    status(
        reseller(&stack, "acme")
            .get_upload(&uuid::Uuid::new_v4().to_string())
            .await,
        Code::NotFound,
    );
    assert_eq!(
        invalid_fields(reseller(&stack, "acme").get_upload("nope").await),
        ["upload_id"]
    );

    // The customer portal shows the accepted devices, normalised, with their kinds.
    let portal = eventually("the customer portal to show the upload", || async {
        let devices = customer(&stack, "600000001")
            .list_my_devices(pb::ListMyDevicesRequest::default())
            .await
            .unwrap()
            .devices;
        (devices.len() == 4).then_some(devices)
    })
    .await;
    let mut seen: Vec<(String, i32)> = portal
        .iter()
        .map(|d| (d.device_id.clone(), d.id_kind))
        .collect();
    seen.sort();
    let mut expected = vec![
        (good_imei.clone(), pb::DeviceIdKind::Imei as i32),
        ("A0000000002329".into(), pb::DeviceIdKind::Meid as i32),
        ("R58M-12AB".into(), pb::DeviceIdKind::Serial as i32),
        ("12345".into(), pb::DeviceIdKind::Serial as i32),
    ];
    expected.sort();
    assert_eq!(seen, expected);
    assert!(portal.iter().all(|d| d.reseller_id == "acme"
        && d.upload_id == upload.upload_id
        && !d.moved_by_msp
        && d.holder_knox_id == "600000001"));
    assert_eq!(
        portal
            .iter()
            .find(|d| d.device_id == "12345")
            .unwrap()
            .model,
        "Galaxy A56"
    );
}

#[tokio::test]
async fn a_device_is_registered_once_across_resellers_until_deleted() {
    let stack = TestStack::start().await;
    active_customer(&stack, "first", "610000001", "Globex").await;
    active_customer(&stack, "second", "610000002", "Initech").await;
    let id = imei(42);
    assert_eq!(
        upload(&stack, "first", "610000001", std::slice::from_ref(&id))
            .await
            .unwrap()
            .accepted_count,
        1
    );
    let again = upload(&stack, "second", "610000002", std::slice::from_ref(&id))
        .await
        .unwrap();
    assert_eq!(
        rejections(&again),
        vec![rejection(0, &id, RejectionReason::AlreadyRegistered)]
    );
    assert!(
        !again.rejections[0].message.contains("first"),
        "never reveal who holds it"
    );

    // The second reseller cannot delete it: it is reported as not found, like an unknown ID.
    let foreign = reseller(&stack, "second")
        .delete_devices([id.clone(), "UNKNOWN-1".into()])
        .await
        .unwrap();
    assert!(foreign.deleted_device_ids.is_empty());
    assert_eq!(
        foreign.not_found_device_ids,
        vec![id.clone(), "UNKNOWN-1".to_owned()]
    );
    assert!(
        foreign.complete,
        "a deletion of nothing is complete at once"
    );

    // After its owner deletes it, the device can be uploaded again, by anyone.
    let deletion = reseller(&stack, "first")
        .delete_devices([id.to_lowercase()])
        .await
        .unwrap();
    assert_eq!(deletion.deleted_device_ids, vec![id.clone()]);
    let reupload = upload(&stack, "second", "610000002", std::slice::from_ref(&id))
        .await
        .unwrap();
    assert_eq!(reupload.accepted_count, 1);
}

#[tokio::test]
async fn a_retry_with_the_client_upload_id_returns_the_first_result() {
    let stack = TestStack::start().await;
    active_customer(&stack, "acme", "620000001", "Globex").await;
    let ids: Vec<String> = (0..50).map(imei).collect();
    let header = pb::UploadHeader {
        target_knox_id: "620000001".into(),
        order_number: "PO-1".into(),
        client_upload_id: "batch-7".into(),
        validate_only: false,
    };
    let send = || async {
        reseller(&stack, "acme")
            .upload_devices(futures::stream::iter(upload_stream(
                header.clone(),
                ids.iter().map(|i| device(i)).collect(),
                20,
            )))
            .await
            .unwrap()
    };
    let first = send().await;
    let retry = send().await;
    assert_eq!(first.accepted_count, 50);
    assert_eq!(
        retry, first,
        "the retry answers with the first upload, not a second one"
    );
    assert_eq!(first.client_upload_id, "batch-7");
    // Nothing was uploaded twice: the customer portal has 50 devices.
    eventually("50 devices in the customer portal", || async {
        let n = customer(&stack, "620000001")
            .list_my_devices(pb::ListMyDevicesRequest {
                page_size: 1000,
                page_token: String::new(),
            })
            .await
            .unwrap()
            .devices
            .len();
        (n == 50).then_some(())
    })
    .await;
    let uploads: i64 = sqlx::query_scalar("SELECT count(*) FROM device.uploads")
        .fetch_one(&stack.platform.pool)
        .await
        .unwrap();
    assert_eq!(uploads, 1);
    // Another reseller's identical client upload ID is its own.
    active_customer(&stack, "other", "620000002", "Initech").await;
    let header2 = pb::UploadHeader {
        target_knox_id: "620000002".into(),
        ..header.clone()
    };
    let theirs = reseller(&stack, "other")
        .upload_devices(futures::stream::iter(upload_stream(
            header2,
            vec![device("OTHER-1")],
            10,
        )))
        .await
        .unwrap();
    assert_ne!(theirs.upload_id, first.upload_id);
}

#[tokio::test]
async fn uploads_check_their_target_and_header() {
    let stack = TestStack::start().await;
    register(&stack, "630000001", AccountKind::Customer, "Pending Co").await;
    reseller(&stack, "acme")
        .customers()
        .add_customer(pb::AddCustomerRequest {
            knox_id: "630000001".into(),
            internal_reference: String::new(),
        })
        .await
        .unwrap();
    active_customer(&stack, "acme", "630000002", "Active Co").await;
    active_customer(&stack, "other", "630000003", "Theirs Co").await;
    let ids = vec!["DEV-1".to_owned()];

    status(
        upload(&stack, "acme", "630000009", &ids).await,
        Code::NotFound,
    ); // unknown
    status(
        upload(&stack, "acme", "630000003", &ids).await,
        Code::NotFound,
    ); // another reseller's customer
    let pending = status(
        upload(&stack, "acme", "630000001", &ids).await,
        Code::FailedPrecondition,
    );
    assert!(
        pending.message().contains("approved"),
        "{}",
        pending.message()
    );
    // Active right after approval (read-your-writes through customer-service).
    customer(&stack, "630000001")
        .approve_reseller("acme")
        .await
        .unwrap();
    assert_eq!(
        upload(&stack, "acme", "630000001", &ids)
            .await
            .unwrap()
            .accepted_count,
        1
    );
    customer(&stack, "630000001")
        .revoke_reseller("acme")
        .await
        .unwrap();
    status(
        upload(&stack, "acme", "630000001", &["DEV-2".to_owned()]).await,
        Code::FailedPrecondition,
    );

    // The header must come first, and be valid.
    let batch_first = vec![pb::UploadDevicesRequest {
        item: Some(pb::upload_devices_request::Item::Batch(pb::DeviceBatch {
            devices: vec![device("DEV-3")],
        })),
    }];
    assert_eq!(
        invalid_fields(
            reseller(&stack, "acme")
                .upload_devices(futures::stream::iter(batch_first))
                .await
        ),
        ["header"]
    );
    let mut two_headers = upload_stream(
        pb::UploadHeader {
            target_knox_id: "630000002".into(),
            ..Default::default()
        },
        vec![device("DEV-4")],
        1,
    );
    two_headers.push(two_headers[0].clone());
    assert_eq!(
        invalid_fields(
            reseller(&stack, "acme")
                .upload_devices(futures::stream::iter(two_headers))
                .await
        ),
        ["header"]
    );
    let bad = pb::UploadHeader {
        target_knox_id: "x".into(),
        order_number: "o".repeat(65),
        client_upload_id: String::new(),
        validate_only: false,
    };
    assert_eq!(
        invalid_fields(
            reseller(&stack, "acme")
                .upload_devices(futures::stream::iter(upload_stream(bad, vec![], 1)))
                .await
        ),
        ["header.target_knox_id", "header.order_number"]
    );
    // A rejected upload wrote nothing: DEV-4 is still free.
    assert_eq!(
        upload(&stack, "acme", "630000002", &["DEV-4".to_owned()])
            .await
            .unwrap()
            .accepted_count,
        1
    );
    // Roles.
    status(
        customer(&stack, "630000002")
            .upload_devices(futures::stream::iter(upload_stream(
                Default::default(),
                vec![],
                1,
            )))
            .await,
        Code::PermissionDenied,
    );
}

#[tokio::test]
async fn deletions_complete_with_each_portals_state() {
    let stack = TestStack::start().await;
    active_customer(&stack, "acme", "640000001", "Globex").await;
    active_account(&stack, "acme", "640000002", AccountKind::Msp, "Pool MSP").await;
    upload(&stack, "acme", "640000001", &["CUST-DEV".to_owned()])
        .await
        .unwrap();
    upload(&stack, "acme", "640000002", &["POOL-DEV".to_owned()])
        .await
        .unwrap();
    let devices = reseller(&stack, "acme").devices();
    let wait_complete = |deletion_id: String| {
        let mut devices = devices.clone();
        async move {
            eventually("the deletion to complete", || {
                let mut devices = devices.clone();
                let deletion_id = deletion_id.clone();
                async move {
                    let d = devices
                        .get_deletion(pb::GetDeletionRequest { deletion_id })
                        .await
                        .unwrap()
                        .into_inner();
                    d.complete.then_some(d)
                }
            })
            .await;
            devices
                .get_deletion(pb::GetDeletionRequest { deletion_id })
                .await
                .unwrap()
                .into_inner()
        }
    };

    // Wait until every portal has the devices, so the receipts are deterministic.
    eventually("the customer portal to show CUST-DEV", || async {
        let n = customer(&stack, "640000001")
            .list_my_devices(pb::ListMyDevicesRequest::default())
            .await
            .unwrap()
            .devices
            .len();
        (n == 1).then_some(())
    })
    .await;
    eventually("msp-link to know both devices", || async {
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM msp.devices")
            .fetch_one(&stack.platform.pool)
            .await
            .unwrap();
        (n == 2).then_some(())
    })
    .await;

    let d = devices
        .clone()
        .delete_devices(pb::DeleteDevicesRequest {
            device_ids: vec!["cust-dev".into()],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(d.deleted_device_ids, ["CUST-DEV"]);
    let done = wait_complete(d.deletion_id.clone()).await;
    assert_eq!(
        (done.reseller_portal, done.msp_portal, done.customer_portal),
        (
            PortalState::Removed as i32,
            PortalState::NotApplicable as i32,
            PortalState::Removed as i32
        )
    );
    let portal = customer(&stack, "640000001")
        .list_my_devices(pb::ListMyDevicesRequest::default())
        .await
        .unwrap();
    assert!(
        portal.devices.is_empty(),
        "the customer portal no longer shows it"
    );

    let d = devices
        .clone()
        .delete_devices(pb::DeleteDevicesRequest {
            device_ids: vec!["POOL-DEV".into()],
        })
        .await
        .unwrap()
        .into_inner();
    let done = wait_complete(d.deletion_id.clone()).await;
    assert_eq!(
        (done.reseller_portal, done.msp_portal, done.customer_portal),
        (
            PortalState::Removed as i32,
            PortalState::Removed as i32,
            PortalState::NotApplicable as i32
        )
    );

    // Tenancy and validation of deletions.
    status(
        reseller(&stack, "other").get_deletion(&d.deletion_id).await,
        Code::NotFound,
    );
    assert_eq!(
        invalid_fields(
            devices
                .clone()
                .delete_devices(pb::DeleteDevicesRequest { device_ids: vec![] })
                .await
        ),
        ["device_ids"]
    );
    assert_eq!(
        invalid_fields(
            devices
                .clone()
                .get_deletion(pb::GetDeletionRequest {
                    deletion_id: "x".into()
                })
                .await
        ),
        ["deletion_id"]
    );
}

#[tokio::test]
async fn outside_subscribers_see_uploads_in_parts_with_headers() {
    let stack = TestStack::start().await;
    active_customer(&stack, "acme", "650000001", "Globex").await;
    let mut subscription = stack.subscribe("reseller.events.v1.device.uploaded").await;
    let ids: Vec<String> = (0..2500).map(imei).collect();
    let upload = upload(&stack, "acme", "650000001", &ids).await.unwrap();
    assert_eq!(upload.accepted_count, 2500);

    let mut seen = std::collections::HashSet::new();
    let mut parts = 0;
    while seen.len() < 2500 {
        let message = tokio::time::timeout(std::time::Duration::from_secs(15), subscription.next())
            .await
            .expect("events in time")
            .expect("a message");
        let headers = message.headers.as_ref().expect("headers");
        let content_type = headers.get("Content-Type").expect("Content-Type").as_str();
        assert_eq!(content_type, "application/protobuf");
        let event = pb::Event::decode(message.payload.as_ref()).expect("a reseller.v1.Event");
        assert_eq!(
            headers.get("Nats-Msg-Id").expect("Nats-Msg-Id").as_str(),
            event.event_id
        );
        let Some(pb::event::Payload::DevicesUploaded(part)) = event.payload else {
            panic!("not devices_uploaded")
        };
        assert_eq!(part.upload_id, upload.upload_id);
        assert_eq!(
            (part.reseller_id.as_str(), part.target_knox_id.as_str()),
            ("acme", "650000001")
        );
        assert!(
            part.device_ids.len() <= 1000,
            "a part holds at most 1,000 devices"
        );
        assert_eq!(part.part_count, 3);
        seen.extend(part.device_ids);
        parts += 1;
    }
    assert!(parts >= 3);
    assert_eq!(seen, ids.into_iter().collect());
}

/// Two uploads raced for `devices`: each was rejected as already registered by exactly one
/// of them (so registered by the other).
fn assert_each_rejected_once<'a>(
    rejections: impl Iterator<Item = &'a pb::DeviceRejection>,
    devices: &[String],
) {
    let mut rejected: Vec<String> = rejections
        .map(|r| {
            assert_eq!(r.reason, RejectionReason::AlreadyRegistered as i32);
            r.device_id.clone()
        })
        .collect();
    rejected.sort();
    let mut all = devices.to_vec();
    all.sort();
    assert_eq!(rejected, all, "every device rejected by exactly one upload");
}

/// Collects the `devices_uploaded` parts of `upload_id` until `expected` devices arrived.
async fn uploaded_parts(
    subscription: &mut async_nats::Subscriber,
    upload_id: &str,
    expected: usize,
) -> Vec<pb::DevicesUploaded> {
    let mut parts = Vec::new();
    let mut devices = 0;
    while devices < expected {
        let message = tokio::time::timeout(std::time::Duration::from_secs(15), subscription.next())
            .await
            .expect("events in time")
            .expect("a message");
        let event = pb::Event::decode(message.payload.as_ref()).expect("a reseller.v1.Event");
        let Some(pb::event::Payload::DevicesUploaded(part)) = event.payload else {
            panic!("not devices_uploaded")
        };
        if part.upload_id == upload_id {
            devices += part.device_ids.len();
            parts.push(part);
        }
    }
    parts
}

/// An upload with rejections takes the exact path (a clean one is copied straight into
/// the registrations); its events list every accepted device once, in full parts.
#[tokio::test]
async fn an_upload_with_rejections_publishes_every_accepted_device_once() {
    let stack = TestStack::start().await;
    active_customer(&stack, "acme", "660000001", "Globex").await;
    let first: Vec<String> = (0..10).map(imei).collect();
    assert_eq!(
        upload(&stack, "acme", "660000001", &first)
            .await
            .unwrap()
            .accepted_count,
        10
    );

    let mut subscription = stack.subscribe("reseller.events.v1.device.uploaded").await;
    // 2,500 new devices, then 3 registered already, 2 repeated, 1 invalid.
    let mut ids: Vec<String> = (100..2600).map(imei).collect();
    ids.extend([imei(0), imei(5), imei(9)]);
    ids.extend([imei(100), imei(2599)]);
    ids.push("not a device!".into());
    let done = upload(&stack, "acme", "660000001", &ids).await.unwrap();
    assert_eq!(done.accepted_count, 2500);
    assert_eq!(
        rejections(&done),
        vec![
            rejection(2500, &imei(0), RejectionReason::AlreadyRegistered),
            rejection(2501, &imei(5), RejectionReason::AlreadyRegistered),
            rejection(2502, &imei(9), RejectionReason::AlreadyRegistered),
            rejection(2503, &imei(100), RejectionReason::DuplicateInUpload),
            rejection(2504, &imei(2599), RejectionReason::DuplicateInUpload),
            rejection(2505, "not a device!", RejectionReason::InvalidId),
        ]
    );

    let parts = uploaded_parts(&mut subscription, &done.upload_id, 2500).await;
    let mut part_numbers: Vec<u32> = parts.iter().map(|p| p.part).collect();
    part_numbers.sort_unstable();
    assert_eq!(part_numbers, vec![0, 1, 2]);
    let mut seen: Vec<String> = parts.iter().flat_map(|p| p.device_ids.clone()).collect();
    seen.sort();
    let mut expected: Vec<String> = (100..2600).map(imei).collect();
    expected.sort();
    assert_eq!(seen, expected, "every accepted device exactly once");
    for part in &parts {
        assert_eq!((part.part_count, part.accepted_count), (3, 2500));
        assert_eq!(part.devices.len(), part.device_ids.len());
    }
}

/// Two uploads of the same 10,000 devices, in opposite orders, each pausing half-way so
/// that both hold some of them uncommitted: they deadlock in PostgreSQL, and still both
/// complete, with each device registered by exactly one of them.
#[tokio::test]
async fn concurrent_uploads_sharing_devices_register_each_device_once() {
    let stack = TestStack::start().await;
    active_customer(&stack, "acme", "670000001", "Globex").await;
    active_customer(&stack, "other", "670000002", "Initech").await;
    let ascending: Vec<String> = (0..10_000).map(imei).collect();
    let descending: Vec<String> = ascending.iter().rev().cloned().collect();
    let pause = std::time::Duration::from_millis(500);
    let (first, second) = tokio::join!(
        upload_pausing(&stack, "acme", "670000001", &ascending, pause),
        upload_pausing(&stack, "other", "670000002", &descending, pause)
    );
    let (first, second) = (first.unwrap(), second.unwrap());
    assert_eq!(first.accepted_count + second.accepted_count, 10_000);
    let first = all_rejections(&stack, "acme", &first).await;
    let second = all_rejections(&stack, "other", &second).await;
    assert_each_rejected_once(first.iter().chain(&second), &ascending);
}

/// A stream that breaks after the service found a repeated device (its first rows had
/// already reached PostgreSQL, so the fast path had failed) is rejected as a whole, writes
/// nothing, and leaves the service's database connections usable.
#[tokio::test]
async fn a_stream_broken_after_a_repeated_device_writes_nothing() {
    let stack = TestStack::start().await;
    active_customer(&stack, "acme", "680000001", "Globex").await;
    let mut ids: Vec<String> = (0..6000).map(imei).collect();
    ids[10] = imei(0);
    let mut broken = upload_stream(
        pb::UploadHeader {
            target_knox_id: "680000001".into(),
            order_number: "PO-1".into(),
            client_upload_id: String::new(),
            validate_only: false,
        },
        ids.iter().map(|id| device(id)).collect(),
        500,
    );
    broken.push(broken[0].clone());
    assert_eq!(
        invalid_fields(
            reseller(&stack, "acme")
                .upload_devices(futures::stream::iter(broken))
                .await
        ),
        ["header"]
    );
    // Nothing was registered, and every later upload works (on whichever connection).
    for round in 0..12u64 {
        let fresh: Vec<String> = (0..10).map(|i| imei(100_000 + round * 10 + i)).collect();
        let done = upload(&stack, "acme", "680000001", &fresh).await.unwrap();
        assert_eq!(done.accepted_count, 10, "round {round}");
    }
    let again = upload(&stack, "acme", "680000001", &ids[..20])
        .await
        .unwrap();
    assert_eq!(again.accepted_count, 19, "{:?}", again.rejections);
}

/// The exact path (an upload with a repeated device) racing a fast-path upload of the
/// same devices in the opposite order: they deadlock in PostgreSQL, whichever is chosen
/// as the victim retries, and both complete with each device registered once.
#[tokio::test]
async fn the_exact_path_survives_a_deadlock_with_a_concurrent_upload() {
    let stack = TestStack::start().await;
    active_customer(&stack, "acme", "690000001", "Globex").await;
    active_customer(&stack, "other", "690000002", "Initech").await;
    let ascending: Vec<String> = (0..10_000).map(imei).collect();
    // A repeat at index 1 sends this upload down the exact path at once.
    let mut with_repeat = ascending.clone();
    with_repeat.insert(1, ascending[0].clone());
    let descending: Vec<String> = ascending.iter().rev().cloned().collect();

    let exact = upload(&stack, "acme", "690000001", &with_repeat);
    let paused = upload_pausing(
        &stack,
        "other",
        "690000002",
        &descending,
        std::time::Duration::from_millis(500),
    );
    let (exact, paused) = tokio::join!(exact, paused);
    let (exact, paused) = (exact.unwrap(), paused.unwrap());
    assert_eq!(exact.accepted_count + paused.accepted_count, 10_000);
    let exact_rejections = all_rejections(&stack, "acme", &exact).await;
    let paused_rejections = all_rejections(&stack, "other", &paused).await;
    let (repeat, others): (Vec<_>, Vec<_>) = exact_rejections.iter().partition(|r| r.index == 1);
    assert_eq!(
        rejections(&pb::Upload {
            rejections: repeat.into_iter().cloned().collect(),
            ..Default::default()
        }),
        vec![rejection(
            1,
            &ascending[0],
            RejectionReason::DuplicateInUpload
        )]
    );
    assert_each_rejected_once(others.into_iter().chain(&paused_rejections), &ascending);
}
