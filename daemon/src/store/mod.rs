//! The durable memory store: WAL, state, snapshots, and the operations on them.
//!
//! Write path: validate (model.rs) → reserve the vector dimension and assign
//! ids from the applied state (`ids.rs`; before logging, so replay never
//! invents ids) → encode one WAL record per request → the WAL's writer thread
//! groups records from every client into one write + one fdatasync → in LSN
//! order the apply thread applies each durable record to the state (which is
//! where a client key is resolved: the later record owns it) and only then
//! acknowledges it. Reads (`recall`, a Forget's targets) take the state's read
//! lock one bounded chunk at a time (`recall.rs`, `State::take_chunk`) and see
//! exactly the acknowledged writes.
//!
//! Start-up: lock the data directory, map the newest snapshot (validated once),
//! replay the WAL records after its LSN (compacting first if earlier runs left
//! far too much of it), start the WAL writer.
//! Checkpoints (`checkpoint.rs`): rotate the WAL, write the state as a
//! snapshot (temp, fsync, rename, fsync dir), then delete the snapshots and
//! WAL segments it covers; one at a time, client requests rationed.

mod checkpoint;
pub mod ids;
#[cfg(test)]
mod key_interleavings;
pub mod logged;
pub mod model;
pub mod recall;
pub mod snapshot;
pub mod state;
pub mod wal;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard};
use std::time::{Duration, Instant};

use nexus_shm_protocol::wire::{
    ArchivedFeedbackRequest, ArchivedForgetRequest, ArchivedRecallRequest, ArchivedRememberRequest, Counter, RecallHit,
    Signal,
};
use nix::fcntl::{Flock, FlockArg};
use tokio::sync::oneshot;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use self::checkpoint::{Checkpoints, Trigger};
use self::ids::Ids;
use self::logged::LoggedRecord;
use self::model::{Limits, MemoryRef, StoreError, Subject, WalRecord, WalRecordRef, validate_memory};
use self::recall::{Query, SLICE_MEMORIES, Scan, Scored};
use self::snapshot::Snapshot;
use self::state::{Cursor, Detached, State};
use self::wal::{Committer, FsyncPolicy, Lsn, Wal, WalConfig, WalError, WalFs};

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
    /// Human description of what was cut, if anything.
    pub torn_detail: Option<String>,
}

/// The store. Cheap to share (`Arc` inside).
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    dir: PathBuf,
    state: Arc<RwLock<State>>,
    /// Taken out (None) by `close` to stop the writer thread.
    wal: RwLock<Option<Arc<Wal<Ticket>>>>,
    limits: Limits,
    checkpoints: Checkpoints,
    /// See [`StoreConfig::wal_stall_timeout`].
    wal_stall_timeout: Duration,
    background: TaskTracker,
    report: OpenReport,
    _lock: Flock<File>,
}

/// A record on its way through the WAL, with the reply for its writer.
struct Ticket {
    record: Arc<LoggedRecord>,
    done: oneshot::Sender<Result<Lsn, WriteFailure>>,
}

/// The WAL's view of a record the state will also hold: the same bytes, not a copy.
struct SharedRecord(Arc<LoggedRecord>);

impl AsRef<[u8]> for SharedRecord {
    fn as_ref(&self) -> &[u8] {
        self.0.bytes()
    }
}

/// Why a WAL write failed, in a form that can be handed to the waiting request.
#[derive(Debug, Clone)]
struct WriteFailure {
    kind: FailureKind,
    message: String,
}

/// What a failed write means for the next one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FailureKind {
    /// No space: retry once space is freed.
    DiskFull,
    /// No file descriptor for a new segment: retry once some are freed.
    OutOfFds,
    /// Anything else (the WAL may now refuse every write).
    Storage,
}

impl WriteFailure {
    fn new(error: &WalError) -> Self {
        let kind = match error {
            WalError::DiskFull { .. } => FailureKind::DiskFull,
            WalError::OutOfFds { .. } => FailureKind::OutOfFds,
            _ => FailureKind::Storage,
        };
        Self {
            kind,
            message: error.to_string(),
        }
    }

    fn into_error(self) -> StoreError {
        match self.kind {
            FailureKind::DiskFull => StoreError::DiskFull(self.message),
            FailureKind::OutOfFds => StoreError::OutOfFds(self.message),
            FailureKind::Storage => StoreError::Storage(self.message),
        }
    }
}

/// Groups of durable records waiting for the apply thread. Bounded: when the
/// apply thread falls this far behind, the WAL writer waits for it.
const APPLY_QUEUE_GROUPS: usize = 64;

/// A lone record up to this size is applied on the WAL thread itself when the
/// apply thread has nothing pending: for a single writer that saves a wake-up
/// (~15 µs here) per write, and applying it takes microseconds.
const INLINE_APPLY_MAX_BYTES: usize = 64 << 10;

/// The WAL's committer. On the writer thread it only collects each durable
/// group and hands it over with one wake-up; the `nexus-apply` thread applies
/// the group to the state (in LSN order, under one write lock) and then
/// answers its writers. So the writer starts the next group's write and
/// fdatasync right after a sync returns, while the last group is applied and
/// its clients are woken: CPU work overlaps the disk's. A lone small record
/// with nothing queued before it is applied right here instead (see
/// [`INLINE_APPLY_MAX_BYTES`]); LSN order holds because the apply thread has
/// then finished every earlier group.
struct Applier {
    state: Arc<RwLock<State>>,
    /// Groups sent to the apply thread and not yet applied and acknowledged.
    queued: Arc<AtomicUsize>,
    group: Vec<(Lsn, Ticket)>,
    /// `None` once dropped (then the thread is joined).
    to_thread: Option<std::sync::mpsc::SyncSender<Vec<(Lsn, Ticket)>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Applier {
    fn start(state: Arc<RwLock<State>>) -> Result<Self, StoreError> {
        let (to_thread, groups) = std::sync::mpsc::sync_channel::<Vec<(Lsn, Ticket)>>(APPLY_QUEUE_GROUPS);
        let queued = Arc::new(AtomicUsize::new(0));
        let (thread_state, thread_queued) = (Arc::clone(&state), Arc::clone(&queued));
        let thread = std::thread::Builder::new()
            .name("nexus-apply".into())
            .spawn(move || {
                for group in groups {
                    apply_group(&thread_state, group);
                    thread_queued.fetch_sub(1, Ordering::Release);
                }
            })
            .map_err(|e| StoreError::Storage(format!("cannot start the apply thread: {e}")))?;
        Ok(Self {
            state,
            queued,
            group: Vec::new(),
            to_thread: Some(to_thread),
            thread: Some(thread),
        })
    }
}

/// Applies a durable group, then acknowledges each record: a client hears "ok"
/// only once a read can see its write.
fn apply_group(state: &RwLock<State>, group: Vec<(Lsn, Ticket)>) {
    let mut replies = Vec::with_capacity(group.len());
    {
        let mut state = state.write().unwrap_or_else(|p| p.into_inner());
        for (lsn, ticket) in group {
            state.apply(lsn, ticket.record);
            replies.push((lsn, ticket.done));
        }
    }
    for (lsn, done) in replies {
        let _ = done.send(Ok(lsn));
    }
}

impl Committer for Applier {
    type Ticket = Ticket;

    fn durable(&mut self, lsn: Lsn, ticket: Ticket) {
        self.group.push((lsn, ticket));
    }

    fn group_done(&mut self) {
        let group = std::mem::take(&mut self.group);
        if group.is_empty() {
            return;
        }
        if let [(_, lone)] = group.as_slice()
            && lone.record.len() <= INLINE_APPLY_MAX_BYTES
            && self.queued.load(Ordering::Acquire) == 0
        {
            apply_group(&self.state, group);
            return;
        }
        let Some(to_thread) = &self.to_thread else {
            apply_group(&self.state, group);
            return;
        };
        self.queued.fetch_add(1, Ordering::AcqRel);
        if to_thread.send(group).is_err() {
            // The apply thread is gone (it panicked): the group's tickets are
            // dropped, so their writers get "shutting down" rather than an ack.
            tracing::error!("the apply thread stopped; durable records are no longer applied");
        }
    }

    fn failed(&mut self, ticket: Ticket, error: &WalError) {
        let _ = ticket.done.send(Err(WriteFailure::new(error)));
    }
}

impl Drop for Applier {
    /// Runs when the WAL writer exits: every durable group is applied and
    /// acknowledged before `Wal::shutdown` returns.
    fn drop(&mut self) {
        self.group_done();
        self.to_thread = None;
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            tracing::error!("the apply thread panicked");
        }
    }
}

impl Store {
    /// Opens (or creates) the store in `config.data_dir`: snapshot, replay, WAL.
    /// `fs` is the WAL's file system: `RealFs` in production, a fault-injecting one
    /// in the daemon under test.
    pub fn open(config: &StoreConfig, fs: Arc<dyn WalFs>) -> Result<Self, StoreError> {
        let dir = config.data_dir.clone();
        let lock = lock_data_dir(&dir)?;
        let started = Instant::now();
        let snapshot = match snapshot::latest(&dir).map_err(storage)? {
            Some(path) => Some(Arc::new(Snapshot::open(&path).map_err(storage)?)),
            None => None,
        };
        let mut report = OpenReport {
            snapshot: snapshot.as_ref().map(|s| s.path().to_path_buf()),
            snapshot_load: started.elapsed(),
            ..OpenReport::default()
        };
        let mut state = State::from_snapshot(snapshot);
        let snapshot_lsn = state.applied_lsn();
        let replayed = wal::replay(
            &dir,
            fs.as_ref(),
            state.applied_lsn(),
            config.salvage_wal,
            |lsn, payload| {
                state.apply(lsn, Arc::new(LoggedRecord::replayed(&payload)?));
                Ok(())
            },
        )?;
        report.replayed_records = replayed.records;
        report.replay = replayed.duration;
        if let Some(torn) = &replayed.torn_tail {
            report.torn_records = 1;
            report.torn_detail = Some(format!("{torn:?}"));
            warn!(?torn, "torn record at the WAL's tail was truncated");
        }
        let (snapshot_lsn, wal_bytes) = compact_if_far_behind(config, fs.as_ref(), &mut state, snapshot_lsn, &replayed);
        let dimension = check_dimension(&state, &config.limits)?;
        state.configure_dimension(dimension);
        let next_lsn = replayed.last_lsn.max(state.applied_lsn()) + 1;
        info!(
            memories = state.len(),
            snapshot = ?report.snapshot,
            snapshot_ms = report.snapshot_load.as_millis() as u64,
            replayed = report.replayed_records,
            replay_ms = report.replay.as_millis() as u64,
            "store opened"
        );
        let state = Arc::new(RwLock::new(state));
        let wal_config = WalConfig {
            segment_bytes: config.wal_segment_bytes,
            fsync: config.fsync,
            ..WalConfig::new(dir.clone())
        };
        let wal = Wal::start(wal_config, fs, next_lsn, Applier::start(state.clone())?)?;
        let inner = Inner {
            dir,
            state,
            wal: RwLock::new(Some(Arc::new(wal))),
            limits: config.limits.clone(),
            checkpoints: Checkpoints::new(config, snapshot_lsn, wal_bytes),
            wal_stall_timeout: config.wal_stall_timeout,
            background: TaskTracker::new(),
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

    /// Stores a batch durably; returns the ids in request order.
    pub async fn remember(&self, request: &ArchivedRememberRequest, now_ms: i64) -> Result<Vec<u64>, StoreError> {
        let limits = &self.inner.limits;
        let count = request.memories.len();
        if count == 0 {
            return Err(StoreError::EmptyBatch);
        }
        if count > limits.max_batch {
            return Err(StoreError::BatchTooLarge {
                len: count,
                max: limits.max_batch,
            });
        }
        let mut memories = Vec::with_capacity(count);
        for (index, input) in request.memories.iter().enumerate() {
            memories.push(validate_memory(index, input, limits, now_ms)?);
        }
        {
            let state = self.read();
            fix_dimension(state.ids(), &memories)?;
            state.ids().assign(&mut memories);
        }
        let ids = memories.iter().map(|m| m.id).collect();
        let record = LoggedRecord::encode_ref(&WalRecordRef::Remember(memories));
        self.log(record).await?;
        Ok(ids)
    }

    /// Deletes by ids, namespace or tags; returns how many were deleted.
    /// The targets are chosen from the applied state in slices (the lock is
    /// released between them), before the record is logged.
    pub async fn forget(&self, request: &ArchivedForgetRequest, deadline_ns: u64) -> Result<u64, StoreError> {
        let ids = match request {
            ArchivedForgetRequest::Ids(ids) => self.live_ids(ids.as_slice())?,
            ArchivedForgetRequest::Namespace(namespace) if namespace.is_empty() => {
                return Err(StoreError::InvalidArgument(
                    "forget by namespace needs a namespace".into(),
                ));
            }
            ArchivedForgetRequest::Namespace(namespace) => self.matching(namespace, &[], deadline_ns).await?,
            ArchivedForgetRequest::Tags { tags, .. } if tags.is_empty() => {
                return Err(StoreError::InvalidArgument(
                    "forget by tags needs at least one tag".into(),
                ));
            }
            ArchivedForgetRequest::Tags { namespace, tags } => {
                let tags = self.check_filter(tags.iter().map(|t| (t.key.as_str(), t.value.as_str())))?;
                let namespace = namespace.as_ref().map(|n| n.as_str()).unwrap_or("");
                self.matching(namespace, &tags, deadline_ns).await?
            }
        };
        let count = ids.len() as u64;
        if count > 0 {
            // Keys are released when the record is applied (see `ids.rs`).
            self.log(LoggedRecord::encode(&WalRecord::Forget(ids))).await?;
        }
        Ok(count)
    }

    /// Records feedback on a memory, durably.
    pub async fn feedback(&self, request: &ArchivedFeedbackRequest) -> Result<(), StoreError> {
        let memory_id = request.memory_id.to_native();
        if self.read().get(memory_id).is_none() {
            return Err(StoreError::UnknownMemory(memory_id));
        }
        let record = WalRecord::Feedback {
            memory_id,
            recall_request_id: request.recall_request_id.to_native(),
            useful: request.useful,
        };
        self.log(LoggedRecord::encode(&record)).await.map(|_| ())
    }

    /// Exact recall over the acknowledged memories. The scan runs in slices
    /// (see `recall.rs`): the state's lock is held only to take each chunk,
    /// the deadline (`deadline_ns`, CLOCK_MONOTONIC, 0 = none) is checked and
    /// other tasks get the worker thread between chunks.
    pub async fn recall(
        &self,
        request: &ArchivedRecallRequest,
        deadline_ns: u64,
    ) -> Result<Vec<RecallHit>, StoreError> {
        let k = self.check_k(request.k.to_native())?;
        let vector: Option<Vec<f32>> = request
            .vector
            .as_ref()
            .map(|v| v.iter().map(|x| x.to_native()).collect());
        if let Some(vector) = &vector {
            self.check_query_vector(vector)?;
        }
        let text = request.text.as_ref().map(|t| t.as_str());
        if let Some(text) = text
            && text.len() > self.inner.limits.max_query_bytes
        {
            let max = self.inner.limits.max_query_bytes;
            return Err(StoreError::QueryTooLong { len: text.len(), max });
        }
        let text = text.filter(|t| !t.trim().is_empty());
        if text.is_none() && vector.is_none() {
            return Err(StoreError::InvalidArgument("a recall needs a text or a vector".into()));
        }
        let filter = self.check_filter(request.filter.iter().map(|t| (t.key.as_str(), t.value.as_str())))?;
        let query = Query {
            namespace: request.namespace.as_str(),
            text,
            vector: vector.as_deref(),
            k,
            filter: &filter,
        };
        let mut scan = Scan::new(&query);
        self.scan(query.namespace, deadline_ns, |chunk| scan.score(chunk))
            .await?;
        Ok(scan
            .finish()
            .into_iter()
            .map(|(scored, memory)| hit(scored, &memory))
            .collect())
    }

    /// Makes everything acknowledged so far durable (meaningful under a relaxed
    /// fsync policy); returns the durable LSN.
    pub async fn flush(&self) -> Result<Lsn, StoreError> {
        Ok(self.wal()?.flush().await?)
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
            .map_err(|e| StoreError::Storage(format!("WAL shutdown task failed: {e}")))??;
        checkpointed.map(|lsn| lsn.max(flushed))
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

    /// Counters for Stats.
    pub fn counters(&self) -> Vec<Counter> {
        let inner = &self.inner;
        let state = self.read();
        let wal = self.wal().map(|wal| wal.stats()).ok();
        let report = &inner.report;
        let mut counters = vec![
            counter("memories", state.len() as u64),
            counter("namespaces", state.namespace_count() as u64),
            counter("dimension", u64::from(state.ids().dimension())),
            counter("applied_lsn", state.applied_lsn()),
            counter("last_checkpoint_lsn", inner.checkpoints.last_lsn()),
            counter("checkpoints_total", inner.checkpoints.total()),
            counter("snapshot_load_ms", report.snapshot_load.as_millis() as u64),
            counter("replay_records", report.replayed_records),
            counter("replay_ms", report.replay.as_millis() as u64),
            counter("torn_records_truncated", report.torn_records),
        ];
        counters.extend(wal.map(|stats| wal_counters(&stats)).unwrap_or_default());
        counters
    }

    fn wal(&self) -> Result<Arc<Wal<Ticket>>, StoreError> {
        let wal = self.inner.wal.read().unwrap_or_else(|p| p.into_inner());
        wal.clone().ok_or(StoreError::ShuttingDown)
    }

    /// The ids of a Forget that name live memories, ascending, without
    /// repeats; the lock is taken per slice of ids.
    fn live_ids(&self, ids: &[rkyv::rend::u64_le]) -> Result<Vec<u64>, StoreError> {
        let max = self.inner.limits.max_forget_ids;
        if ids.len() > max {
            return Err(StoreError::TooManyIds { len: ids.len(), max });
        }
        let mut live = Vec::new();
        for slice in ids.chunks(SLICE_MEMORIES) {
            let state = self.read();
            live.extend(
                slice
                    .iter()
                    .map(|id| id.to_native())
                    .filter(|id| state.get(*id).is_some()),
            );
        }
        live.sort_unstable();
        live.dedup();
        Ok(live)
    }

    /// Ids of `namespace`'s memories ("" = all) carrying every one of `tags`, ascending.
    async fn matching(&self, namespace: &str, tags: &[(&str, &str)], deadline_ns: u64) -> Result<Vec<u64>, StoreError> {
        let mut ids = Vec::new();
        self.scan(namespace, deadline_ns, |chunk| {
            let carrying = chunk.iter().map(Detached::view).filter(|view| view.has_tags(tags));
            ids.extend(carrying.map(|view| view.id()));
        })
        .await?;
        ids.sort_unstable();
        Ok(ids)
    }

    /// Hands `namespace`'s memories ("" = all) to `each`, a chunk at a time
    /// (see `State::take_chunk`): the read lock is held only while a chunk is
    /// taken, `each` runs with no lock held, and between chunks the deadline
    /// is checked and other tasks get this worker thread.
    async fn scan(
        &self,
        namespace: &str,
        deadline_ns: u64,
        mut each: impl FnMut(&[Detached]),
    ) -> Result<(), StoreError> {
        let mut cursor = Cursor::default();
        let mut seen = 0u64;
        while !cursor.is_done() {
            let chunk = self.read().take_chunk(namespace, &mut cursor);
            seen += chunk.len() as u64;
            each(&chunk);
            drop(chunk);
            check_deadline(deadline_ns, seen)?;
            tokio::task::yield_now().await;
        }
        Ok(())
    }

    fn check_k(&self, k: u32) -> Result<usize, StoreError> {
        match k {
            0 => Ok(DEFAULT_K),
            k if k > self.inner.limits.max_k => Err(StoreError::InvalidArgument(format!(
                "query: k = {k} exceeds the maximum of {} (limits.max_k)",
                self.inner.limits.max_k
            ))),
            k => Ok(k as usize),
        }
    }

    fn check_query_vector(&self, vector: &[f32]) -> Result<(), StoreError> {
        model::check_vector(Subject::Query, vector, &self.inner.limits)?;
        let expected = self.read().ids().dimension();
        if expected != 0 && expected as usize != vector.len() {
            return Err(StoreError::DimensionMismatch {
                subject: Subject::Query,
                expected,
                got: vector.len() as u32,
            });
        }
        Ok(())
    }

    /// A filter of more tags than a memory may carry matches nothing; refusing
    /// it bounds the work per memory.
    fn check_filter<'a>(
        &self,
        tags: impl ExactSizeIterator<Item = (&'a str, &'a str)>,
    ) -> Result<Vec<(&'a str, &'a str)>, StoreError> {
        let max = self.inner.limits.max_tags;
        if tags.len() > max {
            return Err(StoreError::FilterTooLong { len: tags.len(), max });
        }
        Ok(tags.collect())
    }

    /// Seals the active segment, waiting at most `wal_stall_timeout` for the
    /// writer (it may be stuck in an fdatasync that never returns).
    async fn rotate(&self, wal: &Wal<Ticket>) -> Result<wal::RotateInfo, StoreError> {
        let bound = self.inner.wal_stall_timeout;
        match tokio::time::timeout(bound, wal.rotate()).await {
            Ok(rotated) => Ok(rotated?),
            Err(_) => Err(StoreError::Storage(format!(
                "the WAL writer did not answer within {bound:?} (an fdatasync that does not return?); \
                 no checkpoint was written"
            ))),
        }
    }

    fn read(&self) -> RwLockReadGuard<'_, State> {
        self.inner.state.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Appends a record and waits until it is durable and applied.
    async fn log(&self, record: LoggedRecord) -> Result<Lsn, StoreError> {
        let record = Arc::new(record);
        let bytes = record.len() as u64;
        let (done, reply) = oneshot::channel();
        let ticket = Ticket {
            record: Arc::clone(&record),
            done,
        };
        self.wal()?.append(SharedRecord(record), ticket).await?;
        let lsn = match reply.await {
            Ok(Ok(lsn)) => lsn,
            Ok(Err(failure)) => return Err(failure.into_error()),
            Err(_) => return Err(StoreError::ShuttingDown),
        };
        self.inner.checkpoints.note_logged(bytes);
        self.checkpoint_if_due();
        Ok(lsn)
    }
}

/// Results when a recall asks for k = 0.
const DEFAULT_K: usize = 8;

/// A recall result with its memory's text, and why it was chosen.
fn hit(scored: Scored, memory: &Detached) -> RecallHit {
    let view = memory.view();
    let mut why = Vec::new();
    if let Some(value) = scored.vector {
        why.push(Signal {
            name: "vector".into(),
            value,
        });
    }
    if let Some(value) = scored.lexical {
        why.push(Signal {
            name: "lexical".into(),
            value,
        });
    }
    RecallHit {
        id: scored.id,
        score: scored.score,
        text: view.text().to_owned(),
        namespace: view.namespace().to_owned(),
        why,
    }
}

/// `DeadlineExceeded` once the request's deadline (CLOCK_MONOTONIC, 0 =
/// none) has passed, with how far the scan got.
fn check_deadline(deadline_ns: u64, seen: u64) -> Result<(), StoreError> {
    let now_ns = nexus_shm_protocol::monotonic_now_ns();
    if deadline_ns == 0 || now_ns <= deadline_ns {
        return Ok(());
    }
    Err(StoreError::DeadlineExceeded {
        late_us: (now_ns - deadline_ns) / 1000,
        what: format!("the request stopped after scanning {seen} memories"),
    })
}

/// Waits (up to 2 s) until `wal` has no other owner: requests past the
/// shutdown bound may still hold it for the moment of an append.
async fn last_owner(mut wal: Arc<Wal<Ticket>>) -> Option<Wal<Ticket>> {
    for _ in 0..100 {
        match Arc::try_unwrap(wal) {
            Ok(owned) => return Some(owned),
            Err(shared) => wal = shared,
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    None
}

/// WAL counters, with the fdatasync latency histogram as one counter per
/// log2 bucket (`wal_fsync_le_<upper bound>_ns`).
fn wal_counters(stats: &wal::WalStats) -> Vec<Counter> {
    let mut counters = vec![
        counter("wal_bytes", stats.bytes_on_disk),
        counter("wal_segments", stats.segments),
        counter("wal_durable_lsn", stats.durable_lsn),
        counter("wal_records_acked", stats.records_acked),
        counter("wal_record_bytes", stats.record_bytes),
        counter("wal_records_failed", stats.records_failed),
        counter("wal_groups", stats.groups),
        counter("wal_fsyncs", stats.fsyncs),
        counter("wal_failed", u64::from(stats.failed)),
    ];
    for (upper_bound_ns, count) in &stats.fsync_latency_ns {
        counters.push(counter(&format!("wal_fsync_le_{upper_bound_ns}_ns"), *count));
    }
    counters
}

fn counter(name: &str, value: u64) -> Counter {
    Counter {
        name: name.to_owned(),
        value,
    }
}

fn storage(error: impl std::fmt::Display) -> StoreError {
    StoreError::Storage(error.to_string())
}

/// Reserves the store's dimension with the batch's first vector; rejects
/// mismatches, within the batch or with the store.
fn fix_dimension(ids: &Ids, memories: &[MemoryRef<'_>]) -> Result<(), StoreError> {
    let mut dims = (memories.iter().enumerate()).filter_map(|(i, m)| m.vector.map(|v| (i, v.len() as u32)));
    let Some((first_index, first)) = dims.next() else {
        return Ok(());
    };
    if let Some((index, got)) = dims.find(|(_, d)| *d != first) {
        return Err(StoreError::MixedDimensions {
            index,
            expected: first,
            got,
        });
    }
    ids.reserve_dimension(first)
        .map_err(|current| StoreError::DimensionMismatch {
            subject: Subject::Memory(first_index),
            expected: current,
            got: first,
        })
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
    replayed: &wal::ReplayReport,
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
        (Some(stored), configured) if configured != 0 && configured != stored => Err(StoreError::Storage(format!(
            "the configured dimension {configured} differs from the stored vectors' dimension {stored}"
        ))),
        (Some(stored), _) => Ok(stored),
        (None, configured) => Ok(configured),
    }
}

/// One daemon per data directory: an exclusive flock on `<dir>/LOCK`.
///
/// The directory is private to the daemon (see [`create_private_dir`]).
/// `LOCK` is opened 0600, never through a symlink (`O_NOFOLLOW`: a link
/// planted there cannot make us create or clobber another file) and never
/// truncated before the flock is ours, so a running daemon's lock file stays
/// as it is; once held, it records our pid for the next daemon's error.
fn lock_data_dir(dir: &Path) -> Result<Flock<File>, StoreError> {
    use std::io::Read;
    use std::os::unix::fs::{FileExt, OpenOptionsExt};
    create_private_dir(dir)?;
    let path = dir.join("LOCK");
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(&path)
        .map_err(|e| StoreError::Storage(format!("cannot open {} (a symlink is refused): {e}", path.display())))?;
    let lock = Flock::lock(file, FlockArg::LockExclusiveNonblock).map_err(|(file, errno)| {
        let mut holder = String::new();
        let _ = (&file).take(32).read_to_string(&mut holder);
        let pid = Some(holder.trim()).filter(|pid| !pid.is_empty()).unwrap_or("unknown");
        StoreError::Storage(format!(
            "the data directory {} is in use by another nexusd (pid {pid}, {errno})",
            dir.display()
        ))
    })?;
    let pid = format!("{}\n", std::process::id());
    // Best effort: the pid only improves another daemon's error message.
    let _ = lock.set_len(0).and_then(|()| lock.write_all_at(pid.as_bytes(), 0));
    Ok(lock)
}

/// Creates the data directory 0700 (with missing parents), or checks a
/// pre-existing one: it must be a directory owned by the daemon's uid that
/// neither its group nor others can write, since whoever can write it could
/// replace the WAL or a snapshot under the daemon.
fn create_private_dir(dir: &Path) -> Result<(), StoreError> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt};
    let refuse = |why: String| StoreError::Storage(format!("the data directory {} {why}", dir.display()));
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| refuse(format!("cannot be created: {e}")))?;
    let meta = std::fs::metadata(dir).map_err(|e| refuse(format!("cannot be read: {e}")))?;
    let uid = nix::unistd::geteuid().as_raw();
    if !meta.is_dir() {
        return Err(refuse("is not a directory".into()));
    }
    if meta.uid() != uid {
        return Err(refuse(format!(
            "is owned by uid {}, not by nexusd's uid {uid}",
            meta.uid()
        )));
    }
    let mode = meta.mode() & 0o7777;
    if mode & 0o022 != 0 {
        return Err(refuse(format!(
            "is writable by its group or others (mode {mode:o}); make it private (chmod 700)"
        )));
    }
    Ok(())
}
