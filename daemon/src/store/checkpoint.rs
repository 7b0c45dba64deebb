//! Checkpoints: when one runs, how concurrent requests share it, and what it
//! writes and deletes.
//!
//! A checkpoint rotates the WAL, freezes the state (a copy of the id index),
//! writes it as a snapshot with no lock held, rebases the state on it, then
//! deletes the older snapshot and the WAL segments it covers. It rewrites the
//! whole store, so it is rationed (issue 7, scenario 8):
//! - one runs at a time; a request that arrives while one runs waits for it
//!   and answers with its result (it covers at least everything acknowledged
//!   when it froze the state, and says which LSN);
//! - a client's request within `checkpoint_min_interval` of the last
//!   successful checkpoint answers with that one's LSN at once (SIGUSR1, the
//!   WAL-volume trigger and shutdown are not rationed this way);
//! - the automatic trigger counts every byte of WAL not yet covered, those
//!   replayed at start included, and the number of segments, so a daemon
//!   that crashes and restarts over and over still checkpoints and deletes
//!   segments (it used to restart the count at zero each time); a failed
//!   automatic checkpoint is retried only after [`BACKGROUND_RETRY`];
//! - a start that finds twice what the triggers allow (earlier runs kept
//!   dying before their background checkpoint finished) writes the replayed
//!   state as a snapshot before serving ([`compact_before_start`]), so disk
//!   use and start-up time stay bounded by the live data, not by the number
//!   of restarts.
//!
//! Not here: the snapshot file format (`snapshot.rs`), freeze and rebase
//! (`state.rs`), the WAL's segments (`wal/`).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use tracing::{info, warn};

use super::apply::Ticket;
use super::error::StoreError;
use super::snapshot::{self, Snapshot};
use super::state::{Frozen, State};
use super::wal::{self, Lsn, Wal, WalFs, remove_replayed_segments};
use super::{Store, StoreConfig};

/// How long after a failed automatic checkpoint the next may start: a full
/// disk would otherwise start one (and rotate the WAL) after every write.
const BACKGROUND_RETRY: Duration = Duration::from_secs(10);

/// Fewest WAL segments that trigger a checkpoint by their number alone. With
/// the defaults (64 MiB segments, a checkpoint every 256 MiB) the byte count
/// triggers first; the count matters when many restarts each leave a small
/// segment behind.
const MIN_SEGMENTS_TRIGGER: u64 = 8;

/// Who asks for a checkpoint, which decides whether it may share another's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Trigger {
    /// A client's `Checkpoint`: joins a running one, or answers with a
    /// successful one younger than `checkpoint_min_interval`.
    Requested,
    /// SIGUSR1 or the WAL-volume trigger: joins a running one.
    Signal,
    /// Shutdown: always writes everything applied so far.
    Final,
}

/// The checkpoint bookkeeping of a store.
pub(super) struct Checkpoints {
    /// Held while a checkpoint runs; holds the last one's outcome.
    gate: tokio::sync::Mutex<Option<Finished>>,
    /// Held while the indexes are saved after a checkpoint.
    index_save: tokio::sync::Mutex<()>,
    /// Generation of the checkpoint running now (0: none).
    running: AtomicU64,
    /// Generations started so far.
    started: AtomicU64,
    min_interval: Duration,
    /// WAL bytes not yet covered that trigger a checkpoint (live: SIGHUP).
    wal_bytes_trigger: AtomicU64,
    /// WAL bytes not yet covered by a checkpoint (replayed ones included).
    bytes_uncovered: AtomicU64,
    /// WAL segments that trigger a checkpoint.
    max_segments: u64,
    background_running: AtomicBool,
    /// No automatic checkpoint before this instant (after a failure).
    background_not_before: std::sync::Mutex<Option<Instant>>,
    /// The LSN the newest snapshot covers (0: none).
    last_lsn: AtomicU64,
    total: AtomicU64,
}

/// The outcome of the last checkpoint.
struct Finished {
    generation: u64,
    at: Instant,
    /// The LSN covered, or why it failed (shared with every request that
    /// takes this outcome as its own).
    result: Result<Lsn, Arc<StoreError>>,
}

impl Checkpoints {
    /// `snapshot_lsn`: the LSN of the snapshot loaded at start (not the
    /// replayed records after it: they still need a checkpoint);
    /// `wal_bytes`: the bytes of the records found in the WAL at start.
    pub(super) fn new(config: &StoreConfig, snapshot_lsn: Lsn, wal_bytes: u64) -> Self {
        Self {
            gate: tokio::sync::Mutex::new(None),
            index_save: tokio::sync::Mutex::new(()),
            running: AtomicU64::new(0),
            started: AtomicU64::new(0),
            min_interval: config.checkpoint_min_interval,
            wal_bytes_trigger: AtomicU64::new(config.checkpoint_wal_bytes),
            bytes_uncovered: AtomicU64::new(wal_bytes),
            max_segments: segments_trigger(config),
            background_running: AtomicBool::new(false),
            background_not_before: std::sync::Mutex::new(None),
            last_lsn: AtomicU64::new(snapshot_lsn),
            total: AtomicU64::new(0),
        }
    }

    /// The LSN the newest snapshot covers.
    pub(super) fn last_lsn(&self) -> Lsn {
        self.last_lsn.load(Ordering::Relaxed)
    }

    /// Checkpoints written since start.
    pub(super) fn total(&self) -> u64 {
        self.total.load(Ordering::Relaxed)
    }

    /// Changes the WAL volume that triggers a checkpoint.
    pub(super) fn set_wal_bytes_trigger(&self, bytes: u64) {
        self.wal_bytes_trigger.store(bytes, Ordering::Relaxed);
    }

    /// Counts WAL bytes just logged.
    pub(super) fn note_logged(&self, bytes: u64) {
        self.bytes_uncovered.fetch_add(bytes, Ordering::Relaxed);
    }

    fn is_due(&self, wal_segments: u64) -> bool {
        self.bytes_uncovered.load(Ordering::Relaxed) >= self.wal_bytes_trigger.load(Ordering::Relaxed)
            || wal_segments > self.max_segments
    }

    fn background_allowed(&self) -> bool {
        let not_before = self.background_not_before.lock().unwrap_or_else(|p| p.into_inner());
        not_before.is_none_or(|at| Instant::now() >= at)
    }

    fn background_failed(&self) {
        let mut not_before = self.background_not_before.lock().unwrap_or_else(|p| p.into_inner());
        *not_before = Some(Instant::now() + BACKGROUND_RETRY);
    }
}

impl Finished {
    /// Whether a request of `trigger`, which saw generation
    /// `running_at_arrival` running (0: none) when it arrived, takes this
    /// outcome as its own.
    fn answers(&self, trigger: Trigger, running_at_arrival: u64, min_interval: Duration) -> bool {
        let joined = running_at_arrival != 0 && self.generation >= running_at_arrival;
        let recent = self.result.is_ok() && self.at.elapsed() < min_interval;
        match trigger {
            Trigger::Requested => joined || recent,
            Trigger::Signal => joined,
            Trigger::Final => false,
        }
    }
}

impl Store {
    /// Writes a snapshot of the current state and drops what it covers;
    /// returns the LSN it covers. One runs at a time; called while one runs,
    /// it answers with that one's result (SIGUSR1).
    pub async fn checkpoint(&self) -> Result<Lsn, StoreError> {
        self.checkpoint_for(Trigger::Signal).await
    }

    /// A client's `Checkpoint`: like [`Store::checkpoint`], and within
    /// `checkpoint_min_interval` of the last successful checkpoint it answers
    /// with that one's LSN instead of writing another.
    pub async fn requested_checkpoint(&self) -> Result<Lsn, StoreError> {
        self.checkpoint_for(Trigger::Requested).await
    }

    /// Changes the WAL volume that triggers a checkpoint (config reload).
    pub fn set_checkpoint_wal_bytes(&self, bytes: u64) {
        self.inner.checkpoints.set_wal_bytes_trigger(bytes);
    }

    pub(super) async fn checkpoint_for(&self, trigger: Trigger) -> Result<Lsn, StoreError> {
        let checkpoints = &self.inner.checkpoints;
        let running_at_arrival = checkpoints.running.load(Ordering::Acquire);
        let mut last = checkpoints.gate.lock().await;
        if let Some(done) = last.as_ref()
            && done.answers(trigger, running_at_arrival, checkpoints.min_interval)
        {
            return done.result.clone().map_err(StoreError::Checkpoint);
        }
        let generation = checkpoints.started.fetch_add(1, Ordering::AcqRel) + 1;
        checkpoints.running.store(generation, Ordering::Release);
        let result = self.write_checkpoint().await.map_err(Arc::new);
        checkpoints.running.store(0, Ordering::Release);
        *last = Some(Finished {
            generation,
            at: Instant::now(),
            result: result.clone(),
        });
        drop(last);
        if result.is_ok() {
            self.save_indexes().await;
        }
        result.map_err(StoreError::Checkpoint)
    }

    /// Saves the followers' indexes after a checkpoint, one save at a time,
    /// outside the checkpoint's gate (a signal that arrives meanwhile starts
    /// the next checkpoint instead of joining one whose snapshot is already
    /// written). Each index is saved at the LSN it has followed to (≥ the
    /// snapshot's): a crash before or during the save leaves older index
    /// files, which the next start rebuilds from the snapshot.
    async fn save_indexes(&self) {
        let followers = Arc::clone(&self.inner.followers);
        if followers.is_empty() {
            return;
        }
        let _one_save = self.inner.checkpoints.index_save.lock().await;
        if let Err(error) = tokio::task::spawn_blocking(move || followers.save_all()).await {
            warn!(%error, "saving the indexes failed");
        }
    }

    /// Starts a checkpoint in the background when the WAL holds enough that
    /// is not covered yet (bytes or segments). Needs a tokio runtime; without
    /// one (a test opening a store directly) it does nothing.
    pub(super) fn checkpoint_if_due(&self) {
        let checkpoints = &self.inner.checkpoints;
        let segments = self.wal().map(|wal| wal.segment_count()).unwrap_or(0);
        if !checkpoints.is_due(segments)
            || !checkpoints.background_allowed()
            || tokio::runtime::Handle::try_current().is_err()
            || checkpoints.background_running.swap(true, Ordering::AcqRel)
        {
            return;
        }
        let store = self.clone();
        self.inner.background.spawn(async move {
            let checkpoints = &store.inner.checkpoints;
            if let Err(error) = store.checkpoint_for(Trigger::Signal).await {
                warn!(%error, "background checkpoint failed");
                checkpoints.background_failed();
            }
            checkpoints.background_running.store(false, Ordering::Release);
        });
    }

    /// One checkpoint, start to end (the caller holds the gate).
    async fn write_checkpoint(&self) -> Result<Lsn, StoreError> {
        let (inner, checkpoints) = (&self.inner, &self.inner.checkpoints);
        let wal = self.wal()?;
        let applied = self.read().applied_lsn();
        let last = checkpoints.last_lsn();
        if applied == last && applied != 0 {
            // Nothing new to write; still drop what the last one covers (a
            // crash may have come between its rename and the deletions).
            wal.remove_segments_up_to(last)?;
            return Ok(last);
        }
        let started = Instant::now();
        let covering_bytes = checkpoints.bytes_uncovered.load(Ordering::Relaxed);
        self.rotate(&wal).await?;
        // The lock is held only to copy the id map (shares the bytes); the
        // snapshot is written while writes go on.
        let frozen = self.read().freeze();
        let (state, dir) = (inner.state.clone(), inner.dir.clone());
        let written = tokio::task::spawn_blocking(move || write_and_rebase(&state, &dir, &frozen))
            .await
            .map_err(|source| StoreError::TaskFailed {
                task: "checkpoint",
                source,
            })?;
        let (path, lsn) = written?;
        snapshot::remove_others(&inner.dir, &path)?;
        wal.remove_segments_up_to(lsn)?;
        checkpoints.last_lsn.store(lsn, Ordering::Relaxed);
        checkpoints.total.fetch_add(1, Ordering::Relaxed);
        let _ = (checkpoints.bytes_uncovered).fetch_update(Ordering::Relaxed, Ordering::Relaxed, |bytes| {
            Some(bytes.saturating_sub(covering_bytes))
        });
        info!(lsn, path = %path.display(), ms = started.elapsed().as_millis() as u64, "checkpoint written");
        Ok(lsn)
    }
}

impl Store {
    /// Seals the active segment, waiting at most `wal_stall_timeout` for the
    /// writer (it may be stuck in an fdatasync that never returns).
    async fn rotate(&self, wal: &Wal<Ticket>) -> Result<wal::RotateInfo, StoreError> {
        let waited = self.inner.wal_stall_timeout;
        match tokio::time::timeout(waited, wal.rotate()).await {
            Ok(rotated) => Ok(rotated?),
            Err(_) => Err(StoreError::WalStalled { waited }),
        }
    }
}

/// The WAL segments that trigger a checkpoint: twice what the byte trigger
/// leaves behind, at least [`MIN_SEGMENTS_TRIGGER`].
fn segments_trigger(config: &StoreConfig) -> u64 {
    let per_trigger = config.checkpoint_wal_bytes.div_ceil(config.wal_segment_bytes.max(1));
    MIN_SEGMENTS_TRIGGER.max(per_trigger.saturating_mul(2))
}

/// True when a start finds twice the WAL the triggers allow (in bytes of
/// records, or in segments): see [`compact_before_start`].
pub(super) fn compaction_due_at_start(config: &StoreConfig, wal_bytes: u64, segments: u64) -> bool {
    wal_bytes >= config.checkpoint_wal_bytes.saturating_mul(2) || segments > segments_trigger(config).saturating_mul(2)
}

/// At start, after replay and before the WAL writer runs: writes the state
/// as a snapshot (if replay added anything to the one loaded), rebases the
/// state on it (letting go of the replayed segments' maps) and deletes every
/// replayed segment. Returns the LSN the snapshot covers.
pub(super) fn compact_before_start(
    dir: &Path,
    fs: &dyn WalFs,
    state: &mut State,
    snapshot_lsn: Lsn,
) -> Result<Lsn, StoreError> {
    let lsn = state.applied_lsn();
    if lsn > snapshot_lsn {
        let frozen = state.freeze();
        let path = snapshot::write(dir, &frozen.snapshot_body())?;
        let opened = Snapshot::open(&path)?;
        state.rebase(&frozen, Arc::new(opened));
        snapshot::remove_others(dir, &path)?;
    }
    remove_replayed_segments(dir, fs, lsn)?;
    Ok(lsn)
}

/// Writes `frozen` as a snapshot, opens it, and moves the state's unchanged
/// memories onto it (see [`State::rebase`]). A snapshot that cannot be read
/// back is removed, so a restart never meets it.
fn write_and_rebase(state: &RwLock<State>, dir: &Path, frozen: &Frozen) -> Result<(PathBuf, Lsn), StoreError> {
    let body = frozen.snapshot_body();
    let path = snapshot::write(dir, &body)?;
    drop(body);
    let opened = match Snapshot::open(&path) {
        Ok(opened) => opened,
        Err(source) => {
            let _ = std::fs::remove_file(&path);
            return Err(StoreError::SnapshotUnreadable { path, source });
        }
    };
    let moved = state
        .write()
        .unwrap_or_else(|p| p.into_inner())
        .rebase(frozen, Arc::new(opened));
    tracing::debug!(moved, "state rebased on the new snapshot");
    Ok((path, frozen.lsn()))
}
