//! The seam every search engine plugs into: [`Engine`].
//!
//! An engine answers a validated [`Query`] with its own ranked
//! [`Candidates`] (ids and its own scores, for fusion to combine), reading
//! memories through the store in the [`SearchContext`] and stopping at its
//! deadline. Filters (namespace, tags, time range) are applied inside the
//! search, before its top k, never on its output. An engine with an index
//! keeps it in step with the log as a store [`Follower`] (its `follow` is
//! told every change, in LSN order, before the write is acknowledged: see
//! `store/follow.rs`), so an acknowledged memory is in its very next answer.
//!
//! Engines: the exact scan (`scan.rs`) today; accuracy (ANN, `ann/`),
//! intelligence (BM25, `lexical/`), learning and mining to come. Not here:
//! choosing engines, fusing their answers, deadlines per engine and circuit
//! breakers (the pipeline, `pipeline.rs`).

use std::future::Future;
use std::pin::Pin;

use crate::recall::query::Query;
use crate::store::{Deadline, DeadlineExceeded, Follower, Store};

/// A search engine. `name()` (from [`Follower`]) names it in answers,
/// errors and Stats.
pub trait Engine: Follower {
    /// The engine's best `query.k()` memories for `query`, best first,
    /// among those `query.filter()` accepts. Long work checks
    /// `ctx.deadline()` and yields between steps (the scan does, per chunk);
    /// an index lookup of microseconds need not.
    fn search<'a>(&'a self, query: &'a Query<'a>, ctx: &'a SearchContext<'a>) -> EngineSearch<'a>;

    /// Called once after the store opened (every follower has been told
    /// the snapshot and the replayed log): an engine whose saved index
    /// turned out unusable rebuilds it here, and each reports how it
    /// started.
    fn opened(&self, _store: &Store) {}

    /// How the engine's index came to be at start ("loaded at LSN n in m
    /// ms", "rebuilt from the store: <reason>"), for the log and `nexus-bench startup`.
    fn origin(&self) -> String {
        "reads the store".to_owned()
    }

    /// Gauges for Stats, each named `<engine>_<what>` (sizes of the index's
    /// parts: how far the background build is behind, for instance).
    fn gauges(&self) -> Vec<(String, u64)> {
        Vec::new()
    }
}

/// A search in progress. Boxed so engines can be held as `dyn Engine`; one
/// allocation per engine per recall.
pub type EngineSearch<'a> = Pin<Box<dyn Future<Output = Result<Candidates, EngineError>> + Send + 'a>>;

/// What a search may use besides its query.
pub struct SearchContext<'a> {
    store: &'a Store,
    deadline: Deadline,
}

impl<'a> SearchContext<'a> {
    /// A search over `store`'s memories, to be done by `deadline`.
    pub fn new(store: &'a Store, deadline: Deadline) -> Self {
        Self { store, deadline }
    }

    /// The memories (read in place; see `store/read.rs`).
    pub fn store(&self) -> &'a Store {
        self.store
    }

    /// When the request must be answered by.
    pub fn deadline(&self) -> Deadline {
        self.deadline
    }
}

/// One engine's answer: its best candidates, best first.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidates {
    /// Which engine answered.
    pub engine: &'static str,
    /// Best first; ties broken by lower id first.
    pub hits: Vec<Candidate>,
}

/// A memory an engine proposes, with the engine's own scores.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Candidate {
    /// Memory id.
    pub id: u64,
    /// The engine's score (higher is better; scales differ between engines).
    pub score: f32,
    /// What the score is made of, for fusion and for "why" in the answer.
    pub signals: Signals,
}

/// The parts of a score an engine can name.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Signals {
    /// Vector similarity (cosine), when both sides have vectors.
    pub vector: Option<f32>,
    /// Lexical match (the scan: fraction of query terms found; BM25 later).
    pub lexical: Option<f32>,
}

/// Why an engine gave no answer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    /// The request's deadline passed during the search.
    #[error("{engine}: {source}")]
    DeadlineExceeded {
        /// The engine.
        engine: &'static str,
        /// How late, and how far it got.
        #[source]
        source: DeadlineExceeded,
    },
    /// The engine could not search (its message says why).
    #[error("{engine}: {reason}")]
    Failed {
        /// The engine.
        engine: &'static str,
        /// Why.
        reason: String,
    },
    /// The engine panicked during the search (isolated from the others).
    #[error("{engine}: panicked during the search")]
    Panicked {
        /// The engine.
        engine: &'static str,
    },
}
