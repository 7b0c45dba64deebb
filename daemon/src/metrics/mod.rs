//! Counters the daemon keeps and reports through `Stats`, the latency and
//! ring histograms beside them, and (`exposition`) the same figures as
//! Prometheus text for the metrics endpoint (`crate::telemetry`).
//!
//! Plain relaxed atomics: they are read for reporting only, never to make a
//! decision. Names are part of the Stats contract (ARCHITECTURE.md).
//!
//! What this module does not do: serve anything (`telemetry.rs`), or keep
//! the store's, the engines' or the cache's own counters (they report their
//! own, and `handler::stats` gathers everything).

pub mod exposition;
pub mod histogram;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use nexus_shm_protocol::wire::{ArchivedRequestBody, Counter, StatsReport};

use crate::recall::Route;
use histogram::{Histogram, LATENCY_BOUNDS_NS, NS_PER_SECOND, OCCUPANCY_BOUNDS_PPM, PPM_PER_RATIO, Snapshot};

/// fdatasync latency of the WAL writer (`nexus_wal_fsync_duration_seconds`).
///
/// Process-wide because the writer thread is started by the store, which is
/// opened (replay included) before the daemon's [`Metrics`] exist and knows
/// nothing of them; threading a handle through `StoreConfig` → `WalConfig`
/// would widen the store's API for one observation. A daemon has exactly one
/// WAL (the data directory's `LOCK` sees to that), so one histogram per
/// process is one per WAL; tests that open many stores in one process only
/// add to a histogram nobody serves.
pub static WAL_FSYNC: Histogram = Histogram::new(&LATENCY_BOUNDS_NS, NS_PER_SECOND);

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
    /// Requests answered with an error code.
    pub requests_failed: AtomicU64,
    /// Recalls answered without an engine that failed or whose breaker is
    /// open (the answer says `degraded`).
    pub recalls_degraded: AtomicU64,
    /// How full a shared-memory session's request ring was when a burst
    /// began (see `shm_session.rs`).
    pub request_ring_occupancy: Histogram,
    /// Recall latency by the route that answered, from pick-up to the reply.
    recall_latency: [Histogram; RouteLabel::ALL.len()],
    /// Latency of every other operation, by operation. The `Recall` slot
    /// stays empty: recalls are filed by route in `recall_latency`.
    request_latency: [Histogram; Operation::ALL.len()],
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
            requests_failed: AtomicU64::new(0),
            recalls_degraded: AtomicU64::new(0),
            request_ring_occupancy: Histogram::new(&OCCUPANCY_BOUNDS_PPM, PPM_PER_RATIO),
            recall_latency: [const { Histogram::new(&LATENCY_BOUNDS_NS, NS_PER_SECOND) }; RouteLabel::ALL.len()],
            request_latency: [const { Histogram::new(&LATENCY_BOUNDS_NS, NS_PER_SECOND) }; Operation::ALL.len()],
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
            read("requests_failed", &self.requests_failed),
            read("recalls_degraded", &self.recalls_degraded),
        ];
        let mut counters = counters;
        counters.extend(process_gauges());
        counters.extend(self.latency_counters());
        StatsReport { counters }
    }

    /// Files one answered request's latency (pick-up to reply): a recall's
    /// under the route that answered it, any other under its operation.
    /// Allocation-free and lock-free: it runs for every request.
    #[inline]
    pub fn observe_request(&self, operation: Operation, recall_route: Option<RouteLabel>, elapsed_ns: u64) {
        match recall_route {
            Some(route) => self.recall_latency[route as usize].observe(elapsed_ns),
            None => self.request_latency[operation as usize].observe(elapsed_ns),
        }
    }

    /// Recall latency per route, now.
    pub fn recall_latency(&self) -> impl Iterator<Item = (RouteLabel, Snapshot)> + '_ {
        (RouteLabel::ALL.into_iter()).map(|route| (route, self.recall_latency[route as usize].snapshot()))
    }

    /// Latency per operation other than Recall (see [`Self::recall_latency`]), now.
    pub fn request_latency(&self) -> impl Iterator<Item = (Operation, Snapshot)> + '_ {
        (Operation::ALL.into_iter())
            .filter(|&operation| operation != Operation::Recall)
            .map(|operation| (operation, self.request_latency[operation as usize].snapshot()))
    }

    /// `latency_recall_<route>_{p50_us,p99_us,count}` and
    /// `latency_<operation>_{p50_us,p99_us,count}` for Stats: quantiles
    /// estimated from the histograms' buckets (see `Snapshot::quantile`),
    /// so within one bucket's width (at most 2x) of the truth.
    fn latency_counters(&self) -> Vec<Counter> {
        let recalls = self
            .recall_latency()
            .map(|(route, s)| (format!("recall_{}", route.name()), s));
        let others = self
            .request_latency()
            .map(|(operation, s)| (operation.name().to_owned(), s));
        let mut counters = Vec::new();
        for (label, snapshot) in recalls.chain(others) {
            let (p50_us, p99_us) = (snapshot.quantile(0.5) / 1000, snapshot.quantile(0.99) / 1000);
            counters.extend([
                (format!("latency_{label}_p50_us"), p50_us),
                (format!("latency_{label}_p99_us"), p99_us),
                (format!("latency_{label}_count"), snapshot.count()),
            ]);
        }
        (counters.into_iter())
            .map(|(name, value)| Counter { name, value })
            .collect()
    }
}

/// A recall's route as the latency histogram labels it (`route=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteLabel {
    /// Answered from the cache.
    Cache,
    /// SmartRouting.
    Smart,
    /// FullPipeline.
    Full,
    /// MaximumIntelligence.
    Max,
    /// One engine named by the request, alone.
    Engine,
    /// Answered with an error (no route ran to the end).
    Refused,
}

impl RouteLabel {
    /// Every route, in label order.
    pub const ALL: [Self; 6] = [
        Self::Cache,
        Self::Smart,
        Self::Full,
        Self::Max,
        Self::Engine,
        Self::Refused,
    ];

    /// The label value.
    pub fn name(self) -> &'static str {
        match self {
            Self::Cache => "cache",
            Self::Smart => "smart",
            Self::Full => "full",
            Self::Max => "max",
            Self::Engine => "engine",
            Self::Refused => "refused",
        }
    }

    /// The route an answer took (an answer from a named engine took none).
    pub fn of(route: Route) -> Self {
        match route {
            Route::CacheOnly => Self::Cache,
            Route::SmartRouting => Self::Smart,
            Route::FullPipeline => Self::Full,
            Route::MaximumIntelligence => Self::Max,
            Route::Auto => Self::Engine,
        }
    }
}

/// The operation a request asks for (`op=` in logs and histograms).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// Ping.
    Ping,
    /// Stats.
    Stats,
    /// Health.
    Health,
    /// Remember.
    Remember,
    /// Recall.
    Recall,
    /// Forget.
    Forget,
    /// Feedback.
    Feedback,
    /// Flush.
    Flush,
    /// Checkpoint.
    Checkpoint,
    /// List.
    List,
}

impl Operation {
    /// Every operation, in label order.
    pub const ALL: [Self; 10] = [
        Self::Ping,
        Self::Stats,
        Self::Health,
        Self::Remember,
        Self::Recall,
        Self::Forget,
        Self::Feedback,
        Self::Flush,
        Self::Checkpoint,
        Self::List,
    ];

    /// The operation of a request (an exhaustive match: a new operation
    /// does not compile until it has a name here).
    pub fn of(body: &ArchivedRequestBody) -> Self {
        match body {
            ArchivedRequestBody::Ping(_) => Self::Ping,
            ArchivedRequestBody::Stats => Self::Stats,
            ArchivedRequestBody::Health => Self::Health,
            ArchivedRequestBody::Remember(_) => Self::Remember,
            ArchivedRequestBody::Recall(_) => Self::Recall,
            ArchivedRequestBody::Forget(_) => Self::Forget,
            ArchivedRequestBody::Feedback(_) => Self::Feedback,
            ArchivedRequestBody::Flush => Self::Flush,
            ArchivedRequestBody::Checkpoint => Self::Checkpoint,
            ArchivedRequestBody::List(_) => Self::List,
        }
    }

    /// The label value.
    pub fn name(self) -> &'static str {
        match self {
            Self::Ping => "ping",
            Self::Stats => "stats",
            Self::Health => "health",
            Self::Remember => "remember",
            Self::Recall => "recall",
            Self::Forget => "forget",
            Self::Feedback => "feedback",
            Self::Flush => "flush",
            Self::Checkpoint => "checkpoint",
            Self::List => "list",
        }
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
