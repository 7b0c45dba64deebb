//! Segment files: names, the 32-byte header, creation (preallocated, directory synced)
//! and listing.
//!
//! ```text
//! offset 0   magic      8 bytes  "NXSWAL\r\n" (the CR LF catches text-mode mangling)
//! offset 8   version    u32 LE   1
//! offset 12  reserved   u32 LE   0
//! offset 16  first_lsn  u64 LE   LSN of the first record (also the file name)
//! offset 24  salt       u32 LE   seeds every record crc of this segment
//! offset 28  crc        u32 LE   crc32c of bytes 0..28
//! offset 32  records (record.rs)
//! ```
//!
//! Not here: record framing (`record.rs`), deciding when to rotate (the writer),
//! judging what a damaged segment means (replay).

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use super::fs::{WalDir, WalFile, WalFs};
use super::record::MAX_PAYLOAD_BYTES;
use super::{Lsn, MAX_SEGMENT_BYTES, WalError, is_out_of_fds, is_out_of_space};

/// Bytes before the first record; a multiple of 16 so payloads stay aligned.
pub(crate) const SEGMENT_HEADER_BYTES: usize = 32;
/// Replay refuses to read a segment file longer than this: the writer never makes one
/// (a segment ends at most one group past `segment_bytes`).
pub(crate) const MAX_SEGMENT_FILE_BYTES: u64 = MAX_SEGMENT_BYTES + 2 * MAX_PAYLOAD_BYTES as u64;
/// Subdirectory of the data directory that holds the segments.
const WAL_SUBDIR: &str = "wal";
const MAGIC: [u8; 8] = *b"NXSWAL\r\n";
const VERSION: u32 = 1;
const SEGMENT_SUFFIX: &str = ".wal";
/// Digits of the LSN in a segment name: enough for any u64, so names sort by LSN.
const NAME_DIGITS: usize = 20;

const _: () = assert!(SEGMENT_HEADER_BYTES.is_multiple_of(16));

/// The decoded header of a segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SegmentHeader {
    pub first_lsn: Lsn,
    pub salt: u32,
}

impl SegmentHeader {
    pub(crate) fn encode(&self) -> [u8; SEGMENT_HEADER_BYTES] {
        let mut bytes = [0_u8; SEGMENT_HEADER_BYTES];
        bytes[0..8].copy_from_slice(&MAGIC);
        bytes[8..12].copy_from_slice(&VERSION.to_le_bytes());
        bytes[16..24].copy_from_slice(&self.first_lsn.to_le_bytes());
        bytes[24..28].copy_from_slice(&self.salt.to_le_bytes());
        let crc = crc32c::crc32c(&bytes[0..28]);
        bytes[28..32].copy_from_slice(&crc.to_le_bytes());
        bytes
    }

    /// Decodes the header at the start of `bytes`; the error says what is wrong.
    pub(crate) fn decode(bytes: &[u8]) -> Result<Self, &'static str> {
        let header: &[u8; SEGMENT_HEADER_BYTES] = bytes
            .get(..SEGMENT_HEADER_BYTES)
            .and_then(|b| b.try_into().ok())
            .ok_or("segment header cut short")?;
        let field = |range: std::ops::Range<usize>| &header[range];
        if crc32c::crc32c(field(0..28)) != u32::from_le_bytes(field(28..32).try_into().expect("4 bytes")) {
            return Err("segment header checksum mismatch");
        }
        if field(0..8) != MAGIC {
            return Err("not a WAL segment (bad magic)");
        }
        if u32::from_le_bytes(field(8..12).try_into().expect("4 bytes")) != VERSION {
            return Err("unsupported WAL segment version");
        }
        let first_lsn = u64::from_le_bytes(field(16..24).try_into().expect("8 bytes"));
        let salt = u32::from_le_bytes(field(24..28).try_into().expect("4 bytes"));
        Ok(Self { first_lsn, salt })
    }
}

/// A segment file found in the WAL directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SegmentFile {
    pub path: PathBuf,
    pub first_lsn: Lsn,
    pub len_bytes: u64,
}

/// The segment the writer appends to.
#[derive(Debug)]
pub(crate) struct ActiveSegment {
    pub file: Box<dyn WalFile>,
    pub path: PathBuf,
    pub first_lsn: Lsn,
    pub salt: u32,
    /// End of the last record written: where the next group goes.
    pub end_offset: u64,
    /// File length as far as we know (preallocation included).
    pub len_bytes: u64,
    /// Bytes `[0, zeroed_until)` have been written (header, records, or zeros
    /// written ahead of the records): overwriting them needs no extent
    /// conversion at the next fdatasync.
    pub zeroed_until: u64,
}

impl ActiveSegment {
    pub(crate) fn has_records(&self) -> bool {
        self.end_offset > SEGMENT_HEADER_BYTES as u64
    }
}

/// `<data dir>/wal`.
pub(crate) fn wal_dir(data_dir: &Path) -> PathBuf {
    data_dir.join(WAL_SUBDIR)
}

pub(crate) fn segment_name(first_lsn: Lsn) -> String {
    format!("{first_lsn:0NAME_DIGITS$}{SEGMENT_SUFFIX}")
}

/// The first LSN encoded in a segment's file name, or `None` for any other file.
pub(crate) fn parse_segment_name(name: &str) -> Option<Lsn> {
    let digits = name.strip_suffix(SEGMENT_SUFFIX)?;
    if digits.len() != NAME_DIGITS || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The segments in `wal_dir`, oldest first; a missing directory holds none.
pub(crate) fn list_segments(fs: &dyn WalFs, wal_dir: &Path) -> Result<Vec<SegmentFile>, WalError> {
    let entries = match fs.list_dir(wal_dir) {
        Ok(entries) => entries,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => return Err(WalError::io("list", wal_dir, source)),
    };
    let mut segments: Vec<SegmentFile> = entries
        .into_iter()
        .filter_map(|entry| {
            let first_lsn = parse_segment_name(&entry.name)?;
            Some(SegmentFile {
                path: wal_dir.join(&entry.name),
                first_lsn,
                len_bytes: entry.len_bytes,
            })
        })
        .collect();
    segments.sort_by_key(|segment| segment.first_lsn);
    Ok(segments)
}

/// Creates `<wal_dir>/<first_lsn>.wal`: preallocates `prealloc_bytes`, writes and syncs
/// the header, then syncs the directory (`dir`, held open: no new descriptor). Out of
/// space (at create, allocate or the header write) removes the partial file and returns
/// [`WalError::DiskFull`]; out of file descriptors (at create) returns
/// [`WalError::OutOfFds`] with nothing created.
pub(crate) fn create_segment(
    fs: &dyn WalFs,
    dir: &dyn WalDir,
    wal_dir: &Path,
    first_lsn: Lsn,
    prealloc_bytes: u64,
) -> Result<ActiveSegment, WalError> {
    let path = wal_dir.join(segment_name(first_lsn));
    let file = fs
        .create_new(&path)
        .map_err(|source| space_or_io("create", &path, source))?;
    let header = SegmentHeader {
        first_lsn,
        salt: new_salt(first_lsn),
    };
    let mut segment = ActiveSegment {
        file,
        path,
        first_lsn,
        salt: header.salt,
        end_offset: SEGMENT_HEADER_BYTES as u64,
        len_bytes: 0,
        zeroed_until: SEGMENT_HEADER_BYTES as u64,
    };
    if let Err(error) = fill_new_segment(&mut segment, &header, prealloc_bytes) {
        return Err(discard_partial(fs, dir, wal_dir, &segment.path, error));
    }
    segment.file.sync_data().map_err(|source| WalError::SyncFailed {
        path: segment.path.clone(),
        source,
    })?;
    dir.sync().map_err(|source| WalError::SyncFailed {
        path: wal_dir.to_owned(),
        source,
    })?;
    Ok(segment)
}

fn fill_new_segment(segment: &mut ActiveSegment, header: &SegmentHeader, prealloc_bytes: u64) -> Result<(), WalError> {
    match segment.file.allocate(0, prealloc_bytes) {
        Ok(()) => segment.len_bytes = prealloc_bytes,
        // Preallocation is an optimisation (fewer metadata updates per sync, space
        // reserved up front); a file system without it still gets a correct log.
        Err(error) if error.kind() == std::io::ErrorKind::Unsupported => {}
        Err(source) => return Err(space_or_io("preallocate", &segment.path, source)),
    }
    let header_bytes = header.encode();
    segment
        .file
        .write_all_at(&header_bytes, 0)
        .map_err(|source| space_or_io("write", &segment.path, source))?;
    segment.len_bytes = segment.len_bytes.max(SEGMENT_HEADER_BYTES as u64);
    Ok(())
}

/// Removes a segment whose creation failed, so the next attempt can reuse the name.
/// If even that fails, the directory holds a file we cannot account for: an I/O error.
fn discard_partial(fs: &dyn WalFs, dir: &dyn WalDir, wal_dir: &Path, path: &Path, error: WalError) -> WalError {
    if let Err(source) = fs.remove_file(path) {
        return WalError::io("remove", path, source);
    }
    match dir.sync() {
        Ok(()) => error,
        Err(source) => WalError::SyncFailed {
            path: wal_dir.to_owned(),
            source,
        },
    }
}

/// Out of space and out of file descriptors are conditions to wait out; any
/// other error is an I/O failure.
fn space_or_io(op: &'static str, path: &Path, source: std::io::Error) -> WalError {
    let path = path.to_owned();
    if is_out_of_space(&source) {
        WalError::DiskFull { op, path }
    } else if is_out_of_fds(&source) {
        WalError::OutOfFds { op, path }
    } else {
        WalError::io(op, path, source)
    }
}

/// A salt that differs between segments and between runs: std's randomly keyed hasher
/// over the LSN and the clock. Not secret, only different, so that bytes from a recycled
/// or older file never pass another segment's checksums.
fn new_salt(first_lsn: Lsn) -> u32 {
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u64(first_lsn);
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    hasher.write_u128(now.as_nanos());
    let hash = hasher.finish();
    (hash ^ (hash >> 32)) as u32
}
