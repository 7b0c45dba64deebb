//! Helpers for the cargo-fuzz targets in `fuzz/` (nexusd itself never calls them).
//!
//! Every record and segment header carries a crc32c, so a fuzzer mutating raw bytes
//! almost never gets past the checksums: it would only ever test `CrcMismatch`. These
//! helpers build a valid segment (the seeds) and re-seal a mutated one's checksums,
//! so the fuzzer reaches record framing, LSN continuity, the torn-tail and corruption
//! verdicts and the payloads behind them. Replay itself is fuzzed through the public
//! [`replay`](super::replay); nothing here changes how it judges bytes.

use super::Lsn;
use super::record::{self, MAX_PAYLOAD_BYTES, RECORD_HEADER_BYTES};
use super::segment::{SEGMENT_HEADER_BYTES, SegmentHeader};

/// Bytes of the segment header covered by its checksum (see `segment.rs`).
const SEGMENT_HEADER_CRC_AT: usize = 28;

/// A segment file's bytes: the header for `first_lsn` and `salt`, then one record per
/// payload with consecutive LSNs from `first_lsn`, exactly as the writer frames them.
pub fn segment_bytes(first_lsn: Lsn, salt: u32, payloads: &[&[u8]]) -> Vec<u8> {
    let mut out = SegmentHeader { first_lsn, salt }.encode().to_vec();
    for (lsn, payload) in (first_lsn..).zip(payloads) {
        record::encode_with_crc_into(&mut out, salt, lsn, payload, None);
    }
    out
}

/// Recomputes the checksum of the segment header (its other bytes are kept, a bad
/// magic included), then of each record from the first on, for as long as a record's
/// length field fits in `bytes`; the first one that does not is left as it is.
pub fn reseal(bytes: &mut [u8]) {
    let Some(header) = bytes.get_mut(..SEGMENT_HEADER_BYTES) else {
        return;
    };
    let crc = crc32c::crc32c(&header[..SEGMENT_HEADER_CRC_AT]);
    header[SEGMENT_HEADER_CRC_AT..].copy_from_slice(&crc.to_le_bytes());
    let salt = u32::from_le_bytes(header[24..28].try_into().expect("4 bytes"));
    let mut offset = SEGMENT_HEADER_BYTES;
    while let Some(next) = reseal_record(bytes, offset, salt) {
        offset = next;
    }
}

/// Re-seals the record at `offset`; returns where the next one starts.
fn reseal_record(bytes: &mut [u8], offset: usize, salt: u32) -> Option<usize> {
    let header = bytes.get(offset..offset.checked_add(RECORD_HEADER_BYTES)?)?;
    let len = u32::from_le_bytes(header[0..4].try_into().ok()?);
    let lsn = u64::from_le_bytes(header[8..16].try_into().ok()?);
    let payload_len = usize::try_from(len).ok().filter(|&len| len <= MAX_PAYLOAD_BYTES)?;
    let payload_start = offset + RECORD_HEADER_BYTES;
    let payload = bytes.get(payload_start..payload_start.checked_add(payload_len)?)?;
    let sealed = record::header(salt, lsn, payload, None);
    bytes[offset + 4..offset + 8].copy_from_slice(&sealed[4..8]);
    Some(offset + record::framed_len(payload_len))
}
