//! Record framing: how one payload becomes bytes in a segment, and back.
//!
//! ```text
//! offset 0   len     u32 LE   payload length in bytes (padding excluded)
//! offset 4   crc     u32 LE   crc32c seeded with the segment salt, over len | lsn | payload
//! offset 8   lsn     u64 LE
//! offset 16  payload, then zero bytes up to the next multiple of 16
//! ```
//!
//! Records start 16-aligned (the segment header is 32 bytes), so payloads do too.
//! Decoding checks `len` against [`MAX_PAYLOAD_BYTES`] and against the end of the
//! buffer before touching the payload, and requires zero padding, so every bit of a
//! record is checked. This file knows nothing of files, segment headers or LSN
//! continuity (`segment.rs`, `replay.rs`).

use std::fmt;

use super::Lsn;

/// Bytes before the payload.
pub(crate) const RECORD_HEADER_BYTES: usize = 16;
/// Records and payloads start on multiples of this.
pub(crate) const RECORD_ALIGN_BYTES: usize = 16;
/// Largest payload: twice the largest frame a shared-memory ring can carry
/// (`MAX_RING_BYTES / 2`), so a logged request plus what the store adds always fits;
/// it also bounds what replay trusts a `len` field with.
pub const MAX_PAYLOAD_BYTES: usize = 64 << 20;

const _: () = assert!(MAX_PAYLOAD_BYTES <= u32::MAX as usize);
const _: () = assert!(RECORD_HEADER_BYTES.is_multiple_of(RECORD_ALIGN_BYTES));

/// Bytes a payload of `payload_len` bytes occupies in a segment, framing included.
pub(crate) const fn framed_len(payload_len: usize) -> usize {
    (RECORD_HEADER_BYTES + payload_len).next_multiple_of(RECORD_ALIGN_BYTES)
}

/// Appends one framed record to `out`, which must end on a record boundary.
#[cfg(test)]
pub(crate) fn encode_into(out: &mut Vec<u8>, salt: u32, lsn: Lsn, payload: &[u8]) {
    encode_with_crc_into(out, salt, lsn, payload, payload_crc(payload));
}

/// [`encode_into`] with the payload's [`payload_crc`] already known.
pub(crate) fn encode_with_crc_into(out: &mut Vec<u8>, salt: u32, lsn: Lsn, payload: &[u8], crc: Option<u32>) {
    assert!(out.len().is_multiple_of(RECORD_ALIGN_BYTES), "records start aligned");
    let start = out.len();
    out.extend_from_slice(&header(salt, lsn, payload, crc));
    out.extend_from_slice(payload);
    out.resize(start + framed_len(payload.len()), 0);
}

/// Payloads at least this big have their checksum pass done ahead, off the
/// writer thread (see [`payload_crc`]). Combining costs ~20 µs whatever the
/// size, so it pays only where the pass itself costs more.
pub(crate) const PRECOMPUTED_CRC_MIN_BYTES: usize = 256 << 10;

/// A big payload's plain crc32c, computed by the appending thread; `None` for
/// small payloads, whose checksum the writer computes in one pass.
pub(crate) fn payload_crc(payload: &[u8]) -> Option<u32> {
    (payload.len() >= PRECOMPUTED_CRC_MIN_BYTES).then(|| crc32c::crc32c(payload))
}

/// The 16 bytes before `payload`. With its plain crc32c known (`payload_crc`),
/// the record's checksum is derived from it (crc32c_combine) instead of
/// reading the payload again.
pub(crate) fn header(salt: u32, lsn: Lsn, payload: &[u8], payload_crc: Option<u32>) -> [u8; RECORD_HEADER_BYTES] {
    assert!(
        payload.len() <= MAX_PAYLOAD_BYTES,
        "callers bound payloads by MAX_PAYLOAD_BYTES"
    );
    let len = payload.len() as u32;
    let crc = match payload_crc {
        Some(known) => crc32c::crc32c_combine(header_crc(salt, len, lsn), known, payload.len()),
        None => record_crc(salt, len, lsn, payload),
    };
    let mut out = [0u8; RECORD_HEADER_BYTES];
    out[0..4].copy_from_slice(&len.to_le_bytes());
    out[4..8].copy_from_slice(&crc.to_le_bytes());
    out[8..16].copy_from_slice(&lsn.to_le_bytes());
    out
}

/// Zero bytes after a payload of `payload_len` bytes, up to the next record.
pub(crate) const fn padding_len(payload_len: usize) -> usize {
    framed_len(payload_len) - RECORD_HEADER_BYTES - payload_len
}

/// A record that decoded: its LSN, payload and where the next record starts.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RecordRef<'a> {
    pub lsn: Lsn,
    pub payload: &'a [u8],
    pub end_offset: usize,
}

/// Why the bytes at an offset are not a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum InvalidRecord {
    /// Fewer than a header's bytes remain.
    HeaderPastEnd,
    /// `len` is larger than any payload the writer produces.
    LenTooLarge { len: u32 },
    /// The record would end past the end of the file.
    PastEnd { len: u32 },
    /// The checksum does not match (torn write, bit rot, or bytes from elsewhere).
    CrcMismatch,
    /// The padding after the payload is not zero.
    NonZeroPadding,
}

impl fmt::Display for InvalidRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::HeaderPastEnd => write!(f, "record header cut by the end of the file"),
            Self::LenTooLarge { len } => write!(f, "record length {len} exceeds {MAX_PAYLOAD_BYTES}"),
            Self::PastEnd { len } => write!(f, "record of {len} bytes runs past the end of the file"),
            Self::CrcMismatch => write!(f, "record checksum mismatch"),
            Self::NonZeroPadding => write!(f, "record padding is not zero"),
        }
    }
}

/// Decodes the record at `offset` (a multiple of 16) of `bytes`.
pub(crate) fn decode_at(bytes: &[u8], offset: usize, salt: u32) -> Result<RecordRef<'_>, InvalidRecord> {
    debug_assert!(offset.is_multiple_of(RECORD_ALIGN_BYTES));
    let header = read_header(bytes, offset).ok_or(InvalidRecord::HeaderPastEnd)?;
    let payload_len = usize::try_from(header.len).map_err(|_| InvalidRecord::LenTooLarge { len: header.len })?;
    if payload_len > MAX_PAYLOAD_BYTES {
        return Err(InvalidRecord::LenTooLarge { len: header.len });
    }
    let payload_start = offset + RECORD_HEADER_BYTES;
    let end_offset = offset
        .checked_add(framed_len(payload_len))
        .ok_or(InvalidRecord::PastEnd { len: header.len })?;
    let framed = bytes
        .get(payload_start..end_offset)
        .ok_or(InvalidRecord::PastEnd { len: header.len })?;
    let (payload, padding) = framed.split_at(payload_len);
    if record_crc(salt, header.len, header.lsn, payload) != header.crc {
        return Err(InvalidRecord::CrcMismatch);
    }
    if padding.iter().any(|&byte| byte != 0) {
        return Err(InvalidRecord::NonZeroPadding);
    }
    Ok(RecordRef {
        lsn: header.lsn,
        payload,
        end_offset,
    })
}

/// The LSN field at `offset`, unchecked: replay uses it to skip hopeless candidates
/// cheaply before paying for a checksum.
pub(crate) fn peek_lsn(bytes: &[u8], offset: usize) -> Option<Lsn> {
    read_header(bytes, offset).map(|header| header.lsn)
}

struct RecordHeader {
    len: u32,
    crc: u32,
    lsn: Lsn,
}

fn read_header(bytes: &[u8], offset: usize) -> Option<RecordHeader> {
    let header: &[u8; RECORD_HEADER_BYTES] = bytes
        .get(offset..offset.checked_add(RECORD_HEADER_BYTES)?)?
        .try_into()
        .ok()?;
    let (len, rest) = header.split_first_chunk::<4>()?;
    let (crc, lsn) = rest.split_first_chunk::<4>()?;
    Some(RecordHeader {
        len: u32::from_le_bytes(*len),
        crc: u32::from_le_bytes(*crc),
        lsn: u64::from_le_bytes(lsn.try_into().ok()?),
    })
}

fn record_crc(salt: u32, len: u32, lsn: Lsn, payload: &[u8]) -> u32 {
    crc32c::crc32c_append(header_crc(salt, len, lsn), payload)
}

/// The checksum's state after `len` and `lsn`, seeded with the salt.
fn header_crc(salt: u32, len: u32, lsn: Lsn) -> u32 {
    let crc = crc32c::crc32c_append(salt, &len.to_le_bytes());
    crc32c::crc32c_append(crc, &lsn.to_le_bytes())
}
