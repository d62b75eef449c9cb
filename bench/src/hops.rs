//! Where the deletion time goes, from the services' own logs: with `RUST_LOG` including
//! `reseller_kit::inbox=debug`, every consumer logs each event it applied with the
//! event's age (from `occurred_at`, set where the event was made) when the consumer
//! received it and when it had applied it:
//!
//! ```text
//! ... DEBUG reseller_kit::inbox: event applied consumer=reporting event_id=... age_received_us=1043 age_applied_us=2871
//! ```
//!
//! For a `devices_deleted` event the received age is the outbox → relay → JetStream →
//! consumer hop, and applied − received is the portal's statement; for the portals'
//! receipts (`device-receipts`) the same for the second hop.
//!
//! Two more debug lines split the hop at the stream: `event pulled ... since_stored_us`
//! (`reseller_kit::inbox`: from the stream storing the event, by its own clock, to the
//! consumer pulling it) and `event relayed ... events ack_us marked_us`
//! (`reseller_kit::outbox`, `=debug` too: for each batch of notified events a relay
//! published, from the first publish until JetStream acknowledged the last, then marking
//! the rows sent). Both text and JSON log lines are read; lines are taken from the measured
//! window only.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use reseller_tests::cluster::strip_ansi;
use serde_json::{Value, json};

use crate::stats::Samples;

/// The value of `key` in a `key=value` (text) or `"key":value` (JSON) log line.
fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let rest = line
        .split_once(&format!("{key}="))
        .or_else(|| line.split_once(&format!("\"{key}\":")))
        .map(|(_, rest)| rest)?;
    let rest = rest.trim_start_matches('"');
    let end = rest
        .find(|c: char| c.is_whitespace() || matches!(c, '"' | ',' | '}' | '\u{1b}'))
        .unwrap_or(rest.len());
    Some(&rest[..end])
}

/// The line's time: the first token of a text line, `"timestamp"` of a JSON one.
fn timestamp(line: &str) -> Option<SystemTime> {
    let text = field(line, "timestamp").or_else(|| line.split_whitespace().next())?;
    let at =
        time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).ok()?;
    let nanos = at.unix_timestamp_nanos();
    (nanos >= 0).then(|| SystemTime::UNIX_EPOCH + Duration::from_nanos(nanos as u64))
}

#[derive(Default)]
struct Consumer {
    stored_to_pulled: Samples,
    received: Samples,
    applying: Samples,
    applied: Samples,
    by_process: BTreeMap<String, u64>,
}

/// Per consumer, the ages of the events applied between `from` and `to`, read from
/// `logs` (process name, log file). `None` when no log line says so (the level leaves
/// them out).
pub fn event_ages(logs: &[(String, PathBuf)], from: SystemTime, to: SystemTime) -> Option<Value> {
    let mut consumers = BTreeMap::<String, Consumer>::new();
    for (process, path) in logs {
        let Ok(text) = std::fs::read_to_string(path) else {
            continue;
        };
        for line in text.lines().filter(|l| l.contains("event pulled")) {
            let line = strip_ansi(line);
            let Some(at) = timestamp(&line) else { continue };
            if at < from || at > to {
                continue;
            }
            let (Some(consumer), Some(since_stored)) = (
                field(&line, "consumer"),
                field(&line, "since_stored_us").and_then(|v| v.parse::<i64>().ok()),
            ) else {
                continue;
            };
            consumers
                .entry(consumer.to_owned())
                .or_default()
                .stored_to_pulled
                .push(Some(Duration::from_micros(since_stored.max(0) as u64)));
        }
        for line in text.lines().filter(|l| l.contains("event applied")) {
            let line = strip_ansi(line);
            let Some(at) = timestamp(&line) else { continue };
            if at < from || at > to {
                continue;
            }
            let (Some(consumer), Some(received), Some(applied)) = (
                field(&line, "consumer"),
                field(&line, "age_received_us").and_then(|v| v.parse::<u64>().ok()),
                field(&line, "age_applied_us").and_then(|v| v.parse::<u64>().ok()),
            ) else {
                continue;
            };
            let c = consumers.entry(consumer.to_owned()).or_default();
            c.received.push(Some(Duration::from_micros(received)));
            c.applied.push(Some(Duration::from_micros(applied)));
            c.applying.push(Some(Duration::from_micros(
                applied.saturating_sub(received),
            )));
            *c.by_process.entry(process.clone()).or_default() += 1;
        }
    }
    if consumers.is_empty() {
        return None;
    }
    let brief = |s: &Samples| {
        let ms = |d: Option<Duration>| d.map(crate::stats::ms);
        json!({ "p50_ms": ms(s.percentile(50.0)), "p99_ms": ms(s.percentile(99.0)) })
    };
    Some(Value::Object(
        consumers
            .into_iter()
            .map(|(name, c)| {
                (
                    name,
                    json!({
                        "events": c.received.len(),
                        "stored_to_pulled": brief(&c.stored_to_pulled),
                        "age_when_received": brief(&c.received),
                        "applying": brief(&c.applying),
                        "age_when_applied": brief(&c.applied),
                        "by_process": c.by_process,
                    }),
                )
            })
            .collect(),
    ))
}

/// Per outbox schema, the relay's times for the batches of events it published inline
/// (from their commit notifications) between `from` and `to`: publish until JetStream's
/// last ack, and marking the rows sent; and how many events a batch held. `None` when no
/// log line says so.
pub fn relay_times(logs: &[(String, PathBuf)], from: SystemTime, to: SystemTime) -> Option<Value> {
    let mut schemas = BTreeMap::<String, (Samples, Samples, Vec<u64>)>::new();
    for (_, path) in logs {
        let Ok(text) = std::fs::read_to_string(path) else {
            continue;
        };
        for line in text.lines().filter(|l| l.contains("event relayed")) {
            let line = strip_ansi(line);
            let Some(at) = timestamp(&line) else { continue };
            if at < from || at > to {
                continue;
            }
            let (Some(schema), Some(ack), Some(marked)) = (
                field(&line, "schema"),
                field(&line, "ack_us").and_then(|v| v.parse::<u64>().ok()),
                field(&line, "marked_us").and_then(|v| v.parse::<u64>().ok()),
            ) else {
                continue;
            };
            let events = field(&line, "events")
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(1);
            let (acks, marks, sizes) = schemas.entry(schema.to_owned()).or_default();
            acks.push(Some(Duration::from_micros(ack)));
            marks.push(Some(Duration::from_micros(marked)));
            sizes.push(events);
        }
    }
    if schemas.is_empty() {
        return None;
    }
    let brief = |s: &Samples| {
        let ms = |d: Option<Duration>| d.map(crate::stats::ms);
        json!({ "p50_ms": ms(s.percentile(50.0)), "p99_ms": ms(s.percentile(99.0)) })
    };
    Some(Value::Object(
        schemas
            .into_iter()
            .map(|(schema, (acks, marks, sizes))| {
                (
                    schema,
                    json!({
                        "batches": acks.len(),
                        "events": sizes.iter().sum::<u64>(),
                        "largest_batch": sizes.iter().max(),
                        "publish_to_ack": brief(&acks),
                        "mark_sent": brief(&marks),
                    }),
                )
            })
            .collect(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_text_and_json_lines() {
        let text = "\u{1b}[2m2026-11-29T12:58:08.216294Z\u{1b}[0m \u{1b}[34mDEBUG\u{1b}[0m \u{1b}[2mreseller_kit::inbox\u{1b}[0m\u{1b}[2m:\u{1b}[0m event applied \u{1b}[3mconsumer\u{1b}[0m\u{1b}[2m=\u{1b}[0mdevice-receipts \u{1b}[3mage_received_us\u{1b}[0m\u{1b}[2m=\u{1b}[0m27538 \u{1b}[3mage_applied_us\u{1b}[0m\u{1b}[2m=\u{1b}[0m29550";
        let line = strip_ansi(text);
        assert_eq!(field(&line, "consumer"), Some("device-receipts"));
        assert_eq!(field(&line, "age_received_us"), Some("27538"));
        assert_eq!(field(&line, "age_applied_us"), Some("29550"));
        assert!(timestamp(&line).is_some());

        let json = r#"{"timestamp":"2026-11-29T12:58:08.216294Z","level":"DEBUG","message":"event applied","consumer":"reporting","age_received_us":1043,"age_applied_us":2871,"target":"reseller_kit::inbox"}"#;
        assert_eq!(field(json, "consumer"), Some("reporting"));
        assert_eq!(field(json, "age_applied_us"), Some("2871"));
        assert!(timestamp(json).is_some());

        let relayed = "2026-11-29T14:25:27.534543Z DEBUG reseller_kit::outbox: event relayed schema=\"device\" events=3 ack_us=2985 marked_us=1276";
        assert_eq!(field(relayed, "schema"), Some("device"));
        assert_eq!(field(relayed, "events"), Some("3"));
        assert_eq!(field(relayed, "ack_us"), Some("2985"));
        assert_eq!(field(relayed, "marked_us"), Some("1276"));
    }
}
