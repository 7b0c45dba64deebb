//! The daemon's engines, built from its settings: which embedder, the BM25
//! constants, and where indexes are saved. One place decides the followers'
//! order (the metadata first: the engines' filters read it).
//!
//! Not here: what each engine does (`dense.rs`, `lexical_engine.rs`).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use tracing::info;

use crate::embed::{Embedder, HashingConfig, HashingEmbedder, StaticModel};
use crate::preprocess::chunk::{ChunkConfig, DEFAULT_MAX_TOKENS};
use crate::preprocess::dedup::{DedupConfig, DuplicatePolicy};
use crate::preprocess::neardup::NearDupFollower;
use crate::preprocess::remember::Preprocessor;
use crate::recall::cache::Epochs;
use crate::recall::dense::{DenseEngine, Space};
use crate::recall::engine::Engine;
use crate::recall::learning::Learning;
use crate::recall::lexical::LexicalConfig;
use crate::recall::lexical_engine::LexicalEngine;
use crate::recall::meta::MemoryMeta;
use crate::recall::pipeline::{EpochFollower, RecallParts};
use crate::store::Follower;

/// Which embedder gives text memories and queries their built-in vectors.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum EmbedderChoice {
    /// The model compiled into the binary (`daemon/models/`).
    #[default]
    Builtin,
    /// Feature hashing: no model, lower quality (when the model is disabled).
    Hashing,
    /// A model2vec directory.
    Dir(PathBuf),
}

impl EmbedderChoice {
    /// `"builtin"`, `"hashing"`, or a directory path.
    pub fn parse(text: &str) -> Self {
        match text {
            "builtin" => Self::Builtin,
            "hashing" => Self::Hashing,
            path => Self::Dir(PathBuf::from(path)),
        }
    }
}

/// The recall settings.
#[derive(Debug, Clone, PartialEq)]
pub struct RecallSettings {
    /// The built-in space's embedder.
    pub embedder: EmbedderChoice,
    /// BM25 and tokenizer settings.
    pub lexical: LexicalConfig,
    /// What a Remember does with a near-duplicate (None: detection off).
    pub duplicates: Option<DuplicatePolicy>,
    /// Words per chunk of a long text on Remember (0: texts are not chunked).
    pub chunk_tokens: usize,
}

impl Default for RecallSettings {
    fn default() -> Self {
        Self {
            embedder: EmbedderChoice::default(),
            lexical: LexicalConfig::default(),
            duplicates: Some(DuplicatePolicy::Keep),
            chunk_tokens: DEFAULT_MAX_TOKENS,
        }
    }
}

/// Chunking with `max_tokens` words per chunk (0: none), the overlap and
/// boundary search scaled down for small chunks so each chunk still moves on.
pub fn chunking(max_tokens: usize) -> Option<ChunkConfig> {
    let default = ChunkConfig::default();
    (max_tokens > 0).then(|| ChunkConfig {
        max_tokens,
        overlap_tokens: default.overlap_tokens.min(max_tokens / 4),
        boundary_window_tokens: default.boundary_window_tokens.min(max_tokens / 4),
    })
}

/// Smallest chunk a configuration may ask for (below it, overlap and
/// boundary search leave a chunk no room).
pub const MIN_CHUNK_TOKENS: usize = 16;

/// `"keep"`, `"skip"`, `"merge"` or `"off"`.
pub fn parse_duplicates(text: &str) -> Option<Option<DuplicatePolicy>> {
    match text {
        "keep" => Some(Some(DuplicatePolicy::Keep)),
        "skip" => Some(Some(DuplicatePolicy::Skip)),
        "merge" => Some(Some(DuplicatePolicy::Merge)),
        "off" => Some(None),
        _ => None,
    }
}

/// Why the engines could not be built.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// The embedder's model could not be loaded.
    #[error("embedder {choice}: {reason}")]
    Embedder {
        /// What was configured.
        choice: String,
        /// Why it failed.
        reason: String,
    },
    /// A preprocessing setting is out of range.
    #[error("preprocessing: {0}")]
    Preprocess(String),
    /// A lexical setting is out of range.
    #[error(transparent)]
    Lexical(#[from] crate::recall::lexical::LexicalError),
}

/// The engines and what the store must tell.
pub struct EngineSet {
    /// For `Store::open_with`, in the order they are told.
    pub followers: Vec<Arc<dyn Follower>>,
    /// For `Recall::build`.
    pub engines: Vec<Arc<dyn Engine>>,
    /// What fusion uses besides the engines, for `Recall::build`.
    pub parts: RecallParts,
    /// The vector engines (their builders stop at shutdown).
    pub dense: Vec<Arc<DenseEngine>>,
    /// What a Remember goes through before the store.
    pub preprocessor: Preprocessor,
    /// The near-duplicate index, to fill once the store is open (None: off).
    pub neardup: Option<Arc<NearDupFollower>>,
}

/// Loads the embedder `choice` names.
pub fn load_embedder(choice: &EmbedderChoice) -> Result<Arc<dyn Embedder>, SetupError> {
    let failed = |reason: String| SetupError::Embedder {
        choice: match choice {
            EmbedderChoice::Builtin => "builtin".into(),
            EmbedderChoice::Hashing => "hashing".into(),
            EmbedderChoice::Dir(path) => path.display().to_string(),
        },
        reason,
    };
    Ok(match choice {
        EmbedderChoice::Builtin => Arc::new(StaticModel::builtin().map_err(|e| failed(e.to_string()))?),
        EmbedderChoice::Hashing => {
            Arc::new(HashingEmbedder::new(HashingConfig::default()).map_err(|e| failed(e.to_string()))?)
        }
        EmbedderChoice::Dir(path) => Arc::new(StaticModel::from_dir(path).map_err(|e| failed(e.to_string()))?),
    })
}

/// Builds the engines, loading their saved indexes from `data_dir` (None:
/// nothing saved or loaded). The daemon calls it with the directory locked
/// (`Store::lock_data_dir`): index files are mapped, so they must be in a
/// directory no one else writes.
pub fn open_engines(settings: &RecallSettings, data_dir: Option<&Path>) -> Result<EngineSet, SetupError> {
    let meta = Arc::new(MemoryMeta::default());
    // The model (~0.3 s) and the BM25 image (~1 s per million memories) load
    // on two threads: start-up waits for the longer, not for both.
    let (embedder, lexical) = std::thread::scope(|scope| {
        let embedder = scope.spawn(|| {
            let started = Instant::now();
            let embedder = load_embedder(&settings.embedder)?;
            let ms = started.elapsed().as_millis() as u64;
            info!(model = %embedder.identity(), ms, "embedder loaded");
            Ok::<_, SetupError>(embedder)
        });
        let lexical = LexicalEngine::open(settings.lexical, data_dir, Arc::clone(&meta));
        let embedder = embedder.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        (embedder, lexical)
    });
    let (embedder, lexical) = (embedder?, Arc::new(lexical?));
    let dense = DenseEngine::open(Space::BuiltIn(embedder), data_dir, Arc::clone(&meta));
    let vector = DenseEngine::open(Space::Client, data_dir, Arc::clone(&meta));
    let neardup = match settings.duplicates {
        Some(_) => Some(Arc::new(
            NearDupFollower::new(DedupConfig::default()).map_err(|e| SetupError::Preprocess(e.to_string()))?,
        )),
        None => None,
    };
    let mut followers: Vec<Arc<dyn Follower>> = vec![meta.clone(), lexical.clone(), dense.clone(), vector.clone()];
    if let Some(neardup) = &neardup {
        followers.push(neardup.clone());
    }
    let learning = Arc::new(Learning::default());
    followers.push(learning.clone());
    // Last: the cache's epochs move once every index has the change.
    let epochs = Arc::new(Epochs::new());
    followers.push(Arc::new(EpochFollower::new(Arc::clone(&epochs))));
    let policy = settings.duplicates.unwrap_or_default();
    let parts = RecallParts {
        meta: Some(meta),
        lexical: Some(lexical.clone()),
        dense: Some(dense.clone()),
        mining: neardup.clone(),
        learning: Some(learning),
        epochs: Some(epochs),
    };
    let engines: Vec<Arc<dyn Engine>> = vec![lexical, dense.clone(), vector.clone()];
    #[cfg(debug_assertions)]
    let engines = crate::recall::faults::from_env(engines);
    Ok(EngineSet {
        followers,
        engines,
        parts,
        dense: vec![dense, vector],
        preprocessor: Preprocessor::new(chunking(settings.chunk_tokens), policy, neardup.clone()),
        neardup,
    })
}
