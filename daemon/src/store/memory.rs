//! A stored memory as the rest of the daemon reads it: in place, never copied.
//!
//! A memory's bytes live either in the snapshot's memory map (written by the
//! last checkpoint) or in the WAL record that brought it ([`LoggedRecord`]);
//! both are immutable, so a [`Memory`] handle that shares them can be read
//! with no lock held, even after the memory was forgotten or a checkpoint
//! moved it. [`MemoryView`] is the borrowed view every reader (recall
//! engines, the handler building an answer, a checkpoint) goes through.
//!
//! Not here: which memories exist (`state.rs`), scoring (`recall/`).

use std::sync::Arc;

use rkyv::rend::f32_le;

use crate::store::logged::LoggedRecord;
use crate::store::model::{ArchivedStoredMemory, ArchivedWalRecord};
use crate::store::snapshot::Snapshot;

/// Where a memory lives. Cloning shares the bytes (both places are immutable).
#[derive(Clone)]
pub(super) enum Entry {
    /// Index into the snapshot's memories.
    Base(u32),
    /// Index into the memories of a WAL record applied after the snapshot.
    Logged(Arc<LoggedRecord>, u32),
}

impl Entry {
    /// The same memory in the same place (not merely equal content).
    pub(super) fn is(&self, other: &Entry) -> bool {
        match (self, other) {
            (Entry::Base(x), Entry::Base(y)) => x == y,
            (Entry::Logged(r, i), Entry::Logged(q, j)) => Arc::ptr_eq(r, q) && i == j,
            _ => false,
        }
    }

    /// The memory, given the snapshot `Base` entries index into.
    pub(super) fn view<'a>(&'a self, base: Option<&'a Snapshot>) -> MemoryView<'a> {
        MemoryView(match self {
            Entry::Logged(logged, index) => match logged.record() {
                ArchivedWalRecord::Remember(memories) => &memories[*index as usize],
                _ => unreachable!("only Remember records hold memories"),
            },
            Entry::Base(index) => {
                let base = base.expect("base entries exist only with a snapshot");
                &base.body().memories[*index as usize]
            }
        })
    }
}

/// A memory taken out of the store: it shares the memory's bytes, which
/// never change, so it can be read with no lock held.
#[derive(Clone)]
pub struct Memory {
    entry: Entry,
    /// The snapshot a `Base` entry points into.
    base: Option<Arc<Snapshot>>,
}

impl Memory {
    pub(super) fn new(entry: Entry, base: Option<Arc<Snapshot>>) -> Self {
        Self { entry, base }
    }

    /// The memory.
    pub fn view(&self) -> MemoryView<'_> {
        self.entry.view(self.base.as_deref())
    }
}

impl std::fmt::Debug for Memory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Memory").field("id", &self.view().id()).finish()
    }
}

/// A read-only view of one memory, wherever it lives.
#[derive(Clone, Copy)]
pub struct MemoryView<'a>(&'a ArchivedStoredMemory);

impl<'a> MemoryView<'a> {
    /// A view of archived bytes the store holds (a record's or the snapshot's).
    pub(super) fn of(memory: &'a ArchivedStoredMemory) -> Self {
        Self(memory)
    }

    /// The archived memory (to write it into a snapshot).
    pub(super) fn archived(&self) -> &'a ArchivedStoredMemory {
        self.0
    }

    /// Memory id.
    pub fn id(&self) -> u64 {
        self.0.id.to_native()
    }

    /// Namespace.
    pub fn namespace(&self) -> &'a str {
        self.0.namespace.as_str()
    }

    /// Client key.
    pub fn key(&self) -> Option<&'a str> {
        self.0.key.as_ref().map(|k| k.as_str())
    }

    /// Text.
    pub fn text(&self) -> &'a str {
        self.0.text.as_str()
    }

    /// The embedding, as stored (little-endian floats, read in place).
    pub fn vector(&self) -> Option<&'a [f32_le]> {
        self.0.vector.as_ref().map(|v| v.as_slice())
    }

    /// Labels, as (key, value).
    pub fn tags(&self) -> impl Iterator<Item = (&'a str, &'a str)> + use<'a> {
        self.0.tags.iter().map(|t| (t.key.as_str(), t.value.as_str()))
    }

    /// When it was written (or the time the client gave), ms since the Unix epoch.
    pub fn created_at_ms(&self) -> i64 {
        self.0.created_at_ms.to_native()
    }

    /// Scoring weight the client gave.
    pub fn importance(&self) -> f32 {
        self.0.importance.to_native()
    }

    /// Provenance.
    pub fn source(&self) -> Option<&'a str> {
        self.0.source.as_ref().map(|s| s.as_str())
    }

    /// True when the memory carries the tag.
    pub fn has_tag(&self, key: &str, value: &str) -> bool {
        self.0.tags.iter().any(|t| t.key == key && t.value == value)
    }

    /// True when the memory carries every one of `tags`.
    pub fn has_tags(&self, tags: &[(&str, &str)]) -> bool {
        tags.iter().all(|(key, value)| self.has_tag(key, value))
    }

    /// What a scan of this memory reads: its text and its vector.
    pub(super) fn scan_bytes(&self) -> usize {
        self.0.text.len() + self.0.vector.as_ref().map_or(0, |v| v.len() * 4)
    }
}
