//! The apply step: durable records become visible, in LSN order, and only
//! then are their writers acknowledged.
//!
//! The WAL's writer thread hands each durable group to the [`Applier`] (its
//! `Committer`). A group is applied on the `nexus-apply` thread: under one
//! write lock of the state, each record in LSN order; then, with the lock
//! released, each record's change is told to the followers (the indexes,
//! `follow.rs`), in LSN order; then each writer is answered. So an
//! acknowledged write is durable, in the state, and in every index (the
//! promise `follow.rs` spells out), and the writer thread starts the next
//! group's write and fdatasync while this one is applied: CPU work overlaps
//! the disk's.
//!
//! Not here: what applying a record does (`state.rs`), the WAL itself (`wal/`).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::SyncSender;
use std::sync::{Arc, RwLock};
use std::thread::JoinHandle;

use tokio::sync::oneshot;

use crate::store::error::StoreError;
use crate::store::follow::{Event, Followers, IndexChange};
use crate::store::logged::LoggedRecord;
use crate::store::model::ArchivedWalRecord;
use crate::store::state::State;
use crate::store::wal::{Committer, Lsn, WalError};

/// Groups of durable records waiting for the apply thread. Bounded: when the
/// apply thread falls this far behind, the WAL writer waits for it.
const APPLY_QUEUE_GROUPS: usize = 64;

/// A lone record up to this size is applied on the WAL thread itself when the
/// apply thread has nothing pending: for a single writer that saves a wake-up
/// (~15 µs here) per write, and applying it takes microseconds.
const INLINE_APPLY_MAX_BYTES: usize = 64 << 10;

/// A record on its way through the WAL, with the reply for its writer.
pub(super) struct Ticket {
    pub(super) record: Arc<LoggedRecord>,
    pub(super) done: oneshot::Sender<Result<Lsn, Arc<WalError>>>,
}

/// The WAL's view of a record the state will also hold: the same bytes, not a copy.
pub(super) struct SharedRecord(pub(super) Arc<LoggedRecord>);

impl AsRef<[u8]> for SharedRecord {
    fn as_ref(&self) -> &[u8] {
        self.0.bytes()
    }
}

/// What the apply step works on: the state and who follows it.
struct Target {
    state: Arc<RwLock<State>>,
    followers: Arc<Followers>,
}

/// The WAL's committer. On the writer thread it only collects each durable
/// group and hands it over with one wake-up; the `nexus-apply` thread applies
/// it (see the module docs). A lone small record with nothing queued before
/// it is applied right here instead (see [`INLINE_APPLY_MAX_BYTES`]); LSN
/// order holds because the apply thread has then finished every earlier group.
pub(super) struct Applier {
    target: Arc<Target>,
    /// Groups sent to the apply thread and not yet applied and acknowledged.
    queued: Arc<AtomicUsize>,
    group: Vec<(Lsn, Ticket)>,
    /// `None` once dropped (then the thread is joined).
    to_thread: Option<SyncSender<Vec<(Lsn, Ticket)>>>,
    thread: Option<JoinHandle<()>>,
}

impl Applier {
    /// Starts the apply thread for `state`, telling `followers` every change.
    pub(super) fn start(state: Arc<RwLock<State>>, followers: Arc<Followers>) -> Result<Self, StoreError> {
        let (to_thread, groups) = std::sync::mpsc::sync_channel::<Vec<(Lsn, Ticket)>>(APPLY_QUEUE_GROUPS);
        let queued = Arc::new(AtomicUsize::new(0));
        let target = Arc::new(Target { state, followers });
        let (thread_target, thread_queued) = (Arc::clone(&target), Arc::clone(&queued));
        let thread = std::thread::Builder::new()
            .name("nexus-apply".into())
            .spawn(move || {
                for group in groups {
                    thread_target.apply_group(group);
                    thread_queued.fetch_sub(1, Ordering::Release);
                }
            })
            .map_err(StoreError::ApplyThread)?;
        Ok(Self {
            target,
            queued,
            group: Vec::new(),
            to_thread: Some(to_thread),
            thread: Some(thread),
        })
    }
}

impl Target {
    /// Applies a durable group, tells the followers, then acknowledges each
    /// record: a client hears "ok" only once every read can see its write.
    fn apply_group(&self, group: Vec<(Lsn, Ticket)>) {
        let mut events = Vec::new();
        let mut spans = Vec::new();
        {
            let mut state = self.state.write().unwrap_or_else(|p| p.into_inner());
            for (lsn, ticket) in &group {
                let record = Arc::clone(&ticket.record);
                if self.followers.is_empty() {
                    state.apply(*lsn, record);
                } else {
                    let start = events.len();
                    state.apply_noting(*lsn, record, &mut events);
                    spans.push(start..events.len());
                }
            }
        }
        for ((lsn, ticket), span) in group.iter().zip(spans) {
            self.followers.tell(&record_change(*lsn, &ticket.record, &events[span]));
        }
        for (lsn, ticket) in group {
            let _ = ticket.done.send(Ok(lsn));
        }
    }
}

/// The change a record made, for the followers.
pub(super) fn record_change<'a>(lsn: Lsn, record: &'a LoggedRecord, events: &'a [Event]) -> IndexChange<'a> {
    let memories = match record.record() {
        ArchivedWalRecord::Remember(memories) => memories.as_slice(),
        _ => &[],
    };
    IndexChange::record(lsn, memories, events)
}

impl Committer for Applier {
    type Ticket = Ticket;

    fn durable(&mut self, lsn: Lsn, ticket: Ticket) {
        self.group.push((lsn, ticket));
    }

    fn group_done(&mut self) {
        let group = std::mem::take(&mut self.group);
        if group.is_empty() {
            return;
        }
        if let [(_, lone)] = group.as_slice()
            && lone.record.len() <= INLINE_APPLY_MAX_BYTES
            && self.queued.load(Ordering::Acquire) == 0
        {
            self.target.apply_group(group);
            return;
        }
        let Some(to_thread) = &self.to_thread else {
            self.target.apply_group(group);
            return;
        };
        self.queued.fetch_add(1, Ordering::AcqRel);
        if to_thread.send(group).is_err() {
            // The apply thread is gone (it panicked): the group's tickets are
            // dropped, so their writers get "shutting down" rather than an ack.
            tracing::error!("the apply thread stopped; durable records are no longer applied");
        }
    }

    fn failed(&mut self, ticket: Ticket, error: &Arc<WalError>) {
        let _ = ticket.done.send(Err(Arc::clone(error)));
    }
}

impl Drop for Applier {
    /// Runs when the WAL writer exits: every durable group is applied and
    /// acknowledged before `Wal::shutdown` returns.
    fn drop(&mut self) {
        self.group_done();
        self.to_thread = None;
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            tracing::error!("the apply thread panicked");
        }
    }
}
