//! The search of the Customers page and its `LIKE` pattern.

use reseller_kit::text::{FreeText, FreeTextError};

/// The longest query worth running: no searched field is longer (company names are at
/// most 200 characters), and a match never spans two fields.
pub const MAX_QUERY_CHARS: usize = 200;

/// A search of the Customers page: a case-insensitive substring of the company name, the
/// internal reference or the Knox ID. Empty matches every row.
///
/// It is free text ([`FreeText`]): surrounding whitespace is ignored, as in any search
/// box; control characters are refused (no searched field holds any, and the stored
/// search text separates fields with one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchQuery(FreeText<MAX_QUERY_CHARS>);

impl SearchQuery {
    /// Parses the request field `query`.
    ///
    /// # Errors
    /// [`FreeTextError`] naming `query` when longer than [`MAX_QUERY_CHARS`] or holding
    /// control characters.
    pub fn parse(input: &str) -> Result<Self, FreeTextError> {
        FreeText::parse("query", input).map(Self)
    }

    /// The query as parsed.
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }

    /// The `LIKE` pattern (escape character `\`) that finds the query anywhere, or `None`
    /// when the query is empty. `%`, `_` and `\` are escaped so they match themselves;
    /// the caller lower-cases the pattern in SQL, with the same `lower()` that built the
    /// stored search text, so both sides fold case alike.
    pub fn like_pattern(&self) -> Option<String> {
        if self.0.is_empty() {
            return None;
        }
        let query = self.0.as_str();
        let mut pattern = String::with_capacity(query.len() + 8);
        pattern.push('%');
        for c in query.chars() {
            if matches!(c, '%' | '_' | '\\') {
                pattern.push('\\');
            }
            pattern.push(c);
        }
        pattern.push('%');
        Some(pattern)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn search_patterns_match_wildcards_and_quotes_literally() {
        let pattern = |q: &str| SearchQuery::parse(q).unwrap().like_pattern();
        assert_eq!(pattern(""), None);
        assert_eq!(pattern("   "), None);
        assert_eq!(pattern(" Acme "), Some("%Acme%".into()));
        assert_eq!(pattern("100%"), Some("%100\\%%".into()));
        assert_eq!(pattern("a_b"), Some("%a\\_b%".into()));
        assert_eq!(pattern("c:\\x"), Some("%c:\\\\x%".into()));
        assert_eq!(
            pattern("O'Brien \"&\" Co"),
            Some("%O'Brien \"&\" Co%".into())
        );
    }

    #[test]
    fn search_queries_are_bounded_and_printable() {
        assert!(SearchQuery::parse(&"é".repeat(MAX_QUERY_CHARS)).is_ok());
        assert!(SearchQuery::parse(&"x".repeat(MAX_QUERY_CHARS + 1)).is_err());
        assert!(
            SearchQuery::parse("a\u{1f}b").is_err(),
            "the field separator cannot be searched"
        );
        assert!(SearchQuery::parse("a\tb").is_err());
    }
}
