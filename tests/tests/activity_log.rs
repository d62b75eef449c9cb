//! The reseller's activity log (DOMAIN.md "Finding devices, history and the activity
//! log") over real gRPC, PostgreSQL and NATS: every kind of entry with its actor, the
//! filters, paging, the CSV download and tenancy.

use reseller_kit::auth::Role;
use reseller_proto::v1::{self as pb, AccountKind, ActivityKind, ManagementMode};
use reseller_tests::assert::invalid_fields;
use reseller_tests::clients::{Caller, Csv, customer, named, reseller};
use reseller_tests::fixtures::{active_account, event_stream, imeis, register, upload_stream};
use reseller_tests::{TestStack, eventually};

const MSP_A: &str = "940000001";
const CUST: &str = "941000001";
const CUST_2: &str = "941000002";

async fn list(
    caller: &Caller,
    request: pb::ListActivityRequest,
) -> Result<pb::ListActivityResponse, tonic::Status> {
    caller
        .reporting()
        .list_activity(request)
        .await
        .map(tonic::Response::into_inner)
}

/// Every entry matching `request`, page by page (`page_size` as the request says).
async fn all(caller: &Caller, mut request: pb::ListActivityRequest) -> Vec<pb::Activity> {
    let mut entries = Vec::new();
    loop {
        let page = list(caller, request.clone()).await.expect("a page");
        entries.extend(page.activities);
        if page.next_page_token.is_empty() {
            return entries;
        }
        request.page_token = page.next_page_token;
    }
}

fn kinds(entries: &[pb::Activity]) -> Vec<ActivityKind> {
    entries
        .iter()
        .map(|a| ActivityKind::try_from(a.kind).unwrap())
        .collect()
}

fn of_kind(entries: &[pb::Activity], kind: ActivityKind) -> &pb::Activity {
    entries
        .iter()
        .find(|a| a.kind == kind as i32)
        .unwrap_or_else(|| panic!("no {kind:?} entry in {entries:#?}"))
}

/// Whether a deletion's entry shows every portal's final state (none pending).
fn final_states(e: &pb::Activity) -> bool {
    let fin = [
        pb::PortalState::Removed as i32,
        pb::PortalState::NotApplicable as i32,
    ];
    [e.reseller_portal, e.msp_portal, e.customer_portal]
        .iter()
        .all(|s| fin.contains(s))
}

/// A portal state as the summary and the CSV spell it.
fn state_label(state: i32) -> &'static str {
    match pb::PortalState::try_from(state) {
        Ok(pb::PortalState::Removed) => "removed",
        Ok(pb::PortalState::NotApplicable) => "not applicable",
        _ => "pending",
    }
}

/// The `deletion_completed` events device-service published for `deletion_id`.
async fn completions(stack: &TestStack, deletion_id: &str) -> Vec<pb::DeletionCompleted> {
    use prost::Message;
    event_stream(stack)
        .await
        .into_iter()
        .flatten()
        .filter_map(|m| pb::Event::decode(m.payload.as_ref()).ok())
        .filter_map(|e| match e.payload {
            Some(pb::event::Payload::DeletionCompleted(c)) if c.deletion_id == deletion_id => {
                Some(c)
            }
            _ => None,
        })
        .collect()
}

/// The CSV's data rows.
fn rows_of(bytes: &[u8]) -> Vec<csv::StringRecord> {
    csv::Reader::from_reader(bytes)
        .records()
        .map(Result::unwrap)
        .collect()
}

#[tokio::test]
async fn a_deletion_of_nothing_is_complete_at_once_and_says_so_in_every_portal() {
    let stack = TestStack::start().await;
    let acme = reseller(&stack, "acme");
    let deletion = acme
        .delete_devices(vec!["R58M-NOBODY".to_owned()])
        .await
        .unwrap();
    let entry = eventually("the deletion's entry", || async {
        all(&acme, pb::ListActivityRequest::default())
            .await
            .into_iter()
            .find(|e| e.deletion_id == deletion.deletion_id)
    })
    .await;
    let not_applicable = pb::PortalState::NotApplicable as i32;
    assert_eq!(
        [
            entry.reseller_portal,
            entry.msp_portal,
            entry.customer_portal
        ],
        [not_applicable; 3]
    );
    assert_eq!(
        entry.summary,
        "deleted 0 devices (1 not found); reseller portal not applicable, MSP portal not applicable, customer portal not applicable"
    );
    assert!(
        completions(&stack, &deletion.deletion_id).await.is_empty(),
        "nothing to complete: no portal answers"
    );
}

#[tokio::test]
async fn a_deletion_counts_devices_not_identifiers_and_the_csv_keeps_the_filters() {
    let (dual_sim, imei_2) = (
        reseller_tests::fixtures::imei(900),
        reseller_tests::fixtures::imei(901),
    );
    let stack = TestStack::start().await;
    active_account(
        &stack,
        "acme",
        "200000001",
        AccountKind::Customer,
        "Initech",
    )
    .await;
    let acme = reseller(&stack, "acme");
    let mut phone = reseller_tests::fixtures::device(&dual_sim);
    phone.secondary_ids = vec![imei_2.clone()];
    let plain = imeis(0..1);
    let upload = acme
        .upload_devices(futures::stream::iter(upload_stream(
            pb::UploadHeader {
                target_knox_id: "200000001".into(),
                ..Default::default()
            },
            vec![phone, reseller_tests::fixtures::device(&plain[0])],
            10,
        )))
        .await
        .unwrap();
    assert_eq!(upload.accepted_count, 2);
    // The phone by both its IMEIs, and a device by its one.
    let deletion = acme
        .delete_devices(vec![dual_sim, imei_2, plain[0].clone()])
        .await
        .unwrap();
    assert_eq!(
        deletion.deleted_count, 3,
        "the deletion's own answer counts identifiers"
    );
    let entry = eventually("the deletion's entry, complete", || async {
        all(&acme, pb::ListActivityRequest::default())
            .await
            .into_iter()
            .find(|e| e.deletion_id == deletion.deletion_id && final_states(e))
    })
    .await;
    assert_eq!(
        entry.device_count, 2,
        "two devices were deleted: {entry:#?}"
    );
    assert!(
        entry.summary.starts_with("deleted 2 devices;"),
        "{}",
        entry.summary
    );

    // The download keeps the list's filters: only the deletion.
    let csv = Csv::read(
        acme.reporting()
            .export_activity_csv(pb::ExportActivityCsvRequest {
                kinds: vec![ActivityKind::Deletion as i32],
                ..Default::default()
            })
            .await,
    )
    .await
    .unwrap();
    let rows = rows_of(&csv.bytes);
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(
        (&rows[0][1], &rows[0][5], &rows[0][8]),
        ("deletion", deletion.deletion_id.as_str(), "2")
    );
}

#[tokio::test]
async fn every_action_is_logged_with_its_actor_filtered_paged_and_downloadable() {
    let stack = TestStack::start().await;
    register(&stack, CUST_2, AccountKind::Customer, "Customer Two").await;
    active_account(&stack, "acme", CUST, AccountKind::Customer, "Customer One").await;
    active_account(&stack, "acme", MSP_A, AccountKind::Msp, "MSP A").await;
    // Jane acts for acme: her name is the actor of what she does; what the plain token
    // does is acme's. An MSP's person is never named: the MSP is.
    let acme = reseller(&stack, "acme");
    let jane = named(&stack, Role::Reseller, "acme", "Jane Doe");
    jane.update_internal_reference(CUST, "PO-2026-7")
        .await
        .unwrap();
    let a = named(&stack, Role::Msp, MSP_A, "Max Mustermann");
    a.link_customer(CUST_2, ManagementMode::JointlyManaged)
        .await
        .unwrap();

    // An upload to the MSP with one row rejected, and one to the customer.
    let mut to_msp: Vec<pb::DeviceInput> = imeis(0..2)
        .into_iter()
        .map(|id| pb::DeviceInput {
            device_id: id,
            ..Default::default()
        })
        .collect();
    to_msp.push(pb::DeviceInput {
        device_id: "490154203237517".into(), // fails the Luhn check
        ..Default::default()
    });
    let upload = jane
        .upload_devices(futures::stream::iter(upload_stream(
            pb::UploadHeader {
                target_knox_id: MSP_A.into(),
                order_number: "PO-1".into(),
                ..Default::default()
            },
            to_msp,
            10,
        )))
        .await
        .unwrap();
    assert_eq!((upload.accepted_count, upload.rejected_count), (2, 1));
    let to_customer = reseller_tests::fixtures::upload(&stack, "acme", CUST, &imeis(10..11))
        .await
        .unwrap();

    // The MSP moves one device to CUST_2, which then delinks itself.
    let moved = imeis(0..1);
    eventually("msp-link to know the upload", || async {
        a.move_devices(moved.clone(), CUST_2)
            .await
            .ok()
            .filter(|m| m.moved_count == 1)
    })
    .await;
    eventually("the move to be projected", || async {
        let entries = all(&acme, pb::ListActivityRequest::default()).await;
        entries
            .iter()
            .any(|e| e.kind == ActivityKind::MspMove as i32)
            .then_some(())
    })
    .await;
    customer(&stack, CUST_2)
        .delink_customer(CUST_2, MSP_A)
        .await
        .unwrap();
    eventually("the delink to be projected", || async {
        let entries = all(&acme, pb::ListActivityRequest::default()).await;
        entries
            .iter()
            .any(|e| e.kind == ActivityKind::MspDelink as i32)
            .then_some(())
    })
    .await;

    // A deletion of the moved device, the customer's, and one nobody has.
    let mut doomed = moved.clone();
    doomed.extend(imeis(10..11));
    doomed.push("R58M-NOBODY".into());
    let deletion = jane.delete_devices(doomed).await.unwrap();
    customer(&stack, CUST)
        .revoke_reseller("acme")
        .await
        .unwrap();

    let entries = eventually(
        "every entry, the deletion's counts and states recorded",
        || async {
            let entries = all(&acme, pb::ListActivityRequest::default()).await;
            let done = entries.iter().any(|e| {
                e.kind == ActivityKind::Deletion as i32 && e.device_count == 2 && final_states(e)
            }) && entries
                .iter()
                .filter(|e| e.kind == ActivityKind::ApprovalChanged as i32)
                .count()
                == 3;
            done.then_some(entries)
        },
    )
    .await;

    // Newest first: exactly these entries.
    let times: Vec<i64> = entries
        .iter()
        .map(|e| reseller_tests::fixtures::nanos(&e.occurred_at).unwrap())
        .collect();
    assert!(
        times.windows(2).all(|w| w[0] >= w[1]),
        "newest first: {times:?}"
    );
    let mut seen = kinds(&entries);
    seen.sort_by_key(|k| *k as i32);
    assert_eq!(
        seen,
        [
            ActivityKind::Upload,
            ActivityKind::Upload,
            ActivityKind::Deletion,
            ActivityKind::CustomerAdded,
            ActivityKind::CustomerAdded,
            ActivityKind::ReferenceUpdated,
            ActivityKind::ApprovalChanged,
            ActivityKind::ApprovalChanged,
            ActivityKind::ApprovalChanged,
            ActivityKind::MspMove,
            ActivityKind::MspDelink,
        ]
    );

    // Each with its actor: the person (or the reseller) for the reseller's commands, the
    // account's Knox ID for a customer's or MSP's.
    for e in &entries {
        let expected = match ActivityKind::try_from(e.kind).unwrap() {
            ActivityKind::ApprovalChanged => e.customer_knox_id.as_str(),
            ActivityKind::MspMove => MSP_A,
            ActivityKind::MspDelink => CUST_2,
            ActivityKind::ReferenceUpdated | ActivityKind::Deletion => "Jane Doe",
            ActivityKind::Upload if e.upload_id == upload.upload_id => "Jane Doe",
            _ => "acme",
        };
        assert_eq!(e.actor, expected, "{e:#?}");
    }
    let up = entries
        .iter()
        .find(|e| e.upload_id == upload.upload_id)
        .expect("the upload to the MSP");
    assert_eq!(
        (
            up.accepted_count,
            up.rejected_count,
            up.device_count,
            up.customer_knox_id.as_str()
        ),
        (2, 1, 2, MSP_A)
    );
    assert_eq!(
        up.summary,
        format!("uploaded 2 devices to {MSP_A} (order PO-1); 1 rejected")
    );
    assert!(entries.iter().any(|e| e.upload_id == to_customer.upload_id));
    let del = of_kind(&entries, ActivityKind::Deletion);
    assert_eq!(del.deletion_id, deletion.deletion_id);
    assert_eq!((del.device_count, del.rejected_count), (2, 1));
    assert_eq!(
        del.customer_knox_ids,
        [CUST, CUST_2],
        "listed under each customer it touched"
    );
    // Each portal's state, as the deletion's own answer gives it once complete.
    let got = jane.get_deletion(&deletion.deletion_id).await.unwrap();
    assert!(got.complete);
    let completed = completions(&stack, &deletion.deletion_id).await;
    assert_eq!(
        completed
            .iter()
            .map(|c| [c.reseller_portal, c.msp_portal, c.customer_portal])
            .collect::<Vec<_>>(),
        [[got.reseller_portal, got.msp_portal, got.customer_portal]],
        "device-service published the deletion's completion once, with its states"
    );
    assert_eq!(completed[0].reseller_id, "acme");
    assert_eq!(
        [del.reseller_portal, del.msp_portal, del.customer_portal],
        [got.reseller_portal, got.msp_portal, got.customer_portal]
    );
    assert_eq!(
        [del.reseller_portal, del.customer_portal],
        [pb::PortalState::Removed as i32; 2],
        "the reseller's view and the customer portal showed the deleted devices"
    );
    assert_eq!(
        del.summary,
        format!(
            "deleted 2 devices (1 not found); reseller portal removed, MSP portal {}, customer portal removed",
            state_label(del.msp_portal)
        )
    );
    assert!(
        entries
            .iter()
            .filter(|e| e.kind != ActivityKind::Deletion as i32)
            .all(|e| [e.reseller_portal, e.msp_portal, e.customer_portal] == [0; 3]),
        "only a deletion has portal states"
    );
    let mv = of_kind(&entries, ActivityKind::MspMove);
    assert_eq!((mv.device_count, mv.customer_knox_id.as_str()), (1, CUST_2));
    assert_eq!(mv.customer_knox_ids, [MSP_A, CUST_2]);
    assert_eq!(
        of_kind(&entries, ActivityKind::ReferenceUpdated).summary,
        format!("set the internal reference of {CUST} to \"PO-2026-7\"")
    );
    let revoked = entries
        .iter()
        .find(|e| e.kind == ActivityKind::ApprovalChanged as i32 && e.summary.contains("revoked"))
        .expect("the revocation");
    assert_eq!(revoked.actor, CUST);

    // Filters: by kind, by customer (a deletion or move under each customer it touched),
    // by time; pages of 2 walk the same entries.
    let only = |kinds: Vec<ActivityKind>| pb::ListActivityRequest {
        kinds: kinds.into_iter().map(|k| k as i32).collect(),
        ..Default::default()
    };
    assert_eq!(
        kinds(
            &all(
                &acme,
                only(vec![ActivityKind::Deletion, ActivityKind::MspDelink])
            )
            .await
        ),
        [ActivityKind::Deletion, ActivityKind::MspDelink]
    );
    let of_cust_2 = all(
        &acme,
        pb::ListActivityRequest {
            customer_knox_id: CUST_2.into(),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(
        kinds(&of_cust_2),
        [
            ActivityKind::Deletion,
            ActivityKind::MspDelink,
            ActivityKind::MspMove
        ]
    );
    let paged = all(
        &acme,
        pb::ListActivityRequest {
            page_size: 2,
            ..Default::default()
        },
    )
    .await;
    assert_eq!(paged, entries);
    let since = mv.occurred_at;
    let recent = all(
        &acme,
        pb::ListActivityRequest {
            since,
            ..Default::default()
        },
    )
    .await;
    assert_eq!(
        recent.last().map(|e| e.kind),
        Some(ActivityKind::MspMove as i32)
    );
    assert_eq!(recent[..], entries[..recent.len()]);
    let before = all(
        &acme,
        pb::ListActivityRequest {
            until: since,
            ..Default::default()
        },
    )
    .await;
    assert_eq!(before.len() + recent.len(), entries.len());

    // The CSV: a header and a row per entry, newest first.
    let csv = Csv::read(
        acme.reporting()
            .export_activity_csv(pb::ExportActivityCsvRequest::default())
            .await,
    )
    .await
    .unwrap();
    let mut reader = csv::Reader::from_reader(csv.bytes.as_slice());
    assert_eq!(
        reader.headers().unwrap().iter().collect::<Vec<_>>(),
        [
            "Occurred At",
            "Kind",
            "Actor",
            "Customer IDs",
            "Upload ID",
            "Deletion ID",
            "Accepted",
            "Rejected",
            "Devices",
            "Reseller Portal",
            "MSP Portal",
            "Customer Portal",
            "Summary"
        ]
    );
    let deletion_row = rows_of(&csv.bytes)
        .into_iter()
        .find(|r| &r[5] == deletion.deletion_id.as_str())
        .expect("the deletion's row");
    assert_eq!(
        (&deletion_row[9], &deletion_row[10], &deletion_row[11]),
        ("removed", state_label(del.msp_portal), "removed")
    );
    let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    assert_eq!(rows.len(), entries.len());
    let upload_row = rows
        .iter()
        .find(|r| &r[4] == upload.upload_id.as_str())
        .expect("the upload's row");
    assert_eq!(
        (
            &upload_row[1],
            &upload_row[2],
            &upload_row[6],
            &upload_row[7]
        ),
        ("upload", "Jane Doe", "2", "1")
    );

    // Another reseller sees none of it, whatever it asks.
    let globex = reseller(&stack, "globex");
    assert!(
        all(&globex, pb::ListActivityRequest::default())
            .await
            .is_empty()
    );
    assert!(
        all(
            &globex,
            pb::ListActivityRequest {
                customer_knox_id: CUST.into(),
                ..Default::default()
            }
        )
        .await
        .is_empty()
    );

    // Bad filters name their field.
    assert_eq!(
        invalid_fields(
            list(
                &acme,
                pb::ListActivityRequest {
                    kinds: vec![0, 99],
                    ..Default::default()
                }
            )
            .await
        ),
        ["kinds", "kinds"]
    );
    assert_eq!(
        invalid_fields(
            list(
                &acme,
                pb::ListActivityRequest {
                    customer_knox_id: "x".into(),
                    since,
                    until: since,
                    ..Default::default()
                }
            )
            .await
        ),
        ["customer_knox_id", "until"]
    );
    assert_eq!(
        invalid_fields(
            list(
                &acme,
                pb::ListActivityRequest {
                    page_token: "junk".into(),
                    ..Default::default()
                }
            )
            .await
        ),
        ["page_token"]
    );
}
