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

/// `at` as the text of a `timestamptz` field in `COPY … FROM STDIN`: RFC 3339, cut to the
/// microsecond the way sqlx binds an `OffsetDateTime` (its whole microseconds since
/// 2000-01-01, counted toward that epoch), so that a row `COPY`ed and a row inserted by a
/// statement store the same time. PostgreSQL keeps microseconds and its text input would
/// round the nanoseconds instead. `None` before the year 1, which neither RFC 3339 nor
/// PostgreSQL's text input takes.
pub fn copy_text(at: OffsetDateTime) -> Option<String> {
    // Year 0 is RFC 3339's, not PostgreSQL's (1 BC there, and its text input refuses it).
    if at.year() < 1 {
        return None;
    }
    let pg_epoch = time::macros::datetime!(2000-01-01 00:00 UTC);
    let micros = (at - pg_epoch).whole_microseconds();
    let micros = i64::try_from(micros).ok()?;
    (pg_epoch + time::Duration::microseconds(micros))
        .format(&time::format_description::well_known::Rfc3339)
        .ok()
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

    #[test]
    fn copy_text_cuts_to_the_microsecond_toward_postgresqls_epoch() {
        let after = OffsetDateTime::from_unix_timestamp_nanos(1_700_000_000_123_456_789).unwrap();
        assert_eq!(copy_text(after).unwrap(), "2023-11-14T22:13:20.123456Z");
        // Before 2000 the cut is toward 2000, as sqlx's whole microseconds are.
        let before = OffsetDateTime::from_unix_timestamp_nanos(900_000_000_123_456_789).unwrap();
        assert_eq!(copy_text(before).unwrap(), "1998-07-09T16:00:00.123457Z");
        // RFC 3339 has no negative years, and PostgreSQL's text input no year 0.
        let ancient = time::macros::datetime!(-0001-01-01 00:00 UTC);
        assert_eq!(copy_text(ancient), None);
        let year_zero = time::macros::datetime!(0000-06-01 00:00 UTC);
        assert_eq!(copy_text(year_zero), None);
        let year_one = time::macros::datetime!(0001-01-01 00:00 UTC);
        assert_eq!(copy_text(year_one).unwrap(), "0001-01-01T00:00:00Z");
    }
}
