//! What the indexed engines need to apply a [`Filter`] during their search
//! without taking the store's lock per candidate: each live memory's
//! namespace and creation time, and how many memories each namespace holds.
//!
//! [`MemoryMeta`] is a store follower registered before the engines, so it
//! knows a memory before any engine indexes it (followers are told in
//! order). It keeps no file: at open it is told the snapshot's memories and
//! the replayed records like every follower (about 60 ms per million
//! memories). Tags are not kept here: a filter with tags reads the memory
//! from the store, which only a query that asks for tags pays for.
//!
//! Not here: the indexes (`lexical_engine.rs`, `dense.rs`).

use std::collections::{BTreeSet, HashMap};
use std::sync::{RwLock, RwLockReadGuard};

use crate::recall::lexical::id_map::IdMap;
use crate::recall::query::Filter;
use crate::store::{Follower, IndexChange, IndexEvent, Store};

/// The follower's name.
pub const META: &str = "meta";

/// Namespace and creation time of every live memory.
#[derive(Debug, Default)]
pub struct MemoryMeta {
    inner: RwLock<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    by_id: IdMap<u64, Entry>,
    namespace_ids: HashMap<Box<str>, u32>,
    /// Live memories per namespace id, in id (= write) order: the
    /// neighbours of a hit for fusion's conversation context.
    ordered: Vec<BTreeSet<u64>>,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    namespace: u32,
    created_at_ms: i64,
}

impl Inner {
    fn add(&mut self, id: u64, namespace: &str, created_at_ms: i64) {
        self.remove(id);
        let next = self.ordered.len() as u32;
        let ns = *self.namespace_ids.entry(namespace.into()).or_insert(next);
        if ns == next {
            self.ordered.push(BTreeSet::new());
        }
        self.ordered[ns as usize].insert(id);
        self.by_id.insert(
            id,
            Entry {
                namespace: ns,
                created_at_ms,
            },
        );
    }

    fn remove(&mut self, id: u64) {
        if let Some(entry) = self.by_id.remove(&id) {
            self.ordered[entry.namespace as usize].remove(&id);
        }
    }
}

impl Follower for MemoryMeta {
    fn name(&self) -> &'static str {
        META
    }

    fn follow(&self, change: &IndexChange<'_>) {
        let mut inner = self.inner.write().unwrap_or_else(|p| p.into_inner());
        if change.is_snapshot() {
            *inner = Inner::default();
        }
        for event in change.events() {
            match event {
                IndexEvent::Added(memory) => inner.add(memory.id(), memory.namespace(), memory.created_at_ms()),
                IndexEvent::Removed(id) => inner.remove(id),
                IndexEvent::Feedback { .. } => {}
            }
        }
    }
}

impl MemoryMeta {
    /// A reader for one search: holds this map's read lock (not the
    /// store's), so keep it for one search only.
    pub fn reader<'a>(&'a self, filter: &'a Filter<'a>, store: &'a Store) -> MetaFilter<'a> {
        let inner = self.inner.read().unwrap_or_else(|p| p.into_inner());
        let namespace = match filter.namespace {
            "" => NamespaceMatch::Any,
            name => match inner.namespace_ids.get(name) {
                Some(id) => NamespaceMatch::Id(*id),
                None => NamespaceMatch::Unknown,
            },
        };
        MetaFilter {
            inner,
            namespace,
            filter,
            store,
        }
    }

    /// Live memories known.
    pub fn len(&self) -> usize {
        self.inner.read().unwrap_or_else(|p| p.into_inner()).by_id.len()
    }

    /// True when no memory is known.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether `id` is live.
    pub fn contains(&self, id: u64) -> bool {
        (self.inner.read().unwrap_or_else(|p| p.into_inner()).by_id).contains_key(&id)
    }
}

#[derive(Debug, Clone, Copy)]
enum NamespaceMatch {
    Any,
    Id(u32),
    /// A namespace with no memory: nothing passes.
    Unknown,
}

/// A [`Filter`] checked against the metadata (and, for tags, the store).
pub struct MetaFilter<'a> {
    inner: RwLockReadGuard<'a, Inner>,
    namespace: NamespaceMatch,
    filter: &'a Filter<'a>,
    store: &'a Store,
}

impl MetaFilter<'_> {
    /// Whether memory `id` may be returned.
    pub fn accepts(&self, id: u64) -> bool {
        let Some(entry) = self.inner.by_id.get(&id) else {
            return false;
        };
        let namespace_ok = match self.namespace {
            NamespaceMatch::Any => true,
            NamespaceMatch::Id(ns) => entry.namespace == ns,
            NamespaceMatch::Unknown => false,
        };
        namespace_ok
            && self
                .filter
                .created
                .is_none_or(|range| range.contains(entry.created_at_ms))
            && (self.filter.tags.is_empty()
                || (self.store.get(id)).is_some_and(|memory| memory.view().has_tags(self.filter.tags)))
    }

    /// How many memories the namespace part admits (an upper bound on what
    /// passes).
    pub fn expected_matches(&self) -> usize {
        match self.namespace {
            NamespaceMatch::Any => self.inner.by_id.len(),
            NamespaceMatch::Id(ns) => self.inner.ordered[ns as usize].len(),
            NamespaceMatch::Unknown => 0,
        }
    }

    /// True when every live memory passes (no tags, no time range, and the
    /// namespace is all of them): a search may skip the per-id check.
    pub fn admits_all_live(&self) -> bool {
        let scoped = self.filter.tags.is_empty() && self.filter.created.is_none();
        scoped
            && match self.namespace {
                NamespaceMatch::Any => true,
                NamespaceMatch::Id(ns) => self.inner.ordered[ns as usize].len() == self.inner.by_id.len(),
                NamespaceMatch::Unknown => false,
            }
    }

    /// True when only the namespace restricts (no tags, no time range): an
    /// index sharded by namespace need not check ids at all.
    pub fn namespace_only(&self) -> bool {
        self.filter.tags.is_empty() && self.filter.created.is_none()
    }

    /// True when nothing can pass.
    pub fn admits_nothing(&self) -> bool {
        matches!(self.namespace, NamespaceMatch::Unknown)
    }

    /// The memories written just before and after `id` in its namespace,
    /// at most `window` each side, created within `max_gap_ms` of it (the
    /// same conversation, session or document) and accepted by the filter,
    /// with their distance in writes (1 = adjacent), appended to `out`.
    pub fn neighbours(&self, id: u64, window: usize, max_gap_ms: i64, out: &mut Vec<(u64, u32)>) {
        let Some(entry) = self.inner.by_id.get(&id) else { return };
        let ids = &self.inner.ordered[entry.namespace as usize];
        let close = |other: &u64| {
            (self.inner.by_id.get(other)).is_some_and(|e| (e.created_at_ms - entry.created_at_ms).abs() <= max_gap_ms)
        };
        let before = ids.range(..id).rev().take(window).take_while(|other| close(other));
        let before = before.zip(1..).filter(|(other, _)| self.accepts(**other));
        out.extend(before.map(|(other, distance)| (*other, distance)));
        let after = ids.range(id + 1..).take(window).take_while(|other| close(other));
        let after = after.zip(1..).filter(|(other, _)| self.accepts(**other));
        out.extend(after.map(|(other, distance)| (*other, distance)));
    }

    /// A memory's creation time (for recency).
    pub fn created_at_ms(&self, id: u64) -> Option<i64> {
        self.inner.by_id.get(&id).map(|entry| entry.created_at_ms)
    }
}

impl crate::recall::ann::Filter for MetaFilter<'_> {
    fn accepts(&self, id: u64) -> bool {
        MetaFilter::accepts(self, id)
    }

    fn expected_matches(&self) -> Option<usize> {
        let namespace_only = self.filter.tags.is_empty() && self.filter.created.is_none();
        // With tags or a time range the namespace's size over-estimates
        // what passes; a scan is then chosen only for small namespaces.
        Some(if namespace_only {
            MetaFilter::expected_matches(self)
        } else {
            MetaFilter::expected_matches(self) / 2
        })
    }
}
