//! The in-memory state: every live memory, indexed by id, namespace and key.
//!
//! Memories loaded from a snapshot stay in the memory map (their text and
//! vector are read in place); memories written since live on the heap. The
//! state changes only through [`State::apply`], called in LSN order by the
//! WAL's writer thread after a record is durable (and by replay at start), so
//! the state is always exactly "snapshot + applied WAL records".
//!
//! Recall here is an exact scan (vector cosine and/or term overlap); the
//! indexed recall pipeline is a later issue. Nothing here does I/O.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use crate::store::model::{ArchivedStoredMemory, StoredMemory, StoredTag, WalRecord};
use crate::store::snapshot::{FeedbackTally, Snapshot, SnapshotBody};
use crate::store::wal::Lsn;

/// Where a memory lives.
enum Entry {
    /// Index into the snapshot's memories.
    Base(u32),
    /// Written after the snapshot.
    Heap(Box<StoredMemory>),
}

/// A read-only view of one memory, wherever it lives.
#[derive(Clone, Copy)]
pub enum MemoryView<'a> {
    /// In the snapshot's memory map.
    Base(&'a ArchivedStoredMemory),
    /// On the heap.
    Heap(&'a StoredMemory),
}

/// Feedback counts of one memory.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    /// Times judged useful.
    pub useful: u32,
    /// Times judged not useful.
    pub not_useful: u32,
}

/// A recall query, validated.
#[derive(Debug, Clone, Copy)]
pub struct Query<'a> {
    /// Namespace to search ("" = all).
    pub namespace: &'a str,
    /// Query text.
    pub text: Option<&'a str>,
    /// Query vector (dimension already checked).
    pub vector: Option<&'a [f32]>,
    /// Results wanted.
    pub k: usize,
    /// Required tags (key, value).
    pub filter: &'a [(&'a str, &'a str)],
}

/// One scored result.
#[derive(Debug, Clone, PartialEq)]
pub struct Scored {
    /// Memory id.
    pub id: u64,
    /// Final score.
    pub score: f32,
    /// Cosine similarity, when both sides have vectors.
    pub vector: Option<f32>,
    /// Fraction of query terms found, when the query has text.
    pub lexical: Option<f32>,
}

/// The live memories.
#[derive(Default)]
pub struct State {
    base: Option<Arc<Snapshot>>,
    entries: HashMap<u64, Entry>,
    namespaces: HashMap<String, BTreeSet<u64>>,
    keys: HashMap<(String, String), u64>,
    feedback: HashMap<u64, Tally>,
    dim: Option<u32>,
    next_id: u64,
    applied_lsn: Lsn,
}

impl State {
    /// A state holding exactly the snapshot's memories (or nothing).
    pub fn from_snapshot(snapshot: Option<Arc<Snapshot>>) -> Self {
        let mut state = Self {
            next_id: 1,
            ..Self::default()
        };
        let Some(snapshot) = snapshot else { return state };
        let body = snapshot.body();
        state.applied_lsn = body.lsn.to_native();
        state.next_id = body.next_id.to_native().max(1);
        state.dim = Some(body.dim.to_native()).filter(|d| *d != 0);
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
    pub fn apply(&mut self, lsn: Lsn, record: WalRecord) {
        debug_assert!(lsn > self.applied_lsn, "records are applied in LSN order");
        match record {
            WalRecord::Remember(memories) => memories.into_iter().for_each(|m| self.put(m)),
            WalRecord::Forget(ids) => ids.into_iter().for_each(|id| self.remove(id)),
            WalRecord::Feedback { memory_id, useful, .. } => {
                let tally = self.feedback.entry(memory_id).or_default();
                if useful {
                    tally.useful += 1;
                } else {
                    tally.not_useful += 1;
                }
            }
        }
        self.applied_lsn = lsn;
    }

    /// The LSN of the last record applied (or the snapshot's).
    pub fn applied_lsn(&self) -> Lsn {
        self.applied_lsn
    }

    /// The next id never handed out.
    pub fn next_id(&self) -> u64 {
        self.next_id
    }

    /// The store's vector dimension, once fixed.
    pub fn dimension(&self) -> Option<u32> {
        self.dim
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

    /// The id a key already has in a namespace.
    pub fn id_for_key(&self, namespace: &str, key: &str) -> Option<u64> {
        self.keys.get(&(namespace.to_owned(), key.to_owned())).copied()
    }

    /// Every (namespace, key, id) of a keyed memory.
    pub fn keyed(&self) -> impl Iterator<Item = (&str, &str, u64)> {
        self.keys
            .iter()
            .map(|((namespace, key), id)| (namespace.as_str(), key.as_str(), *id))
    }

    /// Feedback counts of a memory.
    pub fn feedback(&self, id: u64) -> Tally {
        self.feedback.get(&id).copied().unwrap_or_default()
    }

    /// One memory.
    pub fn get(&self, id: u64) -> Option<MemoryView<'_>> {
        match self.entries.get(&id)? {
            Entry::Heap(memory) => Some(MemoryView::Heap(memory)),
            Entry::Base(index) => {
                let base = self.base.as_ref().expect("base entries exist only with a snapshot");
                Some(MemoryView::Base(&base.body().memories[*index as usize]))
            }
        }
    }

    /// Ids of a namespace's memories carrying all `tags` ("" = every namespace).
    pub fn matching(&self, namespace: &str, tags: &[(&str, &str)]) -> Vec<u64> {
        let mut ids: Vec<u64> = self.ids_in(namespace).filter(|id| self.has_tags(*id, tags)).collect();
        ids.sort_unstable();
        ids
    }

    /// Exact recall: scores every candidate, returns the best `k`.
    pub fn recall(&self, query: &Query<'_>) -> Vec<Scored> {
        let terms = query.text.map(terms).unwrap_or_default();
        let mut scored: Vec<Scored> = self
            .ids_in(query.namespace)
            .filter(|id| self.has_tags(*id, query.filter))
            .filter_map(|id| self.score(id, query.vector, &terms))
            .collect();
        scored.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.id.cmp(&b.id)));
        scored.truncate(query.k);
        scored
    }

    /// Everything, as owned values, for a checkpoint.
    pub fn to_snapshot_body(&self) -> SnapshotBody {
        let mut ids: Vec<u64> = self.entries.keys().copied().collect();
        ids.sort_unstable();
        let memories = ids
            .iter()
            .filter_map(|id| self.get(*id))
            .map(|view| view.to_owned())
            .collect();
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
        SnapshotBody {
            lsn: self.applied_lsn,
            next_id: self.next_id,
            dim: self.dim.unwrap_or(0),
            memories,
            feedback,
        }
    }

    fn put(&mut self, memory: StoredMemory) {
        if self.entries.contains_key(&memory.id) {
            self.remove(memory.id);
        }
        if let Some(vector) = &memory.vector {
            self.dim.get_or_insert(vector.len() as u32);
        }
        self.next_id = self.next_id.max(memory.id + 1);
        self.index(memory.id, &memory.namespace, memory.key.as_deref());
        self.entries.insert(memory.id, Entry::Heap(Box::new(memory)));
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
            self.keys.insert((namespace.to_owned(), key.to_owned()), id);
        }
        self.next_id = self.next_id.max(id + 1);
    }

    fn remove(&mut self, id: u64) {
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
            let slot = (namespace, key);
            if self.keys.get(&slot) == Some(&id) {
                self.keys.remove(&slot);
            }
        }
        self.entries.remove(&id);
        self.feedback.remove(&id);
    }

    fn ids_in<'a>(&'a self, namespace: &str) -> Box<dyn Iterator<Item = u64> + 'a> {
        if namespace.is_empty() {
            return Box::new(self.entries.keys().copied());
        }
        match self.namespaces.get(namespace) {
            Some(ids) => Box::new(ids.iter().copied()),
            None => Box::new(std::iter::empty()),
        }
    }

    fn has_tags(&self, id: u64, tags: &[(&str, &str)]) -> bool {
        tags.is_empty()
            || self
                .get(id)
                .is_some_and(|view| tags.iter().all(|(k, v)| view.has_tag(k, v)))
    }

    fn score(&self, id: u64, query_vector: Option<&[f32]>, terms: &[String]) -> Option<Scored> {
        let view = self.get(id)?;
        let vector = query_vector.and_then(|q| view.cosine(q));
        let lexical = (!terms.is_empty()).then(|| view.term_overlap(terms));
        let score = match (vector, lexical) {
            (Some(v), Some(l)) => 0.5 * v + 0.5 * l,
            (Some(v), None) => v,
            (None, Some(l)) if l > 0.0 => l,
            _ => return None,
        };
        Some(Scored {
            id,
            score,
            vector,
            lexical,
        })
    }
}

impl<'a> MemoryView<'a> {
    /// Memory id.
    pub fn id(&self) -> u64 {
        match self {
            Self::Base(m) => m.id.to_native(),
            Self::Heap(m) => m.id,
        }
    }

    /// Namespace.
    pub fn namespace(&self) -> &'a str {
        match self {
            Self::Base(m) => m.namespace.as_str(),
            Self::Heap(m) => &m.namespace,
        }
    }

    /// Client key.
    pub fn key(&self) -> Option<&'a str> {
        match self {
            Self::Base(m) => m.key.as_ref().map(|k| k.as_str()),
            Self::Heap(m) => m.key.as_deref(),
        }
    }

    /// Text.
    pub fn text(&self) -> &'a str {
        match self {
            Self::Base(m) => m.text.as_str(),
            Self::Heap(m) => &m.text,
        }
    }

    /// True when the memory carries the tag.
    pub fn has_tag(&self, key: &str, value: &str) -> bool {
        match self {
            Self::Base(m) => m.tags.iter().any(|t| t.key == key && t.value == value),
            Self::Heap(m) => m.tags.iter().any(|t| t.key == key && t.value == value),
        }
    }

    /// Cosine similarity with `query`, if the memory has a vector of that size.
    pub fn cosine(&self, query: &[f32]) -> Option<f32> {
        match self {
            Self::Base(m) => {
                let v = m.vector.as_ref()?;
                (v.len() == query.len()).then(|| cosine(query, v.iter().map(|x| x.to_native())))
            }
            Self::Heap(m) => {
                let v = m.vector.as_ref()?;
                (v.len() == query.len()).then(|| cosine(query, v.iter().copied()))
            }
        }
    }

    /// Fraction of the query's distinct terms that occur in the text.
    pub fn term_overlap(&self, query_terms: &[String]) -> f32 {
        let text = terms(self.text());
        let found = query_terms.iter().filter(|t| text.contains(t)).count();
        found as f32 / query_terms.len() as f32
    }

    /// An owned copy.
    pub fn to_owned(&self) -> StoredMemory {
        match self {
            Self::Heap(m) => (*m).clone(),
            Self::Base(m) => StoredMemory {
                id: m.id.to_native(),
                key: m.key.as_ref().map(|k| k.to_string()),
                namespace: m.namespace.to_string(),
                text: m.text.to_string(),
                vector: m.vector.as_ref().map(|v| v.iter().map(|x| x.to_native()).collect()),
                tags: m
                    .tags
                    .iter()
                    .map(|t| StoredTag {
                        key: t.key.to_string(),
                        value: t.value.to_string(),
                    })
                    .collect(),
                created_at_ms: m.created_at_ms.to_native(),
                importance: m.importance.to_native(),
                source: m.source.as_ref().map(|s| s.to_string()),
            },
        }
    }
}

/// Lower-cased alphanumeric terms, deduplicated, in first-seen order.
fn terms(text: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for word in text.split(|c: char| !c.is_alphanumeric()).filter(|w| !w.is_empty()) {
        let word = word.to_lowercase();
        if !out.contains(&word) {
            out.push(word);
        }
    }
    out
}

fn cosine(query: &[f32], memory: impl Iterator<Item = f32>) -> f32 {
    let (mut dot, mut qq, mut mm) = (0f32, 0f32, 0f32);
    for (q, m) in query.iter().zip(memory) {
        dot += q * m;
        qq += q * q;
        mm += m * m;
    }
    if qq == 0.0 || mm == 0.0 {
        0.0
    } else {
        dot / (qq.sqrt() * mm.sqrt())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn recall_ranks_by_cosine_within_the_namespace() {
        let mut state = State::from_snapshot(None);
        let batch = vec![
            memory(1, "a", "sky", Some(vec![1.0, 0.0])),
            memory(2, "a", "sea", Some(vec![0.7, 0.7])),
            memory(3, "b", "sun", Some(vec![1.0, 0.0])),
        ];
        state.apply(1, WalRecord::Remember(batch));
        let query = Query {
            namespace: "a",
            text: None,
            vector: Some(&[1.0, 0.0]),
            k: 10,
            filter: &[],
        };
        let ids: Vec<u64> = state.recall(&query).iter().map(|s| s.id).collect();
        assert_eq!(ids, vec![1, 2]);
        assert_eq!(state.dimension(), Some(2));
    }

    #[test]
    fn text_recall_needs_a_shared_term_and_forget_removes() {
        let mut state = State::from_snapshot(None);
        let batch = vec![
            memory(1, "a", "Caroline went hiking", None),
            memory(2, "a", "Melanie paints", None),
        ];
        state.apply(1, WalRecord::Remember(batch));
        let query = Query {
            namespace: "a",
            text: Some("who went hiking?"),
            vector: None,
            k: 5,
            filter: &[],
        };
        assert_eq!(state.recall(&query).iter().map(|s| s.id).collect::<Vec<_>>(), vec![1]);
        state.apply(2, WalRecord::Forget(vec![1]));
        assert!(state.recall(&query).is_empty());
        assert_eq!(state.len(), 1);
        assert_eq!(state.applied_lsn(), 2);
    }
}
