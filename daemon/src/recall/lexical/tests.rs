//! Tests of the BM25 index: scores against a hand computation and a naive
//! scorer, visibility of inserts and deletes, namespace isolation, filters
//! before the top k, the query-length guard, and persistence.

use std::collections::HashMap;

use crate::recall::ann::synthetic::SplitMix64;
use crate::recall::lexical::{
    Hit, ImageFault, LexicalConfig, LexicalError, LexicalIndex, LoadSource, SearchScratch, StopWords, TokenizerConfig,
};

/// Words are terms as written: the naive scorer below needs no tokenizer.
fn plain() -> LexicalConfig {
    LexicalConfig {
        tokenizer: TokenizerConfig {
            stemming: false,
            stop_words: StopWords::None,
        },
        ..LexicalConfig::default()
    }
}

#[track_caller]
fn search(index: &LexicalIndex, namespace: &str, query: &str, k: usize) -> Vec<Hit> {
    let mut hits = Vec::new();
    index
        .search(namespace, query, k, &|_| true, &mut SearchScratch::new(), &mut hits)
        .expect("query within limits");
    hits
}

fn ids(hits: &[Hit]) -> Vec<u64> {
    hits.iter().map(|h| h.id).collect()
}

/// BM25 of one document written out as in the textbook, in f64.
fn bm25(tf: f64, len: f64, avg_len: f64, n: f64, df: f64) -> f64 {
    let idf = (1.0 + (n - df + 0.5) / (df + 0.5)).ln();
    idf * tf * 2.2 / (tf + 1.2 * (1.0 - 0.75 + 0.75 * len / avg_len))
}

#[test]
fn scores_match_a_hand_computed_example() {
    let index = LexicalIndex::rebuild(
        plain(),
        [
            (1, "ns", "apple banana apple"),
            (2, "ns", "banana cherry"),
            (3, "ns", "cherry date elder fig"),
        ],
    )
    .unwrap();
    // N = 3, avgdl = 3.
    let hits = search(&index, "ns", "apple", 10);
    assert_eq!(ids(&hits), [1]);
    assert!((f64::from(hits[0].score) - bm25(2.0, 3.0, 3.0, 3.0, 1.0)).abs() < 1e-5);
    let hits = search(&index, "ns", "banana cherry", 10);
    assert_eq!(ids(&hits), [2, 1, 3]);
    let expected = [
        2.0 * bm25(1.0, 2.0, 3.0, 3.0, 2.0),
        bm25(1.0, 3.0, 3.0, 3.0, 2.0),
        bm25(1.0, 4.0, 3.0, 3.0, 2.0),
    ];
    for (hit, expected) in hits.iter().zip(expected) {
        assert!((f64::from(hit.score) - expected).abs() < 1e-5, "{hit:?} vs {expected}");
    }
    // A repeated query word counts twice.
    let twice = search(&index, "ns", "apple apple", 10);
    assert!((twice[0].score - 2.0 * hits_score(&index, "apple")).abs() < 1e-5);
}

fn hits_score(index: &LexicalIndex, query: &str) -> f32 {
    search(index, "ns", query, 1)[0].score
}

#[test]
fn insert_is_visible_at_once_and_delete_is_never_returned() {
    let mut index = LexicalIndex::new(plain()).unwrap();
    assert!(search(&index, "ns", "tulip", 10).is_empty());
    index.insert(7, "ns", "a red tulip");
    assert_eq!(ids(&search(&index, "ns", "tulip", 10)), [7]);
    index.insert(7, "ns", "a yellow rose");
    assert!(
        search(&index, "ns", "tulip", 10).is_empty(),
        "an upsert replaces the old text"
    );
    assert_eq!(ids(&search(&index, "ns", "rose", 10)), [7]);
    assert!(index.delete(7));
    assert!(!index.delete(7));
    assert!(search(&index, "ns", "rose", 10).is_empty());
    assert_eq!(index.stats().documents, 0);
}

/// A document of `n` words drawn from a small vocabulary, skewed so some
/// words are common and some rare.
fn random_doc(rng: &mut SplitMix64, vocabulary: usize, n: usize) -> String {
    (0..n)
        .map(|_| {
            let u = rng.next_unit();
            format!("w{}", (u * u * vocabulary as f64) as usize)
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Every live document's BM25 for `query`, best first (ties by id).
fn naive_top(docs: &HashMap<u64, String>, query: &str, k: usize) -> Vec<(u64, f64)> {
    let n = docs.len() as f64;
    let avg_len = docs.values().map(|d| d.split(' ').count()).sum::<usize>() as f64 / n;
    let mut scored: Vec<(u64, f64)> = docs
        .iter()
        .map(|(&id, text)| {
            let words: Vec<&str> = text.split(' ').collect();
            let score = query
                .split(' ')
                .map(|q| {
                    let df = docs.values().filter(|d| d.split(' ').any(|w| w == q)).count() as f64;
                    let tf = words.iter().filter(|w| **w == q).count() as f64;
                    if tf == 0.0 {
                        0.0
                    } else {
                        bm25(tf, words.len() as f64, avg_len, n, df)
                    }
                })
                .sum();
            (id, score)
        })
        .filter(|(_, s)| *s > 0.0)
        .collect();
    scored.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    scored.truncate(k);
    scored
}

/// MaxScore pruning, tombstones and compaction against exhaustive scoring,
/// over random inserts, upserts and deletes.
#[test]
fn pruned_search_equals_exhaustive_scoring_through_deletes_and_compaction() {
    let mut rng = SplitMix64::new(42);
    let mut index = LexicalIndex::new(plain()).unwrap();
    let mut docs: HashMap<u64, String> = HashMap::new();
    let mut inserts = 0;
    for step in 0..3000u64 {
        let id = 1 + rng.next_u64() % 600;
        if rng.next_unit() < 0.3 {
            index.delete(id);
            docs.remove(&id);
        } else {
            let len = 3 + (rng.next_u64() % 20) as usize;
            let text = random_doc(&mut rng, 60, len);
            index.insert(id, "ns", &text);
            inserts += 1;
            docs.insert(id, text);
        }
        if step % 100 == 99 {
            let len = 1 + (rng.next_u64() % 5) as usize;
            let query = random_doc(&mut rng, 60, len);
            let hits = search(&index, "ns", &query, 10);
            let expected = naive_top(&docs, &query, 10);
            assert_eq!(hits.len(), expected.len(), "query {query:?}");
            for (hit, (id, score)) in hits.iter().zip(&expected) {
                assert!(
                    (f64::from(hit.score) - score).abs() < 1e-4,
                    "{query:?}: {hit:?} vs {id} {score}"
                );
                assert!(docs.contains_key(&hit.id), "deleted {} returned", hit.id);
            }
        }
    }
    assert_eq!(index.stats().documents, docs.len());
    // Upserts and deletes left tombstones: some compactions ran.
    assert!(index.shards[0].1.ids.len() < inserts, "no compaction ran");
}

#[test]
fn namespaces_with_overlapping_texts_never_leak() {
    let mut index = LexicalIndex::new(LexicalConfig::default()).unwrap();
    let namespaces: Vec<String> = (0..40).map(|n| format!("tenant-{n}")).collect();
    let mut owner = HashMap::new();
    let mut id = 0;
    for (n, namespace) in namespaces.iter().enumerate() {
        for text in [
            "my dog likes the park",
            "the park was sunny today",
            "a secret recipe for soup",
        ] {
            id += 1;
            index.insert(id, namespace, &format!("{text} {}", n % 3));
            owner.insert(id, namespace.as_str());
        }
    }
    for namespace in &namespaces {
        for query in ["park dog", "secret soup recipe", "sunny 1 2 0"] {
            let hits = search(&index, namespace, query, 100);
            assert!(!hits.is_empty());
            assert!(
                hits.iter().all(|h| owner[&h.id] == namespace),
                "{namespace} got {hits:?}"
            );
        }
    }
    assert!(search(&index, "tenant-unknown", "park", 10).is_empty());
    // A namespace's scores do not depend on what other namespaces hold.
    let before = search(&index, "tenant-0", "park dog", 10);
    index.insert(10_000, "tenant-1", "park park park dog dog");
    assert_eq!(search(&index, "tenant-0", "park dog", 10), before);
}

/// The filter is applied before the top k: a selective filter still gets k
/// results when k matching documents pass it.
#[test]
fn filter_is_applied_before_the_top_k() {
    let mut index = LexicalIndex::new(plain()).unwrap();
    for id in 1..=200u64 {
        // Even ids score higher (more occurrences of the query word).
        let repeats = if id % 2 == 0 { 4 } else { 1 };
        index.insert(id, "ns", &format!("{} filler words here", "harbor ".repeat(repeats)));
    }
    let mut hits = Vec::new();
    let odd = |id: u64| id % 2 == 1;
    index
        .search("ns", "harbor", 5, &odd, &mut SearchScratch::new(), &mut hits)
        .unwrap();
    assert_eq!(ids(&hits), [1, 3, 5, 7, 9]);
}

#[test]
fn an_oversize_query_is_refused_and_an_empty_one_finds_nothing() {
    let config = LexicalConfig {
        max_query_terms: 4,
        ..plain()
    };
    let index = LexicalIndex::rebuild(config, [(1, "ns", "one two three four five")]).unwrap();
    let mut hits = Vec::new();
    let mut scratch = SearchScratch::new();
    let long = index.search("ns", "one two three four five", 10, &|_| true, &mut scratch, &mut hits);
    assert!(matches!(long, Err(LexicalError::QueryTooLong { max: 4 })), "{long:?}");
    assert!(search(&index, "ns", "one two three four", 10).len() == 1);
    assert!(search(&index, "ns", "", 10).is_empty());
    assert!(search(&index, "ns", " ?! ", 10).is_empty());
}

#[test]
fn invalid_settings_are_refused() {
    for config in [
        LexicalConfig { b: 1.5, ..plain() },
        LexicalConfig {
            k1: f32::NAN,
            ..plain()
        },
        LexicalConfig {
            max_query_terms: 0,
            ..plain()
        },
    ] {
        assert!(matches!(LexicalIndex::new(config), Err(LexicalError::InvalidConfig(_))));
    }
}

fn sample_index() -> LexicalIndex {
    let mut index = LexicalIndex::new(LexicalConfig::default()).unwrap();
    let mut rng = SplitMix64::new(7);
    for id in 1..=500 {
        index.insert(id, ["a", "b", "c"][id as usize % 3], &random_doc(&mut rng, 200, 12));
    }
    index.insert(1000, "a", "Caroline painted a sunrise over the lake");
    for id in (1..=500).step_by(4) {
        index.delete(id);
    }
    index
}

/// The same scores (to rounding: bounds seen by pruning differ once deleted
/// documents are gone, and with them the order of additions) and the same
/// ids except among ties at the cut-off.
#[track_caller]
fn assert_same_hits(left: &[Hit], right: &[Hit]) {
    assert_eq!(left.len(), right.len(), "{left:?} vs {right:?}");
    for (l, r) in left.iter().zip(right) {
        assert!((l.score - r.score).abs() < 1e-4, "{left:?} vs {right:?}");
    }
    let cut = left.last().map_or(0.0, |h| h.score) + 1e-4;
    for l in left.iter().filter(|h| h.score > cut) {
        assert!(right.iter().any(|r| r.id == l.id), "{left:?} vs {right:?}");
    }
}

fn assert_same_answers(left: &LexicalIndex, right: &LexicalIndex) {
    let mut rng = SplitMix64::new(8);
    for namespace in ["a", "b", "c"] {
        for _ in 0..30 {
            let query = random_doc(&mut rng, 200, 3);
            assert_same_hits(
                &search(left, namespace, &query, 10),
                &search(right, namespace, &query, 10),
            );
        }
    }
    assert_eq!(ids(&search(right, "a", "paintings of sunrises", 10)), [1000]);
    assert_eq!(left.stats(), right.stats());
}

#[test]
fn image_round_trip_answers_the_same() {
    let index = sample_index();
    let loaded = LexicalIndex::from_image(LexicalConfig::default(), &index.to_image()).unwrap();
    assert_same_answers(&index, &loaded);
    let dir = crate::testing::TempDir::new("lexical");
    let path = dir.join("lexical.nxl");
    index.save(&path).unwrap();
    let mapped = LexicalIndex::load(LexicalConfig::default(), &path).unwrap();
    assert_same_answers(&index, &mapped);
}

#[track_caller]
fn assert_fault(image: &[u8], expected: impl Fn(&ImageFault) -> bool) {
    match LexicalIndex::from_image(LexicalConfig::default(), image) {
        Err(LexicalError::Corrupt(fault)) => assert!(expected(&fault), "unexpected fault {fault:?}"),
        other => panic!("corrupt image accepted: {:?}", other.map(|i| i.stats())),
    }
}

#[test]
fn a_corrupt_image_is_a_typed_error() {
    let image = sample_index().to_image();
    assert_fault(&image[..10], |f| matches!(f, ImageFault::Truncated { .. }));
    assert_fault(&image[..image.len() - 1], |f| {
        matches!(f, ImageFault::LengthMismatch { .. })
    });
    let mut flipped = image.clone();
    flipped[0] ^= 1;
    assert_fault(&flipped, |f| *f == ImageFault::BadMagic);
    let mut flipped = image.clone();
    flipped[17] ^= 1;
    assert_fault(&flipped, |f| *f == ImageFault::HeaderChecksum);
    let mut flipped = image.clone();
    *flipped.last_mut().unwrap() ^= 0x40;
    assert_fault(&flipped, |f| matches!(f, ImageFault::BodyChecksum { .. }));
    let stemless = LexicalConfig {
        tokenizer: TokenizerConfig {
            stemming: false,
            ..TokenizerConfig::default()
        },
        ..LexicalConfig::default()
    };
    let mismatch = LexicalIndex::from_image(stemless, &image);
    assert!(matches!(mismatch, Err(LexicalError::Corrupt(ImageFault::Invalid(_)))));
}

#[test]
fn a_missing_or_corrupt_file_is_rebuilt_from_the_documents() {
    let original = sample_index();
    let dir = crate::testing::TempDir::new("lexical");
    let path = dir.join("lexical.nxl");
    let documents: Vec<(u64, &str, String)> = {
        let mut rng = SplitMix64::new(7);
        let mut docs: Vec<_> = (1..=500u64)
            .map(|id| (id, ["a", "b", "c"][id as usize % 3], random_doc(&mut rng, 200, 12)))
            .filter(|(id, ..)| (id - 1) % 4 != 0)
            .collect();
        docs.push((1000, "a", "Caroline painted a sunrise over the lake".into()));
        docs
    };
    let documents = || documents.iter().map(|(id, ns, text)| (*id, *ns, text.as_str()));
    let (rebuilt, report) = LexicalIndex::load_or_rebuild(LexicalConfig::default(), &path, documents).unwrap();
    assert!(matches!(report.source, LoadSource::Rebuilt(_)), "{report:?}");
    assert_same_answers(&original, &rebuilt);
    original.save(&path).unwrap();
    let (loaded, report) = LexicalIndex::load_or_rebuild(LexicalConfig::default(), &path, documents).unwrap();
    assert_eq!(report.source, LoadSource::Loaded);
    assert_same_answers(&original, &loaded);
    let mut bytes = std::fs::read(&path).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&path, &bytes).unwrap();
    let (rebuilt, report) = LexicalIndex::load_or_rebuild(LexicalConfig::default(), &path, documents).unwrap();
    match &report.source {
        LoadSource::Rebuilt(reason) => assert!(reason.contains("checksum"), "{reason}"),
        LoadSource::Loaded => panic!("a corrupt file was loaded"),
    }
    assert_same_answers(&original, &rebuilt);
}

/// The owner shares the indexes between recall threads behind a lock.
#[test]
fn indexes_can_be_shared_between_threads() {
    fn shareable<T: Send + Sync>() {}
    shareable::<LexicalIndex>();
    shareable::<crate::recall::lexical::EntityIndex>();
    shareable::<crate::preprocess::NearDupIndex>();
}
