//! Criterion micro-benchmarks of the protocol crate alone: no daemon, no syscalls.
//!
//! - `ring_two_threads`: a producer thread writes frames (`try_write_bytes`,
//!   spinning then yielding when full) while the consumer thread peeks,
//!   copies each payload out (as the daemon does at the trust boundary) and
//!   releases it. Reported per frame (`Throughput::Elements`), so criterion
//!   prints ns/frame and frames/s. On a 2-core host both threads get a core.
//! - `ring_one_thread`: write one frame, then peek/copy/release it, on one thread.
//! - `wire_encode_ping`: `wire::encode_into` of a Ping request into a slot.
//! - `wire_request_path`: the daemon's request path minus wake-ups: encode a
//!   Ping into the ring in place, copy it out, `access_request` the copy.
//!
//! What this does not measure: wake-ups, the daemon, the client library —
//! that is `nexus-bench ping`.

use std::hint::black_box;
use std::sync::Barrier;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use nexus_shm_protocol::layout::FrameKind;
use nexus_shm_protocol::ring::{Consumer, Producer, heap_ring};
use nexus_shm_protocol::wire::{PingRequest, Request, RequestBody, access_request, encode_into};
use rkyv::util::AlignedVec;

/// Payload sizes measured: a small request and a page-sized one.
const PAYLOAD_BYTES: [usize; 2] = [64, 4096];

/// Ring capacity: the daemon's default ring (1 MiB).
const RING_BYTES: u64 = 1 << 20;

/// Largest frame: any payload benchmarked here, plus rkyv's overhead.
const MAX_FRAME_BYTES: u64 = 64 << 10;

/// Empty/full polls of a ring before the waiting thread yields its core.
const SPINS_BEFORE_YIELD: u32 = 128;

fn ring_two_threads(c: &mut Criterion) {
    let mut group = c.benchmark_group("ring_two_threads");
    group.throughput(Throughput::Elements(1));
    for payload_bytes in PAYLOAD_BYTES {
        let (mut producer, mut consumer) = heap_ring(RING_BYTES, MAX_FRAME_BYTES);
        let payload = vec![0xA5u8; payload_bytes];
        group.bench_with_input(BenchmarkId::from_parameter(payload_bytes), &payload, |b, payload| {
            b.iter_custom(|frames| stream_frames(&mut producer, &mut consumer, payload, frames));
        });
    }
    group.finish();
}

/// Streams `frames` frames from a producer thread to this thread; returns the
/// time from both being ready to the last frame released.
fn stream_frames(producer: &mut Producer, consumer: &mut Consumer, payload: &[u8], frames: u64) -> Duration {
    let ready = Barrier::new(2);
    std::thread::scope(|scope| {
        scope.spawn(|| {
            ready.wait();
            for id in 0..frames {
                write_frame(producer, id, payload);
            }
        });
        let mut scratch = AlignedVec::<16>::with_capacity(MAX_FRAME_BYTES as usize);
        ready.wait();
        let started = Instant::now();
        for _ in 0..frames {
            read_frame(consumer, &mut scratch);
        }
        started.elapsed()
    })
}

/// Writes one frame, spinning then yielding while the ring is full.
fn write_frame(producer: &mut Producer, id: u64, payload: &[u8]) {
    let mut polls = 0u32;
    while producer
        .try_write_bytes(FrameKind::Request, id, payload)
        .expect("a heap ring with a fixed payload never errs")
        .is_none()
    {
        back_off(&mut polls);
    }
}

/// Peeks, copies out and releases one frame, spinning then yielding while empty.
fn read_frame(consumer: &mut Consumer, scratch: &mut AlignedVec<16>) {
    let mut polls = 0u32;
    let frame = loop {
        match consumer.peek().expect("our own producer writes valid frames") {
            Some(frame) => break frame,
            None => back_off(&mut polls),
        }
    };
    consumer.copy_payload_aligned(&frame, scratch);
    consumer.release(&frame);
    black_box(scratch.as_slice());
}

fn back_off(polls: &mut u32) {
    *polls += 1;
    if *polls < SPINS_BEFORE_YIELD {
        std::hint::spin_loop();
    } else {
        std::thread::yield_now();
    }
}

fn ring_one_thread(c: &mut Criterion) {
    let mut group = c.benchmark_group("ring_one_thread");
    group.throughput(Throughput::Elements(1));
    for payload_bytes in PAYLOAD_BYTES {
        let (mut producer, mut consumer) = heap_ring(RING_BYTES, MAX_FRAME_BYTES);
        let mut scratch = AlignedVec::<16>::with_capacity(MAX_FRAME_BYTES as usize);
        let payload = vec![0xA5u8; payload_bytes];
        group.bench_with_input(BenchmarkId::from_parameter(payload_bytes), &payload, |b, payload| {
            b.iter(|| {
                write_frame(&mut producer, 1, black_box(payload));
                read_frame(&mut consumer, &mut scratch);
            });
        });
    }
    group.finish();
}

fn ping_request(payload_bytes: usize) -> Request {
    Request {
        request_id: 1,
        deadline_ns: 0,
        body: RequestBody::Ping(PingRequest {
            payload: vec![0; payload_bytes],
        }),
    }
}

fn wire_encode_ping(c: &mut Criterion) {
    let mut group = c.benchmark_group("wire_encode_ping");
    group.throughput(Throughput::Elements(1));
    for payload_bytes in PAYLOAD_BYTES {
        let request = ping_request(payload_bytes);
        let mut slot = vec![std::mem::MaybeUninit::<u8>::uninit(); MAX_FRAME_BYTES as usize];
        group.bench_with_input(BenchmarkId::from_parameter(payload_bytes), &request, |b, request| {
            b.iter(|| black_box(encode_into(black_box(request), &mut slot).expect("the slot is large enough")));
        });
    }
    group.finish();
}

fn wire_request_path(c: &mut Criterion) {
    let mut group = c.benchmark_group("wire_request_path");
    group.throughput(Throughput::Elements(1));
    for payload_bytes in PAYLOAD_BYTES {
        let (mut producer, mut consumer) = heap_ring(RING_BYTES, MAX_FRAME_BYTES);
        let mut scratch = AlignedVec::<16>::with_capacity(MAX_FRAME_BYTES as usize);
        let request = ping_request(payload_bytes);
        group.bench_with_input(BenchmarkId::from_parameter(payload_bytes), &request, |b, request| {
            b.iter(|| {
                let written = producer.try_write(FrameKind::Request, 1, |slot| encode_into(black_box(request), slot));
                assert!(matches!(written, Ok(Some(_))), "a drained ring has room");
                read_frame(&mut consumer, &mut scratch);
                let archived = access_request(&scratch).expect("our own archive validates");
                black_box(archived.request_id.to_native());
            });
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    // Modest times so the whole bench stays well under two minutes.
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(20);
    targets = ring_two_threads, ring_one_thread, wire_encode_ping, wire_request_path
}
criterion_main!(benches);
