//! The BM25 search of one shard: document-at-a-time over the query terms'
//! posting lists, with MaxScore pruning and a bounded top-k heap.
//!
//! Score of a document d for a query q (Robertson–Spärck Jones IDF in
//! Lucene's always-positive form):
//!
//! ```text
//! score(d) = Σ_{t ∈ q} qtf(t) · idf(t) · tf(t,d)·(k1+1) / (tf(t,d) + k1·(1 − b + b·|d|/avgdl))
//! idf(t)   = ln(1 + (N − df(t) + 0.5) / (df(t) + 0.5))
//! ```
//!
//! MaxScore (Turtle & Flood 1995): each term has an upper bound on what it
//! can add (its weight at its largest tf and shortest document). Once the
//! heap holds k documents, the terms whose bounds together cannot lift a
//! document past the k-th score are "non-essential": their lists are no
//! longer walked, only probed (a galloping seek) for documents found through
//! the other terms, and only while the bound says they could still matter.
//! The result is exactly the exhaustive top k; the cost is at most linear in
//! the postings of the query's terms, and much less when a common word
//! (long list, small weight) sits beside a rare one.
//!
//! A document is checked against the tombstones and the caller's filter
//! before it enters the heap, so a filtered or deleted document never takes
//! a place in the top k. Ties are broken by the smaller memory id.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use crate::recall::lexical::shard::{Posting, Shard};

/// Relative slack added to each term's upper bound, so rounding in the sum
/// of actual contributions can never exceed the sum of bounds.
const BOUND_SLACK: f32 = 1e-5;

/// One result: a memory and its BM25 score.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Hit {
    /// The memory.
    pub id: u64,
    /// Its BM25 score (higher is better).
    pub score: f32,
}

/// The BM25 constants of one search.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Bm25 {
    pub(crate) k1: f32,
    pub(crate) b: f32,
}

/// Reusable buffers of the search loop.
#[derive(Debug, Default)]
pub(crate) struct LoopScratch {
    cursors: Vec<Cursor>,
    heap: BinaryHeap<Candidate>,
}

/// A query term's position in its posting list.
#[derive(Debug, Clone, Copy)]
struct Cursor {
    list: u32,
    pos: usize,
    weight: f32,
    upper: f32,
    /// Sum of `upper` over this cursor and every one before it.
    prefix: f32,
}

/// The length normalisation of one search: `tf·(k1+1) / (tf + a + per_len·|d|)`.
#[derive(Debug, Clone, Copy)]
struct TfNorm {
    k1_plus_1: f32,
    a: f32,
    per_len: f32,
}

impl TfNorm {
    fn new(bm25: Bm25, avg_len: f32) -> Self {
        Self {
            k1_plus_1: bm25.k1 + 1.0,
            a: bm25.k1 * (1.0 - bm25.b),
            per_len: if avg_len > 0.0 { bm25.k1 * bm25.b / avg_len } else { 0.0 },
        }
    }

    fn part(&self, tf: u32, len: u32) -> f32 {
        let tf = tf as f32;
        tf * self.k1_plus_1 / (tf + self.a + self.per_len * len as f32)
    }
}

/// A document in the heap. Ordered worst first (lowest score, then largest
/// id), so the heap's top is the one to replace.
#[derive(Debug, Clone, Copy)]
struct Candidate {
    score: f32,
    id: u64,
}

impl Ord for Candidate {
    fn cmp(&self, other: &Self) -> Ordering {
        other.score.total_cmp(&self.score).then(self.id.cmp(&other.id))
    }
}

impl PartialOrd for Candidate {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Candidate {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Candidate {}

/// The inverse document frequency of a term in `df` of `n` documents.
pub(crate) fn idf(n: u32, df: u32) -> f32 {
    let (n, df) = (n as f32, df as f32);
    (1.0 + (n - df + 0.5) / (df + 0.5)).ln()
}

impl Shard {
    /// The best `k` live documents accepted by `filter` for `query` (distinct
    /// global term ids with their counts in the query), best first, in `out`.
    pub(crate) fn search(
        &self,
        bm25: Bm25,
        query: &[(u32, u32)],
        k: usize,
        filter: &dyn Fn(u64) -> bool,
        scratch: &mut LoopScratch,
        out: &mut Vec<Hit>,
    ) {
        let live = u32::try_from(self.live()).expect("slots are u32");
        if k == 0 || live == 0 {
            return;
        }
        let norm = TfNorm::new(bm25, self.live_len as f32 / live as f32);
        self.open_cursors(query, live, norm, &mut scratch.cursors);
        scratch.heap.clear();
        self.walk(norm, k, filter, scratch);
        while let Some(c) = scratch.heap.pop() {
            out.push(Hit {
                id: c.id,
                score: c.score,
            });
        }
        out.reverse();
    }

    /// One cursor per query term with live postings, sorted by upper bound.
    fn open_cursors(&self, query: &[(u32, u32)], live: u32, norm: TfNorm, cursors: &mut Vec<Cursor>) {
        cursors.clear();
        for &(term, query_tf) in query {
            let Some(list) = self.list_of(term) else { continue };
            let postings = &self.lists[list as usize];
            if postings.live_df == 0 {
                continue;
            }
            let weight = idf(live, postings.live_df) * query_tf as f32;
            let upper = weight * norm.part(postings.max_tf, postings.min_len) * (1.0 + BOUND_SLACK);
            cursors.push(Cursor {
                list,
                pos: 0,
                weight,
                upper,
                prefix: 0.0,
            });
        }
        cursors.sort_by(|a, b| a.upper.total_cmp(&b.upper));
        let mut sum = 0.0;
        for cursor in cursors.iter_mut() {
            sum += cursor.upper;
            cursor.prefix = sum;
        }
    }

    /// The document-at-a-time loop with MaxScore pruning.
    fn walk(&self, norm: TfNorm, k: usize, filter: &dyn Fn(u64) -> bool, scratch: &mut LoopScratch) {
        let LoopScratch { cursors, heap } = scratch;
        let mut threshold = f32::NEG_INFINITY;
        let mut first_essential = 0;
        while first_essential < cursors.len() {
            let Some(slot) = self.next_slot(&cursors[first_essential..]) else {
                break;
            };
            let len = self.lens[slot as usize];
            let mut score = self.score_essential(norm, slot, len, &mut cursors[first_essential..]);
            if self.is_dead(slot) {
                continue;
            }
            score = self.score_rest(norm, slot, len, score, threshold, &mut cursors[..first_essential]);
            let candidate = Candidate {
                score,
                id: self.ids[slot as usize],
            };
            let fits = heap.len() < k || heap.peek().is_some_and(|worst| candidate < *worst);
            if !fits || !filter(candidate.id) {
                continue;
            }
            if heap.len() == k {
                heap.pop();
            }
            heap.push(candidate);
            if heap.len() == k {
                threshold = heap.peek().expect("k ≥ 1").score;
                while first_essential < cursors.len() && cursors[first_essential].prefix < threshold {
                    first_essential += 1;
                }
            }
        }
    }

    /// The smallest slot under any of `cursors`, if any is not exhausted.
    fn next_slot(&self, cursors: &[Cursor]) -> Option<u32> {
        cursors
            .iter()
            .filter_map(|c| self.lists[c.list as usize].entries.get(c.pos).map(|p| p.slot))
            .min()
    }

    /// Adds the contributions of the cursors sitting on `slot` and moves them on.
    fn score_essential(&self, norm: TfNorm, slot: u32, len: u32, cursors: &mut [Cursor]) -> f32 {
        let mut score = 0.0;
        for cursor in cursors {
            let postings = &self.lists[cursor.list as usize];
            if let Some(posting) = postings.entries.get(cursor.pos)
                && posting.slot == slot
            {
                score += cursor.weight * norm.part(posting.tf, len);
                cursor.pos += 1;
            }
        }
        score
    }

    /// Adds the non-essential terms' contributions, highest bound first,
    /// while they could still lift `score` to `threshold`.
    fn score_rest(
        &self,
        norm: TfNorm,
        slot: u32,
        len: u32,
        mut score: f32,
        threshold: f32,
        cursors: &mut [Cursor],
    ) -> f32 {
        for cursor in cursors.iter_mut().rev() {
            if score + cursor.prefix < threshold {
                break;
            }
            let entries = &self.lists[cursor.list as usize].entries;
            cursor.pos = seek(entries, cursor.pos, slot);
            if let Some(posting) = entries.get(cursor.pos)
                && posting.slot == slot
            {
                score += cursor.weight * norm.part(posting.tf, len);
            }
        }
        score
    }
}

/// The first position at or after `from` whose slot is ≥ `target`
/// (galloping, then a binary search in the last step).
fn seek(entries: &[Posting], from: usize, target: u32) -> usize {
    let rest = &entries[from.min(entries.len())..];
    let mut bound = 1;
    while bound < rest.len() && rest[bound].slot < target {
        bound *= 2;
    }
    let low = bound / 2;
    let high = (bound + 1).min(rest.len());
    from + low + rest[low.min(high)..high].partition_point(|p| p.slot < target)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seek_finds_the_first_slot_not_below_target() {
        let entries: Vec<Posting> = (0..100).map(|i| Posting { slot: i * 3, tf: 1 }).collect();
        for from in [0, 1, 17, 99, 100] {
            for target in [0, 1, 3, 50, 51, 297, 298, 1000] {
                let expected = from.max(entries.partition_point(|p| p.slot < target));
                assert_eq!(seek(&entries, from, target), expected, "from {from} target {target}");
            }
        }
    }

    #[test]
    fn idf_is_positive_and_falls_with_df() {
        assert!(idf(10, 10) > 0.0);
        assert!(idf(10, 1) > idf(10, 5));
    }
}
