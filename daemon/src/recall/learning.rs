//! The learning engine: what `Feedback` taught, per memory and per tag of
//! a namespace, decaying over time, read by fusion's preference factor.
//!
//! Durability: every judgement is a WAL record and the state's per-memory
//! counts are in every snapshot (`store/`). This engine derives from them:
//! at open ([`Learning::opened`]) it starts from the store's counts (each
//! memory's, and each tag's as the sum over the live memories carrying it);
//! while serving it follows each new judgement, looking the judged memory's
//! namespace and tags up in the store. Judgements decay exponentially with
//! a half-life ([`DEFAULT_HALF_LIFE_MS`], 30 days): an old "not useful"
//! weighs less than yesterday's "useful". The decay clock is the daemon's
//! wall clock while it runs; the counts carry no time, so after a restart
//! the judgements made before it count as made at the restart.
//!
//! Preference of a memory: `0.5 + 0.5 · (0.7 · p_memory + 0.3 · p_tags)`,
//! each `p = (up − down) / (up + down + 2)` (Laplace: one judgement moves
//! it a third of the way, never all of it); `p_tags` is the mean over the
//! memory's tags that were ever judged. 0.5 is neutral.
//!
//! Bounds: one entry per judged memory (dropped when it is forgotten) and
//! one per (namespace, tag) of a judged memory; a memory carries at most
//! `limits.max_tags` tags, and feedback must name a recent recall's result.

use std::collections::HashMap;
use std::sync::{OnceLock, RwLock};

use crate::store::{Follower, IndexChange, IndexEvent, MemoryView, Store};

/// The follower's name.
pub const LEARNING: &str = "learning";

/// Half-life of a judgement (ms): after 30 days it counts half.
pub const DEFAULT_HALF_LIFE_MS: f64 = 30.0 * 86_400_000.0;

/// Share of a memory's preference that comes from its own judgements (the
/// rest from its tags').
const MEMORY_SHARE: f32 = 0.7;

/// Judgements, decaying.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Decayed {
    up: f64,
    down: f64,
    /// When `up` and `down` were last brought up to date (ms since the epoch).
    at_ms: i64,
}

impl Decayed {
    fn decayed_to(&self, now_ms: i64, half_life_ms: f64) -> (f64, f64) {
        let age = (now_ms - self.at_ms).max(0) as f64;
        let factor = (-(age / half_life_ms) * std::f64::consts::LN_2).exp();
        (self.up * factor, self.down * factor)
    }

    fn add(&mut self, up: f64, down: f64, now_ms: i64, half_life_ms: f64) {
        let (u, d) = self.decayed_to(now_ms, half_life_ms);
        *self = Decayed {
            up: u + up,
            down: d + down,
            at_ms: now_ms.max(self.at_ms),
        };
    }

    /// In `[-1, 1]`: how useful, on balance.
    fn balance(&self, now_ms: i64, half_life_ms: f64) -> f32 {
        let (up, down) = self.decayed_to(now_ms, half_life_ms);
        ((up - down) / (up + down + 2.0)) as f32
    }
}

/// What the engine knows.
#[derive(Debug, Default)]
struct Inner {
    memories: HashMap<u64, Decayed>,
    /// "namespace\0key\0value" → judgements of memories carrying the tag.
    tags: HashMap<Box<str>, Decayed>,
}

/// The learning engine (a store follower; see the module docs).
pub struct Learning {
    inner: RwLock<Inner>,
    store: OnceLock<Store>,
    half_life_ms: f64,
}

impl Default for Learning {
    fn default() -> Self {
        Self::new(DEFAULT_HALF_LIFE_MS)
    }
}

fn tag_key(namespace: &str, key: &str, value: &str) -> Box<str> {
    format!("{namespace}\0{key}\0{value}").into_boxed_str()
}

impl Learning {
    /// An engine whose judgements halve every `half_life_ms`.
    pub fn new(half_life_ms: f64) -> Self {
        Self {
            inner: RwLock::new(Inner::default()),
            store: OnceLock::new(),
            half_life_ms: half_life_ms.max(1.0),
        }
    }

    /// After the store opened: starts from its durable counts (judgements
    /// replayed from the WAL included), then follows new ones.
    pub fn opened(&self, store: &Store, now_ms: i64) {
        let mut inner = Inner::default();
        let tallies = store.all_feedback();
        let memories = store.memories(tallies.iter().map(|(id, _)| *id));
        for ((id, tally), memory) in tallies.into_iter().zip(memories) {
            let Some(memory) = memory else { continue };
            let (up, down) = (f64::from(tally.useful), f64::from(tally.not_useful));
            let judged = Decayed {
                up,
                down,
                at_ms: now_ms,
            };
            inner.memories.insert(id, judged);
            let view = memory.view();
            for (key, value) in view.tags() {
                let tag = inner.tags.entry(tag_key(view.namespace(), key, value)).or_default();
                tag.add(up, down, now_ms, self.half_life_ms);
            }
        }
        *self.inner.write().unwrap_or_else(|p| p.into_inner()) = inner;
        let _ = self.store.set(store.clone());
    }

    /// Records one judgement of `memory` at `now_ms`.
    pub fn judge(&self, memory: MemoryView<'_>, useful: bool, now_ms: i64) {
        let (up, down) = if useful { (1.0, 0.0) } else { (0.0, 1.0) };
        let mut inner = self.inner.write().unwrap_or_else(|p| p.into_inner());
        let entry = inner.memories.entry(memory.id()).or_default();
        entry.add(up, down, now_ms, self.half_life_ms);
        for (key, value) in memory.tags() {
            let tag = inner.tags.entry(tag_key(memory.namespace(), key, value)).or_default();
            tag.add(up, down, now_ms, self.half_life_ms);
        }
    }

    /// The preference of `memory` at `now_ms`, in `[0, 1]` (0.5 neutral).
    pub fn preference(&self, memory: MemoryView<'_>, now_ms: i64) -> f32 {
        let inner = self.inner.read().unwrap_or_else(|p| p.into_inner());
        Self::preference_in(&inner, memory, now_ms, self.half_life_ms)
    }

    /// A reader for one recall (one lock for every candidate).
    pub fn reader(&self) -> LearningReader<'_> {
        LearningReader {
            inner: self.inner.read().unwrap_or_else(|p| p.into_inner()),
            half_life_ms: self.half_life_ms,
        }
    }

    fn preference_in(inner: &Inner, memory: MemoryView<'_>, now_ms: i64, half_life_ms: f64) -> f32 {
        if inner.memories.is_empty() && inner.tags.is_empty() {
            return 0.5;
        }
        let own = (inner.memories.get(&memory.id())).map_or(0.0, |d| d.balance(now_ms, half_life_ms));
        let (mut sum, mut n) = (0.0f32, 0u32);
        if !inner.tags.is_empty() {
            for (key, value) in memory.tags() {
                if let Some(tag) = inner.tags.get(&*tag_key(memory.namespace(), key, value)) {
                    sum += tag.balance(now_ms, half_life_ms);
                    n += 1;
                }
            }
        }
        let tags = if n > 0 { sum / n as f32 } else { 0.0 };
        (0.5 + 0.5 * (MEMORY_SHARE * own + (1.0 - MEMORY_SHARE) * tags)).clamp(0.0, 1.0)
    }

    /// Judged memories and tags known (for Stats).
    pub fn gauges(&self) -> Vec<(String, u64)> {
        let inner = self.inner.read().unwrap_or_else(|p| p.into_inner());
        vec![
            ("learning_memories".to_owned(), inner.memories.len() as u64),
            ("learning_tags".to_owned(), inner.tags.len() as u64),
        ]
    }
}

/// The engine's read lock for one recall.
pub struct LearningReader<'a> {
    inner: std::sync::RwLockReadGuard<'a, Inner>,
    half_life_ms: f64,
}

impl LearningReader<'_> {
    /// See [`Learning::preference`].
    pub fn preference(&self, memory: MemoryView<'_>, now_ms: i64) -> f32 {
        Learning::preference_in(&self.inner, memory, now_ms, self.half_life_ms)
    }
}

impl Follower for Learning {
    fn name(&self) -> &'static str {
        LEARNING
    }

    fn follow(&self, change: &IndexChange<'_>) {
        // Before `opened` (the snapshot and the replay) there is nothing to
        // do: `opened` starts from the counts they left in the store.
        let Some(store) = self.store.get() else { return };
        for event in change.events() {
            match event {
                IndexEvent::Feedback { memory_id, useful } => {
                    // The apply step has released the state's lock: reading is safe.
                    if let Some(memory) = store.get(memory_id) {
                        self.judge(memory.view(), useful, wall_ms());
                    }
                }
                IndexEvent::Removed(id) => {
                    self.inner
                        .write()
                        .unwrap_or_else(|p| p.into_inner())
                        .memories
                        .remove(&id);
                }
                IndexEvent::Added(_) => {}
            }
        }
    }
}

/// Now, in ms since the Unix epoch.
pub fn wall_ms() -> i64 {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
    now.map_or(0, |d| d.as_millis() as i64)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::store::tests::{TestStore, note};
    use crate::store::{Judgement, TagRef};

    async fn judge(test: &TestStore, memory_id: u64, useful: bool) {
        let judgement = Judgement {
            memory_id,
            recall_request_id: 1,
            useful,
        };
        test.store.feedback(judgement).await.expect("feedback is logged");
    }

    fn outdoors() -> Vec<TagRef<'static>> {
        vec![TagRef {
            key: "topic",
            value: "outdoors",
        }]
    }

    const DAY: i64 = 86_400_000;

    #[test]
    fn a_judgement_halves_every_half_life() {
        let mut d = Decayed::default();
        d.add(4.0, 0.0, 0, 30.0 * DAY as f64);
        let (up, _) = d.decayed_to(30 * DAY, 30.0 * DAY as f64);
        assert!((up - 2.0).abs() < 1e-9);
        assert!(d.balance(0, 30.0 * DAY as f64) > d.balance(60 * DAY, 30.0 * DAY as f64));
        // A recent "not useful" outweighs an old "useful".
        d.add(0.0, 2.0, 90 * DAY, 30.0 * DAY as f64);
        assert!(d.balance(90 * DAY, 30.0 * DAY as f64) < 0.0);
    }

    #[tokio::test]
    async fn judgements_move_the_memory_and_the_memories_sharing_its_tags() {
        let learning = Arc::new(Learning::default());
        let follower: Arc<dyn Follower> = learning.clone();
        let test = TestStore::open_with("learning", vec![follower]);
        learning.opened(&test.store, wall_ms());
        let mut judged = note("ns", "Caroline went hiking");
        judged.tags = outdoors();
        let mut sibling = note("ns", "Melanie went climbing");
        sibling.tags = outdoors();
        let mut elsewhere = note("other", "Melanie went climbing");
        elsewhere.tags = outdoors();
        let ids = test
            .remember(vec![judged, sibling, elsewhere, note("ns", "untagged")])
            .await;
        let preference = |id| learning.preference(test.store.get(id).unwrap().view(), wall_ms());
        assert!(
            ids.iter().all(|&id| preference(id) == 0.5),
            "neutral before any judgement"
        );
        judge(&test, ids[0], true).await;
        assert!(preference(ids[0]) > preference(ids[1]), "the memory judged moves most");
        assert!(preference(ids[1]) > 0.5, "its tag's other memories move too");
        assert_eq!(preference(ids[2]), 0.5, "not across namespaces");
        assert_eq!(preference(ids[3]), 0.5, "not without the tag");
        judge(&test, ids[3], false).await;
        assert!(preference(ids[3]) < 0.5);
        // Restart: the store's counts are where learning starts again.
        let fresh = Learning::default();
        fresh.opened(&test.store, wall_ms());
        assert!(fresh.preference(test.store.get(ids[0]).unwrap().view(), wall_ms()) > 0.5);
        assert!(fresh.preference(test.store.get(ids[1]).unwrap().view(), wall_ms()) > 0.5);
    }
}
