//! `resellerctl`, the real binary, against a running stack: the customer workflow, a
//! 100,000-line upload with bad rows and its complete rejects file, `--dry-run` against
//! the service's verdicts, files as spreadsheets write them (issue 9: `sep=` lines,
//! dual-SIM columns, European Excel, UTF-16), the exit codes of uploads, CSV exports
//! that parse back (for Excel too) and upload again, deletions followed to the end, the
//! MSP and customer portals, the messages and exit codes of a wrong token and an
//! unreachable portal, and (issue 12) finding devices, a device's history and the
//! activity log.
//!
//! The stack is `reseller_tests::TestStack` (real PostgreSQL, a private nats-server, the
//! services in-process over gRPC); the binary is the one Cargo built for this package.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use reseller_kit::auth::Role;
use reseller_proto::v1::AccountKind;
use reseller_tests::fixtures::{
    active_account, active_customer, customers_csv_columns, imei, register, upload,
};
use reseller_tests::{TestStack, eventually};
use serde_json::Value;

/// The binary under test: Cargo builds it for this package's integration tests.
async fn binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_resellerctl"))
}

/// What one run printed and how it ended.
#[derive(Debug)]
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    /// Asserts success and returns standard output.
    #[track_caller]
    fn ok(&self) -> &str {
        assert_eq!(self.code, 0, "resellerctl failed: {self:#?}");
        &self.stdout
    }

    /// Asserts success and parses standard output as JSON.
    #[track_caller]
    fn json(&self) -> Value {
        self.json_exit(0)
    }

    /// Asserts the exit code of a command that ran to its end (0, or an upload's 4 "some
    /// rejected" or 5 "nothing accepted") and returns standard output.
    #[track_caller]
    fn exit(&self, code: i32) -> &str {
        assert_eq!(self.code, code, "unexpected exit: {self:#?}");
        assert!(
            !self.stderr.contains("error: "),
            "a result, not an error: {self:#?}"
        );
        &self.stdout
    }

    /// As [`Run::exit`], and parses standard output as JSON.
    #[track_caller]
    fn json_exit(&self, code: i32) -> Value {
        serde_json::from_str(self.exit(code))
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.stdout))
    }

    /// Asserts failure with `code`, a message that starts a line with `error: ` (progress
    /// notes may come before it) and no panic; returns the message.
    #[track_caller]
    fn failed(&self, code: i32) -> &str {
        assert_eq!(self.code, code, "unexpected exit: {self:#?}");
        assert!(
            !self.stderr.contains("panicked") && !self.stderr.contains("backtrace"),
            "a user's mistake must not panic: {self:#?}"
        );
        let at = if self.stderr.starts_with("error: ") {
            0
        } else {
            self.stderr
                .find("\nerror: ")
                .map(|i| i + 1)
                .unwrap_or_else(|| panic!("no `error: ` line: {self:#?}"))
        };
        &self.stderr[at..]
    }
}

/// Runs `resellerctl args…` against `addr` with `token`, without a terminal (so plain
/// progress lines) and without inheriting the developer's settings.
async fn run_at(addr: &str, token: Option<&str>, args: &[&str]) -> Run {
    let mut command = tokio::process::Command::new(binary().await);
    command
        .args(args)
        .env("RESELLER_ADDR", addr)
        .env_remove("RESELLER_TOKEN")
        .env_remove("AUTH_JWT_SECRET")
        .env("NO_COLOR", "1")
        .stdin(std::process::Stdio::null());
    if let Some(token) = token {
        command.env("RESELLER_TOKEN", token);
    }
    let output = command.output().await.expect("run resellerctl");
    Run {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// Runs against the stack; the address is given as host:port, without a scheme.
async fn ctl(stack: &TestStack, token: &str, args: &[&str]) -> Run {
    run_at(&stack.addr.to_string(), Some(token), args).await
}

/// Runs `args… -o json` against the stack, which must succeed, and parses what it
/// printed.
async fn ctl_json(stack: &TestStack, token: &str, args: &[&str]) -> Value {
    let args: Vec<&str> = args.iter().copied().chain(["-o", "json"]).collect();
    ctl(stack, token, &args).await.json()
}

/// An IMEI whose check digit is wrong.
fn bad_luhn(n: u64) -> String {
    let good = imei(n);
    let last = good.as_bytes()[14] - b'0';
    format!("{}{}", &good[..14], (last + 1) % 10)
}

/// `(index, device_id, reason)` rows and messages of a rejects file.
fn read_rejects(path: &Path) -> Vec<(i64, String, String, String)> {
    let mut reader = csv::Reader::from_path(path).expect("open rejects file");
    assert_eq!(
        reader.headers().expect("header"),
        vec!["index", "device_id", "reason", "message"]
    );
    reader
        .records()
        .map(|r| {
            let r = r.expect("row");
            (
                r[0].parse().expect("index"),
                r[1].to_owned(),
                r[2].to_owned(),
                r[3].to_owned(),
            )
        })
        .collect()
}

#[tokio::test]
async fn the_whole_customer_workflow_runs_from_the_command_line() {
    let stack = TestStack::start().await;
    let secret = stack.secret.clone();

    // `token` mints development tokens from AUTH_JWT_SECRET.
    let mint = |role: &'static str, sub: &'static str| {
        let secret = secret.clone();
        async move {
            let output = tokio::process::Command::new(binary().await)
                .args(["token", "--role", role, "--sub", sub, "--ttl", "1h"])
                .env("AUTH_JWT_SECRET", &secret)
                .output()
                .await
                .expect("run resellerctl token");
            assert!(output.status.success(), "{output:?}");
            String::from_utf8(output.stdout).unwrap().trim().to_owned()
        }
    };
    let admin = mint("admin", "platform").await;
    let reseller = mint("reseller", "acme").await;
    let customer = mint("customer", "100000000001").await;

    // The platform registers the account.
    let account = ctl_json(
        &stack,
        &admin,
        &[
            "accounts",
            "register",
            "100000000001",
            "--kind",
            "customer",
            "--name",
            "Globex Corporation",
            "--country",
            "de",
        ],
    )
    .await;
    assert_eq!(account["knox_id"], "100000000001");
    assert_eq!(account["kind"], "customer");
    assert_eq!(account["country"], "DE");
    let table = ctl(&stack, &admin, &["accounts", "get", "100000000001"]).await;
    assert!(table.ok().contains("Globex Corporation"), "{table:?}");

    // The reseller adds it and sets its reference.
    let added = ctl_json(
        &stack,
        &reseller,
        &["customers", "add", "100000000001", "--reference", "PO-1"],
    )
    .await;
    assert_eq!(added["status"], "pending_verification");
    assert_eq!(added["internal_reference"], "PO-1");
    let updated = ctl_json(
        &stack,
        &reseller,
        &["customers", "set-reference", "100000000001", "ACME-REF-7"],
    )
    .await;
    assert_eq!(updated["internal_reference"], "ACME-REF-7");
    // Adding twice is refused in plain words.
    let again = ctl(&stack, &reseller, &["customers", "add", "100000000001"]).await;
    assert!(
        again.failed(1).starts_with("error: already exists: "),
        "{again:?}"
    );

    // The customer approves the reseller.
    let approval = ctl_json(&stack, &customer, &["approvals", "approve", "acme"]).await;
    assert_eq!(approval["approved"], true);
    assert_eq!(approval["knox_id"], "100000000001");
    let got = ctl_json(&stack, &reseller, &["customers", "get", "100000000001"]).await;
    assert_eq!(got["status"], "active");

    // Two more customers, so search and paging have something to do.
    active_customer(&stack, "acme", "100000000002", "Initech").await;
    active_customer(&stack, "acme", "100000000003", "Umbrella").await;

    // The Customers page, searched by the reference, once the projection caught up.
    let rows = eventually("the searched customer row", || async {
        let rows = ctl_json(
            &stack,
            &reseller,
            &["customers", "list", "--search", "ref-7"],
        )
        .await;
        (rows.as_array()?.len() == 1 && rows[0]["status"] == "active").then_some(rows)
    })
    .await;
    assert_eq!(rows[0]["knox_id"], "100000000001");
    assert_eq!(rows[0]["company_name"], "Globex Corporation");
    assert_eq!(rows[0]["internal_reference"], "ACME-REF-7");

    // The table has the portal's seven columns.
    let table = ctl(
        &stack,
        &reseller,
        &["customers", "list", "--search", "globex"],
    )
    .await;
    let text = table.ok();
    let header = text.lines().next().unwrap();
    for column in [
        "COMPANY NAME / Internal reference",
        "CUSTOMER ID/MSP ID",
        "COUNTRY",
        "LAST UPLOADED",
        "UPLOADS",
        "DEVICES",
        "STATUS",
    ] {
        assert!(header.contains(column), "{column} missing: {text}");
    }
    assert!(
        text.contains("Globex Corporation / ACME-REF-7") && text.contains("Active"),
        "{text}"
    );

    // Paging: one row per page; --all follows the pages in company-name order.
    eventually("three customer rows", || async {
        let rows = ctl_json(&stack, &reseller, &["customers", "list"]).await;
        (rows.as_array()?.len() == 3).then_some(())
    })
    .await;
    let first = ctl(
        &stack,
        &reseller,
        &["customers", "list", "--page-size", "1", "-o", "csv"],
    )
    .await;
    assert_eq!(first.ok().lines().count(), 2, "{first:?}");
    assert!(first.stderr.contains("--page-token"), "{first:?}");
    let all = ctl_json(
        &stack,
        &reseller,
        &[
            "customers",
            "list",
            "--page-size",
            "1",
            "--all",
            "--order-by",
            "name",
        ],
    )
    .await;
    let names: Vec<&str> = all
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["company_name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["Globex Corporation", "Initech", "Umbrella"]);
    let bad_order = ctl(
        &stack,
        &reseller,
        &["customers", "list", "--order-by", "size"],
    )
    .await;
    assert!(
        bad_order.failed(1).contains("\n  order_by: "),
        "the field at fault is named: {bad_order:?}"
    );

    // Mistakes come back in plain words with the fields at fault.
    let missing = ctl(&stack, &reseller, &["customers", "get", "999999999"]).await;
    assert!(
        missing
            .failed(1)
            .starts_with("error: not found: customer 999999999"),
        "{missing:?}"
    );
    let malformed = ctl(&stack, &reseller, &["customers", "get", "12"]).await;
    let text = malformed.failed(1);
    assert!(
        text.starts_with("error: invalid argument:\n  knox_id: must be 6 to 20 digits"),
        "{malformed:?}"
    );

    // Revoking turns the customer inactive.
    let revoked = ctl_json(&stack, &customer, &["approvals", "revoke", "acme"]).await;
    assert_eq!(revoked["approved"], false);
    let got = ctl_json(&stack, &reseller, &["customers", "get", "100000000001"]).await;
    assert_eq!(got["status"], "inactive");

    // An upload to an inactive customer is refused while the file is still streaming;
    // the command ends at once with the reason.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("late.txt");
    let lines: Vec<String> = (0..50_000).map(imei).collect();
    std::fs::write(&file, lines.join("\n")).unwrap();
    let refused = ctl(
        &stack,
        &reseller,
        &[
            "devices",
            "upload",
            file.to_str().unwrap(),
            "--target",
            "100000000001",
        ],
    )
    .await;
    assert!(
        refused
            .failed(1)
            .starts_with("error: failed precondition: "),
        "{refused:?}"
    );
    assert!(!dir.path().join("late.txt.rejects.csv").exists());
}

/// The rows of the 100,000-line file and the rejections the service must report.
struct BigFile {
    path: PathBuf,
    expected: Vec<(i64, String, String)>,
    accepted: i64,
}

/// 100,000 rows: every 100th an IMEI with a wrong check digit, every 1,000th (offset
/// 500) a repeat of a device 400 rows earlier (padded with spaces, so only the
/// normalised form matches), and every 10,000th (offset 7,000) a device already
/// registered by an earlier upload.
fn big_file(dir: &Path, registered: &[String]) -> BigFile {
    use std::io::Write;
    let path = dir.join("devices.csv");
    let mut out = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
    writeln!(out, "device_id,model").unwrap();
    let mut expected = Vec::new();
    let mut accepted = 0;
    let mut ids: HashMap<i64, String> = HashMap::new();
    for i in 0..100_000i64 {
        let (cell, rejection) = if i % 100 == 99 {
            let id = bad_luhn(i as u64);
            (id.clone(), Some((id, "invalid_id")))
        } else if i % 1000 == 500 {
            let first = ids[&(i - 400)].clone();
            (format!(" {first} "), Some((first, "duplicate_in_upload")))
        } else if i % 10_000 == 7_000 {
            let id = registered[(i / 10_000) as usize].clone();
            (id.clone(), Some((id, "already_registered")))
        } else {
            let id = imei(i as u64);
            ids.insert(i, id.clone());
            (id, None)
        };
        writeln!(out, "{cell},Galaxy S{}", i % 30).unwrap();
        match rejection {
            Some((id, reason)) => expected.push((i, id, reason.to_owned())),
            None => accepted += 1,
        }
    }
    out.flush().unwrap();
    BigFile {
        path,
        expected,
        accepted,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_100k_line_upload_reports_every_rejected_row() {
    let stack = TestStack::start().await;
    let knox = "200000000001";
    active_customer(&stack, "acme", knox, "Big Fleet AG").await;
    let reseller = stack.token(Role::Reseller, "acme");
    // Ten devices registered before the file is uploaded.
    let registered: Vec<String> = (0..10).map(|n| imei(5_000_000 + n)).collect();
    upload(&stack, "acme", knox, &registered)
        .await
        .expect("first upload");

    let dir = tempfile::tempdir().unwrap();
    let file = big_file(dir.path(), &registered);
    assert_eq!(file.expected.len(), 1000 + 100 + 10);
    let path = file.path.to_str().unwrap();

    let started = Instant::now();
    // Some rows rejected: exit code 4.
    let run = ctl(
        &stack,
        &reseller,
        &[
            "devices",
            "upload",
            path,
            "--target",
            knox,
            "--order-number",
            "PO-100K",
            "--batch-size",
            "1000",
            "-o",
            "json",
        ],
    )
    .await;
    let elapsed = started.elapsed();
    let summary = run.json_exit(4);
    eprintln!(
        "uploaded 100,000 rows through resellerctl in {:.2}s ({:.0} rows/s end to end)",
        elapsed.as_secs_f64(),
        100_000.0 / elapsed.as_secs_f64()
    );
    assert_eq!(summary["accepted"], file.accepted);
    assert_eq!(summary["rejected"], 1110);
    assert_eq!(summary["rejected_by_reason"]["invalid_id"], 1000);
    assert_eq!(summary["rejected_by_reason"]["duplicate_in_upload"], 100);
    assert_eq!(summary["rejected_by_reason"]["already_registered"], 10);
    assert_eq!(summary["order_number"], "PO-100K");
    // Without a terminal, progress is plain lines, never a bar's control characters.
    assert!(!run.stderr.contains('\u{1b}'), "{}", run.stderr);

    // The answer carries the first 1,000 rejections; the rejects file beside the upload
    // file holds every bad row, in order, paged from ListUploadRejections.
    assert_eq!(summary["rejections_truncated"], true);
    let rejects_path = format!("{path}.rejects.csv");
    assert_eq!(summary["rejects_file"], rejects_path.as_str());
    let rejects = read_rejects(Path::new(&rejects_path));
    let got: Vec<(i64, String, String)> = rejects
        .iter()
        .map(|(i, id, reason, _)| (*i, id.clone(), reason.clone()))
        .collect();
    assert_eq!(got, file.expected);
    for (index, _, reason, message) in &rejects {
        match reason.as_str() {
            "invalid_id" => assert!(message.contains("Luhn"), "{message}"),
            "duplicate_in_upload" => assert_eq!(
                message,
                &format!("duplicate of the device at index {}", index - 400)
            ),
            _ => assert!(!message.is_empty()),
        }
    }

    // The upload reads back the same: its first 1,000 rejections, and all of them on
    // request.
    let upload_id = summary["upload_id"].as_str().unwrap();
    let again = ctl(
        &stack,
        &reseller,
        &["uploads", "get", upload_id, "-o", "json"],
    )
    .await;
    assert!(
        again.stderr.contains(&format!(
            "resellerctl uploads rejections {upload_id} --all -o csv"
        )),
        "says how to get them all: {again:?}"
    );
    let again = again.json();
    assert_eq!(again["accepted"], file.accepted);
    assert_eq!(again["rejected"], 1110);
    assert_eq!(again["rejections_truncated"], true);
    assert_eq!(again["rejections"].as_array().unwrap().len(), 1000);
    let every = dir.path().join("every.csv");
    let listed = ctl(
        &stack,
        &reseller,
        &["uploads", "rejections", upload_id, "--all", "-o", "csv"],
    )
    .await;
    std::fs::write(&every, listed.ok()).unwrap();
    assert_eq!(read_rejects(&every), rejects);
    let got_file = dir.path().join("got.csv");
    let got = ctl_json(
        &stack,
        &reseller,
        &[
            "uploads",
            "get",
            upload_id,
            "--rejects",
            got_file.to_str().unwrap(),
        ],
    )
    .await;
    assert_eq!(got["rejected_by_reason"]["invalid_id"], 1000);
    assert_eq!(read_rejects(&got_file), rejects);

    // A dry run of the same file finds the same rows, messages included, except the
    // ones only the service can know about.
    let dry_rejects = dir.path().join("dry.csv");
    let dry = ctl(
        &stack,
        &reseller,
        &[
            "devices",
            "upload",
            path,
            "--dry-run",
            "--rejects",
            dry_rejects.to_str().unwrap(),
            "-o",
            "json",
        ],
    )
    .await
    .json_exit(4);
    assert_eq!(dry["rows"], 100_000);
    assert_eq!(dry["rejected"], 1100);
    let service_side: Vec<_> = rejects
        .into_iter()
        .filter(|r| r.2 != "already_registered")
        .collect();
    assert_eq!(read_rejects(&dry_rejects), service_side);

    // The Customers page counts the devices.
    eventually("the devices on the Customers page", || async {
        let rows = ctl_json(&stack, &reseller, &["customers", "list", "--search", knox]).await;
        (rows[0]["devices"] == file.accepted + 10).then_some(())
    })
    .await;
}

#[tokio::test]
async fn dry_run_finds_the_same_errors_as_the_service() {
    let stack = TestStack::start().await;
    let knox = "300000000001";
    active_customer(&stack, "acme", knox, "Tricky Rows Ltd").await;
    let reseller = stack.token(Role::Reseller, "acme");
    upload(&stack, "acme", knox, &[imei(42)])
        .await
        .expect("earlier upload");

    // Every rule of the parser, and its corners: kinds given and inferred, case, spaces,
    // models, unknown kinds, empty cells, repeats that only match once normalised.
    let long_model = "m".repeat(65);
    let rows = [
        format!("{},IMEI,Galaxy", imei(1)),    // 0 valid
        format!("{},,", bad_luhn(2)),          // 1 Luhn
        "a0000000002329,meid,".to_owned(),     // 2 valid MEID, lower case
        "A0000000002329,,".to_owned(),         // 3 repeat of 2
        "G0000000002329,meid,".to_owned(),     // 4 not hex
        "r58m-12ab,,".to_owned(),              // 5 valid serial
        " R58M-12AB ,serial,".to_owned(),      // 6 repeat of 5
        "bad serial!,,".to_owned(),            // 7 invalid serial
        format!("{},serial,", bad_luhn(3)),    // 8 15 digits are never a serial
        format!("{},gadget,", imei(4)),        // 9 unknown kind
        format!("{},,{long_model}", imei(5)),  // 10 model too long
        "\"\",,Galaxy".to_owned(),             // 11 empty
        format!("{},,\"tab\there\"", imei(6)), // 12 control character in the model
        format!("{},,", "X".repeat(33)),       // 13 serial too long
        format!("{},,", imei(42)),             // 14 already registered
        format!("{},imei,", imei(1)),          // 15 repeat of 0
        "12345,imei,".to_owned(),              // 16 not 15 digits
    ];
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tricky.csv");
    std::fs::write(
        &path,
        format!("DEVICE_ID,Kind,Model\n{}\n", rows.join("\n")),
    )
    .unwrap();
    let path_str = path.to_str().unwrap();

    let dry_path = dir.path().join("dry.csv");
    let dry = ctl(
        &stack,
        &reseller,
        &[
            "devices",
            "upload",
            path_str,
            "--dry-run",
            "--rejects",
            dry_path.to_str().unwrap(),
        ],
    )
    .await;
    let text = dry.exit(4);
    assert!(
        text.contains("17 rows") && text.contains("already registered"),
        "the summary says what a dry run cannot know: {text}"
    );

    let real_path = dir.path().join("real.csv");
    let summary = ctl(
        &stack,
        &reseller,
        &[
            "devices",
            "upload",
            path_str,
            "--target",
            knox,
            "--rejects",
            real_path.to_str().unwrap(),
            "-o",
            "json",
        ],
    )
    .await
    .json_exit(4);
    let service = read_rejects(&real_path);
    let local = read_rejects(&dry_path);
    let indexes: Vec<i64> = service.iter().map(|r| r.0).collect();
    assert_eq!(
        indexes,
        [1, 3, 4, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16],
        "{service:#?}"
    );
    assert_eq!(
        service.iter().find(|r| r.0 == 14).unwrap().2,
        "already_registered"
    );
    let service_side: Vec<_> = service
        .into_iter()
        .filter(|r| r.2 != "already_registered")
        .collect();
    assert_eq!(local, service_side);
    assert_eq!(summary["accepted"], 3);
}

#[tokio::test]
async fn an_export_written_to_a_file_parses_back() {
    let stack = TestStack::start().await;
    active_customer(&stack, "acme", "400000000001", "Comma, Quote \"and\" Co").await;
    active_customer(&stack, "acme", "400000000002", "=Formula Ltd").await;
    active_customer(&stack, "acme", "400000000003", "Plain GmbH").await;
    upload(&stack, "acme", "400000000001", &[imei(1), imei(2)])
        .await
        .unwrap();
    let reseller = stack.token(Role::Reseller, "acme");
    eventually("the uploaded devices on the page", || async {
        let rows = ctl_json(
            &stack,
            &reseller,
            &["customers", "list", "--search", "comma"],
        )
        .await;
        (rows[0]["devices"] == 2).then_some(())
    })
    .await;

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("customers.csv");
    let run = ctl(
        &stack,
        &reseller,
        &[
            "customers",
            "export",
            "--output-file",
            file.to_str().unwrap(),
        ],
    )
    .await;
    run.ok();
    assert!(
        !dir.path().join("customers.csv.partial").exists(),
        "the temporary file is renamed"
    );
    let mut reader = csv::Reader::from_path(&file).unwrap();
    assert_eq!(reader.headers().unwrap(), customers_csv_columns());
    let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    assert_eq!(rows.len(), 3);
    let comma = rows
        .iter()
        .find(|r| &r[1] == "400000000001")
        .expect("the quoted row");
    assert_eq!(&comma[0], "Comma, Quote \"and\" Co");
    assert_eq!((&comma[4], &comma[5], &comma[6]), ("2", "2", "Active"));
    assert!(!comma[3].is_empty(), "last uploaded is set");
    let formula = rows.iter().find(|r| &r[1] == "400000000002").unwrap();
    assert_eq!(
        &formula[0], "'=Formula Ltd",
        "formula injection is neutralised"
    );

    // Searched, to standard output: the same bytes as the file would hold.
    let searched = ctl(
        &stack,
        &reseller,
        &["customers", "export", "--search", "plain"],
    )
    .await;
    let mut reader = csv::Reader::from_reader(searched.ok().as_bytes());
    let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    assert_eq!(rows.len(), 1);
    assert_eq!(&rows[0][0], "Plain GmbH");
}

#[tokio::test]
async fn deleting_devices_waits_until_every_portal_removed_them() {
    let stack = TestStack::start().await;
    let knox = "500000000001";
    active_customer(&stack, "acme", knox, "Deleters Inc").await;
    let ids = [imei(1), imei(2), imei(3)];
    upload(&stack, "acme", knox, &ids).await.unwrap();
    let reseller = stack.token(Role::Reseller, "acme");
    let customer = stack.token(Role::Customer, knox);
    eventually("the devices in the customer portal", || async {
        let devices = ctl_json(&stack, &customer, &["portal", "devices"]).await;
        (devices.as_array()?.len() == 3).then_some(())
    })
    .await;

    // Two by argument, one from a file, one unknown.
    let dir = tempfile::tempdir().unwrap();
    let list = dir.path().join("delete.txt");
    std::fs::write(&list, format!("{}\n", ids[2])).unwrap();
    let run = ctl(
        &stack,
        &reseller,
        &[
            "devices",
            "delete",
            &ids[0],
            &ids[1],
            "359999999999999",
            "--file",
            list.to_str().unwrap(),
            "--wait",
            "--timeout",
            "30s",
            "-o",
            "json",
        ],
    )
    .await;
    let deletion = run.json();
    assert_eq!(deletion["complete"], true, "{run:?}");
    assert_eq!(deletion["deleted"], 3);
    assert_eq!(deletion["not_found_device_ids"][0], "359999999999999");
    assert_eq!(deletion["reseller_portal"], "removed");
    assert_eq!(deletion["customer_portal"], "removed");
    assert_eq!(deletion["msp_portal"], "not_applicable");
    assert!(
        run.stderr.contains("customer portal"),
        "--wait tells each portal's state: {}",
        run.stderr
    );

    let id = deletion["deletion_id"].as_str().unwrap();
    let shown = ctl(&stack, &reseller, &["devices", "deletion", id]).await;
    assert!(shown.ok().contains("removed"), "{shown:?}");
    let devices = ctl_json(&stack, &customer, &["portal", "devices"]).await;
    assert_eq!(devices, serde_json::json!([]));
    let nothing = ctl(&stack, &reseller, &["devices", "delete"]).await;
    assert!(
        nothing.failed(2).contains("at least one device"),
        "{nothing:?}"
    );
}

#[tokio::test]
async fn msps_link_move_and_list_from_the_command_line() {
    let stack = TestStack::start().await;
    let (msp_id, cust) = ("600000000001", "610000000001");
    active_account(&stack, "acme", msp_id, AccountKind::Msp, "Managed IT").await;
    register(&stack, cust, AccountKind::Customer, "Small Shop").await;
    let ids = [imei(1), imei(2)];
    upload(&stack, "acme", msp_id, &ids).await.unwrap();
    let msp = stack.token(Role::Msp, msp_id);
    let customer = stack.token(Role::Customer, cust);

    let linked = ctl_json(&stack, &msp, &["msp", "link", cust, "--mode", "fully"]).await;
    assert_eq!(linked["mode"], "fully_managed");
    let refused = ctl(&stack, &customer, &["msp", "delink", cust]).await;
    let text = refused.failed(1);
    assert!(
        text.starts_with("error: failed precondition: "),
        "{refused:?}"
    );
    // The reason, and the command that takes the next step (README "Error reasons").
    assert!(
        text.contains("\nreason: FULLY_MANAGED_CANNOT_DELINK\n"),
        "{refused:?}"
    );
    assert!(
        text.contains(&format!(
            "next step: switch it first: resellerctl msp jointly {cust}, then resellerctl msp delink {cust}"
        )),
        "{refused:?}"
    );
    let joint = ctl_json(&stack, &msp, &["msp", "jointly", cust]).await;
    assert_eq!(joint["mode"], "jointly_managed");
    let customers = ctl_json(&stack, &msp, &["msp", "customers"]).await;
    assert_eq!(customers[0]["customer_knox_id"], cust);

    eventually("the pool in the MSP portal", || async {
        let devices = ctl_json(&stack, &msp, &["msp", "devices"]).await;
        (devices.as_array()?.len() == 2).then_some(())
    })
    .await;
    let unknown = imei(99);
    let moved = ctl(
        &stack,
        &msp,
        &[
            "msp",
            "move",
            &ids[0],
            &unknown,
            "no device!",
            "--to",
            cust,
            "-o",
            "json",
        ],
    )
    .await
    .json();
    assert_eq!(moved["moved"], 1);
    assert_eq!(
        moved["rejections"],
        serde_json::json!([
            {"device_id": unknown, "reason": "not_held"},
            {"device_id": "no device!", "reason": "not_a_device_id"},
        ])
    );
    eventually("the moved device in the customer portal", || async {
        let devices = ctl_json(&stack, &customer, &["portal", "devices"]).await;
        (devices.as_array()?.len() == 1 && devices[0]["moved_by_msp"] == true).then_some(())
    })
    .await;
    let delinked = ctl_json(&stack, &customer, &["msp", "delink", cust, "--msp", msp_id]).await;
    assert_eq!(delinked["mode"], "delinked");
}

#[tokio::test]
async fn wrong_tokens_and_unreachable_portals_are_told_plainly() {
    let stack = TestStack::start().await;
    let addr = format!("http://{}", stack.addr);

    // A token signed with another secret.
    let forged = reseller_kit::auth::JwtAuth::new("not-the-secret")
        .mint(Role::Reseller, "acme", std::time::Duration::from_secs(60))
        .unwrap();
    let run = run_at(&addr, Some(&forged), &["customers", "list"]).await;
    let text = run.failed(1);
    assert!(
        text.starts_with("error: not authenticated: the bearer token's signature is not valid"),
        "{run:?}"
    );
    assert!(text.contains("hint: "), "{run:?}");
    let run = run_at(&addr, Some("garbage"), &["customers", "list"]).await;
    assert!(run.failed(1).contains("not authenticated"), "{run:?}");

    // No token at all is a usage error, before any connection.
    let run = run_at(&addr, None, &["customers", "list"]).await;
    assert!(run.failed(2).contains("RESELLER_TOKEN"), "{run:?}");

    // The right token of the wrong role.
    let customer = stack.token(Role::Customer, "100000000001");
    let run = run_at(&addr, Some(&customer), &["customers", "list"]).await;
    assert!(
        run.failed(1).starts_with("error: permission denied: "),
        "{run:?}"
    );

    // Nothing listens on a port that was just freed.
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let nowhere = format!("127.0.0.1:{port}");
    let token = stack.token(Role::Reseller, "acme");
    let run = run_at(&nowhere, Some(&token), &["customers", "list"]).await;
    let text = run.failed(3);
    assert!(
        text.starts_with(&format!(
            "error: cannot reach the reseller portal at http://{nowhere}: "
        )),
        "{run:?}"
    );
    assert!(text.to_lowercase().contains("refused"), "{run:?}");

    // Usage mistakes and missing files: clear words, no panic.
    let run = run_at(&addr, Some(&token), &["customers", "list", "--bogus"]).await;
    assert_eq!(run.code, 2, "{run:?}");
    let run = run_at(
        &addr,
        Some(&token),
        &[
            "devices",
            "upload",
            "/nonexistent/devices.csv",
            "--target",
            "1234567",
        ],
    )
    .await;
    assert!(
        run.failed(1).contains("/nonexistent/devices.csv"),
        "{run:?}"
    );
    let run = run_at(
        &addr,
        Some(&token),
        &["--addr", "https://x", "customers", "list"],
    )
    .await;
    assert!(run.failed(2).contains("TLS"), "{run:?}");
}

/// The trace IDs `resellerctl --verbose` printed to standard error.
fn trace_ids(run: &Run) -> Vec<String> {
    run.stderr
        .lines()
        .filter_map(|line| line.strip_prefix("trace ID: "))
        .map(str::to_owned)
        .collect()
}

#[tokio::test]
async fn verbose_prints_the_trace_id_of_every_call() {
    let stack = TestStack::start().await;
    let token = stack.token(Role::Reseller, "acme");
    let quiet = ctl(&stack, &token, &["customers", "list"]).await;
    quiet.ok();
    assert!(trace_ids(&quiet).is_empty(), "{quiet:?}");

    let first = ctl(&stack, &token, &["--verbose", "customers", "list"]).await;
    first.ok();
    let second = ctl(&stack, &token, &["customers", "list", "-v"]).await;
    second.ok();
    let (first, second) = (trace_ids(&first), trace_ids(&second));
    assert_eq!((first.len(), second.len()), (1, 1), "{first:?} {second:?}");
    for id in first.iter().chain(&second) {
        assert!(
            id.len() == 32
                && id
                    .bytes()
                    .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
                && id.bytes().any(|b| b != b'0'),
            "a W3C trace ID: {id}"
        );
    }
    assert_ne!(first, second, "every call starts a trace of its own");
}

/// Writes `bytes` to `dir/name`.
fn write_file(dir: &Path, name: &str, bytes: impl AsRef<[u8]>) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

/// `text` as UTF-16 with its byte-order mark, as Excel's "Unicode Text" writes it.
fn utf16le(text: &str) -> Vec<u8> {
    let mut out = vec![0xFF, 0xFE];
    for unit in text.encode_utf16() {
        out.extend(unit.to_le_bytes());
    }
    out
}

/// `devices upload FILE --dry-run`: the file checked on this machine, nothing sent.
async fn dry_run(stack: &TestStack, token: &str, file: &Path) -> Run {
    ctl(
        stack,
        token,
        &["devices", "upload", file.to_str().unwrap(), "--dry-run"],
    )
    .await
}

/// `devices upload FILE --target KNOX -o json` plus `extra`.
async fn upload_file(
    stack: &TestStack,
    token: &str,
    file: &Path,
    knox: &str,
    extra: &[&str],
) -> Run {
    let mut args = vec![
        "devices",
        "upload",
        file.to_str().unwrap(),
        "--target",
        knox,
        "-o",
        "json",
    ];
    args.extend(extra);
    ctl(stack, token, &args).await
}

#[tokio::test]
async fn files_as_spreadsheets_write_them_upload_one_device_per_handset() {
    let stack = TestStack::start().await;
    let knox = "700000000001";
    active_customer(&stack, "acme", knox, "Sheets GmbH").await;
    let reseller = stack.token(Role::Reseller, "acme");
    let dir = tempfile::tempdir().unwrap();

    // Excel's `sep=` line then a header: one device, not `IMEI` too.
    let sep = write_file(
        dir.path(),
        "sep.csv",
        format!("sep=,\r\nIMEI\r\n{}\r\n", imei(1)),
    );
    let summary = upload_file(&stack, &reseller, &sep, knox, &[]).await.json();
    assert_eq!(
        (&summary["accepted"], &summary["rejected"]),
        (&1.into(), &0.into())
    );

    // A European Excel file: semicolons, the header is no device, models come along.
    let european = write_file(
        dir.path(),
        "european.csv",
        format!(
            "\u{feff}IMEI;Model\r\n{};Galaxy S26\r\n{};Galaxy A56\r\n",
            imei(2),
            imei(3)
        ),
    );
    let run = upload_file(&stack, &reseller, &european, knox, &[]).await;
    assert!(
        run.stderr
            .contains("separator \";\"; device ID \"IMEI\"; model \"Model\""),
        "says how it read the file: {run:?}"
    );
    let summary = run.json();
    assert_eq!(
        (&summary["accepted"], &summary["rejected"]),
        (&2.into(), &0.into())
    );

    // UTF-16 with a byte-order mark, tab-separated (Excel's "Unicode Text").
    let unicode = write_file(
        dir.path(),
        "unicode.txt",
        utf16le(&format!("IMEI\tModel\r\n{}\tGalaxy Café\r\n", imei(4))),
    );
    let summary = upload_file(&stack, &reseller, &unicode, knox, &[])
        .await
        .json();
    assert_eq!(
        (&summary["accepted"], &summary["rejected"]),
        (&1.into(), &0.into())
    );

    // The customer holds exactly these four devices, with their models.
    let devices = eventually("the four devices under the customer", || async {
        let devices = ctl_json(&stack, &reseller, &["customers", "devices", knox, "--all"]).await;
        (devices.as_array()?.len() == 4).then_some(devices)
    })
    .await;
    let mut got: Vec<(String, String, String)> = devices
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["device_id"].as_str().unwrap().to_owned(),
                d["kind"].as_str().unwrap().to_owned(),
                d["model"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    got.sort();
    let mut want = vec![
        (imei(1), "imei".to_owned(), String::new()),
        (imei(2), "imei".to_owned(), "Galaxy S26".to_owned()),
        (imei(3), "imei".to_owned(), "Galaxy A56".to_owned()),
        (imei(4), "imei".to_owned(), "Galaxy Café".to_owned()),
    ];
    want.sort();
    assert_eq!(got, want);

    // Files that would register a header or garbage are refused before anything is
    // sent, with the fix.
    for (name, content, words) in [
        (
            "device.csv",
            "device,model\nX1,Galaxy\n",
            "names no device ID column",
        ),
        (
            "handset.csv",
            "Handset\nR58M1\n",
            "names no device ID column",
        ),
        (
            "joined.csv",
            "R58M7\nR58M8,Galaxy\n",
            "a file without a header has one identifier per line",
        ),
    ] {
        let path = write_file(dir.path(), name, content);
        let run = upload_file(&stack, &reseller, &path, knox, &[]).await;
        assert!(run.failed(1).contains(words), "{name}: {run:?}");
        assert!(
            !run.stderr.contains("sent"),
            "nothing was streamed: {run:?}"
        );
    }
    let latin = write_file(
        dir.path(),
        "latin.csv",
        format!("IMEI;Model\r\n{};T\u{e9}l\u{e9}phone\r\n", imei(5))
            .chars()
            .map(|c| u8::try_from(u32::from(c)).unwrap())
            .collect::<Vec<u8>>(),
    );
    let run = upload_file(&stack, &reseller, &latin, knox, &[]).await;
    assert!(
        run.failed(1)
            .contains("line 2, byte offset 29: the file is not UTF-8 (0xE9)"),
        "{run:?}"
    );
    let summary = upload_file(
        &stack,
        &reseller,
        &latin,
        knox,
        &["--encoding", "windows-1252"],
    )
    .await
    .json();
    assert_eq!(summary["accepted"], 1);
}

#[tokio::test]
async fn a_dual_sim_file_registers_imei_2_with_its_handset() {
    let stack = TestStack::start().await;
    let (first, second) = ("710000000001", "710000000002");
    active_customer(&stack, "acme", first, "Dual SIM AG").await;
    active_customer(&stack, "acme", second, "Second Hand Ltd").await;
    let reseller = stack.token(Role::Reseller, "acme");
    let dir = tempfile::tempdir().unwrap();
    let (imei1, imei2) = (imei(11), imei(12));

    // Within one file, a row whose IMEI 1 is an earlier row's IMEI 2 is a repeat, in the
    // dry run and the upload alike.
    let file = write_file(
        dir.path(),
        "dual.csv",
        format!("IMEI 1,IMEI 2,Model\n{imei1},{imei2},Galaxy S26\n{imei2},,Galaxy S26\n"),
    );
    let dry = dry_run(&stack, &reseller, &file).await;
    assert!(
        dry.exit(4).contains("2 rows, 1 valid, 1 would be rejected"),
        "{dry:?}"
    );
    let summary = upload_file(&stack, &reseller, &file, first, &[])
        .await
        .json_exit(4);
    assert_eq!(
        (&summary["accepted"], &summary["rejected"]),
        (&1.into(), &1.into())
    );
    let rejects = read_rejects(&dir.path().join("dual.csv.rejects.csv"));
    assert_eq!(
        rejects,
        [(
            1,
            imei2.clone(),
            "duplicate_in_upload".to_owned(),
            "duplicate of the device at index 0".to_owned()
        )]
    );

    // The handset cannot come back by its IMEI 2, to anyone: nothing accepted, exit 5.
    let alone = write_file(dir.path(), "imei2.txt", format!("{imei2}\n"));
    let run = ctl(
        &stack,
        &reseller,
        &[
            "devices",
            "upload",
            alone.to_str().unwrap(),
            "--target",
            second,
        ],
    )
    .await;
    let text = run.exit(5);
    assert!(text.contains(": 0 accepted, 1 rejected"), "{run:?}");
    assert!(text.contains("no device was registered"), "{run:?}");
    let rejects = read_rejects(&dir.path().join("imei2.txt.rejects.csv"));
    assert_eq!(rejects.len(), 1, "{rejects:?}");
    assert_eq!(
        (rejects[0].0, rejects[0].1.as_str(), rejects[0].2.as_str()),
        (0, imei2.as_str(), "already_registered")
    );
}

#[tokio::test]
async fn upload_exit_codes_tell_scripts_what_happened() {
    let stack = TestStack::start().await;
    let knox = "720000000001";
    active_customer(&stack, "acme", knox, "Exit Codes Inc").await;
    let reseller = stack.token(Role::Reseller, "acme");
    let dir = tempfile::tempdir().unwrap();

    // Every device accepted: 0, no rejects file.
    let good = write_file(
        dir.path(),
        "good.txt",
        format!("{}\n{}\n", imei(21), imei(22)),
    );
    let summary = upload_file(&stack, &reseller, &good, knox, &[])
        .await
        .json_exit(0);
    assert_eq!(summary["accepted"], 2);
    assert!(!dir.path().join("good.txt.rejects.csv").exists());

    // Some rejected: 4, for the dry run and the upload.
    let mixed = write_file(
        dir.path(),
        "mixed.txt",
        format!("{}\n{}\n", imei(23), bad_luhn(24)),
    );
    let dry = dry_run(&stack, &reseller, &mixed).await;
    dry.exit(4);
    let summary = upload_file(&stack, &reseller, &mixed, knox, &[])
        .await
        .json_exit(4);
    assert_eq!(
        (&summary["accepted"], &summary["rejected"]),
        (&1.into(), &1.into())
    );
    assert_eq!(
        read_rejects(&dir.path().join("mixed.txt.rejects.csv"))[0].2,
        "invalid_id"
    );

    // Nothing accepted: 5, for the dry run (every row invalid) and the upload (every
    // device already registered).
    let invalid = write_file(dir.path(), "invalid.txt", format!("{}\n", bad_luhn(25)));
    let dry = dry_run(&stack, &reseller, &invalid).await;
    dry.exit(5);
    let summary = upload_file(&stack, &reseller, &good, knox, &[])
        .await
        .json_exit(5);
    assert_eq!(
        (&summary["accepted"], &summary["rejected"]),
        (&0.into(), &2.into())
    );

    // A file with no devices is refused before anything is sent: 1.
    for (name, content) in [("empty.csv", ""), ("header.csv", "IMEI,Model\r\n")] {
        let path = write_file(dir.path(), name, content);
        let run = upload_file(&stack, &reseller, &path, knox, &[]).await;
        let text = run.failed(1);
        assert!(text.contains("the file holds no devices"), "{run:?}");
        let dry = dry_run(&stack, &reseller, &path).await;
        assert!(
            dry.failed(1).contains("the file holds no devices"),
            "{dry:?}"
        );
    }

    // The portal's refusal is still 1, and a usage mistake 2.
    let run = upload_file(&stack, &reseller, &good, "999999999999", &[]).await;
    run.failed(1);
    let run = ctl(
        &stack,
        &reseller,
        &["devices", "upload", good.to_str().unwrap()],
    )
    .await;
    assert_eq!(run.code, 2, "no --target: {run:?}");
}

#[tokio::test]
async fn exports_for_excel_carry_a_byte_order_mark_and_upload_again() {
    let stack = TestStack::start().await;
    let (knox, other) = ("730000000001", "730000000002");
    active_customer(&stack, "acme", knox, "Ärzte Köln eG").await;
    active_customer(&stack, "acme", other, "Other GmbH").await;
    let ids = [imei(31), imei(32)];
    upload(&stack, "acme", knox, &ids).await.unwrap();
    let reseller = stack.token(Role::Reseller, "acme");
    eventually("the devices on the Customers page", || async {
        let rows = ctl_json(&stack, &reseller, &["customers", "list", "--search", knox]).await;
        (rows[0]["devices"] == 2).then_some(())
    })
    .await;
    let dir = tempfile::tempdir().unwrap();

    // The server writes the mark when asked.
    let customers = dir.path().join("customers.csv");
    ctl(
        &stack,
        &reseller,
        &[
            "customers",
            "export",
            "--excel",
            "--output-file",
            customers.to_str().unwrap(),
        ],
    )
    .await
    .ok();
    let bytes = std::fs::read(&customers).unwrap();
    assert!(bytes.starts_with(b"\xEF\xBB\xBF"), "{:?}", &bytes[..8]);
    let text = String::from_utf8(bytes[3..].to_vec()).unwrap();
    assert!(
        text.starts_with("Company Name / Internal Reference,"),
        "{text}"
    );
    assert!(text.contains("Ärzte Köln eG"), "{text}");
    // Without --excel, no mark.
    let plain = ctl(&stack, &reseller, &["customers", "export"]).await;
    assert!(plain.ok().starts_with("Company Name"), "{plain:?}");

    // CSV resellerctl writes itself gets one too.
    let listed = ctl(
        &stack,
        &reseller,
        &["customers", "list", "-o", "csv", "--excel"],
    )
    .await;
    assert!(listed.ok().starts_with('\u{feff}'), "{listed:?}");

    // One customer's devices, exported for Excel, read back as an upload file.
    let devices = dir.path().join("devices.csv");
    ctl(
        &stack,
        &reseller,
        &[
            "customers",
            "export",
            knox,
            "--excel",
            "--output-file",
            devices.to_str().unwrap(),
        ],
    )
    .await
    .ok();
    let dry = dry_run(&stack, &reseller, &devices).await;
    assert!(dry.exit(0).contains("2 rows, 2 valid"), "{dry:?}");
    let summary = upload_file(&stack, &reseller, &devices, other, &[])
        .await
        .json_exit(5);
    assert_eq!(summary["rejected_by_reason"]["already_registered"], 2);
}

/// `--validate-only` asks the portal every rule ("already registered" too) and records
/// nothing; `uploads list` and `deletions list` show what was done, newest first.
#[tokio::test]
async fn validating_a_file_records_nothing_and_the_lists_show_what_was_done() {
    let stack = TestStack::start().await;
    let knox = "730000000001";
    active_customer(&stack, "acme", knox, "Lists Inc").await;
    let reseller = stack.token(Role::Reseller, "acme");
    let dir = tempfile::tempdir().unwrap();
    let first = write_file(dir.path(), "first.txt", format!("{}\n", imei(31)));
    upload_file(&stack, &reseller, &first, knox, &[])
        .await
        .json_exit(0);

    // The portal finds the registered device, which a local dry run cannot.
    let again = write_file(
        dir.path(),
        "again.txt",
        format!("{}\n{}\n", imei(31), imei(32)),
    );
    let dry = dry_run(&stack, &reseller, &again).await;
    dry.exit(0);
    let checked = upload_file(&stack, &reseller, &again, knox, &["--validate-only"])
        .await
        .json_exit(4);
    assert_eq!(
        (
            &checked["accepted"],
            &checked["rejected"],
            &checked["upload_id"]
        ),
        (&1.into(), &1.into(), &"".into())
    );
    let rejects = read_rejects(&dir.path().join("again.txt.rejects.csv"));
    assert_eq!(rejects.len(), 1);
    assert_eq!(
        (rejects[0].0, rejects[0].2.as_str()),
        (0, "already_registered")
    );

    // Nothing was recorded: one upload listed, and imei(32) is still free.
    let uploads = ctl_json(&stack, &reseller, &["uploads", "list"]).await;
    assert_eq!(uploads.as_array().map(Vec::len), Some(1), "{uploads}");
    let real = upload_file(&stack, &reseller, &again, knox, &[])
        .await
        .json_exit(4);
    assert_eq!(real["accepted"], 1);
    let uploads = ctl_json(&stack, &reseller, &["uploads", "list"]).await;
    assert_eq!(uploads[0]["upload_id"], real["upload_id"], "newest first");

    let deleted = ctl(
        &stack,
        &reseller,
        &["devices", "delete", &imei(31), &imei(99), "-o", "json"],
    )
    .await;
    deleted.ok();
    let deletions = ctl_json(&stack, &reseller, &["deletions", "list"]).await;
    let deletions = deletions.as_array().expect("a JSON array");
    assert_eq!(deletions.len(), 1);
    assert_eq!(
        (&deletions[0]["deleted"], &deletions[0]["not_found"]),
        (&1.into(), &1.into())
    );
}

/// `token --name` names the person acting (issue 12): the upload and the deletion made
/// with that token show the person as who did it; a name the services would refuse is a
/// usage mistake, and no token is printed.
#[tokio::test]
async fn a_named_token_makes_the_person_the_actor() {
    let stack = TestStack::start().await;
    let knox = "200000000009";
    active_customer(&stack, "acme", knox, "Globex").await;
    let mint = |name: String| {
        let secret = stack.secret.clone();
        async move {
            tokio::process::Command::new(binary().await)
                .args([
                    "token", "--role", "reseller", "--sub", "acme", "--name", &name,
                ])
                .env("AUTH_JWT_SECRET", &secret)
                .output()
                .await
                .expect("run resellerctl token")
        }
    };
    let minted = mint("Jane Roe".into()).await;
    assert!(minted.status.success(), "{minted:?}");
    let jane = String::from_utf8(minted.stdout).unwrap().trim().to_owned();

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("devices.csv");
    std::fs::write(&path, format!("device_id\n{}\n", imei(9_000_001))).unwrap();
    let upload = ctl(
        &stack,
        &jane,
        &[
            "devices",
            "upload",
            path.to_str().unwrap(),
            "--target",
            knox,
            "-o",
            "json",
        ],
    )
    .await
    .json();
    assert_eq!(upload["accepted"], 1, "{upload}");
    assert_eq!(upload["actor"], "Jane Roe", "{upload}");
    let deletion = ctl_json(&stack, &jane, &["devices", "delete", &imei(9_000_001)]).await;
    let deletion = if deletion.is_array() {
        deletion[0].clone()
    } else {
        deletion
    };
    assert_eq!(deletion["actor"], "Jane Roe", "{deletion}");

    for bad in ["x".repeat(101), "Jane\tRoe".into(), " ".into()] {
        let refused = mint(bad.clone()).await;
        assert_eq!(refused.status.code(), Some(2), "{bad:?}: {refused:?}");
        assert!(refused.stdout.is_empty(), "{bad:?}: {refused:?}");
        let stderr = String::from_utf8_lossy(&refused.stderr);
        assert!(stderr.contains("--name"), "{stderr}");
    }
}

/// The table rows (header skipped) of a list `resellerctl` printed, each as its cells
/// split on runs of two or more spaces.
fn table_rows(stdout: &str) -> Vec<Vec<String>> {
    stdout
        .lines()
        .skip(1)
        .map(|line| {
            line.split("  ")
                .map(str::trim)
                .filter(|cell| !cell.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .collect()
}

#[tokio::test]
async fn devices_find_tells_where_a_device_is_and_that_an_unknown_one_is_not_found() {
    let stack = TestStack::start().await;
    let knox = "740000000001";
    active_customer(&stack, "acme", knox, "Finders Inc").await;
    let reseller = stack.token(Role::Reseller, "acme");
    let dir = tempfile::tempdir().unwrap();
    let file = write_file(dir.path(), "devices.txt", format!("{}\n", imei(41)));
    let uploaded = upload_file(&stack, &reseller, &file, knox, &["--order-number", "PO-41"])
        .await
        .json_exit(0);
    let upload_id = uploaded["upload_id"].as_str().unwrap().to_owned();
    let unknown = "359999999999999";

    // By argument and from a file, in the order asked.
    let found = eventually("the upload in the lookup", || async {
        let found = ctl_json(
            &stack,
            &reseller,
            &["devices", "find", unknown, "--file", file.to_str().unwrap()],
        )
        .await;
        (found[1]["found"] == true).then_some(found)
    })
    .await;
    assert_eq!(found.as_array().map(Vec::len), Some(2), "{found}");
    assert_eq!(
        (&found[0]["device_id"], &found[0]["found"]),
        (&unknown.into(), &false.into())
    );
    let device = &found[1];
    assert_eq!(device["primary_device_id"], imei(41));
    assert_eq!(device["kind"], "imei");
    assert_eq!(device["placed_under_knox_id"], knox);
    assert_eq!(device["holder_knox_id"], knox);
    assert_eq!(device["upload_id"], upload_id.as_str());
    assert_eq!(device["order_number"], "PO-41");
    assert_eq!(device["deleted"], false);

    // What a person reads: the found device's placement and upload, the unknown one
    // `no` and nothing else.
    let table = ctl(&stack, &reseller, &["devices", "find", &imei(41), unknown]).await;
    let header = table.ok().lines().next().unwrap_or_default();
    assert!(
        header.starts_with("ASKED ID") && header.contains("PLACED UNDER"),
        "{table:?}"
    );
    let rows = table_rows(table.ok());
    assert_eq!(rows.len(), 2, "{table:?}");
    assert_eq!(
        &rows[0][..3],
        [imei(41), "yes".into(), imei(41)],
        "{table:?}"
    );
    assert!(rows[0].contains(&knox.to_owned()), "{table:?}");
    assert!(rows[0].contains(&upload_id), "{table:?}");
    assert!(rows[0].contains(&"PO-41".to_owned()), "{table:?}");
    assert_eq!(rows[1], [unknown, "no"], "{table:?}");

    // More than the portal answers per call: asked for 1,000 at a time, in order.
    let many: String = (0..1000)
        .map(|n| format!("R58M-UNKNOWN{n:04}\n"))
        .chain([format!("{}\n", imei(41))])
        .collect();
    let many = write_file(dir.path(), "many.txt", many);
    let found = ctl_json(
        &stack,
        &reseller,
        &["devices", "find", "--file", many.to_str().unwrap()],
    )
    .await;
    let found = found.as_array().unwrap();
    assert_eq!(found.len(), 1001);
    assert_eq!(found[999]["device_id"], "R58M-UNKNOWN0999");
    assert_eq!(
        (&found[999]["found"], &found[1000]["found"]),
        (&false.into(), &true.into())
    );

    // Another reseller's device is not found, like an unknown one.
    let globex = stack.token(Role::Reseller, "globex");
    let theirs = ctl_json(&stack, &globex, &["devices", "find", &imei(41)]).await;
    assert_eq!(theirs[0]["found"], false, "{theirs}");
    let nothing = ctl(&stack, &reseller, &["devices", "find"]).await;
    assert!(
        nothing.failed(2).contains("at least one device"),
        "{nothing:?}"
    );
}

#[tokio::test]
async fn devices_history_lists_upload_move_delink_and_deletion_in_order() {
    let stack = TestStack::start().await;
    let (msp_id, cust) = ("750000000001", "751000000001");
    active_account(&stack, "acme", msp_id, AccountKind::Msp, "Managed IT").await;
    register(&stack, cust, AccountKind::Customer, "Small Shop").await;
    let reseller = stack.token(Role::Reseller, "acme");
    let msp = stack.token(Role::Msp, msp_id);
    let customer = stack.token(Role::Customer, cust);
    let device = imei(51);
    let uploaded = upload(&stack, "acme", msp_id, std::slice::from_ref(&device))
        .await
        .unwrap();

    // The MSP links the customer jointly, moves the device to it, the customer delinks,
    // the reseller deletes the device.
    ctl(&stack, &msp, &["msp", "link", cust, "--mode", "jointly"])
        .await
        .ok();
    eventually("the device in the MSP's pool", || async {
        let devices = ctl_json(&stack, &msp, &["msp", "devices"]).await;
        (devices.as_array()?.len() == 1).then_some(())
    })
    .await;
    let moved = ctl_json(&stack, &msp, &["msp", "move", &device, "--to", cust]).await;
    assert_eq!(moved["moved"], 1, "{moved}");
    eventually("the move in the lookup", || async {
        let found = ctl_json(&stack, &reseller, &["devices", "find", &device]).await;
        (found[0]["moved_by_msp"] == true).then_some(())
    })
    .await;
    ctl(&stack, &customer, &["msp", "delink", cust, "--msp", msp_id])
        .await
        .ok();
    eventually("the delink in the lookup", || async {
        let found = ctl_json(&stack, &reseller, &["devices", "find", &device]).await;
        (found[0]["virtual"] == true).then_some(())
    })
    .await;
    let deletion = ctl_json(&stack, &reseller, &["devices", "delete", &device]).await;
    let deletion_id = deletion["deletion_id"].as_str().unwrap().to_owned();

    // Complete once the upload's and deletion's records (which name who did them) are in.
    let history = eventually("the deletion in the history", || async {
        let history = ctl_json(&stack, &reseller, &["devices", "history", &device]).await;
        let entries = history["entries"].as_array()?;
        (entries.len() == 4 && entries[0]["actor"] == "acme" && entries[3]["actor"] == "acme")
            .then_some(history)
    })
    .await;
    assert_eq!(history["device_id"], device.as_str());
    let kinds: Vec<&str> = history["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["uploaded", "moved_by_msp", "delinked", "deleted"]);

    // What a person reads: one line per entry, oldest first, with its actor, upload or
    // deletion, and from → to.
    let table = ctl(&stack, &reseller, &["devices", "history", &device]).await;
    let lines: Vec<&str> = table.ok().lines().collect();
    assert_eq!(lines.len(), 5, "a header and four entries: {table:?}");
    assert!(lines[0].contains("FROM → TO"), "{table:?}");
    let uploaded_line = lines[1];
    assert!(
        uploaded_line.contains(" uploaded  ")
            && uploaded_line.contains(" acme ")
            && uploaded_line.contains(uploaded.upload_id.as_str())
            && uploaded_line.ends_with(&format!("→ {msp_id}")),
        "{table:?}"
    );
    assert!(
        lines[2].contains(" moved by MSP ")
            && lines[2].contains(msp_id)
            && lines[2].ends_with(&format!("{msp_id} → {cust}")),
        "{table:?}"
    );
    assert!(
        lines[3].contains(" delinked ") && lines[3].ends_with(&format!("{msp_id} → {cust}")),
        "{table:?}"
    );
    assert!(
        lines[4].contains(" deleted ")
            && lines[4].contains(" acme ")
            && lines[4].contains(&deletion_id),
        "{table:?}"
    );
    assert!(
        table.stderr.contains(&format!("device {device}")),
        "{table:?}"
    );

    // A device the reseller did not upload is refused as not found.
    let never = imei(59);
    let unknown = ctl(&stack, &reseller, &["devices", "history", &never]).await;
    let message = unknown.failed(1);
    assert!(
        message.contains("not found") && message.contains(&never),
        "{unknown:?}"
    );
}

#[tokio::test]
async fn activity_lists_who_did_what_and_downloads_it_as_csv() {
    let stack = TestStack::start().await;
    let (knox, other) = ("760000000001", "761000000001");
    active_customer(&stack, "acme", knox, "Loggers Inc").await;
    active_customer(&stack, "acme", other, "Other Co").await;
    let reseller = stack.token(Role::Reseller, "acme");
    ctl(
        &stack,
        &reseller,
        &["customers", "set-reference", knox, "PO-76"],
    )
    .await
    .ok();
    // An upload with one good row and one bad.
    let dir = tempfile::tempdir().unwrap();
    let file = write_file(
        dir.path(),
        "upload.txt",
        format!("{}\n{}\n", imei(61), bad_luhn(62)),
    );
    let uploaded = upload_file(&stack, &reseller, &file, knox, &["--order-number", "PO-61"])
        .await
        .json_exit(4);
    let upload_id = uploaded["upload_id"].as_str().unwrap().to_owned();

    // Newest first: the upload, the reference edit, then the approvals and additions.
    let entries = eventually("the upload in the log", || async {
        let entries = ctl_json(&stack, &reseller, &["activity"]).await;
        (entries.as_array()?.len() == 6).then_some(entries)
    })
    .await;
    let entries = entries.as_array().unwrap();
    let upload = &entries[0];
    assert_eq!(upload["kind"], "upload", "{entries:?}");
    assert_eq!(upload["actor"], "acme");
    assert_eq!(upload["upload_id"], upload_id.as_str());
    assert_eq!(upload["customer_knox_id"], knox);
    assert_eq!(
        (&upload["accepted_count"], &upload["rejected_count"]),
        (&1.into(), &1.into())
    );
    assert_eq!(
        upload["summary"],
        format!("uploaded 1 device to {knox} (order PO-61); 1 rejected")
    );
    assert_eq!(entries[1]["kind"], "reference_updated", "{entries:?}");
    assert_eq!(entries[1]["actor"], "acme");
    assert_eq!(entries[1]["customer_knox_id"], knox);
    assert!(
        entries[1]["summary"].as_str().unwrap().contains("PO-76"),
        "{entries:?}"
    );
    let of = |kind: &str, customer: &str| {
        entries
            .iter()
            .find(|e| e["kind"] == kind && e["customer_knox_id"] == customer)
            .unwrap_or_else(|| panic!("no {kind} of {customer}: {entries:?}"))
    };
    assert_eq!(of("customer_added", knox)["actor"], "acme");
    assert_eq!(
        of("approval_changed", knox)["actor"],
        knox,
        "a customer's action names its Knox ID"
    );

    // Filters: by kind (repeated or comma-separated), by customer, by time.
    let added = ctl_json(&stack, &reseller, &["activity", "--kind", "customer-added"]).await;
    assert_eq!(added.as_array().map(Vec::len), Some(2), "{added}");
    let two = ctl_json(
        &stack,
        &reseller,
        &["activity", "--kind", "customer-added,reference-updated"],
    )
    .await;
    assert_eq!(two.as_array().map(Vec::len), Some(3), "{two}");
    let uploads = ctl_json(&stack, &reseller, &["activity", "--kind", "upload"]).await;
    assert_eq!(uploads.as_array().map(Vec::len), Some(1), "{uploads}");
    let mine = ctl_json(&stack, &reseller, &["activity", "--customer", knox]).await;
    assert_eq!(mine.as_array().map(Vec::len), Some(4), "{mine}");
    let theirs = ctl_json(&stack, &reseller, &["activity", "--customer", other]).await;
    let theirs = theirs.as_array().unwrap();
    // Added and approved; the upload and the reference edit are the other customer's.
    assert_eq!(theirs.len(), 2, "{theirs:?}");
    assert!(theirs.iter().all(|e| e["customer_knox_id"] == other));
    let future = ctl_json(&stack, &reseller, &["activity", "--since", "2999-01-01"]).await;
    assert_eq!(future, serde_json::json!([]));
    let past = ctl_json(
        &stack,
        &reseller,
        &["activity", "--until", "2000-01-01T00:00:00Z"],
    )
    .await;
    assert_eq!(past, serde_json::json!([]));

    // A page at a time, and every page.
    let page = ctl(
        &stack,
        &reseller,
        &["activity", "--page-size", "2", "-o", "json"],
    )
    .await;
    assert_eq!(page.json().as_array().map(Vec::len), Some(2));
    assert!(page.stderr.contains("--page-token"), "{page:?}");
    let all = ctl_json(
        &stack,
        &reseller,
        &["activity", "--page-size", "2", "--all"],
    )
    .await;
    assert_eq!(all.as_array().map(Vec::len), Some(6));

    // The table a person reads.
    let table = ctl(&stack, &reseller, &["activity"]).await;
    let lines: Vec<&str> = table.ok().lines().collect();
    assert!(
        lines[0].starts_with("TIME") && lines[0].contains("ACTOR"),
        "{table:?}"
    );
    assert!(
        lines[1].contains(" upload ")
            && lines[1].contains(" acme ")
            && lines[1].contains(&upload_id)
            && lines[1].ends_with("uploaded 1 device to 760000000001 (order PO-61); 1 rejected"),
        "{table:?}"
    );
    assert!(
        lines[2].contains(" reference updated ") && lines[2].contains(" acme "),
        "{table:?}"
    );

    // -o csv: the portal's download.
    let csv = ctl(&stack, &reseller, &["activity", "-o", "csv"]).await;
    let mut reader = csv::Reader::from_reader(csv.ok().as_bytes());
    assert_eq!(
        reader.headers().unwrap(),
        vec![
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
    let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    assert_eq!(rows.len(), 6, "{csv:?}");
    assert_eq!(
        (&rows[0][1], &rows[0][2], &rows[0][3], &rows[0][4]),
        ("upload", "acme", knox, upload_id.as_str())
    );
    assert_eq!((&rows[0][6], &rows[0][7]), ("1", "1"), "accepted, rejected");
    assert_eq!(
        (&rows[1][1], &rows[1][2], &rows[1][3]),
        ("reference updated", "acme", knox)
    );
    let file = tempfile::tempdir().unwrap();
    let path = file.path().join("activity.csv");
    let written = ctl(
        &stack,
        &reseller,
        &[
            "activity",
            "--kind",
            "approval-changed",
            "--output-file",
            path.to_str().unwrap(),
        ],
    )
    .await;
    written.ok();
    let text = std::fs::read_to_string(&path).unwrap();
    assert_eq!(
        text.lines().count(),
        3,
        "a header and two approvals: {text}"
    );
    let paged = ctl(&stack, &reseller, &["activity", "-o", "csv", "--all"]).await;
    assert!(
        paged.failed(2).contains("every matching entry"),
        "{paged:?}"
    );

    // Mistakes are refused before anything is sent, naming what is accepted.
    let kind = ctl(&stack, &reseller, &["activity", "--kind", "uploads"]).await;
    let message = kind.failed(2);
    assert!(
        message.contains("'uploads'") && message.contains("customer-added"),
        "{kind:?}"
    );
    let since = ctl(&stack, &reseller, &["activity", "--since", "yesterday"]).await;
    let message = since.failed(2);
    assert!(
        message.contains("\"yesterday\" is not a time") && message.contains("RFC 3339"),
        "{since:?}"
    );
    // What the portal refuses it names.
    let customer = ctl(&stack, &reseller, &["activity", "--customer", "nope"]).await;
    assert!(
        customer.failed(1).contains("customer_knox_id"),
        "{customer:?}"
    );
}
