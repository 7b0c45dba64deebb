//! The daemon's configuration: embedded defaults, a TOML file, flags.
//!
//! Precedence: defaults < config file < command-line flags. Both the file and
//! the flags produce a [`Settings`] (every field optional); [`Config::build`]
//! layers them. On SIGHUP the file is read again and layered under the same
//! flags; [`Config::live_update`] takes over the settings that may change
//! while serving and names the ones that need a restart. Every limit lives
//! here with the reason for its value.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::store::StoreConfig;
use crate::store::model::Limits;
use crate::store::wal::FsyncPolicy;

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
    /// Connections served at once. Each costs ~4 fds and its two rings.
    pub max_clients: usize,
    /// Ring size granted when a client asks for 0 (1 MiB: frames up to 512 KiB).
    pub default_ring_bytes: u32,
    /// Largest ring granted; bounds a client's share of daemon memory.
    pub max_ring_bytes: u32,
    /// Largest frame payload accepted on any transport.
    pub max_frame_bytes: u32,
    /// How long a client may take to send its hello. Live.
    pub handshake_timeout: Duration,
    /// How long the response ring may stay full (a client not reading its
    /// answers) before the connection is closed. Live.
    pub stalled_client_timeout: Duration,
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
    /// When acknowledged writes reach the disk.
    pub fsync: FsyncPolicy,
    /// WAL segment size before rotation.
    pub wal_segment_bytes: u64,
    /// WAL volume since the last checkpoint that triggers one. Live.
    pub checkpoint_wal_bytes: u64,
    /// Limits on writes and queries.
    pub limits: Limits,
    /// Start even when the WAL is corrupt mid-log, cutting it at the first bad record.
    pub salvage_wal: bool,
    /// The config file, re-read on SIGHUP.
    pub config_file: Option<PathBuf>,
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
    /// `"always"` | `"interval:<ms>"` | `"never"`.
    pub fsync: Option<String>,
    pub wal_segment_bytes: Option<u64>,
    pub checkpoint_wal_bytes: Option<u64>,
    pub limits: Option<Limits>,
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
            default_ring_bytes: 1 << 20,
            max_ring_bytes: nexus_shm_protocol::layout::MAX_RING_BYTES,
            max_frame_bytes: 8 << 20,
            handshake_timeout: Duration::from_secs(2),
            stalled_client_timeout: Duration::from_secs(10),
            max_bad_frames: 16,
            burst_frames: 256,
            spin: Duration::ZERO,
            worker_threads: 0,
            shutdown_timeout: Duration::from_secs(5),
            log: "info".to_owned(),
            fsync: store.fsync,
            wal_segment_bytes: store.wal_segment_bytes,
            checkpoint_wal_bytes: store.checkpoint_wal_bytes,
            limits: store.limits,
            salvage_wal: false,
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
        self.max_bad_frames = new.max_bad_frames;
        self.spin = new.spin;
        self.shutdown_timeout = new.shutdown_timeout;
        self.log = new.log.clone();
        self.checkpoint_wal_bytes = new.checkpoint_wal_bytes;
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
        differs("ring_bytes", self.default_ring_bytes != new.default_ring_bytes);
        differs("max_ring_bytes", self.max_ring_bytes != new.max_ring_bytes);
        differs("max_frame_bytes", self.max_frame_bytes != new.max_frame_bytes);
        differs("worker_threads", self.worker_threads != new.worker_threads);
        differs("fsync", self.fsync != new.fsync);
        differs("wal_segment_bytes", self.wal_segment_bytes != new.wal_segment_bytes);
        differs("limits", self.limits != new.limits);
        restart
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
            limits: self.limits.clone(),
            salvage_wal: self.salvage_wal,
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
        if let Some(policy) = &s.fsync {
            self.fsync = policy.parse().map_err(|e| invalid("fsync", format!("{e}")))?;
        }
        set(&mut self.wal_segment_bytes, s.wal_segment_bytes);
        set(&mut self.checkpoint_wal_bytes, s.checkpoint_wal_bytes);
        set(&mut self.limits, s.limits.clone());
        set(&mut self.salvage_wal, s.salvage_wal);
        Ok(())
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if self.max_clients == 0 {
            return Err(invalid("max_clients", "must be at least 1".into()));
        }
        if self.allowed_uids.is_empty() {
            return Err(invalid("allow_uids", "must name at least one uid".into()));
        }
        if self.wal_segment_bytes < 1 << 20 {
            return Err(invalid("wal_segment_bytes", "must be at least 1 MiB".into()));
        }
        if self.limits.max_batch == 0 || self.limits.max_k == 0 {
            return Err(invalid("limits", "max_batch and max_k must be at least 1".into()));
        }
        tracing_subscriber::EnvFilter::try_new(&self.log).map_err(|e| invalid("log", e.to_string()))?;
        Ok(())
    }
}

fn set<T>(field: &mut T, value: Option<T>) {
    if let Some(value) = value {
        *field = value;
    }
}

fn invalid(name: &'static str, reason: String) -> ConfigError {
    ConfigError::Invalid { name, reason }
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
