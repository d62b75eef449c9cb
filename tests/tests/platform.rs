//! The platform around the RPCs: bearer tokens, health, reflection, unimplemented RPCs.

use std::time::{SystemTime, UNIX_EPOCH};

use reseller_proto::v1 as pb;
use reseller_tests::TestStack;
use reseller_tests::assert::status;
use reseller_tests::clients::{Caller, customer, msp, reseller};
use reseller_tests::reflection::{self, SERVICES, services_v1};
use tonic::Code;

/// A token signed with `secret` whose `exp` is `exp_offset` seconds from now, built with
/// jsonwebtoken directly (not the kit's signer) so forged and odd tokens can be made.
fn token_with(secret: &str, role: &str, sub: &str, exp_offset: i64) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let claims = serde_json::json!({ "sub": sub, "role": role, "exp": now + exp_offset });
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

async fn one_call_per_service(caller: &Caller) -> Vec<Result<(), tonic::Status>> {
    vec![
        caller
            .accounts()
            .get_account(pb::GetAccountRequest {
                knox_id: "1234567".into(),
            })
            .await
            .map(drop),
        caller
            .customers()
            .get_customer(pb::GetCustomerRequest {
                knox_id: "1234567".into(),
            })
            .await
            .map(drop),
        caller
            .devices()
            .get_upload(pb::GetUploadRequest {
                upload_id: "x".into(),
            })
            .await
            .map(drop),
        caller
            .msp()
            .list_managed_customers(pb::ListManagedCustomersRequest::default())
            .await
            .map(drop),
        caller
            .reporting()
            .list_customers(pb::ListCustomersRequest::default())
            .await
            .map(drop),
    ]
}

#[tokio::test]
async fn every_service_rejects_missing_malformed_forged_and_expired_tokens() {
    let stack = TestStack::start().await;
    // The hand-made signer agrees with the service: a well-formed token passes.
    let good = token_with(&stack.secret, "reseller", "acme", 600);
    reseller_ok(&stack, &good).await;

    let cases = [
        ("no token", None),
        ("not a bearer header", Some("Basic dXNlcjpwYXNz".to_owned())),
        ("malformed token", Some("Bearer not.a.jwt".to_owned())),
        (
            "wrongly signed",
            Some(format!(
                "Bearer {}",
                token_with("another-secret", "reseller", "acme", 600)
            )),
        ),
        (
            "expired",
            Some(format!(
                "Bearer {}",
                token_with(&stack.secret, "reseller", "acme", -120)
            )),
        ),
        (
            "unknown role",
            Some(format!(
                "Bearer {}",
                token_with(&stack.secret, "superuser", "acme", 600)
            )),
        ),
        (
            "bad subject",
            Some(format!(
                "Bearer {}",
                token_with(&stack.secret, "customer", "acme", 600)
            )),
        ),
    ];
    for (case, header) in cases {
        let caller = Caller::raw(&stack, header);
        for result in one_call_per_service(&caller).await {
            let err = result.expect_err(case);
            assert_eq!(err.code(), Code::Unauthenticated, "{case}: {err:?}");
        }
    }
}

async fn reseller_ok(stack: &TestStack, token: &str) {
    let caller = Caller::raw(stack, Some(format!("Bearer {token}")));
    caller
        .reporting()
        .list_customers(pb::ListCustomersRequest::default())
        .await
        .expect("valid token accepted");
}

#[tokio::test]
async fn health_and_reflection_answer_without_a_token() {
    let stack = TestStack::start().await;
    let mut health = tonic_health::pb::health_client::HealthClient::new(stack.channel.clone());
    for service in [
        "",
        "reseller.v1.AccountService",
        "reseller.v1.CustomerService",
        "reseller.v1.DeviceService",
        "reseller.v1.MspService",
        "reseller.v1.ReportingService",
    ] {
        let answer = health
            .check(tonic_health::pb::HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap_or_else(|e| panic!("health of {service:?}: {e:?}"))
            .into_inner();
        assert_eq!(
            answer.status,
            tonic_health::pb::health_check_response::ServingStatus::Serving as i32,
            "{service}"
        );
    }

    let names = services_v1(stack.channel.clone()).await;
    reflection::assert_lists(&names, SERVICES);
}

#[tokio::test]
async fn each_rpc_refuses_roles_that_may_not_call_it() {
    let stack = TestStack::start().await;
    let acme = reseller(&stack, "acme");
    let a_customer = customer(&stack, "1234567");
    let an_msp = msp(&stack, "7654321");
    // Resellers and customers cannot call MSP operations (a customer may only delink).
    for caller in [&acme, &a_customer] {
        status(
            caller
                .msp()
                .link_customer(pb::LinkCustomerRequest::default())
                .await,
            Code::PermissionDenied,
        );
        status(
            caller
                .msp()
                .move_devices(pb::MoveDevicesRequest::default())
                .await,
            Code::PermissionDenied,
        );
        status(
            caller
                .msp()
                .list_msp_devices(pb::ListMspDevicesRequest::default())
                .await,
            Code::PermissionDenied,
        );
    }
    status(
        acme.msp()
            .delink_customer(pb::DelinkCustomerRequest::default())
            .await,
        Code::PermissionDenied,
    );
    // Only resellers upload, delete and read reports; only customers read their portal.
    for caller in [&a_customer, &an_msp] {
        status(
            caller
                .devices()
                .delete_devices(pb::DeleteDevicesRequest {
                    device_ids: vec!["X".into()],
                })
                .await,
            Code::PermissionDenied,
        );
        status(
            caller
                .reporting()
                .list_customers(pb::ListCustomersRequest::default())
                .await,
            Code::PermissionDenied,
        );
        status(
            caller
                .reporting()
                .export_customers_csv(pb::ExportCustomersCsvRequest::default())
                .await,
            Code::PermissionDenied,
        );
    }
    status(
        acme.customers()
            .list_my_devices(pb::ListMyDevicesRequest::default())
            .await,
        Code::PermissionDenied,
    );
    status(
        an_msp
            .customers()
            .list_my_devices(pb::ListMyDevicesRequest::default())
            .await,
        Code::PermissionDenied,
    );
}

#[tokio::test]
async fn an_oversized_request_is_resource_exhausted() {
    let stack = TestStack::start().await;
    let huge = pb::AddCustomerRequest {
        knox_id: "1234567".into(),
        internal_reference: "x".repeat(9 * 1024 * 1024),
    };
    status(
        reseller(&stack, "acme")
            .customers()
            .add_customer(huge)
            .await,
        Code::ResourceExhausted,
    );
}
