//! The intelligence engine: BM25 over every memory's text ([`LexicalIndex`]),
//! kept in step with the log as a store follower, saved with checkpoints.
//!
//! - Follow: each Added memory's text is indexed under its namespace, each
//!   Removed id dropped, under the index's write lock, before the write is
//!   acknowledged (`store/follow.rs`), so the next recall sees it.
//! - Search: the query's namespace shard ("" = every shard, merged by
//!   score), with the [`Filter`] (time range, tags) checked inside the
//!   search through [`MemoryMeta`], before the top k.
//! - Save (after each checkpoint): the index image at the LSN it has
//!   followed to, as `lexical-<lsn>.img` in `index/lexical/` (see
//!   `index_dir.rs`). Start: the saved image is loaded and the changes after
//!   its LSN are replayed into it; an image that is missing, damaged, made
//!   with other tokenizer settings, older than the snapshot, or newer than
//!   the log (a WAL tail cut after the save) is replaced by a rebuild from
//!   the store, logged with its reason and time.
//!
//! The entity links ([`EntityIndex`]: memories of a namespace sharing a
//! name, a date, a number, an e-mail, a URL) follow the log beside the BM25
//! index, under the same lock, and are saved beside it
//! (`entities-<lsn>.img`); the maximum route expands queries through them
//! ([`LexicalEngine::related_to_text`]).
//!
//! Not here: fusion (the pipeline).

use std::cell::RefCell;
use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use tracing::{info, warn};

use crate::recall::engine::{Candidate, Candidates, Engine, EngineError, EngineSearch, SearchContext, Signals};
use crate::recall::index_dir::{IndexDir, Manifest};
use crate::recall::lexical::{
    EntityConfig, EntityExtractor, EntityIndex, EntityScratch, Hit, LexicalConfig, LexicalError, LexicalIndex, Related,
    SearchScratch,
};
use crate::recall::meta::MemoryMeta;
use crate::recall::query::Query;
use crate::store::{Follower, IndexChange, IndexEvent, Store};

/// The engine's name (in answers, Stats, logs and its index directory).
pub const LEXICAL: &str = "lexical";

/// Terms a query may have: queries are bounded in bytes before they get
/// here (`limits.max_query_bytes`); this bounds the per-term work.
pub const MAX_QUERY_TERMS: usize = 1024;

/// The BM25 engine.
pub struct LexicalEngine {
    meta: Arc<MemoryMeta>,
    config: LexicalConfig,
    state: RwLock<State>,
    dir: Option<IndexDir>,
    /// How the index came to be at start (for the start-up log and Stats).
    origin: Mutex<String>,
}

struct State {
    index: LexicalIndex,
    entities: EntityIndex,
    /// Changes up to this LSN are in `index` (followed or loaded).
    lsn: u64,
    /// The loaded image covers changes up to this LSN: they are skipped.
    covered: u64,
    /// LSN of the last saved image.
    saved: u64,
}

thread_local! {
    static SCRATCH: RefCell<(SearchScratch, Vec<Hit>, Vec<Hit>)> =
        RefCell::new((SearchScratch::new(), Vec::new(), Vec::new()));
}

impl LexicalEngine {
    /// The engine, its index loaded from `data_dir`'s saved image when there
    /// is a usable one (None: nothing saved or loaded, tests).
    pub fn open(
        mut config: LexicalConfig,
        data_dir: Option<&Path>,
        meta: Arc<MemoryMeta>,
    ) -> Result<Self, LexicalError> {
        config.max_query_terms = config.max_query_terms.max(MAX_QUERY_TERMS);
        let dir = data_dir.map(|d| IndexDir::new(d, LEXICAL));
        let started = Instant::now();
        let (index, entities, lsn, origin) = match dir.as_ref().map(|dir| load(config, dir)) {
            Some(Ok((index, entities, lsn))) => {
                let origin = format!("loaded at LSN {lsn} in {} ms", started.elapsed().as_millis());
                (index, entities, lsn, origin)
            }
            Some(Err(reason)) => {
                let origin = format!("rebuilt from the store: {reason}");
                (LexicalIndex::new(config)?, new_entities(), 0, origin)
            }
            None => (
                LexicalIndex::new(config)?,
                new_entities(),
                0,
                "built from the store".to_owned(),
            ),
        };
        Ok(Self {
            meta,
            config,
            state: RwLock::new(State {
                index,
                entities,
                lsn,
                covered: lsn,
                saved: lsn,
            }),
            dir,
            origin: Mutex::new(origin),
        })
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(|p| p.into_inner())
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Memories indexed.
    pub fn len(&self) -> usize {
        self.read().index.stats().documents
    }

    /// True when nothing is indexed.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Starts over from nothing (the image did not cover what the store holds).
    fn reset(&self, state: &mut State, reason: &str) {
        state.index = LexicalIndex::new(self.config).expect("validated at open");
        state.entities = new_entities();
        state.covered = 0;
        state.lsn = 0;
        *self.origin.lock().unwrap_or_else(|p| p.into_inner()) = format!("rebuilt from the store: {reason}");
    }
}

/// The saved indexes, or why they cannot be used.
fn load(config: LexicalConfig, dir: &IndexDir) -> Result<(LexicalIndex, EntityIndex, u64), String> {
    let manifest = dir.read_manifest()?.ok_or("no saved index")?;
    if manifest.identity != identity(&config) {
        return Err(format!("saved with other settings ({})", manifest.identity));
    }
    let [bm25, entities] = manifest.files.as_slice() else {
        return Err("the manifest does not name the BM25 and entity images".into());
    };
    let index = LexicalIndex::load(config, &dir.file(bm25)).map_err(|e| e.to_string())?;
    let entities = EntityIndex::load(EntityExtractor::default(), EntityConfig::default(), &dir.file(entities))
        .map_err(|e| e.to_string())?;
    Ok((index, entities, manifest.lsn))
}

/// An empty entity index with the built-in rules.
fn new_entities() -> EntityIndex {
    EntityIndex::new(EntityExtractor::default(), EntityConfig::default())
}

/// What decides the saved image's contents: the tokenizer (k1 and b are
/// applied at query time).
fn identity(config: &LexicalConfig) -> String {
    let t = config.tokenizer;
    format!("bm25+entities stemming={} stop_words={:?}", t.stemming, t.stop_words)
}

impl Follower for LexicalEngine {
    fn name(&self) -> &'static str {
        LEXICAL
    }

    fn follow(&self, change: &IndexChange<'_>) {
        let mut state = self.write();
        if change.lsn() <= state.covered && change.lsn() != 0 {
            return;
        }
        if change.is_snapshot() && state.lsn != 0 {
            let reason = format!("the saved index (LSN {}) is older than the snapshot", state.lsn);
            self.reset(&mut state, &reason);
        }
        for event in change.events() {
            match event {
                IndexEvent::Added(memory) => {
                    if memory.text().is_empty() {
                        state.index.delete(memory.id());
                        state.entities.delete(memory.id());
                    } else {
                        state.index.insert(memory.id(), memory.namespace(), memory.text());
                        state.entities.insert(memory.id(), memory.namespace(), memory.text());
                    }
                }
                IndexEvent::Removed(id) => {
                    state.index.delete(id);
                    state.entities.delete(id);
                }
                IndexEvent::Feedback { .. } => {}
            }
        }
        state.lsn = state.lsn.max(change.lsn());
    }

    fn save(&self) -> Result<(), String> {
        let Some(dir) = &self.dir else { return Ok(()) };
        let (image, entities, lsn) = {
            let state = self.read();
            if state.lsn == state.saved {
                return Ok(());
            }
            (state.index.to_image(), state.entities.to_image(), state.lsn)
        };
        let failed = |e: std::io::Error| format!("{}: {e}", dir.path().display());
        let file = format!("lexical-{lsn:020}.img");
        dir.write_file(&file, &image).map_err(failed)?;
        let entities_file = format!("entities-{lsn:020}.img");
        dir.write_file(&entities_file, &entities).map_err(failed)?;
        let manifest = Manifest {
            lsn,
            identity: identity(&self.config),
            files: vec![file, entities_file],
        };
        dir.commit(&manifest)
            .map_err(|e| format!("{}: {e}", dir.path().display()))?;
        self.write().saved = lsn;
        Ok(())
    }
}

impl Engine for LexicalEngine {
    fn search<'a>(&'a self, query: &'a Query<'a>, ctx: &'a SearchContext<'a>) -> EngineSearch<'a> {
        Box::pin(async move {
            let hits = match query.text() {
                Some(text) => self.search_text(text, query, ctx.store())?,
                None => Vec::new(),
            };
            Ok(Candidates { engine: LEXICAL, hits })
        })
    }

    fn opened(&self, store: &Store) {
        let applied = store.applied_lsn();
        let mut state = self.write();
        if state.lsn > applied {
            let reason = format!(
                "the saved index (LSN {}) is ahead of the log (LSN {applied}): the log's tail was cut",
                state.lsn
            );
            warn!(engine = LEXICAL, "{reason}");
            let started = Instant::now();
            self.reset(&mut state, &reason);
            store.for_each_memory(|memory| {
                let view = memory.view();
                if !view.text().is_empty() {
                    state.index.insert(view.id(), view.namespace(), view.text());
                    state.entities.insert(view.id(), view.namespace(), view.text());
                }
            });
            state.lsn = applied;
            info!(
                engine = LEXICAL,
                ms = started.elapsed().as_millis() as u64,
                "index rebuilt"
            );
        }
        let origin = self.origin.lock().unwrap_or_else(|p| p.into_inner()).clone();
        info!(
            engine = LEXICAL,
            memories = state.index.stats().documents,
            lsn = state.lsn,
            "{origin}"
        );
    }

    fn origin(&self) -> String {
        self.origin.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn gauges(&self) -> Vec<(String, u64)> {
        let state = self.read();
        let stats = state.index.stats();
        vec![
            ("lexical_documents".to_owned(), stats.documents as u64),
            ("lexical_entity_links".to_owned(), state.entities.len() as u64),
            ("lexical_terms".to_owned(), stats.terms as u64),
            ("lexical_saved_lsn".to_owned(), state.saved),
        ]
    }
}

impl LexicalEngine {
    /// Memories of `namespace` sharing an entity with `text`, strongest link
    /// first, at most `limit` (the maximum route's query expansion).
    pub fn related_to_text(&self, namespace: &str, text: &str, limit: usize) -> Vec<Related> {
        let state = self.read();
        let (mut scratch, mut out) = (EntityScratch::new(), Vec::new());
        state.entities.related_to_text(namespace, text, &mut scratch, &mut out);
        out.truncate(limit);
        out
    }

    /// Memories of `id`'s namespace sharing an entity with it, strongest
    /// link first, at most `limit` (the maximum route's second hop).
    pub fn related_to_memory(&self, id: u64, limit: usize) -> Vec<Related> {
        let state = self.read();
        let (mut scratch, mut out) = (EntityScratch::new(), Vec::new());
        state.entities.related(id, &mut scratch, &mut out);
        out.truncate(limit);
        out
    }

    fn search_text(&self, text: &str, query: &Query<'_>, store: &Store) -> Result<Vec<Candidate>, EngineError> {
        let filter = self.meta.reader(query.filter(), store);
        if filter.admits_nothing() {
            return Ok(Vec::new());
        }
        // The index is sharded by namespace: with no tags and no time range
        // every live posting of the shard passes, unchecked.
        let check = !filter.namespace_only();
        let accept = |id: u64| !check || filter.accepts(id);
        let state = self.read();
        let k = query.k();
        SCRATCH.with_borrow_mut(|(scratch, hits, all)| {
            let failed = |e: LexicalError| EngineError::Failed {
                engine: LEXICAL,
                reason: e.to_string(),
            };
            match query.filter().namespace {
                "" => {
                    // Every namespace: each shard's best k, merged by score.
                    all.clear();
                    for namespace in state.index.namespaces() {
                        (state.index.search(namespace, text, k, &accept, scratch, hits)).map_err(failed)?;
                        all.extend_from_slice(hits);
                    }
                    all.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.id.cmp(&b.id)));
                    all.truncate(k);
                    Ok(all.iter().map(candidate).collect())
                }
                namespace => {
                    (state.index.search(namespace, text, k, &accept, scratch, hits)).map_err(failed)?;
                    Ok(hits.iter().map(candidate).collect())
                }
            }
        })
    }
}

fn candidate(hit: &Hit) -> Candidate {
    Candidate {
        id: hit.id,
        score: hit.score,
        signals: Signals {
            lexical: Some(hit.score),
            ..Signals::default()
        },
    }
}
