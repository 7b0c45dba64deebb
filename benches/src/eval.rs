//! `nexus-bench eval locomo`: retrieval quality through the daemon, on any file in
//! LoCoMo's original JSON format.
//!
//! Every dialog turn becomes a memory (namespace = the sample's id, key = its dialog
//! id so a re-run replaces instead of duplicating, created at its session's date,
//! text only so the daemon's built-in embedder supplies the vector). Then every
//! question of categories 1–4 is asked in its conversation once per engine
//! (`lexical`, `dense`) and once through the smart route (`smart`), all with the
//! same k, and the evidence turns in each top k are counted: recall@k (the fraction
//! of a question's evidence found) and hit@k (at least one evidence turn found),
//! overall and per category.
//!
//! Reading the file is pure and unit-tested: evidence ids as real files write them
//! (`"D8:6; D9:17"`, `"D:11:26"`, `"D02:05"`) are normalised and those naming no
//! turn dropped; session dates are parsed without a date crate. The daemon is
//! reached through [`EvalTarget`], so the counting is checked in unit tests with a
//! stand-in whose rankings are known.
//!
//! What it does not do: judge answers (there is no reader model), forget anything
//! (other namespaces are never touched; a re-run upserts the same keys), or measure
//! speed (the p50 it prints is the client's round trip, a side note: `ping` and
//! `remember` are the speed benchmarks).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nexus_client::wire::{EngineChoice, MemoryInput, RecallRequest, RequestBody, ResponseBody, Route, Status};
use nexus_client::{Client, ClientError, ConnectOptions};
use serde::ser::SerializeMap;
use serde::{Deserialize, Serialize, Serializer};
use serde_json::Value;

use crate::report::{grouped, percentile, ratio};

/// The k of every recall unless `--k-max` says otherwise: the largest cut-off reported.
pub const DEFAULT_K_MAX: u32 = 20;

/// The cut-offs the issue reports; those above the k asked are left out, and a k
/// asked that is none of them is reported too.
pub const CUTOFFS: [u32; 3] = [5, 10, 20];

/// Largest k: the daemon's default `Limits::max_k`.
pub const MAX_K: u32 = 1000;

/// The categories asked: 1 multi-hop, 2 temporal, 3 open-domain, 4 single-hop.
/// Category 5 (adversarial) has no answer in the conversation, so retrieval
/// scores leave it out (../shared/data/README.md).
pub const ASKED_CATEGORIES: RangeInclusive<u64> = 1..=4;

/// Memories per Remember: a tenth of the daemon's default `Limits::max_batch`
/// (10,000), so a daemon configured tighter still takes them.
const MAX_BATCH_MEMORIES: usize = 1000;

/// Estimated bytes of one Remember: well under the 2 MiB frame of
/// [`RING_BYTES`] rings, so the estimate's slack (rkyv padding) never matters.
const MAX_BATCH_BYTES: usize = 512 * 1024;

/// Estimated archived bytes of one memory beside its strings (lengths, options, padding).
const MEMORY_OVERHEAD_BYTES: usize = 64;

/// A memory's longest text: the daemon's default `Limits::max_text_bytes`.
/// A longer turn is cut at a character boundary and counted in the report.
pub const MAX_TEXT_BYTES: usize = 64 * 1024;

/// A recall's longest query: the daemon's default `Limits::max_query_bytes`.
/// A longer question is skipped (and counted) rather than refused mid-run.
pub const MAX_QUERY_BYTES: usize = 64 * 1024;

/// Both rings of the eval's connection: a frame of half a ring (2 MiB) holds a
/// full batch and an answer of 20 memories of the longest text (20 × 64 KiB).
const RING_BYTES: u32 = 4 << 20;

/// Timeout of one call: a batch of a thousand memories made durable with
/// fdatasync on a slow disk, or a recall in a debug build, stays far below it.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(60);

/// The text of a memory: `<speaker>: <text>`, as the developers' turn files write it.
const SPEAKER_SEPARATOR: &str = ": ";

/// What to evaluate.
#[derive(Debug, Clone)]
pub struct EvalConfig {
    /// The daemon's socket.
    pub socket: PathBuf,
    /// The LoCoMo-format JSON file.
    pub data: PathBuf,
    /// The k of every recall (the largest cut-off reported).
    pub k_max: u32,
}

impl EvalConfig {
    /// An eval of `data` through the daemon on `socket`, k = [`DEFAULT_K_MAX`].
    pub fn new(socket: impl Into<PathBuf>, data: impl Into<PathBuf>) -> Self {
        Self {
            socket: socket.into(),
            data: data.into(),
            k_max: DEFAULT_K_MAX,
        }
    }
}

/// Reads the file, connects to the daemon, writes every turn and asks every question.
pub fn run_locomo(config: &EvalConfig) -> Result<EvalReport, EvalError> {
    let dataset = load_locomo(&config.data)?;
    let mut target = DaemonTarget::connect(&config.socket)?;
    evaluate(&mut target, &dataset, config.k_max)
}

/// Everything an eval can fail with; each names the sample or step concerned.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EvalError {
    /// The data file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not a JSON array of LoCoMo samples.
    #[error("not a LoCoMo file (a JSON array of {{sample_id, conversation, qa}}): {0}")]
    NotLocomo(#[source] serde_json::Error),
    /// A session is not an array of `{speaker, dia_id, text}` turns.
    #[error("sample {sample}: {field} is not a list of {{speaker, dia_id, text}} turns: {source}")]
    BadSession {
        /// The sample's id.
        sample: String,
        /// The session's field (`session_3`).
        field: String,
        /// What serde found.
        #[source]
        source: serde_json::Error,
    },
    /// A session with turns has no date.
    #[error("sample {sample}: {field} is missing, and its session has turns")]
    MissingDate {
        /// The sample's id.
        sample: String,
        /// The date's field (`session_3_date_time`).
        field: String,
    },
    /// A session's date could not be parsed.
    #[error("sample {sample}: {field} {value} is not a date like \"1:56 pm on 8 May, 2023\": {reason}")]
    BadDate {
        /// The sample's id.
        sample: String,
        /// The date's field (`session_3_date_time`).
        field: String,
        /// The value found, as JSON.
        value: String,
        /// What was wrong with it.
        reason: DateError,
    },
    /// A question's category is not a number.
    #[error("sample {sample}: qa[{index}] has category {value}, not a number")]
    BadCategory {
        /// The sample's id.
        sample: String,
        /// The question's position in `qa`.
        index: usize,
        /// The value found, as JSON.
        value: String,
    },
    /// An eval parameter is out of range.
    #[error("invalid eval parameter: {0}")]
    InvalidArgument(String),
    /// A client call failed.
    #[error("{context}: {source}")]
    Client {
        /// The step ("connect", "remember sample conv-26", ...).
        context: String,
        /// The client's error.
        #[source]
        source: ClientError,
    },
    /// The daemon answered with an error status.
    #[error("{context}: nexusd answered error {code}: {message}")]
    Refused {
        /// The step.
        context: String,
        /// The wire error code.
        code: u32,
        /// The daemon's explanation.
        message: String,
    },
    /// The daemon's answer does not fit the request.
    #[error("{context}: {detail}")]
    BadAnswer {
        /// The step.
        context: String,
        /// What was wrong.
        detail: String,
    },
}

/// Why a session date could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DateError {
    /// The field is not a string.
    #[error("not a string")]
    NotText,
    /// No month name (`May`, `Sept`, `December`).
    #[error("no month name")]
    NoMonth,
    /// No day of the month.
    #[error("no day of the month")]
    NoDay,
    /// No four-digit year.
    #[error("no four-digit year")]
    NoYear,
    /// The time of day is not `H:MM` (1–12 with am/pm, 0–23 without).
    #[error("time {0:?} is not H:MM (1-12 with am/pm, 0-23 without)")]
    BadTime(String),
    /// A word that is no part of such a date, or a part given twice.
    #[error("{0:?} is no part of a date, or repeats one")]
    Unexpected(String),
    /// The day does not exist in that month.
    #[error("{year}-{month:02} has no day {day}")]
    NoSuchDay {
        /// The year.
        year: i64,
        /// The month, 1–12.
        month: u32,
        /// The day given.
        day: u32,
    },
}

/// A LoCoMo file, ready to be written and asked.
#[derive(Debug, Clone, PartialEq)]
pub struct Dataset {
    /// The samples, in file order.
    pub conversations: Vec<Conversation>,
}

/// One sample: its turns and the questions that will be asked.
#[derive(Debug, Clone, PartialEq)]
pub struct Conversation {
    /// `sample_id`: the namespace of its memories.
    pub sample_id: String,
    /// Every turn of every session, sessions in number order.
    pub turns: Vec<Turn>,
    /// Questions of categories 1–4 with at least one evidence turn.
    pub questions: Vec<Question>,
    /// Questions of categories 1–4 not asked: no evidence id resolves to a
    /// turn, or the question text is empty or longer than [`MAX_QUERY_BYTES`].
    pub skipped_questions: u64,
    /// Turns whose text was cut to [`MAX_TEXT_BYTES`].
    pub truncated_turns: u64,
}

/// One dialog turn, as it is written.
#[derive(Debug, Clone, PartialEq)]
pub struct Turn {
    /// Its dialog id, normalised (`D1:3`); the memory's key.
    pub dia_id: String,
    /// `<speaker>: <text>`.
    pub text: String,
    /// Its session's date, ms since the Unix epoch (UTC).
    pub created_at_ms: i64,
}

/// One question, as it is asked.
#[derive(Debug, Clone, PartialEq)]
pub struct Question {
    /// 1–4.
    pub category: u64,
    /// The question.
    pub text: String,
    /// Normalised dialog ids of its evidence turns, each once, all resolving.
    pub evidence: Vec<String>,
}

/// A dialog id `D<session>:<turn>`, numbers without padding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DiaId {
    /// The session number.
    pub session: u32,
    /// The turn number within the session.
    pub turn: u32,
}

impl std::fmt::Display for DiaId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "D{}:{}", self.session, self.turn)
    }
}

/// How a question is asked: one engine alone, or a route fusing them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `engine: Lexical` (BM25).
    Lexical,
    /// `engine: Dense` (ANN over the built-in embeddings).
    Dense,
    /// No route, no engine: the router picks (the cache may answer).
    Auto,
    /// `route: SmartRouting`: lexical + dense, light fusion.
    Smart,
    /// `route: FullPipeline`: every engine and factor.
    Full,
    /// `route: MaximumIntelligence`: full, plus query expansion and exact re-rank.
    Max,
}

impl Mode {
    /// Every mode, in report order.
    pub const ALL: [Mode; 6] = [
        Mode::Lexical,
        Mode::Dense,
        Mode::Auto,
        Mode::Smart,
        Mode::Full,
        Mode::Max,
    ];

    /// Its name in the report.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Lexical => "lexical",
            Mode::Dense => "dense",
            Mode::Auto => "auto",
            Mode::Smart => "smart",
            Mode::Full => "full",
            Mode::Max => "max",
        }
    }

    fn index(self) -> usize {
        self as usize
    }

    /// The recall of `question` in `namespace` this mode sends.
    pub fn request(self, namespace: &str, question: &str, k: u32) -> RecallRequest {
        let (engine, route) = match self {
            Mode::Lexical => (Some(EngineChoice::Lexical), None),
            Mode::Dense => (Some(EngineChoice::Dense), None),
            Mode::Auto => (None, None),
            Mode::Smart => (None, Some(Route::SmartRouting)),
            Mode::Full => (None, Some(Route::FullPipeline)),
            Mode::Max => (None, Some(Route::MaximumIntelligence)),
        };
        RecallRequest {
            namespace: namespace.to_owned(),
            text: Some(question.to_owned()),
            k,
            route,
            engine,
            ..RecallRequest::default()
        }
    }
}

/// The eval's result; `--json` prints it as one object.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EvalReport {
    /// Questions asked (categories 1–4 with evidence), per mode.
    pub questions: u64,
    /// Questions of categories 1–4 not asked (no resolvable evidence, or unusable text).
    pub skipped_questions: u64,
    /// Mean recall@k, by mode name then by k (`"5"`, `"10"`, `"20"`).
    pub recall_at: Keyed<Keyed<f64>>,
    /// Fraction of questions with an evidence turn in the top k, same keys.
    pub hit_at: Keyed<Keyed<f64>>,
    /// The same figures per category (`"1"` … `"4"`), for the categories asked.
    pub per_category: Keyed<CategoryReport>,
    /// Answers with status `Degraded` (an engine was missing), by mode name.
    pub degraded_answers: Keyed<u64>,
    /// Memories written (one per turn).
    pub memories: u64,
    /// Turns cut to [`MAX_TEXT_BYTES`].
    pub truncated_turns: u64,
    /// Wall time of every Remember, seconds.
    pub write_seconds: f64,
    /// Median recall round trip seen by the client, µs, by mode name.
    pub query_p50_us: Keyed<f64>,
}

/// One category's figures.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CategoryReport {
    /// Questions of this category asked.
    pub questions: u64,
    /// Mean recall@k, by mode name then by k.
    pub recall_at: Keyed<Keyed<f64>>,
    /// Hit rate at k, by mode name then by k.
    pub hit_at: Keyed<Keyed<f64>>,
}

/// A JSON object whose keys keep their order (modes as asked, cut-offs
/// ascending), which a map sorted by string would not ("10" < "5").
#[derive(Debug, Clone, PartialEq)]
pub struct Keyed<V>(pub Vec<(String, V)>);

impl<V> Keyed<V> {
    /// The value under `key`.
    pub fn get(&self, key: &str) -> Option<&V> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }
}

impl<V: Serialize> Serialize for Keyed<V> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (key, value) in &self.0 {
            map.serialize_entry(key, value)?;
        }
        map.end()
    }
}

impl EvalReport {
    /// Mean recall@`k` of `mode` (`"lexical"`, `"dense"`, `"smart"`), if reported.
    pub fn recall(&self, mode: &str, k: u32) -> Option<f64> {
        self.recall_at.get(mode)?.get(&k.to_string()).copied()
    }

    /// Hit rate at `k` of `mode`, if reported.
    pub fn hit(&self, mode: &str, k: u32) -> Option<f64> {
        self.hit_at.get(mode)?.get(&k.to_string()).copied()
    }
}

/// Where the eval writes and asks: the daemon ([`DaemonTarget`]), or a
/// stand-in whose rankings a unit test knows.
pub trait EvalTarget {
    /// Stores one batch; returns the ids in order.
    fn remember(&mut self, memories: Vec<MemoryInput>) -> Result<Vec<u64>, EvalError>;
    /// Answers one recall.
    fn recall(&mut self, query: RecallRequest) -> Result<Answer, EvalError>;

    /// Waits until what was written is fully indexed (the daemon's ANN
    /// graph built), so the figures are the index's, not those of the
    /// exact scan of a tail not yet built.
    fn settle(&mut self) -> Result<(), EvalError> {
        Ok(())
    }
}

/// A recall's answer as the eval counts it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// The memories' ids, best first.
    pub ids: Vec<u64>,
    /// The status was `Degraded` (an engine was missing).
    pub degraded: bool,
}

/// The daemon, through one client connection.
pub struct DaemonTarget {
    client: Client,
}

impl DaemonTarget {
    /// Connects with rings sized for the eval's batches and answers.
    pub fn connect(socket: &Path) -> Result<Self, EvalError> {
        let options = ConnectOptions {
            name: "nexus-bench eval".into(),
            request_ring_bytes: RING_BYTES,
            response_ring_bytes: RING_BYTES,
            timeout: CALL_TIMEOUT,
            ..ConnectOptions::default()
        };
        let client = Client::connect_with(socket, options).map_err(|source| EvalError::Client {
            context: format!("connect to {}", socket.display()),
            source,
        })?;
        Ok(Self { client })
    }
}

/// Longest the daemon may take to build its graph after the writes.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(300);

impl EvalTarget for DaemonTarget {
    fn settle(&mut self) -> Result<(), EvalError> {
        let until = Instant::now() + SETTLE_TIMEOUT;
        loop {
            let stats = (self.client.stats()).map_err(|source| EvalError::Client {
                context: "Stats while waiting for the graph".into(),
                source,
            })?;
            let tail = ["dense_tail", "vector_tail"]
                .iter()
                .map(|name| nexus_client::counter(&stats, name).unwrap_or(0))
                .sum::<u64>();
            if tail == 0 {
                return Ok(());
            }
            if Instant::now() > until {
                return Err(EvalError::BadAnswer {
                    context: "waiting for the daemon's graph".into(),
                    detail: format!("{tail} vectors still outside the graph after {SETTLE_TIMEOUT:?}"),
                });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn remember(&mut self, memories: Vec<MemoryInput>) -> Result<Vec<u64>, EvalError> {
        let context = format!("remember {} turns in {}", memories.len(), namespace_of(&memories));
        self.client
            .remember(memories)
            .map_err(|source| EvalError::Client { context, source })
    }

    fn recall(&mut self, query: RecallRequest) -> Result<Answer, EvalError> {
        let context = format!("recall in {} ({:?}, {:?})", query.namespace, query.engine, query.route);
        let response = self
            .client
            .call(RequestBody::Recall(query), Some(CALL_TIMEOUT))
            .map_err(|source| EvalError::Client {
                context: context.clone(),
                source,
            })?;
        let degraded = match response.status {
            Status::Ok => false,
            Status::Degraded { .. } => true,
            Status::Error { code, message } => return Err(EvalError::Refused { context, code, message }),
        };
        match response.body {
            ResponseBody::Recalled(hits) => Ok(Answer {
                ids: hits.iter().map(|hit| hit.id).collect(),
                degraded,
            }),
            other => Err(EvalError::BadAnswer {
                context,
                detail: format!("answered {other:?} to a recall"),
            }),
        }
    }
}

fn namespace_of(memories: &[MemoryInput]) -> &str {
    memories.first().map_or("", |memory| memory.namespace.as_str())
}

/// Writes every turn of `dataset` to `target`, asks every question in every
/// mode with k = `k_max`, and counts the evidence found.
pub fn evaluate(target: &mut impl EvalTarget, dataset: &Dataset, k_max: u32) -> Result<EvalReport, EvalError> {
    let cutoffs = cutoffs(k_max)?;
    let started = Instant::now();
    let dia_ids_by_id = dataset
        .conversations
        .iter()
        .map(|conversation| write_conversation(target, conversation))
        .collect::<Result<Vec<_>, _>>()?;
    let write_seconds = started.elapsed().as_secs_f64();
    target.settle()?;
    let mut scores = Scores::new(cutoffs);
    for (conversation, dia_ids) in dataset.conversations.iter().zip(&dia_ids_by_id) {
        for question in &conversation.questions {
            for mode in Mode::ALL {
                let request = mode.request(&conversation.sample_id, &question.text, k_max);
                ask(target, request, dia_ids, |ranked, degraded, latency_ns| {
                    scores.add(mode, question, ranked, degraded, latency_ns);
                })?;
            }
        }
    }
    Ok(scores.report(dataset, write_seconds))
}

/// Memory id → the dialog ids of the turns it holds: one, unless the daemon
/// answered several turns of a batch with one memory (a repeated key, or a
/// near-duplicate policy that merges), and then finding it finds each of them.
type DiaIds = HashMap<u64, Vec<String>>;

/// Sends one recall and hands `count` the dialog ids of its hits, best first
/// (none for a memory this eval did not write), whether it was degraded, and its round trip.
fn ask(
    target: &mut impl EvalTarget,
    request: RecallRequest,
    dia_ids: &DiaIds,
    count: impl FnOnce(&[&[String]], bool, u64),
) -> Result<(), EvalError> {
    let asked = Instant::now();
    let answer = target.recall(request)?;
    let latency_ns = u64::try_from(asked.elapsed().as_nanos()).unwrap_or(u64::MAX);
    let ranked: Vec<&[String]> = answer
        .ids
        .iter()
        .map(|id| dia_ids.get(id).map_or(&[][..], Vec::as_slice))
        .collect();
    count(&ranked, answer.degraded, latency_ns);
    Ok(())
}

/// The cut-offs reported for recalls of `k_max`.
fn cutoffs(k_max: u32) -> Result<Vec<u32>, EvalError> {
    if !(1..=MAX_K).contains(&k_max) {
        return Err(EvalError::InvalidArgument(format!("k {k_max} is not in 1..={MAX_K}")));
    }
    let mut cutoffs: Vec<u32> = CUTOFFS.into_iter().filter(|&k| k <= k_max).collect();
    if !cutoffs.contains(&k_max) {
        cutoffs.push(k_max);
    }
    Ok(cutoffs)
}

/// Writes one conversation's turns in batches; returns memory id → dialog ids.
fn write_conversation(target: &mut impl EvalTarget, conversation: &Conversation) -> Result<DiaIds, EvalError> {
    let mut dia_ids = DiaIds::with_capacity(conversation.turns.len());
    for batch in batches(&conversation.turns, &conversation.sample_id) {
        let memories: Vec<MemoryInput> = batch.iter().map(|turn| memory(&conversation.sample_id, turn)).collect();
        let ids = target.remember(memories)?;
        if ids.len() != batch.len() {
            return Err(EvalError::BadAnswer {
                context: format!("remember turns of {}", conversation.sample_id),
                detail: format!("{} ids for {} memories", ids.len(), batch.len()),
            });
        }
        for (id, turn) in ids.into_iter().zip(batch) {
            dia_ids.entry(id).or_default().push(turn.dia_id.clone());
        }
    }
    Ok(dia_ids)
}

/// Consecutive runs of turns within [`MAX_BATCH_MEMORIES`] and [`MAX_BATCH_BYTES`].
fn batches<'a>(turns: &'a [Turn], namespace: &str) -> Vec<&'a [Turn]> {
    let mut batches = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    for (index, turn) in turns.iter().enumerate() {
        let turn_bytes = turn.text.len() + turn.dia_id.len() + namespace.len() + MEMORY_OVERHEAD_BYTES;
        let full = index - start == MAX_BATCH_MEMORIES || bytes + turn_bytes > MAX_BATCH_BYTES;
        if full && index > start {
            batches.push(&turns[start..index]);
            (start, bytes) = (index, 0);
        }
        bytes += turn_bytes;
    }
    if start < turns.len() {
        batches.push(&turns[start..]);
    }
    batches
}

/// The memory of one turn: keyed by its dialog id, dated by its session, no vector.
fn memory(namespace: &str, turn: &Turn) -> MemoryInput {
    MemoryInput {
        key: Some(turn.dia_id.clone()),
        namespace: namespace.to_owned(),
        text: turn.text.clone(),
        created_at_ms: Some(turn.created_at_ms),
        // Neutral weight, as every other writer of tests and benchmarks uses.
        importance: 1.0,
        ..MemoryInput::default()
    }
}

/// Evidence found per mode and category, and the answers' latencies.
struct Scores {
    cutoffs: Vec<u32>,
    /// category → one tally per mode.
    by_category: BTreeMap<u64, Vec<Tally>>,
    degraded: [u64; Mode::ALL.len()],
    latencies_ns: [Vec<u64>; Mode::ALL.len()],
}

/// Sums over the questions of one mode and category.
#[derive(Debug, Clone, Default)]
struct Tally {
    questions: u64,
    /// Per cut-off: the sum of the questions' recall.
    recall_sum: Vec<f64>,
    /// Per cut-off: questions with an evidence turn found.
    hits: Vec<u64>,
}

impl Scores {
    fn new(cutoffs: Vec<u32>) -> Self {
        Self {
            cutoffs,
            by_category: BTreeMap::new(),
            degraded: [0; Mode::ALL.len()],
            latencies_ns: Default::default(),
        }
    }

    /// Counts one answer; `ranked` holds the dialog ids of each hit, best first.
    fn add(&mut self, mode: Mode, question: &Question, ranked: &[&[String]], degraded: bool, latency_ns: u64) {
        let empty = Tally::new(self.cutoffs.len());
        let tallies = self
            .by_category
            .entry(question.category)
            .or_insert_with(|| vec![empty; Mode::ALL.len()]);
        let tally = &mut tallies[mode.index()];
        tally.questions += 1;
        for (slot, &cutoff) in self.cutoffs.iter().enumerate() {
            let found = evidence_found(ranked, &question.evidence, cutoff as usize);
            tally.recall_sum[slot] += found as f64 / question.evidence.len() as f64;
            tally.hits[slot] += u64::from(found > 0);
        }
        self.degraded[mode.index()] += u64::from(degraded);
        self.latencies_ns[mode.index()].push(latency_ns);
    }

    fn report(mut self, dataset: &Dataset, write_seconds: f64) -> EvalReport {
        let overall = self.overall();
        let per_category = self
            .by_category
            .iter()
            .map(|(category, tallies)| (category.to_string(), self.category_report(tallies)))
            .collect();
        let conversations = &dataset.conversations;
        EvalReport {
            questions: overall[Mode::Lexical.index()].questions,
            skipped_questions: conversations.iter().map(|c| c.skipped_questions).sum(),
            recall_at: self.by_mode(&overall, Tally::recall_at),
            hit_at: self.by_mode(&overall, Tally::hit_at),
            per_category: Keyed(per_category),
            degraded_answers: Keyed(
                Mode::ALL
                    .map(|m| (m.name().to_owned(), self.degraded[m.index()]))
                    .into(),
            ),
            memories: conversations.iter().map(|c| c.turns.len() as u64).sum(),
            truncated_turns: conversations.iter().map(|c| c.truncated_turns).sum(),
            write_seconds,
            query_p50_us: Keyed(Mode::ALL.map(|m| (m.name().to_owned(), self.p50_us(m))).into()),
        }
    }

    /// One tally per mode, summed over the categories.
    fn overall(&self) -> Vec<Tally> {
        let mut overall = vec![Tally::new(self.cutoffs.len()); Mode::ALL.len()];
        for tallies in self.by_category.values() {
            for (sum, tally) in overall.iter_mut().zip(tallies) {
                sum.merge(tally);
            }
        }
        overall
    }

    fn category_report(&self, tallies: &[Tally]) -> CategoryReport {
        CategoryReport {
            questions: tallies[Mode::Lexical.index()].questions,
            recall_at: self.by_mode(tallies, Tally::recall_at),
            hit_at: self.by_mode(tallies, Tally::hit_at),
        }
    }

    /// `figure(tally, slot)` of each mode at each cut-off, keyed by names.
    fn by_mode(&self, tallies: &[Tally], figure: fn(&Tally, usize) -> f64) -> Keyed<Keyed<f64>> {
        let by_k = |tally: &Tally| {
            let figures = self.cutoffs.iter().enumerate();
            Keyed(figures.map(|(slot, k)| (k.to_string(), figure(tally, slot))).collect())
        };
        Keyed(
            Mode::ALL
                .iter()
                .map(|m| (m.name().to_owned(), by_k(&tallies[m.index()])))
                .collect(),
        )
    }

    fn p50_us(&mut self, mode: Mode) -> f64 {
        let samples = &mut self.latencies_ns[mode.index()];
        samples.sort_unstable();
        percentile(samples, 0.5) as f64 / 1000.0
    }
}

impl Tally {
    fn new(n_cutoffs: usize) -> Self {
        Self {
            questions: 0,
            recall_sum: vec![0.0; n_cutoffs],
            hits: vec![0; n_cutoffs],
        }
    }

    fn merge(&mut self, other: &Tally) {
        self.questions += other.questions;
        self.recall_sum
            .iter_mut()
            .zip(&other.recall_sum)
            .for_each(|(a, b)| *a += b);
        self.hits.iter_mut().zip(&other.hits).for_each(|(a, b)| *a += b);
    }

    fn recall_at(&self, slot: usize) -> f64 {
        ratio(self.recall_sum[slot], self.questions as f64)
    }

    fn hit_at(&self, slot: usize) -> f64 {
        ratio(self.hits[slot] as f64, self.questions as f64)
    }
}

/// Distinct evidence turns among the first `cutoff` hits.
fn evidence_found(ranked: &[&[String]], evidence: &[String], cutoff: usize) -> usize {
    let found: HashSet<&String> = ranked
        .iter()
        .take(cutoff)
        .flat_map(|dia_ids| dia_ids.iter())
        .filter(|dia_id| evidence.contains(dia_id))
        .collect();
    found.len()
}

/// The report as a table: one row per mode, overall then per category.
pub fn eval_table(report: &EvalReport) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "LoCoMo eval: {} questions of categories 1-4 asked per mode ({} skipped: no resolvable evidence or unusable text)",
        report.questions, report.skipped_questions
    );
    let _ = writeln!(
        out,
        "{} memories written in {:.2} s ({} cut to {MAX_TEXT_BYTES} bytes)\n",
        grouped(report.memories as f64),
        report.write_seconds,
        report.truncated_turns
    );
    table_rows(&mut out, &report.recall_at, &report.hit_at, Some(report));
    for (category, figures) in &report.per_category.0 {
        let _ = writeln!(
            out,
            "\ncategory {category} ({}): {} questions",
            category_name(category),
            figures.questions
        );
        table_rows(&mut out, &figures.recall_at, &figures.hit_at, None);
    }
    out
}

/// The header and one row per mode; `overall` adds the p50 and degraded columns.
fn table_rows(
    out: &mut String,
    recall_at: &Keyed<Keyed<f64>>,
    hit_at: &Keyed<Keyed<f64>>,
    overall: Option<&EvalReport>,
) {
    let Some((_, first)) = recall_at.0.first() else {
        return;
    };
    let _ = write!(out, "{:<8}", "mode");
    for (k, _) in &first.0 {
        let _ = write!(out, " {:>9}", format!("recall@{k}"));
    }
    for (k, _) in &first.0 {
        let _ = write!(out, " {:>7}", format!("hit@{k}"));
    }
    let _ = writeln!(out, "{}", if overall.is_some() { "     p50 µs degraded" } else { "" });
    for ((mode, recalls), (_, hits)) in recall_at.0.iter().zip(&hit_at.0) {
        let _ = write!(out, "{mode:<8}");
        for (_, recall) in &recalls.0 {
            let _ = write!(out, " {recall:>9.4}");
        }
        for (_, hit) in &hits.0 {
            let _ = write!(out, " {hit:>7.4}");
        }
        if let Some(report) = overall {
            let p50 = report.query_p50_us.get(mode).copied().unwrap_or(0.0);
            let degraded = report.degraded_answers.get(mode).copied().unwrap_or(0);
            let _ = write!(out, " {p50:>10.1} {degraded:>8}");
        }
        let _ = writeln!(out);
    }
}

fn category_name(category: &str) -> &'static str {
    match category {
        "1" => "multi-hop",
        "2" => "temporal",
        "3" => "open-domain",
        "4" => "single-hop",
        _ => "other",
    }
}

/// Reads and parses a LoCoMo-format file.
pub fn load_locomo(path: &Path) -> Result<Dataset, EvalError> {
    let json = std::fs::read_to_string(path).map_err(|source| EvalError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse_locomo(&json)
}

/// Parses LoCoMo's original JSON: an array of `{sample_id, conversation, qa}`.
pub fn parse_locomo(json: &str) -> Result<Dataset, EvalError> {
    let samples: Vec<RawSample> = serde_json::from_str(json).map_err(EvalError::NotLocomo)?;
    let conversations = samples.into_iter().map(conversation).collect::<Result<_, _>>()?;
    Ok(Dataset { conversations })
}

/// A sample as the file holds it (fields the eval does not use are ignored).
#[derive(Deserialize)]
struct RawSample {
    sample_id: String,
    conversation: serde_json::Map<String, Value>,
    #[serde(default)]
    qa: Vec<RawQuestion>,
}

/// A question as the file holds it; `answer` is not read (its type varies).
#[derive(Deserialize)]
struct RawQuestion {
    #[serde(default)]
    question: String,
    #[serde(default)]
    evidence: Vec<Value>,
    category: Value,
}

/// A turn as the file holds it (images' captions and urls are not read).
#[derive(Deserialize)]
struct RawTurn {
    speaker: String,
    dia_id: String,
    text: String,
}

fn conversation(sample: RawSample) -> Result<Conversation, EvalError> {
    let sample_id = sample.sample_id;
    let (turns, truncated_turns) = turns(&sample_id, sample.conversation)?;
    let known: HashSet<&str> = turns.iter().map(|turn| turn.dia_id.as_str()).collect();
    let (mut questions, mut skipped_questions) = (Vec::new(), 0);
    for (index, raw) in sample.qa.iter().enumerate() {
        let category = category(&sample_id, index, &raw.category)?;
        if !ASKED_CATEGORIES.contains(&category) {
            continue;
        }
        match question(raw, category, &known) {
            Some(question) => questions.push(question),
            None => skipped_questions += 1,
        }
    }
    Ok(Conversation {
        sample_id,
        turns,
        questions,
        skipped_questions,
        truncated_turns,
    })
}

/// Every turn of the `session_<N>` fields, in session number order, and how many were cut.
fn turns(sample: &str, mut conversation: serde_json::Map<String, Value>) -> Result<(Vec<Turn>, u64), EvalError> {
    let mut sessions: Vec<(u32, String)> = conversation
        .keys()
        .filter_map(|field| Some((session_number(field)?, field.clone())))
        .collect();
    sessions.sort_unstable();
    let (mut turns, mut truncated) = (Vec::new(), 0);
    for (number, field) in sessions {
        let value = conversation.remove(&field).unwrap_or(Value::Null);
        let raw: Vec<RawTurn> = serde_json::from_value(value).map_err(|source| EvalError::BadSession {
            sample: sample.to_owned(),
            field,
            source,
        })?;
        if raw.is_empty() {
            continue;
        }
        let created_at_ms = session_date(sample, &conversation, number)?;
        for turn in raw {
            let (turn, cut) = self::turn(turn, created_at_ms);
            truncated += u64::from(cut);
            turns.push(turn);
        }
    }
    Ok((turns, truncated))
}

/// `session_<N>` → N (not `session_<N>_date_time`).
fn session_number(field: &str) -> Option<u32> {
    digits(field.strip_prefix("session_")?)
}

fn session_date(sample: &str, conversation: &serde_json::Map<String, Value>, number: u32) -> Result<i64, EvalError> {
    let field = format!("session_{number}_date_time");
    let Some(value) = conversation.get(&field) else {
        return Err(EvalError::MissingDate {
            sample: sample.to_owned(),
            field,
        });
    };
    let parsed = value.as_str().ok_or(DateError::NotText).and_then(parse_session_date);
    parsed.map_err(|reason| EvalError::BadDate {
        sample: sample.to_owned(),
        field,
        value: value.to_string(),
        reason,
    })
}

/// The turn as written, and whether its text was cut to [`MAX_TEXT_BYTES`].
fn turn(raw: RawTurn, created_at_ms: i64) -> (Turn, bool) {
    let mut text = format!("{}{SPEAKER_SEPARATOR}{}", raw.speaker, raw.text);
    let cut = text.len() > MAX_TEXT_BYTES;
    if cut {
        let end = (0..=MAX_TEXT_BYTES)
            .rev()
            .find(|&i| text.is_char_boundary(i))
            .unwrap_or(0);
        text.truncate(end);
    }
    let dia_id = match parse_dia_id(&raw.dia_id) {
        Some(id) => id.to_string(),
        None => raw.dia_id.trim().to_owned(),
    };
    let turn = Turn {
        dia_id,
        text,
        created_at_ms,
    };
    (turn, cut)
}

/// A category written as a number or a numeric string.
fn category(sample: &str, index: usize, value: &Value) -> Result<u64, EvalError> {
    let parsed = match value {
        Value::Number(number) => number.as_u64(),
        Value::String(text) => text.trim().parse().ok(),
        _ => None,
    };
    parsed.ok_or_else(|| EvalError::BadCategory {
        sample: sample.to_owned(),
        index,
        value: value.to_string(),
    })
}

/// The question as asked, or `None` when it cannot be (no evidence naming a
/// turn of `known`, or an empty or oversize text).
fn question(raw: &RawQuestion, category: u64, known: &HashSet<&str>) -> Option<Question> {
    let text = raw.question.trim();
    if text.is_empty() || text.len() > MAX_QUERY_BYTES {
        return None;
    }
    let mut evidence: Vec<String> = Vec::new();
    for id in raw.evidence.iter().filter_map(Value::as_str).flat_map(evidence_ids) {
        if known.contains(id.as_str()) && !evidence.contains(&id) {
            evidence.push(id);
        }
    }
    (!evidence.is_empty()).then(|| Question {
        category,
        text: text.to_owned(),
        evidence,
    })
}

/// The dialog ids one evidence entry names, normalised: several in one entry
/// (`"D8:6; D9:17"`), a stray colon (`"D:11:26"`), zero padding (`"D02:05"`).
/// Pieces that are no dialog id (`"D"`) are dropped.
pub fn evidence_ids(entry: &str) -> Vec<String> {
    entry
        .split([';', ','])
        .flat_map(str::split_whitespace)
        .filter_map(parse_dia_id)
        .map(|id| id.to_string())
        .collect()
}

/// `D<session>:<turn>` with an optional colon after the `D` and any zero padding.
pub fn parse_dia_id(text: &str) -> Option<DiaId> {
    let rest = text.trim().strip_prefix(['D', 'd'])?;
    let rest = rest.strip_prefix(':').unwrap_or(rest);
    let (session, turn) = rest.split_once(':')?;
    Some(DiaId {
        session: digits(session)?,
        turn: digits(turn)?,
    })
}

/// A non-empty run of ASCII digits (no sign, no spaces) as a number.
fn digits(text: &str) -> Option<u32> {
    let all_digits = !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit());
    all_digits.then(|| text.parse().ok()).flatten()
}

/// Milliseconds since the Unix epoch (UTC) of a session date like
/// `"1:56 pm on 8 May, 2023"`. Also taken: `"May 8, 2023"` order, month
/// abbreviations, `"1:56pm"`, ordinal days (`"8th"`), a 24-hour time, no time (midnight).
pub fn parse_session_date(text: &str) -> Result<i64, DateError> {
    let lower = text.to_lowercase().replace(',', " ");
    let mut parts = DateParts::default();
    for token in lower.split_whitespace() {
        parts.take(token)?;
    }
    parts.millis()
}

/// The pieces of a date seen so far.
#[derive(Default)]
struct DateParts {
    /// (hour as written, minute, the token) of the time of day.
    time: Option<(u32, u32, String)>,
    /// Some(true) for pm.
    pm: Option<bool>,
    day: Option<u32>,
    month: Option<u32>,
    year: Option<i64>,
}

// The months' English names (a prefix of three letters or more names one):
// the entity extractor's table.
use nexus_daemon::recall::lexical::entities::MONTHS;

impl DateParts {
    fn take(&mut self, token: &str) -> Result<(), DateError> {
        let unexpected = || DateError::Unexpected(token.to_owned());
        if token == "on" || token == "at" {
            return Ok(());
        }
        if token.contains(':') {
            return self.take_time(token);
        }
        if let Some(pm) = meridiem(token) {
            return set_once(&mut self.pm, pm, unexpected);
        }
        if let Some(month) = month(token) {
            return set_once(&mut self.month, month, unexpected);
        }
        if let Some(year) = digits(token).filter(|_| token.len() == 4) {
            return set_once(&mut self.year, i64::from(year), unexpected);
        }
        match ordinal(token).filter(|day| (1..=31).contains(day)) {
            Some(day) => set_once(&mut self.day, day, unexpected),
            None => Err(unexpected()),
        }
    }

    /// `H:MM`, optionally with am/pm attached (`1:56pm`).
    fn take_time(&mut self, token: &str) -> Result<(), DateError> {
        let bad_time = || DateError::BadTime(token.to_owned());
        let clock_end = token.find(|c: char| c.is_alphabetic()).unwrap_or(token.len());
        let (clock, suffix) = token.split_at(clock_end);
        let (hour, minute) = clock.split_once(':').ok_or_else(bad_time)?;
        let (hour, minute) = (digits(hour).ok_or_else(bad_time)?, digits(minute).ok_or_else(bad_time)?);
        if minute > 59 || self.time.is_some() {
            return Err(bad_time());
        }
        self.time = Some((hour, minute, token.to_owned()));
        if !suffix.is_empty() {
            set_once(&mut self.pm, meridiem(suffix).ok_or_else(bad_time)?, bad_time)?;
        }
        Ok(())
    }

    fn millis(self) -> Result<i64, DateError> {
        let month = self.month.ok_or(DateError::NoMonth)?;
        let day = self.day.ok_or(DateError::NoDay)?;
        let year = self.year.ok_or(DateError::NoYear)?;
        if day > days_in_month(year, month) {
            return Err(DateError::NoSuchDay { year, month, day });
        }
        let minutes = match self.time {
            Some((hour, minute, token)) => i64::from(hour_of_day(hour, self.pm, &token)? * 60 + minute),
            None => 0,
        };
        Ok((days_from_civil(year, month, day) * 24 * 60 + minutes) * 60 * 1000)
    }
}

fn set_once<T>(slot: &mut Option<T>, value: T, error: impl FnOnce() -> DateError) -> Result<(), DateError> {
    match slot {
        Some(_) => Err(error()),
        None => {
            *slot = Some(value);
            Ok(())
        }
    }
}

/// `am`/`pm` (also `a.m.`, `p.m.`): Some(true) for pm.
fn meridiem(token: &str) -> Option<bool> {
    match token.replace('.', "").as_str() {
        "am" => Some(false),
        "pm" => Some(true),
        _ => None,
    }
}

/// A month name or an abbreviation of three letters or more (`sept`, `aug.`), 1–12.
fn month(token: &str) -> Option<u32> {
    let name = token.trim_end_matches('.');
    if name.len() < 3 {
        return None;
    }
    let index = MONTHS.iter().position(|month| month.starts_with(name))?;
    u32::try_from(index + 1).ok()
}

/// A day written `8` or `8th`.
fn ordinal(token: &str) -> Option<u32> {
    let number = ["st", "nd", "rd", "th"]
        .iter()
        .find_map(|suffix| token.strip_suffix(suffix))
        .unwrap_or(token);
    digits(number).filter(|_| number.len() <= 2)
}

/// The hour 0–23 of a clock reading, 12-hour when am/pm was given.
fn hour_of_day(hour: u32, pm: Option<bool>, token: &str) -> Result<u32, DateError> {
    match pm {
        Some(pm) if (1..=12).contains(&hour) => Ok(hour % 12 + if pm { 12 } else { 0 }),
        None if hour <= 23 => Ok(hour),
        _ => Err(DateError::BadTime(token.to_owned())),
    }
}

fn days_in_month(year: i64, month: u32) -> u32 {
    let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    match month {
        2 if leap => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days from 1970-01-01 to a proleptic Gregorian date (H. Hinnant's `days_from_civil`).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month_from_march = i64::from((month + 9) % 12);
    let day_of_year = (153 * month_from_march + 2) / 5 + i64::from(day) - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn malformed_evidence_ids_are_normalised_and_junk_dropped() {
        let cases: [(&str, &[&str]); 9] = [
            ("D1:3", &["D1:3"]),
            ("D8:6; D9:17", &["D8:6", "D9:17"]),
            ("D8:6;D9:17, D10:1", &["D8:6", "D9:17", "D10:1"]),
            ("D:11:26", &["D11:26"]),
            ("D02:05", &["D2:5"]),
            (" d3:004 ", &["D3:4"]),
            ("D", &[]),
            ("", &[]),
            ("X1:2 D1: D:2 D1:x", &[]),
        ];
        for (entry, expected) in cases {
            assert_eq!(evidence_ids(entry), expected, "evidence {entry:?}");
        }
    }

    #[test]
    fn session_dates_parse_to_utc_millis() {
        let cases = [
            ("1:56 pm on 8 May, 2023", 1_683_554_160_000),
            ("12:06 am on 11 November, 2022", 1_668_125_160_000),
            ("10:22 am on 21 November 2023", 1_700_562_120_000),
            ("10:22am on Nov 21st, 2023", 1_700_562_120_000),
            ("22:30 on 2 January 2024", 1_704_234_600_000),
            ("12:00 pm on 29 February, 2024", 1_709_208_000_000),
            ("1 January 1970", 0),
        ];
        for (text, millis) in cases {
            assert_eq!(parse_session_date(text), Ok(millis), "date {text:?}");
        }
    }

    #[test]
    fn unparsable_dates_say_what_is_wrong() {
        let cases = [
            ("1:56 pm on May, 2023", DateError::NoDay),
            ("1:56 pm on 8, 2023", DateError::NoMonth),
            ("1:56 pm on 8 May", DateError::NoYear),
            ("13:56 pm on 8 May, 2023", DateError::BadTime("13:56".into())),
            ("1:60 pm on 8 May, 2023", DateError::BadTime("1:60".into())),
            ("sometime in May", DateError::Unexpected("sometime".into())),
            ("8 May May 2023", DateError::Unexpected("may".into())),
            (
                "29 February 2023",
                DateError::NoSuchDay {
                    year: 2023,
                    month: 2,
                    day: 29,
                },
            ),
        ];
        for (text, error) in cases {
            assert_eq!(parse_session_date(text), Err(error), "date {text:?}");
        }
    }

    #[test]
    fn a_bad_or_missing_session_date_names_the_sample_and_field() {
        let file = |date: &str| {
            format!(
                r#"[{{"sample_id": "s9", "conversation": {{"session_2": [{{"speaker": "A", "dia_id": "D2:1", "text": "hi"}}]{date}}}, "qa": []}}]"#
            )
        };
        let missing = parse_locomo(&file("")).expect_err("no date").to_string();
        assert!(
            missing.contains("s9") && missing.contains("session_2_date_time"),
            "{missing}"
        );
        let bad = parse_locomo(&file(r#", "session_2_date_time": "yesterday""#))
            .expect_err("bad date")
            .to_string();
        assert!(
            bad.contains("s9") && bad.contains("session_2_date_time") && bad.contains("yesterday"),
            "{bad}"
        );
        let not_text = parse_locomo(&file(r#", "session_2_date_time": 7"#)).expect_err("a number");
        assert!(
            matches!(
                not_text,
                EvalError::BadDate {
                    reason: DateError::NotText,
                    ..
                }
            ),
            "{not_text}"
        );
    }

    /// Two sessions of six turns each; three questions asked, one of category 5
    /// not asked, two of category 1–4 skipped (evidence resolving to no turn, none).
    const SYNTHETIC: &str = r#"[{
        "sample_id": "s1",
        "conversation": {
            "speaker_a": "Ann", "speaker_b": "Bob",
            "session_1_date_time": "9:00 am on 1 January, 2024",
            "session_1": [
                {"speaker": "Ann", "dia_id": "D1:1", "text": "one"},
                {"speaker": "Bob", "dia_id": "D1:2", "text": "two"},
                {"speaker": "Ann", "dia_id": "D1:3", "text": "three"},
                {"speaker": "Bob", "dia_id": "D1:4", "text": "four"},
                {"speaker": "Ann", "dia_id": "D1:5", "text": "five"},
                {"speaker": "Bob", "dia_id": "D1:6", "text": "six", "img_url": ["x"]}
            ],
            "session_2_date_time": "10:30 pm on 2 January, 2024",
            "session_2": [
                {"speaker": "Ann", "dia_id": "D2:1", "text": "seven"},
                {"speaker": "Bob", "dia_id": "D2:2", "text": "eight"},
                {"speaker": "Ann", "dia_id": "D2:3", "text": "nine"},
                {"speaker": "Bob", "dia_id": "D2:4", "text": "ten"},
                {"speaker": "Ann", "dia_id": "D2:5", "text": "eleven"},
                {"speaker": "Bob", "dia_id": "D2:6", "text": "twelve"}
            ]
        },
        "qa": [
            {"question": "q1", "answer": "a", "evidence": ["D1:2", "D2:6"], "category": 1},
            {"question": "q2", "answer": 2022, "evidence": ["D02:01; D1:6"], "category": 2},
            {"question": "q3", "evidence": ["D:1:1", "D9:9"], "category": "4"},
            {"question": "q5", "adversarial_answer": "x", "evidence": ["D1:1"], "category": 5},
            {"question": "q6", "answer": "a", "evidence": ["D7:7", "D"], "category": 4},
            {"question": "q7", "answer": "a", "evidence": [], "category": 3}
        ]
    }]"#;

    /// Ranks a namespace's memories in write order for lexical and smart and
    /// in reverse for dense; answers through the smart route are degraded.
    #[derive(Default)]
    struct Stub {
        written: Vec<MemoryInput>,
        asked: Vec<RecallRequest>,
    }

    impl EvalTarget for Stub {
        fn remember(&mut self, memories: Vec<MemoryInput>) -> Result<Vec<u64>, EvalError> {
            let first = self.written.len() as u64 + 100;
            self.written.extend(memories.iter().cloned());
            Ok((first..first + memories.len() as u64).collect())
        }

        fn recall(&mut self, query: RecallRequest) -> Result<Answer, EvalError> {
            let mut ids: Vec<u64> = (100..100 + self.written.len() as u64).collect();
            if query.engine == Some(EngineChoice::Dense) {
                ids.reverse();
            }
            ids.truncate(query.k as usize);
            let degraded = query.route == Some(Route::SmartRouting);
            self.asked.push(query);
            Ok(Answer { ids, degraded })
        }
    }

    #[track_caller]
    fn check_figures(figures: &Keyed<Keyed<f64>>, mode: &str, expected: [f64; 3]) {
        let by_k = figures.get(mode).expect("mode reported");
        let got: Vec<f64> = ["5", "10", "20"].map(|k| *by_k.get(k).expect("k reported")).into();
        for (got, expected) in got.iter().zip(expected) {
            assert!((got - expected).abs() < 1e-12, "{mode}: {got:?} != {expected:?}");
        }
    }

    #[test]
    fn a_synthetic_file_is_written_asked_and_counted_exactly() {
        let dataset = parse_locomo(SYNTHETIC).expect("parses");
        let mut stub = Stub::default();
        let report = evaluate(&mut stub, &dataset, DEFAULT_K_MAX).expect("evaluates");
        // Written: twelve keyed memories, dated by session, "<speaker>: <text>".
        assert_eq!(report.memories, 12);
        let first = &stub.written[0];
        assert_eq!((first.namespace.as_str(), first.key.as_deref()), ("s1", Some("D1:1")));
        assert_eq!((first.text.as_str(), first.vector.as_ref()), ("Ann: one", None));
        assert_eq!(first.created_at_ms, Some(1_704_099_600_000));
        assert_eq!(stub.written[11].created_at_ms, Some(1_704_234_600_000));
        // Asked: q1, q2, q3 in each of the six modes, k = 20, in their namespace.
        assert_eq!((report.questions, report.skipped_questions), (3, 2));
        assert_eq!(stub.asked.len(), 18);
        assert!(stub.asked.iter().all(|q| q.k == 20 && q.namespace == "s1"));
        // Lexical ranks D1:1..D2:6. q1 (D1:2 at 2, D2:6 at 12): recall 1/2, 1/2, 1;
        // q2 (D1:6 at 6, D2:1 at 7): 0, 1, 1; q3 (D1:1 at 1): 1, 1, 1.
        check_figures(&report.recall_at, "lexical", [0.5, 2.5 / 3.0, 1.0]);
        check_figures(&report.hit_at, "lexical", [2.0 / 3.0, 1.0, 1.0]);
        check_figures(&report.recall_at, "smart", [0.5, 2.5 / 3.0, 1.0]);
        // Dense ranks D2:6..D1:1. q1 (D2:6 at 1, D1:2 at 11): 1/2, 1/2, 1;
        // q2 (D2:1 at 6, D1:6 at 7): 0, 1, 1; q3 (D1:1 at 12): 0, 0, 1.
        check_figures(&report.recall_at, "dense", [0.5 / 3.0, 0.5, 1.0]);
        check_figures(&report.hit_at, "dense", [1.0 / 3.0, 2.0 / 3.0, 1.0]);
        // Per category: q2 alone in category 2, q3 alone in 4; 3 and 5 absent.
        let categories: Vec<&str> = report.per_category.0.iter().map(|(c, _)| c.as_str()).collect();
        assert_eq!(categories, ["1", "2", "4"]);
        let single_hop = report.per_category.get("4").expect("category 4");
        assert_eq!(single_hop.questions, 1);
        check_figures(&single_hop.recall_at, "dense", [0.0, 0.0, 1.0]);
        check_figures(&single_hop.hit_at, "lexical", [1.0, 1.0, 1.0]);
        assert_eq!(
            report.degraded_answers.0,
            [
                ("lexical".into(), 0),
                ("dense".into(), 0),
                ("auto".into(), 0),
                ("smart".into(), 3),
                ("full".into(), 0),
                ("max".into(), 0)
            ]
        );
    }

    #[test]
    fn the_json_keys_are_modes_then_cutoffs_in_order() {
        let dataset = parse_locomo(SYNTHETIC).expect("parses");
        let report = evaluate(&mut Stub::default(), &dataset, DEFAULT_K_MAX).expect("evaluates");
        let json = serde_json::to_string(&report).expect("serialises");
        assert!(json.contains(r#""recall_at":{"lexical":{"5":0.5,"10":"#), "{json}");
        let value: Value = serde_json::from_str(&json).expect("valid JSON");
        assert_eq!(value["hit_at"]["dense"]["20"], 1.0);
        assert_eq!(value["per_category"]["2"]["recall_at"]["lexical"]["10"], 1.0);
        assert_eq!(value["questions"], 3);
    }

    #[test]
    fn a_memory_holding_several_turns_finds_each_once() {
        let merged = ["D1:1".to_owned(), "D1:2".to_owned()];
        let ranked: [&[String]; 3] = [&merged, &[], &merged];
        let evidence = ["D1:2".to_owned(), "D2:1".to_owned()];
        assert_eq!(evidence_found(&ranked, &evidence, 1), 1);
        assert_eq!(
            evidence_found(&ranked, &evidence, 3),
            1,
            "a turn found twice counts once"
        );
        assert_eq!(evidence_found(&ranked, &evidence[1..], 3), 0);
    }

    #[test]
    fn other_k_report_their_own_cutoffs() {
        assert_eq!(cutoffs(20).expect("valid"), [5, 10, 20]);
        assert_eq!(cutoffs(7).expect("valid"), [5, 7]);
        assert_eq!(cutoffs(50).expect("valid"), [5, 10, 20, 50]);
        assert!(cutoffs(0).is_err() && cutoffs(MAX_K + 1).is_err());
    }

    #[test]
    fn batches_stay_within_the_count_and_byte_budgets() {
        let turn = |text_bytes: usize| Turn {
            dia_id: "D1:1".into(),
            text: "x".repeat(text_bytes),
            created_at_ms: 0,
        };
        let many = vec![turn(10); 2 * MAX_BATCH_MEMORIES + 1];
        let sizes: Vec<usize> = batches(&many, "ns").iter().map(|b| b.len()).collect();
        assert_eq!(sizes, [MAX_BATCH_MEMORIES, MAX_BATCH_MEMORIES, 1]);
        let big = vec![turn(MAX_TEXT_BYTES); 20];
        let batches = batches(&big, "ns");
        assert_eq!(batches.iter().map(|b| b.len()).sum::<usize>(), 20);
        assert!(batches.iter().all(|b| b.len() * MAX_TEXT_BYTES <= MAX_BATCH_BYTES));
    }

    #[test]
    fn an_oversize_turn_is_cut_at_a_character_boundary() {
        let raw = RawTurn {
            speaker: "A".into(),
            dia_id: "D01:01".into(),
            text: "é".repeat(MAX_TEXT_BYTES),
        };
        let (turn, cut) = turn(raw, 0);
        assert!(cut && turn.text.len() <= MAX_TEXT_BYTES && turn.text.len() > MAX_TEXT_BYTES - 2);
        assert_eq!(turn.dia_id, "D1:1");
    }
}
