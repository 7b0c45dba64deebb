//! Writes: Remember, Forget, Feedback and Flush, from validated input to an
//! acknowledged WAL record.
//!
//! Each write is resolved against the applied state before it is logged
//! (ids assigned and the dimension reserved through `ids.rs`, a Forget's
//! targets chosen in chunks), encoded once as a WAL record, and answered only
//! when the apply step (`apply.rs`) has made it visible everywhere. The input
//! types borrow the request's bytes: the handler builds them from the wire
//! without copying texts, tags or vectors.
//!
//! Not here: validation rules (`model.rs`), the WAL (`wal/`), applying
//! records (`state.rs`).

use std::sync::Arc;

use rkyv::rend::u64_le;
use tokio::sync::oneshot;

use crate::store::apply::{SharedRecord, Ticket};
use crate::store::error::{StoreError, Subject};
use crate::store::ids::Ids;
use crate::store::logged::LoggedRecord;
use crate::store::memory::Memory;
use crate::store::model::{self, MemoryRef, NewMemory, WalRecord, WalRecordRef, validate_memory};
use crate::store::read::Deadline;
use crate::store::state::SLICE_MEMORIES;
use crate::store::wal::Lsn;
use crate::store::{Store, model::TagRef};

/// What a Forget deletes.
#[derive(Debug, Clone)]
pub enum ForgetTarget<'a> {
    /// These ids (little-endian as archived: the request's bytes, read in place).
    Ids(&'a [u64_le]),
    /// Every memory of a namespace.
    Namespace(&'a str),
    /// Memories carrying all these tags, in one namespace (`None`: all).
    Tags {
        /// Restrict to this namespace.
        namespace: Option<&'a str>,
        /// Required tags.
        tags: Vec<TagRef<'a>>,
    },
}

/// A judgement on a recalled memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Judgement {
    /// The memory judged.
    pub memory_id: u64,
    /// The recall it came from.
    pub recall_request_id: u64,
    /// Whether it helped.
    pub useful: bool,
}

/// What an acknowledged Remember did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Remembered {
    /// The memories' ids, in request order (a key already live keeps its id).
    pub ids: Vec<u64>,
    /// The record's LSN.
    pub lsn: Lsn,
}

/// What an acknowledged Forget did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Forgotten {
    /// Memories deleted.
    pub count: u64,
    /// The record's LSN (`None`: nothing matched, nothing was logged).
    pub lsn: Option<Lsn>,
}

impl Store {
    /// Stores a batch durably, atomically. `now_ms` is the time memories
    /// without their own `created_at_ms` get.
    pub async fn remember(&self, memories: Vec<NewMemory<'_>>, now_ms: i64) -> Result<Remembered, StoreError> {
        let limits = self.limits();
        let count = memories.len();
        if count == 0 {
            return Err(StoreError::EmptyBatch);
        }
        if count > limits.max_batch {
            return Err(StoreError::BatchTooLarge {
                len: count,
                max: limits.max_batch,
            });
        }
        let mut valid = Vec::with_capacity(count);
        for (index, input) in memories.into_iter().enumerate() {
            valid.push(validate_memory(index, input, limits, now_ms)?);
        }
        {
            let state = self.read();
            fix_dimension(state.ids(), &valid)?;
            state.ids().assign(&mut valid);
        }
        let ids = valid.iter().map(|m| m.id).collect();
        let lsn = self
            .log(LoggedRecord::encode_ref(&WalRecordRef::Remember(valid)))
            .await?;
        Ok(Remembered { ids, lsn })
    }

    /// Deletes by ids, namespace or tags. The targets are chosen from the
    /// applied state in chunks (the lock is released between them), before
    /// the record is logged; keys are released when it is applied (`ids.rs`).
    pub async fn forget(&self, target: &ForgetTarget<'_>, deadline: Deadline) -> Result<Forgotten, StoreError> {
        let ids = match target {
            ForgetTarget::Ids(ids) => self.live_ids(ids)?,
            ForgetTarget::Namespace("") => return Err(StoreError::ForgetWithoutNamespace),
            ForgetTarget::Namespace(namespace) => self.matching(namespace, &[], deadline).await?,
            ForgetTarget::Tags { tags, .. } if tags.is_empty() => return Err(StoreError::ForgetWithoutTags),
            ForgetTarget::Tags { namespace, tags } => {
                model::check_filter_len(tags.len(), self.limits())?;
                let tags: Vec<(&str, &str)> = tags.iter().map(|t| (t.key, t.value)).collect();
                self.matching(namespace.unwrap_or(""), &tags, deadline).await?
            }
        };
        let count = ids.len() as u64;
        if count == 0 {
            return Ok(Forgotten { count, lsn: None });
        }
        let lsn = self.log(LoggedRecord::encode(&WalRecord::Forget(ids))).await?;
        Ok(Forgotten { count, lsn: Some(lsn) })
    }

    /// Records a judgement on a live memory, durably.
    pub async fn feedback(&self, judgement: Judgement) -> Result<Lsn, StoreError> {
        if self.read().get(judgement.memory_id).is_none() {
            return Err(StoreError::UnknownMemory(judgement.memory_id));
        }
        let record = WalRecord::Feedback {
            memory_id: judgement.memory_id,
            recall_request_id: judgement.recall_request_id,
            useful: judgement.useful,
        };
        self.log(LoggedRecord::encode(&record)).await
    }

    /// Makes everything acknowledged so far durable (meaningful under a relaxed
    /// fsync policy); returns the durable LSN.
    pub async fn flush(&self) -> Result<Lsn, StoreError> {
        Ok(self.wal()?.flush().await?)
    }

    /// Appends a record and waits until it is durable, applied and followed.
    async fn log(&self, record: LoggedRecord) -> Result<Lsn, StoreError> {
        let record = Arc::new(record);
        let bytes = record.len() as u64;
        let (done, reply) = oneshot::channel();
        let ticket = Ticket {
            record: Arc::clone(&record),
            done,
        };
        self.wal()?.append(SharedRecord(record), ticket).await?;
        let lsn = match reply.await {
            Ok(Ok(lsn)) => lsn,
            Ok(Err(failure)) => return Err(StoreError::Wal(failure)),
            Err(_) => return Err(StoreError::ShuttingDown),
        };
        self.inner.checkpoints.note_logged(bytes);
        self.checkpoint_if_due();
        Ok(lsn)
    }

    /// The ids of a Forget that name live memories, ascending, without
    /// repeats; the lock is taken per slice of ids.
    fn live_ids(&self, ids: &[u64_le]) -> Result<Vec<u64>, StoreError> {
        let max = self.limits().max_forget_ids;
        if ids.len() > max {
            return Err(StoreError::TooManyIds { len: ids.len(), max });
        }
        let mut live = Vec::new();
        for slice in ids.chunks(SLICE_MEMORIES) {
            let state = self.read();
            live.extend(
                slice
                    .iter()
                    .map(|id| id.to_native())
                    .filter(|id| state.get(*id).is_some()),
            );
        }
        live.sort_unstable();
        live.dedup();
        Ok(live)
    }

    /// Ids of `namespace`'s memories ("" = all) carrying every one of `tags`, ascending.
    async fn matching(
        &self,
        namespace: &str,
        tags: &[(&str, &str)],
        deadline: Deadline,
    ) -> Result<Vec<u64>, StoreError> {
        let mut ids = Vec::new();
        self.scan(namespace, deadline, |chunk| {
            let carrying = chunk.iter().map(Memory::view).filter(|view| view.has_tags(tags));
            ids.extend(carrying.map(|view| view.id()));
        })
        .await?;
        ids.sort_unstable();
        Ok(ids)
    }
}

/// Reserves the store's dimension with the batch's first vector; rejects
/// mismatches, within the batch or with the store.
pub(super) fn fix_dimension(ids: &Ids, memories: &[MemoryRef<'_>]) -> Result<(), StoreError> {
    let mut dims = (memories.iter().enumerate()).filter_map(|(i, m)| m.vector.map(|v| (i, v.len() as u32)));
    let Some((first_index, first)) = dims.next() else {
        return Ok(());
    };
    if let Some((index, got)) = dims.find(|(_, d)| *d != first) {
        return Err(StoreError::MixedDimensions {
            index,
            expected: first,
            got,
        });
    }
    ids.reserve_dimension(first)
        .map_err(|current| StoreError::DimensionMismatch {
            subject: Subject::Memory(first_index),
            expected: current,
            got: first,
        })
}
