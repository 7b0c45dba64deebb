//! The index's behaviour on small sets (fast in debug builds): recall
//! against exact search, visibility of inserts, deletes, filters, segment
//! files, and searches running while a build publishes.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};

use super::*;
use crate::recall::ann::synthetic::Mixture;

const DIM: usize = 32;

fn mixture() -> Mixture {
    Mixture {
        dim: DIM,
        clusters: 20,
        spread: 0.6,
        seed: 42,
    }
}

/// A small config: graphs are built from 64 vectors on, and segments are
/// walked rather than scanned from 64 nodes on.
fn config() -> AnnConfig {
    AnnConfig {
        tail_threshold: 64,
        exact_scan_max_nodes: 64,
        ..AnnConfig::new(DIM)
    }
}

/// `n` vectors with ids 0..n, indexed and kept as the f32 source.
fn filled(n: usize, config: AnnConfig) -> (AnnIndex, HashMap<u64, Vec<f32>>) {
    let index = AnnIndex::new(config).unwrap();
    let rows = mixture().sample(n, 1);
    let vectors: HashMap<u64, Vec<f32>> = rows
        .chunks(DIM)
        .enumerate()
        .map(|(i, r)| (i as u64, r.to_vec()))
        .collect();
    for (id, vector) in &vectors {
        index.insert(*id, vector).unwrap();
    }
    (index, vectors)
}

/// The exact top-k ids by f32 cosine among `vectors` passing `accept`.
fn exact_top(vectors: &HashMap<u64, Vec<f32>>, query: &[f32], k: usize, accept: impl Fn(u64) -> bool) -> Vec<u64> {
    let mut scored: Vec<(f32, u64)> = vectors
        .iter()
        .filter(|(id, _)| accept(**id))
        .map(|(id, v)| (v.iter().zip(query).map(|(a, b)| a * b).sum::<f32>(), *id))
        .collect();
    scored.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    scored.into_iter().take(k).map(|(_, id)| id).collect()
}

fn ids(hits: &[Hit]) -> Vec<u64> {
    hits.iter().map(|h| h.id).collect()
}

fn search(index: &AnnIndex, vectors: &HashMap<u64, Vec<f32>>, query: &[f32], params: &SearchParams<'_>) -> Vec<u64> {
    ids(&index.search(query, params, vectors).unwrap())
}

/// Mean recall@10 of `index` against exact search over `queries`.
fn recall_at_10(index: &AnnIndex, vectors: &HashMap<u64, Vec<f32>>, queries: &[f32], ef: usize) -> f64 {
    let params = SearchParams {
        ef: Some(ef),
        ..SearchParams::top(10)
    };
    let mut found = 0;
    for query in queries.chunks(DIM) {
        let expected = exact_top(vectors, query, 10, |_| true);
        let got = search(index, vectors, query, &params);
        found += got.iter().filter(|id| expected.contains(id)).count();
    }
    found as f64 / (queries.len() / DIM * 10) as f64
}

#[test]
fn graph_recall_matches_exact_search_on_clustered_data() {
    let (index, vectors) = filled(3000, config());
    let report = index.seal().unwrap().unwrap();
    assert_eq!((report.kind, report.nodes), (BuildKind::NewSegment, 3000));
    assert_eq!(index.stats().tail, 0);
    let queries = mixture().sample(100, 2);
    let recall = recall_at_10(&index, &vectors, &queries, 32);
    assert!(recall >= 0.95, "recall@10 {recall}");
    // Effort buys recall.
    assert!(recall_at_10(&index, &vectors, &queries, 128) >= recall);
}

#[test]
fn an_insert_is_visible_to_the_next_search() {
    let (index, mut vectors) = filled(500, config());
    index.seal().unwrap();
    for id in 1000..1100u64 {
        let mut rng = synthetic::SplitMix64::new(id);
        let vector: Vec<f32> = (0..DIM).map(|_| rng.next_gaussian() as f32).collect();
        index.insert(id, &vector).unwrap();
        vectors.insert(id, vector.clone());
        assert_eq!(
            search(&index, &vectors, &vector, &SearchParams::top(1)),
            vec![id],
            "id {id} right after insert"
        );
    }
    // Still there once the tail has become graph.
    index.build_pending().unwrap().unwrap();
    assert_eq!(index.stats().tail, 0);
    for id in 1000..1100u64 {
        let got = search(&index, &vectors, &vectors[&id], &SearchParams::top(1));
        assert_eq!(got, vec![id]);
    }
}

#[test]
fn a_deleted_id_is_never_returned_before_or_after_builds() {
    let (index, vectors) = filled(2000, config());
    index.build_pending().unwrap();
    let everyone = SearchParams {
        ef: Some(64),
        ..SearchParams::top(50)
    };
    // Delete the 50 nearest of a query (some in the segment, some in the
    // tail when the threshold left one), then ask again at every stage.
    let query = vectors[&7].clone();
    let doomed = search(&index, &vectors, &query, &everyone);
    assert_eq!(doomed.len(), 50);
    for id in &doomed {
        assert!(index.delete(*id), "id {id} was live");
        assert!(!index.delete(*id), "second delete of {id}");
    }
    let check = |stage: &str| {
        let got = search(&index, &vectors, &query, &everyone);
        assert!(
            got.iter().all(|id| !doomed.contains(id)),
            "{stage}: a deleted id came back"
        );
        assert_eq!(got.len(), 50, "{stage}");
    };
    check("after delete");
    index.seal().unwrap();
    check("after sealing the tail");
    index.compact().unwrap();
    check("after compaction");
    assert_eq!(index.len(), 1950);
}

#[test]
fn replacing_a_vector_moves_its_id() {
    let (index, mut vectors) = filled(1000, config());
    index.seal().unwrap();
    let far: Vec<f32> = vectors[&3].iter().map(|x| -x).collect();
    index.insert(5, &far).unwrap();
    vectors.insert(5, far.clone());
    assert_eq!(search(&index, &vectors, &far, &SearchParams::top(1)), vec![5]);
    assert_eq!(index.len(), 1000);
    index.seal().unwrap();
    assert_eq!(search(&index, &vectors, &far, &SearchParams::top(1)), vec![5]);
    assert_eq!(index.len(), 1000);
}

#[test]
fn filters_apply_during_the_graph_walk_and_the_exact_scan() {
    let (index, vectors) = filled(3000, config());
    index.seal().unwrap();
    let queries = mixture().sample(20, 3);
    // Half the ids (the walk) and 1 % of them (the exact scan).
    let even = FnFilter::new(|id: u64| id.is_multiple_of(2), None);
    let few: IdBitset = (0..3000).step_by(100).collect();
    for (filter, accept) in [
        (
            &even as &dyn Filter,
            &(|id: u64| id.is_multiple_of(2)) as &dyn Fn(u64) -> bool,
        ),
        (&few, &|id: u64| id.is_multiple_of(100)),
    ] {
        let params = SearchParams {
            filter: Some(filter),
            ..SearchParams::top(10)
        };
        let mut overlap = 0;
        for query in queries.chunks(DIM) {
            let got = search(&index, &vectors, query, &params);
            assert_eq!(got.len(), 10);
            assert!(got.iter().all(|id| accept(*id)), "a filtered-out id was returned");
            let expected = exact_top(&vectors, query, 10, accept);
            overlap += got.iter().filter(|id| expected.contains(id)).count();
        }
        // Nearest passing vectors, not the passing few of an unfiltered top.
        assert!(overlap >= 190, "filtered recall {overlap}/200");
    }
}

#[test]
fn a_walk_over_budget_falls_back_to_an_exact_scan() {
    // A filter that admits 6 of 3,000 ids and gives no estimate: the walk
    // cannot fill its results, passes its visit budget, and the segment is
    // scanned instead; the answer is still the exact filtered top k.
    let (index, vectors) = filled(3000, config());
    index.seal().unwrap();
    let calls = std::cell::Cell::new(0usize);
    let rare = FnFilter::new(
        |id: u64| {
            calls.set(calls.get() + 1);
            id.is_multiple_of(500)
        },
        None,
    );
    let params = SearchParams {
        filter: Some(&rare),
        ..SearchParams::top(5)
    };
    for query in mixture().sample(10, 6).chunks(DIM) {
        calls.set(0);
        let expected = exact_top(&vectors, query, 5, |id| id.is_multiple_of(500));
        assert_eq!(search(&index, &vectors, query, &params), expected);
        // The scan asked the filter about every node, after the walk.
        assert!(calls.get() > 3000, "no fallback scan: {} filter calls", calls.get());
    }
}

#[test]
fn recency_lifts_a_recent_memory_among_similar_ones() {
    let (index, vectors) = filled(500, config());
    let query = vectors[&10].clone();
    let plain = search(&index, &vectors, &query, &SearchParams::top(5));
    let newest = plain[4];
    let created = move |id: u64| Some(if id == newest { 1_000_000 } else { 0 });
    let params = SearchParams {
        recency: Some(Recency {
            weight: 1.0,
            half_life_ms: 1000,
            now_ms: 1_000_000,
            created_at_ms: &created,
        }),
        ..SearchParams::top(5)
    };
    let hits = index.search(&query, &params, &vectors).unwrap();
    assert_eq!(hits[0].id, newest);
    assert!(hits[0].score > hits[0].similarity + 0.99);
}

#[test]
fn bad_queries_are_typed_errors() {
    let (index, vectors) = filled(10, config());
    let top = SearchParams::top(3);
    assert!(matches!(
        index.search(&[0.0; DIM], &top, &vectors),
        Err(AnnError::ZeroVector)
    ));
    assert!(matches!(
        index.search(&[1.0; 3], &top, &vectors),
        Err(AnnError::DimensionMismatch { .. })
    ));
    let mut nan = vec![1.0; DIM];
    nan[4] = f32::NAN;
    assert!(matches!(index.insert(99, &nan), Err(AnnError::NonFinite { index: 4 })));
    assert!(
        index
            .search(&[1.0; DIM], &SearchParams::top(0), &vectors)
            .unwrap()
            .is_empty()
    );
}

#[test]
fn a_segment_round_trips_through_a_file_and_is_searched_mapped() {
    let (index, vectors) = filled(1500, config());
    index.seal().unwrap();
    let dir = crate::testing::TempDir::new("ann");
    let path = dir.join("seg-1.nxann");
    index.segments()[0].write_to(&path).unwrap();
    let loaded = Segment::open(&path).unwrap();
    assert!(loaded.is_mapped());
    assert_eq!(loaded.image(), index.segments()[0].image());
    let reopened = AnnIndex::with_segments(config(), vec![loaded]).unwrap();
    for query in mixture().sample(10, 4).chunks(DIM) {
        let params = SearchParams::top(10);
        assert_eq!(
            search(&reopened, &vectors, query, &params),
            search(&index, &vectors, query, &params)
        );
    }
}

#[test]
fn corrupt_segment_files_are_rejected_with_typed_errors() {
    let (index, _) = filled(300, config());
    index.seal().unwrap();
    let good = index.segments()[0].image().to_vec();
    let fault = |image: &[u8]| match Segment::from_image(image) {
        Err(AnnError::CorruptSegment { reason, .. }) => reason,
        other => panic!("accepted a corrupt image: {other:?}"),
    };
    assert!(matches!(fault(&good[..100]), SegmentFault::Truncated { .. }));
    assert!(matches!(
        fault(&good[..good.len() - 1]),
        SegmentFault::LengthMismatch { .. }
    ));
    let mut bad = good.clone();
    bad[0] ^= 1;
    assert_eq!(fault(&bad), SegmentFault::BadMagic);
    let mut bad = good.clone();
    bad[8] = 9;
    assert!(matches!(fault(&bad), SegmentFault::UnsupportedVersion { found: 9, .. }));
    let mut bad = good.clone();
    bad[20] ^= 1;
    assert_eq!(fault(&bad), SegmentFault::HeaderChecksum);
    let mut bad = good.clone();
    let last = bad.len() - 1;
    bad[last] ^= 0x40;
    assert!(matches!(fault(&bad), SegmentFault::BodyChecksum { .. }));
    // Damage that the checksums cannot see (recomputed): caught by the
    // structural checks. A link to a node that does not exist:
    let mut bad = good.clone();
    let l0 = find_l0(&bad);
    bad[l0 + 4..l0 + 8].copy_from_slice(&1_000_000u32.to_le_bytes());
    assert!(matches!(fault(&reseal(bad)), SegmentFault::Invalid(reason) if reason.contains("bad link")));
    // A code of -128:
    let mut bad = good.clone();
    bad[segment::HEADER_BYTES] = 0x80;
    assert!(matches!(fault(&reseal(bad)), SegmentFault::Invalid(reason) if reason.contains("-128")));
    // Counts that overflow or lie:
    let mut bad = good.clone();
    bad[20..24].copy_from_slice(&u32::MAX.to_le_bytes());
    assert!(matches!(fault(&reseal_header(bad)), SegmentFault::Invalid(_)));
    let mut bad = good;
    bad[40..44].copy_from_slice(&0u32.to_le_bytes());
    assert!(matches!(
        fault(&reseal_header(bad)),
        SegmentFault::LengthMismatch { .. }
    ));
    // On disk too (a missing file is an I/O error).
    let dir = crate::testing::TempDir::new("ann");
    let path = dir.join("bad.nxann");
    std::fs::write(&path, [0u8; 10]).unwrap();
    assert!(matches!(Segment::open(&path), Err(AnnError::CorruptSegment { .. })));
    assert!(matches!(Segment::open(&dir.join("missing")), Err(AnnError::Io { .. })));
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]
    // Whatever bytes are flipped, loading returns (Ok or a typed error) and
    // never panics; an image that loads can be searched.
    #[test]
    fn flipped_bytes_never_panic(flips in proptest::collection::vec((0usize..1 << 20, 1u8..=255), 1..8)) {
        let image = small_image();
        let mut bad = image.to_vec();
        for (at, mask) in flips {
            let at = at % bad.len();
            bad[at] ^= mask;
        }
        for candidate in [bad.clone(), reseal(bad)] {
            if let Ok(segment) = Segment::from_image(&candidate) {
                let index = AnnIndex::with_segments(config(), vec![segment]).unwrap();
                let _ = index.search(&[1.0; DIM], &SearchParams::top(5), &HashMap::new());
            }
        }
    }
}

#[test]
fn searches_run_while_a_build_publishes() {
    let (index, vectors) = filled(
        1500,
        AnnConfig {
            tail_threshold: 1,
            ..config()
        },
    );
    let index = Arc::new(index);
    let vectors = Arc::new(vectors);
    let done = Arc::new(AtomicBool::new(false));
    let start = Arc::new(Barrier::new(2));
    let searcher = {
        let (index, vectors, done, start) = (index.clone(), vectors.clone(), done.clone(), start.clone());
        std::thread::spawn(move || {
            start.wait();
            let mut rounds = 0u64;
            // Every id is found at every moment: tail, frozen tail or segment.
            while !done.load(Ordering::Acquire) || rounds < 3 {
                for id in (rounds % 50..1500).step_by(50) {
                    let got = search(&index, &vectors, &vectors[&id], &SearchParams::top(1));
                    assert_eq!(got, vec![id], "round {rounds}");
                }
                rounds += 1;
            }
            rounds
        })
    };
    start.wait();
    index.build_pending().unwrap().unwrap();
    done.store(true, Ordering::Release);
    let rounds = searcher.join().expect("searcher panicked");
    assert!(rounds >= 3);
    assert_eq!(index.stats().segments, 1);
}

#[test]
fn tails_extend_the_newest_segment_and_compaction_merges() {
    let config = AnnConfig {
        extend_ratio: 2,
        max_segments: 1,
        ..config()
    };
    let index = AnnIndex::new(config).unwrap();
    let rows = mixture().sample(1000, 5);
    let vectors: HashMap<u64, Vec<f32>> = rows
        .chunks(DIM)
        .enumerate()
        .map(|(i, r)| (i as u64, r.to_vec()))
        .collect();
    let mut kinds = Vec::new();
    for chunk in (0..1000u64).collect::<Vec<_>>().chunks(200) {
        for id in chunk {
            index.insert(*id, &vectors[id]).unwrap();
        }
        kinds.push(index.build_pending().unwrap().unwrap().kind);
    }
    assert_eq!(kinds[..2], [BuildKind::NewSegment, BuildKind::Extended]);
    assert!(kinds.contains(&BuildKind::NewSegment) && index.needs_compaction());
    for id in 0..400 {
        index.delete(id);
    }
    let report = index.compact().unwrap().unwrap();
    assert!(matches!(report.kind, BuildKind::Merged | BuildKind::Rebuilt));
    assert_eq!(index.stats().segments, 1);
    assert_eq!(index.len(), 600);
    // Enough dead to rebuild without them.
    for id in 400..700 {
        index.delete(id);
    }
    assert_eq!(index.compact().unwrap().unwrap().kind, BuildKind::Rebuilt);
    assert_eq!(index.stats().segment_nodes, 300);
    for id in [700u64, 850, 999] {
        assert_eq!(search(&index, &vectors, &vectors[&id], &SearchParams::top(1)), vec![id]);
    }
}

/// A small valid image (built once).
fn small_image() -> &'static [u8] {
    static IMAGE: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    IMAGE.get_or_init(|| {
        let (index, _) = filled(200, config());
        index.seal().unwrap();
        index.segments()[0].image().to_vec()
    })
}

/// Offset of the level-0 links (the sixth section) in an image of `config()`.
fn find_l0(image: &[u8]) -> usize {
    let u32_at = |o: usize| u32::from_le_bytes(image[o..o + 4].try_into().unwrap()) as usize;
    let (dim, n) = (u32_at(16), u32_at(20));
    let mut cursor = segment::HEADER_BYTES;
    for bytes in [n * dim, n * 4, n * 8, n, n * 4] {
        cursor = cursor.next_multiple_of(64) + bytes;
    }
    cursor.next_multiple_of(64)
}

/// `image` with its body checksum recomputed (and so the header's).
fn reseal(mut image: Vec<u8>) -> Vec<u8> {
    if image.len() >= segment::HEADER_BYTES {
        let crc = crc32c::crc32c(&image[segment::HEADER_BYTES..]);
        image[56..60].copy_from_slice(&crc.to_le_bytes());
    }
    reseal_header(image)
}

/// `image` with its header checksum recomputed.
fn reseal_header(mut image: Vec<u8>) -> Vec<u8> {
    if image.len() >= segment::HEADER_BYTES {
        let crc = crc32c::crc32c(&image[..124]);
        image[124..128].copy_from_slice(&crc.to_le_bytes());
    }
    image
}
