//! The orders of the Customers page, their keyset cursors and the page tokens that carry
//! them.

use reseller_kit::ApiError;
use reseller_kit::ids::KnoxId;
use reseller_kit::paging;
use reseller_kit::text::echo;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::SearchQuery;

/// Checks `page_size` (kit's `paging::page_size`) among a request's other fields: a bad
/// one joins their violations, so one answer names every bad field.
///
/// # Errors
/// Only what `paging::page_size` answers other than `INVALID_ARGUMENT`.
pub(super) fn page_size_among(
    v: &mut reseller_kit::FieldViolations,
    page_size: i32,
) -> Result<Option<i64>, ApiError> {
    match paging::page_size(page_size) {
        Ok(size) => Ok(Some(size)),
        Err(ApiError::InvalidArgument(violations)) => {
            for violation in violations {
                v.add(&violation.field, violation.description);
            }
            Ok(None)
        }
        Err(other) => Err(other),
    }
}

/// The orders of the Customers page (CONTRACT.md `order_by`); each ends with the Knox ID
/// so that the order is total and keyset paging is exact.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OrderBy {
    /// `company_name` (the default): the company name in the ICU root collation (letters
    /// before accents before case: `acme`, `Acme`, `Ärzte`, `Beta`, `émile`), then Knox ID.
    CompanyName,
    /// `last_uploaded desc`: newest upload first, never-uploaded rows last, then Knox ID.
    LastUploadedDesc,
    /// `devices desc`: most devices first, then Knox ID.
    DevicesDesc,
}

impl OrderBy {
    /// Parses `order_by`: empty (the default), `company_name`, `last_uploaded desc` or
    /// `devices desc`. Case and runs of spaces are ignored; `asc` may follow
    /// `company_name`.
    ///
    /// # Errors
    /// For anything else, naming the values allowed.
    pub fn parse(input: &str) -> Result<Self, String> {
        let words: Vec<String> = input
            .split_whitespace()
            .map(str::to_ascii_lowercase)
            .collect();
        let words: Vec<&str> = words.iter().map(String::as_str).collect();
        match words.as_slice() {
            [] | ["company_name"] | ["company_name", "asc"] => Ok(OrderBy::CompanyName),
            ["last_uploaded", "desc"] => Ok(OrderBy::LastUploadedDesc),
            ["devices", "desc"] => Ok(OrderBy::DevicesDesc),
            // The echo is cut and escaped: `order_by` is whatever the caller sent.
            _ => Err(format!(
                "must be one of \"company_name\", \"last_uploaded desc\", \"devices desc\", got \"{}\"",
                echo(input.trim())
            )),
        }
    }

    /// The canonical spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            OrderBy::CompanyName => "company_name",
            OrderBy::LastUploadedDesc => "last_uploaded desc",
            OrderBy::DevicesDesc => "devices desc",
        }
    }
}

/// Where a page ends in its order: the last row's sort key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum SortKey {
    /// [`OrderBy::CompanyName`]: the company name as stored, which PostgreSQL compares in
    /// the ICU root collation (migration 0004), and the Knox ID.
    ///
    /// Serialised under a name of its own: tokens issued before issue #9 carry the
    /// lower-cased name under `CompanyName`, a key of another order, and are refused as
    /// not issued by this list rather than continued at a slightly wrong place.
    #[serde(rename = "CompanyNameIcu")]
    CompanyName {
        /// The company name.
        name: String,
        /// The Knox ID.
        knox_id: String,
    },
    /// [`OrderBy::LastUploadedDesc`]: the last upload in Unix microseconds (`None`:
    /// never uploaded), and the Knox ID.
    LastUploaded {
        /// Microseconds since the Unix epoch (PostgreSQL's precision), or `None`.
        at_micros: Option<i64>,
        /// The Knox ID.
        knox_id: String,
    },
    /// [`OrderBy::DevicesDesc`]: the device count and the Knox ID.
    Devices {
        /// DEVICES.
        devices: i64,
        /// The Knox ID.
        knox_id: String,
    },
}

impl SortKey {
    /// The order the key belongs to.
    pub fn order(&self) -> OrderBy {
        match self {
            SortKey::CompanyName { .. } => OrderBy::CompanyName,
            SortKey::LastUploaded { .. } => OrderBy::LastUploadedDesc,
            SortKey::Devices { .. } => OrderBy::DevicesDesc,
        }
    }

    /// A LAST UPLOADED key in the token's precision.
    pub fn last_uploaded(at: Option<OffsetDateTime>, knox_id: String) -> Self {
        let at_micros = at.map(|at| (at.unix_timestamp_nanos() / 1_000) as i64);
        SortKey::LastUploaded { at_micros, knox_id }
    }

    /// The time a LAST UPLOADED key names (`None` for "never", or if out of range).
    pub fn micros_to_time(at_micros: Option<i64>) -> Option<OffsetDateTime> {
        at_micros
            .and_then(|us| OffsetDateTime::from_unix_timestamp_nanos(i128::from(us) * 1_000).ok())
    }

    /// Whether every value of the key can be bound in a query. A token is only base64
    /// JSON, so a caller can write one by hand: a NUL in a string (which PostgreSQL text
    /// refuses) would fail the query, and a Knox ID that is not one was never issued.
    /// Anything else a forged key holds only moves where the page starts, inside the
    /// caller's own rows.
    fn is_bindable(&self) -> bool {
        let (text, knox_id) = match self {
            SortKey::CompanyName { name, knox_id } => (Some(name), knox_id),
            SortKey::LastUploaded { knox_id, .. } | SortKey::Devices { knox_id, .. } => {
                (None, knox_id)
            }
        };
        KnoxId::parse(knox_id).is_ok_and(|k| k.as_str() == knox_id)
            && text.is_none_or(|text| !text.contains('\0'))
    }
}

/// What a page token carries: the request it continues and where the last page ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct PageToken {
    /// The search query.
    q: String,
    /// The canonical order.
    o: String,
    /// The last row's sort key.
    after: SortKey,
}

/// A parsed `ListCustomers` request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListCustomers {
    /// The search.
    pub query: SearchQuery,
    /// The order.
    pub order: OrderBy,
    /// Rows per page.
    pub page_size: i64,
    /// Where the previous page ended (`None`: the first page).
    pub after: Option<SortKey>,
}

impl ListCustomers {
    /// Parses the request's fields together, so one answer names every bad one.
    ///
    /// # Errors
    /// `INVALID_ARGUMENT` on `query`, `order_by`, `page_size`, or `page_token` (not issued
    /// by this list, or issued for another query or order).
    pub fn parse(
        query: &str,
        order_by: &str,
        page_size: i32,
        page_token: &str,
    ) -> Result<Self, ApiError> {
        let mut v = reseller_kit::FieldViolations::new();
        let query = v.check_field(SearchQuery::parse(query));
        let order = v.check("order_by", OrderBy::parse(order_by));
        let size = page_size_among(&mut v, page_size)?;
        v.finish()?;
        let (query, order) = (query.expect("checked"), order.expect("checked"));
        let after = match paging::decode_token::<PageToken>(page_token)? {
            None => None,
            Some(token) => {
                if !token.after.is_bindable() {
                    return Err(ApiError::invalid(
                        "page_token",
                        super::TOKEN_NOT_ISSUED_HERE,
                    ));
                }
                if token.q != query.as_str()
                    || token.o != order.as_str()
                    || token.after.order() != order
                {
                    return Err(ApiError::invalid(
                        "page_token",
                        "was issued for a different query or order_by; repeat them or start from the first page",
                    ));
                }
                Some(token.after)
            }
        };
        Ok(Self {
            query,
            order,
            page_size: size.expect("checked"),
            after,
        })
    }

    /// The token that continues this list after `last`.
    pub fn next_token(&self, last: SortKey) -> String {
        paging::encode_token(&PageToken {
            q: self.query.as_str().to_owned(),
            o: self.order.as_str().to_owned(),
            after: last,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_by_accepts_the_three_orders_only() {
        assert_eq!(OrderBy::parse("").unwrap(), OrderBy::CompanyName);
        assert_eq!(
            OrderBy::parse("company_name").unwrap(),
            OrderBy::CompanyName
        );
        assert_eq!(
            OrderBy::parse(" Company_Name  ASC ").unwrap(),
            OrderBy::CompanyName
        );
        assert_eq!(
            OrderBy::parse("last_uploaded desc").unwrap(),
            OrderBy::LastUploadedDesc
        );
        assert_eq!(
            OrderBy::parse("last_uploaded   DESC").unwrap(),
            OrderBy::LastUploadedDesc
        );
        assert_eq!(
            OrderBy::parse("devices desc").unwrap(),
            OrderBy::DevicesDesc
        );
        for bad in [
            "devices",
            "devices asc",
            "last_uploaded",
            "company_name desc",
            "knox_id",
            "devices desc; drop",
        ] {
            assert!(OrderBy::parse(bad).is_err(), "{bad}");
        }
        for order in [
            OrderBy::CompanyName,
            OrderBy::LastUploadedDesc,
            OrderBy::DevicesDesc,
        ] {
            assert_eq!(OrderBy::parse(order.as_str()).unwrap(), order);
        }
    }

    #[test]
    fn tokens_continue_only_the_list_that_issued_them() {
        let first = ListCustomers::parse("acme", "devices desc", 10, "").unwrap();
        assert_eq!(first.after, None);
        let key = SortKey::Devices {
            devices: 7,
            knox_id: "123456".into(),
        };
        let token = first.next_token(key.clone());
        let next = ListCustomers::parse(" acme ", "devices  desc", 10, &token).unwrap();
        assert_eq!(next.after, Some(key));

        for (query, order) in [
            ("acme2", "devices desc"),
            ("acme", ""),
            ("acme", "last_uploaded desc"),
        ] {
            let err = ListCustomers::parse(query, order, 10, &token).unwrap_err();
            assert!(
                matches!(&err, ApiError::InvalidArgument(v) if v[0].field == "page_token"),
                "{query} {order}: {err}"
            );
        }
        assert!(matches!(
            ListCustomers::parse("acme", "devices desc", 10, "garbage"),
            Err(ApiError::InvalidArgument(v)) if v[0].field == "page_token"
        ));
    }

    #[test]
    fn hand_written_tokens_that_cannot_be_bound_are_refused() {
        let first = ListCustomers::parse("", "", 10, "").unwrap();
        let forged = [
            SortKey::CompanyName {
                name: "Acme\u{0}".into(),
                knox_id: "123456".into(),
            },
            SortKey::CompanyName {
                name: "Acme".into(),
                knox_id: "12\u{0}3456".into(),
            },
            SortKey::CompanyName {
                name: "Acme".into(),
                knox_id: "x".repeat(10_000),
            },
        ];
        for key in forged {
            let token = first.next_token(key.clone());
            let err = ListCustomers::parse("", "", 10, &token).unwrap_err();
            assert!(
                matches!(&err, ApiError::InvalidArgument(v) if v[0].field == "page_token"),
                "{key:?}: {err}"
            );
        }
        // Names with any other character continue the list, accents included.
        let key = SortKey::CompanyName {
            name: "Ärzte\tNord".into(),
            knox_id: "123456".into(),
        };
        let token = first.next_token(key.clone());
        assert_eq!(
            ListCustomers::parse("", "", 10, &token).unwrap().after,
            Some(key)
        );
    }

    #[test]
    fn tokens_of_the_lower_cased_name_order_are_not_continued() {
        // What a token of the company-name order carried before the ICU collation.
        let old = paging::encode_token(&serde_json::json!({
            "q": "", "o": "company_name",
            "after": {"CompanyName": {"name": "acme", "knox_id": "123456"}},
        }));
        assert!(matches!(
            ListCustomers::parse("", "", 10, &old),
            Err(ApiError::InvalidArgument(v)) if v[0].field == "page_token"
        ));
    }

    #[test]
    fn a_bad_order_by_is_echoed_cut_and_escaped() {
        let message = OrderBy::parse(&format!("\u{0}{}", "x".repeat(10_000))).unwrap_err();
        assert!(message.contains("\\u{0}"), "{message}");
        assert!(message.chars().count() < 150, "{message}");
        assert!(OrderBy::parse("Ärzte").unwrap_err().contains("\"Ärzte\""));
    }

    #[test]
    fn every_bad_field_is_named_at_once() {
        let Err(ApiError::InvalidArgument(v)) = ListCustomers::parse("a\u{0}", "size", -1, "")
        else {
            panic!("expected INVALID_ARGUMENT");
        };
        let fields: Vec<_> = v.iter().map(|v| v.field.as_str()).collect();
        assert_eq!(fields, ["query", "order_by", "page_size"]);
    }

    #[test]
    fn last_uploaded_keys_round_trip_in_microseconds() {
        let at = OffsetDateTime::from_unix_timestamp_nanos(1_700_000_000_123_456_000).unwrap();
        let SortKey::LastUploaded { at_micros, .. } =
            SortKey::last_uploaded(Some(at), "1".repeat(6))
        else {
            unreachable!()
        };
        assert_eq!(SortKey::micros_to_time(at_micros), Some(at));
        assert_eq!(SortKey::micros_to_time(None), None);
    }
}
