//! Page tokens forged from real ones, for tests that feed a token's content to the
//! services (a token is the client's to send, so what it carries reaches SQL too).

use reseller_kit::paging;

/// Every string leaf of a JSON value, in document order, as mutable references.
pub fn string_leaves(value: &mut serde_json::Value) -> Vec<&mut String> {
    match value {
        serde_json::Value::String(s) => vec![s],
        serde_json::Value::Array(items) => items.iter_mut().flat_map(string_leaves).collect(),
        serde_json::Value::Object(map) => map.values_mut().flat_map(string_leaves).collect(),
        _ => Vec::new(),
    }
}

/// Tokens that decode like `real` (a token's JSON content) but carry `value`: one per
/// string leaf of `real`, that leaf replaced by `value`, in document order.
pub fn with_each_string_replaced(real: &serde_json::Value, value: &str) -> Vec<String> {
    let leaves = string_leaves(&mut real.clone()).len();
    (0..leaves)
        .map(|n| {
            let mut forged = real.clone();
            *string_leaves(&mut forged)[n] = value.to_owned();
            paging::encode_token(&forged)
        })
        .collect()
}
