//! The Behaviour rules of DOMAIN.md walked step by step: uploads to an MSP, moves to a
//! fully and a jointly managed customer, a direct upload to the jointly managed one, the
//! refused delink of a fully managed customer, the switch, the delink — with what every
//! portal shows after each step — and then deletions in each placement.

use reseller_proto::v1::{self as pb, AccountKind, CustomerStatus, ManagementMode, PortalState};
use reseller_tests::assert::status;
use reseller_tests::clients::{Caller, customer, msp, reseller};
use reseller_tests::fixtures::{active_account, active_customer, register, upload};
use reseller_tests::{TestStack, eventually};
use tonic::Code;

const MSP: &str = "950000001";
const FULL: &str = "960000001"; // linked fully managed; never added by the reseller
const JOINT: &str = "960000002"; // linked jointly managed; also the reseller's customer

/// One row of the reseller's Customers page, as the test compares it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Row {
    knox_id: String,
    display_id: String,
    managing_msp_id: String,
    uploads: i64,
    devices: i64,
    last_uploaded: Option<i64>,
    status: i32,
}

async fn rows(acme: &Caller) -> Vec<Row> {
    acme.reporting()
        .list_customers(pb::ListCustomersRequest {
            page_size: 100,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .customers
        .into_iter()
        .map(|c| Row {
            knox_id: c.knox_id,
            display_id: c.display_id,
            managing_msp_id: c.managing_msp_id,
            uploads: c.uploaded_devices,
            devices: c.devices,
            last_uploaded: c
                .last_uploaded_at
                .map(|t| t.seconds * 1_000_000_000 + i64::from(t.nanos)),
            status: c.status,
        })
        .collect()
}

fn row(
    knox_id: &str,
    display_id: &str,
    managing: &str,
    uploads: i64,
    devices: i64,
    last: Option<i64>,
) -> Row {
    Row {
        knox_id: knox_id.into(),
        display_id: display_id.into(),
        managing_msp_id: managing.into(),
        uploads,
        devices,
        last_uploaded: last,
        status: CustomerStatus::Active as i32,
    }
}

fn nanos(ts: &Option<prost_types::Timestamp>) -> Option<i64> {
    ts.as_ref()
        .map(|t| t.seconds * 1_000_000_000 + i64::from(t.nanos))
}

/// Waits until the Customers page is exactly `expected` (rows in company-name order).
async fn page_is(acme: &Caller, expected: Vec<Row>) {
    let mut last = Vec::new();
    let ok = tokio::time::timeout(std::time::Duration::from_secs(15), async {
        loop {
            last = rows(acme).await;
            if last == expected {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(
        ok.is_ok(),
        "the Customers page is\n{last:#?}\nexpected\n{expected:#?}"
    );
}

async fn sorted(mut ids: Vec<String>) -> Vec<String> {
    ids.sort();
    ids
}

async fn msp_portal(stack: &TestStack) -> Vec<String> {
    let devices = msp(stack, MSP)
        .msp()
        .list_msp_devices(pb::ListMspDevicesRequest {
            page_size: 1000,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .devices;
    sorted(devices.into_iter().map(|d| d.device_id).collect()).await
}

async fn customer_portal(stack: &TestStack, knox: &str) -> Vec<pb::PortalDevice> {
    let mut devices = customer(stack, knox)
        .customers()
        .list_my_devices(pb::ListMyDevicesRequest {
            page_size: 1000,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .devices;
    devices.sort_by(|a, b| a.device_id.cmp(&b.device_id));
    devices
}

async fn portal_ids(stack: &TestStack, knox: &str) -> Vec<String> {
    customer_portal(stack, knox)
        .await
        .into_iter()
        .map(|d| d.device_id)
        .collect()
}

async fn wait_for<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    eventually(what, || {
        let fut = check();
        async move { fut.await.then_some(()) }
    })
    .await;
}

fn strings(ids: &[&str]) -> Vec<String> {
    ids.iter().map(|s| (*s).to_owned()).collect()
}

async fn detail(acme: &Caller, knox: &str) -> pb::CustomerDetail {
    acme.reporting()
        .get_customer_detail(pb::GetCustomerDetailRequest {
            knox_id: knox.into(),
        })
        .await
        .unwrap()
        .into_inner()
}

async fn customer_devices(acme: &Caller, knox: &str) -> Vec<pb::CustomerDevice> {
    let mut devices = acme
        .reporting()
        .list_customer_devices(pb::ListCustomerDevicesRequest {
            knox_id: knox.into(),
            page_size: 1000,
            page_token: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .devices;
    devices.sort_by(|a, b| a.device_id.cmp(&b.device_id));
    devices
}

async fn delete_and_complete(stack: &TestStack, device: &str) -> (i32, i32, i32) {
    let mut devices = reseller(stack, "acme").devices();
    let deletion = devices
        .delete_devices(pb::DeleteDevicesRequest {
            device_ids: vec![device.into()],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(deletion.deleted_device_ids, [device]);
    let done = eventually(&format!("the deletion of {device} to complete"), || {
        let mut devices = devices.clone();
        let id = deletion.deletion_id.clone();
        async move {
            let d = devices
                .get_deletion(pb::GetDeletionRequest { deletion_id: id })
                .await
                .unwrap()
                .into_inner();
            d.complete.then_some(d)
        }
    })
    .await;
    (done.reseller_portal, done.msp_portal, done.customer_portal)
}

#[tokio::test]
async fn the_behaviour_rules_step_by_step() {
    let stack = TestStack::start().await;
    let acme = reseller(&stack, "acme");
    let m = msp(&stack, MSP);
    active_account(&stack, "acme", MSP, AccountKind::Msp, "Managed Services Co").await;
    register(&stack, FULL, AccountKind::Customer, "Fully Managed Ltd").await;
    active_customer(&stack, "acme", JOINT, "Jointly Managed AG").await;

    // 1. The reseller uploads four devices to the MSP: they sit in its pool.
    let u1 = upload(&stack, "acme", MSP, &strings(&["M-1", "M-2", "M-3", "M-4"]))
        .await
        .unwrap();
    let t1 = nanos(&u1.uploaded_at);
    // Company-name order: "Jointly Managed AG", "Managed Services Co".
    page_is(
        &acme,
        vec![
            row(JOINT, JOINT, "", 0, 0, None),
            row(MSP, MSP, "", 4, 4, t1),
        ],
    )
    .await;
    let msp_detail = detail(&acme, MSP).await;
    assert_eq!(
        msp_detail.summary.as_ref().unwrap().kind,
        AccountKind::Msp as i32
    );
    assert_eq!(msp_detail.uploads.len(), 1);
    assert_eq!(
        (
            msp_detail.uploads[0].upload_id.as_str(),
            msp_detail.uploads[0].device_count,
            msp_detail.uploads[0].r#virtual
        ),
        (u1.upload_id.as_str(), 4, false)
    );
    wait_for("the MSP pool", || async {
        msp_portal(&stack).await == strings(&["M-1", "M-2", "M-3", "M-4"])
    })
    .await;
    assert!(portal_ids(&stack, FULL).await.is_empty());
    assert!(portal_ids(&stack, JOINT).await.is_empty());
    status(
        acme.reporting()
            .get_customer_detail(pb::GetCustomerDetailRequest {
                knox_id: FULL.into(),
            })
            .await,
        Code::NotFound,
    );

    // 2. The MSP links one customer fully and one jointly: the reseller's row of the
    //    jointly managed customer now shows the MSP's ID.
    m.msp()
        .link_customer(pb::LinkCustomerRequest {
            customer_knox_id: FULL.into(),
            mode: ManagementMode::FullyManaged as i32,
        })
        .await
        .unwrap();
    m.msp()
        .link_customer(pb::LinkCustomerRequest {
            customer_knox_id: JOINT.into(),
            mode: ManagementMode::JointlyManaged as i32,
        })
        .await
        .unwrap();
    page_is(
        &acme,
        vec![
            row(JOINT, MSP, MSP, 0, 0, None),
            row(MSP, MSP, "", 4, 4, t1),
        ],
    )
    .await;

    // 3. Moves: two to the fully managed customer, one to the jointly managed one. The
    //    reseller still sees them under the MSP (rule 2); the customer that only has
    //    moved devices is not listed.
    let moved = m
        .msp()
        .move_devices(pb::MoveDevicesRequest {
            device_ids: strings(&["M-1", "M-2"]),
            to_customer_knox_id: FULL.into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(moved.moved_device_ids, ["M-1", "M-2"]);
    m.msp()
        .move_devices(pb::MoveDevicesRequest {
            device_ids: strings(&["M-3"]),
            to_customer_knox_id: JOINT.into(),
        })
        .await
        .unwrap();
    wait_for("moved devices in the customer portals", || async {
        portal_ids(&stack, FULL).await == strings(&["M-1", "M-2"])
            && portal_ids(&stack, JOINT).await == strings(&["M-3"])
    })
    .await;
    let full_portal = customer_portal(&stack, FULL).await;
    assert!(
        full_portal
            .iter()
            .all(|d| d.moved_by_msp && d.msp_id == MSP && d.upload_id == u1.upload_id)
    );
    page_is(
        &acme,
        vec![
            row(JOINT, MSP, MSP, 0, 0, None),
            row(MSP, MSP, "", 4, 4, t1),
        ],
    )
    .await;
    assert_eq!(
        msp_portal(&stack).await,
        strings(&["M-1", "M-2", "M-3", "M-4"])
    );

    // 4. A direct upload to the jointly managed customer: placed under it (rule 1), and
    //    shown in the MSP portal because the MSP links it.
    let u2 = upload(&stack, "acme", JOINT, &strings(&["J-1", "J-2"]))
        .await
        .unwrap();
    let t2 = nanos(&u2.uploaded_at);
    page_is(
        &acme,
        vec![row(JOINT, MSP, MSP, 2, 2, t2), row(MSP, MSP, "", 4, 4, t1)],
    )
    .await;
    wait_for("direct devices in the MSP and customer portals", || async {
        msp_portal(&stack).await == strings(&["J-1", "J-2", "M-1", "M-2", "M-3", "M-4"])
            && portal_ids(&stack, JOINT).await == strings(&["J-1", "J-2", "M-3"])
    })
    .await;
    let joint_detail = detail(&acme, JOINT).await;
    assert_eq!(joint_detail.summary.as_ref().unwrap().display_id, MSP);
    assert_eq!(joint_detail.uploads.len(), 1);
    assert!(!joint_detail.uploads[0].r#virtual);

    // 5. The fully managed customer cannot be delinked, by the MSP or by itself.
    let refused = status(
        m.msp()
            .delink_customer(pb::DelinkCustomerRequest {
                customer_knox_id: FULL.into(),
                msp_id: String::new(),
            })
            .await,
        Code::FailedPrecondition,
    );
    assert!(refused.message().contains("jointly managed"));
    status(
        customer(&stack, FULL)
            .msp()
            .delink_customer(pb::DelinkCustomerRequest {
                customer_knox_id: FULL.into(),
                msp_id: MSP.into(),
            })
            .await,
        Code::FailedPrecondition,
    );

    // 6. Switched to jointly managed: nothing a portal shows changes.
    m.msp()
        .set_jointly_managed(pb::SetJointlyManagedRequest {
            customer_knox_id: FULL.into(),
        })
        .await
        .unwrap();

    // 7. The delink: the devices moved to it become one virtual upload under it, with
    //    the original upload's ID, date and order number, and the counts move over.
    customer(&stack, FULL)
        .msp()
        .delink_customer(pb::DelinkCustomerRequest {
            customer_knox_id: FULL.into(),
            msp_id: MSP.into(),
        })
        .await
        .unwrap();
    page_is(
        &acme,
        vec![
            row(FULL, FULL, "", 2, 2, t1),
            row(JOINT, MSP, MSP, 2, 2, t2),
            row(MSP, MSP, "", 2, 2, t1),
        ],
    )
    .await;
    let full_detail = detail(&acme, FULL).await;
    assert_eq!(full_detail.uploads.len(), 1);
    let virtual_upload = &full_detail.uploads[0];
    assert_eq!(
        (
            virtual_upload.upload_id.as_str(),
            virtual_upload.order_number.as_str(),
            virtual_upload.device_count,
            virtual_upload.r#virtual,
            virtual_upload.via_msp_id.as_str()
        ),
        (u1.upload_id.as_str(), "PO-1", 2, true, MSP)
    );
    assert_eq!(nanos(&virtual_upload.uploaded_at), t1);
    let full_devices = customer_devices(&acme, FULL).await;
    assert_eq!(
        full_devices
            .iter()
            .map(|d| (d.device_id.as_str(), d.r#virtual))
            .collect::<Vec<_>>(),
        [("M-1", true), ("M-2", true)]
    );
    assert_eq!(
        customer_devices(&acme, MSP)
            .await
            .iter()
            .map(|d| d.device_id.as_str())
            .collect::<Vec<_>>(),
        ["M-3", "M-4"]
    );
    // The customer's CSV marks the virtual upload too.
    let mut csv_bytes = Vec::new();
    let mut chunks = acme
        .reporting()
        .export_customer_csv(pb::ExportCustomerCsvRequest {
            knox_id: FULL.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    while let Some(chunk) = chunks.message().await.unwrap() {
        csv_bytes.extend_from_slice(&chunk.data);
    }
    let mut reader = csv::Reader::from_reader(csv_bytes.as_slice());
    let headers = reader.headers().unwrap().clone();
    let column = |name: &str| {
        headers
            .iter()
            .position(|h| h == name)
            .unwrap_or_else(|| panic!("no {name} column"))
    };
    let (virtual_column, via_column, upload_column) = (
        column("Virtual Upload"),
        column("Via MSP"),
        column("Upload ID"),
    );
    let records: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    assert_eq!(records.len(), 2);
    for record in &records {
        assert_eq!(
            (
                &record[virtual_column],
                &record[via_column],
                &record[upload_column]
            ),
            ("yes", MSP, u1.upload_id.as_str())
        );
    }
    wait_for(
        "the MSP portal without the delinked customer's devices",
        || async { msp_portal(&stack).await == strings(&["J-1", "J-2", "M-3", "M-4"]) },
    )
    .await;
    assert_eq!(
        portal_ids(&stack, FULL).await,
        strings(&["M-1", "M-2"]),
        "the customer keeps what was moved to it"
    );

    // Deletions in each placement, with their exact portal states.
    let removed = PortalState::Removed as i32;
    let not_applicable = PortalState::NotApplicable as i32;
    assert_eq!(
        delete_and_complete(&stack, "M-4").await,
        (removed, removed, not_applicable),
        "in the MSP pool"
    );
    assert_eq!(
        delete_and_complete(&stack, "M-3").await,
        (removed, removed, removed),
        "moved, at a linked customer"
    );
    assert_eq!(
        delete_and_complete(&stack, "M-1").await,
        (removed, not_applicable, removed),
        "moved, at a delinked customer"
    );
    assert_eq!(
        delete_and_complete(&stack, "J-1").await,
        (removed, removed, removed),
        "direct, at an MSP-managed customer"
    );
    // UPLOADS keeps deleted devices, DEVICES drops them; no view shows them.
    page_is(
        &acme,
        vec![
            row(FULL, FULL, "", 2, 1, t1),
            row(JOINT, MSP, MSP, 2, 1, t2),
            row(MSP, MSP, "", 2, 0, t1),
        ],
    )
    .await;
    assert_eq!(msp_portal(&stack).await, strings(&["J-2"]));
    assert_eq!(portal_ids(&stack, FULL).await, strings(&["M-2"]));
    assert_eq!(portal_ids(&stack, JOINT).await, strings(&["J-2"]));
    assert_eq!(customer_devices(&acme, FULL).await.len(), 1);
}
