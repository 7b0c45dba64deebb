//! The recall pipeline: validation → route → cache → engines (each behind
//! its breaker, under the request's deadline, panics isolated) → weighted
//! fusion → the memories' bytes from the store → the cache.
//!
//! Routes (DESIGN §5; the router, `router.rs`, picks one unless the request
//! forces it, and the answer says which and why):
//! - **CacheOnly**: the cache's answer, exact (L1) or semantic (L2), cached
//!   under the namespace's current epoch. An auto-routed recall looks in the
//!   cache first; a forced CacheOnly that misses is an error.
//! - **SmartRouting**: lexical + one vector ANN (the client's space when the
//!   query has a vector, else the built-in embedding's), [`SMART_DEPTH`]
//!   candidates each, then fusion with conversation context.
//! - **FullPipeline**: every engine at [`FULL_DEPTH`], every factor (date
//!   proximity, novelty from mining), near-duplicates folded (MinHash
//!   Jaccard ≥ [`DEDUP_JACCARD`]).
//! - **MaximumIntelligence**: the full pipeline, plus query expansion
//!   (memories sharing the query's entities; a second lexical hop from the
//!   best hits' texts) and an exact re-rank of every candidate by the
//!   built-in embedding.
//!
//! Fusion (`fusion.rs`) scores each candidate over eight factors in `[0, 1]`:
//! - vector: the engine's cosine, min-max normalised over its list;
//! - lexical: BM25 over the list's best;
//! - context: written within [`Tuning::context_window`] writes of one of the
//!   strong hits (best base scores) in the same namespace and session
//!   (created within [`Tuning::context_max_gap_ms`]), by the hit's base
//!   score, decaying with distance: a question's evidence often spans
//!   turns next to each other (fitted on locomo-dev, BENCHMARKS.md);
//! - recency (half-life), importance, preference (feedback tallies, durable
//!   in the WAL and snapshot), diversity (mining novelty), date proximity.
//!
//! A named engine (`QueryInput::engine`) answers alone, raw. An engine that
//! fails, runs past the deadline, panics or whose breaker is open is left
//! out and the answer is `degraded`, naming it; when every engine is out an
//! auto-routed recall is answered by the exact scan (degraded), and a
//! forced route is refused naming them.
//!
//! Feedback: each answered recall's request id and result ids are kept in a
//! bounded record ([`RECENT_RECALLS`]), so a judgement is checked against
//! the recall it names.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use arc_swap::ArcSwap;

use crate::preprocess::neardup::NearDupFollower;
use crate::preprocess::remember::DUPLICATE_TAG;
use crate::recall::breaker::{Breaker, BreakerConfig, BreakerState};
use crate::recall::cache::{Cache, CacheConfig, CacheStats, Epochs, KeyParts, KeyRef, Level};
use crate::recall::dense::DenseEngine;
use crate::recall::engine::{Candidate, Candidates, Engine, EngineError, SearchContext, Signals};
use crate::recall::error::RecallError;
use crate::recall::fusion::{FACTORS, Factor, Features, Weights, score_simd, top_k};
use crate::recall::learning::{Learning, wall_ms};
use crate::recall::lexical::entities::EntityExtractor;
use crate::recall::lexical_engine::LexicalEngine;
use crate::recall::meta::MemoryMeta;
use crate::recall::query::{EngineName, Query, QueryInput, Route};
use crate::recall::router::{Router, RouterConfig};
use crate::recall::scan::ScanEngine;
use crate::store::{Deadline, Follower, IndexChange, IndexEvent, Memory, Store};

/// Candidates each engine gives SmartRouting (or k if more): enough for the
/// context boost to find its strong hits (fused LoCoMo recall@10 moves by
/// less than 0.01 between 16 and 100).
pub const SMART_DEPTH: usize = 16;

/// Candidates each engine gives the full and maximum routes (or k if more).
pub const FULL_DEPTH: usize = 48;

/// The smallest cosine spread the vector factor's min-max normalisation
/// stretches to `[0, 1]`: in a small namespace two memories a hair apart
/// would otherwise be a whole factor apart (neutral on locomo-dev: recall@10
/// 0.7225 → 0.7222 at depth 48).
pub const MIN_COSINE_SPAN: f32 = 0.1;

/// Estimated Jaccard at which two candidates count as one (DESIGN §5).
pub const DEDUP_JACCARD: f32 = 0.7;

/// Kept results checked for near-duplicates at most: folding is O(kept ×
/// candidates), so a k of 1,000 must not make it quadratic.
pub const MAX_DEDUP_KEPT: usize = 64;

/// Recalls remembered for feedback: enough for an agent to judge the
/// results of its last few thousand recalls.
pub const RECENT_RECALLS: usize = 4096;

/// Memories the maximum route adds through each entity-link lookup.
pub const EXPANSION_RELATED: usize = 16;

/// Strongest hits whose entity links the maximum route follows (the second hop).
pub const EXPANSION_HOPS: usize = 2;

/// An entity link counts at most this share of the context factor.
pub const EXPANSION_SHARE: f32 = 0.5;

/// Longest an engine may search: an engine that hangs must not hold a
/// recall (and its worker) for ever, even for a request with no deadline.
pub const ENGINE_BUDGET: std::time::Duration = std::time::Duration::from_secs(2);

/// The fusion's tunable constants (swapped whole, with the weights).
#[derive(Debug, Clone, PartialEq)]
pub struct Tuning {
    /// Factor weights.
    pub weights: Weights,
    /// Strong hits whose neighbours get the context factor.
    pub context_strong: usize,
    /// Neighbours each side of a strong hit.
    pub context_window: usize,
    /// The context factor's decay per write of distance.
    pub context_decay: f32,
    /// Neighbours must be created within this of the hit (same session).
    pub context_max_gap_ms: i64,
    /// Recency halves every this many ms.
    pub recency_half_life_ms: f64,
    /// Date proximity falls to 0 this many ms away from the named date.
    pub date_window_ms: f64,
    /// The engines' breakers.
    pub breaker: BreakerConfig,
}

impl Default for Tuning {
    /// Fitted on locomo-dev (context: 3 strong hits, 3 each side, decay
    /// 0.7; BENCHMARKS.md "Fitting the fusion"); the rest are conventions.
    fn default() -> Self {
        Self {
            weights: Weights::default(),
            context_strong: 3,
            context_window: 3,
            context_decay: 0.7,
            context_max_gap_ms: 6 * 3600 * 1000,
            recency_half_life_ms: 30.0 * 86_400_000.0,
            date_window_ms: 31.0 * 86_400_000.0,
            breaker: BreakerConfig::default(),
        }
    }
}

/// The pipeline's settings.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PipelineConfig {
    /// Fusion and breakers (swappable).
    pub tuning: Tuning,
    /// The router (swappable).
    pub router: RouterConfig,
    /// The cache (bounds fixed at start).
    pub cache: CacheConfig,
}

/// What the pipeline uses besides its engines (all optional: tests run
/// without them, and each missing part only removes its factor).
#[derive(Default, Clone)]
pub struct RecallParts {
    /// Namespaces, times and write order (context, filters).
    pub meta: Option<Arc<MemoryMeta>>,
    /// Entity links (the maximum route's expansion).
    pub lexical: Option<Arc<LexicalEngine>>,
    /// The built-in embedder's engine (the query embedding).
    pub dense: Option<Arc<DenseEngine>>,
    /// Mining: near-duplicate signatures and novelty.
    pub mining: Option<Arc<NearDupFollower>>,
    /// Learning: preferences from feedback, per memory and tag, decaying
    /// (None: the store's plain counts per memory).
    pub learning: Option<Arc<Learning>>,
    /// The cache's epochs, bumped by an [`EpochFollower`] registered last
    /// with the store (None: no cache, since nothing would bump them).
    pub epochs: Option<Arc<Epochs>>,
}

/// Answers recalls over a store.
#[derive(Clone)]
pub struct Recall {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    /// The indexed engines, in the order they run, each with its breaker.
    engines: Vec<(Arc<dyn Engine>, Breaker)>,
    /// The exact scan: the reference, by name, when nothing is indexed, or
    /// when every engine is down.
    scan: Arc<dyn Engine>,
    parts: RecallParts,
    epochs: Arc<Epochs>,
    router: Router,
    cache: Cache<Arc<Cached>>,
    /// Only with epochs a follower bumps can cached answers be trusted.
    caching: bool,
    tuning: ArcSwap<Tuning>,
    recent: Mutex<RecentRecalls>,
    routes: RouteCounters,
}

/// A cached answer: the memories (their stored bytes, shared) and how it was made.
struct Cached {
    hits: Hits,
    engines: Arc<[&'static str]>,
}

/// An answer's results, best first: shared with the cache, so a cache hit
/// hands out the cached results without copying them (one reference count).
#[derive(Debug, Clone, Default)]
pub struct Hits {
    all: Arc<Vec<Recalled>>,
    len: usize,
}

impl Hits {
    /// The first `k` of these.
    fn first(&self, k: usize) -> Hits {
        Hits {
            all: Arc::clone(&self.all),
            len: self.len.min(k),
        }
    }
}

impl From<Vec<Recalled>> for Hits {
    fn from(hits: Vec<Recalled>) -> Self {
        let len = hits.len();
        Self {
            all: Arc::new(hits),
            len,
        }
    }
}

impl<'a> IntoIterator for &'a Hits {
    type Item = &'a Recalled;
    type IntoIter = std::slice::Iter<'a, Recalled>;

    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

impl std::ops::Deref for Hits {
    type Target = [Recalled];

    fn deref(&self) -> &[Recalled] {
        &self.all[..self.len]
    }
}

/// One result: the candidate and its memory (read in place).
#[derive(Debug, Clone)]
pub struct Recalled {
    /// Id, score and the engines' signals.
    pub candidate: Candidate,
    /// The memory.
    pub memory: Memory,
    /// Each factor's contribution to the score (fused answers).
    pub contributions: Option<[f32; FACTORS]>,
}

/// A recall's answer.
#[derive(Debug, Clone, Default)]
pub struct Answer {
    /// Best first.
    pub hits: Hits,
    /// Set when an engine that should have answered did not (which, why).
    pub degraded: Option<String>,
    /// The engines whose candidates made the answer.
    pub engines: Arc<[&'static str]>,
    /// The route taken (`Auto` for a named engine's answer).
    pub route: Route,
    /// Why that route.
    pub reason: &'static str,
    /// The cache level that answered, if it did.
    pub cached: Option<Level>,
}

impl Recall {
    /// Recalls over `store` with the exact scan alone.
    pub fn new(store: Store) -> Self {
        Self::with_engines(store, Vec::new())
    }

    /// Recalls over `store` answered by `engines` (each must also be one of
    /// the store's followers, `Store::open_with`, to see the writes).
    pub fn with_engines(store: Store, engines: Vec<Arc<dyn Engine>>) -> Self {
        Self::build(store, engines, RecallParts::default(), PipelineConfig::default())
            .expect("the default cache settings are valid")
    }

    /// Recalls over `store` answered by `engine` alone (tests).
    pub fn with_engine(store: Store, engine: Arc<dyn Engine>) -> Self {
        Self::with_engines(store, vec![engine])
    }

    /// The full pipeline: `engines`, the `parts` fusion uses, `config`.
    pub fn build(
        store: Store,
        engines: Vec<Arc<dyn Engine>>,
        parts: RecallParts,
        config: PipelineConfig,
    ) -> Result<Self, crate::recall::cache::CacheConfigError> {
        let caching = parts.epochs.is_some();
        let epochs = parts.epochs.clone().unwrap_or_default();
        let extractor = EntityExtractor::new(&[]).expect("no keyword lists is valid");
        Ok(Self {
            inner: Arc::new(Inner {
                store,
                engines: engines.into_iter().map(|e| (e, Breaker::default())).collect(),
                scan: Arc::new(ScanEngine),
                epochs,
                parts,
                router: Router::new(config.router, extractor),
                cache: Cache::new(config.cache)?,
                caching,
                tuning: ArcSwap::from_pointee(config.tuning),
                recent: Mutex::new(RecentRecalls::default()),
                routes: RouteCounters::default(),
            }),
        })
    }

    /// Swaps the router's and fusion's settings (recalls in flight keep
    /// the ones they read; nothing waits).
    pub fn set_config(&self, router: RouterConfig, tuning: Tuning) {
        self.inner.router.set_config(router);
        self.inner.tuning.store(Arc::new(tuning));
    }

    /// The engines, for start-up reports and Stats.
    pub fn engines(&self) -> impl Iterator<Item = &Arc<dyn Engine>> {
        self.inner.engines.iter().map(|(engine, _)| engine)
    }

    /// After the store opened: each engine checks and reports its index.
    pub fn opened(&self) {
        for engine in self.engines() {
            engine.opened(&self.inner.store);
        }
        if let Some(learning) = &self.inner.parts.learning {
            learning.opened(&self.inner.store, wall_ms());
        }
    }

    /// Counters for Stats: the cache's, the routes', the breakers'.
    pub fn gauges(&self) -> Vec<(String, u64)> {
        let inner = &self.inner;
        let CacheStats {
            hits_exact,
            hits_semantic,
            misses,
            stale,
            evictions,
            entries,
            bytes,
        } = inner.cache.stats();
        let mut gauges = vec![
            ("cache_hits_exact".to_owned(), hits_exact),
            ("cache_hits_semantic".to_owned(), hits_semantic),
            ("cache_misses".to_owned(), misses),
            ("cache_stale".to_owned(), stale),
            ("cache_evictions".to_owned(), evictions),
            ("cache_entries".to_owned(), entries),
            ("cache_bytes".to_owned(), bytes),
        ];
        for (route, counter) in inner.routes.all() {
            gauges.push((format!("route_{route}"), counter.load(Ordering::Relaxed)));
        }
        if let Some(mining) = &inner.parts.mining {
            gauges.extend(mining.gauges());
        }
        if let Some(learning) = &inner.parts.learning {
            gauges.extend(learning.gauges());
        }
        let tuning = inner.tuning.load();
        let now = now_ms();
        for (engine, breaker) in &inner.engines {
            let name = engine.name();
            gauges.push((
                format!("{name}_breaker_state"),
                breaker.state(&tuning.breaker, now).code(),
            ));
            gauges.push((format!("{name}_breaker_opened"), breaker.times_opened()));
        }
        gauges
    }

    /// What answers below par now, one line each: engines whose circuit
    /// breaker is open or on trial (the Health probe's `degraded`).
    pub fn degraded(&self) -> Vec<String> {
        let tuning = self.inner.tuning.load();
        let now = now_ms();
        let mut degraded = Vec::new();
        for (engine, breaker) in &self.inner.engines {
            match breaker.state(&tuning.breaker, now) {
                BreakerState::Closed => {}
                BreakerState::Open => degraded.push(format!(
                    "engine {}: circuit breaker open after repeated failures; recalls go without it",
                    engine.name()
                )),
                BreakerState::HalfOpen => degraded.push(format!(
                    "engine {}: circuit breaker on trial after failures",
                    engine.name()
                )),
            }
        }
        degraded
    }

    /// The best memories for `input`, best first, by `deadline` (not
    /// recorded for feedback).
    pub async fn recall(&self, input: &QueryInput<'_>, deadline: Deadline) -> Result<Answer, RecallError> {
        self.recall_for(None, input, deadline).await
    }

    /// As [`Self::recall`], recording the answer under `request_id` so
    /// feedback can name it.
    pub async fn recall_for(
        &self,
        request_id: Option<u64>,
        input: &QueryInput<'_>,
        deadline: Deadline,
    ) -> Result<Answer, RecallError> {
        let answer = self.answer(input, deadline).await?;
        if let Some(id) = request_id {
            let mut recent = self.inner.recent.lock().unwrap_or_else(|p| p.into_inner());
            recent.record(id, answer.hits.iter().map(|hit| hit.candidate.id));
        }
        Ok(answer)
    }

    /// Checks that `memory_id` was a result of the recent recall `recall_request_id`.
    pub fn check_feedback(&self, recall_request_id: u64, memory_id: u64) -> Result<(), RecallError> {
        let recent = self.inner.recent.lock().unwrap_or_else(|p| p.into_inner());
        match recent.results(recall_request_id) {
            None => Err(RecallError::UnknownRecall {
                recall_request_id,
                kept: RECENT_RECALLS,
            }),
            Some(ids) if !ids.contains(&memory_id) => Err(RecallError::NotInRecall {
                memory_id,
                recall_request_id,
            }),
            Some(_) => Ok(()),
        }
    }

    async fn answer(&self, input: &QueryInput<'_>, deadline: Deadline) -> Result<Answer, RecallError> {
        let inner = &*self.inner;
        let query = Query::validate(input, &inner.store)?;
        if let Some(name) = query.engine() {
            return self.named(name, &query, deadline).await;
        }
        let namespace = query.filter().namespace;
        let stamp = inner.epochs.current(namespace);
        let created = query.filter().created.map(|r| (r.start_ms, r.end_ms));
        let parts = KeyParts {
            text: query.text().unwrap_or(""),
            namespace,
            tags: query.filter().tags,
            created,
            k: query.k() as u32,
            route: 0,
            vector: query.vector(),
        };
        let key = KeyRef::new(&parts);
        let text = query.text();
        let lookup = inner.caching && matches!(input.route, Route::Auto | Route::CacheOnly);
        // The exact level first: a hit costs a hash and a comparison, and
        // allocates nothing (the router's features would).
        if lookup && let Some(hit) = inner.cache.get(&key, None, stamp) {
            return Ok(inner.cached_answer(&hit.value, hit.level, &query));
        }
        let mut embedding = None;
        if lookup {
            embedding = text.and_then(|t| inner.parts.dense.as_ref()?.embed_text(t));
            if let Some(hit) = inner.cache.get(&key, embedding.as_deref(), stamp) {
                return Ok(inner.cached_answer(&hit.value, hit.level, &query));
            }
        }
        if input.route == Route::CacheOnly {
            return Err(RecallError::NotCached {
                namespace: namespace.to_owned(),
            });
        }
        // The cache's prediction is the router's first rule; after the
        // misses above it holds only if a concurrent recall just filled it.
        let decision = inner.router.decide(input.route, || {
            let cached = inner.caching && inner.cache.predict(&key, stamp);
            inner.router.features(text, query.vector().is_some(), cached)
        });
        let route = match decision.route {
            // Predicted, but a lookup is a lookup: answer from the engines.
            Route::CacheOnly | Route::Auto => Route::SmartRouting,
            route => route,
        };
        let reason = if decision.route == Route::CacheOnly {
            "the cache predicted a hit that a write had already made stale: ANN and lexical, light fusion"
        } else {
            decision.reason
        };
        inner.routes.count(route);
        let ctx = SearchContext::new(&inner.store, deadline);
        let mut answer = inner.fused(&query, &ctx, route, input.route != Route::Auto).await?;
        answer.reason = reason;
        if inner.caching && answer.degraded.is_none() {
            let cached = Arc::new(Cached {
                hits: answer.hits.clone(),
                engines: Arc::clone(&answer.engines),
            });
            let bytes = cached.hits.iter().map(|h| h.memory.view().text().len() + 64).sum();
            let embedding = match embedding {
                Some(e) => Some(e),
                None => text.and_then(|t| inner.parts.dense.as_ref()?.embed_text(t)),
            };
            inner.cache.insert(key.to_owned_key(), embedding, stamp, cached, bytes);
        }
        Ok(answer)
    }

    /// The engine called `name`, alone, raw.
    async fn named(&self, name: EngineName, query: &Query<'_>, deadline: Deadline) -> Result<Answer, RecallError> {
        let inner = &*self.inner;
        let engine = if name == EngineName::Scan {
            &inner.scan
        } else {
            (inner.engines.iter().map(|(e, _)| e).find(|e| e.name() == name.as_str())).ok_or_else(|| {
                RecallError::EngineNotRunning {
                    engine: name.as_str(),
                    running: inner.running(),
                }
            })?
        };
        check_applies(name, query)?;
        let ctx = SearchContext::new(&inner.store, deadline);
        let answered = isolated(engine.search(query, &ctx), engine.name()).await?;
        let mut hits = raw_results(&inner.store, answered.hits);
        hits.truncate(query.k());
        Ok(Answer {
            hits: hits.into(),
            engines: Arc::new([answered.engine]),
            reason: "engine named by the request",
            ..Answer::default()
        })
    }
}

impl Inner {
    fn running(&self) -> String {
        let mut names: Vec<&str> = self.engines.iter().map(|(e, _)| e.name()).collect();
        names.push(self.scan.name());
        names.join(", ")
    }

    fn cached_answer(&self, cached: &Cached, level: Level, query: &Query<'_>) -> Answer {
        self.routes.count(Route::CacheOnly);
        Answer {
            hits: cached.hits.first(query.k()),
            degraded: None,
            engines: Arc::clone(&cached.engines),
            route: Route::CacheOnly,
            reason: match level {
                Level::Exact => "the same query was answered since the last write",
                Level::Semantic => "a query this similar was answered since the last write",
            },
            cached: Some(level),
        }
    }

    /// Runs the route's engines, fuses their lists, reads the memories.
    async fn fused(
        &self,
        query: &Query<'_>,
        ctx: &SearchContext<'_>,
        route: Route,
        forced: bool,
    ) -> Result<Answer, RecallError> {
        let tuning = self.tuning.load_full();
        let depth = if route == Route::SmartRouting {
            SMART_DEPTH
        } else {
            FULL_DEPTH
        };
        let deep = query.with_k(query.k().max(depth));
        let now = now_ms();
        let mut lists: Vec<Candidates> = Vec::with_capacity(self.engines.len());
        let mut failures: Vec<String> = Vec::new();
        for (engine, breaker) in &self.engines {
            if engine_name(engine.name()).is_some_and(|name| !applies(name, query) || !on_route(name, route, query)) {
                continue;
            }
            if !breaker.allow(&tuning.breaker, now) {
                failures.push(format!("{}: circuit breaker open", engine.name()));
                continue;
            }
            let searched = run_with_deadline(engine.search(&deep, ctx), engine.name(), ctx.deadline()).await;
            breaker.record(&tuning.breaker, searched.is_ok(), now_ms());
            match searched {
                Ok(candidates) => lists.push(candidates),
                Err(error) => failures.push(error.to_string()),
            }
        }
        if lists.is_empty() {
            if forced && !failures.is_empty() {
                return Err(RecallError::EnginesDown {
                    route,
                    reasons: failures.join("; "),
                });
            }
            // Nothing indexed (tests), or every engine down: the exact scan.
            let answered = isolated(self.scan.search(query, ctx), self.scan.name()).await?;
            let mut hits = hide_linked_duplicates(raw_results(&self.store, answered.hits));
            hits.truncate(query.k());
            return Ok(Answer {
                hits: hits.into(),
                degraded: (!failures.is_empty())
                    .then(|| format!("answered by the exact scan: {}", failures.join("; "))),
                engines: Arc::new([answered.engine]),
                route,
                ..Answer::default()
            });
        }
        let degraded = (!failures.is_empty()).then(|| format!("answered without {}", failures.join("; ")));
        let engines = lists.iter().map(|list| list.engine).collect();
        let hits = Fusion::new(self, query, &tuning, route).run(&lists, ctx);
        Ok(Answer {
            hits: hits.into(),
            degraded,
            engines,
            route,
            ..Answer::default()
        })
    }
}

/// One recall's fusion: features from the engines' lists and the parts,
/// scores, the best k, their memories.
struct Fusion<'a> {
    inner: &'a Inner,
    query: &'a Query<'a>,
    tuning: &'a Tuning,
    route: Route,
    features: Features,
    rows: HashMap<u64, usize>,
    /// Factors with no source in this recall.
    missing: u32,
}

impl<'a> Fusion<'a> {
    fn new(inner: &'a Inner, query: &'a Query<'a>, tuning: &'a Tuning, route: Route) -> Self {
        Self {
            inner,
            query,
            tuning,
            route,
            features: Features::with_capacity(2 * FULL_DEPTH),
            rows: HashMap::with_capacity(2 * FULL_DEPTH),
            missing: 0,
        }
    }

    fn row(&mut self, id: u64) -> usize {
        let features = &mut self.features;
        *self.rows.entry(id).or_insert_with(|| features.push(id))
    }

    fn run(mut self, lists: &[Candidates], ctx: &SearchContext<'_>) -> Vec<Recalled> {
        let full = self.route != Route::SmartRouting;
        self.engine_factors(lists);
        if self.route == Route::MaximumIntelligence {
            self.expand(ctx);
        }
        self.context(ctx);
        let ids: Vec<u64> = self.features.ids().to_vec();
        let memories = self.inner.store.memories(ids.iter().copied());
        self.memory_factors(&ids, &memories, full);
        let weights = self.tuning.weights.renormalised(self.missing);
        let mut scores = Vec::with_capacity(ids.len());
        score_simd(&self.features, &weights, &mut scores);
        // Past k: hiding duplicates may drop a few.
        let want = (self.query.k() * 2).max(self.query.k() + 8);
        let ranked = top_k(&ids, &scores, want);
        let recalled = ranked.into_iter().filter_map(|row| {
            Some(Recalled {
                candidate: Candidate {
                    id: ids[row],
                    score: scores[row],
                    signals: Signals {
                        vector: Some(self.features.get(row, Factor::Vector)),
                        lexical: Some(self.features.get(row, Factor::Lexical)),
                    },
                },
                memory: memories[row].clone()?,
                contributions: Some(self.features.contributions(row, &weights)),
            })
        });
        let mut hits = hide_linked_duplicates(recalled.collect());
        if full {
            hits = self.fold_near_duplicates(hits);
        }
        hits.truncate(self.query.k());
        hits
    }

    /// Vector and lexical factors from the engines' lists.
    fn engine_factors(&mut self, lists: &[Candidates]) {
        let (mut vector, mut lexical) = (false, false);
        for list in lists {
            if list.hits.is_empty() {
                continue;
            }
            if list.engine == crate::recall::lexical_engine::LEXICAL {
                lexical = true;
                let best = list.hits.iter().map(|h| h.score).fold(f32::MIN, f32::max);
                for hit in &list.hits {
                    let row = self.row(hit.id);
                    let value = if best > 0.0 { hit.score / best } else { 0.0 };
                    self.features
                        .set(row, Factor::Lexical, value.max(self.features.get(row, Factor::Lexical)));
                }
            } else {
                vector = true;
                let (lo, hi) = (list.hits.iter().map(|h| h.score))
                    .fold((f32::MAX, f32::MIN), |(lo, hi), s| (lo.min(s), hi.max(s)));
                let span = (hi - lo).max(MIN_COSINE_SPAN);
                for hit in &list.hits {
                    let row = self.row(hit.id);
                    let value = (hit.score - lo) / span;
                    self.features
                        .set(row, Factor::Vector, value.max(self.features.get(row, Factor::Vector)));
                }
            }
        }
        if !vector {
            self.missing |= 1 << Factor::Vector as u32;
        }
        if !lexical {
            self.missing |= 1 << Factor::Lexical as u32;
        }
    }

    /// The base score (vector and lexical) of a row.
    fn base(&self, row: usize) -> f32 {
        let w = &self.tuning.weights;
        let total = w.get(Factor::Vector) + w.get(Factor::Lexical);
        if total <= 0.0 {
            return 0.0;
        }
        (w.get(Factor::Vector) * self.features.get(row, Factor::Vector)
            + w.get(Factor::Lexical) * self.features.get(row, Factor::Lexical))
            / total
    }

    /// Conversation context: neighbours of the strongest hits.
    fn context(&mut self, ctx: &SearchContext<'_>) {
        let Some(meta) = self.inner.parts.meta.clone() else {
            self.missing |= 1 << Factor::Context as u32;
            return;
        };
        let n = self.features.len();
        let bases: Vec<f32> = (0..n).map(|row| self.base(row)).collect();
        let strong = top_k(&self.features.ids()[..n], &bases, self.tuning.context_strong);
        let filter = meta.reader(self.query.filter(), ctx.store());
        let mut neighbours = Vec::new();
        let mut boosts: Vec<(u64, f32)> = Vec::new();
        for row in strong {
            if bases[row] <= 0.0 {
                continue;
            }
            neighbours.clear();
            let id = self.features.ids()[row];
            filter.neighbours(
                id,
                self.tuning.context_window,
                self.tuning.context_max_gap_ms,
                &mut neighbours,
            );
            for &(other, distance) in &neighbours {
                let boost = bases[row] * self.tuning.context_decay.powi(distance as i32 - 1);
                boosts.push((other, boost));
            }
        }
        drop(filter);
        for (id, boost) in boosts {
            let row = self.row(id);
            let value = boost.max(self.features.get(row, Factor::Context));
            self.features.set(row, Factor::Context, value);
        }
    }

    /// The maximum route's expansion: memories sharing the query's
    /// entities, then a second hop (memories sharing entities with the
    /// strongest hits), both through the context factor; then an exact
    /// cosine for every candidate.
    fn expand(&mut self, ctx: &SearchContext<'_>) {
        let Some(text) = self.query.text() else { return };
        let namespace = self.query.filter().namespace;
        if let (Some(lexical), Some(meta)) = (self.inner.parts.lexical.clone(), self.inner.parts.meta.clone()) {
            let n = self.features.len();
            let bases: Vec<f32> = (0..n).map(|row| self.base(row)).collect();
            let strong = top_k(&self.features.ids()[..n], &bases, EXPANSION_HOPS);
            let mut links: Vec<(u64, f32)> = Vec::new();
            let first = lexical.related_to_text(namespace, text, EXPANSION_RELATED);
            let best = first.iter().map(|r| r.score).fold(0.0f32, f32::max);
            links.extend(
                first
                    .iter()
                    .map(|r| (r.id, EXPANSION_SHARE * r.score / best.max(f32::MIN_POSITIVE))),
            );
            for row in strong {
                let hop = lexical.related_to_memory(self.features.ids()[row], EXPANSION_RELATED);
                let best = hop.iter().map(|r| r.score).fold(0.0f32, f32::max);
                let base = bases[row];
                links.extend(
                    hop.iter()
                        .map(|r| (r.id, EXPANSION_SHARE * base * r.score / best.max(f32::MIN_POSITIVE))),
                );
            }
            let filter = meta.reader(self.query.filter(), ctx.store());
            links.retain(|(id, _)| filter.accepts(*id));
            drop(filter);
            for (id, value) in links {
                let row = self.row(id);
                self.features
                    .set(row, Factor::Context, value.max(self.features.get(row, Factor::Context)));
            }
        }
        // Exact re-rank: every candidate's text against the query, by the
        // built-in embedding, on the dense list's scale.
        let Some(dense) = &self.inner.parts.dense else { return };
        let Some(query_vector) = dense.embed_text(text) else {
            return;
        };
        let ids: Vec<u64> = self.features.ids().to_vec();
        let memories = self.inner.store.memories(ids.iter().copied());
        // One buffer for every candidate's embedding.
        let mut vector = Vec::with_capacity(query_vector.len());
        let cosines: Vec<f32> = (memories.iter())
            .map(|memory| match memory {
                Some(m) if dense.embed_text_into(m.view().text(), &mut vector) => dot(&query_vector, &vector),
                _ => 0.0,
            })
            .collect();
        let (lo, hi) = cosines
            .iter()
            .fold((f32::MAX, f32::MIN), |(lo, hi), &c| (lo.min(c), hi.max(c)));
        let span = (hi - lo).max(MIN_COSINE_SPAN);
        for (row, cosine) in cosines.into_iter().enumerate() {
            let value = (cosine - lo) / span;
            self.features.set(row, Factor::Vector, value);
        }
        self.missing &= !(1 << Factor::Vector as u32);
    }

    /// Recency, importance, preference, diversity and date proximity.
    fn memory_factors(&mut self, ids: &[u64], memories: &[Option<Memory>], full: bool) {
        // Memories' times are wall-clock ms since the epoch.
        let wall = wall_ms();
        let now = wall as f64;
        let learning = self.inner.parts.learning.as_ref().map(|l| l.reader());
        let tallies = match &learning {
            Some(_) => Vec::new(),
            None => self.inner.store.feedback_tallies(ids.iter().copied()),
        };
        let dates = if full {
            self.query
                .text()
                .map(|t| query_dates(&self.inner.router, t))
                .unwrap_or_default()
        } else {
            Vec::new()
        };
        if dates.is_empty() {
            self.missing |= 1 << Factor::Date as u32;
        }
        let mining = if full { self.inner.parts.mining.as_deref() } else { None };
        let view = mining.map(NearDupFollower::view);
        if view.is_none() {
            self.missing |= 1 << Factor::Diversity as u32;
        }
        for (row, memory) in memories.iter().enumerate() {
            let Some(memory) = memory else { continue };
            let memory = memory.view();
            let created = memory.created_at_ms() as f64;
            let age = (now - created).max(0.0);
            let recency = (-(age / self.tuning.recency_half_life_ms) * std::f64::consts::LN_2).exp();
            self.features.set(row, Factor::Recency, recency as f32);
            self.features.set(row, Factor::Importance, memory.importance());
            let preference = match (&learning, tallies.get(row)) {
                (Some(learning), _) => learning.preference(memory, wall),
                (None, Some(tally)) => {
                    let (up, down) = (f64::from(tally.useful), f64::from(tally.not_useful));
                    (0.5 + 0.5 * (up - down) / (up + down + 2.0)) as f32
                }
                (None, None) => 0.5,
            };
            self.features.set(row, Factor::Preference, preference);
            if let Some(novelty) = view.as_ref().and_then(|v| v.novelty(memory.id())) {
                self.features.set(row, Factor::Diversity, novelty);
            }
            if let Some(date) = date_proximity(&dates, created, self.tuning.date_window_ms) {
                self.features.set(row, Factor::Date, date);
            }
        }
    }

    /// Drops a result whose text nearly duplicates a better one's (MinHash).
    fn fold_near_duplicates(&self, hits: Vec<Recalled>) -> Vec<Recalled> {
        let Some(mining) = self.inner.parts.mining.as_deref() else {
            return hits;
        };
        let view = mining.view();
        let mut kept: Vec<Recalled> = Vec::with_capacity(hits.len());
        for hit in hits {
            let id = hit.candidate.id;
            let duplicate = (kept.iter().take(MAX_DEDUP_KEPT))
                .any(|k| view.jaccard(k.candidate.id, id).is_some_and(|j| j >= DEDUP_JACCARD));
            if !duplicate {
                kept.push(hit);
            }
        }
        kept
    }
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// The date ranges `[start, end)` (ms) a query names: a day or a month.
fn query_dates(router: &Router, text: &str) -> Vec<(f64, f64)> {
    router
        .date_keys(text)
        .iter()
        .filter_map(|key| {
            let mut parts = key.split('-').map(|p| p.parse::<i64>().ok());
            let (year, month, day) = (parts.next()??, parts.next()??, parts.next().flatten());
            if !(1..=12).contains(&month) {
                return None;
            }
            let day_ms = 86_400_000.0;
            match day {
                Some(day) => {
                    let start = days_from_civil(year, month, day) as f64 * day_ms;
                    Some((start, start + day_ms))
                }
                None => {
                    let start = days_from_civil(year, month, 1) as f64 * day_ms;
                    let (ny, nm) = if month == 12 { (year + 1, 1) } else { (year, month + 1) };
                    Some((start, days_from_civil(ny, nm, 1) as f64 * day_ms))
                }
            }
        })
        .collect()
}

/// 1 inside a named range, falling linearly to 0 `window` ms away.
fn date_proximity(dates: &[(f64, f64)], created: f64, window: f64) -> Option<f32> {
    (dates.iter())
        .map(|&(start, end)| {
            let distance = if created < start {
                start - created
            } else if created >= end {
                created - end
            } else {
                0.0
            };
            (1.0 - distance / window).max(0.0) as f32
        })
        .reduce(f32::max)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// An engine's candidates as results, scores unchanged, with their
/// memories read in place (one read lock); a memory forgotten since the
/// engine answered is dropped.
fn raw_results(store: &Store, candidates: Vec<Candidate>) -> Vec<Recalled> {
    let memories = store.memories(candidates.iter().map(|hit| hit.id));
    (candidates.into_iter().zip(memories))
        .filter_map(|(candidate, memory)| {
            Some(Recalled {
                candidate,
                memory: memory?,
                contributions: None,
            })
        })
        .collect()
}

/// Of a memory and its near-duplicate linked on Remember (tag
/// `nexus.duplicate_of`), only the better ranked is shown.
fn hide_linked_duplicates(ranked: Vec<Recalled>) -> Vec<Recalled> {
    let mut shown: Vec<Recalled> = Vec::with_capacity(ranked.len());
    let mut shown_ids = HashSet::new();
    // The originals of the duplicates shown.
    let mut originals = HashSet::new();
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

/// Whether engine `name` runs on `route`: SmartRouting is one vector ANN
/// plus lexical (DESIGN §5), so a query that brings its own vector is
/// searched in the client's space and not also in the built-in one; the
/// other routes run every engine that applies.
fn on_route(name: EngineName, route: Route, query: &Query<'_>) -> bool {
    !(route == Route::SmartRouting && name == EngineName::Dense && query.vector().is_some())
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

/// The recent recalls' results, for checking feedback: a ring of
/// [`RECENT_RECALLS`] slots allocated once (recording a recall allocates
/// nothing, so a cache hit stays allocation-free); the oldest is overwritten.
struct RecentRecalls {
    slots: Vec<RecentSlot>,
    /// Request id → slot.
    by_id: HashMap<u64, usize>,
    next: usize,
}

/// One recall's results (the first [`JUDGEABLE_RESULTS`]).
#[derive(Clone, Copy)]
struct RecentSlot {
    request_id: u64,
    used: bool,
    len: u8,
    ids: [u64; JUDGEABLE_RESULTS],
}

/// Results of a recall that feedback can name: the first 32 (k is 8 by
/// default), so the record is a fixed 1 MiB.
pub const JUDGEABLE_RESULTS: usize = 32;

impl Default for RecentRecalls {
    fn default() -> Self {
        let empty = RecentSlot {
            request_id: 0,
            used: false,
            len: 0,
            ids: [0; JUDGEABLE_RESULTS],
        };
        Self {
            slots: vec![empty; RECENT_RECALLS],
            by_id: HashMap::with_capacity(2 * RECENT_RECALLS),
            next: 0,
        }
    }
}

impl RecentRecalls {
    fn record(&mut self, request_id: u64, ids: impl Iterator<Item = u64>) {
        let slot = &mut self.slots[self.next];
        if slot.used && self.by_id.get(&slot.request_id) == Some(&self.next) {
            self.by_id.remove(&slot.request_id);
        }
        slot.request_id = request_id;
        slot.used = true;
        slot.len = 0;
        for (place, id) in slot.ids.iter_mut().zip(ids) {
            *place = id;
            slot.len += 1;
        }
        self.by_id.insert(request_id, self.next);
        self.next = (self.next + 1) % RECENT_RECALLS;
    }

    fn results(&self, request_id: u64) -> Option<&[u64]> {
        let slot = &self.slots[*self.by_id.get(&request_id)?];
        Some(&slot.ids[..usize::from(slot.len)])
    }
}

/// Recalls per route, for Stats.
#[derive(Default)]
struct RouteCounters([AtomicU64; 4]);

impl RouteCounters {
    const NAMES: [&'static str; 4] = ["cache_only", "smart", "full", "max"];

    fn count(&self, route: Route) {
        let slot = match route {
            Route::CacheOnly => 0,
            Route::SmartRouting | Route::Auto => 1,
            Route::FullPipeline => 2,
            Route::MaximumIntelligence => 3,
        };
        self.0[slot].fetch_add(1, Ordering::Relaxed);
    }

    fn all(&self) -> impl Iterator<Item = (&'static str, &AtomicU64)> {
        Self::NAMES.into_iter().zip(&self.0)
    }
}

/// Bumps the cache's epochs after every change, registered as the last
/// follower: by then every engine has the change, so a recall that reads
/// the new epoch also sees the write, and an answer computed before it is
/// never served again.
pub struct EpochFollower {
    epochs: Arc<Epochs>,
}

impl EpochFollower {
    /// The follower bumping `epochs`.
    pub fn new(epochs: Arc<Epochs>) -> Self {
        Self { epochs }
    }
}

impl Follower for EpochFollower {
    fn name(&self) -> &'static str {
        "cache-epochs"
    }

    fn follow(&self, change: &IndexChange<'_>) {
        if change.is_snapshot() {
            self.epochs.bump_all();
            return;
        }
        for event in change.events() {
            match event {
                IndexEvent::Added(memory) => self.epochs.bump(memory.namespace()),
                // The namespace of a removed memory or a judged one is not
                // in the event: every namespace's answers go.
                IndexEvent::Removed(_) | IndexEvent::Feedback { .. } => self.epochs.bump_all(),
            }
        }
    }
}

fn now_ms() -> u64 {
    nexus_shm_protocol::monotonic_now_ns() / 1_000_000
}

/// Runs an engine's search under the request's deadline, its panics caught.
async fn run_with_deadline(
    search: Pin<Box<dyn Future<Output = Result<Candidates, EngineError>> + Send + '_>>,
    engine: &'static str,
    deadline: Deadline,
) -> Result<Candidates, EngineError> {
    // Each engine's own deadline: at most ENGINE_BUDGET, and a quarter of
    // the request's time left over to fuse the others and answer in time.
    let left = deadline
        .remaining()
        .map_or(ENGINE_BUDGET, |left| (left * 3 / 4).min(ENGINE_BUDGET));
    match tokio::time::timeout(left, isolated(search, engine)).await {
        Ok(searched) => searched,
        Err(_) => Err(EngineError::Failed {
            engine,
            reason: format!("ran past the deadline ({} ms)", left.as_millis()),
        }),
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

#[cfg(test)]
mod tests;
