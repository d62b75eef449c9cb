//! One handset, one registration (DOMAIN.md "Devices and uploads"), over real gRPC,
//! PostgreSQL and NATS: canonical identifiers whatever their spelling, secondary
//! identifiers (a dual-SIM's IMEI 2), strings nothing downstream can hold, and answers
//! that stay deliverable to a default client whatever the upload's size.

use futures::StreamExt;
use prost::Message;
use reseller_proto::v1::{self as pb, RejectionReason};
use reseller_tests::TestStack;
use reseller_tests::assert::{invalid_fields, status};
use reseller_tests::clients::reseller;
use reseller_tests::fixtures::{
    active_customer, all_rejections, device, imei, upload, upload_stream,
};
use tonic::Code;

fn header(target: &str) -> pb::UploadHeader {
    pb::UploadHeader {
        target_knox_id: target.into(),
        order_number: "PO-1".into(),
        ..Default::default()
    }
}

/// A device with secondary identifiers (IMEI 2, serial).
fn dual_sim(id: &str, secondary: &[&str]) -> pb::DeviceInput {
    pb::DeviceInput {
        secondary_ids: secondary.iter().map(|s| s.to_string()).collect(),
        ..device(id)
    }
}

async fn upload_inputs(
    stack: &TestStack,
    reseller_id: &str,
    target: &str,
    inputs: Vec<pb::DeviceInput>,
) -> Result<pb::Upload, tonic::Status> {
    reseller(stack, reseller_id)
        .upload_devices(futures::stream::iter(upload_stream(
            header(target),
            inputs,
            1000,
        )))
        .await
}

fn rejected(upload: &pb::Upload) -> Vec<(i64, String, i32)> {
    upload
        .rejections
        .iter()
        .map(|r| (r.index, r.device_id.clone(), r.reason))
        .collect()
}

async fn delete(stack: &TestStack, reseller_id: &str, ids: &[&str]) -> pb::Deletion {
    reseller(stack, reseller_id)
        .devices()
        .delete_devices(pb::DeleteDevicesRequest {
            device_ids: ids.iter().map(|s| s.to_string()).collect(),
        })
        .await
        .unwrap()
        .into_inner()
}

/// The example: a NUL in one ID is that row's problem.
#[tokio::test]
async fn a_nul_byte_rejects_its_row_and_never_the_upload_or_the_deletion() {
    let stack = TestStack::start().await;
    active_customer(&stack, "acme", "710000001", "Globex").await;
    let done = upload(
        &stack,
        "acme",
        "710000001",
        &[
            "357156083928308".into(),
            "R5CW\u{0}10DDD".into(),
            "356835762320397".into(),
        ],
    )
    .await
    .expect("an upload with a NUL in one row answers");
    assert_eq!((done.accepted_count, done.rejected_count), (2, 1));
    assert_eq!(done.rejections.len(), 1);
    let rejection = &done.rejections[0];
    assert_eq!(
        (rejection.index, rejection.reason),
        (1, RejectionReason::InvalidId as i32)
    );
    assert_eq!(rejection.device_id, "R5CW\\u{0}10DDD", "escaped, not raw");
    assert!(rejection.message.contains("serial number"), "{rejection:?}");

    let deletion = delete(&stack, "acme", &["357156083928308", "R5\u{0}X"]).await;
    assert_eq!(deletion.deleted_device_ids, ["357156083928308"]);
    assert_eq!(deletion.not_found_device_ids, ["R5\\u{0}X"]);
    assert_eq!(deletion.not_found_count, 1);
    assert!(!deletion.not_found_truncated);
}

/// `35-588799-946533-0` is `355887999465330`: never two devices, whoever uploads it.
#[tokio::test]
async fn every_spelling_of_one_handset_is_one_registration() {
    let stack = TestStack::start().await;
    active_customer(&stack, "acme", "720000001", "Globex").await;
    active_customer(&stack, "other", "720000002", "Initech").await;
    let first = upload_inputs(
        &stack,
        "acme",
        "720000001",
        vec![
            pb::DeviceInput {
                // Given as a serial: an IMEI is an IMEI whatever kind the caller gave.
                id_kind: pb::DeviceIdKind::Serial as i32,
                ..device("35-588799-946533-0")
            },
            device("27011 31776 0960 6898"), // decimal MEID
            device("AF0123450ABCDEC"),       // MEID with its check digit
        ],
    )
    .await
    .unwrap();
    assert_eq!(first.accepted_count, 3, "{first:?}");

    // Another reseller, the canonical spellings: every one already registered.
    let second = upload(
        &stack,
        "other",
        "720000002",
        &[
            "355887999465330".into(),
            "A10000009296F2".into(),
            "af0123450abcde".into(),
        ],
    )
    .await
    .unwrap();
    assert_eq!(second.accepted_count, 0);
    assert_eq!(
        rejected(&second),
        [
            (
                0,
                "355887999465330".into(),
                RejectionReason::AlreadyRegistered as i32
            ),
            (
                1,
                "A10000009296F2".into(),
                RejectionReason::AlreadyRegistered as i32
            ),
            (
                2,
                "AF0123450ABCDE".into(),
                RejectionReason::AlreadyRegistered as i32
            ),
        ]
    );

    // Within one upload too, in the fast path's terms (no device registered yet).
    active_customer(&stack, "acme", "720000003", "Hooli").await;
    let within = upload(
        &stack,
        "acme",
        "720000003",
        &[imei(7), format!("{}-{}", &imei(7)[..2], &imei(7)[2..])],
    )
    .await
    .unwrap();
    assert_eq!(
        rejected(&within),
        [(1, imei(7), RejectionReason::DuplicateInUpload as i32)]
    );

    // Deleting by another spelling deletes the device.
    let deletion = delete(&stack, "acme", &["35 588799 946533 0"]).await;
    assert_eq!(deletion.deleted_device_ids, ["355887999465330"]);
}

/// Strings of 14 to 18 digits are never serials; the messages say what to send.
#[tokio::test]
async fn digit_strings_that_are_no_identifier_say_what_to_send_instead() {
    let stack = TestStack::start().await;
    active_customer(&stack, "acme", "730000001", "Globex").await;
    let done = upload_inputs(
        &stack,
        "acme",
        "730000001",
        vec![
            device("35588799946533"),   // IMEI without its check digit
            device("3558879994653301"), // IMEISV
            pb::DeviceInput {
                id_kind: pb::DeviceIdKind::Serial as i32,
                ..device("12345678901234567") // 17 digits, "serial" given
            },
            device("355887999465331"), // fails Luhn
        ],
    )
    .await
    .unwrap();
    assert_eq!(done.accepted_count, 0);
    let messages: Vec<&str> = done.rejections.iter().map(|r| r.message.as_str()).collect();
    assert!(messages[0].contains("355887999465330"), "{}", messages[0]);
    assert!(
        messages[1].contains("IMEISV") && messages[1].contains("355887999465330"),
        "{}",
        messages[1]
    );
    assert!(messages[2].contains("17 digits"), "{}", messages[2]);
    assert!(messages[3].contains("should be 0"), "{}", messages[3]);
    assert!(
        done.rejections
            .iter()
            .all(|r| r.reason == RejectionReason::InvalidId as i32)
    );
}

/// A dual-SIM phone uploaded by IMEI 1 with its IMEI 2 cannot come back by IMEI 2, in
/// either path, and deleting it by IMEI 2 deletes it whole.
#[tokio::test]
async fn a_secondary_identifier_is_one_handset_for_every_rule() {
    let stack = TestStack::start().await;
    active_customer(&stack, "acme", "740000001", "Globex").await;
    active_customer(&stack, "other", "740000002", "Initech").await;
    let mut events = stack.subscribe("reseller.events.v1.device.uploaded").await;
    let (imei1, imei2) = (imei(1), imei(2));
    let first = upload_inputs(
        &stack,
        "acme",
        "740000001",
        vec![dual_sim(&imei1, &[&imei2, "sn-r58m-1"])],
    )
    .await
    .unwrap();
    assert_eq!(first.accepted_count, 1, "{first:?}");
    // The event carries the secondary identifiers, canonical.
    let message = tokio::time::timeout(std::time::Duration::from_secs(15), events.next())
        .await
        .expect("the event in time")
        .unwrap();
    let event = pb::Event::decode(message.payload.as_ref()).unwrap();
    let Some(pb::event::Payload::DevicesUploaded(part)) = event.payload else {
        panic!("not devices_uploaded")
    };
    assert_eq!(part.device_ids, std::slice::from_ref(&imei1));
    assert_eq!(
        part.devices[0].secondary_ids,
        [imei2.clone(), "SN-R58M-1".into()]
    );

    // Fast path (nothing else wrong): IMEI 2 alone is registered already.
    let again = upload(&stack, "other", "740000002", std::slice::from_ref(&imei2))
        .await
        .unwrap();
    assert_eq!(
        rejected(&again),
        [(0, imei2.clone(), RejectionReason::AlreadyRegistered as i32)]
    );
    // Exact path (a repeat in the upload): the serial as another device's IMEI 2 too,
    // and a repeat across identifiers within the upload.
    let exact = upload_inputs(
        &stack,
        "other",
        "740000002",
        vec![
            device(&imei(10)),                   // 0 accepted
            dual_sim(&imei(11), &["SN-R58M-1"]), // 1 its IMEI 2 is registered
            dual_sim(&imei(12), &[&imei(13)]),   // 2 accepted with its IMEI 2
            device(&imei(13)),                   // 3 repeats 2's IMEI 2
            device(&imei(10)),                   // 4 repeats 0
        ],
    )
    .await
    .unwrap();
    assert_eq!(exact.accepted_count, 2, "{exact:?}");
    assert_eq!(
        rejected(&exact),
        [
            (1, imei(11), RejectionReason::AlreadyRegistered as i32),
            (3, imei(13), RejectionReason::DuplicateInUpload as i32),
            (4, imei(10), RejectionReason::DuplicateInUpload as i32),
        ]
    );
    // The fast path finds a repeat across identifiers too.
    active_customer(&stack, "acme", "740000003", "Hooli").await;
    let fast = upload_inputs(
        &stack,
        "acme",
        "740000003",
        vec![dual_sim(&imei(20), &[&imei(21)]), device(&imei(21))],
    )
    .await
    .unwrap();
    assert_eq!(
        rejected(&fast),
        [(1, imei(21), RejectionReason::DuplicateInUpload as i32)]
    );

    // Deleting by IMEI 2 deletes the device with every identifier: all three can be
    // uploaded again, by anyone.
    let deletion = delete(&stack, "acme", &[&imei2]).await;
    assert_eq!(deletion.deleted_device_ids, std::slice::from_ref(&imei2));
    let back = upload_inputs(
        &stack,
        "other",
        "740000002",
        vec![device(&imei1), device(&imei2), device("SN-R58M-1")],
    )
    .await
    .unwrap();
    assert_eq!(back.accepted_count, 3, "{back:?}");

    // An invalid secondary identifier rejects its row and says which one.
    let bad = upload_inputs(
        &stack,
        "other",
        "740000002",
        vec![dual_sim(&imei(30), &["355887999465331"])],
    )
    .await
    .unwrap();
    assert_eq!(bad.rejections[0].reason, RejectionReason::InvalidId as i32);
    assert!(
        bad.rejections[0]
            .message
            .starts_with("secondary identifier 1"),
        "{:?}",
        bad.rejections[0]
    );
}

/// An upload with no devices is refused and records nothing: the same client upload ID
/// then starts a real upload.
#[tokio::test]
async fn an_empty_upload_is_refused_and_records_nothing() {
    let stack = TestStack::start().await;
    active_customer(&stack, "acme", "750000001", "Globex").await;
    let retry_key = pb::UploadHeader {
        client_upload_id: "batch-7".into(),
        ..header("750000001")
    };
    let empty = reseller(&stack, "acme")
        .upload_devices(futures::stream::iter(upload_stream(
            retry_key.clone(),
            Vec::new(),
            1000,
        )))
        .await;
    assert_eq!(invalid_fields(empty), ["batch"]);
    let real = reseller(&stack, "acme")
        .upload_devices(futures::stream::iter(upload_stream(
            retry_key,
            vec![device(&imei(1))],
            1000,
        )))
        .await
        .unwrap();
    assert_eq!(real.accepted_count, 1, "the empty upload left no trace");
}

/// 100,000 valid IMEIs and 100,000 long invalid IDs (and some of 10 kB): a default
/// client (4 MiB receive limit) gets the answer, the retry and GetUpload, with the first
/// 1,000 rejections; ListUploadRejections pages all of them. A deletion of 100,000
/// bogus IDs answers too.
#[tokio::test]
async fn answers_that_grow_with_the_input_stay_deliverable() {
    let stack = TestStack::start().await;
    active_customer(&stack, "acme", "760000001", "Globex").await;
    let mut inputs: Vec<pb::DeviceInput> = Vec::with_capacity(200_100);
    for n in 0..100_000u64 {
        inputs.push(device(&imei(n)));
        inputs.push(device(&format!("not-a-device-{n}-{}", "x".repeat(80))));
    }
    for n in 0..100 {
        inputs.push(device(&format!("{n}{}", "\u{0}Y".repeat(5_000))));
    }
    let header = pb::UploadHeader {
        client_upload_id: "big-1".into(),
        ..header("760000001")
    };
    let client = reseller(&stack, "acme").devices();
    let upload_once = || {
        let mut client = client.clone();
        let messages = upload_stream(header.clone(), inputs.clone(), 100);
        async move {
            client
                .upload_devices(futures::stream::iter(messages))
                .await
                .map(tonic::Response::into_inner)
        }
    };
    let done = upload_once()
        .await
        .expect("a default client gets the answer");
    assert_eq!(
        (done.accepted_count, done.rejected_count),
        (100_000, 100_100)
    );
    assert_eq!(done.rejections.len(), 1000);
    assert!(done.rejections_truncated);
    assert!(
        done.rejections
            .iter()
            .all(|r| r.device_id.chars().count() <= 64),
        "echoes are cut"
    );
    let retry = upload_once().await.expect("the retry answers too");
    assert_eq!(retry.upload_id, done.upload_id);
    let again = client
        .clone()
        .get_upload(pb::GetUploadRequest {
            upload_id: done.upload_id.clone(),
        })
        .await
        .expect("GetUpload answers")
        .into_inner();
    assert_eq!(again.rejections, done.rejections);

    let all = all_rejections(&stack, "acme", &done).await;
    assert_eq!(all.len(), 100_100);
    let indexes: Vec<i64> = all.iter().map(|r| r.index).collect();
    let expected: Vec<i64> = (0..100_000)
        .map(|n| 2 * n + 1)
        .chain(200_000..200_100)
        .collect();
    assert_eq!(indexes, expected, "every rejection once, by index");
    let long = &all[100_000];
    assert!(long.device_id.chars().count() <= 64, "{long:?}");
    assert!(long.device_id.starts_with("0\\u{0}Y"), "{long:?}");
    assert!(
        long.device_id.ends_with('…') && long.message.len() < 400,
        "{long:?}"
    );

    // Another reseller's upload is not found; a bad page token is a bad field.
    let other = reseller(&stack, "other")
        .list_upload_rejections(pb::ListUploadRejectionsRequest {
            upload_id: done.upload_id.clone(),
            ..Default::default()
        })
        .await;
    status(other, Code::NotFound);
    let bad_token = client
        .clone()
        .list_upload_rejections(pb::ListUploadRejectionsRequest {
            upload_id: done.upload_id.clone(),
            page_token: "\u{0}".into(),
            ..Default::default()
        })
        .await;
    assert_eq!(invalid_fields(bad_token), ["page_token"]);

    // A deletion of 100,000 IDs none of which exists, each an escaped NUL run.
    let bogus: Vec<String> = (0..100_000)
        .map(|n| format!("{n}{}", "\u{0}".repeat(30)))
        .collect();
    let deletion = client
        .clone()
        .delete_devices(pb::DeleteDevicesRequest { device_ids: bogus })
        .await
        .expect("a default client gets the deletion")
        .into_inner();
    assert_eq!(deletion.not_found_count, 100_000);
    assert_eq!(deletion.not_found_device_ids.len(), 1000);
    assert!(deletion.not_found_truncated && deletion.complete);
    let polled = client
        .clone()
        .get_deletion(pb::GetDeletionRequest {
            deletion_id: deletion.deletion_id.clone(),
        })
        .await
        .expect("a default client gets GetDeletion")
        .into_inner();
    assert_eq!(polled.not_found_count, 100_000);
}
