//! The binary without a portal: help, tokens, dry runs, and the exit codes of usage
//! mistakes and an unreachable address. (Against a running stack: `tests/tests/resellerctl.rs`.)

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
    assert!(out.status.success(), "{out:?}");
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
            "1,490154203237517,invalid_id,IMEI 490154203237517 fails the Luhn check: its last digit should be 8",
            "3,490154203237518,duplicate_in_upload,duplicate of the device at index 0",
        ]
    );
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
