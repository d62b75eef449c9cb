//! Identifiers every service shares, parsed once at the edge (parse, don't validate).
//!
//! Error messages echo the caller's value through [`crate::text::echo`]: cut to 64
//! characters with control characters escaped, so a 10 kB or NUL-laden value gives a
//! short message that is safe to log and to send in a `grpc-message` header.

use std::fmt;

use crate::text::echo;

/// A Knox ID: 6 to 20 ASCII digits (DOMAIN.md "Parties and accounts").
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KnoxId(String);

impl KnoxId {
    /// Parses a Knox ID; surrounding whitespace is ignored.
    ///
    /// # Errors
    /// A message a person can act on when the input is not 6 to 20 digits.
    pub fn parse(input: &str) -> Result<Self, String> {
        let s = input.trim();
        if s.is_empty() {
            return Err("is required".into());
        }
        if !(6..=20).contains(&s.len()) || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!("must be 6 to 20 digits, got \"{}\"", echo(s)));
        }
        Ok(Self(s.to_owned()))
    }

    /// The digits.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The digits, owned.
    pub fn into_string(self) -> String {
        self.0
    }
}

impl fmt::Display for KnoxId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A reseller (tenant) ID: 1 to 64 of `A-Z a-z 0-9 _ -`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ResellerId(String);

impl ResellerId {
    /// Parses a reseller ID; surrounding whitespace is ignored.
    ///
    /// # Errors
    /// A message a person can act on when the input is malformed.
    pub fn parse(input: &str) -> Result<Self, String> {
        let s = input.trim();
        if s.is_empty() {
            return Err("is required".into());
        }
        if s.len() > 64
            || !s
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            return Err(format!(
                "must be 1 to 64 of A-Z, a-z, 0-9, '_' and '-', got \"{}\"",
                echo(s)
            ));
        }
        Ok(Self(s.to_owned()))
    }

    /// The ID.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ResellerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn knox_id_accepts_6_to_20_digits_and_trims() {
        assert_eq!(KnoxId::parse(" 123456 ").unwrap().as_str(), "123456");
        assert!(KnoxId::parse(&"9".repeat(20)).is_ok());
        assert!(KnoxId::parse("12345").is_err());
        assert!(KnoxId::parse(&"9".repeat(21)).is_err());
        assert!(KnoxId::parse("12345a").is_err());
        assert!(
            KnoxId::parse("１２３４５６").is_err(),
            "non-ASCII digits are rejected"
        );
        assert!(KnoxId::parse("").is_err());
    }

    #[test]
    fn reseller_id_allows_its_alphabet_only() {
        assert!(ResellerId::parse("acme_EU-1").is_ok());
        assert!(ResellerId::parse(&"a".repeat(64)).is_ok());
        assert!(ResellerId::parse(&"a".repeat(65)).is_err());
        assert!(ResellerId::parse("acme eu").is_err());
        assert!(ResellerId::parse("acme.eu").is_err());
        assert!(ResellerId::parse("").is_err());
    }

    #[test]
    fn messages_echo_the_value_cut_and_escaped() {
        assert_eq!(
            KnoxId::parse("12").unwrap_err(),
            "must be 6 to 20 digits, got \"12\""
        );
        let err = KnoxId::parse("1000\u{0}00001").unwrap_err();
        assert!(err.contains("1000\\u{0}00001"), "{err}");
        assert!(KnoxId::parse(&"9".repeat(10_000)).unwrap_err().len() < 200);
        let err = ResellerId::parse(&"Ä".repeat(5_000)).unwrap_err();
        assert!(err.len() < 400 && err.contains('…'), "{err}");
        assert!(
            ResellerId::parse("acme\u{1b}[31m")
                .unwrap_err()
                .contains("\\u{1b}")
        );
    }
}
