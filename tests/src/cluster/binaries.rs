//! Finding the service programs a cluster runs: the ones Cargo built next to this test
//! executable (`target/<profile>/`), so a test reuses the build it is part of instead of
//! making a second (release) one.
//!
//! `cargo test` builds a package's binaries only for that package's own integration tests,
//! and none of the service packages has any, so from a clean clone they are missing; and
//! after a change to a service they may be older than the code this test was built from.
//! Either way `cargo build` is run for the four packages in the same profile and target
//! directory: it builds what is missing or stale and returns at once when nothing is.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::SystemTime;

use anyhow::Context;

/// The service packages; each builds one binary of the same name.
pub const SERVICE_BINARIES: [&str; 4] = [
    "customer-service",
    "device-service",
    "msp-link-service",
    "reporting-service",
];

/// The directory holding the four service binaries, built first when needed.
/// `RESELLER_SERVICE_BIN_DIR` names another directory (nothing is built then).
///
/// # Errors
/// When the test executable's directory cannot be told, or the build fails.
pub fn service_binaries_dir() -> anyhow::Result<PathBuf> {
    if let Some(dir) = std::env::var_os("RESELLER_SERVICE_BIN_DIR") {
        return Ok(PathBuf::from(dir));
    }
    let exe = std::env::current_exe().context("locating the test executable")?;
    // target/<profile>/deps/<test>-<hash>
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .context("the test executable is not in target/<profile>/deps")?
        .to_path_buf();
    let built_at = modified(&exe);
    let needs_build =
        SERVICE_BINARIES
            .iter()
            .any(|name| match (modified(&profile_dir.join(name)), built_at) {
                (None, _) => true,
                // Older than this test: it may predate the service code the test links.
                (Some(binary), Some(test)) => binary < test,
                (Some(_), None) => false,
            });
    if needs_build {
        cargo_build(&profile_dir)?;
    }
    for name in SERVICE_BINARIES {
        let path = profile_dir.join(name);
        anyhow::ensure!(path.is_file(), "{} was not built", path.display());
    }
    Ok(profile_dir)
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// `cargo build` of the service packages into `profile_dir` (same target directory,
/// same profile as this test).
fn cargo_build(profile_dir: &Path) -> anyhow::Result<()> {
    let cargo = std::env::var_os("CARGO")
        .map(PathBuf::from)
        .or_else(|| option_env!("CARGO").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("cargo"));
    let target_dir = profile_dir
        .parent()
        .context("the profile directory has no target directory")?;
    let mut command = Command::new(&cargo);
    // Cargo gives this test its package's variables (CARGO_PKG_NAME, CARGO_MANIFEST_DIR,
    // ...). Build scripts that watch them (ring's does) would see them change and
    // rebuild, here and again in the next ordinary build: the build must not see them.
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy();
        if is_package_variable(&name) {
            command.env_remove(name.as_ref());
        }
    }
    command
        .arg("build")
        .args(SERVICE_BINARIES.iter().flat_map(|p| ["-p", p]))
        .arg("--bins")
        .env("CARGO_TARGET_DIR", target_dir)
        .current_dir(env!("CARGO_MANIFEST_DIR"));
    match profile_dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") => {}
        Some("release") => {
            command.arg("--release");
        }
        Some(other) => {
            command.args(["--profile", other]);
        }
        None => anyhow::bail!("{} has no profile name", profile_dir.display()),
    }
    eprintln!("building the service binaries: {command:?}");
    let status = command
        .status()
        .with_context(|| format!("running {}", cargo.display()))?;
    anyhow::ensure!(status.success(), "{command:?} failed: {status}");
    Ok(())
}

/// Whether `name` is one of the variables Cargo sets for the crate it builds or runs
/// (<https://doc.rust-lang.org/cargo/reference/environment-variables.html>), rather than
/// one that configures Cargo (`CARGO_HOME`, `CARGO_TARGET_DIR`, `CARGO_BUILD_*`, ...).
fn is_package_variable(name: &str) -> bool {
    name == "OUT_DIR"
        || name.starts_with("CARGO_PKG_")
        || name.starts_with("CARGO_MANIFEST_")
        || name.starts_with("CARGO_BIN_")
        || matches!(
            name,
            "CARGO_CRATE_NAME"
                | "CARGO_PRIMARY_PACKAGE"
                | "CARGO_TARGET_TMPDIR"
                | "CARGO_RUSTC_CURRENT_DIR"
        )
}
