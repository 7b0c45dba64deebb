//! The daemon gauges the benchmarks watch, read through one `Stats` call.
//!
//! The daemon measures itself (`/proc/self`, `getrusage`) and reports the
//! values under stable counter names; this module only picks them out. It
//! does not read the daemon's `/proc` entries directly, so it works for any
//! daemon the socket reaches, spawned or not.

use nexus_client::{Client, ConnectOptions, counter};
use serde::Serialize;

use crate::error::{BenchError, client_step};

/// Ring size of the benchmarks' own observer connections: Stats answers are
/// small, and a small ring keeps the observer from moving the RSS it measures.
pub const OBSERVER_RING_BYTES: u32 = 64 << 10;

/// The daemon's resource gauges at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Gauges {
    /// The daemon's pid.
    pub pid: u64,
    /// Open file descriptors of the daemon process.
    pub open_fds: u64,
    /// Resident set size of the daemon, bytes.
    pub rss_bytes: u64,
    /// User + system CPU time of the daemon, nanoseconds.
    pub cpu_ns: u64,
    /// Connections the daemon serves (the observer's own included).
    pub connections_open: u64,
    /// Requests answered since start.
    pub requests_total: u64,
    /// Wake-ups (eventfd writes) the daemon sent to clients since start.
    pub wakeups_sent: u64,
}

/// Connects the observer client used to read Stats.
pub fn connect_observer(socket: &std::path::Path) -> Result<Client, BenchError> {
    let options = ConnectOptions {
        name: "nexus-bench observer".into(),
        request_ring_bytes: OBSERVER_RING_BYTES,
        response_ring_bytes: OBSERVER_RING_BYTES,
        ..ConnectOptions::default()
    };
    Client::connect_with(socket, options).map_err(client_step("connect the Stats observer"))
}

/// Reads the gauges through `observer`.
pub fn read_gauges(observer: &Client) -> Result<Gauges, BenchError> {
    let stats = observer.stats().map_err(client_step("Stats"))?;
    let get = |name: &'static str| counter(&stats, name).ok_or(BenchError::MissingCounter(name));
    Ok(Gauges {
        pid: get("process_pid")?,
        open_fds: get("process_open_fds")?,
        rss_bytes: get("process_rss_bytes")?,
        cpu_ns: get("process_cpu_ns")?,
        connections_open: get("connections_open")?,
        requests_total: get("requests_total")?,
        wakeups_sent: get("wakeups_sent")?,
    })
}
