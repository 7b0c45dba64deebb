//! A thousand short-lived clients: are they all served, and does the daemon
//! give back every fd and most memory once they leave?
//!
//! Reads the daemon's gauges (fds, RSS, open connections) through an
//! observer client, connects the clients with small rings (all open at once),
//! has each ping a few times, reads the peak, disconnects them all, waits
//! (bounded) until `connections_open` is back to its earlier value, and reads
//! the gauges again. RLIMIT_NOFILE is raised to the hard limit first: each
//! client holds three fds in this process. Judging leaks from the figures is
//! the reader's (or a test's) job; this module only measures.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use nexus_client::{Client, ConnectOptions};
use serde::Serialize;

use crate::error::BenchError;
use crate::stats::{Gauges, connect_observer, read_gauges};

/// Most clients one fan-out opens (three fds each in this process).
pub const MAX_FANOUT_CLIENTS: usize = 100_000;

/// Failures quoted in the report; the rest are only counted.
const MAX_QUOTED_FAILURES: usize = 10;

/// Poll period while waiting for the daemon to close the sessions.
const SETTLE_POLL: Duration = Duration::from_millis(10);

/// What to measure.
#[derive(Debug, Clone)]
pub struct FanoutConfig {
    /// The daemon's socket.
    pub socket: PathBuf,
    /// Clients to connect, all open at once.
    pub n_clients: usize,
    /// Pings each client sends.
    pub pings_per_client: u32,
    /// Ring size each client asks for.
    pub ring_bytes: u32,
    /// Longest wait for the daemon to close every session.
    pub settle_timeout: Duration,
}

impl FanoutConfig {
    /// The defaults of `nexus-bench fanout` for `socket`: 1,000 clients,
    /// 3 pings each, 16 KiB rings, 10 s to settle.
    pub fn new(socket: impl Into<PathBuf>) -> Self {
        Self {
            socket: socket.into(),
            n_clients: 1000,
            pings_per_client: 3,
            ring_bytes: 16 << 10,
            settle_timeout: Duration::from_secs(10),
        }
    }
}

/// The daemon's gauges at one point of the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Snapshot {
    /// Connections served (the observer's own included).
    pub connections_open: u64,
    /// Open fds of the daemon.
    pub open_fds: u64,
    /// Daemon RSS, bytes.
    pub rss_bytes: u64,
}

/// The measurement.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FanoutReport {
    /// Clients attempted.
    pub clients: usize,
    /// Clients that connected and had every ping answered.
    pub served: usize,
    /// `served == clients`.
    pub all_served: bool,
    /// Before connecting.
    pub before: Snapshot,
    /// With every client connected, after the pings.
    pub peak: Snapshot,
    /// After disconnecting and settling.
    pub after: Snapshot,
    /// `connections_open` came back to its `before` value within the timeout.
    pub returned_to_baseline: bool,
    /// Time from the last disconnect to the baseline (or to the timeout).
    pub settle_ms: u64,
    /// The first few failures, as text.
    pub failures: Vec<String>,
}

/// Runs the fan-out against the daemon at `config.socket`.
pub fn run_fanout(config: &FanoutConfig) -> Result<FanoutReport, BenchError> {
    if config.n_clients > MAX_FANOUT_CLIENTS {
        return Err(BenchError::InvalidArgument(format!(
            "fanout is limited to {MAX_FANOUT_CLIENTS} clients"
        )));
    }
    raise_fd_limit()?;
    let observer = connect_observer(&config.socket)?;
    let before = read_gauges(&observer)?;
    let mut failures = Vec::new();
    let clients = connect_clients(config, &mut failures);
    let served = ping_all(&clients, config.pings_per_client, &mut failures);
    let peak = read_gauges(&observer)?;
    drop(clients);
    let disconnected = Instant::now();
    let (after, returned_to_baseline) = wait_for_connections(&observer, before.connections_open, config)?;
    let n_failures = failures.len();
    failures.truncate(MAX_QUOTED_FAILURES);
    if n_failures > MAX_QUOTED_FAILURES {
        failures.push(format!("... and {} more", n_failures - MAX_QUOTED_FAILURES));
    }
    Ok(FanoutReport {
        clients: config.n_clients,
        served,
        all_served: served == config.n_clients,
        before: snapshot(&before),
        peak: snapshot(&peak),
        after: snapshot(&after),
        returned_to_baseline,
        settle_ms: disconnected.elapsed().as_millis() as u64,
        failures,
    })
}

/// Connects every client it can; failures are recorded, not fatal.
fn connect_clients(config: &FanoutConfig, failures: &mut Vec<String>) -> Vec<Client> {
    let options = ConnectOptions {
        name: "nexus-bench fanout".into(),
        request_ring_bytes: config.ring_bytes,
        response_ring_bytes: config.ring_bytes,
        ..ConnectOptions::default()
    };
    let mut clients = Vec::with_capacity(config.n_clients);
    for i in 0..config.n_clients {
        match Client::connect_with(&config.socket, options.clone()) {
            Ok(client) => clients.push(client),
            Err(e) => failures.push(format!("client {i}: connect: {e}")),
        }
    }
    clients
}

/// Pings every client `pings` times, round-robin (so every session is live
/// at once); returns how many had all their pings answered.
fn ping_all(clients: &[Client], pings: u32, failures: &mut Vec<String>) -> usize {
    let mut ok = vec![true; clients.len()];
    for _ in 0..pings {
        for (i, client) in clients.iter().enumerate() {
            if ok[i]
                && let Err(e) = client.ping()
            {
                failures.push(format!("client {i}: ping: {e}"));
                ok[i] = false;
            }
        }
    }
    ok.iter().filter(|served| **served).count()
}

/// Polls until `connections_open <= baseline` or the timeout; returns the
/// last gauges and whether the baseline was reached.
fn wait_for_connections(observer: &Client, baseline: u64, config: &FanoutConfig) -> Result<(Gauges, bool), BenchError> {
    let deadline = Instant::now() + config.settle_timeout;
    loop {
        let gauges = read_gauges(observer)?;
        if gauges.connections_open <= baseline {
            return Ok((gauges, true));
        }
        if Instant::now() >= deadline {
            return Ok((gauges, false));
        }
        std::thread::sleep(SETTLE_POLL);
    }
}

fn snapshot(gauges: &Gauges) -> Snapshot {
    Snapshot {
        connections_open: gauges.connections_open,
        open_fds: gauges.open_fds,
        rss_bytes: gauges.rss_bytes,
    }
}

/// Raises this process's RLIMIT_NOFILE soft limit to the hard limit.
pub fn raise_fd_limit() -> Result<(), BenchError> {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).map_err(std::io::Error::from)?;
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard).map_err(std::io::Error::from)?;
    }
    Ok(())
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
