//! Conversions between database times (`time::OffsetDateTime`) and protobuf `Timestamp`.

use prost_types::Timestamp;
use time::OffsetDateTime;

/// A protobuf timestamp of `at`.
pub fn to_proto(at: OffsetDateTime) -> Timestamp {
    let nanos = at.unix_timestamp_nanos();
    Timestamp {
        seconds: nanos.div_euclid(1_000_000_000) as i64,
        nanos: nanos.rem_euclid(1_000_000_000) as i32,
    }
}

/// `at` as a protobuf timestamp, or `None`.
pub fn opt_to_proto(at: Option<OffsetDateTime>) -> Option<Timestamp> {
    at.map(to_proto)
}

/// The time a protobuf timestamp names (the Unix epoch when absent or out of range).
pub fn from_proto(ts: Option<&Timestamp>) -> OffsetDateTime {
    ts.and_then(|ts| {
        OffsetDateTime::from_unix_timestamp_nanos(
            i128::from(ts.seconds) * 1_000_000_000 + i128::from(ts.nanos),
        )
        .ok()
    })
    .unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

/// RFC 3339 in UTC with a `Z`, as CSV files show times.
pub fn rfc3339_utc(at: OffsetDateTime) -> String {
    at.to_offset(time::UtcOffset::UTC)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_protobuf() {
        let at = OffsetDateTime::from_unix_timestamp_nanos(1_700_000_000_123_456_000).unwrap();
        assert_eq!(from_proto(Some(&to_proto(at))), at);
        assert_eq!(rfc3339_utc(at), "2023-11-14T22:13:20.123456Z");
    }
}
