//! Progress of a streamed upload: a bar on a terminal, a plain line every 2 s elsewhere
//! (so logs and CI output hold no control characters), then a spinner while the portal
//! registers what it was sent.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Progress shared between the reader thread and the display.
#[derive(Debug, Default)]
pub struct Counters {
    /// Devices handed to the connection so far.
    pub devices: AtomicU64,
}

/// Shows progress against the number of devices the file holds (counted before the
/// upload started).
pub struct Progress {
    bar: Option<ProgressBar>,
    /// When the upload started.
    pub started: Instant,
    last_line: Instant,
    total: u64,
}

impl std::fmt::Debug for Progress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Progress")
            .field("total", &self.total)
            .finish()
    }
}

impl Progress {
    /// Progress of an upload of `total` devices.
    pub fn new(total: u64) -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::with_draw_target(
                Some(total.max(1)),
                ProgressDrawTarget::stderr_with_hz(10),
            );
            bar.set_style(
                ProgressStyle::with_template(
                    "{spinner} [{bar:30}] {percent:>3}% {msg} ({elapsed}, eta {eta})",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
            );
            bar
        });
        let now = Instant::now();
        Self {
            bar,
            started: now,
            last_line: now,
            total,
        }
    }

    fn rate(&self, devices: u64) -> f64 {
        devices as f64 / self.started.elapsed().as_secs_f64().max(1e-3)
    }

    /// Shows the devices sent so far.
    pub fn update(&mut self, counters: &Counters) {
        let devices = counters.devices.load(Ordering::Relaxed);
        let rate = self.rate(devices);
        match &self.bar {
            Some(bar) => {
                bar.set_position(devices);
                bar.set_message(format!(
                    "{devices} of {} devices sent, {rate:.0} devices/s",
                    self.total
                ));
            }
            None => {
                if self.last_line.elapsed() >= Duration::from_secs(2) {
                    self.last_line = Instant::now();
                    let percent = devices as f64 * 100.0 / self.total.max(1) as f64;
                    eprintln!(
                        "sent {devices} of {} devices ({percent:.0}%), {rate:.0} devices/s",
                        self.total
                    );
                }
            }
        }
    }

    /// Everything was sent; the portal is registering.
    pub fn waiting(&mut self, devices: u64) {
        let rate = self.rate(devices);
        let message = format!(
            "sent {devices} devices in {:.1}s ({rate:.0} devices/s); the portal is registering them",
            self.started.elapsed().as_secs_f64()
        );
        match &self.bar {
            Some(bar) => {
                bar.set_position(self.total.max(1));
                bar.set_style(
                    ProgressStyle::with_template("{spinner} {msg} ({elapsed})")
                        .unwrap_or_else(|_| ProgressStyle::default_spinner()),
                );
                bar.set_message(message);
                bar.enable_steady_tick(Duration::from_millis(100));
            }
            None => eprintln!("{message}"),
        }
    }

    /// Clears the bar.
    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
