//! Free-text fields: trimmed, bounded, without control characters.

/// Checks a trimmed free-text value of at most `max` characters.
fn parse_text(input: &str, min: usize, max: usize) -> Result<String, String> {
    let s = input.trim();
    let len = s.chars().count();
    if len < min {
        return Err("is required".into());
    }
    if len > max {
        return Err(format!("must be at most {max} characters, got {len}"));
    }
    if let Some(c) = s.chars().find(|c| c.is_control()) {
        return Err(format!(
            "must not contain control characters (found U+{:04X})",
            c as u32
        ));
    }
    Ok(s.to_owned())
}

/// A company name: 1 to 200 characters after trimming, no control characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompanyName(String);

impl CompanyName {
    /// Parses a company name.
    ///
    /// # Errors
    /// When empty, longer than 200 characters, or holding control characters.
    pub fn parse(input: &str) -> Result<Self, String> {
        parse_text(input, 1, 200).map(Self)
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A reseller's internal customer reference: 0 to 100 characters after trimming, no
/// control characters (DOMAIN.md).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InternalReference(String);

impl InternalReference {
    /// Parses a reference; empty means "none".
    ///
    /// # Errors
    /// When longer than 100 characters or holding control characters.
    pub fn parse(input: &str) -> Result<Self, String> {
        parse_text(input, 0, 100).map(Self)
    }

    /// The reference ("" when none).
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_are_trimmed_bounded_and_printable() {
        assert_eq!(
            InternalReference::parse("  PO-7 ").unwrap().as_str(),
            "PO-7"
        );
        assert_eq!(InternalReference::parse("").unwrap().as_str(), "");
        assert!(
            InternalReference::parse(&"é".repeat(100)).is_ok(),
            "limit counts characters"
        );
        assert!(InternalReference::parse(&"x".repeat(101)).is_err());
        assert!(InternalReference::parse("a\u{7}b").is_err());
        assert!(InternalReference::parse("a\nb").is_err());
    }

    #[test]
    fn company_names_are_required() {
        assert!(CompanyName::parse("   ").is_err());
        assert_eq!(
            CompanyName::parse(" Acme GmbH ").unwrap().as_str(),
            "Acme GmbH"
        );
    }
}
