//! The scan engine: the same answers as before it moved behind the engine
//! trait (a fixed store, results recorded from the old `store/recall.rs`),
//! term counting, linear cost, and the filter applied inside the search.

use rkyv::rend::f32_le;

use super::*;
use crate::recall::query::{QueryInput, TimeRange};
use crate::store::tests::{TestStore, note};
use crate::store::{Deadline, ForgetTarget, NewMemory, TagRef};

#[test]
fn terms_count_once_each_whatever_the_case_or_repetition() {
    let mut terms = QueryTerms::new("Hiking hiking, CAROLINE went? Ünïcode");
    assert_eq!(terms.index.len(), 4);
    assert_eq!(terms.overlap("caroline caroline likes HIKING"), 0.5);
    assert_eq!(terms.overlap("nothing shared"), 0.0);
    assert_eq!(terms.overlap("went ünïcode hiking Caroline"), 1.0);
}

// Regression (issue 7, scenario 3): query terms were deduplicated with a
// linear search each (quadratic), and each memory's terms too: a query of
// ~900k distinct words took minutes. This one would take hours that way.
#[test]
fn a_query_of_a_million_distinct_words_is_prepared_and_scored_in_one_pass() {
    let query: String = (0..1_000_000).map(|n| format!("w{n} ")).collect();
    let mut terms = QueryTerms::new(&query);
    assert_eq!(terms.index.len(), 1_000_000);
    let text: String = (0..100_000).map(|n| format!("w{} ", n * 2)).collect();
    assert_eq!(terms.overlap(&text), 0.1);
}

/// Searches `store` with the scan engine.
async fn scan(test: &TestStore, input: &QueryInput<'_>) -> Vec<Candidate> {
    let query = Query::validate(input, &test.store).expect("a valid query");
    let ctx = SearchContext::new(&test.store, Deadline::NONE);
    ScanEngine.search(&query, &ctx).await.expect("no deadline").hits
}

fn ids(hits: &[Candidate]) -> Vec<u64> {
    hits.iter().map(|hit| hit.id).collect()
}

#[tokio::test]
async fn vectors_rank_by_cosine_within_the_namespace() {
    let test = TestStore::open("scan-cosine");
    let (sky, sea, sun) = (le(&[1.0, 0.0]), le(&[0.7, 0.7]), le(&[1.0, 0.0]));
    let with = |namespace, text, vector| NewMemory {
        vector: Some(vector),
        ..note(namespace, text)
    };
    test.remember(vec![
        with("a", "sky", &sky),
        with("a", "sea", &sea),
        with("b", "sun", &sun),
    ])
    .await;
    let input = QueryInput {
        namespace: "a",
        vector: Some(vec![1.0, 0.0]),
        k: 10,
        ..QueryInput::default()
    };
    let hits = scan(&test, &input).await;
    assert_eq!(ids(&hits), vec![1, 2]);
    assert_eq!(hits[0].signals.vector, Some(1.0));
}

#[tokio::test]
async fn text_needs_a_shared_term_and_a_forgotten_memory_is_gone() {
    let test = TestStore::open("scan-text");
    test.remember(vec![note("a", "Caroline went hiking"), note("a", "Melanie paints")])
        .await;
    let input = QueryInput {
        namespace: "a",
        text: Some("who went hiking?"),
        k: 5,
        ..QueryInput::default()
    };
    assert_eq!(ids(&scan(&test, &input).await), vec![1]);
    let forget = [rkyv::rend::u64_le::from_native(1)];
    test.store
        .forget(&ForgetTarget::Ids(&forget), Deadline::NONE)
        .await
        .unwrap();
    assert!(scan(&test, &input).await.is_empty());
}

// The filter is applied inside the search, before the top k: the best
// memories outside it do not crowd out the ones inside.
#[tokio::test]
async fn tags_and_time_range_filter_before_the_top_k() {
    let test = TestStore::open("scan-filter");
    let at = |text, created_at_ms, tagged: bool| NewMemory {
        created_at_ms: Some(created_at_ms),
        tags: tagged.then_some(TagRef { key: "t", value: "x" }).into_iter().collect(),
        ..note("a", text)
    };
    let memories = vec![
        at("alpha alpha", 100, false),
        at("alpha beta", 200, true),
        at("alpha", 300, true),
        at("alpha", 400, false),
    ];
    test.remember(memories).await;
    let base = QueryInput {
        namespace: "a",
        text: Some("alpha beta"),
        k: 1,
        ..QueryInput::default()
    };
    let tagged = QueryInput {
        tags: vec![("t", "x")],
        k: 2,
        ..base.clone()
    };
    assert_eq!(ids(&scan(&test, &tagged).await), vec![2, 3]);
    let late = QueryInput {
        created: Some(TimeRange {
            start_ms: 300,
            end_ms: 401,
        }),
        ..base.clone()
    };
    assert_eq!(ids(&scan(&test, &late).await), vec![3], "ties: the lower id");
}

/// Words the fixture's texts are made of (mixed case, one non-ASCII).
const WORDS: [&str; 24] = [
    "alpha",
    "Beta",
    "gamma",
    "delta",
    "hiking",
    "Caroline",
    "paints",
    "ramen",
    "sky",
    "sea",
    "ünïcode",
    "river",
    "mountain",
    "coffee",
    "train",
    "Berlin",
    "music",
    "garden",
    "book",
    "rain",
    "sun",
    "friend",
    "dog",
    "cat",
];

/// One fixture memory, owned (the store borrows it).
struct Owned {
    namespace: &'static str,
    text: String,
    vector: Option<Vec<f32_le>>,
    topic: Option<String>,
    created_at_ms: i64,
}

/// 1,300 memories in three namespaces (more than a chunk in "a"), texts of
/// 3 to 12 words, 4-d vectors on four in five, a topic tag on three in
/// four: the store the answers below were recorded on.
fn fixture() -> Vec<Owned> {
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    (1..=1300u64)
        .map(|id| {
            let namespace = match id % 13 {
                0 => "c",
                1..=5 => "b",
                _ => "a",
            };
            let n_words = 3 + (next() % 10) as usize;
            let words: Vec<&str> = (0..n_words).map(|_| WORDS[(next() % 24) as usize]).collect();
            let text = words.join(if id % 2 == 0 { " " } else { ", " });
            let vector = (id % 5 != 0).then(|| (0..4).map(|_| (next() % 2001) as f32 / 1000.0 - 1.0).collect());
            Owned {
                namespace,
                text,
                vector: vector.map(|v: Vec<f32>| le(&v)),
                topic: (id % 4 != 0).then(|| format!("t{}", id % 3)),
                created_at_ms: 1_700_000_000_000 + id as i64 * 1000,
            }
        })
        .collect()
}

fn le(values: &[f32]) -> Vec<f32_le> {
    values.iter().copied().map(f32_le::from_native).collect()
}

/// FNV-1a over each hit's id and the bits of its score and signals.
fn digest(hits: &[Candidate]) -> u64 {
    let mut hash = 0xcbf2_9ce4_8422_2325u64;
    for hit in hits {
        let vector = hit.signals.vector.map_or(7, f32::to_bits);
        let lexical = hit.signals.lexical.map_or(9, f32::to_bits);
        for x in [
            hit.id,
            u64::from(hit.score.to_bits()),
            u64::from(vector),
            u64::from(lexical),
        ] {
            hash = (hash ^ x).wrapping_mul(0x100_0000_01b3);
        }
    }
    hash
}

/// Per query: how many hits, their digest, and the first five (id, score bits),
/// as the scan answered before it moved (`store/recall.rs`, commit 128561f).
type Expected = (usize, u64, &'static [(u64, u32)]);

const BEFORE_THE_MOVE: [Expected; 9] = [
    (
        10,
        0x0a3cd9e195a869ed,
        &[
            (7, 0x3f800000),
            (21, 0x3f800000),
            (33, 0x3f800000),
            (48, 0x3f800000),
            (49, 0x3f800000),
        ],
    ),
    (
        10,
        0x1b5f718f712babcc,
        &[
            (892, 0x3f7925cf),
            (23, 0x3f707190),
            (98, 0x3f6b9b6a),
            (1203, 0x3f6a254b),
            (868, 0x3f6802a9),
        ],
    ),
    (
        7,
        0xb6cc3e5cf49b3c1f,
        &[
            (120, 0x3f800000),
            (576, 0x3f4f7d99),
            (173, 0x3f4d2390),
            (769, 0x3f406d54),
            (148, 0x3f3f1d73),
        ],
    ),
    (
        12,
        0x4f476249ce503aa6,
        &[
            (7, 0x3f800000),
            (11, 0x3f800000),
            (12, 0x3f800000),
            (14, 0x3f800000),
            (20, 0x3f800000),
        ],
    ),
    (
        10,
        0xc0209755a20b84e1,
        &[
            (10, 0x3f800000),
            (49, 0x3f800000),
            (58, 0x3f800000),
            (370, 0x3f800000),
            (529, 0x3f800000),
        ],
    ),
    (
        3,
        0x983a2745bcdf30e1,
        &[(507, 0x3f72c363), (416, 0x3f5b4ced), (338, 0x3f5b43eb)],
    ),
    (
        39,
        0x554d12790e536303,
        &[
            (260, 0x3f800000),
            (494, 0x3f800000),
            (520, 0x3f800000),
            (546, 0x3f800000),
            (650, 0x3f800000),
        ],
    ),
    (
        15,
        0xf66e0dcbcee3ca4e,
        &[
            (715, 0x3f800000),
            (925, 0x3f800000),
            (1207, 0x3f3f67a6),
            (1117, 0x3f3dea2c),
            (313, 0x3f3ab79c),
        ],
    ),
    (0, 0xcbf29ce484222325, &[]),
];

// Moving the scan behind the engine trait changed nothing it answers: on a
// fixed store, every query gives the hits, scores and signals, bit for bit,
// that the scan gave in `store/recall.rs`.
#[tokio::test]
async fn the_scan_engine_answers_exactly_as_the_scan_did_before_it_moved() {
    let test = TestStore::open("scan-golden");
    let owned = fixture();
    for batch in owned.chunks(100) {
        let memories = batch.iter().map(|m| NewMemory {
            vector: m.vector.as_deref(),
            tags: (m.topic.as_deref())
                .map(|value| TagRef { key: "topic", value })
                .into_iter()
                .collect(),
            created_at_ms: Some(m.created_at_ms),
            ..note(m.namespace, &m.text)
        });
        test.remember(memories.collect()).await;
    }
    let (v1, v2) = (vec![0.3f32, -0.2, 0.9, 0.1], vec![-0.5f32, 0.5, 0.0, 0.25]);
    let t1 = vec![("topic", "t1")];
    let query = |namespace, text, vector: Option<&Vec<f32>>, k, tags: &Vec<(&'static str, &'static str)>| QueryInput {
        namespace,
        text,
        vector: vector.cloned(),
        k,
        tags: tags.clone(),
        ..QueryInput::default()
    };
    let none = Vec::new();
    let queries = [
        query("a", Some("alpha beta"), None, 10, &none),
        query("a", None, Some(&v1), 10, &none),
        query("b", Some("Caroline hiking sea"), Some(&v2), 7, &none),
        query("", Some("gamma"), None, 12, &none),
        query("a", Some("delta river"), None, 10, &t1),
        query("c", None, Some(&v2), 3, &none),
        query("c", Some("ÜNÏCODE alpha alpha"), None, 1000, &none),
        query("", Some("dog cat sun"), Some(&v1), 15, &t1),
        query("zzz", Some("alpha"), None, 5, &none),
    ];
    for (n, (input, (len, hash, top))) in queries.iter().zip(BEFORE_THE_MOVE).enumerate() {
        let hits = scan(&test, input).await;
        let first: Vec<(u64, u32)> = hits.iter().take(5).map(|h| (h.id, h.score.to_bits())).collect();
        assert_eq!((hits.len(), first.as_slice()), (len, top), "query {n}");
        assert_eq!(digest(&hits), hash, "query {n}: every hit, score and signal");
    }
}
