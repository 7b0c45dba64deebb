//! Single-producer/single-consumer rings of variable-length frames in shared memory.
//!
//! A frame is written in place: the producer hands the free space to an
//! encoder (rkyv serializes straight into it), then publishes the frame with a
//! single release store of `tail`, so a panic mid-write never exposes half a
//! frame. The consumer peeks a frame, uses it, and releases it with a release
//! store of `head`. Frames never cross the end of the data area: when the
//! contiguous space left is too small, the producer writes a `Wrap` marker and
//! the frame starts again at position 0 (both published by the same store).
//!
//! The peer process can write every byte of the segment at any time, so all
//! cursor values and frame headers read from it are validated with wrapping
//! arithmetic and turned into [`RingError`]s, never panics. This module does
//! not block or make syscalls: waiting and waking is `wake.rs`, driven by the
//! flag protocol exposed here (`prepare_sleep`, `consumer_needs_wake`, ...).

use std::any::Any;
use std::mem::MaybeUninit;
use std::sync::Arc;

use crate::layout::{FRAME_ALIGN_BYTES, FRAME_HEADER_BYTES, FrameHeader, FrameKind, RingHeader, frame_footprint};
use crate::sync::{Ordering, fence};

/// Keeps the memory behind a ring mapped for as long as a ring end exists.
pub type Keepalive = Arc<dyn Any + Send + Sync>;

/// A ring's shared memory: its header and data area. Both ends hold one.
struct RingMemory {
    header: *const RingHeader,
    data: *mut u8,
    capacity_bytes: u64,
    max_frame_bytes: u64,
    _keepalive: Keepalive,
}

/// What went wrong reading or writing a ring. `Corrupt` poisons the ring.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RingError {
    /// The peer's cursor is impossible (beyond capacity or misaligned): the
    /// shared state cannot be trusted any more and the connection must close.
    #[error("ring cursors are corrupt: {0}")]
    Corrupt(&'static str),
    /// A published frame is malformed. Everything published up to
    /// `resume_at` is discarded with [`Consumer::skip_to`]; the ring stays usable.
    #[error("malformed frame (request {request_id}): {reason}")]
    BadFrame {
        /// The request id from the frame header (may itself be garbage).
        request_id: u64,
        /// What was wrong.
        reason: BadFrameReason,
        /// The producer's cursor when the bad frame was seen.
        resume_at: u64,
    },
    /// The payload cannot fit in any frame of this ring.
    #[error("frame payload exceeds the maximum of {max} bytes")]
    FrameTooLarge {
        /// [`crate::layout::SegmentHeader::max_frame_bytes`].
        max: u64,
    },
}

/// The ways a frame header can be wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BadFrameReason {
    /// `len` exceeds the ring's maximum frame size.
    TooLarge {
        /// Declared payload length.
        len: u32,
        /// The ring's maximum.
        max: u64,
    },
    /// The frame extends beyond what the producer published, or past the end
    /// of the data area.
    Overrun {
        /// Declared payload length.
        len: u32,
        /// Bytes published from the frame's start.
        available: u64,
    },
    /// A wrap marker with no frame after it.
    DanglingWrap,
}

impl std::fmt::Display for BadFrameReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::TooLarge { len, max } => write!(f, "length {len} exceeds the maximum frame of {max} bytes"),
            Self::Overrun { len, available } => {
                write!(f, "length {len} runs past the {available} published bytes")
            }
            Self::DanglingWrap => write!(f, "wrap marker with nothing published after it"),
        }
    }
}

/// A published frame located by [`Consumer::peek`]; valid until released.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame {
    /// The raw kind (unknown values are the caller's to reject).
    pub kind: u16,
    /// Request id from the frame header.
    pub request_id: u64,
    /// Payload length in bytes.
    pub len: u32,
    payload_pos: u64,
    next_head: u64,
}

/// The producing end of a ring. Exactly one exists per ring.
pub struct Producer {
    memory: RingMemory,
    /// Our own cursor; the shared `tail` is only ever set from it.
    tail: u64,
}

/// The consuming end of a ring. Exactly one exists per ring.
pub struct Consumer {
    memory: RingMemory,
    /// Our own cursor; the shared `head` is only ever set from it.
    head: u64,
}

// SAFETY: the raw pointers point into memory kept mapped by `_keepalive`, and
// each end is unique (the segment hands every role out once), so moving an
// end to another thread moves the only accessor of its side of the protocol.
unsafe impl Send for Producer {}
// SAFETY: as for `Producer`.
unsafe impl Send for Consumer {}

impl RingMemory {
    fn header(&self) -> &RingHeader {
        // SAFETY: `header` points to an initialised, 128-aligned RingHeader inside
        // memory that `_keepalive` keeps mapped; all its fields are atomics, so
        // shared references are sound even while the peer writes them.
        unsafe { &*self.header }
    }

    fn mask(&self) -> u64 {
        self.capacity_bytes - 1
    }
}

/// The flag words of a ring's header, which double as futex words: a waiter
/// sleeps on the flag it set (`wake::futex_wait`), the side that clears it
/// wakes that address (`wake::futex_wake`). Both ends can name both.
#[cfg(not(loom))]
macro_rules! flag_words {
    ($end:ty) => {
        impl $end {
            /// The ring's `consumer_sleeping` word (a futex address).
            pub fn consumer_sleeping_word(&self) -> &std::sync::atomic::AtomicU32 {
                &self.memory.header().consumer_sleeping
            }

            /// The ring's `producer_waiting` word (a futex address).
            pub fn producer_waiting_word(&self) -> &std::sync::atomic::AtomicU32 {
                &self.memory.header().producer_waiting
            }
        }
    };
}
#[cfg(not(loom))]
flag_words!(Producer);
#[cfg(not(loom))]
flag_words!(Consumer);

/// Creates both ends of a ring over raw memory.
///
/// # Safety
/// `header` must point to an initialised [`RingHeader`] and `data` to
/// `capacity_bytes` writable bytes aligned to [`FRAME_ALIGN_BYTES`], both kept
/// valid by `keepalive`; `capacity_bytes` must be a power of two and
/// `max_frame_bytes + 16 <= capacity_bytes / 2`. In this process, no other
/// end may exist for this ring. Only the peer process may hold the other end.
pub unsafe fn ring_ends_from_raw(
    header: *const RingHeader,
    data: *mut u8,
    capacity_bytes: u64,
    max_frame_bytes: u64,
    keepalive: Keepalive,
) -> (Producer, Consumer) {
    assert!(capacity_bytes.is_power_of_two() && capacity_bytes >= 2 * FRAME_ALIGN_BYTES);
    assert!(max_frame_bytes + FRAME_HEADER_BYTES <= capacity_bytes / 2);
    let memory = || RingMemory {
        header,
        data,
        capacity_bytes,
        max_frame_bytes,
        _keepalive: keepalive.clone(),
    };
    // Both cursors start at zero in this process's own memory, never from
    // the shared header: the peer may have written anything there before we
    // got here (it holds the memfd from the moment it is sent). Every value
    // later read from the header is checked against these private cursors.
    let producer = Producer {
        memory: memory(),
        tail: 0,
    };
    let consumer = Consumer {
        memory: memory(),
        head: 0,
    };
    (producer, consumer)
}

impl Producer {
    /// Largest payload this ring accepts.
    pub fn max_frame_bytes(&self) -> u64 {
        self.memory.max_frame_bytes
    }

    /// Writes one frame whose payload `encode` produces in place, and publishes it.
    ///
    /// `encode` gets the free contiguous space (at most the maximum frame size)
    /// and returns how many bytes it wrote, or `None` when they did not fit.
    /// Returns `Ok(Some(len))` when published, `Ok(None)` when the ring lacks
    /// space now (wait for the consumer and retry).
    pub fn try_write<F>(&mut self, kind: FrameKind, request_id: u64, mut encode: F) -> Result<Option<u32>, RingError>
    where
        F: FnMut(&mut [MaybeUninit<u8>]) -> Option<usize>,
    {
        let free = self.free_bytes()?;
        let pos = self.tail & self.memory.mask();
        let to_end = self.memory.capacity_bytes - pos;
        let max = self.memory.max_frame_bytes;
        // First choice: right here, in the space up to the end of the data area.
        let here = free.min(to_end);
        if let Some(len) = self.encode_at(pos, here, &mut encode) {
            self.publish_frame(pos, 0, kind, request_id, len);
            return Ok(Some(len));
        }
        if here - FRAME_HEADER_BYTES.min(here) >= max {
            return Err(RingError::FrameTooLarge { max });
        }
        // Second choice: wrap to position 0, if the end (not the consumer) was the limit.
        if to_end < free {
            let at_start = free - to_end;
            if let Some(len) = self.encode_at(0, at_start, &mut encode) {
                self.write_header(pos, FrameKind::Wrap as u16, 0, 0);
                self.publish_frame(0, to_end, kind, request_id, len);
                return Ok(Some(len));
            }
            if at_start - FRAME_HEADER_BYTES.min(at_start) >= max {
                return Err(RingError::FrameTooLarge { max });
            }
        }
        Ok(None)
    }

    /// Writes a frame with the given payload bytes (a convenience over `try_write`).
    pub fn try_write_bytes(
        &mut self,
        kind: FrameKind,
        request_id: u64,
        payload: &[u8],
    ) -> Result<Option<u32>, RingError> {
        if payload.len() as u64 > self.memory.max_frame_bytes {
            return Err(RingError::FrameTooLarge {
                max: self.memory.max_frame_bytes,
            });
        }
        self.try_write(kind, request_id, |slot| {
            let dst = slot.get_mut(..payload.len())?;
            for (d, s) in dst.iter_mut().zip(payload) {
                d.write(*s);
            }
            Some(payload.len())
        })
    }

    /// Publishes a frame header that declares `declared_len` payload bytes but
    /// carries `payload` (which may be shorter). For protocol tests and fuzzing
    /// only: it lets a test client produce the malformed frames the daemon must survive.
    pub fn write_raw_for_tests(
        &mut self,
        kind: u16,
        request_id: u64,
        declared_len: u32,
        payload: &[u8],
    ) -> Result<bool, RingError> {
        let free = self.free_bytes()?;
        let pos = self.tail & self.memory.mask();
        let footprint = frame_footprint(payload.len() as u64);
        if footprint > free.min(self.memory.capacity_bytes - pos) {
            return Ok(false);
        }
        // SAFETY: [pos, pos + footprint) is free (checked above) and inside the data area.
        unsafe {
            let dst = self.memory.data.add((pos + FRAME_HEADER_BYTES) as usize);
            std::ptr::copy_nonoverlapping(payload.as_ptr(), dst, payload.len());
        }
        self.write_header(pos, kind, request_id, declared_len);
        self.tail += footprint;
        self.memory.header().tail.store(self.tail, Ordering::Release);
        Ok(true)
    }

    /// After a burst of writes: true when the consumer said it is asleep, in
    /// which case the caller must signal its wake fd (once). Clears the flag.
    pub fn consumer_needs_wake(&self) -> bool {
        // Dekker pairing: our tail store, then this fence, then the flag load;
        // the consumer stores the flag, fences (prepare_sleep), then loads tail.
        // At least one of the two sees the other's store.
        fence(Ordering::SeqCst);
        let sleeping = &self.memory.header().consumer_sleeping;
        sleeping.load(Ordering::Relaxed) == 1 && sleeping.swap(0, Ordering::Relaxed) == 1
    }

    /// Announces that the producer is about to wait for space. Returns false
    /// when space was freed meanwhile (do not sleep; retry the write).
    /// `seen_free` is the free space the failed write saw.
    pub fn prepare_wait_for_space(&self, seen_free: u64) -> bool {
        let header = self.memory.header();
        header.producer_waiting.store(1, Ordering::Relaxed);
        // Pairs with the fence in Consumer::producer_needs_wake.
        fence(Ordering::SeqCst);
        let still_full = self.free_bytes().map(|free| free <= seen_free).unwrap_or(false);
        if !still_full {
            header.producer_waiting.store(0, Ordering::Relaxed);
        }
        still_full
    }

    /// Clears the waiting flag after a wake-up or a timeout.
    pub fn end_wait_for_space(&self) {
        self.memory.header().producer_waiting.store(0, Ordering::Relaxed);
    }

    /// Free bytes in the ring, validating the consumer's cursor.
    pub fn free_bytes(&self) -> Result<u64, RingError> {
        // Acquire pairs with the Release store of `head` in Consumer::release:
        // the consumer is done reading the bytes it released.
        let head = self.memory.header().head.load(Ordering::Acquire);
        let used = self.tail.wrapping_sub(head);
        if used > self.memory.capacity_bytes || !head.is_multiple_of(FRAME_ALIGN_BYTES) {
            return Err(RingError::Corrupt("consumer cursor beyond the producer's"));
        }
        Ok(self.memory.capacity_bytes - used)
    }

    /// True when every published frame has been released by the consumer.
    pub fn is_drained(&self) -> bool {
        self.free_bytes()
            .map(|free| free == self.memory.capacity_bytes)
            .unwrap_or(false)
    }

    fn encode_at<F>(&mut self, pos: u64, space: u64, encode: &mut F) -> Option<u32>
    where
        F: FnMut(&mut [MaybeUninit<u8>]) -> Option<usize>,
    {
        if space < FRAME_HEADER_BYTES {
            return None;
        }
        let slot_bytes = (space - FRAME_HEADER_BYTES).min(self.memory.max_frame_bytes);
        // SAFETY: [pos, pos + space) lies in the data area (callers pass space
        // <= capacity - pos) and is free: the consumer released it and will not
        // read it before we publish. MaybeUninit because it holds old bytes we
        // must not rely on. A hostile peer writing it concurrently can only
        // spoil the frame it will itself receive.
        let slot = unsafe {
            let start = self.memory.data.add((pos + FRAME_HEADER_BYTES) as usize);
            std::slice::from_raw_parts_mut(start.cast::<MaybeUninit<u8>>(), slot_bytes as usize)
        };
        let written = encode(slot)?;
        if written as u64 > slot_bytes {
            return None;
        }
        u32::try_from(written).ok()
    }

    fn publish_frame(&mut self, pos: u64, skipped: u64, kind: FrameKind, request_id: u64, len: u32) {
        self.write_header(pos, kind as u16, request_id, len);
        let before = self.tail;
        self.tail += skipped + frame_footprint(u64::from(len));
        debug_assert!(self.tail - before <= self.memory.capacity_bytes);
        // Release pairs with the Acquire load of `tail` in Consumer::peek: the
        // header and payload written above are visible before the new tail.
        self.memory.header().tail.store(self.tail, Ordering::Release);
    }

    fn write_header(&mut self, pos: u64, kind: u16, request_id: u64, len: u32) {
        let header = FrameHeader {
            len,
            kind,
            flags: 0,
            request_id,
        };
        // SAFETY: pos is a multiple of 16 below capacity, so 16 bytes fit and the
        // address is aligned for FrameHeader; the space is free (see encode_at).
        unsafe { std::ptr::write_volatile(self.memory.data.add(pos as usize).cast::<FrameHeader>(), header) }
    }
}

impl Consumer {
    /// Largest payload this ring accepts.
    pub fn max_frame_bytes(&self) -> u64 {
        self.memory.max_frame_bytes
    }

    /// The next published frame, if any. Does not consume it.
    pub fn peek(&self) -> Result<Option<Frame>, RingError> {
        let tail = self.published_tail()?;
        if tail == self.head {
            return Ok(None);
        }
        let mut head = self.head;
        let mut header = self.read_header(head);
        if header.kind == FrameKind::Wrap as u16 {
            head += self.memory.capacity_bytes - (head & self.memory.mask());
            if head >= tail || tail.wrapping_sub(head) > self.memory.capacity_bytes {
                return Err(self.bad(header.request_id, BadFrameReason::DanglingWrap, tail));
            }
            header = self.read_header(head);
        }
        self.frame_at(head, tail, header).map(Some)
    }

    /// Marks a frame's space as free for the producer.
    pub fn release(&mut self, frame: &Frame) {
        debug_assert!(frame.next_head > self.head);
        self.head = frame.next_head;
        // Release pairs with the Acquire load of `head` in Producer::free_bytes:
        // our reads of the frame happen before the producer may overwrite it.
        self.memory.header().head.store(self.head, Ordering::Release);
    }

    /// Discards everything up to `cursor` (after a [`RingError::BadFrame`]).
    pub fn skip_to(&mut self, cursor: u64) {
        self.head = cursor;
        self.memory.header().head.store(self.head, Ordering::Release);
    }

    /// Copies a frame's payload into `out` (cleared first).
    pub fn copy_payload(&self, frame: &Frame, out: &mut Vec<u8>) {
        out.clear();
        out.resize(frame.len as usize, 0);
        self.copy_payload_to(frame, out);
    }

    /// Copies a frame's payload into an aligned buffer (cleared first), ready
    /// for `rkyv::access`. The daemon uses this at the trust boundary: it
    /// validates and uses the copy, which the peer cannot change under it.
    pub fn copy_payload_aligned(&self, frame: &Frame, out: &mut rkyv::util::AlignedVec<16>) {
        let len = frame.len as usize;
        out.clear();
        out.reserve(len);
        // SAFETY: `frame` came from `peek` on this ring, which checked that
        // [payload_pos, payload_pos + len) lies inside the data area; `out` has
        // room for `len` bytes (reserved above) and does not overlap the ring.
        // The copy initializes exactly `[0, len)` of `out`, so its length may
        // then cover them. (Not zero-filled first: a 3 MB batch would be
        // written twice.) The source may change under us (hostile peer), but
        // it is only copied as plain bytes.
        unsafe {
            let src = self.memory.data.add(frame.payload_pos as usize);
            std::ptr::copy_nonoverlapping(src, out.as_mut_ptr(), len);
            out.set_len(len);
        }
    }

    fn copy_payload_to(&self, frame: &Frame, out: &mut [u8]) {
        assert_eq!(out.len(), frame.len as usize);
        // SAFETY: `frame` came from `peek` on this ring, which checked that
        // [payload_pos, payload_pos + len) lies inside the data area, and `out`
        // is exactly len bytes of our own memory. The source bytes may change
        // under us (hostile peer) but we only copy them as plain bytes.
        unsafe {
            let src = self.memory.data.add(frame.payload_pos as usize);
            std::ptr::copy_nonoverlapping(src, out.as_mut_ptr(), out.len());
        }
    }

    /// The frame's payload, read in place.
    ///
    /// # Safety
    /// The caller trusts the producer not to modify a published frame before
    /// it is released (true of the daemon, whose answers the client reads in
    /// place), and must not use the slice after releasing `frame`.
    pub unsafe fn payload_in_place(&self, frame: &Frame) -> &[u8] {
        // SAFETY: bounds were checked by `peek`; immutability until release is
        // the caller's contract above.
        unsafe { std::slice::from_raw_parts(self.memory.data.add(frame.payload_pos as usize), frame.len as usize) }
    }

    /// After releasing a burst of frames: true when the producer waits for
    /// space, in which case the caller must signal its wake fd (once).
    pub fn producer_needs_wake(&self) -> bool {
        // Pairs with the fence in Producer::prepare_wait_for_space.
        fence(Ordering::SeqCst);
        let waiting = &self.memory.header().producer_waiting;
        waiting.load(Ordering::Relaxed) == 1 && waiting.swap(0, Ordering::Relaxed) == 1
    }

    /// Announces that the consumer is about to sleep. Returns false when a
    /// frame arrived meanwhile (do not sleep; drain it). A corrupt cursor also
    /// returns false so the caller's next `peek` reports it.
    pub fn prepare_sleep(&self) -> bool {
        let header = self.memory.header();
        header.consumer_sleeping.store(1, Ordering::Relaxed);
        // Pairs with the fence in Producer::consumer_needs_wake.
        fence(Ordering::SeqCst);
        let empty = matches!(self.published_tail(), Ok(tail) if tail == self.head);
        if !empty {
            header.consumer_sleeping.store(0, Ordering::Relaxed);
        }
        empty
    }

    /// Clears the sleeping flag after a wake-up or a timeout.
    pub fn end_sleep(&self) {
        self.memory.header().consumer_sleeping.store(0, Ordering::Relaxed);
    }

    /// True when nothing is published beyond what was consumed.
    pub fn is_empty(&self) -> bool {
        matches!(self.published_tail(), Ok(tail) if tail == self.head)
    }

    /// Published bytes not yet released, and the ring's capacity: how full
    /// the producer has made it (the daemon's occupancy histogram). A
    /// corrupt cursor reads as `None`; the next `peek` reports it.
    pub fn occupancy(&self) -> Option<(u64, u64)> {
        let tail = self.published_tail().ok()?;
        Some((tail.wrapping_sub(self.head), self.memory.capacity_bytes))
    }

    fn published_tail(&self) -> Result<u64, RingError> {
        // Acquire pairs with the Release store in Producer::publish_frame.
        let tail = self.memory.header().tail.load(Ordering::Acquire);
        let available = tail.wrapping_sub(self.head);
        if available > self.memory.capacity_bytes || !tail.is_multiple_of(FRAME_ALIGN_BYTES) {
            return Err(RingError::Corrupt("producer cursor impossible"));
        }
        Ok(tail)
    }

    fn read_header(&self, cursor: u64) -> FrameHeader {
        let pos = cursor & self.memory.mask();
        // SAFETY: pos is 16-aligned (cursors are checked to be) and below
        // capacity, so the 16 bytes are inside the data area and aligned. A
        // volatile read copies them once; later checks use the copy.
        unsafe { std::ptr::read_volatile(self.memory.data.add(pos as usize).cast::<FrameHeader>()) }
    }

    fn frame_at(&self, head: u64, tail: u64, header: FrameHeader) -> Result<Frame, RingError> {
        let max = self.memory.max_frame_bytes;
        if u64::from(header.len) > max {
            let reason = BadFrameReason::TooLarge { len: header.len, max };
            return Err(self.bad(header.request_id, reason, tail));
        }
        let pos = head & self.memory.mask();
        let footprint = frame_footprint(u64::from(header.len));
        let available = tail - head;
        if footprint > available || pos + footprint > self.memory.capacity_bytes {
            let reason = BadFrameReason::Overrun {
                len: header.len,
                available,
            };
            return Err(self.bad(header.request_id, reason, tail));
        }
        Ok(Frame {
            kind: header.kind,
            request_id: header.request_id,
            len: header.len,
            payload_pos: pos + FRAME_HEADER_BYTES,
            next_head: head + footprint,
        })
    }

    fn bad(&self, request_id: u64, reason: BadFrameReason, resume_at: u64) -> RingError {
        RingError::BadFrame {
            request_id,
            reason,
            resume_at,
        }
    }
}

/// A ring in ordinary heap memory: for tests, benchmarks and Miri, which
/// cannot map a memfd. The algorithm is the same code as in shared memory.
pub fn heap_ring(capacity_bytes: u64, max_frame_bytes: u64) -> (Producer, Consumer) {
    let memory = Arc::new(HeapRing::new(capacity_bytes));
    let header = memory.header;
    let data = memory.data;
    // SAFETY: HeapRing allocated an initialised header and `capacity_bytes`
    // 16-aligned data bytes, kept alive by the Arc passed as keepalive; the
    // ends returned are the only ones for this fresh ring.
    unsafe { ring_ends_from_raw(header, data, capacity_bytes, max_frame_bytes, memory) }
}

struct HeapRing {
    header: *mut RingHeader,
    data: *mut u8,
    data_layout: std::alloc::Layout,
}

// SAFETY: HeapRing only owns its allocations; all concurrent access goes
// through the ring ends, whose protocol makes it race-free.
unsafe impl Send for HeapRing {}
// SAFETY: as above.
unsafe impl Sync for HeapRing {}

impl HeapRing {
    fn new(capacity_bytes: u64) -> Self {
        let data_layout =
            std::alloc::Layout::from_size_align(capacity_bytes as usize, 4096).expect("ring capacity fits a layout");
        // SAFETY: the layout has a non-zero size (capacity >= 32 is asserted by
        // ring_ends_from_raw before any use; a zero size would fail that first).
        let data = unsafe { std::alloc::alloc_zeroed(data_layout) };
        assert!(!data.is_null(), "allocation of a heap ring failed");
        let header = Box::into_raw(Box::new(RingHeader::new()));
        Self {
            header,
            data,
            data_layout,
        }
    }
}

impl Drop for HeapRing {
    fn drop(&mut self) {
        // SAFETY: both pointers come from the allocations in `new`, freed once here.
        unsafe {
            drop(Box::from_raw(self.header));
            std::alloc::dealloc(self.data, self.data_layout);
        }
    }
}
