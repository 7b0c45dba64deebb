//! The ANN index's errors: bad vectors from a caller, bad settings, and
//! segment files that cannot be trusted.
//!
//! A corrupt segment file is always one of these, never a panic: the loader
//! checks every length, offset and neighbour before a search may touch it.

use std::path::PathBuf;

/// Everything the ANN index can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AnnError {
    /// A vector (inserted or queried) has another dimension than the index.
    #[error("vector has {got} dimensions, the index {expected}")]
    DimensionMismatch {
        /// The index's dimension.
        expected: usize,
        /// The vector's.
        got: usize,
    },
    /// A vector has a NaN or infinite component.
    #[error("vector component {index} is not finite")]
    NonFinite {
        /// The first bad component.
        index: usize,
    },
    /// A vector is all zeros: it has no direction, so no cosine.
    #[error("vector has zero length")]
    ZeroVector,
    /// A setting is out of its range.
    #[error("invalid ANN setting: {0}")]
    InvalidConfig(String),
    /// A segment would hold more nodes than its u32 indexes can name.
    #[error("a segment holds at most {max} vectors, {got} requested")]
    SegmentTooLarge {
        /// The limit.
        max: usize,
        /// What was asked.
        got: usize,
    },
    /// Reading or writing a segment file failed.
    #[error("segment file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A segment file is not one: damaged, truncated, or of another version.
    #[error("segment file {path} is corrupt: {reason}")]
    CorruptSegment {
        /// The file ("<memory>" for an image checked in memory).
        path: PathBuf,
        /// What check failed.
        reason: SegmentFault,
    },
}

/// Why a segment image was rejected (the first check that failed).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SegmentFault {
    /// Shorter than its header.
    #[error("{len} bytes is shorter than the {header} byte header")]
    Truncated {
        /// The image's length.
        len: u64,
        /// The header's.
        header: u64,
    },
    /// The first bytes are not the segment magic.
    #[error("bad magic")]
    BadMagic,
    /// Written by another format version.
    #[error("format version {found}, this build reads {supported}")]
    UnsupportedVersion {
        /// In the file.
        found: u32,
        /// Ours.
        supported: u32,
    },
    /// The header's own checksum does not match.
    #[error("header checksum mismatch")]
    HeaderChecksum,
    /// The body's length is not what the header's counts imply.
    #[error("body is {found} bytes, the header implies {expected}")]
    LengthMismatch {
        /// From the header.
        expected: u64,
        /// On disk.
        found: u64,
    },
    /// The body's checksum does not match.
    #[error("body checksum mismatch (header {expected:#010x}, body {found:#010x})")]
    BodyChecksum {
        /// From the header.
        expected: u32,
        /// Computed.
        found: u32,
    },
    /// A header field or a structure inside the body is out of range.
    #[error("{0}")]
    Invalid(String),
}
