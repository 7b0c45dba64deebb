//! The lexical engine's errors: bad settings, oversize queries, and index
//! files that cannot be trusted.
//!
//! A corrupt index file is always a [`LexicalError::Corrupt`], never a panic:
//! the owner answers it by rebuilding the index from the store's documents.

use std::path::PathBuf;

/// Everything the lexical index and the entity index can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LexicalError {
    /// A setting is out of its range.
    #[error("invalid lexical setting: {0}")]
    InvalidConfig(String),
    /// A query has more terms than the configured limit.
    #[error("query has more than {max} terms (max_query_terms)")]
    QueryTooLong {
        /// The limit (`max_query_terms`).
        max: usize,
    },
    /// Reading or writing an index file failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was tried.
        op: &'static str,
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// An index image is not one: damaged, truncated, or of another version.
    #[error("lexical index image is corrupt: {0}")]
    Corrupt(#[from] ImageFault),
}

/// Why an index image was rejected (the first check that failed).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ImageFault {
    /// Shorter than its header.
    #[error("{len} bytes is shorter than the {header} byte header")]
    Truncated {
        /// The image's length.
        len: u64,
        /// The header's.
        header: u64,
    },
    /// The first bytes are not this kind of image's magic.
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
    /// The body's length is not the header's.
    #[error("body is {found} bytes, the header says {expected}")]
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
    /// The archive fails validation, or a structure in it is inconsistent.
    #[error("{0}")]
    Invalid(String),
}
