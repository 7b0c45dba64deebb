//! Opening the store (recovery) and closing it.
//!
//! Open: lock the data directory (`data_dir.rs`), map the newest snapshot
//! (validated once), replay the WAL records after its LSN into the state and
//! the followers, compact first if earlier runs left far too much log, check
//! the configured dimension against the stored one, start the WAL writer with
//! the apply step as its committer. Close: wait for background checkpoints,
//! write a final one, stop the WAL writer after its last sync; every wait is
//! bounded.
//!
//! Not here: the checkpoint itself (`checkpoint.rs`), replay's rules for a
//! damaged log (`wal/replay.rs`).

use std::fs::File;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use nix::fcntl::Flock;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::store::apply::{Applier, Ticket, record_change};
use crate::store::checkpoint::{self, Checkpoints, Trigger};
use crate::store::error::StoreError;
use crate::store::follow::{Follower, Followers, IndexChange};
use crate::store::logged::LoggedRecord;
use crate::store::model::Limits;
use crate::store::snapshot::{self, Snapshot};
use crate::store::state::State;
use crate::store::wal::{self, Lsn, ReplayReport, TornTail, Wal, WalConfig, WalFs};
use crate::store::{Inner, Store, StoreConfig, data_dir};

/// What start-up found (logged, and reported by Stats).
#[derive(Debug, Clone, Default)]
pub struct OpenReport {
    /// The snapshot loaded, if any.
    pub snapshot: Option<PathBuf>,
    /// Time to map and validate it.
    pub snapshot_load: Duration,
    /// WAL records replayed after it.
    pub replayed_records: u64,
    /// Time spent replaying.
    pub replay: Duration,
    /// Torn records cut from the WAL's tail (0 or 1 per start).
    pub torn_records: u64,
    /// What was cut, if anything.
    pub torn_tail: Option<TornTail>,
}

impl Store {
    /// Opens (or creates) the store in `config.data_dir`, with no follower.
    /// `fs` is the WAL's file system: `RealFs` in production, a
    /// fault-injecting one in the daemon under test.
    pub fn open(config: &StoreConfig, fs: Arc<dyn WalFs>) -> Result<Self, StoreError> {
        Self::open_with(config, fs, Vec::new())
    }

    /// Opens the store, keeping `followers` in step with it from the loaded
    /// snapshot on (see `follow.rs`).
    pub fn open_with(
        config: &StoreConfig,
        fs: Arc<dyn WalFs>,
        followers: Vec<Arc<dyn Follower>>,
    ) -> Result<Self, StoreError> {
        let lock = Self::lock_data_dir(config)?;
        Self::open_locked(config, fs, followers, lock, None)
    }

    /// Creates (private) and locks the data directory: the first step of an
    /// open, taken apart so the daemon can read the engines' index files and
    /// the snapshot (in parallel) only once the directory is known to be its
    /// own, then open the store with [`Store::open_locked`].
    pub fn lock_data_dir(config: &StoreConfig) -> Result<DataDirLock, StoreError> {
        Ok(DataDirLock(data_dir::lock(&config.data_dir)?))
    }

    /// Maps and validates the newest snapshot of a locked data directory
    /// (the slowest step of an open, ~0.5 s per million memories), so it can
    /// run beside other start-up work; give the result to [`Store::open_locked`].
    pub fn preload_snapshot(config: &StoreConfig, _locked: &DataDirLock) -> Result<PreloadedSnapshot, StoreError> {
        read_snapshot(config)
    }

    /// Opens the store in a directory locked by [`Store::lock_data_dir`],
    /// with its snapshot already loaded if `preloaded` says so.
    pub fn open_locked(
        config: &StoreConfig,
        fs: Arc<dyn WalFs>,
        followers: Vec<Arc<dyn Follower>>,
        lock: DataDirLock,
        preloaded: Option<PreloadedSnapshot>,
    ) -> Result<Self, StoreError> {
        let DataDirLock(lock) = lock;
        let followers = Arc::new(Followers::new(followers));
        let preloaded = match preloaded {
            Some(preloaded) => preloaded,
            None => read_snapshot(config)?,
        };
        let (mut state, mut report) = load_snapshot(preloaded, &followers);
        let snapshot_lsn = state.applied_lsn();
        let replayed = replay_into(config, fs.as_ref(), &mut state, &followers)?;
        report.note_replay(&replayed);
        let (snapshot_lsn, wal_bytes) = compact_if_far_behind(config, fs.as_ref(), &mut state, snapshot_lsn, &replayed);
        let dimension = check_dimension(&state, &config.limits)?;
        state.configure_dimension(dimension);
        let next_lsn = replayed.last_lsn.max(state.applied_lsn()) + 1;
        report.log(&state);
        let state = Arc::new(RwLock::new(state));
        let wal_config = WalConfig {
            segment_bytes: config.wal_segment_bytes,
            fsync: config.fsync,
            ..WalConfig::new(config.data_dir.clone())
        };
        let applier = Applier::start(Arc::clone(&state), Arc::clone(&followers))?;
        let wal = Wal::start(wal_config, fs, next_lsn, applier)?;
        let inner = Inner {
            dir: config.data_dir.clone(),
            state,
            wal: RwLock::new(Some(Arc::new(wal))),
            limits: config.limits.clone(),
            checkpoints: Checkpoints::new(config, snapshot_lsn, wal_bytes),
            wal_stall_timeout: config.wal_stall_timeout,
            background: TaskTracker::new(),
            followers,
            report,
            _lock: lock,
        };
        let store = Self { inner: Arc::new(inner) };
        // Records replayed count toward the next checkpoint: a daemon that
        // keeps crashing still compacts its log.
        store.checkpoint_if_due();
        Ok(store)
    }

    /// What start-up found.
    pub fn open_report(&self) -> &OpenReport {
        &self.inner.report
    }

    /// Graceful end: waits for background checkpoints, checkpoints, and stops
    /// the WAL writer after it fsynced everything. Bounded: every wait for the
    /// WAL writer gives up after `wal_stall_timeout` (an fdatasync that never
    /// returns), and then the error says so; nothing unacknowledged is at stake.
    pub async fn close(&self) -> Result<Lsn, StoreError> {
        self.inner.background.close();
        self.inner.background.wait().await;
        let checkpointed = self.checkpoint_for(Trigger::Final).await;
        let taken = self.inner.wal.write().unwrap_or_else(|p| p.into_inner()).take();
        let Some(wal) = taken else { return checkpointed };
        let Some(owned) = last_owner(wal).await else {
            warn!("WAL still in use at shutdown; its writer stops when the process exits");
            return checkpointed;
        };
        let bound = self.inner.wal_stall_timeout;
        let flushed = tokio::task::spawn_blocking(move || owned.shutdown_within(bound))
            .await
            .map_err(|source| StoreError::TaskFailed {
                task: "WAL shutdown",
                source,
            })??;
        checkpointed.map(|lsn| lsn.max(flushed))
    }

    /// Stops the WAL writer (after its last sync) without a checkpoint: what
    /// a crash right after the last acknowledged write leaves on disk, for
    /// tests of what the next open replays.
    #[cfg(test)]
    pub(crate) async fn stop_without_checkpoint(&self) {
        let taken = self.inner.wal.write().unwrap_or_else(|p| p.into_inner()).take();
        let owned = last_owner(taken.expect("the WAL is running"))
            .await
            .expect("no other owner");
        let bound = self.inner.wal_stall_timeout;
        (tokio::task::spawn_blocking(move || owned.shutdown_within(bound)).await)
            .expect("the shutdown task")
            .expect("a clean WAL shutdown");
    }

    /// Why writes are refused, while the WAL is fail-stopped (a failed
    /// fdatasync or write: only a restart, replaying what is on disk, makes
    /// writes safe again); `None` while writes are accepted.
    pub fn write_failure(&self) -> Option<String> {
        match self.wal() {
            Ok(wal) => wal.failure(),
            Err(closed) => Some(closed.to_string()),
        }
    }
}

impl OpenReport {
    fn note_replay(&mut self, replayed: &ReplayReport) {
        self.replayed_records = replayed.records;
        self.replay = replayed.duration;
        if let Some(torn) = &replayed.torn_tail {
            self.torn_records = 1;
            self.torn_tail = Some(torn.clone());
            warn!(?torn, "torn record at the WAL's tail was truncated");
        }
    }

    fn log(&self, state: &State) {
        info!(
            memories = state.len(),
            snapshot = ?self.snapshot,
            snapshot_ms = self.snapshot_load.as_millis() as u64,
            replayed = self.replayed_records,
            replay_ms = self.replay.as_millis() as u64,
            "store opened"
        );
    }
}

/// The state of the newest snapshot (or an empty one), told to the followers.
fn load_snapshot(preloaded: PreloadedSnapshot, followers: &Followers) -> (State, OpenReport) {
    let PreloadedSnapshot { snapshot, took } = preloaded;
    let report = OpenReport {
        snapshot: snapshot.as_ref().map(|s| s.path().to_path_buf()),
        snapshot_load: took,
        ..OpenReport::default()
    };
    if let Some(snapshot) = &snapshot {
        followers.tell(&IndexChange::snapshot(snapshot.lsn(), &snapshot.body().memories));
    }
    (State::from_snapshot(snapshot), report)
}

/// The lock on a data directory: held from the moment the daemon knows the
/// directory is its own until the store closes.
pub struct DataDirLock(Flock<File>);

/// Maps and validates the newest snapshot (the data directory is locked).
fn read_snapshot(config: &StoreConfig) -> Result<PreloadedSnapshot, StoreError> {
    let started = Instant::now();
    let snapshot = match snapshot::latest(&config.data_dir)? {
        Some(path) => Some(Arc::new(Snapshot::open(&path)?)),
        None => None,
    };
    Ok(PreloadedSnapshot {
        snapshot,
        took: started.elapsed(),
    })
}

/// The newest snapshot, mapped and validated, and how long that took.
pub struct PreloadedSnapshot {
    snapshot: Option<Arc<Snapshot>>,
    took: std::time::Duration,
}

/// Replays the WAL after the state's LSN into the state and the followers.
fn replay_into(
    config: &StoreConfig,
    fs: &dyn WalFs,
    state: &mut State,
    followers: &Followers,
) -> Result<ReplayReport, StoreError> {
    let mut events = Vec::new();
    let after_lsn = state.applied_lsn();
    let replayed = wal::replay(&config.data_dir, fs, after_lsn, config.salvage_wal, |lsn, payload| {
        let record = Arc::new(LoggedRecord::replayed(&payload)?);
        if followers.is_empty() {
            state.apply(lsn, record);
        } else {
            events.clear();
            state.apply_noting(lsn, Arc::clone(&record), &mut events);
            followers.tell(&record_change(lsn, &record, &events));
        }
        Ok(())
    })?;
    Ok(replayed)
}

/// Compacts the log before the WAL starts when earlier runs left far more of
/// it than the checkpoint triggers allow (see `checkpoint.rs`). Returns the
/// LSN the newest snapshot covers and the WAL bytes it does not. A failure
/// only costs the compaction: the log is intact, the start goes on.
fn compact_if_far_behind(
    config: &StoreConfig,
    fs: &dyn WalFs,
    state: &mut State,
    snapshot_lsn: Lsn,
    replayed: &ReplayReport,
) -> (Lsn, u64) {
    if !checkpoint::compaction_due_at_start(config, replayed.bytes, replayed.segments) {
        return (snapshot_lsn, replayed.bytes);
    }
    match checkpoint::compact_before_start(&config.data_dir, fs, state, snapshot_lsn) {
        Ok(lsn) => {
            info!(
                lsn,
                segments = replayed.segments,
                bytes = replayed.bytes,
                "WAL compacted at start"
            );
            (lsn, 0)
        }
        Err(error) => {
            warn!(%error, "could not compact the WAL at start; serving from it as it is");
            (snapshot_lsn, replayed.bytes)
        }
    }
}

/// The configured dimension must agree with the stored data.
fn check_dimension(state: &State, limits: &Limits) -> Result<u32, StoreError> {
    match (state.dimension(), limits.dimension) {
        (Some(stored), configured) if configured != 0 && configured != stored => {
            Err(StoreError::ConfiguredDimension { configured, stored })
        }
        (Some(stored), _) => Ok(stored),
        (None, configured) => Ok(configured),
    }
}

/// How often, and how many times, `close` looks for the WAL handle to be its
/// own: requests past the shutdown bound may still hold it for the moment of
/// an append, which takes microseconds; 2 s in all is far beyond that.
const LAST_OWNER_POLL: Duration = Duration::from_millis(20);
const LAST_OWNER_POLLS: u32 = 100;

/// Waits (boundedly) until `wal` has no other owner.
async fn last_owner(mut wal: Arc<Wal<Ticket>>) -> Option<Wal<Ticket>> {
    for _ in 0..LAST_OWNER_POLLS {
        match Arc::try_unwrap(wal) {
            Ok(owned) => return Some(owned),
            Err(shared) => wal = shared,
        }
        tokio::time::sleep(LAST_OWNER_POLL).await;
    }
    None
}
