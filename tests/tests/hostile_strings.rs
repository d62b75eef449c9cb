//! Strings nothing downstream can hold are one field's problem, never `INTERNAL`
//! (issue 9, DOMAIN.md "Devices and uploads").
//!
//! Every string field of every RPC of the five services is fed generated hostile values
//! — a NUL inside a plausible value, other control characters, 10 kB strings, non-ASCII
//! text and 10 kB of it — through real gRPC with a valid token of the right role, the
//! other fields valid, so the value reaches as deep as it can. Each answer must be:
//!
//! - never `INTERNAL` or `UNKNOWN` (a transport failure, such as a `grpc-message` header
//!   too large for HTTP/2, reaches the client as one of these);
//! - short: every error message and field-violation description under 1 KiB (a caller's
//!   value is echoed through `reseller_kit::text::echo`, cut to 64 characters);
//! - `INVALID_ARGUMENT` only with a `google.rpc.BadRequest` violation naming the field;
//! - on success, every identifier it echoes at most 64 characters without control
//!   characters, plus the case's own checks (a NUL in one ID of a move rejects that ID
//!   only).
//!
//! Page tokens are also fed tokens that decode: real tokens with each string inside
//! replaced by the hostile value, and tuples built from it, because a token's content
//! reaches SQL too. Token subjects are fed the same values.
//!
//! One stack per service group; each group collects every failing case and fails once,
//! listing them all (RPC, field, value, what came back).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use reseller_kit::auth::{JwtAuth, Role};
use reseller_kit::device_id::{echo_id, parse_input, parse_secondary_ids};
use reseller_kit::paging;
use reseller_proto::v1::{self as pb, AccountKind, ManagementMode};
use reseller_tests::clients::{Caller, admin, customer, msp, reseller};
use reseller_tests::fixtures::{active_account, active_customer, imei, register, upload_stream};
use reseller_tests::tokens::with_each_string_replaced;
use reseller_tests::{TestStack, eventually};
use tonic::{Code, Status};
use tonic_types::StatusExt;

/// Longest error message or violation description allowed.
const MAX_MESSAGE_BYTES: usize = 1024;
/// Longest echoed identifier, in characters (`reseller_kit::text::ECHO_MAX_CHARS`).
const MAX_ECHO_CHARS: usize = 64;

/// The generated values, each with a label for the report.
fn hostile_values() -> Vec<(&'static str, String)> {
    vec![
        ("NUL inside a serial", "R5CW\u{0}10DDD".into()),
        ("NUL inside a Knox ID", "1000\u{0}00001".into()),
        ("NUL alone", "\u{0}".into()),
        ("ANSI escape", "\u{1b}[31m".into()),
        ("tab", "\t".into()),
        ("DEL", "\u{7f}".into()),
        ("CR LF", "a\r\nb".into()),
        ("10 kB ASCII", "X".repeat(10_000)),
        ("10 kB digits", "9".repeat(10_000)),
        ("non-ASCII", "Ärzte".into()),
        ("emoji", "📱🔥".into()),
        ("RTL marks", "\u{200f}\u{202e}R58M-1\u{202c}".into()),
        ("10 kB non-ASCII", "Ä".repeat(5_000)),
        ("10 kB emoji and NULs", "📱\u{0}".repeat(2_000)),
        ("percent escapes", "%00%0A%zz".into()),
    ]
}

/// What a successful call echoed back, for the checks.
#[derive(Debug, Default)]
struct Answer {
    /// Identifiers the answer echoes from the request.
    echoed: Vec<String>,
    /// Messages for people in the answer (rejection messages).
    messages: Vec<String>,
    /// What the case itself found wrong with the answer.
    problems: Vec<String>,
}

type Outcome = Result<Answer, Status>;
type Call = Pin<Box<dyn Future<Output = Outcome> + Send>>;

/// One string field of one RPC: `call` sends a request with `value` in that field.
struct Case {
    rpc: &'static str,
    /// The field as a BadRequest violation should name it (its last path segment).
    field: &'static str,
    /// Also feed page tokens that decode (for `page_token` fields): built from `real`,
    /// a token this list issued, when there is one.
    token: Option<Option<String>>,
    call: Box<dyn Fn(String) -> Call + Send + Sync>,
}

impl Case {
    fn new<F, Fut>(rpc: &'static str, field: &'static str, call: F) -> Self
    where
        F: Fn(String) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Outcome> + Send + 'static,
    {
        Self {
            rpc,
            field,
            token: None,
            call: Box::new(move |value| Box::pin(call(value))),
        }
    }

    /// A case that calls as `caller`: `call` gets its own handle of it and the value.
    fn by<F, Fut>(rpc: &'static str, field: &'static str, caller: &Caller, call: F) -> Self
    where
        F: Fn(Caller, String) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Outcome> + Send + 'static,
    {
        let caller = caller.clone();
        Self::new(rpc, field, move |value| call(caller.clone(), value))
    }

    /// [`Case::page_token`] when the case's field is `page_token`; the case as is for
    /// the list's other fields.
    fn paged(self, real: Option<String>) -> Self {
        if self.field == "page_token" {
            self.page_token(real)
        } else {
            self
        }
    }

    /// A `page_token` field; `real` is a token the list issued, if the setup got one.
    fn page_token(mut self, real: Option<String>) -> Self {
        self.token = Some(real);
        self
    }
}

/// Page tokens that decode and carry `value`: `real` with each of its strings replaced,
/// and the shapes the services' cursors take.
fn hostile_tokens(real: Option<&str>, value: &str) -> Vec<String> {
    let mut tokens = vec![
        paging::encode_token(&value),
        paging::encode_token(&(value, uuid::Uuid::nil())),
        paging::encode_token(&(value, value)),
    ];
    if let Some(Ok(Some(json))) = real.map(paging::decode_token::<serde_json::Value>) {
        tokens.extend(with_each_string_replaced(&json, value));
    }
    tokens
}

fn short(text: &str) -> String {
    reseller_kit::text::echo(text)
}

/// What is wrong with `outcome` for a `field` fed `value`; empty when nothing.
fn judge(field: &str, outcome: &Outcome) -> Vec<String> {
    let mut wrong = Vec::new();
    match outcome {
        Err(status) => {
            if matches!(status.code(), Code::Internal | Code::Unknown) {
                wrong.push(format!("{:?}: {}", status.code(), short(status.message())));
            }
            if status.message().len() >= MAX_MESSAGE_BYTES {
                wrong.push(format!(
                    "{:?} message of {} bytes: {}",
                    status.code(),
                    status.message().len(),
                    short(status.message())
                ));
            }
            let details = status.get_error_details();
            let violations = details
                .bad_request()
                .map(|b| b.field_violations.clone())
                .unwrap_or_default();
            for v in &violations {
                if v.description.len() >= MAX_MESSAGE_BYTES {
                    wrong.push(format!(
                        "violation of {} described in {} bytes",
                        v.field,
                        v.description.len()
                    ));
                }
            }
            if status.code() == Code::InvalidArgument {
                // `header.order_number`, `device_ids[3]` and `order_number` all name it.
                let names_it = violations
                    .iter()
                    .any(|v| v.field.split(['.', '[']).any(|segment| segment == field));
                if !names_it {
                    let named: Vec<&str> = violations.iter().map(|v| v.field.as_str()).collect();
                    wrong.push(format!(
                        "INVALID_ARGUMENT names {named:?}, not {field}: {}",
                        short(status.message())
                    ));
                }
            }
        }
        Ok(answer) => {
            for id in &answer.echoed {
                if id.chars().count() > MAX_ECHO_CHARS || id.chars().any(char::is_control) {
                    wrong.push(format!(
                        "echoed identifier of {} characters: {}",
                        id.chars().count(),
                        short(id)
                    ));
                }
            }
            for message in &answer.messages {
                if message.len() >= MAX_MESSAGE_BYTES || message.chars().any(char::is_control) {
                    wrong.push(format!(
                        "answer message of {} bytes: {}",
                        message.len(),
                        short(message)
                    ));
                }
            }
            wrong.extend(answer.problems.iter().cloned());
        }
    }
    wrong
}

/// Feeds every hostile value to every case (and, for page tokens, the tokens built from
/// each value); returns one line per failure.
async fn run(cases: &[Case]) -> Vec<String> {
    let mut failures = Vec::new();
    for case in cases {
        for (label, value) in hostile_values() {
            let mut inputs = vec![(label.to_owned(), value.clone())];
            if let Some(real) = &case.token {
                for (n, token) in hostile_tokens(real.as_deref(), &value)
                    .into_iter()
                    .enumerate()
                {
                    inputs.push((format!("{label} in a decodable token #{n}"), token));
                }
            }
            for (label, input) in inputs {
                let outcome = (case.call)(input).await;
                for wrong in judge(case.field, &outcome) {
                    failures.push(format!("{} {} <- {label}: {wrong}", case.rpc, case.field));
                }
            }
        }
    }
    failures
}

fn assert_none(group: &str, failures: Vec<String>) {
    assert!(
        failures.is_empty(),
        "{group}: {} failing case(s):\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// A source of fresh numbers (Knox IDs, IMEIs) for cases that must not collide.
#[derive(Debug, Clone, Default)]
struct Counter(Arc<AtomicU64>);

impl Counter {
    fn next(&self) -> u64 {
        self.0.fetch_add(1, Ordering::Relaxed)
    }
}

/// A success that echoes nothing the case checks, or the call's status.
fn ok<T>(result: Result<T, Status>) -> Outcome {
    result.map(|_| Answer::default())
}

/// Uploads `ids` to `target` as reseller `acme`, in batches of `batch`, with
/// `order_number` in the header.
async fn upload_ids(acme: &Caller, target: &str, order_number: &str, ids: &[String], batch: usize) {
    let header = pb::UploadHeader {
        target_knox_id: target.into(),
        order_number: order_number.into(),
        ..Default::default()
    };
    let messages = upload_stream(header, ids.iter().map(|id| device(id)).collect(), batch);
    acme.upload_devices(futures::stream::iter(messages))
        .await
        .expect("upload");
}

/// Waits until `first_page` (a list's first page, of one item) answers a next-page
/// token, and returns that token: a real one, to forge decodable ones from.
async fn next_page_token<F, Fut>(what: &str, first_page: F) -> String
where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<String, Status>>,
{
    eventually(what, || async {
        let token = first_page().await.ok()?;
        (!token.is_empty()).then_some(token)
    })
    .await
}

fn my_devices_request(page_token: String) -> pb::ListMyDevicesRequest {
    pb::ListMyDevicesRequest {
        page_size: 1,
        page_token,
    }
}

// ---------------------------------------------------------------- customer-service

const C1: &str = "100000000001";
const C2: &str = "100000000002";
const M1: &str = "100000000009";

#[tokio::test]
async fn customer_service_answers_hostile_strings_per_field() {
    let stack = TestStack::start().await;
    active_customer(&stack, "acme", C1, "Acme GmbH").await;
    active_account(&stack, "acme", M1, AccountKind::Msp, "MSP GmbH").await;
    register(&stack, C2, AccountKind::Customer, "Zweite GmbH").await;
    // Two devices in C1's portal, for a real ListMyDevices page token.
    upload_ids(&reseller(&stack, "acme"), C1, "", &[imei(1), imei(2)], 10).await;
    let c1 = customer(&stack, C1);
    let my_token = next_page_token("C1's portal to page", || async {
        let page = c1
            .list_my_devices(my_devices_request(String::new()))
            .await?;
        Ok(page.next_page_token)
    })
    .await;

    let admin = admin(&stack);
    let acme = reseller(&stack, "acme");
    let m1 = msp(&stack, M1);
    let fresh = Counter::default();
    let mut cases = Vec::new();

    // AccountService (admin).
    let register_with = |knox: &'static str, name: &'static str, country: &'static str| {
        let admin = admin.clone();
        let fresh = fresh.clone();
        move |value: String| {
            let admin = admin.clone();
            let unique = format!("2000000{:05}", fresh.next());
            let pick = |which: &str| {
                if which == "*" {
                    value.clone()
                } else if which == "#" {
                    unique.clone()
                } else {
                    which.to_owned()
                }
            };
            let request = pb::RegisterAccountRequest {
                knox_id: pick(knox),
                kind: AccountKind::Customer as i32,
                company_name: pick(name),
                country: pick(country),
            };
            async move { ok(admin.register_account(request).await) }
        }
    };
    cases.push(Case::new(
        "RegisterAccount",
        "knox_id",
        register_with("*", "Acme", "DE"),
    ));
    cases.push(Case::new(
        "RegisterAccount",
        "company_name",
        register_with("#", "*", "DE"),
    ));
    cases.push(Case::new(
        "RegisterAccount",
        "country",
        register_with("#", "Acme", "*"),
    ));
    cases.push(Case::by(
        "GetAccount",
        "knox_id",
        &admin,
        |c, value| async move { ok(c.get_account(&value).await) },
    ));

    // CustomerService (reseller).
    cases.push(Case::by(
        "AddCustomer",
        "knox_id",
        &acme,
        |c, value| async move { ok(c.add_customer(&value, "PO-1").await) },
    ));
    // One reseller per value that has not added C2 yet, so the reference reaches the
    // insert.
    let next_reseller = Counter::default();
    let resellers: Vec<Caller> = (0..hostile_values().len())
        .map(|n| reseller(&stack, &format!("reseller-{n}")))
        .collect();
    cases.push(Case::new(
        "AddCustomer",
        "internal_reference",
        move |value| {
            let caller = resellers[next_reseller.next() as usize % resellers.len()].clone();
            async move { ok(caller.add_customer(C2, &value).await) }
        },
    ));
    for (field, knox_hostile) in [("knox_id", true), ("internal_reference", false)] {
        cases.push(Case::by(
            "UpdateInternalReference",
            field,
            &acme,
            move |c, value| async move {
                if knox_hostile {
                    ok(c.update_internal_reference(&value, "PO-2").await)
                } else {
                    ok(c.update_internal_reference(C1, &value).await)
                }
            },
        ));
    }
    cases.push(Case::by(
        "GetCustomer",
        "knox_id",
        &acme,
        |c, value| async move { ok(c.get_customer(&value).await) },
    ));

    // Approvals: a customer and an MSP decide.
    for (approve, revoke, caller) in [
        (
            "ApproveReseller (customer)",
            "RevokeReseller (customer)",
            &c1,
        ),
        ("ApproveReseller (msp)", "RevokeReseller (msp)", &m1),
    ] {
        cases.push(Case::by(
            approve,
            "reseller_id",
            caller,
            |c, value| async move { ok(c.approve_reseller(&value).await) },
        ));
        cases.push(Case::by(
            revoke,
            "reseller_id",
            caller,
            |c, value| async move { ok(c.revoke_reseller(&value).await) },
        ));
    }

    // The customer portal.
    cases.push(
        Case::by("ListMyDevices", "page_token", &c1, |c, value| async move {
            ok(c.list_my_devices(my_devices_request(value)).await)
        })
        .page_token(Some(my_token)),
    );

    let mut failures = run(&cases).await;
    failures.extend(token_subjects(&stack).await);
    assert_none("customer-service", failures);
}

/// Tokens whose subject is a hostile value: `UNAUTHENTICATED` with a short message (or
/// success for an admin, whose subject is free text), one RPC per role.
async fn token_subjects(stack: &TestStack) -> Vec<String> {
    let auth = JwtAuth::new(&stack.secret);
    let mut failures = Vec::new();
    for (label, value) in hostile_values() {
        for role in [Role::Admin, Role::Reseller, Role::Msp, Role::Customer] {
            let token = auth
                .mint(role, &value, Duration::from_secs(600))
                .expect("mint");
            let caller = Caller::raw(stack, Some(format!("Bearer {token}")));
            let outcome = match role {
                Role::Admin => ok(caller.get_account(C1).await),
                Role::Reseller => ok(caller.get_customer(C1).await),
                Role::Msp => ok(caller
                    .list_managed_customers(pb::ListManagedCustomersRequest::default())
                    .await),
                Role::Customer => ok(caller
                    .list_my_devices(pb::ListMyDevicesRequest::default())
                    .await),
            };
            for wrong in judge("sub", &outcome) {
                failures.push(format!(
                    "token subject ({}) <- {label}: {wrong}",
                    role.as_str()
                ));
            }
        }
    }
    failures
}

fn device(id: &str) -> pb::DeviceInput {
    pb::DeviceInput {
        device_id: id.into(),
        ..Default::default()
    }
}

// ---------------------------------------------------------------- msp-link-service

const MSP_A: &str = "900000001";
const MSP_B: &str = "900000002";
const LINKED: &str = "910000001";
const SPARE: &str = "910000002";
const LEAVER: &str = "910000003";

#[tokio::test]
async fn msp_link_service_answers_hostile_strings_per_field() {
    let stack = TestStack::start().await;
    active_account(&stack, "acme", MSP_A, AccountKind::Msp, "MSP A").await;
    register(&stack, MSP_B, AccountKind::Msp, "MSP B").await;
    for knox in [LINKED, SPARE, LEAVER] {
        register(&stack, knox, AccountKind::Customer, "Customer").await;
    }
    let a = msp(&stack, MSP_A);
    for (knox, mode) in [
        (LINKED, ManagementMode::JointlyManaged),
        (SPARE, ManagementMode::FullyManaged),
        (LEAVER, ManagementMode::JointlyManaged),
    ] {
        a.link_customer(knox, mode).await.expect("link");
    }
    let pool = [imei(11), imei(12)];
    upload_ids(&reseller(&stack, "acme"), MSP_A, "", &pool, 10).await;
    let portal_token = next_page_token("the MSP portal to page", || async {
        let first = pb::ListMspDevicesRequest {
            page_size: 1,
            ..Default::default()
        };
        Ok(a.list_msp_devices(first).await?.next_page_token)
    })
    .await;
    let links_token = a
        .list_managed_customers(pb::ListManagedCustomersRequest {
            page_size: 1,
            ..Default::default()
        })
        .await
        .expect("links")
        .next_page_token;
    assert!(!links_token.is_empty());

    let mut cases = vec![
        Case::by(
            "LinkCustomer",
            "customer_knox_id",
            &a,
            |c, value| async move { ok(c.link_customer(&value, ManagementMode::FullyManaged).await) },
        ),
        Case::by(
            "SetJointlyManaged",
            "customer_knox_id",
            &a,
            |c, value| async move { ok(c.set_jointly_managed(&value).await) },
        ),
    ];
    // Delinks, by the MSP and by the customer itself. A value that trims to nothing in
    // `msp_id` means "my MSP" and really delinks LEAVER: link it again for the next case.
    let leaver = customer(&stack, LEAVER);
    for (rpc, caller) in [
        ("DelinkCustomer (msp)", a.clone()),
        ("DelinkCustomer (customer)", leaver.clone()),
    ] {
        for field in ["customer_knox_id", "msp_id"] {
            let relinker = a.clone();
            cases.push(Case::by(rpc, field, &caller, move |caller, value| {
                let relinker = relinker.clone();
                async move {
                    let outcome = if field == "msp_id" {
                        ok(caller.delink_customer(LEAVER, &value).await)
                    } else {
                        ok(caller.delink_customer(&value, MSP_A).await)
                    };
                    let _ = relinker
                        .link_customer(LEAVER, ManagementMode::JointlyManaged)
                        .await;
                    outcome
                }
            }));
        }
    }
    // Moves: a good device and the hostile one; the good one moves, the other is
    // rejected, echoed canonical or cut.
    let good = pool[0].clone();
    cases.push(Case::by(
        "MoveDevices",
        "device_ids",
        &a,
        move |caller, value| {
            let good = good.clone();
            async move {
                let answer = caller
                    .move_devices([good.clone(), value.clone()], LINKED)
                    .await?;
                let mut problems = Vec::new();
                if answer.moved_device_ids != [good.clone()] {
                    problems.push(format!(
                        "moved {:?}, not just the good device",
                        answer.moved_device_ids
                    ));
                }
                let expected: Vec<String> = if value.trim().is_empty() {
                    Vec::new()
                } else {
                    vec![echo_id(&value)]
                };
                if answer.rejected_device_ids != expected {
                    problems.push(format!(
                        "rejected {:?}, expected {expected:?}",
                        answer.rejected_device_ids
                    ));
                }
                Ok(Answer {
                    echoed: answer
                        .moved_device_ids
                        .into_iter()
                        .chain(answer.rejected_device_ids)
                        .collect(),
                    problems,
                    ..Default::default()
                })
            }
        },
    ));
    let good = pool[1].clone();
    cases.push(Case::by(
        "MoveDevices",
        "to_customer_knox_id",
        &a,
        move |caller, value| {
            let good = good.clone();
            async move { ok(caller.move_devices([good], &value).await) }
        },
    ));
    cases.push(
        Case::by(
            "ListManagedCustomers",
            "page_token",
            &a,
            |c, page_token| async move {
                let request = pb::ListManagedCustomersRequest {
                    page_size: 1,
                    page_token,
                };
                ok(c.list_managed_customers(request).await)
            },
        )
        .page_token(Some(links_token)),
    );
    cases.push(Case::by(
        "ListMspDevices",
        "customer_knox_id",
        &a,
        |c, customer_knox_id| async move {
            let request = pb::ListMspDevicesRequest {
                customer_knox_id,
                ..Default::default()
            };
            ok(c.list_msp_devices(request).await)
        },
    ));
    cases.push(
        Case::by(
            "ListMspDevices",
            "page_token",
            &a,
            |c, page_token| async move {
                let request = pb::ListMspDevicesRequest {
                    page_size: 1,
                    page_token,
                    ..Default::default()
                };
                ok(c.list_msp_devices(request).await)
            },
        )
        .page_token(Some(portal_token)),
    );
    assert_none("msp-link-service", run(&cases).await);
}

// ---------------------------------------------------------------- device-service

const TARGET: &str = "920000001";

/// An upload's answer as an [`Answer`]: its rejections' echoes and messages. A row case
/// (`rejected`: whether row 1 must be rejected) also checks what was accepted.
fn upload_answer(upload: pb::Upload, rejected: Option<bool>) -> Answer {
    let mut problems = Vec::new();
    if let Some(rejected) = rejected {
        let expected = if rejected { 1 } else { 2 };
        if upload.accepted_count != expected {
            problems.push(format!(
                "accepted {} devices, expected {expected}",
                upload.accepted_count
            ));
        }
        if rejected && !upload.rejections.iter().any(|r| r.index == 1) {
            problems.push("row 1 is not rejected".into());
        }
    }
    Answer {
        echoed: upload
            .rejections
            .iter()
            .map(|r| r.device_id.clone())
            .collect(),
        messages: upload.rejections.into_iter().map(|r| r.message).collect(),
        problems,
    }
}

#[tokio::test]
async fn device_service_answers_hostile_strings_per_field() {
    let stack = TestStack::start().await;
    active_customer(&stack, "acme", TARGET, "Target GmbH").await;
    let acme = reseller(&stack, "acme");
    // Devices to delete, one per case that deletes.
    let values = hostile_values().len();
    let doomed: Vec<String> = (0..values as u64).map(|n| imei(500 + n)).collect();
    upload_ids(&acme, TARGET, "", &doomed, 100).await;
    let fresh = Counter::default();
    let mut cases = Vec::new();

    // Uploads: one hostile header field with a good device, or a good device and one
    // hostile row (which must be rejected alone).
    for field in ["target_knox_id", "order_number", "client_upload_id"] {
        let fresh = fresh.clone();
        cases.push(Case::by(
            "UploadDevices",
            field,
            &acme,
            move |caller, value| {
                let mut header = pb::UploadHeader {
                    target_knox_id: TARGET.into(),
                    ..Default::default()
                };
                match field {
                    "target_knox_id" => header.target_knox_id = value,
                    "order_number" => header.order_number = value,
                    _ => header.client_upload_id = value,
                }
                let messages = upload_stream(header, vec![device(&imei(1000 + fresh.next()))], 10);
                async move {
                    let upload = caller
                        .upload_devices(futures::stream::iter(messages))
                        .await?;
                    Ok(upload_answer(upload, None))
                }
            },
        ));
    }
    for field in ["device_id", "model", "secondary_ids"] {
        let fresh = fresh.clone();
        cases.push(Case::by(
            "UploadDevices",
            field,
            &acme,
            move |caller, value| {
                let good = device(&imei(2000 + fresh.next()));
                let mut bad = device(&imei(2000 + fresh.next()));
                match field {
                    "device_id" => bad.device_id = value,
                    "model" => bad.model = value,
                    _ => bad.secondary_ids = vec![value],
                }
                // The row must be rejected exactly when the shared parser refuses it (a
                // non-ASCII model is fine; a secondary ID that trims to nothing is none).
                let refused = parse_input(&bad.device_id, 0, &bad.model)
                    .and_then(|(id, _)| parse_secondary_ids(&bad.secondary_ids, &id))
                    .is_err();
                let header = pb::UploadHeader {
                    target_knox_id: TARGET.into(),
                    ..Default::default()
                };
                let messages = upload_stream(header, vec![good, bad], 10);
                async move {
                    let upload = caller
                        .upload_devices(futures::stream::iter(messages))
                        .await?;
                    Ok(upload_answer(upload, Some(refused)))
                }
            },
        ));
    }
    cases.push(Case::by(
        "GetUpload",
        "upload_id",
        &acme,
        |c, value| async move { Ok(upload_answer(c.get_upload(&value).await?, None)) },
    ));
    // Deletions: a good device and the hostile ID; the good one is deleted, the other
    // listed as not found.
    let next_doomed = Counter::default();
    cases.push(Case::by(
        "DeleteDevices",
        "device_ids",
        &acme,
        move |caller, value| {
            let good = doomed[next_doomed.next() as usize % doomed.len()].clone();
            async move {
                let deletion = caller.delete_devices([good.clone(), value.clone()]).await?;
                let mut problems = Vec::new();
                if deletion.deleted_device_ids != [good.clone()] {
                    problems.push(format!(
                        "deleted {:?}, expected the good device",
                        deletion.deleted_device_ids
                    ));
                }
                if !value.trim().is_empty() && deletion.not_found_device_ids.is_empty() {
                    problems.push("the hostile ID is not listed as not found".into());
                }
                Ok(Answer {
                    echoed: deletion
                        .deleted_device_ids
                        .into_iter()
                        .chain(deletion.not_found_device_ids)
                        .collect(),
                    problems,
                    ..Default::default()
                })
            }
        },
    ));
    cases.push(Case::by(
        "GetDeletion",
        "deletion_id",
        &acme,
        |c, value| async move { ok(c.get_deletion(&value).await) },
    ));
    for field in ["upload_id", "page_token"] {
        let case = Case::by("ListUploadRejections", field, &acme, move |c, value| {
            let mut request = pb::ListUploadRejectionsRequest {
                upload_id: uuid::Uuid::nil().to_string(),
                ..Default::default()
            };
            match field {
                "upload_id" => request.upload_id = value,
                _ => request.page_token = value,
            }
            async move { ok(c.list_upload_rejections(request).await) }
        });
        cases.push(case.paged(None));
    }
    assert_none("device-service", run(&cases).await);
}

// ---------------------------------------------------------------- reporting-service

const R1: &str = "930000001";
const R2: &str = "930000002";

#[tokio::test]
async fn reporting_service_answers_hostile_strings_per_field() {
    let stack = TestStack::start().await;
    active_customer(&stack, "acme", R1, "Ärzte GmbH").await;
    active_customer(&stack, "acme", R2, "Zahnärzte AG").await;
    let acme = reseller(&stack, "acme");
    upload_ids(&acme, R1, "PO-1", &[imei(1), imei(2)], 10).await;
    let devices_token = next_page_token("R1's devices to page", || async {
        let first = pb::ListCustomerDevicesRequest {
            knox_id: R1.into(),
            page_size: 1,
            ..Default::default()
        };
        Ok(acme.list_customer_devices(first).await?.next_page_token)
    })
    .await;
    let customers_token = next_page_token("the Customers page to page", || async {
        let first = pb::ListCustomersRequest {
            page_size: 1,
            ..Default::default()
        };
        Ok(acme.list_customers(first).await?.next_page_token)
    })
    .await;

    let mut cases = Vec::new();
    for field in ["query", "page_token", "order_by"] {
        let case = Case::by("ListCustomers", field, &acme, move |caller, value| {
            let mut request = pb::ListCustomersRequest {
                page_size: 1,
                ..Default::default()
            };
            match field {
                "query" => request.query = value,
                "page_token" => request.page_token = value,
                _ => request.order_by = value,
            }
            async move { ok(caller.list_customers(request).await) }
        });
        cases.push(case.paged(Some(customers_token.clone())));
    }
    cases.push(Case::by(
        "GetCustomerDetail",
        "knox_id",
        &acme,
        |c, value| async move { ok(c.get_customer_detail(&value).await) },
    ));
    for field in ["knox_id", "page_token"] {
        let case = Case::by("ListCustomerDevices", field, &acme, move |caller, value| {
            let mut request = pb::ListCustomerDevicesRequest {
                knox_id: R1.into(),
                page_size: 1,
                ..Default::default()
            };
            match field {
                "knox_id" => request.knox_id = value,
                _ => request.page_token = value,
            }
            async move { ok(caller.list_customer_devices(request).await) }
        });
        cases.push(case.paged(Some(devices_token.clone())));
    }
    // Exports are read to their end: an error part-way is the call's outcome.
    cases.push(Case::by(
        "ExportCustomersCsv",
        "query",
        &acme,
        |c, query| async move {
            let request = pb::ExportCustomersCsvRequest {
                query,
                ..Default::default()
            };
            ok(c.export_customers_csv(request).await)
        },
    ));
    cases.push(Case::by(
        "ExportCustomerCsv",
        "knox_id",
        &acme,
        |c, knox_id| async move {
            let request = pb::ExportCustomerCsvRequest {
                knox_id,
                ..Default::default()
            };
            ok(c.export_customer_csv(request).await)
        },
    ));
    assert_none("reporting-service", run(&cases).await);
}
