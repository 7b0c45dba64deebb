//! The disk under a daemon, as the fault tests break it: a small tmpfs to
//! fill, and the on-disk formats (WAL segments, snapshots) parsed just far
//! enough to damage a chosen record or byte.
//!
//! The formats are restated here from the daemon's docs
//! (daemon/src/store/wal/mod.rs, snapshot.rs) rather than imported, so a
//! silent format change shows up as a failing test, not a moving target.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Bytes of a WAL segment header.
pub const SEGMENT_HEADER_BYTES: usize = 32;
/// Bytes of a WAL record header (`len u32 | crc32c u32 | lsn u64`).
pub const RECORD_HEADER_BYTES: usize = 16;
/// Bytes of a snapshot header.
pub const SNAPSHOT_HEADER_BYTES: usize = 64;

/// A tmpfs mounted for one test; unmounted on drop.
#[derive(Debug)]
pub struct Tmpfs {
    path: PathBuf,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size` (e.g. "16m") at `path` (created if missing).
    /// `Err` with the reason when this process cannot (not root, no
    /// CAP_SYS_ADMIN, no `mount`): the caller skips its test.
    pub fn mount(path: &Path, size: &str) -> Result<Self, String> {
        if !nix::unistd::geteuid().is_root() {
            return Err("mounting a tmpfs needs root".into());
        }
        std::fs::create_dir_all(path).map_err(|e| format!("cannot create {}: {e}", path.display()))?;
        let output = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size},mode=0700"), "tmpfs"])
            .arg(path)
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !output.status.success() {
            let stderr = String::from_utf8_lossy(&output.stderr);
            return Err(format!("mount -t tmpfs failed: {}", stderr.trim()));
        }
        Ok(Self {
            path: path.to_path_buf(),
        })
    }

    /// The mount point.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let unmounted = Command::new("umount").arg(&self.path).status();
        if !matches!(unmounted, Ok(status) if status.success()) {
            // Something still holds a file there: detach it now, freed when released.
            let _ = Command::new("umount").arg("-l").arg(&self.path).status();
        }
    }
}

/// Writes zeros to `path` until the file system is full; returns the bytes written.
pub fn fill_disk(path: &Path) -> u64 {
    let mut file = std::fs::File::create(path).unwrap_or_else(|e| panic!("cannot create {}: {e}", path.display()));
    let chunk = vec![0u8; 64 << 10];
    let mut written = 0u64;
    loop {
        match file.write(&chunk) {
            Ok(0) => return written,
            Ok(n) => written += n as u64,
            Err(e) if e.raw_os_error() == Some(nix::libc::ENOSPC) => return written,
            Err(e) => panic!("filling {}: {e}", path.display()),
        }
    }
}

/// The WAL segments in a data directory, oldest first.
pub fn wal_segments(data_dir: &Path) -> Vec<PathBuf> {
    files_named(&data_dir.join("wal"), "", ".wal")
}

/// The snapshots in a data directory, oldest first.
pub fn snapshots(data_dir: &Path) -> Vec<PathBuf> {
    files_named(data_dir, "snapshot-", ".nxs")
}

/// Where one record sits in a segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordSpan {
    /// Byte offset of its header.
    pub offset: usize,
    /// Payload bytes (its `len` field).
    pub payload_len: usize,
    /// Its LSN.
    pub lsn: u64,
}

impl RecordSpan {
    /// Offset of its first payload byte.
    pub fn payload_offset(&self) -> usize {
        self.offset + RECORD_HEADER_BYTES
    }

    /// Offset just past it (payload padded to 16).
    pub fn end(&self) -> usize {
        (self.payload_offset() + self.payload_len).next_multiple_of(16)
    }
}

/// The records of a segment the daemon wrote intact: record headers are
/// followed from the segment header until the preallocated zeros. Checks
/// that nothing but zeros follows the last record (so "the last record" is
/// where the non-zero bytes end).
#[track_caller]
pub fn wal_records(segment: &Path) -> Vec<RecordSpan> {
    let bytes = std::fs::read(segment).unwrap_or_else(|e| panic!("cannot read {}: {e}", segment.display()));
    let mut records = Vec::new();
    let mut offset = SEGMENT_HEADER_BYTES;
    while let Some(header) = bytes.get(offset..offset + RECORD_HEADER_BYTES) {
        if header.iter().all(|&b| b == 0) {
            break;
        }
        let span = RecordSpan {
            offset,
            payload_len: u32::from_le_bytes(header[0..4].try_into().expect("4 bytes")) as usize,
            lsn: u64::from_le_bytes(header[8..16].try_into().expect("8 bytes")),
        };
        assert!(
            span.end() <= bytes.len(),
            "{}: record at {offset} runs past the end of the file",
            segment.display()
        );
        records.push(span);
        offset = span.end();
    }
    let nonzero_end = bytes.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
    assert!(
        nonzero_end <= offset,
        "{}: non-zero bytes up to {nonzero_end} after the last record, which ends at {offset}",
        segment.display()
    );
    records
}

/// Flips all bits of the byte at `offset` in `path`.
pub fn flip_byte(path: &Path, offset: usize) {
    let mut bytes = std::fs::read(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    assert!(offset < bytes.len(), "{} has no byte {offset}", path.display());
    bytes[offset] ^= 0xFF;
    std::fs::write(path, bytes).unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
}

/// Truncates `path` to `len` bytes.
pub fn truncate(path: &Path, len: usize) {
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap_or_else(|e| panic!("cannot open {}: {e}", path.display()));
    file.set_len(len as u64)
        .unwrap_or_else(|e| panic!("cannot truncate {}: {e}", path.display()));
}

fn files_named(dir: &Path, prefix: &str, suffix: &str) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut paths: Vec<PathBuf> = entries
        .flatten()
        .map(|entry| entry.path())
        .filter(|path| {
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            name.starts_with(prefix) && name.ends_with(suffix)
        })
        .collect();
    paths.sort();
    paths
}
