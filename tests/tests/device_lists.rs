//! A reseller's uploads and deletions as lists, and uploads that only validate
//! (CONTRACT.md "Additions": `ListUploads`, `ListDeletions`, `UploadHeader.validate_only`),
//! over real gRPC, PostgreSQL and NATS.

use futures::StreamExt;
use prost::Message;
use reseller_proto::v1::{self as pb, PortalState, RejectionReason};
use reseller_tests::assert::invalid_fields;
use reseller_tests::clients::reseller;
use reseller_tests::fixtures::{active_customer, device, imei, upload, upload_stream};
use reseller_tests::{TestStack, eventually};

fn header(target: &str, order_number: &str) -> pb::UploadHeader {
    pb::UploadHeader {
        target_knox_id: target.into(),
        order_number: order_number.into(),
        ..Default::default()
    }
}

async fn send(
    stack: &TestStack,
    header: pb::UploadHeader,
    ids: &[String],
) -> Result<pb::Upload, tonic::Status> {
    let inputs = ids.iter().map(|id| device(id)).collect();
    reseller(stack, "acme")
        .upload_devices(futures::stream::iter(upload_stream(header, inputs, 2)))
        .await
}

fn outcome(upload: &pb::Upload) -> (i64, i64, Vec<(i64, String, i32)>) {
    (
        upload.accepted_count,
        upload.rejected_count,
        upload
            .rejections
            .iter()
            .map(|r| (r.index, r.device_id.clone(), r.reason))
            .collect(),
    )
}

async fn list_uploads(
    stack: &TestStack,
    who: &str,
    request: pb::ListUploadsRequest,
) -> pb::ListUploadsResponse {
    reseller(stack, who).list_uploads(request).await.unwrap()
}

/// The upload ID of the next `devices_uploaded` event.
async fn next_upload_event(events: &mut async_nats::Subscriber) -> String {
    let message = tokio::time::timeout(std::time::Duration::from_secs(15), events.next())
        .await
        .expect("an event in time")
        .unwrap();
    let event = pb::Event::decode(message.payload.as_ref()).unwrap();
    let Some(pb::event::Payload::DevicesUploaded(part)) = event.payload else {
        panic!("not devices_uploaded")
    };
    part.upload_id
}

/// A validation answers exactly what the upload then does, and leaves no trace: no
/// registration, no upload in the list, no event.
#[tokio::test]
async fn a_validate_only_upload_answers_like_the_upload_and_records_nothing() {
    let stack = TestStack::start().await;
    active_customer(&stack, "acme", "810000001", "Globex").await;
    let mut events = stack.subscribe("reseller.events.v1.device.uploaded").await;
    let before = upload(&stack, "acme", "810000001", &[imei(1)])
        .await
        .unwrap();
    assert_eq!(next_upload_event(&mut events).await, before.upload_id);

    let ids = [
        imei(1),
        imei(2),
        imei(2),
        "bad serial!".to_string(),
        imei(3),
    ];
    let checked = send(
        &stack,
        pb::UploadHeader {
            validate_only: true,
            ..header("810000001", "PO-1")
        },
        &ids,
    )
    .await
    .unwrap();
    assert!(
        checked.upload_id.is_empty(),
        "nothing recorded: {checked:?}"
    );
    let expected = (
        2,
        3,
        vec![
            (0, imei(1), RejectionReason::AlreadyRegistered as i32),
            (2, imei(2), RejectionReason::DuplicateInUpload as i32),
            (
                3,
                "bad serial!".to_string(),
                RejectionReason::InvalidId as i32,
            ),
        ],
    );
    assert_eq!(outcome(&checked), expected);

    // The real upload finds exactly the same; its event is the first one published.
    let real = send(&stack, header("810000001", "PO-1"), &ids)
        .await
        .unwrap();
    assert_eq!(outcome(&real), expected);
    assert_eq!(
        next_upload_event(&mut events).await,
        real.upload_id,
        "the validation published nothing"
    );
    let listed = list_uploads(&stack, "acme", pb::ListUploadsRequest::default()).await;
    assert_eq!(listed.uploads.len(), 2, "the validation is not an upload");

    // A client upload ID makes no sense for something never recorded.
    let with_retry_key = send(
        &stack,
        pb::UploadHeader {
            validate_only: true,
            client_upload_id: "batch-1".into(),
            ..header("810000001", "PO-1")
        },
        &ids,
    )
    .await;
    assert_eq!(invalid_fields(with_retry_key), ["header.client_upload_id"]);
}

/// Uploads come newest first, filtered by target and order number, paged, as summaries,
/// and only the reseller's own.
#[tokio::test]
async fn uploads_are_listed_newest_first_with_filters_and_pages() {
    let stack = TestStack::start().await;
    active_customer(&stack, "acme", "820000001", "Globex").await;
    active_customer(&stack, "acme", "820000002", "Initech").await;
    let first = send(
        &stack,
        header("820000001", "PO-1"),
        &[imei(1), "bad!".into()],
    )
    .await
    .unwrap();
    let second = send(&stack, header("820000002", "PO-2"), &[imei(2)])
        .await
        .unwrap();
    let third = send(&stack, header("820000001", "PO-2"), &[imei(3)])
        .await
        .unwrap();

    let all = list_uploads(&stack, "acme", pb::ListUploadsRequest::default()).await;
    let ids: Vec<&str> = all.uploads.iter().map(|u| u.upload_id.as_str()).collect();
    assert_eq!(ids, [&third.upload_id, &second.upload_id, &first.upload_id]);
    let oldest = &all.uploads[2];
    assert_eq!((oldest.accepted_count, oldest.rejected_count), (1, 1));
    assert!(
        oldest.rejections.is_empty() && oldest.rejections_truncated,
        "a summary"
    );

    let to_globex = list_uploads(
        &stack,
        "acme",
        pb::ListUploadsRequest {
            target_knox_id: "820000001".into(),
            ..Default::default()
        },
    )
    .await;
    let ids: Vec<&str> = to_globex
        .uploads
        .iter()
        .map(|u| u.upload_id.as_str())
        .collect();
    assert_eq!(ids, [&third.upload_id, &first.upload_id]);
    let po2 = list_uploads(
        &stack,
        "acme",
        pb::ListUploadsRequest {
            order_number: "PO-2".into(),
            ..Default::default()
        },
    )
    .await;
    let ids: Vec<&str> = po2.uploads.iter().map(|u| u.upload_id.as_str()).collect();
    assert_eq!(ids, [&third.upload_id, &second.upload_id]);

    // Pages of 2 walk the same order.
    let page = list_uploads(
        &stack,
        "acme",
        pb::ListUploadsRequest {
            page_size: 2,
            ..Default::default()
        },
    )
    .await;
    assert_eq!(page.uploads.len(), 2);
    let rest = list_uploads(
        &stack,
        "acme",
        pb::ListUploadsRequest {
            page_size: 2,
            page_token: page.next_page_token.clone(),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(rest.uploads.len(), 1);
    assert_eq!(rest.uploads[0].upload_id, first.upload_id);
    assert!(rest.next_page_token.is_empty());

    // Another reseller sees none of them; a bad filter names its field.
    let other = list_uploads(&stack, "other", pb::ListUploadsRequest::default()).await;
    assert!(other.uploads.is_empty());
    let bad = reseller(&stack, "acme")
        .list_uploads(pb::ListUploadsRequest {
            target_knox_id: "12".into(),
            order_number: "x".repeat(65),
            ..Default::default()
        })
        .await;
    assert_eq!(invalid_fields(bad), ["target_knox_id", "order_number"]);
}

/// Deletions come newest first, paged, as summaries with their counts and portal states.
#[tokio::test]
async fn deletions_are_listed_newest_first_with_counts_and_states() {
    let stack = TestStack::start().await;
    active_customer(&stack, "acme", "830000001", "Globex").await;
    upload(&stack, "acme", "830000001", &[imei(1), imei(2), imei(3)])
        .await
        .unwrap();
    let mut deletion_ids = Vec::new();
    for ids in [
        vec![imei(1)],
        vec![imei(2), imei(3), "nope".into()],
        vec![imei(9)],
    ] {
        let deletion = reseller(&stack, "acme")
            .devices()
            .delete_devices(pb::DeleteDevicesRequest { device_ids: ids })
            .await
            .unwrap()
            .into_inner();
        deletion_ids.push(deletion.deletion_id);
    }

    let listed = eventually("every listed deletion complete", || async {
        let page = reseller(&stack, "acme")
            .list_deletions(pb::ListDeletionsRequest::default())
            .await
            .ok()?;
        page.deletions.iter().all(|d| d.complete).then_some(page)
    })
    .await;
    let ids: Vec<&str> = listed
        .deletions
        .iter()
        .map(|d| d.deletion_id.as_str())
        .collect();
    assert_eq!(ids, [&deletion_ids[2], &deletion_ids[1], &deletion_ids[0]]);
    let counts: Vec<(i64, i64)> = listed
        .deletions
        .iter()
        .map(|d| (d.deleted_count, d.not_found_count))
        .collect();
    assert_eq!(counts, [(0, 1), (2, 1), (1, 0)]);
    let middle = &listed.deletions[1];
    assert!(middle.deleted_device_ids.is_empty() && middle.not_found_device_ids.is_empty());
    assert_eq!(middle.reseller_portal, PortalState::Removed as i32);
    assert_eq!(middle.customer_portal, PortalState::Removed as i32);

    let page = reseller(&stack, "acme")
        .list_deletions(pb::ListDeletionsRequest {
            page_size: 2,
            page_token: String::new(),
        })
        .await
        .unwrap();
    let rest = reseller(&stack, "acme")
        .list_deletions(pb::ListDeletionsRequest {
            page_size: 2,
            page_token: page.next_page_token,
        })
        .await
        .unwrap();
    assert_eq!(rest.deletions.len(), 1);
    assert_eq!(rest.deletions[0].deletion_id, deletion_ids[0]);
    let other = reseller(&stack, "other")
        .list_deletions(pb::ListDeletionsRequest::default())
        .await
        .unwrap();
    assert!(other.deletions.is_empty());
}
