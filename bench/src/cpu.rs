//! Where the CPU goes during a measurement: every process on the machine is read from
//! `/proc/<pid>/stat` (user + system time) at the start and at the end, and the
//! difference is summed per program. PostgreSQL's server processes are grouped as
//! `postgres`; every other process by the file name of its executable (`nats-server`,
//! `device-service`, `reseller-bench`, ...). A process that started or ended in between
//! counts from zero or is missed; the measured window is short and the stack's
//! processes outlive it.
//!
//! When the sum approaches the machine's cores × the window, the measurement ran on a
//! saturated machine: latency is then queueing, and the per-program split says who
//! queued whom.

use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

use serde_json::{Value, json};

/// `/proc/<pid>/stat` counts in clock ticks of `USER_HZ`, which is 100 on Linux for
/// every architecture this runs on (`sysconf(_SC_CLK_TCK)`; fixed by the kernel ABI).
const TICKS_PER_SECOND: f64 = 100.0;

/// CPU ticks used so far by each process, by pid, and its program.
#[derive(Debug)]
pub struct Snapshot {
    at: Instant,
    processes: HashMap<u32, (String, u64)>,
}

impl Snapshot {
    /// Reads every process now (processes that vanish while being read are skipped).
    pub fn take() -> Self {
        let mut processes = HashMap::new();
        if let Ok(entries) = std::fs::read_dir("/proc") {
            for entry in entries.flatten() {
                let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse().ok()) else {
                    continue;
                };
                if let Some(process) = read(pid) {
                    processes.insert(pid, process);
                }
            }
        }
        Self {
            at: Instant::now(),
            processes,
        }
    }

    /// CPU seconds per program from `self` to `later`, the total, and the window's
    /// capacity (cores × seconds), as JSON; `per_event` divides by `events`.
    pub fn report(&self, later: &Snapshot, events: usize) -> Value {
        let mut by_program = BTreeMap::<String, u64>::new();
        for (pid, (program, ticks)) in &later.processes {
            let before = self
                .processes
                .get(pid)
                .filter(|(p, _)| p == program)
                .map_or(0, |(_, t)| *t);
            let used = ticks.saturating_sub(before);
            if used > 0 {
                *by_program.entry(program.clone()).or_default() += used;
            }
        }
        let seconds = |ticks: u64| ticks as f64 / TICKS_PER_SECOND;
        let total: u64 = by_program.values().sum();
        let window = later.at.duration_since(self.at).as_secs_f64();
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        json!({
            "window_s": window,
            "cores": cores,
            "busy_fraction": seconds(total) / (window * cores as f64),
            "cpu_s": seconds(total),
            "cpu_ms_per_event": (events > 0).then(|| 1000.0 * seconds(total) / events as f64),
            "by_program_cpu_s": by_program
                .iter()
                .map(|(p, t)| (p.clone(), json!(seconds(*t))))
                .collect::<serde_json::Map<_, _>>(),
        })
    }
}

/// A process's program and its user + system ticks.
fn read(pid: u32) -> Option<(String, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "pid (comm) state ppid ...": comm may hold spaces and parentheses; the fields
    // after the last ')' are fixed: utime is the 12th, stime the 13th of them.
    let after = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some((program(pid, &stat)?, ticks))
}

/// `postgres` for PostgreSQL's processes (a backend's command line is rewritten to
/// `postgres: user db host state`), otherwise the executable's file name.
fn program(pid: u32, stat: &str) -> Option<String> {
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let first = cmdline.split(|b| *b == 0).next().unwrap_or_default();
    let first = String::from_utf8_lossy(first);
    if first.starts_with("postgres") {
        return Some("postgres".into());
    }
    let name = first.split_whitespace().next().unwrap_or_default();
    let name = name.rsplit('/').next().unwrap_or_default();
    if name.is_empty() {
        // Kernel threads have no command line: use the comm field.
        let comm = &stat[stat.find('(')? + 1..stat.rfind(')')?];
        return Some(kernel_thread(comm));
    }
    Some(name.to_owned())
}

/// A kernel thread's name, `[comm]`, without the work item a kworker appends to its comm
/// (`kworker/0:1-events`): that changes as it runs, and would make the same thread look
/// new to [`Snapshot::report`] (all its CPU since boot counted in one window).
fn kernel_thread(comm: &str) -> String {
    let name = match comm.split_once('-') {
        Some((thread, _)) if comm.starts_with("kworker/") => thread,
        _ => comm,
    };
    format!("[{name}]")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kworker_keeps_its_name_whatever_it_works_on() {
        assert_eq!(kernel_thread("kworker/0:1-events"), "[kworker/0:1]");
        assert_eq!(kernel_thread("kworker/u8:2-flush-254:0"), "[kworker/u8:2]");
        assert_eq!(kernel_thread("kworker/1:4"), "[kworker/1:4]");
        assert_eq!(kernel_thread("ksoftirqd/0"), "[ksoftirqd/0]");
        assert_eq!(kernel_thread("jbd2/vda1-8"), "[jbd2/vda1-8]");
    }

    #[test]
    fn this_process_is_seen_and_its_cpu_counted() {
        let before = Snapshot::take();
        let started = Instant::now();
        let mut x = 0u64;
        while started.elapsed().as_millis() < 200 {
            x = x.wrapping_mul(31).wrapping_add(7);
        }
        std::hint::black_box(x);
        let after = Snapshot::take();
        let me = std::process::id();
        assert!(after.processes.contains_key(&me));
        let report = before.report(&after, 10);
        let total = report["cpu_s"].as_f64().unwrap();
        assert!(total >= 0.1, "200 ms of spinning counted as {total} s");
    }
}
