//! The [`Wal`] handle and its one writer thread: group commit, rotation, fail-stop.
//!
//! One thread owns the active segment, so writes need no lock and LSNs are simply the
//! order in which the thread takes appends off the queue. Async callers talk to it
//! through a bounded tokio channel; it blocks on that channel (`blocking_recv`), or,
//! under [`FsyncPolicy::Interval`] with unsynced records, on a private current-thread
//! runtime that adds the sync deadline.
//!
//! Not here: framing (`record.rs`), segment files (`segment.rs`), replay, and anything
//! about what a payload means (the [`Committer`]).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};

use super::fs::{WalDir, WalFs};
use super::record::{self, MAX_PAYLOAD_BYTES};
use super::segment::{self, ActiveSegment, SegmentFile};
use super::{Committer, FsyncPolicy, Lsn, WalConfig, WalError, is_out_of_space};

/// How long [`Wal::shutdown`] waits for the writer: a full queue (at most
/// `MAX_QUEUE_DEPTH` appends in groups) plus a few syncs at the 9 ms p99 measured here
/// take well under this; past it something is stuck and the caller should know.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(30);
/// Buckets of the log2 histograms: enough for any u64 value.
const HISTOGRAM_BUCKETS: usize = 65;

/// How far past the last record [`Writer::zero_ahead`] writes zeros: 1 MiB
/// costs one longer fdatasync (~2 ms here) per ~1 MiB of log.
const ZERO_AHEAD_BYTES: u64 = 1 << 20;

/// Groups at least this big are written without zeroing ahead: their own
/// fdatasync takes milliseconds, so the journal commit that writing into
/// preallocated space adds is noise, while zeroing would double the bytes the
/// disk writes (a bandwidth-bound batch would run at half speed).
const BIG_GROUP_BYTES: u64 = 256 << 10;

/// Capacity of the group buffer kept between groups.
const RETAINED_BUF_BYTES: usize = 16 << 20;

/// The zeros written ahead, a piece at a time.
static ZEROS: [u8; 64 << 10] = [0; 64 << 10];

/// Handle to a running WAL. `Send + Sync`: share it with `Arc`; [`Wal::shutdown`] needs
/// the last owner.
pub struct Wal<T> {
    tx: mpsc::Sender<Command<T>>,
    shared: Arc<Shared>,
    fs: Arc<dyn WalFs>,
    wal_dir: PathBuf,
    /// The WAL directory, held open (see [`WalDir`]).
    dir: Arc<dyn WalDir>,
    thread: JoinHandle<Result<Lsn, WalError>>,
}

/// A segment the writer no longer appends to, fully synced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedSegment {
    pub path: PathBuf,
    pub first_lsn: Lsn,
    /// Last LSN it holds (`first_lsn - 1` if it holds none).
    pub last_lsn: Lsn,
    pub bytes: u64,
}

/// What [`Wal::rotate`] left behind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RotateInfo {
    /// Every sealed segment still on disk, oldest first.
    pub sealed: Vec<SealedSegment>,
    /// First LSN of the new active segment.
    pub active_first_lsn: Lsn,
}

/// A snapshot of the WAL's counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WalStats {
    /// Bytes of segment files (preallocation included).
    pub bytes_on_disk: u64,
    /// Segment files, the active one included.
    pub segments: u64,
    /// Every record up to this LSN has been fdatasync'ed.
    pub durable_lsn: Lsn,
    /// Every record up to this LSN has been acknowledged (> durable_lsn only under
    /// `Interval`/`Never`).
    pub acked_lsn: Lsn,
    pub records_acked: u64,
    /// Bytes of acknowledged records, framing included (what the log grew by).
    pub record_bytes: u64,
    pub records_failed: u64,
    pub groups: u64,
    /// fdatasyncs of segment files (groups, flushes, rotations, creations).
    pub fsyncs: u64,
    /// fsyncs of the WAL directory.
    pub dir_syncs: u64,
    /// fdatasync latency of groups/flushes: `(upper_bound_ns, count)`, log2 buckets,
    /// non-empty ones only; a bucket holds values in `[upper_bound / 2, upper_bound)`.
    pub fsync_latency_ns: Vec<(u64, u64)>,
    /// Records per group: `(upper_bound_records, count)`, same buckets.
    pub group_records: Vec<(u64, u64)>,
    /// The WAL is fail-stopped (see [`WalError::Failed`]).
    pub failed: bool,
}

impl<T: Send + 'static> Wal<T> {
    /// Opens `config.dir/wal`, creates the active segment at `next_lsn` (after replay:
    /// `report.last_lsn + 1`) and spawns the writer thread.
    pub fn start<C: Committer<Ticket = T>>(
        config: WalConfig,
        fs: Arc<dyn WalFs>,
        next_lsn: Lsn,
        committer: C,
    ) -> Result<Self, WalError> {
        config.validate()?;
        if next_lsn == 0 {
            return Err(WalError::InvalidConfig("next_lsn must be at least 1".into()));
        }
        let wal_dir = prepare_dir(&*fs, &config.dir)?;
        let dir = (fs.open_dir(&wal_dir)).map_err(|source| WalError::io("open directory", &wal_dir, source))?;
        let sealed = adopt_existing(&*fs, &*dir, &wal_dir, next_lsn)?;
        let active = segment::create_segment(&*fs, &*dir, &wal_dir, next_lsn, config.segment_bytes)?;
        let shared = Arc::new(Shared::new(next_lsn - 1, sealed, active.len_bytes));
        shared.count_segment_created();
        let (tx, rx) = mpsc::channel(config.queue_depth);
        let files = Files {
            fs: Arc::clone(&fs),
            dir: Arc::clone(&dir),
        };
        let writer = Writer::new(config, files, Arc::clone(&shared), committer, rx, active)?;
        let thread = std::thread::Builder::new()
            .name("nexus-wal".into())
            .spawn(move || writer.run())
            .map_err(|source| WalError::io("spawn writer thread", &wal_dir, source))?;
        Ok(Self {
            tx,
            shared,
            fs,
            wal_dir,
            dir,
            thread,
        })
    }

    /// Queues a record. `Ok` means queued: the outcome arrives at the [`Committer`].
    /// On `Err` the ticket is dropped and the committer never sees it.
    /// The payload is any owner of the bytes (a `Vec<u8>`, or a shared record the
    /// caller keeps using): the writer only reads it.
    pub async fn append(&self, payload: impl AsRef<[u8]> + Send + 'static, ticket: T) -> Result<(), WalError> {
        self.shared.check_failed()?;
        let len = payload.as_ref().len();
        if len > MAX_PAYLOAD_BYTES {
            return Err(WalError::PayloadTooLarge {
                len,
                max: MAX_PAYLOAD_BYTES,
            });
        }
        // A big payload's checksum pass runs here, on the caller's thread: the
        // writer thread only combines it with the header's (see record::header).
        let crc = record::payload_crc(payload.as_ref());
        let payload = Payload {
            bytes: Box::new(payload),
            crc,
        };
        let command = Command::Append { payload, ticket };
        self.tx.send(command).await.map_err(|_| WalError::Closed)
    }

    /// Makes everything appended before this call durable (fdatasync whatever the
    /// policy) and returns the durable LSN.
    pub async fn flush(&self) -> Result<Lsn, WalError> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Command::Flush { reply })
            .await
            .map_err(|_| WalError::Closed)?;
        answer.await.map_err(|_| WalError::Closed)?
    }

    /// Seals the active segment (if it holds records) and starts a new one.
    pub async fn rotate(&self) -> Result<RotateInfo, WalError> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Command::Rotate { reply })
            .await
            .map_err(|_| WalError::Closed)?;
        answer.await.map_err(|_| WalError::Closed)?
    }

    /// Deletes the sealed segments whose last LSN is `<= lsn` (oldest first, so a crash
    /// midway leaves a contiguous log), then syncs the directory. Returns bytes freed.
    pub fn remove_segments_up_to(&self, lsn: Lsn) -> Result<u64, WalError> {
        let victims = self.shared.take_sealed_up_to(lsn);
        let mut freed_bytes = 0;
        for (idx, victim) in victims.iter().enumerate() {
            if let Err(source) = self.fs.remove_file(&victim.path) {
                self.shared.return_sealed(victims[idx..].to_vec());
                return Err(WalError::io("remove", &victim.path, source));
            }
            freed_bytes += victim.bytes;
        }
        if !victims.is_empty() {
            let synced = self.dir.sync();
            synced.map_err(|source| WalError::SyncFailed {
                path: self.wal_dir.clone(),
                source,
            })?;
            self.shared.dir_syncs.fetch_add(1, Ordering::Relaxed);
        }
        Ok(freed_bytes)
    }

    pub fn stats(&self) -> WalStats {
        self.shared.stats()
    }

    /// Segment files, the active one included (cheap: no stats snapshot).
    pub fn segment_count(&self) -> u64 {
        self.shared.sealed().len() as u64 + 1
    }

    /// Why the WAL refuses writes, once it fail-stopped (see [`WalError::Failed`]).
    pub fn failure(&self) -> Option<String> {
        self.shared.failed.get().cloned()
    }

    /// Stops taking appends, lets the writer drain the queue, write, sync and seal, and
    /// joins it (at most `SHUTDOWN_TIMEOUT`, 30 s). Returns the durable LSN, or the error
    /// that failed the WAL. Blocks: call it from a blocking context.
    pub fn shutdown(self) -> Result<Lsn, WalError> {
        self.shutdown_within(SHUTDOWN_TIMEOUT)
    }

    /// [`Wal::shutdown`] waiting at most `bound` for the writer. Past it (an
    /// fdatasync that does not return) the writer thread is left behind and
    /// [`WalError::ShutdownTimedOut`] returned: what it was syncing was never
    /// acknowledged, so the caller may exit.
    pub fn shutdown_within(self, bound: Duration) -> Result<Lsn, WalError> {
        let Self { tx, shared, thread, .. } = self;
        drop(tx); // the writer's receive loop ends once the queue is empty
        if !shared.wait_exited(bound) {
            return Err(WalError::ShutdownTimedOut(bound));
        }
        let panicked = || WalError::Failed {
            cause: "the WAL writer thread panicked".into(),
        };
        thread.join().map_err(|_| panicked())?
    }
}

impl<T> std::fmt::Debug for Wal<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wal")
            .field("wal_dir", &self.wal_dir)
            .field("stats", &self.shared.stats())
            .finish_non_exhaustive()
    }
}

/// A record's bytes, owned by whatever the caller handed to [`Wal::append`],
/// with their plain crc32c if they are big (`record::payload_crc`).
struct Payload {
    bytes: Box<dyn AsRef<[u8]> + Send>,
    crc: Option<u32>,
}

impl Payload {
    fn bytes(&self) -> &[u8] {
        (*self.bytes).as_ref()
    }

    fn len(&self) -> usize {
        self.bytes().len()
    }
}

enum Command<T> {
    Append {
        payload: Payload,
        ticket: T,
    },
    Flush {
        reply: oneshot::Sender<Result<Lsn, WalError>>,
    },
    Rotate {
        reply: oneshot::Sender<Result<RotateInfo, WalError>>,
    },
}

impl<T> std::fmt::Debug for Command<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Append { payload, .. } => write!(f, "Append({} bytes)", payload.len()),
            Self::Flush { .. } => write!(f, "Flush"),
            Self::Rotate { .. } => write!(f, "Rotate"),
        }
    }
}

/// State shared between the handle and the writer thread.
#[derive(Debug)]
struct Shared {
    /// Set once, by the writer, when the WAL fail-stops; the cause for error messages.
    failed: OnceLock<String>,
    durable_lsn: AtomicU64,
    acked_lsn: AtomicU64,
    records_acked: AtomicU64,
    record_bytes: AtomicU64,
    records_failed: AtomicU64,
    groups: AtomicU64,
    fsyncs: AtomicU64,
    dir_syncs: AtomicU64,
    active_bytes: AtomicU64,
    fsync_latency_ns: Log2Histogram,
    group_records: Log2Histogram,
    sealed: Mutex<Vec<SealedSegment>>,
    exited: Mutex<bool>,
    exited_changed: Condvar,
}

impl Shared {
    fn new(last_lsn: Lsn, sealed: Vec<SealedSegment>, active_bytes: u64) -> Self {
        Self {
            failed: OnceLock::new(),
            durable_lsn: AtomicU64::new(last_lsn),
            acked_lsn: AtomicU64::new(last_lsn),
            records_acked: AtomicU64::new(0),
            record_bytes: AtomicU64::new(0),
            records_failed: AtomicU64::new(0),
            groups: AtomicU64::new(0),
            fsyncs: AtomicU64::new(0),
            dir_syncs: AtomicU64::new(0),
            active_bytes: AtomicU64::new(active_bytes),
            fsync_latency_ns: Log2Histogram::default(),
            group_records: Log2Histogram::default(),
            sealed: Mutex::new(sealed),
            exited: Mutex::new(false),
            exited_changed: Condvar::new(),
        }
    }

    fn check_failed(&self) -> Result<(), WalError> {
        match self.failed.get() {
            Some(cause) => Err(WalError::Failed { cause: cause.clone() }),
            None => Ok(()),
        }
    }

    fn count_segment_created(&self) {
        self.fsyncs.fetch_add(1, Ordering::Relaxed);
        self.dir_syncs.fetch_add(1, Ordering::Relaxed);
    }

    fn sealed(&self) -> std::sync::MutexGuard<'_, Vec<SealedSegment>> {
        // The lists are only pushed/drained whole, so a panic elsewhere cannot leave
        // one half-updated: poisoning carries no information here.
        self.sealed.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn take_sealed_up_to(&self, lsn: Lsn) -> Vec<SealedSegment> {
        let mut sealed = self.sealed();
        let split = sealed
            .iter()
            .position(|segment| segment.last_lsn > lsn)
            .unwrap_or(sealed.len());
        sealed.drain(..split).collect()
    }

    fn return_sealed(&self, mut segments: Vec<SealedSegment>) {
        let mut sealed = self.sealed();
        segments.append(&mut sealed);
        *sealed = segments;
    }

    fn stats(&self) -> WalStats {
        let sealed = self.sealed();
        let sealed_bytes: u64 = sealed.iter().map(|segment| segment.bytes).sum();
        WalStats {
            bytes_on_disk: sealed_bytes + self.active_bytes.load(Ordering::Relaxed),
            segments: sealed.len() as u64 + 1,
            durable_lsn: self.durable_lsn.load(Ordering::Relaxed),
            acked_lsn: self.acked_lsn.load(Ordering::Relaxed),
            records_acked: self.records_acked.load(Ordering::Relaxed),
            record_bytes: self.record_bytes.load(Ordering::Relaxed),
            records_failed: self.records_failed.load(Ordering::Relaxed),
            groups: self.groups.load(Ordering::Relaxed),
            fsyncs: self.fsyncs.load(Ordering::Relaxed),
            dir_syncs: self.dir_syncs.load(Ordering::Relaxed),
            fsync_latency_ns: self.fsync_latency_ns.snapshot(),
            group_records: self.group_records.snapshot(),
            failed: self.failed.get().is_some(),
        }
    }

    fn wait_exited(&self, timeout: Duration) -> bool {
        let exited = self.exited.lock().unwrap_or_else(PoisonError::into_inner);
        let waited = self
            .exited_changed
            .wait_timeout_while(exited, timeout, |exited| !*exited);
        let (exited, _) = waited.unwrap_or_else(PoisonError::into_inner);
        *exited
    }
}

/// Counts of values by power of two.
#[derive(Debug)]
struct Log2Histogram {
    buckets: [AtomicU64; HISTOGRAM_BUCKETS],
}

impl Default for Log2Histogram {
    fn default() -> Self {
        Self {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

impl Log2Histogram {
    fn record(&self, value: u64) {
        let idx = (u64::BITS - value.leading_zeros()) as usize;
        self.buckets[idx].fetch_add(1, Ordering::Relaxed);
    }

    fn snapshot(&self) -> Vec<(u64, u64)> {
        let upper_bound = |idx: usize| 1_u64.checked_shl(idx as u32).unwrap_or(u64::MAX);
        let counts = self.buckets.iter().map(|bucket| bucket.load(Ordering::Relaxed));
        counts
            .enumerate()
            .filter(|&(_, count)| count > 0)
            .map(|(idx, count)| (upper_bound(idx), count))
            .collect()
    }
}

/// Tells [`Wal::shutdown`] the thread is done, however it ends (a panicking committer
/// included, which also fail-stops the WAL).
struct ExitSignal(Arc<Shared>);

impl Drop for ExitSignal {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let _ = self.0.failed.set("the WAL writer thread panicked".into());
        }
        *self.0.exited.lock().unwrap_or_else(PoisonError::into_inner) = true;
        self.0.exited_changed.notify_all();
    }
}

/// A queued record of the group being built.
struct Pending<T> {
    payload: Payload,
    ticket: T,
}

/// The file system and the WAL directory held open, as the writer uses them.
struct Files {
    fs: Arc<dyn WalFs>,
    dir: Arc<dyn WalDir>,
}

/// The writer thread's state.
struct Writer<C: Committer> {
    config: WalConfig,
    fs: Arc<dyn WalFs>,
    dir: Arc<dyn WalDir>,
    wal_dir: PathBuf,
    shared: Arc<Shared>,
    committer: C,
    rx: mpsc::Receiver<Command<C::Ticket>>,
    active: ActiveSegment,
    /// LSN the next record will get.
    next_lsn: Lsn,
    /// Every record up to here is fdatasync'ed.
    durable_lsn: Lsn,
    last_sync: Instant,
    group: Vec<Pending<C::Ticket>>,
    /// A command taken off the queue that did not fit the group being built.
    pending: Option<Command<C::Ticket>>,
    buf: Vec<u8>,
    /// Only under `Interval`: waits on the queue with a deadline.
    timer: Option<tokio::runtime::Runtime>,
}

impl<C: Committer> Writer<C> {
    fn new(
        config: WalConfig,
        files: Files,
        shared: Arc<Shared>,
        committer: C,
        rx: mpsc::Receiver<Command<C::Ticket>>,
        active: ActiveSegment,
    ) -> Result<Self, WalError> {
        let wal_dir = segment::wal_dir(&config.dir);
        let timer = match config.fsync {
            FsyncPolicy::Interval(_) => Some(build_timer(&wal_dir)?),
            FsyncPolicy::Always | FsyncPolicy::Never => None,
        };
        let next_lsn = active.first_lsn;
        let buf = Vec::with_capacity(config.max_group_bytes.min(record::framed_len(MAX_PAYLOAD_BYTES)));
        Ok(Self {
            config,
            fs: files.fs,
            dir: files.dir,
            wal_dir,
            shared,
            committer,
            rx,
            active,
            next_lsn,
            durable_lsn: next_lsn - 1,
            last_sync: Instant::now(),
            group: Vec::new(),
            pending: None,
            buf,
            timer,
        })
    }

    fn run(mut self) -> Result<Lsn, WalError> {
        let _exit = ExitSignal(Arc::clone(&self.shared));
        while let Some(command) = self.next_command() {
            self.handle(command);
        }
        self.finish()
    }

    fn handle(&mut self, command: Command<C::Ticket>) {
        match command {
            Command::Append { payload, ticket } => {
                self.group.push(Pending { payload, ticket });
                self.collect_group();
                self.commit_group();
            }
            Command::Flush { reply } => {
                let _ = reply.send(self.flush());
            }
            Command::Rotate { reply } => {
                let _ = reply.send(self.rotate());
            }
        }
    }

    /// The next command, syncing on the way if an `Interval` deadline passes first.
    /// `None` once every handle is gone and the queue is empty.
    fn next_command(&mut self) -> Option<Command<C::Ticket>> {
        if let Some(command) = self.pending.take() {
            return Some(command);
        }
        loop {
            let (Some(deadline), Some(timer)) = (self.sync_deadline(), &self.timer) else {
                return self.rx.blocking_recv();
            };
            // The timeout is built inside `block_on`: its timer needs the runtime's context.
            let rx = &mut self.rx;
            let received = timer.block_on(async { tokio::time::timeout_at(deadline.into(), rx.recv()).await });
            match received {
                Ok(command) => return command,
                Err(_elapsed) => self.sync_quietly(),
            }
        }
    }

    /// Takes queued appends into the group until it holds `max_group_bytes`.
    fn collect_group(&mut self) {
        let mut group_bytes: usize = self.group.iter().map(|p| record::framed_len(p.payload.len())).sum();
        while group_bytes < self.config.max_group_bytes {
            let Ok(command) = self.rx.try_recv() else { break };
            let Command::Append { payload, ticket } = command else {
                self.pending = Some(command);
                break;
            };
            let framed_bytes = record::framed_len(payload.len());
            if group_bytes + framed_bytes > self.config.max_group_bytes {
                self.pending = Some(Command::Append { payload, ticket });
                break;
            }
            group_bytes += framed_bytes;
            self.group.push(Pending { payload, ticket });
        }
    }

    /// Writes the group, syncs it per policy, and reports every record's outcome.
    fn commit_group(&mut self) {
        let mut group = std::mem::take(&mut self.group);
        let result = match self.shared.check_failed() {
            Ok(()) => self.write_group(&group),
            Err(failed) => Err(failed),
        };
        match result {
            Ok(first_lsn) => self.ack(&mut group, first_lsn),
            Err(error) => self.fail(&mut group, &Arc::new(error)),
        }
        self.group = group; // keep the allocation
        // Keep room for the biggest groups seen (a 1,000-memory batch is one ~3 MB
        // record); give back only what is beyond any sane group.
        if self.buf.capacity() > RETAINED_BUF_BYTES.max(2 * self.config.max_group_bytes) {
            self.buf = Vec::with_capacity(self.config.max_group_bytes);
        }
    }

    /// One write (and, under `Always`, one sync) for the whole group; returns the first
    /// LSN. On error nothing of the group is acknowledged and no LSN is consumed.
    fn write_group(&mut self, group: &[Pending<C::Ticket>]) -> Result<Lsn, WalError> {
        let group_bytes: u64 = group.iter().map(|p| record::framed_len(p.payload.len()) as u64).sum();
        if self.active.has_records() && self.active.end_offset + group_bytes > self.config.segment_bytes {
            self.rotate_segment().map_err(|error| self.escalate(error))?;
        }
        let first_lsn = self.next_lsn;
        let offset = self.active.end_offset;
        if let Err(source) = self.zero_ahead(offset, offset + group_bytes) {
            let error = self.recover_from_write_error(source, offset);
            return Err(self.escalate(error));
        }
        let written = match group {
            // A lone record (a big batch usually is) goes out from the caller's
            // buffer: header, payload and padding in one pwritev, no copy.
            [alone] => {
                let payload = alone.payload.bytes();
                let header = record::header(self.active.salt, first_lsn, payload, alone.payload.crc);
                let padding = &ZEROS[..record::padding_len(payload.len())];
                self.active.file.write_pieces_at(&[&header, payload, padding], offset)
            }
            _ => {
                self.buf.clear();
                for (lsn, pending) in (first_lsn..).zip(group) {
                    let (salt, bytes, crc) = (self.active.salt, pending.payload.bytes(), pending.payload.crc);
                    record::encode_with_crc_into(&mut self.buf, salt, lsn, bytes, crc);
                }
                debug_assert_eq!(self.buf.len() as u64, group_bytes);
                self.active.file.write_all_at(&self.buf, offset)
            }
        };
        if let Err(source) = written {
            let error = self.recover_from_write_error(source, offset);
            return Err(self.escalate(error));
        }
        self.active.end_offset += group_bytes;
        self.active.len_bytes = self.active.len_bytes.max(self.active.end_offset);
        self.shared.active_bytes.store(self.active.len_bytes, Ordering::Relaxed);
        self.next_lsn += group.len() as u64;
        if self.config.fsync == FsyncPolicy::Always {
            self.sync()?;
        }
        Ok(first_lsn)
    }

    /// Makes sure `[.., end)` and the next [`ZERO_AHEAD_BYTES`] are written
    /// blocks, by writing zeros past the last record, at most once per chunk.
    ///
    /// Why: fallocated space is "unwritten" to the file system, so an fdatasync
    /// after writing into it must also commit the extent conversion to the
    /// journal; over blocks already written it only flushes data. Measured on
    /// these machines (ext4, virtio): append 4 KiB + fdatasync 232 µs into
    /// fallocated space, 155 µs into written space. PostgreSQL zero-fills whole
    /// WAL segments for the same reason; zeroing a chunk ahead instead keeps
    /// segment creation (and so start-up and rotation) cheap. The zeros are
    /// made durable by the group's own fdatasync, and replay already reads
    /// zeros as the end of the log.
    ///
    /// A big group (see [`BIG_GROUP_BYTES`]) is not zeroed ahead: its own bytes
    /// are written blocks once written, which is all `zeroed_until` promises.
    fn zero_ahead(&mut self, offset: u64, end: u64) -> std::io::Result<()> {
        let segment = &mut self.active;
        if end <= segment.zeroed_until {
            return Ok(());
        }
        if end - offset >= BIG_GROUP_BYTES {
            segment.zeroed_until = end;
            return Ok(());
        }
        let start = segment.zeroed_until.max(end);
        let stop = (end + ZERO_AHEAD_BYTES).min(segment.len_bytes.max(self.config.segment_bytes));
        let mut at = start;
        while at < stop {
            let piece = (stop - at).min(ZEROS.len() as u64);
            segment.file.write_all_at(&ZEROS[..piece as usize], at)?;
            at += piece;
        }
        segment.zeroed_until = stop.max(end);
        segment.len_bytes = segment.len_bytes.max(segment.zeroed_until);
        Ok(())
    }

    /// After a failed write at `offset`: out of space is survivable (truncate the
    /// partial group away, sync, let later appends retry); anything else is not.
    fn recover_from_write_error(&mut self, source: std::io::Error, offset: u64) -> WalError {
        if !is_out_of_space(&source) {
            return WalError::io("write", &self.active.path, source);
        }
        tracing::warn!(path = %self.active.path.display(), offset, "WAL out of space; failing this group");
        if let Err(source) = self.active.file.set_len(offset) {
            return WalError::io("truncate", &self.active.path, source);
        }
        self.active.len_bytes = offset;
        self.active.zeroed_until = self.active.zeroed_until.min(offset);
        let reserve_bytes = self.config.segment_bytes.saturating_sub(offset);
        if reserve_bytes > 0 && self.active.file.allocate(offset, reserve_bytes).is_ok() {
            self.active.len_bytes = offset + reserve_bytes;
        }
        self.shared.active_bytes.store(self.active.len_bytes, Ordering::Relaxed);
        // The truncation must be durable before anything later is acknowledged, or a
        // crash could resurrect the partial group's records after they were failed.
        match self.sync() {
            Ok(()) => WalError::DiskFull {
                op: "write",
                path: self.active.path.clone(),
            },
            Err(error) => error,
        }
    }

    fn ack(&mut self, group: &mut Vec<Pending<C::Ticket>>, first_lsn: Lsn) {
        let last_lsn = first_lsn + group.len() as u64 - 1;
        assert_eq!(
            last_lsn,
            self.next_lsn - 1,
            "a group's LSNs end where the next group starts"
        );
        if self.config.fsync == FsyncPolicy::Always {
            assert!(last_lsn <= self.durable_lsn, "acknowledge only what fdatasync covered");
        }
        self.shared.groups.fetch_add(1, Ordering::Relaxed);
        self.shared.group_records.record(group.len() as u64);
        self.shared
            .records_acked
            .fetch_add(group.len() as u64, Ordering::Relaxed);
        let group_bytes: usize = group.iter().map(|p| record::framed_len(p.payload.len())).sum();
        self.shared
            .record_bytes
            .fetch_add(group_bytes as u64, Ordering::Relaxed);
        self.shared.acked_lsn.store(last_lsn, Ordering::Relaxed);
        for (lsn, pending) in (first_lsn..).zip(group.drain(..)) {
            self.committer.durable(lsn, pending.ticket);
        }
        self.committer.group_done();
        if self.sync_deadline().is_some_and(|deadline| deadline <= Instant::now()) {
            self.sync_quietly();
        }
    }

    fn fail(&mut self, group: &mut Vec<Pending<C::Ticket>>, error: &Arc<WalError>) {
        self.shared
            .records_failed
            .fetch_add(group.len() as u64, Ordering::Relaxed);
        for pending in group.drain(..) {
            self.committer.failed(pending.ticket, error);
        }
    }

    fn flush(&mut self) -> Result<Lsn, WalError> {
        self.shared.check_failed()?;
        if self.durable_lsn + 1 < self.next_lsn {
            self.sync()?;
        }
        Ok(self.durable_lsn)
    }

    fn rotate(&mut self) -> Result<RotateInfo, WalError> {
        self.shared.check_failed()?;
        if self.active.has_records() {
            self.rotate_segment().map_err(|error| self.escalate(error))?;
        }
        let sealed = self.shared.sealed().clone();
        Ok(RotateInfo {
            sealed,
            active_first_lsn: self.active.first_lsn,
        })
    }

    /// Seals the active segment (everything in it synced) before the next one exists:
    /// replay treats a bad record followed by a later segment as corruption, so no
    /// later segment may appear while this one has unsynced bytes. If the new segment
    /// cannot be created, the sealed one simply stays active.
    fn rotate_segment(&mut self) -> Result<(), WalError> {
        self.seal_active()?;
        let (fs, dir) = (&*self.fs, &*self.dir);
        let next = segment::create_segment(fs, dir, &self.wal_dir, self.next_lsn, self.config.segment_bytes)?;
        self.shared.count_segment_created();
        let old = std::mem::replace(&mut self.active, next);
        let sealed = SealedSegment {
            path: old.path,
            first_lsn: old.first_lsn,
            last_lsn: self.next_lsn - 1,
            bytes: old.len_bytes,
        };
        tracing::debug!(path = %sealed.path.display(), last_lsn = sealed.last_lsn, "WAL segment sealed");
        self.shared.sealed().push(sealed);
        self.shared.active_bytes.store(self.active.len_bytes, Ordering::Relaxed);
        Ok(())
    }

    /// Gives back the preallocated tail and syncs everything written.
    fn seal_active(&mut self) -> Result<(), WalError> {
        let end_offset = self.active.end_offset;
        if self.active.len_bytes != end_offset {
            let truncated = self.active.file.set_len(end_offset);
            truncated.map_err(|source| WalError::io("truncate", &self.active.path, source))?;
            self.active.len_bytes = end_offset;
            self.shared.active_bytes.store(end_offset, Ordering::Relaxed);
        }
        self.sync()
    }

    /// fdatasync of the active segment. A failure fail-stops the WAL: it is never
    /// retried, because a second fsync can succeed after the data was dropped.
    fn sync(&mut self) -> Result<(), WalError> {
        let started = Instant::now();
        let result = self.active.file.sync_data();
        let elapsed_ns = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.shared.fsyncs.fetch_add(1, Ordering::Relaxed);
        self.shared.fsync_latency_ns.record(elapsed_ns);
        // The Prometheus histogram (process-wide: see `metrics::WAL_FSYNC`).
        crate::metrics::WAL_FSYNC.observe(elapsed_ns);
        if let Err(source) = result {
            let error = WalError::SyncFailed {
                path: self.active.path.clone(),
                source,
            };
            self.enter_failed(&error);
            return Err(error);
        }
        self.last_sync = Instant::now();
        self.durable_lsn = self.next_lsn - 1;
        self.shared.durable_lsn.store(self.durable_lsn, Ordering::Relaxed);
        Ok(())
    }

    /// An `Interval` sync nobody waits for: its failure is recorded (fail-stop) and
    /// logged by `enter_failed`.
    fn sync_quietly(&mut self) {
        let _ = self.sync();
    }

    /// When the next `Interval` sync is due, if one is.
    fn sync_deadline(&self) -> Option<Instant> {
        let FsyncPolicy::Interval(interval) = self.config.fsync else {
            return None;
        };
        let unsynced = self.durable_lsn + 1 < self.next_lsn;
        (unsynced && self.shared.failed.get().is_none()).then(|| self.last_sync + interval)
    }

    /// Everything but running out of space or of file descriptors (nothing was
    /// written: the next group tries again) fail-stops the WAL.
    fn escalate(&mut self, error: WalError) -> WalError {
        let survivable = matches!(
            error,
            WalError::DiskFull { .. } | WalError::OutOfFds { .. } | WalError::Failed { .. }
        );
        if !survivable {
            self.enter_failed(&error);
        }
        error
    }

    fn enter_failed(&mut self, error: &WalError) {
        if self.shared.failed.set(error.to_string()).is_ok() {
            tracing::error!(%error, durable_lsn = self.durable_lsn, "WAL failed; refusing further writes");
        }
    }

    /// The queue is closed and drained: seal what was written.
    fn finish(mut self) -> Result<Lsn, WalError> {
        self.shared.check_failed()?;
        self.seal_active()?;
        Ok(self.durable_lsn)
    }
}

fn build_timer(wal_dir: &Path) -> Result<tokio::runtime::Runtime, WalError> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_time().build();
    runtime.map_err(|source| WalError::io("build the sync timer", wal_dir, source))
}

/// Creates `dir/wal` (syncing `dir` so the new entry persists) and returns its path.
fn prepare_dir(fs: &dyn WalFs, dir: &Path) -> Result<PathBuf, WalError> {
    let wal_dir = segment::wal_dir(dir);
    fs.create_dir_all(&wal_dir)
        .map_err(|source| WalError::io("create directory", &wal_dir, source))?;
    fs.sync_dir(dir).map_err(|source| WalError::SyncFailed {
        path: dir.to_owned(),
        source,
    })?;
    Ok(wal_dir)
}

/// Lists the segments a previous run left and turns them into sealed segments. Their
/// last LSNs follow from contiguity: each ends where the next begins, the newest ends
/// at `next_lsn - 1`. A newest segment named `next_lsn` must hold no record (it was
/// created, then the daemon stopped before any append): it is removed to be recreated.
fn adopt_existing(
    fs: &dyn WalFs,
    dir: &dyn WalDir,
    wal_dir: &Path,
    next_lsn: Lsn,
) -> Result<Vec<SealedSegment>, WalError> {
    let mut existing = segment::list_segments(fs, wal_dir)?;
    if let Some(newest) = existing.last().filter(|segment| segment.first_lsn >= next_lsn) {
        if newest.first_lsn > next_lsn || holds_records(fs, newest)? {
            return Err(WalError::LsnConflict {
                existing: newest.path.clone(),
                next_lsn,
            });
        }
        fs.remove_file(&newest.path)
            .map_err(|source| WalError::io("remove", &newest.path, source))?;
        dir.sync().map_err(|source| WalError::SyncFailed {
            path: wal_dir.to_owned(),
            source,
        })?;
        existing.pop();
    }
    if let Some(conflict) = existing.iter().find(|segment| segment.first_lsn >= next_lsn) {
        return Err(WalError::LsnConflict {
            existing: conflict.path.clone(),
            next_lsn,
        });
    }
    let next_firsts: Vec<Lsn> = existing.iter().skip(1).map(|s| s.first_lsn).chain([next_lsn]).collect();
    let sealed = existing
        .into_iter()
        .zip(next_firsts)
        .map(|(segment, next_first)| SealedSegment {
            path: segment.path,
            first_lsn: segment.first_lsn,
            last_lsn: next_first - 1,
            bytes: segment.len_bytes,
        });
    Ok(sealed.collect())
}

/// True if the segment's first record decodes (a header-only or torn segment holds none).
fn holds_records(fs: &dyn WalFs, segment: &SegmentFile) -> Result<bool, WalError> {
    let bytes = fs.read_all(&segment.path, segment::MAX_SEGMENT_FILE_BYTES);
    let bytes = bytes.map_err(|source| WalError::io("read", &segment.path, source))?;
    let Ok(header) = segment::SegmentHeader::decode(&bytes) else {
        return Ok(false);
    };
    Ok(record::decode_at(&bytes, segment::SEGMENT_HEADER_BYTES, header.salt).is_ok())
}
