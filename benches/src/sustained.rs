//! Recall under sustained writes: does every recall still see every
//! acknowledged memory, how much slower do recalls get while the WAL takes
//! writes as fast as it can, and how long does the graph take to catch up
//! once the writes stop (issue 9's "sustained writes" target).
//!
//! 1. **Seed**: S memories (default 10,000) go into the writers' namespaces;
//!    a Checkpoint seals the ANN tails into graph and the run waits until
//!    Stats says `dense_tail` and `vector_tail` are 0.
//! 2. **Idle**: one reader issues a paced mix of recalls for a few seconds:
//!    text only (lexical and dense, fused) and vector only (the vector
//!    engine), default route, no engine named; each latency is recorded.
//! 3. **Load**: W writer threads, each on its own connection and namespace,
//!    write N memories in batches of B as fast as the daemon acknowledges
//!    them (every text has a word no other memory has; every memory has a
//!    D-dimensional vector). The reader keeps issuing the same mix. A
//!    checker thread takes each writer's latest acknowledged batch and
//!    recalls one memory of it (a different position each batch) three
//!    ways, each engine named alone: its unique word (`lexical`), its whole
//!    text (`dense`) and its exact vector (`vector`); a memory missing from
//!    the top k is a violation. The checker keeps the writers at full speed
//!    and checks as many batches as it can (under load, most of a tail's
//!    memories are checked while still in the tail); with
//!    `check_every_batch` each writer checks its own batch right after the
//!    acknowledgement instead (every batch, the very next recall, at the
//!    cost of write speed: the integration test's mode). Stats are sampled
//!    every [`SAMPLE_PERIOD`] for the largest tails.
//! 4. **Catch-up**: from the last acknowledgement, Stats are polled until
//!    both tails are below the daemon's build threshold
//!    ([`DEFAULT_TAIL_THRESHOLD`]); past `--catch-up-timeout-s` the run
//!    counts as not caught up. Not "until 0": the builder turns a tail into
//!    graph only once it holds that many vectors, so a smaller remainder
//!    stays in the exactly scanned tail (by design, until the next
//!    checkpoint seals it) and 0 is never reached without a checkpoint.
//! 5. **Idle after**: the same mix again on the grown, caught-up store, so
//!    the load's slowdown can be told apart from the store's growth (the
//!    reader searches the namespaces being written).
//!
//! Caveats, as for `nexus-bench floor` and `ping`: latency figures move with
//! the machine (core count, frequency scaling, other tenants, the disk's
//! fdatasync time); quote them beside the same run's `nexus-bench floor`,
//! and compare ratios from one run rather than absolute figures across
//! machines. On a 2-core host the writers, the reader, the daemon's request
//! threads and its two graph builders share two cores, so the load's p99 is
//! mostly CPU contention. Each latency is the client's (submit to answer
//! read, wake-ups included); the daemon's own handling time is reported
//! beside it (`handled_*`).

use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Barrier, Mutex, PoisonError};
use std::time::{Duration, Instant};

use nexus_client::wire::{EngineChoice, MemoryInput, RecallRequest, RequestBody, Response, ResponseBody, Status};
use nexus_client::{Client, ConnectOptions, counter};
use nexus_daemon::recall::ann::DEFAULT_TAIL_THRESHOLD;
use nexus_shm_protocol::layout::MAX_RING_BYTES;
use serde::Serialize;

use crate::error::{BenchError, client_step};
use crate::remember::{MIN_RING_BYTES, remember_frame_bytes, ring_bytes_for};
use crate::report::{grouped, micros, percentile, ratio};
use crate::stats::connect_observer;

/// Most writer threads: each holds a connection and a namespace.
pub const MAX_WRITERS: usize = 64;

/// Largest batch: the daemon's default `limits.max_batch`.
pub const MAX_BATCH: usize = 10_000;

/// Most memories in one run: the unique words ([`unique_word`]) have
/// 48^5 spellings; a billion is far beyond what a run can write anyway.
pub const MAX_MEMORIES: u64 = 1_000_000_000;

/// Results per recall, in the mix and in the visibility checks ("top k").
pub const RECALL_K: u32 = 10;

/// How often Stats are read for the tails, during the load and the catch-up.
pub const SAMPLE_PERIOD: Duration = Duration::from_millis(100);

/// Pause between two recalls of the reader: a steady reader (about 1,000
/// recalls/s at most) rather than a closed loop that would take a core of
/// its own away from the daemon on a small host.
const READER_PAUSE: Duration = Duration::from_millis(1);

/// Call timeout of every client: far above any answer's time, so a slow
/// answer is measured, not turned into an error.
const CALL_TIMEOUT: Duration = Duration::from_secs(60);

/// How long the seeded store gets to be checkpointed and sealed.
const SEED_SETTLE_TIMEOUT: Duration = Duration::from_secs(300);

/// Visibility misses described in the report (the count has them all).
const MAX_MISS_EXAMPLES: usize = 10;

/// Words of the texts besides the unique one: 48 syllables squared.
const VOCABULARY_WORDS: u64 = SYLLABLES.len() as u64 * SYLLABLES.len() as u64;

/// Seed of the reader's queries: every phase asks the same sequence.
const READER_SEED: u64 = 0x5EED_5EED;

/// Words in a text query of the mix.
const QUERY_WORDS: usize = 3;

/// What to measure.
#[derive(Debug, Clone)]
pub struct SustainedConfig {
    /// The daemon's socket.
    pub socket: PathBuf,
    /// Memories written during the load.
    pub memories: u64,
    /// Writer threads (one connection and one namespace each).
    pub writers: usize,
    /// Memories per Remember.
    pub batch: usize,
    /// Vector dimension.
    pub dim: u32,
    /// Text bytes per memory.
    pub text_bytes: usize,
    /// Memories written (and built into graph) before the idle phase.
    pub seed_memories: u64,
    /// Length of each idle phase (before the load, and after the catch-up).
    pub idle: Duration,
    /// How long the graph may take to catch up after the last write.
    pub catch_up_timeout: Duration,
    /// Each writer checks its own batch right after each acknowledgement
    /// (every batch checked, writes slowed by the checks) instead of a
    /// checker thread following the writers' latest batches.
    pub check_every_batch: bool,
}

impl SustainedConfig {
    /// Defaults: 100,000 memories from 2 writers in batches of 100, 384-d
    /// vectors, 200-byte texts, 10,000 seeded, 5 s idle, 120 s to catch up.
    pub fn new(socket: impl Into<PathBuf>) -> Self {
        Self {
            socket: socket.into(),
            memories: 100_000,
            writers: 2,
            batch: 100,
            dim: 384,
            text_bytes: 200,
            seed_memories: 10_000,
            idle: Duration::from_secs(5),
            catch_up_timeout: Duration::from_secs(120),
            check_every_batch: false,
        }
    }

    fn validate(&self) -> Result<(), BenchError> {
        let fail = |message: String| Err(BenchError::InvalidArgument(message));
        if !(1..=MAX_WRITERS).contains(&self.writers) {
            return fail(format!("--writers must be 1..={MAX_WRITERS}"));
        }
        if !(1..=MAX_BATCH).contains(&self.batch) {
            return fail(format!("--batch must be 1..={MAX_BATCH}"));
        }
        if self.memories == 0 || self.memories.saturating_add(self.seed_memories) > MAX_MEMORIES {
            return fail(format!("--memories plus --seed-memories must be 1..={MAX_MEMORIES}"));
        }
        if self.dim == 0 {
            return fail("--dim must be at least 1 (the vector engine is measured)".into());
        }
        if self.text_bytes < UNIQUE_WORD_BYTES + 1 {
            return fail(format!("--text-bytes must be at least {}", UNIQUE_WORD_BYTES + 1));
        }
        if self.frame_bytes() * 2 > u64::from(MAX_RING_BYTES) {
            return fail(format!(
                "a batch of {} memories ({} B) does not fit the largest ring; use smaller batches",
                self.batch,
                self.frame_bytes()
            ));
        }
        Ok(())
    }

    /// Upper bound of one Remember's archived size.
    fn frame_bytes(&self) -> u64 {
        remember_frame_bytes(self.batch, self.text_bytes, self.dim)
    }

    /// A request ring holding two Remembers (a frame is at most half a ring).
    fn ring_bytes(&self) -> u32 {
        ring_bytes_for(self.frame_bytes())
    }

    /// The load's memories of writer `writer`: a contiguous range of ordinals
    /// after the seed's.
    fn load_share(&self, writer: usize) -> std::ops::Range<u64> {
        let (writers, writer) = (self.writers as u64, writer as u64);
        let start = self.memories * writer / writers;
        let end = self.memories * (writer + 1) / writers;
        self.seed_memories + start..self.seed_memories + end
    }
}

/// The measurement (also the `--json` object).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SustainedReport {
    /// Memories written during the load.
    pub memories: u64,
    /// Writer threads.
    pub writers: usize,
    /// Memories per Remember.
    pub batch: usize,
    /// Vector dimension.
    pub dim: u32,
    /// Text bytes per memory.
    pub text_bytes: usize,
    /// Memories in the store before the idle phase.
    pub seed_memories: u64,
    /// Recalls before the load, on the seeded store.
    pub idle: Latencies,
    /// Recalls during the load.
    pub load: Latencies,
    /// Recalls after the catch-up, on the grown store.
    pub idle_after: Latencies,
    /// `load.p50_ns / idle.p50_ns`.
    pub p50_ratio: f64,
    /// `load.p99_ns / idle.p99_ns` (the target: at most 3).
    pub p99_ratio: f64,
    /// `load.p99_ns / idle_after.p99_ns`: the load against the grown store.
    pub p99_ratio_to_after: f64,
    /// From the writers' start to the last acknowledgement, seconds.
    pub write_seconds: f64,
    /// Memories acknowledged per second of `write_seconds`.
    pub writes_per_s: f64,
    /// Median Remember latency (a batch), nanoseconds.
    pub remember_p50_ns: u64,
    /// 99th percentile Remember latency.
    pub remember_p99_ns: u64,
    /// Whether every batch was checked by its writer (else: the latest ones, by a checker thread).
    pub check_every_batch: bool,
    /// Batches one memory of which was checked.
    pub batches_checked: u64,
    /// Visibility recalls made (three per checked batch).
    pub visibility_checks: u64,
    /// Checks whose memory was not in the top k: each is a violation.
    pub visibility_misses: u64,
    /// The first few misses, described.
    pub miss_examples: Vec<String>,
    /// Largest `dense_tail` sampled during the load.
    pub max_dense_tail: u64,
    /// Largest `vector_tail` sampled during the load.
    pub max_vector_tail: u64,
    /// Stats samples taken during the load.
    pub tail_samples: u64,
    /// The build threshold the catch-up is measured against.
    pub tail_threshold: u64,
    /// Whether both tails fell below the threshold within the timeout.
    pub caught_up: bool,
    /// From the last acknowledgement to both tails below the threshold (or
    /// to the timeout), seconds.
    pub catch_up_s: f64,
    /// `dense_tail` when the catch-up ended.
    pub residual_dense_tail: u64,
    /// `vector_tail` when the catch-up ended.
    pub residual_vector_tail: u64,
}

/// Recall latencies of one phase, nanoseconds, nearest rank.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Latencies {
    /// Recalls answered.
    pub recalls: u64,
    /// Median, every recall.
    pub p50_ns: u64,
    /// 99th percentile, every recall.
    pub p99_ns: u64,
    /// 99.9th percentile, every recall.
    pub p999_ns: u64,
    /// Median of the text-only recalls (lexical and dense).
    pub text_p50_ns: u64,
    /// 99th percentile of the text-only recalls.
    pub text_p99_ns: u64,
    /// Median of the vector-only recalls (the vector engine).
    pub vector_p50_ns: u64,
    /// 99th percentile of the vector-only recalls.
    pub vector_p99_ns: u64,
    /// Median of the daemon's own handling time (`ServerTimings::handled_ns`).
    pub handled_p50_ns: u64,
    /// 99th percentile of the same.
    pub handled_p99_ns: u64,
    /// Answers marked degraded (an engine left out).
    pub degraded: u64,
}

impl SustainedReport {
    /// Whether the run met what it checks: no visibility miss, caught up in time.
    pub fn passed(&self) -> bool {
        self.visibility_misses == 0 && self.caught_up
    }
}

/// Runs the whole sequence against the daemon at `config.socket`.
pub fn run_sustained(config: &SustainedConfig) -> Result<SustainedReport, BenchError> {
    config.validate()?;
    let observer = connect_observer(&config.socket)?;
    seed(config, &observer)?;
    let idle = read_for(config, config.idle)?;
    let load = load(config, &observer)?;
    let catch_up = catch_up(config, &observer)?;
    let idle_after = read_for(config, config.idle)?;
    Ok(report(config, idle, load, catch_up, idle_after))
}

/// What the load phase measured.
struct LoadOutcome {
    reads: Latencies,
    write_seconds: f64,
    remember_ns: Vec<u64>,
    checks: Checks,
    max_tails: Tails,
    tail_samples: u64,
}

/// What the catch-up measured.
struct CatchUp {
    caught_up: bool,
    seconds: f64,
    residual: Tails,
}

/// The two ANN engines' tails (vectors not yet in graph).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Tails {
    dense: u64,
    vector: u64,
}

fn report(
    config: &SustainedConfig,
    idle: Latencies,
    load: LoadOutcome,
    catch_up: CatchUp,
    idle_after: Latencies,
) -> SustainedReport {
    let mut remember_ns = load.remember_ns;
    remember_ns.sort_unstable();
    SustainedReport {
        memories: config.memories,
        writers: config.writers,
        batch: config.batch,
        dim: config.dim,
        text_bytes: config.text_bytes,
        seed_memories: config.seed_memories,
        p50_ratio: ratio(load.reads.p50_ns as f64, idle.p50_ns as f64),
        p99_ratio: ratio(load.reads.p99_ns as f64, idle.p99_ns as f64),
        p99_ratio_to_after: ratio(load.reads.p99_ns as f64, idle_after.p99_ns as f64),
        idle,
        load: load.reads,
        idle_after,
        write_seconds: load.write_seconds,
        writes_per_s: ratio(config.memories as f64, load.write_seconds),
        remember_p50_ns: percentile(&remember_ns, 0.50),
        remember_p99_ns: percentile(&remember_ns, 0.99),
        check_every_batch: config.check_every_batch,
        batches_checked: load.checks.batches,
        visibility_checks: load.checks.recalls,
        visibility_misses: load.checks.misses.len() as u64,
        miss_examples: load.checks.misses.into_iter().take(MAX_MISS_EXAMPLES).collect(),
        max_dense_tail: load.max_tails.dense,
        max_vector_tail: load.max_tails.vector,
        tail_samples: load.tail_samples,
        tail_threshold: DEFAULT_TAIL_THRESHOLD as u64,
        caught_up: catch_up.caught_up,
        catch_up_s: catch_up.seconds,
        residual_dense_tail: catch_up.residual.dense,
        residual_vector_tail: catch_up.residual.vector,
    }
}

// ---- phases -------------------------------------------------------------

/// Writes the seed (round robin over the writers' namespaces), checkpoints
/// and waits until both tails are 0: the idle phase starts on a built graph.
fn seed(config: &SustainedConfig, observer: &Client) -> Result<(), BenchError> {
    let client = connect(config, "nexus-bench sustained seed")?;
    let ordinals: Vec<u64> = (0..config.seed_memories).collect();
    for chunk in ordinals.chunks(config.batch) {
        let memories = chunk
            .iter()
            .map(|&ordinal| memory(config, namespace(ordinal as usize % config.writers), ordinal))
            .collect();
        client.remember(memories).map_err(client_step("Remember the seed"))?;
    }
    let answer = client
        .call(RequestBody::Checkpoint, Some(SEED_SETTLE_TIMEOUT))
        .map_err(client_step("Checkpoint after the seed"))?;
    if answer.status != Status::Ok {
        return Err(BenchError::BadAnswer {
            request_id: answer.request_id,
            detail: format!("Checkpoint after the seed answered {:?}", answer.status),
        });
    }
    let (settled, tails) = poll_tails(observer, SEED_SETTLE_TIMEOUT, |t| t.dense + t.vector == 0)?;
    match settled {
        Some(_) => Ok(()),
        None => Err(BenchError::BadAnswer {
            request_id: answer.request_id,
            detail: format!("after the seed's checkpoint the tails are still {tails:?} ({SEED_SETTLE_TIMEOUT:?})"),
        }),
    }
}

/// The reader alone for `window`.
fn read_for(config: &SustainedConfig, window: Duration) -> Result<Latencies, BenchError> {
    let until = Instant::now() + window;
    Reader::connect(config)?.run(|| Instant::now() < until)
}

/// The writers, the reader, the checker and the Stats sampler together,
/// until the writers are done.
fn load(config: &SustainedConfig, observer: &Client) -> Result<LoadOutcome, BenchError> {
    let writers_done = AtomicBool::new(false);
    let latest: Vec<Mutex<Option<Probe>>> = (0..config.writers).map(|_| Mutex::new(None)).collect();
    let start = Barrier::new(config.writers + 1);
    let mut reader = Reader::connect(config)?;
    let checker = match config.check_every_batch {
        true => None,
        false => Some(Checker::connect(config, "checker")?),
    };
    let writers: Vec<Writer> = (0..config.writers)
        .map(|w| Writer::connect(config, w))
        .collect::<Result<_, _>>()?;
    std::thread::scope(|scope| {
        let reads = scope.spawn(|| reader.run(|| !writers_done.load(Ordering::Acquire)));
        let sampler = scope.spawn(|| sample_tails(observer, &writers_done));
        let followed = scope.spawn(|| match &checker {
            Some(checker) => checker.follow(config, &latest, &writers_done),
            None => Ok(Checks::default()),
        });
        let handles: Vec<_> = (writers.into_iter())
            .map(|writer| scope.spawn(|| writer.run(config, &start, &latest)))
            .collect();
        start.wait();
        let started = Instant::now();
        let written: Vec<_> = handles.into_iter().map(join).collect();
        let write_seconds = started.elapsed().as_secs_f64();
        // Release: the checker's last pass sees every writer's last probe.
        writers_done.store(true, Ordering::Release);
        let (reads, sampled, followed) = (join(reads), join(sampler), join(followed));
        merge(written, reads?, sampled?, followed?, write_seconds)
    })
}

fn merge(
    written: Vec<Result<WriterOutcome, BenchError>>,
    reads: Latencies,
    (max_tails, tail_samples): (Tails, u64),
    followed: Checks,
    write_seconds: f64,
) -> Result<LoadOutcome, BenchError> {
    let mut outcome = LoadOutcome {
        reads,
        write_seconds,
        remember_ns: Vec::new(),
        checks: followed,
        max_tails,
        tail_samples,
    };
    for writer in written {
        let writer = writer?;
        outcome.remember_ns.extend(writer.remember_ns);
        outcome.checks.add(writer.checks);
    }
    Ok(outcome)
}

/// Polls the tails from the end of the writes until both are below the
/// build threshold, or the timeout.
fn catch_up(config: &SustainedConfig, observer: &Client) -> Result<CatchUp, BenchError> {
    let threshold = DEFAULT_TAIL_THRESHOLD as u64;
    let started = Instant::now();
    let (done, residual) = poll_tails(observer, config.catch_up_timeout, |t| {
        t.dense < threshold && t.vector < threshold
    })?;
    Ok(CatchUp {
        caught_up: done.is_some(),
        seconds: done.unwrap_or_else(|| started.elapsed()).as_secs_f64(),
        residual,
    })
}

/// Reads the tails every [`SAMPLE_PERIOD`] until `done` holds (returns the
/// time it took) or `timeout` passed (None); also returns the last tails.
fn poll_tails(
    observer: &Client,
    timeout: Duration,
    done: impl Fn(Tails) -> bool,
) -> Result<(Option<Duration>, Tails), BenchError> {
    let started = Instant::now();
    loop {
        let tails = read_tails(observer)?;
        if done(tails) {
            return Ok((Some(started.elapsed()), tails));
        }
        if started.elapsed() > timeout {
            return Ok((None, tails));
        }
        std::thread::sleep(SAMPLE_PERIOD);
    }
}

/// Samples the tails until `stop`; returns the largest of each and the count.
fn sample_tails(observer: &Client, stop: &AtomicBool) -> Result<(Tails, u64), BenchError> {
    let (mut max, mut samples) = (Tails::default(), 0);
    while !stop.load(Ordering::Acquire) {
        let tails = read_tails(observer)?;
        max.dense = max.dense.max(tails.dense);
        max.vector = max.vector.max(tails.vector);
        samples += 1;
        std::thread::sleep(SAMPLE_PERIOD);
    }
    Ok((max, samples))
}

fn read_tails(observer: &Client) -> Result<Tails, BenchError> {
    let stats = observer.stats().map_err(client_step("Stats"))?;
    let get = |name: &'static str| counter(&stats, name).ok_or(BenchError::MissingCounter(name));
    Ok(Tails {
        dense: get("dense_tail")?,
        vector: get("vector_tail")?,
    })
}

fn join<T>(handle: std::thread::ScopedJoinHandle<'_, Result<T, BenchError>>) -> Result<T, BenchError> {
    handle.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}

// ---- the reader ---------------------------------------------------------

/// Issues the recall mix, alternating text and vector queries and the
/// writers' namespaces, pausing [`READER_PAUSE`] between recalls.
struct Reader {
    client: Client,
    rng: XorShift,
    writers: usize,
    dim: u32,
}

/// One phase's raw samples, nanoseconds.
#[derive(Default)]
struct Samples {
    all: Vec<u64>,
    text: Vec<u64>,
    vector: Vec<u64>,
    handled: Vec<u64>,
    degraded: u64,
}

impl Reader {
    fn connect(config: &SustainedConfig) -> Result<Self, BenchError> {
        Ok(Self {
            client: connect(config, "nexus-bench sustained reader")?,
            rng: XorShift::seeded(READER_SEED),
            writers: config.writers,
            dim: config.dim,
        })
    }

    fn run(&mut self, keep_going: impl Fn() -> bool) -> Result<Latencies, BenchError> {
        let mut samples = Samples::default();
        let mut turn = 0usize;
        while keep_going() {
            let by_text = turn.is_multiple_of(2);
            let query = self.query(namespace((turn / 2) % self.writers), by_text);
            let started = Instant::now();
            let answer = (self.client.call(RequestBody::Recall(query), None)).map_err(client_step("Recall (mix)"))?;
            let elapsed_ns = started.elapsed().as_nanos() as u64;
            samples.degraded += u64::from(check_answer(&answer)?);
            samples.all.push(elapsed_ns);
            samples.handled.push(answer.timings.handled_ns);
            let kind = if by_text {
                &mut samples.text
            } else {
                &mut samples.vector
            };
            kind.push(elapsed_ns);
            turn += 1;
            std::thread::sleep(READER_PAUSE);
        }
        Ok(latencies(samples))
    }

    fn query(&mut self, namespace: String, by_text: bool) -> RecallRequest {
        let (text, vector) = if by_text {
            let words: Vec<String> = (0..QUERY_WORDS)
                .map(|_| vocabulary_word(self.rng.next() % VOCABULARY_WORDS))
                .collect();
            (Some(words.join(" ")), None)
        } else {
            (None, Some(unit_vector(&mut self.rng, self.dim)))
        };
        RecallRequest {
            namespace,
            text,
            vector,
            k: RECALL_K,
            ..RecallRequest::default()
        }
    }
}

/// Whether an Ok-or-degraded answer is degraded; an error status is an error.
fn check_answer(answer: &Response) -> Result<bool, BenchError> {
    match &answer.status {
        Status::Ok => Ok(false),
        Status::Degraded { .. } => Ok(true),
        other => Err(BenchError::BadAnswer {
            request_id: answer.request_id,
            detail: format!("Recall answered {other:?}"),
        }),
    }
}

fn latencies(mut s: Samples) -> Latencies {
    for samples in [&mut s.all, &mut s.text, &mut s.vector, &mut s.handled] {
        samples.sort_unstable();
    }
    Latencies {
        recalls: s.all.len() as u64,
        p50_ns: percentile(&s.all, 0.50),
        p99_ns: percentile(&s.all, 0.99),
        p999_ns: percentile(&s.all, 0.999),
        text_p50_ns: percentile(&s.text, 0.50),
        text_p99_ns: percentile(&s.text, 0.99),
        vector_p50_ns: percentile(&s.vector, 0.50),
        vector_p99_ns: percentile(&s.vector, 0.99),
        handled_p50_ns: percentile(&s.handled, 0.50),
        handled_p99_ns: percentile(&s.handled, 0.99),
        degraded: s.degraded,
    }
}

// ---- the writers and the visibility checks -------------------------------

/// One writer: its connection, its namespace and its share of the load.
struct Writer {
    client: Client,
    index: usize,
    /// Its own checker when every batch is checked.
    checker: Option<Checker>,
}

/// What one writer measured.
struct WriterOutcome {
    remember_ns: Vec<u64>,
    checks: Checks,
}

/// One acknowledged memory to look for.
#[derive(Debug, Clone, Copy)]
struct Probe {
    writer: usize,
    ordinal: u64,
    id: u64,
}

/// Visibility checks made and missed.
#[derive(Debug, Default)]
struct Checks {
    batches: u64,
    recalls: u64,
    misses: Vec<String>,
}

impl Checks {
    fn add(&mut self, other: Checks) {
        self.batches += other.batches;
        self.recalls += other.recalls;
        self.misses.extend(other.misses);
    }
}

impl Writer {
    fn connect(config: &SustainedConfig, index: usize) -> Result<Self, BenchError> {
        let checker = match config.check_every_batch {
            true => Some(Checker::connect(config, &format!("checker {index}"))?),
            false => None,
        };
        Ok(Self {
            client: connect(config, &format!("nexus-bench sustained writer {index}"))?,
            index,
            checker,
        })
    }

    /// Writes the share in batches; after each, checks one of its memories
    /// or hands it to the checker thread through `latest`.
    fn run(
        self,
        config: &SustainedConfig,
        start: &Barrier,
        latest: &[Mutex<Option<Probe>>],
    ) -> Result<WriterOutcome, BenchError> {
        let mut outcome = WriterOutcome {
            remember_ns: Vec::new(),
            checks: Checks::default(),
        };
        let ordinals: Vec<u64> = config.load_share(self.index).collect();
        start.wait();
        for (batch_idx, chunk) in ordinals.chunks(config.batch).enumerate() {
            let memories = chunk
                .iter()
                .map(|&ordinal| memory(config, namespace(self.index), ordinal))
                .collect();
            let started = Instant::now();
            let ids = self.client.remember(memories).map_err(client_step("Remember"))?;
            outcome.remember_ns.push(started.elapsed().as_nanos() as u64);
            let position = batch_idx % chunk.len();
            let probe = Probe {
                writer: self.index,
                ordinal: chunk[position],
                id: ids[position],
            };
            match &self.checker {
                Some(checker) => checker.check(config, probe, &mut outcome.checks)?,
                None => *latest[self.index].lock().unwrap_or_else(PoisonError::into_inner) = Some(probe),
            }
        }
        Ok(outcome)
    }
}

/// Recalls acknowledged memories through each engine named alone.
struct Checker {
    client: Client,
}

impl Checker {
    fn connect(config: &SustainedConfig, name: &str) -> Result<Self, BenchError> {
        Ok(Self {
            client: connect(config, &format!("nexus-bench sustained {name}"))?,
        })
    }

    /// Checks each writer's latest acknowledged batch until the writers are
    /// done, then once more (their last batches).
    fn follow(
        &self,
        config: &SustainedConfig,
        latest: &[Mutex<Option<Probe>>],
        writers_done: &AtomicBool,
    ) -> Result<Checks, BenchError> {
        let mut checks = Checks::default();
        loop {
            let last_pass = writers_done.load(Ordering::Acquire);
            for slot in latest {
                let probe = slot.lock().unwrap_or_else(PoisonError::into_inner).take();
                if let Some(probe) = probe {
                    self.check(config, probe, &mut checks)?;
                }
            }
            if last_pass {
                return Ok(checks);
            }
            std::thread::sleep(READER_PAUSE);
        }
    }

    /// Recalls `probe`'s memory by its unique word (lexical), its text
    /// (dense) and its vector (vector); a memory not in a top k is a miss.
    fn check(&self, config: &SustainedConfig, probe: Probe, checks: &mut Checks) -> Result<(), BenchError> {
        let memory = memory(config, namespace(probe.writer), probe.ordinal);
        let word = unique_word(probe.ordinal);
        let probes = [
            (EngineChoice::Lexical, Some(word.clone()), None),
            (EngineChoice::Dense, Some(memory.text), None),
            (EngineChoice::Vector, None, memory.vector),
        ];
        checks.batches += 1;
        for (engine, text, vector) in probes {
            let query = RecallRequest {
                namespace: memory.namespace.clone(),
                text,
                vector,
                k: RECALL_K,
                engine: Some(engine),
                ..RecallRequest::default()
            };
            let ids = recalled_ids(&self.client, query)?;
            checks.recalls += 1;
            if !ids.contains(&probe.id) {
                checks.misses.push(format!(
                    "writer {} memory {} ({word}) not in the top {RECALL_K} of {engine:?}: {ids:?}",
                    probe.writer, probe.id
                ));
            }
        }
        Ok(())
    }
}

fn recalled_ids(client: &Client, query: RecallRequest) -> Result<Vec<u64>, BenchError> {
    let answer = (client.call(RequestBody::Recall(query), None)).map_err(client_step("Recall (visibility)"))?;
    check_answer(&answer)?;
    match answer.body {
        ResponseBody::Recalled(hits) => Ok(hits.iter().map(|hit| hit.id).collect()),
        other => Err(BenchError::BadAnswer {
            request_id: answer.request_id,
            detail: format!("Recall answered with {other:?}"),
        }),
    }
}

/// A connection whose rings hold the writers' batches.
fn connect(config: &SustainedConfig, name: &str) -> Result<Client, BenchError> {
    let options = ConnectOptions {
        name: name.into(),
        request_ring_bytes: config.ring_bytes(),
        response_ring_bytes: MIN_RING_BYTES as u32,
        timeout: CALL_TIMEOUT,
        ..ConnectOptions::default()
    };
    Client::connect_with(&config.socket, options).map_err(client_step(format!("connect {name}")))
}

// ---- the data -----------------------------------------------------------

/// Syllables of the words: consonant + vowel, avoiding `e`, `s` and `y` so
/// that stemming never folds two unique words into one term.
const SYLLABLES: [&str; 48] = [
    "ba", "bi", "bo", "bu", "da", "di", "do", "du", "fa", "fi", "fo", "fu", "ga", "gi", "go", "gu", "ka", "ki", "ko",
    "ku", "la", "li", "lo", "lu", "ma", "mi", "mo", "mu", "na", "ni", "no", "nu", "pa", "pi", "po", "pu", "ra", "ri",
    "ro", "ru", "ta", "ti", "to", "tu", "va", "vi", "vo", "vu",
];

/// Syllables in a unique word after its prefix.
const UNIQUE_SYLLABLES: usize = 5;

/// Bytes of a unique word: "xq" + the syllables.
const UNIQUE_WORD_BYTES: usize = 2 + 2 * UNIQUE_SYLLABLES;

/// The namespace of writer `writer` (the seed uses the same ones).
pub fn namespace(writer: usize) -> String {
    format!("sustained-{writer}")
}

/// Memory `ordinal`: its unique word, then vocabulary words up to
/// `text_bytes`, and a unit vector; all from the ordinal alone, so a run is
/// the same every time and a check can rebuild what it wrote.
fn memory(config: &SustainedConfig, namespace: String, ordinal: u64) -> MemoryInput {
    let mut rng = XorShift::seeded(ordinal);
    let mut text = unique_word(ordinal);
    while text.len() < config.text_bytes {
        text.push(' ');
        text.push_str(&vocabulary_word(rng.next() % VOCABULARY_WORDS));
    }
    text.truncate(config.text_bytes);
    MemoryInput {
        namespace,
        text: text.trim_end().to_owned(),
        vector: Some(unit_vector(&mut rng, config.dim)),
        importance: 1.0,
        ..MemoryInput::default()
    }
}

/// "xq" and the ordinal in base 48, one syllable per digit: no other
/// memory's text contains it (vocabulary words never contain "x" or "q").
fn unique_word(ordinal: u64) -> String {
    let mut word = String::with_capacity(UNIQUE_WORD_BYTES);
    word.push_str("xq");
    let mut rest = ordinal;
    for _ in 0..UNIQUE_SYLLABLES {
        word.push_str(SYLLABLES[(rest % SYLLABLES.len() as u64) as usize]);
        rest /= SYLLABLES.len() as u64;
    }
    word
}

/// Word `n` (below [`VOCABULARY_WORDS`]) of the shared vocabulary.
fn vocabulary_word(n: u64) -> String {
    let base = SYLLABLES.len() as u64;
    [SYLLABLES[(n / base) as usize], SYLLABLES[(n % base) as usize]].concat()
}

fn unit_vector(rng: &mut XorShift, dim: u32) -> Vec<f32> {
    let mut vector: Vec<f32> = (0..dim).map(|_| rng.unit_f32() * 2.0 - 1.0).collect();
    let norm = vector.iter().map(|x| x * x).sum::<f32>().sqrt().max(f32::MIN_POSITIVE);
    vector.iter_mut().for_each(|x| *x /= norm);
    vector
}

/// A tiny deterministic generator (xorshift64 after a splitmix64 seed).
struct XorShift(u64);

impl XorShift {
    fn seeded(seed: u64) -> Self {
        let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        Self((z ^ (z >> 31)) | 1)
    }

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

// ---- the table ----------------------------------------------------------

/// The sustained-writes result as a table.
pub fn sustained_table(r: &SustainedReport) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "sustained writes: {} memories from {} writers, batch {}, {}-d vectors, {} B texts, on {} seeded",
        grouped(r.memories as f64),
        r.writers,
        r.batch,
        r.dim,
        r.text_bytes,
        grouped(r.seed_memories as f64)
    );
    for (phase, l) in [("idle", &r.idle), ("load", &r.load), ("idle after", &r.idle_after)] {
        let _ = writeln!(
            out,
            "recall {phase:<10} p50 {}  p99 {}  p99.9 {}  ({} recalls, {} degraded)",
            micros(l.p50_ns),
            micros(l.p99_ns),
            micros(l.p999_ns),
            l.recalls,
            l.degraded
        );
        let _ = writeln!(
            out,
            "       {:<10} text p50 {} p99 {}; vector p50 {} p99 {}; daemon's handling p50 {} p99 {}",
            "",
            micros(l.text_p50_ns),
            micros(l.text_p99_ns),
            micros(l.vector_p50_ns),
            micros(l.vector_p99_ns),
            micros(l.handled_p50_ns),
            micros(l.handled_p99_ns)
        );
    }
    let _ = writeln!(
        out,
        "load / idle: p50 {:.2}x  p99 {:.2}x (target <= 3)  [p99 against idle after: {:.2}x]",
        r.p50_ratio, r.p99_ratio, r.p99_ratio_to_after
    );
    let _ = writeln!(
        out,
        "writes: {}/s memories over {:.1} s; Remember p50 {}  p99 {}",
        grouped(r.writes_per_s),
        r.write_seconds,
        micros(r.remember_p50_ns),
        micros(r.remember_p99_ns)
    );
    let _ = writeln!(
        out,
        "visibility: {} of {} batches checked ({}), {} recalls, {} misses{}",
        r.batches_checked,
        r.memories.div_ceil(r.batch as u64),
        if r.check_every_batch {
            "each by its writer"
        } else {
            "the latest, by a checker"
        },
        r.visibility_checks,
        r.visibility_misses,
        if r.visibility_misses == 0 {
            ""
        } else {
            "  <- VIOLATIONS"
        }
    );
    for example in &r.miss_examples {
        let _ = writeln!(out, "  {example}");
    }
    let _ = writeln!(
        out,
        "tails during the load (max of {} samples): dense {}  vector {}",
        r.tail_samples,
        grouped(r.max_dense_tail as f64),
        grouped(r.max_vector_tail as f64)
    );
    let verdict = if r.caught_up { "caught up" } else { "NOT caught up" };
    let _ = writeln!(
        out,
        "catch-up (both tails < {}): {verdict} in {:.1} s; tails then dense {}  vector {}",
        r.tail_threshold, r.catch_up_s, r.residual_dense_tail, r.residual_vector_tail
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unique_words_are_unique_and_start_every_text() {
        let config = SustainedConfig::new("/nonexistent");
        let words: std::collections::HashSet<String> = (0..100_000).map(unique_word).collect();
        assert_eq!(words.len(), 100_000);
        let m = memory(&config, namespace(0), 12_345);
        assert!(m.text.starts_with(&unique_word(12_345)));
        assert!(m.text.len() <= config.text_bytes && m.text.len() > config.text_bytes - 6);
        assert_eq!(m.vector.as_ref().map(Vec::len), Some(384));
    }

    #[test]
    fn vocabulary_words_never_contain_a_unique_prefix() {
        assert!((0..VOCABULARY_WORDS).all(|n| !vocabulary_word(n).contains(['x', 'q'])));
    }

    #[test]
    fn load_shares_cover_the_load_once() {
        let mut config = SustainedConfig::new("/nonexistent");
        config.memories = 1001;
        config.writers = 3;
        let shares: Vec<_> = (0..3).map(|w| config.load_share(w)).collect();
        assert_eq!(shares[0].start, config.seed_memories);
        assert_eq!(shares[2].end, config.seed_memories + 1001);
        assert!(shares.windows(2).all(|pair| pair[0].end == pair[1].start));
    }

    #[test]
    fn bad_parameters_are_refused() {
        let base = SustainedConfig::new("/nonexistent");
        for broken in [
            SustainedConfig {
                writers: 0,
                ..base.clone()
            },
            SustainedConfig {
                batch: 0,
                ..base.clone()
            },
            SustainedConfig {
                memories: 0,
                ..base.clone()
            },
            SustainedConfig {
                text_bytes: 4,
                ..base.clone()
            },
            SustainedConfig { dim: 0, ..base.clone() },
        ] {
            assert!(
                matches!(broken.validate(), Err(BenchError::InvalidArgument(_))),
                "{broken:?}"
            );
        }
    }
}
