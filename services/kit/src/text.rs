//! Text from outside: free-text fields ([`FreeText`]), and echoing what a caller sent back
//! in an answer or a message (DOMAIN.md "Devices and uploads": an identifier echoed in
//! an answer is cut to 64 characters with `…`).
//!
//! Anything from outside may hold a NUL (which PostgreSQL text refuses), other control
//! characters (which break a CSV line or a log line) or 10 kB of junk. An echo is safe to
//! store, log and send: control characters are written as Rust escapes (`\u{0}`, `\t`),
//! and the result is at most [`ECHO_MAX_CHARS`] characters.

/// Most characters of an echoed value, the `…` included.
pub const ECHO_MAX_CHARS: usize = 64;

/// `input` as it may be echoed: control characters escaped (`R5\u{0}X`), cut to
/// [`ECHO_MAX_CHARS`] characters ending in `…` when longer.
pub fn echo(input: &str) -> String {
    let pieces = input.chars().map(|c| {
        if c.is_control() {
            c.escape_default().collect::<String>()
        } else {
            c.to_string()
        }
    });
    let mut out = String::new();
    let mut chars = 0;
    let mut rest = pieces.peekable();
    while let Some(piece) = rest.next() {
        let len = piece.chars().count();
        let last = rest.peek().is_none();
        // The last piece may use the final character; any other leaves room for `…`.
        let limit = if last {
            ECHO_MAX_CHARS
        } else {
            ECHO_MAX_CHARS - 1
        };
        if chars + len > limit {
            out.push('…');
            return out;
        }
        out.push_str(&piece);
        chars += len;
    }
    out
}

/// Whether `input` can be stored as PostgreSQL `text` and written to a CSV cell as it is:
/// no control characters (NUL among them).
pub fn is_plain(input: &str) -> bool {
    !input.chars().any(char::is_control)
}

/// A free-text field: trimmed, at most `MAX` characters (Unicode scalar values, not
/// bytes), no control characters (DOMAIN.md "Parties and accounts": the internal customer
/// reference is "0 to 100 characters, trimmed, no control characters"; every other typed
/// text of the product, a company name, an order number, a device model, a search, follows
/// the same rule with its own maximum).
///
/// Being trimmed and plain ([`is_plain`]), it is safe to store as PostgreSQL `text`, to
/// search, and to write to a CSV cell or a log line. The one rule lives here; each field
/// names its maximum in its type (`FreeText<100>` for an internal reference).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct FreeText<const MAX: usize>(String);

impl<const MAX: usize> FreeText<MAX> {
    /// Most characters the field holds.
    pub const MAX_CHARS: usize = MAX;

    /// Parses `input` as the request or event field `field`; surrounding whitespace is
    /// dropped, and empty is allowed (an optional field: "" means none).
    ///
    /// # Errors
    /// [`FreeTextError`] naming `field` when, trimmed, it is longer than `MAX` characters
    /// or holds a control character.
    pub fn parse(field: &'static str, input: &str) -> Result<Self, FreeTextError> {
        let trimmed = input.trim();
        let len = trimmed.chars().count();
        let problem = if len > MAX {
            Some(FreeTextProblem::TooLong { max: MAX, len })
        } else {
            trimmed
                .chars()
                .find(|c| c.is_control())
                .map(|found| FreeTextProblem::ControlCharacter { found })
        };
        match problem {
            Some(problem) => Err(FreeTextError { field, problem }),
            None => Ok(Self(trimmed.to_owned())),
        }
    }

    /// Parses a field that must not be empty once trimmed (a company name).
    ///
    /// # Errors
    /// As [`FreeText::parse`], and [`FreeTextProblem::Missing`] when empty.
    pub fn parse_required(field: &'static str, input: &str) -> Result<Self, FreeTextError> {
        let text = Self::parse(field, input)?;
        if text.is_empty() {
            return Err(FreeTextError {
                field,
                problem: FreeTextProblem::Missing,
            });
        }
        Ok(text)
    }

    /// The text, trimmed.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether it is empty (an optional field left out).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The text, owned.
    pub fn into_string(self) -> String {
        self.0
    }

    /// `Some` text, or `None` when empty (an optional field left out).
    pub fn into_option(self) -> Option<String> {
        (!self.0.is_empty()).then_some(self.0)
    }
}

impl<const MAX: usize> AsRef<str> for FreeText<MAX> {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl<const MAX: usize> std::fmt::Display for FreeText<MAX> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl<const MAX: usize> From<FreeText<MAX>> for String {
    fn from(text: FreeText<MAX>) -> Self {
        text.0
    }
}

/// Why a free-text field was refused, naming the field (its wire name, e.g.
/// `header.order_number`). Shown whole (`order_number must be at most 64 characters, got
/// 65`) in a message that stands alone, such as an upload's rejection or a poison
/// event's reason; a request's field violation carries the field and the
/// [`problem`](Self::problem) apart ([`crate::FieldViolations::check_field`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field} {problem}")]
pub struct FreeTextError {
    /// The field at fault.
    pub field: &'static str,
    /// What is wrong with it.
    pub problem: FreeTextProblem,
}

/// What is wrong with a free-text value. The messages never quote the value, so they
/// stay short whatever was sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FreeTextProblem {
    /// Empty (after trimming) where a value is required.
    #[error("is required")]
    Missing,
    /// Longer than the field holds.
    #[error("must be at most {max} characters, got {len}")]
    TooLong {
        /// The field's maximum, in characters.
        max: usize,
        /// The trimmed value's length, in characters.
        len: usize,
    },
    /// A control character (NUL, tab, line break, escape, DEL…), the first one found.
    #[error("must not contain control characters (found U+{:04X})", u32::from(*found))]
    ControlCharacter {
        /// The character.
        found: char,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_text_is_trimmed_and_counts_characters_not_bytes() {
        let text = FreeText::<100>::parse("internal_reference", "  PO-7 ").unwrap();
        assert_eq!(text.as_str(), "PO-7");
        assert!(
            FreeText::<100>::parse("internal_reference", "")
                .unwrap()
                .is_empty()
        );
        assert!(FreeText::<100>::parse("internal_reference", &"é".repeat(100)).is_ok());
        let err = FreeText::<100>::parse("internal_reference", &"x".repeat(101)).unwrap_err();
        assert_eq!(
            err,
            FreeTextError {
                field: "internal_reference",
                problem: FreeTextProblem::TooLong { max: 100, len: 101 },
            }
        );
        assert_eq!(
            err.to_string(),
            "internal_reference must be at most 100 characters, got 101"
        );
        // The bound applies after trimming.
        assert!(FreeText::<3>::parse("model", "  abc  ").is_ok());
    }

    #[test]
    fn free_text_refuses_control_characters_inside() {
        for bad in [
            "a\u{7}b",
            "a\nb",
            "a\tb",
            "R5\u{0}X",
            "a\u{7f}b",
            "\u{1b}[31m",
        ] {
            let err = FreeText::<64>::parse("order_number", bad).unwrap_err();
            assert!(
                matches!(err.problem, FreeTextProblem::ControlCharacter { .. }),
                "{bad:?}: {err}"
            );
            assert_eq!(err.field, "order_number");
        }
        assert_eq!(
            FreeText::<64>::parse("model", "a\u{0}b")
                .unwrap_err()
                .to_string(),
            "model must not contain control characters (found U+0000)"
        );
        // Surrounding line breaks are whitespace, trimmed like spaces.
        assert_eq!(
            FreeText::<64>::parse("model", " Galaxy\n")
                .unwrap()
                .as_str(),
            "Galaxy"
        );
    }

    #[test]
    fn required_free_text_refuses_blank() {
        let err = FreeText::<200>::parse_required("company_name", "   ").unwrap_err();
        assert_eq!(err.problem, FreeTextProblem::Missing);
        assert_eq!(err.to_string(), "company_name is required");
        assert_eq!(
            FreeText::<200>::parse_required("company_name", " Acme GmbH ")
                .unwrap()
                .as_str(),
            "Acme GmbH"
        );
        assert!(FreeText::<200>::parse_required("company_name", &"x".repeat(201)).is_err());
    }

    #[test]
    fn optional_free_text_is_none_when_empty() {
        assert_eq!(
            FreeText::<128>::parse("client_upload_id", " ")
                .unwrap()
                .into_option(),
            None
        );
        assert_eq!(
            FreeText::<128>::parse("client_upload_id", "r-1")
                .unwrap()
                .into_option(),
            Some("r-1".to_owned())
        );
    }

    #[test]
    fn short_plain_values_are_echoed_as_they_are() {
        assert_eq!(echo("R58M-1"), "R58M-1");
        assert_eq!(echo("Ärzte GmbH"), "Ärzte GmbH");
        assert_eq!(echo(&"x".repeat(64)), "x".repeat(64));
    }

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(echo("R5CW\u{0}10DDD"), "R5CW\\u{0}10DDD");
        assert_eq!(echo("a\tb\n"), "a\\tb\\n");
        assert!(is_plain("Ärzte"));
        assert!(!is_plain("R5\u{0}X"));
        assert!(!is_plain("a\u{7f}"));
    }

    #[test]
    fn long_values_are_cut_to_64_characters_with_an_ellipsis() {
        let cut = echo(&"é".repeat(10_000));
        assert_eq!(cut.chars().count(), 64);
        assert!(cut.ends_with('…'));
        assert_eq!(echo(&"x".repeat(65)).chars().count(), 64);
        // An escape never pushes the echo past the limit.
        let cut = echo(&format!("{}\u{0}", "x".repeat(62)));
        assert_eq!(cut.chars().count(), 63);
        assert!(cut.ends_with('…'), "{cut}");
    }
}
