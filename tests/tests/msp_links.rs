//! msp-link-service over real gRPC, PostgreSQL and NATS: links and modes, delinks,
//! moves, the MSP portal and the customer portal's view of moved devices, and tenancy.

use reseller_proto::v1::{self as pb, AccountKind, ManagementMode};
use reseller_tests::assert::{invalid_fields, status};
use reseller_tests::clients::{Caller, customer, msp};
use reseller_tests::fixtures::{
    active_account, active_customer, msp_devices, my_devices, register, upload,
};
use reseller_tests::{TestStack, eventually};
use tonic::Code;

const MSP_A: &str = "900000001";
const MSP_B: &str = "900000002";
const CUST_1: &str = "910000001";
const CUST_2: &str = "910000002";
const CUST_3: &str = "910000003";

async fn setup(stack: &TestStack) {
    register(stack, MSP_A, AccountKind::Msp, "MSP A").await;
    register(stack, MSP_B, AccountKind::Msp, "MSP B").await;
    for knox in [CUST_1, CUST_2, CUST_3] {
        register(
            stack,
            knox,
            AccountKind::Customer,
            &format!("Customer {knox}"),
        )
        .await;
    }
}

fn ids(devices: &[pb::PortalDevice]) -> Vec<String> {
    let mut ids: Vec<String> = devices.iter().map(|d| d.device_id.clone()).collect();
    ids.sort();
    ids
}

/// MSP A and MSP B, registered with the three customers; answers their callers.
async fn two_msps(stack: &TestStack) -> (Caller, Caller) {
    setup(stack).await;
    (msp(stack, MSP_A), msp(stack, MSP_B))
}

/// [`two_msps`], with CUST_1 linked fully managed by MSP A.
async fn cust_1_fully_managed_by_a(stack: &TestStack) -> (Caller, Caller) {
    let (a, b) = two_msps(stack).await;
    a.link_customer(CUST_1, ManagementMode::FullyManaged)
        .await
        .unwrap();
    (a, b)
}

/// [`cust_1_fully_managed_by_a`], switched to jointly managed.
async fn cust_1_jointly_managed_by_a(stack: &TestStack) -> (Caller, Caller) {
    let (a, b) = cust_1_fully_managed_by_a(stack).await;
    a.set_jointly_managed(CUST_1).await.unwrap();
    (a, b)
}

#[tokio::test]
async fn an_msp_links_a_registered_customer_nobody_else_manages() {
    let stack = TestStack::start().await;
    let (a, b) = two_msps(&stack).await;

    let linked = a
        .link_customer(CUST_1, ManagementMode::FullyManaged)
        .await
        .unwrap();
    assert_eq!(
        (
            linked.msp_id.as_str(),
            linked.customer_knox_id.as_str(),
            linked.mode
        ),
        (MSP_A, CUST_1, ManagementMode::FullyManaged as i32)
    );
    assert!(linked.since.is_some());
    status(
        a.link_customer(CUST_1, ManagementMode::JointlyManaged)
            .await,
        Code::AlreadyExists,
    );
    // One MSP at a time.
    status(
        b.link_customer(CUST_1, ManagementMode::FullyManaged).await,
        Code::FailedPrecondition,
    );
    // Only customers can be managed, and they must exist.
    let not_customer = status(
        a.link_customer(MSP_B, ManagementMode::FullyManaged).await,
        Code::FailedPrecondition,
    );
    assert!(
        not_customer.message().contains("MSP"),
        "{}",
        not_customer.message()
    );
    status(
        a.link_customer("919999999", ManagementMode::FullyManaged)
            .await,
        Code::NotFound,
    );
    assert_eq!(
        invalid_fields(a.link_customer(CUST_2, ManagementMode::Delinked).await),
        ["mode"]
    );
    assert_eq!(
        invalid_fields(a.link_customer("x", ManagementMode::Unspecified).await),
        ["customer_knox_id", "mode"]
    );
    // A customer token, or an unregistered MSP, cannot link.
    status(
        customer(&stack, CUST_2)
            .link_customer(CUST_2, ManagementMode::FullyManaged)
            .await,
        Code::PermissionDenied,
    );
    status(
        msp(&stack, "909999999")
            .link_customer(CUST_2, ManagementMode::FullyManaged)
            .await,
        Code::FailedPrecondition,
    );
}

#[tokio::test]
async fn a_fully_managed_customer_cannot_be_delinked() {
    let stack = TestStack::start().await;
    let (a, _) = cust_1_fully_managed_by_a(&stack).await;

    // A fully managed customer cannot be delinked: the error says what to do.
    let refused = status(
        a.delink_customer(CUST_1, "").await,
        Code::FailedPrecondition,
    );
    assert!(
        refused.message().contains("jointly managed"),
        "{}",
        refused.message()
    );
    let refused = status(
        customer(&stack, CUST_1)
            .delink_customer(CUST_1, MSP_A)
            .await,
        Code::FailedPrecondition,
    );
    assert!(refused.message().contains("jointly managed"));
}

#[tokio::test]
async fn fully_managed_becomes_jointly_managed_and_never_back() {
    let stack = TestStack::start().await;
    let (a, b) = cust_1_fully_managed_by_a(&stack).await;

    // Fully → jointly, and no way back (a second call changes nothing).
    let joint = a.set_jointly_managed(CUST_1).await.unwrap();
    assert_eq!(joint.mode, ManagementMode::JointlyManaged as i32);
    let again = a.set_jointly_managed(CUST_1).await.unwrap();
    assert_eq!(again.mode, ManagementMode::JointlyManaged as i32);
    status(
        a.link_customer(CUST_1, ManagementMode::FullyManaged).await,
        Code::AlreadyExists,
    );
    status(b.set_jointly_managed(CUST_1).await, Code::NotFound);
}

#[tokio::test]
async fn only_the_linking_msp_and_the_customer_itself_delink() {
    let stack = TestStack::start().await;
    let (a, b) = cust_1_jointly_managed_by_a(&stack).await;

    // Tenancy of delinks: another MSP, or another customer, cannot delink it.
    status(b.delink_customer(CUST_1, "").await, Code::NotFound);
    status(
        customer(&stack, CUST_2)
            .delink_customer(CUST_1, MSP_A)
            .await,
        Code::NotFound,
    );
    status(
        customer(&stack, CUST_1)
            .delink_customer(CUST_1, MSP_B)
            .await,
        Code::NotFound,
    );

    // The customer delinks itself; then another MSP may link it.
    let ended = customer(&stack, CUST_1)
        .delink_customer(CUST_1, MSP_A)
        .await
        .unwrap();
    assert_eq!(
        (ended.mode, ended.msp_id.as_str()),
        (ManagementMode::Delinked as i32, MSP_A)
    );
    status(a.delink_customer(CUST_1, "").await, Code::NotFound);
    b.link_customer(CUST_1, ManagementMode::JointlyManaged)
        .await
        .unwrap();
    // The MSP delinks a jointly managed customer too.
    b.delink_customer(CUST_1, MSP_B).await.unwrap();
}

#[tokio::test]
async fn each_msp_lists_only_its_own_customers_paged() {
    let stack = TestStack::start().await;
    let (a, b) = cust_1_jointly_managed_by_a(&stack).await;
    // MSP B linked and delinked CUST_1 after A: nothing of it is left in B's list.
    customer(&stack, CUST_1)
        .delink_customer(CUST_1, MSP_A)
        .await
        .unwrap();
    b.link_customer(CUST_1, ManagementMode::JointlyManaged)
        .await
        .unwrap();
    b.delink_customer(CUST_1, MSP_B).await.unwrap();

    // Each MSP lists only its own customers, paged.
    a.link_customer(CUST_2, ManagementMode::FullyManaged)
        .await
        .unwrap();
    a.link_customer(CUST_3, ManagementMode::JointlyManaged)
        .await
        .unwrap();
    let first = a
        .list_managed_customers(pb::ListManagedCustomersRequest {
            page_size: 1,
            page_token: String::new(),
        })
        .await
        .unwrap();
    assert_eq!(first.customers.len(), 1);
    let second = a
        .list_managed_customers(pb::ListManagedCustomersRequest {
            page_size: 1,
            page_token: first.next_page_token,
        })
        .await
        .unwrap();
    assert_eq!(
        (
            first.customers[0].customer_knox_id.as_str(),
            second.customers[0].customer_knox_id.as_str()
        ),
        (CUST_2, CUST_3)
    );
    assert!(second.next_page_token.is_empty());
    assert!(
        b.list_managed_customers(pb::ListManagedCustomersRequest::default())
            .await
            .unwrap()
            .customers
            .is_empty()
    );
}

#[tokio::test]
async fn msps_move_only_what_they_hold_to_customers_they_link() {
    let stack = TestStack::start().await;
    setup(&stack).await;
    active_account(&stack, "acme", MSP_A, AccountKind::Msp, "MSP A").await;
    active_account(&stack, "acme", MSP_B, AccountKind::Msp, "MSP B").await;
    active_customer(&stack, "acme", CUST_3, "Direct customer").await;
    let a = msp(&stack, MSP_A);
    let b = msp(&stack, MSP_B);
    a.link_customer(CUST_1, ManagementMode::FullyManaged)
        .await
        .unwrap();
    a.link_customer(CUST_3, ManagementMode::JointlyManaged)
        .await
        .unwrap();
    b.link_customer(CUST_2, ManagementMode::FullyManaged)
        .await
        .unwrap();
    upload(
        &stack,
        "acme",
        MSP_A,
        &["A-POOL-1".into(), "A-POOL-2".into(), "A-POOL-3".into()],
    )
    .await
    .unwrap();
    upload(&stack, "acme", MSP_B, &["B-POOL-1".into()])
        .await
        .unwrap();
    upload(&stack, "acme", CUST_3, &["C3-DIRECT".into()])
        .await
        .unwrap();
    // The MSP portal: A's pool and what its linked customers hold; never B's pool.
    let pool = eventually(
        "A's portal to show its pool and its customer's device",
        || async {
            let devices = msp_devices(&a, "").await;
            (devices.len() == 4).then_some(devices)
        },
    )
    .await;
    assert_eq!(
        ids(&pool),
        ["A-POOL-1", "A-POOL-2", "A-POOL-3", "C3-DIRECT"]
    );
    eventually("B's portal", || async {
        (ids(&msp_devices(&b, "").await) == ["B-POOL-1"]).then_some(())
    })
    .await;

    // Move from the pool to a linked customer; foreign and unknown devices are rejected.
    let moved = a
        .move_devices(["a-pool-1", "B-POOL-1", "NOPE", "A-POOL-2"], CUST_1)
        .await
        .unwrap();
    assert_eq!(moved.moved_device_ids, ["A-POOL-1", "A-POOL-2"]);
    assert_eq!(moved.rejected_device_ids, ["B-POOL-1", "NOPE"]);
    // From one of its customers to another (a direct upload held by CUST_3).
    let moved = a.move_devices(["C3-DIRECT"], CUST_1).await.unwrap();
    assert_eq!(moved.moved_device_ids, ["C3-DIRECT"]);
    // Never to a customer it does not link (unlinked, or linked to B).
    status(
        a.move_devices(["A-POOL-3"], CUST_2).await,
        Code::FailedPrecondition,
    );
    status(
        b.move_devices(["A-POOL-3"], CUST_1).await,
        Code::FailedPrecondition,
    );
    // B cannot take A's devices to its own customer.
    let stolen = b.move_devices(["A-POOL-3"], CUST_2).await.unwrap();
    assert_eq!(stolen.rejected_device_ids, ["A-POOL-3"]);
    assert!(stolen.moved_device_ids.is_empty());

    // What each portal shows now.
    assert_eq!(
        ids(&msp_devices(&a, CUST_1).await),
        ["A-POOL-1", "A-POOL-2", "C3-DIRECT"]
    );
    assert_eq!(
        ids(&msp_devices(&a, "").await),
        ["A-POOL-1", "A-POOL-2", "A-POOL-3", "C3-DIRECT"]
    );
    status(
        a.list_msp_devices(pb::ListMspDevicesRequest {
            customer_knox_id: CUST_2.into(),
            ..Default::default()
        })
        .await,
        Code::NotFound,
    );
    let at_cust1 = eventually("the customer portal to show the moved devices", || async {
        let devices = my_devices(&customer(&stack, CUST_1)).await;
        (devices.len() == 3).then_some(devices)
    })
    .await;
    assert!(
        at_cust1
            .iter()
            .all(|d| d.moved_by_msp && d.msp_id == MSP_A && d.holder_knox_id == CUST_1),
        "{at_cust1:?}"
    );
    eventually(
        "the moved direct device to leave CUST_3's portal",
        || async {
            my_devices(&customer(&stack, CUST_3))
                .await
                .is_empty()
                .then_some(())
        },
    )
    .await;

    // After a delink the customer portal still shows what was moved to it; the MSP portal
    // no longer does.
    a.link_customer(CUST_2, ManagementMode::FullyManaged)
        .await
        .expect_err("CUST_2 is B's");
    a.set_jointly_managed(CUST_1).await.unwrap();
    a.delink_customer(CUST_1, "").await.unwrap();
    assert_eq!(ids(&msp_devices(&a, "").await), ["A-POOL-3"]);
    assert_eq!(
        ids(&my_devices(&customer(&stack, CUST_1)).await),
        ["A-POOL-1", "A-POOL-2", "C3-DIRECT"]
    );
    // And moves to the delinked customer are refused.
    status(
        a.move_devices(["A-POOL-3"], CUST_1).await,
        Code::FailedPrecondition,
    );
}

// ------------------------------------------------------------------------------------
// One lookup rule in MoveDevices (issue 9): a device is found by any of its identifiers
// in any spelling; answers name what the caller gave, canonicalised, and stay
// deliverable to a default client whatever the request.

/// The dual-SIM device of these tests: IMEI 1 (its device ID), IMEI 2 and its serial.
const IMEI_1: &str = "355887999465330";
const IMEI_2: &str = "490154203237518";
const SERIAL: &str = "R58M-DUAL";

/// A `devices_uploaded` event as device-service publishes it, built by hand: the dual-SIM
/// device with its secondary identifiers, and a plain serial, uploaded to `msp_id`.
fn uploaded_to_msp(msp_id: &str) -> pb::Event {
    use reseller_proto::v1::event::Payload;
    let devices = vec![
        pb::UploadedDevice {
            device_id: IMEI_1.into(),
            id_kind: pb::DeviceIdKind::Imei as i32,
            model: "Galaxy Duo".into(),
            secondary_ids: vec![IMEI_2.into(), SERIAL.into()],
        },
        pb::UploadedDevice {
            device_id: "R58M-SOLO".into(),
            id_kind: pb::DeviceIdKind::Serial as i32,
            model: String::new(),
            secondary_ids: Vec::new(),
        },
    ];
    reseller_kit::events::new_event(
        Payload::DevicesUploaded(pb::DevicesUploaded {
            upload_id: uuid::Uuid::now_v7().to_string(),
            reseller_id: "acme".into(),
            target_knox_id: msp_id.into(),
            device_ids: devices.iter().map(|d| d.device_id.clone()).collect(),
            devices,
            target_kind: AccountKind::Msp as i32,
            order_number: "PO-DUAL".into(),
            uploaded_at: Some(reseller_kit::timestamp::to_proto(
                time::OffsetDateTime::now_utc(),
            )),
            part: 1,
            part_count: 1,
            accepted_count: 2,
            ..Default::default()
        }),
        time::OffsetDateTime::now_utc(),
    )
}

async fn move_to(caller: &Caller, to: &str, ids: &[&str]) -> pb::MoveDevicesResponse {
    caller
        .msp()
        .move_devices(pb::MoveDevicesRequest {
            device_ids: ids.iter().map(|id| id.to_string()).collect(),
            to_customer_knox_id: to.into(),
        })
        .await
        .expect("move")
        .into_inner()
}

async fn secondary_ids_stored(stack: &TestStack) -> i64 {
    stack.count("SELECT count(*) FROM msp.secondary_ids").await
}

/// msp-link's projection, fed a hand-built event: it keeps each device's secondary
/// identifiers, a move finds the device by any of them in any spelling, and a deletion
/// takes them with the registration.
#[tokio::test]
async fn a_move_finds_a_device_by_any_of_its_identifiers_in_any_spelling() {
    let stack = TestStack::start().await;
    setup(&stack).await;
    let a = msp(&stack, MSP_A);
    for knox in [CUST_1, CUST_2] {
        a.link_customer(knox, ManagementMode::JointlyManaged)
            .await
            .unwrap();
    }
    let consumer = msp_link_service::portal_consumer(&stack.platform);
    let uploaded = uploaded_to_msp(MSP_A);
    consumer
        .apply(&reseller_kit::events::encode(&uploaded))
        .await
        .expect("apply the upload");
    assert_eq!(secondary_ids_stored(&stack).await, 2);

    // IMEI 2 written with dashes, a serial in lower case, and a NUL-laden junk ID: the
    // junk is rejected alone, and every name comes back canonical.
    let answer = move_to(
        &a,
        CUST_1,
        &["49-015420-323751-8", "r58m-solo", "R5CW\u{0}10DDD"],
    )
    .await;
    assert_eq!(answer.moved_device_ids, [IMEI_2, "R58M-SOLO"]);
    assert_eq!(answer.rejected_device_ids, ["R5CW\\u{0}10DDD"]);
    assert_eq!((answer.moved_count, answer.rejected_count), (2, 1));
    assert!(!answer.rejected_truncated);
    // The portals name the device by its device ID, whichever identifier moved it.
    assert_eq!(ids(&msp_devices(&a, CUST_1).await), [IMEI_1, "R58M-SOLO"]);
    let shown = eventually("the customer portal to show the moved devices", || async {
        let devices = my_devices(&customer(&stack, CUST_1)).await;
        (devices.len() == 2).then_some(devices)
    })
    .await;
    assert_eq!(ids(&shown), [IMEI_1, "R58M-SOLO"]);
    assert!(shown.iter().all(|d| d.moved_by_msp && d.msp_id == MSP_A));

    // Named by all three identifiers at once, it moves once and each name is answered.
    let answer = move_to(&a, CUST_2, &[SERIAL, IMEI_1, "35 588799 946533 0", IMEI_2]).await;
    assert_eq!(answer.moved_device_ids, [SERIAL, IMEI_1, IMEI_2]);
    assert!(answer.rejected_device_ids.is_empty());
    assert_eq!(ids(&msp_devices(&a, CUST_2).await), [IMEI_1]);
    eventually("the device to leave CUST_1's portal", || async {
        (ids(&my_devices(&customer(&stack, CUST_1)).await) == ["R58M-SOLO"]).then_some(())
    })
    .await;

    // A deletion takes the secondary identifiers with the registration.
    use reseller_proto::v1::event::Payload;
    let Some(Payload::DevicesUploaded(upload)) = &uploaded.payload else {
        unreachable!()
    };
    let deleted = reseller_kit::events::new_event(
        Payload::DevicesDeleted(pb::DevicesDeleted {
            deletion_id: uuid::Uuid::now_v7().to_string(),
            reseller_id: "acme".into(),
            device_ids: vec![IMEI_1.into()],
            part: 1,
            part_count: 1,
            devices: vec![pb::DeletedDevice {
                device_id: IMEI_1.into(),
                upload_id: upload.upload_id.clone(),
                target_knox_id: MSP_A.into(),
            }],
            ..Default::default()
        }),
        time::OffsetDateTime::now_utc(),
    );
    consumer
        .apply(&reseller_kit::events::encode(&deleted))
        .await
        .expect("apply the deletion");
    assert_eq!(secondary_ids_stored(&stack).await, 0);
    let answer = move_to(&a, CUST_1, &[IMEI_2]).await;
    assert_eq!(answer.rejected_device_ids, [IMEI_2]);
}

/// End to end: a reseller uploads a dual-SIM device with its IMEI 2, the MSP moves it by
/// IMEI 2, and the MSP portal and the customer portal show it moved. Needs
/// device-service to carry `UploadedDevice.secondary_ids` in `devices_uploaded`.
#[tokio::test]
async fn an_msp_moves_a_dual_sim_device_by_its_imei_2() {
    let stack = TestStack::start().await;
    setup(&stack).await;
    active_account(&stack, "acme", MSP_A, AccountKind::Msp, "MSP A").await;
    let a = msp(&stack, MSP_A);
    a.link_customer(CUST_1, ManagementMode::FullyManaged)
        .await
        .unwrap();
    let messages = reseller_tests::fixtures::upload_stream(
        pb::UploadHeader {
            target_knox_id: MSP_A.into(),
            ..Default::default()
        },
        vec![pb::DeviceInput {
            device_id: IMEI_1.into(),
            secondary_ids: vec![IMEI_2.into()],
            ..Default::default()
        }],
        10,
    );
    let upload = reseller_tests::clients::reseller(&stack, "acme")
        .upload_devices(futures::stream::iter(messages))
        .await
        .expect("upload");
    assert_eq!(upload.accepted_count, 1);
    eventually("the MSP portal to show the pool", || async {
        (ids(&msp_devices(&a, "").await) == [IMEI_1]).then_some(())
    })
    .await;

    let answer = move_to(&a, CUST_1, &["49 015420 323751 8"]).await;
    assert_eq!(
        (answer.moved_device_ids, answer.rejected_device_ids),
        (vec![IMEI_2.to_owned()], Vec::<String>::new()),
        "msp-link must know the device's IMEI 2 from devices_uploaded"
    );
    assert_eq!(ids(&msp_devices(&a, CUST_1).await), [IMEI_1]);
    let shown = eventually("the customer portal to show the moved device", || async {
        let devices = my_devices(&customer(&stack, CUST_1)).await;
        (!devices.is_empty()).then_some(devices)
    })
    .await;
    assert_eq!(ids(&shown), [IMEI_1]);
    assert!(shown[0].moved_by_msp && shown[0].msp_id == MSP_A);
}

/// A move of the most IDs a call takes, each a long bogus one, answers a client with
/// tonic's default 4 MiB receive limit (the harness's clients): each rejected ID is cut to
/// 64 characters and the list to its first 1,000, with the full count.
#[tokio::test]
async fn the_largest_move_answers_a_default_client() {
    let stack = TestStack::start().await;
    setup(&stack).await;
    let a = msp(&stack, MSP_A);
    a.link_customer(CUST_1, ManagementMode::FullyManaged)
        .await
        .unwrap();
    // 100,000 IDs of 70 characters (7 MB: under the server's 8 MiB request limit; echoed
    // whole they would answer with 7 MB).
    let ids: Vec<String> = (0..100_000)
        .map(|n| format!("BOGUS-{n:06}-{}", "X".repeat(57)))
        .collect();
    let answer = a
        .msp()
        .move_devices(pb::MoveDevicesRequest {
            device_ids: ids.clone(),
            to_customer_knox_id: CUST_1.into(),
        })
        .await
        .expect("a default client gets the answer")
        .into_inner();
    assert!(answer.moved_device_ids.is_empty());
    assert_eq!(answer.rejected_count, 100_000);
    assert!(answer.rejected_truncated);
    assert_eq!(answer.rejected_device_ids.len(), 1_000);
    assert!(
        answer
            .rejected_device_ids
            .iter()
            .all(|id| id.chars().count() == 64 && id.ends_with('…'))
    );
    assert_eq!(
        answer.rejected_device_ids[0],
        reseller_kit::text::echo(&ids[0])
    );
    // One more than the limit is refused as a bad field.
    let mut too_many = ids;
    too_many.push("R58M-1".into());
    assert_eq!(
        invalid_fields(
            a.msp()
                .move_devices(pb::MoveDevicesRequest {
                    device_ids: too_many,
                    to_customer_knox_id: CUST_1.into(),
                })
                .await
        ),
        ["device_ids"]
    );
}
