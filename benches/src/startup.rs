//! Start-up cost of a big store: from a snapshot, and from the WAL alone.
//!
//! 1. A daemon in a fresh directory is filled with N memories (batches of
//!    1,000 through [`run_remember`]), checkpointed and stopped with SIGTERM.
//! 2. It is started again: "ready" is the time from spawning the process to
//!    a recall answered by every engine (`lexical`, `dense`, `vector`, each
//!    named in its own Recall) with status Ok, not `degraded`; the first
//!    Ping's time is kept beside it (`ping_ms`). The daemon's own Stats say
//!    how long mapping and validating the snapshot took (`snapshot_load_ms`).
//! 3. R more memories are written one per request (one WAL record each, 4
//!    clients), the daemon is killed with SIGKILL (so nothing is checkpointed),
//!    and started again: Stats' `replay_records` / `replay_ms` give the replay
//!    rate, and the restart's "ready" time includes loading the snapshot too.
//!
//! Automatic checkpoints are switched off (`--checkpoint-wal-bytes` at its
//! maximum) so the WAL of step 3 is really replayed.

use std::ffi::OsString;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use nexus_client::wire::{EngineChoice, RecallRequest, RequestBody, ResponseBody, Status};
use nexus_client::{Client, counter};
use serde::Serialize;

use crate::daemon::SpawnedDaemon;
use crate::error::{BenchError, client_step};
use crate::remember::{RememberConfig, run_remember};
use crate::report::{grouped, ratio};
use crate::stats::connect_observer;

/// Longest a checkpoint of the filled store may take.
const CHECKPOINT_TIMEOUT: Duration = Duration::from_secs(600);

/// Longest a restart may take before the benchmark gives up.
const READY_TIMEOUT: Duration = Duration::from_secs(300);

/// What to measure.
#[derive(Debug, Clone)]
pub struct StartupConfig {
    /// The `nexusd` binary to start.
    pub binary: PathBuf,
    /// Memories in the snapshot.
    pub memories: u64,
    /// WAL records written after the snapshot, then replayed.
    pub replay_records: u64,
    /// Vector dimension.
    pub dim: u32,
    /// Text bytes per memory.
    pub text_bytes: usize,
    /// More daemon flags.
    pub daemon_args: Vec<OsString>,
}

impl StartupConfig {
    /// Defaults: 1,000,000 memories of 384 dimensions and 64-byte texts, then
    /// 200,000 WAL records.
    pub fn new(binary: impl Into<PathBuf>) -> Self {
        Self {
            binary: binary.into(),
            memories: 1_000_000,
            replay_records: 200_000,
            dim: 384,
            text_bytes: 64,
            daemon_args: Vec::new(),
        }
    }
}

/// Longest the engines may take to answer after the first Ping.
const ENGINES_TIMEOUT: Duration = Duration::from_secs(300);

/// The engines a restart must have back before it counts as ready.
const ENGINES: [EngineChoice; 3] = [EngineChoice::Lexical, EngineChoice::Dense, EngineChoice::Vector];

/// One restart, as timed here and reported by the daemon.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Restart {
    /// Process spawn to a recall answered by every engine (not degraded), milliseconds.
    pub ready_ms: u64,
    /// Process spawn to the first Ping answered, milliseconds.
    pub ping_ms: u64,
    /// The daemon's time to map and validate the snapshot.
    pub snapshot_load_ms: u64,
    /// WAL records the daemon replayed.
    pub replay_records: u64,
    /// The daemon's time replaying them.
    pub replay_ms: u64,
    /// Memories the daemon holds once ready.
    pub memories: u64,
}

/// The measurement (also the `--json` object).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StartupReport {
    /// Memories written before the checkpoint.
    pub memories: u64,
    /// Vector dimension.
    pub dim: u32,
    /// Text bytes per memory.
    pub text_bytes: usize,
    /// Fill rate (batches of 1,000, 2 clients), memories/s.
    pub fill_per_s: f64,
    /// The checkpoint's duration, milliseconds.
    pub checkpoint_ms: u64,
    /// Size of the snapshot file(s), bytes.
    pub snapshot_bytes: u64,
    /// The restart from the snapshot alone.
    pub from_snapshot: Restart,
    /// The restart after a SIGKILL with `replay_records` in the WAL.
    pub from_wal: Restart,
    /// `from_wal.replay_records / from_wal.replay_ms`, records per second.
    pub replay_records_per_s: f64,
}

/// Runs the whole sequence in a temporary directory, removed afterwards.
pub fn run_startup(config: &StartupConfig) -> Result<StartupReport, BenchError> {
    let dir = SpawnedDaemon::temp_dir()?;
    let result = measure(config, &dir);
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn measure(config: &StartupConfig, dir: &std::path::Path) -> Result<StartupReport, BenchError> {
    let mut args = config.daemon_args.clone();
    let most = *nexus_daemon::config::CHECKPOINT_WAL_BYTES_RANGE.end();
    args.extend(["--checkpoint-wal-bytes".into(), most.to_string().into()]);
    let start = || SpawnedDaemon::start_in(&config.binary, dir, &args, READY_TIMEOUT);

    let daemon = start()?;
    let fill = load(config, &daemon, config.memories, 1000, 2)?;
    let checkpoint_ms = checkpoint(&daemon)?;
    let snapshot_bytes = snapshot_bytes(&daemon.data_dir())?;
    daemon.stop()?;

    let spawned = Instant::now();
    let daemon = start()?;
    let from_snapshot = restart_figures(&daemon, spawned, config.dim)?;
    load(config, &daemon, config.replay_records, 1, 4)?;
    daemon.kill()?;

    let spawned = Instant::now();
    let daemon = start()?;
    let from_wal = restart_figures(&daemon, spawned, config.dim)?;
    daemon.stop()?;

    Ok(StartupReport {
        memories: config.memories,
        dim: config.dim,
        text_bytes: config.text_bytes,
        fill_per_s: fill,
        checkpoint_ms,
        snapshot_bytes,
        from_snapshot,
        from_wal,
        replay_records_per_s: ratio(from_wal.replay_records as f64, from_wal.replay_ms as f64 / 1000.0),
    })
}

/// Writes `count` memories in batches of `batch`; returns memories/s.
fn load(
    config: &StartupConfig,
    daemon: &SpawnedDaemon,
    count: u64,
    batch: usize,
    clients: usize,
) -> Result<f64, BenchError> {
    if count == 0 {
        return Ok(0.0);
    }
    let mut remember = RememberConfig::new(daemon.socket(), daemon.data_dir());
    remember.clients = clients;
    remember.batch = batch;
    remember.count = count;
    remember.warmup_requests = 0;
    remember.dim = config.dim;
    remember.text_bytes = config.text_bytes;
    remember.fsync_samples = 2;
    Ok(run_remember(&remember)?.throughput_per_s)
}

fn checkpoint(daemon: &SpawnedDaemon) -> Result<u64, BenchError> {
    let client = Client::connect(daemon.socket()).map_err(client_step("connect for Checkpoint"))?;
    let started = Instant::now();
    let answer = client
        .call(RequestBody::Checkpoint, Some(CHECKPOINT_TIMEOUT))
        .map_err(client_step("Checkpoint"))?;
    match answer.status {
        Status::Ok => Ok(started.elapsed().as_millis() as u64),
        other => Err(BenchError::BadAnswer {
            request_id: answer.request_id,
            detail: format!("Checkpoint answered {other:?}"),
        }),
    }
}

fn restart_figures(daemon: &SpawnedDaemon, spawned: Instant, dim: u32) -> Result<Restart, BenchError> {
    let ping_ms = spawned.elapsed().as_millis() as u64;
    let observer = connect_observer(daemon.socket())?;
    engines_answer(&observer, dim)?;
    let ready_ms = spawned.elapsed().as_millis() as u64;
    let stats = observer.stats().map_err(client_step("Stats"))?;
    let get = |name: &'static str| counter(&stats, name).ok_or(BenchError::MissingCounter(name));
    Ok(Restart {
        ready_ms,
        ping_ms,
        snapshot_load_ms: get("snapshot_load_ms")?,
        replay_records: get("replay_records")?,
        replay_ms: get("replay_ms")?,
        memories: get("memories")?,
    })
}

/// Waits until a recall named to each engine is answered Ok with results
/// (an engine still loading would answer degraded, or an error).
fn engines_answer(client: &Client, dim: u32) -> Result<(), BenchError> {
    let until = Instant::now() + ENGINES_TIMEOUT;
    for engine in ENGINES {
        let request = RecallRequest {
            text: (engine != EngineChoice::Vector).then(|| "memory text".to_owned()),
            vector: (engine == EngineChoice::Vector).then(|| vec![0.5; dim as usize]),
            k: 1,
            engine: Some(engine),
            ..RecallRequest::default()
        };
        loop {
            let answer = (client.call(RequestBody::Recall(request.clone()), Some(ENGINES_TIMEOUT)))
                .map_err(client_step("Recall named to an engine"))?;
            let found = matches!(&answer.body, ResponseBody::Recalled(hits) if !hits.is_empty());
            if answer.status == Status::Ok && found {
                break;
            }
            if Instant::now() > until {
                return Err(BenchError::BadAnswer {
                    request_id: answer.request_id,
                    detail: format!(
                        "engine {engine:?} not ready after {ENGINES_TIMEOUT:?}: {:?}",
                        answer.status
                    ),
                });
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    Ok(())
}

/// Size of the snapshot the daemon would load from `data_dir` (found the way the daemon finds it).
fn snapshot_bytes(data_dir: &std::path::Path) -> Result<u64, BenchError> {
    let latest = nexus_daemon::store::snapshot::latest(data_dir)
        .map_err(|e| BenchError::InvalidArgument(format!("no readable snapshot after Checkpoint: {e}")))?;
    match latest {
        Some(path) => Ok(std::fs::metadata(path)?.len()),
        None => Err(BenchError::InvalidArgument(format!(
            "Checkpoint succeeded but {} holds no snapshot",
            data_dir.display()
        ))),
    }
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
            "{name:<14} ready {:>6} ms (every engine answered; first ping {} ms; snapshot load {} ms, \
             replayed {} records in {} ms, {} memories)",
            x.ready_ms, x.ping_ms, x.snapshot_load_ms, x.replay_records, x.replay_ms, x.memories
        );
    };
    line(&mut out, "from snapshot", &r.from_snapshot);
    line(&mut out, "after SIGKILL", &r.from_wal);
    let _ = writeln!(out, "WAL replay: {} records/s", grouped(r.replay_records_per_s));
    out
}
