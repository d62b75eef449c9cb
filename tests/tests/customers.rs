//! customer-service over real gRPC, PostgreSQL and NATS: accounts, reseller customers,
//! approvals and statuses, validation, tenancy and atomicity.

use reseller_proto::v1::{self as pb, AccountKind, CustomerStatus};
use reseller_tests::TestStack;
use reseller_tests::assert::{invalid_fields, status};
use reseller_tests::clients::{Caller, admin, customer, msp, reseller};
use tonic::Code;

fn register(
    knox_id: &str,
    kind: AccountKind,
    name: &str,
    country: &str,
) -> pb::RegisterAccountRequest {
    pb::RegisterAccountRequest {
        knox_id: knox_id.into(),
        kind: kind as i32,
        company_name: name.into(),
        country: country.into(),
    }
}

/// Registers each of `accounts` as the platform.
async fn register_all(stack: &TestStack, accounts: &[(&str, AccountKind, &str, &str)]) {
    for &(knox_id, kind, name, country) in accounts {
        admin(stack)
            .register_account(register(knox_id, kind, name, country))
            .await
            .unwrap();
    }
}

/// A stack where the platform registered `accounts`.
async fn stack_with(accounts: &[(&str, AccountKind, &str, &str)]) -> TestStack {
    let stack = TestStack::start().await;
    register_all(&stack, accounts).await;
    stack
}

/// The status of `knox_id` in `reseller`'s customer list.
async fn status_of(reseller: &Caller, knox_id: &str) -> i32 {
    reseller.get_customer(knox_id).await.unwrap().status
}

#[tokio::test]
async fn accounts_are_registered_normalised_and_read_back() {
    let stack = TestStack::start().await;
    let platform = admin(&stack);

    let account = platform
        .register_account(register(
            " 100200300 ",
            AccountKind::Customer,
            "  Acme GmbH ",
            "de",
        ))
        .await
        .unwrap();
    assert_eq!(account.knox_id, "100200300");
    assert_eq!(account.company_name, "Acme GmbH");
    assert_eq!(account.country, "DE");
    assert_eq!(account.kind, AccountKind::Customer as i32);
    assert!(account.created_at.is_some());

    let read = platform.get_account("100200300").await.unwrap();
    assert_eq!(read, account);

    status(
        platform
            .register_account(register("100200300", AccountKind::Msp, "Other", "FR"))
            .await,
        Code::AlreadyExists,
    );
    status(platform.get_account("999999999").await, Code::NotFound);
}

#[tokio::test]
async fn every_bad_account_field_is_named() {
    let stack = stack_with(&[("100200300", AccountKind::Customer, "Acme GmbH", "DE")]).await;
    let platform = admin(&stack);

    let unknown_kind = 9.try_into().unwrap_or(AccountKind::Unspecified);
    let cases: [(pb::RegisterAccountRequest, &[&str]); 4] = [
        // Every bad field, all at once.
        (
            register("12ab", AccountKind::Unspecified, " ", "XX"),
            &["knox_id", "kind", "company_name", "country"],
        ),
        (
            register("1234567", AccountKind::Customer, "A\u{7}B", "DE"),
            &["company_name"],
        ),
        (
            register(&"1".repeat(21), AccountKind::Customer, "A", "DE"),
            &["knox_id"],
        ),
        (register("1234567", unknown_kind, "A", "DE"), &["kind"]),
    ];
    for (request, fields) in cases {
        let what = format!("{request:?}");
        assert_eq!(
            invalid_fields(platform.register_account(request).await),
            fields,
            "{what}"
        );
    }
    assert_eq!(
        invalid_fields(platform.get_account("abc").await),
        ["knox_id"]
    );
}

#[tokio::test]
async fn only_the_platform_registers_and_reads_accounts() {
    let stack = stack_with(&[("100200300", AccountKind::Customer, "Acme GmbH", "DE")]).await;

    status(
        reseller(&stack, "acme")
            .register_account(register("1234567", AccountKind::Customer, "A", "DE"))
            .await,
        Code::PermissionDenied,
    );
    status(
        customer(&stack, "100200300").get_account("100200300").await,
        Code::PermissionDenied,
    );
}

/// Globex (a customer account, 200000001) and Initech (an MSP account, 200000002),
/// registered by the platform; answers reseller `acme`.
async fn globex_and_initech(stack: &TestStack) -> Caller {
    register_all(
        stack,
        &[
            ("200000001", AccountKind::Customer, "Globex", "US"),
            ("200000002", AccountKind::Msp, "Initech MSP", "GB"),
        ],
    )
    .await;
    reseller(stack, "acme")
}

/// [`globex_and_initech`], both added to `acme`'s customers.
async fn globex_and_initech_added(stack: &TestStack) -> Caller {
    let acme = globex_and_initech(stack).await;
    acme.add_customer("200000001", "  PO-7 ").await.unwrap();
    acme.add_customer("200000002", "").await.unwrap();
    acme
}

#[tokio::test]
async fn resellers_add_their_customers() {
    let stack = TestStack::start().await;
    let acme = globex_and_initech(&stack).await;

    let added = acme.add_customer("200000001", "  PO-7 ").await.unwrap();
    assert_eq!(added.knox_id, "200000001");
    assert_eq!(added.company_name, "Globex");
    assert_eq!(added.country, "US");
    assert_eq!(added.internal_reference, "PO-7");
    assert_eq!(added.status, CustomerStatus::PendingVerification as i32);
    assert_eq!(added.kind, AccountKind::Customer as i32);
    assert!(added.added_at.is_some());

    let msp_row = acme.add_customer("200000002", "").await.unwrap();
    assert_eq!(msp_row.kind, AccountKind::Msp as i32);
    assert_eq!(msp_row.internal_reference, "");

    status(
        acme.add_customer("200000001", "again").await,
        Code::AlreadyExists,
    );
    status(acme.add_customer("200000009", "").await, Code::NotFound);
}

#[tokio::test]
async fn resellers_read_and_re_reference_their_customers() {
    let stack = TestStack::start().await;
    let acme = globex_and_initech_added(&stack).await;

    let updated = acme
        .update_internal_reference("200000001", "Key account")
        .await
        .unwrap();
    assert_eq!(updated.internal_reference, "Key account");
    let read = acme.get_customer("200000001").await.unwrap();
    assert_eq!(read, updated);
    // Clearing the reference is allowed.
    let cleared = acme
        .update_internal_reference("200000001", "  ")
        .await
        .unwrap();
    assert_eq!(cleared.internal_reference, "");

    status(
        acme.update_internal_reference("200000009", "x").await,
        Code::NotFound,
    );
    status(acme.get_customer("200000009").await, Code::NotFound);

    // 100 characters is the limit, counted in characters, not bytes.
    let long = acme
        .update_internal_reference("200000001", &"ü".repeat(100))
        .await
        .unwrap();
    assert_eq!(long.internal_reference.chars().count(), 100);
}

#[tokio::test]
async fn every_bad_customer_field_is_named() {
    let stack = TestStack::start().await;
    let acme = globex_and_initech_added(&stack).await;

    // Both fields at once, then each alone.
    assert_eq!(
        invalid_fields(acme.add_customer("12", &"x".repeat(101)).await),
        ["knox_id", "internal_reference"]
    );
    assert_eq!(
        invalid_fields(acme.add_customer("200000001", "tab\there").await),
        ["internal_reference"]
    );
    assert_eq!(
        invalid_fields(acme.update_internal_reference("x", "ok").await),
        ["knox_id"]
    );
    assert_eq!(
        invalid_fields(acme.update_internal_reference("200000001", "a\nb").await),
        ["internal_reference"]
    );
    assert_eq!(invalid_fields(acme.get_customer("").await), ["knox_id"]);
}

#[tokio::test]
async fn only_resellers_call_reseller_rpcs() {
    let stack = TestStack::start().await;
    globex_and_initech_added(&stack).await;

    for (role, caller) in [
        ("platform", admin(&stack)),
        ("customer", customer(&stack, "200000001")),
        ("msp", msp(&stack, "200000002")),
    ] {
        eprintln!("as the {role}");
        status(
            caller.add_customer("200000001", "").await,
            Code::PermissionDenied,
        );
        status(
            caller.get_customer("200000001").await,
            Code::PermissionDenied,
        );
        status(
            caller.update_internal_reference("200000001", "").await,
            Code::PermissionDenied,
        );
    }
}

#[tokio::test]
async fn resellers_never_see_each_others_customers() {
    let stack = stack_with(&[("300000001", AccountKind::Customer, "Umbrella", "JP")]).await;
    let first = reseller(&stack, "first");
    let second = reseller(&stack, "second");

    first
        .add_customer("300000001", "first's ref")
        .await
        .unwrap();
    // Another reseller gets NOT_FOUND for it, and cannot change it.
    status(second.get_customer("300000001").await, Code::NotFound);
    status(
        second
            .update_internal_reference("300000001", "hijack")
            .await,
        Code::NotFound,
    );

    // The same account added by two resellers: two independent references and statuses.
    second
        .add_customer("300000001", "second's ref")
        .await
        .unwrap();
    customer(&stack, "300000001")
        .approve_reseller("second")
        .await
        .unwrap();
    let a = first.get_customer("300000001").await.unwrap();
    let b = second.get_customer("300000001").await.unwrap();
    assert_eq!(
        (a.internal_reference.as_str(), a.status),
        ("first's ref", CustomerStatus::PendingVerification as i32)
    );
    assert_eq!(
        (b.internal_reference.as_str(), b.status),
        ("second's ref", CustomerStatus::Active as i32)
    );
}

/// The accounts of the approval tests: Hooli and Pied Piper (customers), Aviato (an MSP).
async fn hooli_pied_piper_and_aviato(stack: &TestStack) {
    register_all(
        stack,
        &[
            ("400000001", AccountKind::Customer, "Hooli", "US"),
            ("400000002", AccountKind::Customer, "Pied Piper", "US"),
            ("400000003", AccountKind::Msp, "Aviato MSP", "US"),
        ],
    )
    .await;
}

#[tokio::test]
async fn statuses_go_pending_active_inactive_and_active_again() {
    let stack = TestStack::start().await;
    hooli_pied_piper_and_aviato(&stack).await;
    let acme = reseller(&stack, "acme");
    let hooli = customer(&stack, "400000001");

    acme.add_customer("400000001", "").await.unwrap();
    let approval = hooli.approve_reseller("acme").await.unwrap();
    assert_eq!(
        approval,
        pb::ResellerApproval {
            reseller_id: "acme".into(),
            knox_id: "400000001".into(),
            approved: true
        }
    );
    assert_eq!(
        status_of(&acme, "400000001").await,
        CustomerStatus::Active as i32
    );
    // Approving twice is harmless.
    hooli.approve_reseller("acme").await.unwrap();
    let revoked = hooli.revoke_reseller("acme").await.unwrap();
    assert!(!revoked.approved);
    assert_eq!(
        status_of(&acme, "400000001").await,
        CustomerStatus::Inactive as i32
    );
    hooli.approve_reseller("acme").await.unwrap();
    assert_eq!(
        status_of(&acme, "400000001").await,
        CustomerStatus::Active as i32
    );
}

#[tokio::test]
async fn an_account_that_approved_before_it_was_added_is_active_at_once() {
    let stack = TestStack::start().await;
    hooli_pied_piper_and_aviato(&stack).await;
    let acme = reseller(&stack, "acme");

    customer(&stack, "400000002")
        .approve_reseller("acme")
        .await
        .unwrap();
    let added = acme.add_customer("400000002", "").await.unwrap();
    assert_eq!(added.status, CustomerStatus::Active as i32);
}

#[tokio::test]
async fn msps_approve_as_msps() {
    let stack = TestStack::start().await;
    hooli_pied_piper_and_aviato(&stack).await;
    let acme = reseller(&stack, "acme");

    acme.add_customer("400000003", "").await.unwrap();
    msp(&stack, "400000003")
        .approve_reseller("acme")
        .await
        .unwrap();
    assert_eq!(
        status_of(&acme, "400000003").await,
        CustomerStatus::Active as i32
    );
}

/// An approval call: approve or revoke.
#[derive(Debug, Clone, Copy)]
enum Approval {
    Approve,
    Revoke,
}

impl Approval {
    async fn call(
        self,
        caller: &Caller,
        reseller_id: &str,
    ) -> Result<pb::ResellerApproval, tonic::Status> {
        match self {
            Self::Approve => caller.approve_reseller(reseller_id).await,
            Self::Revoke => caller.revoke_reseller(reseller_id).await,
        }
    }
}

#[tokio::test]
async fn approvals_are_refused_when_they_cannot_apply() {
    let stack = TestStack::start().await;
    hooli_pied_piper_and_aviato(&stack).await;
    reseller(&stack, "acme")
        .add_customer("400000001", "")
        .await
        .unwrap();
    let hooli = customer(&stack, "400000001");
    hooli.approve_reseller("acme").await.unwrap();

    // Revoking what was never approved is refused.
    status(
        hooli.revoke_reseller("other").await,
        Code::FailedPrecondition,
    );
    // A bad reseller ID is named.
    for (call, reseller_id) in [(Approval::Approve, "no spaces"), (Approval::Revoke, "")] {
        assert_eq!(
            invalid_fields(call.call(&hooli, reseller_id).await),
            ["reseller_id"],
            "{call:?} {reseller_id:?}"
        );
    }
    let refusals = [
        // An unregistered account, or a token whose role does not match the account's kind.
        (
            customer(&stack, "499999999"),
            Approval::Approve,
            Code::NotFound,
        ),
        (msp(&stack, "400000001"), Approval::Approve, Code::NotFound),
        // Resellers and the platform cannot approve on an account's behalf.
        (
            reseller(&stack, "acme"),
            Approval::Approve,
            Code::PermissionDenied,
        ),
        (admin(&stack), Approval::Revoke, Code::PermissionDenied),
    ];
    for (caller, call, code) in refusals {
        status(call.call(&caller, "acme").await, code);
    }
}

/// Stark (500000001), registered and added by `acme` as "original"; answers the platform,
/// `acme` and the number of rows in customer-service's outbox.
async fn stark_added(stack: &TestStack) -> (Caller, Caller, i64) {
    let platform = admin(stack);
    platform
        .register_account(register("500000001", AccountKind::Customer, "Stark", "US"))
        .await
        .unwrap();
    let acme = reseller(stack, "acme");
    acme.add_customer("500000001", "original").await.unwrap();
    (platform, acme, outbox_rows(stack).await)
}

async fn outbox_rows(stack: &TestStack) -> i64 {
    stack.count("SELECT count(*) FROM customer.outbox").await
}

#[tokio::test]
async fn refused_commands_write_neither_state_nor_events() {
    let stack = TestStack::start().await;
    let (platform, acme, before) = stark_added(&stack).await;

    status(
        acme.add_customer("500000001", "changed").await,
        Code::AlreadyExists,
    );
    status(acme.add_customer("500000002", "").await, Code::NotFound);
    status(
        platform
            .register_account(register("500000001", AccountKind::Customer, "Dup", "US"))
            .await,
        Code::AlreadyExists,
    );
    assert_eq!(outbox_rows(&stack).await, before);
    let kept = acme.get_customer("500000001").await.unwrap();
    assert_eq!(kept.internal_reference, "original");
}

#[tokio::test]
async fn a_state_change_whose_event_cannot_be_written_is_rolled_back() {
    let stack = TestStack::start().await;
    let (platform, acme, before) = stark_added(&stack).await;
    let pool = &stack.platform.pool;

    sqlx::query("ALTER TABLE customer.outbox RENAME TO outbox_unavailable")
        .execute(pool)
        .await
        .unwrap();
    status(
        platform
            .register_account(register("500000003", AccountKind::Customer, "Wayne", "US"))
            .await,
        Code::Internal,
    );
    status(
        acme.update_internal_reference("500000001", "lost?").await,
        Code::Internal,
    );
    sqlx::query("ALTER TABLE customer.outbox_unavailable RENAME TO outbox")
        .execute(pool)
        .await
        .unwrap();
    status(platform.get_account("500000003").await, Code::NotFound);
    let kept = acme.get_customer("500000001").await.unwrap();
    assert_eq!(kept.internal_reference, "original");
    assert_eq!(outbox_rows(&stack).await, before);
}
