//! Criterion benchmark of the fusion kernel (issue 10's targets: fusing 256
//! candidates ≤ 20 µs, the SIMD path ≥ 3× the scalar path).
//!
//! - `fusion/simd_256` and `fusion/scalar_256`: scoring 256 candidates over
//!   the eight factors with the default weights, then the top 8
//!   (`nexus_daemon::recall::fusion`), side by side in one run. The
//!   candidates' values are seeded pseudo-random in `[0, 1]`, as the
//!   pipeline fills them; the feature columns are built once, outside the
//!   timed loop, as the pipeline builds them once per recall.
//! - `fusion/score_simd_256` and `fusion/score_scalar_256`: the scoring
//!   alone, without the top-k both paths share.
//! - `fusion/fill_and_score_256`: the same, with filling the columns inside
//!   the loop (what a recall pays in all).

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use nexus_daemon::recall::fusion::{Factor, Features, Weights, score_scalar, score_simd, top_k};

const CANDIDATES: usize = 256;
const K: usize = 8;

fn values() -> Vec<[f32; 8]> {
    let mut state = 0x6675_7369_6f6e_u64;
    let mut next = move || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (state >> 40) as f32 / (1u64 << 24) as f32
    };
    (0..CANDIDATES).map(|_| std::array::from_fn(|_| next())).collect()
}

fn fill(values: &[[f32; 8]]) -> Features {
    let mut features = Features::with_capacity(values.len());
    for (id, row_values) in (1u64..).zip(values) {
        let row = features.push(id * 3);
        for factor in Factor::ALL {
            features.set(row, factor, row_values[factor as usize]);
        }
    }
    features
}

fn fusion(c: &mut Criterion) {
    let values = values();
    let features = fill(&values);
    let weights = Weights::default();
    let mut scores = Vec::with_capacity(CANDIDATES);
    let mut group = c.benchmark_group("fusion");
    group.bench_function("simd_256", |b| {
        b.iter(|| {
            score_simd(black_box(&features), &weights, &mut scores);
            black_box(top_k(features.ids(), &scores, K))
        })
    });
    group.bench_function("scalar_256", |b| {
        b.iter(|| {
            score_scalar(black_box(&features), &weights, &mut scores);
            black_box(top_k(features.ids(), &scores, K))
        })
    });
    // The scoring alone (the part SIMD does), without the shared top-k.
    group.bench_function("score_simd_256", |b| {
        b.iter(|| {
            score_simd(black_box(&features), &weights, &mut scores);
            black_box(scores[0])
        })
    });
    group.bench_function("score_scalar_256", |b| {
        b.iter(|| {
            score_scalar(black_box(&features), &weights, &mut scores);
            black_box(scores[0])
        })
    });
    group.bench_function("fill_and_score_256", |b| {
        b.iter(|| {
            let features = fill(black_box(&values));
            score_simd(&features, &weights, &mut scores);
            black_box(top_k(features.ids(), &scores, K))
        })
    });
    group.finish();
}

criterion_group!(benches, fusion);
criterion_main!(benches);
