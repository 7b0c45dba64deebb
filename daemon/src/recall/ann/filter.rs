//! What a search may return: a caller's predicate over memory ids (a
//! namespace, tags, a time range), checked during graph traversal.
//!
//! A node the filter refuses is still expanded (its links lead to nodes that
//! pass) but never enters the results, so a filtered search returns the
//! nearest passing vectors rather than the passing few of the unfiltered top.
//! When the filter admits only a small share of the index, the caller's
//! estimate ([`Filter::expected_matches`]) sends the search to an exact scan.

/// A predicate over memory ids.
pub trait Filter {
    /// Whether `id` may be returned.
    fn accepts(&self, id: u64) -> bool;

    /// About how many ids pass (a namespace's size), if known: a small share
    /// makes the index scan exactly instead of walking the graph.
    fn expected_matches(&self) -> Option<usize> {
        None
    }
}

/// Every id passes.
#[derive(Debug, Clone, Copy, Default)]
pub struct AcceptAll;

impl Filter for AcceptAll {
    fn accepts(&self, _id: u64) -> bool {
        true
    }
}

/// A closure as a filter, with an optional estimate of how many pass.
#[derive(Debug, Clone, Copy)]
pub struct FnFilter<F> {
    accept: F,
    expected_matches: Option<usize>,
}

impl<F: Fn(u64) -> bool> FnFilter<F> {
    /// A filter accepting the ids `accept` says yes to.
    pub fn new(accept: F, expected_matches: Option<usize>) -> Self {
        Self {
            accept,
            expected_matches,
        }
    }
}

impl<F: Fn(u64) -> bool> Filter for FnFilter<F> {
    fn accepts(&self, id: u64) -> bool {
        (self.accept)(id)
    }

    fn expected_matches(&self) -> Option<usize> {
        self.expected_matches
    }
}

/// A set of ids as a bitset (the store's ids are dense, counted from 1), for
/// a namespace's or a tag's members.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IdBitset {
    words: Vec<u64>,
    count: usize,
}

impl IdBitset {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `id`; true if it was not there.
    pub fn insert(&mut self, id: u64) -> bool {
        let word = usize::try_from(id / 64).expect("ids of a bitset fit in memory");
        if self.words.len() <= word {
            self.words.resize(word + 1, 0);
        }
        let bit = 1u64 << (id % 64);
        let added = self.words[word] & bit == 0;
        self.words[word] |= bit;
        self.count += usize::from(added);
        added
    }

    /// Removes `id`; true if it was there.
    pub fn remove(&mut self, id: u64) -> bool {
        let present = self.contains(id);
        if present {
            self.words[(id / 64) as usize] &= !(1u64 << (id % 64));
            self.count -= 1;
        }
        present
    }

    /// Whether `id` is in the set.
    pub fn contains(&self, id: u64) -> bool {
        usize::try_from(id / 64)
            .ok()
            .and_then(|w| self.words.get(w))
            .is_some_and(|w| w & (1 << (id % 64)) != 0)
    }

    /// Members.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }
}

impl FromIterator<u64> for IdBitset {
    fn from_iter<I: IntoIterator<Item = u64>>(ids: I) -> Self {
        let mut set = Self::new();
        for id in ids {
            set.insert(id);
        }
        set
    }
}

impl Filter for IdBitset {
    fn accepts(&self, id: u64) -> bool {
        self.contains(id)
    }

    fn expected_matches(&self) -> Option<usize> {
        Some(self.count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bitset_counts_and_answers() {
        let mut set: IdBitset = [1, 64, 1000].into_iter().collect();
        assert!(set.accepts(64) && set.accepts(1000) && !set.accepts(65) && !set.accepts(u64::MAX));
        assert_eq!(set.expected_matches(), Some(3));
        assert!(set.remove(64) && !set.remove(64));
        assert_eq!(set.len(), 2);
    }
}
