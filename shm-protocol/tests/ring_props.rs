//! Property tests of the frame ring (`ring.rs`) through its public API.
//!
//! A model built from the layout rules alone (frames are contiguous, 16-byte
//! aligned, never cross the end of the data area, and restart at position 0
//! behind a `Wrap` marker) predicts every `try_write` outcome and every
//! `free_bytes` value, while proptest picks the interleaving of writes and
//! reads. Rings are small (4 KiB, frames up to half of it) so almost every lap
//! wraps. A hostile producer's malformed frames are checked here too.
//!
//! Not here: the wake-up flag protocol (model-checked in `ring_loom.rs`) and
//! the unsafe code under Miri (`ring_miri.rs`, which also holds the
//! deterministic hostile-frame and corrupt-cursor cases).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use nexus_shm_protocol::layout::{FrameKind, frame_footprint, max_frame_for_capacity};
use nexus_shm_protocol::ring::{BadFrameReason, Consumer, Frame, Producer, RingError, heap_ring};
use proptest::collection::vec;
use proptest::prelude::*;

/// Small enough that a handful of frames fill the ring and every lap wraps.
const CAPACITY_BYTES: u64 = 4096;
/// The largest frame such a ring accepts (half of it, less one header).
const MAX_FRAME_BYTES: u64 = max_frame_for_capacity(CAPACITY_BYTES);
/// Frames moved by the two-thread test: enough for thousands of laps.
const THREADED_FRAMES: u64 = 20_000;
/// A stalled two-thread test fails after this instead of hanging CI.
const WATCHDOG: Duration = Duration::from_secs(60);

fn config(cases: u32) -> ProptestConfig {
    // No regression files: found cases become named tests instead.
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config(192))]

    /// FIFO order, exact bytes and ids, exact free-space accounting, Ok(None)
    /// only when the frame truly does not fit, FrameTooLarge above the maximum.
    #[test]
    fn frames_arrive_in_order_with_exact_bytes_and_accounting(ops in vec(op(), 1..160)) {
        let mut harness = Harness::new();
        for op in &ops {
            harness.apply(op);
        }
        harness.drain();
    }

    /// Malformed frames from a hostile producer are reported as the right
    /// `BadFrame`, never a panic or `Corrupt`, and after `skip_to` the ring
    /// carries good frames again with its space fully accounted for.
    #[test]
    fn hostile_frames_are_reported_and_skipped(steps in vec((frame_len(), raw_frame(), frame_len()), 1..40)) {
        let mut harness = Harness::new();
        for (lead_len, raw, trail_len) in &steps {
            // Moves the ring position so raw frames land everywhere.
            assert!(harness.write(*lead_len));
            harness.drain();
            if harness.write_raw(raw) {
                harness.read_raw(raw);
            }
            assert!(harness.write(*trail_len));
            harness.drain();
        }
    }
}

/// A drained ring accepts a maximum-sized frame wherever its cursor stands:
/// this is why `max_frame_for_capacity` is half the ring.
#[test]
fn max_frame_fits_at_every_position_of_a_drained_ring() {
    for start_cursor in (0..CAPACITY_BYTES).step_by(16) {
        let mut harness = Harness::new();
        while harness.model.tail < start_cursor {
            harness.step_16_bytes();
        }
        assert!(
            harness.write(MAX_FRAME_BYTES as usize),
            "max frame refused at tail {start_cursor}"
        );
        harness.drain();
    }
}

/// Regression: an empty payload needs only its 16-byte header, yet the ring
/// answered "full" when exactly 16 contiguous bytes were free.
#[test]
fn empty_frame_fits_in_the_last_16_free_bytes() {
    let mut harness = Harness::new();
    // 2032 + 2032 + 16 bytes used: exactly 16 free, at the end of the data area.
    assert!(harness.write(2016));
    assert!(harness.write(2016));
    assert_eq!(harness.producer.free_bytes(), Ok(32));
    assert!(harness.write(0));
    assert_eq!(harness.producer.free_bytes(), Ok(16));
    assert!(harness.write(0), "a 16-byte frame refused with 16 bytes free");
    harness.drain();
}

/// A producer and a consumer thread move thousands of laps of random-sized
/// frames; order, ids and every payload byte survive (checked per frame and
/// by a checksum over what each side saw).
#[test]
fn two_threads_move_20000_frames_in_order() {
    let (mut producer, mut consumer) = heap_ring(CAPACITY_BYTES, MAX_FRAME_BYTES);
    let deadline = Instant::now() + WATCHDOG;
    let sender = std::thread::spawn(move || {
        let mut sizes = SplitMix64(0x5EED);
        let mut checksum = Checksum::default();
        for request_id in 0..THREADED_FRAMES {
            let payload = payload_bytes(request_id, random_len(&mut sizes));
            while producer
                .try_write_bytes(kind_for(request_id), request_id, &payload)
                .unwrap()
                .is_none()
            {
                assert!(Instant::now() < deadline, "producer stalled at request {request_id}");
                std::thread::yield_now();
            }
            checksum.add(request_id, &payload);
        }
        checksum
    });
    let mut checksum = Checksum::default();
    let mut payload = Vec::new();
    for request_id in 0..THREADED_FRAMES {
        let frame = loop {
            if let Some(frame) = consumer.peek().unwrap() {
                break frame;
            }
            assert!(Instant::now() < deadline, "consumer stalled at request {request_id}");
            std::thread::yield_now();
        };
        assert_eq!(
            (frame.request_id, frame.kind),
            (request_id, kind_for(request_id) as u16)
        );
        consumer.copy_payload(&frame, &mut payload);
        assert!(
            payload == payload_bytes(request_id, payload.len()),
            "payload of request {request_id} differs"
        );
        consumer.release(&frame);
        checksum.add(request_id, &payload);
    }
    assert_eq!(sender.join().unwrap(), checksum);
    assert!(consumer.is_empty());
}

/// One step of the interleaving proptest chooses.
#[derive(Debug, Clone)]
enum Op {
    /// The producer tries frames of these payload sizes, in order, with `try_write_bytes`.
    Write(Vec<usize>),
    /// The producer tries one frame through `try_write`'s in-place encoder
    /// (sizes above the maximum included).
    Encode(usize),
    /// The producer tries a payload this many bytes above the maximum.
    WriteOversized(usize),
    /// The consumer reads up to this many frames.
    Read(usize),
}

/// Frames a hostile producer publishes through `write_raw_for_tests`.
#[derive(Debug, Clone)]
struct RawFrame {
    kind: u16,
    request_id: u64,
    declared_len: u32,
    payload: Vec<u8>,
}

fn frame_len() -> impl Strategy<Value = usize> {
    let max = MAX_FRAME_BYTES as usize;
    prop_oneof![0..=48usize, 0..=max, (max - 48)..=max]
}

fn op() -> impl Strategy<Value = Op> {
    let max = MAX_FRAME_BYTES as usize;
    prop_oneof![
        4 => vec(frame_len(), 1..=6).prop_map(Op::Write),
        1 => prop_oneof![0..=max + 64, (max - 32)..=max + 32].prop_map(Op::Encode),
        1 => (1..=4096usize).prop_map(Op::WriteOversized),
        4 => (1..=6usize).prop_map(Op::Read),
    ]
}

fn raw_frame() -> impl Strategy<Value = RawFrame> {
    let max = MAX_FRAME_BYTES as u32;
    // Every kind but Wrap: a wrap marker's handling is a case of its own (ring_miri.rs).
    let kind = prop_oneof![Just(FrameKind::Request as u16), 0..0xFFFFu16];
    let declared_len = prop_oneof![0..=320u32, (max - 16)..=(max + 16), any::<u32>()];
    (kind, any::<u64>(), declared_len, vec(any::<u8>(), 0..=300)).prop_map(
        |(kind, request_id, declared_len, payload)| RawFrame {
            kind,
            request_id,
            declared_len,
            payload,
        },
    )
}

/// A frame the model expects the consumer to see.
#[derive(Debug)]
struct ExpectedFrame {
    kind: FrameKind,
    request_id: u64,
    payload: Vec<u8>,
    /// The producer's cursor just after this frame.
    end_cursor: u64,
}

/// The ring as the layout rules say it must be, cursors as byte counts.
#[derive(Debug, Default)]
struct Model {
    tail: u64,
    head: u64,
    frames: VecDeque<ExpectedFrame>,
}

impl Model {
    fn free_bytes(&self) -> u64 {
        CAPACITY_BYTES - (self.tail - self.head)
    }

    /// The cursor where a frame of `payload_bytes` starts, or `None` when it cannot fit now.
    fn placement(&self, payload_bytes: u64) -> Option<u64> {
        let footprint = frame_footprint(payload_bytes);
        let free = self.free_bytes();
        let to_end = CAPACITY_BYTES - self.tail % CAPACITY_BYTES;
        if footprint <= free.min(to_end) {
            Some(self.tail)
        } else if to_end < free && footprint <= free - to_end {
            Some(self.tail + to_end)
        } else {
            None
        }
    }

    fn push(&mut self, start_cursor: u64, kind: FrameKind, request_id: u64, payload: Vec<u8>) {
        let end_cursor = start_cursor + frame_footprint(payload.len() as u64);
        self.tail = end_cursor;
        self.frames.push_back(ExpectedFrame {
            kind,
            request_id,
            payload,
            end_cursor,
        });
    }

    fn is_drained(&self) -> bool {
        self.frames.is_empty() && self.head == self.tail
    }
}

/// Both ends of one ring, driven in step with the model.
struct Harness {
    producer: Producer,
    consumer: Consumer,
    model: Model,
    next_request_id: u64,
    scratch: Vec<u8>,
}

impl Harness {
    fn new() -> Self {
        let (producer, consumer) = heap_ring(CAPACITY_BYTES, MAX_FRAME_BYTES);
        Self {
            producer,
            consumer,
            model: Model::default(),
            next_request_id: 0,
            scratch: Vec::new(),
        }
    }

    fn apply(&mut self, op: &Op) {
        match op {
            Op::Write(lens) => lens.iter().for_each(|len| {
                self.write(*len);
            }),
            Op::Encode(len) => self.encode(*len),
            Op::WriteOversized(extra_bytes) => self.write_oversized(*extra_bytes),
            Op::Read(n_frames) => (0..*n_frames).for_each(|_| {
                self.read();
            }),
        }
    }

    /// Tries one frame of `len` payload bytes with `try_write_bytes`; true when published.
    #[track_caller]
    fn write(&mut self, len: usize) -> bool {
        let request_id = self.next_request_id;
        let payload = payload_bytes(request_id, len);
        let placement = self.model.placement(len as u64);
        let written = self
            .producer
            .try_write_bytes(kind_for(request_id), request_id, &payload);
        match (written, placement) {
            (Ok(Some(written)), Some(start_cursor)) => {
                assert_eq!(written as usize, len);
                self.model.push(start_cursor, kind_for(request_id), request_id, payload);
                self.next_request_id += 1;
            }
            (Ok(None), None) => {}
            (written, placement) => panic!(
                "{len}-byte frame at tail {} with {} B free: ring said {written:?}, layout says start at {placement:?}",
                self.model.tail,
                self.model.free_bytes(),
            ),
        }
        self.check_free_bytes();
        placement.is_some()
    }

    /// Tries one frame through the in-place encoder of `try_write`.
    fn encode(&mut self, len: usize) {
        let request_id = self.next_request_id;
        let payload = payload_bytes(request_id, len);
        let mut largest_slot_bytes = 0;
        let written = self.producer.try_write(kind_for(request_id), request_id, |slot| {
            largest_slot_bytes = largest_slot_bytes.max(slot.len());
            let dst = slot.get_mut(..payload.len())?;
            for (byte, value) in dst.iter_mut().zip(&payload) {
                byte.write(*value);
            }
            Some(payload.len())
        });
        assert!(
            largest_slot_bytes as u64 <= MAX_FRAME_BYTES,
            "encoder offered {largest_slot_bytes} B"
        );
        if len as u64 > MAX_FRAME_BYTES {
            self.check_oversized_encode(written, largest_slot_bytes);
        } else if let Some(start_cursor) = self.model.placement(len as u64) {
            assert_eq!(written, Ok(Some(len as u32)));
            self.model.push(start_cursor, kind_for(request_id), request_id, payload);
            self.next_request_id += 1;
        } else {
            assert_eq!(
                written,
                Ok(None),
                "{len}-byte frame cannot fit at tail {}",
                self.model.tail
            );
        }
        self.check_free_bytes();
    }

    /// An encoder that never fits: FrameTooLarge once it was offered the
    /// maximum (always so on a drained ring), otherwise "wait and retry".
    fn check_oversized_encode(&self, written: Result<Option<u32>, RingError>, largest_slot_bytes: usize) {
        let too_large = Err(RingError::FrameTooLarge { max: MAX_FRAME_BYTES });
        if largest_slot_bytes as u64 == MAX_FRAME_BYTES || self.model.is_drained() {
            assert_eq!(written, too_large, "largest slot offered: {largest_slot_bytes} B");
        } else {
            assert_eq!(written, Ok(None), "largest slot offered: {largest_slot_bytes} B");
        }
    }

    fn write_oversized(&mut self, extra_bytes: usize) {
        let payload = vec![0xA5; MAX_FRAME_BYTES as usize + extra_bytes];
        let written = self.producer.try_write_bytes(FrameKind::Request, u64::MAX, &payload);
        assert_eq!(written, Err(RingError::FrameTooLarge { max: MAX_FRAME_BYTES }));
        self.check_free_bytes();
    }

    /// Reads one frame and checks it against the model; false when the ring was empty.
    #[track_caller]
    fn read(&mut self) -> bool {
        let frame = self
            .consumer
            .peek()
            .expect("a well-behaved producer's frames are well-formed");
        let Some(frame) = frame else {
            assert!(
                self.model.frames.is_empty(),
                "consumer sees nothing, model holds {:?}",
                self.model.frames
            );
            return false;
        };
        let expected = self
            .model
            .frames
            .pop_front()
            .expect("consumer saw a frame nobody wrote");
        check_frame(&self.consumer, &frame, &expected, &mut self.scratch);
        self.consumer.release(&frame);
        self.model.head = expected.end_cursor;
        self.check_free_bytes();
        true
    }

    #[track_caller]
    fn drain(&mut self) {
        while self.read() {}
        assert!(self.model.is_drained());
        assert_eq!(self.producer.free_bytes(), Ok(CAPACITY_BYTES));
        assert!(self.producer.is_drained());
        assert!(self.consumer.is_empty());
    }

    /// Moves a drained ring's cursor by one 16-byte empty frame. Published
    /// raw, because `try_write` will not place an empty frame in the last 16
    /// bytes before the end (see `empty_frame_fits_in_the_last_16_free_bytes`).
    fn step_16_bytes(&mut self) {
        let request_id = self.next_request_id;
        let kind = kind_for(request_id);
        assert!(
            self.producer
                .write_raw_for_tests(kind as u16, request_id, 0, &[])
                .unwrap()
        );
        self.model.push(self.model.tail, kind, request_id, Vec::new());
        self.next_request_id += 1;
        self.drain();
    }

    /// Publishes a raw frame on a drained ring; false when it did not fit contiguously.
    fn write_raw(&mut self, raw: &RawFrame) -> bool {
        assert!(self.model.is_drained());
        let published = self
            .producer
            .write_raw_for_tests(raw.kind, raw.request_id, raw.declared_len, &raw.payload)
            .unwrap();
        let footprint = frame_footprint(raw.payload.len() as u64);
        let to_end = CAPACITY_BYTES - self.model.tail % CAPACITY_BYTES;
        assert_eq!(
            published,
            footprint <= to_end,
            "{footprint} B raw frame, {to_end} B to the end"
        );
        if published {
            self.model.tail += footprint;
        }
        published
    }

    /// Reads the one raw frame published, expecting exactly what its header deserves.
    fn read_raw(&mut self, raw: &RawFrame) {
        let published_bytes = frame_footprint(raw.payload.len() as u64);
        let declared_bytes = frame_footprint(u64::from(raw.declared_len));
        let bad = |reason| {
            Err(RingError::BadFrame {
                request_id: raw.request_id,
                reason,
                resume_at: self.model.tail,
            })
        };
        let peeked = self.consumer.peek();
        if u64::from(raw.declared_len) > MAX_FRAME_BYTES {
            let reason = BadFrameReason::TooLarge {
                len: raw.declared_len,
                max: MAX_FRAME_BYTES,
            };
            assert_eq!(peeked, bad(reason));
            self.consumer.skip_to(self.model.tail);
        } else if declared_bytes > published_bytes {
            let reason = BadFrameReason::Overrun {
                len: raw.declared_len,
                available: published_bytes,
            };
            assert_eq!(peeked, bad(reason));
            self.consumer.skip_to(self.model.tail);
        } else if declared_bytes == published_bytes {
            let frame = peeked.unwrap().expect("a published frame");
            assert_eq!((frame.kind, frame.request_id), (raw.kind, raw.request_id));
            self.consumer.copy_payload(&frame, &mut self.scratch);
            // A declared length past the payload but inside its padding reads
            // stale padding bytes: the frame is in bounds, so that is allowed.
            let carried = raw.payload.len().min(self.scratch.len());
            assert_eq!(self.scratch.len(), raw.declared_len as usize);
            assert_eq!(self.scratch[..carried], raw.payload[..carried]);
            self.consumer.release(&frame);
        } else {
            // The declared frame ends inside the payload, whose bytes the
            // consumer then reads as headers: garbage, but bounded garbage.
            self.drain_garbage();
        }
        self.model.head = self.model.tail;
        assert!(self.consumer.is_empty());
        assert_eq!(self.producer.free_bytes(), Ok(CAPACITY_BYTES));
    }

    /// Consumes whatever the consumer makes of garbage up to the producer's
    /// cursor: frames or BadFrame errors, never Corrupt, never past the tail.
    fn drain_garbage(&mut self) {
        for _ in 0..=CAPACITY_BYTES / 16 {
            match self.consumer.peek() {
                Ok(None) => return,
                Ok(Some(frame)) => self.consumer.release(&frame),
                Err(RingError::BadFrame { resume_at, .. }) => {
                    assert_eq!(resume_at, self.model.tail);
                    self.consumer.skip_to(resume_at);
                }
                Err(other) => panic!("garbage frames made the ring report {other:?}"),
            }
        }
        panic!("the consumer did not reach the producer's cursor");
    }

    #[track_caller]
    fn check_free_bytes(&self) {
        assert_eq!(self.producer.free_bytes(), Ok(self.model.free_bytes()));
    }
}

#[track_caller]
fn check_frame(consumer: &Consumer, frame: &Frame, expected: &ExpectedFrame, scratch: &mut Vec<u8>) {
    let seen = (frame.kind, frame.request_id, frame.len as usize);
    assert_eq!(
        seen,
        (expected.kind as u16, expected.request_id, expected.payload.len())
    );
    consumer.copy_payload(frame, scratch);
    assert!(
        *scratch == expected.payload,
        "payload of request {} differs",
        expected.request_id
    );
}

/// Alternates kinds so a kind mix-up between frames shows.
fn kind_for(request_id: u64) -> FrameKind {
    if request_id.is_multiple_of(2) {
        FrameKind::Request
    } else {
        FrameKind::Response
    }
}

/// Bytes that differ from frame to frame, so a misplaced or stale payload shows.
fn payload_bytes(request_id: u64, len: usize) -> Vec<u8> {
    let mut rng = SplitMix64(request_id);
    let mut payload = Vec::with_capacity(len + 8);
    while payload.len() < len {
        payload.extend_from_slice(&rng.next().to_le_bytes());
    }
    payload.truncate(len);
    payload
}

/// Sizes for the two-thread test: a quarter small, the rest anywhere up to the maximum.
fn random_len(rng: &mut SplitMix64) -> usize {
    let value = rng.next();
    let bound = if value.is_multiple_of(4) {
        64
    } else {
        MAX_FRAME_BYTES + 1
    };
    ((value >> 2) % bound) as usize
}

/// A tiny deterministic generator (splitmix64), enough for test data.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// FNV-1a over request ids, lengths and payload bytes, in order.
#[derive(Debug, PartialEq, Eq)]
struct Checksum(u64);

impl Default for Checksum {
    fn default() -> Self {
        Self(0xCBF2_9CE4_8422_2325)
    }
}

impl Checksum {
    fn add(&mut self, request_id: u64, payload: &[u8]) {
        let header = request_id
            .to_le_bytes()
            .into_iter()
            .chain((payload.len() as u64).to_le_bytes());
        for byte in header.chain(payload.iter().copied()) {
            self.0 = (self.0 ^ u64::from(byte)).wrapping_mul(0x0100_0000_01B3);
        }
    }
}
