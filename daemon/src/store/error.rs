//! The store's errors, named as the caller sees them, with their sources kept.
//!
//! Every failure that has a cause below it (the WAL, a snapshot file, the
//! data directory, a task) keeps that cause as its `source`, so a log line or
//! a test can ask what exactly went wrong; nothing is flattened into a string
//! on the way up. Which wire code each variant answers with is decided in one
//! exhaustive match in `handler.rs`, the only file that speaks both the wire
//! and the store.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::store::data_dir::DataDirError;
use crate::store::read::DeadlineExceeded;
use crate::store::snapshot::SnapshotError;
use crate::store::wal::WalError;

/// Whose value an error is about: a memory of a Remember batch (by its
/// position), or a recall's query. Messages name what the client sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subject {
    /// The memory at this position in the batch.
    Memory(usize),
    /// The recall's query.
    Query,
}

impl std::fmt::Display for Subject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Memory(index) => write!(f, "memory {index}"),
            Self::Query => write!(f, "query"),
        }
    }
}

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// A Remember with no memories.
    #[error("the batch is empty: send at least one memory")]
    EmptyBatch,
    /// Too many memories in one request.
    #[error("the batch has {len} memories; the maximum is {max}")]
    BatchTooLarge {
        /// Memories sent.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// Too many ids in one Forget.
    #[error("the Forget names {len} ids; the maximum is {max} (limits.max_forget_ids)")]
    TooManyIds {
        /// Ids sent.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A memory without a namespace.
    #[error("memory {index}: namespace is empty")]
    EmptyNamespace {
        /// Position in the batch.
        index: usize,
    },
    /// A field exceeds its byte limit.
    #[error("memory {index}: {field} is {len} bytes; the maximum is {max}")]
    FieldTooLong {
        /// Position in the batch.
        index: usize,
        /// Which field.
        field: &'static str,
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// Too many tags on one memory.
    #[error("memory {index} has {len} tags; the maximum is {max}")]
    TooManyTags {
        /// Position in the batch.
        index: usize,
        /// Tags sent.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A vector's dimension differs from the store's.
    #[error("{subject}: vector dimension {got} differs from the store's dimension {expected}")]
    DimensionMismatch {
        /// Whose vector.
        subject: Subject,
        /// The store's dimension.
        expected: u32,
        /// What was sent.
        got: u32,
    },
    /// Two vectors of one batch have different dimensions.
    #[error("memory {index}: vector dimension {got} differs from the batch's first vector's dimension {expected}")]
    MixedDimensions {
        /// Position in the batch of the first vector that differs.
        index: usize,
        /// The batch's first vector's dimension.
        expected: u32,
        /// What was sent.
        got: u32,
    },
    /// A vector is empty or larger than allowed.
    #[error("{subject}: vector dimension {got} is outside 1..={max}")]
    BadDimension {
        /// Whose vector.
        subject: Subject,
        /// What was sent.
        got: usize,
        /// The limit.
        max: u32,
    },
    /// A NaN or infinity in a vector or the importance.
    #[error("{subject}: {field} contains a NaN or infinite value")]
    NotFinite {
        /// Whose value.
        subject: Subject,
        /// Which field.
        field: &'static str,
    },
    /// A tag filter (of a recall or a Forget) names more tags than a memory can carry.
    #[error("query: the filter has {len} tags; the maximum is {max} (limits.max_tags)")]
    FilterTooLong {
        /// Tags sent.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A Forget by namespace with an empty namespace.
    #[error("forget by namespace needs a namespace")]
    ForgetWithoutNamespace,
    /// A Forget by tags with no tag.
    #[error("forget by tags needs at least one tag")]
    ForgetWithoutTags,
    /// The request's deadline passed while it was being answered.
    #[error(transparent)]
    DeadlineExceeded(#[from] DeadlineExceeded),
    /// Feedback on a memory that does not exist.
    #[error("memory {0} does not exist")]
    UnknownMemory(u64),
    /// The write-ahead log refused or failed the write (disk full, out of
    /// file descriptors, a failed fsync, corruption found at start-up, ...).
    /// Shared: every write of a failed group gets the same error.
    #[error(transparent)]
    Wal(Arc<WalError>),
    /// Shutdown began before the write was logged.
    #[error("nexusd is shutting down")]
    ShuttingDown,
    /// A snapshot could not be read or written.
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    /// A checkpoint wrote a snapshot that then did not pass validation.
    #[error("the snapshot just written does not read back ({source}); it was removed")]
    SnapshotUnreadable {
        /// The file (now removed).
        path: PathBuf,
        /// Why it does not read back.
        #[source]
        source: SnapshotError,
    },
    /// The data directory cannot be used.
    #[error(transparent)]
    DataDir(#[from] DataDirError),
    /// The configuration fixes a dimension the stored vectors do not have.
    #[error("the configured dimension {configured} differs from the stored vectors' dimension {stored}")]
    ConfiguredDimension {
        /// `limits.dimension`.
        configured: u32,
        /// The stored vectors'.
        stored: u32,
    },
    /// The apply thread could not be started.
    #[error("cannot start the apply thread: {0}")]
    ApplyThread(#[source] std::io::Error),
    /// A blocking task of the store (writing a snapshot, stopping the WAL) panicked.
    #[error("{task} task failed: {source}")]
    TaskFailed {
        /// Which task.
        task: &'static str,
        /// What tokio reported.
        #[source]
        source: tokio::task::JoinError,
    },
    /// The WAL writer did not answer in time (an fdatasync that never returns).
    #[error(
        "the WAL writer did not answer within {waited:?} (an fdatasync that does not return?); \
         no checkpoint was written"
    )]
    WalStalled {
        /// How long the store waited.
        waited: Duration,
    },
    /// A checkpoint failed; every request that shared it gets this error.
    #[error(transparent)]
    Checkpoint(Arc<StoreError>),
}

impl From<WalError> for StoreError {
    fn from(error: WalError) -> Self {
        Self::Wal(Arc::new(error))
    }
}
