//! A recall's query: what a client asks ([`QueryInput`]), and the validated
//! [`Query`] engines search with, which only [`Query::validate`] makes.
//!
//! Validation bounds every query before any engine sees it: `k` (default
//! [`DEFAULT_K`], at most `limits.max_k`), the vector (finite, the store's
//! dimension), the text (`limits.max_query_bytes`), the tag filter (no more
//! tags than a memory may carry), the time range (start before end); a query
//! needs a text or a vector. The [`Filter`] (namespace, tags, time range) is
//! what every engine applies inside its search.
//!
//! Not here: which engines run (`pipeline.rs`), scoring (`scan.rs`).

use crate::recall::error::RecallError;
use crate::store::model::{self, Limits};
use crate::store::{MemoryView, Store, StoreError, Subject};

/// Results when a recall asks for k = 0.
pub const DEFAULT_K: usize = 8;

/// The route a request forces (the wire's `route` field). The router that
/// picks routes is a later issue; until then recalls are answered by the
/// exact scan, which is what the default and SmartRouting get, and the other
/// routes are refused (`RecallError::RouteNotAvailable`) rather than
/// silently answered some other way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Route {
    /// No route forced: the daemon picks.
    #[default]
    Auto,
    /// Answer from the cache only.
    CacheOnly,
    /// Vector ANN + lexical, light fusion.
    SmartRouting,
    /// All engines, full fusion.
    FullPipeline,
    /// Full pipeline plus query expansion and exact re-rank.
    MaximumIntelligence,
}

/// An engine a recall may ask for by name, to be answered by it alone
/// (evaluation, diagnosis). Without one, every engine that can search the
/// query runs and their answers are fused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EngineName {
    /// The exact scan (reference; linear in the namespace).
    Scan,
    /// BM25 over the texts.
    Lexical,
    /// ANN over the built-in embeddings of the texts.
    Dense,
    /// ANN over the clients' vectors.
    Vector,
}

impl EngineName {
    /// The engine's name, as in answers and Stats.
    pub fn as_str(self) -> &'static str {
        match self {
            EngineName::Scan => "scan",
            EngineName::Lexical => "lexical",
            EngineName::Dense => "dense",
            EngineName::Vector => "vector",
        }
    }
}

/// Memories created in `[start_ms, end_ms)` (ms since the Unix epoch).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeRange {
    /// First millisecond in the range.
    pub start_ms: i64,
    /// First millisecond after it.
    pub end_ms: i64,
}

impl TimeRange {
    /// True when `at_ms` is in the range.
    pub fn contains(&self, at_ms: i64) -> bool {
        (self.start_ms..self.end_ms).contains(&at_ms)
    }
}

/// What a client asks for, borrowed from its request (the handler builds it).
#[derive(Debug, Clone, Default)]
pub struct QueryInput<'a> {
    /// Namespace to search ("" = all).
    pub namespace: &'a str,
    /// Query text.
    pub text: Option<&'a str>,
    /// Query vector (converted from the wire's little-endian floats).
    pub vector: Option<Vec<f32>>,
    /// Results wanted (0: [`DEFAULT_K`]).
    pub k: u32,
    /// The route forced, if any.
    pub route: Route,
    /// Required tags (key, value).
    pub tags: Vec<(&'a str, &'a str)>,
    /// Only memories created in this range.
    pub created: Option<TimeRange>,
    /// Answer with this engine alone.
    pub engine: Option<EngineName>,
}

/// Which memories a search may return: every engine applies it inside its
/// search, before its top k.
#[derive(Debug, Clone, Copy)]
pub struct Filter<'a> {
    /// Namespace ("" = all).
    pub namespace: &'a str,
    /// Required tags.
    pub tags: &'a [(&'a str, &'a str)],
    /// Creation time range.
    pub created: Option<TimeRange>,
}

impl Filter<'_> {
    /// True when `memory` may be returned.
    pub fn accepts(&self, memory: MemoryView<'_>) -> bool {
        (self.namespace.is_empty() || memory.namespace() == self.namespace)
            && memory.has_tags(self.tags)
            && self.created.is_none_or(|range| range.contains(memory.created_at_ms()))
    }
}

/// A validated query (see the module docs); borrows its [`QueryInput`].
#[derive(Debug, Clone, Copy)]
pub struct Query<'a> {
    text: Option<&'a str>,
    vector: Option<&'a [f32]>,
    k: usize,
    route: Route,
    engine: Option<EngineName>,
    filter: Filter<'a>,
}

impl<'a> Query<'a> {
    /// Checks `input` against `store`'s limits and dimension, in the order a
    /// client's mistakes are reported: k, vector, text, emptiness, filter.
    pub fn validate(input: &'a QueryInput<'a>, store: &Store) -> Result<Self, RecallError> {
        let limits = store.limits();
        let k = check_k(input.k, limits)?;
        if let Some(vector) = &input.vector {
            check_vector(vector, store)?;
        }
        if let Some(text) = input.text
            && text.len() > limits.max_query_bytes
        {
            let max = limits.max_query_bytes;
            return Err(RecallError::QueryTooLong { len: text.len(), max });
        }
        let text = input.text.filter(|t| !t.trim().is_empty());
        if text.is_none() && input.vector.is_none() {
            return Err(RecallError::EmptyQuery);
        }
        model::check_filter_len(input.tags.len(), limits)?;
        if let Some(range) = input.created.filter(|r| r.start_ms > r.end_ms) {
            return Err(RecallError::BadTimeRange(range));
        }
        Ok(Self {
            text,
            vector: input.vector.as_deref(),
            k,
            route: input.route,
            engine: input.engine,
            filter: Filter {
                namespace: input.namespace,
                tags: &input.tags,
                created: input.created,
            },
        })
    }

    /// The text, if it has any word.
    pub fn text(&self) -> Option<&'a str> {
        self.text
    }

    /// The vector (finite, of the store's dimension).
    pub fn vector(&self) -> Option<&'a [f32]> {
        self.vector
    }

    /// Results wanted (at least 1).
    pub fn k(&self) -> usize {
        self.k
    }

    /// The same query asking for `k` results (fusion asks each engine for
    /// more than the client wants).
    pub fn with_k(&self, k: usize) -> Self {
        Self { k: k.max(1), ..*self }
    }

    /// The route the request forced.
    pub fn route(&self) -> Route {
        self.route
    }

    /// The engine asked for, if any.
    pub fn engine(&self) -> Option<EngineName> {
        self.engine
    }

    /// Which memories may be returned.
    pub fn filter(&self) -> &Filter<'a> {
        &self.filter
    }
}

fn check_k(k: u32, limits: &Limits) -> Result<usize, RecallError> {
    match k {
        0 => Ok(DEFAULT_K),
        k if k > limits.max_k => Err(RecallError::KTooLarge { k, max: limits.max_k }),
        k => Ok(k as usize),
    }
}

fn check_vector(vector: &[f32], store: &Store) -> Result<(), StoreError> {
    model::check_vector(Subject::Query, vector, store.limits())?;
    let expected = store.dimension();
    if expected != 0 && expected as usize != vector.len() {
        return Err(StoreError::DimensionMismatch {
            subject: Subject::Query,
            expected,
            got: vector.len() as u32,
        });
    }
    Ok(())
}
