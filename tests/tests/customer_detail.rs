//! One customer's page in the reseller portal (reporting-service): its counts, uploads and
//! devices, its CSV, tenancy, and projections fed out of order.

use futures::StreamExt;
use reseller_kit::events::new_event;
use reseller_proto::v1::{self as pb, AccountKind, event::Payload};
use reseller_tests::assert::{invalid_fields, status};
use reseller_tests::clients::{Caller, Csv, reseller};
use reseller_tests::fixtures::{active_customer, csv_header, imei, imeis, nanos, register, upload};
use reseller_tests::{StackOptions, TestStack, eventually};
use tonic::Code;

const CUSTOMER: &str = "990000001";

async fn detail(acme: &Caller, knox: &str) -> Result<pb::CustomerDetail, tonic::Status> {
    acme.get_customer_detail(knox).await
}

/// The customer's CSV, as it arrived.
async fn export(acme: &Caller, knox: &str) -> Csv {
    acme.export_customer_csv(pb::ExportCustomerCsvRequest {
        knox_id: knox.into(),
        ..Default::default()
    })
    .await
    .expect("export")
}

#[tokio::test]
async fn detail_counts_follow_uploads_and_deletions() {
    let stack = TestStack::start().await;
    active_customer(&stack, "acme", CUSTOMER, "Globex").await;
    let acme = reseller(&stack, "acme");
    let first = upload(&stack, "acme", CUSTOMER, &imeis(0..3))
        .await
        .unwrap();
    let second = upload(&stack, "acme", CUSTOMER, &imeis(3..5))
        .await
        .unwrap();
    acme.delete_devices([imei(0)]).await.unwrap();
    let summary = eventually("UPLOADS 5 and DEVICES 4", || async {
        let summary = detail(&acme, CUSTOMER).await.ok()?.summary?;
        (summary.uploaded_devices == 5 && summary.devices == 4).then_some(summary)
    })
    .await;
    assert_eq!(
        nanos(&summary.last_uploaded_at),
        nanos(&second.uploaded_at),
        "LAST UPLOADED is the newest upload"
    );
    let d = detail(&acme, CUSTOMER).await.unwrap();
    let uploads: Vec<_> = d
        .uploads
        .iter()
        .map(|u| {
            (
                u.upload_id.as_str(),
                u.device_count,
                u.r#virtual,
                u.order_number.as_str(),
            )
        })
        .collect();
    assert_eq!(
        uploads,
        [
            (second.upload_id.as_str(), 2, false, "PO-1"),
            (first.upload_id.as_str(), 3, false, "PO-1")
        ],
        "newest first, deleted devices still counted"
    );
    // The list row agrees with the detail.
    let rows = acme
        .list_customers(pb::ListCustomersRequest::default())
        .await;
    let row = rows.unwrap().customers.remove(0);
    assert_eq!(Some(row), d.summary);
}

#[tokio::test]
async fn the_device_list_pages_through_live_devices_once_each() {
    let stack = TestStack::start().await;
    active_customer(&stack, "acme", CUSTOMER, "Globex").await;
    let acme = reseller(&stack, "acme");
    let mut expected = Vec::new();
    for (n, range) in [(0u64..10), (10..18), (18..25)].into_iter().enumerate() {
        let ids: Vec<String> = range.map(imei).collect();
        let up = upload(&stack, "acme", CUSTOMER, &ids).await.unwrap();
        assert_eq!(up.accepted_count, ids.len() as i64, "upload {n}");
        expected.extend(ids);
    }
    acme.delete_devices([imei(4), imei(20)]).await.unwrap();
    expected.retain(|id| *id != imei(4) && *id != imei(20));
    eventually("23 live devices", || async {
        (detail(&acme, CUSTOMER).await.ok()?.summary?.devices == 23).then_some(())
    })
    .await;

    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let page = acme
            .list_customer_devices(pb::ListCustomerDevicesRequest {
                knox_id: CUSTOMER.into(),
                page_size: 4,
                page_token: token.clone(),
            })
            .await
            .unwrap();
        assert!(page.devices.len() <= 4);
        seen.extend(
            page.devices
                .into_iter()
                .map(|d| (nanos(&d.uploaded_at), d.upload_id, d.device_id, d.r#virtual)),
        );
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    let mut ids: Vec<String> = seen.iter().map(|s| s.2.clone()).collect();
    ids.sort();
    let mut want = expected.clone();
    want.sort();
    assert_eq!(ids, want, "every live device exactly once");
    assert!(seen.iter().all(|s| !s.3), "nothing virtual");
    // Newest upload first, then upload ID, then device ID.
    let mut ordered = seen.clone();
    ordered.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
    assert_eq!(seen, ordered);
}

#[tokio::test]
async fn the_customer_csv_has_its_columns_and_neutralises_cells() {
    let stack = TestStack::start().await;
    active_customer(&stack, "acme", CUSTOMER, "Globex").await;
    let acme = reseller(&stack, "acme");
    let header = pb::UploadHeader {
        target_knox_id: CUSTOMER.into(),
        order_number: "=SUM(A1)".into(),
        client_upload_id: String::new(),
        validate_only: false,
    };
    let devices = vec![
        pb::DeviceInput {
            device_id: "-X1".into(),
            id_kind: 0,
            model: "=cmd".into(),
            ..Default::default()
        },
        pb::DeviceInput {
            device_id: imei(1),
            id_kind: 0,
            model: "Galaxy, \"A56\"".into(),
            ..Default::default()
        },
    ];
    let up = acme
        .upload_devices(futures::stream::iter(
            reseller_tests::fixtures::upload_stream(header, devices, 10),
        ))
        .await
        .unwrap();
    eventually("2 devices", || async {
        (detail(&acme, CUSTOMER).await.ok()?.summary?.devices == 2).then_some(())
    })
    .await;
    let bytes = export(&acme, CUSTOMER).await.bytes;
    let text = String::from_utf8(bytes.clone()).unwrap();
    assert_eq!(
        text.matches('\n').count(),
        text.matches("\r\n").count(),
        "CRLF line ends"
    );
    let mut reader = csv::Reader::from_reader(bytes.as_slice());
    let header = csv_header(&mut reader);
    assert_eq!(
        &header[..7],
        [
            "Upload ID",
            "Uploaded At",
            "Order Number",
            "Device ID",
            "Device Type",
            "Model",
            "Virtual Upload"
        ]
    );
    let mut records: Vec<Vec<String>> = reader
        .records()
        .map(|r| r.unwrap().iter().map(str::to_owned).collect())
        .collect();
    records.sort();
    assert_eq!(records.len(), 2);
    let serial = records
        .iter()
        .find(|r| r[3] == "'-X1")
        .expect("the serial, neutralised");
    assert_eq!(
        (
            serial[0].as_str(),
            serial[2].as_str(),
            serial[4].as_str(),
            serial[5].as_str(),
            serial[6].as_str()
        ),
        (up.upload_id.as_str(), "'=SUM(A1)", "Serial", "'=cmd", "no")
    );
    let time =
        time::OffsetDateTime::parse(&serial[1], &time::format_description::well_known::Rfc3339)
            .expect("RFC 3339");
    assert_eq!(time.offset(), time::UtcOffset::UTC);
    assert!(serial[1].ends_with('Z'));
    let imei_row = records.iter().find(|r| r[3] == imei(1)).unwrap();
    assert_eq!(
        (imei_row[4].as_str(), imei_row[5].as_str()),
        ("IMEI", "Galaxy, \"A56\"")
    );
}

#[tokio::test]
async fn a_large_customer_csv_streams_in_chunks() {
    let stack = TestStack::start().await;
    active_customer(&stack, "acme", CUSTOMER, "Globex").await;
    let acme = reseller(&stack, "acme");
    let ids: Vec<String> = (0..20_000).map(imei).collect();
    assert_eq!(
        upload(&stack, "acme", CUSTOMER, &ids)
            .await
            .unwrap()
            .accepted_count,
        20_000
    );
    eventually("20,000 devices", || async {
        (detail(&acme, CUSTOMER).await.ok()?.summary?.devices == 20_000).then_some(())
    })
    .await;
    let Csv {
        bytes,
        chunk_sizes: sizes,
    } = export(&acme, CUSTOMER).await;
    assert!(sizes.len() > 2, "{sizes:?}");
    assert!(
        sizes.iter().all(|&n| n <= 70 * 1024),
        "chunks of about 64 KiB"
    );
    assert_eq!(
        csv::Reader::from_reader(bytes.as_slice()).records().count(),
        20_000
    );
}

#[tokio::test]
async fn another_resellers_customer_is_not_found() {
    let stack = TestStack::start().await;
    active_customer(&stack, "acme", CUSTOMER, "Globex").await;
    register(&stack, "990000002", AccountKind::Customer, "Never added").await;
    upload(&stack, "acme", CUSTOMER, &[imei(1)]).await.unwrap();
    let acme = reseller(&stack, "acme");
    eventually("the upload", || async {
        (detail(&acme, CUSTOMER).await.ok()?.summary?.devices == 1).then_some(())
    })
    .await;
    let other = reseller(&stack, "other");
    for (caller, knox) in [
        (&other, CUSTOMER),
        (&acme, "990000002"),
        (&acme, "990000009"),
    ] {
        status(detail(caller, knox).await, Code::NotFound);
        status(
            caller
                .list_customer_devices(pb::ListCustomerDevicesRequest {
                    knox_id: knox.into(),
                    ..Default::default()
                })
                .await,
            Code::NotFound,
        );
        let export = caller
            .reporting()
            .export_customer_csv(pb::ExportCustomerCsvRequest {
                knox_id: knox.into(),
                ..Default::default()
            })
            .await;
        let err = match export {
            Err(status) => status,
            Ok(stream) => stream
                .into_inner()
                .next()
                .await
                .expect("an answer")
                .expect_err("NOT_FOUND"),
        };
        assert_eq!(err.code(), Code::NotFound, "{err:?}");
    }
    assert_eq!(invalid_fields(detail(&acme, "x").await), ["knox_id"]);
}

/// Feeds reporting's consumer by hand, out of order.
#[tokio::test]
async fn projections_fed_out_of_order_end_right() {
    let stack = TestStack::start_with(StackOptions {
        background: false,
        ..Default::default()
    })
    .await;
    let consumer = reporting_service::consumer(&stack.platform);
    let now = time::OffsetDateTime::now_utc();
    let upload_id = uuid::Uuid::now_v7().to_string();
    let uploaded = |ids: &[&str]| {
        new_event(
            Payload::DevicesUploaded(pb::DevicesUploaded {
                upload_id: upload_id.clone(),
                reseller_id: "acme".into(),
                target_knox_id: CUSTOMER.into(),
                device_ids: ids.iter().map(|s| (*s).to_owned()).collect(),
                devices: ids
                    .iter()
                    .map(|s| pb::UploadedDevice {
                        device_id: (*s).into(),
                        id_kind: 3,
                        model: String::new(),
                        ..Default::default()
                    })
                    .collect(),
                target_kind: AccountKind::Customer as i32,
                order_number: "PO".into(),
                uploaded_at: Some(reseller_kit::timestamp::to_proto(now)),
                part: 0,
                part_count: 1,
                accepted_count: ids.len() as i64,
                ..Default::default()
            }),
            now,
        )
    };
    let deleted = new_event(
        Payload::DevicesDeleted(pb::DevicesDeleted {
            deletion_id: uuid::Uuid::now_v7().to_string(),
            reseller_id: "acme".into(),
            device_ids: vec!["D-2".into()],
            part: 0,
            part_count: 1,
            devices: vec![pb::DeletedDevice {
                device_id: "D-2".into(),
                upload_id: upload_id.clone(),
                target_knox_id: CUSTOMER.into(),
            }],
            ..Default::default()
        }),
        now,
    );
    let added = new_event(
        Payload::CustomerAdded(pb::CustomerAdded {
            reseller_id: "acme".into(),
            knox_id: CUSTOMER.into(),
            kind: AccountKind::Customer as i32,
            company_name: "Globex".into(),
            country: "DE".into(),
            internal_reference: String::new(),
            status: pb::CustomerStatus::Active as i32,
            added_at: Some(reseller_kit::timestamp::to_proto(now)),
            reference_revision: 1,
            status_revision: 1,
            ..Default::default()
        }),
        now,
    );
    let acme = reseller(&stack, "acme");
    use prost::Message;
    // The deletion overtakes the upload, which overtakes customer_added.
    consumer
        .apply(&deleted.encode_to_vec())
        .await
        .expect("deletion applies");
    consumer
        .apply(&uploaded(&["D-1", "D-2", "D-3"]).encode_to_vec())
        .await
        .expect("upload applies");
    let page = acme
        .list_customers(pb::ListCustomersRequest::default())
        .await
        .unwrap();
    assert_eq!(
        page.total_size, 0,
        "not listed before the reseller added it"
    );
    status(detail(&acme, CUSTOMER).await, Code::NotFound);
    consumer
        .apply(&added.encode_to_vec())
        .await
        .expect("customer_added applies");
    let summary = detail(&acme, CUSTOMER).await.unwrap().summary.unwrap();
    assert_eq!(
        (summary.uploaded_devices, summary.devices),
        (3, 2),
        "the deleted device never shows, but counts in UPLOADS"
    );
    let devices = acme
        .list_customer_devices(pb::ListCustomerDevicesRequest {
            knox_id: CUSTOMER.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .devices;
    let mut ids: Vec<_> = devices.into_iter().map(|d| d.device_id).collect();
    ids.sort();
    assert_eq!(ids, ["D-1", "D-3"]);
}
