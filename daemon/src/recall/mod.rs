//! Recall: from a query to ranked memories.
//!
//! - [`query`]: what a client asks, validated into a [`Query`] with its
//!   [`Filter`] (namespace, tags, time range);
//! - [`engine`]: the [`Engine`] trait every search engine implements (its
//!   index follows the log through the store's `Follower` hook), and what
//!   engines answer ([`Candidates`]);
//! - [`scan`]: the exact scan, the first engine;
//! - [`ann`], [`lexical`]: the accuracy (vector ANN) and intelligence (BM25,
//!   entity links) engines' indexes;
//! - [`pipeline`]: [`Recall`], which checks the route, validates, runs the
//!   engine and reads the answer's memories from the store;
//! - [`error`]: why a recall failed ([`RecallError`]).
//!
//! Not here: the memories themselves (`store/`), the wire (`handler.rs`).

pub mod ann;
pub mod engine;
pub mod error;
pub mod lexical;
pub mod pipeline;
pub mod query;
pub mod scan;

#[cfg(test)]
mod conformance;

pub use engine::{Candidate, Candidates, Engine, EngineError, EngineSearch, SearchContext, Signals};
pub use error::RecallError;
pub use pipeline::{Recall, Recalled};
pub use query::{DEFAULT_K, Filter, Query, QueryInput, Route, TimeRange};
