//! Criterion benchmarks of the built-in embedder (issue 9's target: ≤ 30 µs to embed a
//! short text, ≤ 64 tokens, on one core).
//!
//! - `embed/static_model_short`: the shipped model (int8 minilm-static-256) embedding
//!   a round-robin of conversational texts of 3–64 tokens, one text per iteration;
//! - `embed/static_model_tokens/N`: one text of exactly N tokens (8, 32, 64);
//! - `embed/hashing_short`: the hashing fallback on the same texts.
//!
//! Each caller reuses one `EmbedScratch`, as the daemon's threads do, so no call
//! allocates. What this does not measure: loading the model (once per start).

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use nexus_daemon::embed::{EmbedScratch, Embedder, HashingConfig, HashingEmbedder, StaticModel};

/// The definition of a short text.
const MAX_SHORT_TOKENS: usize = 64;
/// Token counts of the fixed-length texts.
const TOKEN_COUNTS: [usize; 3] = [8, 32, 64];

/// Conversational texts like the memories an agent writes (written for this benchmark).
const TEXTS: [&str; 12] = [
    "Thanks!",
    "When did Melanie paint the sunrise?",
    "Caroline: I went to a support group yesterday and it was so powerful.",
    "Melanie: I'm swamped with the kids & work. What's up with you? Anything new?",
    "The user prefers dark mode, vim keybindings and answers in French.",
    "Remember that the staging database password rotates every Monday at 09:00 UTC.",
    "Jon lost his job as a banker and decided to open his own dance studio downtown.",
    "Gina: Héllo! Ça va? I launched an online clothing store after the Paris trip.",
    "Meeting notes: migrate the billing service to the new queue, owner Sam, due 2024-03-15; \
     blockers are the schema change and the load test.",
    "Andrew and Audrey adopted two puppies, Toby and Buddy, and they go hiking on weekends \
     near the lake whenever the weather allows it.",
    "Deborah told Jolene about her yoga retreat in Bali, the meditation classes at sunrise, \
     and how her late mother's garden still inspires her to teach.",
    "Error report: the client timed out after 30 s while recalling memories for namespace \
     agent-7; retry succeeded; consider raising the deadline or caching the query embedding.",
];

fn token_count(model: &StaticModel, text: &str) -> usize {
    let mut out = vec![0.0; model.dim()];
    let mut scratch = EmbedScratch::new();
    model.embed(text, &mut scratch, &mut out).expect("dimension");
    scratch.token_ids().len()
}

/// A text of exactly `n` tokens (words that are one token each).
fn text_of_tokens(model: &StaticModel, n: usize) -> String {
    let words = [
        "the", "user", "likes", "coffee", "and", "long", "walks", "near", "water",
    ];
    let text = words.iter().cycle().take(n).copied().collect::<Vec<_>>().join(" ");
    assert_eq!(token_count(model, &text), n, "each word is one token");
    text
}

fn round_robin(c: &mut Criterion, name: &str, embedder: &dyn Embedder) {
    let mut group = c.benchmark_group("embed");
    group.throughput(Throughput::Elements(1));
    let mut scratch = EmbedScratch::new();
    let mut out = vec![0.0; embedder.dim()];
    let mut next = 0;
    group.bench_function(name, |b| {
        b.iter(|| {
            let text = TEXTS[next % TEXTS.len()];
            next += 1;
            black_box(
                embedder
                    .embed(black_box(text), &mut scratch, &mut out)
                    .expect("dimension"),
            );
        })
    });
    group.finish();
}

fn static_model(c: &mut Criterion) {
    let model = StaticModel::builtin().expect("the shipped model loads");
    for text in TEXTS {
        assert!(
            token_count(&model, text) <= MAX_SHORT_TOKENS,
            "not a short text: {text}"
        );
    }
    round_robin(c, "static_model_short", &model);

    let mut group = c.benchmark_group("embed/static_model_tokens");
    group.throughput(Throughput::Elements(1));
    let mut scratch = EmbedScratch::new();
    let mut out = vec![0.0; model.dim()];
    for n in TOKEN_COUNTS {
        let text = text_of_tokens(&model, n);
        group.bench_with_input(BenchmarkId::from_parameter(n), &text, |b, text| {
            b.iter(|| black_box(model.embed(black_box(text), &mut scratch, &mut out).expect("dimension")))
        });
    }
    group.finish();
}

fn hashing(c: &mut Criterion) {
    let embedder = HashingEmbedder::new(HashingConfig::default()).expect("valid config");
    round_robin(c, "hashing_short", &embedder);
}

criterion_group!(benches, static_model, hashing);
criterion_main!(benches);
