//! The one table that maps what went wrong to a gRPC status (CONTRACT.md "Errors").
//!
//! Services convert their domain errors into [`ApiError`]; `From<ApiError> for Status`
//! is the only place codes are chosen. Bad fields travel as `google.rpc.BadRequest`
//! field violations; internal errors are logged in full and answered generically.
//! Every refusal (`NOT_FOUND`, `ALREADY_EXISTS`, `FAILED_PRECONDITION`,
//! `RESOURCE_EXHAUSTED`) is built from a [`Reason`], which picks its code and travels as
//! `google.rpc.ErrorInfo` (domain [`ERROR_DOMAIN`]): a refusal without a reason cannot be
//! written.
//!
//! Messages are bounded ([`MAX_MESSAGE_BYTES`]): a status travels in HTTP/2 headers
//! (`grpc-message`, percent-encoded, and `grpc-status-details-bin`, base64), and a
//! default client refuses a header list over 16 KiB with a protocol error it reports as
//! `INTERNAL`. Parsers echo a caller's value cut to 64 characters
//! ([`crate::text::echo`]); the bound here is the safety net for any message that
//! still grows with the input.

use std::collections::BTreeMap;

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

use crate::text::FreeTextError;

/// Most bytes of a status message, and of one field violation's description; longer
/// ones are cut at a character boundary and end in `…`.
pub const MAX_MESSAGE_BYTES: usize = 1000;

/// `text` cut to at most [`MAX_MESSAGE_BYTES`] bytes (at a character boundary, the `…`
/// included), or unchanged when it fits.
pub fn bounded(text: String) -> String {
    if text.len() <= MAX_MESSAGE_BYTES {
        return text;
    }
    let ellipsis = '…'.len_utf8();
    let mut end = MAX_MESSAGE_BYTES - ellipsis;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let mut cut = text;
    cut.truncate(end);
    cut.push('…');
    cut
}

/// The `domain` of every `google.rpc.ErrorInfo` the services send (CONTRACT.md
/// "Additions").
pub const ERROR_DOMAIN: &str = "reseller.v1";

/// Declares [`Reason`] from one list, so every reason has its name and code, and is in
/// [`Reason::ALL`] (which the README test walks) by construction.
macro_rules! reasons {
    ($($(#[doc = $doc:literal])* $variant:ident = $name:literal, $code:ident;)*) => {
        /// Why a request was refused, machine-readable: the `reason` of the
        /// `google.rpc.ErrorInfo` every `NOT_FOUND`, `ALREADY_EXISTS`,
        /// `FAILED_PRECONDITION` and `RESOURCE_EXHAUSTED` carries (CONTRACT.md
        /// "Additions"). Each reason belongs to one code ([`Reason::code`]). The list is
        /// part of the contract: README.md "Error reasons" documents each (name, code,
        /// when, what to do), and a test keeps the two alike.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Reason {
            $($(#[doc = $doc])* $variant,)*
        }

        impl Reason {
            /// Every reason, in the order README.md "Error reasons" lists them.
            pub const ALL: &'static [Reason] = &[$(Reason::$variant,)*];

            /// The UPPER_SNAKE name sent as `ErrorInfo.reason`.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Reason::$variant => $name,)*
                }
            }

            /// The one gRPC code a refusal for this reason answers with.
            pub fn code(self) -> Code {
                match self {
                    $(Reason::$variant => Code::$code,)*
                }
            }
        }
    };
}

reasons! {
    /// `NOT_FOUND`: no registered account has the Knox ID (or none of the kind the call
    /// needs). Check the Knox ID; a platform admin registers accounts.
    AccountNotFound = "ACCOUNT_NOT_FOUND", NotFound;
    /// `NOT_FOUND`: the reseller has not added the account as a customer (another
    /// reseller's customer reads alike). Add it as a customer first.
    CustomerNotFound = "CUSTOMER_NOT_FOUND", NotFound;
    /// `NOT_FOUND`: the MSP does not manage the customer (no live link the caller may
    /// see; another MSP's link reads alike). List the MSP's customers.
    LinkNotFound = "LINK_NOT_FOUND", NotFound;
    /// `NOT_FOUND`: the reseller has no upload with that ID. List the uploads.
    UploadNotFound = "UPLOAD_NOT_FOUND", NotFound;
    /// `NOT_FOUND`: the reseller has no deletion with that ID. List the deletions.
    DeletionNotFound = "DELETION_NOT_FOUND", NotFound;
    /// `NOT_FOUND`: no device the reseller uploaded has the identifier (another
    /// reseller's device reads alike). Check the identifier.
    DeviceNotFound = "DEVICE_NOT_FOUND", NotFound;
    /// `ALREADY_EXISTS`: an account with the Knox ID is registered already.
    AccountAlreadyRegistered = "ACCOUNT_ALREADY_REGISTERED", AlreadyExists;
    /// `ALREADY_EXISTS`: the reseller added the customer already.
    CustomerAlreadyAdded = "CUSTOMER_ALREADY_ADDED", AlreadyExists;
    /// `ALREADY_EXISTS`: the calling MSP links the customer already.
    CustomerAlreadyLinked = "CUSTOMER_ALREADY_LINKED", AlreadyExists;
    /// `FAILED_PRECONDITION`: the account has not approved the reseller, so there is no
    /// approval to revoke. Nothing to do.
    ApprovalNotGiven = "APPROVAL_NOT_GIVEN", FailedPrecondition;
    /// `FAILED_PRECONDITION`: devices go only to an active customer, and this one has
    /// not approved the reseller yet or revoked its approval (metadata `status`). The
    /// customer approves the reseller.
    CustomerNotActive = "CUSTOMER_NOT_ACTIVE", FailedPrecondition;
    /// `FAILED_PRECONDITION`: the account is an MSP, and an MSP is never a managed
    /// customer. Link a customer account.
    AccountIsMsp = "ACCOUNT_IS_MSP", FailedPrecondition;
    /// `FAILED_PRECONDITION`: the calling account is not a registered MSP. A platform
    /// admin registers it as an MSP.
    NotAnMsp = "NOT_AN_MSP", FailedPrecondition;
    /// `FAILED_PRECONDITION`: another MSP manages the customer. The customer leaves that
    /// MSP first.
    LinkedToAnotherMsp = "LINKED_TO_ANOTHER_MSP", FailedPrecondition;
    /// `FAILED_PRECONDITION`: a fully managed customer cannot be delinked. Switch it to
    /// jointly managed first.
    FullyManagedCannotDelink = "FULLY_MANAGED_CANNOT_DELINK", FailedPrecondition;
    /// `FAILED_PRECONDITION`: devices move only to a customer the MSP links, and it does
    /// not link this one (or delinked it). Link it first.
    CustomerNotLinked = "CUSTOMER_NOT_LINKED", FailedPrecondition;
    /// `RESOURCE_EXHAUSTED`: one request message (or one message of the upload stream)
    /// is over the size limit. Send smaller batches.
    MessageTooLarge = "MESSAGE_TOO_LARGE", ResourceExhausted;
    /// `RESOURCE_EXHAUSTED`: every CSV download slot is taken. Retry shortly.
    TooManyDownloads = "TOO_MANY_DOWNLOADS", ResourceExhausted;
}

impl Reason {
    /// The reason named `name` (an `ErrorInfo.reason`), if it is one of ours.
    pub fn parse(name: &str) -> Option<Reason> {
        Reason::ALL.iter().copied().find(|r| r.as_str() == name)
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A refusal: the reason (which picks the code), a message a person can act on, and
/// the `ErrorInfo.metadata` that names the objects involved (e.g. `knox_id`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// Why, machine-readable.
    pub reason: Reason,
    /// The state and the next step, in the domain's words.
    pub message: String,
    /// `ErrorInfo.metadata`: the objects involved, by the request's field names.
    pub metadata: BTreeMap<String, String>,
}

impl Refusal {
    /// A refusal for `reason`, said by `message`, with no metadata yet.
    pub fn new(reason: Reason, message: impl Into<String>) -> Self {
        Self {
            reason,
            message: message.into(),
            metadata: BTreeMap::new(),
        }
    }

    /// Adds `key: value` to the `ErrorInfo.metadata`.
    pub fn with(mut self, key: &str, value: impl std::fmt::Display) -> Self {
        self.metadata.insert(key.to_owned(), value.to_string());
        self
    }
}

impl From<Refusal> for ApiError {
    fn from(refusal: Refusal) -> Self {
        ApiError::Refused(refusal)
    }
}

/// One bad field of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldViolation {
    /// The request field, e.g. `knox_id` or `header.target_knox_id`.
    pub field: String,
    /// What is wrong with it, for a person.
    pub description: String,
}

/// Everything a handler can answer besides success.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Malformed input; names the fields at fault.
    #[error("invalid request: {}", describe(.0))]
    InvalidArgument(Vec<FieldViolation>),
    /// Refused for a [`Reason`], which picks the code: an unknown object or another
    /// tenant's (answered exactly alike, `NOT_FOUND`), one that exists already
    /// (`ALREADY_EXISTS`), a rule of the domain that forbids it now
    /// (`FAILED_PRECONDITION`), too large or shedding load (`RESOURCE_EXHAUSTED`).
    #[error("{}", .0.message)]
    Refused(Refusal),
    /// The caller's role may not call this.
    #[error("{0}")]
    PermissionDenied(String),
    /// No usable credentials.
    #[error("{0}")]
    Unauthenticated(String),
    /// A dependency (PostgreSQL, NATS, another service) is down.
    #[error("{0}")]
    Unavailable(String),
    /// A bug or an unexpected failure; logged, never shown.
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

fn describe(violations: &[FieldViolation]) -> String {
    violations
        .iter()
        .map(|v| format!("{} {}", v.field, v.description))
        .collect::<Vec<_>>()
        .join("; ")
}

impl ApiError {
    /// One bad field.
    pub fn invalid(field: impl Into<String>, description: impl Into<String>) -> Self {
        Self::InvalidArgument(vec![FieldViolation {
            field: field.into(),
            description: description.into(),
        }])
    }

    /// A refusal for `reason` with no metadata ([`Refusal::with`] adds some).
    pub fn refused(reason: Reason, message: impl Into<String>) -> Self {
        Self::Refused(Refusal::new(reason, message))
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(err: sqlx::Error) -> Self {
        // The same rule as start-up's (`db::is_transient`): the server unreachable,
        // restarting (57P01 admin_shutdown, 57P03 cannot_connect_now) or out of
        // connections is worth a retry, so the caller gets UNAVAILABLE, not INTERNAL.
        if crate::db::is_transient(&err)
            || matches!(
                err,
                sqlx::Error::PoolClosed | sqlx::Error::Io(_) | sqlx::Error::Tls(_)
            )
        {
            tracing::warn!(error = %err, "database unavailable");
            Self::Unavailable("the database is unavailable, retry later".into())
        } else {
            Self::Internal(err.into())
        }
    }
}

/// A bad free-text field of a request: `INVALID_ARGUMENT` naming it.
impl From<FreeTextError> for ApiError {
    fn from(err: FreeTextError) -> Self {
        Self::invalid(err.field, err.problem.to_string())
    }
}

impl From<ApiError> for Status {
    fn from(err: ApiError) -> Self {
        let message = bounded(err.to_string());
        match err {
            ApiError::InvalidArgument(violations) => {
                let mut details = ErrorDetails::new();
                for v in violations {
                    details.add_bad_request_violation(v.field, bounded(v.description));
                }
                Status::with_error_details(Code::InvalidArgument, message, details)
            }
            ApiError::Refused(refusal) => {
                let metadata: std::collections::HashMap<String, String> = refusal
                    .metadata
                    .into_iter()
                    .map(|(key, value)| (key, bounded(value)))
                    .collect();
                let details =
                    ErrorDetails::with_error_info(refusal.reason.as_str(), ERROR_DOMAIN, metadata);
                Status::with_error_details(refusal.reason.code(), message, details)
            }
            ApiError::PermissionDenied(_) => Status::permission_denied(message),
            ApiError::Unauthenticated(_) => Status::unauthenticated(message),
            ApiError::Unavailable(_) => Status::unavailable(message),
            ApiError::Internal(err) => {
                tracing::error!(error = ?err, "internal error");
                Status::internal("internal error; it has been logged")
            }
        }
    }
}

/// Why a service's command failed: a rule of its domain refused it (`E`, which the
/// service maps with its `From<E> for ApiError`), or the database failed. Domain errors
/// stay free of I/O; repositories return this, so a handler maps both with one `?`.
#[derive(Debug, thiserror::Error)]
pub enum CommandError<E> {
    /// A rule of the domain refused the command.
    #[error(transparent)]
    Refused(E),
    /// The database failed.
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

impl<E: Into<ApiError>> From<CommandError<E>> for ApiError {
    fn from(err: CommandError<E>) -> Self {
        match err {
            CommandError::Refused(refused) => refused.into(),
            CommandError::Database(db) => db.into(),
        }
    }
}

/// Collects the violations of every field of a request, so one answer names them all.
#[derive(Debug, Default)]
pub struct FieldViolations(Vec<FieldViolation>);

impl FieldViolations {
    /// An empty collection.
    pub fn new() -> Self {
        Self::default()
    }

    /// Keeps the parsed value, or records why `field` is bad.
    pub fn check<T>(&mut self, field: &str, parsed: Result<T, String>) -> Option<T> {
        match parsed {
            Ok(value) => Some(value),
            Err(description) => {
                self.add(field, description);
                None
            }
        }
    }

    /// Keeps the parsed free text, or records why it is bad under the field its error
    /// names ([`FreeTextError::field`]).
    pub fn check_field<T>(&mut self, parsed: Result<T, FreeTextError>) -> Option<T> {
        match parsed {
            Ok(value) => Some(value),
            Err(err) => {
                self.add(err.field, err.problem.to_string());
                None
            }
        }
    }

    /// Records a violation.
    pub fn add(&mut self, field: &str, description: impl Into<String>) {
        self.0.push(FieldViolation {
            field: field.to_owned(),
            description: description.into(),
        });
    }

    /// `Ok` when no field was bad.
    ///
    /// # Errors
    /// [`ApiError::InvalidArgument`] with every violation recorded.
    pub fn finish(self) -> Result<(), ApiError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(ApiError::InvalidArgument(self.0))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_argument_carries_bad_request_field_violations() {
        let status = Status::from(ApiError::invalid("knox_id", "must be 6 to 20 digits"));
        assert_eq!(status.code(), Code::InvalidArgument);
        let details = status.get_error_details();
        let bad = details.bad_request().expect("BadRequest detail");
        assert_eq!(bad.field_violations[0].field, "knox_id");
    }

    #[test]
    fn messages_and_descriptions_are_bounded() {
        let huge = format!("got {}", "Ä".repeat(10_000));
        let status = Status::from(ApiError::invalid("knox_id", huge.clone()));
        assert!(status.message().len() <= MAX_MESSAGE_BYTES);
        assert!(status.message().ends_with('…'));
        let details = status.get_error_details();
        let bad = details.bad_request().expect("BadRequest detail");
        assert!(bad.field_violations[0].description.len() <= MAX_MESSAGE_BYTES);
        let status = Status::from(ApiError::refused(Reason::CustomerNotFound, huge));
        assert!(status.message().len() <= MAX_MESSAGE_BYTES);
        // Short messages are left alone.
        assert_eq!(
            bounded("customer 1 not found".into()),
            "customer 1 not found"
        );
    }

    #[test]
    fn free_text_errors_are_violations_of_the_field_they_name() {
        use crate::text::FreeText;
        let mut v = FieldViolations::new();
        assert_eq!(
            v.check_field(FreeText::<64>::parse("header.order_number", "PO-1"))
                .map(FreeText::into_string),
            Some("PO-1".to_owned())
        );
        assert!(
            v.check_field(FreeText::<64>::parse(
                "header.order_number",
                &"x".repeat(65)
            ))
            .is_none()
        );
        let Err(ApiError::InvalidArgument(violations)) = v.finish() else {
            panic!("expected a violation");
        };
        assert_eq!(
            violations,
            vec![FieldViolation {
                field: "header.order_number".into(),
                description: "must be at most 64 characters, got 65".into(),
            }]
        );
        let err = ApiError::from(FreeText::<100>::parse("internal_reference", "a\nb").unwrap_err());
        assert!(
            matches!(&err, ApiError::InvalidArgument(v) if v[0].field == "internal_reference"),
            "{err:?}"
        );
    }

    #[test]
    fn refusals_carry_their_reason_and_code_as_error_info() {
        let status = Status::from(ApiError::from(
            Refusal::new(
                Reason::FullyManagedCannotDelink,
                "customer 42 is fully managed",
            )
            .with("customer_knox_id", 42),
        ));
        assert_eq!(status.code(), Code::FailedPrecondition);
        assert_eq!(status.message(), "customer 42 is fully managed");
        let details = status.get_error_details();
        let info = details.error_info().expect("ErrorInfo detail");
        assert_eq!(info.reason, "FULLY_MANAGED_CANNOT_DELINK");
        assert_eq!(info.domain, "reseller.v1");
        assert_eq!(info.metadata["customer_knox_id"], "42");
    }

    #[test]
    fn reasons_are_distinct_upper_snake_refusal_codes() {
        let refusal_codes = [
            Code::NotFound,
            Code::AlreadyExists,
            Code::FailedPrecondition,
            Code::ResourceExhausted,
        ];
        for (i, reason) in Reason::ALL.iter().enumerate() {
            let name = reason.as_str();
            assert!(
                name.chars().all(|c| c.is_ascii_uppercase() || c == '_'),
                "{name}"
            );
            assert!(refusal_codes.contains(&reason.code()), "{name}");
            assert_eq!(Reason::parse(name), Some(*reason));
            assert!(!Reason::ALL[i + 1..].contains(reason), "{name} twice");
        }
    }

    /// The list of reasons is part of the contract: README.md documents every one, with
    /// its code, in the order of [`Reason::ALL`].
    #[test]
    fn the_readme_documents_every_reason_with_its_code() {
        let readme = include_str!("../../../README.md");
        let section = readme
            .split("## Error reasons")
            .nth(1)
            .expect("README.md has an \"Error reasons\" section");
        let section = section.split("\n## ").next().unwrap_or(section);
        let mut at = 0;
        for &reason in Reason::ALL {
            let row = format!("| `{}` | `{}` |", reason.as_str(), code_name(reason.code()));
            let found = section[at..]
                .find(&row)
                .unwrap_or_else(|| panic!("README.md lacks the row {row} (in order)"));
            at += found + row.len();
        }
    }

    fn code_name(code: Code) -> &'static str {
        match code {
            Code::NotFound => "NOT_FOUND",
            Code::AlreadyExists => "ALREADY_EXISTS",
            Code::FailedPrecondition => "FAILED_PRECONDITION",
            Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
            other => panic!("not a refusal code: {other:?}"),
        }
    }

    #[test]
    fn internal_errors_do_not_leak() {
        let status = Status::from(ApiError::Internal(anyhow::anyhow!("secret detail")));
        assert_eq!(status.code(), Code::Internal);
        assert!(!status.message().contains("secret"));
    }
}
