//! Embedding does not allocate per call: once a caller's `EmbedScratch` has grown to
//! its working size, embedding more texts allocates nothing (the embedder runs on every
//! Remember and every text query). Its own test binary, because it installs a counting
//! global allocator.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use nexus_daemon::embed::{EmbedScratch, Embedder, HashingConfig, HashingEmbedder, StaticModel};

/// Counts the allocations of the current thread (tests run on several threads).
struct CountingAllocator;

thread_local! {
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

// SAFETY: every call is forwarded unchanged to the system allocator; the counter is a
// const-initialised thread-local `Cell` without a destructor, which never allocates.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.with(|n| n.set(n.get() + 1));
        // SAFETY: forwarded with the caller's layout, under the caller's contract.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System.alloc` above with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.with(|n| n.set(n.get() + 1));
        // SAFETY: `ptr` came from this allocator with `layout`, as the caller guarantees.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: CountingAllocator = CountingAllocator;

const TEXTS: [&str; 6] = [
    "Caroline: I went to a LGBTQ support group yesterday and it was so powerful.",
    "Melanie: Héllo! Ça va? I painted a lake sunrise last year.",
    "野口里佳 went to 東京 in 2023 😀",
    "",
    "When did Melanie paint a sunrise?",
    "[PAD] tokens, punctuation!!! and numbers 3.14",
];

fn allocations_while(f: impl FnOnce()) -> u64 {
    let before = ALLOCATIONS.with(Cell::get);
    f();
    ALLOCATIONS.with(Cell::get) - before
}

fn assert_no_allocation_after_warm_up(embedder: &dyn Embedder) {
    let mut scratch = EmbedScratch::new();
    let mut out = vec![0.0; embedder.dim()];
    let mut embed_all = || {
        for text in TEXTS {
            embedder.embed(text, &mut scratch, &mut out).expect("right dimension");
        }
    };
    let warm_up = allocations_while(&mut embed_all); // grows the scratch to its working size
    assert!(warm_up > 0, "the counter sees the scratch grow");
    let n = allocations_while(|| (0..10).for_each(|_| embed_all()));
    assert_eq!(n, 0, "{} allocated {n} times after warm-up", embedder.identity());
}

#[test]
fn static_model_embeds_without_allocating() {
    assert_no_allocation_after_warm_up(&StaticModel::builtin().expect("the shipped model loads"));
}

#[test]
fn hashing_embedder_embeds_without_allocating() {
    assert_no_allocation_after_warm_up(&HashingEmbedder::new(HashingConfig::default()).expect("valid"));
}
