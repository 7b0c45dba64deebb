//! The accuracy engine: vector ANN ([`AnnIndex`]: int8 HNSW segments, an
//! exact tail, exact f32 re-rank) over one vector space, kept in step with
//! the log as a store follower, built off the write path, saved with
//! checkpoints.
//!
//! Two spaces, two instances of this engine:
//! - **built-in** (`dense`): every memory's text embedded by the daemon's
//!   [`Embedder`] (the shipped static model unless configured otherwise);
//!   queries with text are embedded the same way. A text with no known
//!   token has no vector. Re-rank embeds the shortlisted memories' texts
//!   again (a few µs each) instead of keeping 1 KiB of f32 per memory.
//! - **client** (`vector`): the vectors clients send with their memories
//!   (one dimension per store, checked on write); used when a query carries
//!   a vector. Re-rank reads the shortlisted memories' vectors from the store.
//!
//! Life of a change: Added → (embed) → insert into the tail, visible to the
//! next search; Removed → delete. A builder thread turns full tails into
//! graph and compacts segments, polling every [`BUILD_POLL`]; searches go on
//! meanwhile. Save (after each checkpoint): the tail is sealed into a
//! segment, new segment files are written (`seg-<n>.ann`, immutable, so a
//! save writes only what is new), then the manifest. Start: segments are
//! mapped, not rebuilt; changes after the manifest's LSN are replayed;
//! tombstones (not saved) are re-applied by checking every node against the
//! live memories ([`AnnIndex::reconcile`]). A manifest that is unusable,
//! older than the snapshot, newer than the log, or from another model means
//! a rebuild from the store, logged with the reason.

use std::cell::RefCell;
use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::{Duration, Instant};

use tracing::{info, warn};

use crate::embed::{EmbedScratch, Embedder};
use crate::recall::ann::{AnnConfig, AnnIndex, SearchParams, Segment};
use crate::recall::engine::{Candidate, Candidates, Engine, EngineError, EngineSearch, SearchContext, Signals};
use crate::recall::index_dir::{IndexDir, Manifest};
use crate::recall::meta::MemoryMeta;
use crate::recall::query::Query;
use crate::store::{Follower, IndexChange, IndexEvent, MemoryView, Store};

/// The built-in space's engine name.
pub const DENSE: &str = "dense";
/// The client space's engine name.
pub const VECTOR: &str = "vector";

/// How often the builder looks for a full tail or segments to compact.
pub const BUILD_POLL: Duration = Duration::from_millis(100);

/// How long the tail must stay the same size before the builder seals it
/// whatever its size: writes have stopped, so the graph catches up fully
/// and searches stop scanning a tail.
pub const IDLE_SEAL: Duration = Duration::from_secs(1);

/// Vectors outside the graph (tail and tail being built) above which a
/// write waits for the builder: eight builds' worth. A search scans them
/// exactly (~10 µs per 1,000 at 384-d), so this bounds that part of its cost.
pub const MAX_TAIL: usize = 8 * crate::recall::ann::DEFAULT_TAIL_THRESHOLD;

/// Vectors of the tail not yet taken for a build above which a write waits
/// for the builder even when nobody searches: a bulk load runs ahead of the
/// graph up to here (with the tail being built, at most twice this is
/// outside the graph; a search that then comes scans them exactly, ~10 µs
/// per 1,000 at 384-d).
pub const MAX_UNSEARCHED_TAIL: usize = 256 * crate::recall::ann::DEFAULT_TAIL_THRESHOLD;

/// How recently a search must have run for writes to be held to
/// [`MAX_TAIL`]: back-pressure protects searches, so with no search in
/// this window (a bulk import) writes run ahead of the graph, up to
/// [`MAX_UNSEARCHED_TAIL`], and the builder catches up afterwards.
pub const SEARCHED_WINDOW: Duration = Duration::from_secs(2);

/// `last_search_ms` before the first search.
const NEVER_SEARCHED: u64 = u64::MAX;

/// Longest a write waits for the builder (then it goes on, and the wait is
/// counted): a builder that cannot keep up must not stop writes for ever.
pub const MAX_BACKPRESSURE_WAIT: Duration = Duration::from_secs(5);

/// Which vectors an engine indexes.
#[derive(Clone)]
pub enum Space {
    /// Every memory's text, embedded by this embedder.
    BuiltIn(Arc<dyn Embedder>),
    /// The vectors clients send.
    Client,
}

/// A vector engine over one space.
pub struct DenseEngine {
    name: &'static str,
    space: Space,
    meta: Arc<MemoryMeta>,
    /// Created at open (built-in) or at the first client vector.
    index: RwLock<Option<Arc<AnnIndex>>>,
    /// Changes up to this LSN are in the index.
    lsn: AtomicU64,
    /// The loaded image covers changes up to this LSN: they are skipped.
    covered: AtomicU64,
    saved: AtomicU64,
    dir: Option<IndexDir>,
    /// Saved segment files, by segment (weak: a compacted-away segment's
    /// name is dropped with it).
    files: Mutex<Vec<(Weak<Segment>, String)>>,
    next_file: AtomicU64,
    origin: Mutex<String>,
    stop: Arc<AtomicBool>,
    builder: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// The tail's size when the builder last looked, and since when.
    last_tail: Mutex<(usize, Instant)>,
    /// Set once the store is open: back-pressure applies from then on.
    serving: AtomicBool,
    /// Writes held back for the builder, and for how long in all.
    held_back: AtomicU64,
    held_back_us: AtomicU64,
    /// When the last search began, in ms since `created`.
    last_search_ms: AtomicU64,
    /// The engine's clock origin (for `last_search_ms`).
    created: Instant,
}

thread_local! {
    /// The embedder's buffers, per thread.
    static EMBED_SCRATCH: RefCell<EmbedScratch> = RefCell::new(EmbedScratch::new());
    /// A memory's vector on its way into the index, per thread.
    static VECTOR_BUF: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

impl DenseEngine {
    /// `text` embedded in this engine's space (the built-in embedder's; None
    /// for the clients' space or a text with no known token): the query
    /// embedding of the semantic cache and of the maximum route's exact re-rank.
    pub fn embed_text(&self, text: &str) -> Option<Vec<f32>> {
        let mut vector = Vec::new();
        self.embed_text_into(text, &mut vector).then_some(vector)
    }

    /// [`Self::embed_text`] into a buffer the caller reuses; false when
    /// there is no embedding (the clients' space, or no known token).
    pub fn embed_text_into(&self, text: &str, out: &mut Vec<f32>) -> bool {
        let Space::BuiltIn(embedder) = &self.space else {
            return false;
        };
        embed(embedder.as_ref(), text, out)
    }

    /// The engine over `space`, its saved index loaded from `data_dir` when
    /// usable (None: nothing saved or loaded, tests), with its builder thread.
    pub fn open(space: Space, data_dir: Option<&Path>, meta: Arc<MemoryMeta>) -> Arc<Self> {
        let name = match space {
            Space::BuiltIn(_) => DENSE,
            Space::Client => VECTOR,
        };
        let dir = data_dir.map(|d| IndexDir::new(d, name));
        let engine = Self {
            name,
            space,
            meta,
            index: RwLock::new(None),
            lsn: AtomicU64::new(0),
            covered: AtomicU64::new(0),
            saved: AtomicU64::new(0),
            dir,
            files: Mutex::new(Vec::new()),
            next_file: AtomicU64::new(1),
            origin: Mutex::new("built from the store".to_owned()),
            stop: Arc::new(AtomicBool::new(false)),
            builder: Mutex::new(None),
            last_tail: Mutex::new((0, Instant::now())),
            serving: AtomicBool::new(false),
            held_back: AtomicU64::new(0),
            held_back_us: AtomicU64::new(0),
            last_search_ms: AtomicU64::new(NEVER_SEARCHED),
            created: Instant::now(),
        };
        engine.load();
        let engine = Arc::new(engine);
        engine.start_builder();
        engine
    }

    fn identity(&self, dim: usize) -> String {
        let config = AnnConfig::new(dim);
        let space = match &self.space {
            Space::BuiltIn(embedder) => format!("builtin {}", embedder.identity()),
            Space::Client => "client".to_owned(),
        };
        format!("{space} dim={dim} m={} quant=int8-scaled", config.hnsw.m)
    }

    /// Loads the saved segments, or notes why not.
    fn load(&self) {
        let started = Instant::now();
        if let Space::BuiltIn(embedder) = &self.space {
            *self.index_slot() = Some(Arc::new(new_index(embedder.dim())));
        }
        let Some(dir) = &self.dir else { return };
        let outcome = (|| -> Result<(Arc<AnnIndex>, u64), String> {
            let manifest = dir.read_manifest()?.ok_or("no saved index")?;
            let dim = (manifest.identity.split_whitespace())
                .find_map(|w| w.strip_prefix("dim="))
                .and_then(|d| d.parse::<usize>().ok())
                .ok_or_else(|| format!("the manifest names no dimension ({})", manifest.identity))?;
            if manifest.identity != self.identity(dim) {
                return Err(format!("saved with another model or settings ({})", manifest.identity));
            }
            let mut segments = Vec::new();
            for file in &manifest.files {
                segments.push(Segment::open(&dir.file(file)).map_err(|e| e.to_string())?);
            }
            let index = AnnIndex::with_segments(AnnConfig::new(dim), segments).map_err(|e| e.to_string())?;
            let index = Arc::new(index);
            let mut files = self.files.lock().unwrap_or_else(|p| p.into_inner());
            for (segment, name) in index.segments().iter().zip(&manifest.files) {
                files.push((Arc::downgrade(segment), name.clone()));
            }
            let next = manifest.files.iter().filter_map(|f| file_number(f)).max().unwrap_or(0);
            self.next_file.store(next + 1, Ordering::Relaxed);
            Ok((index, manifest.lsn))
        })();
        match outcome {
            Ok((index, lsn)) => {
                *self.index_slot() = Some(index);
                self.lsn.store(lsn, Ordering::Relaxed);
                self.covered.store(lsn, Ordering::Relaxed);
                self.saved.store(lsn, Ordering::Relaxed);
                self.set_origin(format!("loaded at LSN {lsn} in {} ms", started.elapsed().as_millis()));
            }
            Err(reason) => self.set_origin(format!("rebuilt from the store: {reason}")),
        }
    }

    fn index_slot(&self) -> std::sync::RwLockWriteGuard<'_, Option<Arc<AnnIndex>>> {
        self.index.write().unwrap_or_else(|p| p.into_inner())
    }

    /// The index, if one exists yet.
    pub fn index(&self) -> Option<Arc<AnnIndex>> {
        self.index.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn set_origin(&self, origin: String) {
        *self.origin.lock().unwrap_or_else(|p| p.into_inner()) = origin;
    }

    /// Empties the index (the saved image did not cover what the store holds).
    fn reset(&self, reason: &str) {
        let fresh = match &self.space {
            Space::BuiltIn(embedder) => Some(Arc::new(new_index(embedder.dim()))),
            Space::Client => None,
        };
        *self.index_slot() = fresh;
        self.files.lock().unwrap_or_else(|p| p.into_inner()).clear();
        self.covered.store(0, Ordering::Relaxed);
        self.lsn.store(0, Ordering::Relaxed);
        self.set_origin(format!("rebuilt from the store: {reason}"));
    }

    /// The builder thread: builds full tails into graph and compacts, off
    /// the write path, until the engine is dropped or stopped.
    fn start_builder(self: &Arc<Self>) {
        let weak = Arc::downgrade(self);
        let stop = Arc::clone(&self.stop);
        let spawned = std::thread::Builder::new()
            .name(format!("nexus-{}-build", self.name))
            .spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    std::thread::park_timeout(BUILD_POLL);
                    let Some(engine) = weak.upgrade() else { break };
                    engine.build_step();
                }
            });
        match spawned {
            Ok(handle) => *self.builder.lock().unwrap_or_else(|p| p.into_inner()) = Some(handle),
            Err(error) => warn!(engine = self.name, %error, "cannot start the index builder; searches scan the tail"),
        }
    }

    /// One round of background work: a build, a compaction, or, once the
    /// tail has stopped growing for [`IDLE_SEAL`], sealing the rest of it
    /// (so a quiet index ends with no tail at all).
    pub fn build_step(&self) {
        let Some(index) = self.index() else { return };
        let tail = index.stats().tail;
        let quiet = {
            let mut last = self.last_tail.lock().unwrap_or_else(|p| p.into_inner());
            if last.0 != tail {
                *last = (tail, Instant::now());
            }
            tail > 0 && last.1.elapsed() >= IDLE_SEAL
        };
        let built = if index.needs_build() {
            index.build_pending()
        } else if index.needs_compaction() {
            index.compact()
        } else if quiet {
            index.seal()
        } else {
            return;
        };
        if let Err(error) = built {
            warn!(engine = self.name, %error, "index build failed; the tail stays searched exactly");
        }
    }

    /// Back-pressure: the tail is a buffer, and every search scans it, so
    /// while serving, a write that leaves more than [`MAX_TAIL`] vectors
    /// outside the graph waits (on the apply thread, so every writer waits:
    /// writes go at the speed graphs are built) until the builder brings it
    /// under, at most [`MAX_BACKPRESSURE_WAIT`]. Only while searches run
    /// (one in the last [`SEARCHED_WINDOW`]): it is the searches that pay
    /// for a long tail, so a bulk load nobody searches meanwhile goes at
    /// the write path's speed (see [`Self::over_bound`]). Not at start:
    /// the replay fills the tail at full speed and the builder catches up
    /// while serving.
    fn hold_back_writes(&self, index: &AnnIndex) {
        let stats = index.stats();
        if stats.tail + stats.building >= index.config().tail_threshold {
            self.wake_builder();
        }
        if !self.serving.load(Ordering::Relaxed) || !self.over_bound(index) {
            return;
        }
        let started = Instant::now();
        while self.over_bound(index) && started.elapsed() < MAX_BACKPRESSURE_WAIT {
            std::thread::sleep(Duration::from_millis(1));
        }
        self.held_back.fetch_add(1, Ordering::Relaxed);
        (self.held_back_us).fetch_add(started.elapsed().as_micros() as u64, Ordering::Relaxed);
    }

    /// Whether the vectors outside the graph exceed what writes may leave:
    /// while searches run, [`MAX_TAIL`] counting the tail being built (a
    /// search scans both); otherwise [`MAX_UNSEARCHED_TAIL`] of the tail
    /// not yet taken for a build, so a long build of a bulk load's tail
    /// does not stop the writes behind it (the builder freezes the whole
    /// tail at once: at most twice the bound is outside the graph).
    fn over_bound(&self, index: &AnnIndex) -> bool {
        let stats = index.stats();
        if self.searched_lately() {
            stats.tail + stats.building > MAX_TAIL
        } else {
            stats.tail > MAX_UNSEARCHED_TAIL
        }
    }

    /// Notes that a search begins (for [`Self::hold_back_writes`]).
    fn note_search(&self) {
        let now = self.created.elapsed().as_millis() as u64;
        // A relaxed load first: the shared line is written at most once per ms.
        if self.last_search_ms.load(Ordering::Relaxed) != now {
            self.last_search_ms.store(now, Ordering::Relaxed);
        }
    }

    /// Whether a search began in the last [`SEARCHED_WINDOW`].
    fn searched_lately(&self) -> bool {
        let last = self.last_search_ms.load(Ordering::Relaxed);
        let now = self.created.elapsed().as_millis() as u64;
        last != NEVER_SEARCHED && now.saturating_sub(last) <= SEARCHED_WINDOW.as_millis() as u64
    }

    fn wake_builder(&self) {
        if let Some(handle) = self.builder.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
            handle.thread().unpark();
        }
    }

    /// Stops the builder thread and waits for it (shutdown, tests).
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(handle) = self.builder.lock().unwrap_or_else(|p| p.into_inner()).take() {
            handle.thread().unpark();
            let _ = handle.join();
        }
    }

    /// Whether everything inserted is in graph (no tail to scan).
    pub fn caught_up(&self) -> bool {
        self.index().is_none_or(|index| {
            let stats = index.stats();
            stats.tail + stats.building == 0
        })
    }

    /// The vector `memory` contributes to this space, into `out`.
    fn vector_of(&self, memory: MemoryView<'_>, out: &mut Vec<f32>) -> bool {
        match &self.space {
            Space::BuiltIn(embedder) => embed(embedder.as_ref(), memory.text(), out),
            Space::Client => match memory.vector() {
                Some(vector) => {
                    out.clear();
                    out.extend(vector.iter().map(|x| x.to_native()));
                    true
                }
                None => false,
            },
        }
    }

    fn apply(&self, index: &mut Option<Arc<AnnIndex>>, event: IndexEvent<'_>) {
        match event {
            IndexEvent::Added(memory) => VECTOR_BUF.with_borrow_mut(|vector| {
                if !self.vector_of(memory, vector) {
                    if let Some(index) = index {
                        index.delete(memory.id());
                    }
                    return;
                }
                let index = index.get_or_insert_with(|| Arc::new(new_index(vector.len())));
                if let Err(error) = index.insert(memory.id(), vector) {
                    // The store checked the vector (finite, the store's
                    // dimension): this is a zero vector or a bug.
                    warn!(engine = self.name, id = memory.id(), %error, "vector not indexed");
                }
            }),
            IndexEvent::Removed(id) => {
                if let Some(index) = index {
                    index.delete(id);
                }
            }
            IndexEvent::Feedback { .. } => {}
        }
    }
}

impl Drop for DenseEngine {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn new_index(dim: usize) -> AnnIndex {
    AnnIndex::new(AnnConfig::new(dim)).expect("the shipped settings are valid for any embedder dimension")
}

fn file_number(name: &str) -> Option<u64> {
    name.strip_prefix("seg-")?.strip_suffix(".ann")?.parse().ok()
}

/// Embeds `text` into `out`; false when it has no known token.
fn embed(embedder: &dyn Embedder, text: &str, out: &mut Vec<f32>) -> bool {
    out.clear();
    out.resize(embedder.dim(), 0.0);
    EMBED_SCRATCH.with_borrow_mut(|scratch| matches!(embedder.embed(text, scratch, out), Ok(n) if n > 0))
}

impl Follower for DenseEngine {
    fn name(&self) -> &'static str {
        self.name
    }

    fn follow(&self, change: &IndexChange<'_>) {
        let lsn = change.lsn();
        if lsn <= self.covered.load(Ordering::Relaxed) && lsn != 0 {
            return;
        }
        if change.is_snapshot() && self.lsn.load(Ordering::Relaxed) != 0 {
            let reason = format!(
                "the saved index (LSN {}) is older than the snapshot",
                self.lsn.load(Ordering::Relaxed)
            );
            self.reset(&reason);
        }
        let mut slot = self.index.read().unwrap_or_else(|p| p.into_inner()).clone();
        let created = slot.is_none();
        for event in change.events() {
            self.apply(&mut slot, event);
        }
        if created && slot.is_some() {
            *self.index_slot() = slot.clone();
        }
        self.lsn.fetch_max(lsn, Ordering::Relaxed);
        if let Some(index) = slot {
            self.hold_back_writes(&index);
        }
    }

    fn save(&self) -> Result<(), String> {
        let (Some(dir), Some(index)) = (&self.dir, self.index()) else {
            return Ok(());
        };
        // Read the LSN first: everything up to it is in the tail or the
        // graph now, and sealing puts the tail in graph.
        let lsn = self.lsn.load(Ordering::Relaxed);
        if lsn == self.saved.load(Ordering::Relaxed) {
            return Ok(());
        }
        index.seal().map_err(|e| e.to_string())?;
        let segments = index.segments();
        let mut files = self.files.lock().unwrap_or_else(|p| p.into_inner());
        files.retain(|(segment, _)| segment.strong_count() > 0);
        let mut names = Vec::with_capacity(segments.len());
        for segment in &segments {
            let known = files
                .iter()
                .find(|(s, _)| std::ptr::eq(s.as_ptr(), Arc::as_ptr(segment)));
            let name = match known {
                Some((_, name)) => name.clone(),
                None => {
                    let name = format!("seg-{:010}.ann", self.next_file.fetch_add(1, Ordering::Relaxed));
                    std::fs::create_dir_all(dir.path()).map_err(|e| format!("{}: {e}", dir.path().display()))?;
                    segment.write_to(&dir.file(&name)).map_err(|e| e.to_string())?;
                    files.push((Arc::downgrade(segment), name.clone()));
                    name
                }
            };
            names.push(name);
        }
        let manifest = Manifest {
            lsn,
            identity: self.identity(index.config().dim),
            files: names,
        };
        dir.commit(&manifest)
            .map_err(|e| format!("{}: {e}", dir.path().display()))?;
        self.saved.store(lsn, Ordering::Relaxed);
        Ok(())
    }
}

impl DenseEngine {
    fn search_vector(&self, vector: &[f32], query: &Query<'_>, store: &Store) -> Result<Vec<Candidate>, EngineError> {
        self.note_search();
        let Some(index) = self.index() else {
            return Ok(Vec::new());
        };
        if index.config().dim != vector.len() {
            return Ok(Vec::new());
        }
        let filter = self.meta.reader(query.filter(), store);
        if filter.admits_nothing() {
            return Ok(Vec::new());
        }
        // One namespace holding every memory, no tags, no time: checking each
        // visited node would cost a lookup for nothing.
        let unfiltered = filter.admits_all_live();
        let params = SearchParams {
            filter: if unfiltered { None } else { Some(&filter) },
            ..SearchParams::top(query.k())
        };
        let fetch = |ids: &[u64]| self.fetch(ids, store);
        let hits = index
            .search_fetching(vector, &params, fetch)
            .map_err(|e| EngineError::Failed {
                engine: self.name,
                reason: e.to_string(),
            })?;
        Ok(hits
            .into_iter()
            .map(|hit| Candidate {
                id: hit.id,
                score: hit.score,
                signals: Signals {
                    vector: Some(hit.similarity),
                    ..Signals::default()
                },
            })
            .collect())
    }

    /// The f32 vectors of `ids`, for the exact re-rank: from the store
    /// (client space) or embedded again (built-in space).
    fn fetch(&self, ids: &[u64], store: &Store) -> HashMap<u64, Vec<f32>> {
        let memories = store.memories(ids.iter().copied());
        let mut vectors = HashMap::with_capacity(ids.len());
        for memory in memories.into_iter().flatten() {
            let mut vector = Vec::new();
            if self.vector_of(memory.view(), &mut vector) {
                vectors.insert(memory.view().id(), vector);
            }
        }
        vectors
    }
}

impl Engine for DenseEngine {
    fn search<'a>(&'a self, query: &'a Query<'a>, ctx: &'a SearchContext<'a>) -> EngineSearch<'a> {
        Box::pin(async move {
            let hits = match (&self.space, query.text(), query.vector()) {
                (Space::BuiltIn(embedder), Some(text), _) => {
                    let mut vector = Vec::new();
                    if embed(embedder.as_ref(), text, &mut vector) {
                        self.search_vector(&vector, query, ctx.store())?
                    } else {
                        Vec::new()
                    }
                }
                (Space::Client, _, Some(vector)) => self.search_vector(vector, query, ctx.store())?,
                _ => Vec::new(),
            };
            Ok(Candidates {
                engine: self.name,
                hits,
            })
        })
    }

    fn opened(&self, store: &Store) {
        let applied = store.applied_lsn();
        let lsn = self.lsn.load(Ordering::Relaxed);
        if lsn > applied {
            let reason =
                format!("the saved index (LSN {lsn}) is ahead of the log (LSN {applied}): the log's tail was cut");
            warn!(engine = self.name, "{reason}");
            let started = Instant::now();
            self.reset(&reason);
            let mut slot = self.index();
            store.for_each_memory(|memory| self.apply(&mut slot, IndexEvent::Added(memory.view())));
            *self.index_slot() = slot;
            self.lsn.store(applied, Ordering::Relaxed);
            info!(
                engine = self.name,
                ms = started.elapsed().as_millis() as u64,
                "index rebuilt"
            );
        } else if let Some(index) = self.index() {
            let started = Instant::now();
            let marked = index.reconcile(|id| self.meta.contains(id));
            if marked > 0 {
                info!(
                    engine = self.name,
                    marked,
                    ms = started.elapsed().as_millis() as u64,
                    "forgotten memories marked in the loaded graph"
                );
            }
        }
        self.serving.store(true, Ordering::Relaxed);
        let memories = self.index().map_or(0, |index| index.len());
        info!(
            engine = self.name,
            memories,
            lsn = self.lsn.load(Ordering::Relaxed),
            "{}",
            self.origin()
        );
    }

    fn origin(&self) -> String {
        self.origin.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn gauges(&self) -> Vec<(String, u64)> {
        let stats = self
            .index()
            .map(|index| (index.len(), index.stats()))
            .unwrap_or_default();
        let (live, parts) = stats;
        let name = self.name;
        vec![
            (format!("{name}_vectors"), live as u64),
            // Inserted but not in graph yet: scanned exactly by every search.
            (format!("{name}_tail"), (parts.tail + parts.building) as u64),
            (format!("{name}_segments"), parts.segments as u64),
            (format!("{name}_dead_nodes"), parts.dead_nodes as u64),
            (format!("{name}_segment_bytes"), parts.segment_bytes as u64),
            (format!("{name}_saved_lsn"), self.saved.load(Ordering::Relaxed)),
            (
                format!("{name}_writes_held_back"),
                self.held_back.load(Ordering::Relaxed),
            ),
            (
                format!("{name}_writes_held_back_us"),
                self.held_back_us.load(Ordering::Relaxed),
            ),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Back-pressure follows the searches: none yet, then one just now.
    #[test]
    fn writes_are_held_to_the_short_tail_only_while_searches_run() {
        let engine = DenseEngine::open(Space::Client, None, Arc::new(MemoryMeta::default()));
        assert!(!engine.searched_lately(), "no search yet: a bulk load may run ahead");
        engine.note_search();
        assert!(
            engine.searched_lately(),
            "a search just began: writes wait for the graph"
        );
        engine.stop();
    }
}
