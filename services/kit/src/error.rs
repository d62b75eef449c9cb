//! The one table that maps what went wrong to a gRPC status (CONTRACT.md "Errors").
//!
//! Services convert their domain errors into [`ApiError`]; `From<ApiError> for Status`
//! is the only place codes are chosen. Bad fields travel as `google.rpc.BadRequest`
//! field violations; internal errors are logged in full and answered generically.
//!
//! Messages are bounded ([`MAX_MESSAGE_BYTES`]): a status travels in HTTP/2 headers
//! (`grpc-message`, percent-encoded, and `grpc-status-details-bin`, base64), and a
//! default client refuses a header list over 16 KiB with a protocol error it reports as
//! `INTERNAL`. Parsers echo a caller's value cut to 64 characters
//! ([`crate::text::echo`]); the bound here is the safety net for any message that
//! still grows with the input.

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
    /// Unknown object, or another tenant's object (answered exactly alike).
    #[error("{0}")]
    NotFound(String),
    /// The object exists already.
    #[error("{0}")]
    AlreadyExists(String),
    /// A rule of the domain forbids this now.
    #[error("{0}")]
    FailedPrecondition(String),
    /// The caller's role may not call this.
    #[error("{0}")]
    PermissionDenied(String),
    /// No usable credentials.
    #[error("{0}")]
    Unauthenticated(String),
    /// Too large, or shedding load.
    #[error("{0}")]
    ResourceExhausted(String),
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

    /// `"<what> <id> not found"`.
    pub fn not_found(what: &str, id: impl std::fmt::Display) -> Self {
        Self::NotFound(format!("{what} {id} not found"))
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
            ApiError::NotFound(_) => Status::not_found(message),
            ApiError::AlreadyExists(_) => Status::already_exists(message),
            ApiError::FailedPrecondition(_) => Status::failed_precondition(message),
            ApiError::PermissionDenied(_) => Status::permission_denied(message),
            ApiError::Unauthenticated(_) => Status::unauthenticated(message),
            ApiError::ResourceExhausted(_) => Status::resource_exhausted(message),
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
        let status = Status::from(ApiError::NotFound(huge));
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
    fn internal_errors_do_not_leak() {
        let status = Status::from(ApiError::Internal(anyhow::anyhow!("secret detail")));
        assert_eq!(status.code(), Code::Internal);
        assert!(!status.message().contains("secret"));
    }
}
