//! Fuzzes the rings against a hostile peer: the daemon's end of a request ring
//! (`Consumer::peek`, payload copy and request validation, release, skip after a
//! bad frame) and of a response ring (`Producer::try_write_bytes` against a
//! consumer cursor the peer controls), over memory whose header and data bytes the
//! fuzzer writes before the ends exist and between every step.
//!
//! Input: ring size and frame limit, all four cursors (the daemon's own included)
//! and the data bytes present before the ends are created (a client holds the memfd
//! from the start), then a script of steps: the daemon consumes, the peer publishes
//! (plausibly or not), scribbles a frame header, overwrites any cursor or wake-up
//! flag, the daemon answers. The address sanitizer turns any access outside the data
//! area into a crash. On the code before issue 7 (cursors resumed from the shared
//! header) this target finds the out-of-bounds write within seconds.
#![no_main]

use std::alloc::Layout;
use std::sync::Arc;
use std::sync::atomic::Ordering::{Acquire, Relaxed, Release};

use libfuzzer_sys::fuzz_target;
use nexus_fuzz::{Input, write_seeds_if_asked};
use nexus_shm_protocol::layout::{FRAME_ALIGN_BYTES, FrameHeader, FrameKind, RingHeader, max_frame_for_capacity};
use nexus_shm_protocol::ring::{Consumer, Producer, RingError, ring_ends_from_raw};
use nexus_shm_protocol::wire;
use rkyv::util::AlignedVec;

/// Steps per input: enough to wrap a small ring several times.
const MAX_STEPS: usize = 512;
/// Largest answer a step writes: past the biggest ring's frame limit, so
/// `FrameTooLarge` is reached too.
const MAX_ANSWER_BYTES: u16 = 2048;

fuzz_target!(init: write_seeds_if_asked(seeds, run), |bytes: &[u8]| {
    run(bytes);
});

/// Plays one script; true when the daemon consumed a valid request.
fn run(bytes: &[u8]) -> bool {
    let mut input = Input::new(bytes);
    let capacity_bytes = 64u64 << (input.u8() % 6);
    let max_frame_bytes = max_frame_for_capacity(capacity_bytes) >> (input.u8() % 3);
    let requests = PeerRing::new(capacity_bytes);
    let responses = PeerRing::new(capacity_bytes);
    // Every cursor, the daemon's own included: the peer may write the whole
    // header before the daemon creates its ends.
    for cursor in [
        &requests.header.tail,
        &requests.header.head,
        &responses.header.tail,
        &responses.header.head,
    ] {
        cursor.store(input.u64(), Relaxed);
    }
    requests.fill(input.take(capacity_bytes as usize));
    let mut daemon = Daemon {
        requests: Some(requests.consumer(max_frame_bytes)),
        responses: Some(responses.producer(max_frame_bytes)),
        scratch: AlignedVec::new(),
        valid_requests: 0,
    };
    for _ in 0..MAX_STEPS {
        if input.is_empty() {
            break;
        }
        match input.u8() % 8 {
            0 | 1 => daemon.consume(),
            2 => requests.publish(input.u8()),
            3 => peer_writes_cursor(&requests, &responses, &mut input),
            4 => requests.write_frame_header(&mut input),
            5 => {
                let len = usize::from(input.u16() % MAX_ANSWER_BYTES);
                daemon.answer(input.take(len));
            }
            6 => responses.release_all(),
            _ => peer_writes_flag(&requests, &responses, &mut input),
        }
    }
    daemon.valid_requests > 0
}

/// The peer overwrites one of the four cursors, its own or the daemon's.
fn peer_writes_cursor(requests: &PeerRing, responses: &PeerRing, input: &mut Input<'_>) {
    let cursors = [
        &requests.header.tail,
        &requests.header.head,
        &responses.header.tail,
        &responses.header.head,
    ];
    cursors[usize::from(input.u8() % 4)].store(input.u64(), Relaxed);
}

/// The peer overwrites one of the four wake-up flag words.
fn peer_writes_flag(requests: &PeerRing, responses: &PeerRing, input: &mut Input<'_>) {
    let flags = [
        &requests.header.producer_waiting,
        &requests.header.consumer_sleeping,
        &responses.header.producer_waiting,
        &responses.header.consumer_sleeping,
    ];
    flags[usize::from(input.u8() % 4)].store(u32::from(input.u8()), Relaxed);
}

/// The daemon's side: one consumer, one producer; an end that reported the
/// shared state corrupt is dropped (the daemon disconnects that client).
struct Daemon {
    requests: Option<Consumer>,
    responses: Option<Producer>,
    scratch: AlignedVec<16>,
    valid_requests: u64,
}

impl Daemon {
    fn consume(&mut self) {
        let Some(consumer) = self.requests.as_mut() else { return };
        match consumer.peek() {
            Ok(Some(frame)) => {
                assert!(u64::from(frame.len) <= consumer.max_frame_bytes());
                consumer.copy_payload_aligned(&frame, &mut self.scratch);
                self.valid_requests += u64::from(wire::access_request(&self.scratch).is_ok());
                consumer.release(&frame);
            }
            Ok(None) => {
                if consumer.prepare_sleep() {
                    consumer.end_sleep();
                }
            }
            Err(RingError::BadFrame { resume_at, .. }) => consumer.skip_to(resume_at),
            Err(_) => self.requests = None,
        }
    }

    fn answer(&mut self, payload: &[u8]) {
        let Some(producer) = self.responses.as_mut() else {
            return;
        };
        match producer.try_write_bytes(FrameKind::Response, 1, payload) {
            Ok(_) => {
                let _ = producer.consumer_needs_wake();
            }
            Err(RingError::FrameTooLarge { .. }) => {}
            Err(_) => self.responses = None,
        }
    }
}

/// One ring's memory, as the peer sees it: it may write any byte at any time.
struct PeerRing {
    header: Arc<RingHeader>,
    data: Arc<Data>,
    capacity_bytes: u64,
}

/// The data area: an aligned heap allocation of exactly the ring's size, so the
/// address sanitizer catches any access past its end.
struct Data {
    ptr: *mut u8,
    layout: Layout,
}

// SAFETY: Data only owns its allocation; the fuzz target is single-threaded, and
// the ring ends and the simulated peer access it through raw pointers.
unsafe impl Send for Data {}
// SAFETY: as above.
unsafe impl Sync for Data {}

impl Drop for Data {
    fn drop(&mut self) {
        // SAFETY: allocated in PeerRing::new with this layout, freed once here.
        unsafe { std::alloc::dealloc(self.ptr, self.layout) }
    }
}

impl PeerRing {
    fn new(capacity_bytes: u64) -> Self {
        let layout = Layout::from_size_align(capacity_bytes as usize, FRAME_ALIGN_BYTES as usize).expect("layout");
        // SAFETY: the layout's size is at least 64.
        let ptr = unsafe { std::alloc::alloc_zeroed(layout) };
        assert!(!ptr.is_null());
        Self {
            header: Arc::new(RingHeader::new()),
            data: Arc::new(Data { ptr, layout }),
            capacity_bytes,
        }
    }

    fn keepalive(&self) -> Arc<(Arc<RingHeader>, Arc<Data>)> {
        Arc::new((Arc::clone(&self.header), Arc::clone(&self.data)))
    }

    fn ends(&self, max_frame_bytes: u64) -> (Producer, Consumer) {
        // SAFETY: the header is initialised and the data area is `capacity_bytes`
        // bytes aligned to 16, both kept alive by the keepalive; the capacity is a
        // power of two and the frame limit at most max_frame_for_capacity. Only
        // one end of each ring is used by the "daemon"; the fuzzer plays the peer.
        unsafe {
            ring_ends_from_raw(
                Arc::as_ptr(&self.header),
                self.data.ptr,
                self.capacity_bytes,
                max_frame_bytes,
                self.keepalive(),
            )
        }
    }

    fn consumer(&self, max_frame_bytes: u64) -> Consumer {
        self.ends(max_frame_bytes).1
    }

    fn producer(&self, max_frame_bytes: u64) -> Producer {
        self.ends(max_frame_bytes).0
    }

    fn fill(&self, bytes: &[u8]) {
        let len = bytes.len().min(self.capacity_bytes as usize);
        // SAFETY: at most capacity_bytes bytes into the data area, from fuzzer memory.
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), self.data.ptr, len) }
    }

    /// The peer publishes `units` more 16-byte units (whatever they hold).
    fn publish(&self, units: u8) {
        let tail = self.header.tail.load(Relaxed);
        let more = u64::from(units) * FRAME_ALIGN_BYTES;
        self.header.tail.store(tail.wrapping_add(more), Release);
    }

    /// The peer writes a frame header at a 16-aligned position of its choice.
    fn write_frame_header(&self, input: &mut Input<'_>) {
        let pos = (u64::from(input.u16()) * FRAME_ALIGN_BYTES) & (self.capacity_bytes - 1);
        let kind = [FrameKind::Request as u16, FrameKind::Wrap as u16, 2, 7][usize::from(input.u8() % 4)];
        let header = FrameHeader {
            len: u32::from(input.u16()),
            kind,
            flags: 0,
            request_id: 1,
        };
        let bytes = header.to_le_bytes();
        // SAFETY: pos is a multiple of 16 below capacity, so 16 bytes fit.
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), self.data.ptr.add(pos as usize), bytes.len()) }
    }

    /// The peer, as consumer, releases everything published.
    fn release_all(&self) {
        let tail = self.header.tail.load(Acquire);
        self.header.head.store(tail, Release);
    }
}

/// A request ring holding well-formed frames (a ping, a remember), then steps that
/// consume them, answer, and publish more.
fn seeds() -> Vec<(&'static str, Vec<u8>)> {
    let capacity_bytes = 1024u64;
    let ping = wire::Request {
        request_id: 1,
        deadline_ns: 0,
        body: wire::RequestBody::Ping(wire::PingRequest { payload: vec![1; 40] }),
    };
    let remember = wire::Request {
        request_id: 2,
        deadline_ns: 0,
        body: wire::RequestBody::Remember(wire::RememberRequest {
            memories: vec![wire::MemoryInput {
                namespace: "demo".into(),
                text: "the sky is blue".into(),
                ..Default::default()
            }],
        }),
    };
    let mut published = 0u64;
    let mut data = vec![0u8; capacity_bytes as usize];
    for request in [&ping, &remember] {
        let payload = wire::encode_to_vec(request);
        let pos = published as usize;
        let header = FrameHeader {
            len: payload.len() as u32,
            kind: FrameKind::Request as u16,
            flags: 0,
            request_id: request.request_id,
        };
        data[pos..pos + 16].copy_from_slice(&header.to_le_bytes());
        data[pos + 16..pos + 16 + payload.len()].copy_from_slice(&payload);
        published += nexus_shm_protocol::layout::frame_footprint(payload.len() as u64);
    }
    // Capacity 1024 (4), the full frame limit (0), the request ring's tail at what
    // is published and every other cursor at 0, the
    // data area, then: consume three times, answer 8 bytes, the peer releases the
    // answers, publishes 4 units, scribbles a wrap header at 0, consumes.
    let mut seed = vec![4u8, 0];
    for cursor in [published, 0, 0, 0] {
        seed.extend_from_slice(&cursor.to_le_bytes());
    }
    seed.extend_from_slice(&data);
    let steps: &[u8] = &[0, 0, 0, 5, 8, 0, 1, 2, 3, 4, 5, 6, 7, 8, 6, 2, 4, 4, 0, 0, 1, 0, 0, 0];
    seed.extend_from_slice(steps);
    vec![("two-requests", seed)]
}
