//! Criterion benchmark of the lexical engine (issue 9's target: a BM25 query
//! p50 ≤ 50 µs at 100,000 memories).
//!
//! - `lexical/bm25_query_100k`: one namespace of 100,000 synthetic memories
//!   (8–40 words each, drawn from a Zipfian distribution over a 50,000-word
//!   vocabulary, exponent 1 as in English text; see
//!   `nexus_daemon::recall::lexical::synthetic`), queried round-robin with
//!   1,000 questions of 3–10 words from the same distribution, top 10, the
//!   shipped settings (stemming, Snowball stop words, k1 1.2, b 0.75). One
//!   query per iteration, one reused `SearchScratch`, as a recall thread does.
//!
//! Criterion's figure is the mean of a round-robin; before it runs, each
//! query is also timed once on its own and the p50/p90/p99 printed, since
//! the target is a median per query. Also printed, timed once: an insert's
//! cost (averaged over the build) and the saved image's size and load time.

use std::hint::black_box;
use std::time::Instant;

use criterion::{Criterion, criterion_group, criterion_main};
use nexus_daemon::recall::lexical::synthetic::ZipfText;
use nexus_daemon::recall::lexical::{LexicalConfig, LexicalIndex, SearchScratch};

const MEMORIES: u64 = 100_000;
const VOCABULARY: usize = 50_000;
const QUERIES: usize = 1_000;
const K: usize = 10;

fn build() -> (LexicalIndex, Vec<String>) {
    let mut text = ZipfText::new(VOCABULARY, 1.0, 0x6c65_7869_6361_6c31);
    let documents: Vec<String> = (0..MEMORIES).map(|_| text.sentence(8, 40)).collect();
    let mut index = LexicalIndex::new(LexicalConfig::default()).expect("default settings are valid");
    let started = Instant::now();
    for (id, document) in (1..).zip(&documents) {
        index.insert(id, "bench", document);
    }
    let insert_us = started.elapsed().as_secs_f64() * 1e6 / MEMORIES as f64;
    let image = index.to_image();
    let started = Instant::now();
    let loaded = LexicalIndex::from_image(LexicalConfig::default(), &image).expect("own image loads");
    println!(
        "lexical: insert {insert_us:.1} µs per memory; image {:.1} MiB, loaded in {:.0} ms ({} memories)",
        image.len() as f64 / (1 << 20) as f64,
        started.elapsed().as_secs_f64() * 1e3,
        loaded.stats().documents
    );
    let queries = (0..QUERIES).map(|_| text.sentence(3, 10)).collect();
    (index, queries)
}

fn print_percentiles(index: &LexicalIndex, queries: &[String]) {
    let (mut scratch, mut hits) = (SearchScratch::new(), Vec::with_capacity(K));
    let mut micros: Vec<f64> = queries
        .iter()
        .map(|q| {
            let started = Instant::now();
            index
                .search("bench", q, K, &|_| true, &mut scratch, &mut hits)
                .expect("short query");
            black_box(&hits);
            started.elapsed().as_secs_f64() * 1e6
        })
        .collect();
    micros.sort_by(f64::total_cmp);
    let at = |p: f64| micros[((micros.len() - 1) as f64 * p) as usize];
    println!(
        "lexical: {MEMORIES} memories, {QUERIES} queries one by one: p50 {:.1} µs, p90 {:.1} µs, p99 {:.1} µs",
        at(0.5),
        at(0.9),
        at(0.99)
    );
}

fn bm25_query(c: &mut Criterion) {
    let (index, queries) = build();
    print_percentiles(&index, &queries);
    let mut group = c.benchmark_group("lexical");
    let (mut scratch, mut hits) = (SearchScratch::new(), Vec::with_capacity(K));
    let mut next = 0;
    group.bench_function("bm25_query_100k", |b| {
        b.iter(|| {
            let query = &queries[next % queries.len()];
            next += 1;
            index
                .search("bench", black_box(query), K, &|_| true, &mut scratch, &mut hits)
                .expect("short query");
            black_box(&hits);
        });
    });
    group.finish();
}

criterion_group!(benches, bm25_query);
criterion_main!(benches);
