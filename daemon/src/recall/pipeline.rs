//! The recall pipeline, as far as it goes today: route check → query
//! validation → the engines that can search the query → rank fusion → the
//! memories' bytes from the store.
//!
//! Engines: every indexed engine that can search the query runs (lexical and
//! dense need a text, vector needs a vector), each asked for
//! [`FUSION_DEPTH`] candidates or k if more; their lists are fused by
//! reciprocal rank (`Σ 1 / (60 + rank)`, the baseline DESIGN §5 asks to
//! beat). A query may name one engine (`QueryInput::engine`): then that
//! engine alone answers, scores unchanged. An engine that fails (deadline,
//! error, panic: each isolated) is left out and the answer is marked
//! degraded with the reason; only when every engine fails does the recall
//! fail. A pipeline without indexed engines (tests) answers with the scan.
//!
//! The last steps: the answer's memories are looked up by id in the store
//! (one read lock), so a memory forgotten while the engines ran is not
//! returned, and their bytes are read in place; a fused answer then shows
//! only one of a memory and a near-duplicate linked to it on Remember (tag
//! `nexus.duplicate_of`); a named engine's answer is left raw.
//!
//! Where it grows (next issue): the router picks a route, the cache answers
//! or misses, engines get their own deadlines and circuit breakers, and
//! weighted fusion replaces the rank fusion.

use std::collections::HashMap;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use crate::preprocess::remember::DUPLICATE_TAG;
use crate::recall::engine::{Candidate, Candidates, Engine, EngineError, SearchContext, Signals};
use crate::recall::error::RecallError;
use crate::recall::query::{EngineName, Query, QueryInput, Route};
use crate::recall::scan::ScanEngine;
use crate::store::{Deadline, Memory, Store};

/// Candidates each engine is asked for when several are fused (or k if
/// more). Measured against 32 (release, side by side): a fused text recall
/// at 10 k memories cost the daemon 303–310 µs p50 instead of 451–505 (the
/// dense engine re-embeds every shortlisted text for its exact re-rank), and
/// the fused LoCoMo recall@10 rose from 0.5889 to 0.5993 (deep lists of the
/// weaker engine dilute reciprocal-rank fusion).
pub const FUSION_DEPTH: usize = 16;

/// The reciprocal-rank constant (Cormack et al.; the usual 60).
pub const RRF_K: f32 = 60.0;

/// Answers recalls over a store.
#[derive(Clone)]
pub struct Recall {
    store: Store,
    /// The indexed engines, in the order they run.
    engines: Vec<Arc<dyn Engine>>,
    /// The exact scan: the reference, by name or when nothing is indexed.
    scan: Arc<dyn Engine>,
}

/// One result: the candidate and its memory (read in place).
#[derive(Debug, Clone)]
pub struct Recalled {
    /// Id, score and its parts.
    pub candidate: Candidate,
    /// The memory.
    pub memory: Memory,
}

/// A recall's answer.
#[derive(Debug, Clone, Default)]
pub struct Answer {
    /// Best first.
    pub hits: Vec<Recalled>,
    /// Set when an engine that should have answered did not (which, why).
    pub degraded: Option<String>,
    /// The engines whose candidates made the answer.
    pub engines: Vec<&'static str>,
}

impl Recall {
    /// Recalls over `store` with the exact scan alone.
    pub fn new(store: Store) -> Self {
        Self::with_engines(store, Vec::new())
    }

    /// Recalls over `store` answered by `engines` (each must also be one of
    /// the store's followers, `Store::open_with`, to see the writes).
    pub fn with_engines(store: Store, engines: Vec<Arc<dyn Engine>>) -> Self {
        Self {
            store,
            engines,
            scan: Arc::new(ScanEngine),
        }
    }

    /// Recalls over `store` answered by `engine` alone (tests).
    pub fn with_engine(store: Store, engine: Arc<dyn Engine>) -> Self {
        Self::with_engines(store, vec![engine])
    }

    /// The engines, for start-up reports.
    pub fn engines(&self) -> &[Arc<dyn Engine>] {
        &self.engines
    }

    /// After the store opened: each engine checks and reports its index.
    pub fn opened(&self) {
        for engine in &self.engines {
            engine.opened(&self.store);
        }
    }

    /// The best memories for `input`, best first, by `deadline`.
    pub async fn recall(&self, input: &QueryInput<'_>, deadline: Deadline) -> Result<Answer, RecallError> {
        check_route(input.route)?;
        let query = Query::validate(input, &self.store)?;
        let ctx = SearchContext::new(&self.store, deadline);
        let (hits, degraded, engines) = match query.engine() {
            Some(name) => {
                let engine = self.named(name)?;
                check_applies(name, &query)?;
                let answered = isolated(engine.search(&query, &ctx), engine.name()).await?;
                (answered.hits, None, vec![answered.engine])
            }
            None => self.fused(&query, &ctx).await?,
        };
        let memories = self.store.memories(hits.iter().map(|hit| hit.id));
        let recalled = (hits.into_iter().zip(memories)).filter_map(|(candidate, memory)| {
            Some(Recalled {
                candidate,
                memory: memory?,
            })
        });
        // A named engine's answer is its own, raw; a fused answer shows one
        // of a memory and its linked near-duplicate.
        let mut hits = match query.engine() {
            Some(_) => recalled.collect(),
            None => hide_linked_duplicates(recalled),
        };
        hits.truncate(query.k());
        Ok(Answer {
            hits,
            degraded,
            engines,
        })
    }

    /// The engine called `name`.
    fn named(&self, name: EngineName) -> Result<&Arc<dyn Engine>, RecallError> {
        if name == EngineName::Scan {
            return Ok(&self.scan);
        }
        (self.engines.iter().find(|e| e.name() == name.as_str())).ok_or_else(|| RecallError::EngineNotRunning {
            engine: name.as_str(),
            running: self.running(),
        })
    }

    fn running(&self) -> String {
        let mut names: Vec<&str> = self.engines.iter().map(|e| e.name()).collect();
        names.push(self.scan.name());
        names.join(", ")
    }

    /// Every engine that can search `query`, fused by reciprocal rank.
    async fn fused(
        &self,
        query: &Query<'_>,
        ctx: &SearchContext<'_>,
    ) -> Result<(Vec<Candidate>, Option<String>, Vec<&'static str>), RecallError> {
        let applicable: Vec<&Arc<dyn Engine>> = (self.engines.iter())
            .filter(|engine| engine_name(engine.name()).is_none_or(|name| applies(name, query)))
            .collect();
        if applicable.is_empty() {
            let answered = isolated(self.scan.search(query, ctx), self.scan.name()).await?;
            return Ok((answered.hits, None, vec![answered.engine]));
        }
        let deep = query.with_k(query.k().max(FUSION_DEPTH));
        let mut lists = Vec::with_capacity(applicable.len());
        let mut failures = Vec::new();
        for engine in applicable {
            match isolated(engine.search(&deep, ctx), engine.name()).await {
                Ok(candidates) => lists.push(candidates),
                Err(error) => failures.push(error),
            }
        }
        if lists.is_empty() {
            return Err(failures.remove(0).into());
        }
        let degraded = (!failures.is_empty()).then(|| {
            let reasons: Vec<String> = failures.iter().map(|e| e.to_string()).collect();
            format!("answered without {}", reasons.join("; "))
        });
        let engines = lists.iter().map(|list| list.engine).collect();
        // Fused past k: hiding linked duplicates may drop a few.
        Ok((fuse(&lists, deep.k()), degraded, engines))
    }
}

/// Of a memory and its near-duplicate linked on Remember (tag
/// `nexus.duplicate_of`), only the better ranked is shown.
fn hide_linked_duplicates(ranked: impl Iterator<Item = Recalled>) -> Vec<Recalled> {
    let mut shown: Vec<Recalled> = Vec::new();
    let mut shown_ids = std::collections::HashSet::new();
    // The originals of the duplicates shown.
    let mut originals = std::collections::HashSet::new();
    for hit in ranked {
        let view = hit.memory.view();
        let original = (view.tags())
            .find(|(key, _)| *key == DUPLICATE_TAG)
            .and_then(|(_, value)| value.parse::<u64>().ok());
        let id = hit.candidate.id;
        let linked = originals.contains(&id)
            || original.is_some_and(|original| shown_ids.contains(&original) || originals.contains(&original));
        if !linked {
            shown_ids.insert(id);
            originals.extend(original);
            shown.push(hit);
        }
    }
    shown
}

fn engine_name(name: &str) -> Option<EngineName> {
    [
        EngineName::Scan,
        EngineName::Lexical,
        EngineName::Dense,
        EngineName::Vector,
    ]
    .into_iter()
    .find(|n| n.as_str() == name)
}

/// Whether engine `name` can search `query`.
fn applies(name: EngineName, query: &Query<'_>) -> bool {
    match name {
        EngineName::Scan => true,
        EngineName::Lexical | EngineName::Dense => query.text().is_some(),
        EngineName::Vector => query.vector().is_some(),
    }
}

fn check_applies(name: EngineName, query: &Query<'_>) -> Result<(), RecallError> {
    if applies(name, query) {
        return Ok(());
    }
    let needs = if name == EngineName::Vector { "vector" } else { "text" };
    Err(RecallError::EngineNeeds {
        engine: name.as_str(),
        needs,
    })
}

/// Reciprocal-rank fusion of `lists` into the best `k`: each candidate
/// scores `Σ 1 / (RRF_K + rank)` over the lists that have it (rank from 1);
/// its signals are the union of the lists' (the best vector similarity).
/// Ties: lower id first.
pub fn fuse(lists: &[Candidates], k: usize) -> Vec<Candidate> {
    let mut by_id: HashMap<u64, Candidate> = HashMap::new();
    for list in lists {
        for (rank, hit) in list.hits.iter().enumerate() {
            let share = 1.0 / (RRF_K + rank as f32 + 1.0);
            let fused = by_id.entry(hit.id).or_insert(Candidate {
                id: hit.id,
                score: 0.0,
                signals: Signals::default(),
            });
            fused.score += share;
            fused.signals.vector = max_option(fused.signals.vector, hit.signals.vector);
            fused.signals.lexical = max_option(fused.signals.lexical, hit.signals.lexical);
        }
    }
    let mut fused: Vec<Candidate> = by_id.into_values().collect();
    fused.sort_unstable_by(|a, b| b.score.total_cmp(&a.score).then(a.id.cmp(&b.id)));
    fused.truncate(k);
    fused
}

fn max_option(a: Option<f32>, b: Option<f32>) -> Option<f32> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    }
}

/// Runs an engine's search with its panics caught: one engine's bug costs
/// its own candidates, not the request (or the worker thread).
async fn isolated(
    search: Pin<Box<dyn Future<Output = Result<Candidates, EngineError>> + Send + '_>>,
    engine: &'static str,
) -> Result<Candidates, EngineError> {
    CatchUnwind { inner: search, engine }.await
}

struct CatchUnwind<'a> {
    inner: Pin<Box<dyn Future<Output = Result<Candidates, EngineError>> + Send + 'a>>,
    engine: &'static str,
}

impl Future for CatchUnwind<'_> {
    type Output = Result<Candidates, EngineError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let engine = self.engine;
        let polled = std::panic::catch_unwind(AssertUnwindSafe(|| self.inner.as_mut().poll(cx)));
        polled.unwrap_or_else(|_| {
            tracing::error!(engine, "an engine panicked during a search");
            Poll::Ready(Err(EngineError::Panicked { engine }))
        })
    }
}

/// The routes this build can take: the daemon's own choice, and
/// SmartRouting (which the fused engines answer until the router exists). A
/// forced route it cannot take is refused, never silently answered another way.
fn check_route(route: Route) -> Result<(), RecallError> {
    match route {
        Route::Auto | Route::SmartRouting => Ok(()),
        Route::CacheOnly | Route::FullPipeline | Route::MaximumIntelligence => {
            Err(RecallError::RouteNotAvailable { route })
        }
    }
}

#[cfg(test)]
mod tests;
