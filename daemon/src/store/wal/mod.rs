//! The write-ahead log: makes a store mutation durable before the client hears "ok".
//!
//! The payloads are opaque bytes here. The memory store encodes them (rkyv), decides
//! what a record means, assigns ids before logging, applies records to its state and
//! takes snapshots; this module only orders, frames, writes, syncs and replays bytes.
//! It does not lock the data directory (the store does), does not snapshot, and does
//! not decide when segments may be deleted (the store calls
//! [`Wal::remove_segments_up_to`] after a snapshot is durable).
//!
//! # API
//!
//! ```text
//! Wal::start(config, fs, next_lsn, committer) -> Result<Wal<T>, WalError>  // spawns the one writer thread
//! wal.append(payload, ticket).await -> Result<(), WalError>  // enqueue; the outcome goes to the Committer
//! wal.flush().await -> Result<Lsn, WalError>                  // all appended so far fdatasync'ed (any policy)
//! wal.rotate().await -> Result<RotateInfo, WalError>          // seal the active segment, list sealed ones
//! wal.remove_segments_up_to(lsn) -> Result<u64, WalError>     // delete sealed segments whose last LSN <= lsn
//! wal.stats() -> WalStats
//! wal.shutdown() -> Result<Lsn, WalError>                     // drain, write, sync, join (bounded)
//! replay(dir, fs, after_lsn, salvage, apply) -> Result<ReplayReport, WalError>
//! remove_replayed_segments(dir, fs, last_lsn) -> Result<u64, WalError>  // after a snapshot at start
//! measure_fdatasync(dir, samples) -> Result<Vec<Duration>, WalError>  // bare 4 KiB append + fdatasync
//! measure_sync_writes(dir, chunk, n) -> Result<Vec<Duration>, WalError>  // big writes + fdatasync into preallocated space
//! test_fs_from_env() -> Arc<dyn WalFs>  // FaultyFs from NEXUS_FAULT_INJECT, for nexusd-it only
//! ```
//!
//! Life of a record: `append` puts `(payload, ticket)` on a bounded queue
//! ([`WalConfig::queue_depth`]); the payload is any owner of the bytes, and a big one
//! (≥ 256 KiB) gets its crc32c there, on the caller's thread. The writer thread takes
//! everything queued (up to [`WalConfig::max_group_bytes`]), gives the group
//! consecutive LSNs, writes it with one `pwrite` (a lone record: one `pwritev` from its
//! own buffer) and, under [`FsyncPolicy::Always`], one `fdatasync`; then it calls
//! [`Committer::durable`] for each record in LSN order and [`Committer::group_done`]
//! once. If the write or the sync fails, each record of the group goes to
//! [`Committer::failed`] instead and never consumes an LSN. The committer runs on the
//! writer thread, so it must be quick (the store's hands the group to its apply
//! thread) and must not call back into the `Wal`.
//!
//! # On disk
//!
//! Segments are `<dir>/wal/<first_lsn:020>.wal`: a 32-byte header (magic, version,
//! first LSN, a random salt, header crc; see `segment.rs`) then records framed
//! `len u32 | crc32c u32 | lsn u64 | payload | zero padding to 16` (see `record.rs`),
//! little-endian. The crc is seeded with the segment's salt and covers `len`, `lsn` and
//! the payload, so bytes from another segment or an older file never validate. Every
//! payload starts 16-byte aligned in the file and is handed to the replay callback
//! 16-byte aligned in memory, so rkyv can access it in place; the callback may keep it
//! there ([`ReplayPayload::keep`]) instead of copying it.
//!
//! # Failure policy
//!
//! - A failed `fdatasync` (or a non-space write error) poisons the WAL: those records
//!   are failed, every later append fails fast with [`WalError::Failed`], and the sync is
//!   never retried, because on Linux a retried fsync can "succeed" after the kernel has
//!   dropped the dirty pages (fsyncgate). Restart replays what is really on disk.
//! - Running out of file descriptors (EMFILE, ENFILE) when a rotation creates the next
//!   segment is not poisoning either: nothing was written, the group fails with
//!   [`WalError::OutOfFds`] and the next group tries again. The writer holds the WAL
//!   directory open from the start, so syncing it never needs a new descriptor.
//! - Running out of space is not poisoning: the group is failed with
//!   [`WalError::DiskFull`], the active segment is truncated back to the end of the
//!   last acknowledged record and synced, and later appends retry, so writes resume
//!   when space returns. This is safe because no byte past that point was ever
//!   acknowledged, and the truncation is synced before anything else is, so a failed
//!   record cannot reappear after a crash.
//! - [`FsyncPolicy::Interval`] and [`FsyncPolicy::Never`] acknowledge after the write,
//!   before the sync: acknowledged records may be lost on power failure (not on a
//!   process crash) within the interval. Only `Always` makes an ack a durability promise.
//!
//! Replay treats an invalid record followed by nothing valid in the last segment as a
//! torn tail (truncated, reported), and anything else as corruption that refuses to
//! start unless salvage was asked for (`--salvage-wal`). Known limit: a power loss that
//! persists a group's later sectors but not an earlier one looks like mid-log
//! corruption, not a torn tail; salvage recovers it.

mod fs;
#[doc(hidden)]
pub mod fuzz;
mod record;
mod replay;
mod segment;
mod writer;

#[cfg(test)]
mod tests;

use std::io;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

pub use fs::{
    FAULT_INJECT_ENV, Faults, FaultyFs, RealFs, WalDir, WalDirEntry, WalFile, WalFs, measure_fdatasync,
    measure_sync_writes, test_fs_from_env,
};
pub use record::MAX_PAYLOAD_BYTES;
pub use replay::{KeptPayload, ReplayPayload, ReplayReport, Salvaged, TornTail, remove_replayed_segments, replay};
pub use writer::{RotateInfo, SealedSegment, Wal, WalStats};

/// Why the replay callback refused a record: whatever error the store's
/// decoding of a payload gives (boxed: this module does not know payloads).
pub type ApplyError = Box<dyn std::error::Error + Send + Sync>;

/// Log sequence number: 1 for the first record ever, +1 per record, never reused once
/// acknowledged. 0 means "nothing" (an empty store, a snapshot covering nothing).
pub type Lsn = u64;

/// Default rotation size. Big enough that rotation (two syncs of data and one of the
/// directory) is rare; small enough that deleting covered segments after a snapshot
/// frees space in useful steps and that replay holds one segment in memory at a time.
pub const DEFAULT_SEGMENT_BYTES: u64 = 64 << 20;
/// Smallest accepted rotation size (tests use it to get many segments).
pub const MIN_SEGMENT_BYTES: u64 = 4 << 10;
/// Largest accepted rotation size: replay reads a whole segment into memory.
pub const MAX_SEGMENT_BYTES: u64 = 1 << 30;
/// Default group bound: at ~0.4 ms per 4 KiB fdatasync on these disks, 1 MiB per group
/// keeps one sync in the low milliseconds while amortising it over thousands of records.
pub const DEFAULT_MAX_GROUP_BYTES: usize = 1 << 20;
/// Largest accepted group bound: the group is copied into one buffer before the write.
pub const MAX_GROUP_BYTES: usize = 64 << 20;
/// Default queue of appends waiting for the writer: enough to fill several groups while
/// one syncs; beyond it `append` waits, which is the back-pressure clients feel.
pub const DEFAULT_QUEUE_DEPTH: usize = 1024;
/// Largest accepted queue: each queued append holds its payload in memory.
pub const MAX_QUEUE_DEPTH: usize = 1 << 16;

/// When the writer calls `fdatasync`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// Acknowledge only after the group's fdatasync returned: an ack is durable.
    Always,
    /// Acknowledge after the write; fdatasync at most once per interval (and on
    /// flush/rotate/shutdown). Acknowledged writes may be lost on power failure within
    /// the interval.
    Interval(Duration),
    /// Acknowledge after the write; fdatasync only on flush/rotate/shutdown.
    /// Acknowledged writes may be lost on power failure.
    Never,
}

impl FromStr for FsyncPolicy {
    type Err = WalError;

    /// Parses `always`, `never` or `interval:<ms>` (ms between 1 and 60 000).
    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let bad = || WalError::BadFsyncPolicy {
            input: input.to_owned(),
        };
        match input.trim() {
            "always" => Ok(Self::Always),
            "never" => Ok(Self::Never),
            other => {
                let ms: u64 = other
                    .strip_prefix("interval:")
                    .ok_or_else(bad)?
                    .parse()
                    .map_err(|_| bad())?;
                if !(1..=MAX_FSYNC_INTERVAL_MS).contains(&ms) {
                    return Err(bad());
                }
                Ok(Self::Interval(Duration::from_millis(ms)))
            }
        }
    }
}

/// Longest accepted sync interval: past a minute "interval" is "never" by another name.
const MAX_FSYNC_INTERVAL_MS: u64 = 60_000;

/// How the WAL is laid out and paced. Build with [`WalConfig::new`] and adjust fields.
#[derive(Debug, Clone)]
pub struct WalConfig {
    /// Data directory; segments live in `dir/wal/`.
    pub dir: PathBuf,
    /// Rotate when the active segment would grow past this many bytes.
    pub segment_bytes: u64,
    /// When to fdatasync.
    pub fsync: FsyncPolicy,
    /// Upper bound on the framed bytes of one group (a single bigger record still goes
    /// alone).
    pub max_group_bytes: usize,
    /// Appends that may wait for the writer before `append` waits too.
    pub queue_depth: usize,
}

impl WalConfig {
    /// The defaults above, `Always` syncing, in `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            segment_bytes: DEFAULT_SEGMENT_BYTES,
            fsync: FsyncPolicy::Always,
            max_group_bytes: DEFAULT_MAX_GROUP_BYTES,
            queue_depth: DEFAULT_QUEUE_DEPTH,
        }
    }

    fn validate(&self) -> Result<(), WalError> {
        let invalid = |what: String| Err(WalError::InvalidConfig(what));
        if !(MIN_SEGMENT_BYTES..=MAX_SEGMENT_BYTES).contains(&self.segment_bytes) {
            return invalid(format!(
                "segment_bytes {} not in {MIN_SEGMENT_BYTES}..={MAX_SEGMENT_BYTES}",
                self.segment_bytes
            ));
        }
        if !(1..=MAX_GROUP_BYTES).contains(&self.max_group_bytes) {
            return invalid(format!(
                "max_group_bytes {} not in 1..={MAX_GROUP_BYTES}",
                self.max_group_bytes
            ));
        }
        if !(1..=MAX_QUEUE_DEPTH).contains(&self.queue_depth) {
            return invalid(format!("queue_depth {} not in 1..={MAX_QUEUE_DEPTH}", self.queue_depth));
        }
        Ok(())
    }
}

/// Receives the outcome of every appended record, on the writer thread, in LSN order.
/// Time spent here is time the next group waits: keep it short.
pub trait Committer: Send + 'static {
    /// What the caller attached to a record (typically the client's reply channel).
    type Ticket: Send + 'static;

    /// The record is written (and synced, under [`FsyncPolicy::Always`]): apply it to
    /// the state and acknowledge the client.
    fn durable(&mut self, lsn: Lsn, ticket: Self::Ticket);

    /// The record was not acknowledged and has no LSN; tell the client it failed.
    /// Every record of the failed group shares the one error (hence the `Arc`).
    fn failed(&mut self, ticket: Self::Ticket, error: &Arc<WalError>);

    /// Every record of the group just committed went to [`Committer::durable`]; the
    /// writer moves on to the next group after this returns. A committer that hands
    /// its work to another thread sends it here, once per group.
    fn group_done(&mut self) {}
}

/// Everything that can go wrong in the WAL, named as the caller sees it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WalError {
    /// No space: these records were not written; later appends retry.
    #[error("WAL disk full ({op} {path}): the records were not written; writes resume when space is freed")]
    DiskFull { op: &'static str, path: PathBuf },
    /// The process ran out of file descriptors creating the next segment: these
    /// records were not written; later appends retry.
    #[error(
        "WAL out of file descriptors ({op} {path}): the records were not written; writes resume when descriptors are freed"
    )]
    OutOfFds { op: &'static str, path: PathBuf },
    /// fdatasync failed: the records were not acknowledged and the WAL is now failed.
    #[error("fdatasync of {path} failed: {source}; the WAL stopped accepting writes (restart nexusd to recover)")]
    SyncFailed {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The WAL failed earlier and refuses writes until a restart replays the log.
    #[error("the WAL stopped accepting writes after an earlier failure ({cause}); restart nexusd to recover")]
    Failed { cause: String },
    /// Replay found a damaged log that is not a torn tail.
    #[error(
        "WAL corrupt in {file} at byte offset {offset}: {reason}; refusing to start. \
         Restart with --salvage-wal to keep the valid prefix (the cut bytes are kept beside the segment)"
    )]
    Corrupt { file: PathBuf, offset: u64, reason: String },
    /// The writer thread has stopped (shutdown, or it panicked).
    #[error("the WAL writer has shut down")]
    Closed,
    /// A file operation failed outside the cases above.
    #[error("WAL I/O error: {op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// A payload is larger than any record the log accepts.
    #[error("WAL payload of {len} bytes exceeds the maximum of {max}")]
    PayloadTooLarge { len: usize, max: usize },
    /// A [`WalConfig`] field or the starting LSN is out of range.
    #[error("invalid WAL config: {0}")]
    InvalidConfig(String),
    /// An fsync policy string did not parse.
    #[error("invalid fsync policy {input:?}: expected \"always\", \"interval:<ms>\" (1..=60000) or \"never\"")]
    BadFsyncPolicy { input: String },
    /// A `NEXUS_FAULT_INJECT` spec did not parse.
    #[error("invalid fault spec {spec:?}: {reason}")]
    BadFaultSpec { spec: String, reason: String },
    /// The replay callback refused a record.
    #[error("replay: applying record {lsn} failed: {source}")]
    ApplyFailed {
        lsn: Lsn,
        #[source]
        source: ApplyError,
    },
    /// `start` was given an LSN at or before a segment already on disk.
    #[error("WAL segment {existing} holds records at or after LSN {next_lsn}; start from replay's last_lsn + 1")]
    LsnConflict { existing: PathBuf, next_lsn: Lsn },
    /// The writer did not finish draining within the shutdown bound.
    #[error("the WAL writer did not stop within {0:?}")]
    ShutdownTimedOut(Duration),
}

impl WalError {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        Self::Io {
            op,
            path: path.into(),
            source,
        }
    }
}

/// True for the errors that mean "this process (or the system) has no file
/// descriptor to spare", which is not a fault of the disk.
pub(crate) fn is_out_of_fds(error: &io::Error) -> bool {
    let emfile = nix::errno::Errno::EMFILE as i32;
    let enfile = nix::errno::Errno::ENFILE as i32;
    matches!(error.raw_os_error(), Some(code) if code == emfile || code == enfile)
}

/// True for the errors that mean "no space" rather than "the disk lied".
pub(crate) fn is_out_of_space(error: &io::Error) -> bool {
    let enospc = nix::errno::Errno::ENOSPC as i32;
    let edquot = nix::errno::Errno::EDQUOT as i32;
    matches!(error.raw_os_error(), Some(code) if code == enospc || code == edquot)
}
