//! Admission: how much of the daemon all connections together may take.
//!
//! Four budgets, each checked before the thing it bounds is handed out:
//! - [`FdBudget`]: connections never take the last `fd_reserve` file
//!   descriptors, which stay free for the store (WAL segment rotation,
//!   directory syncs, checkpoints), so running out of fds is a refused
//!   connection and never a failed write;
//! - [`PendingHandshakes`]: at most `max_pending_handshakes` connections wait
//!   for their hello; a new one evicts the oldest of the uid holding the most,
//!   so silent connections cannot crowd out a client that says hello at once;
//! - [`UidShares`]: one uid holds at most `max_clients_per_uid` sessions, so
//!   one allowed uid cannot take every `max_clients` slot from the others;
//! - [`MemoryBudget`]: the connection memory charged at admission (rings,
//!   socket buffers) and while serving (request buffers that grow for a large
//!   frame) stays below `memory_budget_bytes`.
//!
//! What this module does not do: the order of the checks and the refusals
//! sent to the peer (`server.rs`), or the sessions' own timeouts.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use nexus_shm_protocol::layout::SEGMENT_HEADER_REGION_BYTES;
use nexus_shm_protocol::wire::Counter;
use tokio_util::sync::{CancellationToken, WaitForCancellationFuture};

use crate::config::Config;

/// File descriptors one connection is assumed to hold between two counts of
/// the fd table: a shared-memory session keeps its socket and its bell (an
/// eventfd; the segment's memfd is closed after the handshake), a socket
/// session only its socket. Only an estimate between recounts.
pub const FDS_PER_CONNECTION: u64 = 2;

/// Memory a shared-memory session holds besides its segment: the request
/// scratch buffer at its retained size is charged separately; this is the
/// task, its pending answer's envelope and its bookkeeping.
pub const SHM_SESSION_FIXED_BYTES: u64 = 16 * 1024;

/// Every budget a connection passes through, built once from the
/// configuration at start (changing any of them needs a restart).
#[derive(Debug)]
pub struct Admission {
    /// File descriptors kept free for the store.
    pub fds: FdBudget,
    /// Connections still in their handshake.
    pub pending: Arc<PendingHandshakes>,
    /// Sessions per uid.
    pub uids: Arc<UidShares>,
    /// Connection memory.
    pub memory: Arc<MemoryBudget>,
}

impl Admission {
    /// The budgets `config` names; the fd limit is read from the process.
    pub fn new(config: &Config) -> Self {
        Self {
            fds: FdBudget::new(current_fd_limit(), config.fd_reserve),
            pending: Arc::new(PendingHandshakes::new(config.max_pending_handshakes)),
            uids: Arc::new(UidShares::new(config.clients_per_uid())),
            memory: Arc::new(MemoryBudget::new(config.memory_budget_bytes)),
        }
    }

    /// Gauges for Stats.
    pub fn gauges(&self) -> Vec<Counter> {
        let gauge = |name: &str, value: u64| Counter {
            name: name.to_owned(),
            value,
        };
        vec![
            gauge("handshakes_pending", self.pending.len() as u64),
            gauge("memory_charged_bytes", self.memory.charged_bytes()),
            gauge("memory_budget_bytes", self.memory.limit_bytes()),
            gauge("fd_limit", self.fds.limit),
        ]
    }
}

/// Why a connection could not be admitted. The messages name the setting
/// an operator would change.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum AdmissionError {
    /// Admitting one more connection would eat into the store's fd reserve.
    #[error(
        "nexusd is out of file descriptors: {open} of its limit of {limit} are open and the last {reserve} \
         (fd_reserve) are kept for the store"
    )]
    FdsExhausted {
        /// Open fds counted.
        open: u64,
        /// RLIMIT_NOFILE (soft).
        limit: u64,
        /// `fd_reserve`.
        reserve: u64,
    },
    /// The fd table could not be counted.
    #[error("nexusd cannot count its open file descriptors: {0}")]
    FdCount(String),
    /// The uid already holds its share of the sessions.
    #[error("uid {uid} already holds {share} connections, its share (max_clients_per_uid) of this nexusd")]
    UidShareTaken {
        /// The peer's uid.
        uid: u32,
        /// `max_clients_per_uid`.
        share: usize,
    },
    /// The connection's memory does not fit in what is left of the budget.
    #[error(
        "nexusd's connection memory budget (memory_budget_bytes = {limit}) has {free} bytes free, \
         this needs {requested}"
    )]
    OverBudget {
        /// Bytes asked for.
        requested: u64,
        /// Bytes left.
        free: u64,
        /// `memory_budget_bytes`.
        limit: u64,
    },
}

/// Connections stay below `RLIMIT_NOFILE - fd_reserve` open fds.
///
/// Counting the fd table (`/proc/self/fd`) costs time proportional to its
/// size, so it is counted only when an estimate (the last count plus
/// [`FDS_PER_CONNECTION`] for each connection admitted since) comes near
/// the ceiling. The estimate ignores closed fds, so it only errs high: a
/// recount can only admit more.
#[derive(Debug)]
pub struct FdBudget {
    limit: u64,
    reserve: u64,
    estimate: Mutex<FdEstimate>,
}

#[derive(Debug, Default)]
struct FdEstimate {
    /// The last count of the fd table; `None` before the first.
    counted: Option<u64>,
    admitted_since_count: u64,
}

impl FdBudget {
    /// A budget for a process limited to `limit` fds, `reserve` of them kept.
    pub fn new(limit: u64, reserve: u64) -> Self {
        Self {
            limit,
            reserve,
            estimate: Mutex::new(FdEstimate::default()),
        }
    }

    /// Admits one connection's fds, or says the reserve would be touched.
    pub fn admit_connection(&self) -> Result<(), AdmissionError> {
        self.admit_with(count_open_fds)
    }

    fn admit_with(&self, count: impl FnOnce() -> std::io::Result<u64>) -> Result<(), AdmissionError> {
        let ceiling = self.limit.saturating_sub(self.reserve);
        let mut estimate = lock(&self.estimate);
        if !estimate.fits(ceiling) {
            let open = count().map_err(|e| AdmissionError::FdCount(e.to_string()))?;
            *estimate = FdEstimate {
                counted: Some(open),
                admitted_since_count: 0,
            };
            if !estimate.fits(ceiling) {
                return Err(AdmissionError::FdsExhausted {
                    open,
                    limit: self.limit,
                    reserve: self.reserve,
                });
            }
        }
        estimate.admitted_since_count += 1;
        Ok(())
    }
}

impl FdEstimate {
    /// True when one more connection stays at or below `ceiling` open fds.
    fn fits(&self, ceiling: u64) -> bool {
        let Some(counted) = self.counted else { return false };
        let added = (self.admitted_since_count + 1).saturating_mul(FDS_PER_CONNECTION);
        counted.saturating_add(added) <= ceiling
    }
}

/// The connections waiting for their hello, oldest first.
#[derive(Debug)]
pub struct PendingHandshakes {
    max: usize,
    list: Mutex<PendingList>,
}

#[derive(Debug, Default)]
struct PendingList {
    next_seq: u64,
    entries: VecDeque<PendingEntry>,
}

#[derive(Debug)]
struct PendingEntry {
    seq: u64,
    uid: u32,
    evict: CancellationToken,
}

/// A place among the pending handshakes; leaving it (drop) frees the place.
#[derive(Debug)]
pub struct PendingTicket {
    pending: Arc<PendingHandshakes>,
    seq: u64,
    evict: CancellationToken,
}

impl PendingHandshakes {
    /// At most `max` connections wait for their hello at once.
    pub fn new(max: usize) -> Self {
        Self {
            max: max.max(1),
            list: Mutex::new(PendingList::default()),
        }
    }

    /// Takes a place for a connection of `uid`; when all are taken, the
    /// oldest connection of the uid holding the most places is evicted (its
    /// ticket's [`PendingTicket::evicted`] resolves).
    pub fn enter(self: &Arc<Self>, uid: u32) -> PendingTicket {
        let mut list = lock(&self.list);
        if list.entries.len() >= self.max
            && let Some(victim) = list.victim()
        {
            let entry = list.entries.remove(victim).expect("the victim index is in range");
            entry.evict.cancel();
        }
        let seq = list.next_seq;
        list.next_seq += 1;
        let evict = CancellationToken::new();
        list.entries.push_back(PendingEntry {
            seq,
            uid,
            evict: evict.clone(),
        });
        PendingTicket {
            pending: self.clone(),
            seq,
            evict,
        }
    }

    /// Connections waiting now.
    pub fn len(&self) -> usize {
        lock(&self.list).entries.len()
    }

    /// True when no connection waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The bound.
    pub fn max(&self) -> usize {
        self.max
    }

    fn leave(&self, seq: u64) {
        let mut list = lock(&self.list);
        if let Some(index) = list.entries.iter().position(|e| e.seq == seq) {
            list.entries.remove(index);
        }
    }
}

impl PendingList {
    /// Index of the oldest entry of the uid with the most entries (the
    /// earliest such uid on a tie). At most `max` entries: linear is fine.
    fn victim(&self) -> Option<usize> {
        let mut per_uid: HashMap<u32, usize> = HashMap::new();
        for entry in &self.entries {
            *per_uid.entry(entry.uid).or_default() += 1;
        }
        let most = per_uid.values().copied().max()?;
        self.entries.iter().position(|e| per_uid[&e.uid] == most)
    }
}

impl PendingTicket {
    /// Resolves when a newer connection evicted this one.
    pub fn evicted(&self) -> WaitForCancellationFuture<'_> {
        self.evict.cancelled()
    }
}

impl Drop for PendingTicket {
    fn drop(&mut self) {
        self.pending.leave(self.seq);
    }
}

/// Sessions held per uid.
#[derive(Debug)]
pub struct UidShares {
    share: usize,
    held: Mutex<HashMap<u32, usize>>,
}

/// One session's place in its uid's share; freed on drop.
#[derive(Debug)]
pub struct UidSlot {
    shares: Arc<UidShares>,
    uid: u32,
}

impl UidShares {
    /// Each uid holds at most `share` sessions.
    pub fn new(share: usize) -> Self {
        Self {
            share,
            held: Mutex::new(HashMap::new()),
        }
    }

    /// Takes a place in `uid`'s share. The map holds only uids that hold a
    /// session, and only allowed uids get this far, so it stays small.
    pub fn try_take(self: &Arc<Self>, uid: u32) -> Result<UidSlot, AdmissionError> {
        let mut held = lock(&self.held);
        let count = held.entry(uid).or_default();
        if *count >= self.share {
            return Err(AdmissionError::UidShareTaken { uid, share: self.share });
        }
        *count += 1;
        Ok(UidSlot {
            shares: self.clone(),
            uid,
        })
    }

    /// Sessions `uid` holds now.
    pub fn held_by(&self, uid: u32) -> usize {
        lock(&self.held).get(&uid).copied().unwrap_or(0)
    }
}

impl Drop for UidSlot {
    fn drop(&mut self) {
        let mut held = lock(&self.shares.held);
        if let Some(count) = held.get_mut(&self.uid) {
            *count -= 1;
            if *count == 0 {
                held.remove(&self.uid);
            }
        }
    }
}

/// Connection memory charged against `memory_budget_bytes`.
#[derive(Debug)]
pub struct MemoryBudget {
    limit_bytes: u64,
    charged_bytes: AtomicU64,
}

/// Bytes charged to a [`MemoryBudget`]; given back on drop.
#[derive(Debug)]
pub struct Charge {
    budget: Arc<MemoryBudget>,
    bytes: u64,
}

impl MemoryBudget {
    /// A budget of `limit_bytes`.
    pub fn new(limit_bytes: u64) -> Self {
        Self {
            limit_bytes,
            charged_bytes: AtomicU64::new(0),
        }
    }

    /// Charges `bytes`, or refuses when they would exceed the limit.
    pub fn try_charge(self: &Arc<Self>, bytes: u64) -> Result<Charge, AdmissionError> {
        self.take(bytes)?;
        Ok(Charge {
            budget: self.clone(),
            bytes,
        })
    }

    /// Bytes charged now.
    pub fn charged_bytes(&self) -> u64 {
        self.charged_bytes.load(Ordering::Relaxed)
    }

    /// The limit.
    pub fn limit_bytes(&self) -> u64 {
        self.limit_bytes
    }

    fn take(&self, bytes: u64) -> Result<(), AdmissionError> {
        // Relaxed: the counter guards only itself; a CAS loop makes the
        // check and the charge one step.
        self.charged_bytes
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |charged| {
                charged.checked_add(bytes).filter(|&total| total <= self.limit_bytes)
            })
            .map(|_| ())
            .map_err(|charged| AdmissionError::OverBudget {
                requested: bytes,
                free: self.limit_bytes.saturating_sub(charged),
                limit: self.limit_bytes,
            })
    }

    fn give_back(&self, bytes: u64) {
        let before = self.charged_bytes.fetch_sub(bytes, Ordering::Relaxed);
        debug_assert!(before >= bytes, "gave back {bytes} of {before} charged bytes");
    }
}

impl Charge {
    /// Bytes held by this charge.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Charges `extra` more bytes, or refuses (this charge is unchanged).
    pub fn try_grow(&mut self, extra: u64) -> Result<(), AdmissionError> {
        self.budget.take(extra)?;
        self.bytes += extra;
        Ok(())
    }

    /// Gives back everything above `bytes`.
    pub fn shrink_to(&mut self, bytes: u64) {
        if bytes < self.bytes {
            self.budget.give_back(self.bytes - bytes);
            self.bytes = bytes;
        }
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        self.budget.give_back(self.bytes);
    }
}

/// What a shared-memory session is charged at admission: its segment (the
/// header page and both rings) plus its retained scratch buffer and fixed state.
pub fn shm_session_bytes(request_ring_bytes: u32, response_ring_bytes: u32, scratch_retain_bytes: u64) -> u64 {
    SEGMENT_HEADER_REGION_BYTES
        + u64::from(request_ring_bytes)
        + u64::from(response_ring_bytes)
        + scratch_retain_bytes
        + SHM_SESSION_FIXED_BYTES
}

/// The soft RLIMIT_NOFILE in force (`u64::MAX` when unlimited or unknown).
pub fn current_fd_limit() -> u64 {
    use nix::sys::resource::{Resource, getrlimit};
    getrlimit(Resource::RLIMIT_NOFILE)
        .map(|(soft, _)| soft)
        .unwrap_or(u64::MAX)
}

/// Open fds of this process, from `/proc/self/fd` (the directory's own fd,
/// open while it is read, is not counted).
fn count_open_fds() -> std::io::Result<u64> {
    let entries = std::fs::read_dir("/proc/self/fd")?.count() as u64;
    Ok(entries.saturating_sub(1))
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fd_budget_recounts_near_the_ceiling_and_refuses_inside_the_reserve() {
        let budget = FdBudget::new(100, 20);
        // Ceiling 80: counted 70, five connections of 2 fds fit (80), the sixth recounts.
        for _ in 0..5 {
            budget.admit_with(|| Ok(70)).unwrap();
        }
        let refused = budget.admit_with(|| Ok(79)).unwrap_err();
        assert!(matches!(
            refused,
            AdmissionError::FdsExhausted {
                open: 79,
                limit: 100,
                reserve: 20
            }
        ));
        assert!(refused.to_string().contains("fd_reserve"), "{refused}");
        // Connections closed: a recount admits again.
        budget.admit_with(|| Ok(30)).unwrap();
    }

    #[test]
    fn counting_fds_sees_a_newly_opened_file() {
        let before = count_open_fds().unwrap();
        let file = std::fs::File::open("/dev/null").unwrap();
        assert_eq!(count_open_fds().unwrap(), before + 1);
        drop(file);
    }

    #[test]
    fn a_full_pending_list_evicts_the_oldest_of_the_uid_holding_the_most() {
        let pending = Arc::new(PendingHandshakes::new(3));
        let a1 = pending.enter(1);
        let b1 = pending.enter(2);
        let b2 = pending.enter(2);
        let _c1 = pending.enter(3);
        assert_eq!(pending.len(), 3);
        assert!(b1.evict.is_cancelled(), "uid 2 held the most; its oldest goes");
        assert!(!a1.evict.is_cancelled() && !b2.evict.is_cancelled());
        drop(b1);
        assert_eq!(pending.len(), 3, "an evicted ticket was already removed");
        drop(a1);
        assert_eq!(pending.len(), 2);
    }

    #[test]
    fn a_uid_share_is_enforced_and_freed_on_drop() {
        let shares = Arc::new(UidShares::new(2));
        let first = shares.try_take(7).unwrap();
        let _second = shares.try_take(7).unwrap();
        let refused = shares.try_take(7).unwrap_err();
        assert_eq!(refused, AdmissionError::UidShareTaken { uid: 7, share: 2 });
        assert!(refused.to_string().contains("max_clients_per_uid"), "{refused}");
        let _other_uid = shares.try_take(8).unwrap();
        drop(first);
        let _again = shares.try_take(7).unwrap();
        assert_eq!(shares.held_by(7), 2);
    }

    #[test]
    fn the_memory_budget_refuses_past_its_limit_and_charges_are_given_back() {
        let budget = Arc::new(MemoryBudget::new(1000));
        let mut first = budget.try_charge(600).unwrap();
        let refused = budget.try_charge(500).unwrap_err();
        assert_eq!(
            refused,
            AdmissionError::OverBudget {
                requested: 500,
                free: 400,
                limit: 1000
            }
        );
        assert!(first.try_grow(500).is_err());
        assert_eq!(first.bytes(), 600, "a refused growth leaves the charge as it was");
        first.try_grow(400).unwrap();
        first.shrink_to(100);
        assert_eq!(budget.charged_bytes(), 100);
        drop(first);
        assert_eq!(budget.charged_bytes(), 0);
        assert!(budget.try_charge(u64::MAX).is_err(), "no overflow");
    }
}
