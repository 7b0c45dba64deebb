//! The hook where indexes follow the log: every change to the set of live
//! memories, told to each registered [`Follower`] in LSN order.
//!
//! A follower (a search engine's index, in `recall/`) is given to
//! `Store::open_with`. It is told, in LSN order and never twice:
//! - at open, the loaded snapshot's memories (one change at the snapshot's
//!   LSN, every memory [`IndexEvent::Added`]);
//! - each WAL record replayed after it;
//! - after start, each durable record, once the apply step has applied its
//!   group to the state and released the state's write lock, and before any
//!   writer of that group is acknowledged (`apply.rs`).
//!
//! **What an acknowledgement promises.** When a write is acknowledged it is
//! durable (per the fsync policy), applied to the state, and every follower's
//! `follow` has returned for it: the very next recall, through any engine,
//! sees it (and no longer sees what it forgot or replaced). Engines do not
//! need to fall back to the state for writes they have not indexed yet; the
//! price is that a follower's `follow` is on the write path (it runs on the
//! apply thread, so keep it to updating a mutable part: building a graph
//! belongs off this path).
//!
//! A follower that panics has missed that change: the panic is caught (one
//! index must not stop every writer), logged with the follower's name and
//! the LSN, and counted (`follower_panics` in Stats); that index must be
//! rebuilt from the store.
//!
//! Not here: what an index does with a change (`recall/`), applying records
//! to the state (`state.rs`).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::store::memory::MemoryView;
use crate::store::model::ArchivedStoredMemory;
use crate::store::wal::Lsn;

/// Something kept in step with the live memories (an engine's index).
pub trait Follower: Send + Sync {
    /// A short stable name ("scan", "ann", "lexical", ...) for logs, errors and Stats.
    fn name(&self) -> &'static str;

    /// Brings the index up to date with `change` (see the module docs for
    /// when it runs and what returning from it promises). Changes arrive in
    /// LSN order; a follower whose own image already covers `change.lsn()`
    /// ignores it.
    fn follow(&self, change: &IndexChange<'_>);

    /// Saves the index (called after each checkpoint wrote its snapshot,
    /// off the write path). The saved image must cover every change this
    /// follower returned from before the call; a failure is logged and the
    /// next start rebuilds what it cannot load.
    fn save(&self) -> Result<(), String> {
        Ok(())
    }
}

/// What one record (or the loaded snapshot) changed, in order.
pub struct IndexChange<'a> {
    lsn: Lsn,
    /// The memories `Event::Added` indexes into: the record's, or the snapshot's.
    memories: &'a [ArchivedStoredMemory],
    events: Events<'a>,
}

/// The events of a change: listed, or "every memory added" (a snapshot load).
#[derive(Clone, Copy)]
enum Events<'a> {
    Listed(&'a [Event]),
    AllAdded,
}

/// One step of a change, as the state applied it (internal form: indices
/// into the change's memories, so recording it allocates nothing per memory).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Event {
    /// The memory at this index of the record became live.
    Added(u32),
    /// This memory is gone (forgotten, or replaced by a later write of its id or key).
    Removed(u64),
    /// A memory was judged.
    Feedback {
        /// The memory judged.
        memory_id: u64,
        /// The judgement.
        useful: bool,
    },
}

/// One step of a change, as a follower reads it.
#[derive(Clone, Copy)]
pub enum IndexEvent<'a> {
    /// This memory is now live (a replaced memory was `Removed` just before).
    Added(MemoryView<'a>),
    /// This memory is no longer live: remove it from the index.
    Removed(u64),
    /// Feedback on a memory (for the learning engine).
    Feedback {
        /// The memory judged.
        memory_id: u64,
        /// The judgement.
        useful: bool,
    },
}

impl<'a> IndexChange<'a> {
    /// A record's change: `memories` are its memories (empty unless a Remember).
    pub(crate) fn record(lsn: Lsn, memories: &'a [ArchivedStoredMemory], events: &'a [Event]) -> Self {
        Self {
            lsn,
            memories,
            events: Events::Listed(events),
        }
    }

    /// The loaded snapshot: every one of its memories added.
    pub(crate) fn snapshot(lsn: Lsn, memories: &'a [ArchivedStoredMemory]) -> Self {
        Self {
            lsn,
            memories,
            events: Events::AllAdded,
        }
    }

    /// True for the loaded snapshot's change (every memory added): an index
    /// whose own image does not cover its LSN starts over from it.
    pub fn is_snapshot(&self) -> bool {
        matches!(self.events, Events::AllAdded)
    }

    /// How many memories the change adds at most (for reserving).
    pub fn added_len(&self) -> usize {
        self.memories.len()
    }

    /// The LSN of the record (or of the snapshot) this change is.
    pub fn lsn(&self) -> Lsn {
        self.lsn
    }

    /// The steps, in the order the state applied them. A memory written
    /// twice in one batch (one key) is added, removed, and added again.
    pub fn events(&self) -> impl Iterator<Item = IndexEvent<'a>> + 'a {
        let memories = self.memories;
        let (listed, all) = match self.events {
            Events::Listed(events) => (events, 0..0),
            Events::AllAdded => (&[][..], 0..memories.len()),
        };
        let added = all.map(move |index| IndexEvent::Added(MemoryView::of(&memories[index])));
        let listed = listed.iter().map(move |event| match *event {
            Event::Added(index) => IndexEvent::Added(MemoryView::of(&memories[index as usize])),
            Event::Removed(id) => IndexEvent::Removed(id),
            Event::Feedback { memory_id, useful } => IndexEvent::Feedback { memory_id, useful },
        });
        added.chain(listed)
    }
}

/// The followers of one store, and how many of their calls panicked.
#[derive(Default)]
pub(super) struct Followers {
    list: Vec<Arc<dyn Follower>>,
    panics: AtomicU64,
}

impl Followers {
    pub(super) fn new(list: Vec<Arc<dyn Follower>>) -> Self {
        Self {
            list,
            panics: AtomicU64::new(0),
        }
    }

    /// True when nobody follows (the apply step then records no events).
    pub(super) fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// Tells every follower, each isolated from the others' panics.
    pub(super) fn tell(&self, change: &IndexChange<'_>) {
        for follower in &self.list {
            let told = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| follower.follow(change)));
            if told.is_err() {
                self.panics.fetch_add(1, Ordering::Relaxed);
                tracing::error!(
                    follower = follower.name(),
                    lsn = change.lsn(),
                    "an index panicked following the log; it missed this change and must be rebuilt"
                );
            }
        }
    }

    /// Saves every follower's index, each isolated from the others'
    /// failures and panics.
    pub(super) fn save_all(&self) {
        for follower in &self.list {
            let started = std::time::Instant::now();
            match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| follower.save())) {
                Ok(Ok(())) => tracing::debug!(
                    follower = follower.name(),
                    ms = started.elapsed().as_millis() as u64,
                    "index saved"
                ),
                Ok(Err(error)) => tracing::warn!(
                    follower = follower.name(),
                    %error,
                    "index not saved; the next start rebuilds what it cannot load"
                ),
                Err(_) => tracing::error!(follower = follower.name(), "an index panicked while saving"),
            }
        }
    }

    /// Calls to `follow` that panicked since start.
    pub(super) fn panics(&self) -> u64 {
        self.panics.load(Ordering::Relaxed)
    }
}
