//! The near-duplicate index as a store follower: every live memory's
//! MinHash signature in its namespace's LSH buckets ([`NearDupIndex`]), so a
//! Remember can ask whether a new text nearly duplicates a stored one, and
//! the mining engine a recall reads through a [`MiningView`]: estimated
//! Jaccard of two memories, novelty, near-duplicate clusters (defined in
//! `dedup.rs`), and their counts for Stats ([`NearDupFollower::gauges`]).
//!
//! A recall takes one view: it holds the index's read lock until dropped,
//! so every answer of one recall comes from one state of the index, and the
//! apply thread's next insert waits for it (hold it for the fusion only).
//! While holding a view, do not call the follower's other methods on the
//! same thread: a writer queued between the two read locks would deadlock.
//!
//! With the duplicates policy `off` there is no follower (the setup builds
//! none): [`MiningView::of`]`(None)` answers `None` to everything, which a
//! recall reads as "mining missing". Before the fill below is done, a view
//! answers for the memories indexed so far (`None` for the others), and
//! novelty may be higher than it will be.
//!
//! Start-up: computing a million signatures takes seconds, so the loaded
//! snapshot's memories are not indexed while the store opens; a background
//! thread ([`NearDupFollower::fill`]) reads them from the store after the
//! daemon is serving, while the replayed and new records are indexed as
//! they come (inserting a memory twice replaces it). Until the fill is done
//! a near-duplicate of an older memory may go unnoticed (it is stored, not
//! linked: nothing is lost). The fill adds a memory only if, under the
//! index's write lock, the store still holds it with the text it read (a
//! memory forgotten or rewritten meanwhile has been, or is about to be,
//! told by the log); a candidate is still checked against the store before
//! it is reported.
//!
//! Cost: about 1 KiB of memory per memory (measured in `dedup.rs`); the
//! policy `off` turns the index off.

use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard};
use std::time::Instant;

use tracing::{info, warn};

use crate::preprocess::dedup::{DedupConfig, NearDupIndex, NearDuplicate, Novelty};
use crate::preprocess::minhash::Signature;
use crate::store::{Follower, IndexChange, IndexEvent, Store};

/// The follower's name.
pub const NEARDUP: &str = "neardup";

/// Stats gauge: clusters of at least two near-duplicate memories.
pub const GAUGE_CLUSTERS: &str = "mining_clusters";
/// Stats gauge: memories in those clusters.
pub const GAUGE_CLUSTERED_MEMORIES: &str = "mining_clustered_memories";
/// Stats gauge: memories indexed (fewer than the store holds while the fill
/// runs; a memory whose text has no word is never indexed).
pub const GAUGE_INDEXED_MEMORIES: &str = "mining_indexed_memories";

/// The near-duplicate index, following the log.
pub struct NearDupFollower {
    index: RwLock<NearDupIndex>,
    /// The snapshot's memories were skipped at open: [`Self::fill`] adds them.
    needs_fill: AtomicBool,
    filled: AtomicBool,
}

thread_local! {
    static SIGNATURE: RefCell<Signature> = RefCell::new(Signature::default());
}

impl NearDupFollower {
    /// An empty index.
    pub fn new(config: DedupConfig) -> Result<Self, crate::preprocess::PreprocessConfigError> {
        Ok(Self {
            index: RwLock::new(NearDupIndex::new(config)?),
            needs_fill: AtomicBool::new(false),
            filled: AtomicBool::new(true),
        })
    }

    /// The mining answers for one recall, under one read lock (see the
    /// module docs).
    pub fn view(&self) -> MiningView<'_> {
        MiningView {
            index: Some(self.read()),
        }
    }

    /// The mining gauges for Stats, by name: [`GAUGE_CLUSTERS`],
    /// [`GAUGE_CLUSTERED_MEMORIES`], [`GAUGE_INDEXED_MEMORIES`].
    pub fn gauges(&self) -> Vec<(String, u64)> {
        let index = self.read();
        [
            (GAUGE_CLUSTERS, index.cluster_count()),
            (GAUGE_CLUSTERED_MEMORIES, index.clustered_len()),
            (GAUGE_INDEXED_MEMORIES, index.len()),
        ]
        .into_iter()
        .map(|(name, value)| (name.to_owned(), value as u64))
        .collect()
    }

    /// The stored memory of `namespace` that `text` most nearly duplicates,
    /// if one is at or above the threshold and still live in `store`.
    pub fn find(&self, namespace: &str, text: &str, store: &Store) -> Option<NearDuplicate> {
        let index = self.read();
        let found = SIGNATURE.with_borrow_mut(|signature| {
            index.signature(text, signature);
            index.find(namespace, signature)
        })?;
        store.get(found.id).is_some().then_some(found)
    }

    /// Whether every memory the store held at open is indexed.
    pub fn is_filled(&self) -> bool {
        self.filled.load(Ordering::Relaxed)
    }

    /// Adds the snapshot's memories (skipped at open) from `store`, on a
    /// thread of its own; returns at once.
    pub fn fill(self: &Arc<Self>, store: Store) {
        if !self.needs_fill.swap(false, Ordering::AcqRel) {
            return;
        }
        let this = Arc::clone(self);
        let spawned = std::thread::Builder::new()
            .name("nexus-neardup-fill".into())
            .spawn(move || {
                let started = Instant::now();
                let mut added = 0u64;
                store.for_each_memory(|memory| {
                    let view = memory.view();
                    added += u64::from(this.add_if_stored(view.id(), view.namespace(), view.text(), &store));
                });
                this.filled.store(true, Ordering::Relaxed);
                info!(
                    memories = added,
                    ms = started.elapsed().as_millis() as u64,
                    "near-duplicate index filled"
                );
            });
        if let Err(error) = spawned {
            warn!(%error, "cannot fill the near-duplicate index; older memories are not checked for duplicates");
        }
    }

    fn add(&self, id: u64, namespace: &str, text: &str) {
        SIGNATURE.with_borrow_mut(|signature| {
            // The signature is computed under the read lock (searches go on),
            // the buckets updated under the write lock.
            self.read().signature(text, signature);
            self.write().insert(id, namespace, signature);
        });
    }

    /// The fill's add: only if `store` still holds memory `id` with this
    /// namespace and text. Checked under the write lock, so a Forget or a
    /// rewrite the log tells meanwhile is not undone: its `follow` either
    /// ran before (the store already shows it) or waits for this lock.
    /// (Lock order: this lock, then the store's; the apply thread releases
    /// the store's before it takes this one.)
    fn add_if_stored(&self, id: u64, namespace: &str, text: &str, store: &Store) -> bool {
        SIGNATURE.with_borrow_mut(|signature| {
            self.read().signature(text, signature);
            let mut index = self.write();
            let stored = store.get(id).is_some_and(|memory| {
                let view = memory.view();
                view.namespace() == namespace && view.text() == text
            });
            if stored {
                index.insert(id, namespace, signature);
            }
            stored
        })
    }

    fn remove(&self, id: u64) {
        self.write().delete(id);
    }

    fn read(&self) -> RwLockReadGuard<'_, NearDupIndex> {
        self.index.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, NearDupIndex> {
        self.index.write().unwrap_or_else(|p| p.into_inner())
    }
}

/// The mining answers of one recall (see the module docs): all `None` when
/// mining is off, and for a memory not indexed (unknown, forgotten, not
/// filled yet, or a text with no word).
pub struct MiningView<'a> {
    index: Option<RwLockReadGuard<'a, NearDupIndex>>,
}

impl<'a> MiningView<'a> {
    /// `follower`'s view, or one answering `None` to everything when there
    /// is no follower (duplicates policy `off`).
    pub fn of(follower: Option<&'a NearDupFollower>) -> Self {
        follower.map_or_else(Self::off, NearDupFollower::view)
    }

    /// A view answering `None` to everything: mining is missing.
    pub fn off() -> Self {
        Self { index: None }
    }

    /// Whether mining answers at all.
    pub fn is_on(&self) -> bool {
        self.index.is_some()
    }

    /// Estimated Jaccard similarity of memories `a` and `b`, in [0, 1].
    pub fn jaccard(&self, a: u64, b: u64) -> Option<f32> {
        Some(self.index.as_ref()?.jaccard(a, b)? as f32)
    }

    /// How unlike its neighbours memory `id` is, in [0, 1]: 1 − the highest
    /// estimated Jaccard with a memory of its namespace sharing an LSH
    /// bucket with it, 1 when none does; kept on the write path, O(1) here
    /// (`NearDupIndex::stored_novelty`).
    /// [`Self::novelty_probe`] computes it afresh.
    pub fn novelty(&self, id: u64) -> Option<f32> {
        self.index.as_ref()?.stored_novelty(id)
    }

    /// [`Self::novelty`] with the number of memories it compared (at most
    /// `dedup::MAX_NOVELTY_CANDIDATES`).
    pub fn novelty_probe(&self, id: u64) -> Option<Novelty> {
        self.index.as_ref()?.novelty(id)
    }

    /// Memory `id`'s MinHash signature.
    pub fn signature(&self, id: u64) -> Option<&Signature> {
        self.index.as_ref()?.signature_of(id)
    }

    /// The Jaccard similarity from which two memories are near-duplicates
    /// (the configured threshold; clusters link at it).
    pub fn threshold(&self) -> Option<f32> {
        Some(self.index.as_ref()?.threshold() as f32)
    }

    /// Memory `id`'s near-duplicate cluster: the smallest live id of its
    /// cluster, its own id when it has no near-duplicate.
    pub fn cluster_of(&self, id: u64) -> Option<u64> {
        self.index.as_ref()?.cluster_of(id)
    }
}

impl Follower for NearDupFollower {
    fn name(&self) -> &'static str {
        NEARDUP
    }

    fn follow(&self, change: &IndexChange<'_>) {
        if change.is_snapshot() {
            self.needs_fill.store(true, Ordering::Release);
            self.filled.store(false, Ordering::Relaxed);
            return;
        }
        for event in change.events() {
            match event {
                IndexEvent::Added(memory) => self.add(memory.id(), memory.namespace(), memory.text()),
                IndexEvent::Removed(id) => self.remove(id),
                IndexEvent::Feedback { .. } => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::recall::setup::{EmbedderChoice, RecallSettings, open_engines, parse_duplicates};
    use crate::store::tests::{TestStore, note};
    use crate::store::{Deadline, ForgetTarget};

    const TEXT: &str = "Caroline went to the LGBTQ support group yesterday and it was powerful for her";
    const NEAR: &str = "Caroline went to the LGBTQ support group yesterday and it was powerful for him";
    const OTHER: &str = "Melanie painted a sunrise over the lake last summer with her two kids";

    fn follower() -> Arc<NearDupFollower> {
        Arc::new(NearDupFollower::new(DedupConfig::default()).unwrap())
    }

    #[tokio::test]
    async fn remembered_memories_are_mined_and_forgotten_ones_are_not() {
        let neardup = follower();
        let test = TestStore::open_with("neardup-mining", vec![neardup.clone()]);
        let ids = test
            .remember(vec![
                note("a", TEXT),
                note("a", NEAR),
                note("a", OTHER),
                note("b", TEXT),
            ])
            .await;
        {
            let view = neardup.view();
            assert!(view.is_on());
            assert!(view.jaccard(ids[0], ids[1]).unwrap() >= 0.7);
            assert!(view.jaccard(ids[0], ids[2]).unwrap() < 0.1);
            assert_eq!(
                view.jaccard(ids[0], ids[3]),
                Some(1.0),
                "the same text in another namespace"
            );
            assert!(view.novelty(ids[0]).unwrap() <= 0.3);
            assert_eq!(view.novelty(ids[2]), Some(1.0));
            assert_eq!(view.novelty(ids[3]), Some(1.0), "its copy is in another namespace");
            assert_eq!(view.cluster_of(ids[1]), Some(ids[0]));
            assert_eq!(view.cluster_of(ids[3]), Some(ids[3]));
            assert_eq!(view.signature(ids[0]), view.signature(ids[3]));
            assert_eq!(view.threshold(), Some(0.7));
        }
        let expected = |clusters, clustered, indexed| {
            [
                (GAUGE_CLUSTERS.to_owned(), clusters),
                (GAUGE_CLUSTERED_MEMORIES.to_owned(), clustered),
                (GAUGE_INDEXED_MEMORIES.to_owned(), indexed),
            ]
        };
        assert_eq!(neardup.gauges(), expected(1, 2, 4));
        let forgotten = [rkyv::rend::u64_le::from_native(ids[0])];
        let forgotten = ForgetTarget::Ids(&forgotten);
        test.store.forget(&forgotten, Deadline::NONE).await.unwrap();
        let view = neardup.view();
        assert_eq!((view.jaccard(ids[0], ids[1]), view.novelty(ids[0])), (None, None));
        assert_eq!(
            (view.novelty(ids[1]), view.cluster_of(ids[1])),
            (Some(1.0), Some(ids[1]))
        );
        drop(view);
        assert_eq!(neardup.gauges(), expected(0, 0, 3));
    }

    #[test]
    fn with_the_policy_off_mining_answers_nothing() {
        let settings = RecallSettings {
            embedder: EmbedderChoice::Hashing,
            duplicates: parse_duplicates("off").unwrap(),
            ..RecallSettings::default()
        };
        let engines = open_engines(&settings, None).unwrap();
        let view = MiningView::of(engines.neardup.as_deref());
        assert!(!view.is_on());
        assert_eq!(
            (view.jaccard(1, 1), view.novelty(1), view.cluster_of(1)),
            (None, None, None)
        );
        assert_eq!(
            (view.novelty_probe(1), view.signature(1), view.threshold()),
            (None, None, None)
        );
        // With a policy, the same call gives the follower's answers.
        let neardup = follower();
        neardup.add(1, "a", TEXT);
        assert_eq!(MiningView::of(Some(&neardup)).novelty(1), Some(1.0));
    }

    #[test]
    fn the_fill_skips_memories_forgotten_or_rewritten_meanwhile() {
        let neardup = follower();
        let test = TestStore::open("neardup-fill");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let ids = runtime.block_on(test.remember(vec![note("a", TEXT), note("a", OTHER)]));
        assert!(neardup.add_if_stored(ids[0], "a", TEXT, &test.store));
        assert!(
            !neardup.add_if_stored(ids[1], "a", NEAR, &test.store),
            "the text changed"
        );
        assert!(!neardup.add_if_stored(99, "a", TEXT, &test.store), "not stored");
        assert_eq!(neardup.gauges()[2].1, 1);
    }
}
