//! Proof that a recall's answer leaves the daemon without copies (issue 10,
//! item 8), counted by this test binary's global allocator.
//!
//! Each test drives the path a session takes for one frame: the archived
//! request through `FramePolicy::answer` (validation, `handler::handle`,
//! the pipeline) to the answer's bytes in a buffer allocated beforehand,
//! as the response ring is. Allocations are counted on the test's thread
//! only, and only while the switch is on (`counted`); the runtime is
//! current-thread, so the whole recall runs on that thread.
//!
//! - A CacheOnly hit allocates nothing at all.
//! - Every other route allocates as many times for memories of 10 bytes as
//!   for memories of 10 KiB: nothing on the way out grows with the texts.
//!
//! Not here: what the answers contain (`tests/it/recall_route.rs`).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::mem::MaybeUninit;
use std::sync::Arc;

use nexus_shm_protocol::layout::FrameKind;
use nexus_shm_protocol::wire::{
    self, RecallRequest, Request, RequestBody, Route as WireRoute, access_response, encode_to_vec,
};
use rkyv::util::AlignedVec;

use crate::config::Config;
use crate::handler::Shared;
use crate::recall::Recall;
use crate::recall::pipeline::PipelineConfig;
use crate::recall::setup::{RecallSettings, open_engines};
use crate::store::TagRef;
use crate::store::tests::{TestStore, note};
use crate::transport::frame::{FramePolicy, Verdict};

/// Counts the allocations (and reallocations) of the current thread while
/// its switch is on.
struct CountingAllocator;

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

fn count_one() {
    if COUNTING.with(Cell::get) {
        ALLOCATIONS.with(|n| n.set(n.get() + 1));
    }
}

// SAFETY: every call is forwarded unchanged to the system allocator; the
// switch and the counter are const-initialised thread-local `Cell`s without
// destructors, which never allocate.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count_one();
        // SAFETY: forwarded with the caller's layout, under the caller's contract.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count_one();
        // SAFETY: as `alloc`.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System` through this allocator, with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count_one();
        // SAFETY: `ptr` came from this allocator with `layout`, as the caller guarantees.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: CountingAllocator = CountingAllocator;

/// The allocations this thread made while `f` ran.
async fn counted<T>(f: impl AsyncFnOnce() -> T) -> (T, u64) {
    let before = ALLOCATIONS.with(Cell::get);
    COUNTING.with(|on| on.set(true));
    let result = f().await;
    COUNTING.with(|on| on.set(false));
    (result, ALLOCATIONS.with(Cell::get) - before)
}

/// Memories in the corpus: more than k, fewer than the depth any route asks
/// of an engine, so every engine returns all of them and the candidates are
/// the same whatever the texts' size (their number, not their bytes, sets
/// how much fusion allocates).
const MEMORIES: usize = 12;

/// The results asked for (the default k).
const K: u32 = 8;

/// Room for any answer here (8 hits of 10 KiB and their tags).
const SLOT_BYTES: usize = 256 * 1024;

/// The daemon's shared state over a corpus whose texts are `text_bytes`
/// long, with the daemon's engines (lexical, dense, vector, mining) and the
/// cache's epoch follower registered last, as `nexusd` has them.
struct Daemon {
    shared: Arc<Shared>,
    _test: TestStore,
}

impl Daemon {
    async fn with_texts(label: &str, text_bytes: usize) -> Self {
        let engines = open_engines(&RecallSettings::default(), None).expect("engines");
        let test = TestStore::open_with(label, engines.followers);
        let texts: Vec<String> = (0..MEMORIES).map(|i| text(i, text_bytes)).collect();
        let session = format!("s{}", text_bytes);
        let memories = (texts.iter())
            .map(|text| {
                let mut memory = note("agent", text);
                memory.tags = vec![
                    TagRef {
                        key: "session",
                        value: &session,
                    },
                    TagRef {
                        key: "speaker",
                        value: "Caroline",
                    },
                ];
                memory
            })
            .collect();
        test.remember(memories).await;
        let recall = Recall::build(
            test.store.clone(),
            engines.engines,
            engines.parts,
            PipelineConfig::default(),
        )
        .expect("valid pipeline settings");
        let shared = Shared::new(Config::default(), test.store.clone(), recall, engines.preprocessor);
        Self { shared, _test: test }
    }

    /// Answers `request` into `slot` as a session does; returns the answer's
    /// length and the allocations made on the way.
    async fn answer_counted(&self, request: &AlignedVec<16>, slot: &mut [MaybeUninit<u8>]) -> (usize, u64) {
        let mut policy = FramePolicy::default();
        counted(async || {
            let kind = FrameKind::Request as u16;
            let now_ns = nexus_shm_protocol::monotonic_now_ns();
            let verdict = policy.answer(kind, 1, request, now_ns, &self.shared).await;
            let Verdict::Answer(reply) = verdict else {
                panic!("a valid request ends no session")
            };
            reply.encode_into(slot).expect("the answer fits the slot")
        })
        .await
    }
}

/// A text about hiking, padded with words to `bytes`.
fn text(i: usize, bytes: usize) -> String {
    let mut text = format!("hike {i}");
    let filler = ["trail", "river", "summit", "pine", "camp", "ridge"];
    let mut word = 0;
    while text.len() + 8 < bytes {
        text.push(' ');
        text.push_str(filler[(i + word) % filler.len()]);
        word += 1;
    }
    text
}

fn recall_request(route: Option<WireRoute>) -> AlignedVec<16> {
    encode_to_vec(&Request {
        request_id: 1,
        deadline_ns: 0,
        body: RequestBody::Recall(RecallRequest {
            namespace: "agent".into(),
            text: Some("where did Caroline hike".into()),
            k: K,
            route,
            ..RecallRequest::default()
        }),
    })
}

fn slot() -> Vec<MaybeUninit<u8>> {
    vec![MaybeUninit::new(0); SLOT_BYTES]
}

/// The answer written into `slot`, decoded: its route and hit count, and
/// the length of its first text.
fn decoded(slot: &[MaybeUninit<u8>], len: usize) -> (WireRoute, usize, usize) {
    let mut bytes = AlignedVec::<16>::with_capacity(len);
    // SAFETY: the first `len` bytes of the slot were written by the encoder
    // (and the rest were initialised by `slot()`).
    bytes.extend_from_slice(unsafe { std::slice::from_raw_parts(slot.as_ptr().cast::<u8>(), len) });
    let response = access_response(&bytes).expect("a valid answer");
    let wire::ArchivedResponseBody::Recalled(hits) = &response.body else {
        panic!("not a recall's answer: {:?}", response.status.error_code())
    };
    let route = rkyv::deserialize::<WireRoute, rkyv::rancor::Error>(&response.route).expect("a route");
    (route, hits.len(), hits.first().map_or(0, |hit| hit.text.len()))
}

#[tokio::test(flavor = "current_thread")]
async fn a_cache_hit_is_answered_into_the_ring_without_a_single_allocation() {
    for text_bytes in [10, 10 * 1024] {
        let daemon = Daemon::with_texts(&format!("zero-copy-cache-{text_bytes}"), text_bytes).await;
        let request = recall_request(None);
        let mut slot = slot();
        // The first answer fills the cache; the second is its first hit
        // (and grows the serializer's thread-local arena once).
        for _ in 0..2 {
            daemon.answer_counted(&request, &mut slot).await;
        }
        let (len, allocations) = daemon.answer_counted(&request, &mut slot).await;
        let (route, hits, first_text) = decoded(&slot, len);
        assert_eq!(route, WireRoute::CacheOnly);
        assert_eq!(hits, K as usize);
        assert!(first_text + 8 >= text_bytes, "{first_text} bytes for {text_bytes}");
        assert_eq!(allocations, 0, "a cache hit of {text_bytes}-byte memories allocated");
    }
}

#[tokio::test(flavor = "current_thread")]
async fn the_other_routes_allocate_the_same_for_small_and_large_memories() {
    let routes = [
        WireRoute::SmartRouting,
        WireRoute::FullPipeline,
        WireRoute::MaximumIntelligence,
    ];
    let mut counts = Vec::new();
    for text_bytes in [10, 10 * 1024] {
        let daemon = Daemon::with_texts(&format!("zero-copy-routes-{text_bytes}"), text_bytes).await;
        let mut slot = slot();
        let mut per_route = Vec::new();
        for route in routes {
            let request = recall_request(Some(route));
            daemon.answer_counted(&request, &mut slot).await;
            let (len, allocations) = daemon.answer_counted(&request, &mut slot).await;
            let (answered, hits, _) = decoded(&slot, len);
            assert_eq!((answered, hits), (route, K as usize));
            per_route.push(allocations);
        }
        counts.push(per_route);
    }
    eprintln!(
        "allocations per route {routes:?}: 10 B {:?}, 10 KiB {:?}",
        counts[0], counts[1]
    );
    assert_eq!(
        counts[0], counts[1],
        "allocations per route grew with the memories' size"
    );
}
