//! What each operation does, given a validated request: transport-agnostic,
//! so the shared-memory and socket sessions answer identically.
//!
//! The only file that speaks both the wire (`nexus_shm_protocol::wire`) and
//! the domain: it turns an archived request into the store's and recall's
//! input types, borrowing the request's bytes (texts, tags, vectors and ids
//! are read in place, not copied; a query vector is converted once), calls
//! them, and turns their outcome into a response. Every domain error maps to
//! a wire code here, in exhaustive matches: a new error variant does not
//! compile until someone decides its code.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use std::mem::MaybeUninit;

use nexus_shm_protocol::wire::{
    ArchivedEngineChoice, ArchivedFeedbackRequest, ArchivedForgetRequest, ArchivedListRequest, ArchivedMemoryInput,
    ArchivedRecallRequest, ArchivedRequest, ArchivedRequestBody, ArchivedRoute, Counter, DuplicateAction,
    DuplicateNote, ErrorCode, HealthReport, ListCursor, ListPage, MemoryTag, Pong, RecallHitSource,
    RecalledResponseRef, RememberNote, RememberReport, Response, ResponseBody, ServerTimings, StatsReport,
    StoredMemory, encode_into, encode_into_vec,
};
use rkyv::util::AlignedVec;

use crate::config::Config;
use crate::metrics::Metrics;
use crate::preprocess::remember::{Action, Outcome, PreprocessError, Preprocessor};
use crate::recall::fusion::Factor;
use crate::recall::{Answer, EngineError, EngineName, QueryInput, Recall, RecallError, Recalled, Route, TimeRange};
use crate::store::wal::WalError;
use crate::store::{CounterValue, Deadline, ForgetTarget, Judgement, NewMemory, Store, StoreError, TagRef};
use crate::transport::admission::Admission;

/// State every session shares.
pub struct Shared {
    /// The configuration in force (swapped on SIGHUP; see `config()`).
    config: RwLock<Arc<Config>>,
    /// Counters.
    pub metrics: Metrics,
    /// Set when shutdown began: new requests are refused with `ShuttingDown`.
    pub shutting_down: AtomicBool,
    /// The memories.
    pub store: Store,
    /// Recalls over them.
    pub recall: Recall,
    /// What a Remember goes through before the store (chunks, near-duplicates).
    pub preprocessor: Preprocessor,
    /// The budgets connections are admitted against (fds, pending
    /// handshakes, per-uid shares, memory); see `admission.rs`.
    pub admission: Admission,
}

impl Shared {
    /// Fresh shared state for a configuration, an opened store and the
    /// recalls over it.
    pub fn new(config: Config, store: Store, recall: Recall, preprocessor: Preprocessor) -> Arc<Self> {
        Arc::new(Self {
            preprocessor,
            admission: Admission::new(&config),
            config: RwLock::new(Arc::new(config)),
            metrics: Metrics::default(),
            shutting_down: AtomicBool::new(false),
            recall,
            store,
        })
    }

    /// The configuration in force now.
    pub fn config(&self) -> Arc<Config> {
        self.config.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Installs a reloaded configuration.
    pub fn set_config(&self, config: Config) {
        *self.config.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(config);
    }
}

/// An error answer: the wire code and the message.
struct Refusal {
    code: ErrorCode,
    message: String,
}

/// Answers one validated request. `now_ns` is CLOCK_MONOTONIC at pick-up.
///
/// Each request runs in a `request` span (id, operation, and the route once
/// known) at DEBUG on purpose: under the default `info` filter the span and
/// the closing event are never built, so the cache-hit path stays free of
/// allocations (`handler/zero_copy_tests.rs`). Its latency, pick-up to
/// reply, goes into the metrics' histograms (lock-free, no allocation).
pub async fn handle(request: &ArchivedRequest, shared: &Shared, now_ns: u64) -> Reply {
    use crate::metrics::{Operation, RouteLabel, bump};
    use tracing::Instrument as _;
    let id = request.request_id.to_native();
    let operation = Operation::of(&request.body);
    let span = tracing::debug_span!("request", id, op = operation.name(), route = tracing::field::Empty);
    let answered = async {
        let deadline_ns = request.deadline_ns.to_native();
        if deadline_ns != 0 && now_ns > deadline_ns {
            let late_us = (now_ns - deadline_ns) / 1000;
            let message = format!("deadline passed {late_us} µs before pick-up");
            return Err(Refusal {
                code: ErrorCode::DeadlineExceeded,
                message,
            });
        }
        if shared.shutting_down.load(Ordering::Relaxed) && !is_probe(&request.body) {
            let message = "nexusd is shutting down".to_owned();
            return Err(Refusal {
                code: ErrorCode::ShuttingDown,
                message,
            });
        }
        dispatch(id, &request.body, shared, now_ns, Deadline::at_ns(deadline_ns)).await
    }
    .instrument(span.clone())
    .await;
    let route = (operation == Operation::Recall).then(|| match &answered {
        Ok(Answered::Recalled(answer)) => RouteLabel::of(answer.route),
        Ok(Answered::Body(_)) | Err(_) => RouteLabel::Refused,
    });
    let elapsed_ns = nexus_shm_protocol::monotonic_now_ns().saturating_sub(now_ns);
    shared.metrics.observe_request(operation, route, elapsed_ns);
    if let Some(route) = route {
        span.record("route", route.name());
    }
    let latency_us = elapsed_ns / 1000;
    match &answered {
        Ok(answered) => {
            if matches!(answered, Answered::Recalled(answer) if answer.degraded.is_some()) {
                bump(&shared.metrics.recalls_degraded);
            }
            tracing::debug!(parent: &span, latency_us, status = "ok", "request answered");
        }
        Err(refusal) => {
            bump(&shared.metrics.requests_failed);
            tracing::debug!(parent: &span, latency_us, status = ?refusal.code, "request refused");
        }
    }
    match answered {
        Ok(Answered::Body(body)) => Response::ok(id, body).into(),
        Ok(Answered::Recalled(answer)) => Reply::Recalled(RecalledReply {
            request_id: id,
            answer,
            timings: ServerTimings::default(),
        }),
        Err(refusal) => Response::error(id, refusal.code, refusal.message).into(),
    }
}

/// An answer ready to be written into a frame. A recall's keeps its
/// [`Answer`] (the memories, read in place, shared with the cache) and is
/// serialized from it, so no text, tag or name is copied on the way out
/// (`wire::RecalledResponseRef`); every other answer is an owned `Response`.
#[derive(Debug)]
pub enum Reply {
    /// Any operation's answer, and every error.
    Owned(Response),
    /// A recall's results.
    Recalled(RecalledReply),
}

/// A recall's answer as it leaves the pipeline, with the frame's parts.
#[derive(Debug)]
pub struct RecalledReply {
    request_id: u64,
    answer: Answer,
    timings: ServerTimings,
}

impl Reply {
    /// The request answered.
    pub fn request_id(&self) -> u64 {
        match self {
            Reply::Owned(response) => response.request_id,
            Reply::Recalled(recalled) => recalled.request_id,
        }
    }

    /// Records how long the daemon took, from pick-up to now.
    pub fn set_handled_ns(&mut self, handled_ns: u64) {
        match self {
            Reply::Owned(response) => response.timings.handled_ns = handled_ns,
            Reply::Recalled(recalled) => recalled.timings.handled_ns = handled_ns,
        }
    }

    /// Serializes the answer into a ring slot; `None` when it does not fit.
    pub fn encode_into(&self, slot: &mut [MaybeUninit<u8>]) -> Option<usize> {
        match self {
            Reply::Owned(response) => encode_into(response, slot),
            Reply::Recalled(recalled) => encode_into(&recalled.wire(), slot),
        }
    }

    /// Serializes the answer into `buffer` (cleared first) and returns it.
    pub fn encode_into_vec(&self, buffer: AlignedVec<16>) -> AlignedVec<16> {
        match self {
            Reply::Owned(response) => encode_into_vec(response, buffer),
            Reply::Recalled(recalled) => encode_into_vec(&recalled.wire(), buffer),
        }
    }
}

impl From<Response> for Reply {
    fn from(response: Response) -> Self {
        Reply::Owned(response)
    }
}

impl RecalledReply {
    /// The wire's `Response`, borrowing everything from the answer.
    fn wire(&self) -> RecalledResponseRef<'_, Recalled> {
        let answer = &self.answer;
        RecalledResponseRef {
            request_id: self.request_id,
            degraded: answer.degraded.as_deref(),
            route: wire_route(answer.route),
            route_reason: answer.reason,
            timings: self.timings,
            hits: &answer.hits,
        }
    }
}

/// An operation's result: a body, or a recall's answer (serialized from
/// the memories when written, see [`Reply`]).
enum Answered {
    Body(ResponseBody),
    Recalled(Answer),
}

impl From<ResponseBody> for Answered {
    fn from(body: ResponseBody) -> Self {
        Answered::Body(body)
    }
}

/// The wire's name of a route (a named engine's answer took none).
fn wire_route(route: Route) -> nexus_shm_protocol::wire::Route {
    use nexus_shm_protocol::wire::Route as Wire;
    match route {
        Route::Auto => Wire::None,
        Route::CacheOnly => Wire::CacheOnly,
        Route::SmartRouting => Wire::SmartRouting,
        Route::FullPipeline => Wire::FullPipeline,
        Route::MaximumIntelligence => Wire::MaximumIntelligence,
    }
}

/// Runs one operation.
async fn dispatch(
    request_id: u64,
    body: &ArchivedRequestBody,
    shared: &Shared,
    now_ns: u64,
    deadline: Deadline,
) -> Result<Answered, Refusal> {
    let store = &shared.store;
    let body = match body {
        ArchivedRequestBody::Ping(ping) => ResponseBody::Pong(Pong {
            payload_bytes: ping.payload.len() as u32,
            server_monotonic_ns: now_ns,
        }),
        ArchivedRequestBody::Stats => ResponseBody::Stats(stats(shared)),
        ArchivedRequestBody::Health => ResponseBody::Health(health(shared)),
        ArchivedRequestBody::Remember(remember) => {
            let inputs: Vec<NewMemory<'_>> = remember.memories.iter().map(new_memory).collect();
            let now = now_ms();
            let prepared = (shared.preprocessor.prepare(&inputs, store, now)).map_err(preprocess_refusal)?;
            let memories = prepared.memories(&inputs);
            // Every memory may have been a skipped near-duplicate: nothing to log.
            let stored = if memories.is_empty() {
                Vec::new()
            } else {
                store.remember(memories, now).await.map_err(store_refusal)?.ids
            };
            ResponseBody::Remembered(remember_report(prepared.outcome(&stored)))
        }
        ArchivedRequestBody::Recall(recall) => {
            let input = query_input(recall);
            let answer = shared.recall.recall_for(Some(request_id), &input, deadline).await;
            return Ok(Answered::Recalled(answer.map_err(recall_refusal)?));
        }
        ArchivedRequestBody::Forget(forget) => {
            let forgotten = store.forget(&forget_target(forget), deadline).await;
            ResponseBody::Forgotten(forgotten.map_err(store_refusal)?.count)
        }
        ArchivedRequestBody::Feedback(feedback) => {
            let judgement = judgement(feedback);
            (shared
                .recall
                .check_feedback(judgement.recall_request_id, judgement.memory_id))
            .map_err(recall_refusal)?;
            store.feedback(judgement).await.map_err(store_refusal)?;
            ResponseBody::Empty
        }
        ArchivedRequestBody::Flush => ResponseBody::Flushed(store.flush().await.map_err(store_refusal)?),
        ArchivedRequestBody::Checkpoint => {
            let lsn = store.requested_checkpoint().await.map_err(store_refusal)?;
            ResponseBody::Checkpointed(lsn)
        }
        ArchivedRequestBody::List(list) => ResponseBody::Listed(list_page(list, store)),
    };
    Ok(body.into())
}

// Wire → domain.

/// A Remember's memory, borrowing the request's bytes.
pub fn new_memory(input: &ArchivedMemoryInput) -> NewMemory<'_> {
    NewMemory {
        namespace: input.namespace.as_str(),
        text: input.text.as_str(),
        key: input.key.as_ref().map(|k| k.as_str()),
        vector: input.vector.as_ref().map(|v| v.as_slice()),
        tags: (input.tags.iter())
            .map(|t| TagRef {
                key: t.key.as_str(),
                value: t.value.as_str(),
            })
            .collect(),
        created_at_ms: input.created_at_ms.as_ref().map(|t| t.to_native()),
        importance: input.importance.to_native(),
        source: input.source.as_ref().map(|s| s.as_str()),
    }
}

fn forget_target(request: &ArchivedForgetRequest) -> ForgetTarget<'_> {
    match request {
        ArchivedForgetRequest::Ids(ids) => ForgetTarget::Ids(ids.as_slice()),
        ArchivedForgetRequest::Namespace(namespace) => ForgetTarget::Namespace(namespace.as_str()),
        ArchivedForgetRequest::Tags { namespace, tags } => ForgetTarget::Tags {
            namespace: namespace.as_ref().map(|n| n.as_str()),
            tags: (tags.iter())
                .map(|t| TagRef {
                    key: t.key.as_str(),
                    value: t.value.as_str(),
                })
                .collect(),
        },
    }
}

fn judgement(request: &ArchivedFeedbackRequest) -> Judgement {
    Judgement {
        memory_id: request.memory_id.to_native(),
        recall_request_id: request.recall_request_id.to_native(),
        useful: request.useful,
    }
}

/// A Recall's query. The vector is converted to native floats once (the
/// engines compute with them); texts and tags are borrowed.
fn query_input(request: &ArchivedRecallRequest) -> QueryInput<'_> {
    QueryInput {
        namespace: request.namespace.as_str(),
        text: request.text.as_ref().map(|t| t.as_str()),
        vector: (request.vector.as_ref()).map(|v| v.iter().map(|x| x.to_native()).collect()),
        k: request.k.to_native(),
        route: route(request.route.as_ref()),
        tags: (request.filter.iter())
            .map(|t| (t.key.as_str(), t.value.as_str()))
            .collect(),
        created: (request.created.as_ref()).map(|range| TimeRange {
            start_ms: range.start_ms.to_native(),
            end_ms: range.end_ms.to_native(),
        }),
        engine: request.engine.as_ref().map(|engine| match engine {
            ArchivedEngineChoice::Scan => EngineName::Scan,
            ArchivedEngineChoice::Lexical => EngineName::Lexical,
            ArchivedEngineChoice::Dense => EngineName::Dense,
            ArchivedEngineChoice::Vector => EngineName::Vector,
        }),
    }
}

/// The route a request forces. `Route::None` ("no recall route") in a
/// request means what no route means: the daemon picks.
fn route(forced: Option<&ArchivedRoute>) -> Route {
    match forced {
        None | Some(ArchivedRoute::None) => Route::Auto,
        Some(ArchivedRoute::CacheOnly) => Route::CacheOnly,
        Some(ArchivedRoute::SmartRouting) => Route::SmartRouting,
        Some(ArchivedRoute::FullPipeline) => Route::FullPipeline,
        Some(ArchivedRoute::MaximumIntelligence) => Route::MaximumIntelligence,
    }
}

// Domain → wire.

/// What a Remember did, per memory sent.
fn remember_report(outcome: Outcome) -> RememberReport {
    let notes = (outcome.notes.into_iter())
        .map(|note| RememberNote {
            input: note.input,
            chunk_ids: note.chunk_ids,
            duplicate: note.duplicate.map(|(found, action)| DuplicateNote {
                original: found.id,
                similarity: found.jaccard as f32,
                action: match action {
                    Action::Linked => DuplicateAction::Linked,
                    Action::Skipped => DuplicateAction::Skipped,
                    Action::Merged => DuplicateAction::Merged,
                },
            }),
        })
        .collect();
    RememberReport {
        ids: outcome.ids,
        notes,
    }
}

/// A recall result as the wire writes it: its memory's bytes, read in
/// place, and why it was chosen (a fused answer explains each factor's
/// share of the score; a named engine's, its own signals).
impl RecallHitSource for Recalled {
    fn id(&self) -> u64 {
        self.candidate.id
    }

    fn score(&self) -> f32 {
        self.candidate.score
    }

    fn text(&self) -> &str {
        self.memory.view().text()
    }

    fn namespace(&self) -> &str {
        self.memory.view().namespace()
    }

    fn tags(&self) -> impl Iterator<Item = (&str, &str)> {
        self.memory.view().tags()
    }

    fn created_at_ms(&self) -> i64 {
        self.memory.view().created_at_ms()
    }

    fn signals(&self) -> impl Iterator<Item = (&str, f32)> {
        let fused = (self.contributions.iter()).flat_map(|contributions| {
            (Factor::ALL.into_iter())
                .map(|factor| (factor.name(), contributions[factor as usize]))
                .filter(|(_, value)| *value != 0.0)
        });
        let signals = &self.candidate.signals;
        let raw = [("vector", signals.vector), ("lexical", signals.lexical)]
            .into_iter()
            .filter(|_| self.contributions.is_none())
            .filter_map(|(name, value)| Some((name, value?)));
        fused.chain(raw)
    }
}

/// Everything Stats reports: the daemon's counters and latency figures,
/// the store's, admission's, the engines' and the pipeline's. Also the
/// source of the metrics endpoint's counters and gauges (`telemetry.rs`).
pub(crate) fn stats(shared: &Shared) -> StatsReport {
    let mut report = shared.metrics.report();
    report.counters.extend(shared.store.counters().into_iter().map(counter));
    report.counters.extend(shared.admission.gauges());
    for engine in shared.recall.engines() {
        let gauges = engine.gauges().into_iter();
        report
            .counters
            .extend(gauges.map(|(name, value)| Counter { name, value }));
    }
    let gauges = shared.recall.gauges().into_iter();
    report
        .counters
        .extend(gauges.map(|(name, value)| Counter { name, value }));
    report
}

/// Memories per List page at most, whatever the client asks: a page is
/// copied under the store's read lock.
pub const MAX_LIST_PAGE: usize = 1000;
/// Default (and largest) bytes of text and vectors per page: half
/// the default ring's largest frame, so a page fits any ring a client gets
/// by default; a client with a smaller ring asks for less.
pub const MAX_LIST_PAGE_BYTES: usize = 256 << 10;

fn list_page(request: &ArchivedListRequest, store: &crate::store::Store) -> ListPage {
    let limit = match request.limit.to_native() as usize {
        0 => MAX_LIST_PAGE,
        limit => limit.min(MAX_LIST_PAGE),
    };
    let max_bytes = match request.max_bytes.to_native() as usize {
        0 => MAX_LIST_PAGE_BYTES,
        bytes => bytes.min(MAX_LIST_PAGE_BYTES),
    };
    let after = (request.after.as_ref()).map(|cursor| (cursor.namespace.to_string(), cursor.id.to_native()));
    let (memories, next) = store.list(&request.namespace, after, limit, max_bytes);
    ListPage {
        memories: memories.iter().map(|memory| stored_memory(memory.view())).collect(),
        next: next.map(|(namespace, id)| ListCursor { namespace, id }),
    }
}

fn stored_memory(view: crate::store::memory::MemoryView<'_>) -> StoredMemory {
    StoredMemory {
        id: view.id(),
        namespace: view.namespace().to_owned(),
        key: view.key().map(str::to_owned),
        text: view.text().to_owned(),
        vector: view
            .vector()
            .map(|vector| vector.iter().map(|x| x.to_native()).collect()),
        tags: (view.tags())
            .map(|(key, value)| MemoryTag {
                key: key.to_owned(),
                value: value.to_owned(),
            })
            .collect(),
        created_at_ms: view.created_at_ms(),
        importance: view.importance(),
        source: view.source().map(str::to_owned),
    }
}

fn counter(value: CounterValue) -> Counter {
    Counter {
        name: value.name.into_owned(),
        value: value.value,
    }
}

fn health(shared: &Shared) -> HealthReport {
    HealthReport {
        serving: !shared.shutting_down.load(Ordering::Relaxed),
        uptime_s: shared.metrics.uptime_s(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        write_failure: shared.store.write_failure(),
        degraded: shared.recall.degraded(),
    }
}

fn store_refusal(error: StoreError) -> Refusal {
    Refusal {
        code: store_code(&error),
        message: error.to_string(),
    }
}

fn preprocess_refusal(error: PreprocessError) -> Refusal {
    match error {
        PreprocessError::Store(error) => store_refusal(error),
        other @ (PreprocessError::ChunksOverBatch { .. } | PreprocessError::NoRoomForTags { .. }) => Refusal {
            code: ErrorCode::InvalidArgument,
            message: other.to_string(),
        },
    }
}

fn recall_refusal(error: RecallError) -> Refusal {
    Refusal {
        code: recall_code(&error),
        message: error.to_string(),
    }
}

/// The wire code of a store error.
fn store_code(error: &StoreError) -> ErrorCode {
    match error {
        StoreError::EmptyBatch
        | StoreError::EmptyNamespace { .. }
        | StoreError::FieldTooLong { .. }
        | StoreError::TooManyTags { .. }
        | StoreError::BadDimension { .. }
        | StoreError::NotFinite { .. }
        | StoreError::FilterTooLong { .. }
        | StoreError::ForgetWithoutNamespace
        | StoreError::ForgetWithoutTags => ErrorCode::InvalidArgument,
        StoreError::BatchTooLarge { .. } | StoreError::TooManyIds { .. } => ErrorCode::BatchTooLarge,
        StoreError::DimensionMismatch { .. } | StoreError::MixedDimensions { .. } => ErrorCode::DimensionMismatch,
        StoreError::DeadlineExceeded(_) => ErrorCode::DeadlineExceeded,
        StoreError::UnknownMemory(_) => ErrorCode::NotFound,
        StoreError::Wal(wal) => wal_code(wal),
        StoreError::ShuttingDown => ErrorCode::ShuttingDown,
        StoreError::Snapshot(_)
        | StoreError::SnapshotUnreadable { .. }
        | StoreError::DataDir(_)
        | StoreError::ConfiguredDimension { .. }
        | StoreError::ApplyThread(_)
        | StoreError::TaskFailed { .. }
        | StoreError::WalStalled { .. } => ErrorCode::StorageFailed,
        StoreError::Checkpoint(error) => store_code(error),
    }
}

/// The wire code of a WAL error: no space and no descriptors are retried by
/// the client (`DiskFull`, `Busy`); everything else is a storage failure.
fn wal_code(error: &WalError) -> ErrorCode {
    match error {
        WalError::DiskFull { .. } => ErrorCode::DiskFull,
        WalError::OutOfFds { .. } => ErrorCode::Busy,
        WalError::SyncFailed { .. }
        | WalError::Failed { .. }
        | WalError::Corrupt { .. }
        | WalError::Closed
        | WalError::Io { .. }
        | WalError::PayloadTooLarge { .. }
        | WalError::InvalidConfig(_)
        | WalError::BadFsyncPolicy { .. }
        | WalError::BadFaultSpec { .. }
        | WalError::ApplyFailed { .. }
        | WalError::LsnConflict { .. }
        | WalError::ShutdownTimedOut(_) => ErrorCode::StorageFailed,
    }
}

/// The wire code of a recall error.
fn recall_code(error: &RecallError) -> ErrorCode {
    match error {
        RecallError::KTooLarge { .. }
        | RecallError::QueryTooLong { .. }
        | RecallError::EmptyQuery
        | RecallError::BadTimeRange(_) => ErrorCode::InvalidArgument,
        RecallError::NotCached { .. } | RecallError::EnginesDown { .. } | RecallError::EngineNotRunning { .. } => {
            ErrorCode::NotAvailable
        }
        RecallError::UnknownRecall { .. } | RecallError::NotInRecall { .. } => ErrorCode::NotFound,
        RecallError::EngineNeeds { .. } => ErrorCode::InvalidArgument,
        RecallError::Store(error) => store_code(error),
        RecallError::Engine(EngineError::DeadlineExceeded { .. }) => ErrorCode::DeadlineExceeded,
        RecallError::Engine(EngineError::Failed { .. } | EngineError::Panicked { .. }) => ErrorCode::Internal,
    }
}

fn is_probe(body: &ArchivedRequestBody) -> bool {
    matches!(
        body,
        ArchivedRequestBody::Health | ArchivedRequestBody::Stats | ArchivedRequestBody::Ping(_)
    )
}

fn now_ms() -> i64 {
    let since_epoch = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    since_epoch.as_millis() as i64
}

#[cfg(test)]
mod zero_copy_tests;
