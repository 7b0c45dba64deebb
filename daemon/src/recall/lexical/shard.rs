//! One namespace's inverted index: a forward index by document slot and one
//! posting list per term, both append-only, with tombstones for deletes.
//!
//! Slots are handed out in increasing order, so every posting list is sorted
//! by slot without sorting: an insert appends to the lists of its terms and
//! is visible to the next search. A delete sets the slot's tombstone and
//! takes the document out of the statistics (live count, total length,
//! each term's live document frequency) at once; its postings stay until the
//! shard is compacted (rebuilt from its live documents), which happens when
//! tombstones reach a share of the slots ([`COMPACT_DEAD_FRACTION`]).
//!
//! Each shard keeps its own statistics (N, average length, document
//! frequencies), so a namespace's scores do not depend on what other
//! namespaces hold, and a search touches only its namespace's postings.
//!
//! Not here: tokenizing (`tokenizer.rs`), the search loop (`search.rs`).

use std::collections::HashMap;

/// Tombstones at which a shard is rebuilt without them, as a share of its
/// slots: dead postings cost time in every search that walks them, and a
/// rebuild costs about as much as inserting the live documents again, so
/// rebuilding at a quarter keeps both bounded (amortised O(1) per delete).
pub const COMPACT_DEAD_FRACTION: f64 = 0.25;

/// Below this many tombstones a shard is never compacted: a small shard's
/// dead postings cost nothing worth a rebuild.
pub const COMPACT_MIN_DEAD: usize = 64;

/// The postings of one term in one shard.
#[derive(Debug, Default, Clone)]
pub(crate) struct Postings {
    /// Document slots, increasing.
    pub(crate) slots: Vec<u32>,
    /// Term frequency in each document, aligned with `slots`.
    pub(crate) tfs: Vec<u32>,
    /// Live documents holding the term (the IDF's document frequency).
    pub(crate) live_df: u32,
    /// Largest term frequency ever added (an upper bound for pruning; a
    /// delete never lowers it, which keeps it a bound).
    pub(crate) max_tf: u32,
    /// Shortest document ever added (the same kind of bound).
    pub(crate) min_len: u32,
}

/// One namespace's documents and postings.
#[derive(Debug, Default, Clone)]
pub(crate) struct Shard {
    /// Memory id of each slot.
    pub(crate) ids: Vec<u64>,
    /// Tokens in each slot's document (its BM25 length).
    pub(crate) lens: Vec<u32>,
    /// Where each slot's forward entries start in `fwd_lists` (one extra
    /// entry at the end).
    fwd_starts: Vec<u32>,
    /// Forward index: the posting list index of each term of each document.
    fwd_lists: Vec<u32>,
    /// Term frequencies aligned with `fwd_lists`.
    fwd_tfs: Vec<u32>,
    /// Tombstones, a bit per slot.
    dead: Vec<u64>,
    /// Tombstoned slots.
    dead_count: usize,
    /// Live memory id → slot.
    slot_of: HashMap<u64, u32>,
    /// Global term id → posting list index.
    term_list: HashMap<u32, u32>,
    /// Posting list index → global term id.
    pub(crate) list_terms: Vec<u32>,
    /// Posting lists.
    pub(crate) lists: Vec<Postings>,
    /// Sum of the live documents' lengths.
    pub(crate) live_len: u64,
}

impl Shard {
    /// An empty shard.
    pub(crate) fn new() -> Self {
        Self {
            fwd_starts: vec![0],
            ..Self::default()
        }
    }

    /// Live documents.
    pub(crate) fn live(&self) -> usize {
        self.slot_of.len()
    }

    /// Whether `slot` holds a deleted document.
    pub(crate) fn is_dead(&self, slot: u32) -> bool {
        self.dead[slot as usize / 64] & (1 << (slot % 64)) != 0
    }

    /// The posting list of global term `term`, if any document had it.
    pub(crate) fn list_of(&self, term: u32) -> Option<u32> {
        self.term_list.get(&term).copied()
    }

    /// Adds document `id` (not live here) with its distinct terms and their
    /// frequencies; its length is the sum of the frequencies.
    pub(crate) fn add(&mut self, id: u64, terms: impl Iterator<Item = (u32, u32)>) {
        debug_assert!(!self.slot_of.contains_key(&id), "id {id} added twice");
        let slot = u32::try_from(self.ids.len()).expect("fewer than 2^32 documents in a namespace");
        let mut len = 0u32;
        for (term, tf) in terms {
            let list = self.list_for(term);
            self.fwd_lists.push(list);
            self.fwd_tfs.push(tf);
            len = len.saturating_add(tf);
        }
        for (&list, &tf) in self.fwd_lists[self.fwd_starts[slot as usize] as usize..]
            .iter()
            .zip(&self.fwd_tfs[self.fwd_starts[slot as usize] as usize..])
        {
            let postings = &mut self.lists[list as usize];
            postings.slots.push(slot);
            postings.tfs.push(tf);
            postings.live_df += 1;
            postings.max_tf = postings.max_tf.max(tf);
            postings.min_len = if postings.slots.len() == 1 {
                len
            } else {
                postings.min_len.min(len)
            };
        }
        let end = u32::try_from(self.fwd_lists.len()).expect("fewer than 2^32 postings in a namespace");
        self.fwd_starts.push(end);
        self.ids.push(id);
        self.lens.push(len);
        if self.dead.len() * 64 <= slot as usize {
            self.dead.push(0);
        }
        self.slot_of.insert(id, slot);
        self.live_len += u64::from(len);
    }

    /// Tombstones document `id`; false if it is not live here.
    pub(crate) fn remove(&mut self, id: u64) -> bool {
        let Some(slot) = self.slot_of.remove(&id) else {
            return false;
        };
        let slot = slot as usize;
        self.dead[slot / 64] |= 1 << (slot % 64);
        self.dead_count += 1;
        self.live_len -= u64::from(self.lens[slot]);
        let range = self.fwd_starts[slot] as usize..self.fwd_starts[slot + 1] as usize;
        for &list in &self.fwd_lists[range] {
            self.lists[list as usize].live_df -= 1;
        }
        true
    }

    /// Whether tombstones reached the share that makes a rebuild worth it.
    pub(crate) fn wants_compaction(&self) -> bool {
        self.dead_count >= COMPACT_MIN_DEAD && self.dead_count as f64 >= COMPACT_DEAD_FRACTION * self.ids.len() as f64
    }

    /// The same live documents, without tombstones or dead postings.
    pub(crate) fn compacted(&self) -> Self {
        let mut fresh = Self::new();
        self.for_each_live(|id, terms| fresh.add(id, terms));
        fresh
    }

    /// Calls `each` with every live document, in slot order, as its id and
    /// its (global term id, frequency) pairs.
    pub(crate) fn for_each_live(&self, mut each: impl FnMut(u64, &mut dyn Iterator<Item = (u32, u32)>)) {
        for (slot, &id) in self.ids.iter().enumerate() {
            if self.is_dead(slot as u32) {
                continue;
            }
            let range = self.fwd_starts[slot] as usize..self.fwd_starts[slot + 1] as usize;
            let mut terms = self.fwd_lists[range.clone()]
                .iter()
                .zip(&self.fwd_tfs[range])
                .map(|(&list, &tf)| (self.list_terms[list as usize], tf));
            each(id, &mut terms);
        }
    }

    /// The posting list of `term`, created if new.
    fn list_for(&mut self, term: u32) -> u32 {
        let next = u32::try_from(self.lists.len()).expect("fewer than 2^32 terms in a namespace");
        let list = *self.term_list.entry(term).or_insert(next);
        if list == next {
            self.lists.push(Postings::default());
            self.list_terms.push(term);
        }
        list
    }
}
