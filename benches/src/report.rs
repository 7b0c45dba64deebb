//! Percentiles from nanosecond samples, and the human-readable tables.
//!
//! Percentiles use the nearest-rank method on the sorted samples: p50 of
//! 1..=100 is 50, p99.9 of 1,000 samples is the 999th. No interpolation, so
//! every figure reported is a latency that really happened. JSON shapes are
//! the report structs' serde derives (see each benchmark module).

use std::fmt::Write as _;
use std::time::Duration;

use serde::Serialize;

use crate::fanout::FanoutReport;
use crate::floor::FloorReport;
use crate::idle::IdleReport;
use crate::ping::{PingConfig, PingReport};
use crate::remember::RememberReport;
use crate::startup::{Restart, StartupReport};

/// Latency percentiles and throughput of one transport.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Summary {
    /// Median round trip, nanoseconds.
    pub p50_ns: u64,
    /// 99th percentile, nanoseconds.
    pub p99_ns: u64,
    /// 99.9th percentile, nanoseconds.
    pub p999_ns: u64,
    /// Requests completed per second of measured time.
    pub throughput_per_s: f64,
}

impl Summary {
    /// Sorts `samples_ns` in place and summarises them; `busy` is the wall
    /// time during which `completed` requests were measured.
    pub fn from_samples(samples_ns: &mut [u64], completed: u64, busy: Duration) -> Self {
        samples_ns.sort_unstable();
        let busy_s = busy.as_secs_f64();
        Self {
            p50_ns: percentile(samples_ns, 0.50),
            p99_ns: percentile(samples_ns, 0.99),
            p999_ns: percentile(samples_ns, 0.999),
            throughput_per_s: if busy_s > 0.0 { completed as f64 / busy_s } else { 0.0 },
        }
    }
}

/// The `quantile` (0..=1) of already sorted samples, nearest rank; 0 when empty.
pub fn percentile(sorted_ns: &[u64], quantile: f64) -> u64 {
    if sorted_ns.is_empty() {
        return 0;
    }
    debug_assert!(sorted_ns.is_sorted(), "percentile needs sorted samples");
    let rank = (quantile.clamp(0.0, 1.0) * sorted_ns.len() as f64).ceil() as usize;
    sorted_ns[rank.clamp(1, sorted_ns.len()) - 1]
}

/// `numerator / denominator`, or 0 when the denominator is 0 (nothing measured).
pub fn ratio(numerator: f64, denominator: f64) -> f64 {
    if denominator > 0.0 {
        numerator / denominator
    } else {
        0.0
    }
}

/// The ping result as a table.
pub fn ping_table(config: &PingConfig, report: &PingReport) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "ping: payload {} B, depth {}, {} measured requests per transport in {} alternating rounds \
         (+{} warm-up), client spin {} µs",
        config.payload_bytes,
        config.depth,
        config.iterations,
        config.rounds,
        config.warmup,
        config.client_spin.as_micros()
    );
    let _ = writeln!(
        out,
        "{:<10} {:>11} {:>11} {:>11} {:>14}",
        "transport", "p50", "p99", "p99.9", "throughput"
    );
    for (name, s) in [("shm", &report.shm), ("uds", &report.uds)] {
        let _ = writeln!(
            out,
            "{:<10} {:>11} {:>11} {:>11} {:>12}/s",
            name,
            micros(s.p50_ns),
            micros(s.p99_ns),
            micros(s.p999_ns),
            grouped(s.throughput_per_s)
        );
    }
    let _ = writeln!(
        out,
        "shm/uds: p50 {:.3}x, throughput {:.2}x",
        report.ratio_p50, report.ratio_throughput
    );
    out
}

/// The idle result as a table.
pub fn idle_table(report: &IdleReport) -> String {
    format!(
        "idle: {} clients for {:.1} s: daemon CPU {:.3} % ({:.1} ms of CPU, {} wake-ups sent, {} requests)\n",
        report.clients,
        report.seconds,
        report.cpu_percent,
        report.daemon_cpu_ns as f64 / 1e6,
        report.wakeups_sent,
        report.requests
    )
}

/// The fan-out result as a table.
pub fn fanout_table(report: &FanoutReport) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "fanout: {} clients, {} served ({}), back to {} connections: {} after {} ms",
        report.clients,
        report.served,
        if report.all_served { "all" } else { "NOT all" },
        report.before.connections_open,
        report.returned_to_baseline,
        report.settle_ms
    );
    let _ = writeln!(out, "{:<8} {:>12} {:>10} {:>12}", "when", "connections", "fds", "RSS");
    for (name, g) in [
        ("before", &report.before),
        ("peak", &report.peak),
        ("after", &report.after),
    ] {
        let _ = writeln!(
            out,
            "{:<8} {:>12} {:>10} {:>9.1} MiB",
            name,
            g.connections_open,
            g.open_fds,
            g.rss_bytes as f64 / (1 << 20) as f64
        );
    }
    for failure in &report.failures {
        let _ = writeln!(out, "failure: {failure}");
    }
    out
}

/// The remember result as a table.
pub fn remember_table(r: &RememberReport) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "remember over {}: {} clients, batch {}, {}-d vectors, {} B texts: {} memories in {} requests",
        r.transport, r.clients, r.batch, r.dim, r.text_bytes, r.memories, r.requests
    );
    let _ = writeln!(
        out,
        "throughput {}/s memories ({}/s requests); WAL: {} fdatasyncs, {:.1} memories each",
        grouped(r.throughput_per_s),
        grouped(r.requests_per_s),
        r.wal_fsyncs,
        r.memories_per_fsync
    );
    let _ = writeln!(
        out,
        "request latency p50 {}  p99 {}  p99.9 {}",
        micros(r.p50_ns),
        micros(r.p99_ns),
        micros(r.p999_ns)
    );
    let _ = writeln!(
        out,
        "bare fdatasync on {}: p50 {}  p99 {}  (p50 - fdatasync p50: {:.2} µs)",
        r.fsync_dir.display(),
        micros(r.fdatasync_p50_ns),
        micros(r.fdatasync_p99_ns),
        r.p50_over_fdatasync_ns as f64 / 1000.0
    );
    let _ = writeln!(
        out,
        "disk: {:.0} MB/s durable writes (4 MiB + fdatasync); {:.0} WAL bytes per memory: at most {}/s memories",
        r.disk_sync_write_mb_s,
        r.wal_bytes_per_memory,
        grouped(r.disk_bound_per_s)
    );
    out
}

/// The startup result as a table.
pub fn startup_table(r: &StartupReport) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "startup: {} memories ({}-d, {} B texts) filled at {}/s; checkpoint {} ms, snapshot {:.1} MiB",
        r.memories,
        r.dim,
        r.text_bytes,
        grouped(r.fill_per_s),
        r.checkpoint_ms,
        r.snapshot_bytes as f64 / (1 << 20) as f64
    );
    let line = |out: &mut String, name: &str, x: &Restart| {
        let _ = writeln!(
            out,
            "{name:<14} ready {:>6} ms  (snapshot load {} ms, replayed {} records in {} ms, {} memories)",
            x.ready_ms, x.snapshot_load_ms, x.replay_records, x.replay_ms, x.memories
        );
    };
    line(&mut out, "from snapshot", &r.from_snapshot);
    line(&mut out, "after SIGKILL", &r.from_wal);
    let _ = writeln!(out, "WAL replay: {} records/s", grouped(r.replay_records_per_s));
    out
}

/// The floor result as a table.
pub fn floor_table(r: &FloorReport) -> String {
    format!(
        "floor: {} round trips between two threads\neventfd pair   p50 {}  p99 {}\nsocketpair     p50 {}  p99 {}\nbell + futex   p50 {}  p99 {}\n",
        r.round_trips,
        micros(r.eventfd_p50_ns),
        micros(r.eventfd_p99_ns),
        micros(r.socketpair_p50_ns),
        micros(r.socketpair_p99_ns),
        micros(r.bell_futex_p50_ns),
        micros(r.bell_futex_p99_ns)
    )
}

fn micros(ns: u64) -> String {
    format!("{:.2} µs", ns as f64 / 1000.0)
}

/// 1234567.8 -> "1,234,568".
fn grouped(value: f64) -> String {
    let digits = format!("{:.0}", value.max(0.0));
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let samples: Vec<u64> = (1..=1000).collect();
        assert_eq!(percentile(&samples, 0.5), 500);
        assert_eq!(percentile(&samples, 0.99), 990);
        assert_eq!(percentile(&samples, 0.999), 999);
        assert_eq!(percentile(&samples, 1.0), 1000);
        assert_eq!(percentile(&samples, 0.0), 1);
        assert_eq!(percentile(&[7], 0.999), 7);
        assert_eq!(percentile(&[], 0.5), 0);
    }

    #[test]
    fn summary_sorts_and_counts() {
        let mut samples = vec![30, 10, 20];
        let s = Summary::from_samples(&mut samples, 3, Duration::from_millis(1));
        assert_eq!((s.p50_ns, s.p99_ns, s.p999_ns), (20, 30, 30));
        assert!((s.throughput_per_s - 3000.0).abs() < 1e-6);
    }

    #[test]
    fn thousands_are_grouped() {
        assert_eq!(grouped(1_234_567.4), "1,234,567");
        assert_eq!(grouped(999.0), "999");
        assert_eq!(grouped(1000.0), "1,000");
    }
}
