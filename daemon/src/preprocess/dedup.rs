//! Near-duplicate detection against a namespace's existing memories
//! (MinHash signatures in LSH buckets, one table per namespace), the
//! policy that decides what a Remember does with a near-duplicate, and the
//! mining answers recall's fusion reads off the same index (issue 10,
//! item 4): the estimated Jaccard of two memories, a memory's novelty, its
//! near-duplicate cluster.
//!
//! The default policy keeps every memory: a near-duplicate is stored and
//! linked to its original, and recall's dedup hides it. An acknowledged
//! write that silently disappears is lost data to the user, so dropping or
//! merging is something a deployment asks for. [`decide`] is the pure
//! function from policy and finding to decision; the caller carries it out
//! and reports it in the response.
//!
//! **Novelty** of a memory: 1 − the highest estimated Jaccard with another
//! memory of its namespace sharing an LSH bucket with it (1 when none
//! does), over at most [`MAX_NOVELTY_CANDIDATES`] bucket members.
//!
//! **Clusters.** An insert links the memory to the near-duplicates (at or
//! above the threshold) among its first `max_candidates` LSH candidates; a
//! cluster is a set of memories connected by such links, named by its
//! smallest live id (a memory in no cluster is named by its own id).
//! Clusters are merged on insert and never split: forgetting a memory takes
//! it out of its cluster (a cluster left with one member dissolves), but
//! memories connected only through it stay in one cluster while any of
//! them is indexed; a memory written again is linked afresh, to whatever
//! near-duplicates it has now. So `cluster_count` counts sets of ≥ 2 live
//! memories connected, when each was inserted, by a chain of links that
//! may run through memories forgotten since, and `clustered_len` the live
//! memories in them: never a forgotten memory, never a set of one; after
//! deletes one cluster may hold several groups that are no longer near.
//!
//! **Memory**, measured with 200,000 memories of one namespace: about
//! 1 KiB per indexed memory (its boxed 260-byte signature, its entry in the
//! id map, one bucket slot in each of 16 bands at the 0.7 threshold); a
//! memory in a cluster adds about 60 bytes. A text with no token is not
//! indexed.
//!
//! Not here: the signatures (`minhash.rs`); storing, linking or merging
//! (the store, on Remember); the follower and the read view a recall holds
//! (`neardup.rs`).

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use crate::preprocess::minhash::{DEFAULT_SEED, LshParams, MinHasher, Signature};
use crate::recall::lexical::id_map::IdMap;

/// Jaccard similarity of shingle sets from which a text is a near-duplicate
/// (DESIGN.md §5: recall's dedup also uses 0.7).
pub const DEFAULT_THRESHOLD: f64 = 0.7;

/// Candidates compared at most per lookup: a bucket holding thousands of
/// copies of one text ("ok", "thanks") must not make a Remember scan them.
pub const DEFAULT_MAX_CANDIDATES: usize = 256;

/// What a Remember does with a text that nearly duplicates a memory.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum DuplicatePolicy {
    /// Store it, linked to its original (recall's dedup hides it).
    #[default]
    Keep,
    /// Fold it into the original (the original is updated, no new memory).
    Merge,
    /// Do not store it; the response names the original.
    Skip,
}

/// A memory that a new text nearly duplicates.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NearDuplicate {
    /// The existing memory.
    pub id: u64,
    /// Estimated Jaccard similarity.
    pub jaccard: f64,
}

/// What to do with one new text.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum DuplicateDecision {
    /// Not a near-duplicate: store it.
    Store,
    /// Store it and link it to `original`.
    StoreLinked {
        /// The memory it nearly duplicates.
        original: NearDuplicate,
    },
    /// Merge it into `original` instead of storing it.
    MergeInto {
        /// The memory it nearly duplicates.
        original: NearDuplicate,
    },
    /// Do not store it.
    Skip {
        /// The memory it nearly duplicates.
        original: NearDuplicate,
    },
}

/// The decision for a text given the policy and what detection found.
pub fn decide(policy: DuplicatePolicy, found: Option<NearDuplicate>) -> DuplicateDecision {
    match (policy, found) {
        (_, None) => DuplicateDecision::Store,
        (DuplicatePolicy::Keep, Some(original)) => DuplicateDecision::StoreLinked { original },
        (DuplicatePolicy::Merge, Some(original)) => DuplicateDecision::MergeInto { original },
        (DuplicatePolicy::Skip, Some(original)) => DuplicateDecision::Skip { original },
    }
}

/// Detection settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DedupConfig {
    /// See [`DEFAULT_THRESHOLD`]; within (0, 1].
    pub threshold: f64,
    /// The hash functions' seed (see [`DEFAULT_SEED`]).
    pub seed: u64,
    /// See [`DEFAULT_MAX_CANDIDATES`].
    pub max_candidates: usize,
}

impl Default for DedupConfig {
    fn default() -> Self {
        Self {
            threshold: DEFAULT_THRESHOLD,
            seed: DEFAULT_SEED,
            max_candidates: DEFAULT_MAX_CANDIDATES,
        }
    }
}

/// Bucket members compared at most per novelty answer. Fusion asks the
/// novelty of each of its few hundred candidates in one recall, and an
/// adversary can fill a bucket with thousands of copies of one text: 32
/// comparisons of 64 minima bound a call to about 2,000 integer compares
/// whatever is stored, while a memory's near copies share most of its
/// buckets, so the first members examined already find them (a call also
/// stops at the first exact copy).
pub const MAX_NOVELTY_CANDIDATES: usize = 32;

/// A novelty answer and the work it took.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Novelty {
    /// 1 − the highest estimated Jaccard with a memory sharing a bucket, in [0, 1].
    pub score: f32,
    /// Bucket members compared (at most [`MAX_NOVELTY_CANDIDATES`]).
    pub examined: usize,
}

/// A bucket's members; most buckets hold one memory, kept inline.
#[derive(Debug, Clone)]
enum Bucket {
    One(u64),
    Many(Vec<u64>),
}

impl Bucket {
    fn ids(&self) -> &[u64] {
        match self {
            Self::One(id) => std::slice::from_ref(id),
            Self::Many(ids) => ids,
        }
    }
}

/// One namespace's buckets.
#[derive(Debug, Default)]
struct Table {
    buckets: IdMap<u64, Bucket>,
    /// Memories in the buckets (the table goes when the last one does).
    len: usize,
}

/// One indexed memory.
#[derive(Debug)]
struct Entry {
    /// Its namespace: the key of its table, shared.
    namespace: Arc<str>,
    /// Boxed: the id map's slots stay small, so growing it moves little.
    signature: Box<Signature>,
    /// Its novelty as of the last insert near it (see [`NearDupIndex::stored_novelty`]).
    novelty: f32,
}

/// Signatures of a namespace's memories, bucketed for LSH, and the
/// near-duplicate clusters they form.
#[derive(Debug)]
pub struct NearDupIndex {
    config: DedupConfig,
    hasher: MinHasher,
    lsh: LshParams,
    tables: HashMap<Arc<str>, Table>,
    entries: IdMap<u64, Entry>,
    clusters: Clusters,
    /// The near-duplicates an insert links to (kept to reuse its buffer).
    near: Vec<u64>,
}

impl NearDupIndex {
    /// An empty index.
    pub fn new(config: DedupConfig) -> Result<Self, super::PreprocessConfigError> {
        if !(config.threshold > 0.0 && config.threshold <= 1.0) || config.max_candidates == 0 {
            return Err(super::PreprocessConfigError::NearDuplicate {
                threshold: config.threshold,
                max_candidates: config.max_candidates,
            });
        }
        Ok(Self {
            config,
            hasher: MinHasher::new(config.seed),
            lsh: LshParams::for_threshold(config.threshold),
            tables: HashMap::new(),
            entries: IdMap::default(),
            clusters: Clusters::default(),
            near: Vec::new(),
        })
    }

    /// The Jaccard similarity from which a memory is a near-duplicate.
    pub fn threshold(&self) -> f64 {
        self.config.threshold
    }

    /// The banding in use.
    pub fn lsh(&self) -> LshParams {
        self.lsh
    }

    /// The signature of `text` into `out` (with this index's functions).
    pub fn signature(&self, text: &str, out: &mut Signature) {
        self.hasher.signature(text, out);
    }

    /// The most similar memory of `namespace` at or above the threshold,
    /// among at most `max_candidates` LSH candidates (ties: smaller id).
    pub fn find(&self, namespace: &str, signature: &Signature) -> Option<NearDuplicate> {
        let table = self.tables.get(namespace)?;
        if signature.is_empty() {
            return None;
        }
        let mut best: Option<NearDuplicate> = None;
        for id in self.candidates(table, signature).take(self.config.max_candidates) {
            let jaccard = self.entries[&id].signature.jaccard(signature);
            let better = best.is_none_or(|b| jaccard > b.jaccard || (jaccard == b.jaccard && id < b.id));
            if jaccard >= self.config.threshold && better {
                best = Some(NearDuplicate { id, jaccard });
            }
        }
        best
    }

    /// Adds memory `id` of `namespace` with its signature (replacing what
    /// `id` had) and links it to the near-duplicates found among its first
    /// `max_candidates` LSH candidates. A signature of an empty text is not
    /// added.
    pub fn insert(&mut self, id: u64, namespace: &str, signature: &Signature) {
        self.delete(id);
        if signature.is_empty() {
            return;
        }
        let namespace = self.table_key(namespace);
        let mut near = std::mem::take(&mut self.near);
        self.near_duplicates(&self.tables[&*namespace], signature, &mut near);
        let table = self.tables.get_mut(&*namespace).expect("the table was just made");
        for band in 0..self.lsh.bands {
            let key = self.lsh.band_key(signature, band);
            match table.buckets.get_mut(&key) {
                None => {
                    table.buckets.insert(key, Bucket::One(id));
                }
                Some(Bucket::One(first)) => {
                    let first = *first;
                    table.buckets.insert(key, Bucket::Many(vec![first, id]));
                }
                Some(Bucket::Many(ids)) => ids.push(id),
            }
        }
        table.len += 1;
        let novelty = self.novelty_at_insert(&namespace, signature, id);
        let signature = Box::new(signature.clone());
        self.entries.insert(
            id,
            Entry {
                namespace,
                signature,
                novelty,
            },
        );
        self.clusters.link(id, &near);
        self.near = near;
    }

    /// Removes memory `id` (from its cluster too); false if it was not indexed.
    pub fn delete(&mut self, id: u64) -> bool {
        // The memories it may have lowered the novelty of: scored afresh
        // once it is gone (bounded like a novelty probe).
        let neighbours: Vec<u64> = match self.entries.get(&id) {
            Some(entry) => {
                let table = &self.tables[&*entry.namespace];
                let mut seen: Vec<u64> = Vec::with_capacity(MAX_NOVELTY_CANDIDATES);
                for other in self.candidates(table, &entry.signature).filter(|&other| other != id) {
                    if seen.len() == MAX_NOVELTY_CANDIDATES {
                        break;
                    }
                    if !seen.contains(&other) {
                        seen.push(other);
                    }
                }
                seen
            }
            None => Vec::new(),
        };
        let Some(entry) = self.entries.remove(&id) else {
            return false;
        };
        let table = self.tables.get_mut(&*entry.namespace).expect("a memory's table exists");
        for band in 0..self.lsh.bands {
            let key = self.lsh.band_key(&entry.signature, band);
            let emptied = match table.buckets.get_mut(&key) {
                Some(Bucket::Many(ids)) => {
                    ids.retain(|&m| m != id);
                    ids.is_empty()
                }
                Some(Bucket::One(_)) => true,
                None => false,
            };
            if emptied {
                table.buckets.remove(&key);
            }
        }
        table.len -= 1;
        if table.len == 0 {
            self.tables.remove(&*entry.namespace);
        }
        self.clusters.unlink(id);
        for other in neighbours {
            if let Some(novelty) = self.novelty(other) {
                let score = novelty.score;
                if let Some(entry) = self.entries.get_mut(&other) {
                    entry.novelty = score;
                }
            }
        }
        true
    }

    /// Memories indexed.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The signature of indexed memory `id` (None: not indexed, or its
    /// text had no token).
    pub fn signature_of(&self, id: u64) -> Option<&Signature> {
        self.entries.get(&id).map(|entry| &*entry.signature)
    }

    /// Estimated Jaccard similarity of memories `a` and `b` (None: either
    /// is not indexed).
    pub fn jaccard(&self, a: u64, b: u64) -> Option<f64> {
        Some(self.signature_of(a)?.jaccard(self.signature_of(b)?))
    }

    /// How unlike the other memories of its namespace that share an LSH
    /// bucket with it memory `id` is (None: not indexed). At most
    /// [`MAX_NOVELTY_CANDIDATES`] members are compared, so a memory whose
    /// buckets are crowded may be scored more novel than it is.
    pub fn novelty(&self, id: u64) -> Option<Novelty> {
        let entry = self.entries.get(&id)?;
        let table = &self.tables[&*entry.namespace];
        let (mut best, mut examined) = (0.0f64, 0usize);
        for other in self.candidates(table, &entry.signature).filter(|&other| other != id) {
            if examined == MAX_NOVELTY_CANDIDATES || best >= 1.0 {
                break;
            }
            examined += 1;
            best = best.max(self.entries[&other].signature.jaccard(&entry.signature));
        }
        let score = (1.0 - best) as f32;
        Some(Novelty { score, examined })
    }

    /// Memory `id`'s novelty kept up to date on the write path (None: not
    /// indexed): computed as [`Self::novelty`] does when it is inserted, and
    /// lowered when a later insert is near it. A recall reads it in O(1)
    /// instead of comparing signatures per candidate (that cost 1 ms of a
    /// full-pipeline recall of ~100 candidates at 100,000 memories). A
    /// delete scores the memories sharing its buckets afresh (at most
    /// [`MAX_NOVELTY_CANDIDATES`] of them).
    pub fn stored_novelty(&self, id: u64) -> Option<f32> {
        self.entries.get(&id).map(|entry| entry.novelty)
    }

    /// The novelty of a memory being inserted (its buckets already hold
    /// it), lowering the novelty of the members it is compared with.
    fn novelty_at_insert(&mut self, namespace: &str, signature: &Signature, id: u64) -> f32 {
        let table = &self.tables[namespace];
        let mut compared: Vec<(u64, f64)> = Vec::with_capacity(MAX_NOVELTY_CANDIDATES);
        for other in self.candidates(table, signature).filter(|&other| other != id) {
            if compared.len() == MAX_NOVELTY_CANDIDATES {
                break;
            }
            if compared.iter().any(|(seen, _)| *seen == other) {
                continue;
            }
            let jaccard = self.entries[&other].signature.jaccard(signature);
            compared.push((other, jaccard));
            if jaccard >= 1.0 {
                break;
            }
        }
        let mut best = 0.0f64;
        for (other, jaccard) in compared {
            best = best.max(jaccard);
            if let Some(entry) = self.entries.get_mut(&other) {
                entry.novelty = entry.novelty.min((1.0 - jaccard) as f32);
            }
        }
        (1.0 - best) as f32
    }

    /// The near-duplicate cluster of memory `id`: the smallest live id of
    /// its cluster, or `id` itself when it is in none (None: not indexed).
    /// See the module docs for what a cluster is after a delete.
    pub fn cluster_of(&self, id: u64) -> Option<u64> {
        self.entries.contains_key(&id).then(|| self.clusters.label(id))
    }

    /// Clusters of at least two live memories.
    pub fn cluster_count(&self) -> usize {
        self.clusters.len()
    }

    /// Live memories in those clusters.
    pub fn clustered_len(&self) -> usize {
        self.clusters.clustered_len()
    }

    /// The members of `signature`'s buckets in `table`, band by band (a
    /// member sharing several bands comes once per band).
    fn candidates<'s>(&'s self, table: &'s Table, signature: &'s Signature) -> impl Iterator<Item = u64> + 's {
        let lsh = self.lsh;
        (0..lsh.bands)
            .filter_map(move |band| table.buckets.get(&lsh.band_key(signature, band)))
            .flat_map(|bucket| bucket.ids().iter().copied())
    }

    /// The distinct memories at or above the threshold among the first
    /// `max_candidates` candidates of `signature`, into `out`.
    fn near_duplicates(&self, table: &Table, signature: &Signature, out: &mut Vec<u64>) {
        out.clear();
        let near = |id: &u64| self.entries[id].signature.jaccard(signature) >= self.config.threshold;
        out.extend(
            self.candidates(table, signature)
                .take(self.config.max_candidates)
                .filter(near),
        );
        out.sort_unstable();
        out.dedup();
    }

    /// The key of `namespace`'s table, made if it has none.
    fn table_key(&mut self, namespace: &str) -> Arc<str> {
        if let Some((key, _)) = self.tables.get_key_value(namespace) {
            return Arc::clone(key);
        }
        let key: Arc<str> = namespace.into();
        self.tables.insert(Arc::clone(&key), Table::default());
        key
    }
}

/// Near-duplicate clusters: sets of memories connected by the links made
/// at insert, each labelled by its smallest live member. Only memories in
/// a cluster of two or more are kept here.
#[derive(Debug, Default)]
struct Clusters {
    /// Memory → its cluster's key.
    of: IdMap<u64, u64>,
    /// Cluster key → its live members (at least two), ordered so the
    /// smallest, the label, comes first.
    members: IdMap<u64, BTreeSet<u64>>,
    /// The last key handed out (keys are never reused).
    last_key: u64,
}

impl Clusters {
    /// `id`'s cluster label (`id` when it is in no cluster).
    fn label(&self, id: u64) -> u64 {
        self.of
            .get(&id)
            .map_or(id, |key| *self.members[key].first().expect("a cluster has members"))
    }

    /// Puts `id` in one cluster with `near` and everything they are
    /// clustered with. The smaller clusters move into the largest (union
    /// by size): a memory that moves at least doubles its cluster, so
    /// merges cost O(n log n) over n inserts.
    fn link(&mut self, id: u64, near: &[u64]) {
        if near.is_empty() {
            return;
        }
        let largest = near
            .iter()
            .filter_map(|m| self.of.get(m))
            .max_by_key(|key| self.members[*key].len());
        let target = largest.copied().unwrap_or_else(|| self.open());
        for &member in near.iter().chain([&id]) {
            match self.of.get(&member).copied() {
                Some(key) if key == target => {}
                Some(key) => self.merge(key, target),
                None => self.join(member, target),
            }
        }
    }

    /// Takes `id` out of its cluster; a cluster left with one member is
    /// dissolved. Never splits what `id` connected (see the module docs).
    fn unlink(&mut self, id: u64) {
        let Some(key) = self.of.remove(&id) else {
            return;
        };
        let members = self.members.get_mut(&key).expect("a member's cluster exists");
        members.remove(&id);
        if members.len() == 1 {
            let last = members.pop_first().expect("one member left");
            self.members.remove(&key);
            self.of.remove(&last);
        }
    }

    fn open(&mut self) -> u64 {
        self.last_key += 1;
        self.last_key
    }

    fn join(&mut self, member: u64, key: u64) {
        self.of.insert(member, key);
        self.members.entry(key).or_default().insert(member);
    }

    fn merge(&mut self, from: u64, into: u64) {
        let moved = self.members.remove(&from).expect("a member's cluster exists");
        for &member in &moved {
            self.of.insert(member, into);
        }
        self.members.entry(into).or_default().extend(moved);
    }

    /// Clusters (each of at least two memories).
    fn len(&self) -> usize {
        self.members.len()
    }

    /// Memories in clusters.
    fn clustered_len(&self) -> usize {
        self.of.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::preprocess::minhash::NUM_HASHES;
    use crate::recall::ann::synthetic::SplitMix64;

    fn sentence(rng: &mut SplitMix64, n: usize) -> Vec<String> {
        (0..n).map(|_| format!("w{}", rng.next_u64() % 20_000)).collect()
    }

    fn signature(index: &NearDupIndex, text: &str) -> Signature {
        let mut out = Signature::default();
        index.signature(text, &mut out);
        out
    }

    #[test]
    fn near_duplicates_are_found_and_others_are_not() {
        let mut index = NearDupIndex::new(DedupConfig::default()).unwrap();
        let mut rng = SplitMix64::new(11);
        let originals: Vec<Vec<String>> = (0..500).map(|_| sentence(&mut rng, 60)).collect();
        for (id, words) in (1u64..).zip(&originals) {
            let sig = signature(&index, &words.join(" "));
            index.insert(id, "ns", &sig);
        }
        let mut found = 0;
        for (id, words) in (1u64..).zip(&originals).take(100) {
            // One word in 60 changed: about 3 shingles in 58 differ, J ≈ 0.9.
            let mut edited = words.clone();
            edited[30] = "changed".into();
            let hit = index.find("ns", &signature(&index, &edited.join(" ")));
            found += usize::from(hit.is_some_and(|h| h.id == id && h.jaccard >= 0.7));
            assert!(
                index.find("other", &signature(&index, &edited.join(" "))).is_none(),
                "namespaces are separate"
            );
        }
        assert!(found >= 98, "found {found} of 100 near-duplicates");
        let fresh: Vec<Signature> = (0..100)
            .map(|_| signature(&index, &sentence(&mut rng, 60).join(" ")))
            .collect();
        assert!(
            fresh.iter().all(|s| index.find("ns", s).is_none()),
            "an unrelated text matched"
        );
    }

    #[test]
    fn delete_and_replace_update_the_buckets() {
        let mut index = NearDupIndex::new(DedupConfig::default()).unwrap();
        let text = "Caroline went to the LGBTQ support group yesterday and it was powerful";
        let sig = signature(&index, text);
        index.insert(1, "ns", &sig);
        index.insert(2, "ns", &sig);
        assert_eq!(index.find("ns", &sig), Some(NearDuplicate { id: 1, jaccard: 1.0 }));
        assert!(index.delete(1));
        assert_eq!(index.find("ns", &sig).map(|d| d.id), Some(2));
        index.insert(2, "ns", &signature(&index, "something else entirely different here"));
        assert_eq!(index.find("ns", &sig), None);
        assert!(index.delete(2) && index.is_empty());
        index.insert(3, "ns", &signature(&index, ""));
        assert!(index.is_empty(), "an empty text is not indexed");
    }

    #[test]
    fn the_policy_decides_purely() {
        let original = NearDuplicate { id: 9, jaccard: 0.8 };
        assert_eq!(decide(DuplicatePolicy::default(), None), DuplicateDecision::Store);
        assert_eq!(
            decide(DuplicatePolicy::default(), Some(original)),
            DuplicateDecision::StoreLinked { original }
        );
        assert_eq!(
            decide(DuplicatePolicy::Merge, Some(original)),
            DuplicateDecision::MergeInto { original }
        );
        assert_eq!(
            decide(DuplicatePolicy::Skip, Some(original)),
            DuplicateDecision::Skip { original }
        );
        assert_eq!(decide(DuplicatePolicy::Skip, None), DuplicateDecision::Store);
    }

    /// Indexes `texts` as memories 1, 2, ... of `namespace`.
    fn index_of(texts: &[&str], namespace: &str) -> NearDupIndex {
        let mut index = NearDupIndex::new(DedupConfig::default()).unwrap();
        for (id, text) in (1u64..).zip(texts) {
            let sig = signature(&index, text);
            index.insert(id, namespace, &sig);
        }
        index
    }

    fn text(seed: u64, n: usize) -> String {
        sentence(&mut SplitMix64::new(seed), n).join(" ")
    }

    /// `base` with one word in 60 changed (J ≈ 0.9).
    fn near_copy(base: &str) -> String {
        let mut words: Vec<&str> = base.split(' ').collect();
        words[30] = "changed";
        words.join(" ")
    }

    #[test]
    fn jaccard_is_about_one_for_copies_and_zero_for_unrelated_texts() {
        let (a, b) = (text(1, 60), text(2, 60));
        let index = index_of(&[&a, &a, &b, ""], "ns");
        assert_eq!(index.jaccard(1, 2), Some(1.0));
        assert!(index.jaccard(1, 3).unwrap() < 0.05);
        assert_eq!(index.jaccard(1, 1), Some(1.0));
        assert_eq!(index.jaccard(1, 4), None, "an empty text has no signature");
        assert_eq!(index.jaccard(1, 99), None, "unknown memory");
        assert_eq!(index.signature_of(3), Some(&signature(&index, &b)));
    }

    #[test]
    fn a_memory_with_a_near_copy_is_not_novel_and_a_unique_one_is() {
        let base = text(3, 60);
        let index = index_of(&[&base, &near_copy(&base), &text(4, 60)], "ns");
        let copied = index.novelty(1).unwrap();
        assert!(copied.score < 0.3, "{copied:?}");
        assert_eq!(index.novelty(2).unwrap().score, copied.score, "symmetric");
        assert_eq!(
            index.novelty(3),
            Some(Novelty {
                score: 1.0,
                examined: 0
            })
        );
        assert_eq!(index.novelty(9), None);
        // The same texts in two namespaces: each is unique in its own.
        let mut split = index_of(&[&base], "a");
        split.insert(2, "b", &signature(&split, &base));
        assert_eq!(split.novelty(1).unwrap().score, 1.0);
    }

    #[test]
    fn clusters_group_near_copies_within_a_namespace() {
        let (x, y) = (text(5, 60), text(6, 60));
        let mut index = index_of(&[&x, &y, &near_copy(&x), &x], "ns");
        index.insert(5, "other", &signature(&index, &x));
        assert_eq!(index.cluster_of(1), Some(1));
        assert_eq!(index.cluster_of(3), Some(1));
        assert_eq!(index.cluster_of(4), Some(1));
        assert_eq!(index.cluster_of(2), Some(2), "alone: its own cluster");
        assert_eq!(index.cluster_of(5), Some(5), "another namespace's copy is apart");
        assert_eq!(index.cluster_of(6), None);
        assert_eq!((index.cluster_count(), index.clustered_len()), (1, 3));
        index.insert(6, "other", &signature(&index, &near_copy(&x)));
        assert_eq!(index.cluster_of(6), Some(5));
        assert_eq!((index.cluster_count(), index.clustered_len()), (2, 5));
    }

    /// `base` with positions `changed` replaced by values no other signature has.
    fn edited(base: &Signature, changed: std::ops::Range<usize>, tag: u32) -> Signature {
        let mut mins = *base.mins();
        for i in changed {
            mins[i] = tag << 8 | i as u32;
        }
        Signature::from_mins(mins)
    }

    #[test]
    fn a_memory_near_two_clusters_merges_them_and_a_delete_does_not_split() {
        // a and b each share 52 of 64 positions with c (J ≈ 0.81) and 40
        // with each other (0.63, below the threshold).
        let c = Signature::from_mins(std::array::from_fn(|i| i as u32));
        let (a, b) = (edited(&c, 0..12, 1), edited(&c, 52..64, 2));
        let mut index = NearDupIndex::new(DedupConfig::default()).unwrap();
        for (id, sig) in [(1, &a), (2, &a), (3, &b), (4, &b)] {
            index.insert(id, "ns", sig);
        }
        assert_eq!((index.cluster_of(2), index.cluster_of(4)), (Some(1), Some(3)));
        index.insert(5, "ns", &c);
        assert!((1..=5).all(|id| index.cluster_of(id) == Some(1)));
        assert_eq!((index.cluster_count(), index.clustered_len()), (1, 5));
        // The link through c outlives it (clusters split lazily): the b
        // copies leave the a cluster only once both have been removed.
        index.delete(5);
        assert_eq!(index.cluster_of(3), Some(1));
        assert_eq!((index.cluster_count(), index.clustered_len()), (1, 4));
        index.delete(3);
        index.delete(4);
        index.insert(3, "ns", &b);
        index.insert(4, "ns", &b);
        assert_eq!((index.cluster_of(4), index.cluster_of(2)), (Some(3), Some(1)));
        assert_eq!((index.cluster_count(), index.clustered_len()), (2, 4));
    }

    #[test]
    fn delete_takes_a_memory_out_of_every_answer() {
        let base = text(7, 60);
        let mut index = index_of(&[&base, &near_copy(&base), &base], "ns");
        assert_eq!((index.cluster_count(), index.clustered_len()), (1, 3));
        assert!(index.delete(1));
        assert_eq!(
            (index.jaccard(1, 2), index.novelty(1), index.cluster_of(1)),
            (None, None, None)
        );
        assert_eq!(
            index.cluster_of(2),
            Some(2),
            "the label moves to the smallest live member"
        );
        assert_eq!(index.cluster_of(3), Some(2));
        assert_eq!((index.cluster_count(), index.clustered_len()), (1, 2));
        assert!(index.delete(3));
        assert_eq!(
            index.novelty(2),
            Some(Novelty {
                score: 1.0,
                examined: 0
            })
        );
        assert_eq!(
            (index.cluster_count(), index.clustered_len()),
            (0, 0),
            "a cluster of one dissolves"
        );
        // Replacing a memory's text re-links it from scratch.
        index.insert(4, "ns", &signature(&index, &base));
        index.insert(4, "ns", &signature(&index, &text(8, 60)));
        assert_eq!((index.cluster_count(), index.cluster_of(4)), (0, Some(4)));
    }

    /// The novelty kept on the write path is what a fresh probe computes,
    /// through inserts of near-copies and deletes of them (few memories, so
    /// the probe's cap does not cut).
    #[test]
    fn the_stored_novelty_follows_inserts_and_deletes() {
        let texts = [
            text(1, 40),
            text(2, 40),
            text(1, 40) + " and one more word",
            text(3, 40),
        ];
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        let mut index = index_of(&refs, "ns");
        let check = |index: &NearDupIndex| {
            for id in 1..=4u64 {
                if let Some(fresh) = index.novelty(id) {
                    assert_eq!(index.stored_novelty(id), Some(fresh.score), "memory {id}");
                }
            }
        };
        check(&index);
        assert!(index.stored_novelty(1).unwrap() < 0.5, "memory 3 nearly copies it");
        index.delete(3);
        check(&index);
        assert_eq!(index.stored_novelty(1), Some(1.0), "its copy is gone");
        assert_eq!(index.stored_novelty(3), None);
    }

    #[test]
    fn a_crowded_bucket_bounds_the_novelty_work() {
        let index = index_of(&vec![text(9, 60).as_str(); 10_000], "ns");
        assert_eq!(
            index.novelty(5_000),
            Some(Novelty {
                score: 0.0,
                examined: 1
            })
        );
        assert_eq!((index.cluster_count(), index.clustered_len()), (1, 10_000));
        // Memories sharing one band with memory 1 and nothing else: no copy
        // ends the search early, the cap does.
        let mut index = NearDupIndex::new(DedupConfig::default()).unwrap();
        let rows = index.lsh().rows;
        let first = Signature::from_mins(std::array::from_fn(|i| i as u32));
        for id in 1..=10_000u64 {
            let mut mins = *first.mins();
            for (i, min) in mins.iter_mut().enumerate().skip(rows) {
                *min = (id as u32) << 8 | i as u32;
            }
            index.insert(id, "ns", &Signature::from_mins(mins));
        }
        let novelty = index.novelty(1).unwrap();
        assert_eq!(novelty.examined, MAX_NOVELTY_CANDIDATES);
        let shared = rows as f32 / NUM_HASHES as f32;
        assert!((novelty.score - (1.0 - shared)).abs() < 1e-6, "{novelty:?}");
        assert_eq!(index.cluster_count(), 0, "sharing one band is not near");
    }

    #[test]
    fn invalid_settings_are_refused() {
        for threshold in [0.0, 1.5, f64::NAN] {
            assert!(
                NearDupIndex::new(DedupConfig {
                    threshold,
                    ..DedupConfig::default()
                })
                .is_err()
            );
        }
    }
}
