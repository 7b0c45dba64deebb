//! The in-memory state: every live memory, indexed by id, namespace and key.
//!
//! Every memory is read in place from archived bytes: memories loaded from a
//! snapshot stay in its memory map, memories written since stay in the WAL
//! record that brought them ([`LoggedRecord`]). The state changes only
//! through [`State::apply`], called in LSN order by the apply thread after a
//! record is durable (and by replay at start), so the state is always exactly
//! "snapshot + applied WAL records".
//!
//! Scans take the memories out in chunks ([`State::take_chunk`]): a chunk
//! shares their bytes, so it is read after the lock is released (scoring is
//! `recall/`). Applying a record can also note what it changed
//! ([`State::apply_noting`]) for the indexes that follow the log
//! (`follow.rs`). Nothing here does I/O.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::{BuildHasherDefault, Hasher};
use std::ops::Bound;
use std::sync::Arc;

use crate::store::follow::Event;
use crate::store::ids::Ids;
use crate::store::logged::LoggedRecord;
use crate::store::memory::{Entry, Memory, MemoryView};
use crate::store::model::{ArchivedStoredMemory, ArchivedWalRecord, MemoryRef};
use crate::store::snapshot::{FeedbackTally, Snapshot, SnapshotBodyRef};
use crate::store::wal::Lsn;

/// Most memories one chunk takes under the state's read lock: the lock is
/// held for a few microseconds (copying entries, not reading them).
pub const SLICE_MEMORIES: usize = 512;
/// Most text (and vector bytes) one chunk takes, so the work on a chunk
/// between two yields stays short even when every memory is 64 KiB long:
/// scoring ran at ~7 ns per byte of text in the test build (opt-level 1; a
/// 78 MB scan took 0.56 s in `store_boundary.rs`), ~2 ms per chunk, less in
/// release.
pub const SLICE_TEXT_BYTES: usize = 256 << 10;

/// Hashes daemon-assigned ids (not chosen by clients) with one multiply and
/// fold instead of SipHash: the id map is the hottest map of apply and replay.
#[derive(Default)]
struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.write_u64(u64::from(*byte) ^ self.0.rotate_left(8));
        }
    }

    fn write_u64(&mut self, id: u64) {
        let product = u128::from(id ^ self.0) * 0x9E37_79B9_7F4A_7C15;
        self.0 = (product >> 64) as u64 ^ product as u64;
    }
}

type IdMap<V> = HashMap<u64, V, BuildHasherDefault<IdHasher>>;

/// Feedback counts of one memory.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    /// Times judged useful.
    pub useful: u32,
    /// Times judged not useful.
    pub not_useful: u32,
}

/// Where [`State::apply_noting`] writes what a record changed (nowhere for
/// plain [`State::apply`]).
struct Notes<'a>(Option<&'a mut Vec<Event>>);

impl Notes<'_> {
    fn note(&mut self, event: Event) {
        if let Some(events) = self.0.as_deref_mut() {
            events.push(event);
        }
    }
}

/// Where a chunked scan resumes: after this (namespace, id), in namespace
/// then id order.
#[derive(Debug, Clone, Default)]
pub struct Cursor {
    after: Option<(String, u64)>,
    done: bool,
}

impl Cursor {
    /// A cursor that resumes after memory `id` of `namespace`.
    pub fn after(namespace: String, id: u64) -> Self {
        Self {
            after: Some((namespace, id)),
            done: false,
        }
    }

    /// Where the scan stopped: the last memory handed out.
    pub fn position(&self) -> Option<(&str, u64)> {
        self.after.as_ref().map(|(namespace, id)| (namespace.as_str(), *id))
    }

    /// True once the scan has seen every memory.
    pub fn is_done(&self) -> bool {
        self.done
    }
}

/// The live memories.
#[derive(Default)]
pub struct State {
    base: Option<Arc<Snapshot>>,
    entries: IdMap<Entry>,
    /// Ordered, so a scan of every namespace can resume where it stopped.
    namespaces: BTreeMap<String, BTreeSet<u64>>,
    /// Keys, the id counter and the dimension (see `ids.rs`).
    ids: Ids,
    feedback: IdMap<Tally>,
    applied_lsn: Lsn,
}

impl State {
    /// A state holding exactly the snapshot's memories (or nothing).
    pub fn from_snapshot(snapshot: Option<Arc<Snapshot>>) -> Self {
        let mut state = Self::default();
        let Some(snapshot) = snapshot else { return state };
        let body = snapshot.body();
        state.applied_lsn = body.lsn.to_native();
        state.ids = Ids::new(body.next_id.to_native(), body.dim.to_native());
        state.entries.reserve(body.memories.len());
        for (index, memory) in body.memories.iter().enumerate() {
            let id = memory.id.to_native();
            state.index(id, &memory.namespace, memory.key.as_ref().map(|k| k.as_str()));
            state.entries.insert(id, Entry::Base(index as u32));
        }
        for tally in body.feedback.iter() {
            let counts = Tally {
                useful: tally.useful.to_native(),
                not_useful: tally.not_useful.to_native(),
            };
            state.feedback.insert(tally.memory_id.to_native(), counts);
        }
        state.base = Some(snapshot);
        state
    }

    /// Applies one durable record. Replay and live writes go through here.
    pub fn apply(&mut self, lsn: Lsn, logged: Arc<LoggedRecord>) {
        self.apply_to(lsn, logged, Notes(None));
    }

    /// [`State::apply`], appending to `events` what the record changed, in
    /// the order it changed it (for the indexes that follow the log).
    pub(crate) fn apply_noting(&mut self, lsn: Lsn, logged: Arc<LoggedRecord>, events: &mut Vec<Event>) {
        self.apply_to(lsn, logged, Notes(Some(events)));
    }

    fn apply_to(&mut self, lsn: Lsn, logged: Arc<LoggedRecord>, mut notes: Notes<'_>) {
        debug_assert!(lsn > self.applied_lsn, "records are applied in LSN order");
        match logged.record() {
            ArchivedWalRecord::Remember(memories) => {
                for (index, memory) in memories.iter().enumerate() {
                    let entry = Entry::Logged(Arc::clone(&logged), index as u32);
                    self.put(memory, entry, &mut notes);
                    notes.note(Event::Added(index as u32));
                }
            }
            ArchivedWalRecord::Forget(ids) => ids.iter().for_each(|id| self.remove(id.to_native(), &mut notes)),
            ArchivedWalRecord::Feedback { memory_id, useful, .. } => {
                let memory_id = memory_id.to_native();
                let tally = self.feedback.entry(memory_id).or_default();
                // Saturating: a tally read from a crafted (checksum-valid) snapshot
                // may already stand at u32::MAX; a count that stops is no harm.
                if *useful {
                    tally.useful = tally.useful.saturating_add(1);
                } else {
                    tally.not_useful = tally.not_useful.saturating_add(1);
                }
                notes.note(Event::Feedback {
                    memory_id,
                    useful: *useful,
                });
            }
        }
        self.applied_lsn = lsn;
    }

    /// The LSN of the last record applied (or the snapshot's).
    pub fn applied_lsn(&self) -> Lsn {
        self.applied_lsn
    }

    /// Ids, keys and the dimension: read them, assign ids and reserve the
    /// dimension for a write (under the read lock).
    pub fn ids(&self) -> &Ids {
        &self.ids
    }

    /// Fixes the dimension by configuration (at start).
    pub fn configure_dimension(&mut self, dim: u32) {
        self.ids.configure_dimension(dim);
    }

    /// The dimension of the stored vectors, once one is stored.
    pub fn dimension(&self) -> Option<u32> {
        Some(self.ids.applied_dimension()).filter(|d| *d != 0)
    }

    /// Live memories.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when no memory is stored.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Namespaces holding at least one memory.
    pub fn namespace_count(&self) -> usize {
        self.namespaces.len()
    }

    /// Every live memory's feedback counts (memories never judged are left out).
    pub fn feedback_tallies(&self) -> Vec<(u64, Tally)> {
        (self.feedback.iter())
            .filter(|(id, _)| self.entries.contains_key(id))
            .map(|(id, tally)| (*id, *tally))
            .collect()
    }

    /// Feedback counts of a memory.
    pub fn feedback(&self, id: u64) -> Tally {
        self.feedback.get(&id).copied().unwrap_or_default()
    }

    /// One memory.
    pub fn get(&self, id: u64) -> Option<MemoryView<'_>> {
        Some(self.entries.get(&id)?.view(self.base.as_deref()))
    }

    /// One memory, taken out of the state (readable with no lock held).
    pub fn memory(&self, id: u64) -> Option<Memory> {
        let entry = self.entries.get(&id)?.clone();
        let base = matches!(entry, Entry::Base(_)).then(|| self.base.clone()).flatten();
        Some(Memory::new(entry, base))
    }

    /// Ids of a namespace's memories carrying all `tags` ("" = every
    /// namespace), ascending. In one go: the store uses [`State::take_chunk`].
    pub fn matching(&self, namespace: &str, tags: &[(&str, &str)]) -> Vec<u64> {
        let mut cursor = Cursor::default();
        let mut ids = Vec::new();
        while !cursor.is_done() {
            let chunk = self.take_chunk(namespace, &mut cursor);
            let carrying = chunk.iter().map(Memory::view).filter(|view| view.has_tags(tags));
            ids.extend(carrying.map(|view| view.id()));
        }
        ids.sort_unstable();
        ids
    }

    /// The next memories of `namespace` ("" = every namespace) after
    /// `cursor`: at most [`SLICE_MEMORIES`] of them or [`SLICE_TEXT_BYTES`]
    /// of text and vectors, so the caller holds the lock for a bounded slice
    /// and does the work on them after releasing it.
    pub fn take_chunk(&self, namespace: &str, cursor: &mut Cursor) -> Vec<Memory> {
        self.page(namespace, cursor, SLICE_MEMORIES, SLICE_TEXT_BYTES)
    }

    /// One page of a listing: the memories of `namespace` ("" = every
    /// namespace) after `cursor`, in (namespace, id) order, at most `limit`
    /// of them and about `max_bytes` of text and vectors (at least one). The
    /// cursor is left after the last one, or done when nothing follows it.
    pub fn page(&self, namespace: &str, cursor: &mut Cursor, limit: usize, max_bytes: usize) -> Vec<Memory> {
        let mut page: Vec<Memory> = Vec::new();
        let mut bytes = 0;
        for (name, ids) in self.namespaces_from(namespace, cursor) {
            let from = match &cursor.after {
                Some((after, id)) if after == name => Bound::Excluded(*id),
                _ => Bound::Unbounded,
            };
            for id in ids.range((from, Bound::Unbounded)) {
                let memory = self.memory(*id).expect("namespaces index only live memories");
                let size = memory.view().scan_bytes();
                if !page.is_empty() && (page.len() >= limit || bytes + size > max_bytes) {
                    let last = page.last().map(|m| m.view()).expect("page is not empty");
                    cursor.after = Some((last.namespace().to_owned(), last.id()));
                    return page;
                }
                bytes += size;
                page.push(memory);
            }
        }
        cursor.done = true;
        page
    }

    /// The state as of now, detached from the lock: a copy of the id map that
    /// shares every memory's bytes, which never change. A checkpoint writes
    /// the snapshot from it while writes go on.
    pub fn freeze(&self) -> Frozen {
        let mut entries: Vec<(u64, Entry)> = self.entries.iter().map(|(id, e)| (*id, e.clone())).collect();
        entries.sort_unstable_by_key(|(id, _)| *id);
        let mut feedback: Vec<FeedbackTally> = self
            .feedback
            .iter()
            .map(|(id, t)| FeedbackTally {
                memory_id: *id,
                useful: t.useful,
                not_useful: t.not_useful,
            })
            .collect();
        feedback.sort_by_key(|t| t.memory_id);
        Frozen {
            lsn: self.applied_lsn,
            next_id: self.ids.next_id(),
            dim: self.ids.applied_dimension(),
            base: self.base.clone(),
            entries,
            feedback,
        }
    }

    /// After `frozen` was written as `snapshot` (and the snapshot opened):
    /// every memory still exactly as frozen is read from the new snapshot
    /// from now on, which lets go of the WAL records and the old snapshot
    /// that held it. Memories written or deleted since are left alone.
    /// Returns how many memories moved.
    pub fn rebase(&mut self, frozen: &Frozen, snapshot: Arc<Snapshot>) -> usize {
        let same_base = match (&self.base, &frozen.base) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            (None, None) => true,
            _ => false,
        };
        assert!(same_base, "checkpoints run one at a time; only rebase changes the base");
        assert_eq!(
            snapshot.body().memories.len(),
            frozen.entries.len(),
            "the snapshot holds exactly the frozen memories"
        );
        let mut moved = 0;
        for (index, (id, then)) in frozen.entries.iter().enumerate() {
            let Some(now) = self.entries.get_mut(id) else { continue };
            if now.is(then) {
                *now = Entry::Base(index as u32);
                moved += 1;
            }
        }
        // Every memory of the old base was frozen (apply only adds Logged
        // entries), so it either moved just now or changed since: none is left.
        debug_assert_eq!(
            self.entries.values().filter(|e| matches!(e, Entry::Base(_))).count(),
            moved,
            "no entry points into the old base"
        );
        self.base = Some(snapshot);
        moved
    }

    /// Inserts or replaces memory `id`. A key names one live memory: if
    /// another memory holds this one's key (two writes raced for a new key,
    /// or a Forget and a Remember of it crossed), the later record in LSN
    /// order wins and the other memory is removed, here, the same way at
    /// every replay.
    fn put(&mut self, memory: &ArchivedStoredMemory, entry: Entry, notes: &mut Notes<'_>) {
        let id = memory.id.to_native();
        if self.entries.contains_key(&id) {
            self.remove(id, notes);
        }
        let key = memory.key.as_ref().map(|k| k.as_str());
        if let Some(holder) = key.and_then(|key| self.ids.key_holder(&memory.namespace, key)) {
            self.remove(holder, notes);
        }
        if let Some(vector) = memory.vector.as_ref() {
            self.ids.note_applied_dimension(vector.len() as u32);
        }
        self.index(id, &memory.namespace, key);
        self.entries.insert(id, entry);
    }

    fn index(&mut self, id: u64, namespace: &str, key: Option<&str>) {
        match self.namespaces.get_mut(namespace) {
            Some(ids) => {
                ids.insert(id);
            }
            None => {
                self.namespaces.insert(namespace.to_owned(), BTreeSet::from([id]));
            }
        }
        if let Some(key) = key {
            self.ids.hold_key(namespace, key, id);
        }
        self.ids.note_applied_id(id);
    }

    fn remove(&mut self, id: u64, notes: &mut Notes<'_>) {
        let Some(view) = self.get(id) else { return };
        let namespace = view.namespace().to_owned();
        let key = view.key().map(str::to_owned);
        if let Some(ids) = self.namespaces.get_mut(&namespace) {
            ids.remove(&id);
            if ids.is_empty() {
                self.namespaces.remove(&namespace);
            }
        }
        if let Some(key) = key {
            self.ids.release_key(&namespace, &key, id);
        }
        self.entries.remove(&id);
        self.feedback.remove(&id);
        notes.note(Event::Removed(id));
    }

    /// The namespaces a scan of `namespace` still has to visit from `cursor`.
    fn namespaces_from<'a>(
        &'a self,
        namespace: &str,
        cursor: &Cursor,
    ) -> Box<dyn Iterator<Item = (&'a String, &'a BTreeSet<u64>)> + 'a> {
        if cursor.done {
            return Box::new(std::iter::empty());
        }
        if !namespace.is_empty() {
            return Box::new(self.namespaces.get_key_value(namespace).into_iter());
        }
        match &cursor.after {
            Some((after, _)) => Box::new(
                self.namespaces
                    .range::<str, _>((Bound::Included(after.as_str()), Bound::Unbounded)),
            ),
            None => Box::new(self.namespaces.iter()),
        }
    }

    /// Live memories per namespace, in namespace order (the metrics
    /// endpoint's `nexus_namespace_memories`).
    pub fn namespace_sizes(&self) -> impl Iterator<Item = (&str, u64)> + '_ {
        (self.namespaces.iter()).map(|(namespace, ids)| (namespace.as_str(), ids.len() as u64))
    }
}

/// The state at one LSN, outside the lock (see [`State::freeze`]).
pub struct Frozen {
    lsn: Lsn,
    next_id: u64,
    dim: u32,
    base: Option<Arc<Snapshot>>,
    /// By ascending id.
    entries: Vec<(u64, Entry)>,
    feedback: Vec<FeedbackTally>,
}

impl Frozen {
    /// The LSN it reflects.
    pub fn lsn(&self) -> Lsn {
        self.lsn
    }

    /// Everything, borrowed from the archived memories, for the snapshot writer.
    pub fn snapshot_body(&self) -> SnapshotBodyRef<'_> {
        let base = self.base.as_deref();
        SnapshotBodyRef {
            lsn: self.lsn,
            next_id: self.next_id,
            dim: self.dim,
            memories: self
                .entries
                .iter()
                .map(|(_, e)| MemoryRef::of(e.view(base).archived()))
                .collect(),
            feedback: self.feedback.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::model::{StoredMemory, WalRecord};
    use crate::testing::TempDir;

    fn logged(record: WalRecord) -> Arc<LoggedRecord> {
        Arc::new(LoggedRecord::encode(&record))
    }

    fn memory(id: u64, namespace: &str, text: &str, vector: Option<Vec<f32>>) -> StoredMemory {
        StoredMemory {
            id,
            key: None,
            namespace: namespace.into(),
            text: text.into(),
            vector,
            tags: vec![],
            created_at_ms: 0,
            importance: 1.0,
            source: None,
        }
    }

    fn keyed(id: u64, key: &str, text: &str) -> StoredMemory {
        StoredMemory {
            key: Some(key.into()),
            ..memory(id, "a", text, None)
        }
    }

    #[test]
    fn forget_removes_and_the_namespace_index_follows() {
        let mut state = State::from_snapshot(None);
        let batch = vec![
            memory(1, "a", "sky", Some(vec![1.0, 0.0])),
            memory(2, "a", "sea", Some(vec![0.7, 0.7])),
            memory(3, "b", "sun", None),
        ];
        state.apply(1, logged(WalRecord::Remember(batch)));
        assert_eq!(state.matching("a", &[]), vec![1, 2]);
        assert_eq!(state.dimension(), Some(2));
        state.apply(2, logged(WalRecord::Forget(vec![1, 3])));
        assert_eq!(state.matching("", &[]), vec![2]);
        assert_eq!((state.len(), state.namespace_count(), state.applied_lsn()), (1, 1, 2));
    }

    // The hook's contract (follow.rs): the events of a record replay, in
    // order, to exactly the state's change, replaced keys and ids included.
    #[test]
    fn applying_notes_every_removal_and_addition_in_order() {
        let mut state = State::from_snapshot(None);
        let mut events = Vec::new();
        let first = vec![keyed(1, "k", "one"), memory(2, "a", "two", None)];
        state.apply_noting(1, logged(WalRecord::Remember(first)), &mut events);
        assert_eq!(events, vec![Event::Added(0), Event::Added(1)]);
        events.clear();
        // Memory 3 takes key "k" from memory 1; memory 2 is rewritten in place.
        let second = vec![keyed(3, "k", "three"), memory(2, "a", "two again", None)];
        state.apply_noting(2, logged(WalRecord::Remember(second)), &mut events);
        let expected = [Event::Removed(1), Event::Added(0), Event::Removed(2), Event::Added(1)];
        assert_eq!(events, expected);
        events.clear();
        state.apply_noting(3, logged(WalRecord::Forget(vec![3, 99])), &mut events);
        assert_eq!(events, vec![Event::Removed(3)], "an id not live is no event");
        assert_eq!(state.matching("a", &[]), vec![2]);
    }

    #[test]
    fn a_checkpoint_rebases_unchanged_memories_and_keeps_later_writes() {
        let dir = TempDir::new("state-rebase");
        let mut state = State::from_snapshot(None);
        let batch = vec![
            memory(1, "a", "one", Some(vec![1.0, 0.0])),
            memory(2, "a", "two", Some(vec![0.0, 1.0])),
            memory(3, "a", "three", None),
        ];
        state.apply(1, logged(WalRecord::Remember(batch)));
        let frozen = state.freeze();
        // Writes after the freeze: replace 2, delete 3, add 4.
        state.apply(2, logged(WalRecord::Remember(vec![memory(2, "a", "two, again", None)])));
        state.apply(3, logged(WalRecord::Forget(vec![3])));
        state.apply(4, logged(WalRecord::Remember(vec![memory(4, "b", "four", None)])));

        let path = crate::store::snapshot::write(dir.path(), &frozen.snapshot_body()).unwrap();
        let snapshot = Arc::new(Snapshot::open(&path).unwrap());
        assert_eq!(snapshot.lsn(), 1);
        assert_eq!(state.rebase(&frozen, snapshot), 1, "only memory 1 is unchanged");
        drop(frozen);

        let text = |id| state.get(id).map(|m| m.text().to_owned());
        assert_eq!(text(1).as_deref(), Some("one"));
        assert_eq!(text(2).as_deref(), Some("two, again"));
        assert_eq!(text(3), None);
        assert_eq!(text(4).as_deref(), Some("four"));
        assert!(matches!(state.entries.get(&1), Some(Entry::Base(0))));
        assert_eq!(state.applied_lsn(), 4);
        assert_eq!(state.len(), 3);
        // A second freeze reads memory 1 from the new base.
        let again = state.freeze();
        let again = again.snapshot_body();
        assert_eq!(again.memories.iter().map(|m| m.id).collect::<Vec<_>>(), vec![1, 2, 4]);
        let vector = again.memories[0].vector.expect("memory 1 has a vector");
        assert_eq!(vector.iter().map(|x| x.to_native()).collect::<Vec<_>>(), vec![1.0, 0.0]);
    }
}
