//! The lexical query path and entity extraction do not allocate per token:
//! once a caller's scratch buffers have grown to their working size, more
//! searches and extractions allocate nothing (both run on every recall of
//! the intelligence route). Its own test binary, because it installs a
//! counting global allocator.

mod common;

use nexus_daemon::recall::lexical::{EntityExtractor, ExtractScratch, LexicalConfig, LexicalIndex, SearchScratch};

#[global_allocator]
static GLOBAL: common::CountingAllocator = common::CountingAllocator;

const TEXTS: [&str; 5] = [
    "Caroline: I went to a LGBTQ support group on 8 May, 2023 and it was so powerful.",
    "Melanie: Héllo! Ça va? I painted a lake sunrise last year, see https://example.com or mail mel@example.org.",
    "野口里佳 went to 東京 in 2023 😀 with Caroline Smith on Monday",
    "",
    "The supporting groups were painting sunrises by the lakes",
];

/// Questions whose words the index has seen (a word it has never seen is
/// stemmed at query time, which may allocate: see tokenizer.rs).
const QUERIES: [&str; 4] = [
    "When did Caroline go to the LGBTQ support group?",
    "What did Melanie paint? A sunrise over the lake!",
    "",
    "東京 2023 Monday",
];

#[test]
fn lexical_search_allocates_nothing_after_warm_up() {
    let documents = TEXTS.iter().zip(1u64..).map(|(text, id)| (id, "ns", *text));
    let index = LexicalIndex::rebuild(LexicalConfig::default(), documents).expect("valid config");
    let (mut scratch, mut hits) = (SearchScratch::new(), Vec::with_capacity(10));
    let mut search_all = || {
        for query in QUERIES {
            index
                .search("ns", query, 10, &|_| true, &mut scratch, &mut hits)
                .expect("short query");
        }
    };
    let warm_up = common::allocations_while(&mut search_all);
    assert!(warm_up > 0, "the counter sees the scratch grow");
    let n = common::allocations_while(|| (0..10).for_each(|_| search_all()));
    assert_eq!(n, 0, "search allocated {n} times after warm-up");
    assert!(!hits.is_empty());
}

#[test]
fn entity_extraction_allocates_nothing_after_warm_up() {
    let extractor = EntityExtractor::default();
    let (mut scratch, mut spans) = (ExtractScratch::new(), Vec::new());
    let mut extract_all = || {
        for text in TEXTS {
            extractor.extract(text, &mut scratch, &mut spans);
        }
    };
    let warm_up = common::allocations_while(&mut extract_all);
    assert!(warm_up > 0, "the counter sees the scratch grow");
    let n = common::allocations_while(|| (0..10).for_each(|_| extract_all()));
    assert_eq!(n, 0, "extraction allocated {n} times after warm-up");
}
