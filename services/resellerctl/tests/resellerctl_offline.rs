//! The binary without a portal: help, tokens, dry runs of files as spreadsheets write
//! them, and the exit codes of usage mistakes, refused files, rejected rows and an
//! unreachable address. (Against a running stack: `against_a_stack.rs`.)

use std::process::{Command, Output};

use reseller_kit::auth::{JwtAuth, Role};

fn resellerctl(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_resellerctl"));
    command
        .args(args)
        .env_remove("RESELLER_ADDR")
        .env_remove("RESELLER_TOKEN")
        .env_remove("AUTH_JWT_SECRET");
    for (key, value) in env {
        command.env(key, value);
    }
    command.output().expect("run resellerctl")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn help_names_every_command_group() {
    let out = resellerctl(&["--help"], &[]);
    assert!(out.status.success());
    let help = text(&out.stdout);
    for group in [
        "token",
        "accounts",
        "customers",
        "approvals",
        "devices",
        "uploads",
        "msp",
        "portal",
    ] {
        assert!(help.contains(group), "{group} missing from:\n{help}");
    }
}

#[test]
fn tokens_are_minted_from_the_shared_secret() {
    let out = resellerctl(
        &[
            "token", "--role", "reseller", "--sub", "acme", "--ttl", "2h",
        ],
        &[("AUTH_JWT_SECRET", "s3cret")],
    );
    assert!(out.status.success(), "{out:?}");
    let token = text(&out.stdout);
    let principal = JwtAuth::new("s3cret").verify(token.trim()).expect("valid");
    assert_eq!(
        (principal.role, principal.subject.as_str()),
        (Role::Reseller, "acme")
    );

    let out = resellerctl(&["token", "--role", "reseller", "--sub", "acme"], &[]);
    assert_eq!(out.status.code(), Some(2), "no secret is a usage error");
    assert!(text(&out.stderr).contains("AUTH_JWT_SECRET"), "{out:?}");
}

#[test]
fn a_dry_run_needs_no_portal_and_reports_row_errors() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("devices.txt");
    // 490154203237518 is a valid IMEI; the second fails its check digit; the last
    // repeats the first.
    std::fs::write(
        &file,
        "490154203237518\n490154203237517\nR58M-1\n490154203237518\n",
    )
    .unwrap();
    let out = resellerctl(
        &["devices", "upload", file.to_str().unwrap(), "--dry-run"],
        &[("RESELLER_ADDR", "127.0.0.1:1")],
    );
    assert_eq!(out.status.code(), Some(4), "some rows rejected: {out:?}");
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("4 rows, 2 valid, 2 would be rejected"),
        "{stdout}"
    );
    let rejects = std::fs::read_to_string(dir.path().join("devices.txt.rejects.csv")).unwrap();
    assert_eq!(
        rejects.lines().collect::<Vec<_>>(),
        [
            "index,device_id,reason,message",
            "1,490154203237517,invalid_id,IMEI 490154203237517 fails the Luhn check: its last digit should be 8; check the IMEI",
            "3,490154203237518,duplicate_in_upload,duplicate of the device at index 0",
        ]
    );
}

#[test]
fn help_documents_the_exit_codes_and_the_file_formats() {
    let out = resellerctl(&["--help"], &[]);
    let help = text(&out.stdout);
    for line in [
        "  0  success",
        "  1  the portal refused or failed",
        "  2  a usage mistake",
        "  3  the portal cannot be reached",
        "  4  devices upload / --dry-run: some devices accepted, some rejected",
        "  5  devices upload / --dry-run: no device accepted, every one rejected",
    ] {
        assert!(help.contains(line), "{line:?} missing from:\n{help}");
    }
    let out = resellerctl(&["devices", "upload", "--help"], &[]);
    let help = text(&out.stdout);
    for words in [
        "sep=X",
        "UTF-16",
        "--encoding",
        "imei2",
        "Device Type",
        "  5  ",
    ] {
        assert!(help.contains(words), "{words:?} missing from:\n{help}");
    }
}

/// A dry run of `content` (written to a file named `name`) with `args`: exit code,
/// standard output, standard error, and the rejects file when there is one.
fn dry_run(
    name: &str,
    content: &[u8],
    args: &[&str],
) -> (Option<i32>, String, String, Option<String>) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join(name);
    std::fs::write(&file, content).unwrap();
    let mut all = vec!["devices", "upload", file.to_str().unwrap(), "--dry-run"];
    all.extend(args);
    let out = resellerctl(&all, &[]);
    let rejects = std::fs::read_to_string(dir.path().join(format!("{name}.rejects.csv"))).ok();
    (
        out.status.code(),
        text(&out.stdout),
        text(&out.stderr),
        rejects,
    )
}

#[test]
fn dry_runs_exit_with_what_would_happen_to_the_devices() {
    // Every device valid: 0.
    let (code, stdout, stderr, rejects) =
        dry_run("ok.csv", b"IMEI;Model\r\n490154203237518;S26\r\n", &[]);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(
        stdout.contains("1 rows, 1 valid, 0 would be rejected"),
        "{stdout}"
    );
    assert!(rejects.is_none());
    assert!(
        stderr.contains("separator \";\"; device ID \"IMEI\"; model \"Model\""),
        "the note says how the file was read: {stderr}"
    );
    // Every device rejected: 5.
    let (code, stdout, _, rejects) = dry_run("bad.csv", b"imei\n490154203237517\n", &[]);
    assert_eq!(code, Some(5), "{stdout}");
    assert!(
        stdout.contains("1 rows, 0 valid, 1 would be rejected"),
        "{stdout}"
    );
    assert!(rejects.unwrap().contains("490154203237517,invalid_id"));
}

#[test]
fn files_without_devices_are_refused_before_anything_is_sent() {
    for (name, content) in [
        ("empty.csv", &b""[..]),
        ("header-only.csv", b"IMEI,Model\r\n"),
        (
            "excel-blank-rows.csv",
            b"\xEF\xBB\xBFsep=;\r\nIMEI;Model\r\n;\r\n;\r\n",
        ),
    ] {
        let (code, stdout, stderr, rejects) = dry_run(name, content, &[]);
        assert_eq!(code, Some(1), "{name}: {stdout}{stderr}");
        assert!(
            stderr.starts_with("error: ") && stderr.contains("the file holds no devices"),
            "{name}: {stderr}"
        );
        assert!(rejects.is_none());
    }
    // An upload checks its file before it connects: the portal here is unreachable (3),
    // the file is what is wrong (1).
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("empty.csv");
    std::fs::write(&file, "IMEI\n").unwrap();
    let out = resellerctl(
        &[
            "devices",
            "upload",
            file.to_str().unwrap(),
            "--target",
            "100000000001",
        ],
        &[("RESELLER_ADDR", "127.0.0.1:1"), ("RESELLER_TOKEN", "t")],
    );
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stderr = text(&out.stderr);
    assert!(stderr.contains("the file holds no devices"), "{stderr}");
    assert!(stderr.contains("nothing was sent"), "{stderr}");
}

#[test]
fn files_that_cannot_be_read_right_are_refused_with_the_fix() {
    // A header without a device ID column.
    let (code, _, stderr, _) = dry_run("d.csv", b"device,model\nX1,Galaxy\n", &[]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("line 1: the header line names no device ID column"),
        "{stderr}"
    );
    assert!(stderr.contains("imei1, imei 1, meid, serial"), "{stderr}");
    // Windows-1252 from a Western European Excel: refused where it breaks, read when named.
    let latin = b"IMEI;Model\r\n490154203237518;T\xE9l\xE9phone\r\n";
    let (code, _, stderr, _) = dry_run("latin.csv", latin, &[]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("line 2, byte offset 29: the file is not UTF-8 (0xE9)"),
        "{stderr}"
    );
    assert!(stderr.contains("--encoding windows-1252"), "{stderr}");
    let (code, stdout, stderr, _) = dry_run("latin.csv", latin, &["--encoding", "windows-1252"]);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(stderr.contains("read as windows-1252"), "{stderr}");
    // An encoding nobody knows is a usage mistake.
    let (code, _, stderr, _) = dry_run("latin.csv", latin, &["--encoding", "klingon"]);
    assert_eq!(code, Some(2), "{stderr}");
    // A workbook instead of CSV.
    let (code, _, stderr, _) = dry_run("devices.xlsx", b"PK\x03\x04\x14\x00\x06\x00", &[]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("Excel workbook (.xlsx)"), "{stderr}");
}

#[test]
fn mistakes_exit_non_zero_without_a_panic() {
    let out = resellerctl(&["customers", "list", "--page-size", "many"], &[]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");

    let out = resellerctl(&["customers", "list"], &[]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(text(&out.stderr).starts_with("error: no token"), "{out:?}");

    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let out = resellerctl(
        &["customers", "list"],
        &[("RESELLER_ADDR", &addr), ("RESELLER_TOKEN", "t")],
    );
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    let stderr = text(&out.stderr);
    assert!(
        stderr.starts_with(&format!(
            "error: cannot reach the reseller portal at http://{addr}: "
        )),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");

    let out = resellerctl(
        &["devices", "upload", "/no/such/file.csv", "--dry-run"],
        &[],
    );
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(text(&out.stderr).contains("/no/such/file.csv"), "{out:?}");
}
