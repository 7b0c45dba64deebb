//! Counters the daemon keeps and reports through `Stats`.
//!
//! Plain relaxed atomics: they are read for reporting only, never to make a
//! decision. Names are part of the Stats contract (ARCHITECTURE.md).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use nexus_shm_protocol::wire::{Counter, StatsReport};

/// The daemon's counters and gauges.
#[derive(Debug)]
pub struct Metrics {
    started: Instant,
    /// Connections currently served (gauge).
    pub connections_open: AtomicU64,
    /// Connections that completed a handshake.
    pub connections_total: AtomicU64,
    /// Handshakes refused (bad bytes, version, uid, capacity) or timed out.
    pub handshakes_refused: AtomicU64,
    /// Requests answered.
    pub requests_total: AtomicU64,
    /// Frames rejected as malformed, oversize or of unknown kind.
    pub frames_rejected: AtomicU64,
    /// Connections closed for sending too many bad frames.
    pub clients_disconnected_bad_frames: AtomicU64,
    /// Connections closed because their response ring stayed full.
    pub clients_disconnected_stalled: AtomicU64,
    /// Connections closed because the shared ring state was corrupt.
    pub clients_disconnected_corrupt: AtomicU64,
    /// Connections closed after `idle_timeout` without a request.
    pub clients_disconnected_idle: AtomicU64,
    /// Connections dropped before their hello to make room for a newer one
    /// (`max_pending_handshakes`).
    pub handshakes_evicted: AtomicU64,
    /// Connections refused to keep `fd_reserve` fds free for the store.
    pub refused_fd_reserve: AtomicU64,
    /// Handshakes refused because the uid held its `max_clients_per_uid`.
    pub refused_uid_share: AtomicU64,
    /// Handshakes refused (and frames answered `Busy`) because the
    /// connection memory would exceed `memory_budget_bytes`.
    pub refused_memory_budget: AtomicU64,
    /// Wake-ups sent to clients (eventfd writes).
    pub wakeups_sent: AtomicU64,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            started: Instant::now(),
            connections_open: AtomicU64::new(0),
            connections_total: AtomicU64::new(0),
            handshakes_refused: AtomicU64::new(0),
            requests_total: AtomicU64::new(0),
            frames_rejected: AtomicU64::new(0),
            clients_disconnected_bad_frames: AtomicU64::new(0),
            clients_disconnected_stalled: AtomicU64::new(0),
            clients_disconnected_corrupt: AtomicU64::new(0),
            clients_disconnected_idle: AtomicU64::new(0),
            handshakes_evicted: AtomicU64::new(0),
            refused_fd_reserve: AtomicU64::new(0),
            refused_uid_share: AtomicU64::new(0),
            refused_memory_budget: AtomicU64::new(0),
            wakeups_sent: AtomicU64::new(0),
        }
    }
}

/// Adds one to a counter.
pub fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

impl Metrics {
    /// Seconds since the daemon started.
    pub fn uptime_s(&self) -> u64 {
        self.started.elapsed().as_secs()
    }

    /// A snapshot for the Stats operation.
    pub fn report(&self) -> StatsReport {
        let read = |name: &str, value: &AtomicU64| Counter {
            name: name.to_owned(),
            value: value.load(Ordering::Relaxed),
        };
        let counters = vec![
            Counter {
                name: "uptime_s".into(),
                value: self.uptime_s(),
            },
            read("connections_open", &self.connections_open),
            read("connections_total", &self.connections_total),
            read("handshakes_refused", &self.handshakes_refused),
            read("requests_total", &self.requests_total),
            read("frames_rejected", &self.frames_rejected),
            read("clients_disconnected_bad_frames", &self.clients_disconnected_bad_frames),
            read("clients_disconnected_stalled", &self.clients_disconnected_stalled),
            read("clients_disconnected_corrupt", &self.clients_disconnected_corrupt),
            read("clients_disconnected_idle", &self.clients_disconnected_idle),
            read("handshakes_evicted", &self.handshakes_evicted),
            read("refused_fd_reserve", &self.refused_fd_reserve),
            read("refused_uid_share", &self.refused_uid_share),
            read("refused_memory_budget", &self.refused_memory_budget),
            read("wakeups_sent", &self.wakeups_sent),
        ];
        let mut counters = counters;
        counters.extend(process_gauges());
        StatsReport { counters }
    }
}

/// The daemon process's own resource use, from /proc/self: what an operator
/// (and the leak tests) watch. Missing values are left out, never invented.
fn process_gauges() -> Vec<Counter> {
    let mut gauges = vec![Counter {
        name: "process_pid".into(),
        value: u64::from(std::process::id()),
    }];
    if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
        gauges.push(Counter {
            name: "process_open_fds".into(),
            value: fds.count() as u64,
        });
    }
    if let Some(rss) = status_kib("VmRSS:") {
        gauges.push(Counter {
            name: "process_rss_bytes".into(),
            value: rss * 1024,
        });
    }
    if let Some(cpu_ns) = cpu_time_ns() {
        gauges.push(Counter {
            name: "process_cpu_ns".into(),
            value: cpu_ns,
        });
    }
    gauges
}

fn status_kib(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|line| line.starts_with(field))?;
    line[field.len()..].trim().trim_end_matches("kB").trim().parse().ok()
}

/// User + system CPU time of the whole process.
fn cpu_time_ns() -> Option<u64> {
    let usage = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_SELF).ok()?;
    let to_ns = |tv: nix::sys::time::TimeVal| tv.tv_sec() as u64 * 1_000_000_000 + tv.tv_usec() as u64 * 1000;
    Some(to_ns(usage.user_time()) + to_ns(usage.system_time()))
}
