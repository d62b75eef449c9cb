//! customer-service over real gRPC, PostgreSQL and NATS: accounts, reseller customers,
//! approvals and statuses, validation, tenancy and atomicity.

use reseller_proto::v1::{self as pb, AccountKind, CustomerStatus};
use reseller_tests::TestStack;
use reseller_tests::assert::{invalid_fields, status};
use reseller_tests::clients::{admin, customer, msp, reseller};
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

fn add(knox_id: &str, reference: &str) -> pb::AddCustomerRequest {
    pb::AddCustomerRequest {
        knox_id: knox_id.into(),
        internal_reference: reference.into(),
    }
}

#[tokio::test]
async fn accounts_are_registered_read_and_validated_by_the_platform() {
    let stack = TestStack::start().await;
    let mut accounts = admin(&stack).accounts();

    let account = accounts
        .register_account(register(
            " 100200300 ",
            AccountKind::Customer,
            "  Acme GmbH ",
            "de",
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(account.knox_id, "100200300");
    assert_eq!(account.company_name, "Acme GmbH");
    assert_eq!(account.country, "DE");
    assert_eq!(account.kind, AccountKind::Customer as i32);
    assert!(account.created_at.is_some());

    let read = accounts
        .get_account(pb::GetAccountRequest {
            knox_id: "100200300".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(read, account);

    status(
        accounts
            .register_account(register("100200300", AccountKind::Msp, "Other", "FR"))
            .await,
        Code::AlreadyExists,
    );
    status(
        accounts
            .get_account(pb::GetAccountRequest {
                knox_id: "999999999".into(),
            })
            .await,
        Code::NotFound,
    );

    // Every bad field is named, all at once.
    let fields = invalid_fields(
        accounts
            .register_account(register("12ab", AccountKind::Unspecified, " ", "XX"))
            .await,
    );
    assert_eq!(fields, ["knox_id", "kind", "company_name", "country"]);
    assert_eq!(
        invalid_fields(
            accounts
                .register_account(register("1234567", AccountKind::Customer, "A\u{7}B", "DE"))
                .await
        ),
        ["company_name"]
    );
    assert_eq!(
        invalid_fields(
            accounts
                .register_account(register(&"1".repeat(21), AccountKind::Customer, "A", "DE"))
                .await
        ),
        ["knox_id"]
    );
    assert_eq!(
        invalid_fields(
            accounts
                .register_account(register(
                    "1234567",
                    9.try_into().unwrap_or(AccountKind::Unspecified),
                    "A",
                    "DE"
                ))
                .await
        ),
        ["kind"]
    );
    assert_eq!(
        invalid_fields(
            accounts
                .get_account(pb::GetAccountRequest {
                    knox_id: "abc".into()
                })
                .await
        ),
        ["knox_id"]
    );

    // Only the platform registers accounts.
    status(
        reseller(&stack, "acme")
            .accounts()
            .register_account(register("1234567", AccountKind::Customer, "A", "DE"))
            .await,
        Code::PermissionDenied,
    );
    status(
        customer(&stack, "100200300")
            .accounts()
            .get_account(pb::GetAccountRequest {
                knox_id: "100200300".into(),
            })
            .await,
        Code::PermissionDenied,
    );
}

#[tokio::test]
async fn resellers_add_read_and_re_reference_their_customers() {
    let stack = TestStack::start().await;
    admin(&stack)
        .accounts()
        .register_account(register("200000001", AccountKind::Customer, "Globex", "US"))
        .await
        .unwrap();
    admin(&stack)
        .accounts()
        .register_account(register("200000002", AccountKind::Msp, "Initech MSP", "GB"))
        .await
        .unwrap();
    let mut customers = reseller(&stack, "acme").customers();

    let added = customers
        .add_customer(add("200000001", "  PO-7 "))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(added.knox_id, "200000001");
    assert_eq!(added.company_name, "Globex");
    assert_eq!(added.country, "US");
    assert_eq!(added.internal_reference, "PO-7");
    assert_eq!(added.status, CustomerStatus::PendingVerification as i32);
    assert_eq!(added.kind, AccountKind::Customer as i32);
    assert!(added.added_at.is_some());

    let msp_row = customers
        .add_customer(add("200000002", ""))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(msp_row.kind, AccountKind::Msp as i32);
    assert_eq!(msp_row.internal_reference, "");

    status(
        customers.add_customer(add("200000001", "again")).await,
        Code::AlreadyExists,
    );
    status(
        customers.add_customer(add("200000009", "")).await,
        Code::NotFound,
    );

    let updated = customers
        .update_internal_reference(pb::UpdateInternalReferenceRequest {
            knox_id: "200000001".into(),
            internal_reference: "Key account".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(updated.internal_reference, "Key account");
    let read = customers
        .get_customer(pb::GetCustomerRequest {
            knox_id: "200000001".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(read, updated);
    // Clearing the reference is allowed.
    let cleared = customers
        .update_internal_reference(pb::UpdateInternalReferenceRequest {
            knox_id: "200000001".into(),
            internal_reference: "  ".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(cleared.internal_reference, "");

    status(
        customers
            .update_internal_reference(pb::UpdateInternalReferenceRequest {
                knox_id: "200000009".into(),
                internal_reference: "x".into(),
            })
            .await,
        Code::NotFound,
    );
    status(
        customers
            .get_customer(pb::GetCustomerRequest {
                knox_id: "200000009".into(),
            })
            .await,
        Code::NotFound,
    );

    // Validation: both fields at once, then each alone.
    assert_eq!(
        invalid_fields(customers.add_customer(add("12", &"x".repeat(101))).await),
        ["knox_id", "internal_reference"]
    );
    assert_eq!(
        invalid_fields(customers.add_customer(add("200000001", "tab\there")).await),
        ["internal_reference"]
    );
    assert_eq!(
        invalid_fields(
            customers
                .update_internal_reference(pb::UpdateInternalReferenceRequest {
                    knox_id: "x".into(),
                    internal_reference: "ok".into()
                })
                .await
        ),
        ["knox_id"]
    );
    assert_eq!(
        invalid_fields(
            customers
                .update_internal_reference(pb::UpdateInternalReferenceRequest {
                    knox_id: "200000001".into(),
                    internal_reference: "a\nb".into()
                })
                .await
        ),
        ["internal_reference"]
    );
    assert_eq!(
        invalid_fields(
            customers
                .get_customer(pb::GetCustomerRequest { knox_id: "".into() })
                .await
        ),
        ["knox_id"]
    );
    // 100 characters is the limit, counted in characters, not bytes.
    let long = customers
        .update_internal_reference(pb::UpdateInternalReferenceRequest {
            knox_id: "200000001".into(),
            internal_reference: "ü".repeat(100),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(long.internal_reference.chars().count(), 100);

    // Roles that may not call reseller RPCs.
    for caller in [
        admin(&stack),
        customer(&stack, "200000001"),
        msp(&stack, "200000002"),
    ] {
        status(
            caller.customers().add_customer(add("200000001", "")).await,
            Code::PermissionDenied,
        );
        status(
            caller
                .customers()
                .get_customer(pb::GetCustomerRequest {
                    knox_id: "200000001".into(),
                })
                .await,
            Code::PermissionDenied,
        );
        status(
            caller
                .customers()
                .update_internal_reference(pb::UpdateInternalReferenceRequest {
                    knox_id: "200000001".into(),
                    internal_reference: "".into(),
                })
                .await,
            Code::PermissionDenied,
        );
    }
}

#[tokio::test]
async fn resellers_never_see_each_others_customers() {
    let stack = TestStack::start().await;
    admin(&stack)
        .accounts()
        .register_account(register(
            "300000001",
            AccountKind::Customer,
            "Umbrella",
            "JP",
        ))
        .await
        .unwrap();
    let mut first = reseller(&stack, "first").customers();
    let mut second = reseller(&stack, "second").customers();

    first
        .add_customer(add("300000001", "first's ref"))
        .await
        .unwrap();
    // Another reseller gets NOT_FOUND for it, and cannot change it.
    status(
        second
            .get_customer(pb::GetCustomerRequest {
                knox_id: "300000001".into(),
            })
            .await,
        Code::NotFound,
    );
    status(
        second
            .update_internal_reference(pb::UpdateInternalReferenceRequest {
                knox_id: "300000001".into(),
                internal_reference: "hijack".into(),
            })
            .await,
        Code::NotFound,
    );

    // The same account added by two resellers: two independent references and statuses.
    second
        .add_customer(add("300000001", "second's ref"))
        .await
        .unwrap();
    customer(&stack, "300000001")
        .customers()
        .approve_reseller(pb::ApproveResellerRequest {
            reseller_id: "second".into(),
        })
        .await
        .unwrap();
    let a = first
        .get_customer(pb::GetCustomerRequest {
            knox_id: "300000001".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let b = second
        .get_customer(pb::GetCustomerRequest {
            knox_id: "300000001".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (a.internal_reference.as_str(), a.status),
        ("first's ref", CustomerStatus::PendingVerification as i32)
    );
    assert_eq!(
        (b.internal_reference.as_str(), b.status),
        ("second's ref", CustomerStatus::Active as i32)
    );
}

#[tokio::test]
async fn statuses_follow_the_accounts_approvals() {
    let stack = TestStack::start().await;
    let mut accounts = admin(&stack).accounts();
    accounts
        .register_account(register("400000001", AccountKind::Customer, "Hooli", "US"))
        .await
        .unwrap();
    accounts
        .register_account(register(
            "400000002",
            AccountKind::Customer,
            "Pied Piper",
            "US",
        ))
        .await
        .unwrap();
    accounts
        .register_account(register("400000003", AccountKind::Msp, "Aviato MSP", "US"))
        .await
        .unwrap();
    let mut reseller_customers = reseller(&stack, "acme").customers();
    let mut hooli = customer(&stack, "400000001").customers();
    let get = |knox: &str| pb::GetCustomerRequest {
        knox_id: knox.into(),
    };

    // pending → active → inactive → active again
    reseller_customers
        .add_customer(add("400000001", ""))
        .await
        .unwrap();
    let approval = hooli
        .approve_reseller(pb::ApproveResellerRequest {
            reseller_id: "acme".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        approval,
        pb::ResellerApproval {
            reseller_id: "acme".into(),
            knox_id: "400000001".into(),
            approved: true
        }
    );
    assert_eq!(
        reseller_customers
            .get_customer(get("400000001"))
            .await
            .unwrap()
            .into_inner()
            .status,
        CustomerStatus::Active as i32
    );
    // Approving twice is harmless.
    hooli
        .approve_reseller(pb::ApproveResellerRequest {
            reseller_id: "acme".into(),
        })
        .await
        .unwrap();
    let revoked = hooli
        .revoke_reseller(pb::RevokeResellerRequest {
            reseller_id: "acme".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!revoked.approved);
    assert_eq!(
        reseller_customers
            .get_customer(get("400000001"))
            .await
            .unwrap()
            .into_inner()
            .status,
        CustomerStatus::Inactive as i32
    );
    hooli
        .approve_reseller(pb::ApproveResellerRequest {
            reseller_id: "acme".into(),
        })
        .await
        .unwrap();
    assert_eq!(
        reseller_customers
            .get_customer(get("400000001"))
            .await
            .unwrap()
            .into_inner()
            .status,
        CustomerStatus::Active as i32
    );

    // An account that approved before it was added is active at once.
    customer(&stack, "400000002")
        .customers()
        .approve_reseller(pb::ApproveResellerRequest {
            reseller_id: "acme".into(),
        })
        .await
        .unwrap();
    let added = reseller_customers
        .add_customer(add("400000002", ""))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(added.status, CustomerStatus::Active as i32);

    // MSPs approve as MSPs.
    reseller_customers
        .add_customer(add("400000003", ""))
        .await
        .unwrap();
    msp(&stack, "400000003")
        .customers()
        .approve_reseller(pb::ApproveResellerRequest {
            reseller_id: "acme".into(),
        })
        .await
        .unwrap();
    assert_eq!(
        reseller_customers
            .get_customer(get("400000003"))
            .await
            .unwrap()
            .into_inner()
            .status,
        CustomerStatus::Active as i32
    );

    // Revoking what was never approved is refused; nothing changes.
    status(
        hooli
            .revoke_reseller(pb::RevokeResellerRequest {
                reseller_id: "other".into(),
            })
            .await,
        Code::FailedPrecondition,
    );
    // A bad reseller ID is named.
    assert_eq!(
        invalid_fields(
            hooli
                .approve_reseller(pb::ApproveResellerRequest {
                    reseller_id: "no spaces".into()
                })
                .await
        ),
        ["reseller_id"]
    );
    assert_eq!(
        invalid_fields(
            hooli
                .revoke_reseller(pb::RevokeResellerRequest {
                    reseller_id: "".into()
                })
                .await
        ),
        ["reseller_id"]
    );
    // An unregistered account, or a token whose role does not match the account's kind.
    status(
        customer(&stack, "499999999")
            .customers()
            .approve_reseller(pb::ApproveResellerRequest {
                reseller_id: "acme".into(),
            })
            .await,
        Code::NotFound,
    );
    status(
        msp(&stack, "400000001")
            .customers()
            .approve_reseller(pb::ApproveResellerRequest {
                reseller_id: "acme".into(),
            })
            .await,
        Code::NotFound,
    );
    // Resellers and the platform cannot approve on an account's behalf.
    status(
        reseller(&stack, "acme")
            .customers()
            .approve_reseller(pb::ApproveResellerRequest {
                reseller_id: "acme".into(),
            })
            .await,
        Code::PermissionDenied,
    );
    status(
        admin(&stack)
            .customers()
            .revoke_reseller(pb::RevokeResellerRequest {
                reseller_id: "acme".into(),
            })
            .await,
        Code::PermissionDenied,
    );
}

#[tokio::test]
async fn a_failed_command_leaves_nothing_half_written() {
    let stack = TestStack::start().await;
    let pool = &stack.platform.pool;
    let outbox_rows = || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM customer.outbox")
            .fetch_one(pool)
            .await
            .unwrap()
    };
    let mut accounts = admin(&stack).accounts();
    accounts
        .register_account(register("500000001", AccountKind::Customer, "Stark", "US"))
        .await
        .unwrap();
    let mut customers = reseller(&stack, "acme").customers();
    customers
        .add_customer(add("500000001", "original"))
        .await
        .unwrap();
    let before = outbox_rows().await;

    // Refused commands write neither state nor events.
    status(
        customers.add_customer(add("500000001", "changed")).await,
        Code::AlreadyExists,
    );
    status(
        customers.add_customer(add("500000002", "")).await,
        Code::NotFound,
    );
    status(
        accounts
            .register_account(register("500000001", AccountKind::Customer, "Dup", "US"))
            .await,
        Code::AlreadyExists,
    );
    assert_eq!(outbox_rows().await, before);
    let kept = customers
        .get_customer(pb::GetCustomerRequest {
            knox_id: "500000001".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(kept.internal_reference, "original");

    // If the event cannot be written, the state change is rolled back with it.
    sqlx::query("ALTER TABLE customer.outbox RENAME TO outbox_unavailable")
        .execute(pool)
        .await
        .unwrap();
    status(
        accounts
            .register_account(register("500000003", AccountKind::Customer, "Wayne", "US"))
            .await,
        Code::Internal,
    );
    status(
        customers
            .update_internal_reference(pb::UpdateInternalReferenceRequest {
                knox_id: "500000001".into(),
                internal_reference: "lost?".into(),
            })
            .await,
        Code::Internal,
    );
    sqlx::query("ALTER TABLE customer.outbox_unavailable RENAME TO outbox")
        .execute(pool)
        .await
        .unwrap();
    status(
        accounts
            .get_account(pb::GetAccountRequest {
                knox_id: "500000003".into(),
            })
            .await,
        Code::NotFound,
    );
    let kept = customers
        .get_customer(pb::GetCustomerRequest {
            knox_id: "500000001".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(kept.internal_reference, "original");
    assert_eq!(outbox_rows().await, before);
}
