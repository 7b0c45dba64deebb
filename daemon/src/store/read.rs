//! Reads: single memories, and scans in bounded chunks under a deadline.
//!
//! A read never holds the state's lock for long: a scan takes one chunk at a
//! time (`State::take_chunk`: at most `SLICE_MEMORIES` memories or
//! `SLICE_TEXT_BYTES` of text), works on it with no lock held (the chunk
//! shares the memories' bytes), then checks the request's deadline and lets
//! other tasks have the worker thread. So the apply thread, and with it every
//! writer, waits at most one chunk for a reader (issue 7, scenario 3).
//!
//! Not here: what a recall does with the memories (`recall/`), writes
//! (`write.rs`).

use crate::store::memory::Memory;
use crate::store::model::Limits;
use crate::store::state::Cursor;
use crate::store::{Store, wal::Lsn};

/// When a request must be answered by: CLOCK_MONOTONIC nanoseconds, as the
/// client put it in the frame (0: no deadline).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Deadline {
    at_ns: u64,
}

/// The deadline passed while the request was being answered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the deadline passed {late_us} µs ago, the request stopped after scanning {scanned} memories")]
pub struct DeadlineExceeded {
    /// How far past the deadline the check found itself.
    pub late_us: u64,
    /// Memories read before it stopped.
    pub scanned: u64,
}

impl Deadline {
    /// No deadline.
    pub const NONE: Deadline = Deadline { at_ns: 0 };

    /// At `at_ns` on CLOCK_MONOTONIC (0: none).
    pub fn at_ns(at_ns: u64) -> Self {
        Self { at_ns }
    }

    /// Time left until the deadline (None: no deadline; zero once passed).
    pub fn remaining(&self) -> Option<std::time::Duration> {
        (self.at_ns != 0).then(|| {
            let now_ns = nexus_shm_protocol::monotonic_now_ns();
            std::time::Duration::from_nanos(self.at_ns.saturating_sub(now_ns))
        })
    }

    /// `Err` once the deadline has passed, saying how far the work got.
    pub fn check(&self, scanned: u64) -> Result<(), DeadlineExceeded> {
        let now_ns = nexus_shm_protocol::monotonic_now_ns();
        if self.at_ns == 0 || now_ns <= self.at_ns {
            return Ok(());
        }
        Err(DeadlineExceeded {
            late_us: (now_ns - self.at_ns) / 1000,
            scanned,
        })
    }
}

impl Store {
    /// One live memory.
    pub fn get(&self, id: u64) -> Option<Memory> {
        self.read().memory(id)
    }

    /// The live memories among `ids`, in their order (a forgotten one is
    /// `None`), under one short read lock.
    pub fn memories(&self, ids: impl IntoIterator<Item = u64>) -> Vec<Option<Memory>> {
        let state = self.read();
        ids.into_iter().map(|id| state.memory(id)).collect()
    }

    /// The feedback counts of each of `ids` (useful, not useful), under one
    /// short read lock: the learning factor of fusion.
    pub fn feedback_tallies(&self, ids: impl IntoIterator<Item = u64>) -> Vec<crate::store::state::Tally> {
        let state = self.read();
        ids.into_iter().map(|id| state.feedback(id)).collect()
    }

    /// Every live memory's feedback counts, as of now (the learning
    /// engine's starting point at open).
    pub fn all_feedback(&self) -> Vec<(u64, crate::store::state::Tally)> {
        self.read().feedback_tallies()
    }

    /// One page of a listing under one short read lock (see
    /// [`State::page`](crate::store::state::State::page)): the memories, and
    /// where the next page starts (`None` after the last memory).
    pub fn list(
        &self,
        namespace: &str,
        after: Option<(String, u64)>,
        limit: usize,
        max_bytes: usize,
    ) -> (Vec<Memory>, Option<(String, u64)>) {
        let mut cursor = match after {
            Some((namespace, id)) => Cursor::after(namespace, id),
            None => Cursor::default(),
        };
        let page = self.read().page(namespace, &mut cursor, limit.max(1), max_bytes);
        let next = if cursor.is_done() {
            None
        } else {
            cursor.position().map(|(namespace, id)| (namespace.to_owned(), id))
        };
        (page, next)
    }

    /// Live memories.
    pub fn len(&self) -> usize {
        self.read().len()
    }

    /// True when no memory is live.
    pub fn is_empty(&self) -> bool {
        self.read().is_empty()
    }

    /// The LSN of the last record applied to the state.
    pub fn applied_lsn(&self) -> Lsn {
        self.read().applied_lsn()
    }

    /// The dimension writes and queries must use (0: not fixed yet).
    pub fn dimension(&self) -> u32 {
        self.read().ids().dimension()
    }

    /// The limits requests are checked against.
    pub fn limits(&self) -> &Limits {
        &self.inner.limits
    }

    /// Hands every live memory to `each`, a chunk at a time, with no
    /// deadline: for start-up work (an index rebuilt from the store), never
    /// for a request.
    pub fn for_each_memory(&self, mut each: impl FnMut(&Memory)) {
        let mut cursor = Cursor::default();
        while !cursor.is_done() {
            let chunk = self.read().take_chunk("", &mut cursor);
            chunk.iter().for_each(&mut each);
        }
    }

    /// Hands `namespace`'s memories ("" = all) to `each`, a chunk at a time
    /// (see the module docs): the read lock is held only while a chunk is
    /// taken, `each` runs with no lock held, and between chunks the deadline
    /// is checked and other tasks get this worker thread. Returns how many
    /// memories it handed over.
    pub async fn scan(
        &self,
        namespace: &str,
        deadline: Deadline,
        mut each: impl FnMut(&[Memory]),
    ) -> Result<u64, DeadlineExceeded> {
        let mut cursor = Cursor::default();
        let mut scanned = 0u64;
        while !cursor.is_done() {
            let chunk = self.read().take_chunk(namespace, &mut cursor);
            scanned += chunk.len() as u64;
            each(&chunk);
            drop(chunk);
            deadline.check(scanned)?;
            tokio::task::yield_now().await;
        }
        Ok(scanned)
    }

    /// Runs `f` over (namespace, live memories) pairs, in namespace order,
    /// under one read lock (so `f` should be quick: it holds writes back).
    /// For the metrics endpoint, which keeps only the largest few.
    pub fn with_namespace_sizes<R>(&self, f: impl FnOnce(&mut dyn Iterator<Item = (&str, u64)>) -> R) -> R {
        let state = self.read();
        f(&mut state.namespace_sizes())
    }
}
