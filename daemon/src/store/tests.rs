//! The store in-process, against a temporary directory: open, remember, read,
//! forget, feedback, checkpoint, close and reopen, the typed errors, and the
//! follower hook's promise (an acknowledged write is in every follower, told
//! in LSN order, outside the state's write lock). Each test takes
//! milliseconds; the end-to-end tests in `tests/it` drive a real daemon.
//!
//! [`TestStore`] and [`note`] are shared with the recall module's tests.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use rkyv::rend::{f32_le, u64_le};

use crate::store::wal::{FaultyFs, FsyncPolicy, Lsn, RealFs, WalError, WalFs};
use crate::store::{
    Deadline, Follower, ForgetTarget, IndexChange, IndexEvent, Judgement, NewMemory, Store, StoreConfig, StoreError,
    TagRef,
};
use crate::testing::TempDir;

/// A store open on its own temporary directory.
pub(crate) struct TestStore {
    /// First field: dropped (and so closed) before the directory goes.
    pub store: Store,
    dir: TempDir,
}

impl TestStore {
    /// An empty store; `label` names its directory.
    pub fn open(label: &str) -> Self {
        Self::open_with(label, Vec::new())
    }

    /// An empty store followed by `followers`.
    pub fn open_with(label: &str, followers: Vec<Arc<dyn Follower>>) -> Self {
        let dir = TempDir::new(&format!("store-{label}"));
        let store = Store::open_with(&config(&dir), Arc::new(RealFs), followers).expect("open a fresh store");
        Self { store, dir }
    }

    /// Closes the store (final checkpoint) and opens the directory again.
    pub async fn reopen(self, fs: Arc<dyn WalFs>) -> Self {
        self.store.close().await.expect("a clean close");
        let Self { store, dir } = self;
        drop(store);
        let store = Store::open(&config(&dir), fs).expect("reopen");
        Self { store, dir }
    }

    /// Remembers `memories`; returns their ids.
    pub async fn remember(&self, memories: Vec<NewMemory<'_>>) -> Vec<u64> {
        self.store.remember(memories, NOW_MS).await.expect("remember").ids
    }

    /// The texts of the live memories of `namespace`, by id.
    pub fn texts(&self, ids: &[u64]) -> Vec<Option<String>> {
        (self.store.memories(ids.iter().copied()).into_iter())
            .map(|memory| Some(memory?.view().text().to_owned()))
            .collect()
    }
}

/// The time memories without their own `created_at_ms` get in these tests.
pub(crate) const NOW_MS: i64 = 1_700_000_000_000;

fn config(dir: &TempDir) -> StoreConfig {
    StoreConfig {
        data_dir: dir.join("data"),
        // Durability is the WAL's tests' business; these test the store's logic.
        fsync: FsyncPolicy::Never,
        ..StoreConfig::default()
    }
}

/// A memory of `namespace` with `text`, importance 1, nothing else.
pub(crate) fn note<'a>(namespace: &'a str, text: &'a str) -> NewMemory<'a> {
    NewMemory {
        namespace,
        text,
        importance: 1.0,
        ..NewMemory::default()
    }
}

fn le(values: &[f32]) -> Vec<f32_le> {
    values.iter().copied().map(f32_le::from_native).collect()
}

#[tokio::test]
async fn remembered_memories_read_back_in_place_and_keys_upsert() {
    let test = TestStore::open("remember");
    let vector = le(&[0.5, 0.25]);
    let tags = vec![TagRef {
        key: "topic",
        value: "trips",
    }];
    let first = NewMemory {
        key: Some("k"),
        vector: Some(&vector),
        tags,
        created_at_ms: Some(42),
        ..note("a", "Caroline went hiking")
    };
    let ids = test.remember(vec![first, note("a", "Melanie paints")]).await;
    assert_eq!(ids, vec![1, 2]);
    let memory = test.store.get(1).expect("memory 1");
    let view = memory.view();
    assert_eq!(
        (view.namespace(), view.key(), view.text()),
        ("a", Some("k"), "Caroline went hiking")
    );
    assert_eq!(view.tags().collect::<Vec<_>>(), vec![("topic", "trips")]);
    assert_eq!((view.created_at_ms(), view.vector().map(<[_]>::len)), (42, Some(2)));
    assert_eq!(test.store.get(2).expect("memory 2").view().created_at_ms(), NOW_MS);
    assert_eq!(test.store.dimension(), 2);

    let again = test.remember(vec![NewMemory {
        key: Some("k"),
        ..note("a", "Caroline went hiking again")
    }]);
    assert_eq!(again.await, vec![1], "a live key keeps its memory's id");
    assert_eq!(
        test.texts(&[1, 2]),
        [Some("Caroline went hiking again".into()), Some("Melanie paints".into())]
    );
    assert_eq!(test.store.len(), 2);
}

#[tokio::test]
async fn forget_by_ids_namespace_and_tags_deletes_exactly_those() {
    let test = TestStore::open("forget");
    let tagged = |namespace, text, value| NewMemory {
        tags: vec![TagRef { key: "t", value }],
        ..note(namespace, text)
    };
    let memories = vec![
        tagged("a", "one", "x"),
        tagged("a", "two", "y"),
        tagged("b", "three", "x"),
        note("c", "four"),
    ];
    test.remember(memories).await;
    let store = &test.store;
    let ids = [u64_le::from_native(1), u64_le::from_native(1), u64_le::from_native(99)];
    let forgotten = store.forget(&ForgetTarget::Ids(&ids), Deadline::NONE).await.unwrap();
    assert_eq!(forgotten.count, 1, "repeats and unknown ids do not count");
    let by_tag = ForgetTarget::Tags {
        namespace: None,
        tags: vec![TagRef { key: "t", value: "x" }],
    };
    assert_eq!(store.forget(&by_tag, Deadline::NONE).await.unwrap().count, 1);
    assert_eq!(
        store
            .forget(&ForgetTarget::Namespace("c"), Deadline::NONE)
            .await
            .unwrap()
            .count,
        1
    );
    let nothing = store
        .forget(&ForgetTarget::Namespace("c"), Deadline::NONE)
        .await
        .unwrap();
    assert_eq!(
        (nothing.count, nothing.lsn),
        (0, None),
        "nothing matched, nothing logged"
    );
    assert_eq!(test.texts(&[1, 2, 3, 4]), [None, Some("two".into()), None, None]);
}

#[tokio::test]
async fn refusals_are_typed_with_what_the_caller_sent() {
    let test = TestStore::open("refusals");
    let store = &test.store;
    assert!(matches!(
        store.remember(vec![], NOW_MS).await,
        Err(StoreError::EmptyBatch)
    ));
    let unnamed = store.remember(vec![note("a", "x"), note("", "y")], NOW_MS).await;
    assert!(
        matches!(unnamed, Err(StoreError::EmptyNamespace { index: 1 })),
        "{unnamed:?}"
    );
    let (two, three) = (le(&[1.0, 0.0]), le(&[1.0, 0.0, 0.0]));
    let with = |vector| NewMemory {
        vector: Some(vector),
        ..note("a", "v")
    };
    let mixed = store.remember(vec![with(&two), with(&three)], NOW_MS).await;
    assert!(
        matches!(mixed, Err(StoreError::MixedDimensions { index: 1, .. })),
        "{mixed:?}"
    );
    store.remember(vec![with(&two)], NOW_MS).await.unwrap();
    let other = store.remember(vec![with(&three)], NOW_MS).await;
    assert!(
        matches!(
            other,
            Err(StoreError::DimensionMismatch {
                expected: 2,
                got: 3,
                ..
            })
        ),
        "{other:?}"
    );
    let judged = Judgement {
        memory_id: 77,
        recall_request_id: 1,
        useful: true,
    };
    assert!(matches!(
        store.feedback(judged).await,
        Err(StoreError::UnknownMemory(77))
    ));
    let everything = store.forget(&ForgetTarget::Namespace(""), Deadline::NONE).await;
    assert!(matches!(everything, Err(StoreError::ForgetWithoutNamespace)));
}

// The WAL's error reaches the caller as itself (its source kept), not as a string.
#[tokio::test]
async fn a_full_disk_fails_the_write_with_the_wals_own_error_and_writes_resume() {
    let dir = TempDir::new("store-disk-full");
    let fs = FaultyFs::new();
    let store = Store::open(&config(&dir), Arc::new(fs.clone())).unwrap();
    fs.faults().set_disk_full(true);
    let refused = store.remember(vec![note("a", "lost")], NOW_MS).await;
    match refused {
        Err(StoreError::Wal(error)) => assert!(matches!(*error, WalError::DiskFull { .. }), "{error}"),
        other => panic!("expected the WAL's DiskFull, got {other:?}"),
    }
    fs.faults().set_disk_full(false);
    let ids = store.remember(vec![note("a", "kept")], NOW_MS).await.unwrap().ids;
    assert_eq!(store.get(ids[0]).unwrap().view().text(), "kept");
    store.close().await.unwrap();
}

#[tokio::test]
async fn a_checkpoint_and_a_reopen_keep_every_acknowledged_memory() {
    let test = TestStore::open("reopen");
    test.remember(vec![note("a", "before the checkpoint"), note("b", "also before")])
        .await;
    let covered = test.store.checkpoint().await.unwrap();
    assert_eq!(covered, test.store.applied_lsn());
    test.remember(vec![note("a", "after the checkpoint")]).await;
    let ids = [u64_le::from_native(2)];
    test.store
        .forget(&ForgetTarget::Ids(&ids), Deadline::NONE)
        .await
        .unwrap();

    let test = test.reopen(Arc::new(RealFs)).await;
    assert_eq!(
        test.texts(&[1, 2, 3]),
        [
            Some("before the checkpoint".into()),
            None,
            Some("after the checkpoint".into())
        ]
    );
    let ids = test.remember(vec![note("a", "after the reopen")]).await;
    assert_eq!(ids, vec![4], "ids are never reused");
    assert!(test.store.open_report().snapshot.is_some());
}

/// Records every change it is told, and checks it is told outside the
/// state's write lock (it reads the store, which would deadlock under it).
#[derive(Default)]
struct Recorder {
    /// Taken out at the end of the test (it would keep the store alive).
    store: Mutex<Option<Store>>,
    told: Mutex<Vec<(Lsn, Vec<String>)>>,
    read_the_store: AtomicBool,
}

impl Follower for Recorder {
    fn name(&self) -> &'static str {
        "recorder"
    }

    fn follow(&self, change: &IndexChange<'_>) {
        if let Some(store) = self.store.lock().unwrap().as_ref() {
            // A read of the state: this would never return if the apply step
            // still held the write lock.
            let _ = store.len();
            self.read_the_store.store(true, Ordering::Relaxed);
        }
        let events = change.events().map(|event| match event {
            IndexEvent::Added(memory) => format!("+{} {}", memory.id(), memory.text()),
            IndexEvent::Removed(id) => format!("-{id}"),
            IndexEvent::Feedback { memory_id, useful } => format!("feedback {memory_id} {useful}"),
        });
        self.told.lock().unwrap().push((change.lsn(), events.collect()));
    }
}

// The promise of an acknowledgement (store/follow.rs): when `remember` or
// `forget` returns, every follower has been told, in LSN order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acknowledged_write_is_already_in_every_follower_in_lsn_order() {
    let recorder = Arc::new(Recorder::default());
    let test = TestStore::open_with("follow", vec![recorder.clone()]);
    *recorder.store.lock().unwrap() = Some(test.store.clone());
    let told = || recorder.told.lock().unwrap().clone();
    test.remember(vec![NewMemory {
        key: Some("k"),
        ..note("a", "first")
    }])
    .await;
    assert_eq!(told(), vec![(1, vec!["+1 first".to_owned()])]);
    test.remember(vec![NewMemory {
        key: Some("k"),
        ..note("a", "second")
    }])
    .await;
    let ids = [u64_le::from_native(1)];
    test.store
        .forget(&ForgetTarget::Ids(&ids), Deadline::NONE)
        .await
        .unwrap();
    let judged = test.remember(vec![note("b", "judged")]).await[0];
    let judgement = Judgement {
        memory_id: judged,
        recall_request_id: 7,
        useful: false,
    };
    test.store.feedback(judgement).await.unwrap();
    let expected = vec![
        (1, vec!["+1 first".to_owned()]),
        (2, vec!["-1".to_owned(), "+1 second".to_owned()]),
        (3, vec!["-1".to_owned()]),
        (4, vec!["+2 judged".to_owned()]),
        (5, vec!["feedback 2 false".to_owned()]),
    ];
    assert_eq!(told(), expected);
    assert!(
        recorder.read_the_store.load(Ordering::Relaxed),
        "the follower ran with the lock released"
    );
    recorder.store.lock().unwrap().take();
}

// At open, a follower is told the snapshot's memories, then the replayed
// records, so an index that starts with the store is complete.
#[tokio::test]
async fn a_follower_given_at_open_is_told_the_snapshot_then_the_replayed_log() {
    let test = TestStore::open("follow-open");
    test.remember(vec![note("a", "in the snapshot")]).await;
    test.store.checkpoint().await.unwrap();
    test.remember(vec![note("a", "in the log")]).await;
    test.store.stop_without_checkpoint().await;
    let TestStore { store, dir } = test;
    drop(store);
    let recorder = Arc::new(Recorder::default());
    let reopened = Store::open_with(&config(&dir), Arc::new(RealFs), vec![recorder.clone()]).unwrap();
    let told = recorder.told.lock().unwrap().clone();
    let expected = vec![
        (1, vec!["+1 in the snapshot".to_owned()]),
        (2, vec!["+2 in the log".to_owned()]),
    ];
    assert_eq!(told, expected);
    assert_eq!(
        reopened
            .counters()
            .iter()
            .find(|c| c.name == "follower_panics")
            .map(|c| c.value),
        Some(0)
    );
}

/// Panics on every change.
struct Panicker;

impl Follower for Panicker {
    fn name(&self) -> &'static str {
        "panicker"
    }

    fn follow(&self, _change: &IndexChange<'_>) {
        panic!("a broken index");
    }
}

// One broken index must not stop every writer: the write is acknowledged,
// the other followers are told, the panic is counted.
#[tokio::test]
async fn a_follower_that_panics_is_counted_and_does_not_stop_writes() {
    let recorder = Arc::new(Recorder::default());
    let test = TestStore::open_with("follow-panic", vec![Arc::new(Panicker), recorder.clone()]);
    test.remember(vec![note("a", "still acknowledged")]).await;
    assert_eq!(recorder.told.lock().unwrap().len(), 1);
    let panics = test.store.counters().into_iter().find(|c| c.name == "follower_panics");
    assert_eq!(panics.map(|c| c.value), Some(1));
}

/// Pages through `namespace` ("" = all) with `limit` and `max_bytes`;
/// returns each page's (namespace, text) pairs.
fn pages(store: &Store, namespace: &str, limit: usize, max_bytes: usize) -> Vec<Vec<(String, String)>> {
    let mut pages = Vec::new();
    let mut after = None;
    loop {
        let (page, next) = store.list(namespace, after, limit, max_bytes);
        let seen = page
            .iter()
            .map(|m| m.view())
            .map(|v| (v.namespace().to_owned(), v.text().to_owned()));
        pages.push(seen.collect());
        match next {
            Some(next) => after = Some(next),
            None => return pages,
        }
    }
}

#[tokio::test]
async fn a_listing_pages_through_every_namespace_in_order_within_its_bounds() {
    let test = TestStore::open("list");
    let mut memories = Vec::new();
    let texts: Vec<String> = (0..7).map(|i| format!("memory {i} {}", "x".repeat(i * 10))).collect();
    for (i, text) in texts.iter().enumerate() {
        memories.push(note(["b", "a", "c"][i % 3], text));
    }
    test.remember(memories).await;
    let flat = |pages: Vec<Vec<(String, String)>>| pages.into_iter().flatten().collect::<Vec<_>>();
    let all = flat(pages(&test.store, "", 1000, 1 << 20));
    let namespaces: Vec<&str> = all.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        namespaces,
        ["a", "a", "b", "b", "b", "c", "c"],
        "namespace order, then id"
    );
    assert_eq!(all[0].1, texts[1]);
    // Two per page: every memory once, across the namespace boundaries.
    let paged = pages(&test.store, "", 2, 1 << 20);
    assert_eq!(paged.iter().map(Vec::len).collect::<Vec<_>>(), [2, 2, 2, 1]);
    assert_eq!(flat(paged), all);
    // A byte bound below one memory still makes progress, one at a time.
    let tiny = pages(&test.store, "", 1000, 1);
    assert_eq!(tiny.len(), 7);
    assert_eq!(flat(tiny), all);
    // One namespace only.
    let b = flat(pages(&test.store, "b", 1, 1 << 20));
    assert_eq!(b, all[2..5]);
    // A cursor whose memory was forgotten meanwhile resumes after it.
    let (first, next) = test.store.list("", None, 3, 1 << 20);
    let last = first.last().unwrap().view().id();
    let forgotten = [u64_le::from_native(last)];
    test.store
        .forget(&ForgetTarget::Ids(&forgotten), Deadline::NONE)
        .await
        .unwrap();
    let (rest, _) = test.store.list("", next, 1000, 1 << 20);
    let rest: Vec<String> = rest.iter().map(|m| m.view().text().to_owned()).collect();
    let expected: Vec<String> = all[3..].iter().map(|(_, t)| t.clone()).collect();
    assert_eq!(rest, expected);
    // An empty store lists nothing and says so.
    assert_eq!(TestStore::open("list-empty").store.list("", None, 10, 100).0.len(), 0);
}
