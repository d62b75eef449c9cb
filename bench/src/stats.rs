//! Latency samples and their percentiles.

use std::time::Duration;

use serde_json::{Value, json};

/// Milliseconds with microsecond precision, for JSON.
pub fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

/// Seconds with millisecond precision, for JSON.
pub fn secs(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e3).round() / 1e3
}

/// Rounds `x` to 3 decimals.
pub fn round3(x: f64) -> f64 {
    (x * 1e3).round() / 1e3
}

/// A set of latency samples; `None` is a sample that never finished (a timeout), which
/// ranks above every finished one.
#[derive(Debug, Default, Clone)]
pub struct Samples {
    values: Vec<Option<Duration>>,
}

impl Samples {
    /// Adds one sample.
    pub fn push(&mut self, value: Option<Duration>) {
        self.values.push(value);
    }

    /// How many samples.
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// How many never finished.
    pub fn timeouts(&self) -> usize {
        self.values.iter().filter(|v| v.is_none()).count()
    }

    fn sorted(&self) -> Vec<Option<Duration>> {
        let mut v = self.values.clone();
        // None (a timeout) sorts last.
        v.sort_by(|a, b| match (a, b) {
            (Some(a), Some(b)) => a.cmp(b),
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (None, None) => std::cmp::Ordering::Equal,
        });
        v
    }

    /// The nearest-rank percentile `p` (0 < p ≤ 100); `None` when there are no samples
    /// or the rank falls on a timeout.
    pub fn percentile(&self, p: f64) -> Option<Duration> {
        let v = self.sorted();
        if v.is_empty() {
            return None;
        }
        let rank = ((p / 100.0) * v.len() as f64).ceil().max(1.0) as usize;
        v[rank.min(v.len()) - 1]
    }

    /// The mean of the finished samples.
    pub fn mean(&self) -> Option<Duration> {
        let done: Vec<Duration> = self.values.iter().flatten().copied().collect();
        if done.is_empty() {
            None
        } else {
            Some(done.iter().sum::<Duration>() / done.len() as u32)
        }
    }

    /// The largest finished sample.
    pub fn max(&self) -> Option<Duration> {
        self.values.iter().flatten().max().copied()
    }

    /// The smallest finished sample.
    pub fn min(&self) -> Option<Duration> {
        self.values.iter().flatten().min().copied()
    }

    /// `{n, timeouts, min_ms, p50_ms, p90_ms, p99_ms, max_ms, mean_ms}`.
    pub fn summary(&self) -> Value {
        let f = |d: Option<Duration>| d.map(ms);
        json!({
            "n": self.len(),
            "timeouts": self.timeouts(),
            "min_ms": f(self.min()),
            "p50_ms": f(self.percentile(50.0)),
            "p90_ms": f(self.percentile(90.0)),
            "p99_ms": f(self.percentile(99.0)),
            "max_ms": f(self.max()),
            "mean_ms": f(self.mean()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let mut s = Samples::default();
        for i in 1..=100 {
            s.push(Some(Duration::from_millis(i)));
        }
        assert_eq!(s.percentile(50.0), Some(Duration::from_millis(50)));
        assert_eq!(s.percentile(99.0), Some(Duration::from_millis(99)));
        assert_eq!(s.percentile(100.0), Some(Duration::from_millis(100)));
    }

    #[test]
    fn timeouts_rank_last() {
        let mut s = Samples::default();
        for i in 1..=98 {
            s.push(Some(Duration::from_millis(i)));
        }
        s.push(None);
        s.push(None);
        assert_eq!(s.percentile(50.0), Some(Duration::from_millis(50)));
        assert_eq!(s.percentile(99.0), None);
        assert_eq!(s.timeouts(), 2);
    }
}
