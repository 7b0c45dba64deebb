//! The exact-scan engine: every memory the filter accepts is scored (vector
//! cosine and/or term overlap), in bounded chunks. The first [`Engine`], and
//! the reference the indexed engines are measured against.
//!
//! A recall must not stall anyone else, whatever its query (issue 7,
//! scenario 3). So:
//! - every step is linear (or n log k) in its input: the query's terms go
//!   into a hash map once; each memory's text is tokenized once and its words
//!   looked up there (a per-term stamp counts each query term once); the best
//!   `k` are kept in a heap of `k`;
//! - memories come from `Store::scan` a chunk at a time: the state's lock is
//!   held only to take a chunk, which is scored with no lock held; between
//!   chunks the deadline is checked and other tasks get the worker thread.
//!
//! Scores: cosine similarity when the query and the memory have vectors, the
//! fraction of the query's distinct terms found in the text when the query
//! has text, their mean when both; a memory with neither a vector score nor
//! a shared term is not a candidate. It follows nothing: it reads the state.

use std::cmp::{Ordering, Reverse};
use std::collections::{BinaryHeap, HashMap};

use rkyv::rend::f32_le;

use crate::recall::engine::{Candidate, Candidates, Engine, EngineError, EngineSearch, SearchContext, Signals};
use crate::recall::query::Query;
use crate::store::{Follower, IndexChange, Memory, MemoryView};

/// The scan engine's name.
pub const SCAN: &str = "scan";

/// Largest heap reserved up front, whatever `k` a query asks for: the heap
/// grows past it only as candidates arrive.
const HEAP_RESERVE: usize = 512;

/// The exact scan over the store's memories.
#[derive(Debug, Default)]
pub struct ScanEngine;

impl Follower for ScanEngine {
    fn name(&self) -> &'static str {
        SCAN
    }

    /// Nothing to keep: the scan reads the state itself.
    fn follow(&self, _change: &IndexChange<'_>) {}
}

impl Engine for ScanEngine {
    fn search<'a>(&'a self, query: &'a Query<'a>, ctx: &'a SearchContext<'a>) -> EngineSearch<'a> {
        Box::pin(async move {
            let mut scan = Scan::new(query);
            let namespace = query.filter().namespace;
            (ctx.store()
                .scan(namespace, ctx.deadline(), |chunk| scan.score(chunk))
                .await)
                .map_err(|source| EngineError::DeadlineExceeded { engine: SCAN, source })?;
            Ok(Candidates {
                engine: SCAN,
                hits: scan.finish(),
            })
        })
    }
}

/// A scan in progress: the query's terms, the best so far.
struct Scan<'q> {
    query: &'q Query<'q>,
    terms: QueryTerms,
    best: BinaryHeap<Reverse<Ranked>>,
}

impl<'q> Scan<'q> {
    /// Prepares `query` (linear in its text).
    fn new(query: &'q Query<'q>) -> Self {
        Self {
            query,
            terms: QueryTerms::new(query.text().unwrap_or("")),
            best: BinaryHeap::with_capacity(query.k().min(HEAP_RESERVE) + 1),
        }
    }

    /// Scores a chunk (no lock held), keeping the best `k` the filter accepts.
    fn score(&mut self, chunk: &[Memory]) {
        for memory in chunk {
            let view = memory.view();
            if !self.query.filter().accepts(view) {
                continue;
            }
            if let Some(candidate) = self.score_one(view) {
                self.offer(Ranked(candidate));
            }
        }
    }

    /// The best `k`, best first (ties: lower id first).
    fn finish(self) -> Vec<Candidate> {
        let mut best: Vec<Ranked> = self.best.into_iter().map(|Reverse(ranked)| ranked).collect();
        best.sort_by(|a, b| b.cmp(a));
        best.into_iter().map(|Ranked(candidate)| candidate).collect()
    }

    fn score_one(&mut self, view: MemoryView<'_>) -> Option<Candidate> {
        let vector = self.query.vector().and_then(|q| vector_cosine(q, view.vector()?));
        let lexical = (!self.terms.is_empty()).then(|| self.terms.overlap(view.text()));
        let score = match (vector, lexical) {
            (Some(v), Some(l)) => 0.5 * v + 0.5 * l,
            (Some(v), None) => v,
            (None, Some(l)) if l > 0.0 => l,
            _ => return None,
        };
        Some(Candidate {
            id: view.id(),
            score,
            signals: Signals { vector, lexical },
        })
    }

    /// Keeps `ranked` if it is among the best `k` so far: O(log k).
    fn offer(&mut self, ranked: Ranked) {
        if self.best.len() < self.query.k() {
            self.best.push(Reverse(ranked));
        } else if let Some(mut worst) = self.best.peek_mut()
            && ranked > worst.0
        {
            *worst = Reverse(ranked);
        }
    }
}

/// A candidate, ordered by score, then by lower id (greater = better).
struct Ranked(Candidate);

impl Ord for Ranked {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.0.score.total_cmp(&other.0.score)).then(other.0.id.cmp(&self.0.id))
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

/// Cosine similarity with a stored vector of the same length (`None` otherwise).
fn vector_cosine(query: &[f32], memory: &[f32_le]) -> Option<f32> {
    (memory.len() == query.len()).then(|| cosine(query, memory.iter().map(|x| x.to_native())))
}

/// Cosine similarity of two vectors of the same length.
fn cosine(query: &[f32], memory: impl Iterator<Item = f32>) -> f32 {
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
mod tests;
