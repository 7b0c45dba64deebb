//! Preprocessing on Remember (issue 9, item 4): what a text goes through
//! before it is stored, as pure building blocks the store's write path
//! calls.
//!
//! - [`chunk`]: long texts cut into overlapping ≈ 400-token chunks, each a
//!   byte range of the original with its index, so a recall can put the
//!   original back together;
//! - [`minhash`]: MinHash signatures over word 3-shingles and LSH banding;
//! - [`dedup`]: near-duplicate detection per namespace and the keep / merge
//!   / skip policy as a pure decision.
//!
//! Entity extraction, the third preprocessing step, lives with the entity
//! index in `recall::lexical::entities`.
//!
//! - [`neardup`]: the near-duplicate index as a store follower;
//! - [`remember`]: carrying the decisions out on a Remember (chunks as
//!   linked memories, duplicates linked, skipped or merged, the report).

pub mod chunk;
pub mod dedup;
pub mod minhash;
pub mod neardup;
pub mod remember;

pub use chunk::{Chunk, ChunkConfig, ChunkScratch, reassemble};
pub use dedup::{DedupConfig, DuplicateDecision, DuplicatePolicy, NearDupIndex, NearDuplicate, decide};
pub use minhash::{LshParams, MinHasher, Signature};

/// A preprocessing setting that cannot work, named with its values.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum PreprocessConfigError {
    /// A chunk would not get past its predecessor.
    #[error(
        "chunking needs overlap_tokens ({overlap_tokens}) + boundary_window_tokens ({boundary_window_tokens}) < max_tokens ({max_tokens})"
    )]
    ChunkWithoutProgress {
        /// Tokens repeated from the previous chunk.
        overlap_tokens: usize,
        /// Tokens searched for a sentence end before the limit.
        boundary_window_tokens: usize,
        /// Tokens per chunk.
        max_tokens: usize,
    },
    /// The near-duplicate threshold is not a Jaccard similarity, or no
    /// candidate may be examined.
    #[error("near-duplicate threshold {threshold} outside (0, 1] or max_candidates {max_candidates} is 0")]
    NearDuplicate {
        /// The Jaccard threshold.
        threshold: f64,
        /// Candidates examined per lookup.
        max_candidates: usize,
    },
}
