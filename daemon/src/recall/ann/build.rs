//! Graph builds, off the write path: the tail becomes graph
//! ([`AnnIndex::build_pending`]), segments merge and shed their dead nodes
//! ([`AnnIndex::compact`]).
//!
//! A build takes its inputs under the state lock (freezing the tail: it
//! stays searchable, exactly), builds with no lock held, and publishes the
//! new segment in one step under the write lock, where deletes that landed
//! during the build are carried over to it (each new node remembers where it
//! came from). Searches never wait for a build; inserts and deletes wait
//! only for the publish (a bit copy per node, no distance computed).
//!
//! Only one build runs at a time (`build_lock`). The caller picks the thread
//! and the moment; nothing here spawns.

use std::sync::{Arc, PoisonError};
use std::time::{Duration, Instant};

use crate::recall::ann::error::AnnError;
use crate::recall::ann::hnsw::{Builder, GraphArrays};
use crate::recall::ann::segment::Segment;
use crate::recall::ann::tail::Tail;
use crate::recall::ann::{AnnIndex, State};

/// What a build did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BuildKind {
    /// A tail became a new segment.
    NewSegment,
    /// A tail was inserted into (a copy of) the newest segment.
    Extended,
    /// Segments were merged into (a copy of) the largest.
    Merged,
    /// Segments were rebuilt from their live nodes (too many dead).
    Rebuilt,
}

/// A build's outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BuildReport {
    /// What it did.
    pub kind: BuildKind,
    /// Vectors inserted into a graph.
    pub inserted: usize,
    /// Nodes of the published segment.
    pub nodes: usize,
    /// Wall time, inputs to publish.
    pub elapsed: Duration,
}

/// Where a node of a segment being built comes from, to carry tombstones
/// set during the build: `source` indexes the build's source segments, or is
/// [`FROM_TAIL`] (then `local` is the frozen tail's slot).
#[derive(Debug, Clone, Copy)]
struct Origin {
    source: u32,
    local: u32,
}

const FROM_TAIL: u32 = u32::MAX;

/// A build in progress.
struct Plan {
    builder: Builder,
    origins: Vec<Origin>,
    sources: Vec<Arc<Segment>>,
    frozen: Option<Arc<Tail>>,
}

impl AnnIndex {
    /// Builds the tail into graph if it holds at least `tail_threshold`
    /// vectors; None if there was nothing to do. Run it on the owner's
    /// background thread: it takes seconds per 10,000 vectors.
    pub fn build_pending(&self) -> Result<Option<BuildReport>, AnnError> {
        self.build_tail(self.config.tail_threshold)
    }

    /// Builds the tail into graph whatever its size (before a checkpoint,
    /// or to measure the graph alone).
    pub fn seal(&self) -> Result<Option<BuildReport>, AnnError> {
        self.build_tail(1)
    }

    /// Whether [`Self::build_pending`] has work.
    pub fn needs_build(&self) -> bool {
        let state = self.read();
        state.frozen.is_some() || state.active.len() >= self.config.tail_threshold
    }

    /// Merges segments when there are more than `max_segments`, or rebuilds
    /// when dead nodes pass `max_dead_fraction`; None if neither holds.
    pub fn compact(&self) -> Result<Option<BuildReport>, AnnError> {
        let _one_build = self.build_lock.lock().unwrap_or_else(PoisonError::into_inner);
        let started = Instant::now();
        let sources = self.segments();
        let too_many = sources.len() > self.config.max_segments;
        if !too_many && !sources.iter().any(|s| self.too_dead(s)) {
            return Ok(None);
        }
        // The largest segment that is not too dead is the base; every other
        // source's live nodes are inserted into a copy of it.
        let base = (0..sources.len())
            .filter(|i| !self.too_dead(&sources[*i]))
            .max_by_key(|i| sources[*i].len());
        let kind = if base.is_some() {
            BuildKind::Merged
        } else {
            BuildKind::Rebuilt
        };
        let mut plan = self.plan(sources, base, None);
        let mut inserted = 0;
        for source in (0..plan.sources.len()).filter(|s| Some(*s) != base) {
            inserted += plan.insert_live_nodes_of(source);
        }
        self.publish(plan, kind, inserted, started).map(Some)
    }

    /// Whether [`Self::compact`] has work.
    pub fn needs_compaction(&self) -> bool {
        let state = self.read();
        state.segments.len() > self.config.max_segments || state.segments.iter().any(|s| self.too_dead(s))
    }

    fn build_tail(&self, min_len: usize) -> Result<Option<BuildReport>, AnnError> {
        let _one_build = self.build_lock.lock().unwrap_or_else(PoisonError::into_inner);
        let started = Instant::now();
        let Some((frozen, newest)) = self.freeze_tail(min_len) else {
            return Ok(None);
        };
        let extend = newest.filter(|segment| {
            segment.m() == self.config.hnsw.m
                && !self.too_dead(segment)
                && segment.len() <= frozen.len().saturating_mul(self.config.extend_ratio)
                && segment.len() + frozen.len() <= self.config.max_segment_nodes
        });
        let kind = if extend.is_some() {
            BuildKind::Extended
        } else {
            BuildKind::NewSegment
        };
        let sources: Vec<Arc<Segment>> = extend.into_iter().collect();
        let base = (!sources.is_empty()).then_some(0);
        let mut plan = self.plan(sources, base, Some(frozen));
        let inserted = plan.insert_frozen();
        self.publish(plan, kind, inserted, started).map(Some)
    }

    /// Freezes the active tail (or takes the one a failed build left frozen)
    /// if it holds at least `min_len`; returns it and the newest segment.
    fn freeze_tail(&self, min_len: usize) -> Option<(Arc<Tail>, Option<Arc<Segment>>)> {
        let mut state = self.write();
        let newest = state.segments.last().cloned();
        if let Some(frozen) = &state.frozen {
            return Some((frozen.clone(), newest));
        }
        if state.active.len() < min_len.max(1) {
            return None;
        }
        let frozen = Arc::new(std::mem::replace(&mut state.active, Tail::new(self.config.dim)));
        state.frozen = Some(frozen.clone());
        Some((frozen, newest))
    }

    fn too_dead(&self, segment: &Segment) -> bool {
        segment.dead_count() as f64 > self.config.max_dead_fraction * segment.len() as f64
    }

    /// A builder starting from a copy of `sources[base]` (or empty).
    fn plan(&self, sources: Vec<Arc<Segment>>, base: Option<usize>, frozen: Option<Arc<Tail>>) -> Plan {
        let params = self.config.hnsw;
        let (builder, origins) = match base {
            Some(index) => {
                let graph = sources[index].graph();
                let origins = (0..graph.len() as u32).map(|local| Origin {
                    source: index as u32,
                    local,
                });
                (
                    Builder::extending(params, self.kernel, GraphArrays::copy_of(&graph)),
                    origins.collect(),
                )
            }
            None => (Builder::new(params, self.kernel, self.config.dim), Vec::new()),
        };
        Plan {
            builder,
            origins,
            sources,
            frozen,
        }
    }

    /// Publishes the built segment: carries over deletes made during the
    /// build, replaces the sources, drops the frozen tail.
    fn publish(&self, plan: Plan, kind: BuildKind, inserted: usize, started: Instant) -> Result<BuildReport, AnnError> {
        let Plan {
            builder,
            origins,
            sources,
            frozen,
        } = plan;
        let segment = Segment::from_arrays(&builder.finish())?;
        let nodes = segment.len();
        let mut state = self.write();
        carry_tombstones(&segment, &origins, &sources, frozen.as_deref(), &state);
        state
            .segments
            .retain(|s| !sources.iter().any(|source| Arc::ptr_eq(s, source)));
        state.segments.push(Arc::new(segment));
        if frozen.is_some() {
            state.frozen = None;
            state.frozen_dead.clear();
        }
        Ok(BuildReport {
            kind,
            inserted,
            nodes,
            elapsed: started.elapsed(),
        })
    }
}

impl Plan {
    /// Inserts every entry of the frozen tail; returns how many.
    fn insert_frozen(&mut self) -> usize {
        let Some(frozen) = self.frozen.clone() else {
            return 0;
        };
        for slot in 0..frozen.len() {
            let (id, codes, scale) = frozen.entry(slot);
            self.builder.insert(id, codes, scale);
            self.origins.push(Origin {
                source: super::build::FROM_TAIL,
                local: slot as u32,
            });
        }
        frozen.len()
    }

    /// Inserts the nodes of `sources[source]` alive now; returns how many.
    fn insert_live_nodes_of(&mut self, source: usize) -> usize {
        let segment = self.sources[source].clone();
        let graph = segment.graph();
        let mut inserted = 0;
        for local in (0..graph.len() as u32).filter(|l| !segment.is_dead(*l)) {
            self.builder
                .insert(graph.ids[local as usize], graph.code(local), graph.scale(local));
            self.origins.push(Origin {
                source: source as u32,
                local,
            });
            inserted += 1;
        }
        inserted
    }
}

/// Marks dead every node of `segment` whose origin died during the build.
fn carry_tombstones(
    segment: &Segment,
    origins: &[Origin],
    sources: &[Arc<Segment>],
    frozen: Option<&Tail>,
    state: &State,
) {
    debug_assert_eq!(origins.len(), segment.len());
    for (node, origin) in origins.iter().enumerate() {
        let dead = match (origin.source, frozen) {
            (FROM_TAIL, Some(frozen)) => state.frozen_dead.contains(&frozen.entry(origin.local as usize).0),
            (FROM_TAIL, None) => false,
            (source, _) => sources[source as usize].is_dead(origin.local),
        };
        if dead {
            segment.mark_dead(node as u32);
        }
    }
}
