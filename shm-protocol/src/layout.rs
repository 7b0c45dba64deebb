//! The byte layout of a connection's shared segment: what lives at which offset.
//!
//! This module is the normative description of the segment (docs/shm-layout.md
//! mirrors it, and a test keeps the two in sync). It only computes and checks
//! layouts; mapping memory is `segment.rs`, moving frames is `ring.rs`.
//!
//! ```text
//! offset 0      SegmentHeader      (128 B, written once by the daemon before the fd is sent)
//! offset 256    RingHeader request (256 B: producer line 128 B, consumer line 128 B)
//! offset 512    RingHeader response(256 B)
//! offset 4096   request ring data  (request_capacity_bytes, a power of two)
//! offset 4096+R response ring data (response_capacity_bytes, a power of two)
//! ```
//! All integers are little-endian (the only targets are x86_64 and aarch64 Linux).

use crate::sync::{AtomicU32, AtomicU64};

/// "NEXUSHM\0" read as a little-endian u64.
pub const SEGMENT_MAGIC: u64 = u64::from_le_bytes(*b"NEXUSHM\0");
/// Bytes before the first ring's data: one page holding every header.
pub const SEGMENT_HEADER_REGION_BYTES: u64 = 4096;
/// Offset of the request ring's header inside the header page.
pub const REQUEST_RING_HEADER_OFFSET: u64 = 256;
/// Offset of the response ring's header inside the header page.
pub const RESPONSE_RING_HEADER_OFFSET: u64 = 512;
/// Every frame starts at a multiple of this; it is also the payload alignment
/// rkyv gets, which covers every archived primitive (at most 8 B aligned).
pub const FRAME_ALIGN_BYTES: u64 = 16;
/// Smallest ring: one page. Rings are powers of two so positions are masks.
pub const MIN_RING_BYTES: u32 = 4096;
/// Largest ring a client may ask for (64 MiB): bounds the daemon's memory per client.
pub const MAX_RING_BYTES: u32 = 64 << 20;

/// The first bytes of the segment. Written by the daemon before it sends the
/// segment's fd, never modified afterwards; the client checks it once.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentHeader {
    /// [`SEGMENT_MAGIC`].
    pub magic: u64,
    /// [`crate::PROTOCOL_VERSION`] of the daemon that laid the segment out.
    pub protocol_version: u32,
    /// Reserved flags, zero in version 1.
    pub flags: u32,
    /// `size_of::<SegmentHeader>()`, so a reader can detect a layout change.
    pub segment_header_bytes: u32,
    /// `size_of::<RingHeader>()`.
    pub ring_header_bytes: u32,
    /// `size_of::<FrameHeader>()`.
    pub frame_header_bytes: u32,
    /// Largest payload a frame may carry, in either ring.
    pub max_frame_bytes: u32,
    /// Total mapped length.
    pub segment_bytes: u64,
    /// Offset of the request ring's data area.
    pub request_data_offset: u64,
    /// Length of the request ring's data area (a power of two).
    pub request_capacity_bytes: u64,
    /// Offset of the response ring's data area.
    pub response_data_offset: u64,
    /// Length of the response ring's data area (a power of two).
    pub response_capacity_bytes: u64,
    /// Reserved, zero.
    pub reserved: [u64; 7],
}

/// Cursors and wake-up flags of one single-producer/single-consumer ring.
///
/// Each side writes only its own 128-byte line (two cache lines, so the
/// adjacent-line prefetcher does not pull the other side's line in):
/// the producer writes `tail` and `producer_waiting`, the consumer writes
/// `head` and `consumer_sleeping`. Cursors are byte counts that only grow
/// (wrapping at 2^64, which no ring reaches); the position in the data area is
/// `cursor & (capacity - 1)`.
#[repr(C, align(128))]
pub struct RingHeader {
    /// Bytes published by the producer (frames up to here are readable).
    pub tail: AtomicU64,
    /// 1 while the producer waits for free space; the consumer signals the
    /// producer's wake fd after releasing frames if it finds 1 here.
    pub producer_waiting: AtomicU32,
    _producer_pad: [u8; 128 - 12],
    /// Bytes released by the consumer (space up to here is free again).
    pub head: AtomicU64,
    /// 1 while the consumer is (about to be) asleep on its wake fd; the
    /// producer signals only when it finds 1 here (one wake-up per burst).
    pub consumer_sleeping: AtomicU32,
    _consumer_pad: [u8; 128 - 12],
}

impl RingHeader {
    /// A header with both cursors at zero and no one asleep.
    pub fn new() -> Self {
        Self {
            tail: AtomicU64::new(0),
            producer_waiting: AtomicU32::new(0),
            _producer_pad: [0; 116],
            head: AtomicU64::new(0),
            consumer_sleeping: AtomicU32::new(0),
            _consumer_pad: [0; 116],
        }
    }
}

impl Default for RingHeader {
    fn default() -> Self {
        Self::new()
    }
}

/// The 16 bytes in front of every frame's payload.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// Payload length in bytes (the header and the alignment padding excluded).
    pub len: u32,
    /// A [`FrameKind`] value.
    pub kind: u16,
    /// Reserved, zero.
    pub flags: u16,
    /// The request id this frame carries or answers: lets the daemon answer a
    /// frame whose payload it cannot decode.
    pub request_id: u64,
}

impl FrameHeader {
    /// The little-endian wire form (the socket transport sends headers as bytes).
    pub fn to_le_bytes(&self) -> [u8; 16] {
        let mut out = [0u8; 16];
        out[0..4].copy_from_slice(&self.len.to_le_bytes());
        out[4..6].copy_from_slice(&self.kind.to_le_bytes());
        out[6..8].copy_from_slice(&self.flags.to_le_bytes());
        out[8..16].copy_from_slice(&self.request_id.to_le_bytes());
        out
    }

    /// Parses the little-endian wire form; every bit pattern is a header
    /// (the reader validates `len` and `kind`).
    pub fn from_le_bytes(bytes: &[u8; 16]) -> Self {
        let [l0, l1, l2, l3, k0, k1, f0, f1, rest @ ..] = *bytes;
        Self {
            len: u32::from_le_bytes([l0, l1, l2, l3]),
            kind: u16::from_le_bytes([k0, k1]),
            flags: u16::from_le_bytes([f0, f1]),
            request_id: u64::from_le_bytes(rest),
        }
    }
}

/// What a frame holds. Unknown values are answered with `UnknownFrameKind`.
#[repr(u16)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameKind {
    /// An rkyv-archived [`crate::wire::Request`].
    Request = 1,
    /// An rkyv-archived [`crate::wire::Response`].
    Response = 2,
    /// Not a frame: the rest of the data area up to its end is padding and
    /// the next frame starts at position 0.
    Wrap = 0xFFFF,
}

impl FrameKind {
    /// The kind for a raw value, if it is one.
    pub fn from_u16(raw: u16) -> Option<Self> {
        match raw {
            1 => Some(Self::Request),
            2 => Some(Self::Response),
            0xFFFF => Some(Self::Wrap),
            _ => None,
        }
    }
}

/// Size of a frame header, as the ring arithmetic uses it.
pub const FRAME_HEADER_BYTES: u64 = size_of::<FrameHeader>() as u64;

// Layout assertions: these sizes are part of the wire contract (version 1).
#[cfg(not(loom))]
const _: () = {
    assert!(size_of::<SegmentHeader>() == 128);
    assert!(align_of::<SegmentHeader>() == 8);
    assert!(size_of::<RingHeader>() == 256);
    assert!(align_of::<RingHeader>() == 128);
    assert!(size_of::<FrameHeader>() == 16);
    assert!(FRAME_HEADER_BYTES == FRAME_ALIGN_BYTES);
    assert!(REQUEST_RING_HEADER_OFFSET >= size_of::<SegmentHeader>() as u64);
    assert!(RESPONSE_RING_HEADER_OFFSET >= REQUEST_RING_HEADER_OFFSET + 256);
    assert!(RESPONSE_RING_HEADER_OFFSET + 256 <= SEGMENT_HEADER_REGION_BYTES);
    assert!(std::mem::offset_of!(RingHeader, head) == 128);
};

/// Rounds `value` up to the frame alignment.
pub const fn align_frame(value: u64) -> u64 {
    (value + FRAME_ALIGN_BYTES - 1) & !(FRAME_ALIGN_BYTES - 1)
}

/// Bytes a frame with `payload_bytes` of payload occupies in a ring.
pub const fn frame_footprint(payload_bytes: u64) -> u64 {
    align_frame(FRAME_HEADER_BYTES + payload_bytes)
}

/// Why a proposed layout was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LayoutError {
    /// A ring size is outside the allowed range or not a power of two.
    #[error("ring size {bytes} B is invalid: it must be a power of two between {min} and {max}")]
    BadRingSize {
        /// What was asked for.
        bytes: u64,
        /// [`MIN_RING_BYTES`].
        min: u32,
        /// [`MAX_RING_BYTES`].
        max: u32,
    },
    /// The header read from a segment does not describe a valid layout.
    #[error("segment header is invalid: {0}")]
    BadHeader(&'static str),
}

/// The largest frame payload a ring of `capacity_bytes` can always accept:
/// half the ring less one header, so a frame fits whatever the wrap position.
pub const fn max_frame_for_capacity(capacity_bytes: u64) -> u64 {
    capacity_bytes / 2 - FRAME_HEADER_BYTES
}

/// Rounds a requested ring size to a valid one (a power of two within bounds).
pub fn normalize_ring_bytes(requested: u32) -> u32 {
    requested
        .clamp(MIN_RING_BYTES, MAX_RING_BYTES)
        .checked_next_power_of_two()
        .unwrap_or(MAX_RING_BYTES)
        .min(MAX_RING_BYTES)
}

impl SegmentHeader {
    /// The header for a segment with the given ring sizes and frame limit.
    pub fn new(
        request_capacity_bytes: u32,
        response_capacity_bytes: u32,
        max_frame_bytes: u32,
    ) -> Result<Self, LayoutError> {
        for bytes in [request_capacity_bytes, response_capacity_bytes] {
            check_ring_bytes(u64::from(bytes))?;
        }
        let request = u64::from(request_capacity_bytes);
        let response = u64::from(response_capacity_bytes);
        let frame_limit = max_frame_for_capacity(request.min(response));
        Ok(Self {
            magic: SEGMENT_MAGIC,
            protocol_version: crate::PROTOCOL_VERSION,
            flags: 0,
            segment_header_bytes: size_of::<SegmentHeader>() as u32,
            ring_header_bytes: size_of::<RingHeader>() as u32,
            frame_header_bytes: size_of::<FrameHeader>() as u32,
            max_frame_bytes: u64::from(max_frame_bytes).min(frame_limit) as u32,
            segment_bytes: SEGMENT_HEADER_REGION_BYTES + request + response,
            request_data_offset: SEGMENT_HEADER_REGION_BYTES,
            request_capacity_bytes: request,
            response_data_offset: SEGMENT_HEADER_REGION_BYTES + request,
            response_capacity_bytes: response,
            reserved: [0; 7],
        })
    }

    /// Checks a header read from a mapped segment of `mapped_bytes` bytes.
    pub fn validate(&self, mapped_bytes: u64) -> Result<(), LayoutError> {
        let bad = LayoutError::BadHeader;
        if self.magic != SEGMENT_MAGIC {
            return Err(bad("wrong magic"));
        }
        if self.protocol_version != crate::PROTOCOL_VERSION {
            return Err(bad("protocol version differs from the handshake's"));
        }
        if self.segment_header_bytes != size_of::<SegmentHeader>() as u32
            || self.ring_header_bytes != size_of::<RingHeader>() as u32
            || self.frame_header_bytes != size_of::<FrameHeader>() as u32
        {
            return Err(bad("header sizes differ from this build's layout"));
        }
        check_ring_bytes(self.request_capacity_bytes)?;
        check_ring_bytes(self.response_capacity_bytes)?;
        let expected = Self::new(
            self.request_capacity_bytes as u32,
            self.response_capacity_bytes as u32,
            self.max_frame_bytes,
        )?;
        if expected != *self {
            return Err(bad("offsets or frame limit are inconsistent"));
        }
        if self.segment_bytes != mapped_bytes {
            return Err(bad("segment length differs from the mapping"));
        }
        Ok(())
    }
}

fn check_ring_bytes(bytes: u64) -> Result<(), LayoutError> {
    let in_range = (u64::from(MIN_RING_BYTES)..=u64::from(MAX_RING_BYTES)).contains(&bytes);
    if in_range && bytes.is_power_of_two() {
        Ok(())
    } else {
        Err(LayoutError::BadRingSize {
            bytes,
            min: MIN_RING_BYTES,
            max: MAX_RING_BYTES,
        })
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips_through_validation() {
        let header = SegmentHeader::new(8192, 65536, 1 << 20).unwrap();
        assert_eq!(header.max_frame_bytes, 8192 / 2 - 16);
        assert_eq!(header.segment_bytes, 4096 + 8192 + 65536);
        header.validate(header.segment_bytes).unwrap();
        assert!(header.validate(header.segment_bytes + 1).is_err());
    }

    #[test]
    fn ring_sizes_are_normalised_into_range() {
        assert_eq!(normalize_ring_bytes(0), MIN_RING_BYTES);
        assert_eq!(normalize_ring_bytes(5000), 8192);
        assert_eq!(normalize_ring_bytes(u32::MAX), MAX_RING_BYTES);
        assert!(SegmentHeader::new(5000, 8192, 100).is_err());
    }
}
