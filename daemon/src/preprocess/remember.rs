//! Preprocessing carried out on a Remember, before the batch reaches the
//! store: long texts become chunks, near-duplicates are found and the
//! configured policy applied, and what happened is reported per memory.
//!
//! - **Chunks.** A text of more than `max_tokens` words is stored as its
//!   chunks ([`chunk`]), each a memory with the original's namespace, tags,
//!   vector, time, importance and source, plus the tags `nexus.chunk` =
//!   "i/n" and `nexus.group` = an id shared by the chunks. The first chunk
//!   takes the memory's key. A recall returns the chunk that matched; a
//!   Recall filtered on `nexus.group` returns them all, and
//!   [`super::reassemble`] puts the text back together from the tags' order.
//! - **Near-duplicates** of memories already stored in the namespace (not
//!   of others in the same batch) under the policy: `keep` (default) stores
//!   the memory tagged `nexus.duplicate_of` = the original's id (recall
//!   shows only one of the two); `skip` does not store it and reports the
//!   original's id; `merge` stores it under the original's key, replacing
//!   it (an original without a key cannot be replaced: the memory is kept
//!   and linked, and the report says so).
//! - Every memory is validated as sent before anything is expanded, so a
//!   text over `max_text_bytes` is refused, not chunked past the limit.
//!
//! Not here: the store's own checks and ids (`store/write.rs`), the wire
//! report (`handler.rs`).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::preprocess::chunk::{Chunk, ChunkConfig, ChunkScratch, chunk};
use crate::preprocess::dedup::{DuplicateDecision, DuplicatePolicy, NearDuplicate, decide};
use crate::preprocess::neardup::NearDupFollower;
use crate::store::model::{NewMemory, TagRef, validate_memory};
use crate::store::{Store, StoreError};

/// Tag naming a chunk's place: "i/n" (from 0).
pub const CHUNK_TAG: &str = "nexus.chunk";
/// Tag shared by the chunks of one text.
pub const GROUP_TAG: &str = "nexus.group";
/// Tag of a near-duplicate kept under the `keep` policy: the original's id.
pub const DUPLICATE_TAG: &str = "nexus.duplicate_of";

/// Why a Remember was refused by preprocessing.
#[derive(Debug, thiserror::Error)]
pub enum PreprocessError {
    /// The store's checks on a memory as sent.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Chunking made the batch larger than a batch may be.
    #[error(
        "the batch's {inputs} memories make {memories} memories once long texts are chunked; the maximum is {max} (limits.max_batch): send fewer or shorter texts per request"
    )]
    ChunksOverBatch {
        /// Memories sent.
        inputs: usize,
        /// After chunking.
        memories: usize,
        /// The limit.
        max: usize,
    },
    /// A memory has no room for the tags chunking or linking adds.
    #[error(
        "memory {index} has {tags} tags; chunking or duplicate linking adds {added} (nexus.*), over the maximum of {max} (limits.max_tags)"
    )]
    NoRoomForTags {
        /// Position in the batch.
        index: usize,
        /// Tags it has.
        tags: usize,
        /// Tags preprocessing adds.
        added: usize,
        /// The limit.
        max: usize,
    },
}

/// What a Remember's preprocessing does.
pub struct Preprocessor {
    /// None: texts are not chunked.
    chunking: Option<ChunkConfig>,
    policy: DuplicatePolicy,
    /// None: near-duplicate detection is off.
    neardup: Option<Arc<NearDupFollower>>,
}

/// What happened to one memory of the batch (for the report).
#[derive(Debug, Clone, PartialEq)]
pub struct Note {
    /// Position in the request.
    pub input: u32,
    /// Ids of its chunks, when it was chunked.
    pub chunk_ids: Vec<u64>,
    /// The near-duplicate found, and what was done.
    pub duplicate: Option<(NearDuplicate, Action)>,
}

/// What was done with a near-duplicate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Stored and tagged with its original.
    Linked,
    /// Not stored.
    Skipped,
    /// Stored under the original's key.
    Merged,
}

/// The outcome of a Remember, per memory sent.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Outcome {
    /// One id per memory sent.
    pub ids: Vec<u64>,
    /// Only for memories chunked or found to be near-duplicates.
    pub notes: Vec<Note>,
}

/// The plan for one memory sent.
struct Plan {
    /// Byte ranges of its text to store (one for the whole text).
    pieces: Vec<Chunk>,
    /// Index in `Prepared::strings` of the group id (chunked texts), followed
    /// by the chunks' "i/n" labels.
    group: Option<usize>,
    duplicate: Option<(NearDuplicate, Action)>,
    /// Index in `Prepared::strings` of the original's id (linked) or key (merged).
    extra: Option<usize>,
}

/// A batch ready to store: the plans and the strings the new tags borrow.
pub struct Prepared {
    plans: Vec<Plan>,
    strings: Vec<String>,
}

/// Chunk groups made by this process (with the time, a group id is unique).
static GROUPS: AtomicU64 = AtomicU64::new(0);

impl Preprocessor {
    /// Preprocessing with these settings (`neardup` None: no detection).
    pub fn new(chunking: Option<ChunkConfig>, policy: DuplicatePolicy, neardup: Option<Arc<NearDupFollower>>) -> Self {
        Self {
            chunking,
            policy,
            neardup,
        }
    }

    /// Checks `inputs` as sent and plans what to store.
    pub fn prepare(&self, inputs: &[NewMemory<'_>], store: &Store, now_ms: i64) -> Result<Prepared, PreprocessError> {
        let limits = store.limits();
        // The store's own batch checks first, on the batch as sent.
        if inputs.is_empty() {
            return Err(StoreError::EmptyBatch.into());
        }
        if inputs.len() > limits.max_batch {
            let max = limits.max_batch;
            return Err(StoreError::BatchTooLarge { len: inputs.len(), max }.into());
        }
        let mut prepared = Prepared {
            plans: Vec::with_capacity(inputs.len()),
            strings: Vec::new(),
        };
        let mut scratch = ChunkScratch::new();
        let mut total = 0;
        for (index, input) in inputs.iter().enumerate() {
            validate_memory(index, input.clone(), limits, now_ms)?;
            let plan = self.plan(index, input, store, &mut scratch, &mut prepared.strings)?;
            let added = usize::from(plan.group.is_some()) * 2 + usize::from(plan.extra.is_some());
            if input.tags.len() + added > limits.max_tags {
                return Err(PreprocessError::NoRoomForTags {
                    index,
                    tags: input.tags.len(),
                    added,
                    max: limits.max_tags,
                });
            }
            total += if plan.duplicate.is_some_and(|(_, a)| a == Action::Skipped) {
                0
            } else {
                plan.pieces.len()
            };
            prepared.plans.push(plan);
        }
        if total > limits.max_batch {
            return Err(PreprocessError::ChunksOverBatch {
                inputs: inputs.len(),
                memories: total,
                max: limits.max_batch,
            });
        }
        Ok(prepared)
    }

    fn plan(
        &self,
        index: usize,
        input: &NewMemory<'_>,
        store: &Store,
        scratch: &mut ChunkScratch,
        strings: &mut Vec<String>,
    ) -> Result<Plan, PreprocessError> {
        let mut pieces = Vec::new();
        if let Some(config) = &self.chunking {
            chunk(input.text, config, scratch, &mut pieces);
        }
        if pieces.is_empty() {
            pieces.push(Chunk {
                index: 0,
                start: 0,
                end: input.text.len(),
                tokens: 0,
            });
        }
        let group = (pieces.len() > 1).then(|| {
            let n = GROUPS.fetch_add(1, Ordering::Relaxed);
            let crc = crc32c::crc32c(input.text.as_bytes());
            let nanos = nexus_shm_protocol::monotonic_now_ns();
            let at = strings.len();
            strings.push(format!("{nanos:x}-{n:x}-{crc:08x}-{index}"));
            // The chunks' labels follow the group id.
            let count = pieces.len();
            strings.extend((0..count).map(|i| format!("{i}/{count}")));
            at
        });
        // A chunked text is compared by its first chunk.
        let compared = &input.text[pieces[0].start..pieces[0].end];
        let found = (self.neardup.as_ref()).and_then(|index| index.find(input.namespace, compared, store));
        let (duplicate, extra) = match decide(self.policy, found) {
            DuplicateDecision::Store => (None, None),
            DuplicateDecision::StoreLinked { original } => {
                strings.push(original.id.to_string());
                (Some((original, Action::Linked)), Some(strings.len() - 1))
            }
            DuplicateDecision::Skip { original } => (Some((original, Action::Skipped)), None),
            DuplicateDecision::MergeInto { original } => {
                let key = (store.get(original.id)).and_then(|m| m.view().key().map(str::to_owned));
                match key {
                    Some(key) if input.key.is_none() => {
                        strings.push(key);
                        (Some((original, Action::Merged)), Some(strings.len() - 1))
                    }
                    _ => {
                        strings.push(original.id.to_string());
                        (Some((original, Action::Linked)), Some(strings.len() - 1))
                    }
                }
            }
        };
        Ok(Plan {
            pieces,
            group,
            duplicate,
            extra,
        })
    }
}

impl Prepared {
    /// The memories to store, borrowing `inputs` and the plan's strings.
    pub fn memories<'a>(&'a self, inputs: &[NewMemory<'a>]) -> Vec<NewMemory<'a>> {
        let mut out = Vec::with_capacity(inputs.len());
        for (plan, input) in self.plans.iter().zip(inputs) {
            let action = plan.duplicate.map(|(_, action)| action);
            if action == Some(Action::Skipped) {
                continue;
            }
            let mut base = input.clone();
            match (action, plan.extra) {
                (Some(Action::Linked), Some(at)) => base.tags.push(TagRef {
                    key: DUPLICATE_TAG,
                    value: &self.strings[at],
                }),
                (Some(Action::Merged), Some(at)) => base.key = Some(&self.strings[at]),
                _ => {}
            }
            let Some(group) = plan.group else {
                out.push(base);
                continue;
            };
            for piece in &plan.pieces {
                let mut memory = base.clone();
                memory.text = &input.text[piece.start..piece.end];
                if piece.index > 0 {
                    memory.key = None;
                }
                memory.tags.push(TagRef {
                    key: GROUP_TAG,
                    value: &self.strings[group],
                });
                memory.tags.push(TagRef {
                    key: CHUNK_TAG,
                    value: &self.strings[group + 1 + piece.index as usize],
                });
                out.push(memory);
            }
        }
        out
    }

    /// The per-memory outcome, given the ids the store assigned to
    /// [`Self::memories`] (in that order).
    pub fn outcome(&self, stored: &[u64]) -> Outcome {
        let mut stored = stored.iter().copied();
        let mut outcome = Outcome::default();
        for (input, plan) in self.plans.iter().enumerate() {
            let skipped = plan.duplicate.filter(|(_, a)| *a == Action::Skipped);
            let ids: Vec<u64> = match skipped {
                Some((original, _)) => vec![original.id],
                None => stored.by_ref().take(plan.pieces.len()).collect(),
            };
            outcome.ids.push(ids.first().copied().unwrap_or(0));
            if plan.group.is_some() || plan.duplicate.is_some() {
                outcome.notes.push(Note {
                    input: input as u32,
                    chunk_ids: if plan.group.is_some() { ids } else { Vec::new() },
                    duplicate: plan.duplicate,
                });
            }
        }
        outcome
    }
}
