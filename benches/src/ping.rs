//! Ping through shared memory against the same Ping through the Unix-socket
//! transport of the same daemon, in one run.
//!
//! Both connections stay open for the whole run and are measured in
//! alternating rounds (shm then uds, then uds then shm, ...) after a warm-up
//! of each, so slow drifts of the machine (frequency, other load) hit both
//! transports alike. Depth 1 times each `Connection::call`; depth D keeps D
//! requests in flight per connection (submit D, then one more per answer) and
//! times each request from its submit to its answer, so at depth D the
//! latency includes the queueing behind the D-1 others.
//!
//! What this does not do: choose the daemon's configuration (its spin, its
//! threads) — that is the daemon's command line.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use nexus_client::wire::{ArchivedResponseBody, ArchivedStatus, PingRequest, Request, RequestBody};
use nexus_client::{ConnectOptions, Connection, ResponseGuard, Transport};
use nexus_shm_protocol::layout::{MAX_RING_BYTES, frame_footprint};
use serde::Serialize;

use crate::error::{BenchError, client_step};
use crate::report::{Summary, grouped, micros, ratio};

/// Most requests kept in flight per connection: beyond this the benchmark
/// measures queueing in the rings, not the transport.
pub const MAX_DEPTH: u32 = 4096;

/// Largest Ping payload: it must fit a frame of the largest ring.
pub const MAX_PAYLOAD_BYTES: usize = 1 << 20;

/// Bytes an archived Ping request adds to its payload (request header,
/// enum tag, vector header, alignment), rounded up generously.
const REQUEST_OVERHEAD_BYTES: u64 = 128;

/// Smallest ring the benchmark asks for: the daemon's default.
const MIN_BENCH_RING_BYTES: u64 = 1 << 20;

/// What to measure.
#[derive(Debug, Clone)]
pub struct PingConfig {
    /// The daemon's socket.
    pub socket: PathBuf,
    /// Measured requests per transport.
    pub iterations: u64,
    /// Unmeasured requests per transport before the first round.
    pub warmup: u64,
    /// Alternating rounds the iterations are split into.
    pub rounds: u32,
    /// Ping payload size.
    pub payload_bytes: usize,
    /// Requests in flight per connection (1: plain round trips).
    pub depth: u32,
    /// The client's busy-wait before sleeping for an answer
    /// (`ConnectOptions::spin`; the socket transport does not spin).
    pub client_spin: Duration,
    /// Per-request timeout.
    pub timeout: Duration,
}

impl PingConfig {
    /// The defaults of `nexus-bench ping` for `socket`.
    pub fn new(socket: impl Into<PathBuf>) -> Self {
        Self {
            socket: socket.into(),
            iterations: 100_000,
            warmup: 10_000,
            rounds: 10,
            payload_bytes: 0,
            depth: 1,
            client_spin: Duration::ZERO,
            timeout: Duration::from_secs(5),
        }
    }

    fn validate(&self) -> Result<(), BenchError> {
        let bad = |what: String| Err(BenchError::InvalidArgument(what));
        if self.depth == 0 || self.depth > MAX_DEPTH {
            return bad(format!("depth {} is outside 1..={MAX_DEPTH}", self.depth));
        }
        if self.payload_bytes > MAX_PAYLOAD_BYTES {
            return bad(format!(
                "payload {} B exceeds {MAX_PAYLOAD_BYTES} B",
                self.payload_bytes
            ));
        }
        if self.rounds == 0 || self.iterations < u64::from(self.rounds) {
            return bad(format!(
                "{} iterations cannot fill {} rounds",
                self.iterations, self.rounds
            ));
        }
        Ok(())
    }

    /// Ring size that holds `depth` requests (or answers) at once, so a full
    /// pipeline never waits for ring space.
    fn ring_bytes(&self) -> u32 {
        let frame = frame_footprint(self.payload_bytes as u64 + REQUEST_OVERHEAD_BYTES);
        let wanted = (frame * u64::from(self.depth) * 2).max(MIN_BENCH_RING_BYTES);
        wanted.next_power_of_two().min(u64::from(MAX_RING_BYTES)) as u32
    }
}

/// The measurement: `{"shm":{..},"uds":{..},"ratio_p50":..,"ratio_throughput":..}`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct PingReport {
    /// Shared-memory rings.
    pub shm: Summary,
    /// The same daemon's Unix-socket transport.
    pub uds: Summary,
    /// shm p50 / uds p50 (below 1: shared memory is faster).
    pub ratio_p50: f64,
    /// shm throughput / uds throughput (above 1: shared memory is faster).
    pub ratio_throughput: f64,
}

/// Runs the comparison against the daemon at `config.socket`.
pub fn run_ping(config: &PingConfig) -> Result<PingReport, BenchError> {
    config.validate()?;
    let mut shm = Side::connect(config, Transport::SharedMemory)?;
    let mut uds = Side::connect(config, Transport::Socket)?;
    shm.run(config.warmup, false)?;
    uds.run(config.warmup, false)?;
    for round in 0..config.rounds {
        let n = round_share(config.iterations, config.rounds, round);
        let (first, second) = if round % 2 == 0 {
            (&mut shm, &mut uds)
        } else {
            (&mut uds, &mut shm)
        };
        first.run(n, true)?;
        second.run(n, true)?;
    }
    let (shm, uds) = (shm.summary(), uds.summary());
    Ok(PingReport {
        shm,
        uds,
        ratio_p50: ratio(shm.p50_ns as f64, uds.p50_ns as f64),
        ratio_throughput: ratio(shm.throughput_per_s, uds.throughput_per_s),
    })
}

/// One transport's connection, its reused request, and its samples so far.
struct Side {
    transport: Transport,
    connection: Connection,
    request: Request,
    payload_bytes: u32,
    depth: u32,
    timeout: Duration,
    /// Submit time of each request in flight, oldest first (pipelined mode).
    in_flight: VecDeque<(u64, Instant)>,
    samples_ns: Vec<u64>,
    completed: u64,
    busy: Duration,
}

impl Side {
    fn connect(config: &PingConfig, transport: Transport) -> Result<Self, BenchError> {
        let options = ConnectOptions {
            name: format!("nexus-bench ping {transport:?}"),
            request_ring_bytes: config.ring_bytes(),
            response_ring_bytes: config.ring_bytes(),
            timeout: config.timeout,
            transport,
            spin: config.client_spin,
            ..ConnectOptions::default()
        };
        let connection =
            Connection::connect(&config.socket, options).map_err(client_step(format!("connect {transport:?}")))?;
        let request = Request {
            request_id: 0,
            deadline_ns: 0,
            body: RequestBody::Ping(PingRequest {
                payload: vec![0; config.payload_bytes],
            }),
        };
        Ok(Self {
            transport,
            connection,
            request,
            payload_bytes: u32::try_from(config.payload_bytes).expect("validated against MAX_PAYLOAD_BYTES"),
            depth: config.depth,
            timeout: config.timeout,
            in_flight: VecDeque::with_capacity(config.depth as usize),
            samples_ns: Vec::with_capacity(config.iterations as usize),
            completed: 0,
            busy: Duration::ZERO,
        })
    }

    /// Sends `n` pings; with `record`, keeps their latencies and the time taken.
    fn run(&mut self, n: u64, record: bool) -> Result<(), BenchError> {
        let started = Instant::now();
        if self.depth == 1 {
            self.round_trips(n, record)?;
        } else {
            self.pipelined(n, record)?;
        }
        if record {
            self.busy += started.elapsed();
            self.completed += n;
        }
        Ok(())
    }

    fn round_trips(&mut self, n: u64, record: bool) -> Result<(), BenchError> {
        for _ in 0..n {
            let sent = Instant::now();
            let answer = self
                .connection
                .call(&mut self.request, Some(self.timeout))
                .map_err(client_step(format!("ping over {:?}", self.transport)))?;
            check_pong(&answer, self.request.request_id, self.payload_bytes)?;
            drop(answer);
            if record {
                self.samples_ns.push(nanos(sent.elapsed()));
            }
        }
        Ok(())
    }

    fn pipelined(&mut self, n: u64, record: bool) -> Result<(), BenchError> {
        let mut submitted = 0;
        while submitted < n.min(u64::from(self.depth)) {
            self.submit()?;
            submitted += 1;
        }
        self.flush()?;
        while let Some((id, sent)) = self.in_flight.pop_front() {
            let answer = self
                .connection
                .recv(Some(self.timeout))
                .map_err(client_step(format!("pipelined ping over {:?}", self.transport)))?;
            check_pong(&answer, id, self.payload_bytes)?;
            drop(answer);
            if record {
                self.samples_ns.push(nanos(sent.elapsed()));
            }
            // No flush per request: `recv` flushes when it has to wait, so
            // requests submitted while answers are still arriving travel
            // together (one wake-up per burst on shared memory; one write on
            // the socket, whose `recv` always flushes first).
            if submitted < n {
                self.submit()?;
                submitted += 1;
            }
        }
        Ok(())
    }

    fn submit(&mut self) -> Result<(), BenchError> {
        let sent = Instant::now();
        let id = self
            .connection
            .submit(&mut self.request, sent + self.timeout)
            .map_err(client_step(format!("submit over {:?}", self.transport)))?;
        debug_assert!(
            self.in_flight.len() < self.depth as usize,
            "never more than depth in flight"
        );
        self.in_flight.push_back((id, sent));
        Ok(())
    }

    /// Sends what `submit` queued (a no-op on shared memory).
    fn flush(&mut self) -> Result<(), BenchError> {
        self.connection
            .flush()
            .map_err(client_step(format!("flush over {:?}", self.transport)))
    }

    fn summary(&mut self) -> Summary {
        Summary::from_samples(&mut self.samples_ns, self.completed, self.busy)
    }
}

/// Errors unless `answer` is an Ok Pong to `request_id` for `payload_bytes`.
fn check_pong(answer: &ResponseGuard<'_>, request_id: u64, payload_bytes: u32) -> Result<(), BenchError> {
    let got_id = answer.request_id.to_native();
    let detail = match (&answer.status, &answer.body) {
        _ if got_id != request_id => format!("expected the answer to request {request_id}"),
        (ArchivedStatus::Ok, ArchivedResponseBody::Pong(pong)) if pong.payload_bytes.to_native() == payload_bytes => {
            return Ok(());
        }
        (ArchivedStatus::Error { code, message }, _) => format!("error {}: {}", code.to_native(), message.as_str()),
        _ => format!("not a Pong for {payload_bytes} payload bytes"),
    };
    Err(BenchError::BadAnswer {
        request_id: got_id,
        detail,
    })
}

/// Requests of round `round` when `total` are split over `rounds` (the
/// remainder goes to the first rounds).
fn round_share(total: u64, rounds: u32, round: u32) -> u64 {
    let rounds = u64::from(rounds);
    let round = u64::from(round);
    total / rounds + u64::from(round < total % rounds)
}

fn nanos(elapsed: Duration) -> u64 {
    u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounds_share_every_iteration() {
        let shares: Vec<u64> = (0..4).map(|r| round_share(10, 4, r)).collect();
        assert_eq!(shares, [3, 3, 2, 2]);
        assert_eq!(shares.iter().sum::<u64>(), 10);
    }

    #[test]
    fn rings_hold_a_full_pipeline() {
        let mut config = PingConfig::new("/nonexistent");
        assert_eq!(config.ring_bytes(), 1 << 20);
        config.depth = 4096;
        config.payload_bytes = 4096;
        assert!(u64::from(config.ring_bytes()) >= 4096 * frame_footprint(4096 + REQUEST_OVERHEAD_BYTES));
    }

    #[test]
    fn bad_parameters_are_refused() {
        let mut config = PingConfig::new("/nonexistent");
        config.depth = 0;
        assert!(matches!(run_ping(&config), Err(BenchError::InvalidArgument(_))));
    }
}
