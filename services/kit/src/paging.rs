//! Paged lists (CONTRACT.md): `page_size` defaults to 50 and is capped at 1000;
//! `page_token` is an opaque keyset cursor.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Serialize, de::DeserializeOwned};

use crate::error::ApiError;

/// Page size when the request leaves it 0.
pub const DEFAULT_PAGE_SIZE: i64 = 50;
/// Largest page; larger requests are served this many.
pub const MAX_PAGE_SIZE: i64 = 1000;

/// The effective page size of a request.
///
/// # Errors
/// `INVALID_ARGUMENT` on `page_size` when negative.
pub fn page_size(requested: i32) -> Result<i64, ApiError> {
    match requested {
        n if n < 0 => Err(ApiError::invalid("page_size", "must not be negative")),
        0 => Ok(DEFAULT_PAGE_SIZE),
        n => Ok(i64::from(n).min(MAX_PAGE_SIZE)),
    }
}

/// Encodes a keyset cursor as an opaque token.
pub fn encode_token<T: Serialize>(cursor: &T) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(cursor).unwrap_or_default())
}

/// Ends a page fetched with one row more than `limit` (which tells whether another page
/// follows): drops that extra row and returns the next page's token, empty on the last.
pub fn finish_page<T, K: Serialize>(
    rows: &mut Vec<T>,
    limit: i64,
    key: impl Fn(&T) -> K,
) -> String {
    if rows.len() as i64 <= limit {
        return String::new();
    }
    rows.truncate(limit as usize);
    rows.last()
        .map(|row| encode_token(&key(row)))
        .unwrap_or_default()
}

/// Decodes a token made by [`encode_token`]; `None` for the empty token (first page).
///
/// # Errors
/// `INVALID_ARGUMENT` on `page_token` when it was not issued by this list.
pub fn decode_token<T: DeserializeOwned>(token: &str) -> Result<Option<T>, ApiError> {
    if token.is_empty() {
        return Ok(None);
    }
    let invalid = || ApiError::invalid("page_token", "is not a token this list issued");
    let bytes = URL_SAFE_NO_PAD.decode(token).map_err(|_| invalid())?;
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|_| invalid())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_size_defaults_and_caps() {
        assert_eq!(page_size(0).unwrap(), 50);
        assert_eq!(page_size(7).unwrap(), 7);
        assert_eq!(page_size(5000).unwrap(), 1000);
        assert!(page_size(-1).is_err());
    }

    #[test]
    fn a_page_with_an_extra_row_has_a_next_token() {
        let mut rows = vec![1, 2, 3];
        let token = finish_page(&mut rows, 2, |r| *r);
        assert_eq!(rows, [1, 2]);
        assert_eq!(decode_token::<i32>(&token).unwrap(), Some(2));
        let mut last = vec![1, 2];
        assert!(finish_page(&mut last, 2, |r| *r).is_empty());
        assert_eq!(last, [1, 2]);
    }

    #[test]
    fn tokens_round_trip_and_garbage_is_rejected() {
        let token = encode_token(&("acme", 3));
        assert_eq!(
            decode_token::<(String, i32)>(&token).unwrap(),
            Some(("acme".into(), 3))
        );
        assert!(decode_token::<(String, i32)>("!!!").is_err());
        assert_eq!(decode_token::<(String, i32)>("").unwrap(), None);
    }
}
