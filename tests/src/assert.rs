//! Assertions on gRPC answers, as a caller would check them.

use tonic::{Code, Status};
use tonic_types::StatusExt;

/// The error of `result`, which must have failed with `code`.
///
/// # Panics
/// When the call succeeded or failed otherwise.
pub fn status<T: std::fmt::Debug>(result: Result<T, Status>, code: Code) -> Status {
    match result {
        Ok(value) => panic!("expected {code:?}, got success: {value:?}"),
        Err(status) => {
            assert_eq!(status.code(), code, "unexpected status: {status:?}");
            assert!(
                !status.message().is_empty(),
                "a status needs a message a person can act on"
            );
            status
        }
    }
}

/// The fields named by the `google.rpc.BadRequest` violations of an `INVALID_ARGUMENT`.
///
/// # Panics
/// When the call did not fail with `INVALID_ARGUMENT` and field violations.
pub fn invalid_fields<T: std::fmt::Debug>(result: Result<T, Status>) -> Vec<String> {
    let status = status(result, Code::InvalidArgument);
    let details = status.get_error_details();
    let bad = details
        .bad_request()
        .unwrap_or_else(|| panic!("no BadRequest details in {status:?}"));
    bad.field_violations
        .iter()
        .map(|v| v.field.clone())
        .collect()
}

/// The `google.rpc.ErrorInfo` a refusal carries (CONTRACT.md "Additions"), when `status`
/// has one in the domain `reseller.v1`: its reason and metadata.
pub fn error_info(status: &Status) -> Option<tonic_types::ErrorInfo> {
    status
        .get_error_details()
        .error_info()
        .filter(|info| info.domain == "reseller.v1")
        .cloned()
}

/// The error of `result`, which must have failed with `code` and the
/// `google.rpc.ErrorInfo` `reason` in the domain `reseller.v1` (README.md "Error
/// reasons").
///
/// # Panics
/// When the call succeeded, or failed with another code or reason.
pub fn refused<T: std::fmt::Debug>(result: Result<T, Status>, code: Code, reason: &str) -> Status {
    let status = status(result, code);
    let info =
        error_info(&status).unwrap_or_else(|| panic!("no reseller.v1 ErrorInfo in {status:?}"));
    assert_eq!(info.reason, reason, "{status:?}");
    status
}
