//! loom models of the ring's wake-up flag protocol.
//!
//! `RUSTFLAGS="--cfg loom" cargo test -p nexus-shm-protocol --test ring_loom --release`
//! Under `--cfg loom` the ring's atomics and fences are loom's (`src/sync.rs`),
//! so loom runs the real ring code through every interleaving up to a
//! preemption bound (`LOOM_MAX_PREEMPTIONS`, else 3, or 2 where loom itself
//! errs: see `CONSUMER_SLEEP_PREEMPTION_BOUND`). The eventfds are
//! modelled by a loom Mutex + Condvar counter: a lost wake-up leaves a thread
//! waiting for a signal nobody will send, which loom reports as a deadlock.
//!
//! Not here: the payload bytes, which are plain memory loom does not track
//! (Miri checks those accesses in `ring_miri.rs`), and the eventfd syscalls.
#![cfg(loom)]

use loom::sync::atomic::{AtomicUsize, Ordering};
use loom::sync::{Arc, Condvar, Mutex};
use loom::thread;
use nexus_shm_protocol::layout::{FrameKind, max_frame_for_capacity};
use nexus_shm_protocol::ring::{Consumer, Producer, heap_ring};

/// Preemptions explored by default (`LOOM_MAX_PREEMPTIONS` overrides it):
/// enough for a flag check to race with a cursor store at every step of a
/// burst, and each model stays well under a minute.
const DEFAULT_PREEMPTION_BOUND: usize = 3;

/// The bound for `sleeping_consumer_never_misses_a_frame`. At 3, loom 0.7.3
/// reports a deadlock that the C++20 memory model forbids: loom orders
/// modifications by causality only, so it misses that the producer's
/// `swap(0)` in `consumer_needs_wake` (an RMW, so right after the value it
/// read) precedes the consumer's next `store(1)` in `prepare_sleep`, and
/// after both SeqCst fences it lets the producer's load return the swap's
/// stale 0. Litmus, loom allows what C++20 forbids (r0 == 7, r1 == 0, r2 == 0):
/// `x.store(7); x.store(1); fence; r1 = t.load()` against
/// `r0 = x.swap(0); t.store(1); fence; r2 = x.load()`.
/// Every mutant of this half of the protocol tried (either fence removed,
/// the flag not cleared, the recheck skipped) already fails at 2.
const CONSUMER_SLEEP_PREEMPTION_BOUND: usize = 2;

/// The consumer sleeps whenever the ring looks empty; the producer never
/// runs out of space. Every frame arrives, in order, and the producer signals
/// at most once per time the consumer announced a sleep.
#[test]
fn sleeping_consumer_never_misses_a_frame() {
    const CAPACITY_BYTES: u64 = 256;
    const SIZES: [usize; 3] = [8, 24, 40];
    model(CONSUMER_SLEEP_PREEMPTION_BOUND, || {
        let (mut producer, mut consumer) = heap_ring(CAPACITY_BYTES, max_frame_for_capacity(CAPACITY_BYTES));
        let frames_ready = Arc::new(WakeCounter::new());
        let sleep_announcements = AtomicUsize::new(0);
        let producer_frames_ready = frames_ready.clone();
        let sender = thread::spawn(move || {
            for (request_id, len) in (0..).zip(SIZES) {
                let written = producer.try_write_bytes(FrameKind::Request, request_id, &payload_bytes(request_id, len));
                assert_eq!(written, Ok(Some(len as u32)), "the ring has room for every frame");
                if producer.consumer_needs_wake() {
                    producer_frames_ready.signal();
                }
            }
        });
        for request_id in 0..SIZES.len() as u64 {
            wait_for_frame(&consumer, &frames_ready, &sleep_announcements);
            check_next_frame(&mut consumer, request_id);
        }
        sender.join().unwrap();
        let (signals, announcements) = (frames_ready.total(), sleep_announcements.load(Ordering::Relaxed));
        assert!(signals <= announcements, "{signals} signals for {announcements} sleeps");
    });
}

/// Both sides sleep on each other: a 64-byte ring holds two of these frames,
/// so the producer waits for space (and wraps) while the consumer waits for
/// frames. Neither is left asleep, and the frames arrive in order.
#[test]
fn producer_and_consumer_sleeping_on_each_other_never_deadlock() {
    const CAPACITY_BYTES: u64 = 64;
    // Footprints 32 + 16 + 32: the third frame needs space back, then wraps.
    const SIZES: [usize; 3] = [16, 0, 16];
    model(DEFAULT_PREEMPTION_BOUND, || {
        let (mut producer, mut consumer) = heap_ring(CAPACITY_BYTES, max_frame_for_capacity(CAPACITY_BYTES));
        let frames_ready = Arc::new(WakeCounter::new());
        let space_ready = Arc::new(WakeCounter::new());
        let (producer_frames_ready, producer_space_ready) = (frames_ready.clone(), space_ready.clone());
        let sender = thread::spawn(move || {
            for (request_id, len) in (0..).zip(SIZES) {
                write_or_sleep(
                    &mut producer,
                    &producer_space_ready,
                    request_id,
                    &payload_bytes(request_id, len),
                );
                if producer.consumer_needs_wake() {
                    producer_frames_ready.signal();
                }
            }
        });
        let sleep_announcements = AtomicUsize::new(0);
        for request_id in 0..SIZES.len() as u64 {
            wait_for_frame(&consumer, &frames_ready, &sleep_announcements);
            check_next_frame(&mut consumer, request_id);
            if consumer.producer_needs_wake() {
                space_ready.signal();
            }
        }
        sender.join().unwrap();
        assert!(consumer.is_empty());
    });
}

fn model<F>(preemption_bound: usize, f: F)
where
    F: Fn() + Sync + Send + 'static,
{
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound.get_or_insert(preemption_bound);
    builder.check(f);
}

/// The consumer's half of the sleeping protocol: peek, announce the sleep, sleep.
fn wait_for_frame(consumer: &Consumer, frames_ready: &WakeCounter, sleep_announcements: &AtomicUsize) {
    while consumer.is_empty() {
        sleep_announcements.fetch_add(1, Ordering::Relaxed);
        if consumer.prepare_sleep() {
            frames_ready.wait();
            consumer.end_sleep();
        }
    }
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

#[track_caller]
fn check_next_frame(consumer: &mut Consumer, request_id: u64) {
    let frame = consumer.peek().unwrap().expect("a frame after the wait");
    assert_eq!((frame.kind, frame.request_id), (FrameKind::Request as u16, request_id));
    let mut payload = Vec::new();
    consumer.copy_payload(&frame, &mut payload);
    assert_eq!(payload, payload_bytes(request_id, frame.len as usize));
    consumer.release(&frame);
}

/// An eventfd as loom sees it: signals add up, a wait consumes them all.
struct WakeCounter {
    state: Mutex<Signals>,
    signalled: Condvar,
}

struct Signals {
    pending: usize,
    total: usize,
}

impl WakeCounter {
    fn new() -> Self {
        Self {
            state: Mutex::new(Signals { pending: 0, total: 0 }),
            signalled: Condvar::new(),
        }
    }

    fn signal(&self) {
        let mut state = self.state.lock().unwrap();
        state.pending += 1;
        state.total += 1;
        self.signalled.notify_one();
    }

    fn wait(&self) {
        let mut state = self.state.lock().unwrap();
        while state.pending == 0 {
            state = self.signalled.wait(state).unwrap();
        }
        state.pending = 0;
    }

    fn total(&self) -> usize {
        self.state.lock().unwrap().total
    }
}

fn payload_bytes(request_id: u64, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (request_id as u8).wrapping_mul(37) ^ i as u8)
        .collect()
}
