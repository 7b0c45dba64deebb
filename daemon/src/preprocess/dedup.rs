//! Near-duplicate detection against a namespace's existing memories
//! (MinHash signatures in LSH buckets, one table per namespace) and the
//! policy that decides what a Remember does with a near-duplicate.
//!
//! The default policy keeps every memory: a near-duplicate is stored and
//! linked to its original, and recall's dedup hides it. An acknowledged
//! write that silently disappears is lost data to the user, so dropping or
//! merging is something a deployment asks for. [`decide`] is the pure
//! function from policy and finding to decision; the caller carries it out
//! and reports it in the response.
//!
//! Not here: the signatures (`minhash.rs`); storing, linking or merging
//! (the store, on Remember).

use std::collections::HashMap;

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

/// One namespace's buckets and signatures.
#[derive(Debug, Default)]
struct Table {
    buckets: IdMap<u64, Bucket>,
    signatures: IdMap<u64, Box<Signature>>,
}

/// Signatures of a namespace's memories, bucketed for LSH.
#[derive(Debug)]
pub struct NearDupIndex {
    config: DedupConfig,
    hasher: MinHasher,
    lsh: LshParams,
    tables: HashMap<Box<str>, Table>,
    /// Memory id → its namespace's table key.
    home: IdMap<u64, Box<str>>,
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
            home: IdMap::default(),
        })
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
        let mut checked = 0;
        for band in 0..self.lsh.bands {
            let Some(bucket) = table.buckets.get(&self.lsh.band_key(signature, band)) else {
                continue;
            };
            for &id in bucket.ids() {
                if checked == self.config.max_candidates {
                    return best;
                }
                checked += 1;
                let jaccard = table.signatures[&id].jaccard(signature);
                let better = best.is_none_or(|b| jaccard > b.jaccard || (jaccard == b.jaccard && id < b.id));
                if jaccard >= self.config.threshold && better {
                    best = Some(NearDuplicate { id, jaccard });
                }
            }
        }
        best
    }

    /// Adds memory `id` of `namespace` with its signature (replacing what
    /// `id` had). A signature of an empty text is not added.
    pub fn insert(&mut self, id: u64, namespace: &str, signature: &Signature) {
        self.delete(id);
        if signature.is_empty() {
            return;
        }
        let table = self.tables.entry(namespace.into()).or_default();
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
        table.signatures.insert(id, Box::new(signature.clone()));
        self.home.insert(id, namespace.into());
    }

    /// Removes memory `id`; false if it was not indexed.
    pub fn delete(&mut self, id: u64) -> bool {
        let Some(namespace) = self.home.remove(&id) else {
            return false;
        };
        let table = self.tables.get_mut(&namespace).expect("a memory's table exists");
        let signature = table.signatures.remove(&id).expect("an indexed memory has a signature");
        for band in 0..self.lsh.bands {
            let key = self.lsh.band_key(&signature, band);
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
        if table.signatures.is_empty() {
            self.tables.remove(&namespace);
        }
        true
    }

    /// Memories indexed.
    pub fn len(&self) -> usize {
        self.home.len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.home.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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
