//! The HNSW graph (Malkov & Yashunin): building it over int8 codes, and
//! searching it, with the same search code for the builder's growing arrays
//! and a loaded segment's immutable ones ([`FlatGraph`] borrows either).
//!
//! Layout (shared with the segment file): node `i`'s codes are
//! `codes[i·dim..]`, its level `levels[i]`; level 0 links are a fixed stride
//! of `m0 + 1` u32 (a count, then up to `m0` neighbours); a node of level
//! `L ≥ 1` owns `L` blocks of `m + 1` u32 in `upper`, starting at
//! `upper_offsets[i]` (`NO_UPPER` for level-0 nodes).
//!
//! Filters are applied during the search (a node that fails is traversed,
//! never returned), as hnswlib does; a search that visits more than its
//! budget gives up so the caller can scan exactly instead (a very selective
//! filter makes graph search slower than a scan).
//!
//! Every access goes through `get`: a search over a graph that passed
//! `segment`'s validation cannot panic, and one over a damaged graph still
//! cannot (it returns worse results). Not here: ids, tombstones and filters
//! (the caller's `accept`), files (`segment`), merging results (`mod.rs`).

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;

#[cfg(target_arch = "x86_64")]
use crate::recall::ann::distance::Avx2;
use crate::recall::ann::distance::{Dot, DotKernel};
use crate::recall::ann::synthetic::SplitMix64;

/// `upper_offsets` entry of a node with no level above 0.
pub(crate) const NO_UPPER: u32 = u32::MAX;
/// Highest level a node may get. With `m ≥ 2` the chance of a level above 16
/// is below 2⁻¹⁶ per node, so the cap only bounds a corrupt file's claim.
pub(crate) const MAX_LEVEL: u8 = 16;
/// Most nodes one graph may hold: node numbers and `upper` offsets are u32.
/// 2²⁸ nodes of 384 bytes is 100 GiB, well past one segment's sensible size.
pub const MAX_SEGMENT_NODES: usize = 1 << 28;

/// Graph-building settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HnswParams {
    /// Links per node on levels above 0; level 0 allows `2·m`.
    pub m: usize,
    /// Candidate list size while inserting (build quality vs build time).
    pub ef_construction: usize,
    /// Seed of the level draws (a build is deterministic).
    pub seed: u64,
}

/// A node and its distance to the query.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Scored {
    pub dist: f32,
    pub node: u32,
}

impl Eq for Scored {}

impl Ord for Scored {
    fn cmp(&self, other: &Self) -> Ordering {
        self.dist.total_cmp(&other.dist).then(self.node.cmp(&other.node))
    }
}

impl PartialOrd for Scored {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// A quantised query (or a node being inserted).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Query<'a> {
    pub codes: &'a [i8],
    pub scale: f32,
}

/// A graph's arrays, borrowed (from a builder or a segment).
#[derive(Debug, Clone, Copy)]
pub(crate) struct FlatGraph<'a> {
    pub dim: usize,
    pub m: usize,
    pub m0: usize,
    pub codes: &'a [i8],
    pub scales: &'a [f32],
    pub ids: &'a [u64],
    pub levels: &'a [u8],
    pub upper_offsets: &'a [u32],
    pub l0: &'a [u32],
    pub upper: &'a [u32],
    pub entry: u32,
    pub max_level: u8,
}

impl<'a> FlatGraph<'a> {
    pub fn len(&self) -> usize {
        self.scales.len()
    }

    #[inline]
    pub fn code(&self, node: u32) -> &'a [i8] {
        let start = node as usize * self.dim;
        self.codes.get(start..start + self.dim).unwrap_or(&[])
    }

    #[inline]
    pub fn scale(&self, node: u32) -> f32 {
        self.scales.get(node as usize).copied().unwrap_or(0.0)
    }

    /// `node`'s neighbours on `level` (empty if it has none there).
    #[inline]
    pub fn neighbors(&self, node: u32, level: u8) -> &'a [u32] {
        let (array, start, capacity) = match level {
            0 => (self.l0, node as usize * (self.m0 + 1), self.m0),
            _ => match self.upper_start(node, level) {
                Some(start) => (self.upper, start, self.m),
                None => return &[],
            },
        };
        let count = array.get(start).map_or(0, |c| (*c as usize).min(capacity));
        array.get(start + 1..start + 1 + count).unwrap_or(&[])
    }

    /// Where `node`'s block for `level ≥ 1` starts in `upper`.
    fn upper_start(&self, node: u32, level: u8) -> Option<usize> {
        let node_level = *self.levels.get(node as usize)?;
        let offset = *self.upper_offsets.get(node as usize)?;
        (offset != NO_UPPER && level <= node_level).then(|| offset as usize + (level as usize - 1) * (self.m + 1))
    }

    #[inline(always)]
    fn distance<D: Dot>(&self, kernel: D, query: Query<'_>, node: u32) -> f32 {
        kernel.distance(query.codes, query.scale, self.code(node), self.scale(node))
    }
}

/// Per-search working memory, reused across searches of one thread.
#[derive(Debug, Default)]
pub(crate) struct Scratch {
    visited: Visited,
    candidates: BinaryHeap<Reverse<Scored>>,
    pub results: BinaryHeap<Scored>,
    fresh: Vec<u32>,
}

/// Visited marks stamped with a generation, so starting a search is O(1).
#[derive(Debug, Default)]
struct Visited {
    marks: Vec<u16>,
    generation: u16,
}

impl Visited {
    fn reset(&mut self, n: usize) {
        if self.marks.len() < n {
            self.marks.resize(n, 0);
        }
        self.generation = self.generation.wrapping_add(1);
        if self.generation == 0 {
            self.marks.fill(0);
            self.generation = 1;
        }
    }

    /// Marks `node`; true if it was not marked yet (false also out of range).
    #[inline]
    fn insert(&mut self, node: u32) -> bool {
        match self.marks.get_mut(node as usize) {
            Some(mark) if *mark != self.generation => {
                *mark = self.generation;
                true
            }
            _ => false,
        }
    }
}

/// Searches the whole graph for `query`: greedy descent to level 1, then a
/// best-first search of level 0 keeping `ef` accepted nodes, left in
/// `scratch.results`. False if it visited more than `visit_budget` nodes
/// (the results are then incomplete).
pub(crate) fn search<A: FnMut(u32) -> bool>(
    graph: &FlatGraph<'_>,
    kernel: DotKernel,
    query: Query<'_>,
    ef: usize,
    scratch: &mut Scratch,
    accept: &mut A,
    visit_budget: usize,
) -> bool {
    #[cfg(target_arch = "x86_64")]
    if let Some(avx2) = kernel.avx2() {
        // SAFETY: an `Avx2` token exists only on a CPU with AVX2.
        return unsafe { search_avx2(graph, avx2, query, ef, scratch, accept, visit_budget) };
    }
    search_inline(graph, kernel, query, ef, scratch, accept, visit_budget)
}

/// [`search`] compiled with AVX2 enabled, so the kernel inlines into the
/// loop rather than being called for each of the ~600 distances of a query.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn search_avx2<A: FnMut(u32) -> bool>(
    graph: &FlatGraph<'_>,
    kernel: Avx2,
    query: Query<'_>,
    ef: usize,
    scratch: &mut Scratch,
    accept: &mut A,
    visit_budget: usize,
) -> bool {
    search_inline(graph, kernel, query, ef, scratch, accept, visit_budget)
}

#[inline(always)]
fn search_inline<D: Dot, A: FnMut(u32) -> bool>(
    graph: &FlatGraph<'_>,
    kernel: D,
    query: Query<'_>,
    ef: usize,
    scratch: &mut Scratch,
    accept: &mut A,
    visit_budget: usize,
) -> bool {
    let mut entry = Scored {
        dist: graph.distance(kernel, query, graph.entry),
        node: graph.entry,
    };
    for level in (1..=graph.max_level).rev() {
        entry = greedy(graph, kernel, query, entry, level);
    }
    search_layer(graph, kernel, query, entry, ef, 0, scratch, accept, visit_budget)
}

/// Moves to the closest neighbour on `level` until none is closer.
#[inline(always)]
fn greedy<D: Dot>(graph: &FlatGraph<'_>, kernel: D, query: Query<'_>, mut current: Scored, level: u8) -> Scored {
    loop {
        let mut moved = false;
        let neighbors = graph.neighbors(current.node, level);
        for &neighbor in neighbors {
            prefetch_node(graph, neighbor);
        }
        for &neighbor in neighbors {
            let dist = graph.distance(kernel, query, neighbor);
            if dist < current.dist {
                current = Scored { dist, node: neighbor };
                moved = true;
            }
        }
        if !moved {
            return current;
        }
    }
}

/// Best-first search of one level from `entry`. Nodes `accept` refuses are
/// expanded but never enter the results. See [`search`] for the budget.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn search_layer<D: Dot, A: FnMut(u32) -> bool>(
    graph: &FlatGraph<'_>,
    kernel: D,
    query: Query<'_>,
    entry: Scored,
    ef: usize,
    level: u8,
    scratch: &mut Scratch,
    accept: &mut A,
    visit_budget: usize,
) -> bool {
    let Scratch {
        visited,
        candidates,
        results,
        fresh,
    } = scratch;
    visited.reset(graph.len());
    candidates.clear();
    results.clear();
    visited.insert(entry.node);
    candidates.push(Reverse(entry));
    if accept(entry.node) {
        results.push(entry);
    }
    let mut visits = 1usize;
    while let Some(Reverse(current)) = candidates.pop() {
        if results.len() >= ef && results.peek().is_some_and(|worst| current.dist > worst.dist) {
            break;
        }
        if let Some(Reverse(next)) = candidates.peek()
            && level == 0
        {
            prefetch_links(graph, next.node);
        }
        unvisited_neighbors(graph, current.node, level, visited, fresh);
        visits += fresh.len();
        for &node in fresh.iter() {
            let dist = graph.distance(kernel, query, node);
            let bound = if results.len() < ef {
                f32::INFINITY
            } else {
                results.peek().map_or(f32::INFINITY, |w| w.dist)
            };
            if dist < bound {
                candidates.push(Reverse(Scored { dist, node }));
                if accept(node) {
                    results.push(Scored { dist, node });
                    if results.len() > ef {
                        results.pop();
                    }
                }
            }
        }
        if visits > visit_budget {
            return false;
        }
    }
    true
}

/// Collects `node`'s unvisited neighbours into `fresh`, marking them and
/// prefetching the start of their codes and their scales, so the loads of
/// all of them are in flight before the first distance is computed.
#[inline(always)]
fn unvisited_neighbors(graph: &FlatGraph<'_>, node: u32, level: u8, visited: &mut Visited, fresh: &mut Vec<u32>) {
    fresh.clear();
    for &neighbor in graph.neighbors(node, level) {
        if visited.insert(neighbor) {
            prefetch_node(graph, neighbor);
            fresh.push(neighbor);
        }
    }
}

/// Lines of a node's codes prefetched into L1 ahead of its distance; the
/// rest of the row is prefetched into L2 only. Measured at 100,000 × 384-d:
/// prefetching all six lines of ~14 neighbours into L1 at once fills the
/// core's line-fill buffers and stalls on the prefetch itself; two into L1
/// and the rest into L2 raised queries/s by ~50 % over two lines alone.
const PREFETCH_CODE_LINES: usize = 2;

/// Starts loading `node`'s first code lines and its scale.
#[inline(always)]
fn prefetch_node(graph: &FlatGraph<'_>, node: u32) {
    let codes = graph.code(node);
    let mut lines = codes.chunks(crate::recall::ann::bytes::CACHE_LINE_BYTES);
    for line in lines.by_ref().take(PREFETCH_CODE_LINES) {
        prefetch(line.as_ptr().cast());
    }
    for line in lines {
        prefetch_l2(line.as_ptr().cast());
    }
    if let Some(scale) = graph.scales.get(node as usize) {
        prefetch((scale as *const f32).cast());
    }
}

/// Starts loading `node`'s level-0 links (the next node to expand).
#[inline(always)]
fn prefetch_links(graph: &FlatGraph<'_>, node: u32) {
    if let Some(count) = graph.l0.get(node as usize * (graph.m0 + 1)) {
        prefetch((count as *const u32).cast());
    }
}

/// Asks the CPU to start loading the line at `address` into L2 (a hint:
/// never faults). L2 prefetches queue in the L2's own miss slots (~48), not
/// the L1's ~16 fill buffers, so all the lines of ~14 neighbours can be in
/// flight at once without stalling the core.
#[inline(always)]
fn prefetch_l2(address: *const u8) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_MM_HINT_T1, _mm_prefetch};
        // SAFETY: as in `prefetch`.
        unsafe { _mm_prefetch::<_MM_HINT_T1>(address.cast()) };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = address;
}

/// Asks the CPU to start loading the line at `address` (a hint: never faults).
#[inline(always)]
fn prefetch(address: *const u8) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        // SAFETY: prefetch is a hint that never faults or writes, whatever the
        // address (ours come from live references); SSE is baseline x86-64.
        unsafe { _mm_prefetch::<_MM_HINT_T0>(address.cast()) };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = address;
}

/// A graph's arrays, owned: what a builder grows and a segment is made of.
#[derive(Debug, Clone, Default)]
pub(crate) struct GraphArrays {
    pub dim: usize,
    pub m: usize,
    pub m0: usize,
    pub codes: Vec<i8>,
    pub scales: Vec<f32>,
    pub ids: Vec<u64>,
    pub levels: Vec<u8>,
    pub upper_offsets: Vec<u32>,
    pub l0: Vec<u32>,
    pub upper: Vec<u32>,
    /// The entry node and top level; None while empty.
    pub entry: Option<(u32, u8)>,
}

impl GraphArrays {
    fn new(dim: usize, m: usize) -> Self {
        Self {
            dim,
            m,
            m0: 2 * m,
            ..Self::default()
        }
    }

    /// A copy of a graph's arrays, to extend it.
    pub fn copy_of(graph: &FlatGraph<'_>) -> Self {
        Self {
            dim: graph.dim,
            m: graph.m,
            m0: graph.m0,
            codes: graph.codes.to_vec(),
            scales: graph.scales.to_vec(),
            ids: graph.ids.to_vec(),
            levels: graph.levels.to_vec(),
            upper_offsets: graph.upper_offsets.to_vec(),
            l0: graph.l0.to_vec(),
            upper: graph.upper.to_vec(),
            entry: Some((graph.entry, graph.max_level)),
        }
    }

    pub fn len(&self) -> usize {
        self.scales.len()
    }

    /// The arrays as a searchable graph; None while empty.
    pub fn view(&self) -> Option<FlatGraph<'_>> {
        let (entry, max_level) = self.entry?;
        Some(FlatGraph {
            dim: self.dim,
            m: self.m,
            m0: self.m0,
            codes: &self.codes,
            scales: &self.scales,
            ids: &self.ids,
            levels: &self.levels,
            upper_offsets: &self.upper_offsets,
            l0: &self.l0,
            upper: &self.upper,
            entry,
            max_level,
        })
    }

    /// Appends an unlinked node of `level`; returns its number.
    fn push(&mut self, id: u64, codes: &[i8], scale: f32, level: u8) -> u32 {
        assert!(
            self.len() < MAX_SEGMENT_NODES,
            "the index caps segments below MAX_SEGMENT_NODES"
        );
        let node = self.len() as u32;
        self.codes.extend_from_slice(codes);
        self.scales.push(scale);
        self.ids.push(id);
        self.levels.push(level);
        let offset = match level {
            0 => NO_UPPER,
            _ => u32::try_from(self.upper.len()).expect("upper blocks of < 2^28 nodes of level <= 16 fit u32"),
        };
        self.upper_offsets.push(offset);
        self.upper
            .resize(self.upper.len() + usize::from(level) * (self.m + 1), 0);
        self.l0.resize(self.l0.len() + self.m0 + 1, 0);
        node
    }

    /// The count slot and capacity of `node`'s list on `level`.
    fn list_slot(&self, node: u32, level: u8) -> (usize, usize) {
        match level {
            0 => (node as usize * (self.m0 + 1), self.m0),
            _ => {
                let offset = self.upper_offsets[node as usize] as usize;
                (offset + (level as usize - 1) * (self.m + 1), self.m)
            }
        }
    }

    fn list_mut(&mut self, level: u8) -> &mut Vec<u32> {
        if level == 0 { &mut self.l0 } else { &mut self.upper }
    }

    /// Replaces `node`'s neighbours on `level`.
    fn set_neighbors(&mut self, node: u32, level: u8, neighbors: impl ExactSizeIterator<Item = u32>) {
        let (slot, capacity) = self.list_slot(node, level);
        debug_assert!(neighbors.len() <= capacity);
        let list = self.list_mut(level);
        list[slot] = neighbors.len() as u32;
        for (place, neighbor) in list[slot + 1..].iter_mut().zip(neighbors) {
            *place = neighbor;
        }
    }

    /// Adds `neighbor` to `node`'s list on `level`; false if it is full.
    fn try_append(&mut self, node: u32, level: u8, neighbor: u32) -> bool {
        let (slot, capacity) = self.list_slot(node, level);
        let list = self.list_mut(level);
        let count = list[slot] as usize;
        if count >= capacity {
            return false;
        }
        list[slot + 1 + count] = neighbor;
        list[slot] += 1;
        true
    }
}

/// Builds a graph one insertion at a time (single-threaded, deterministic).
#[derive(Debug)]
pub(crate) struct Builder {
    params: HnswParams,
    kernel: DotKernel,
    arrays: GraphArrays,
    scratch: Scratch,
    rng: SplitMix64,
    level_scale: f64,
    query: Vec<i8>,
    found: Vec<Scored>,
    selected: Vec<Scored>,
}

impl Builder {
    /// An empty graph of `dim`-dimensional codes.
    pub fn new(params: HnswParams, kernel: DotKernel, dim: usize) -> Self {
        Self::extending(params, kernel, GraphArrays::new(dim, params.m))
    }

    /// Goes on building `arrays` (a copy of an existing graph, same `m`).
    pub fn extending(params: HnswParams, kernel: DotKernel, arrays: GraphArrays) -> Self {
        debug_assert_eq!(arrays.m, params.m);
        Self {
            rng: SplitMix64::new(params.seed ^ arrays.len() as u64),
            level_scale: 1.0 / (params.m.max(2) as f64).ln(),
            params,
            kernel,
            arrays,
            scratch: Scratch::default(),
            query: Vec::new(),
            found: Vec::new(),
            selected: Vec::new(),
        }
    }

    /// The arrays built so far.
    pub fn finish(self) -> GraphArrays {
        self.arrays
    }

    /// Inserts a node and links it both ways on each of its levels.
    pub fn insert(&mut self, id: u64, codes: &[i8], scale: f32) {
        let level = self.random_level();
        let node = self.arrays.push(id, codes, scale, level);
        let Some((entry, max_level)) = self.arrays.entry else {
            self.arrays.entry = Some((node, level));
            return;
        };
        self.query.clear();
        self.query.extend_from_slice(codes);
        let mut nearest = self.descend(entry, max_level, level, scale);
        for layer in (0..=level.min(max_level)).rev() {
            nearest = self.link_layer(node, layer, nearest, scale);
        }
        if level > max_level {
            self.arrays.entry = Some((node, level));
        }
    }

    fn random_level(&mut self) -> u8 {
        let draw = -self.rng.next_unit().ln() * self.level_scale;
        draw.min(f64::from(MAX_LEVEL)) as u8
    }

    /// Greedy descent from the entry through the levels above `level`.
    fn descend(&self, entry: u32, max_level: u8, level: u8, scale: f32) -> Scored {
        let graph = self.arrays.view().expect("not empty: entry is set");
        let query = Query {
            codes: &self.query,
            scale,
        };
        let mut nearest = Scored {
            dist: graph.distance(self.kernel, query, entry),
            node: entry,
        };
        for layer in (level.saturating_add(1)..=max_level).rev() {
            nearest = greedy(&graph, self.kernel, query, nearest, layer);
        }
        nearest
    }

    /// Finds `node`'s neighbours on `layer` from `entry`, links them, and
    /// returns the nearest (the next layer's entry).
    fn link_layer(&mut self, node: u32, layer: u8, entry: Scored, scale: f32) -> Scored {
        let graph = self.arrays.view().expect("not empty: entry is set");
        let query = Query {
            codes: &self.query,
            scale,
        };
        let ef = self.params.ef_construction.max(self.params.m);
        search_layer(
            &graph,
            self.kernel,
            query,
            entry,
            ef,
            layer,
            &mut self.scratch,
            &mut |n| n != node,
            usize::MAX,
        );
        self.found.clear();
        self.found.extend(self.scratch.results.drain());
        self.found.sort_unstable();
        let nearest = self.found.first().copied().unwrap_or(entry);
        select_neighbors(&graph, self.kernel, &self.found, self.params.m, &mut self.selected);
        self.arrays
            .set_neighbors(node, layer, self.selected.iter().map(|s| s.node));
        for i in 0..self.selected.len() {
            let Scored { dist, node: neighbor } = self.selected[i];
            self.link_back(neighbor, node, dist, layer);
        }
        nearest
    }

    /// Adds `node` to `neighbor`'s list on `layer`, re-selecting that list
    /// with the heuristic when it is full.
    fn link_back(&mut self, neighbor: u32, node: u32, dist: f32, layer: u8) {
        if self.arrays.try_append(neighbor, layer, node) {
            return;
        }
        let graph = self.arrays.view().expect("not empty: entry is set");
        let capacity = if layer == 0 { graph.m0 } else { graph.m };
        let base = Query {
            codes: graph.code(neighbor),
            scale: graph.scale(neighbor),
        };
        let mut candidates: Vec<Scored> = graph
            .neighbors(neighbor, layer)
            .iter()
            .map(|&n| Scored {
                dist: graph.distance(self.kernel, base, n),
                node: n,
            })
            .collect();
        candidates.push(Scored { dist, node });
        candidates.sort_unstable();
        let mut kept = Vec::with_capacity(capacity);
        select_neighbors(&graph, self.kernel, &candidates, capacity, &mut kept);
        self.arrays.set_neighbors(neighbor, layer, kept.iter().map(|s| s.node));
    }
}

/// HNSW's neighbour heuristic: walking `candidates` from the nearest, keep
/// one only if it is nearer to the base than to every one kept, up to `max`
/// (spreads links across directions, which keeps clustered data connected).
fn select_neighbors(
    graph: &FlatGraph<'_>,
    kernel: DotKernel,
    candidates: &[Scored],
    max: usize,
    kept: &mut Vec<Scored>,
) {
    kept.clear();
    if candidates.len() <= max {
        kept.extend_from_slice(candidates);
        return;
    }
    for candidate in candidates {
        if kept.len() >= max {
            break;
        }
        let base = Query {
            codes: graph.code(candidate.node),
            scale: graph.scale(candidate.node),
        };
        if kept
            .iter()
            .all(|k| graph.distance(kernel, base, k.node) >= candidate.dist)
        {
            kept.push(*candidate);
        }
    }
}
