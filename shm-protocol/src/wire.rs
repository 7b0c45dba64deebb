//! The messages, as rkyv archives: every operation of DESIGN §3 and its answer.
//!
//! Requests travel in `Request` frames, answers in `Response` frames. The
//! types are versioned as a whole by [`crate::PROTOCOL_VERSION`] (checked at
//! the handshake): rkyv archives are not self-describing, so any change here
//! that alters an archived layout bumps the version. Only fixed-width
//! integers cross the boundary. Behaviour lives in the daemon; this module
//! only defines shapes, codes and the encode/decode helpers.

use rkyv::{Archive, Deserialize, Serialize};

mod borrowed;

pub use borrowed::{RecallHitSource, RecalledResponseRef, RecalledResponseResolver};

/// One request. `request_id` is echoed in the response; `deadline_ns` is an
/// absolute `CLOCK_MONOTONIC` time (both processes share the host's clock),
/// 0 meaning "no deadline".
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Request {
    /// Chosen by the client, unique per connection.
    pub request_id: u64,
    /// Absolute CLOCK_MONOTONIC nanoseconds, or 0.
    pub deadline_ns: u64,
    /// The operation.
    pub body: RequestBody,
}

/// The operations.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub enum RequestBody {
    /// Liveness and transport round trip.
    Ping(PingRequest),
    /// Store one memory or a batch (acknowledged whole or not at all).
    Remember(RememberRequest),
    /// The k most useful memories for a query.
    Recall(RecallRequest),
    /// Delete memories.
    Forget(ForgetRequest),
    /// A recalled memory was (not) useful.
    Feedback(FeedbackRequest),
    /// Counters and gauges.
    Stats,
    /// A probe: is the daemon able to serve?
    Health,
    /// Make everything acknowledged so far durable now.
    Flush,
    /// Write a snapshot now.
    Checkpoint,
    /// Stored memories a page at a time (export, inspection).
    List(ListRequest),
}

/// Ping: an opaque payload carried one way (to measure transport cost by size).
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Default)]
pub struct PingRequest {
    /// Opaque bytes; the daemon reports their length.
    pub payload: Vec<u8>,
}

/// A string key/value label on a memory.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct MemoryTag {
    /// Label name.
    pub key: String,
    /// Label value.
    pub value: String,
}

/// One memory to store.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Default)]
pub struct MemoryInput {
    /// Client key for idempotent upsert: the same key twice is the same memory.
    pub key: Option<String>,
    /// Scope (agent / user / session).
    pub namespace: String,
    /// The text.
    pub text: String,
    /// Embedding; its dimension is fixed per store.
    pub vector: Option<Vec<f32>>,
    /// Free-form labels.
    pub tags: Vec<MemoryTag>,
    /// Milliseconds since the Unix epoch; `None` means "now".
    pub created_at_ms: Option<i64>,
    /// Weight in recall scoring.
    pub importance: f32,
    /// Where the memory came from (a tool, a document, a chat).
    pub source: Option<String>,
}

impl MemoryInput {
    /// A memory of `text` in `namespace`, importance 1, nothing else set
    /// (fill the other fields with struct update syntax).
    pub fn new(namespace: impl Into<String>, text: impl Into<String>) -> Self {
        Self {
            namespace: namespace.into(),
            text: text.into(),
            importance: 1.0,
            ..Self::default()
        }
    }
}

/// Remember: one memory or a batch.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Default)]
pub struct RememberRequest {
    /// The memories, stored atomically.
    pub memories: Vec<MemoryInput>,
}

/// The recall routes of DESIGN §5.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[rkyv(derive(Debug, PartialEq, Eq))]
#[rkyv(compare(PartialEq))]
pub enum Route {
    /// No recall route applies (every operation but Recall).
    None,
    /// Answered from the cache.
    CacheOnly,
    /// Vector ANN + lexical, light fusion.
    SmartRouting,
    /// All engines, full fusion.
    FullPipeline,
    /// Full pipeline plus query expansion and exact re-rank.
    MaximumIntelligence,
}

/// What a Remember did with the memories it was given.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Default)]
#[rkyv(derive(Debug))]
pub struct RememberReport {
    /// One id per memory sent, in request order: the memory's id (a long
    /// text's first chunk; a skipped near-duplicate's original).
    pub ids: Vec<u64>,
    /// Only for the memories something happened to: chunked, or found to
    /// nearly duplicate a memory already stored.
    pub notes: Vec<RememberNote>,
}

/// What preprocessing did with one memory of a Remember.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
#[rkyv(derive(Debug))]
pub struct RememberNote {
    /// Position of the memory in the request.
    pub input: u32,
    /// A long text was stored as these chunks, in order (tags
    /// `nexus.chunk` = "i/n" and `nexus.group` link them); empty otherwise.
    pub chunk_ids: Vec<u64>,
    /// It nearly duplicates a stored memory, and what was done about it.
    pub duplicate: Option<DuplicateNote>,
}

/// A near-duplicate found on Remember.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq)]
#[rkyv(derive(Debug))]
pub struct DuplicateNote {
    /// The memory already stored.
    pub original: u64,
    /// Estimated Jaccard similarity of their word 3-shingles.
    pub similarity: f32,
    /// What the configured policy did.
    pub action: DuplicateAction,
}

/// What a Remember did with a near-duplicate.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[rkyv(derive(Debug, PartialEq, Eq))]
pub enum DuplicateAction {
    /// Stored, tagged `nexus.duplicate_of` = the original (recall shows one of the two).
    Linked,
    /// Not stored (policy `skip`): the id reported is the original's.
    Skipped,
    /// Stored under the original's key, replacing it (policy `merge`; only
    /// for an original with a key, else it is linked).
    Merged,
}

/// Recall: a query with filters and k.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Default)]
pub struct RecallRequest {
    /// Namespace to search.
    pub namespace: String,
    /// Query text.
    pub text: Option<String>,
    /// Query embedding.
    pub vector: Option<Vec<f32>>,
    /// How many results.
    pub k: u32,
    /// Force a route instead of letting the router pick.
    pub route: Option<Route>,
    /// Only memories carrying all these tags.
    pub filter: Vec<MemoryTag>,
    /// Only memories created in this range (applied inside every engine's
    /// search, before its top k).
    pub created: Option<TimeRange>,
    /// Answer with this engine alone (evaluation, diagnosis); None: every
    /// engine that can search the query, fused.
    pub engine: Option<EngineChoice>,
}

impl RecallRequest {
    /// The `k` best memories of `namespace` for the query `text`, the
    /// router choosing the route (set other fields with struct update syntax).
    pub fn new(namespace: impl Into<String>, text: impl Into<String>, k: u32) -> Self {
        Self {
            namespace: namespace.into(),
            text: Some(text.into()),
            k,
            ..Self::default()
        }
    }
}

/// Creation times `[start_ms, end_ms)`, in ms since the Unix epoch.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct TimeRange {
    /// First millisecond in the range.
    pub start_ms: i64,
    /// First millisecond after it (must not be before `start_ms`).
    pub end_ms: i64,
}

/// The search engines a recall may name.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[rkyv(derive(Debug, PartialEq, Eq))]
pub enum EngineChoice {
    /// The exact scan (reference; linear in the namespace).
    Scan,
    /// BM25 over the memories' texts.
    Lexical,
    /// ANN over the built-in embeddings of the texts.
    Dense,
    /// ANN over the vectors clients sent.
    Vector,
}

/// Forget: what to delete.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub enum ForgetRequest {
    /// These memory ids.
    Ids(Vec<u64>),
    /// Every memory of a namespace.
    Namespace(String),
    /// Memories carrying all these tags (in one namespace, or all).
    Tags {
        /// Restrict to this namespace.
        namespace: Option<String>,
        /// Required tags.
        tags: Vec<MemoryTag>,
    },
}

/// Feedback on a recalled memory.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct FeedbackRequest {
    /// The memory judged.
    pub memory_id: u64,
    /// The recall's request id, linking the judgement to its query.
    pub recall_request_id: u64,
    /// Whether it helped.
    pub useful: bool,
}

/// List: the stored memories in a stable order (namespace, then id), one
/// bounded page per request; `next` of one page is `after` of the next.
/// Memories written behind the cursor during a listing are not seen; ones
/// written ahead of it are.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Default)]
pub struct ListRequest {
    /// Only this namespace; "" lists every namespace.
    pub namespace: String,
    /// Resume after this memory (the previous page's `next`); `None` starts
    /// at the beginning.
    pub after: Option<ListCursor>,
    /// Memories per page at most (0: the daemon's default); the daemon
    /// also caps it (`MAX_LIST_PAGE`).
    pub limit: u32,
    /// Bytes of text and vectors per page at most (0: the daemon's
    /// default); a page always holds at least one memory.
    pub max_bytes: u32,
}

/// Where a listing stopped.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
pub struct ListCursor {
    /// The namespace of the last memory listed.
    pub namespace: String,
    /// Its id.
    pub id: u64,
}

/// One page of a listing.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Default)]
pub struct ListPage {
    /// Memories in (namespace, id) order.
    pub memories: Vec<StoredMemory>,
    /// Where the next page starts; `None` when this page is the last.
    pub next: Option<ListCursor>,
}

/// A stored memory as it was written: everything a `MemoryInput` can carry,
/// plus its id and the time it was given.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Default)]
pub struct StoredMemory {
    /// Daemon-assigned id.
    pub id: u64,
    /// Namespace.
    pub namespace: String,
    /// Client key, if it was written with one.
    pub key: Option<String>,
    /// Text.
    pub text: String,
    /// The client's own vector, if it gave one (never the built-in embedding).
    pub vector: Option<Vec<f32>>,
    /// Labels, including the daemon's own `nexus.*` ones (chunks, duplicates).
    pub tags: Vec<MemoryTag>,
    /// Milliseconds since the Unix epoch.
    pub created_at_ms: i64,
    /// The importance it was written with.
    pub importance: f32,
    /// Provenance.
    pub source: Option<String>,
}

/// One answer.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Response {
    /// The request's id.
    pub request_id: u64,
    /// Ok, degraded or error.
    pub status: Status,
    /// The recall route taken (`Route::None` for other operations).
    pub route: Route,
    /// Why the router took it ("forced by the request", "a short query: ...";
    /// empty for other operations).
    pub route_reason: String,
    /// Where the daemon's time went.
    pub timings: ServerTimings,
    /// The operation's result (`Empty` on errors).
    pub body: ResponseBody,
}

/// How the request went.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub enum Status {
    /// Done.
    Ok,
    /// Done, with less than the full answer (an engine was missing, ...).
    Degraded {
        /// Why.
        reason: String,
    },
    /// Not done.
    Error {
        /// An [`ErrorCode`] value: stable, machine-readable.
        code: u32,
        /// For humans.
        message: String,
    },
}

/// Server-side timings, in nanoseconds.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ServerTimings {
    /// From the frame being published to the daemon picking it up (0 if unknown).
    pub queued_ns: u64,
    /// From pick-up to the answer being written.
    pub handled_ns: u64,
}

/// Operation results.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub enum ResponseBody {
    /// Errors, and operations with nothing to say.
    Empty,
    /// Ping's answer.
    Pong(Pong),
    /// What a Remember stored.
    Remembered(RememberReport),
    /// Recall results, best first.
    Recalled(Vec<RecallHit>),
    /// How many memories were deleted.
    Forgotten(u64),
    /// Counters.
    Stats(StatsReport),
    /// Probe result.
    Health(HealthReport),
    /// Everything up to this log sequence number is durable.
    Flushed(u64),
    /// The snapshot covers everything up to this log sequence number.
    Checkpointed(u64),
    /// List's page.
    Listed(ListPage),
}

/// Ping's answer.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pong {
    /// Length of the payload received.
    pub payload_bytes: u32,
    /// The daemon's CLOCK_MONOTONIC at handling time.
    pub server_monotonic_ns: u64,
}

/// One recalled memory, and why it was chosen.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct RecallHit {
    /// Memory id.
    pub id: u64,
    /// Final score.
    pub score: f32,
    /// The memory's text.
    pub text: String,
    /// Its namespace.
    pub namespace: String,
    /// Its tags (a chunk's `nexus.chunk` and `nexus.group` among them).
    pub tags: Vec<MemoryTag>,
    /// When it was created, ms since the Unix epoch.
    pub created_at_ms: i64,
    /// Per-signal contributions (name, value), for explanations.
    pub why: Vec<Signal>,
}

/// One scoring signal's contribution.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Signal {
    /// Signal name ("vector", "lexical", "recency", ...).
    pub name: String,
    /// Its contribution.
    pub value: f32,
}

/// Daemon counters (a named list so later issues add counters without a
/// protocol bump).
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Default)]
pub struct StatsReport {
    /// Name/value pairs, names stable (documented in ARCHITECTURE.md).
    pub counters: Vec<Counter>,
}

/// One named counter or gauge.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Counter {
    /// Stable name, e.g. `connections_open`.
    pub name: String,
    /// Value.
    pub value: u64,
}

/// Health probe result.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct HealthReport {
    /// True when the daemon accepts and serves requests.
    pub serving: bool,
    /// Seconds since start.
    pub uptime_s: u64,
    /// The daemon's version string.
    pub version: String,
    /// Why writes are refused, while they are (the write-ahead log stopped
    /// after a failed fdatasync or write and needs a restart); `None` while
    /// writes are accepted. Reads keep working either way.
    pub write_failure: Option<String>,
    /// What serves below par while the daemon works: one line per cause
    /// (an engine's circuit breaker open, ...). Empty when nothing is.
    pub degraded: Vec<String>,
}

/// Stable numeric error codes. Numbers are never reused.
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorCode {
    /// The handshake bytes were not a Nexus handshake.
    BadHandshake = 1,
    /// Client and daemon speak different protocol versions.
    VersionMismatch = 2,
    /// The peer's uid is not allowed.
    PermissionDenied = 3,
    /// The daemon is at `max_clients`.
    TooManyClients = 4,
    /// The daemon could not set the connection up (out of fds, memory).
    ConnectionSetupFailed = 5,
    /// A frame's payload failed rkyv validation.
    MalformedFrame = 100,
    /// A frame declared a length beyond the maximum frame size.
    FrameTooLarge = 101,
    /// A frame's kind is not one this side accepts.
    UnknownFrameKind = 102,
    /// A frame declared a length beyond the bytes published in the ring.
    FrameOverrun = 103,
    /// The operation exists in the protocol but not in this build.
    NotAvailable = 200,
    /// The request's deadline passed before it was answered.
    DeadlineExceeded = 201,
    /// A ring or queue stayed full until the deadline.
    Busy = 202,
    /// The daemon is shutting down and refuses new work.
    ShuttingDown = 203,
    /// An argument is out of range or inconsistent.
    InvalidArgument = 300,
    /// A vector's dimension differs from the store's.
    DimensionMismatch = 301,
    /// A batch exceeds the configured maximum.
    BatchTooLarge = 302,
    /// The memory named does not exist.
    NotFound = 303,
    /// The disk is full: the write was not made durable (reads keep working).
    DiskFull = 400,
    /// The write-ahead log or a snapshot failed (I/O error, failed fsync).
    StorageFailed = 401,
    /// A bug or an unexpected failure inside the daemon.
    Internal = 500,
}

impl ErrorCode {
    /// Every code, for lookups and docs.
    pub const ALL: [ErrorCode; 20] = [
        Self::BadHandshake,
        Self::VersionMismatch,
        Self::PermissionDenied,
        Self::TooManyClients,
        Self::ConnectionSetupFailed,
        Self::MalformedFrame,
        Self::FrameTooLarge,
        Self::UnknownFrameKind,
        Self::FrameOverrun,
        Self::NotAvailable,
        Self::DeadlineExceeded,
        Self::Busy,
        Self::ShuttingDown,
        Self::InvalidArgument,
        Self::DimensionMismatch,
        Self::BatchTooLarge,
        Self::NotFound,
        Self::DiskFull,
        Self::StorageFailed,
        Self::Internal,
    ];

    /// The code for a wire value, if known.
    pub fn from_u32(raw: u32) -> Option<Self> {
        Self::ALL.into_iter().find(|code| *code as u32 == raw)
    }
}

impl Response {
    /// An error answer with no body.
    pub fn error(request_id: u64, code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            request_id,
            status: Status::Error {
                code: code as u32,
                message: message.into(),
            },
            route: Route::None,
            route_reason: String::new(),
            timings: ServerTimings::default(),
            body: ResponseBody::Empty,
        }
    }

    /// A successful answer.
    pub fn ok(request_id: u64, body: ResponseBody) -> Self {
        Self {
            request_id,
            status: Status::Ok,
            route: Route::None,
            route_reason: String::new(),
            timings: ServerTimings::default(),
            body,
        }
    }
}

impl ArchivedStatus {
    /// The error code, when this is an error.
    pub fn error_code(&self) -> Option<u32> {
        match self {
            Self::Error { code, .. } => Some(code.to_native()),
            _ => None,
        }
    }
}

/// Why bytes could not be used as a message.
#[derive(Debug, thiserror::Error)]
#[error("invalid archive: {0}")]
pub struct DecodeError(String);

/// Validates `bytes` (16-aligned, as ring payloads and `AlignedVec`s are) as
/// an archived request.
pub fn access_request(bytes: &[u8]) -> Result<&ArchivedRequest, DecodeError> {
    rkyv::access::<ArchivedRequest, rkyv::rancor::Error>(bytes).map_err(|e| DecodeError(e.to_string()))
}

/// Validates `bytes` as an archived response.
pub fn access_response(bytes: &[u8]) -> Result<&ArchivedResponse, DecodeError> {
    rkyv::access::<ArchivedResponse, rkyv::rancor::Error>(bytes).map_err(|e| DecodeError(e.to_string()))
}

/// Serializes `value` into the ring slot `slot`; `None` when it does not fit.
/// Allocation-free after warm-up (rkyv's arena is thread-local).
pub fn encode_into<'slot, T>(value: &T, slot: &'slot mut [std::mem::MaybeUninit<u8>]) -> Option<usize>
where
    T: for<'a> Serialize<
        rkyv::api::high::HighSerializer<
            rkyv::ser::writer::Buffer<'slot>,
            rkyv::ser::allocator::ArenaHandle<'a>,
            rkyv::rancor::Failure,
        >,
    >,
{
    let written =
        rkyv::api::high::to_bytes_in::<_, rkyv::rancor::Failure>(value, rkyv::ser::writer::Buffer::from(slot)).ok()?;
    Some(written.len())
}

/// Serializes `value` into a fresh aligned buffer (the socket transport and tests).
pub fn encode_to_vec<T>(value: &T) -> rkyv::util::AlignedVec<16>
where
    T: for<'a> Serialize<
        rkyv::api::high::HighSerializer<
            rkyv::util::AlignedVec<16>,
            rkyv::ser::allocator::ArenaHandle<'a>,
            rkyv::rancor::Failure,
        >,
    >,
{
    encode_into_vec(value, rkyv::util::AlignedVec::new())
}

/// Serializes `value` into `buffer` after clearing it, and returns it: a
/// session that keeps one buffer across answers allocates only when an
/// answer is larger than any before.
pub fn encode_into_vec<T>(value: &T, mut buffer: rkyv::util::AlignedVec<16>) -> rkyv::util::AlignedVec<16>
where
    T: for<'a> Serialize<
        rkyv::api::high::HighSerializer<
            rkyv::util::AlignedVec<16>,
            rkyv::ser::allocator::ArenaHandle<'a>,
            rkyv::rancor::Failure,
        >,
    >,
{
    buffer.clear();
    rkyv::api::high::to_bytes_in::<_, rkyv::rancor::Failure>(value, buffer)
        .expect("serializing into a growable buffer cannot fail")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_round_trips_through_a_slot() {
        let request = Request {
            request_id: 9,
            deadline_ns: 0,
            body: RequestBody::Remember(RememberRequest {
                memories: vec![MemoryInput {
                    namespace: "agent".into(),
                    text: "the sky is blue".into(),
                    vector: Some(vec![0.5; 4]),
                    ..Default::default()
                }],
            }),
        };
        let mut slot = rkyv::util::AlignedVec::<16>::with_capacity(1024);
        slot.resize(1024, 0);
        // SAFETY: u8 and MaybeUninit<u8> have the same layout; the slice is initialised.
        let uninit = unsafe { std::slice::from_raw_parts_mut(slot.as_mut_ptr().cast(), slot.len()) };
        let len = encode_into(&request, uninit).unwrap();
        let archived = access_request(&slot[..len]).unwrap();
        let back: Request = rkyv::deserialize::<_, rkyv::rancor::Error>(archived).unwrap();
        assert_eq!(back, request);
        assert!(
            encode_into(&request, &mut uninit[..8]).is_none(),
            "a small slot is an error, not a panic"
        );
    }

    #[test]
    fn error_codes_are_stable_and_unique() {
        let mut seen = std::collections::HashSet::new();
        for code in ErrorCode::ALL {
            assert!(seen.insert(code as u32));
            assert_eq!(ErrorCode::from_u32(code as u32), Some(code));
        }
        assert_eq!(ErrorCode::MalformedFrame as u32, 100);
        assert_eq!(ErrorCode::NotAvailable as u32, 200);
    }

    #[test]
    fn garbage_is_rejected_not_trusted() {
        let mut bytes = rkyv::util::AlignedVec::<16>::new();
        bytes.extend_from_slice(&[0xAB; 64]);
        assert!(access_request(&bytes).is_err());
    }
}
