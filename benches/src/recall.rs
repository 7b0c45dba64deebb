//! `nexus-bench recall`: recall latency and throughput through the daemon on
//! one forced route (issue 10, item 9), on a seeded synthetic corpus.
//!
//! 1. **Load** (unless `--skip-load`): N memories in the namespace
//!    [`NAMESPACE`], keyed `bench-<ordinal>` so a re-run upserts the same
//!    memories. Each has a text made of template sentences over a fixed
//!    vocabulary (people, places, cities, activities, objects, dates) and a
//!    D-dimensional client vector drawn from a Gaussian mixture of
//!    `--clusters` clusters on the unit sphere. A memory's cluster also picks
//!    its text's topic most of the time, so text and vector agree as they do
//!    in real memories, and BM25 and the built-in embedder can tell memories
//!    apart (names, places, dates vary).
//! 2. **Settle**: if Stats show vectors outside the ANN graphs, a Checkpoint
//!    seals them and the run waits until `dense_tail` and `vector_tail` are 0,
//!    so the figures are the built index's, not those of a tail scan.
//! 3. **Floor**: `nexus-bench floor`'s bell + futex round trip on the idle
//!    machine, in the same run (before the clients and again after them):
//!    what every round trip pays before the daemon does any work. On a KVM
//!    guest it flips between regimes (1.8 µs and 40 µs p50 here, minutes
//!    apart, the daemon idle), hence two measurements and both reported.
//! 4. **Measure**: C client threads, each on its own shared-memory
//!    connection, recall in a closed loop for S seconds with
//!    `RecallRequest.route` forced. The queries are a seeded stream resembling
//!    the corpus (a question over the same vocabulary, a vector near a
//!    cluster's centre); `--route cache` cycles over [`CACHE_QUERIES`] queries
//!    warmed before the clock starts, so every measured recall can be a hit.
//!    Per request: the round trip on the client's clock (call to answer read)
//!    and the daemon's `timings.handled_ns`.
//!
//! Answers with an error status are counted (the first message kept) and
//! left out of the percentiles; the run goes on. Degraded answers are counted
//! and kept in. A client transport error (timeout, daemon gone) fails the run.
//!
//! Not here: judging the figures against the targets (BENCHMARKS.md does),
//! the answers' quality (`nexus-bench eval locomo`), the daemon's
//! configuration (`--daemon-arg`). On a 2-core host the clients share the
//! cores with the daemon: read many-client figures with that in mind.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::{Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

use nexus_client::wire::{
    ArchivedResponseBody, ArchivedStatus, MemoryInput, MemoryTag, RecallRequest, RememberRequest, Request, RequestBody,
    Route, Status,
};
use nexus_client::{Client, ConnectOptions, Connection, ResponseGuard, counter};
use nexus_daemon::recall::ann::synthetic::SplitMix64;
use nexus_daemon::recall::lexical::synthetic::ZipfText;
use nexus_shm_protocol::layout::{MAX_RING_BYTES, frame_footprint};
use serde::Serialize;

use crate::error::{BenchError, client_step};
use crate::fanout::raise_fd_limit;
use crate::floor::{FloorReport, run_floor};
use crate::remember::{remember_frame_bytes, ring_bytes_for};
use crate::report::{grouped, micros, percentile, ratio};
use crate::stats::connect_observer;

/// Most client threads: the target is 1,000 concurrent clients, each
/// a thread of this process with its own connection (three fds, two rings).
pub const MAX_CLIENTS: usize = 4096;

/// Largest corpus: ten times the largest (1,000,000 memories).
pub const MAX_MEMORIES: u64 = 10_000_000;

/// Largest vector dimension: above every common embedding model's (3,072).
pub const MAX_DIM: u32 = 4096;

/// Longest measured window: longer runs are better made as several runs.
pub const MAX_DURATION: Duration = Duration::from_secs(3600);

/// Most results per recall: the eval's own bound.
pub const MAX_K: u32 = crate::eval::MAX_K;

/// Most clusters of the mixture (a cluster per memory at most matters little).
pub const MAX_CLUSTERS: usize = 65_536;

/// Results per recall unless `--k`: the daemon's own default top-k (issue 10).
pub const DEFAULT_K: u32 = 8;

/// Clusters of the mixture unless `--clusters`: about 1,500 memories per
/// cluster at 100,000, a topic each.
pub const DEFAULT_CLUSTERS: usize = 64;

/// Seed of the corpus and the queries unless `--seed`.
pub const DEFAULT_SEED: u64 = 10;

/// The namespace the corpus is written to and the queries search.
pub const NAMESPACE: &str = "bench";

/// Distinct queries of `--route cache`: few enough to warm in a moment and
/// stay cached, enough that the clients do not all ask the same one.
pub const CACHE_QUERIES: usize = 64;

/// A client is starved when its slowest answer exceeds this many times the
/// run's p99 (the "no client starved (max ≤ 10 × p99)").
pub const STARVATION_FACTOR: u64 = 10;

/// Per-component noise of a point relative to its centre's (both standard
/// normal), as `nexus-bench ann`: points of one cluster have cosine ≈ 0.5,
/// points of two clusters ≈ 0.
const SPREAD: f64 = crate::ann::DEFAULT_SPREAD;

/// Noise vectors the query stream draws from: a query's vector is a centre
/// plus one of them, which costs a few hundred additions per query instead
/// of as many Gaussian draws, while clusters × this many vectors (16,384 by
/// default) and the varied texts keep the stream from repeating itself.
const QUERY_NOISE_VECTORS: usize = 256;

/// Memories per Remember while loading: big enough that the WAL's fdatasync
/// is shared by many, small enough for a 4 MiB ring at 384 dimensions.
const LOAD_BATCH: usize = 500;

/// Loader threads: two, so one batch is embedded while the other is made durable.
const LOADERS: u64 = 2;

/// Upper bound of a synthetic memory's or query's text (a test checks it),
/// for sizing the frames.
const MAX_TEXT_BYTES: usize = 512;

/// Upper bound of one recall hit in an answer: its text (at most
/// [`MAX_TEXT_BYTES`]), namespace, tags and per-factor contributions.
const PER_HIT_BYTES: u64 = 1024;

/// Archive overhead of a request or answer beyond its texts, vectors and
/// hits (headers, options, alignment), rounded up generously.
const FRAME_OVERHEAD_BYTES: u64 = 512;

/// Smallest ring of a query connection: far below the daemon's 1 MiB
/// default, so a thousand clients do not map two gigabytes of rings.
const MIN_QUERY_RING_BYTES: u64 = 64 << 10;

/// Round trips of each floor measurement (one before the clients, one
/// after): half a second or less each.
const FLOOR_ROUND_TRIPS: u64 = 5_000;

/// Unmeasured recalls per client after it connects (first-touch costs of
/// its rings and the daemon's session); few, as a thousand clients on the
/// MaximumIntelligence route make each one cost seconds of the machine.
const WARMUP_REQUESTS: u64 = 2;

/// Timeout of every call: far above any answer's time, so a slow answer is
/// measured rather than turned into an error.
const CALL_TIMEOUT: Duration = Duration::from_secs(60);

/// How long the checkpoint and the graph builders get before measuring:
/// sealing a million memories' tails takes minutes on a small host.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(600);

/// Poll period of the tails while settling.
const SETTLE_POLL: Duration = Duration::from_millis(50);

/// Latency samples reserved per client before the clock starts, so the
/// vectors rarely grow inside the loop.
const SAMPLES_RESERVED: usize = 1 << 14;

/// A route the benchmark can force.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecallRoute {
    /// `Route::CacheOnly`, on a warmed set of queries.
    Cache,
    /// `Route::SmartRouting`.
    Smart,
    /// `Route::FullPipeline`.
    Full,
    /// `Route::MaximumIntelligence`.
    Max,
}

impl RecallRoute {
    /// Every route, fastest first.
    pub const ALL: [RecallRoute; 4] = [Self::Cache, Self::Smart, Self::Full, Self::Max];

    /// The name on the command line and in the report.
    pub fn name(self) -> &'static str {
        match self {
            Self::Cache => "cache",
            Self::Smart => "smart",
            Self::Full => "full",
            Self::Max => "max",
        }
    }

    /// The route the requests force.
    pub fn wire(self) -> Route {
        match self {
            Self::Cache => Route::CacheOnly,
            Self::Smart => Route::SmartRouting,
            Self::Full => Route::FullPipeline,
            Self::Max => Route::MaximumIntelligence,
        }
    }
}

impl FromStr for RecallRoute {
    type Err = BenchError;

    fn from_str(name: &str) -> Result<Self, BenchError> {
        Self::ALL.into_iter().find(|route| route.name() == name).ok_or_else(|| {
            BenchError::InvalidArgument(format!("--route takes cache, smart, full or max, not `{name}`"))
        })
    }
}

/// What to measure.
#[derive(Debug, Clone)]
pub struct RecallConfig {
    /// The daemon's socket.
    pub socket: PathBuf,
    /// The route every measured recall forces.
    pub route: RecallRoute,
    /// Memories of the corpus (loaded, or expected there with `skip_load`).
    pub memories: u64,
    /// Vector dimension.
    pub dim: u32,
    /// Client threads, one connection each.
    pub clients: usize,
    /// Measured window.
    pub duration: Duration,
    /// Results per recall.
    pub k: u32,
    /// Measure the corpus already in the daemon instead of loading it.
    pub skip_load: bool,
    /// Clusters of the mixture.
    pub clusters: usize,
    /// Seed of the corpus and the queries.
    pub seed: u64,
    /// Percent of each client's requests that are durable Remembers of one
    /// new memory instead of recalls (the mixed load; 0 = recalls only).
    pub remember_percent: u8,
}

impl RecallConfig {
    /// Defaults: SmartRouting, 100,000 memories, 384-d, one client, 10 s,
    /// k = 8, 64 clusters.
    pub fn new(socket: impl Into<PathBuf>) -> Self {
        Self {
            socket: socket.into(),
            route: RecallRoute::Smart,
            memories: 100_000,
            dim: 384,
            clients: 1,
            duration: Duration::from_secs(10),
            k: DEFAULT_K,
            skip_load: false,
            clusters: DEFAULT_CLUSTERS,
            seed: DEFAULT_SEED,
            remember_percent: 0,
        }
    }

    /// Applies `--flag value` (every option of `recall` but `--skip-load`
    /// and the common ones); the error names the flag and what it takes.
    pub fn set_option(&mut self, flag: &str, value: &str) -> Result<(), BenchError> {
        match flag {
            "route" => self.route = value.parse()?,
            "memories" => self.memories = number(flag, value)?,
            "dim" => self.dim = number(flag, value)?,
            "clients" => self.clients = number(flag, value)?,
            "k" => self.k = number(flag, value)?,
            "clusters" => self.clusters = number(flag, value)?,
            "seed" => self.seed = number(flag, value)?,
            "remember-percent" => self.remember_percent = number(flag, value)?,
            "duration" => self.duration = seconds(flag, value)?,
            _ => return Err(BenchError::InvalidArgument(format!("recall has no option --{flag}"))),
        }
        Ok(())
    }

    /// Errors naming the first parameter out of range.
    pub fn validate(&self) -> Result<(), BenchError> {
        let within = |flag: &str, value: u64, max: u64| match (1..=max).contains(&value) {
            true => Ok(()),
            false => Err(BenchError::InvalidArgument(format!(
                "--{flag} must be 1..={max}, not {value}"
            ))),
        };
        within("memories", self.memories, MAX_MEMORIES)?;
        within("dim", u64::from(self.dim), u64::from(MAX_DIM))?;
        within("clients", self.clients as u64, MAX_CLIENTS as u64)?;
        within("k", u64::from(self.k), u64::from(MAX_K))?;
        within("clusters", self.clusters as u64, MAX_CLUSTERS as u64)?;
        if self.remember_percent > 100 {
            return Err(BenchError::InvalidArgument(format!(
                "--remember-percent must be 0..=100, not {}",
                self.remember_percent
            )));
        }
        if self.duration.is_zero() || self.duration > MAX_DURATION {
            return Err(BenchError::InvalidArgument(format!(
                "--duration must be above 0 and at most {} s, not {} s",
                MAX_DURATION.as_secs(),
                self.duration.as_secs_f64()
            )));
        }
        Ok(())
    }
}

/// `value` as a whole number for `--flag`.
fn number<T: FromStr>(flag: &str, value: &str) -> Result<T, BenchError> {
    value
        .parse()
        .map_err(|_| BenchError::InvalidArgument(format!("--{flag} takes a whole number, not `{value}`")))
}

/// `value` as seconds (fractions allowed) for `--flag`.
fn seconds(flag: &str, value: &str) -> Result<Duration, BenchError> {
    let invalid = || BenchError::InvalidArgument(format!("--{flag} takes seconds (e.g. 5 or 0.5), not `{value}`"));
    let seconds: f64 = value.parse().map_err(|_| invalid())?;
    Duration::try_from_secs_f64(seconds).map_err(|_| invalid())
}

/// The measurement (also the `--json` object). Latencies are nanoseconds,
/// nearest rank, over the answers without an error status.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RecallReport {
    /// "cache", "smart", "full" or "max".
    pub route: &'static str,
    /// Memories of the corpus.
    pub memories: u64,
    /// Vector dimension.
    pub dim: u32,
    /// Client threads.
    pub clients: usize,
    /// Results per recall.
    pub k: u32,
    /// Clusters of the mixture.
    pub clusters: usize,
    /// Seed of the corpus and the queries.
    pub seed: u64,
    /// Whether this run loaded the corpus (false with `--skip-load`).
    pub loaded: bool,
    /// Seconds the load took (0 when skipped).
    pub load_s: f64,
    /// The measured window asked for, seconds.
    pub duration_s: f64,
    /// From the start signal to the last client's last answer, seconds.
    pub measured_s: f64,
    /// Recalls sent in the window, whatever their answer.
    pub requests: u64,
    /// Answers without an error status per second of `measured_s`.
    pub throughput_per_s: f64,
    /// Median of the daemon's handling time (`timings.handled_ns`).
    pub server_p50_ns: u64,
    /// 99th percentile of the same.
    pub server_p99_ns: u64,
    /// 99.9th percentile of the same.
    pub server_p999_ns: u64,
    /// Median wait from a request's publication to the daemon picking it
    /// up (`timings.queued_ns`; in the round trip, not in `server_*`).
    pub queued_p50_ns: u64,
    /// 99th percentile of the same.
    pub queued_p99_ns: u64,
    /// Median round trip on the client's clock.
    pub rtt_p50_ns: u64,
    /// 99th percentile round trip.
    pub rtt_p99_ns: u64,
    /// 99.9th percentile round trip.
    pub rtt_p999_ns: u64,
    /// Slowest round trip.
    pub rtt_max_ns: u64,
    /// Answers with status Degraded.
    pub degraded: u64,
    /// Answers with status Error.
    pub errors: u64,
    /// The first error answer, "error <code>: <message>".
    pub first_error: Option<String>,
    /// Answers that report a route other than the one forced.
    pub other_route: u64,
    /// Mean hits per answer.
    pub mean_hits: f64,
    /// The machine's wake-up floor in this run: the median bell + futex
    /// round trip between two threads (`nexus-bench floor`), the lower of
    /// the measurements before and after the clients.
    pub floor_rtt_p50_ns: u64,
    /// 99th percentile of the same measurement.
    pub floor_rtt_p99_ns: u64,
    /// The floor's median before the clients ran.
    pub floor_before_p50_ns: u64,
    /// The floor's median after the clients ran.
    pub floor_after_p50_ns: u64,
    /// Fewest recalls one client sent.
    pub client_requests_min: u64,
    /// Most recalls one client sent.
    pub client_requests_max: u64,
    /// Each client's slowest round trip, in client order.
    pub client_max_rtt_ns: Vec<u64>,
    /// `rtt_max_ns / rtt_p99_ns`: starvation shows above [`STARVATION_FACTOR`].
    pub max_over_p99: f64,
    /// Clients with no answer while others had some, or whose slowest
    /// round trip exceeds [`STARVATION_FACTOR`] × `rtt_p99_ns`.
    pub starved_clients: usize,
    /// `--remember-percent`: the share of requests that were Remembers.
    pub remember_percent: u8,
    /// Durable Remembers sent (not in the recall figures above).
    pub remembers: u64,
    /// Their median round trip (acknowledged durable).
    pub remember_rtt_p50_ns: u64,
    /// Their 99th percentile round trip.
    pub remember_rtt_p99_ns: u64,
}

/// Runs the whole sequence against the daemon at `config.socket`.
pub fn run_recall(config: &RecallConfig) -> Result<RecallReport, BenchError> {
    config.validate()?;
    raise_fd_limit()?;
    let corpus = Corpus::new(config.seed, config.dim, config.clusters);
    let observer = connect_observer(&config.socket)?;
    let load_s = match config.skip_load {
        true => 0.0,
        false => load(config, &corpus)?,
    };
    settle(&observer)?;
    let floor_before = run_floor(FLOOR_ROUND_TRIPS)?;
    let cycle = (config.route == RecallRoute::Cache).then(|| corpus.cache_set(config.k));
    let queries = Queries {
        corpus: &corpus,
        cycle: cycle.as_deref(),
        k: config.k,
        route: config.route.wire(),
    };
    if cycle.is_some() {
        warm_cache(config, &queries)?;
    }
    let measured = measure(config, &queries)?;
    let floor_after = run_floor(FLOOR_ROUND_TRIPS)?;
    Ok(summarise(config, load_s, [&floor_before, &floor_after], measured))
}

// ---- load and settle ----------------------------------------------------

/// Writes the corpus from [`LOADERS`] threads taking every other batch;
/// returns the seconds it took.
fn load(config: &RecallConfig, corpus: &Corpus) -> Result<f64, BenchError> {
    let started = Instant::now();
    std::thread::scope(|scope| {
        let loaders: Vec<_> = (0..LOADERS)
            .map(|loader| scope.spawn(move || load_share(config, corpus, loader)))
            .collect();
        (loaders.into_iter())
            .try_for_each(|loader| loader.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)))
    })?;
    Ok(started.elapsed().as_secs_f64())
}

/// Batches `loader`, `loader + LOADERS`, ... of the corpus.
fn load_share(config: &RecallConfig, corpus: &Corpus, loader: u64) -> Result<(), BenchError> {
    let frame = remember_frame_bytes(LOAD_BATCH, MAX_TEXT_BYTES, config.dim);
    let client = connect(config, "nexus-bench recall loader", ring_bytes_for(frame))?;
    let batch = LOAD_BATCH as u64;
    let mut start = loader * batch;
    while start < config.memories {
        let end = (start + batch).min(config.memories);
        let memories: Vec<MemoryInput> = (start..end).map(|ordinal| corpus.memory(ordinal)).collect();
        let ids = (client.remember(memories)).map_err(client_step(format!("Remember memories {start}..{end}")))?;
        if ids.len() as u64 != end - start {
            return Err(BenchError::BadAnswer {
                request_id: 0,
                detail: format!("Remember of memories {start}..{end} answered {} ids", ids.len()),
            });
        }
        start += LOADERS * batch;
    }
    Ok(())
}

/// Seals the ANN tails (Checkpoint) if any vector is outside a graph, and
/// waits until none is.
fn settle(observer: &Client) -> Result<(), BenchError> {
    if tails(observer)? == 0 {
        return Ok(());
    }
    let answer = (observer.call(RequestBody::Checkpoint, Some(SETTLE_TIMEOUT)))
        .map_err(client_step("Checkpoint before measuring"))?;
    if answer.status != Status::Ok {
        return Err(BenchError::BadAnswer {
            request_id: answer.request_id,
            detail: format!("Checkpoint before measuring answered {:?}", answer.status),
        });
    }
    let until = Instant::now() + SETTLE_TIMEOUT;
    loop {
        let tail = tails(observer)?;
        if tail == 0 {
            return Ok(());
        }
        if Instant::now() > until {
            return Err(BenchError::BadAnswer {
                request_id: answer.request_id,
                detail: format!("{tail} vectors still outside the ANN graphs {SETTLE_TIMEOUT:?} after the checkpoint"),
            });
        }
        std::thread::sleep(SETTLE_POLL);
    }
}

/// `dense_tail + vector_tail` (an engine the daemon does not run has no tail).
fn tails(observer: &Client) -> Result<u64, BenchError> {
    let stats = observer.stats().map_err(client_step("Stats (ANN tails)"))?;
    Ok(["dense_tail", "vector_tail"]
        .iter()
        .map(|name| counter(&stats, name).unwrap_or(0))
        .sum())
}

// ---- the measured clients -----------------------------------------------

/// Where each client's next query comes from.
struct Queries<'a> {
    corpus: &'a Corpus,
    /// The warmed set `--route cache` cycles over; None: the seeded stream.
    cycle: Option<&'a [RecallRequest]>,
    k: u32,
    route: Route,
}

impl Queries<'_> {
    /// A request for client `client` to fill with [`fill`](Self::fill).
    fn request(&self) -> Request {
        let query = RecallRequest {
            namespace: NAMESPACE.into(),
            k: self.k,
            route: Some(self.route),
            ..RecallRequest::default()
        };
        Request {
            request_id: 0,
            deadline_ns: 0,
            body: RequestBody::Recall(query),
        }
    }

    /// Writes query `n` of client `client` into `request`, reusing its
    /// buffers (no allocation once they are big enough).
    fn fill(&self, client: usize, n: u64, request: &mut Request) {
        let RequestBody::Recall(query) = &mut request.body else {
            unreachable!("the clients' requests are made by Queries::request");
        };
        match self.cycle {
            Some(set) => {
                let from = &set[(client + n as usize) % set.len()];
                query.text.clone_from(&from.text);
                query.vector.clone_from(&from.vector);
            }
            None => {
                self.corpus.fill_query(client as u64, n, query);
            }
        }
    }
}

/// Sends every query of the cache set once as the router pleases (so its
/// answer is cached) and once on the cache route, answers unchecked.
fn warm_cache(config: &RecallConfig, queries: &Queries<'_>) -> Result<(), BenchError> {
    let mut connection = connect_queries(config, "nexus-bench recall cache warm-up")?;
    let mut request = queries.request();
    for route in [None, Some(Route::CacheOnly)] {
        for n in 0..CACHE_QUERIES as u64 {
            queries.fill(0, n, &mut request);
            if let RequestBody::Recall(query) = &mut request.body {
                query.route = route;
            }
            (connection.call(&mut request, Some(CALL_TIMEOUT))).map_err(client_step("recall (cache warm-up)"))?;
        }
    }
    Ok(())
}

/// What one client measured.
#[derive(Debug, Default)]
struct ClientOutcome {
    requests: u64,
    rtt_ns: Vec<u64>,
    server_ns: Vec<u64>,
    queued_ns: Vec<u64>,
    max_rtt_ns: u64,
    degraded: u64,
    errors: u64,
    first_error: Option<String>,
    other_route: u64,
    hits: u64,
    remember_rtt_ns: Vec<u64>,
}

impl ClientOutcome {
    fn reserved() -> Self {
        Self {
            rtt_ns: Vec::with_capacity(SAMPLES_RESERVED),
            server_ns: Vec::with_capacity(SAMPLES_RESERVED),
            queued_ns: Vec::with_capacity(SAMPLES_RESERVED),
            ..Self::default()
        }
    }

    /// Counts one answer; keeps its latencies unless its status is an error.
    fn record(&mut self, answer: &ResponseGuard<'_>, rtt_ns: u64, route: Route) {
        self.requests += 1;
        match &answer.status {
            ArchivedStatus::Error { code, message } => {
                self.errors += 1;
                if self.first_error.is_none() {
                    self.first_error = Some(format!("error {}: {}", code.to_native(), message.as_str()));
                }
                return;
            }
            ArchivedStatus::Degraded { .. } => self.degraded += 1,
            ArchivedStatus::Ok => {}
        }
        self.rtt_ns.push(rtt_ns);
        self.server_ns.push(answer.timings.handled_ns.to_native());
        self.queued_ns.push(answer.timings.queued_ns.to_native());
        self.max_rtt_ns = self.max_rtt_ns.max(rtt_ns);
        self.other_route += u64::from(answer.route != route);
        if let ArchivedResponseBody::Recalled(hits) = &answer.body {
            self.hits += hits.len() as u64;
        }
    }
}

/// The clients' common start: each arrives once connected and warmed up;
/// the measuring thread lets them go together, or calls the run off.
struct StartLine {
    state: Mutex<(usize, Start)>,
    changed: Condvar,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Start {
    Waiting,
    Go,
    Abort,
}

impl StartLine {
    fn new() -> Self {
        Self {
            state: Mutex::new((0, Start::Waiting)),
            changed: Condvar::new(),
        }
    }

    /// One client is ready; waits for the verdict (true: go).
    fn arrive(&self) -> bool {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.0 += 1;
        self.changed.notify_all();
        let state = (self.changed)
            .wait_while(state, |(_, start)| *start == Start::Waiting)
            .unwrap_or_else(PoisonError::into_inner);
        state.1 == Start::Go
    }

    /// Waits until `clients` arrived.
    fn wait_for(&self, clients: usize) {
        let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        drop(
            (self.changed)
                .wait_while(state, |(arrived, _)| *arrived < clients)
                .unwrap_or_else(PoisonError::into_inner),
        );
    }

    fn decide(&self, start: Start) {
        self.state.lock().unwrap_or_else(PoisonError::into_inner).1 = start;
        self.changed.notify_all();
    }
}

/// What the clients measured together.
struct Measured {
    clients: Vec<ClientOutcome>,
    elapsed: Duration,
}

/// Runs the clients for the window; the first client failure fails the run.
fn measure(config: &RecallConfig, queries: &Queries<'_>) -> Result<Measured, BenchError> {
    let start = &StartLine::new();
    std::thread::scope(|scope| {
        let mut handles = Vec::with_capacity(config.clients);
        for client in 0..config.clients {
            let spawned = std::thread::Builder::new()
                .name(format!("recall-{client}"))
                .spawn_scoped(scope, move || run_client(config, queries, client, start));
            match spawned {
                Ok(handle) => handles.push(handle),
                Err(e) => {
                    start.decide(Start::Abort);
                    return Err(BenchError::Io(e));
                }
            }
        }
        start.wait_for(config.clients);
        start.decide(Start::Go);
        let started = Instant::now();
        let joined: Vec<_> = (handles.into_iter())
            .map(|handle| handle.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)))
            .collect();
        let elapsed = started.elapsed();
        let clients = joined.into_iter().collect::<Result<_, _>>()?;
        Ok(Measured { clients, elapsed })
    })
}

/// One client: connect and warm up, wait for the start, then recall in a
/// closed loop until the window is over.
fn run_client(
    config: &RecallConfig,
    queries: &Queries<'_>,
    client: usize,
    start: &StartLine,
) -> Result<ClientOutcome, BenchError> {
    let prepared = prepare_client(config, queries, client);
    let go = start.arrive();
    let (mut connection, mut request) = prepared?;
    let mut outcome = ClientOutcome::reserved();
    if !go {
        return Ok(outcome);
    }
    let route = queries.route;
    let deadline = Instant::now() + config.duration;
    let mut n = WARMUP_REQUESTS;
    let mut written = 0u64;
    while Instant::now() < deadline {
        if remember_now(config.remember_percent, client, n) {
            n += 1;
            // A new memory of the corpus's kind, keyed past the loaded ones.
            let ordinal = config.memories + (client as u64) * (1 << 32) + written;
            written += 1;
            let mut remember = Request {
                request_id: 0,
                deadline_ns: 0,
                body: RequestBody::Remember(RememberRequest {
                    memories: vec![queries.corpus.memory(ordinal)],
                }),
            };
            let sent = Instant::now();
            let answer = (connection.call(&mut remember, Some(CALL_TIMEOUT)))
                .map_err(client_step(format!("remember from client {client}")))?;
            let rtt_ns = u64::try_from(sent.elapsed().as_nanos()).unwrap_or(u64::MAX);
            if let ArchivedStatus::Error { code, message } = &answer.status {
                outcome.errors += 1;
                if outcome.first_error.is_none() {
                    outcome.first_error = Some(format!("error {} (remember): {}", code.to_native(), message.as_str()));
                }
            } else {
                outcome.remember_rtt_ns.push(rtt_ns);
            }
            continue;
        }
        queries.fill(client, n, &mut request);
        n += 1;
        let sent = Instant::now();
        let answer = (connection.call(&mut request, Some(CALL_TIMEOUT)))
            .map_err(client_step(format!("recall from client {client}")))?;
        let rtt_ns = u64::try_from(sent.elapsed().as_nanos()).unwrap_or(u64::MAX);
        outcome.record(&answer, rtt_ns, route);
    }
    Ok(outcome)
}

/// Whether request `n` of client `client` is a Remember under `percent`
/// (spread evenly, the same on every run).
fn remember_now(percent: u8, client: usize, n: u64) -> bool {
    percent > 0 && (n.wrapping_mul(37).wrapping_add(client as u64 * 11)) % 100 < u64::from(percent)
}

/// Connects client `client` and sends its unmeasured warm-up recalls.
fn prepare_client(
    config: &RecallConfig,
    queries: &Queries<'_>,
    client: usize,
) -> Result<(Connection, Request), BenchError> {
    let mut connection = connect_queries(config, &format!("nexus-bench recall {client}"))?;
    let mut request = queries.request();
    for n in 0..WARMUP_REQUESTS {
        queries.fill(client, n, &mut request);
        (connection.call(&mut request, Some(CALL_TIMEOUT))).map_err(client_step(format!("warm up client {client}")))?;
    }
    Ok((connection, request))
}

/// A query connection with rings sized by [`query_ring_bytes`].
fn connect_queries(config: &RecallConfig, name: &str) -> Result<Connection, BenchError> {
    let options = ring_options(name, query_ring_bytes(config.dim, config.k));
    Connection::connect(&config.socket, options).map_err(client_step(format!("connect {name}")))
}

/// Connection options with both rings of `ring_bytes`.
fn ring_options(name: &str, ring_bytes: u32) -> ConnectOptions {
    ConnectOptions {
        name: name.into(),
        request_ring_bytes: ring_bytes,
        response_ring_bytes: ring_bytes,
        timeout: CALL_TIMEOUT,
        ..ConnectOptions::default()
    }
}

/// A loader's or observer's connection, both rings of `ring_bytes` (the
/// daemon's maximum frame is set by the smaller ring).
fn connect(config: &RecallConfig, name: &str, ring_bytes: u32) -> Result<Client, BenchError> {
    let options = ring_options(name, ring_bytes);
    Client::connect_with(&config.socket, options).map_err(client_step(format!("connect {name}")))
}

/// Rings holding two of the larger of a query (a vector and a text) and its
/// answer (k hits); both rings the same size, as the smaller sets the
/// maximum frame.
fn query_ring_bytes(dim: u32, k: u32) -> u32 {
    let request = u64::from(dim) * 4 + MAX_TEXT_BYTES as u64 + FRAME_OVERHEAD_BYTES;
    let answer = u64::from(k) * PER_HIT_BYTES + FRAME_OVERHEAD_BYTES;
    let wanted = (2 * frame_footprint(request.max(answer))).next_power_of_two();
    let bytes = wanted.clamp(MIN_QUERY_RING_BYTES, u64::from(MAX_RING_BYTES));
    u32::try_from(bytes).expect("MAX_RING_BYTES fits u32")
}

// ---- the report ----------------------------------------------------------

/// Merges the clients' samples into the report.
fn summarise(config: &RecallConfig, load_s: f64, floors: [&FloorReport; 2], measured: Measured) -> RecallReport {
    let clients = measured.clients;
    let mut rtt_ns: Vec<u64> = clients.iter().flat_map(|c| c.rtt_ns.iter().copied()).collect();
    let mut server_ns: Vec<u64> = clients.iter().flat_map(|c| c.server_ns.iter().copied()).collect();
    let mut queued_ns: Vec<u64> = clients.iter().flat_map(|c| c.queued_ns.iter().copied()).collect();
    let mut remember_rtt_ns: Vec<u64> = (clients.iter())
        .flat_map(|c| c.remember_rtt_ns.iter().copied())
        .collect();
    for samples in [&mut rtt_ns, &mut server_ns, &mut queued_ns, &mut remember_rtt_ns] {
        samples.sort_unstable();
    }
    let answered = rtt_ns.len() as u64;
    let rtt_p99_ns = percentile(&rtt_ns, 0.99);
    let rtt_max_ns = rtt_ns.last().copied().unwrap_or(0);
    let starved = |c: &&ClientOutcome| {
        (c.rtt_ns.is_empty() && answered > 0) || c.max_rtt_ns > STARVATION_FACTOR.saturating_mul(rtt_p99_ns)
    };
    let floor = floors
        .into_iter()
        .min_by_key(|f| f.bell_futex_p50_ns)
        .expect("two floors");
    let sum = |field: fn(&ClientOutcome) -> u64| clients.iter().map(field).sum::<u64>();
    RecallReport {
        route: config.route.name(),
        memories: config.memories,
        dim: config.dim,
        clients: config.clients,
        k: config.k,
        clusters: config.clusters,
        seed: config.seed,
        loaded: !config.skip_load,
        load_s,
        duration_s: config.duration.as_secs_f64(),
        measured_s: measured.elapsed.as_secs_f64(),
        requests: sum(|c| c.requests),
        throughput_per_s: ratio(answered as f64, measured.elapsed.as_secs_f64()),
        server_p50_ns: percentile(&server_ns, 0.50),
        server_p99_ns: percentile(&server_ns, 0.99),
        server_p999_ns: percentile(&server_ns, 0.999),
        queued_p50_ns: percentile(&queued_ns, 0.50),
        queued_p99_ns: percentile(&queued_ns, 0.99),
        rtt_p50_ns: percentile(&rtt_ns, 0.50),
        rtt_p99_ns,
        rtt_p999_ns: percentile(&rtt_ns, 0.999),
        rtt_max_ns,
        degraded: sum(|c| c.degraded),
        errors: sum(|c| c.errors),
        first_error: clients.iter().find_map(|c| c.first_error.clone()),
        other_route: sum(|c| c.other_route),
        mean_hits: ratio(sum(|c| c.hits) as f64, answered as f64),
        floor_rtt_p50_ns: floor.bell_futex_p50_ns,
        floor_rtt_p99_ns: floor.bell_futex_p99_ns,
        floor_before_p50_ns: floors[0].bell_futex_p50_ns,
        floor_after_p50_ns: floors[1].bell_futex_p50_ns,
        client_requests_min: clients.iter().map(|c| c.requests).min().unwrap_or(0),
        client_requests_max: clients.iter().map(|c| c.requests).max().unwrap_or(0),
        client_max_rtt_ns: clients.iter().map(|c| c.max_rtt_ns).collect(),
        max_over_p99: ratio(rtt_max_ns as f64, rtt_p99_ns as f64),
        starved_clients: clients.iter().filter(starved).count(),
        remember_percent: config.remember_percent,
        remembers: remember_rtt_ns.len() as u64,
        remember_rtt_p50_ns: percentile(&remember_rtt_ns, 0.50),
        remember_rtt_p99_ns: percentile(&remember_rtt_ns, 0.99),
    }
}

/// The recall result as a table.
pub fn recall_table(r: &RecallReport) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "recall, route {}: {} memories ({}-d, {} clusters{}), {} client(s), k {}, {:.1} s",
        r.route,
        grouped(r.memories as f64),
        r.dim,
        r.clusters,
        if r.loaded {
            format!(", loaded in {:.1} s", r.load_s)
        } else {
            String::new()
        },
        r.clients,
        r.k,
        r.measured_s
    );
    let _ = writeln!(
        out,
        "{} requests, {}/s answered; {} degraded, {} errors, {} on another route, {:.1} hits per answer",
        r.requests,
        grouped(r.throughput_per_s),
        r.degraded,
        r.errors,
        r.other_route,
        r.mean_hits
    );
    let _ = writeln!(
        out,
        "daemon  p50 {}  p99 {}  p99.9 {}  (queued before pick-up: p50 {}  p99 {})",
        micros(r.server_p50_ns),
        micros(r.server_p99_ns),
        micros(r.server_p999_ns),
        micros(r.queued_p50_ns),
        micros(r.queued_p99_ns)
    );
    let _ = writeln!(
        out,
        "client  p50 {}  p99 {}  p99.9 {}  max {} ({:.1}x p99; {} starved)",
        micros(r.rtt_p50_ns),
        micros(r.rtt_p99_ns),
        micros(r.rtt_p999_ns),
        micros(r.rtt_max_ns),
        r.max_over_p99,
        r.starved_clients
    );
    let _ = writeln!(
        out,
        "floor (bell + futex round trip)  p50 {}  p99 {}  (p50 before {}, after {})",
        micros(r.floor_rtt_p50_ns),
        micros(r.floor_rtt_p99_ns),
        micros(r.floor_before_p50_ns),
        micros(r.floor_after_p50_ns)
    );
    if let Some(error) = &r.first_error {
        let _ = writeln!(out, "first error: {error}");
    }
    out
}

// ---- the corpus ---------------------------------------------------------

/// Stream of the memories' draws (the queries' streams are their client's index, below it).
const MEMORY_STREAM: u64 = u64::MAX;
/// Stream of the query noise vectors.
const NOISE_STREAM: u64 = u64::MAX - 1;
/// Stream of the clusters' topics.
const TOPIC_STREAM: u64 = u64::MAX - 2;
/// Stream of the cache route's query set.
const CACHE_STREAM: u64 = u64::MAX - 3;

/// The seeded synthetic corpus and its query stream: everything is a
/// function of (seed, stream, ordinal), so any memory or query can be made
/// again alone, on any machine.
pub struct Corpus {
    seed: u64,
    dim: usize,
    clusters: usize,
    /// The clusters' centres, standard normal components, row-major.
    centres: Vec<f64>,
    /// [`QUERY_NOISE_VECTORS`] noise vectors of [`SPREAD`], row-major.
    noise: Vec<f64>,
    /// The long tail of the texts' words (see [`DETAIL_VOCABULARY`]).
    detail: ZipfText,
}

/// Distinct words of the texts' long tail: the templates alone use a few
/// hundred words, which makes every posting list span a tenth of the
/// corpus; conversations of 100,000 turns use tens of thousands of words,
/// with Zipfian frequencies (exponent 1, as English).
pub const DETAIL_VOCABULARY: usize = 50_000;

/// Words of long-tail detail per memory text (a clause of 6 to 14 words)
/// and per query (2).
const DETAIL_WORDS: (u64, u64) = (6, 14);
const QUERY_DETAIL_WORDS: u64 = 2;

/// Appends `n` long-tail words to `out`.
fn push_detail(detail: &ZipfText, rng: &mut SplitMix64, n: u64, out: &mut String) {
    for _ in 0..n {
        out.push(' ');
        out.push_str(detail.word_with(rng));
    }
}

impl Corpus {
    /// The corpus of `seed`, `dim`-dimensional, with `clusters` clusters (at least one).
    pub fn new(seed: u64, dim: u32, clusters: usize) -> Self {
        let (dim, clusters) = (dim as usize, clusters.max(1));
        let mut rng = SplitMix64::new(seed);
        let centres = (0..clusters * dim).map(|_| rng.next_gaussian()).collect();
        let mut rng = SplitMix64::new(mix(seed, NOISE_STREAM, 0));
        let noise = (0..QUERY_NOISE_VECTORS * dim)
            .map(|_| SPREAD * rng.next_gaussian())
            .collect();
        Self {
            seed,
            dim,
            clusters,
            centres,
            noise,
            detail: ZipfText::new(DETAIL_VOCABULARY, 1.0, seed),
        }
    }

    /// Memory `ordinal`: key `bench-<ordinal>`, a text on its cluster's
    /// topic, a unit vector of its cluster, created on the day its text names.
    pub fn memory(&self, ordinal: u64) -> MemoryInput {
        let mut rng = SplitMix64::new(mix(self.seed, MEMORY_STREAM, ordinal));
        let cluster = (rng.next_u64() % self.clusters as u64) as usize;
        let scene = Scene::draw(&mut rng, self.topic(cluster));
        let mut text = scene.memory_text(&mut rng);
        let (min, max) = DETAIL_WORDS;
        let n = min + rng.next_u64() % (max - min + 1);
        push_detail(&self.detail, &mut rng, n, &mut text);
        let mut vector = Vec::with_capacity(self.dim);
        self.point(
            cluster,
            (0..self.dim).map(|_| SPREAD * rng.next_gaussian()),
            &mut vector,
        );
        let created_at_ms =
            YEAR_START_MS + i64::from(scene.day_of_year) * DAY_MS + (rng.next_u64() % DAY_MS as u64) as i64;
        MemoryInput {
            key: Some(format!("bench-{ordinal}")),
            namespace: NAMESPACE.into(),
            text,
            vector: Some(vector),
            tags: vec![tag("person", scene.person), tag("city", scene.city)],
            created_at_ms: Some(created_at_ms),
            importance: 0.3 + (rng.next_u64() % 8) as f32 / 10.0,
            source: Some("nexus-bench recall".into()),
        }
    }

    /// The cluster memory `ordinal` belongs to.
    pub fn cluster_of(&self, ordinal: u64) -> usize {
        let mut rng = SplitMix64::new(mix(self.seed, MEMORY_STREAM, ordinal));
        (rng.next_u64() % self.clusters as u64) as usize
    }

    /// Writes query `n` of `stream` into `query` (text and vector, reusing
    /// their buffers); returns the cluster its vector is near.
    pub fn fill_query(&self, stream: u64, n: u64, query: &mut RecallRequest) -> usize {
        let mut rng = SplitMix64::new(mix(self.seed, stream, n));
        let cluster = (rng.next_u64() % self.clusters as u64) as usize;
        let scene = Scene::draw(&mut rng, self.topic(cluster));
        let text = query.text.get_or_insert_with(String::new);
        scene.question(&mut rng, text);
        push_detail(&self.detail, &mut rng, QUERY_DETAIL_WORDS, text);
        let row = (rng.next_u64() % QUERY_NOISE_VECTORS as u64) as usize;
        let noise = self.noise[row * self.dim..(row + 1) * self.dim].iter().copied();
        self.point(cluster, noise, query.vector.get_or_insert_with(Vec::new));
        cluster
    }

    /// The [`CACHE_QUERIES`] queries `--route cache` cycles over.
    fn cache_set(&self, k: u32) -> Vec<RecallRequest> {
        (0..CACHE_QUERIES as u64)
            .map(|n| {
                let mut query = RecallRequest {
                    namespace: NAMESPACE.into(),
                    k,
                    route: Some(Route::CacheOnly),
                    ..RecallRequest::default()
                };
                self.fill_query(CACHE_STREAM, n, &mut query);
                query
            })
            .collect()
    }

    /// `centre(cluster) + noise`, normalised, into `out`.
    fn point(&self, cluster: usize, noise: impl Iterator<Item = f64>, out: &mut Vec<f32>) {
        let centre = &self.centres[cluster * self.dim..(cluster + 1) * self.dim];
        out.clear();
        let mut squares = 0.0;
        for (c, n) in centre.iter().zip(noise) {
            let x = c + n;
            squares += x * x;
            out.push(x as f32);
        }
        let scale = 1.0 / f64::sqrt(squares).max(f64::MIN_POSITIVE);
        out.iter_mut().for_each(|x| *x = (f64::from(*x) * scale) as f32);
    }

    /// Cluster `cluster`'s topic: the activity, place and city its memories
    /// mostly speak of.
    fn topic(&self, cluster: usize) -> Topic {
        let mut rng = SplitMix64::new(mix(self.seed, TOPIC_STREAM, cluster as u64));
        Topic {
            activity: pick(&mut rng, ACTIVITIES),
            place: pick(&mut rng, PLACES),
            city: pick(&mut rng, CITIES),
        }
    }
}

/// One seed per (seed, stream, ordinal); SplitMix64 diffuses it.
fn mix(seed: u64, stream: u64, ordinal: u64) -> u64 {
    seed ^ stream.wrapping_mul(0xA076_1D64_78BD_642F) ^ ordinal.wrapping_mul(0xE703_7ED1_A0B4_28DB)
}

fn tag(key: &str, value: &str) -> MemoryTag {
    MemoryTag {
        key: key.into(),
        value: value.into(),
    }
}

fn pick(rng: &mut SplitMix64, words: &'static [&'static str]) -> &'static str {
    words[(rng.next_u64() % words.len() as u64) as usize]
}

/// Three times in four the topic's word, else any.
fn topical(rng: &mut SplitMix64, topic: &'static str, words: &'static [&'static str]) -> &'static str {
    match rng.next_u64() % 4 {
        0 => pick(rng, words),
        _ => topic,
    }
}

/// What a cluster's memories mostly speak of.
#[derive(Debug, Clone, Copy)]
struct Topic {
    activity: &'static str,
    place: &'static str,
    city: &'static str,
}

/// The words of one memory or query.
#[derive(Debug, Clone, Copy)]
struct Scene {
    person: &'static str,
    friend: &'static str,
    activity: &'static str,
    place: &'static str,
    city: &'static str,
    object: &'static str,
    reaction: &'static str,
    later_month: &'static str,
    day_of_year: u32,
}

impl Scene {
    fn draw(rng: &mut SplitMix64, topic: Topic) -> Self {
        Self {
            person: pick(rng, PEOPLE),
            friend: pick(rng, PEOPLE),
            activity: topical(rng, topic.activity, ACTIVITIES),
            place: topical(rng, topic.place, PLACES),
            city: topical(rng, topic.city, CITIES),
            object: pick(rng, OBJECTS),
            reaction: pick(rng, REACTIONS),
            later_month: MONTHS[(rng.next_u64() % 12) as usize].0,
            day_of_year: (rng.next_u64() % DAYS_IN_YEAR) as u32,
        }
    }

    fn memory_text(&self, rng: &mut SplitMix64) -> String {
        let Self {
            person: p,
            friend: f,
            activity: a,
            place: pl,
            city: c,
            object: o,
            reaction: r,
            later_month: m2,
            day_of_year,
        } = *self;
        let (month, day) = month_day(day_of_year);
        let weekday = WEEKDAYS[((day_of_year + 6) % 7) as usize];
        match rng.next_u64() % 6 {
            0 => format!("On {weekday}, {month} {day}, {p} {a} at {pl} in {c} and {r}."),
            1 => format!("{p} told {f} that they {a} at {pl} in {c} last {weekday}; the {o} came along."),
            2 => format!("{month} {day}: {p} and {f} {a} near {pl} in {c}. {f} brought the {o}."),
            3 => format!("{p} remembers the {o} from {c}: on {month} {day} they {a} at {pl} and {r}."),
            4 => format!("Note from {weekday}: {p} {r} after they {a} at {pl}; {f} wants to go back to {c} in {m2}."),
            _ => format!("{p} asked {f} about the {o} they bought in {c} before they {a} at {pl} on {month} {day}."),
        }
    }

    /// A question about such a memory, written into `out` (cleared first).
    fn question(&self, rng: &mut SplitMix64, out: &mut String) {
        let Self {
            person: p,
            activity: a,
            place: pl,
            city: c,
            object: o,
            day_of_year,
            ..
        } = *self;
        let (month, day) = month_day(day_of_year);
        out.clear();
        let _ = match rng.next_u64() % 5 {
            0 => write!(out, "What happened when {p} {a} at {pl}?"),
            1 => write!(out, "Who {a} in {c} in {month}?"),
            2 => write!(out, "What did {p} say about the {o} from {c}?"),
            3 => write!(out, "Where was {p} on {month} {day}?"),
            _ => write!(out, "{p} {a} {pl} {c}"),
        };
    }
}

/// Milliseconds since the Unix epoch of 2023-01-01T00:00Z (a Sunday): the
/// corpus's year.
const YEAR_START_MS: i64 = 1_672_531_200_000;
const DAY_MS: i64 = 86_400_000;
/// 2023 is not a leap year.
const DAYS_IN_YEAR: u64 = 365;

/// Month and day of the month of day `day_of_year` (0-based) of 2023.
fn month_day(day_of_year: u32) -> (&'static str, u32) {
    let mut left = day_of_year;
    for (name, days) in MONTHS {
        if left < days {
            return (name, left + 1);
        }
        left -= days;
    }
    ("December", 31)
}

const MONTHS: [(&str, u32); 12] = [
    ("January", 31),
    ("February", 28),
    ("March", 31),
    ("April", 30),
    ("May", 31),
    ("June", 30),
    ("July", 31),
    ("August", 31),
    ("September", 30),
    ("October", 31),
    ("November", 30),
    ("December", 31),
];

/// Monday first: day 0 of 2023 (a Sunday) is index 6.
const WEEKDAYS: [&str; 7] = [
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
    "Sunday",
];

const PEOPLE: &[&str] = &[
    "Alice", "Bruno", "Chiara", "Dmitri", "Elena", "Farah", "Gustav", "Hana", "Ibrahim", "Jonas", "Keiko", "Luca",
    "Maya", "Nikhil", "Olga", "Pedro", "Quentin", "Rosa", "Samir", "Tamsin", "Umar", "Valeria", "Wen", "Ximena",
    "Yusuf", "Zara", "Amara", "Bjorn", "Camille", "Diego", "Esther", "Felix", "Greta", "Hugo", "Ines", "Jamal",
    "Kirsten", "Leon", "Mirela", "Noah", "Oskar", "Priya", "Rafael", "Sofia", "Tobias", "Uma", "Viktor", "Yara",
];

const PLACES: &[&str] = &[
    "the farmers market",
    "the climbing gym",
    "the public library",
    "the harbour",
    "the botanical garden",
    "the jazz club",
    "the community pool",
    "the old cinema",
    "the ramen bar",
    "the art museum",
    "the corner bakery",
    "the football pitch",
    "the yoga studio",
    "the ski lodge",
    "the night market",
    "the bookshop cafe",
    "the science centre",
    "the vineyard",
    "the lakeside campsite",
    "the pottery workshop",
    "the train station",
    "the rooftop terrace",
    "the dog park",
    "the concert hall",
    "the bike repair shop",
    "the chess club",
    "the beach",
    "the hospital",
    "the office",
    "the university lab",
    "the music school",
    "the flea market",
];

const CITIES: &[&str] = &[
    "Lisbon",
    "Osaka",
    "Toronto",
    "Nairobi",
    "Krakow",
    "Melbourne",
    "Bergen",
    "Valparaiso",
    "Marseille",
    "Hanoi",
    "Austin",
    "Edinburgh",
    "Seville",
    "Tbilisi",
    "Reykjavik",
    "Montreal",
    "Accra",
    "Kyoto",
    "Porto",
    "Vienna",
    "Dublin",
    "Cusco",
    "Zagreb",
    "Boulder",
];

const ACTIVITIES: &[&str] = &[
    "went hiking",
    "tried wheel pottery",
    "ran a half marathon",
    "adopted a rescue puppy",
    "played chess",
    "painted a watercolour",
    "baked sourdough bread",
    "went sailing",
    "learned to surf",
    "volunteered at a shelter",
    "sang in a choir",
    "went birdwatching",
    "repaired an old bicycle",
    "started a vegetable garden",
    "took a salsa class",
    "wrote a short story",
    "practised the violin",
    "went camping",
    "visited an exhibition",
    "cooked a curry",
    "played football",
    "went ice skating",
    "took photographs",
    "read a mystery novel",
    "went kayaking",
    "built a bookshelf",
    "studied for an exam",
    "celebrated a birthday",
    "attended a wedding",
    "interviewed for a job",
    "went to a concert",
    "knitted a scarf",
];

const OBJECTS: &[&str] = &[
    "new camera",
    "blue tent",
    "grandmother's recipe",
    "vintage guitar",
    "train tickets",
    "photo album",
    "running shoes",
    "birthday cake",
    "sketchbook",
    "telescope",
    "house plants",
    "wedding invitation",
    "job offer",
    "concert tickets",
    "puppy's collar",
    "hiking boots",
    "old letters",
    "garden tools",
    "violin bow",
    "city map",
    "paper lanterns",
    "surfboard",
    "chess set",
    "lost keys",
    "library card",
    "scholarship letter",
    "family portrait",
    "wool scarf",
    "coffee grinder",
    "bike helmet",
    "passport",
    "poetry book",
];

const REACTIONS: &[&str] = &[
    "was thrilled",
    "felt nervous",
    "laughed a lot",
    "was exhausted but happy",
    "felt proud",
    "was surprised",
    "got a little lost",
    "made new friends",
    "wants to do it again",
    "felt calm",
    "was soaked by the rain",
    "lost track of time",
    "took lots of notes",
    "was late",
    "felt homesick",
    "could not stop smiling",
];

#[cfg(test)]
mod tests {
    use super::*;

    fn cosine(a: &[f32], b: &[f32]) -> f64 {
        a.iter().zip(b).map(|(x, y)| f64::from(*x) * f64::from(*y)).sum()
    }

    #[test]
    fn the_corpus_is_the_same_for_a_seed_and_differs_between_seeds() {
        let (a, b, other) = (Corpus::new(7, 32, 8), Corpus::new(7, 32, 8), Corpus::new(8, 32, 8));
        for ordinal in [0, 1, 999, 123_456] {
            assert_eq!(a.memory(ordinal), b.memory(ordinal));
            assert_ne!(a.memory(ordinal).vector, other.memory(ordinal).vector);
        }
        let (mut qa, mut qb) = (RecallRequest::default(), RecallRequest::default());
        assert_eq!(a.fill_query(3, 42, &mut qa), b.fill_query(3, 42, &mut qb));
        assert_eq!(qa, qb);
        assert_eq!(a.memory(5).key.as_deref(), Some("bench-5"));
    }

    #[test]
    fn vectors_are_unit_length_and_clustered() {
        let corpus = Corpus::new(DEFAULT_SEED, 64, 8);
        let memories: Vec<(usize, Vec<f32>)> = (0..400)
            .map(|ordinal| {
                (
                    corpus.cluster_of(ordinal),
                    corpus.memory(ordinal).vector.expect("a vector"),
                )
            })
            .collect();
        assert!(
            memories
                .iter()
                .all(|(_, v)| v.len() == 64 && (cosine(v, v) - 1.0).abs() < 1e-4)
        );
        let (mut same, mut other) = ((0.0, 0), (0.0, 0));
        for (i, (ci, vi)) in memories.iter().enumerate() {
            for (cj, vj) in &memories[i + 1..] {
                let bucket = if ci == cj { &mut same } else { &mut other };
                *bucket = (bucket.0 + cosine(vi, vj), bucket.1 + 1);
            }
        }
        let (same, other) = (same.0 / f64::from(same.1), other.0 / f64::from(other.1));
        assert!(
            same > 0.35 && other.abs() < 0.1,
            "same cluster {same:.3}, others {other:.3}"
        );
    }

    #[test]
    fn a_query_vector_is_nearest_its_own_cluster() {
        let corpus = Corpus::new(DEFAULT_SEED, 64, 8);
        let mut query = RecallRequest::default();
        for n in 0..20 {
            let cluster = corpus.fill_query(1, n, &mut query);
            let vector = query.vector.as_deref().expect("a vector");
            let mean_to = |wanted: bool| {
                let near: Vec<f64> = (0..400)
                    .filter(|&o| (corpus.cluster_of(o) == cluster) == wanted)
                    .map(|o| cosine(vector, &corpus.memory(o).vector.expect("a vector")))
                    .collect();
                near.iter().sum::<f64>() / near.len() as f64
            };
            assert!(mean_to(true) > mean_to(false) + 0.2, "query {n}");
        }
    }

    #[test]
    fn texts_vary_fit_their_frames_and_speak_of_the_vocabulary() {
        let corpus = Corpus::new(DEFAULT_SEED, 8, DEFAULT_CLUSTERS);
        let texts: std::collections::HashSet<String> = (0..2000).map(|o| corpus.memory(o).text).collect();
        assert!(texts.len() > 1990, "only {} distinct texts of 2000", texts.len());
        assert!(texts.iter().all(|t| t.len() <= MAX_TEXT_BYTES));
        let mut query = RecallRequest::default();
        for n in 0..500 {
            corpus.fill_query(0, n, &mut query);
            let text = query.text.as_deref().expect("a text");
            assert!(text.len() <= MAX_TEXT_BYTES);
            assert!(PEOPLE.iter().chain(CITIES).any(|word| text.contains(word)), "{text}");
        }
    }

    #[test]
    fn a_memory_is_created_on_the_day_its_text_names() {
        let corpus = Corpus::new(DEFAULT_SEED, 8, 4);
        for ordinal in 0..200 {
            let memory = corpus.memory(ordinal);
            let day = (memory.created_at_ms.expect("a date") - YEAR_START_MS) / DAY_MS;
            let day = u32::try_from(day).expect("in 2023");
            let ((month, day_of_month), weekday) = (month_day(day), WEEKDAYS[((day + 6) % 7) as usize]);
            let text = &memory.text;
            assert!(
                text.contains(&format!("{month} {day_of_month}")) || text.contains(weekday),
                "{text}"
            );
        }
        assert_eq!(month_day(0), ("January", 1));
        assert_eq!(month_day(59), ("March", 1));
        assert_eq!(month_day(364), ("December", 31));
    }

    #[test]
    fn routes_parse_by_name_and_a_wrong_name_lists_them() {
        for route in RecallRoute::ALL {
            assert_eq!(route.name().parse::<RecallRoute>().expect("a route"), route);
        }
        let error = "fast".parse::<RecallRoute>().expect_err("not a route").to_string();
        assert!(
            error.contains("cache, smart, full or max") && error.contains("`fast`"),
            "{error}"
        );
    }

    #[test]
    fn option_errors_name_the_flag_and_the_value() {
        let mut config = RecallConfig::new("/nonexistent");
        let error = |config: &mut RecallConfig, flag: &str, value: &str| {
            config.set_option(flag, value).expect_err("refused").to_string()
        };
        assert!(error(&mut config, "clients", "many").contains("--clients takes a whole number, not `many`"));
        assert!(error(&mut config, "duration", "-1").contains("--duration takes seconds"));
        assert!(error(&mut config, "duration", "soon").contains("not `soon`"));
        assert!(error(&mut config, "depth", "4").contains("recall has no option --depth"));
        config.set_option("route", "max").expect("a route");
        config.set_option("duration", "0.5").expect("seconds");
        config.set_option("k", "20").expect("a number");
        assert_eq!(
            (config.route, config.duration, config.k),
            (RecallRoute::Max, Duration::from_millis(500), 20)
        );
    }

    #[test]
    fn out_of_range_parameters_are_named() {
        let base = RecallConfig::new("/nonexistent");
        assert!(base.validate().is_ok());
        for (broken, flag) in [
            (
                RecallConfig {
                    clients: 0,
                    ..base.clone()
                },
                "--clients must be 1..=4096, not 0",
            ),
            (
                RecallConfig {
                    memories: 0,
                    ..base.clone()
                },
                "--memories",
            ),
            (
                RecallConfig {
                    dim: 5000,
                    ..base.clone()
                },
                "--dim must be 1..=4096, not 5000",
            ),
            (RecallConfig { k: 0, ..base.clone() }, "--k"),
            (
                RecallConfig {
                    clusters: 0,
                    ..base.clone()
                },
                "--clusters",
            ),
            (
                RecallConfig {
                    duration: Duration::ZERO,
                    ..base.clone()
                },
                "--duration",
            ),
        ] {
            let error = broken.validate().expect_err("refused").to_string();
            assert!(error.contains(flag), "{error}");
        }
    }

    #[test]
    fn query_rings_hold_two_frames_and_stay_small() {
        assert_eq!(query_ring_bytes(384, DEFAULT_K), MIN_QUERY_RING_BYTES as u32);
        let big = query_ring_bytes(MAX_DIM, MAX_K);
        assert!(u64::from(big) >= 2 * frame_footprint(u64::from(MAX_K) * PER_HIT_BYTES));
        assert!(big <= MAX_RING_BYTES);
    }

    fn outcome(rtt_ns: &[u64], errors: u64) -> ClientOutcome {
        ClientOutcome {
            requests: rtt_ns.len() as u64 + errors,
            rtt_ns: rtt_ns.to_vec(),
            server_ns: rtt_ns.iter().map(|ns| ns / 2).collect(),
            queued_ns: rtt_ns.iter().map(|_| 7).collect(),
            max_rtt_ns: rtt_ns.iter().copied().max().unwrap_or(0),
            errors,
            first_error: (errors > 0).then(|| "error 200: not available".to_owned()),
            hits: rtt_ns.len() as u64 * 8,
            ..ClientOutcome::default()
        }
    }

    #[test]
    fn the_summary_merges_clients_and_finds_the_starved_one() {
        let floor = FloorReport {
            round_trips: 1,
            eventfd_p50_ns: 1,
            eventfd_p99_ns: 1,
            socketpair_p50_ns: 1,
            socketpair_p99_ns: 1,
            bell_futex_p50_ns: 3000,
            bell_futex_p99_ns: 9000,
        };
        let slow_floor = FloorReport {
            bell_futex_p50_ns: 40_000,
            bell_futex_p99_ns: 2_000_000,
            ..floor
        };
        let steady: Vec<u64> = (1..=1000).collect();
        let mut slow = steady.clone();
        slow[0] = 100_000; // one answer 100x the run's p99
        let measured = Measured {
            clients: vec![outcome(&steady, 0), outcome(&slow, 3), outcome(&[], 0)],
            elapsed: Duration::from_secs(2),
        };
        let r = summarise(&RecallConfig::new("/nonexistent"), 0.0, [&slow_floor, &floor], measured);
        assert_eq!((r.requests, r.errors, r.starved_clients), (2003, 3, 2));
        // Merged: 1 once, 2..=1000 twice, 100,000 once; nearest rank 1,000 of 2,000.
        assert_eq!((r.rtt_p50_ns, r.rtt_max_ns, r.server_p50_ns), (501, 100_000, 250));
        assert_eq!((r.queued_p50_ns, r.queued_p99_ns), (7, 7));
        assert_eq!(r.client_max_rtt_ns, [1000, 100_000, 0]);
        assert_eq!((r.client_requests_min, r.client_requests_max), (0, 1003));
        assert_eq!(r.first_error.as_deref(), Some("error 200: not available"));
        assert!((r.throughput_per_s - 1000.0).abs() < 1e-9 && (r.mean_hits - 8.0).abs() < 1e-9);
        // The lower floor, with its own p99; both medians reported.
        assert_eq!((r.floor_rtt_p50_ns, r.floor_rtt_p99_ns), (3000, 9000));
        assert_eq!((r.floor_before_p50_ns, r.floor_after_p50_ns), (40_000, 3000));
    }
}
