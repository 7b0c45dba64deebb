//! The daemon's configuration: embedded defaults, a TOML file, flags.
//!
//! Precedence: defaults < config file < command-line flags. Both the file and
//! the flags produce a [`Settings`] (every field optional); [`Config::build`]
//! layers them. On SIGHUP the file is read again and layered under the same
//! flags; [`Config::live_update`] takes over the settings that may change
//! while serving and names the ones that need a restart. Every limit lives
//! here with the reason for its value, and every setting is range-checked
//! by `Config::validate` against the `*_RANGE` and `MAX_*` constants below,
//! with an error naming its key, at start and on every reload alike.

use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nexus_shm_protocol::layout::{MAX_RING_BYTES, MIN_RING_BYTES, max_frame_for_capacity};
use serde::Deserialize;

use crate::store::StoreConfig;
use crate::store::model::Limits;
use crate::store::wal::FsyncPolicy;

/// Longest socket path: `sun_path` holds 108 bytes with its NUL, and the
/// socket is first bound as `<path>.<pid>.tmp` (up to 12 more bytes).
pub const MAX_SOCKET_PATH_BYTES: usize = 107 - 12;
/// Uids on the allow-list: a host has few service users; the bound keeps the
/// per-uid bookkeeping small.
pub const ALLOWED_UIDS_RANGE: RangeInclusive<usize> = 1..=1024;
/// Connections: each needs an fd or two and its rings; 65,536 is far beyond
/// one host's AI processes.
pub const MAX_CLIENTS_RANGE: RangeInclusive<usize> = 1..=65_536;
/// Connections waiting for their hello: an honest client sends it at once,
/// so a few dozen cover a burst of connects.
pub const PENDING_HANDSHAKES_RANGE: RangeInclusive<usize> = 1..=4096;
/// Rings: a power of two between one page and 64 MiB (the layout's bounds).
pub const RING_BYTES_RANGE: RangeInclusive<u32> = MIN_RING_BYTES..=MAX_RING_BYTES;
/// Frames: at least 64 KiB so every answer the daemon itself writes (an
/// error, Stats, Health) fits, which a tiny limit broke (an error answer too
/// big for the frame limit was retried as an error answer, for ever); at
/// most what the largest ring can carry.
pub const FRAME_BYTES_RANGE: RangeInclusive<u32> = 64 * 1024..=max_frame_for_capacity(MAX_RING_BYTES as u64) as u32;
/// Smallest retained request buffer: one page.
pub const MIN_SCRATCH_RETAIN_BYTES: u64 = 4096;
/// Largest connection memory budget: 1 TiB, beyond any host this runs on.
pub const MAX_MEMORY_BUDGET_BYTES: u64 = 1 << 40;
/// RLIMIT_NOFILE: enough for the store and a handful of clients, at most
/// the kernel's usual `nr_open` ceiling.
pub const FD_LIMIT_RANGE: RangeInclusive<u64> = 64..=1 << 20;
/// fds kept for the store: a WAL rotation and a checkpoint need a few each.
pub const FD_RESERVE_RANGE: RangeInclusive<u64> = 8..=65_536;
/// Malformed frames tolerated (0: the first closes the connection).
pub const MAX_BAD_FRAMES: u32 = 1_000_000;
/// Worker threads (0: one per core).
pub const MAX_WORKER_THREADS: usize = 1024;
/// A handshake takes microseconds; 10 ms tolerates a loaded host, a minute is generous.
pub const HANDSHAKE_TIMEOUT_MS: RangeInclusive<u64> = 10..=60_000;
/// A stalled client: 0 would close every client that is a moment late; an hour is plenty.
pub const STALLED_CLIENT_TIMEOUT_MS: RangeInclusive<u64> = 10..=3_600_000;
/// An idle connection: at least 100 ms, at most 30 days.
pub const IDLE_TIMEOUT_MS: RangeInclusive<u64> = 100..=30 * 24 * 3_600_000;
/// Shutdown's wait for in-flight requests: up to 10 minutes.
pub const SHUTDOWN_TIMEOUT_MS: RangeInclusive<u64> = 10..=600_000;
/// Spin budget: past a millisecond a spin is a busy core, not a latency win
/// (and it is applied live, so a typo would burn a core per session).
pub const MAX_SPIN_US: u64 = 1000;
/// WAL segments: 1 MiB (the writer's zero-ahead window) to 1 GiB.
pub const WAL_SEGMENT_BYTES_RANGE: RangeInclusive<u64> = 1 << 20..=1 << 30;
/// WAL volume between checkpoints: 0 would checkpoint after every write; at
/// most 1 TiB.
pub const CHECKPOINT_WAL_BYTES_RANGE: RangeInclusive<u64> = 4096..=1 << 40;
/// The least time between two client-requested checkpoints: 0 (never
/// rationed) up to a day (a longer one would make `Checkpoint` meaningless).
pub const CHECKPOINT_MIN_INTERVAL_MS_RANGE: RangeInclusive<u64> = 0..=86_400_000;
/// Tags per memory.
pub const MAX_TAGS: usize = 1024;
/// Bytes of a name, key, source, tag key or value.
pub const MAX_NAME_BYTES: usize = 64 * 1024;
/// Vector dimensions.
pub const MAX_DIMENSION: u32 = 65_536;
/// Results of one recall.
pub const MAX_K: u32 = 100_000;
/// Memories in one Remember: a million is far past any frame's worth.
pub const MAX_BATCH: usize = 1_000_000;
/// Ids in one Forget: ten million (80 MB of ids) is past any frame's worth.
pub const MAX_FORGET_IDS: usize = 10_000_000;

/// Everything the daemon runs with.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where durable state lives (created 0700 at start).
    pub data_dir: PathBuf,
    /// The Unix socket clients connect to.
    pub socket_path: PathBuf,
    /// Permission bits of the socket file: 0600 keeps other users out before
    /// the uid check even runs; 0660 admits a group.
    pub socket_mode: u32,
    /// Peer uids admitted after SO_PEERCRED (default: the daemon's own uid).
    pub allowed_uids: Vec<u32>,
    /// Connections served at once. Each costs an fd or two and its charge
    /// against `memory_budget_bytes` (its two rings).
    pub max_clients: usize,
    /// Sessions one uid may hold at once, so one allowed uid cannot take
    /// every `max_clients` slot from the others. `None`: half of
    /// `max_clients` when several uids are allowed, all of them when one is
    /// (see [`Config::clients_per_uid`]).
    pub max_clients_per_uid: Option<usize>,
    /// Connections that may wait for their hello at once; past it the oldest
    /// of the uid holding the most is dropped, so silent connections cannot
    /// crowd out a client that says hello at once.
    pub max_pending_handshakes: usize,
    /// Connection memory (rings, socket buffers, request buffers) all
    /// sessions together may hold; a handshake that would exceed it is
    /// refused. ARCHITECTURE.md "Memory" gives the daemon's whole worst case.
    pub memory_budget_bytes: u64,
    /// Capacity a session's request buffer keeps after a larger request: a
    /// big batch's buffer is given back instead of held for the connection's life.
    pub scratch_retain_bytes: u64,
    /// RLIMIT_NOFILE (soft) the daemon sets at start (default: the hard limit).
    pub fd_limit: Option<u64>,
    /// File descriptors connections never take: they stay free for the store
    /// (WAL rotation, directory syncs, checkpoints), so running out of fds is
    /// a refused connection, never a failed write.
    pub fd_reserve: u64,
    /// Ring size granted when a client asks for 0 (1 MiB: frames up to 512 KiB).
    pub default_ring_bytes: u32,
    /// Largest ring granted; bounds a client's share of daemon memory.
    pub max_ring_bytes: u32,
    /// Largest frame payload accepted on any transport.
    pub max_frame_bytes: u32,
    /// How long a client may take to send its hello. Live.
    pub handshake_timeout: Duration,
    /// How long the response ring may stay full (a client not reading its
    /// answers), or a socket client may take to finish a frame it began,
    /// before the connection is closed. Live.
    pub stalled_client_timeout: Duration,
    /// A connection that sends no request for this long is closed, so a
    /// forgotten client does not hold its slot and rings for ever. Live.
    pub idle_timeout: Duration,
    /// Malformed frames tolerated from one connection before it is closed. Live.
    pub max_bad_frames: u32,
    /// Frames handled in one go before the session yields to other tasks,
    /// so one flooding client cannot monopolise a worker thread.
    pub burst_frames: u32,
    /// Opt-in busy-wait budget before sleeping (0: never spin). Only worth it
    /// with spare cores; see ARCHITECTURE.md "Wake-ups". Live.
    pub spin: Duration,
    /// Tokio worker threads (0: one per core).
    pub worker_threads: usize,
    /// How long shutdown waits for in-flight requests. Live.
    pub shutdown_timeout: Duration,
    /// Log filter (tracing EnvFilter syntax). Live.
    pub log: String,
    /// Log lines as text for a terminal, or one JSON object per line
    /// (journald and log shippers).
    pub log_format: LogFormat,
    /// Where Prometheus text is served, if anywhere (off by default): a
    /// Unix socket path, or `tcp:127.0.0.1:PORT` (loopback only).
    pub metrics_socket: Option<PathBuf>,
    /// When acknowledged writes reach the disk.
    pub fsync: FsyncPolicy,
    /// WAL segment size before rotation.
    pub wal_segment_bytes: u64,
    /// WAL volume since the last checkpoint that triggers one. Live.
    pub checkpoint_wal_bytes: u64,
    /// A client's Checkpoint this soon after the last successful one answers
    /// with that one instead of writing another: a checkpoint rewrites the
    /// whole store, so clients may not make the daemon do it back to back.
    pub checkpoint_min_interval: Duration,
    /// Limits on writes and queries.
    pub limits: Limits,
    /// Start even when the WAL is corrupt mid-log, cutting it at the first bad record.
    pub salvage_wal: bool,
    /// Engines: the embedder, BM25 settings.
    pub recall: crate::recall::setup::RecallSettings,
    /// The pipeline: fusion weights, cache bounds, breakers, router.
    pub pipeline: crate::recall::pipeline::PipelineConfig,
    /// The config file, re-read on SIGHUP.
    pub config_file: Option<PathBuf>,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Text, coloured on a terminal.
    Human,
    /// One JSON object per line.
    Json,
}

/// One layer of settings (the file's or the flags'); `None` = not set here.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    pub data_dir: Option<PathBuf>,
    pub socket: Option<PathBuf>,
    /// Octal, as a string ("600").
    pub socket_mode: Option<String>,
    pub allow_uids: Option<Vec<u32>>,
    pub max_clients: Option<usize>,
    pub max_clients_per_uid: Option<usize>,
    pub max_pending_handshakes: Option<usize>,
    pub memory_budget_bytes: Option<u64>,
    pub scratch_retain_bytes: Option<u64>,
    pub fd_limit: Option<u64>,
    pub fd_reserve: Option<u64>,
    pub idle_timeout_ms: Option<u64>,
    pub ring_bytes: Option<u32>,
    pub max_ring_bytes: Option<u32>,
    pub max_frame_bytes: Option<u32>,
    pub handshake_timeout_ms: Option<u64>,
    pub stalled_client_timeout_ms: Option<u64>,
    pub max_bad_frames: Option<u32>,
    pub spin_us: Option<u64>,
    pub worker_threads: Option<usize>,
    pub shutdown_timeout_ms: Option<u64>,
    pub log: Option<String>,
    /// `"human"` | `"json"`.
    pub log_format: Option<String>,
    /// Prometheus endpoint: a Unix socket path, or `tcp:127.0.0.1:PORT`.
    pub metrics_socket: Option<PathBuf>,
    /// `"always"` | `"interval:<ms>"` | `"never"`.
    pub fsync: Option<String>,
    pub wal_segment_bytes: Option<u64>,
    pub checkpoint_wal_bytes: Option<u64>,
    pub checkpoint_min_interval_ms: Option<u64>,
    pub limits: Option<Limits>,
    /// `"builtin"` (the shipped model), `"hashing"`, or a model2vec directory.
    pub embedder: Option<String>,
    /// BM25 term-frequency saturation (≥ 0).
    pub bm25_k1: Option<f32>,
    /// BM25 length normalisation (0..=1).
    pub bm25_b: Option<f32>,
    /// Snowball stemming of English words in the lexical index.
    pub stemming: Option<bool>,
    /// What a Remember does with a near-duplicate of a stored memory:
    /// `"keep"` (stored, linked), `"skip"`, `"merge"` or `"off"` (no detection).
    pub duplicates: Option<String>,
    /// Words per chunk of a long text on Remember (0: no chunking).
    pub chunk_tokens: Option<usize>,
    /// Fusion weights, `"factor=weight,..."` over vector, lexical, context,
    /// recency, importance, preference, diversity, date (unnamed ones keep
    /// their defaults). Reloaded on SIGHUP.
    pub fusion_weights: Option<String>,
    /// Recall cache: answers held at most.
    pub cache_entries: Option<usize>,
    /// Recall cache: bytes held at most.
    pub cache_bytes: Option<usize>,
    /// Recall cache: cosine at which a query reuses a similar one's answer.
    pub cache_semantic_threshold: Option<f32>,
    /// Consecutive failures that open an engine's circuit breaker. Reloaded on SIGHUP.
    pub breaker_failures: Option<u32>,
    /// How long an open breaker keeps its engine out. Reloaded on SIGHUP.
    pub breaker_cool_down_ms: Option<u64>,
    /// Flag only (`--salvage-wal`); a file cannot set it.
    #[serde(skip)]
    pub salvage_wal: Option<bool>,
}

/// A configuration that cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The config file cannot be read or parsed.
    #[error("config file {path}: {reason}")]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong (with line and column from the parser).
        reason: String,
    },
    /// A value is out of range.
    #[error("invalid setting {name}: {reason}")]
    Invalid {
        /// The setting.
        name: &'static str,
        /// Why.
        reason: String,
    },
}

impl Default for Config {
    fn default() -> Self {
        let store = StoreConfig::default();
        Self {
            data_dir: store.data_dir,
            socket_path: nexus_shm_protocol::default_socket_path(),
            socket_mode: 0o600,
            allowed_uids: vec![nix::unistd::geteuid().as_raw()],
            max_clients: 1024,
            max_clients_per_uid: None,
            max_pending_handshakes: 64,
            memory_budget_bytes: 2 << 30,
            scratch_retain_bytes: 64 * 1024,
            fd_limit: None,
            fd_reserve: 64,
            default_ring_bytes: 1 << 20,
            max_ring_bytes: nexus_shm_protocol::layout::MAX_RING_BYTES,
            max_frame_bytes: 8 << 20,
            handshake_timeout: Duration::from_secs(2),
            stalled_client_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(3600),
            max_bad_frames: 16,
            burst_frames: 256,
            spin: Duration::ZERO,
            worker_threads: 0,
            shutdown_timeout: Duration::from_secs(5),
            log: "info".to_owned(),
            log_format: LogFormat::Human,
            metrics_socket: None,
            fsync: store.fsync,
            wal_segment_bytes: store.wal_segment_bytes,
            checkpoint_wal_bytes: store.checkpoint_wal_bytes,
            checkpoint_min_interval: store.checkpoint_min_interval,
            limits: store.limits,
            salvage_wal: false,
            recall: Default::default(),
            pipeline: Default::default(),
            config_file: None,
        }
    }
}

impl Settings {
    /// Reads a TOML config file.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let file_error = |reason: String| ConfigError::File {
            path: path.to_path_buf(),
            reason,
        };
        let text = std::fs::read_to_string(path).map_err(|e| file_error(e.to_string()))?;
        toml::from_str(&text).map_err(|e| file_error(e.to_string()))
    }
}

impl Config {
    /// Defaults, then the config file named by `flags` (if any), then `flags`.
    pub fn build(config_file: Option<&Path>, flags: &Settings) -> Result<Self, ConfigError> {
        let mut config = Config {
            config_file: config_file.map(Path::to_path_buf),
            ..Config::default()
        };
        if let Some(path) = config_file {
            config.layer(&Settings::from_file(path)?)?;
        }
        config.layer(flags)?;
        config.validate()?;
        Ok(config)
    }

    /// Takes over the settings that may change while serving from `new`;
    /// returns the names of changed settings that need a restart.
    pub fn live_update(&mut self, new: &Config) -> Vec<&'static str> {
        self.handshake_timeout = new.handshake_timeout;
        self.stalled_client_timeout = new.stalled_client_timeout;
        self.idle_timeout = new.idle_timeout;
        self.max_bad_frames = new.max_bad_frames;
        self.spin = new.spin;
        self.shutdown_timeout = new.shutdown_timeout;
        self.log = new.log.clone();
        self.checkpoint_wal_bytes = new.checkpoint_wal_bytes;
        self.pipeline.tuning = new.pipeline.tuning.clone();
        self.pipeline.router = new.pipeline.router.clone();
        let mut restart = Vec::new();
        let mut differs = |name, changed: bool| {
            if changed {
                restart.push(name);
            }
        };
        differs("data_dir", self.data_dir != new.data_dir);
        differs("socket", self.socket_path != new.socket_path);
        differs("socket_mode", self.socket_mode != new.socket_mode);
        differs("allow_uids", self.allowed_uids != new.allowed_uids);
        differs("max_clients", self.max_clients != new.max_clients);
        differs(
            "max_clients_per_uid",
            self.max_clients_per_uid != new.max_clients_per_uid,
        );
        differs(
            "max_pending_handshakes",
            self.max_pending_handshakes != new.max_pending_handshakes,
        );
        differs(
            "memory_budget_bytes",
            self.memory_budget_bytes != new.memory_budget_bytes,
        );
        differs(
            "scratch_retain_bytes",
            self.scratch_retain_bytes != new.scratch_retain_bytes,
        );
        differs("fd_limit", self.fd_limit != new.fd_limit);
        differs("fd_reserve", self.fd_reserve != new.fd_reserve);
        differs("ring_bytes", self.default_ring_bytes != new.default_ring_bytes);
        differs("max_ring_bytes", self.max_ring_bytes != new.max_ring_bytes);
        differs("max_frame_bytes", self.max_frame_bytes != new.max_frame_bytes);
        differs("worker_threads", self.worker_threads != new.worker_threads);
        differs(
            "checkpoint_min_interval_ms",
            self.checkpoint_min_interval != new.checkpoint_min_interval,
        );
        differs("fsync", self.fsync != new.fsync);
        differs("log_format", self.log_format != new.log_format);
        differs("metrics_socket", self.metrics_socket != new.metrics_socket);
        differs("wal_segment_bytes", self.wal_segment_bytes != new.wal_segment_bytes);
        differs("limits", self.limits != new.limits);
        differs("embedder", self.recall.embedder != new.recall.embedder);
        differs("bm25_k1/bm25_b/stemming", self.recall.lexical != new.recall.lexical);
        differs("duplicates", self.recall.duplicates != new.recall.duplicates);
        differs("chunk_tokens", self.recall.chunk_tokens != new.recall.chunk_tokens);
        differs("cache_*", self.pipeline.cache != new.pipeline.cache);
        restart
    }

    /// Sessions one uid may hold: `max_clients_per_uid`, else half of
    /// `max_clients` when several uids are allowed, else all of them.
    pub fn clients_per_uid(&self) -> usize {
        match self.max_clients_per_uid {
            Some(share) => share,
            None if self.allowed_uids.len() > 1 => self.max_clients.div_ceil(2),
            None => self.max_clients,
        }
    }

    /// The ring size to grant for a client's request (0 = default).
    pub fn grant_ring_bytes(&self, requested: u32) -> u32 {
        let wanted = if requested == 0 {
            self.default_ring_bytes
        } else {
            requested
        };
        nexus_shm_protocol::layout::normalize_ring_bytes(wanted.min(self.max_ring_bytes))
    }

    /// The store's part of the configuration.
    pub fn store_config(&self) -> StoreConfig {
        StoreConfig {
            data_dir: self.data_dir.clone(),
            fsync: self.fsync,
            wal_segment_bytes: self.wal_segment_bytes,
            checkpoint_wal_bytes: self.checkpoint_wal_bytes,
            checkpoint_min_interval: self.checkpoint_min_interval,
            limits: self.limits.clone(),
            salvage_wal: self.salvage_wal,
            wal_stall_timeout: self.shutdown_timeout,
        }
    }

    fn layer(&mut self, s: &Settings) -> Result<(), ConfigError> {
        let ms = Duration::from_millis;
        set(&mut self.data_dir, s.data_dir.clone());
        set(&mut self.socket_path, s.socket.clone());
        if let Some(mode) = &s.socket_mode {
            self.socket_mode = u32::from_str_radix(mode, 8)
                .map_err(|_| invalid("socket_mode", format!("{mode:?} is not an octal mode such as 600")))?;
        }
        set(&mut self.allowed_uids, s.allow_uids.clone());
        set(&mut self.max_clients, s.max_clients);
        set(&mut self.max_clients_per_uid, s.max_clients_per_uid.map(Some));
        set(&mut self.max_pending_handshakes, s.max_pending_handshakes);
        set(&mut self.memory_budget_bytes, s.memory_budget_bytes);
        set(&mut self.scratch_retain_bytes, s.scratch_retain_bytes);
        set(&mut self.fd_limit, s.fd_limit.map(Some));
        set(&mut self.fd_reserve, s.fd_reserve);
        set(&mut self.idle_timeout, s.idle_timeout_ms.map(ms));
        set(&mut self.default_ring_bytes, s.ring_bytes);
        set(&mut self.max_ring_bytes, s.max_ring_bytes);
        set(&mut self.max_frame_bytes, s.max_frame_bytes);
        set(&mut self.handshake_timeout, s.handshake_timeout_ms.map(ms));
        set(&mut self.stalled_client_timeout, s.stalled_client_timeout_ms.map(ms));
        set(&mut self.max_bad_frames, s.max_bad_frames);
        set(&mut self.spin, s.spin_us.map(Duration::from_micros));
        set(&mut self.worker_threads, s.worker_threads);
        set(&mut self.shutdown_timeout, s.shutdown_timeout_ms.map(ms));
        set(&mut self.log, s.log.clone());
        if let Some(format) = &s.log_format {
            self.log_format = match format.as_str() {
                "human" => LogFormat::Human,
                "json" => LogFormat::Json,
                other => return Err(invalid("log_format", format!("{other:?} is not \"human\" or \"json\""))),
            };
        }
        set(&mut self.metrics_socket, s.metrics_socket.clone().map(Some));
        if let Some(policy) = &s.fsync {
            self.fsync = policy.parse().map_err(|e| invalid("fsync", format!("{e}")))?;
        }
        set(&mut self.wal_segment_bytes, s.wal_segment_bytes);
        set(&mut self.checkpoint_wal_bytes, s.checkpoint_wal_bytes);
        set(&mut self.checkpoint_min_interval, s.checkpoint_min_interval_ms.map(ms));
        set(&mut self.limits, s.limits.clone());
        set(&mut self.salvage_wal, s.salvage_wal);
        if let Some(embedder) = &s.embedder {
            self.recall.embedder = crate::recall::setup::EmbedderChoice::parse(embedder);
        }
        set(&mut self.recall.lexical.k1, s.bm25_k1);
        set(&mut self.recall.lexical.b, s.bm25_b);
        set(&mut self.recall.lexical.tokenizer.stemming, s.stemming);
        set(&mut self.recall.chunk_tokens, s.chunk_tokens);
        if let Some(weights) = &s.fusion_weights {
            self.pipeline.tuning.weights = parse_weights(self.pipeline.tuning.weights, weights)?;
        }
        set(&mut self.pipeline.cache.max_entries, s.cache_entries);
        set(&mut self.pipeline.cache.max_bytes, s.cache_bytes);
        set(&mut self.pipeline.cache.semantic_threshold, s.cache_semantic_threshold);
        set(&mut self.pipeline.tuning.breaker.failures_to_open, s.breaker_failures);
        set(&mut self.pipeline.tuning.breaker.cool_down_ms, s.breaker_cool_down_ms);
        if let Some(policy) = &s.duplicates {
            self.recall.duplicates = crate::recall::setup::parse_duplicates(policy).ok_or_else(|| {
                invalid(
                    "duplicates",
                    format!("{policy:?} is not one of \"keep\", \"skip\", \"merge\", \"off\""),
                )
            })?;
        }
        Ok(())
    }

    /// Checks every setting against its range (and the few that depend on
    /// each other); the error names the key as the file and flags spell it.
    fn validate(&self) -> Result<(), ConfigError> {
        self.validate_paths()?;
        self.validate_connections()?;
        self.validate_timeouts()?;
        self.validate_store()?;
        validate_limits(&self.limits, self.max_frame_bytes)?;
        self.validate_recall()?;
        self.validate_pipeline()?;
        tracing_subscriber::EnvFilter::try_new(&self.log).map_err(|e| invalid("log", e.to_string()))?;
        Ok(())
    }

    fn validate_pipeline(&self) -> Result<(), ConfigError> {
        let pipeline = &self.pipeline;
        (pipeline.tuning.weights.validate()).map_err(|e| invalid("fusion_weights", e.to_string()))?;
        (pipeline.cache.validate())
            .map_err(|e| invalid("cache_entries/cache_bytes/cache_semantic_threshold", e.to_string()))?;
        if pipeline.tuning.breaker.failures_to_open == 0 {
            return Err(invalid(
                "breaker_failures",
                "0 would keep every engine out: use 1 or more".into(),
            ));
        }
        Ok(())
    }

    fn validate_recall(&self) -> Result<(), ConfigError> {
        let lexical = &self.recall.lexical;
        if !(lexical.k1.is_finite() && lexical.k1 >= 0.0) {
            return Err(invalid("bm25_k1", format!("{} must be finite and ≥ 0", lexical.k1)));
        }
        if !(0.0..=1.0).contains(&lexical.b) {
            return Err(invalid("bm25_b", format!("{} is outside 0..=1", lexical.b)));
        }
        let chunk = self.recall.chunk_tokens;
        if chunk != 0 && chunk < crate::recall::setup::MIN_CHUNK_TOKENS {
            let min = crate::recall::setup::MIN_CHUNK_TOKENS;
            return Err(invalid(
                "chunk_tokens",
                format!("{chunk} is below {min}; 0 turns chunking off"),
            ));
        }
        if let crate::recall::setup::EmbedderChoice::Dir(dir) = &self.recall.embedder
            && !dir.is_dir()
        {
            let reason = format!(
                "{} is not a directory; use \"builtin\", \"hashing\" or a model2vec directory",
                dir.display()
            );
            return Err(invalid("embedder", reason));
        }
        Ok(())
    }

    fn validate_paths(&self) -> Result<(), ConfigError> {
        if self.data_dir.as_os_str().is_empty() {
            return Err(invalid("data_dir", "must not be empty".into()));
        }
        let socket_bytes = self.socket_path.as_os_str().len();
        if !(1..=MAX_SOCKET_PATH_BYTES).contains(&socket_bytes) {
            let reason = format!(
                "{} is {socket_bytes} bytes; a Unix socket path must be 1..={MAX_SOCKET_PATH_BYTES} bytes \
                 (sun_path, with room for the temporary name it is bound under)",
                self.socket_path.display()
            );
            return Err(invalid("socket", reason));
        }
        if self.socket_mode & !0o777 != 0 {
            return Err(invalid(
                "socket_mode",
                format!("{:o} has bits outside 777", self.socket_mode),
            ));
        }
        Ok(())
    }

    fn validate_connections(&self) -> Result<(), ConfigError> {
        check("allow_uids", self.allowed_uids.len(), ALLOWED_UIDS_RANGE, "uids")?;
        check("max_clients", self.max_clients, MAX_CLIENTS_RANGE, "connections")?;
        check(
            "max_clients_per_uid",
            self.clients_per_uid(),
            1..=self.max_clients,
            "connections",
        )?;
        check(
            "max_pending_handshakes",
            self.max_pending_handshakes,
            PENDING_HANDSHAKES_RANGE,
            "connections",
        )?;
        check("max_ring_bytes", self.max_ring_bytes, RING_BYTES_RANGE, "bytes")?;
        check(
            "ring_bytes",
            self.default_ring_bytes,
            MIN_RING_BYTES..=self.max_ring_bytes,
            "bytes",
        )?;
        check("max_frame_bytes", self.max_frame_bytes, FRAME_BYTES_RANGE, "bytes")?;
        let retain_range = MIN_SCRATCH_RETAIN_BYTES..=u64::from(self.max_frame_bytes);
        check("scratch_retain_bytes", self.scratch_retain_bytes, retain_range, "bytes")?;
        let one_client = crate::transport::admission::shm_session_bytes(
            self.grant_ring_bytes(0),
            self.grant_ring_bytes(0),
            self.scratch_retain_bytes,
        );
        check(
            "memory_budget_bytes",
            self.memory_budget_bytes,
            one_client..=MAX_MEMORY_BUDGET_BYTES,
            "bytes (at least one client with the default rings)",
        )?;
        if let Some(limit) = self.fd_limit {
            check("fd_limit", limit, FD_LIMIT_RANGE, "fds")?;
        }
        check("fd_reserve", self.fd_reserve, FD_RESERVE_RANGE, "fds")?;
        check("max_bad_frames", self.max_bad_frames, 0..=MAX_BAD_FRAMES, "frames")?;
        check("worker_threads", self.worker_threads, 0..=MAX_WORKER_THREADS, "threads")
    }

    fn validate_timeouts(&self) -> Result<(), ConfigError> {
        let ms = |d: Duration| d.as_millis().min(u128::from(u64::MAX)) as u64;
        check(
            "handshake_timeout_ms",
            ms(self.handshake_timeout),
            HANDSHAKE_TIMEOUT_MS,
            "ms",
        )?;
        check(
            "stalled_client_timeout_ms",
            ms(self.stalled_client_timeout),
            STALLED_CLIENT_TIMEOUT_MS,
            "ms",
        )?;
        check("idle_timeout_ms", ms(self.idle_timeout), IDLE_TIMEOUT_MS, "ms")?;
        check(
            "shutdown_timeout_ms",
            ms(self.shutdown_timeout),
            SHUTDOWN_TIMEOUT_MS,
            "ms",
        )?;
        let spin_us = self.spin.as_micros().min(u128::from(u64::MAX)) as u64;
        check("spin_us", spin_us, 0..=MAX_SPIN_US, "µs")
    }

    fn validate_store(&self) -> Result<(), ConfigError> {
        check(
            "wal_segment_bytes",
            self.wal_segment_bytes,
            WAL_SEGMENT_BYTES_RANGE,
            "bytes",
        )?;
        check(
            "checkpoint_wal_bytes",
            self.checkpoint_wal_bytes,
            CHECKPOINT_WAL_BYTES_RANGE,
            "bytes",
        )?;
        let min_interval_ms = self.checkpoint_min_interval.as_millis().min(u128::from(u64::MAX)) as u64;
        check(
            "checkpoint_min_interval_ms",
            min_interval_ms,
            CHECKPOINT_MIN_INTERVAL_MS_RANGE,
            "ms",
        )
    }
}

/// Ranges of the store's limits. A limit of 0 would refuse every write (or
/// every recall); a text must fit in a frame; the other upper ends are far
/// past what one frame can carry.
fn validate_limits(limits: &Limits, max_frame_bytes: u32) -> Result<(), ConfigError> {
    let frame = max_frame_bytes as usize;
    check("limits.max_text_bytes", limits.max_text_bytes, 1..=frame, "bytes")?;
    check("limits.max_tags", limits.max_tags, 0..=MAX_TAGS, "tags")?;
    check(
        "limits.max_tag_bytes",
        limits.max_tag_bytes,
        1..=MAX_NAME_BYTES,
        "bytes",
    )?;
    check(
        "limits.max_name_bytes",
        limits.max_name_bytes,
        1..=MAX_NAME_BYTES,
        "bytes",
    )?;
    check(
        "limits.max_dimension",
        limits.max_dimension,
        1..=MAX_DIMENSION,
        "dimensions",
    )?;
    check(
        "limits.dimension",
        limits.dimension,
        0..=limits.max_dimension,
        "dimensions",
    )?;
    check("limits.max_batch", limits.max_batch, 1..=MAX_BATCH, "memories")?;
    check("limits.max_k", limits.max_k, 1..=MAX_K, "results")?;
    // A query longer than a frame could never arrive; 0 would refuse every recall.
    check("limits.max_query_bytes", limits.max_query_bytes, 1..=frame, "bytes")?;
    check(
        "limits.max_forget_ids",
        limits.max_forget_ids,
        1..=MAX_FORGET_IDS,
        "ids",
    )
}

/// `name` must lie in `range`; the error says the value, the range and the unit.
fn check<T>(name: &'static str, value: T, range: RangeInclusive<T>, unit: &str) -> Result<(), ConfigError>
where
    T: PartialOrd + std::fmt::Display,
{
    if range.contains(&value) {
        return Ok(());
    }
    let reason = format!("{value} is outside {}..={} {unit}", range.start(), range.end());
    Err(invalid(name, reason))
}

fn set<T>(field: &mut T, value: Option<T>) {
    if let Some(value) = value {
        *field = value;
    }
}

fn invalid(name: &'static str, reason: String) -> ConfigError {
    ConfigError::Invalid { name, reason }
}

/// `"factor=weight,..."` over `base`: each named factor's weight replaced.
fn parse_weights(
    base: crate::recall::fusion::Weights,
    text: &str,
) -> Result<crate::recall::fusion::Weights, ConfigError> {
    use crate::recall::fusion::Factor;
    let mut weights = base;
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let bad = || {
            let names: Vec<&str> = Factor::ALL.iter().map(|f| f.name()).collect();
            invalid(
                "fusion_weights",
                format!("{part:?} is not factor=weight with a factor among {}", names.join(", ")),
            )
        };
        let (name, value) = part.split_once('=').ok_or_else(bad)?;
        let factor = (Factor::ALL.into_iter())
            .find(|f| f.name() == name.trim())
            .ok_or_else(bad)?;
        weights.0[factor as usize] = value.trim().parse().map_err(|_| bad())?;
    }
    Ok(weights)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_win_over_the_file_which_wins_over_defaults() {
        let dir = std::env::temp_dir().join(format!("nexus-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("nexusd.toml");
        std::fs::write(
            &file,
            "max_bad_frames = 3\nspin_us = 7\nfsync = \"interval:5\"\n[limits]\nmax_batch = 9\n",
        )
        .unwrap();
        let flags = Settings {
            spin_us: Some(20),
            ..Settings::default()
        };
        let config = Config::build(Some(&file), &flags).unwrap();
        assert_eq!(config.max_bad_frames, 3);
        assert_eq!(config.spin, Duration::from_micros(20));
        assert_eq!(config.fsync, FsyncPolicy::Interval(Duration::from_millis(5)));
        assert_eq!(config.limits.max_batch, 9);
        assert_eq!(config.limits.max_k, Limits::default().max_k);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_bad_file_is_reported_with_its_path() {
        let dir = std::env::temp_dir().join(format!("nexus-config-bad-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("nexusd.toml");
        std::fs::write(&file, "max_bad_frames = \"many\"\n").unwrap();
        let error = Config::build(Some(&file), &Settings::default())
            .unwrap_err()
            .to_string();
        assert!(error.contains("nexusd.toml"), "{error}");
        std::fs::write(&file, "no_such_setting = 1\n").unwrap();
        assert!(Config::build(Some(&file), &Settings::default()).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Each line is a config file with one setting out of range; the error
    /// must name that setting. Before, most of these started a daemon that
    /// then misbehaved (a tiny max_frame_bytes recursed until the stack
    /// overflowed, a zero timeout cut every client, a huge spin_us burned a
    /// core per session, checkpoint_wal_bytes = 0 checkpointed every write).
    #[test]
    fn every_setting_out_of_range_is_refused_naming_its_key() {
        let long_socket = format!("socket = \"/tmp/{}.sock\"", "s".repeat(100));
        let cases: Vec<(&str, String)> = vec![
            ("data_dir", "data_dir = \"\"".into()),
            ("socket", long_socket),
            ("socket_mode", "socket_mode = \"7777\"".into()),
            ("allow_uids", "allow_uids = []".into()),
            ("max_clients", "max_clients = 0".into()),
            ("max_clients", "max_clients = 1000000".into()),
            ("max_clients_per_uid", "max_clients_per_uid = 0".into()),
            (
                "max_clients_per_uid",
                "max_clients = 10\nmax_clients_per_uid = 11".into(),
            ),
            ("max_pending_handshakes", "max_pending_handshakes = 0".into()),
            ("memory_budget_bytes", "memory_budget_bytes = 1".into()),
            ("scratch_retain_bytes", "scratch_retain_bytes = 1".into()),
            ("fd_limit", "fd_limit = 3".into()),
            ("fd_reserve", "fd_reserve = 0".into()),
            ("ring_bytes", "ring_bytes = 1".into()),
            ("ring_bytes", "ring_bytes = 8192\nmax_ring_bytes = 4096".into()),
            ("max_ring_bytes", "max_ring_bytes = 2147483648".into()),
            ("max_frame_bytes", "max_frame_bytes = 16".into()),
            ("max_frame_bytes", "max_frame_bytes = 4294967295".into()),
            ("handshake_timeout_ms", "handshake_timeout_ms = 0".into()),
            ("stalled_client_timeout_ms", "stalled_client_timeout_ms = 0".into()),
            ("idle_timeout_ms", "idle_timeout_ms = 0".into()),
            ("shutdown_timeout_ms", "shutdown_timeout_ms = 0".into()),
            ("spin_us", "spin_us = 10000000".into()),
            ("max_bad_frames", "max_bad_frames = 4000000000".into()),
            ("worker_threads", "worker_threads = 100000".into()),
            ("fsync", "fsync = \"interval:0\"".into()),
            ("wal_segment_bytes", "wal_segment_bytes = 0".into()),
            ("checkpoint_wal_bytes", "checkpoint_wal_bytes = 0".into()),
            (
                "checkpoint_min_interval_ms",
                "checkpoint_min_interval_ms = 864000000".into(),
            ),
            ("limits.max_query_bytes", "[limits]\nmax_query_bytes = 0".into()),
            ("log", "log = \"=[\"".into()),
            ("limits.max_text_bytes", "[limits]\nmax_text_bytes = 0".into()),
            ("limits.max_tags", "[limits]\nmax_tags = 1000000".into()),
            ("limits.max_tag_bytes", "[limits]\nmax_tag_bytes = 0".into()),
            ("limits.max_name_bytes", "[limits]\nmax_name_bytes = 0".into()),
            ("limits.max_dimension", "[limits]\nmax_dimension = 0".into()),
            ("limits.dimension", "[limits]\ndimension = 5000".into()),
            ("limits.max_batch", "[limits]\nmax_batch = 0".into()),
            ("limits.max_k", "[limits]\nmax_k = 0".into()),
            ("limits.max_forget_ids", "[limits]\nmax_forget_ids = 0".into()),
        ];
        let dir = std::env::temp_dir().join(format!("nexus-config-ranges-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("nexusd.toml");
        for (key, text) in &cases {
            std::fs::write(&file, text).unwrap();
            match Config::build(Some(&file), &Settings::default()) {
                Err(ConfigError::Invalid { name, reason }) => {
                    assert_eq!(name, *key, "{text:?} was refused as {name}: {reason}")
                }
                other => panic!("{text:?} was not refused as {key}: {other:?}"),
            }
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_defaults_and_the_ends_of_each_range_are_accepted() {
        Config::build(None, &Settings::default()).expect("the defaults are valid");
        let edges = Settings {
            max_frame_bytes: Some(*FRAME_BYTES_RANGE.start()),
            handshake_timeout_ms: Some(*HANDSHAKE_TIMEOUT_MS.start()),
            spin_us: Some(MAX_SPIN_US),
            checkpoint_wal_bytes: Some(*CHECKPOINT_WAL_BYTES_RANGE.start()),
            max_bad_frames: Some(0),
            scratch_retain_bytes: Some(MIN_SCRATCH_RETAIN_BYTES),
            ..Settings::default()
        };
        Config::build(None, &edges).expect("the ends of the ranges are valid");
    }

    #[test]
    fn the_uid_share_defaults_to_half_the_clients_when_several_uids_are_allowed() {
        let one = Config::build(None, &Settings::default()).unwrap();
        assert_eq!(one.clients_per_uid(), one.max_clients);
        let several = Settings {
            allow_uids: Some(vec![1000, 1001]),
            max_clients: Some(11),
            ..Settings::default()
        };
        assert_eq!(Config::build(None, &several).unwrap().clients_per_uid(), 6);
    }

    #[test]
    fn live_update_names_what_needs_a_restart() {
        let mut current = Config::default();
        let new = Config {
            max_bad_frames: 1,
            max_clients: 5,
            ..Config::default()
        };
        assert_eq!(current.live_update(&new), vec!["max_clients"]);
        assert_eq!(current.max_bad_frames, 1);
        assert_eq!(current.max_clients, Config::default().max_clients);
    }
}
