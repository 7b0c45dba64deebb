//! One source for ids, keys and the vector dimension: the applied state's.
//!
//! A write needs its ids and its vector dimension before it is logged (replay
//! never invents them), but which memory a client key names is decided only
//! when a record is applied, in LSN order. So whatever order concurrent
//! writes are logged in, and whichever of them fail, the key index is exactly
//! that of the records applied: at most one live memory per (namespace, key),
//! the same in memory and after a replay. (It used to be a second map beside
//! the state, updated before logging: a Forget released its key before its
//! record was logged, so a failed Forget, or a Remember racing it, left a live
//! memory whose key was no longer indexed and the next Remember of that key
//! created a second memory.)
//!
//! - Ids: a Remember of a key already live reuses that memory's id (an
//!   upsert); anything else takes a fresh id from one counter that only grows
//!   (reserving is an atomic add under the state's read lock). When two writes
//!   race for a new key they get different ids and the later one in LSN order
//!   replaces the earlier (see [`Ids::key_holder`] in `State::put`).
//! - The dimension: the first vector reserves it (a compare-and-swap), so two
//!   racing first writes of different dimensions cannot both be logged. A
//!   reservation whose write then fails stays until the next start, which
//!   takes the dimension from the applied memories (or the configuration).
//!
//! Not here: which memories exist (`state.rs`), validation (`model.rs`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use crate::store::model::MemoryRef;

/// Ids, keys and the dimension. Lives inside the `State` (behind its lock):
/// reads and reservations take the read lock, apply the write lock.
#[derive(Debug)]
pub struct Ids {
    /// namespace → key → the live memory holding it. Nested so a lookup by
    /// `&str` needs no allocation.
    keys: HashMap<String, HashMap<String, u64>>,
    /// Keys in `keys` (all namespaces).
    key_count: usize,
    /// The next id never handed out (reserved by a write, or applied).
    next_id: AtomicU64,
    /// The dimension of the applied vectors (0: none yet).
    applied_dim: u32,
    /// The dimension writes must use: applied, configured, or reserved by a
    /// write in flight (0: free).
    reserved_dim: AtomicU32,
}

impl Default for Ids {
    fn default() -> Self {
        Self {
            keys: HashMap::new(),
            key_count: 0,
            next_id: AtomicU64::new(1),
            applied_dim: 0,
            reserved_dim: AtomicU32::new(0),
        }
    }
}

impl Ids {
    /// Ids starting at `next_id` (a snapshot's), dimension `dim` (0: free).
    pub fn new(next_id: u64, dim: u32) -> Self {
        Self {
            next_id: AtomicU64::new(next_id.max(1)),
            applied_dim: dim,
            reserved_dim: AtomicU32::new(dim),
            ..Self::default()
        }
    }

    /// Gives each memory its id: a key live in the applied state keeps its
    /// memory's id, the same key twice in one batch gets one id, everything
    /// else a fresh one.
    pub fn assign(&self, memories: &mut [MemoryRef<'_>]) {
        let mut batch_keys: HashMap<(&str, &str), u64> = HashMap::new();
        for memory in memories.iter_mut() {
            memory.id = match memory.key {
                Some(key) => *batch_keys.entry((memory.namespace, key)).or_insert_with(|| {
                    self.key_holder(memory.namespace, key)
                        .unwrap_or_else(|| self.fresh_id())
                }),
                None => self.fresh_id(),
            };
        }
    }

    /// Reserves `dim` as the store's dimension, or returns the one in force.
    pub fn reserve_dimension(&self, dim: u32) -> Result<(), u32> {
        match self
            .reserved_dim
            .compare_exchange(0, dim, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => Ok(()),
            Err(current) if current == dim => Ok(()),
            Err(current) => Err(current),
        }
    }

    /// The dimension writes and queries must use (0: not fixed yet).
    pub fn dimension(&self) -> u32 {
        self.reserved_dim.load(Ordering::Acquire)
    }

    /// The dimension of the applied vectors (0: none yet): what a snapshot keeps.
    pub fn applied_dimension(&self) -> u32 {
        self.applied_dim
    }

    /// Fixes the dimension by configuration (at start, before any write).
    pub fn configure_dimension(&mut self, dim: u32) {
        *self.reserved_dim.get_mut() = dim;
    }

    /// The next id never handed out.
    pub fn next_id(&self) -> u64 {
        self.next_id.load(Ordering::Acquire)
    }

    /// The live memory holding `key` in `namespace`.
    pub fn key_holder(&self, namespace: &str, key: &str) -> Option<u64> {
        self.keys.get(namespace)?.get(key).copied()
    }

    /// Keys held by live memories.
    pub fn key_count(&self) -> usize {
        self.key_count
    }

    /// Every (namespace, key, id) of a keyed live memory.
    pub fn keyed(&self) -> impl Iterator<Item = (&str, &str, u64)> {
        self.keys.iter().flat_map(|(namespace, keys)| {
            keys.iter()
                .map(move |(key, id)| (namespace.as_str(), key.as_str(), *id))
        })
    }

    /// Apply: memory `id` (now live) holds `key`. The caller removed the
    /// key's previous holder first.
    pub(crate) fn hold_key(&mut self, namespace: &str, key: &str, id: u64) {
        if !self.keys.contains_key(namespace) {
            self.keys.insert(namespace.to_owned(), HashMap::new());
        }
        let keys = self.keys.get_mut(namespace).expect("inserted above");
        if keys.insert(key.to_owned(), id).is_none() {
            self.key_count += 1;
        }
    }

    /// Apply: memory `id` is gone; its key (if it still holds it) is free.
    pub(crate) fn release_key(&mut self, namespace: &str, key: &str, id: u64) {
        let Some(keys) = self.keys.get_mut(namespace) else {
            return;
        };
        if keys.get(key) == Some(&id) {
            keys.remove(key);
            self.key_count -= 1;
            if keys.is_empty() {
                self.keys.remove(namespace);
            }
        }
    }

    /// Apply: id `id` exists, so ids below it are never handed out again.
    pub(crate) fn note_applied_id(&mut self, id: u64) {
        let next = self.next_id.get_mut();
        *next = (*next).max(id.saturating_add(1));
    }

    /// Apply: a vector of `dim` is stored (the first fixes the dimension).
    pub(crate) fn note_applied_dimension(&mut self, dim: u32) {
        if self.applied_dim == 0 {
            self.applied_dim = dim;
        }
        let reserved = self.reserved_dim.get_mut();
        if *reserved == 0 {
            *reserved = dim;
        }
    }

    fn fresh_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::AcqRel)
    }
}
