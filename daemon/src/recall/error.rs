//! Why a recall failed, named as the client sees it. The wire code of each
//! variant is decided in `handler.rs` (one exhaustive match).

use crate::recall::engine::EngineError;
use crate::recall::query::{Route, TimeRange};
use crate::store::StoreError;

/// Why a recall failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RecallError {
    /// More results asked for than allowed.
    #[error("query: k = {k} exceeds the maximum of {max} (limits.max_k)")]
    KTooLarge {
        /// Asked for.
        k: u32,
        /// The limit.
        max: u32,
    },
    /// The query text is longer than allowed.
    #[error("query: text is {len} bytes; the maximum is {max} (limits.max_query_bytes)")]
    QueryTooLong {
        /// Bytes sent.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// Neither a text with a word in it nor a vector.
    #[error("a recall needs a text or a vector")]
    EmptyQuery,
    /// A time range that ends before it starts.
    #[error("query: the time range starts at {} ms, after its end at {} ms", .0.start_ms, .0.end_ms)]
    BadTimeRange(TimeRange),
    /// The request forced CacheOnly and the cache holds no answer for it.
    #[error(
        "route CacheOnly: no answer to this query is cached since the last write to namespace {namespace:?}; \
         send no route (the router falls back to the engines) or SmartRouting"
    )]
    NotCached {
        /// The namespace asked.
        namespace: String,
    },
    /// The route forced needs engines that are all failing or switched off.
    #[error("route {route:?}: every engine it needs is down ({reasons})")]
    EnginesDown {
        /// The route asked for.
        route: Route,
        /// Each engine and why.
        reasons: String,
    },
    /// Feedback names a recall this daemon does not remember.
    #[error(
        "feedback: no recent recall has request id {recall_request_id} (the daemon keeps the last {kept}); \
         send the request id of the recall whose result is judged"
    )]
    UnknownRecall {
        /// The id sent.
        recall_request_id: u64,
        /// How many recalls are kept.
        kept: usize,
    },
    /// Feedback names a memory that recall did not return.
    #[error("feedback: memory {memory_id} was not among the results of recall {recall_request_id}")]
    NotInRecall {
        /// The memory judged.
        memory_id: u64,
        /// The recall named.
        recall_request_id: u64,
    },
    /// The request asked for an engine this daemon does not run.
    #[error("engine {engine:?} is not running in this daemon (running: {running})")]
    EngineNotRunning {
        /// The engine asked for.
        engine: &'static str,
        /// The engines that run.
        running: String,
    },
    /// The engine asked for cannot search this query (it needs a text, or a vector).
    #[error("engine {engine:?} searches by {needs}; this query has none")]
    EngineNeeds {
        /// The engine asked for.
        engine: &'static str,
        /// "text" or "vector".
        needs: &'static str,
    },
    /// A check shared with writes (the vector, the tag filter) refused the query.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The engine answering the recall failed.
    #[error(transparent)]
    Engine(#[from] EngineError),
}
