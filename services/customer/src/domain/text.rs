//! The free-text fields of accounts and reseller customers: the kit's one free-text rule
//! ([`FreeText`]: trimmed, bounded, no control characters) with each field's maximum.

use reseller_kit::text::FreeText;

/// A company name: 1 to 200 characters after trimming, no control characters; parse it
/// with [`FreeText::parse_required`] (a company name is required).
pub type CompanyName = FreeText<200>;

/// A reseller's internal customer reference: 0 to 100 characters after trimming, no
/// control characters (DOMAIN.md "Parties and accounts"); "" means none.
pub type InternalReference = FreeText<100>;

#[cfg(test)]
mod tests {
    use super::*;

    fn reference(input: &str) -> Result<InternalReference, reseller_kit::text::FreeTextError> {
        InternalReference::parse("internal_reference", input)
    }

    #[test]
    fn references_are_trimmed_bounded_and_printable() {
        assert_eq!(reference("  PO-7 ").unwrap().as_str(), "PO-7");
        assert_eq!(reference("").unwrap().as_str(), "");
        assert!(
            reference(&"é".repeat(100)).is_ok(),
            "limit counts characters"
        );
        assert!(reference(&"x".repeat(101)).is_err());
        assert!(reference("a\u{7}b").is_err());
        assert!(reference("a\nb").is_err());
    }

    #[test]
    fn company_names_are_required() {
        assert!(CompanyName::parse_required("company_name", "   ").is_err());
        assert_eq!(
            CompanyName::parse_required("company_name", " Acme GmbH ")
                .unwrap()
                .as_str(),
            "Acme GmbH"
        );
        assert!(CompanyName::parse_required("company_name", &"x".repeat(201)).is_err());
    }
}
