//! The built-in embedder: turns a memory's or a query's text into a vector with no
//! network, no GPU and no model server, so text-only memories are searchable by meaning.
//!
//! Two implementations of [`Embedder`]:
//! - [`StaticModel`]: a static token-embedding model in the model2vec directory format
//!   (tokenize without special tokens, mean the token rows, L2-normalise). The default
//!   model ([`StaticModel::builtin`], minilm-static-256 quantised to int8) is compiled
//!   into the binary, so the daemon works out of the box on a fresh clone;
//! - [`HashingEmbedder`]: feature hashing of the same normalised words and their
//!   character n-grams, for when the model is disabled.
//!
//! Calls do not allocate once a caller's [`EmbedScratch`] has grown to its working size:
//! each thread (or caller) owns one scratch and passes it to every call.
//!
//! Every embedding space has a [`ModelIdentity`] (name, checksum, dimension) so that
//! stored vectors can be tied to the model that made them; a vector made by another
//! model is not comparable and must be re-embedded.
//!
//! Not here: deciding which text gets embedded, storing vectors, searching them (the
//! store and the recall engines do that).

mod bert_tables;
mod hashing;
mod normalizer;
mod static_model;
mod wordpiece;

#[cfg(test)]
mod locomo_eval;
#[cfg(test)]
mod tests;

use std::fmt;

pub use hashing::{HashingConfig, HashingEmbedder};
pub use static_model::{ModelBytes, ModelError, StaticModel};

/// Something that turns text into a unit vector of a fixed dimension.
pub trait Embedder: Send + Sync {
    /// The dimension of every vector this embedder writes.
    fn dim(&self) -> usize;

    /// Which model (and so which vector space) this is.
    fn identity(&self) -> &ModelIdentity;

    /// Writes the embedding of `text` into `out` (whose length must be [`Embedder::dim`]).
    ///
    /// Returns how many tokens contributed. Zero means the text held nothing embeddable
    /// (empty, only whitespace or unknown tokens) and `out` is all zeros, which callers
    /// should treat as "no vector" rather than as a point in the space.
    fn embed(&self, text: &str, scratch: &mut EmbedScratch, out: &mut [f32]) -> Result<usize, EmbedError>;
}

/// What ties a stored vector to the model that made it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ModelIdentity {
    /// Human-readable name (the model directory's name, or `hashing`).
    pub name: String,
    /// CRC-32C of everything that determines the vectors (the model's files, or the
    /// hashing parameters): two identities with the same checksum make the same vectors.
    pub checksum: u32,
    /// Vector dimension.
    pub dim: u32,
}

impl fmt::Display for ModelIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{:08x}/{}", self.name, self.checksum, self.dim)
    }
}

/// Failure to embed one text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EmbedError {
    /// The output buffer does not have the embedder's dimension.
    #[error("output buffer holds {got} floats but the embedder writes {expected}")]
    DimensionMismatch { expected: usize, got: usize },
}

/// Buffers one caller reuses across calls, so embedding does not allocate per call.
///
/// Their sizes are bounded by the model's truncation (`max_length` tokens and the
/// characters before it) or, for the hashing embedder, by its word limit.
#[derive(Debug, Default)]
pub struct EmbedScratch {
    /// Normalised text (ping-pong buffers for multi-step normalisers).
    text_a: String,
    text_b: String,
    /// Token ids of the current text, in order.
    ids: Vec<u32>,
}

impl EmbedScratch {
    /// An empty scratch; it grows to the working size on first use.
    pub fn new() -> Self {
        Self::default()
    }

    /// The token ids of the last text a [`StaticModel`] embedded (before unknown
    /// tokens are dropped from the mean): for tests and diagnostics.
    pub fn token_ids(&self) -> &[u32] {
        &self.ids
    }
}

/// Scales `v` to unit length; leaves an all-zero vector as it is.
fn l2_normalize(v: &mut [f32]) {
    let norm_sq: f32 = v.iter().map(|x| x * x).sum();
    if norm_sq > 0.0 {
        let inv = 1.0 / norm_sq.sqrt();
        v.iter_mut().for_each(|x| *x *= inv);
    }
}

/// The first `max_chars` characters of `text`.
fn truncate_chars(text: &str, max_chars: usize) -> &str {
    if text.len() <= max_chars {
        return text;
    }
    text.char_indices().nth(max_chars).map_or(text, |(idx, _)| &text[..idx])
}

fn check_dim(expected: usize, out: &[f32]) -> Result<(), EmbedError> {
    if out.len() == expected {
        Ok(())
    } else {
        Err(EmbedError::DimensionMismatch {
            expected,
            got: out.len(),
        })
    }
}
