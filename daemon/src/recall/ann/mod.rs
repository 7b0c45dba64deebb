//! The accuracy engine's index: approximate nearest neighbours over int8
//! vectors, with an exact f32 re-rank, filters applied during the search,
//! deletes, and a recency option (issue 9, item 2).
//!
//! Shape (RESEARCH.md, "Vector search", explains why no crate fit):
//! - a small mutable **tail** ([`tail`]), scanned exactly, so an inserted
//!   vector is visible to the very next search;
//! - immutable HNSW **segments** ([`segment`], [`hnsw`]): int8 codes with a
//!   per-vector scale ([`quant`]), u32 adjacency, all flat little-endian
//!   arrays that a file can be mapped into and searched in place;
//! - **tombstones**: a delete sets a bit on the segment node (or drops the
//!   tail entry); a deleted id is never returned;
//! - **builds off the write path**: [`AnnIndex::build_pending`] turns the
//!   tail into graph and [`AnnIndex::compact`] merges segments and drops
//!   tombstones; the owner runs them on its own thread while searches go on
//!   (the tail being built stays searchable, exactly, until its segment is
//!   published in one step under the state's write lock);
//! - a search quantises the query, scans the tail, walks each segment's
//!   graph with the filter applied during traversal ([`filter`]; an exact
//!   scan when the filter admits few ids or the walk runs over budget), keeps
//!   the best `ef` candidates by int8 distance and re-ranks them with the
//!   caller's f32 vectors ([`rerank`]), optionally with a recency term.
//!
//! Similarity is cosine: vectors are made unit length before quantisation.
//! Not here: which vectors exist (the store owns them and their f32 values),
//! persisting the tombstones (re-applied from the store after loading
//! segments), scheduling builds (the owner's thread).

mod build;
mod bytes;
pub mod distance;
pub mod error;
pub mod filter;
pub mod hnsw;
pub mod quant;
pub mod rerank;
pub mod segment;
pub mod synthetic;
mod tail;
#[cfg(test)]
mod tests;

use std::cell::RefCell;
use std::collections::HashSet;
use std::sync::{Arc, Mutex, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

pub use build::{BuildKind, BuildReport};
pub use distance::DotKernel;
pub use error::{AnnError, SegmentFault};
pub use filter::{AcceptAll, Filter, FnFilter, IdBitset};
pub use hnsw::HnswParams;
pub use rerank::{Hit, Recency, Rows, VectorSource};
pub use segment::Segment;

use crate::recall::ann::hnsw::{Query, Scratch};
use crate::recall::ann::quant::{checked_norm, quantize_with_norm};
use crate::recall::ann::rerank::{Pool, rerank};
use crate::recall::ann::tail::Tail;

/// Links per node (level 0 gets twice as many). Measured with
/// `nexus-bench ann` (see ARCHITECTURE.md): 16 is FAISS's and hnswlib's
/// usual value and met the recall target at the lowest search cost.
pub const DEFAULT_M: usize = 16;
/// Candidates kept while inserting: graph quality against build time. 200
/// (FAISS's and hnswlib's usual value) lifts recall@10 at ef 32 on the
/// LoCoMo embeddings from 0.982 (100) to 0.988, for twice the build time.
pub const DEFAULT_EF_CONSTRUCTION: usize = 200;
/// Candidates kept while searching (per graph).
pub const DEFAULT_EF_SEARCH: usize = 32;
/// Int8 candidates re-scored with the exact f32 cosine (at least k). Each
/// costs a random read of an f32 row (1.5 KiB at 384-d), as much memory as
/// four int8 distances. Measured: 16 re-ranked give the same recall@10 as 32
/// on both the synthetic set and the LoCoMo embeddings, ~12 % faster.
pub const DEFAULT_RERANK: usize = 16;
/// Tail size that makes `build_pending` build: every search scans the tail
/// (~10 ns per 384-d vector), so 1,024 costs ~10 µs per search.
pub const DEFAULT_TAIL_THRESHOLD: usize = 1024;
/// Segments above which `compact` merges: each segment costs a graph walk
/// per search.
pub const DEFAULT_MAX_SEGMENTS: usize = 4;
/// Share of dead nodes above which `compact` rebuilds a segment without
/// them (dead nodes still cost traversal).
pub const DEFAULT_MAX_DEAD_FRACTION: f64 = 0.2;
/// A filter expected to admit at most this share of the index makes the
/// search scan exactly: walking the graph would expand ~ef/share nodes.
pub const DEFAULT_EXACT_SCAN_SELECTIVITY: f64 = 0.02;
/// Segments this small are scanned, not walked (a scan of 2,048 codes costs
/// about what a walk with ef = 32 does).
pub const DEFAULT_EXACT_SCAN_MAX_NODES: usize = 2048;
/// A filtered walk that expands more than this share of a segment's nodes
/// stops and scans the segment instead (bounds a selective filter's cost at
/// about 1.3 scans).
pub const DEFAULT_VISIT_BUDGET_FRACTION: f64 = 0.3;
/// A segment grows by absorbing new tails while it is at most this many
/// times the tail; past that, a tail becomes a new segment (copying a large
/// graph for a small tail would dominate the build).
pub const DEFAULT_EXTEND_RATIO: usize = 16;
/// With recency on, this many times more candidates are re-ranked, so a
/// recent memory slightly less similar can still rise into the top k.
pub const RECENCY_POOL_FACTOR: usize = 4;

/// The index's settings.
#[derive(Debug, Clone, PartialEq)]
pub struct AnnConfig {
    /// Vector dimension (fixed).
    pub dim: usize,
    /// Graph building (`m`, `ef_construction`, seed).
    pub hnsw: HnswParams,
    /// Default search effort (candidates kept per graph).
    pub ef_search: usize,
    /// See [`DEFAULT_RERANK`].
    pub rerank: usize,
    /// See [`DEFAULT_TAIL_THRESHOLD`].
    pub tail_threshold: usize,
    /// See [`DEFAULT_MAX_SEGMENTS`].
    pub max_segments: usize,
    /// See [`DEFAULT_MAX_DEAD_FRACTION`].
    pub max_dead_fraction: f64,
    /// See [`DEFAULT_EXACT_SCAN_SELECTIVITY`].
    pub exact_scan_selectivity: f64,
    /// See [`DEFAULT_EXACT_SCAN_MAX_NODES`].
    pub exact_scan_max_nodes: usize,
    /// See [`DEFAULT_VISIT_BUDGET_FRACTION`].
    pub visit_budget_fraction: f64,
    /// See [`DEFAULT_EXTEND_RATIO`].
    pub extend_ratio: usize,
    /// Most nodes per segment (≤ [`hnsw::MAX_SEGMENT_NODES`]).
    pub max_segment_nodes: usize,
}

impl AnnConfig {
    /// The shipped settings for `dim`-dimensional vectors.
    pub fn new(dim: usize) -> Self {
        Self {
            dim,
            hnsw: HnswParams {
                m: DEFAULT_M,
                ef_construction: DEFAULT_EF_CONSTRUCTION,
                seed: 0x6e65_7875_735f_616e,
            },
            ef_search: DEFAULT_EF_SEARCH,
            rerank: DEFAULT_RERANK,
            tail_threshold: DEFAULT_TAIL_THRESHOLD,
            max_segments: DEFAULT_MAX_SEGMENTS,
            max_dead_fraction: DEFAULT_MAX_DEAD_FRACTION,
            exact_scan_selectivity: DEFAULT_EXACT_SCAN_SELECTIVITY,
            exact_scan_max_nodes: DEFAULT_EXACT_SCAN_MAX_NODES,
            visit_budget_fraction: DEFAULT_VISIT_BUDGET_FRACTION,
            extend_ratio: DEFAULT_EXTEND_RATIO,
            max_segment_nodes: hnsw::MAX_SEGMENT_NODES,
        }
    }

    fn validate(&self) -> Result<(), AnnError> {
        let problem = if !(1..=segment::MAX_DIM).contains(&self.dim) {
            format!("dim {} outside 1..={}", self.dim, segment::MAX_DIM)
        } else if !(2..=segment::MAX_M).contains(&self.hnsw.m) {
            format!("m {} outside 2..={}", self.hnsw.m, segment::MAX_M)
        } else if self.hnsw.ef_construction == 0 || self.ef_search == 0 || self.tail_threshold == 0 {
            "ef_construction, ef_search and tail_threshold must be at least 1".to_owned()
        } else if !(1..=hnsw::MAX_SEGMENT_NODES).contains(&self.max_segment_nodes) {
            format!(
                "max_segment_nodes {} outside 1..={}",
                self.max_segment_nodes,
                hnsw::MAX_SEGMENT_NODES
            )
        } else {
            return Ok(());
        };
        Err(AnnError::InvalidConfig(problem))
    }
}

/// One search's options.
#[derive(Clone, Copy)]
pub struct SearchParams<'a> {
    /// Results wanted.
    pub k: usize,
    /// Search effort; None: the index's `ef_search`. At least `k` is used.
    pub ef: Option<usize>,
    /// Candidates re-ranked exactly; None: the index's `rerank`.
    pub rerank: Option<usize>,
    /// Which ids may be returned (None: all).
    pub filter: Option<&'a dyn Filter>,
    /// Recency as a scoring term (None: similarity only).
    pub recency: Option<Recency<'a>>,
    /// Scan every vector instead of walking graphs (the exact int8 baseline).
    pub exact: bool,
}

impl<'a> SearchParams<'a> {
    /// The `k` nearest, default effort, no filter, no recency.
    pub fn top(k: usize) -> Self {
        Self {
            k,
            ef: None,
            rerank: None,
            filter: None,
            recency: None,
            exact: false,
        }
    }
}

/// Sizes, for metrics and benchmarks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AnnStats {
    /// Vectors in the tail.
    pub tail: usize,
    /// Vectors in a tail being built into a segment.
    pub building: usize,
    /// Segments.
    pub segments: usize,
    /// Nodes in segments, dead included.
    pub segment_nodes: usize,
    /// Dead nodes in segments.
    pub dead_nodes: usize,
    /// Bytes of segment images (codes, scales, ids, graph, id table).
    pub segment_bytes: usize,
}

/// The index. `Sync`: searches, inserts, deletes and one build may run on
/// different threads at once.
#[derive(Debug)]
pub struct AnnIndex {
    config: AnnConfig,
    kernel: DotKernel,
    state: RwLock<State>,
    /// Serialises builds and compactions (one graph build at a time).
    build_lock: Mutex<()>,
}

/// A filtered walk's effort: `ef` divided by the share of the index the
/// filter admits, at most [`MAX_FILTERED_EF_FACTOR`] times `ef`. A walk
/// keeps only passing nodes as results, so with a fifth of the index
/// passing it meets about a fifth as many candidates per step; widening the
/// beam by the inverse share gives it back about as many. Measured on the
/// LoCoMo turns through the daemon (a conversation is ~20 % of the index):
/// dense recall@10 went from 0.46 (ef 32 walk) to the exact figure.
fn filtered_ef(ef: usize, filter: &dyn Filter, live: usize) -> usize {
    let Some(matches) = filter.expected_matches() else {
        return ef;
    };
    let share = (matches.max(1) as f64 / live.max(1) as f64).min(1.0);
    ((ef as f64 / share).ceil() as usize).clamp(ef, ef * MAX_FILTERED_EF_FACTOR)
}

/// The most a filter widens a walk's beam (see [`filtered_ef`]); past it a
/// filter admitting few ids is better served by the exact scan.
pub const MAX_FILTERED_EF_FACTOR: usize = 16;

/// The int8 stage's outcome.
struct Shortlist {
    ids: Vec<u64>,
    unit: Vec<f32>,
}

/// What the state lock guards.
#[derive(Debug)]
struct State {
    /// Inserts since the last freeze.
    active: Tail,
    /// A tail being built into a segment: still searched exactly.
    frozen: Option<Arc<Tail>>,
    /// Ids of `frozen` deleted (or replaced) since it froze.
    frozen_dead: HashSet<u64>,
    /// Immutable graphs, oldest first.
    segments: Vec<Arc<Segment>>,
}

thread_local! {
    /// Each searching thread's visited marks and heaps, reused.
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

impl AnnIndex {
    /// An empty index.
    pub fn new(config: AnnConfig) -> Result<Self, AnnError> {
        Self::with_segments(config, Vec::new())
    }

    /// An index over loaded segments (oldest first) and an empty tail.
    pub fn with_segments(config: AnnConfig, segments: Vec<Segment>) -> Result<Self, AnnError> {
        config.validate()?;
        if let Some(segment) = segments.iter().find(|s| s.dim() != config.dim) {
            return Err(AnnError::DimensionMismatch {
                expected: config.dim,
                got: segment.dim(),
            });
        }
        Ok(Self {
            kernel: DotKernel::detect(),
            state: RwLock::new(State {
                active: Tail::new(config.dim),
                frozen: None,
                frozen_dead: HashSet::new(),
                segments: segments.into_iter().map(Arc::new).collect(),
            }),
            build_lock: Mutex::new(()),
            config,
        })
    }

    /// The settings.
    pub fn config(&self) -> &AnnConfig {
        &self.config
    }

    /// The dot-product kernel in use.
    pub fn kernel(&self) -> DotKernel {
        self.kernel
    }

    /// Inserts `id` (replacing any earlier vector of it); visible to every
    /// search that starts after this returns.
    pub fn insert(&self, id: u64, vector: &[f32]) -> Result<(), AnnError> {
        let norm = checked_norm(vector, self.config.dim)?;
        let mut codes = vec![0i8; self.config.dim];
        let scale = quantize_with_norm(vector, norm, &mut codes);
        let mut state = self.write();
        state.kill_outside_active(id);
        state.active.upsert(id, &codes, scale);
        Ok(())
    }

    /// Deletes `id`; true if it was present. No search that starts after
    /// this returns will return it.
    pub fn delete(&self, id: u64) -> bool {
        let mut state = self.write();
        let in_active = state.active.remove(id);
        state.kill_outside_active(id) || in_active
    }

    /// Live vectors.
    pub fn len(&self) -> usize {
        let state = self.read();
        let frozen = state.frozen.as_ref().map_or(0, |f| f.len() - state.frozen_dead.len());
        let segments: usize = state.segments.iter().map(|s| s.len() - s.dead_count()).sum();
        state.active.len() + frozen + segments
    }

    /// Whether no vector is live.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Sizes of the parts.
    pub fn stats(&self) -> AnnStats {
        let state = self.read();
        AnnStats {
            tail: state.active.len(),
            building: state.frozen.as_ref().map_or(0, |f| f.len()),
            segments: state.segments.len(),
            segment_nodes: state.segments.iter().map(|s| s.len()).sum(),
            dead_nodes: state.segments.iter().map(|s| s.dead_count()).sum(),
            segment_bytes: state.segments.iter().map(|s| s.image().len()).sum(),
        }
    }

    /// The current segments, oldest first (to persist them).
    pub fn segments(&self) -> Vec<Arc<Segment>> {
        self.read().segments.clone()
    }

    /// The `params.k` vectors nearest `query` (cosine) among those `params`
    /// allows, best first, scored exactly with `vectors`.
    pub fn search<V: VectorSource + ?Sized>(
        &self,
        query: &[f32],
        params: &SearchParams<'_>,
        vectors: &V,
    ) -> Result<Vec<Hit>, AnnError> {
        let Some(shortlist) = self.shortlist(query, params)? else {
            return Ok(Vec::new());
        };
        Ok(rerank(
            &shortlist.ids,
            &shortlist.unit,
            vectors,
            params.recency.as_ref(),
            params.k,
        ))
    }

    /// Like [`Self::search`], with the f32 vectors of the shortlisted ids
    /// asked for once, as a batch: for an owner whose vectors are not kept
    /// in memory (they are read from the store, or embedded again).
    pub fn search_fetching(
        &self,
        query: &[f32],
        params: &SearchParams<'_>,
        fetch: impl FnOnce(&[u64]) -> std::collections::HashMap<u64, Vec<f32>>,
    ) -> Result<Vec<Hit>, AnnError> {
        let Some(shortlist) = self.shortlist(query, params)? else {
            return Ok(Vec::new());
        };
        let vectors = fetch(&shortlist.ids);
        Ok(rerank(
            &shortlist.ids,
            &shortlist.unit,
            &vectors,
            params.recency.as_ref(),
            params.k,
        ))
    }

    /// The int8 stage: the ids to re-rank (best first) and the unit query;
    /// None when `k` is 0.
    fn shortlist(&self, query: &[f32], params: &SearchParams<'_>) -> Result<Option<Shortlist>, AnnError> {
        let norm = checked_norm(query, self.config.dim)?;
        if params.k == 0 {
            return Ok(None);
        }
        let mut codes = vec![0i8; self.config.dim];
        let scale = quantize_with_norm(query, norm, &mut codes);
        let quantised = Query { codes: &codes, scale };
        let factor = if params.recency.is_some() {
            RECENCY_POOL_FACTOR
        } else {
            1
        };
        let ef = params.ef.unwrap_or(self.config.ef_search).max(params.k) * factor;
        let mut pool = Pool::new(ef);
        let (segments, live) = self.scan_tails(quantised, params.filter.unwrap_or(&AcceptAll), &mut pool);
        let exact = params.exact || params.filter.is_some_and(|filter| self.prefers_exact(filter, live));
        let walk_ef = params.filter.map_or(ef, |filter| filtered_ef(ef, filter, live));
        for segment in &segments {
            self.search_segment(segment, quantised, walk_ef, exact, params.filter, &mut pool);
        }
        let unit: Vec<f32> = query.iter().map(|x| (f64::from(*x) / norm) as f32).collect();
        let rerank_count = params.rerank.unwrap_or(self.config.rerank).max(params.k) * factor;
        Ok(Some(Shortlist {
            ids: pool.into_best_ids(rerank_count),
            unit,
        }))
    }

    /// After loading saved segments (whose tombstones are not saved): marks
    /// dead every node whose id `is_live` says is gone, so no search walks
    /// to it as a result. Returns how many it marked.
    pub fn reconcile(&self, is_live: impl Fn(u64) -> bool) -> usize {
        // The write lock, as for any delete (segment tombstones are set under it).
        let state = self.write();
        let mut marked = 0;
        for segment in &state.segments {
            let ids = segment.graph().ids;
            for (local, id) in ids.iter().enumerate() {
                let local = local as u32;
                if !segment.is_dead(local) && !is_live(*id) && segment.mark_dead(local) {
                    marked += 1;
                }
            }
        }
        marked
    }

    /// Scans the tail (and a tail being built) under the read lock; returns
    /// the segments to search and the live count.
    fn scan_tails(&self, query: Query<'_>, filter: &dyn Filter, pool: &mut Pool) -> (Vec<Arc<Segment>>, usize) {
        let state = self.read();
        let mut offer = |dist, id| pool.offer(dist, id);
        state
            .active
            .scan(self.kernel, query, &mut |id| filter.accepts(id), &mut offer);
        if let Some(frozen) = &state.frozen {
            let mut accept = |id| !state.frozen_dead.contains(&id) && filter.accepts(id);
            frozen.scan(self.kernel, query, &mut accept, &mut offer);
        }
        let live = state.segments.iter().map(|s| s.len() - s.dead_count()).sum::<usize>() + state.active.len();
        (state.segments.clone(), live)
    }

    fn prefers_exact(&self, filter: &dyn Filter, live: usize) -> bool {
        filter
            .expected_matches()
            .is_some_and(|matches| matches as f64 <= self.config.exact_scan_selectivity * live as f64)
    }

    /// Offers `segment`'s best `ef` live nodes that `filter` accepts.
    fn search_segment(
        &self,
        segment: &Segment,
        query: Query<'_>,
        ef: usize,
        exact: bool,
        filter: Option<&dyn Filter>,
        pool: &mut Pool,
    ) {
        let ids = segment.graph().ids;
        match filter {
            // No filter: only the tombstones are read, not the ids (one cache
            // miss less per candidate).
            None => self.walk_segment(segment, query, ef, exact, pool, &mut |local| !segment.is_dead(local)),
            Some(filter) => self.walk_segment(segment, query, ef, exact, pool, &mut |local| {
                !segment.is_dead(local) && ids.get(local as usize).is_some_and(|id| filter.accepts(*id))
            }),
        }
    }

    /// Walks `segment`'s graph (or scans it: `exact`, a small segment, or a
    /// walk over budget), offering the nodes `accept` allows.
    fn walk_segment<A: FnMut(u32) -> bool>(
        &self,
        segment: &Segment,
        query: Query<'_>,
        ef: usize,
        exact: bool,
        pool: &mut Pool,
        accept: &mut A,
    ) {
        let graph = segment.graph();
        if exact || graph.len() <= self.config.exact_scan_max_nodes {
            return scan_segment(self.kernel, segment, query, accept, pool);
        }
        let budget = (graph.len() as f64 * self.config.visit_budget_fraction) as usize;
        let complete = with_scratch(|scratch| {
            let complete = hnsw::search(&graph, self.kernel, query, ef, scratch, accept, budget);
            for found in scratch.results.drain().filter(|_| complete) {
                pool.offer(found.dist, graph.ids[found.node as usize]);
            }
            complete
        });
        if !complete {
            scan_segment(self.kernel, segment, query, accept, pool);
        }
    }

    fn read(&self) -> RwLockReadGuard<'_, State> {
        // A panic under the lock leaves the state consistent: every critical
        // section either completes its few assignments or changes nothing.
        self.state.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(PoisonError::into_inner)
    }
}

impl State {
    /// Kills every copy of `id` outside the active tail (in the tail being
    /// built, in segments); true if one was live.
    fn kill_outside_active(&mut self, id: u64) -> bool {
        let mut killed = false;
        if let Some(frozen) = &self.frozen
            && frozen.contains(id)
        {
            killed |= self.frozen_dead.insert(id);
        }
        for segment in &self.segments {
            for local in segment.locals_of(id) {
                killed |= segment.mark_dead(local);
            }
        }
        killed
    }
}

/// Offers every node of `segment` that `accept` allows.
fn scan_segment(
    kernel: DotKernel,
    segment: &Segment,
    query: Query<'_>,
    accept: &mut impl FnMut(u32) -> bool,
    pool: &mut Pool,
) {
    let graph = segment.graph();
    let rows = graph.codes.chunks_exact(graph.dim).zip(graph.scales).zip(graph.ids);
    for (local, ((codes, scale), id)) in rows.enumerate() {
        if accept(local as u32) {
            pool.offer(kernel.distance(query.codes, query.scale, codes, *scale), *id);
        }
    }
}

/// Runs `f` with this thread's scratch (a fresh one if a filter callback
/// re-enters a search on the same thread).
fn with_scratch<R>(f: impl FnOnce(&mut Scratch) -> R) -> R {
    SCRATCH.with(|cell| match cell.try_borrow_mut() {
        Ok(mut scratch) => f(&mut scratch),
        Err(_) => f(&mut Scratch::default()),
    })
}
