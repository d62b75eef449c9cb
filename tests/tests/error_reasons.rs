//! Machine-readable errors over real gRPC, PostgreSQL and NATS (issue 12, part 5;
//! CONTRACT.md "Additions", README.md "Error reasons"): every error code path of every
//! service that answers `NOT_FOUND`, `ALREADY_EXISTS`, `FAILED_PRECONDITION` or
//! `RESOURCE_EXHAUSTED` carries a `google.rpc.ErrorInfo` with the domain `reseller.v1`
//! and its reason; a move says why each rejected device was rejected.

use reseller_proto::v1::{self as pb, AccountKind, ManagementMode, MoveRejectionReason};
use reseller_tests::assert::{error_info, refused};
use reseller_tests::clients::{Caller, admin, customer, msp, reseller};
use reseller_tests::fixtures::{
    account, active_account, active_customer, device, imei, msp_devices, register, upload,
    upload_stream,
};
use reseller_tests::{TestStack, eventually};
use tonic::{Code, Status};

const RESELLER: &str = "acme";
const MSP_A: &str = "930000001";
const MSP_B: &str = "930000002";
/// Active customer of the reseller.
const ACTIVE: &str = "940000001";
/// Added by the reseller, never approved it.
const PENDING: &str = "940000002";
/// Added by the reseller, approved it, then revoked.
const REVOKED: &str = "940000003";
/// Linked fully managed by MSP A.
const FULLY: &str = "940000004";
/// Linked by MSP B.
const OF_B: &str = "940000005";
/// Registered, linked by nobody, not the reseller's customer.
const FREE: &str = "940000006";
/// Registered by nobody.
const UNKNOWN: &str = "949999999";
/// A device identifier nobody uploaded (a valid IMEI).
const UNKNOWN_DEVICE: &str = "350000000009999";
/// An upload or deletion ID nobody has.
const NO_ID: &str = "01890a5d-ac96-774b-bcce-b302099a8057";

/// One error code path: what was called, its answer, and the code, reason and metadata
/// it must carry.
struct Path {
    name: &'static str,
    answer: Result<(), Status>,
    code: Code,
    reason: &'static str,
    metadata: &'static [(&'static str, &'static str)],
}

fn path<T>(
    name: &'static str,
    answer: Result<T, Status>,
    code: Code,
    reason: &'static str,
    metadata: &'static [(&'static str, &'static str)],
) -> Path {
    Path {
        name,
        answer: answer.map(drop),
        code,
        reason,
        metadata,
    }
}

/// What is wrong with `path`'s answer, if anything.
fn mismatch(path: Path) -> Option<String> {
    let Path {
        name,
        answer,
        code,
        reason,
        metadata,
    } = path;
    let status = match answer {
        Ok(()) => return Some(format!("{name}: succeeded, expected {code:?} {reason}")),
        Err(status) => status,
    };
    let Some(info) = error_info(&status) else {
        return Some(format!("{name}: no reseller.v1 ErrorInfo in {status:?}"));
    };
    let wrong_metadata = metadata
        .iter()
        .any(|(key, value)| info.metadata.get(*key).map(String::as_str) != Some(*value));
    if status.code() != code || info.reason != reason || wrong_metadata {
        return Some(format!(
            "{name}: expected {code:?} {reason} {metadata:?}, got {:?} {} {:?} ({})",
            status.code(),
            info.reason,
            info.metadata,
            status.message()
        ));
    }
    None
}

/// The accounts every path needs, in their states.
async fn setup(stack: &TestStack) {
    active_customer(stack, RESELLER, ACTIVE, "Active").await;
    for (knox, name) in [(PENDING, "Pending"), (REVOKED, "Revoked")] {
        register(stack, knox, AccountKind::Customer, name).await;
        reseller(stack, RESELLER)
            .add_customer(knox, "")
            .await
            .expect("add customer");
    }
    let revoker = customer(stack, REVOKED);
    revoker.approve_reseller(RESELLER).await.expect("approve");
    revoker.revoke_reseller(RESELLER).await.expect("revoke");
    for (knox, kind, name) in [
        (MSP_A, AccountKind::Msp, "MSP A"),
        (MSP_B, AccountKind::Msp, "MSP B"),
        (FULLY, AccountKind::Customer, "Fully"),
        (OF_B, AccountKind::Customer, "Of B"),
        (FREE, AccountKind::Customer, "Free"),
    ] {
        register(stack, knox, kind, name).await;
    }
    msp(stack, MSP_A)
        .link_customer(FULLY, ManagementMode::FullyManaged)
        .await
        .expect("link");
    msp(stack, MSP_B)
        .link_customer(OF_B, ManagementMode::JointlyManaged)
        .await
        .expect("link");
}

/// An upload to `target` of one device.
async fn upload_one(
    caller: &Caller,
    target: &str,
    batch: Vec<pb::DeviceInput>,
) -> Result<pb::Upload, Status> {
    let header = pb::UploadHeader {
        target_knox_id: target.into(),
        ..Default::default()
    };
    caller
        .upload_devices(futures::stream::iter(upload_stream(header, batch, 1000)))
        .await
}

#[tokio::test]
async fn every_error_code_path_answers_its_reason() {
    let stack = TestStack::start().await;
    setup(&stack).await;
    let admin = admin(&stack);
    let acme = reseller(&stack, RESELLER);
    let (a, b) = (msp(&stack, MSP_A), msp(&stack, MSP_B));
    let over_the_limit = "x".repeat(9 * 1024 * 1024);
    use Code::{AlreadyExists, FailedPrecondition, NotFound, ResourceExhausted};

    let paths = vec![
        // customer-service
        path(
            "RegisterAccount: the Knox ID is registered",
            admin
                .register_account(account(ACTIVE, AccountKind::Customer, "Again"))
                .await,
            AlreadyExists,
            "ACCOUNT_ALREADY_REGISTERED",
            &[("knox_id", ACTIVE)],
        ),
        path(
            "GetAccount: unregistered",
            admin.get_account(UNKNOWN).await,
            NotFound,
            "ACCOUNT_NOT_FOUND",
            &[("knox_id", UNKNOWN)],
        ),
        path(
            "AddCustomer: unregistered",
            acme.add_customer(UNKNOWN, "").await,
            NotFound,
            "ACCOUNT_NOT_FOUND",
            &[("knox_id", UNKNOWN)],
        ),
        path(
            "AddCustomer: added already",
            acme.add_customer(ACTIVE, "").await,
            AlreadyExists,
            "CUSTOMER_ALREADY_ADDED",
            &[("knox_id", ACTIVE)],
        ),
        path(
            "GetCustomer: not added",
            acme.get_customer(FREE).await,
            NotFound,
            "CUSTOMER_NOT_FOUND",
            &[("knox_id", FREE)],
        ),
        path(
            "UpdateInternalReference: not added",
            acme.update_internal_reference(FREE, "PO-1").await,
            NotFound,
            "CUSTOMER_NOT_FOUND",
            &[("knox_id", FREE)],
        ),
        path(
            "ApproveReseller: the caller's account is unregistered",
            customer(&stack, UNKNOWN).approve_reseller(RESELLER).await,
            NotFound,
            "ACCOUNT_NOT_FOUND",
            &[("knox_id", UNKNOWN)],
        ),
        path(
            "RevokeReseller: never approved",
            customer(&stack, PENDING).revoke_reseller(RESELLER).await,
            FailedPrecondition,
            "APPROVAL_NOT_GIVEN",
            &[("knox_id", PENDING), ("reseller_id", RESELLER)],
        ),
        path(
            "any call: a request over the message size limit",
            acme.add_customer(FREE, &over_the_limit).await,
            ResourceExhausted,
            "MESSAGE_TOO_LARGE",
            &[],
        ),
        // device-service
        path(
            "UploadDevices: to an account the reseller has not added",
            upload_one(&acme, FREE, vec![device(&imei(1))]).await,
            NotFound,
            "CUSTOMER_NOT_FOUND",
            &[("knox_id", FREE)],
        ),
        path(
            "UploadDevices: to a customer pending verification",
            upload_one(&acme, PENDING, vec![device(&imei(1))]).await,
            FailedPrecondition,
            "CUSTOMER_NOT_ACTIVE",
            &[("knox_id", PENDING), ("status", "PENDING_VERIFICATION")],
        ),
        path(
            "UploadDevices: to a customer that revoked its approval",
            upload_one(&acme, REVOKED, vec![device(&imei(1))]).await,
            FailedPrecondition,
            "CUSTOMER_NOT_ACTIVE",
            &[("knox_id", REVOKED), ("status", "INACTIVE")],
        ),
        path(
            "UploadDevices: a batch over the message size limit",
            upload_one(
                &acme,
                ACTIVE,
                vec![pb::DeviceInput {
                    model: over_the_limit.clone(),
                    ..device(&imei(1))
                }],
            )
            .await,
            ResourceExhausted,
            "MESSAGE_TOO_LARGE",
            &[],
        ),
        path(
            "GetUpload: unknown",
            acme.get_upload(NO_ID).await,
            NotFound,
            "UPLOAD_NOT_FOUND",
            &[("upload_id", NO_ID)],
        ),
        path(
            "ListUploadRejections: unknown upload",
            acme.list_upload_rejections(pb::ListUploadRejectionsRequest {
                upload_id: NO_ID.into(),
                ..Default::default()
            })
            .await,
            NotFound,
            "UPLOAD_NOT_FOUND",
            &[("upload_id", NO_ID)],
        ),
        path(
            "GetDeletion: unknown",
            acme.get_deletion(NO_ID).await,
            NotFound,
            "DELETION_NOT_FOUND",
            &[("deletion_id", NO_ID)],
        ),
        // msp-link-service
        path(
            "LinkCustomer: unregistered",
            a.link_customer(UNKNOWN, ManagementMode::FullyManaged).await,
            NotFound,
            "ACCOUNT_NOT_FOUND",
            &[("knox_id", UNKNOWN)],
        ),
        path(
            "LinkCustomer: an MSP account",
            a.link_customer(MSP_B, ManagementMode::FullyManaged).await,
            FailedPrecondition,
            "ACCOUNT_IS_MSP",
            &[("knox_id", MSP_B)],
        ),
        path(
            "LinkCustomer: linked to the caller already",
            a.link_customer(FULLY, ManagementMode::JointlyManaged).await,
            AlreadyExists,
            "CUSTOMER_ALREADY_LINKED",
            &[("customer_knox_id", FULLY)],
        ),
        path(
            "LinkCustomer: managed by another MSP",
            b.link_customer(FULLY, ManagementMode::JointlyManaged).await,
            FailedPrecondition,
            "LINKED_TO_ANOTHER_MSP",
            &[("customer_knox_id", FULLY)],
        ),
        path(
            "any MSP call: the caller is not a registered MSP",
            msp(&stack, UNKNOWN)
                .link_customer(FREE, ManagementMode::FullyManaged)
                .await,
            FailedPrecondition,
            "NOT_AN_MSP",
            &[("knox_id", UNKNOWN)],
        ),
        path(
            "SetJointlyManaged: another MSP's customer",
            a.set_jointly_managed(OF_B).await,
            NotFound,
            "LINK_NOT_FOUND",
            &[("customer_knox_id", OF_B), ("msp_id", MSP_A)],
        ),
        path(
            "DelinkCustomer (msp): fully managed",
            a.delink_customer(FULLY, "").await,
            FailedPrecondition,
            "FULLY_MANAGED_CANNOT_DELINK",
            &[("customer_knox_id", FULLY)],
        ),
        path(
            "DelinkCustomer (customer): fully managed",
            customer(&stack, FULLY).delink_customer(FULLY, "").await,
            FailedPrecondition,
            "FULLY_MANAGED_CANNOT_DELINK",
            &[("customer_knox_id", FULLY)],
        ),
        path(
            "DelinkCustomer (msp): a customer it does not link",
            a.delink_customer(FREE, "").await,
            NotFound,
            "LINK_NOT_FOUND",
            &[("customer_knox_id", FREE)],
        ),
        path(
            "DelinkCustomer (customer): no MSP",
            customer(&stack, FREE).delink_customer(FREE, "").await,
            NotFound,
            "LINK_NOT_FOUND",
            &[("customer_knox_id", FREE)],
        ),
        path(
            "MoveDevices: to a customer the MSP does not link",
            a.move_devices([imei(1)], OF_B).await,
            FailedPrecondition,
            "CUSTOMER_NOT_LINKED",
            &[("customer_knox_id", OF_B)],
        ),
        path(
            "ListMspDevices: a customer the MSP does not link",
            a.list_msp_devices(pb::ListMspDevicesRequest {
                customer_knox_id: OF_B.into(),
                ..Default::default()
            })
            .await,
            NotFound,
            "LINK_NOT_FOUND",
            &[("customer_knox_id", OF_B)],
        ),
        // reporting-service
        path(
            "GetCustomerDetail: not the reseller's customer",
            acme.get_customer_detail(FREE).await,
            NotFound,
            "CUSTOMER_NOT_FOUND",
            &[("knox_id", FREE)],
        ),
        path(
            "ListCustomerDevices: not the reseller's customer",
            acme.list_customer_devices(pb::ListCustomerDevicesRequest {
                knox_id: FREE.into(),
                ..Default::default()
            })
            .await,
            NotFound,
            "CUSTOMER_NOT_FOUND",
            &[("knox_id", FREE)],
        ),
        path(
            "ExportCustomerCsv: not the reseller's customer",
            acme.export_customer_csv(pb::ExportCustomerCsvRequest {
                knox_id: FREE.into(),
                ..Default::default()
            })
            .await,
            NotFound,
            "CUSTOMER_NOT_FOUND",
            &[("knox_id", FREE)],
        ),
        path(
            "GetDeviceHistory: no device of the reseller's has the identifier",
            acme.reporting()
                .get_device_history(pb::GetDeviceHistoryRequest {
                    device_id: UNKNOWN_DEVICE.into(),
                })
                .await,
            NotFound,
            "DEVICE_NOT_FOUND",
            &[("device_id", UNKNOWN_DEVICE)],
        ),
    ];
    let count = paths.len();
    let wrong: Vec<String> = paths.into_iter().filter_map(mismatch).collect();
    assert!(
        wrong.is_empty(),
        "{} of {count} paths answered wrong:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
}

#[tokio::test]
async fn delinking_a_fully_managed_customer_says_to_switch_it_to_jointly_managed_first() {
    let stack = TestStack::start().await;
    setup(&stack).await;
    let status = refused(
        msp(&stack, MSP_A).delink_customer(FULLY, "").await,
        Code::FailedPrecondition,
        "FULLY_MANAGED_CANNOT_DELINK",
    );
    let message = status.message();
    assert_eq!(
        message,
        format!(
            "customer {FULLY} is fully managed and cannot be delinked; switch the customer to jointly managed first, then delink it"
        )
    );
    // The domain's words, never an RPC's name.
    assert!(!message.contains("SetJointlyManaged"), "{message}");
}

/// Waits until `caller` (an MSP) sees exactly `count` devices in its portal.
async fn portal_shows(caller: &Caller, count: usize) {
    eventually("the MSP portal to show the uploads", || async {
        (msp_devices(caller, "").await.len() == count).then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_move_says_why_each_device_was_rejected() {
    let stack = TestStack::start().await;
    for knox in [MSP_A, MSP_B] {
        active_account(&stack, RESELLER, knox, AccountKind::Msp, "MSP").await;
    }
    register(&stack, FREE, AccountKind::Customer, "Free").await;
    let (a, b) = (msp(&stack, MSP_A), msp(&stack, MSP_B));
    a.link_customer(FREE, ManagementMode::JointlyManaged)
        .await
        .expect("link");
    let (held, deleted, of_b, unknown) = (imei(1), imei(2), imei(3), imei(4));
    upload(&stack, RESELLER, MSP_A, &[held.clone(), deleted.clone()])
        .await
        .expect("upload to A");
    upload(&stack, RESELLER, MSP_B, std::slice::from_ref(&of_b))
        .await
        .expect("upload to B");
    portal_shows(&b, 1).await;
    portal_shows(&a, 2).await;
    reseller(&stack, RESELLER)
        .delete_devices([deleted.clone()])
        .await
        .expect("delete");
    portal_shows(&a, 1).await;

    let junk = "no device!";
    let answer = a
        .move_devices(
            [
                held.as_str(),
                of_b.as_str(),
                unknown.as_str(),
                junk,
                deleted.as_str(),
            ],
            FREE,
        )
        .await
        .expect("move");
    assert_eq!(answer.moved_device_ids, [held]);
    let why: Vec<(String, MoveRejectionReason)> = answer
        .rejections
        .iter()
        .map(|r| (r.device_id.clone(), r.reason()))
        .collect();
    // Another MSP's device, an unknown one and a deleted one read alike.
    assert_eq!(
        why,
        [
            (of_b, MoveRejectionReason::NotHeld),
            (unknown, MoveRejectionReason::NotHeld),
            (junk.to_owned(), MoveRejectionReason::NotADeviceId),
            (deleted, MoveRejectionReason::NotHeld),
        ]
    );
    // The older list names the same identifiers, in the same order.
    let listed: Vec<&str> = answer
        .rejections
        .iter()
        .map(|r| r.device_id.as_str())
        .collect();
    assert_eq!(answer.rejected_device_ids, listed);
    assert_eq!(answer.rejected_count, 4);
}

/// Every CSV download slot taken: the next download is refused with its reason.
#[tokio::test]
async fn a_download_past_the_last_slot_answers_too_many_downloads() {
    let stack = TestStack::start().await;
    active_customer(&stack, RESELLER, ACTIVE, "Active").await;
    // A file far larger than what HTTP/2 flow control lets the server send unread, so
    // a download nobody reads keeps its slot.
    let ids: Vec<String> = (0..50_000).map(imei).collect();
    upload(&stack, RESELLER, ACTIVE, &ids)
        .await
        .expect("upload");
    let acme = reseller(&stack, RESELLER);
    eventually("the reseller's view to list every device", || async {
        let detail = acme.get_customer_detail(ACTIVE).await.ok()?;
        (detail.summary?.devices == ids.len() as i64).then_some(())
    })
    .await;
    let export = || {
        let client = reseller(&stack, RESELLER);
        async move {
            client
                .reporting()
                .export_customer_csv(pb::ExportCustomerCsvRequest {
                    knox_id: ACTIVE.into(),
                    ..Default::default()
                })
                .await
        }
    };
    // Open downloads, unread, until one is refused; the stack allows a few at once.
    let mut open = Vec::new();
    let refusal = loop {
        match export().await {
            Ok(stream) => open.push(stream),
            Err(status) => break status,
        }
        assert!(open.len() <= 16, "no download was ever refused");
    };
    assert!(
        !open.is_empty(),
        "the first download was refused: {refusal:?}"
    );
    refused::<()>(Err(refusal), Code::ResourceExhausted, "TOO_MANY_DOWNLOADS");
    drop(open);
}
