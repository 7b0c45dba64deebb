//! The daemon's engines over a real store directory: what a restart keeps.
//!
//! - indexes saved after a checkpoint are loaded at the next start (not
//!   rebuilt), the log written after the save is replayed into them, and a
//!   memory forgotten after the save is not returned (segment tombstones are
//!   not saved: they are re-applied from the live memories);
//! - a damaged index file, a torn save (files without a manifest, a
//!   temporary file), an index older than the snapshot, or one ahead of the
//!   log are rebuilt from the store, and the answers are the same as before;
//! - the client-vector engine searches by vector, and no engine returns a
//!   memory of another namespace or outside the time range asked for.
//!
//! In-process (milliseconds); `tests/it` drives the same through a daemon.

use std::path::Path;
use std::sync::Arc;

use rkyv::rend::{f32_le, u64_le};

use crate::recall::dense::DenseEngine;
use crate::recall::setup::{RecallSettings, open_engines};
use crate::recall::{EngineName, QueryInput, Recall, TimeRange};
use crate::store::wal::{FsyncPolicy, RealFs};
use crate::store::{Deadline, ForgetTarget, NewMemory, Store, StoreConfig};
use crate::testing::TempDir;

/// A store with the daemon's engines, on a directory that outlives it.
struct Opened {
    store: Store,
    recall: Recall,
    dense: Vec<Arc<DenseEngine>>,
}

impl Opened {
    fn open(dir: &Path) -> Self {
        let engines = open_engines(&RecallSettings::default(), Some(dir)).expect("engines");
        let config = StoreConfig {
            data_dir: dir.to_path_buf(),
            fsync: FsyncPolicy::Never,
            ..StoreConfig::default()
        };
        let store = Store::open_with(&config, Arc::new(RealFs), engines.followers).expect("open");
        let recall = Recall::with_engines(store.clone(), engines.engines);
        recall.opened();
        Self {
            store,
            recall,
            dense: engines.dense,
        }
    }

    /// How each engine started ("loaded at LSN …" or "rebuilt …").
    fn origins(&self) -> Vec<String> {
        self.recall
            .engines()
            .map(|e| format!("{}: {}", e.name(), e.origin()))
            .collect()
    }

    async fn ids(&self, engine: EngineName, namespace: &str, text: Option<&str>, vector: Option<Vec<f32>>) -> Vec<u64> {
        let input = QueryInput {
            namespace,
            text,
            vector,
            k: 10,
            engine: Some(engine),
            ..QueryInput::default()
        };
        let answer = self.recall.recall(&input, Deadline::NONE).await.expect("recall");
        assert!(answer.degraded.is_none(), "{engine:?}: {:?}", answer.degraded);
        answer.hits.iter().map(|hit| hit.candidate.id).collect()
    }

    /// Every engine's answer to a few queries, for comparing two starts.
    async fn answers(&self) -> Vec<Vec<u64>> {
        let mut all = Vec::new();
        for (namespace, word) in [("ns0", "apple"), ("ns1", "river"), ("ns2", "engine"), ("", "garden")] {
            let text = format!("{word} trip");
            all.push(self.ids(EngineName::Lexical, namespace, Some(&text), None).await);
            all.push(self.ids(EngineName::Dense, namespace, Some(&text), None).await);
            all.push(self.ids(EngineName::Vector, namespace, None, Some(unit(3, 8))).await);
        }
        all
    }

    async fn stop_without_checkpoint(self) {
        self.store.stop_without_checkpoint().await;
        for engine in &self.dense {
            engine.stop();
        }
    }

    async fn close(self) {
        self.store.close().await.expect("close");
        for engine in &self.dense {
            engine.stop();
        }
    }
}

const WORDS: [&str; 8] = [
    "apple", "river", "engine", "garden", "violin", "winter", "harbor", "pepper",
];

/// An 8-d vector pointing mostly along `axis`, a little along `n`.
fn unit(axis: usize, n: usize) -> Vec<f32> {
    let mut v = vec![0.05; 8];
    v[axis % 8] = 1.0;
    v[n % 8] += 0.3;
    v
}

/// `count` memories from `from`: namespaces ns0..ns3, two words each, a
/// vector, creation times a second apart.
async fn write(store: &Store, from: usize, count: usize) -> Vec<u64> {
    let texts: Vec<String> = (from..from + count)
        .map(|n| format!("{} {} note {n}", WORDS[n % 8], WORDS[(n / 8) % 8]))
        .collect();
    let vectors: Vec<Vec<f32_le>> = (from..from + count)
        .map(|n| unit(n, n / 8).into_iter().map(f32_le::from_native).collect())
        .collect();
    let namespaces = ["ns0", "ns1", "ns2", "ns3"];
    let memories = (from..from + count)
        .map(|n| NewMemory {
            namespace: namespaces[n % 4],
            text: &texts[n - from],
            vector: Some(&vectors[n - from]),
            created_at_ms: Some(1_000_000 + n as i64 * 1000),
            importance: 1.0,
            ..NewMemory::default()
        })
        .collect();
    store.remember(memories, 0).await.expect("remember").ids
}

async fn forget(store: &Store, ids: &[u64]) {
    let ids: Vec<u64_le> = ids.iter().copied().map(u64_le::from_native).collect();
    store
        .forget(&ForgetTarget::Ids(&ids), Deadline::NONE)
        .await
        .expect("forget");
}

fn all_loaded(origins: &[String]) -> bool {
    origins.iter().all(|o| o.contains("loaded at LSN"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn saved_indexes_are_loaded_and_the_log_after_them_replayed_with_forgotten_memories_never_returned() {
    let temp = TempDir::new("engines-restart");
    let dir = temp.join("data");
    let opened = Opened::open(&dir);
    let first = write(&opened.store, 0, 1500).await;
    opened.store.checkpoint().await.expect("checkpoint");
    // After the save: more writes, and forgetting memories that are in the
    // saved graph (their tombstones are not in the files).
    write(&opened.store, 1500, 300).await;
    forget(&opened.store, &first[..400]).await;
    let before = opened.answers().await;
    opened.stop_without_checkpoint().await;

    let reopened = Opened::open(&dir);
    let origins = reopened.origins();
    assert!(all_loaded(&origins), "{origins:?}");
    assert_eq!(reopened.answers().await, before, "same answers after a restart");
    for answer in reopened.answers().await {
        assert!(
            answer.iter().all(|id| !first[..400].contains(id)),
            "a forgotten memory came back"
        );
    }
    reopened.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_or_torn_index_files_are_rebuilt_from_the_store_with_the_same_answers() {
    let temp = TempDir::new("engines-damaged");
    let dir = temp.join("data");
    let opened = Opened::open(&dir);
    write(&opened.store, 0, 1200).await;
    opened.store.checkpoint().await.expect("checkpoint");
    let before = opened.answers().await;
    opened.close().await;

    // Flip a byte in the middle of every index file; leave a torn save's
    // temporary file and an unlisted file behind.
    for engine in ["lexical", "dense", "vector"] {
        let index = dir.join("index").join(engine);
        for entry in std::fs::read_dir(&index).expect("index dir") {
            let path = entry.expect("entry").path();
            if path.file_name().is_some_and(|n| n != "MANIFEST") {
                let mut bytes = std::fs::read(&path).expect("read");
                let middle = bytes.len() / 2;
                bytes[middle] ^= 0x5a;
                std::fs::write(&path, bytes).expect("write");
            }
        }
        std::fs::write(index.join("MANIFEST.tmp"), b"half a manif").expect("torn");
        std::fs::write(index.join("seg-9999999999.ann"), b"never listed").expect("stray");
    }
    let reopened = Opened::open(&dir);
    let origins = reopened.origins();
    assert!(
        origins.iter().all(|o| o.contains("rebuilt from the store")),
        "{origins:?}"
    );
    assert_eq!(reopened.answers().await, before, "same answers from rebuilt indexes");
    reopened.close().await;

    // The rebuilt indexes were saved at the close: the next start loads them.
    let again = Opened::open(&dir);
    assert!(all_loaded(&again.origins()), "{:?}", again.origins());
    assert_eq!(again.answers().await, before);
    again.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_index_older_than_the_snapshot_or_ahead_of_the_log_is_rebuilt() {
    let temp = TempDir::new("engines-stale");
    let dir = temp.join("data");
    let opened = Opened::open(&dir);
    write(&opened.store, 0, 600).await;
    opened.store.checkpoint().await.expect("first checkpoint");
    let saved = dir.join("index");
    let old = temp.join("old-index");
    copy_dir(&saved, &old);
    write(&opened.store, 600, 600).await;
    opened.store.checkpoint().await.expect("second checkpoint");
    let before = opened.answers().await;
    opened.close().await;

    // Older than the snapshot: the changes between are in no log any more.
    std::fs::remove_dir_all(&saved).expect("remove");
    copy_dir(&old, &saved);
    let reopened = Opened::open(&dir);
    let origins = reopened.origins();
    assert!(
        origins.iter().all(|o| o.contains("older than the snapshot")),
        "{origins:?}"
    );
    assert_eq!(reopened.answers().await, before);
    reopened.close().await;

    // Ahead of the log: a saved index from a store that went further.
    let other = temp.join("other");
    let ahead = Opened::open(&other);
    for batch in 0..5 {
        write(&ahead.store, batch * 400, 400).await;
    }
    ahead.close().await;
    let fresh = temp.join("fresh");
    let small = Opened::open(&fresh);
    write(&small.store, 0, 10).await;
    small.stop_without_checkpoint().await;
    copy_dir(&other.join("index"), &fresh.join("index"));
    let reopened = Opened::open(&fresh);
    let origins = reopened.origins();
    assert!(origins.iter().all(|o| o.contains("ahead of the log")), "{origins:?}");
    let found = reopened.ids(EngineName::Lexical, "", Some("note"), None).await;
    assert!(
        found.iter().all(|id| *id <= 10),
        "only the store's own memories: {found:?}"
    );
    reopened.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_engine_keeps_to_the_namespace_and_time_range_asked_for() {
    let temp = TempDir::new("engines-filters");
    let dir = temp.join("data");
    let opened = Opened::open(&dir);
    let ids = write(&opened.store, 0, 800).await;
    let range = TimeRange {
        start_ms: 1_000_000 + 100 * 1000,
        end_ms: 1_000_000 + 200 * 1000,
    };
    for engine in [
        EngineName::Lexical,
        EngineName::Dense,
        EngineName::Vector,
        EngineName::Scan,
    ] {
        let (text, vector) = match engine {
            EngineName::Vector => (None, Some(unit(2, 5))),
            _ => (Some("apple river note"), None),
        };
        for (which, namespace) in ["ns0", "ns1", "ns2", "ns3"].iter().enumerate() {
            let input = QueryInput {
                namespace,
                text,
                vector: vector.clone(),
                k: 50,
                engine: Some(engine),
                created: Some(range),
                ..QueryInput::default()
            };
            let answer = opened.recall.recall(&input, Deadline::NONE).await.expect("recall");
            assert!(!answer.hits.is_empty(), "{engine:?} {namespace}: nothing found");
            for hit in &answer.hits {
                let n = ids.iter().position(|id| *id == hit.candidate.id).expect("a written id");
                assert_eq!(n % 4, which, "{engine:?}: memory {n} is not of {namespace}");
                assert!((100..200).contains(&n), "{engine:?}: memory {n} is outside the range");
            }
        }
    }
    opened.close().await;
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read dir") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).expect("copy");
        }
    }
}

// Issue 9, item 3: entity links follow the log with BM25 and are saved and
// loaded with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entity_links_follow_the_log_and_survive_a_restart() {
    use crate::recall::engine::Engine;
    use crate::recall::lexical::LexicalConfig;
    use crate::recall::lexical_engine::LexicalEngine;
    use crate::recall::meta::MemoryMeta;

    let temp = TempDir::new("engines-entities");
    let dir = temp.join("data");
    let config = StoreConfig {
        data_dir: dir.clone(),
        fsync: FsyncPolicy::Never,
        ..StoreConfig::default()
    };
    let open = || {
        let meta = Arc::new(MemoryMeta::default());
        let lexical = Arc::new(LexicalEngine::open(LexicalConfig::default(), Some(&dir), meta.clone()).unwrap());
        let store = Store::open_with(&config, Arc::new(RealFs), vec![meta, lexical.clone()]).unwrap();
        let recall = Recall::with_engines(store.clone(), vec![lexical.clone()]);
        recall.opened();
        (store, lexical)
    };
    let (store, lexical) = open();
    let note = |text| NewMemory {
        namespace: "a",
        text,
        importance: 1.0,
        ..NewMemory::default()
    };
    let ids = store
        .remember(
            vec![
                note("Caroline went to Paris on 8 May 2023"),
                note("Melanie paints by the lake"),
                note("Caroline met Melanie in Paris"),
            ],
            0,
        )
        .await
        .unwrap()
        .ids;
    let linked = |lexical: &LexicalEngine| {
        let mut ids: Vec<u64> = lexical
            .related_to_text("a", "What did Caroline do in Paris?", 10)
            .iter()
            .map(|r| r.id)
            .collect();
        ids.sort_unstable();
        ids
    };
    assert_eq!(linked(&lexical), vec![ids[0], ids[2]]);
    forget(&store, &ids[2..]).await;
    assert_eq!(linked(&lexical), vec![ids[0]], "a forgotten memory is unlinked");
    store.close().await.unwrap();
    drop(store);
    let (store, lexical) = open();
    assert!(lexical.origin().contains("loaded at LSN"), "{}", lexical.origin());
    assert_eq!(linked(&lexical), vec![ids[0]]);
    store.close().await.unwrap();
}
