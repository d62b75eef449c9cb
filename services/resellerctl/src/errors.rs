//! What can go wrong, said in plain words, and the exit code for each.
//!
//! A gRPC status prints as `<code in words>: <message>`, followed by the
//! `google.rpc.BadRequest` field violations when the service sent them, and a hint where
//! one helps (a missing or rejected token, a role that may not call the RPC). A refusal
//! with a `google.rpc.ErrorInfo` reason (README.md "Error reasons") prints the reason and
//! the next step as a resellerctl command ([`next_step`]).
//!
//! Exit codes (also in `resellerctl --help`), so scripts can tell every case apart:
//!
//! | code | meaning |
//! |---|---|
//! | 0 | success; for an upload or a dry run: every device accepted (valid) |
//! | 1 | the portal refused or failed, or a local file did (unreadable, refused, no devices) |
//! | 2 | a usage mistake (including a missing token) |
//! | 3 | the portal cannot be reached |
//! | 4 | an upload or dry run that accepted some devices and rejected others |
//! | 5 | an upload or dry run that accepted no device: every one was rejected |
//!
//! 4 and 5 are not errors: the result is printed and the rejects file written as for 0.

use std::fmt;
use std::path::{Path, PathBuf};

use reseller_kit::Reason;
use reseller_kit::error::ERROR_DOMAIN;
use tonic::{Code, Status};
use tonic_types::{ErrorInfo, StatusExt};

/// Exit code: the portal refused or failed the request, or a local file failed.
pub const EXIT_FAILURE: u8 = 1;
/// Exit code: the command line or its settings are wrong.
pub const EXIT_USAGE: u8 = 2;
/// Exit code: the portal could not be reached.
pub const EXIT_UNREACHABLE: u8 = 3;
/// Exit code: an upload (or dry run) accepted some devices and rejected others.
pub const EXIT_SOME_REJECTED: u8 = 4;
/// Exit code: an upload (or dry run) accepted no device, every one was rejected.
pub const EXIT_NOTHING_ACCEPTED: u8 = 5;

/// The exit codes as `--help` lists them.
pub const EXIT_CODES_HELP: &str = "\
Exit codes:
  0  success; for devices upload and --dry-run: every device accepted (valid)
  1  the portal refused or failed, or a local file did (unreadable, refused, no devices)
  2  a usage mistake (including a missing token)
  3  the portal cannot be reached
  4  devices upload / --dry-run: some devices accepted, some rejected (see the rejects file)
  5  devices upload / --dry-run: no device accepted, every one rejected";

/// How a command that ran to its end went: success, or an upload whose devices were not
/// all accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Everything asked for was done.
    Success,
    /// Some devices were accepted, some rejected.
    SomeRejected,
    /// Devices were sent and every one was rejected.
    NothingAccepted,
}

impl Outcome {
    /// The outcome of an upload (or dry run) that accepted `accepted` devices and
    /// rejected `rejected`.
    pub fn of_upload(accepted: i64, rejected: i64) -> Self {
        match (accepted, rejected) {
            (_, 0) => Outcome::Success,
            (0, _) => Outcome::NothingAccepted,
            _ => Outcome::SomeRejected,
        }
    }

    /// The process exit code.
    pub fn exit_code(self) -> u8 {
        match self {
            Outcome::Success => 0,
            Outcome::SomeRejected => EXIT_SOME_REJECTED,
            Outcome::NothingAccepted => EXIT_NOTHING_ACCEPTED,
        }
    }
}

/// Why a command failed.
#[derive(Debug)]
pub enum CliError {
    /// The command line or a setting is wrong.
    Usage(String),
    /// No connection to the portal.
    Unreachable {
        /// The address tried.
        addr: String,
        /// Why, as the transport said.
        cause: String,
    },
    /// The portal answered with an error.
    Status(Status),
    /// A local file could not be read or written.
    File {
        /// The file.
        path: PathBuf,
        /// What failed.
        cause: String,
    },
    /// Anything else (a deadline passed, the output could not be written).
    Other(String),
}

impl CliError {
    /// A failure on a local file.
    pub fn file(path: &Path, cause: impl fmt::Display) -> Self {
        Self::File {
            path: path.to_owned(),
            cause: cause.to_string(),
        }
    }

    /// A gRPC failure, told apart into "not reachable" and "the portal said no".
    pub fn status(addr: &str, status: Status) -> Self {
        if is_transport_failure(&status) {
            Self::Unreachable {
                addr: addr.to_owned(),
                cause: {
                    use std::error::Error as _;
                    status
                        .source()
                        .map(transport_cause)
                        .unwrap_or_else(|| status.message().to_owned())
                },
            }
        } else {
            Self::Status(status)
        }
    }

    /// The process exit code for this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Usage(_) => EXIT_USAGE,
            CliError::Unreachable { .. } => EXIT_UNREACHABLE,
            _ => EXIT_FAILURE,
        }
    }

    /// True when the error is only that standard output was closed (`| head`).
    pub fn is_broken_pipe(&self) -> bool {
        matches!(self, CliError::Other(message) if message == BROKEN_PIPE)
    }
}

const BROKEN_PIPE: &str = "standard output was closed";

impl From<std::io::Error> for CliError {
    /// Errors writing standard output.
    fn from(err: std::io::Error) -> Self {
        if err.kind() == std::io::ErrorKind::BrokenPipe {
            CliError::Other(BROKEN_PIPE.into())
        } else {
            CliError::Other(format!("cannot write the output: {err}"))
        }
    }
}

impl From<csv::Error> for CliError {
    /// Errors writing CSV to standard output.
    fn from(err: csv::Error) -> Self {
        match err.into_kind() {
            csv::ErrorKind::Io(io) => io.into(),
            other => CliError::Other(format!("cannot write CSV: {other:?}")),
        }
    }
}

impl From<serde_json::Error> for CliError {
    fn from(err: serde_json::Error) -> Self {
        match err.io_error_kind() {
            Some(std::io::ErrorKind::BrokenPipe) => CliError::Other(BROKEN_PIPE.into()),
            _ => CliError::Other(format!("cannot write JSON: {err}")),
        }
    }
}

/// A status code in words.
pub fn code_words(code: Code) -> &'static str {
    match code {
        Code::Ok => "ok",
        Code::Cancelled => "cancelled",
        Code::Unknown => "unknown error",
        Code::InvalidArgument => "invalid argument",
        Code::DeadlineExceeded => "deadline exceeded",
        Code::NotFound => "not found",
        Code::AlreadyExists => "already exists",
        Code::PermissionDenied => "permission denied",
        Code::ResourceExhausted => "resource exhausted",
        Code::FailedPrecondition => "failed precondition",
        Code::Aborted => "aborted",
        Code::OutOfRange => "out of range",
        Code::Unimplemented => "not implemented",
        Code::Internal => "internal error",
        Code::Unavailable => "unavailable",
        Code::DataLoss => "data loss",
        Code::Unauthenticated => "not authenticated",
    }
}

/// Statuses tonic makes up itself when the connection fails (as opposed to statuses
/// the portal sent): they carry the transport error as their source.
fn is_transport_failure(status: &Status) -> bool {
    use std::error::Error as _;
    matches!(
        status.code(),
        Code::Unavailable | Code::Unknown | Code::Cancelled
    ) && status
        .source()
        .is_some_and(|s| s.downcast_ref::<tonic::transport::Error>().is_some())
}

/// The innermost useful words of a transport failure ("Connection refused (os error
/// 111)").
pub fn transport_cause(err: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![err.to_string()];
    let mut source = err.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        source = s.source();
    }
    // "transport error: tcp connect error: Connection refused": the last part says the
    // most; keep the chain short but complete.
    parts
        .into_iter()
        .filter(|p| p != "transport error" && !p.is_empty())
        .collect::<Vec<_>>()
        .join(": ")
}

fn hint(code: Code) -> Option<&'static str> {
    match code {
        Code::Unauthenticated => Some(
            "pass a valid token with --token or RESELLER_TOKEN; \
             `resellerctl token --role ROLE --sub ID` mints a development token from AUTH_JWT_SECRET",
        ),
        Code::PermissionDenied => Some(
            "this command needs a token of another role (admin: accounts; reseller: customers, \
             devices, uploads; customer or msp: approvals; msp: msp; customer: portal)",
        ),
        _ => None,
    }
}

/// The next step for a refusal, as the resellerctl command that takes it (README.md
/// "Error reasons"), filled in with the objects the refusal's metadata names; `None`
/// when there is nothing to do.
pub fn next_step(info: &ErrorInfo) -> Option<String> {
    let reason = Reason::parse(&info.reason)?;
    // The Knox ID the refusal is about, whichever field named it.
    let knox = |placeholder: &str| {
        info.metadata
            .get("customer_knox_id")
            .or_else(|| info.metadata.get("knox_id"))
            .cloned()
            .unwrap_or_else(|| placeholder.to_owned())
    };
    let step = match reason {
        Reason::AccountNotFound => format!(
            "check the Knox ID; a platform admin registers it: \
             resellerctl accounts register {} --name NAME --country CC",
            knox("KNOX_ID")
        ),
        Reason::CustomerNotFound => {
            format!(
                "add it as your customer: resellerctl customers add {}",
                knox("KNOX_ID")
            )
        }
        Reason::LinkNotFound => "see the customers you link: resellerctl msp customers".into(),
        Reason::UploadNotFound => "see your uploads: resellerctl uploads list".into(),
        Reason::DeletionNotFound => "see your deletions: resellerctl deletions list".into(),
        Reason::DeviceNotFound => {
            "check the identifier; see your uploads: resellerctl uploads list".into()
        }
        Reason::AccountAlreadyRegistered => {
            format!("see it: resellerctl accounts get {}", knox("KNOX_ID"))
        }
        Reason::CustomerAlreadyAdded => {
            format!("see it: resellerctl customers get {}", knox("KNOX_ID"))
        }
        Reason::CustomerAlreadyLinked => {
            "see the customers you link: resellerctl msp customers".into()
        }
        Reason::ApprovalNotGiven => return None,
        Reason::CustomerNotActive => "the customer approves you, with its own token: \
             resellerctl approvals approve RESELLER_ID"
            .into(),
        Reason::AccountIsMsp => format!(
            "link a customer account instead; see an account's kind: resellerctl accounts get {}",
            knox("KNOX_ID")
        ),
        Reason::NotAnMsp => format!(
            "a platform admin registers the account as an MSP: \
             resellerctl accounts register {} --kind msp --name NAME --country CC",
            knox("KNOX_ID")
        ),
        Reason::LinkedToAnotherMsp => format!(
            "the customer leaves its MSP first, with its own token: resellerctl msp delink {}",
            knox("KNOX_ID")
        ),
        Reason::FullyManagedCannotDelink => {
            let customer = knox("CUSTOMER_KNOX_ID");
            format!(
                "switch it first: resellerctl msp jointly {customer}, \
                 then resellerctl msp delink {customer}"
            )
        }
        Reason::CustomerNotLinked => {
            format!(
                "link it first: resellerctl msp link {}",
                knox("CUSTOMER_KNOX_ID")
            )
        }
        Reason::MessageTooLarge => {
            "send smaller batches: resellerctl devices upload FILE --batch-size N (smaller N)"
                .into()
        }
        Reason::TooManyDownloads => "run the same command again shortly".into(),
    };
    Some(step)
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CliError::Usage(message) | CliError::Other(message) => f.write_str(message),
            CliError::Unreachable { addr, cause } => {
                write!(f, "cannot reach the reseller portal at {addr}: {cause}")
            }
            CliError::File { path, cause } => write!(f, "{}: {cause}", path.display()),
            CliError::Status(status) => {
                let message = status.message().trim();
                let violations = status
                    .get_error_details()
                    .bad_request()
                    .map(|bad| bad.field_violations.clone())
                    .unwrap_or_default();
                if !violations.is_empty() {
                    // The message only repeats the fields; name each on its own line.
                    write!(f, "{}:", code_words(status.code()))?;
                    for v in &violations {
                        write!(f, "\n  {}: {}", v.field, v.description)?;
                    }
                } else if message.is_empty() {
                    write!(f, "{}", code_words(status.code()))?;
                } else {
                    write!(f, "{}: {message}", code_words(status.code()))?;
                }
                if let Some(info) = status
                    .get_error_details()
                    .error_info()
                    .filter(|info| info.domain == ERROR_DOMAIN)
                {
                    write!(f, "\nreason: {}", info.reason)?;
                    if let Some(step) = next_step(info) {
                        write!(f, "\nnext step: {step}")?;
                    }
                }
                if let Some(hint) = hint(status.code()) {
                    write!(f, "\nhint: {hint}")?;
                }
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic_types::ErrorDetails;

    #[test]
    fn statuses_read_in_plain_words_with_their_fields() {
        let err = CliError::status("x", Status::not_found("customer 123 not found"));
        assert_eq!(err.to_string(), "not found: customer 123 not found");
        assert_eq!(err.exit_code(), EXIT_FAILURE);

        let mut details = ErrorDetails::new();
        details.add_bad_request_violation("knox_id", "must be 6 to 20 digits, got \"12\"");
        let status = Status::with_error_details(Code::InvalidArgument, "invalid request", details);
        let text = CliError::status("x", status).to_string();
        assert_eq!(
            text,
            "invalid argument:\n  knox_id: must be 6 to 20 digits, got \"12\""
        );
    }

    #[test]
    fn uploads_exit_with_what_happened_to_their_devices() {
        assert_eq!(Outcome::of_upload(10, 0).exit_code(), 0);
        assert_eq!(Outcome::of_upload(9, 1).exit_code(), EXIT_SOME_REJECTED);
        assert_eq!(Outcome::of_upload(0, 10).exit_code(), EXIT_NOTHING_ACCEPTED);
        // The codes are distinct from the failures'.
        let codes = [
            0,
            EXIT_FAILURE,
            EXIT_USAGE,
            EXIT_UNREACHABLE,
            EXIT_SOME_REJECTED,
            EXIT_NOTHING_ACCEPTED,
        ];
        for (i, code) in codes.iter().enumerate() {
            assert!(!codes[i + 1..].contains(code));
            assert!(EXIT_CODES_HELP.contains(&format!("  {code}  ")), "{code}");
        }
    }

    #[test]
    fn a_refusal_prints_its_reason_and_the_command_to_run_next() {
        let status = Status::from(reseller_kit::ApiError::from(
            reseller_kit::Refusal::new(
                Reason::FullyManagedCannotDelink,
                "customer 42 is fully managed",
            )
            .with("customer_knox_id", "4200000001"),
        ));
        assert_eq!(
            CliError::status("x", status).to_string(),
            "failed precondition: customer 42 is fully managed\n\
             reason: FULLY_MANAGED_CANNOT_DELINK\n\
             next step: switch it first: resellerctl msp jointly 4200000001, \
             then resellerctl msp delink 4200000001"
        );
    }

    #[test]
    fn every_reason_but_a_void_revoke_has_a_next_step() {
        for &reason in Reason::ALL {
            let info = ErrorInfo::new(
                reason.as_str(),
                ERROR_DOMAIN,
                std::collections::HashMap::new(),
            );
            let step = next_step(&info);
            assert_eq!(
                step.is_none(),
                reason == Reason::ApprovalNotGiven,
                "{reason}: {step:?}"
            );
        }
    }

    #[test]
    fn a_rejected_token_comes_with_a_hint() {
        let text = CliError::status("x", Status::unauthenticated("the bearer token has expired"))
            .to_string();
        assert!(text.starts_with("not authenticated: the bearer token has expired\nhint:"));
    }
}
