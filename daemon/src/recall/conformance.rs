//! One conformance suite, run against every engine through the recall
//! pipeline: what any engine must do whatever its index.
//!
//! - an acknowledged memory is in the very next answer, and a forgotten one
//!   never is (the follower hook runs before the acknowledgement);
//! - a recall never returns a memory of another namespace;
//! - tag and time filters are applied before the top k;
//! - at most k results, best first, ties by lower id.
//!
//! Engines: the exact scan; [`MirrorEngine`], a minimal indexed engine
//! that only knows the memories it was told about through the hook (so it
//! fails the suite if the hook ever runs after the acknowledgement); the
//! BM25 engine; the vector engine over the built-in embeddings. (The
//! client-vector engine is the same code as the built-in one over another
//! source of vectors; `dense/tests.rs` runs it with vector queries.)

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use crate::embed::StaticModel;
use crate::recall::dense::{DenseEngine, Space};
use crate::recall::engine::{Candidate, Candidates, Engine, EngineSearch, SearchContext, Signals};
use crate::recall::lexical::LexicalConfig;
use crate::recall::lexical_engine::LexicalEngine;
use crate::recall::meta::MemoryMeta;
use crate::recall::query::{Query, QueryInput, TimeRange};
use crate::recall::scan::ScanEngine;
use crate::recall::{Recall, Recalled, Route};
use crate::store::tests::{TestStore, note};
use crate::store::{Deadline, Follower, ForgetTarget, IndexChange, IndexEvent, NewMemory, TagRef};

/// An indexed engine in miniature: its index is the set of ids the log
/// hook told it about; it scores by the number of distinct query words in
/// the text and reads tags and times through the store.
#[derive(Default)]
struct MirrorEngine {
    ids: Mutex<BTreeSet<u64>>,
}

impl Follower for MirrorEngine {
    fn name(&self) -> &'static str {
        "mirror"
    }

    fn follow(&self, change: &IndexChange<'_>) {
        let mut ids = self.ids.lock().unwrap();
        for event in change.events() {
            match event {
                IndexEvent::Added(memory) => ids.insert(memory.id()),
                IndexEvent::Removed(id) => ids.remove(&id),
                IndexEvent::Feedback { .. } => false,
            };
        }
    }
}

impl Engine for MirrorEngine {
    fn search<'a>(&'a self, query: &'a Query<'a>, ctx: &'a SearchContext<'a>) -> EngineSearch<'a> {
        let indexed: Vec<u64> = self.ids.lock().unwrap().iter().copied().collect();
        let words: BTreeSet<String> = (query.text().unwrap_or("").split_whitespace())
            .map(str::to_lowercase)
            .collect();
        let memories = ctx.store().memories(indexed.iter().copied());
        let mut hits: Vec<Candidate> = (indexed.iter().zip(memories))
            .filter_map(|(id, memory)| {
                let memory = memory?;
                let view = memory.view();
                let text: BTreeSet<String> = view.text().split_whitespace().map(str::to_lowercase).collect();
                let found = words.intersection(&text).count() as f32;
                (query.filter().accepts(view) && found > 0.0).then_some(Candidate {
                    id: *id,
                    score: found,
                    signals: Signals::default(),
                })
            })
            .collect();
        hits.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.id.cmp(&b.id)));
        hits.truncate(query.k());
        Box::pin(std::future::ready(Ok(Candidates { engine: "mirror", hits })))
    }
}

/// An engine under test, with what must follow the store's log for it.
type UnderTest = (Arc<dyn Engine>, Vec<Arc<dyn Follower>>);

/// Every engine under test.
fn engines() -> Vec<UnderTest> {
    let mirror = Arc::new(MirrorEngine::default());
    let meta = Arc::new(MemoryMeta::default());
    let lexical = Arc::new(LexicalEngine::open(LexicalConfig::default(), None, meta.clone()).expect("lexical"));
    let meta_dense = Arc::new(MemoryMeta::default());
    let model = Arc::new(StaticModel::builtin().expect("the shipped model"));
    let dense = DenseEngine::open(Space::BuiltIn(model), None, meta_dense.clone());
    vec![
        (Arc::new(ScanEngine), vec![]),
        (mirror.clone(), vec![mirror]),
        (lexical.clone(), vec![meta, lexical]),
        (dense.clone(), vec![meta_dense, dense]),
    ]
}

/// A store followed by the engine, and the pipeline over it.
fn open(label: &str, engine: &Arc<dyn Engine>, followers: &[Arc<dyn Follower>]) -> (TestStore, Recall) {
    let test = TestStore::open_with(&format!("conform-{label}-{}", engine.name()), followers.to_vec());
    let recall = Recall::with_engine(test.store.clone(), Arc::clone(engine));
    (test, recall)
}

async fn recall_ids(recall: &Recall, input: &QueryInput<'_>) -> Vec<u64> {
    let answer = recall.recall(input, Deadline::NONE).await.expect("a recall");
    answer
        .hits
        .iter()
        .map(|Recalled { candidate, .. }| candidate.id)
        .collect()
}

fn text_query<'a>(namespace: &'a str, text: &'a str, k: u32) -> QueryInput<'a> {
    QueryInput {
        namespace,
        text: Some(text),
        k,
        route: Route::SmartRouting,
        ..QueryInput::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acknowledged_memory_is_in_the_next_answer_of_every_engine_and_a_forgotten_one_never() {
    for (engine, followers) in engines() {
        let (test, recall) = open("ack", &engine, &followers);
        let query = text_query("a", "hiking", 10);
        for round in 0..20u64 {
            let text = format!("hiking trip {round}");
            let id = test.remember(vec![note("a", &text)]).await[0];
            let found = recall_ids(&recall, &query).await;
            assert!(
                found.contains(&id),
                "{}: memory {id} acknowledged, then not found",
                engine.name()
            );
            let forget = [rkyv::rend::u64_le::from_native(id)];
            test.store
                .forget(&ForgetTarget::Ids(&forget), Deadline::NONE)
                .await
                .unwrap();
            let found = recall_ids(&recall, &query).await;
            assert!(
                !found.contains(&id),
                "{}: memory {id} forgotten, then found",
                engine.name()
            );
        }
    }
}

#[tokio::test]
async fn no_engine_returns_a_memory_of_another_namespace() {
    let namespaces = ["alice", "bob", "carol", "dave"];
    for (engine, followers) in engines() {
        let (test, recall) = open("namespaces", &engine, &followers);
        let texts: Vec<String> = (0..40).map(|n| format!("shared words number {n}")).collect();
        let memories = (texts.iter().enumerate()).map(|(n, text)| note(namespaces[n % namespaces.len()], text));
        let ids = test.remember(memories.collect()).await;
        for (which, namespace) in namespaces.iter().enumerate() {
            let mut found = recall_ids(&recall, &text_query(namespace, "shared words", 100)).await;
            found.sort_unstable();
            let own: Vec<u64> = (ids.iter().enumerate())
                .filter(|(n, _)| n % namespaces.len() == which)
                .map(|(_, id)| *id)
                .collect();
            assert_eq!(found, own, "{}: namespace {namespace}", engine.name());
        }
    }
}

#[tokio::test]
async fn filters_apply_before_the_top_k_and_answers_are_best_first() {
    for (engine, followers) in engines() {
        let (test, recall) = open("filters", &engine, &followers);
        let memory = |text, created_at_ms, tagged: bool| NewMemory {
            created_at_ms: Some(created_at_ms),
            tags: tagged.then_some(TagRef { key: "t", value: "x" }).into_iter().collect(),
            ..note("a", text)
        };
        let memories = vec![
            memory("red green blue", 10, false),
            memory("red green", 20, true),
            memory("red", 30, true),
            memory("red green blue", 40, false),
        ];
        test.remember(memories).await;
        let name = engine.name();
        let best = recall_ids(&recall, &text_query("a", "red green blue", 2)).await;
        assert_eq!(best, vec![1, 4], "{name}: best first, ties by lower id, k = 2");
        let tagged = QueryInput {
            tags: vec![("t", "x")],
            ..text_query("a", "red green blue", 1)
        };
        assert_eq!(
            recall_ids(&recall, &tagged).await,
            vec![2],
            "{name}: tags before the top k"
        );
        let range = TimeRange {
            start_ms: 25,
            end_ms: 35,
        };
        let timed = QueryInput {
            created: Some(range),
            ..text_query("a", "red green blue", 1)
        };
        assert_eq!(
            recall_ids(&recall, &timed).await,
            vec![3],
            "{name}: time range before the top k"
        );
    }
}
