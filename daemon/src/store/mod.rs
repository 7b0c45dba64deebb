//! The durable memory store: the WAL, the in-memory state, snapshots, and
//! the operations on them, in domain types (no wire type crosses this API:
//! `handler.rs` translates).
//!
//! Life of a write (`write.rs`): validate (`model.rs`) → reserve the vector
//! dimension and assign ids from the applied state (`ids.rs`; before logging,
//! so replay never invents ids) → encode one WAL record per request
//! (`logged.rs`) → the WAL's writer thread groups records from every client
//! into one write + one fdatasync (`wal/`) → in LSN order the apply step
//! (`apply.rs`) applies each durable group to the state under one write lock
//! (which is where a client key is resolved: the later record owns it),
//! then tells every follower (the search engines' indexes, `follow.rs`) what
//! changed, outside the lock, and only then acknowledges. An acknowledged
//! write is durable, readable, and in every index.
//!
//! Reads (`read.rs`) take the state's read lock one bounded chunk at a time
//! and see exactly the acknowledged writes; memories are read in place
//! (`memory.rs`), from the snapshot's map or the WAL record that brought them.
//!
//! Start-up and close (`lifecycle.rs`): lock the data directory
//! (`data_dir.rs`), map the newest snapshot, replay the WAL after it, start
//! the WAL writer. Checkpoints (`checkpoint.rs`): rotate the WAL, write the
//! state as a snapshot (`snapshot.rs`), then delete what it covers.
//!
//! Not here: scoring and ranking memories for a recall (`recall/`).

mod apply;
mod checkpoint;
mod counters;
pub mod data_dir;
pub mod error;
pub mod follow;
pub mod ids;
#[cfg(test)]
mod key_interleavings;
mod lifecycle;
pub mod logged;
pub mod memory;
pub mod model;
mod read;
pub mod snapshot;
pub mod state;
#[cfg(test)]
pub(crate) mod tests;
pub mod wal;
mod write;

use std::fs::File;
use std::path::PathBuf;
use std::sync::{Arc, RwLock, RwLockReadGuard};
use std::time::Duration;

use nix::fcntl::Flock;
use tokio_util::task::TaskTracker;

pub use self::counters::CounterValue;
pub use self::error::{StoreError, Subject};
pub use self::follow::{Follower, IndexChange, IndexEvent};
pub use self::lifecycle::OpenReport;
pub use self::lifecycle::{DataDirLock, PreloadedSnapshot};
pub use self::memory::{Memory, MemoryView};
pub use self::model::{Limits, NewMemory, TagRef};
pub use self::read::{Deadline, DeadlineExceeded};
pub use self::write::{ForgetTarget, Forgotten, Judgement, Remembered};

use self::apply::Ticket;
use self::checkpoint::Checkpoints;
use self::follow::Followers;
use self::state::State;
use self::wal::{FsyncPolicy, Wal};

/// How to open the store.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// The data directory (created 0700 if missing).
    pub data_dir: PathBuf,
    /// When acknowledged writes are fsynced.
    pub fsync: FsyncPolicy,
    /// WAL segment size before rotation.
    pub wal_segment_bytes: u64,
    /// WAL bytes written since the last checkpoint that trigger a new one.
    pub checkpoint_wal_bytes: u64,
    /// A client's Checkpoint within this long after the last successful one
    /// answers with that one instead of writing another (see `checkpoint.rs`).
    pub checkpoint_min_interval: Duration,
    /// Write limits.
    pub limits: Limits,
    /// Truncate the WAL at the first bad record instead of refusing to start.
    pub salvage_wal: bool,
    /// How long a checkpoint or shutdown waits for the WAL writer (to rotate,
    /// or to finish its last sync) before giving up on it: an fdatasync that
    /// never returns must not hang shutdown. The daemon passes its
    /// `shutdown_timeout`.
    pub wal_stall_timeout: Duration,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("nexus-data"),
            fsync: FsyncPolicy::Always,
            wal_segment_bytes: 64 << 20,
            checkpoint_wal_bytes: 256 << 20,
            checkpoint_min_interval: Duration::from_secs(60),
            limits: Limits::default(),
            salvage_wal: false,
            wal_stall_timeout: Duration::from_secs(5),
        }
    }
}

/// The store. Cheap to share (`Arc` inside).
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

/// What a store holds; each job's file reads the fields it needs.
struct Inner {
    dir: PathBuf,
    /// The live memories, their keys, ids and dimension (`state.rs`, `ids.rs`).
    state: Arc<RwLock<State>>,
    /// Taken out (None) by `close` to stop the writer thread.
    wal: RwLock<Option<Arc<Wal<Ticket>>>>,
    limits: Limits,
    checkpoints: Checkpoints,
    /// See [`StoreConfig::wal_stall_timeout`].
    wal_stall_timeout: Duration,
    /// Background checkpoints, waited for by `close`.
    background: TaskTracker,
    /// Who is told every change (also held by the apply step).
    followers: Arc<Followers>,
    report: OpenReport,
    _lock: Flock<File>,
}

impl Store {
    fn read(&self) -> RwLockReadGuard<'_, State> {
        self.inner.state.read().unwrap_or_else(|p| p.into_inner())
    }

    fn wal(&self) -> Result<Arc<Wal<Ticket>>, StoreError> {
        let wal = self.inner.wal.read().unwrap_or_else(|p| p.into_inner());
        wal.clone().ok_or(StoreError::ShuttingDown)
    }
}
