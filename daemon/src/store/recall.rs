//! Exact-scan recall (vector cosine and/or term overlap), in bounded slices.
//!
//! A recall must not stall anyone else, whatever its query (issue 7,
//! scenario 3). So:
//! - every step is linear (or n log k) in its input: the query's terms go
//!   into a hash map once; each memory's text is tokenized once and its words
//!   looked up there (a per-term stamp counts each query term once); the best
//!   `k` are kept in a heap of `k`;
//! - the state's lock is held only to take a [`Chunk`] of candidates (at most
//!   [`SLICE_MEMORIES`] memories or [`SLICE_TEXT_BYTES`] of text): the chunk
//!   shares the memories' bytes, which never change, and is scored with no
//!   lock held, so the apply thread (and so every writer) waits at most one
//!   slice;
//! - the caller checks the request's deadline and yields to other tasks
//!   between chunks (`Store::recall`).
//!
//! Not here: validating the request (`Store::recall`), the indexed recall
//! pipeline (a later issue).

use std::cmp::{Ordering, Reverse};
use std::collections::{BinaryHeap, HashMap};

#[cfg(test)]
use crate::store::state::{Cursor, State};
use crate::store::state::{Detached, MemoryView};

/// Most memories one chunk takes under the state's read lock: the lock is
/// held for a few microseconds (copying entries, not scoring them).
pub const SLICE_MEMORIES: usize = 512;
/// Most text (and vector bytes) one chunk takes, so the scoring between two
/// yields stays short even when every memory is 64 KiB long: scoring ran at
/// ~7 ns per byte of text in the test build (opt-level 1; a 78 MB scan took
/// 0.56 s in `store_boundary.rs`), ~2 ms per chunk, less in release.
pub const SLICE_TEXT_BYTES: usize = 256 << 10;

/// A recall query, validated.
#[derive(Debug, Clone, Copy)]
pub struct Query<'a> {
    /// Namespace to search ("" = all).
    pub namespace: &'a str,
    /// Query text.
    pub text: Option<&'a str>,
    /// Query vector (dimension already checked).
    pub vector: Option<&'a [f32]>,
    /// Results wanted.
    pub k: usize,
    /// Required tags (key, value).
    pub filter: &'a [(&'a str, &'a str)],
}

/// One scored result.
#[derive(Debug, Clone, PartialEq)]
pub struct Scored {
    /// Memory id.
    pub id: u64,
    /// Final score.
    pub score: f32,
    /// Cosine similarity, when both sides have vectors.
    pub vector: Option<f32>,
    /// Fraction of query terms found, when the query has text.
    pub lexical: Option<f32>,
}

/// Memories taken from the state under one short read lock.
pub type Chunk = Vec<Detached>;

/// A recall in progress: the query's terms, the best so far.
pub struct Scan<'q> {
    query: &'q Query<'q>,
    terms: QueryTerms,
    best: BinaryHeap<Reverse<Ranked>>,
    scanned: u64,
}

impl<'q> Scan<'q> {
    /// Prepares `query` (linear in its text).
    pub fn new(query: &'q Query<'q>) -> Self {
        Self {
            query,
            terms: QueryTerms::new(query.text.unwrap_or("")),
            best: BinaryHeap::with_capacity(query.k.min(SLICE_MEMORIES) + 1),
            scanned: 0,
        }
    }

    /// Scores a chunk (no lock held), keeping the best `k`.
    pub fn score(&mut self, chunk: &[Detached]) {
        for memory in chunk {
            self.scanned += 1;
            let view = memory.view();
            if !view.has_tags(self.query.filter) {
                continue;
            }
            let Some(scored) = self.score_one(view) else { continue };
            self.offer(Ranked {
                scored,
                memory: memory.clone(),
            });
        }
    }

    /// Memories scored so far.
    pub fn scanned(&self) -> u64 {
        self.scanned
    }

    /// The best `k`, best first (ties: lower id first), each with its memory.
    pub fn finish(self) -> Vec<(Scored, Detached)> {
        let mut best: Vec<Ranked> = self.best.into_iter().map(|Reverse(ranked)| ranked).collect();
        best.sort_by(|a, b| b.cmp(a));
        best.into_iter().map(|ranked| (ranked.scored, ranked.memory)).collect()
    }

    fn score_one(&mut self, view: MemoryView<'_>) -> Option<Scored> {
        let vector = self.query.vector.and_then(|q| view.vector_cosine(q));
        let lexical = (!self.terms.is_empty()).then(|| self.terms.overlap(view.text()));
        let score = match (vector, lexical) {
            (Some(v), Some(l)) => 0.5 * v + 0.5 * l,
            (Some(v), None) => v,
            (None, Some(l)) if l > 0.0 => l,
            _ => return None,
        };
        Some(Scored {
            id: view.id(),
            score,
            vector,
            lexical,
        })
    }

    /// Keeps `ranked` if it is among the best `k` so far: O(log k).
    fn offer(&mut self, ranked: Ranked) {
        if self.best.len() < self.query.k {
            self.best.push(Reverse(ranked));
        } else if let Some(mut worst) = self.best.peek_mut()
            && ranked > worst.0
        {
            *worst = Reverse(ranked);
        }
    }
}

/// A whole scan under one borrow of the state (tests; the store releases
/// its lock between chunks instead).
#[cfg(test)]
pub fn scan_all(state: &State, query: &Query<'_>) -> Vec<Scored> {
    let mut scan = Scan::new(query);
    let mut cursor = Cursor::default();
    while !cursor.is_done() {
        scan.score(&state.take_chunk(query.namespace, &mut cursor));
    }
    scan.finish().into_iter().map(|(scored, _)| scored).collect()
}

/// A scored memory, ordered by score, then by lower id (greater = better).
struct Ranked {
    scored: Scored,
    memory: Detached,
}

impl Ord for Ranked {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.scored.score.total_cmp(&other.scored.score)).then(other.scored.id.cmp(&self.scored.id))
    }
}

impl PartialOrd for Ranked {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Ranked {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Ranked {}

/// The query's distinct terms, each with a stamp saying which memory last
/// found it (so a term repeated in a text counts once, with no reset per memory).
struct QueryTerms {
    index: HashMap<String, usize>,
    stamps: Vec<u64>,
    /// Stamp of the memory being scored (starts at 1: 0 is "never found").
    current: u64,
    /// Reused lower-casing buffer.
    word: String,
}

impl QueryTerms {
    fn new(text: &str) -> Self {
        let mut index = HashMap::new();
        let mut word = String::new();
        for raw in words(text) {
            lower_into(raw, &mut word);
            if !index.contains_key(word.as_str()) {
                index.insert(word.clone(), index.len());
            }
        }
        Self {
            stamps: vec![0; index.len()],
            index,
            current: 0,
            word,
        }
    }

    fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// Fraction of the query's distinct terms that occur in `text`: linear in `text`.
    fn overlap(&mut self, text: &str) -> f32 {
        self.current += 1;
        let mut found = 0usize;
        for raw in words(text) {
            lower_into(raw, &mut self.word);
            if let Some(&term) = self.index.get(self.word.as_str())
                && self.stamps[term] != self.current
            {
                self.stamps[term] = self.current;
                found += 1;
            }
        }
        found as f32 / self.index.len() as f32
    }
}

/// Alphanumeric runs of `text`.
fn words(text: &str) -> impl Iterator<Item = &str> {
    text.split(|c: char| !c.is_alphanumeric()).filter(|w| !w.is_empty())
}

/// `word`, lower-cased char by char, into `out` (no allocation once `out` is big enough).
fn lower_into(word: &str, out: &mut String) {
    out.clear();
    if word.is_ascii() {
        out.push_str(word);
        out.make_ascii_lowercase();
    } else {
        out.extend(word.chars().flat_map(char::to_lowercase));
    }
}

/// Cosine similarity of two vectors of the same length.
pub fn cosine(query: &[f32], memory: impl Iterator<Item = f32>) -> f32 {
    let (mut dot, mut qq, mut mm) = (0f32, 0f32, 0f32);
    for (q, m) in query.iter().zip(memory) {
        dot += q * m;
        qq += q * q;
        mm += m * m;
    }
    if qq == 0.0 || mm == 0.0 {
        0.0
    } else {
        dot / (qq.sqrt() * mm.sqrt())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terms_count_once_each_whatever_the_case_or_repetition() {
        let mut terms = QueryTerms::new("Hiking hiking, CAROLINE went? Ünïcode");
        assert_eq!(terms.index.len(), 4);
        assert_eq!(terms.overlap("caroline caroline likes HIKING"), 0.5);
        assert_eq!(terms.overlap("nothing shared"), 0.0);
        assert_eq!(terms.overlap("went ünïcode hiking Caroline"), 1.0);
    }

    // Regression (issue 7, scenario 3): query terms were deduplicated with a
    // linear search each (quadratic), and each memory's terms too: a query of
    // ~900k distinct words took minutes. This one would take hours that way.
    #[test]
    fn a_query_of_a_million_distinct_words_is_prepared_and_scored_in_one_pass() {
        let query: String = (0..1_000_000).map(|n| format!("w{n} ")).collect();
        let mut terms = QueryTerms::new(&query);
        assert_eq!(terms.index.len(), 1_000_000);
        let text: String = (0..100_000).map(|n| format!("w{} ", n * 2)).collect();
        assert_eq!(terms.overlap(&text), 0.1);
    }
}
