//! The platform around the RPCs: bearer tokens, health, reflection, unimplemented RPCs.

use std::time::{SystemTime, UNIX_EPOCH};

use reseller_proto::v1::{self as pb, ManagementMode};
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
        caller.get_account("1234567").await.map(drop),
        caller.get_customer("1234567").await.map(drop),
        caller.get_upload("x").await.map(drop),
        caller
            .list_managed_customers(pb::ListManagedCustomersRequest::default())
            .await
            .map(drop),
        caller
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

/// An RPC that only some roles may call, with a request whose content does not matter
/// (the role is checked first).
#[derive(Debug, Clone, Copy)]
enum Rpc {
    LinkCustomer,
    MoveDevices,
    ListMspDevices,
    DelinkCustomer,
    DeleteDevices,
    ListCustomers,
    ExportCustomersCsv,
    ListMyDevices,
}

impl Rpc {
    async fn call(self, caller: &Caller) -> Result<(), tonic::Status> {
        match self {
            Rpc::LinkCustomer => caller
                .link_customer("", ManagementMode::Unspecified)
                .await
                .map(drop),
            Rpc::MoveDevices => caller
                .move_devices(Vec::<String>::new(), "")
                .await
                .map(drop),
            Rpc::ListMspDevices => caller
                .list_msp_devices(pb::ListMspDevicesRequest::default())
                .await
                .map(drop),
            Rpc::DelinkCustomer => caller.delink_customer("", "").await.map(drop),
            Rpc::DeleteDevices => caller.delete_devices(["X"]).await.map(drop),
            Rpc::ListCustomers => caller
                .list_customers(pb::ListCustomersRequest::default())
                .await
                .map(drop),
            // The call itself must be refused, not the stream it answers.
            Rpc::ExportCustomersCsv => caller
                .reporting()
                .export_customers_csv(pb::ExportCustomersCsvRequest::default())
                .await
                .map(drop),
            Rpc::ListMyDevices => caller
                .list_my_devices(pb::ListMyDevicesRequest::default())
                .await
                .map(drop),
        }
    }
}

#[tokio::test]
async fn each_rpc_refuses_roles_that_may_not_call_it() {
    use Rpc::*;
    let stack = TestStack::start().await;
    let refused: [(&str, Caller, &[Rpc]); 3] = [
        // Resellers and customers cannot call MSP operations (a customer may only
        // delink); only customers read their portal.
        (
            "reseller",
            reseller(&stack, "acme"),
            &[
                LinkCustomer,
                MoveDevices,
                ListMspDevices,
                DelinkCustomer,
                ListMyDevices,
            ],
        ),
        // Only resellers upload, delete and read reports.
        (
            "customer",
            customer(&stack, "1234567"),
            &[
                LinkCustomer,
                MoveDevices,
                ListMspDevices,
                DeleteDevices,
                ListCustomers,
                ExportCustomersCsv,
            ],
        ),
        (
            "msp",
            msp(&stack, "7654321"),
            &[
                DeleteDevices,
                ListCustomers,
                ExportCustomersCsv,
                ListMyDevices,
            ],
        ),
    ];
    for (role, caller, rpcs) in refused {
        for rpc in rpcs {
            eprintln!("{rpc:?} as a {role}");
            status(rpc.call(&caller).await, Code::PermissionDenied);
        }
    }
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
