//! The intelligence engine's indexes (issue 9, item 3): a BM25 inverted index
//! and entity links between memories.
//!
//! - [`tokenizer`]: Unicode words (UAX #29), lowercased, optional stop words
//!   and Snowball stemming, terms interned to u32 ids;
//! - [`LexicalIndex`]: one shard per namespace (statistics and postings of
//!   its own, so nothing leaks between namespaces), updated in place by
//!   insert and delete and visible to the next search, searched
//!   document-at-a-time with MaxScore pruning, a caller's filter applied
//!   before the top k;
//! - [`persist`]: a checksummed rkyv image, and a rebuild from the store's
//!   documents when it is missing or corrupt;
//! - [`entities`]: entities found in text as byte spans (names, numbers,
//!   dates, e-mails, URLs, configured keywords), and the [`EntityIndex`]
//!   linking memories that share one ([`entity_index`]).
//!
//! Not here: which memories exist (the store), deciding when to save, and
//! fusing lexical results with other engines' (the recall pipeline).

pub mod entities;
pub mod entity_index;
pub mod error;
pub mod id_map;
mod index;
pub mod persist;
mod search;
mod shard;
pub mod synthetic;
pub mod tokenizer;

#[cfg(test)]
mod locomo_eval;
#[cfg(test)]
mod tests;

pub use entities::{EntityExtractor, EntityKind, EntitySpan, ExtractScratch, KeywordList};
pub use entity_index::{EntityConfig, EntityIndex, EntityScratch, Related};
pub use error::{ImageFault, LexicalError};
pub use index::{
    DEFAULT_B, DEFAULT_K1, DEFAULT_MAX_QUERY_TERMS, LexicalConfig, LexicalIndex, LexicalStats, MAX_QUERY_TERMS_LIMIT,
    SearchScratch,
};
pub use persist::{LoadReport, LoadSource};
pub use search::Hit;
pub use shard::{COMPACT_DEAD_FRACTION, COMPACT_MIN_DEAD};
pub use tokenizer::{StopWords, TokenizerConfig, word_spans};
