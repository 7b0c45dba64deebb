//! Embedding does not allocate per call: once a caller's `EmbedScratch` has grown to
//! its working size, embedding more texts allocates nothing (the embedder runs on every
//! Remember and every text query). Its own test binary, because it installs a counting
//! global allocator.

mod common;

use nexus_daemon::embed::{EmbedScratch, Embedder, HashingConfig, HashingEmbedder, StaticModel};

#[global_allocator]
static GLOBAL: common::CountingAllocator = common::CountingAllocator;

const TEXTS: [&str; 6] = [
    "Caroline: I went to a LGBTQ support group yesterday and it was so powerful.",
    "Melanie: Héllo! Ça va? I painted a lake sunrise last year.",
    "野口里佳 went to 東京 in 2023 😀",
    "",
    "When did Melanie paint a sunrise?",
    "[PAD] tokens, punctuation!!! and numbers 3.14",
];

fn assert_no_allocation_after_warm_up(embedder: &dyn Embedder) {
    let mut scratch = EmbedScratch::new();
    let mut out = vec![0.0; embedder.dim()];
    let mut embed_all = || {
        for text in TEXTS {
            embedder.embed(text, &mut scratch, &mut out).expect("right dimension");
        }
    };
    let warm_up = common::allocations_while(&mut embed_all); // grows the scratch to its working size
    assert!(warm_up > 0, "the counter sees the scratch grow");
    let n = common::allocations_while(|| (0..10).for_each(|_| embed_all()));
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
