//! The access log (issue 11): every RPC leaves exactly one line, of target `access`, with
//! its service, method, principal, actor, code and duration, and never a secret: not the
//! bearer token (even a forged one), not the devices a request named.
//!
//! The log is what the program writes, in the deployed format (`LOG_FORMAT=json`, one
//! object per line): the kit's telemetry is installed as a program installs it, writing
//! into memory instead of standard output, before the in-process `TestStack` starts.

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use reseller_kit::auth::{JwtAuth, Role};
use reseller_kit::config::LogFormat;
use reseller_kit::telemetry::Telemetry;
use reseller_proto::v1 as pb;
use reseller_tests::clients::{Caller, reseller};
use reseller_tests::fixtures::{active_customer, imei};
use reseller_tests::{TestStack, eventually};
use serde_json::Value;
use tonic::Code;

/// Everything the process logged.
#[derive(Clone, Default)]
struct Log(Arc<Mutex<Vec<u8>>>);

impl Write for Log {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Log {
    /// The log of this test process, installed once (tests run side by side in it).
    fn installed() -> &'static Log {
        static LOG: OnceLock<Log> = OnceLock::new();
        LOG.get_or_init(|| {
            let log = Log::default();
            let writer = log.clone();
            Telemetry::new(LogFormat::Json, "info")
                .filter("info")
                .writer(move || writer.clone())
                .install()
                .expect("the test's log is the process's first subscriber");
            log
        })
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }

    /// The access-log lines for calls of `method` by `subject` (`None`: calls without a
    /// principal, matched by their code instead).
    fn access_lines(&self, method: &str, subject: Option<&str>, code: &str) -> Vec<Value> {
        self.text()
            .lines()
            .map(|line| serde_json::from_str::<Value>(line).expect("every line is JSON"))
            .filter(|line| line["target"] == "access" && line["method"] == method)
            .filter(|line| match subject {
                Some(subject) => line["principal.subject"] == subject,
                None => line.get("principal.subject").is_none() && line["code"] == code,
            })
            .collect()
    }

    /// Waits for the call's line (written when its answer ends, which may be just after
    /// the caller has it), then lets any second line show up before it is counted.
    async fn lines_of(&self, method: &str, subject: Option<&str>, code: &str) -> Vec<Value> {
        eventually("the call's access-log line", || async {
            (!self.access_lines(method, subject, code).is_empty()).then_some(())
        })
        .await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        self.access_lines(method, subject, code)
    }
}

/// The one line of a call, with the fields every line has.
#[track_caller]
fn one_line(lines: Vec<Value>, service: &str, code: &str) -> Value {
    assert_eq!(lines.len(), 1, "exactly one access-log line: {lines:#?}");
    let line = lines.into_iter().next().unwrap();
    assert_eq!(line["level"], "INFO", "{line}");
    assert_eq!(line["service"], service, "{line}");
    assert_eq!(line["code"], code, "{line}");
    assert!(
        line["duration_ms"].as_f64().is_some_and(|ms| ms >= 0.0),
        "{line}"
    );
    line
}

#[tokio::test]
async fn a_failing_call_leaves_one_line_with_its_code_and_no_secret() {
    let log = Log::installed();
    let stack = TestStack::start().await;
    active_customer(&stack, "acme-log", "670000001", "Globex").await;

    // A customer may not delete devices: PERMISSION_DENIED, with a real token.
    let token = stack.token(Role::Customer, "670000001");
    let device = imei(670_123);
    let denied = Caller::raw(&stack, Some(format!("Bearer {token}")))
        .delete_devices([device.clone()])
        .await
        .expect_err("a customer may not delete devices");
    assert_eq!(denied.code(), Code::PermissionDenied);
    let line = one_line(
        log.lines_of("DeleteDevices", Some("670000001"), "PERMISSION_DENIED")
            .await,
        "reseller.v1.DeviceService",
        "PERMISSION_DENIED",
    );
    assert_eq!(line["principal.role"], "customer", "{line}");
    assert_eq!(line["actor"], "670000001", "{line}");

    // Another tenant's deletion: NOT_FOUND.
    let missing = reseller(&stack, "acme-log")
        .get_deletion(&uuid::Uuid::now_v7().to_string())
        .await
        .expect_err("no such deletion");
    assert_eq!(missing.code(), Code::NotFound);
    let line = one_line(
        log.lines_of("GetDeletion", Some("acme-log"), "NOT_FOUND")
            .await,
        "reseller.v1.DeviceService",
        "NOT_FOUND",
    );
    assert_eq!(line["principal.role"], "reseller", "{line}");

    // A token signed with another secret: UNAUTHENTICATED, without a principal.
    let forged = JwtAuth::new("not-the-secret")
        .mint(Role::Reseller, "acme-log", Duration::from_secs(60))
        .unwrap();
    let refused = Caller::raw(&stack, Some(format!("Bearer {forged}")))
        .get_account("670000001")
        .await
        .expect_err("a forged token");
    assert_eq!(refused.code(), Code::Unauthenticated);
    let lines = log.lines_of("GetAccount", None, "UNAUTHENTICATED").await;
    assert!(!lines.is_empty());
    assert!(lines.iter().all(|l| l.get("actor").is_none()), "{lines:#?}");

    stack.stop().await;
    let text = log.text();
    for secret in [&token, &forged, &device] {
        assert!(!text.contains(secret.as_str()), "the log holds {secret}");
    }
    // Not even a part of a token: its signature.
    for token in [&token, &forged] {
        let signature = token.rsplit('.').next().unwrap();
        assert!(
            !text.contains(signature),
            "the log holds a token's signature"
        );
    }
}

#[tokio::test]
async fn a_successful_call_leaves_one_line_with_code_ok() {
    let log = Log::installed();
    let stack = TestStack::start().await;
    active_customer(&stack, "acme-ok", "670000002", "Initech").await;

    // A unary answer: its OK is in the trailers.
    let added = reseller(&stack, "acme-ok")
        .get_customer("670000002")
        .await
        .expect("the reseller's customer");
    assert_eq!(added.knox_id, "670000002");
    let line = one_line(
        log.lines_of("GetCustomer", Some("acme-ok"), "OK").await,
        "reseller.v1.CustomerService",
        "OK",
    );
    assert_eq!(line["principal.role"], "reseller", "{line}");
    assert_eq!(line["actor"], "acme-ok", "{line}");

    // A streamed answer (the Customers CSV): one line when the stream ends.
    let mut csv = reseller(&stack, "acme-ok")
        .reporting()
        .export_customers_csv(pb::ExportCustomersCsvRequest::default())
        .await
        .expect("export")
        .into_inner();
    let mut chunks = 0;
    while let Some(chunk) = csv.message().await.expect("a chunk") {
        assert!(!chunk.data.is_empty());
        chunks += 1;
    }
    assert!(chunks > 0);
    one_line(
        log.lines_of("ExportCustomersCsv", Some("acme-ok"), "OK")
            .await,
        "reseller.v1.ReportingService",
        "OK",
    );
    stack.stop().await;
}

/// The line's `actor` is who acted for the principal (issue 12): the person a reseller's
/// token names; an MSP's or a customer's Knox ID whatever name its token carries.
#[tokio::test]
async fn the_actor_is_the_named_person_for_a_reseller_and_the_knox_id_for_an_account() {
    let log = Log::installed();
    let stack = TestStack::start().await;
    active_customer(&stack, "acme-named", "670000003", "Globex").await;

    reseller_tests::clients::named(&stack, Role::Reseller, "acme-named", "Jane Roe")
        .get_customer("670000003")
        .await
        .expect("the reseller's customer");
    let line = one_line(
        log.lines_of("GetCustomer", Some("acme-named"), "OK").await,
        "reseller.v1.CustomerService",
        "OK",
    );
    assert_eq!(line["principal.subject"], "acme-named", "{line}");
    assert_eq!(line["actor"], "Jane Roe", "{line}");

    for (role, knox_id) in [(Role::Msp, "670000004"), (Role::Customer, "670000003")] {
        // Whatever it answers (an MSP without links, a customer's portal): the line.
        let _ = reseller_tests::clients::named(&stack, role, knox_id, "Jane Roe")
            .list_my_devices(pb::ListMyDevicesRequest::default())
            .await;
        let line = eventually("the account's line", || {
            let lines = log.access_lines("ListMyDevices", Some(knox_id), "");
            async move { lines.into_iter().next() }
        })
        .await;
        assert_eq!(line["actor"], knox_id, "{line}");
    }
}
