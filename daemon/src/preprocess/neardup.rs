//! The near-duplicate index as a store follower: every live memory's
//! MinHash signature in its namespace's LSH buckets ([`NearDupIndex`]), so a
//! Remember can ask whether a new text nearly duplicates a stored one.
//!
//! Start-up: computing a million signatures takes seconds, so the loaded
//! snapshot's memories are not indexed while the store opens; a background
//! thread ([`NearDupFollower::fill`]) reads them from the store after the
//! daemon is serving, while the replayed and new records are indexed as
//! they come (inserting a memory twice replaces it). Until the fill is done
//! a near-duplicate of an older memory may go unnoticed (it is stored, not
//! linked: nothing is lost). A candidate is always checked against the
//! store before it is reported (the fill may have re-added a memory
//! forgotten meanwhile).
//!
//! Cost: about 0.5 KiB of memory per memory (signature and buckets); the
//! policy `off` turns the index off.

use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Instant;

use tracing::{info, warn};

use crate::preprocess::dedup::{DedupConfig, NearDupIndex, NearDuplicate};
use crate::preprocess::minhash::Signature;
use crate::store::{Follower, IndexChange, IndexEvent, Store};

/// The follower's name.
pub const NEARDUP: &str = "neardup";

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

    /// The stored memory of `namespace` that `text` most nearly duplicates,
    /// if one is at or above the threshold and still live in `store`.
    pub fn find(&self, namespace: &str, text: &str, store: &Store) -> Option<NearDuplicate> {
        let index = self.index.read().unwrap_or_else(|p| p.into_inner());
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
                    this.add(view.id(), view.namespace(), view.text());
                    added += 1;
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
            self.index
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .signature(text, signature);
            (self.index.write().unwrap_or_else(|p| p.into_inner())).insert(id, namespace, signature);
        });
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
                IndexEvent::Removed(id) => {
                    self.index.write().unwrap_or_else(|p| p.into_inner()).delete(id);
                }
                IndexEvent::Feedback { .. } => {}
            }
        }
    }
}
