//! One namespace's inverted index: a forward index by document slot and one
//! posting list per term, both append-only, with tombstones for deletes.
//!
//! Slots are handed out in increasing order, so every posting list is sorted
//! by slot without sorting: an insert appends to the lists of its terms and
//! is visible to the next search. A delete sets the slot's tombstone and
//! takes the document out of the statistics (live count, total length,
//! each term's live document frequency) at once; its postings stay until the
//! shard is compacted (its rows and lists filtered in place), which happens when
//! tombstones reach a share of the slots ([`COMPACT_DEAD_FRACTION`]).
//!
//! Each shard keeps its own statistics (N, average length, document
//! frequencies), so a namespace's scores do not depend on what other
//! namespaces hold, and a search touches only its namespace's postings.
//!
//! Not here: tokenizing (`tokenizer.rs`), the search loop (`search.rs`).

use rkyv::{Archive, Deserialize, Serialize};

use crate::recall::lexical::id_map::IdMap;

/// Tombstones at which a shard is rebuilt without them, as a share of its
/// slots: dead postings cost time in every search that walks them, and a
/// rebuild costs about as much as inserting the live documents again, so
/// rebuilding at a quarter keeps both bounded (amortised O(1) per delete).
pub const COMPACT_DEAD_FRACTION: f64 = 0.25;

/// Below this many tombstones a shard is never compacted: a small shard's
/// dead postings cost nothing worth a rebuild.
pub const COMPACT_MIN_DEAD: usize = 64;

/// One document holding a term: slot and term frequency side by side, so
/// an insert or a search touches one cache line per posting, not two.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Posting {
    pub(crate) slot: u32,
    pub(crate) tf: u32,
}

/// The postings of one term in one shard.
#[derive(Debug, Default, Clone)]
pub(crate) struct Postings {
    /// By increasing slot.
    pub(crate) entries: Vec<Posting>,
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
    slot_of: IdMap<u64, u32>,
    /// Global term id → posting list index.
    term_list: IdMap<u32, u32>,
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

    /// The live memory ids.
    pub(crate) fn live_ids(&self) -> impl Iterator<Item = u64> + '_ {
        self.slot_of.keys().copied()
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
        let first = self.fwd_lists.len();
        let mut len = 0u32;
        for (term, tf) in terms {
            let list = self.list_for(term);
            self.fwd_lists.push(list);
            self.fwd_tfs.push(tf);
            len = len.saturating_add(tf);
        }
        for (&list, &tf) in self.fwd_lists[first..].iter().zip(&self.fwd_tfs[first..]) {
            let postings = &mut self.lists[list as usize];
            postings.min_len = if postings.entries.is_empty() {
                len
            } else {
                postings.min_len.min(len)
            };
            postings.entries.push(Posting { slot, tf });
            postings.live_df += 1;
            postings.max_tf = postings.max_tf.max(tf);
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
            // Saturating: a loaded image is checked for ranges, not for
            // agreement between its forward index and its postings.
            let postings = &mut self.lists[list as usize];
            postings.live_df = postings.live_df.saturating_sub(1);
        }
        true
    }

    /// Whether tombstones reached the share that makes a rebuild worth it.
    pub(crate) fn wants_compaction(&self) -> bool {
        self.dead_count >= COMPACT_MIN_DEAD && self.dead_count as f64 >= COMPACT_DEAD_FRACTION * self.ids.len() as f64
    }

    /// Drops the tombstoned documents and their postings in place: slots
    /// are renumbered in order (so lists stay sorted), lists left empty are
    /// dropped. One sequential pass over the forward index and each list, no
    /// hashing per posting.
    pub(crate) fn compact(&mut self) {
        let slot_remap = self.compact_documents();
        let list_remap = self.compact_lists(&slot_remap);
        for list in &mut self.fwd_lists {
            *list = list_remap[*list as usize];
            debug_assert_ne!(*list, u32::MAX, "a live document's list was dropped");
        }
        for slot in self.slot_of.values_mut() {
            *slot = slot_remap[*slot as usize];
        }
        self.term_list.retain(|_, list| list_remap[*list as usize] != u32::MAX);
        for list in self.term_list.values_mut() {
            *list = list_remap[*list as usize];
        }
    }

    /// Keeps the live documents' rows; the new slot of each old one
    /// (`u32::MAX`: dropped).
    fn compact_documents(&mut self) -> Vec<u32> {
        let mut remap = vec![u32::MAX; self.ids.len()];
        let (mut kept, mut fwd_kept) = (0usize, 0usize);
        for (slot, new_slot) in remap.iter_mut().enumerate() {
            if self.is_dead(slot as u32) {
                continue;
            }
            *new_slot = kept as u32;
            let range = self.fwd_starts[slot] as usize..self.fwd_starts[slot + 1] as usize;
            self.fwd_lists.copy_within(range.clone(), fwd_kept);
            self.fwd_tfs.copy_within(range.clone(), fwd_kept);
            fwd_kept += range.len();
            self.ids[kept] = self.ids[slot];
            self.lens[kept] = self.lens[slot];
            // Safe to overwrite: kept ≤ slot, so offsets from here on are
            // not read again (or, with nothing dropped yet, are unchanged).
            self.fwd_starts[kept + 1] = fwd_kept as u32;
            kept += 1;
        }
        self.ids.truncate(kept);
        self.lens.truncate(kept);
        self.fwd_starts.truncate(kept + 1);
        self.fwd_lists.truncate(fwd_kept);
        self.fwd_tfs.truncate(fwd_kept);
        self.dead = vec![0; kept.div_ceil(64)];
        self.dead_count = 0;
        remap
    }

    /// Keeps each list's live postings under their new slots, with bounds
    /// recomputed; the new index of each old list (`u32::MAX`: dropped).
    fn compact_lists(&mut self, slot_remap: &[u32]) -> Vec<u32> {
        let mut remap = vec![u32::MAX; self.lists.len()];
        let mut kept = 0;
        for (list, new_list) in remap.iter_mut().enumerate() {
            let mut postings = std::mem::take(&mut self.lists[list]);
            postings.entries.retain_mut(|p| {
                p.slot = slot_remap[p.slot as usize];
                p.slot != u32::MAX
            });
            if postings.entries.is_empty() {
                continue;
            }
            postings.max_tf = postings.entries.iter().map(|p| p.tf).max().unwrap_or(0);
            postings.min_len = postings
                .entries
                .iter()
                .map(|p| self.lens[p.slot as usize])
                .min()
                .unwrap_or(0);
            *new_list = kept as u32;
            self.list_terms[kept] = self.list_terms[list];
            self.lists[kept] = postings;
            kept += 1;
        }
        self.lists.truncate(kept);
        self.list_terms.truncate(kept);
        remap
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

/// A shard's arrays as an index image holds them: everything but what a
/// load recomputes in one sequential pass (lengths, statistics, maps).
#[derive(Archive, Serialize, Deserialize, Debug, Default, PartialEq, Eq)]
pub(crate) struct ShardParts {
    /// Memory id of each slot.
    pub(crate) ids: Vec<u64>,
    /// Tombstones, a bit per slot.
    pub(crate) dead: Vec<u64>,
    /// Forward index: offsets (one per slot, plus one), list indexes, frequencies.
    pub(crate) fwd_starts: Vec<u32>,
    pub(crate) fwd_lists: Vec<u32>,
    pub(crate) fwd_tfs: Vec<u32>,
    /// Global term id of each posting list.
    pub(crate) list_terms: Vec<u32>,
    /// Postings: offsets (one per list, plus one), slots, frequencies.
    pub(crate) list_starts: Vec<u32>,
    pub(crate) post_slots: Vec<u32>,
    pub(crate) post_tfs: Vec<u32>,
}

impl Shard {
    /// The arrays to save.
    pub(crate) fn to_parts(&self) -> ShardParts {
        let mut parts = ShardParts {
            ids: self.ids.clone(),
            dead: self.dead.clone(),
            fwd_starts: self.fwd_starts.clone(),
            fwd_lists: self.fwd_lists.clone(),
            fwd_tfs: self.fwd_tfs.clone(),
            list_terms: self.list_terms.clone(),
            list_starts: Vec::with_capacity(self.lists.len() + 1),
            ..ShardParts::default()
        };
        parts.list_starts.push(0);
        for postings in &self.lists {
            parts.post_slots.extend(postings.entries.iter().map(|p| p.slot));
            parts.post_tfs.extend(postings.entries.iter().map(|p| p.tf));
            let end = u32::try_from(parts.post_slots.len()).expect("fewer than 2^32 postings in a namespace");
            parts.list_starts.push(end);
        }
        parts
    }

    /// A shard from saved arrays, every index checked against its range
    /// (`n_terms`: the dictionary's size); the reason if one is out.
    pub(crate) fn from_parts(parts: ShardParts, n_terms: usize) -> Result<Self, PartsFault> {
        check_parts(&parts, n_terms)?;
        let n = parts.ids.len();
        let lens: Vec<u32> = parts
            .fwd_starts
            .windows(2)
            .map(|w| {
                parts.fwd_tfs[w[0] as usize..w[1] as usize]
                    .iter()
                    .fold(0u32, |a, &t| a.saturating_add(t))
            })
            .collect();
        let mut shard = Self {
            dead_count: (0..n)
                .filter(|&slot| parts.dead[slot / 64] & (1 << (slot % 64)) != 0)
                .count(),
            ..Self::default()
        };
        shard.slot_of.reserve(n - shard.dead_count);
        for (slot, &id) in parts.ids.iter().enumerate() {
            if parts.dead[slot / 64] & (1 << (slot % 64)) == 0 {
                shard.live_len += u64::from(lens[slot]);
                if shard.slot_of.insert(id, slot as u32).is_some() {
                    return Err(PartsFault::LiveTwice { id });
                }
            }
        }
        shard.lists = parts
            .list_starts
            .windows(2)
            .map(|w| postings_of(&parts, &lens, w[0] as usize..w[1] as usize))
            .collect();
        shard.term_list.reserve(parts.list_terms.len());
        for (list, &term) in parts.list_terms.iter().enumerate() {
            if shard.term_list.insert(term, list as u32).is_some() {
                return Err(PartsFault::TwoPostingLists { term });
            }
        }
        let ShardParts {
            ids,
            dead,
            fwd_starts,
            fwd_lists,
            fwd_tfs,
            list_terms,
            ..
        } = parts;
        Ok(Self {
            ids,
            lens,
            dead,
            fwd_starts,
            fwd_lists,
            fwd_tfs,
            list_terms,
            ..shard
        })
    }
}

/// One posting list rebuilt from saved arrays, with its statistics.
fn postings_of(parts: &ShardParts, lens: &[u32], range: std::ops::Range<usize>) -> Postings {
    let mut postings = Postings {
        entries: Vec::with_capacity(range.len()),
        min_len: u32::MAX,
        ..Postings::default()
    };
    for (&slot, &tf) in parts.post_slots[range.clone()].iter().zip(&parts.post_tfs[range]) {
        postings.entries.push(Posting { slot, tf });
        let slot = slot as usize;
        postings.live_df += u32::from(parts.dead[slot / 64] & (1 << (slot % 64)) == 0);
        postings.max_tf = postings.max_tf.max(tf);
        postings.min_len = postings.min_len.min(lens[slot]);
    }
    postings
}

/// Why saved shard arrays were refused (the first check that failed).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum PartsFault {
    /// The tombstone bitmap does not have one bit per slot.
    #[error("{words} tombstone words for {slots} slots")]
    Tombstones { words: usize, slots: usize },
    /// An offsets array does not run from 0 to its entries' count.
    #[error("{what} offsets do not cover their {total} entries")]
    Offsets { what: &'static str, total: usize },
    /// Term frequencies and lists differ in length.
    #[error("frequency arrays disagree with their lists")]
    Frequencies,
    /// A list or term index points past its array.
    #[error("a list or term index is out of range")]
    IndexOutOfRange,
    /// A posting list is not strictly increasing, or names a missing slot.
    #[error("a posting list is not increasing within the slots")]
    Unordered,
    /// One memory id holds two live slots.
    #[error("memory {id} is live twice")]
    LiveTwice { id: u64 },
    /// One term has two posting lists.
    #[error("term {term} has two posting lists")]
    TwoPostingLists { term: u32 },
}

/// Checks every length, offset and index of saved arrays.
fn check_parts(parts: &ShardParts, n_terms: usize) -> Result<(), PartsFault> {
    let n = parts.ids.len();
    let n_lists = parts.list_terms.len();
    if parts.dead.len() != n.div_ceil(64) {
        return Err(PartsFault::Tombstones {
            words: parts.dead.len(),
            slots: n,
        });
    }
    check_offsets("forward", &parts.fwd_starts, n, parts.fwd_lists.len())?;
    check_offsets("posting", &parts.list_starts, n_lists, parts.post_slots.len())?;
    if parts.fwd_tfs.len() != parts.fwd_lists.len() || parts.post_tfs.len() != parts.post_slots.len() {
        return Err(PartsFault::Frequencies);
    }
    if parts.fwd_lists.iter().any(|&l| l as usize >= n_lists) || parts.list_terms.iter().any(|&t| t as usize >= n_terms)
    {
        return Err(PartsFault::IndexOutOfRange);
    }
    for w in parts.list_starts.windows(2) {
        let slots = &parts.post_slots[w[0] as usize..w[1] as usize];
        if slots.windows(2).any(|p| p[0] >= p[1]) || slots.last().is_some_and(|&s| s as usize >= n) {
            return Err(PartsFault::Unordered);
        }
    }
    Ok(())
}

/// `starts` has `count + 1` non-decreasing offsets from 0 to `total`.
fn check_offsets(what: &'static str, starts: &[u32], count: usize, total: usize) -> Result<(), PartsFault> {
    let ok = starts.len() == count + 1
        && starts.first() == Some(&0)
        && starts.last().is_some_and(|&l| l as usize == total)
        && starts.windows(2).all(|w| w[0] <= w[1]);
    if ok {
        Ok(())
    } else {
        Err(PartsFault::Offsets { what, total })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Shard {
        let mut shard = Shard::new();
        shard.add(10, [(0, 2), (1, 1)].into_iter());
        shard.add(11, [(1, 3), (2, 1)].into_iter());
        shard.add(12, [(0, 1)].into_iter());
        shard.remove(11);
        shard
    }

    #[test]
    fn parts_round_trip_keeps_tombstones_and_statistics() {
        let shard = sample();
        let back = Shard::from_parts(shard.to_parts(), 3).unwrap();
        assert_eq!(back.to_parts(), shard.to_parts());
        assert_eq!((back.live(), back.live_len, back.lens.clone()), (2, 4, vec![3, 4, 1]));
        let live_df: Vec<u32> = back.lists.iter().map(|p| p.live_df).collect();
        assert_eq!(live_df, [2, 1, 0]);
        assert!(back.is_dead(1) && !back.is_dead(0));
    }

    #[test]
    fn compaction_drops_dead_rows_and_empty_lists_in_place() {
        let mut shard = sample();
        shard.compact();
        assert_eq!(
            (shard.ids.clone(), shard.lens.clone(), shard.live_len),
            (vec![10, 12], vec![3, 1], 4)
        );
        let lists: Vec<(u32, Vec<Posting>)> = shard
            .list_terms
            .iter()
            .copied()
            .zip(shard.lists.iter().map(|p| p.entries.clone()))
            .collect();
        assert_eq!(
            lists,
            [
                (0, vec![Posting { slot: 0, tf: 2 }, Posting { slot: 1, tf: 1 }]),
                (1, vec![Posting { slot: 0, tf: 1 }])
            ]
        );
        assert_eq!((shard.list_of(2), shard.list_of(1)), (None, Some(1)));
        assert_eq!(shard.slot_of.get(&12), Some(&1));
        // Still a consistent shard: its parts load, and it takes more documents.
        Shard::from_parts(shard.to_parts(), 3).unwrap();
        shard.add(13, [(2, 1)].into_iter());
        assert!(shard.remove(10) && shard.remove(13) && !shard.remove(11));
    }

    #[test]
    fn parts_with_an_index_out_of_range_are_refused() {
        let corruptions: [fn(&mut ShardParts); 6] = [
            |p| p.fwd_lists[0] = 99,
            |p| p.post_slots[0] = 99,
            |p| p.list_terms[0] = 99,
            |p| p.fwd_starts.pop().map(drop).unwrap_or(()),
            |p| p.list_starts[1] = 1000,
            |p| p.post_slots.swap(0, 1),
        ];
        for (n, corrupt) in corruptions.iter().enumerate() {
            let mut parts = sample().to_parts();
            corrupt(&mut parts);
            assert!(Shard::from_parts(parts, 3).is_err(), "corruption {n} accepted");
        }
        let mut twice = sample().to_parts();
        twice.ids[2] = 10;
        assert!(Shard::from_parts(twice, 3).is_err(), "a memory live twice");
    }
}
