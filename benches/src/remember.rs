//! Durable Remember under load: C client threads, each with its own
//! connection, write batches of B memories (text of T bytes, a D-dimensional
//! vector) until N memories are stored, one request in flight per client. Every
//! request is acknowledged only once its WAL record is durable (the daemon's
//! default `fsync = "always"`), so concurrent clients measure group commit.
//!
//! Reported: memories/s over the measured wall time, per-request latency
//! percentiles, and a bare fdatasync on the daemon's file system measured in
//! the same run (half of the samples before the load, half after), which is
//! the floor a durable write cannot beat. The WAL's own counters (fsyncs,
//! groups) show how many writes shared each fdatasync.
//!
//! The requests are built before the clock starts and reused (each client
//! rotates over a few distinct batches), so the figures are the daemon's and
//! the transport's, not the benchmark's allocator's.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use nexus_client::wire::{
    ArchivedResponseBody, ArchivedStatus, MemoryInput, MemoryTag, RememberRequest, Request, RequestBody,
};
use nexus_client::{ConnectOptions, Connection, Transport};
use nexus_shm_protocol::layout::MAX_RING_BYTES;
use serde::Serialize;

use crate::error::{BenchError, client_step};
use crate::report::{grouped, micros, percentile, ratio};
use crate::stats::connect_observer;

/// Most client threads.
pub const MAX_CLIENTS: usize = 256;

/// Largest batch: the daemon's default `limits.max_batch`.
pub const MAX_BATCH: usize = 10_000;

/// Distinct prebuilt requests each client rotates over.
const BATCHES_PER_CLIENT: usize = 4;

/// Archive overhead per memory beyond its text and vector bytes (strings'
/// headers, tags, options, alignment), rounded up generously.
const PER_MEMORY_OVERHEAD_BYTES: usize = 256;

/// Smallest ring asked for: the daemon's default.
pub(crate) const MIN_RING_BYTES: u64 = 1 << 20;

/// Upper bound of the archived size of a Remember of `batch` memories of
/// `text_bytes` texts and `dim`-dimensional vectors.
pub(crate) fn remember_frame_bytes(batch: usize, text_bytes: usize, dim: u32) -> u64 {
    let per_memory = text_bytes + dim as usize * 4 + PER_MEMORY_OVERHEAD_BYTES;
    (batch * per_memory + PER_MEMORY_OVERHEAD_BYTES) as u64
}

/// A request ring holding two frames of `frame_bytes` (a frame is at most
/// half a ring), at least the daemon's default, at most the largest ring.
pub(crate) fn ring_bytes_for(frame_bytes: u64) -> u32 {
    let wanted = (frame_bytes * 2).next_power_of_two().max(MIN_RING_BYTES);
    u32::try_from(wanted.min(u64::from(MAX_RING_BYTES))).expect("MAX_RING_BYTES fits u32")
}

/// fdatasync probes, at most (the WAL module's own bound).
const MAX_FSYNC_SAMPLES: usize = 10_000;

/// What to measure.
#[derive(Debug, Clone)]
pub struct RememberConfig {
    /// The daemon's socket.
    pub socket: PathBuf,
    /// Client threads, one connection each.
    pub clients: usize,
    /// Memories per Remember request.
    pub batch: usize,
    /// Memories to store in the measured part (rounded up to whole batches).
    pub count: u64,
    /// Unmeasured requests per client before the clock starts.
    pub warmup_requests: u64,
    /// Vector dimension (0: memories without a vector).
    pub dim: u32,
    /// Text bytes per memory.
    pub text_bytes: usize,
    /// Shared memory (the product) or the daemon's Unix-socket transport.
    pub transport: Transport,
    /// Where the bare fdatasync is measured: the daemon's data directory.
    pub fsync_dir: PathBuf,
    /// Bare fdatasync samples (half before the load, half after).
    pub fsync_samples: usize,
    /// Per-request timeout.
    pub timeout: Duration,
    /// Namespace the memories are written to.
    pub namespace: String,
}

impl RememberConfig {
    /// Defaults: one client, batch 1, 10,000 memories, 10 warm-up requests,
    /// 384-d vectors, 1 KiB texts, shared memory, 200 fdatasync samples.
    pub fn new(socket: impl Into<PathBuf>, fsync_dir: impl Into<PathBuf>) -> Self {
        Self {
            socket: socket.into(),
            clients: 1,
            batch: 1,
            count: 10_000,
            warmup_requests: 10,
            dim: 384,
            text_bytes: 1024,
            transport: Transport::SharedMemory,
            fsync_dir: fsync_dir.into(),
            fsync_samples: 200,
            timeout: Duration::from_secs(30),
            namespace: "nexus-bench".into(),
        }
    }

    fn validate(&self) -> Result<(), BenchError> {
        let fail = |message: String| Err(BenchError::InvalidArgument(message));
        if !(1..=MAX_CLIENTS).contains(&self.clients) {
            return fail(format!("--clients must be 1..={MAX_CLIENTS}"));
        }
        if !(1..=MAX_BATCH).contains(&self.batch) {
            return fail(format!("--batch must be 1..={MAX_BATCH}"));
        }
        if self.count == 0 {
            return fail("--count must be at least 1".into());
        }
        if self.text_bytes == 0 {
            return fail("--text-bytes must be at least 1 (the daemon refuses empty texts)".into());
        }
        if !(2..=MAX_FSYNC_SAMPLES).contains(&self.fsync_samples) {
            return fail(format!("--fsync-samples must be 2..={MAX_FSYNC_SAMPLES}"));
        }
        if self.frame_bytes() * 2 > u64::from(MAX_RING_BYTES) {
            return fail(format!(
                "a batch of {} memories ({} B) does not fit the largest ring ({MAX_RING_BYTES} B); use smaller batches",
                self.batch,
                self.frame_bytes()
            ));
        }
        Ok(())
    }

    /// Upper bound of one request's archived size.
    fn frame_bytes(&self) -> u64 {
        remember_frame_bytes(self.batch, self.text_bytes, self.dim)
    }

    /// A request ring holding two requests (its maximum frame is half of it).
    fn ring_bytes(&self) -> u32 {
        ring_bytes_for(self.frame_bytes())
    }

    fn requests(&self) -> u64 {
        self.count.div_ceil(self.batch as u64)
    }
}

/// The measurement (also the `--json` object).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RememberReport {
    /// "shm" or "uds".
    pub transport: &'static str,
    /// Client threads.
    pub clients: usize,
    /// Memories per request.
    pub batch: usize,
    /// Vector dimension.
    pub dim: u32,
    /// Text bytes per memory.
    pub text_bytes: usize,
    /// Memories stored in the measured part.
    pub memories: u64,
    /// Requests in the measured part.
    pub requests: u64,
    /// Memories stored per second of measured wall time.
    pub throughput_per_s: f64,
    /// Requests acknowledged per second.
    pub requests_per_s: f64,
    /// Median request latency (submit to acknowledgement), nanoseconds.
    pub p50_ns: u64,
    /// 99th percentile request latency.
    pub p99_ns: u64,
    /// 99.9th percentile request latency.
    pub p999_ns: u64,
    /// Median of a bare "append 4 KiB + fdatasync" on `fsync_dir`.
    pub fdatasync_p50_ns: u64,
    /// 99th percentile of the same.
    pub fdatasync_p99_ns: u64,
    /// `p50_ns - fdatasync_p50_ns` (negative when group commit beat one fdatasync).
    pub p50_over_fdatasync_ns: i64,
    /// Where the fdatasync was measured.
    pub fsync_dir: PathBuf,
    /// fdatasyncs the WAL made during the measured part.
    pub wal_fsyncs: u64,
    /// Memories per WAL fdatasync (group commit at work when above `batch`).
    pub memories_per_fsync: f64,
    /// WAL bytes (framing included) per memory stored.
    pub wal_bytes_per_memory: f64,
    /// Median rate of a bare "write 4 MiB + fdatasync" into preallocated space on
    /// `fsync_dir` (8 chunks before the load, 8 after), MB/s: the disk's durable
    /// write bandwidth in the same run.
    pub disk_sync_write_mb_s: f64,
    /// `disk_sync_write_mb_s / wal_bytes_per_memory`: the most memories per
    /// second this disk could make durable at this memory size, whatever the CPU.
    pub disk_bound_per_s: f64,
}

/// Runs the load against the daemon at `config.socket`.
pub fn run_remember(config: &RememberConfig) -> Result<RememberReport, BenchError> {
    config.validate()?;
    let half = config.fsync_samples / 2;
    let mut fsync_ns = bare_fdatasync(config, half)?;
    let mut write_rates = sync_write_rates(&config.fsync_dir)?;
    let observer = connect_observer(&config.socket)?;

    let remaining = Arc::new(AtomicU64::new(config.requests()));
    let start_line = Arc::new(Barrier::new(config.clients + 1));
    let workers: Vec<_> = (0..config.clients)
        .map(|client| {
            let (config, remaining, start_line) = (config.clone(), remaining.clone(), start_line.clone());
            std::thread::Builder::new()
                .name(format!("remember-{client}"))
                .spawn(move || client_loop(&config, client, &remaining, &start_line))
        })
        .collect::<Result<_, _>>()?;
    // The barrier opens twice: once every client is connected and warmed up
    // (then the WAL counters are read, so the warm-up is not counted), then to
    // start. A client that failed before it still waits, so it cannot hang.
    start_line.wait();
    let counters_before = (
        wal_counter(&observer, "wal_fsyncs"),
        wal_counter(&observer, "wal_record_bytes"),
    );
    start_line.wait();
    let started = Instant::now();
    let mut latencies_ns = Vec::with_capacity(config.requests() as usize);
    let mut first_error = None;
    for worker in workers {
        match worker.join().expect("a client thread panicked") {
            Ok(samples) => latencies_ns.extend(samples),
            Err(e) => first_error = first_error.or(Some(e)),
        }
    }
    let elapsed = started.elapsed();
    if let Some(e) = first_error {
        return Err(e);
    }
    let wal_fsyncs = wal_counter(&observer, "wal_fsyncs")? - counters_before.0?;
    let wal_bytes = wal_counter(&observer, "wal_record_bytes")? - counters_before.1?;
    fsync_ns.extend(bare_fdatasync(config, config.fsync_samples - half)?);
    write_rates.extend(sync_write_rates(&config.fsync_dir)?);
    write_rates.sort_by(f64::total_cmp);
    let disk_sync_write_mb_s = write_rates[write_rates.len() / 2] / 1e6;

    latencies_ns.sort_unstable();
    fsync_ns.sort_unstable();
    let requests = latencies_ns.len() as u64;
    let memories = requests * config.batch as u64;
    let (p50_ns, fdatasync_p50_ns) = (percentile(&latencies_ns, 0.5), percentile(&fsync_ns, 0.5));
    Ok(RememberReport {
        transport: match config.transport {
            Transport::SharedMemory => "shm",
            Transport::Socket => "uds",
        },
        clients: config.clients,
        batch: config.batch,
        dim: config.dim,
        text_bytes: config.text_bytes,
        memories,
        requests,
        throughput_per_s: ratio(memories as f64, elapsed.as_secs_f64()),
        requests_per_s: ratio(requests as f64, elapsed.as_secs_f64()),
        p50_ns,
        p99_ns: percentile(&latencies_ns, 0.99),
        p999_ns: percentile(&latencies_ns, 0.999),
        fdatasync_p50_ns,
        fdatasync_p99_ns: percentile(&fsync_ns, 0.99),
        p50_over_fdatasync_ns: p50_ns as i64 - fdatasync_p50_ns as i64,
        fsync_dir: config.fsync_dir.clone(),
        wal_fsyncs,
        memories_per_fsync: ratio(memories as f64, wal_fsyncs as f64),
        wal_bytes_per_memory: ratio(wal_bytes as f64, memories as f64),
        disk_sync_write_mb_s,
        disk_bound_per_s: ratio(disk_sync_write_mb_s * 1e6, ratio(wal_bytes as f64, memories as f64)),
    })
}

/// One client: connect, warm up, wait for the start, then take requests from
/// `remaining` until none are left; returns the measured latencies.
fn client_loop(
    config: &RememberConfig,
    client: usize,
    remaining: &AtomicU64,
    start_line: &Barrier,
) -> Result<Vec<u64>, BenchError> {
    let prepared = prepare(config, client);
    let (mut connection, mut requests) = match prepared {
        Ok(ready) => ready,
        Err(e) => {
            start_line.wait();
            start_line.wait();
            return Err(e);
        }
    };
    let warmed = (0..config.warmup_requests).try_for_each(|i| {
        let request = &mut requests[i as usize % BATCHES_PER_CLIENT];
        remember(&mut connection, request, config).map(drop)
    });
    start_line.wait(); // warmed up: the WAL counters are read now
    start_line.wait(); // go
    warmed?;
    let mut samples = Vec::new();
    let mut turn = 0;
    while remaining
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |left| left.checked_sub(1))
        .is_ok()
    {
        let request = &mut requests[turn % BATCHES_PER_CLIENT];
        turn += 1;
        samples.push(remember(&mut connection, request, config)?);
    }
    Ok(samples)
}

fn prepare(config: &RememberConfig, client: usize) -> Result<(Connection, Vec<Request>), BenchError> {
    let options = ConnectOptions {
        name: format!("nexus-bench remember {client}"),
        request_ring_bytes: config.ring_bytes(),
        // One maximum frame size serves both rings, so both are sized for the request.
        response_ring_bytes: config.ring_bytes(),
        timeout: config.timeout,
        transport: config.transport,
        spin: Duration::ZERO,
        ..ConnectOptions::default()
    };
    let connection =
        Connection::connect(&config.socket, options).map_err(client_step(format!("connect client {client}")))?;
    let requests = (0..BATCHES_PER_CLIENT)
        .map(|round| {
            let seed = (client * BATCHES_PER_CLIENT + round) as u64;
            let memories = (0..config.batch)
                .map(|i| memory(config, seed * config.batch as u64 + i as u64))
                .collect();
            Request {
                request_id: 0,
                deadline_ns: 0,
                body: RequestBody::Remember(RememberRequest { memories }),
            }
        })
        .collect();
    Ok((connection, requests))
}

/// Sends one Remember and checks it stored the whole batch; returns its latency.
fn remember(connection: &mut Connection, request: &mut Request, config: &RememberConfig) -> Result<u64, BenchError> {
    let sent = Instant::now();
    let answer = connection
        .call(request, Some(config.timeout))
        .map_err(client_step("remember"))?;
    let latency = sent.elapsed().as_nanos() as u64;
    let request_id = answer.request_id.to_native();
    let detail = match (&answer.status, &answer.body) {
        (ArchivedStatus::Ok, ArchivedResponseBody::Remembered(report)) if report.ids.len() == config.batch => {
            return Ok(latency);
        }
        (ArchivedStatus::Error { code, message }, _) => format!("error {}: {}", code.to_native(), message.as_str()),
        _ => format!("not Remembered with {} ids", config.batch),
    };
    Err(BenchError::BadAnswer { request_id, detail })
}

/// Memory number `n`: a text of the configured size that starts with `n`
/// (so every memory differs), a unit vector, two tags.
fn memory(config: &RememberConfig, n: u64) -> MemoryInput {
    let mut rng = XorShift(n.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let mut text = format!("memory {n}:");
    while text.len() < config.text_bytes {
        let word = WORDS[(rng.next() % WORDS.len() as u64) as usize];
        text.push(' ');
        text.push_str(word);
    }
    text.truncate(config.text_bytes);
    let vector = (config.dim > 0).then(|| {
        let raw: Vec<f32> = (0..config.dim).map(|_| rng.unit_f32() - 0.5).collect();
        let norm = raw.iter().map(|x| x * x).sum::<f32>().sqrt().max(f32::MIN_POSITIVE);
        raw.into_iter().map(|x| x / norm).collect()
    });
    MemoryInput {
        key: None,
        namespace: config.namespace.clone(),
        text,
        vector,
        tags: vec![
            MemoryTag {
                key: "source".into(),
                value: "nexus-bench".into(),
            },
            MemoryTag {
                key: "shard".into(),
                value: (n % 16).to_string(),
            },
        ],
        created_at_ms: None,
        importance: 0.5,
        source: Some("nexus-bench remember".into()),
    }
}

/// Bare fdatasync latencies on the daemon's file system, nanoseconds.
fn bare_fdatasync(config: &RememberConfig, samples: usize) -> Result<Vec<u64>, BenchError> {
    let probed = nexus_daemon::store::wal::measure_fdatasync(&config.fsync_dir, samples).map_err(|e| {
        BenchError::InvalidArgument(format!(
            "cannot measure fdatasync in {} (pass --fsync-dir, the daemon's data directory): {e}",
            config.fsync_dir.display()
        ))
    })?;
    Ok(probed.iter().map(|d| d.as_nanos() as u64).collect())
}

fn wal_counter(observer: &nexus_client::Client, name: &'static str) -> Result<u64, BenchError> {
    let stats = observer.stats().map_err(client_step("Stats"))?;
    nexus_client::counter(&stats, name).ok_or(BenchError::MissingCounter(name))
}

/// Bytes per chunk of the bandwidth probe: the size of a big group.
const BANDWIDTH_CHUNK_BYTES: usize = 4 << 20;
/// Chunks written by each bandwidth probe (one before the load, one after).
const BANDWIDTH_CHUNKS: usize = 8;

/// The disk's durable write rate on `dir`, bytes/s, of each of 8 chunks of
/// "write 4 MiB, fdatasync" into preallocated space, as the WAL writes a big
/// group (`wal::measure_sync_writes`).
fn sync_write_rates(dir: &Path) -> Result<Vec<f64>, BenchError> {
    let durations = nexus_daemon::store::wal::measure_sync_writes(dir, BANDWIDTH_CHUNK_BYTES, BANDWIDTH_CHUNKS)
        .map_err(|e| {
            BenchError::InvalidArgument(format!("cannot measure write bandwidth in {}: {e}", dir.display()))
        })?;
    Ok(durations
        .iter()
        .map(|d| BANDWIDTH_CHUNK_BYTES as f64 / d.as_secs_f64())
        .collect())
}

/// Words the texts are made of.
const WORDS: &[&str] = &[
    "the",
    "agent",
    "asked",
    "about",
    "travel",
    "plans",
    "for",
    "march",
    "user",
    "prefers",
    "window",
    "seats",
    "meeting",
    "moved",
    "to",
    "thursday",
    "budget",
    "approved",
    "coffee",
    "with",
    "oat",
    "milk",
    "daughter",
    "plays",
    "violin",
    "project",
    "deadline",
    "slipped",
    "remember",
    "allergy",
    "peanuts",
    "favourite",
    "book",
];

/// A tiny deterministic generator: the data must be the same in every run.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn unit_f32(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 24) as f32
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memories_have_the_requested_shape_and_differ() {
        let config = RememberConfig::new("/nonexistent", "/tmp");
        let (a, b) = (memory(&config, 1), memory(&config, 2));
        assert_eq!(a.text.len(), 1024);
        assert_ne!(a.text, b.text);
        let vector = a.vector.expect("384-d by default");
        assert_eq!(vector.len(), 384);
        let norm: f32 = vector.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-3, "unit vector, got norm {norm}");
        assert!(vector.iter().all(|x| x.is_finite()));
    }

    #[test]
    fn a_thousand_batch_gets_a_ring_that_holds_it() {
        let mut config = RememberConfig::new("/nonexistent", "/tmp");
        config.batch = 1000;
        assert!(config.validate().is_ok());
        assert!(u64::from(config.ring_bytes()) >= 2 * config.frame_bytes());
    }

    #[test]
    fn bad_parameters_are_refused() {
        let base = RememberConfig::new("/nonexistent", "/tmp");
        for broken in [
            RememberConfig {
                clients: 0,
                ..base.clone()
            },
            RememberConfig {
                batch: 0,
                ..base.clone()
            },
            RememberConfig {
                count: 0,
                ..base.clone()
            },
            RememberConfig {
                text_bytes: 0,
                ..base.clone()
            },
            RememberConfig {
                batch: MAX_BATCH,
                text_bytes: 64 << 10,
                ..base.clone()
            },
        ] {
            assert!(
                matches!(broken.validate(), Err(BenchError::InvalidArgument(_))),
                "{broken:?}"
            );
        }
    }
}
