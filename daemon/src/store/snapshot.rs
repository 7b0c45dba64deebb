//! Snapshots (checkpoints): the whole state as one rkyv archive, used in
//! place from a memory map after one validation at start-up.
//!
//! File `snapshot-<lsn:020>.nxs`: a 64-byte header (magic, version, the LSN
//! covered, body length, CRC32C of the body and of the header) followed by
//! the archive. Written to a temp file, fsynced, renamed, and the directory
//! fsynced; a snapshot file is never modified afterwards (it may be mapped,
//! and truncating a mapped file would SIGBUS the daemon). Deciding when to
//! checkpoint and deleting covered WAL segments is `checkpoint.rs`.

use std::fs::File;
use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use memmap2::Mmap;
use rkyv::{Archive, Deserialize, Serialize};

use rkyv::rancor::Source;
use rkyv::ser::{Allocator, Writer};

use crate::store::model::{MemoryRef, StoredMemory};

/// Everything a checkpoint holds.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct SnapshotBody {
    /// Every WAL record up to this LSN is reflected.
    pub lsn: u64,
    /// The next id to hand out.
    pub next_id: u64,
    /// Vector dimension (0: not fixed yet).
    pub dim: u32,
    /// Live memories, by ascending id.
    pub memories: Vec<StoredMemory>,
    /// Feedback counts.
    pub feedback: Vec<FeedbackTally>,
}

/// A snapshot body borrowed from archived memories, written in exactly
/// [`SnapshotBody`]'s archived layout: a checkpoint serializes the live state
/// without an owned copy of it.
#[derive(Archive, Serialize, Debug, Clone)]
#[rkyv(as = ArchivedSnapshotBody, serialize_bounds(__S: Writer + Allocator, __S::Error: Source))]
pub struct SnapshotBodyRef<'a> {
    /// See [`SnapshotBody`].
    #[rkyv(omit_bounds)]
    pub lsn: u64,
    #[rkyv(omit_bounds)]
    pub next_id: u64,
    #[rkyv(omit_bounds)]
    pub dim: u32,
    #[rkyv(omit_bounds)]
    pub memories: Vec<MemoryRef<'a>>,
    #[rkyv(omit_bounds)]
    pub feedback: Vec<FeedbackTally>,
}

impl<'a> SnapshotBodyRef<'a> {
    /// A view of an archived body (to write it again, e.g. in tests).
    pub fn of(body: &'a ArchivedSnapshotBody) -> Self {
        Self {
            lsn: body.lsn.to_native(),
            next_id: body.next_id.to_native(),
            dim: body.dim.to_native(),
            memories: body.memories.iter().map(MemoryRef::of).collect(),
            feedback: body
                .feedback
                .iter()
                .map(|t| FeedbackTally {
                    memory_id: t.memory_id.to_native(),
                    useful: t.useful.to_native(),
                    not_useful: t.not_useful.to_native(),
                })
                .collect(),
        }
    }
}

/// Feedback counts of one memory.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub struct FeedbackTally {
    /// The memory.
    pub memory_id: u64,
    /// Times judged useful.
    pub useful: u32,
    /// Times judged not useful.
    pub not_useful: u32,
}

const MAGIC: [u8; 8] = *b"NXSNAP01";
const VERSION: u32 = 1;
const HEADER_BYTES: usize = 64;
const PREFIX: &str = "snapshot-";
const SUFFIX: &str = ".nxs";

/// A snapshot that cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SnapshotError {
    /// The file is damaged: header, checksum or archive structure.
    #[error(
        "snapshot {path} is corrupt: {reason} (move it aside to start from the WAL alone, which only works if no WAL segment was deleted after it was written)"
    )]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: CorruptReason,
    },
    /// An I/O operation failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was tried.
        op: &'static str,
        /// On which file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

/// What is wrong with a corrupt snapshot file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CorruptReason {
    /// Fewer bytes than a header.
    #[error("shorter than its header")]
    ShorterThanHeader,
    /// Not a snapshot at all.
    #[error("not a Memory Nexus snapshot (bad magic)")]
    BadMagic,
    /// The header's checksum does not match.
    #[error("header checksum mismatch")]
    HeaderChecksum,
    /// Written by another format version.
    #[error("format version {found}, this nexusd reads version {VERSION}")]
    Version {
        /// The file's version.
        found: u32,
    },
    /// The declared body length does not fit in memory.
    #[error("body length does not fit in memory")]
    BodyLength,
    /// The file ends before the declared body does.
    #[error("truncated body")]
    TruncatedBody,
    /// The body's checksum does not match.
    #[error("body checksum mismatch")]
    BodyChecksum,
    /// The body passed its checksum but is not a valid archive.
    #[error("{0}")]
    Archive(#[source] rkyv::rancor::Error),
}

/// A mapped, validated snapshot.
pub struct Snapshot {
    map: Mmap,
    path: PathBuf,
    body_len: usize,
}

impl Snapshot {
    /// Maps `path`, checks header and checksums, validates the archive once.
    pub fn open(path: &Path) -> Result<Self, SnapshotError> {
        let corrupt = |reason: CorruptReason| SnapshotError::Corrupt {
            path: path.to_path_buf(),
            reason,
        };
        let file = File::open(path).map_err(io("open", path))?;
        // SAFETY: snapshot files are written once under a temp name, renamed
        // into place, and never modified or truncated afterwards (this module
        // is their only writer and the data directory is the daemon's alone),
        // so the mapped bytes do not change under us.
        let map = unsafe { Mmap::map(&file) }.map_err(io("mmap", path))?;
        let header = map
            .get(..HEADER_BYTES)
            .ok_or_else(|| corrupt(CorruptReason::ShorterThanHeader))?;
        let body_len = check_header(header).map_err(corrupt)?;
        // Saturating: the length is read from the file (found by fuzzing: a
        // length near 2^64 overflowed here).
        let body = map
            .get(HEADER_BYTES..HEADER_BYTES.saturating_add(body_len))
            .ok_or_else(|| corrupt(CorruptReason::TruncatedBody))?;
        let expected_crc = u32::from_le_bytes(header[32..36].try_into().expect("4 bytes"));
        if crc32c::crc32c(body) != expected_crc {
            return Err(corrupt(CorruptReason::BodyChecksum));
        }
        rkyv::access::<ArchivedSnapshotBody, rkyv::rancor::Error>(body)
            .map_err(|e| corrupt(CorruptReason::Archive(e)))?;
        Ok(Self {
            map,
            path: path.to_path_buf(),
            body_len,
        })
    }

    /// The archived state, read in place.
    pub fn body(&self) -> &ArchivedSnapshotBody {
        let body = &self.map[HEADER_BYTES..HEADER_BYTES + self.body_len];
        // SAFETY: these exact bytes passed full bytecheck validation in
        // `open`, and the mapping is immutable (see `open`).
        unsafe { rkyv::access_unchecked::<ArchivedSnapshotBody>(body) }
    }

    /// The LSN this snapshot covers.
    pub fn lsn(&self) -> u64 {
        self.body().lsn.to_native()
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Size of the file in bytes.
    pub fn bytes(&self) -> u64 {
        self.map.len() as u64
    }
}

/// Writes `body` as the snapshot for its LSN in `dir`, durably; returns its
/// path. On failure the temp file is removed: a failed checkpoint (a full
/// disk, most likely) must not leave a partial snapshot taking the space.
pub fn write(dir: &Path, body: &SnapshotBodyRef<'_>) -> Result<PathBuf, SnapshotError> {
    let path = dir.join(format!("{PREFIX}{:020}{SUFFIX}", body.lsn));
    let temp = path.with_extension("nxs.tmp");
    match write_temp(&temp, body).and_then(|()| std::fs::rename(&temp, &path).map_err(io("rename", &temp))) {
        Ok(()) => {
            sync_dir(dir)?;
            Ok(path)
        }
        Err(error) => {
            let _ = std::fs::remove_file(&temp);
            Err(error)
        }
    }
}

/// Writes the header and archive of `body` to `temp` and fsyncs it.
fn write_temp(temp: &Path, body: &SnapshotBodyRef<'_>) -> Result<(), SnapshotError> {
    let temp = temp.to_path_buf();
    let mut file = File::create(&temp).map_err(io("create", &temp))?;
    file.write_all(&[0u8; HEADER_BYTES]).map_err(io("write", &temp))?;
    let mut writer = ChecksumWriter {
        inner: BufWriter::with_capacity(1 << 20, &mut file),
        crc: 0,
        len: 0,
    };
    rkyv::api::high::to_bytes_in::<_, rkyv::rancor::Error>(body, rkyv::ser::writer::IoWriter::new(&mut writer))
        .map_err(|e| SnapshotError::Io {
            op: "serialize",
            path: temp.clone(),
            source: std::io::Error::other(e),
        })?;
    writer.inner.flush().map_err(io("write", &temp))?;
    let (crc, len) = (writer.crc, writer.len);
    drop(writer);
    file.seek(SeekFrom::Start(0)).map_err(io("seek", &temp))?;
    file.write_all(&encode_header(body.lsn, len, crc))
        .map_err(io("write", &temp))?;
    file.sync_all().map_err(io("fsync", &temp))
}

/// The snapshot with the highest LSN in `dir`, if any (temp files ignored).
pub fn latest(dir: &Path) -> Result<Option<PathBuf>, SnapshotError> {
    Ok(list(dir)?.into_iter().max_by_key(|(lsn, _)| *lsn).map(|(_, path)| path))
}

/// Removes every snapshot but `keep`, and leftover temp files; fsyncs `dir`.
pub fn remove_others(dir: &Path, keep: &Path) -> Result<(), SnapshotError> {
    for (_, path) in list(dir)? {
        if path != keep {
            std::fs::remove_file(&path).map_err(io("remove", &path))?;
        }
    }
    let entries = std::fs::read_dir(dir).map_err(io("list", dir))?;
    for entry in entries.flatten() {
        let name = entry.file_name();
        if name.to_string_lossy().ends_with(".nxs.tmp") {
            let _ = std::fs::remove_file(entry.path());
        }
    }
    sync_dir(dir)
}

/// fsyncs a directory so renames and deletions in it are durable.
pub fn sync_dir(dir: &Path) -> Result<(), SnapshotError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io("fsync directory", dir))
}

fn list(dir: &Path) -> Result<Vec<(u64, PathBuf)>, SnapshotError> {
    let entries = std::fs::read_dir(dir).map_err(io("list", dir))?;
    Ok(entries
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name().into_string().ok()?;
            let lsn = name.strip_prefix(PREFIX)?.strip_suffix(SUFFIX)?.parse().ok()?;
            Some((lsn, entry.path()))
        })
        .collect())
}

fn encode_header(lsn: u64, body_len: u64, body_crc: u32) -> [u8; HEADER_BYTES] {
    let mut header = [0u8; HEADER_BYTES];
    header[0..8].copy_from_slice(&MAGIC);
    header[8..12].copy_from_slice(&VERSION.to_le_bytes());
    header[16..24].copy_from_slice(&lsn.to_le_bytes());
    header[24..32].copy_from_slice(&body_len.to_le_bytes());
    header[32..36].copy_from_slice(&body_crc.to_le_bytes());
    let header_crc = crc32c::crc32c(&header[..36]);
    header[36..40].copy_from_slice(&header_crc.to_le_bytes());
    header
}

/// Checks the header; returns the body length.
fn check_header(header: &[u8]) -> Result<usize, CorruptReason> {
    if header[0..8] != MAGIC {
        return Err(CorruptReason::BadMagic);
    }
    if crc32c::crc32c(&header[..36]).to_le_bytes() != header[36..40] {
        return Err(CorruptReason::HeaderChecksum);
    }
    let version = u32::from_le_bytes(header[8..12].try_into().expect("4 bytes"));
    if version != VERSION {
        return Err(CorruptReason::Version { found: version });
    }
    let len = u64::from_le_bytes(header[24..32].try_into().expect("8 bytes"));
    usize::try_from(len).map_err(|_| CorruptReason::BodyLength)
}

/// Counts and checksums the bytes on their way to the file.
struct ChecksumWriter<W> {
    inner: W,
    crc: u32,
    len: u64,
}

impl<W: Write> Write for ChecksumWriter<W> {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        let written = self.inner.write(bytes)?;
        self.crc = crc32c::crc32c_append(self.crc, &bytes[..written]);
        self.len += written as u64;
        Ok(written)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

fn io(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> SnapshotError {
    let path = path.to_path_buf();
    move |source| SnapshotError::Io { op, path, source }
}

/// For the fuzz target in `fuzz/` only: recomputes the body checksum (over the
/// body length the header declares, or what there is of it) and then the
/// header checksum of a snapshot file's bytes, leaving every other byte as it
/// is, so mutated inputs get past the checksums to the header fields and the
/// archive validation behind them.
#[doc(hidden)]
pub fn reseal_for_fuzzing(bytes: &mut [u8]) {
    if bytes.len() < HEADER_BYTES {
        return;
    }
    let declared = u64::from_le_bytes(bytes[24..32].try_into().expect("8 bytes"));
    let body_end = usize::try_from(declared)
        .unwrap_or(usize::MAX)
        .saturating_add(HEADER_BYTES)
        .min(bytes.len());
    let body_crc = crc32c::crc32c(&bytes[HEADER_BYTES..body_end]);
    bytes[32..36].copy_from_slice(&body_crc.to_le_bytes());
    let header_crc = crc32c::crc32c(&bytes[..36]);
    bytes[36..40].copy_from_slice(&header_crc.to_le_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::TempDir;

    fn body(lsn: u64) -> SnapshotBody {
        let memory = StoredMemory {
            id: 7,
            key: Some("k".into()),
            namespace: "ns".into(),
            text: "hello".into(),
            vector: Some(vec![0.25; 4]),
            tags: vec![],
            created_at_ms: 1,
            importance: 0.5,
            source: None,
        };
        SnapshotBody {
            lsn,
            next_id: 8,
            dim: 4,
            memories: vec![memory],
            feedback: vec![],
        }
    }

    /// Writes an owned body (through its archived form, as the daemon does).
    fn write_owned(dir: &Path, body: &SnapshotBody) -> Result<PathBuf, SnapshotError> {
        let bytes = rkyv::to_bytes::<rkyv::rancor::Error>(body).unwrap();
        let archived = rkyv::access::<ArchivedSnapshotBody, rkyv::rancor::Error>(&bytes).unwrap();
        write(dir, &SnapshotBodyRef::of(archived))
    }

    #[test]
    fn a_written_snapshot_maps_back_identically() {
        let temp = TempDir::new("snapshot-roundtrip");
        let dir = temp.path();
        let path = write_owned(dir, &body(42)).unwrap();
        assert_eq!(latest(dir).unwrap(), Some(path.clone()));
        let snapshot = Snapshot::open(&path).unwrap();
        let back: SnapshotBody = rkyv::deserialize::<_, rkyv::rancor::Error>(snapshot.body()).unwrap();
        assert_eq!(back, body(42));
    }

    // Found by fuzz/fuzz_targets/snapshot.rs: a body length near 2^64 overflowed
    // `HEADER_BYTES + body_len` (a panic with overflow checks on).
    #[test]
    fn a_body_length_near_u64_max_is_corrupt_not_an_overflow() {
        let temp = TempDir::new("snapshot-huge-len");
        let dir = temp.path();
        let path = write_owned(dir, &body(1)).unwrap();
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[24..32].copy_from_slice(&u64::MAX.to_le_bytes());
        reseal_for_fuzzing(&mut bytes);
        std::fs::write(&path, &bytes).unwrap();
        assert!(matches!(Snapshot::open(&path), Err(SnapshotError::Corrupt { .. })));
    }

    // Regression (issue 7, scenario 8): a failed checkpoint left its partial
    // temp file behind (on a full disk, taking the space it had).
    #[test]
    fn a_snapshot_write_that_fails_removes_its_temp_file() {
        let temp = TempDir::new("snapshot-failed");
        let dir = temp.path();
        // The rename cannot replace a directory that holds something.
        let blocked = dir.join(format!("{PREFIX}{:020}{SUFFIX}", 42));
        std::fs::create_dir_all(blocked.join("occupied")).unwrap();
        assert!(write_owned(dir, &body(42)).is_err());
        let names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            names,
            vec![format!("{PREFIX}{:020}{SUFFIX}", 42)],
            "no temp file is left"
        );
    }

    #[test]
    fn every_corrupted_byte_is_detected_with_the_file_named() {
        let temp = TempDir::new("snapshot-corrupt");
        let dir = temp.path();
        let path = write_owned(dir, &body(1)).unwrap();
        let pristine = std::fs::read(&path).unwrap();
        for at in (0..pristine.len()).step_by(7) {
            let mut bytes = pristine.clone();
            bytes[at] ^= 0x40;
            std::fs::write(&path, &bytes).unwrap();
            match Snapshot::open(&path) {
                Err(SnapshotError::Corrupt { path: named, .. }) => assert_eq!(named, path),
                Err(other) => panic!("byte {at}: unexpected error {other}"),
                // Only the header's padding is not covered by a checksum.
                Ok(_) if (40..HEADER_BYTES).contains(&at) => {}
                Ok(_) => panic!("byte {at}: corruption went unnoticed"),
            }
        }
    }
}
