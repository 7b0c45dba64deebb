//! Small deterministic tests of the frame ring, sized for Miri.
//!
//! `cargo +nightly miri test -p nexus-shm-protocol --test ring_miri` runs the
//! ring's unsafe code (raw frame headers, in-place payloads, the heap-backed
//! and caller-provided memory) through Miri's UB and data-race checks; the
//! same tests run natively with `cargo test`. They also hold the hostile-peer
//! cases a user relies on: malformed frames become `BadFrame` and are
//! skipped, impossible cursors become `Corrupt`, and neither ever makes a
//! side sleep. Wide random coverage lives in `ring_props.rs`, the exhaustive
//! interleavings of the wake-up protocol in `ring_loom.rs`.

use std::cell::UnsafeCell;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use nexus_shm_protocol::layout::{FrameKind, RingHeader, frame_footprint, max_frame_for_capacity};
use nexus_shm_protocol::ring::{BadFrameReason, Consumer, Producer, RingError, heap_ring, ring_ends_from_raw};
use proptest::prelude::*;

/// Small enough that a few frames wrap the ring (and Miri stays quick).
const CAPACITY_BYTES: u64 = 256;
/// The largest frame such a ring accepts (112 B).
const MAX_FRAME_BYTES: u64 = max_frame_for_capacity(CAPACITY_BYTES);
/// The smallest ring `ring_ends_from_raw` accepts, for the sleeping test:
/// two 16-byte frames fill it, so the producer waits for space constantly.
const TINY_CAPACITY_BYTES: u64 = 64;
/// Frames moved by each two-thread test.
const THREADED_FRAMES: u64 = 200;
/// A stalled two-thread test fails after this instead of hanging.
const WATCHDOG: Duration = Duration::from_secs(30);

/// Payload sizes around the header size, the alignment and the maximum.
const SIZES: [usize; 9] = [1, 15, 16, 17, 100, 112, 33, 64, 2];

#[test]
fn frames_round_trip_across_several_laps() {
    let (mut producer, mut consumer) = heap_ring(CAPACITY_BYTES, MAX_FRAME_BYTES);
    let mut written = 0;
    let mut read = 0;
    while read < 60 {
        // Fill until full, then drain: every lap ends in a wrap marker or an exact fit.
        loop {
            let payload = payload_bytes(written, SIZES[written as usize % SIZES.len()]);
            match producer.try_write_bytes(FrameKind::Request, written, &payload).unwrap() {
                Some(len) => assert_eq!(len as usize, payload.len()),
                None => break,
            }
            written += 1;
        }
        assert!(written > read, "a drained ring refused frame {written}");
        while read < written {
            check_next_frame(&mut consumer, read);
            read += 1;
        }
        assert_eq!(producer.free_bytes(), Ok(CAPACITY_BYTES));
    }
    assert!(consumer.peek().unwrap().is_none());
}

#[test]
fn encoder_writes_the_payload_in_place() {
    let (mut producer, mut consumer) = heap_ring(CAPACITY_BYTES, MAX_FRAME_BYTES);
    let payload = payload_bytes(7, 40);
    let written = producer.try_write(FrameKind::Response, 7, |slot| {
        assert_eq!(slot.len() as u64, MAX_FRAME_BYTES, "an empty ring offers the maximum");
        for (byte, value) in slot.iter_mut().zip(&payload) {
            byte.write(*value);
        }
        Some(payload.len())
    });
    assert_eq!(written, Ok(Some(40)));
    let frame = consumer.peek().unwrap().unwrap();
    assert_eq!(
        (frame.kind, frame.request_id, frame.len),
        (FrameKind::Response as u16, 7, 40)
    );
    let mut copy = Vec::new();
    consumer.copy_payload(&frame, &mut copy);
    assert_eq!(copy, payload);
    // The aligned copy fills a reused buffer's spare capacity without zeroing
    // it first: longer and shorter than what the buffer held before.
    let mut aligned = rkyv::util::AlignedVec::<16>::new();
    aligned.extend_from_slice(&[0xEE; 3]);
    consumer.copy_payload_aligned(&frame, &mut aligned);
    assert_eq!(aligned.as_slice(), &payload[..]);
    aligned.extend_from_slice(&[0xEE; 100]);
    consumer.copy_payload_aligned(&frame, &mut aligned);
    assert_eq!(aligned.as_slice(), &payload[..]);
    assert!((aligned.as_ptr() as usize).is_multiple_of(16));
    consumer.release(&frame);
    // An encoder that cannot fit even the maximum learns so on an empty ring.
    assert_eq!(
        producer.try_write(FrameKind::Request, 8, |_| None),
        Err(RingError::FrameTooLarge { max: MAX_FRAME_BYTES })
    );
    assert!(producer.is_drained());
}

#[test]
fn declared_length_above_max_is_too_large_and_skipped() {
    let (mut producer, mut consumer) = heap_ring(CAPACITY_BYTES, MAX_FRAME_BYTES);
    let declared_len = MAX_FRAME_BYTES as u32 + 1;
    assert!(
        producer
            .write_raw_for_tests(FrameKind::Request as u16, 11, declared_len, &[1, 2, 3])
            .unwrap()
    );
    let reason = BadFrameReason::TooLarge {
        len: declared_len,
        max: MAX_FRAME_BYTES,
    };
    assert_eq!(consumer.peek(), bad_frame(11, reason, 32));
    check_ring_recovers(&mut producer, &mut consumer, 32);
}

#[test]
fn declared_length_beyond_published_bytes_is_overrun_and_skipped() {
    let (mut producer, mut consumer) = heap_ring(CAPACITY_BYTES, MAX_FRAME_BYTES);
    // 10 bytes carried (32 published), 100 declared (128 needed).
    assert!(
        producer
            .write_raw_for_tests(FrameKind::Request as u16, 12, 100, &[0xEE; 10])
            .unwrap()
    );
    let reason = BadFrameReason::Overrun {
        len: 100,
        available: 32,
    };
    assert_eq!(consumer.peek(), bad_frame(12, reason, 32));
    check_ring_recovers(&mut producer, &mut consumer, 32);
}

/// Enough bytes are published, but they continue at position 0: a frame
/// must not be read past the end of the data area.
#[test]
fn frame_running_past_the_end_of_the_data_area_is_overrun() {
    let (mut producer, mut consumer) = heap_ring(CAPACITY_BYTES, MAX_FRAME_BYTES);
    move_cursor_to(&mut producer, &mut consumer, CAPACITY_BYTES - 32);
    // 32 published bytes at the very end, declaring a 128-byte frame.
    assert!(
        producer
            .write_raw_for_tests(FrameKind::Request as u16, 13, 100, &[0xEE; 16])
            .unwrap()
    );
    assert!(
        producer
            .try_write_bytes(FrameKind::Request, 14, &[0x11; 100])
            .unwrap()
            .is_some()
    );
    let tail = CAPACITY_BYTES + frame_footprint(100);
    let reason = BadFrameReason::Overrun {
        len: 100,
        available: tail - (CAPACITY_BYTES - 32),
    };
    assert_eq!(consumer.peek(), bad_frame(13, reason, tail));
    check_ring_recovers(&mut producer, &mut consumer, tail);
}

#[test]
fn wrap_marker_with_nothing_after_it_is_dangling() {
    let (mut producer, mut consumer) = heap_ring(CAPACITY_BYTES, MAX_FRAME_BYTES);
    move_cursor_to(&mut producer, &mut consumer, 64);
    assert!(
        producer
            .write_raw_for_tests(FrameKind::Wrap as u16, 15, 0, &[])
            .unwrap()
    );
    assert_eq!(consumer.peek(), bad_frame(15, BadFrameReason::DanglingWrap, 80));
    check_ring_recovers(&mut producer, &mut consumer, 80);
}

#[test]
fn consumer_cursor_ahead_of_producer_is_corrupt() {
    let (memory, mut producer, _consumer) = peer_visible_ring();
    memory.header.head.store(16, std::sync::atomic::Ordering::Release);
    check_producer_refuses_corrupt_ring(&mut producer);
}

#[test]
fn misaligned_consumer_cursor_is_corrupt() {
    let (memory, mut producer, _consumer) = peer_visible_ring();
    assert!(
        producer
            .try_write_bytes(FrameKind::Request, 1, &[1; 8])
            .unwrap()
            .is_some()
    );
    memory.header.head.store(8, std::sync::atomic::Ordering::Release);
    check_producer_refuses_corrupt_ring(&mut producer);
}

#[test]
fn producer_cursor_more_than_a_ring_ahead_is_corrupt() {
    let (memory, _producer, consumer) = peer_visible_ring();
    memory
        .header
        .tail
        .store(CAPACITY_BYTES + 16, std::sync::atomic::Ordering::Release);
    check_consumer_refuses_corrupt_ring(&consumer);
}

#[test]
fn misaligned_producer_cursor_is_corrupt() {
    let (memory, _producer, consumer) = peer_visible_ring();
    memory.header.tail.store(24, std::sync::atomic::Ordering::Release);
    check_consumer_refuses_corrupt_ring(&consumer);
}

#[test]
fn producer_cursor_behind_consumer_is_corrupt() {
    let (memory, mut producer, mut consumer) = peer_visible_ring();
    assert!(
        producer
            .try_write_bytes(FrameKind::Request, 1, &[1; 8])
            .unwrap()
            .is_some()
    );
    let frame = consumer.peek().unwrap().unwrap();
    consumer.release(&frame);
    memory.header.tail.store(16, std::sync::atomic::Ordering::Release);
    check_consumer_refuses_corrupt_ring(&consumer);
}

/// Regression (issue 7, scenario 2): the daemon's ring ends used to resume
/// their cursors from the shared header, which the client can write before
/// the daemon creates them; a tail near the end of the ring (or unaligned, or
/// near 2^64) made the daemon write past the end of the mapping. The values
/// below are the attacker's; under Miri an out-of-bounds access fails the test.
#[test]
fn cursors_scribbled_before_the_ends_exist_are_never_trusted() {
    let hostile = [
        (CAPACITY_BYTES - 8, CAPACITY_BYTES - 8),
        (CAPACITY_BYTES - 16, CAPACITY_BYTES - 16),
        (u64::MAX - 15, u64::MAX - 15),
        (u64::MAX - 7, u64::MAX),
        (3, 3),
        (0, CAPACITY_BYTES * 3 + 8),
    ];
    for (head, tail) in hostile {
        let scribble = |header: &RingHeader| {
            header.head.store(head, std::sync::atomic::Ordering::Relaxed);
            header.tail.store(tail, std::sync::atomic::Ordering::Relaxed);
        };
        let (memory, mut producer, consumer) = peer_visible_ring_after(scribble);
        exercise_daemon_ends(&memory, &mut producer, consumer, &[]);
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        // Miri runs each case about a thousand times slower.
        cases: if cfg!(miri) { 3 } else { 256 },
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// Whatever the peer writes into the header, before the ends exist and
    /// between any two operations, the daemon's ends report `Corrupt` or
    /// `BadFrame` or work normally: no panic, no access outside the ring
    /// (Miri checks that), no sleep on a ring that is not what it seems.
    #[test]
    fn arbitrary_header_contents_never_panic_or_escape_the_ring(
        before in header_values(),
        during in proptest::collection::vec(header_values(), 0..6),
    ) {
        let (memory, mut producer, consumer) = peer_visible_ring_after(|header| store_header(header, before));
        exercise_daemon_ends(&memory, &mut producer, consumer, &during);
    }
}

/// (head, tail, producer_waiting, consumer_sleeping), biased towards the
/// values an attacker tries: near the end, near 2^64, unaligned.
fn header_values() -> impl Strategy<Value = (u64, u64, u32, u32)> {
    let cursor = prop_oneof![
        Just(0u64),
        (0..4 * CAPACITY_BYTES),
        (u64::MAX - 4 * CAPACITY_BYTES..=u64::MAX),
        any::<u64>(),
    ];
    (cursor.clone(), cursor, any::<u32>(), any::<u32>())
}

fn store_header(header: &RingHeader, (head, tail, waiting, sleeping): (u64, u64, u32, u32)) {
    use std::sync::atomic::Ordering::Relaxed;
    header.head.store(head, Relaxed);
    header.tail.store(tail, Relaxed);
    header.producer_waiting.store(waiting, Relaxed);
    header.consumer_sleeping.store(sleeping, Relaxed);
}

/// Drives both daemon-side roles over a ring whose header the peer scribbles
/// on (`during`, one value per round): writing answers, reading requests,
/// copying payloads, the sleep and wake checks.
fn exercise_daemon_ends(
    memory: &PeerVisibleRing,
    producer: &mut Producer,
    mut consumer: Consumer,
    during: &[(u64, u64, u32, u32)],
) {
    let mut copy = rkyv::util::AlignedVec::<16>::new();
    for round in 0..=during.len() {
        for size in SIZES {
            let _ = producer.try_write_bytes(FrameKind::Response, round as u64, &vec![7; size]);
            let _ = producer.free_bytes();
            let _ = producer.prepare_wait_for_space(0);
            let _ = producer.consumer_needs_wake();
            match consumer.peek() {
                Ok(Some(frame)) => {
                    consumer.copy_payload_aligned(&frame, &mut copy);
                    assert_eq!(copy.len(), frame.len as usize);
                    consumer.release(&frame);
                }
                Ok(None) | Err(RingError::Corrupt(_)) => {}
                Err(RingError::BadFrame { resume_at, .. }) => consumer.skip_to(resume_at),
                Err(other) => panic!("unexpected ring error {other:?}"),
            }
            let _ = consumer.prepare_sleep();
            let _ = consumer.producer_needs_wake();
        }
        if let Some(values) = during.get(round) {
            store_header(&memory.header, *values);
        }
    }
}

/// A producer and a consumer thread spinning on full/empty keep order and bytes.
#[test]
fn two_threads_stream_frames_in_order() {
    let (mut producer, mut consumer) = heap_ring(CAPACITY_BYTES, MAX_FRAME_BYTES);
    let deadline = Instant::now() + WATCHDOG;
    let sender = std::thread::spawn(move || {
        for request_id in 0..THREADED_FRAMES {
            let payload = payload_bytes(request_id, SIZES[request_id as usize % SIZES.len()]);
            while producer
                .try_write_bytes(FrameKind::Request, request_id, &payload)
                .unwrap()
                .is_none()
            {
                assert!(Instant::now() < deadline, "producer stalled at request {request_id}");
                std::thread::yield_now();
            }
        }
    });
    for request_id in 0..THREADED_FRAMES {
        while consumer.is_empty() {
            assert!(Instant::now() < deadline, "consumer stalled at request {request_id}");
            std::thread::yield_now();
        }
        check_next_frame(&mut consumer, request_id);
    }
    sender.join().unwrap();
}

/// Both sides sleep on a modelled eventfd whenever the flag protocol lets
/// them: a lost wake-up would leave one asleep forever (the watchdog fires).
#[test]
fn two_threads_sleeping_on_each_other_lose_no_wake_up() {
    let max_frame_bytes = max_frame_for_capacity(TINY_CAPACITY_BYTES);
    let (mut producer, mut consumer) = heap_ring(TINY_CAPACITY_BYTES, max_frame_bytes);
    let frames_ready = Arc::new(WakeCounter::default());
    let space_ready = Arc::new(WakeCounter::default());
    let (producer_frames_ready, producer_space_ready) = (frames_ready.clone(), space_ready.clone());
    let sender = std::thread::spawn(move || {
        for request_id in 0..THREADED_FRAMES {
            let payload = payload_bytes(request_id, (request_id % (max_frame_bytes + 1)) as usize);
            write_or_sleep(&mut producer, &producer_space_ready, request_id, &payload);
            if producer.consumer_needs_wake() {
                producer_frames_ready.signal();
            }
        }
    });
    for request_id in 0..THREADED_FRAMES {
        while consumer.is_empty() {
            if consumer.prepare_sleep() {
                frames_ready.wait();
                consumer.end_sleep();
            }
        }
        check_next_frame(&mut consumer, request_id);
        if consumer.producer_needs_wake() {
            space_ready.signal();
        }
    }
    sender.join().unwrap();
}

/// The producer's half of the sleeping protocol: try, announce the wait, sleep.
fn write_or_sleep(producer: &mut Producer, space_ready: &WakeCounter, request_id: u64, payload: &[u8]) {
    loop {
        // Read before the write, so a release racing with the failed write
        // shows up as more free space and prepare_wait_for_space says retry.
        let seen_free = producer.free_bytes().unwrap();
        if producer
            .try_write_bytes(FrameKind::Request, request_id, payload)
            .unwrap()
            .is_some()
        {
            return;
        }
        if producer.prepare_wait_for_space(seen_free) {
            space_ready.wait();
            producer.end_wait_for_space();
        }
    }
}

/// An eventfd as the test sees it: signals add up, a wait consumes them all.
#[derive(Default)]
struct WakeCounter {
    pending: Mutex<u64>,
    signalled: Condvar,
}

impl WakeCounter {
    fn signal(&self) {
        *self.pending.lock().unwrap() += 1;
        self.signalled.notify_one();
    }

    fn wait(&self) {
        let deadline = Instant::now() + WATCHDOG;
        let mut pending = self.pending.lock().unwrap();
        while *pending == 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "lost wake-up: asleep with nobody left to signal");
            pending = self.signalled.wait_timeout(pending, left).unwrap().0;
        }
        *pending = 0;
    }
}

/// Ring memory the test can write behind the ends' backs, as the peer process can.
struct PeerVisibleRing {
    header: RingHeader,
    data: UnsafeCell<AlignedData>,
}

#[repr(C, align(16))]
struct AlignedData([u8; CAPACITY_BYTES as usize]);

// SAFETY: the data bytes are only touched through the ring ends, whose
// protocol keeps them race-free; the tests themselves write only the header,
// whose fields are atomics.
unsafe impl Sync for PeerVisibleRing {}

fn peer_visible_ring() -> (Arc<PeerVisibleRing>, Producer, Consumer) {
    peer_visible_ring_after(|_| {})
}

/// A ring whose header the peer wrote (`scribble`) before this side created
/// its ends, as a client can between receiving the memfd and its first request.
fn peer_visible_ring_after(scribble: impl FnOnce(&RingHeader)) -> (Arc<PeerVisibleRing>, Producer, Consumer) {
    let memory = Arc::new(PeerVisibleRing {
        header: RingHeader::new(),
        data: UnsafeCell::new(AlignedData([0; CAPACITY_BYTES as usize])),
    });
    scribble(&memory.header);
    let header: *const RingHeader = &memory.header;
    let data = memory.data.get().cast::<u8>();
    let keepalive = memory.clone();
    // SAFETY: `header` is initialised; `data` is CAPACITY_BYTES writable,
    // 16-aligned bytes behind an UnsafeCell; both live as long as the Arc
    // passed as keepalive; the ring is fresh, so these are its only ends.
    let (producer, consumer) = unsafe { ring_ends_from_raw(header, data, CAPACITY_BYTES, MAX_FRAME_BYTES, keepalive) };
    (memory, producer, consumer)
}

/// A corrupt consumer cursor is an error on every producer path, and never
/// lets the producer sleep waiting for space that will not come.
#[track_caller]
fn check_producer_refuses_corrupt_ring(producer: &mut Producer) {
    assert!(matches!(producer.free_bytes(), Err(RingError::Corrupt(_))));
    assert!(matches!(
        producer.try_write_bytes(FrameKind::Request, 2, &[2; 8]),
        Err(RingError::Corrupt(_))
    ));
    assert!(!producer.is_drained());
    assert!(!producer.prepare_wait_for_space(0), "asleep on a corrupt ring");
}

/// A corrupt producer cursor is an error on peek, and never lets the consumer sleep.
#[track_caller]
fn check_consumer_refuses_corrupt_ring(consumer: &Consumer) {
    assert!(matches!(consumer.peek(), Err(RingError::Corrupt(_))));
    assert!(!consumer.is_empty());
    assert!(!consumer.prepare_sleep(), "asleep on a corrupt ring");
}

/// Skips a bad frame and checks that good frames then flow through a full
/// lap (so across the wrap) with the space fully accounted for.
#[track_caller]
fn check_ring_recovers(producer: &mut Producer, consumer: &mut Consumer, resume_at: u64) {
    consumer.skip_to(resume_at);
    assert!(consumer.is_empty());
    assert_eq!(producer.free_bytes(), Ok(CAPACITY_BYTES));
    for request_id in 100..110 {
        let payload = payload_bytes(request_id, 90);
        assert_eq!(
            producer.try_write_bytes(FrameKind::Request, request_id, &payload),
            Ok(Some(90))
        );
        check_next_frame(consumer, request_id);
    }
    assert!(producer.is_drained());
}

/// Writes and releases 16-byte frames until the cursors stand at `cursor`.
fn move_cursor_to(producer: &mut Producer, consumer: &mut Consumer, cursor: u64) {
    for request_id in 0..cursor / 32 {
        assert!(
            producer
                .try_write_bytes(FrameKind::Request, request_id, &[0; 16])
                .unwrap()
                .is_some()
        );
        let frame = consumer.peek().unwrap().unwrap();
        consumer.release(&frame);
    }
    assert_eq!(producer.free_bytes(), Ok(CAPACITY_BYTES));
}

/// Reads the next frame, expecting `request_id` with its `payload_bytes`,
/// both in place and copied, and releases it.
#[track_caller]
fn check_next_frame(consumer: &mut Consumer, request_id: u64) {
    let frame = consumer.peek().unwrap().expect("a published frame");
    assert_eq!(frame.request_id, request_id);
    let expected = payload_bytes(request_id, frame.len as usize);
    // SAFETY: our own producer never touches a published frame, and the
    // slice is dropped before the frame is released below.
    let in_place = unsafe { consumer.payload_in_place(&frame) };
    assert_eq!(in_place, expected, "in-place payload of request {request_id}");
    let mut copy = Vec::new();
    consumer.copy_payload(&frame, &mut copy);
    assert_eq!(copy, expected, "copied payload of request {request_id}");
    consumer.release(&frame);
}

fn bad_frame(
    request_id: u64,
    reason: BadFrameReason,
    resume_at: u64,
) -> Result<Option<nexus_shm_protocol::ring::Frame>, RingError> {
    Err(RingError::BadFrame {
        request_id,
        reason,
        resume_at,
    })
}

/// Bytes that differ from frame to frame, so a misplaced or stale payload shows.
fn payload_bytes(request_id: u64, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (request_id as u8).wrapping_mul(37) ^ (i as u8).wrapping_mul(11) ^ 0x5A)
        .collect()
}
