//! The BM25 index over every namespace: one shard per namespace, one term
//! dictionary shared by all, updated in place by insert and delete.
//!
//! There is no commit step: an insert is in the posting lists when it
//! returns, so the owner (which serialises writes against searches with a
//! lock) sees it in the very next search. Namespace isolation is structural:
//! a search opens only its namespace's shard, whose statistics and postings
//! hold nothing of any other namespace.
//!
//! Not here: the scoring loop (`search.rs`), persistence (`persist.rs`).

use std::collections::HashMap;

use crate::recall::lexical::error::LexicalError;
use crate::recall::lexical::id_map::IdMap;
use crate::recall::lexical::search::{Bm25, Hit, LoopScratch};
use crate::recall::lexical::shard::Shard;
use crate::recall::lexical::tokenizer::{TermDict, TokenScratch, TokenizerConfig, intern_terms, word_spans};

/// BM25's term-frequency saturation: the textbook (Robertson) and Lucene
/// default; tf beyond a few occurrences adds little.
pub const DEFAULT_K1: f32 = 1.2;

/// BM25's length normalisation strength: the textbook and Lucene default.
pub const DEFAULT_B: f32 = 0.75;

/// Query terms searched at most: each term walks or probes a posting list,
/// so a pasted page as a query would cost a page's worth of lists; a
/// question is rarely over 30 terms.
pub const DEFAULT_MAX_QUERY_TERMS: usize = 64;

/// The largest `max_query_terms` a configuration may set.
pub const MAX_QUERY_TERMS_LIMIT: usize = 4096;

/// The index's settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LexicalConfig {
    /// See [`DEFAULT_K1`]; ≥ 0.
    pub k1: f32,
    /// See [`DEFAULT_B`]; within 0..=1.
    pub b: f32,
    /// How text becomes terms (fixed for an index's life: a saved index
    /// built with other settings is rebuilt).
    pub tokenizer: TokenizerConfig,
    /// See [`DEFAULT_MAX_QUERY_TERMS`].
    pub max_query_terms: usize,
}

impl Default for LexicalConfig {
    fn default() -> Self {
        Self {
            k1: DEFAULT_K1,
            b: DEFAULT_B,
            tokenizer: TokenizerConfig::default(),
            max_query_terms: DEFAULT_MAX_QUERY_TERMS,
        }
    }
}

impl LexicalConfig {
    /// Checks every setting's range.
    pub fn validate(&self) -> Result<(), LexicalError> {
        let problem = if !(self.k1.is_finite() && self.k1 >= 0.0) {
            format!("k1 {} must be finite and ≥ 0", self.k1)
        } else if !(0.0..=1.0).contains(&self.b) {
            format!("b {} outside 0..=1", self.b)
        } else if !(1..=MAX_QUERY_TERMS_LIMIT).contains(&self.max_query_terms) {
            format!(
                "max_query_terms {} outside 1..={MAX_QUERY_TERMS_LIMIT}",
                self.max_query_terms
            )
        } else {
            return Ok(());
        };
        Err(LexicalError::InvalidConfig(problem))
    }
}

/// Reusable buffers of a search; one per searching thread.
#[derive(Debug, Default)]
pub struct SearchScratch {
    tokens: TokenScratch,
    term_ids: Vec<u32>,
    query: Vec<(u32, u32)>,
    walk: LoopScratch,
}

impl SearchScratch {
    /// Empty buffers (they grow to the largest query and stay).
    pub fn new() -> Self {
        Self::default()
    }
}

/// Sizes, for metrics and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LexicalStats {
    /// Live documents in all namespaces.
    pub documents: usize,
    /// Namespaces with a shard.
    pub namespaces: usize,
    /// Distinct terms ever seen.
    pub terms: usize,
}

/// The BM25 inverted index.
#[derive(Debug)]
pub struct LexicalIndex {
    config: LexicalConfig,
    pub(crate) dict: TermDict,
    shard_of_name: HashMap<Box<str>, u32>,
    pub(crate) shards: Vec<(Box<str>, Shard)>,
    /// Live memory id → its shard.
    home: IdMap<u64, u32>,
    insert_scratch: InsertScratch,
}

#[derive(Debug, Default)]
struct InsertScratch {
    tokens: TokenScratch,
    term_ids: Vec<u32>,
    counted: Vec<(u32, u32)>,
}

impl LexicalIndex {
    /// An empty index.
    pub fn new(config: LexicalConfig) -> Result<Self, LexicalError> {
        config.validate()?;
        Ok(Self::with_dict(config, TermDict::new(config.tokenizer.stemming)))
    }

    pub(crate) fn with_dict(config: LexicalConfig, dict: TermDict) -> Self {
        Self {
            config,
            dict,
            shard_of_name: HashMap::new(),
            shards: Vec::new(),
            home: IdMap::default(),
            insert_scratch: InsertScratch::default(),
        }
    }

    /// An index of `documents` (memory id, namespace, text): what the owner
    /// does when the saved index is missing or corrupt.
    pub fn rebuild<'a>(
        config: LexicalConfig,
        documents: impl IntoIterator<Item = (u64, &'a str, &'a str)>,
    ) -> Result<Self, LexicalError> {
        let mut index = Self::new(config)?;
        for (id, namespace, text) in documents {
            index.insert(id, namespace, text);
        }
        Ok(index)
    }

    /// The settings.
    pub fn config(&self) -> &LexicalConfig {
        &self.config
    }

    /// Sizes.
    pub fn stats(&self) -> LexicalStats {
        LexicalStats {
            documents: self.home.len(),
            namespaces: self.shards.iter().filter(|(_, s)| s.live() > 0).count(),
            terms: self.dict.len(),
        }
    }

    /// The namespaces with a shard (some may be empty now).
    pub fn namespaces(&self) -> impl Iterator<Item = &str> {
        self.shards.iter().map(|(name, _)| &**name)
    }

    /// Whether memory `id` is indexed.
    pub fn contains(&self, id: u64) -> bool {
        self.home.contains_key(&id)
    }

    /// Indexes memory `id` of `namespace`, replacing what `id` held before
    /// (a Remember of an existing key reuses its id). Visible to the next
    /// search.
    pub fn insert(&mut self, id: u64, namespace: &str, text: &str) {
        self.delete(id);
        let shard = self.shard_index(namespace);
        let InsertScratch {
            tokens,
            term_ids,
            counted,
        } = &mut self.insert_scratch;
        term_ids.clear();
        intern_terms(self.config.tokenizer, &mut self.dict, text, tokens, |t| {
            term_ids.push(t)
        });
        count_runs(term_ids, counted);
        self.shards[shard as usize].1.add(id, counted.iter().copied());
        self.home.insert(id, shard);
    }

    /// Removes memory `id`; false if it was not indexed. Never returned by
    /// a search after this.
    pub fn delete(&mut self, id: u64) -> bool {
        let Some(shard) = self.home.remove(&id) else {
            return false;
        };
        let shard = &mut self.shards[shard as usize].1;
        shard.remove(id);
        if shard.wants_compaction() {
            shard.compact();
        }
        true
    }

    /// The best `k` memories of `namespace` for `query` that `filter`
    /// accepts, best first, into `out` (cleared first). A query with no
    /// searchable term (empty, only punctuation or stop words) finds nothing.
    pub fn search(
        &self,
        namespace: &str,
        query: &str,
        k: usize,
        filter: &dyn Fn(u64) -> bool,
        scratch: &mut SearchScratch,
        out: &mut Vec<Hit>,
    ) -> Result<(), LexicalError> {
        out.clear();
        self.query_terms(query, scratch)?;
        let Some(&shard) = self.shard_of_name.get(namespace) else {
            return Ok(());
        };
        let bm25 = Bm25 {
            k1: self.config.k1,
            b: self.config.b,
        };
        self.shards[shard as usize]
            .1
            .search(bm25, &scratch.query, k, filter, &mut scratch.walk, out);
        Ok(())
    }

    /// Fills `scratch.query` with the query's known terms and their counts;
    /// fails past `max_query_terms` tokens without reading further.
    fn query_terms(&self, query: &str, scratch: &mut SearchScratch) -> Result<(), LexicalError> {
        let SearchScratch {
            tokens,
            term_ids,
            query: counted,
            ..
        } = scratch;
        let (mut n_tokens, max) = (0, self.config.max_query_terms);
        term_ids.clear();
        for (_, word) in word_spans(query) {
            let word = tokens.normalize(word);
            let Some(word) = word.filter(|w| !self.config.tokenizer.stop_words.contains(w)) else {
                continue;
            };
            n_tokens += 1;
            if n_tokens > max {
                return Err(LexicalError::QueryTooLong { max });
            }
            term_ids.extend(self.dict.lookup(word));
        }
        count_runs(term_ids, counted);
        Ok(())
    }

    /// The shard of `namespace`, created if new.
    fn shard_index(&mut self, namespace: &str) -> u32 {
        if let Some(&shard) = self.shard_of_name.get(namespace) {
            return shard;
        }
        let shard = u32::try_from(self.shards.len()).expect("fewer than 2^32 namespaces");
        self.shards.push((namespace.into(), Shard::new()));
        self.shard_of_name.insert(namespace.into(), shard);
        shard
    }

    /// Adds a loaded shard as `namespace`'s (which has none yet); the id of
    /// a memory already in another shard if one is.
    pub(crate) fn add_shard(&mut self, namespace: &str, shard: Shard) -> Result<(), u64> {
        let index = self.shard_index(namespace);
        self.home.reserve(shard.live());
        for id in shard.live_ids() {
            if self.home.insert(id, index).is_some() {
                return Err(id);
            }
        }
        self.shards[index as usize].1 = shard;
        Ok(())
    }
}

/// Sorts `ids` and writes each distinct id with its count into `out`.
fn count_runs(ids: &mut [u32], out: &mut Vec<(u32, u32)>) {
    ids.sort_unstable();
    out.clear();
    for &id in ids.iter() {
        match out.last_mut() {
            Some((last, count)) if *last == id => *count += 1,
            _ => out.push((id, 1)),
        }
    }
}
