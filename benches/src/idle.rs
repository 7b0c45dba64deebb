//! The daemon's CPU use while many connected clients sit idle.
//!
//! Connects the clients (each pings once, so its session is fully set up),
//! lets the connection burst settle, then reads the daemon's `process_cpu_ns`
//! through one extra observer client before and after the idle window. An
//! idle daemon must be asleep: no timers ticking per client, no spinning.
//! The observer's two Stats calls fall inside the window and are counted.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use nexus_client::{Client, ConnectOptions};
use serde::Serialize;

use crate::error::{BenchError, client_step};
use crate::stats::{connect_observer, read_gauges};

/// Most idle clients: the daemon's default `--max-clients` is 1024.
pub const MAX_IDLE_CLIENTS: usize = 10_000;

/// Pause between connecting the clients and opening the window: lets the
/// daemon finish the connection burst (handshake tasks, allocator trims).
const SETTLE: Duration = Duration::from_millis(500);

/// What to measure.
#[derive(Debug, Clone)]
pub struct IdleConfig {
    /// The daemon's socket.
    pub socket: PathBuf,
    /// Idle clients to connect.
    pub n_clients: usize,
    /// Length of the measured idle window.
    pub window: Duration,
    /// Ring size each idle client asks for (0: the daemon's default).
    pub ring_bytes: u32,
}

impl IdleConfig {
    /// The defaults of `nexus-bench idle` for `socket`: 100 clients, 10 s,
    /// the daemon's default rings (what a real idle client gets).
    pub fn new(socket: impl Into<PathBuf>) -> Self {
        Self {
            socket: socket.into(),
            n_clients: 100,
            window: Duration::from_secs(10),
            ring_bytes: 0,
        }
    }
}

/// The measurement: `{"clients":N,"seconds":S,"cpu_percent":..,..}`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct IdleReport {
    /// Idle clients connected.
    pub clients: usize,
    /// The requested idle window, seconds.
    pub seconds: f64,
    /// The measured window (wall clock between the two Stats reads), seconds.
    pub measured_seconds: f64,
    /// Daemon CPU time over the window, as a percentage of one core.
    pub cpu_percent: f64,
    /// Daemon CPU time over the window, nanoseconds.
    pub daemon_cpu_ns: u64,
    /// Wake-ups the daemon sent during the window (expected: 0).
    pub wakeups_sent: u64,
    /// Requests the daemon answered during the window (the observer's own).
    pub requests: u64,
}

/// Runs the idle measurement against the daemon at `config.socket`.
pub fn run_idle(config: &IdleConfig) -> Result<IdleReport, BenchError> {
    if config.n_clients > MAX_IDLE_CLIENTS || config.window.is_zero() {
        return Err(BenchError::InvalidArgument(format!(
            "idle needs 0..={MAX_IDLE_CLIENTS} clients and a non-zero window"
        )));
    }
    let observer = connect_observer(&config.socket)?;
    let clients = connect_idle_clients(config)?;
    std::thread::sleep(SETTLE);
    let (before, opened) = (read_gauges(&observer)?, Instant::now());
    std::thread::sleep(config.window);
    let (after, closed) = (read_gauges(&observer)?, Instant::now());
    drop(clients);
    let wall = closed - opened;
    let daemon_cpu_ns = after.cpu_ns.saturating_sub(before.cpu_ns);
    Ok(IdleReport {
        clients: config.n_clients,
        seconds: config.window.as_secs_f64(),
        measured_seconds: wall.as_secs_f64(),
        cpu_percent: daemon_cpu_ns as f64 / wall.as_nanos() as f64 * 100.0,
        daemon_cpu_ns,
        wakeups_sent: after.wakeups_sent.saturating_sub(before.wakeups_sent),
        requests: after.requests_total.saturating_sub(before.requests_total),
    })
}

fn connect_idle_clients(config: &IdleConfig) -> Result<Vec<Client>, BenchError> {
    let options = ConnectOptions {
        name: "nexus-bench idle".into(),
        request_ring_bytes: config.ring_bytes,
        response_ring_bytes: config.ring_bytes,
        ..ConnectOptions::default()
    };
    (0..config.n_clients)
        .map(|i| {
            let client = Client::connect_with(&config.socket, options.clone())
                .map_err(client_step(format!("connect idle client {i}")))?;
            client.ping().map_err(client_step(format!("ping idle client {i}")))?;
            Ok(client)
        })
        .collect()
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
