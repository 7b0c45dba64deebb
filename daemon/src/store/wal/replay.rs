//! Replay: feeds every record after a snapshot's LSN to the store, and decides what a
//! damaged log means.
//!
//! The first invalid record ends a segment's log. What follows decides the verdict:
//! only zeros is the normal end (preallocated space, given back here: a segment whose
//! writer was killed keeps no preallocation after the next start); non-zero bytes with no valid
//! record among them, in the newest segment, is a torn tail (a write cut by a crash;
//! truncated, synced, reported); a valid record after it, or a later segment, is
//! mid-log corruption: an error naming the file and offset, unless `salvage` asks to
//! cut the log there (keeping the cut bytes and later segments beside it). LSNs must be
//! contiguous within and across segments, except that a gap wholly covered by the
//! snapshot (`<= after_lsn`) is fine (segments deleted after a checkpoint).
//!
//! Not here: what a payload means (the `apply` callback), and locking the directory.
//! On error, `apply` may already have seen a prefix: the caller discards that state.

use std::ops::{Deref, Range};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::fs::{FileBytes, WalFs};
use super::record::{self, InvalidRecord, RECORD_ALIGN_BYTES, RECORD_HEADER_BYTES};
use super::segment::{self, MAX_SEGMENT_FILE_BYTES, SEGMENT_HEADER_BYTES, SegmentFile, SegmentHeader};
use super::{ApplyError, Lsn, WalError};

/// What replay did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplayReport {
    /// Records handed to `apply`.
    pub records: u64,
    /// Records skipped because their LSN was `<= after_lsn`.
    pub skipped_before: u64,
    /// `max(after_lsn, last LSN in the log)`: start the writer at `last_lsn + 1`.
    pub last_lsn: Lsn,
    /// Segment files read.
    pub segments: u64,
    pub torn_tail: Option<TornTail>,
    pub salvaged: Option<Salvaged>,
    pub duration: Duration,
    /// Bytes of valid records decoded (framing included).
    pub bytes: u64,
}

/// A torn tail that replay cut off.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TornTail {
    pub file: PathBuf,
    /// Where the file now ends (0 with the file removed: its header never got written).
    pub offset: u64,
    /// Non-zero bytes cut (from `offset` to the last non-zero byte).
    pub bytes_cut: u64,
}

/// What `--salvage-wal` cut.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Salvaged {
    pub file: PathBuf,
    pub offset: u64,
    pub reason: String,
    /// Bytes moved out of `file` (the whole file when `offset` is 0).
    pub bytes_cut: u64,
    /// Where those bytes are kept: `<file>.salvaged-<offset>`.
    pub kept_copy: PathBuf,
    /// Later segments renamed to `<segment>.salvaged-0`.
    pub moved_aside: Vec<PathBuf>,
}

/// Replays the log in `dir/wal` (`dir` as in `WalConfig::dir`); see the module docs.
pub fn replay(
    dir: &Path,
    fs: &dyn WalFs,
    after_lsn: Lsn,
    salvage: bool,
    mut apply: impl FnMut(Lsn, ReplayPayload<'_>) -> Result<(), ApplyError>,
) -> Result<ReplayReport, WalError> {
    let started = Instant::now();
    let wal_dir = segment::wal_dir(dir);
    let segments = segment::list_segments(fs, &wal_dir)?;
    let mut report = ReplayReport {
        last_lsn: after_lsn,
        ..ReplayReport::default()
    };
    let mut expected_lsn: Option<Lsn> = None;
    for (idx, file) in segments.iter().enumerate() {
        let is_newest = idx + 1 == segments.len();
        report.segments += 1;
        let verdict = replay_segment(
            fs,
            file,
            is_newest,
            after_lsn,
            &mut expected_lsn,
            &mut report,
            &mut apply,
        )?;
        let Some(damage) = verdict else { continue };
        if !salvage {
            let Damage { offset, reason } = damage;
            return Err(WalError::Corrupt {
                file: file.path.clone(),
                offset,
                reason,
            });
        }
        report.salvaged = Some(salvage_at(fs, &wal_dir, &segments[idx..], damage)?);
        break;
    }
    report.duration = started.elapsed();
    Ok(report)
}

/// Deletes the segments of `dir/wal` that replay read, up to one that starts
/// after `last_lsn` (replay's `last_lsn`: every record of those segments is
/// at or before it), oldest first, then syncs the directory. For a store that
/// just wrote a snapshot covering `last_lsn`, before the writer starts.
/// Returns how many it deleted.
pub fn remove_replayed_segments(dir: &Path, fs: &dyn WalFs, last_lsn: Lsn) -> Result<u64, WalError> {
    let wal_dir = segment::wal_dir(dir);
    let segments = segment::list_segments(fs, &wal_dir)?;
    let mut removed = 0;
    for file in segments.iter().filter(|file| file.first_lsn <= last_lsn) {
        fs.remove_file(&file.path)
            .map_err(|source| WalError::io("remove", &file.path, source))?;
        removed += 1;
    }
    if removed > 0 {
        fs.sync_dir(&wal_dir).map_err(|source| WalError::SyncFailed {
            path: wal_dir.clone(),
            source,
        })?;
    }
    Ok(removed)
}

/// One record's payload as replay hands it to `apply`: 16-aligned bytes to read
/// in place, which `apply` may also [`keep`](ReplayPayload::keep) without a copy.
pub struct ReplayPayload<'a> {
    segment: &'a Arc<FileBytes>,
    range: Range<usize>,
}

impl ReplayPayload<'_> {
    /// The payload, owned: it shares the segment's bytes (its memory map stays
    /// alive while any kept payload does, even after the file is deleted).
    pub fn keep(&self) -> KeptPayload {
        KeptPayload {
            segment: Arc::clone(self.segment),
            range: self.range.clone(),
        }
    }
}

impl Deref for ReplayPayload<'_> {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.segment[self.range.clone()]
    }
}

/// A replayed payload kept beyond replay (see [`ReplayPayload::keep`]).
///
/// Its bytes never change: replay only ever shortens a segment past its last
/// valid record (torn tail, salvage), so every byte of a valid record stays in
/// the file, and the WAL writer never writes to a segment that existed when
/// the daemon started (each start opens a new one).
pub struct KeptPayload {
    segment: Arc<FileBytes>,
    range: Range<usize>,
}

impl Deref for KeptPayload {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.segment[self.range.clone()]
    }
}

impl std::fmt::Debug for KeptPayload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeptPayload").field("range", &self.range).finish()
    }
}

/// Where and why the log is damaged beyond a torn tail.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Damage {
    offset: u64,
    reason: String,
}

/// Replays one segment; `Some(damage)` if it is corrupt (torn tails are fixed here).
fn replay_segment(
    fs: &dyn WalFs,
    file: &SegmentFile,
    is_newest: bool,
    after_lsn: Lsn,
    expected_lsn: &mut Option<Lsn>,
    report: &mut ReplayReport,
    apply: &mut impl FnMut(Lsn, ReplayPayload<'_>) -> Result<(), ApplyError>,
) -> Result<Option<Damage>, WalError> {
    if file.len_bytes > MAX_SEGMENT_FILE_BYTES {
        let reason = format!(
            "file of {} bytes is larger than any segment nexusd writes",
            file.len_bytes
        );
        return Ok(Some(Damage { offset: 0, reason }));
    }
    let bytes = fs.read_all(&file.path, MAX_SEGMENT_FILE_BYTES);
    let bytes = Arc::new(bytes.map_err(|source| WalError::io("read", &file.path, source))?);
    let mut on_record = |lsn: Lsn, payload: &[u8]| {
        debug_assert!(
            (payload.as_ptr() as usize).is_multiple_of(RECORD_ALIGN_BYTES),
            "payloads are 16-aligned"
        );
        report.bytes += record::framed_len(payload.len()) as u64;
        report.last_lsn = report.last_lsn.max(lsn);
        if lsn <= after_lsn {
            report.skipped_before += 1;
            return Ok(());
        }
        report.records += 1;
        let start = payload.as_ptr() as usize - bytes.as_ptr() as usize;
        let payload = ReplayPayload {
            segment: &bytes,
            range: start..start + payload.len(),
        };
        apply(lsn, payload).map_err(|source| WalError::ApplyFailed { lsn, source })
    };
    let scan = scan_segment(&bytes, file.first_lsn, *expected_lsn, after_lsn, &mut on_record)?;
    match scan.end {
        SegmentEnd::Clean if file.len_bytes > scan.records_end => trim_zero_tail(fs, file, scan.records_end),
        SegmentEnd::Clean => {}
        SegmentEnd::Unborn { .. } | SegmentEnd::Torn { .. } if !is_newest => {
            let reason = format!("{}, and a later segment exists", scan.end.describe());
            return Ok(Some(Damage {
                offset: scan.end.offset(),
                reason,
            }));
        }
        SegmentEnd::Unborn { nonzero_bytes } => report.torn_tail = Some(remove_unborn(fs, file, nonzero_bytes)?),
        SegmentEnd::Torn {
            offset, nonzero_end, ..
        } => report.torn_tail = Some(cut_torn(fs, file, offset, nonzero_end)?),
        SegmentEnd::Corrupt { offset, reason } => return Ok(Some(Damage { offset, reason })),
    }
    *expected_lsn = Some(scan.next_lsn);
    Ok(None)
}

/// What a scan of one segment's bytes found after its valid records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SegmentEnd {
    /// Valid records, then only zeros (or the end of the file).
    Clean,
    /// The header is invalid and nothing follows it: a segment whose creation was cut.
    Unborn { nonzero_bytes: u64 },
    /// An invalid record at `offset` and no valid record after it.
    Torn {
        offset: u64,
        nonzero_end: u64,
        reason: String,
    },
    /// Damage at `offset` followed by valid data (or a header/LSN inconsistency).
    Corrupt { offset: u64, reason: String },
}

impl SegmentEnd {
    fn offset(&self) -> u64 {
        match self {
            Self::Clean | Self::Unborn { .. } => 0,
            Self::Torn { offset, .. } | Self::Corrupt { offset, .. } => *offset,
        }
    }

    fn describe(&self) -> String {
        match self {
            Self::Clean => "clean end".into(),
            Self::Unborn { .. } => "segment header missing or invalid".into(),
            Self::Torn { reason, .. } | Self::Corrupt { reason, .. } => reason.clone(),
        }
    }
}

/// The outcome of [`scan_segment`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SegmentScan {
    pub end: SegmentEnd,
    /// LSN after the last valid record (the first LSN if it held none).
    pub next_lsn: Lsn,
    /// Byte offset just past the last valid record (0 if the header is bad).
    pub records_end: u64,
}

/// Decodes a segment's bytes, calling `on_record` for each valid record in order, and
/// classifies what ends it. Pure (no I/O), total (never panics on any input).
///
/// `name_lsn` is the LSN in the file name; `expected_lsn` the LSN the previous segment
/// ends before (None for the first segment); gaps `<= after_lsn` are allowed between
/// segments.
pub(crate) fn scan_segment<E>(
    bytes: &[u8],
    name_lsn: Lsn,
    expected_lsn: Option<Lsn>,
    after_lsn: Lsn,
    on_record: &mut impl FnMut(Lsn, &[u8]) -> Result<(), E>,
) -> Result<SegmentScan, E> {
    let header = match SegmentHeader::decode(bytes) {
        Ok(header) => header,
        Err(reason) => {
            return Ok(SegmentScan {
                end: header_failure(bytes, reason),
                next_lsn: name_lsn,
                records_end: 0,
            });
        }
    };
    if let Err(problem) = check_first_lsn(&header, name_lsn, expected_lsn, after_lsn) {
        return Ok(SegmentScan {
            end: SegmentEnd::Corrupt {
                offset: 0,
                reason: problem.to_string(),
            },
            next_lsn: name_lsn,
            records_end: 0,
        });
    }
    let mut offset = SEGMENT_HEADER_BYTES;
    let mut lsn = header.first_lsn;
    loop {
        let invalid = match record::decode_at(bytes, offset, header.salt) {
            Ok(found) if found.lsn == lsn => {
                on_record(lsn, found.payload)?;
                offset = found.end_offset;
                lsn += 1;
                continue;
            }
            Ok(found) => format!("record with LSN {} where LSN {lsn} was expected", found.lsn),
            Err(InvalidRecord::HeaderPastEnd) if offset == bytes.len() => String::new(),
            Err(invalid) => invalid.to_string(),
        };
        let end = classify_end(bytes, offset, header.salt, lsn, invalid);
        return Ok(SegmentScan {
            end,
            next_lsn: lsn,
            records_end: offset as u64,
        });
    }
}

/// A segment whose header does not decode: unborn if nothing but zeros follows the
/// header area, corrupt otherwise (its records cannot be checked without the salt).
fn header_failure(bytes: &[u8], reason: &str) -> SegmentEnd {
    let body = bytes.get(SEGMENT_HEADER_BYTES..).unwrap_or_default();
    match is_all_zero(body) {
        true => SegmentEnd::Unborn {
            nonzero_bytes: nonzero_end(bytes) as u64,
        },
        false => SegmentEnd::Corrupt {
            offset: 0,
            reason: reason.to_owned(),
        },
    }
}

fn check_first_lsn(
    header: &SegmentHeader,
    name_lsn: Lsn,
    expected: Option<Lsn>,
    after_lsn: Lsn,
) -> Result<(), LsnProblem> {
    let first = header.first_lsn;
    if first != name_lsn {
        return Err(LsnProblem::NameMismatch { first, name_lsn });
    }
    if first == 0 {
        return Err(LsnProblem::Zero);
    }
    if let Some(expected) = expected.filter(|&expected| first < expected) {
        return Err(LsnProblem::Overlap { first, expected });
    }
    // A gap is harmless only if the snapshot covers all of it: replay needs every LSN
    // from `after_lsn + 1` on (segments deleted after a checkpoint leave such gaps).
    let needed_from = expected.unwrap_or(after_lsn.saturating_add(1));
    if first > needed_from && first > after_lsn.saturating_add(1) {
        return Err(LsnProblem::Gap {
            needed_from,
            first,
            after_lsn,
        });
    }
    Ok(())
}

/// Why a segment's first LSN does not fit the log.
#[derive(Debug, thiserror::Error)]
enum LsnProblem {
    #[error("header says first LSN {first}, the file name says {name_lsn}")]
    NameMismatch { first: Lsn, name_lsn: Lsn },
    #[error("segment starts at LSN 0")]
    Zero,
    #[error("segment starts at LSN {first}, overlapping the previous one (which ends before {expected})")]
    Overlap { first: Lsn, expected: Lsn },
    #[error("LSNs {needed_from}..{first} are missing (replay needs everything after {after_lsn})")]
    Gap {
        needed_from: Lsn,
        first: Lsn,
        after_lsn: Lsn,
    },
}

/// Classifies the bytes from the first invalid record at `offset` on.
fn classify_end(bytes: &[u8], offset: usize, salt: u32, lsn: Lsn, invalid: String) -> SegmentEnd {
    let tail = bytes.get(offset..).unwrap_or_default();
    if is_all_zero(tail) {
        return SegmentEnd::Clean;
    }
    if let Some(valid_at) = find_valid_record(bytes, offset, salt, lsn) {
        let reason = format!("{invalid}; a valid record follows at byte offset {valid_at}");
        return SegmentEnd::Corrupt {
            offset: offset as u64,
            reason,
        };
    }
    let reason = format!("torn tail: {invalid}");
    SegmentEnd::Torn {
        offset: offset as u64,
        nonzero_end: nonzero_end(bytes) as u64,
        reason,
    }
}

/// The offset of the first record at or after `from` whose checksum verifies. Only
/// candidates whose LSN could belong to this log (1 ..= one per remaining 16 bytes past
/// `expected_lsn`) pay for a checksum, so a garbage tail is scanned in linear time.
fn find_valid_record(bytes: &[u8], from: usize, salt: u32, expected_lsn: Lsn) -> Option<usize> {
    let end = nonzero_end(bytes);
    (from..end).step_by(RECORD_ALIGN_BYTES).find(|&offset| {
        let remaining_records = ((bytes.len() - offset) / RECORD_HEADER_BYTES) as u64;
        let plausible = 1..=expected_lsn.saturating_add(remaining_records);
        let Some(lsn) = record::peek_lsn(bytes, offset) else {
            return false;
        };
        plausible.contains(&lsn) && record::decode_at(bytes, offset, salt).is_ok()
    })
}

/// One past the last non-zero byte (0 if all zero).
fn nonzero_end(bytes: &[u8]) -> usize {
    bytes.iter().rposition(|&byte| byte != 0).map_or(0, |idx| idx + 1)
}

/// Zero test written so the compiler can vectorise it: a preallocated segment's tail
/// is tens of MiB of zeros.
fn is_all_zero(bytes: &[u8]) -> bool {
    let mut chunks = bytes.chunks_exact(64);
    let chunks_zero = chunks.all(|chunk| chunk.iter().fold(0, |acc, &byte| acc | byte) == 0);
    chunks_zero && chunks.remainder().iter().all(|&byte| byte == 0)
}

/// Gives back the zeros after a segment's last record: the preallocated space
/// of a segment whose writer was killed (a clean stop truncates it when it
/// seals the segment). Without this, every crash left a whole preallocated
/// segment behind and every later start scanned its zeros again. Best effort:
/// the log is just as valid with the zeros, so a failure is only logged, and
/// the cut needs no sync (if it is lost, the zeros come back).
fn trim_zero_tail(fs: &dyn WalFs, file: &SegmentFile, records_end: u64) {
    let trimmed = fs
        .open_rw(&file.path)
        .and_then(|mut handle| handle.set_len(records_end));
    match trimmed {
        Ok(()) => tracing::debug!(file = %file.path.display(), records_end, "WAL preallocation given back"),
        Err(error) => tracing::warn!(file = %file.path.display(), %error, "could not give back WAL preallocation"),
    }
}

/// Cuts a torn tail: truncate the newest segment at `offset`, sync.
fn cut_torn(fs: &dyn WalFs, file: &SegmentFile, offset: u64, nonzero_end: u64) -> Result<TornTail, WalError> {
    let bytes_cut = nonzero_end.saturating_sub(offset);
    tracing::warn!(file = %file.path.display(), offset, bytes_cut, "WAL torn tail truncated");
    let mut handle = fs
        .open_rw(&file.path)
        .map_err(|source| WalError::io("open", &file.path, source))?;
    handle
        .set_len(offset)
        .map_err(|source| WalError::io("truncate", &file.path, source))?;
    handle.sync_data().map_err(|source| WalError::SyncFailed {
        path: file.path.clone(),
        source,
    })?;
    Ok(TornTail {
        file: file.path.clone(),
        offset,
        bytes_cut,
    })
}

/// Removes a newest segment whose header never made it to disk (it holds no record).
fn remove_unborn(fs: &dyn WalFs, file: &SegmentFile, nonzero_bytes: u64) -> Result<TornTail, WalError> {
    tracing::warn!(file = %file.path.display(), "WAL segment without a header removed");
    fs.remove_file(&file.path)
        .map_err(|source| WalError::io("remove", &file.path, source))?;
    let dir = file.path.parent().unwrap_or(Path::new("."));
    fs.sync_dir(dir).map_err(|source| WalError::SyncFailed {
        path: dir.to_owned(),
        source,
    })?;
    Ok(TornTail {
        file: file.path.clone(),
        offset: 0,
        bytes_cut: nonzero_bytes,
    })
}

/// `--salvage-wal`: keep the log up to the damage in `segments[0]`, move the rest aside.
fn salvage_at(fs: &dyn WalFs, wal_dir: &Path, segments: &[SegmentFile], damage: Damage) -> Result<Salvaged, WalError> {
    let (damaged, later) = segments.split_first().expect("salvage starts at a damaged segment");
    let kept_copy = salvaged_path(&damaged.path, damage.offset);
    let bytes_cut = match damage.offset {
        0 => move_aside(fs, &damaged.path, &kept_copy).map(|()| damaged.len_bytes)?,
        offset => cut_with_copy(fs, &damaged.path, offset, &kept_copy)?,
    };
    let mut moved_aside = Vec::with_capacity(later.len());
    for segment in later {
        let aside = salvaged_path(&segment.path, 0);
        move_aside(fs, &segment.path, &aside)?;
        moved_aside.push(aside);
    }
    fs.sync_dir(wal_dir).map_err(|source| WalError::SyncFailed {
        path: wal_dir.to_owned(),
        source,
    })?;
    let Damage { offset, reason } = damage;
    tracing::warn!(file = %damaged.path.display(), offset, %reason, kept = %kept_copy.display(), "WAL salvaged");
    Ok(Salvaged {
        file: damaged.path.clone(),
        offset,
        reason,
        bytes_cut,
        kept_copy,
        moved_aside,
    })
}

fn salvaged_path(path: &Path, offset: u64) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".salvaged-{offset}"));
    PathBuf::from(name)
}

fn move_aside(fs: &dyn WalFs, from: &Path, to: &Path) -> Result<(), WalError> {
    fs.rename(from, to)
        .map_err(|source| WalError::io("rename", from, source))
}

/// Copies `path[offset..]` to `copy` (synced), then truncates `path` at `offset` (synced).
fn cut_with_copy(fs: &dyn WalFs, path: &Path, offset: u64, copy: &Path) -> Result<u64, WalError> {
    let bytes = fs
        .read_all(path, MAX_SEGMENT_FILE_BYTES)
        .map_err(|source| WalError::io("read", path, source))?;
    let start = usize::try_from(offset).unwrap_or(usize::MAX).min(bytes.len());
    let cut = &bytes[start..nonzero_end(&bytes).max(start)];
    let mut kept = fs
        .create_new(copy)
        .map_err(|source| WalError::io("create", copy, source))?;
    kept.write_all_at(cut, 0)
        .map_err(|source| WalError::io("write", copy, source))?;
    kept.sync_data().map_err(|source| WalError::SyncFailed {
        path: copy.to_owned(),
        source,
    })?;
    let mut handle = fs.open_rw(path).map_err(|source| WalError::io("open", path, source))?;
    handle
        .set_len(offset)
        .map_err(|source| WalError::io("truncate", path, source))?;
    handle.sync_data().map_err(|source| WalError::SyncFailed {
        path: path.to_owned(),
        source,
    })?;
    Ok(cut.len() as u64)
}
