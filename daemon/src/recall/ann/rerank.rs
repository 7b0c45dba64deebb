//! The last step of a search: the int8 candidates re-scored with the exact
//! f32 cosine (and, optionally, a recency term), then cut to `k`.
//!
//! The index holds only int8 codes; the f32 vectors belong to the store, so
//! the caller lends them through [`VectorSource`]. Re-ranking the `ef` best
//! int8 candidates brings int8 HNSW back to the f32 recall curve
//! (RESEARCH.md: ~10–25 % extra time). A candidate whose vector the source no
//! longer has (forgotten meanwhile) is dropped.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap};

/// The f32 vectors of the indexed ids, owned by the caller (the store).
pub trait VectorSource {
    /// `id`'s vector, or None if it has none now.
    fn vector(&self, id: u64) -> Option<&[f32]>;
}

impl VectorSource for HashMap<u64, Vec<f32>> {
    fn vector(&self, id: u64) -> Option<&[f32]> {
        self.get(&id).map(Vec::as_slice)
    }
}

/// Row-major vectors whose id is their row number (benchmarks, tests).
#[derive(Debug, Clone, Copy)]
pub struct Rows<'a> {
    /// `n · dim` values.
    pub values: &'a [f32],
    /// Values per row.
    pub dim: usize,
}

impl VectorSource for Rows<'_> {
    fn vector(&self, id: u64) -> Option<&[f32]> {
        let start = usize::try_from(id).ok()?.checked_mul(self.dim)?;
        self.values.get(start..start.checked_add(self.dim)?)
    }
}

/// Recency as a scoring term: `score = cosine + weight · 0.5^(age / half_life)`.
/// It reorders the candidate pool (widened when recency is on), it does not
/// bring in memories the similarity search did not find.
#[derive(Clone, Copy)]
pub struct Recency<'a> {
    /// Weight of the term (0: off; 0.1 lets a fresh memory pass one ~0.1
    /// less similar).
    pub weight: f32,
    /// Age at which the term halves, in milliseconds (> 0).
    pub half_life_ms: i64,
    /// The present, in the same clock as `created_at_ms`.
    pub now_ms: i64,
    /// An id's creation time (None: no recency term for it).
    pub created_at_ms: &'a dyn Fn(u64) -> Option<i64>,
}

impl std::fmt::Debug for Recency<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recency")
            .field("weight", &self.weight)
            .field("half_life_ms", &self.half_life_ms)
            .field("now_ms", &self.now_ms)
            .finish_non_exhaustive()
    }
}

impl Recency<'_> {
    fn boost(&self, id: u64) -> f32 {
        let Some(created) = (self.created_at_ms)(id) else {
            return 0.0;
        };
        let age_ms = self.now_ms.saturating_sub(created).max(0) as f64;
        let halvings = age_ms / self.half_life_ms.max(1) as f64;
        self.weight * 0.5f64.powf(halvings) as f32
    }
}

/// One result.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Hit {
    /// The memory id.
    pub id: u64,
    /// What the results are ordered by: `similarity` plus the recency term.
    pub score: f32,
    /// Exact f32 cosine with the query.
    pub similarity: f32,
}

/// A candidate from the int8 stage.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Candidate {
    pub dist: f32,
    pub id: u64,
}

impl Eq for Candidate {}

impl Ord for Candidate {
    fn cmp(&self, other: &Self) -> Ordering {
        self.dist.total_cmp(&other.dist).then(self.id.cmp(&other.id))
    }
}

impl PartialOrd for Candidate {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// The best `capacity` candidates seen (a max-heap on distance).
#[derive(Debug)]
pub(crate) struct Pool {
    capacity: usize,
    heap: BinaryHeap<Candidate>,
}

impl Pool {
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity,
            heap: BinaryHeap::with_capacity(capacity + 1),
        }
    }

    #[inline]
    pub fn offer(&mut self, dist: f32, id: u64) {
        if self.heap.len() < self.capacity {
            self.heap.push(Candidate { dist, id });
        } else if let Some(mut worst) = self.heap.peek_mut()
            && dist < worst.dist
        {
            *worst = Candidate { dist, id };
        }
    }

    /// The ids of the best `count` candidates (each id once).
    pub fn into_best_ids(self, count: usize) -> Vec<u64> {
        let mut best = self.heap.into_vec();
        best.sort_unstable();
        let mut ids: Vec<u64> = Vec::with_capacity(count.min(best.len()));
        for candidate in best {
            if ids.len() == count {
                break;
            }
            if !ids.contains(&candidate.id) {
                ids.push(candidate.id);
            }
        }
        ids
    }
}

/// Scores `ids` exactly against the unit query, best first, at most `k`.
pub(crate) fn rerank<V: VectorSource + ?Sized>(
    ids: &[u64],
    unit_query: &[f32],
    vectors: &V,
    recency: Option<&Recency<'_>>,
    k: usize,
) -> Vec<Hit> {
    let mut hits: Vec<Hit> = ids
        .iter()
        .filter_map(|&id| {
            let similarity = cosine_to_unit(unit_query, vectors.vector(id)?)?;
            let score = similarity + recency.map_or(0.0, |r| r.boost(id));
            Some(Hit { id, score, similarity })
        })
        .collect();
    hits.sort_unstable_by(|a, b| b.score.total_cmp(&a.score).then(a.id.cmp(&b.id)));
    hits.truncate(k);
    hits
}

/// Cosine of `vector` with a unit-length `unit`; None if `vector` has another
/// length, is zero, or is not finite.
fn cosine_to_unit(unit: &[f32], vector: &[f32]) -> Option<f32> {
    if vector.len() != unit.len() {
        return None;
    }
    let (dot, norm2) = dot_and_norm(unit, vector);
    let cosine = dot / norm2.sqrt();
    if cosine.is_finite() {
        return Some(cosine);
    }
    // A huge or subnormal vector overflows or underflows f32 sums: retry in f64.
    let (dot, norm2) = unit.iter().zip(vector).fold((0.0f64, 0.0f64), |(d, n), (u, v)| {
        (d + f64::from(*u) * f64::from(*v), n + f64::from(*v) * f64::from(*v))
    });
    let cosine = (dot / norm2.sqrt()) as f32;
    cosine.is_finite().then_some(cosine)
}

/// Lanes of independent f32 sums: lets the compiler vectorise the loop
/// (a single running sum is a chain of dependent adds it may not reorder).
const LANES: usize = 16;

/// `(Σ u·v, Σ v²)` over equal-length slices, in `LANES` partial sums.
fn dot_and_norm(unit: &[f32], vector: &[f32]) -> (f32, f32) {
    let (mut dots, mut norms) = ([0.0f32; LANES], [0.0f32; LANES]);
    let (units, vectors) = (unit.chunks_exact(LANES), vector.chunks_exact(LANES));
    let (unit_rest, vector_rest) = (units.remainder(), vectors.remainder());
    for (u, v) in units.zip(vectors) {
        for lane in 0..LANES {
            dots[lane] += u[lane] * v[lane];
            norms[lane] += v[lane] * v[lane];
        }
    }
    let rest = unit_rest
        .iter()
        .zip(vector_rest)
        .fold((0.0, 0.0), |(d, n), (u, v)| (d + u * v, n + v * v));
    (dots.iter().sum::<f32>() + rest.0, norms.iter().sum::<f32>() + rest.1)
}
