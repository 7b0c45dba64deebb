//! The daemon's configuration: embedded defaults, a TOML file, the
//! environment, flags: one story, told the same way by each layer.
//!
//! Precedence: defaults < config file < environment < command-line flags.
//! Every key of the file (`max_clients`) is also an environment variable
//! (`NEXUS_MAX_CLIENTS`) and a flag (`--max-clients`), and the variable and
//! the flag take the very same text ([`Key::set`]: lists comma-separated,
//! `NEXUS_ALLOW_UIDS=1000,1001`). Two exceptions: the `[limits]` table is
//! the file's only, except `limits.dimension` (`NEXUS_DIMENSION`,
//! `--dimension`); `--salvage-wal` is a flag only, for one start. The file
//! is `--config FILE`, else `$NEXUS_CONFIG`. Each layer produces a
//! [`Settings`] (every field optional) and [`Config::build`] lays them over
//! the defaults, then range-checks everything in `Config::validate` against
//! the `*_RANGE` and `MAX_*` constants below. An error names the key and
//! where its value was set (`config file F, line L: unknown key "max_client"
//! (did you mean "max_clients"?)`, `NEXUS_MAX_CLIENTS=abc: max_clients
//! expects a whole number`, `invalid setting max_clients: 0 is outside
//! 1..=65536 connections (set by --max-clients)`); [`Origins`] records that
//! place, and `nexusd --check-config` prints it beside each effective value
//! ([`Config::to_toml`]).
//!
//! The environment is read once, at start ([`Environment::capture`]), and
//! kept in the [`Config`]: on SIGHUP the file is read again and layered
//! under the same environment and the same flags, so a reload never picks
//! up a variable the daemon did not start with. [`Config::live_update`]
//! then takes over the settings that may change while serving and names
//! the ones that need a restart. The environment is shared with clients and
//! tests, so a `NEXUS_*` variable that names no setting is a warning (with
//! the nearest known name), never a refusal; [`OTHER_ENV_VARS`] lists the
//! ones other parts read, which are not warned about.
//!
//! The defaults are safe on a laptop and on a server alike. The socket is
//! 0600 and only the daemon's own uid is admitted (SO_PEERCRED), so nothing
//! is exposed until an operator names other uids; there is no network
//! listener, and metrics are off. Every acknowledged write has been
//! fdatasync'ed (`fsync = "always"`): a power cut loses nothing the client
//! was told is stored. Connection memory is bounded by a 2 GiB budget
//! (`memory_budget_bytes`, rings of 1 MiB by default) and the count of
//! clients (1024, each uid's share bounded when several are allowed), so a
//! runaway client cannot take a laptop's memory, while a server's load fits
//! in it; silent, stalled and idle connections are cut on timers, and
//! malformed frames past 16 close the connection. The data directory and
//! its files are private (0700/0600). What a server changes is who may
//! connect (`allow_uids`, `socket_mode = "660"`), where things live, and
//! perhaps the budget; docs/configuration.md lists every key.
//!
//! Not here: binding the socket, opening the store, logging (`cli.rs` and
//! the modules each setting configures).

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
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
    /// The environment's layer as captured at start: SIGHUP lays the
    /// re-read file under it again (and under the same flags).
    pub env: Settings,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Text, coloured on a terminal.
    Human,
    /// One JSON object per line.
    Json,
}

impl LogFormat {
    /// As the configuration writes it: `human`, `json`.
    pub fn name(self) -> &'static str {
        match self {
            LogFormat::Human => "human",
            LogFormat::Json => "json",
        }
    }
}

/// One layer of settings (the file's, the environment's or the flags');
/// `None` = not set here. Its fields are the file's keys; [`KEYS`] says how
/// the environment and the flags spell each.
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
    /// `limits.dimension` from the environment or a flag (`NEXUS_DIMENSION`,
    /// `--dimension`), over the file's `[limits]` table; the file sets it there.
    #[serde(skip)]
    pub dimension: Option<u32>,
}

/// The `NEXUS_*` variables the daemon started with, read once
/// ([`Environment::capture`]) and kept for every SIGHUP.
#[derive(Debug, Clone, Default)]
pub struct Environment {
    /// The settings they set (`NEXUS_MAX_CLIENTS=8` sets `max_clients`).
    pub settings: Settings,
    /// `NEXUS_CONFIG`: the config file when `--config` is absent.
    pub config_file: Option<PathBuf>,
    /// `NEXUS_*` variables that name no setting: logged at start, never fatal.
    pub unknown: Vec<UnknownVariable>,
}

/// A `NEXUS_*` variable that names no setting (a typo, or another
/// program's variable), and what it probably meant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownVariable {
    /// The variable, `NEXUS_MAX_CLIENT`.
    pub name: String,
    /// What to do instead: `did you mean NEXUS_MAX_CLIENTS?`, or why it is ignored.
    pub hint: Option<String>,
}

/// `NEXUS_*` variables other parts read, which are not settings of the
/// daemon and are never warned about. `NEXUS_SOCKET` and `NEXUS_LOG` are
/// settings (`socket`, `log`) as well as the clients' and the tools'.
pub const OTHER_ENV_VARS: &[&str] = &[
    // The config file when --config is absent (read by the daemon itself).
    "NEXUS_CONFIG",
    // Clients: their default namespace, and the daemon uid they insist on.
    "NEXUS_NAMESPACE",
    "NEXUS_DAEMON_UID",
    // The test daemon's (nexusd-it) fault switches.
    "NEXUS_TEST_FAULTS",
    "NEXUS_FAULT_INJECT",
    "NEXUS_TEST_WEDGE_ON_SIGUSR2",
];

/// Where a key's effective value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Origin {
    /// Nothing set it.
    Default,
    /// The config file, at this line (1-based).
    File {
        /// The file.
        path: PathBuf,
        /// Its line.
        line: usize,
    },
    /// This environment variable.
    Env(String),
    /// This flag.
    Flag(String),
}

/// Where each key set by a layer got its value; a key not in it has its default.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Origins(BTreeMap<&'static str, Origin>);

/// One setting as the file, the environment and the flags spell it.
pub struct Key {
    /// The file's key: `max_clients`, or `limits.dimension` in the `[limits]` table.
    pub name: &'static str,
    /// Parses a flag's or a variable's text into the key's field of a layer;
    /// the error says what a value looks like ("a whole number").
    parse: fn(&mut Settings, &OsStr) -> Result<(), String>,
    /// The key's field of a layer as a TOML value; `None` when not set there.
    toml: fn(&Settings) -> Option<String>,
}

/// A key's name: its field's, or the one given (`dimension as "limits.dimension"`).
macro_rules! key_name {
    ($field:ident) => {
        stringify!($field)
    };
    ($field:ident $name:literal) => {
        $name
    };
}

/// The [`KEYS`] table: one entry per field of [`Settings`] that every layer
/// can set, its text parsed and printed by the field type's [`Value`].
macro_rules! keys {
    ($($field:ident $(as $name:literal)?),* $(,)?) => {
        /// Every setting the environment and the flags can set, in the
        /// file's order: each top-level key of the file, then `limits.dimension`.
        pub const KEYS: &[Key] = &[$(Key {
            name: key_name!($field $($name)?),
            parse: |layer, text| {
                layer.$field = Some(Value::parse(text)?);
                Ok(())
            },
            toml: |layer| layer.$field.as_ref().map(Value::to_toml),
        }),*];
    };
}

keys!(
    data_dir,
    socket,
    socket_mode,
    allow_uids,
    max_clients,
    max_clients_per_uid,
    max_pending_handshakes,
    memory_budget_bytes,
    scratch_retain_bytes,
    fd_limit,
    fd_reserve,
    idle_timeout_ms,
    ring_bytes,
    max_ring_bytes,
    max_frame_bytes,
    handshake_timeout_ms,
    stalled_client_timeout_ms,
    max_bad_frames,
    spin_us,
    worker_threads,
    shutdown_timeout_ms,
    log,
    log_format,
    metrics_socket,
    fsync,
    wal_segment_bytes,
    checkpoint_wal_bytes,
    checkpoint_min_interval_ms,
    embedder,
    bm25_k1,
    bm25_b,
    stemming,
    duplicates,
    chunk_tokens,
    fusion_weights,
    cache_entries,
    cache_bytes,
    cache_semantic_threshold,
    breaker_failures,
    breaker_cool_down_ms,
    dimension as "limits.dimension",
);

/// A key of the file's `[limits]` table (`limits.max_batch`), and its value in [`Limits`].
pub type LimitKey = (&'static str, fn(&Limits) -> u64);

/// The keys of the file's `[limits]` table.
pub const LIMIT_KEYS: &[LimitKey] = &[
    ("limits.max_text_bytes", |l| l.max_text_bytes as u64),
    ("limits.max_tags", |l| l.max_tags as u64),
    ("limits.max_tag_bytes", |l| l.max_tag_bytes as u64),
    ("limits.max_name_bytes", |l| l.max_name_bytes as u64),
    ("limits.max_dimension", |l| u64::from(l.max_dimension)),
    ("limits.max_batch", |l| l.max_batch as u64),
    ("limits.max_k", |l| u64::from(l.max_k)),
    ("limits.max_forget_ids", |l| l.max_forget_ids as u64),
    ("limits.max_query_bytes", |l| l.max_query_bytes as u64),
    ("limits.dimension", |l| u64::from(l.dimension)),
];

/// A configuration that cannot be used. Each says which key and where it
/// was set; the display is one line.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The config file cannot be read, or is not TOML.
    #[error("config file {}{}: {reason}", path.display(), at_line(*line))]
    File {
        /// The file.
        path: PathBuf,
        /// Where the parser stopped, when it says.
        line: Option<usize>,
        /// What is wrong.
        reason: String,
    },
    /// The config file has a key no setting has.
    #[error("config file {}, line {line}: unknown key {key:?}{}", path.display(), in_parens(hint))]
    UnknownKey {
        /// The file.
        path: PathBuf,
        /// The key's line.
        line: usize,
        /// The key as written, `limits.` before a key of the `[limits]` table.
        key: String,
        /// The nearest known key (`did you mean "max_clients"?`), if one is near.
        hint: Option<String>,
    },
    /// A value in the config file has the wrong type.
    #[error("config file {}, line {line}: {key}: {reason}", path.display())]
    FileValue {
        /// The file.
        path: PathBuf,
        /// The value's line.
        line: usize,
        /// The key.
        key: String,
        /// What the parser expected.
        reason: String,
    },
    /// An environment variable's value cannot be parsed.
    #[error("{var}={value}: {reason}")]
    Env {
        /// The variable.
        var: String,
        /// Its value.
        value: String,
        /// `max_clients expects a whole number`.
        reason: String,
    },
    /// A flag's value cannot be parsed.
    #[error("{flag} {value}: {reason}")]
    Flag {
        /// The flag.
        flag: String,
        /// Its value.
        value: String,
        /// `max_clients expects a whole number`.
        reason: String,
    },
    /// A value is out of range (or not one of the values the key takes).
    #[error("invalid setting {name}: {reason}{}", places(origins))]
    Invalid {
        /// The setting.
        name: &'static str,
        /// Why.
        reason: String,
        /// Where the value (or, for a rule over several keys, each of them)
        /// was set; empty when every one is a default.
        origins: Vec<Origin>,
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
            env: Settings::default(),
        }
    }
}

impl Key {
    /// The key named `name` (`max_clients`, `limits.dimension`).
    pub fn named(name: &str) -> Option<&'static Key> {
        KEYS.iter().find(|key| key.name == name)
    }

    /// The key a flag sets: `--max-clients` → `max_clients`, `--dimension` →
    /// `limits.dimension`, `--allow-uid` (or `--allow-uids`) → `allow_uids`.
    pub fn for_flag(flag: &str) -> Option<&'static Key> {
        let flag = if flag == "--allow-uids" { "--allow-uid" } else { flag };
        KEYS.iter().find(|key| key.flag() == flag)
    }

    /// Its environment variable: `NEXUS_MAX_CLIENTS`, `NEXUS_DIMENSION`.
    pub fn env_var(&self) -> String {
        format!("NEXUS_{}", self.name.trim_start_matches("limits.").to_ascii_uppercase())
    }

    /// Its flag: `--max-clients`, `--dimension`, and `--allow-uid` (repeatable).
    pub fn flag(&self) -> String {
        match self.name {
            "allow_uids" => "--allow-uid".to_owned(),
            name => format!("--{}", name.trim_start_matches("limits.").replace('_', "-")),
        }
    }

    /// Sets the key in `layer` from a flag's or a variable's text; the
    /// error reads `max_clients expects a whole number`.
    pub fn set(&self, layer: &mut Settings, text: &OsStr) -> Result<(), String> {
        (self.parse)(layer, text).map_err(|expected| format!("{} expects {expected}", self.name))
    }

    fn is_set(&self, layer: &Settings) -> bool {
        (self.toml)(layer).is_some()
    }
}

impl Environment {
    /// The process's `NEXUS_*` variables; see [`Environment::from_vars`].
    pub fn capture() -> Result<Self, ConfigError> {
        Self::from_vars(std::env::vars_os())
    }

    /// The `NEXUS_*` variables among `vars` (the process's, or a test's),
    /// each parsed as its flag is; an empty one counts as unset. A bad value is an error naming the
    /// variable (the first by name); a variable that names no setting is
    /// kept in `unknown`, for a warning.
    pub fn from_vars<K, V>(vars: impl IntoIterator<Item = (K, V)>) -> Result<Self, ConfigError>
    where
        K: Into<OsString>,
        V: Into<OsString>,
    {
        let mut ours: Vec<(String, OsString)> = (vars.into_iter())
            .filter_map(|(name, value)| {
                let (name, value) = (name.into().into_string().ok()?, value.into());
                // Empty counts as unset, as `NEXUS_SOCKET=` does for clients.
                (name.starts_with(ENV_PREFIX) && !value.is_empty()).then_some((name, value))
            })
            .collect();
        ours.sort();
        let mut env = Environment::default();
        for (name, value) in ours {
            if let Some(key) = KEYS.iter().find(|key| key.env_var() == name) {
                key.set(&mut env.settings, &value).map_err(|reason| ConfigError::Env {
                    var: name.clone(),
                    value: value.to_string_lossy().into_owned(),
                    reason,
                })?;
            } else if name == CONFIG_ENV {
                env.config_file = Some(PathBuf::from(value));
            } else if !OTHER_ENV_VARS.contains(&name.as_str()) {
                let hint = env_hint(&name);
                env.unknown.push(UnknownVariable { name, hint });
            }
        }
        Ok(env)
    }

    /// One line per variable that names no setting, for the log at start.
    pub fn warnings(&self) -> impl Iterator<Item = String> + '_ {
        (self.unknown.iter()).map(|var| format!("ignoring {}: no such setting{}", var.name, in_parens(&var.hint)))
    }
}

impl Origin {
    /// The `--check-config` comment: `default`, `file:12`, `env NEXUS_SPIN_US`, `flag --spin-us`.
    pub fn comment(&self) -> String {
        match self {
            Origin::Default => "default".to_owned(),
            Origin::File { line, .. } => format!("file:{line}"),
            Origin::Env(var) => format!("env {var}"),
            Origin::Flag(flag) => format!("flag {flag}"),
        }
    }

    /// What an error says about it: `set in F, line L`, `set by NEXUS_X`,
    /// `set by --x`; nothing for a default.
    fn set_by(&self) -> Option<String> {
        match self {
            Origin::Default => None,
            Origin::File { path, line } => Some(format!("set in {}, line {line}", path.display())),
            Origin::Env(name) | Origin::Flag(name) => Some(format!("set by {name}")),
        }
    }
}

impl Origins {
    /// Where `key`'s value came from.
    pub fn of(&self, key: &str) -> Origin {
        self.0.get(key).cloned().unwrap_or(Origin::Default)
    }

    /// Records `origin(key)` for every key `layer` sets.
    fn note(&mut self, layer: &Settings, origin: impl Fn(&Key) -> Origin) {
        for key in KEYS.iter().filter(|key| key.is_set(layer)) {
            self.0.insert(key.name, origin(key));
        }
    }

    /// `error` with the places its key (or each of its keys, `a/b`) was set.
    fn attach(&self, mut error: ConfigError) -> ConfigError {
        if let ConfigError::Invalid { name, origins, .. } = &mut error {
            let set = name
                .split('/')
                .map(|key| self.of(key))
                .filter(|o| *o != Origin::Default);
            origins.extend(set);
        }
        error
    }
}

impl Config {
    /// Defaults, then the config file (if any), then the environment's
    /// layer, then the flags', validated; the configuration remembers the
    /// file and the environment for SIGHUP.
    pub fn build(config_file: Option<&Path>, env: &Settings, flags: &Settings) -> Result<Self, ConfigError> {
        Self::build_explained(config_file, env, flags).map(|(config, _)| config)
    }

    /// [`Config::build`], and where each key's value came from.
    pub fn build_explained(
        config_file: Option<&Path>,
        env: &Settings,
        flags: &Settings,
    ) -> Result<(Self, Origins), ConfigError> {
        let mut config = Config {
            config_file: config_file.map(Path::to_path_buf),
            env: env.clone(),
            ..Config::default()
        };
        let mut origins = Origins::default();
        if let Some(path) = config_file {
            let file = read_file(path)?;
            for (key, line) in file.lines {
                let path = path.to_path_buf();
                origins.0.insert(key, Origin::File { path, line });
            }
            config.layer(&file.settings).map_err(|e| origins.attach(e))?;
        }
        origins.note(env, |key| Origin::Env(key.env_var()));
        config.layer(env).map_err(|e| origins.attach(e))?;
        origins.note(flags, |key| Origin::Flag(key.flag()));
        if flags.salvage_wal.is_some() {
            origins
                .0
                .insert("salvage_wal", Origin::Flag("--salvage-wal".to_owned()));
        }
        config.layer(flags).map_err(|e| origins.attach(e))?;
        config.validate().map_err(|e| origins.attach(e))?;
        Ok((config, origins))
    }

    /// The configuration as a config file: every key with its value and a
    /// comment saying where the value came from (`# default`, `# file:12`,
    /// `# env NEXUS_SPIN_US`, `# flag --spin-us`). Read back as a config
    /// file it gives this same configuration. `nexusd --check-config` prints it.
    pub fn to_toml(&self, origins: &Origins) -> String {
        let layer = self.to_settings();
        let mut out = TomlOut::default();
        out.comment("nexusd's effective configuration (nexusd --check-config): a valid config file.");
        out.comment("Precedence: defaults < config file < NEXUS_* environment < flags.");
        match &self.config_file {
            Some(path) => out.comment(&format!("Config file: {} (file:LINE below).", path.display())),
            None => out.comment("Config file: none."),
        }
        out.blank();
        for key in KEYS.iter().filter(|key| !key.name.starts_with("limits.")) {
            let origin = origins.of(key.name).comment();
            match (key.toml)(&layer) {
                Some(value) => out.value(key.name, &value, &origin),
                None => out.unset(key.name, unset_meaning(key.name), &origin),
            }
        }
        if self.salvage_wal {
            out.comment("salvage_wal: on for this start (--salvage-wal, a flag only: the file cannot set it)");
        }
        out.blank();
        out.table("limits");
        for (name, value) in LIMIT_KEYS {
            let key = name.trim_start_matches("limits.");
            out.value(key, &value(&self.limits).to_string(), &origins.of(name).comment());
        }
        out.finish()
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

    /// A layer that gives this configuration (the inverse of `layer`):
    /// every setting set, but the options that are unset here.
    fn to_settings(&self) -> Settings {
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        let recall = &self.recall;
        let (cache, tuning) = (&self.pipeline.cache, &self.pipeline.tuning);
        Settings {
            data_dir: Some(self.data_dir.clone()),
            socket: Some(self.socket_path.clone()),
            socket_mode: Some(format!("{:o}", self.socket_mode)),
            allow_uids: Some(self.allowed_uids.clone()),
            max_clients: Some(self.max_clients),
            max_clients_per_uid: self.max_clients_per_uid,
            max_pending_handshakes: Some(self.max_pending_handshakes),
            memory_budget_bytes: Some(self.memory_budget_bytes),
            scratch_retain_bytes: Some(self.scratch_retain_bytes),
            fd_limit: self.fd_limit,
            fd_reserve: Some(self.fd_reserve),
            idle_timeout_ms: Some(ms(self.idle_timeout)),
            ring_bytes: Some(self.default_ring_bytes),
            max_ring_bytes: Some(self.max_ring_bytes),
            max_frame_bytes: Some(self.max_frame_bytes),
            handshake_timeout_ms: Some(ms(self.handshake_timeout)),
            stalled_client_timeout_ms: Some(ms(self.stalled_client_timeout)),
            max_bad_frames: Some(self.max_bad_frames),
            spin_us: Some(u64::try_from(self.spin.as_micros()).unwrap_or(u64::MAX)),
            worker_threads: Some(self.worker_threads),
            shutdown_timeout_ms: Some(ms(self.shutdown_timeout)),
            log: Some(self.log.clone()),
            log_format: Some(self.log_format.name().to_owned()),
            metrics_socket: self.metrics_socket.clone(),
            fsync: Some(match self.fsync {
                FsyncPolicy::Always => "always".to_owned(),
                FsyncPolicy::Interval(every) => format!("interval:{}", ms(every)),
                FsyncPolicy::Never => "never".to_owned(),
            }),
            wal_segment_bytes: Some(self.wal_segment_bytes),
            checkpoint_wal_bytes: Some(self.checkpoint_wal_bytes),
            checkpoint_min_interval_ms: Some(ms(self.checkpoint_min_interval)),
            limits: Some(self.limits.clone()),
            embedder: Some(embedder_name(&recall.embedder)),
            bm25_k1: Some(recall.lexical.k1),
            bm25_b: Some(recall.lexical.b),
            stemming: Some(recall.lexical.tokenizer.stemming),
            duplicates: Some(duplicates_name(recall.duplicates).to_owned()),
            chunk_tokens: Some(recall.chunk_tokens),
            fusion_weights: Some(weights_text(&tuning.weights)),
            cache_entries: Some(cache.max_entries),
            cache_bytes: Some(cache.max_bytes),
            cache_semantic_threshold: Some(cache.semantic_threshold),
            breaker_failures: Some(tuning.breaker.failures_to_open),
            breaker_cool_down_ms: Some(tuning.breaker.cool_down_ms),
            salvage_wal: Some(self.salvage_wal),
            dimension: None,
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
        set(&mut self.limits.dimension, s.dimension);
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
        self.validate_fds()?;
        self.validate_timeouts()?;
        self.validate_store()?;
        validate_limits(&self.limits, self.max_frame_bytes)?;
        self.validate_recall()?;
        self.validate_pipeline()?;
        if let Some(metrics) = &self.metrics_socket {
            crate::telemetry::Endpoint::parse(metrics, &self.socket_path)
                .map_err(|e| invalid("metrics_socket", e.to_string()))?;
        }
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

    /// RLIMIT_NOFILE as the start sets it: `fd_limit` within the hard
    /// limit, and `fd_reserve` at most half of it (the rest is for clients).
    fn validate_fds(&self) -> Result<(), ConfigError> {
        use nix::sys::resource::{Resource, getrlimit};
        // Without the hard limit there is nothing to check against; the
        // start itself then fails to read it, and says so.
        let Ok((_, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
            return Ok(());
        };
        let limit = self.fd_limit.unwrap_or(hard);
        if limit > hard {
            return Err(invalid(
                "fd_limit",
                format!("{limit} exceeds the hard RLIMIT_NOFILE of {hard}"),
            ));
        }
        if self.fd_reserve > limit / 2 {
            let reason = format!("{} is more than half of the fd limit {limit}", self.fd_reserve);
            return Err(invalid("fd_reserve", reason));
        }
        Ok(())
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
    ConfigError::Invalid {
        name,
        reason,
        origins: Vec::new(),
    }
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

/// The prefix of the environment's settings.
const ENV_PREFIX: &str = "NEXUS_";
/// The variable naming the config file when `--config` is absent.
pub const CONFIG_ENV: &str = "NEXUS_CONFIG";

/// A config file's layer, and the line of each key it sets.
struct FileLayer {
    settings: Settings,
    lines: Vec<(&'static str, usize)>,
}

/// A known key of a config file: where it is, where its value is.
struct FileKey {
    /// As in [`KEYS`] and [`LIMIT_KEYS`], or `limits` for the table itself.
    name: &'static str,
    line: usize,
    value: std::ops::Range<usize>,
}

/// Reads a config file: the keys are checked first (an unknown one is
/// named with its line and the nearest known key), then the values.
fn read_file(path: &Path) -> Result<FileLayer, ConfigError> {
    let file_error = |line, reason| ConfigError::File {
        path: path.to_path_buf(),
        line,
        reason,
    };
    let text = std::fs::read_to_string(path).map_err(|e| file_error(None, e.to_string()))?;
    let table = toml::de::DeTable::parse(&text).map_err(|e| {
        let line = e.span().map(|span| line_of(&text, span.start));
        file_error(line, one_line(e.message()))
    })?;
    let keys = file_keys(path, &text, table.get_ref())?;
    let settings = Settings::deserialize(toml::de::Deserializer::from(table)).map_err(|e| {
        let at = e.span().map_or(0, |span| span.start);
        // The innermost key whose value holds the error: `limits.max_k`, not `limits`.
        let key = (keys.iter().filter(|key| key.value.contains(&at))).min_by_key(|key| key.value.len());
        match key {
            Some(key) => ConfigError::FileValue {
                path: path.to_path_buf(),
                line: line_of(&text, at),
                key: key.name.to_owned(),
                reason: one_line(e.message()),
            },
            None => file_error(e.span().map(|_| line_of(&text, at)), one_line(e.message())),
        }
    })?;
    let lines = (keys.iter().filter(|key| key.name != "limits")).map(|key| (key.name, key.line));
    Ok(FileLayer {
        lines: lines.collect(),
        settings,
    })
}

/// The keys of a parsed file, each known; else the first unknown one (by line).
fn file_keys(path: &Path, text: &str, table: &toml::de::DeTable<'_>) -> Result<Vec<FileKey>, ConfigError> {
    let mut known = Vec::new();
    let mut unknown = Vec::new();
    for (key, value) in table.iter() {
        let (name, line) = (key.get_ref().as_ref(), line_of(text, key.span().start));
        let table_keys = (name == "limits").then(|| value.get_ref().as_table()).flatten();
        if let Some(name) = file_key_name(name) {
            known.push(FileKey {
                name,
                line,
                value: value.span(),
            });
        } else {
            unknown.push((line, name.to_owned(), top_level_hint(name)));
        }
        for (key, value) in table_keys.into_iter().flat_map(|limits| limits.iter()) {
            let (name, line) = (key.get_ref().as_ref(), line_of(text, key.span().start));
            let full = format!("limits.{name}");
            match LIMIT_KEYS.iter().find(|(known, _)| *known == full) {
                Some((name, _)) => known.push(FileKey {
                    name,
                    line,
                    value: value.span(),
                }),
                None => unknown.push((line, full, limits_hint(name))),
            }
        }
    }
    match unknown.into_iter().min_by_key(|(line, ..)| *line) {
        Some((line, key, hint)) => Err(ConfigError::UnknownKey {
            path: path.to_path_buf(),
            line,
            key,
            hint,
        }),
        None => Ok(known),
    }
}

/// `name` as a known top-level key of the file.
fn file_key_name(name: &str) -> Option<&'static str> {
    if name == "limits" {
        return Some("limits");
    }
    KEYS.iter()
        .map(|key| key.name)
        .find(|known| *known == name && !known.starts_with("limits."))
}

/// What an unknown top-level key of the file probably meant.
fn top_level_hint(name: &str) -> Option<String> {
    if name == "salvage_wal" {
        return Some("salvage_wal is a flag only (--salvage-wal), for one start".to_owned());
    }
    let in_limits = format!("limits.{name}");
    if LIMIT_KEYS.iter().any(|(key, _)| *key == in_limits) {
        return Some(format!("{name} belongs in the [limits] table"));
    }
    let top_level = (KEYS.iter().map(|key| key.name)).filter(|key| !key.starts_with("limits."));
    nearest(name, top_level.chain(["limits"])).map(|known| format!("did you mean {known:?}?"))
}

/// What an unknown key of the `[limits]` table probably meant.
fn limits_hint(name: &str) -> Option<String> {
    if file_key_name(name).is_some() {
        return Some(format!("{name} is a top-level key: put it above the [limits] header"));
    }
    let limits = LIMIT_KEYS.iter().map(|(key, _)| key.trim_start_matches("limits."));
    nearest(name, limits).map(|known| format!("did you mean \"limits.{known}\"?"))
}

/// What an environment variable that names no setting probably meant.
fn env_hint(name: &str) -> Option<String> {
    let key = name.trim_start_matches(ENV_PREFIX).to_ascii_lowercase();
    if key == "salvage_wal" {
        return Some("salvage_wal is a flag only (--salvage-wal), for one start".to_owned());
    }
    let in_limits = format!("limits.{key}");
    if key == "limits" || LIMIT_KEYS.iter().any(|(known, _)| *known == in_limits) {
        return Some("the [limits] table is set in the config file; NEXUS_DIMENSION sets limits.dimension".to_owned());
    }
    let vars: Vec<String> = (KEYS.iter().map(Key::env_var))
        .chain([CONFIG_ENV.to_owned()])
        .chain(OTHER_ENV_VARS.iter().map(|var| (*var).to_owned()))
        .collect();
    nearest(name, vars.iter().map(String::as_str)).map(|known| format!("did you mean {known}?"))
}

/// The candidate nearest to `word` by edit distance, if it is near enough
/// to be a typo of it (a third of the word's letters, at least 2).
fn nearest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let near_enough = (word.chars().count() / 3).max(2);
    (candidates.into_iter())
        .map(|candidate| (edit_distance(word, candidate), candidate))
        .filter(|(distance, _)| *distance <= near_enough)
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, candidate)| candidate)
}

/// Levenshtein distance over chars (ASCII case folded).
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().map(|c| c.to_ascii_lowercase()).collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().map(|c| c.to_ascii_lowercase()).enumerate() {
        let mut current = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let substitute = previous[j] + usize::from(ca != *cb);
            current.push(substitute.min(previous[j + 1] + 1).min(current[j] + 1));
        }
        previous = current;
    }
    previous[b.len()]
}

/// The 1-based line of byte `offset` in `text`.
fn line_of(text: &str, offset: usize) -> usize {
    let before = text.as_bytes().get(..offset).unwrap_or(text.as_bytes());
    before.iter().filter(|&&byte| byte == b'\n').count() + 1
}

/// A parser's message on one line.
fn one_line(message: &str) -> String {
    let lines: Vec<&str> = message.lines().map(str::trim).filter(|line| !line.is_empty()).collect();
    lines.join("; ")
}

/// `, line L` when the line is known.
fn at_line(line: Option<usize>) -> String {
    line.map(|line| format!(", line {line}")).unwrap_or_default()
}

/// ` (hint)` when there is one.
fn in_parens(hint: &Option<String>) -> String {
    hint.as_ref().map(|hint| format!(" ({hint})")).unwrap_or_default()
}

/// ` (set in F, line L; set by --x)`: where an invalid value was set.
fn places(origins: &[Origin]) -> String {
    let places: Vec<String> = origins.iter().filter_map(Origin::set_by).collect();
    if places.is_empty() {
        return String::new();
    }
    format!(" ({})", places.join("; "))
}

/// What an option left unset means, for `--check-config`.
fn unset_meaning(key: &str) -> &'static str {
    match key {
        "max_clients_per_uid" => "all of max_clients with one uid allowed, half of them with several",
        "fd_limit" => "the hard RLIMIT_NOFILE",
        "metrics_socket" => "no metrics endpoint",
        _ => "unset",
    }
}

/// `duplicates` as the configuration writes it.
fn duplicates_name(policy: Option<crate::preprocess::dedup::DuplicatePolicy>) -> &'static str {
    use crate::preprocess::dedup::DuplicatePolicy;
    match policy {
        None => "off",
        Some(DuplicatePolicy::Keep) => "keep",
        Some(DuplicatePolicy::Skip) => "skip",
        Some(DuplicatePolicy::Merge) => "merge",
    }
}

/// `embedder` as the configuration writes it.
fn embedder_name(choice: &crate::recall::setup::EmbedderChoice) -> String {
    use crate::recall::setup::EmbedderChoice;
    match choice {
        EmbedderChoice::Builtin => "builtin".to_owned(),
        EmbedderChoice::Hashing => "hashing".to_owned(),
        EmbedderChoice::Dir(dir) => dir.to_string_lossy().into_owned(),
    }
}

/// Every fusion weight, `factor=weight,...`, as `fusion_weights` takes it.
fn weights_text(weights: &crate::recall::fusion::Weights) -> String {
    let factors = crate::recall::fusion::Factor::ALL.into_iter();
    let parts: Vec<String> = factors.map(|f| format!("{}={}", f.name(), weights.get(f))).collect();
    parts.join(",")
}

/// A TOML document written line by line, comments aligned.
#[derive(Default)]
struct TomlOut {
    lines: Vec<(String, Option<String>)>,
}

impl TomlOut {
    /// Comments start here when the lines before are short enough.
    const COMMENT_COLUMN: usize = 40;

    fn comment(&mut self, text: &str) {
        self.lines.push((format!("# {text}"), None));
    }

    fn blank(&mut self) {
        self.lines.push((String::new(), None));
    }

    fn table(&mut self, name: &str) {
        self.lines.push((format!("[{name}]"), None));
    }

    fn value(&mut self, key: &str, value: &str, origin: &str) {
        self.lines.push((format!("{key} = {value}"), Some(origin.to_owned())));
    }

    fn unset(&mut self, key: &str, meaning: &str, origin: &str) {
        self.lines
            .push((format!("# {key} unset: {meaning}"), Some(origin.to_owned())));
    }

    fn finish(self) -> String {
        let mut out = String::new();
        for (line, origin) in self.lines {
            out.push_str(&line);
            if let Some(origin) = origin {
                let pad = Self::COMMENT_COLUMN.saturating_sub(line.chars().count()).max(2);
                out.push_str(&" ".repeat(pad));
                out.push_str("# ");
                out.push_str(&origin);
            }
            out.push('\n');
        }
        out
    }
}

/// A setting's value as a flag or an environment variable writes it
/// (parsed the same way for both), and as TOML writes it.
trait Value: Sized {
    /// Parses a flag's or a variable's text; the error says what a value
    /// looks like ("a whole number").
    fn parse(text: &OsStr) -> Result<Self, String>;

    /// The value as TOML.
    fn to_toml(&self) -> String;
}

macro_rules! whole_number_value {
    ($($t:ty),*) => {$(
        impl Value for $t {
            fn parse(text: &OsStr) -> Result<Self, String> {
                let text = text.to_str().unwrap_or_default();
                text.parse().map_err(|e: std::num::ParseIntError| match e.kind() {
                    std::num::IntErrorKind::PosOverflow => format!("a whole number up to {}", <$t>::MAX),
                    _ => "a whole number".to_owned(),
                })
            }

            fn to_toml(&self) -> String {
                self.to_string()
            }
        }
    )*};
}

whole_number_value!(u32, u64, usize);

impl Value for f32 {
    fn parse(text: &OsStr) -> Result<Self, String> {
        let text = text.to_str().unwrap_or_default();
        text.parse().map_err(|_| "a number such as 0.5".to_owned())
    }

    /// `{:?}` keeps the point (`1.0`, not `1`) so TOML reads a float back.
    fn to_toml(&self) -> String {
        format!("{self:?}")
    }
}

impl Value for bool {
    fn parse(text: &OsStr) -> Result<Self, String> {
        match text.to_str() {
            Some("true") => Ok(true),
            Some("false") => Ok(false),
            _ => Err("true or false".to_owned()),
        }
    }

    fn to_toml(&self) -> String {
        self.to_string()
    }
}

impl Value for String {
    fn parse(text: &OsStr) -> Result<Self, String> {
        text.to_str().map(str::to_owned).ok_or_else(|| "UTF-8 text".to_owned())
    }

    fn to_toml(&self) -> String {
        toml_string(self)
    }
}

impl Value for PathBuf {
    fn parse(text: &OsStr) -> Result<Self, String> {
        Ok(PathBuf::from(text))
    }

    /// A path that is not UTF-8 cannot be written in TOML; its lossy form
    /// is the best `--check-config` can show.
    fn to_toml(&self) -> String {
        toml_string(&self.to_string_lossy())
    }
}

impl Value for Vec<u32> {
    fn parse(text: &OsStr) -> Result<Self, String> {
        let expected = || "comma-separated uids such as 1000,1001".to_owned();
        let text = text.to_str().ok_or_else(expected)?;
        let items = text.split(',').map(str::trim).filter(|item| !item.is_empty());
        items.map(|uid| uid.parse().map_err(|_| expected())).collect()
    }

    fn to_toml(&self) -> String {
        let items: Vec<String> = self.iter().map(u32::to_string).collect();
        format!("[{}]", items.join(", "))
    }
}

/// `text` as a TOML basic string: quotes, backslashes and control
/// characters escaped.
fn toml_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
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
        let config = Config::build(Some(&file), &Settings::default(), &flags).unwrap();
        assert_eq!(config.max_bad_frames, 3);
        assert_eq!(config.spin, Duration::from_micros(20));
        assert_eq!(config.fsync, FsyncPolicy::Interval(Duration::from_millis(5)));
        assert_eq!(config.limits.max_batch, 9);
        assert_eq!(config.limits.max_k, Limits::default().max_k);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// The error of building over a config file holding `text`, with the
    /// file's path written as `F`.
    #[track_caller]
    fn file_error(text: &str) -> String {
        let dir = crate::testing::TempDir::new("config-error");
        let file = dir.join("nexusd.toml");
        std::fs::write(&file, text).unwrap();
        let error = Config::build(Some(&file), &Settings::default(), &Settings::default()).unwrap_err();
        error.to_string().replace(&file.display().to_string(), "F")
    }

    #[test]
    fn a_value_of_the_wrong_type_is_named_with_its_key_and_line() {
        let error = file_error("spin_us = 5\nmax_bad_frames = \"many\"\n");
        assert_eq!(
            error,
            "config file F, line 2: max_bad_frames: invalid type: string \"many\", expected u32"
        );
        let error = file_error("[limits]\nmax_batch = 9\nmax_k = -1\n");
        assert!(error.starts_with("config file F, line 3: limits.max_k: "), "{error}");
        assert!(!error.contains('\n'), "one line: {error}");
    }

    #[test]
    fn a_file_that_is_not_toml_is_named_with_its_line() {
        let error = file_error("spin_us = 5\nmax_clients 8\n");
        assert!(error.starts_with("config file F, line 2: "), "{error}");
        assert!(!error.contains('\n'), "one line: {error}");
    }

    #[test]
    fn an_unknown_key_is_named_with_its_line_and_the_nearest_known_key() {
        assert_eq!(
            file_error("spin_us = 5\n\nmax_client = 8\n"),
            "config file F, line 3: unknown key \"max_client\" (did you mean \"max_clients\"?)"
        );
        assert_eq!(
            file_error("[limits]\nmax_bach = 9\n"),
            "config file F, line 2: unknown key \"limits.max_bach\" (did you mean \"limits.max_batch\"?)"
        );
        assert_eq!(
            file_error("[limits]\nmax_batch = 9\nmax_clients = 8\n"),
            "config file F, line 3: unknown key \"limits.max_clients\" \
             (max_clients is a top-level key: put it above the [limits] header)"
        );
        assert_eq!(
            file_error("max_batch = 9\n"),
            "config file F, line 1: unknown key \"max_batch\" (max_batch belongs in the [limits] table)"
        );
        assert_eq!(
            file_error("frobnicate = 1\n"),
            "config file F, line 1: unknown key \"frobnicate\""
        );
        assert!(file_error("salvage_wal = true\n").contains("a flag only"));
    }

    #[test]
    fn an_invalid_value_says_where_it_was_set() {
        assert_eq!(
            file_error("\nmax_clients = 0\n"),
            "invalid setting max_clients: 0 is outside 1..=65536 connections (set in F, line 2)"
        );
        assert_eq!(
            file_error("[limits]\nmax_batch = 0\n"),
            "invalid setting limits.max_batch: 0 is outside 1..=1000000 memories (set in F, line 2)"
        );
        assert!(file_error("fsync = \"sometimes\"\n").ends_with("(set in F, line 1)"));
        let env = Environment::from_vars([("NEXUS_MAX_CLIENTS", "0")]).unwrap();
        let error = Config::build(None, &env.settings, &Settings::default()).unwrap_err();
        assert_eq!(
            error.to_string(),
            "invalid setting max_clients: 0 is outside 1..=65536 connections (set by NEXUS_MAX_CLIENTS)"
        );
        let env = Environment::from_vars([("NEXUS_DIMENSION", "5000")]).unwrap();
        let error = Config::build(None, &env.settings, &Settings::default()).unwrap_err();
        assert!(error.to_string().ends_with("(set by NEXUS_DIMENSION)"), "{error}");
    }

    #[test]
    fn a_bad_environment_value_names_the_variable_and_the_key() {
        let error = Environment::from_vars([("NEXUS_MAX_CLIENTS", "abc")]).unwrap_err();
        assert_eq!(
            error.to_string(),
            "NEXUS_MAX_CLIENTS=abc: max_clients expects a whole number"
        );
        let error = Environment::from_vars([("NEXUS_MAX_BAD_FRAMES", "5000000000")]).unwrap_err();
        assert_eq!(
            error.to_string(),
            "NEXUS_MAX_BAD_FRAMES=5000000000: max_bad_frames expects a whole number up to 4294967295"
        );
        let error = Environment::from_vars([("NEXUS_STEMMING", "yes")]).unwrap_err();
        assert_eq!(error.to_string(), "NEXUS_STEMMING=yes: stemming expects true or false");
        let error = Environment::from_vars([("NEXUS_ALLOW_UIDS", "1000;1001")]).unwrap_err();
        assert!(error.to_string().contains("comma-separated uids"), "{error}");
    }

    #[test]
    fn the_environment_takes_every_key_as_its_flag_does() {
        let env = Environment::from_vars([
            ("NEXUS_ALLOW_UIDS", "1000, 1001"),
            ("NEXUS_SOCKET", "/tmp/n.sock"),
            ("NEXUS_BM25_B", "0.5"),
            ("NEXUS_STEMMING", "false"),
            ("NEXUS_FSYNC", "interval:5"),
            ("NEXUS_DIMENSION", "384"),
            ("NEXUS_CONFIG", "/etc/nexus/nexusd.toml"),
            ("NEXUS_LOG", ""),
            ("HOME", "/home/x"),
        ])
        .unwrap();
        assert_eq!(env.config_file, Some(PathBuf::from("/etc/nexus/nexusd.toml")));
        assert_eq!(env.settings.log, None, "empty counts as unset");
        let config = Config::build(None, &env.settings, &Settings::default()).unwrap();
        assert_eq!(config.allowed_uids, vec![1000, 1001]);
        assert_eq!(config.socket_path, PathBuf::from("/tmp/n.sock"));
        assert_eq!(config.recall.lexical.b, 0.5);
        assert!(!config.recall.lexical.tokenizer.stemming);
        assert_eq!(config.fsync, FsyncPolicy::Interval(Duration::from_millis(5)));
        assert_eq!(config.limits.dimension, 384);
        assert!(env.unknown.is_empty(), "{:?}", env.unknown);
    }

    #[test]
    fn unknown_variables_are_warnings_with_the_nearest_name_and_others_are_left_alone() {
        let env = Environment::from_vars([
            ("NEXUS_MAX_CLIENT", "8"),
            ("NEXUS_MAX_BATCH", "8"),
            ("NEXUS_FROBNICATE", "1"),
            ("NEXUS_NAMESPACE", "work"),
            ("NEXUS_DAEMON_UID", "1000"),
            ("NEXUS_TEST_FAULTS", "dense=panic"),
            ("NEXUS_FAULT_INJECT", "enospc"),
            ("NEXUS_TEST_WEDGE_ON_SIGUSR2", "1"),
        ])
        .unwrap();
        let warnings: Vec<String> = env.warnings().collect();
        assert_eq!(
            warnings,
            [
                "ignoring NEXUS_FROBNICATE: no such setting",
                "ignoring NEXUS_MAX_BATCH: no such setting (the [limits] table is set in the config file; \
                 NEXUS_DIMENSION sets limits.dimension)",
                "ignoring NEXUS_MAX_CLIENT: no such setting (did you mean NEXUS_MAX_CLIENTS?)",
            ]
        );
        assert_eq!(env.settings, Settings::default());
    }

    /// A layer's precedence: the file under the environment under the flags.
    #[test]
    fn the_environment_wins_over_the_file_and_the_flags_over_both() {
        let dir = crate::testing::TempDir::new("config-precedence");
        let file = dir.join("nexusd.toml");
        std::fs::write(&file, "spin_us = 5\nmax_bad_frames = 3\nidle_timeout_ms = 1000\n").unwrap();
        let env = Environment::from_vars([("NEXUS_SPIN_US", "6"), ("NEXUS_MAX_BAD_FRAMES", "4")]).unwrap();
        let flags = Settings {
            spin_us: Some(7),
            ..Settings::default()
        };
        let (config, origins) = Config::build_explained(Some(&file), &env.settings, &flags).unwrap();
        assert_eq!(config.spin, Duration::from_micros(7));
        assert_eq!(config.max_bad_frames, 4);
        assert_eq!(config.idle_timeout, Duration::from_millis(1000));
        assert_eq!(origins.of("spin_us"), Origin::Flag("--spin-us".into()));
        assert_eq!(origins.of("max_bad_frames"), Origin::Env("NEXUS_MAX_BAD_FRAMES".into()));
        let line3 = Origin::File {
            path: file.clone(),
            line: 3,
        };
        assert_eq!(origins.of("idle_timeout_ms"), line3);
        assert_eq!(config.env, env.settings, "kept for SIGHUP");
    }

    /// Before: `--dimension` replaced the file's whole `[limits]` table
    /// with the defaults and that one dimension.
    #[test]
    fn dimension_from_a_flag_keeps_the_files_other_limits() {
        let dir = crate::testing::TempDir::new("config-dimension");
        let file = dir.join("nexusd.toml");
        std::fs::write(&file, "[limits]\nmax_batch = 9\n").unwrap();
        let flags = Settings {
            dimension: Some(384),
            ..Settings::default()
        };
        let config = Config::build(Some(&file), &Settings::default(), &flags).unwrap();
        assert_eq!((config.limits.max_batch, config.limits.dimension), (9, 384));
    }

    /// `--check-config`'s document read back as a config file gives the
    /// same configuration, for the defaults and for a value of every kind
    /// set away from its default.
    #[test]
    fn the_effective_configuration_reads_back_as_the_same_configuration() {
        let dir = crate::testing::TempDir::new("config-roundtrip");
        let file = dir.join("nexusd.toml");
        std::fs::write(
            &file,
            "socket_mode = \"660\"\nallow_uids = [7, 8]\nfsync = \"interval:5\"\nlog = \"nexus_daemon=debug\"\n\
             embedder = \"hashing\"\nbm25_k1 = 1.0\nduplicates = \"off\"\nfusion_weights = \"date=0.5\"\n\
             fd_limit = 256\nmax_clients_per_uid = 3\nmetrics_socket = \"/tmp/m \\\"q\\\".sock\"\n\
             log_format = \"json\"\nstemming = false\n[limits]\nmax_batch = 9\n",
        )
        .unwrap();
        for config_file in [None, Some(file.as_path())] {
            let none = Settings::default();
            let (config, origins) = Config::build_explained(config_file, &none, &none).unwrap();
            let printed = config.to_toml(&origins);
            let again = dir.join("again.toml");
            std::fs::write(&again, &printed).unwrap();
            let (reread, origins) = Config::build_explained(Some(&again), &none, &none).unwrap();
            let values = |text: &str| -> Vec<String> {
                let lines = text.lines().filter(|line| !line.starts_with('#'));
                lines
                    .map(|line| line.split("  #").next().unwrap_or(line).trim().to_owned())
                    .collect()
            };
            assert_eq!(values(&reread.to_toml(&origins)), values(&printed), "{printed}");
        }
    }

    #[test]
    fn the_effective_configuration_says_where_each_value_came_from() {
        let dir = crate::testing::TempDir::new("config-origins");
        let file = dir.join("nexusd.toml");
        std::fs::write(&file, "# a comment\nmax_clients = 8\n[limits]\nmax_k = 50\n").unwrap();
        let env = Environment::from_vars([("NEXUS_SPIN_US", "6")]).unwrap();
        let flags = Settings {
            max_bad_frames: Some(2),
            ..Settings::default()
        };
        let (config, origins) = Config::build_explained(Some(&file), &env.settings, &flags).unwrap();
        let printed = config.to_toml(&origins);
        let line = |key: &str| {
            let found = printed.lines().find(|line| line.starts_with(&format!("{key} = ")));
            found.unwrap_or_else(|| panic!("no {key} in {printed}")).to_owned()
        };
        assert!(line("max_clients").ends_with("# file:2"), "{printed}");
        assert!(line("max_k").ends_with("# file:4"), "{printed}");
        assert!(line("spin_us").ends_with("# env NEXUS_SPIN_US"), "{printed}");
        assert!(line("max_bad_frames").ends_with("# flag --max-bad-frames"), "{printed}");
        assert!(line("idle_timeout_ms").ends_with("# default"), "{printed}");
        for key in KEYS.iter().filter(|key| !key.name.starts_with("limits.")) {
            let present = printed.lines().any(|line| {
                line.starts_with(&format!("{} = ", key.name)) || line.starts_with(&format!("# {} unset", key.name))
            });
            assert!(present, "{} missing from {printed}", key.name);
        }
    }

    /// The key tables and the types serde reads the file into list the
    /// same keys (serde names every field when it refuses an unknown one),
    /// so a new setting cannot miss its variable, flag or `--check-config` line.
    #[test]
    fn the_key_tables_cover_every_field_the_file_accepts() {
        let fields = |error: toml::de::Error| -> Vec<String> {
            let message = error.message().to_owned();
            let expected = message.split("expected one of").nth(1).unwrap_or_default().to_owned();
            expected.split('`').skip(1).step_by(2).map(str::to_owned).collect()
        };
        let mut file_keys = fields(toml::from_str::<Settings>("frobnicate = 1").unwrap_err());
        let mut table_keys: Vec<String> = (KEYS.iter().map(|key| key.name.to_owned()))
            .filter(|name| !name.starts_with("limits."))
            .chain(["limits".to_owned()])
            .collect();
        file_keys.sort();
        table_keys.sort();
        assert_eq!(file_keys, table_keys);
        let mut limits = fields(toml::from_str::<Limits>("frobnicate = 1").unwrap_err());
        let mut limit_keys: Vec<String> = (LIMIT_KEYS
            .iter()
            .map(|(name, _)| name.trim_start_matches("limits.").to_owned()))
        .collect();
        limits.sort();
        limit_keys.sort();
        assert_eq!(limits, limit_keys);
    }

    /// docs/configuration.md has a row for every key, with its variable and flag.
    #[test]
    fn the_configuration_reference_lists_every_key() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/configuration.md");
        let doc = std::fs::read_to_string(&path).unwrap();
        let rows: Vec<&str> = doc.lines().filter(|line| line.starts_with("| `")).collect();
        for key in KEYS {
            let in_file = key.name.trim_start_matches("limits.");
            let row = rows.iter().find(|row| row.starts_with(&format!("| `{in_file}`")));
            let row = row.unwrap_or_else(|| panic!("no row for {} in {}", key.name, path.display()));
            for spelling in [key.env_var(), key.flag()] {
                assert!(row.contains(&format!("`{spelling}")), "{spelling} missing from {row}");
            }
        }
        for (name, _) in LIMIT_KEYS {
            let in_file = name.trim_start_matches("limits.");
            assert!(
                rows.iter().any(|row| row.starts_with(&format!("| `{in_file}`"))),
                "{name}"
            );
        }
        for var in OTHER_ENV_VARS {
            assert!(doc.contains(var), "{var} missing from {}", path.display());
        }
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
            match Config::build(Some(&file), &Settings::default(), &Settings::default()) {
                Err(ConfigError::Invalid { name, reason, .. }) => {
                    assert_eq!(name, *key, "{text:?} was refused as {name}: {reason}")
                }
                other => panic!("{text:?} was not refused as {key}: {other:?}"),
            }
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_defaults_and_the_ends_of_each_range_are_accepted() {
        Config::build(None, &Settings::default(), &Settings::default()).expect("the defaults are valid");
        let edges = Settings {
            max_frame_bytes: Some(*FRAME_BYTES_RANGE.start()),
            handshake_timeout_ms: Some(*HANDSHAKE_TIMEOUT_MS.start()),
            spin_us: Some(MAX_SPIN_US),
            checkpoint_wal_bytes: Some(*CHECKPOINT_WAL_BYTES_RANGE.start()),
            max_bad_frames: Some(0),
            scratch_retain_bytes: Some(MIN_SCRATCH_RETAIN_BYTES),
            ..Settings::default()
        };
        Config::build(None, &Settings::default(), &edges).expect("the ends of the ranges are valid");
    }

    #[test]
    fn the_uid_share_defaults_to_half_the_clients_when_several_uids_are_allowed() {
        let one = Config::build(None, &Settings::default(), &Settings::default()).unwrap();
        assert_eq!(one.clients_per_uid(), one.max_clients);
        let several = Settings {
            allow_uids: Some(vec![1000, 1001]),
            max_clients: Some(11),
            ..Settings::default()
        };
        assert_eq!(
            Config::build(None, &Settings::default(), &several)
                .unwrap()
                .clients_per_uid(),
            6
        );
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
