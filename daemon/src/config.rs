//! The daemon's configuration: embedded defaults, overridden by flags.
//!
//! Every limit the daemon enforces lives here with the reason for its value.
//! Parsing flags is `cli.rs`; a config file and SIGHUP reload come with the
//! durable-store issue.

use std::path::PathBuf;
use std::time::Duration;

/// Everything `server::run` needs to know.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where durable state lives (used by the store; created at start).
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
    /// How long a client may take to send its hello.
    pub handshake_timeout: Duration,
    /// How long the response ring may stay full (a client not reading its
    /// answers) before the connection is closed.
    pub stalled_client_timeout: Duration,
    /// Malformed frames tolerated from one connection before it is closed.
    pub max_bad_frames: u32,
    /// Frames handled in one go before the session yields to other tasks,
    /// so one flooding client cannot monopolise a worker thread.
    pub burst_frames: u32,
    /// Opt-in busy-wait budget before sleeping (0: never spin). Only worth it
    /// with spare cores; see ARCHITECTURE.md "Wake-ups".
    pub spin: Duration,
    /// Tokio worker threads (0: one per core).
    pub worker_threads: usize,
    /// How long shutdown waits for sessions to finish.
    pub shutdown_timeout: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("nexus-data"),
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
        }
    }
}

impl Config {
    /// The ring size to grant for a client's request (0 = default).
    pub fn grant_ring_bytes(&self, requested: u32) -> u32 {
        let wanted = if requested == 0 {
            self.default_ring_bytes
        } else {
            requested
        };
        nexus_shm_protocol::layout::normalize_ring_bytes(wanted.min(self.max_ring_bytes))
    }
}
