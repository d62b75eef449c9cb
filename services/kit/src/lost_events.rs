//! Noticing events a durable consumer will never see, because the stream removed them
//! (`NATS_STREAM_MAX_AGE`, `NATS_STREAM_MAX_BYTES`, or an operator's purge) before the
//! consumer read them.
//!
//! JetStream does not tell: a pull consumer whose next message is gone is simply given
//! the next one that exists. So each running consumer compares its own progress with the
//! stream, when it starts and every [`CHECK_INTERVAL`] while it runs
//! ([`LossWatch::check`]), and reports any loss as an `ERROR` log naming the consumer and
//! the missing stream sequences, and in [`lost_events_total`] (for the metrics endpoint
//! to export and an alert to fire on). It never repairs anything: the projection needs
//! a rebuild (README, "Operations").
//!
//! What it compares (nats-server 2.9, measured):
//! - **Before a skip** the consumer's last delivered stream sequence `D` stays behind the
//!   stream's first sequence `F`: when `D + 1 < F`, sequences `D+1 ..= F-1` are gone and
//!   were never delivered. This is exact for a consumer that was down or stalled, which
//!   is how a limit overtakes one.
//! - **After a skip** the server has moved `D` past the hole. Between two checks, every
//!   delivery advances the consumer sequence `C` by one (redeliveries too), and every
//!   first delivery advances `D` by one: `(D - D₀) - (C - C₀) > 0` counts stream
//!   sequences passed over without a delivery. Redeliveries can hide a skip, never fake
//!   one. A consumer with a filter passes over the other subjects' events the same way,
//!   so this second test is only for consumers of the whole stream.
//! - A consumer **created** on a stream whose first sequence is above 1 starts at `F`:
//!   events `1 ..= F-1` are not in its projection.
//!
//! For a filtered consumer a gap is reported as "up to" that many events: the stream no
//! longer says which subjects the removed sequences had. Each replica of a service
//! checks on its own, so one loss is reported once per replica.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_nats::jetstream::stream::Stream;

/// How often a running consumer compares its progress with the stream.
pub const CHECK_INTERVAL: Duration = Duration::from_secs(10);

/// Stream sequences reported lost by every consumer of this process since it started.
static LOST_EVENTS: AtomicU64 = AtomicU64::new(0);

/// How many stream sequences consumers of this process have reported lost (for a filtered
/// consumer, the sequences it may have needed). A monotonic counter: an alert fires when
/// it grows.
pub fn lost_events_total() -> u64 {
    LOST_EVENTS.load(Ordering::Relaxed)
}

/// A consumer's progress as the server reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// The last stream sequence delivered (`delivered.stream_seq`; for a filtered consumer,
    /// how far it has looked).
    pub delivered_stream: u64,
    /// Deliveries so far, redeliveries included (`delivered.consumer_seq`).
    pub delivered_consumer: u64,
}

/// Stream sequences a consumer will never be given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Loss {
    /// The first missing sequence.
    pub first: u64,
    /// The last missing sequence.
    pub last: u64,
    /// How many are missing (at most `last - first + 1`).
    pub count: u64,
}

/// One consumer's watch over its progress.
#[derive(Debug)]
pub struct LossWatch {
    consumer: String,
    /// Whether the consumer reads only part of the stream.
    filtered: bool,
    /// The progress at the last check, counting reported losses as delivered.
    baseline: Option<Progress>,
}

impl LossWatch {
    /// A watch for `consumer`; `filtered` when its filter leaves out part of the stream.
    pub fn new(consumer: &str, filtered: bool) -> Self {
        Self {
            consumer: consumer.to_owned(),
            filtered,
            baseline: None,
        }
    }

    /// Compares the consumer with the stream now and reports what was lost since the last
    /// check; `created` when the consumer was created just now (its first check).
    ///
    /// # Errors
    /// When JetStream does not answer (the caller logs it and checks again later).
    pub async fn check(&mut self, stream: &Stream, created: bool) -> anyhow::Result<()> {
        // The stream first: the consumer only moves on in between, so a gap seen between
        // the stream's first sequence then and the consumer's position after is real.
        let info = stream.get_info().await?;
        let consumer = stream.consumer_info(&self.consumer).await?;
        let progress = Progress {
            delivered_stream: consumer.delivered.stream_sequence,
            delivered_consumer: consumer.delivered.consumer_sequence,
        };
        if let Some(loss) = self.assess(progress, info.state.first_sequence, created) {
            LOST_EVENTS.fetch_add(loss.count, Ordering::Relaxed);
            ::metrics::counter!(crate::metrics::CONSUMER_LOST_EVENTS, "consumer" => self.consumer.clone())
                .increment(loss.count);
            tracing::error!(
                consumer = %self.consumer,
                stream = %info.config.name,
                first_missing = loss.first,
                last_missing = loss.last,
                count = loss.count,
                filtered = self.filtered,
                "events were removed from the stream before this consumer read them{}: its \
                 projection lacks them and must be rebuilt (README, Operations)",
                if self.filtered { " (those of them matching its filter)" } else { "" },
            );
        }
        Ok(())
    }

    /// The loss, if any, that `progress` and the stream's first sequence `first` show
    /// since the last call; moves the baseline on.
    fn assess(&mut self, progress: Progress, first: u64, created: bool) -> Option<Loss> {
        let previous = self.baseline.take();
        // Counting the reported sequences as delivered, so the skip the server makes
        // over them later is not reported again.
        let mut baseline = progress;
        let loss = if created && first > 1 && progress.delivered_stream + 1 == first {
            Some(Loss {
                first: 1,
                last: first - 1,
                count: first - 1,
            })
        } else if progress.delivered_stream + 1 < first {
            baseline.delivered_stream = first - 1;
            Some(Loss {
                first: progress.delivered_stream + 1,
                last: first - 1,
                count: first - 1 - progress.delivered_stream,
            })
        } else {
            match previous {
                Some(before)
                    if !self.filtered
                        && progress.delivered_stream > before.delivered_stream
                        && progress.delivered_consumer >= before.delivered_consumer =>
                {
                    let passed = progress.delivered_stream - before.delivered_stream;
                    let deliveries = progress.delivered_consumer - before.delivered_consumer;
                    (passed > deliveries).then(|| Loss {
                        first: before.delivered_stream + 1,
                        last: progress.delivered_stream,
                        count: passed - deliveries,
                    })
                }
                // A first check, no progress, or a consumer recreated under the same name
                // (its sequences started again): nothing to compare with.
                _ => None,
            }
        };
        self.baseline = Some(baseline);
        loss
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(delivered_stream: u64, delivered_consumer: u64) -> Progress {
        Progress {
            delivered_stream,
            delivered_consumer,
        }
    }

    #[test]
    fn a_consumer_behind_the_first_sequence_has_lost_the_gap_once() {
        let mut watch = LossWatch::new("reporting", false);
        // Delivered through 3; the stream now starts at 9: 4..=8 are gone.
        assert_eq!(
            watch.assess(at(3, 4), 9, false),
            Some(Loss {
                first: 4,
                last: 8,
                count: 5
            })
        );
        // The server then skips to 9 and delivers 9..=13 as consumer sequences 5..=9:
        // the skip is the one already reported.
        assert_eq!(watch.assess(at(13, 9), 9, false), None);
    }

    #[test]
    fn a_skip_between_checks_shows_as_sequences_passed_without_a_delivery() {
        let mut watch = LossWatch::new("reporting", false);
        assert_eq!(watch.assess(at(3, 4), 1, false), None);
        // 10 sequences passed, 5 deliveries: 5 skipped.
        assert_eq!(
            watch.assess(at(13, 9), 9, false),
            Some(Loss {
                first: 4,
                last: 13,
                count: 5
            })
        );
        // Redeliveries and steady progress are no loss.
        assert_eq!(watch.assess(at(20, 20), 9, false), None);
        // A consumer recreated under the same name starts its sequences again.
        assert_eq!(watch.assess(at(2, 2), 1, false), None);
    }

    #[test]
    fn a_filtered_consumer_only_reports_what_it_has_not_looked_at() {
        let mut watch = LossWatch::new("device-receipts", true);
        assert_eq!(watch.assess(at(3, 1), 1, false), None);
        // It looked through 13 with one delivery: the others were not its subjects.
        assert_eq!(watch.assess(at(13, 2), 9, false), None);
        // Down while 14..=18 were removed.
        assert_eq!(
            watch.assess(at(13, 2), 19, false),
            Some(Loss {
                first: 14,
                last: 18,
                count: 5
            })
        );
    }

    #[test]
    fn a_consumer_created_on_a_truncated_stream_lacks_its_beginning() {
        let mut watch = LossWatch::new("new-projection", false);
        assert_eq!(
            watch.assess(at(41, 0), 42, true),
            Some(Loss {
                first: 1,
                last: 41,
                count: 41
            })
        );
        let mut watch = LossWatch::new("new-projection", false);
        assert_eq!(watch.assess(at(0, 0), 1, true), None);
        assert_eq!(watch.assess(at(0, 0), 0, true), None);
    }
}
