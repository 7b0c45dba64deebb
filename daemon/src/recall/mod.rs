//! Recall: from a query to ranked memories.
//!
//! - [`query`]: what a client asks, validated into a [`Query`] with its
//!   [`Filter`] (namespace, tags, time range);
//! - [`engine`]: the [`Engine`] trait every search engine implements (its
//!   index follows the log through the store's `Follower` hook), and what
//!   engines answer ([`Candidates`]);
//! - [`scan`]: the exact scan, the reference engine;
//! - [`ann`], [`lexical`]: the accuracy (vector ANN) and intelligence (BM25,
//!   entity links) engines' indexes, and the engines over them:
//!   [`dense`] (the built-in embedder's space, `dense`, and the clients'
//!   vectors, `vector`) and [`lexical_engine`] (`lexical`);
//! - [`meta`]: each memory's namespace and time, for filters inside searches;
//! - [`index_dir`]: where engines save their indexes, crash-safely;
//! - [`pipeline`]: [`Recall`], which checks the route, validates, runs the
//!   engines, fuses their lists and reads the answer's memories from the store;
//! - [`error`]: why a recall failed ([`RecallError`]).
//!
//! Not here: the memories themselves (`store/`), the wire (`handler.rs`).

pub mod ann;
pub mod breaker;
pub mod cache;
pub mod dense;
pub mod engine;
pub mod error;
#[cfg(any(test, debug_assertions))]
pub mod faults;
pub mod fusion;
pub mod index_dir;
pub mod learning;
pub mod lexical;
pub mod lexical_engine;
pub mod meta;
pub mod pipeline;
pub mod query;
pub mod router;
pub mod scan;
pub mod setup;

#[cfg(test)]
mod conformance;
#[cfg(test)]
mod engines_tests;

pub use engine::{Candidate, Candidates, Engine, EngineError, EngineSearch, SearchContext, Signals};
pub use error::RecallError;
pub use pipeline::{Answer, Recall, Recalled};
pub use query::{DEFAULT_K, EngineName, Filter, Query, QueryInput, Route, TimeRange};
