//! The mutable tail: vectors inserted since the last segment build, searched
//! exactly, so an insert is visible to the very next search.
//!
//! Kept small (the index's `tail_threshold`) because every search scans it;
//! `build_pending` turns it into graph. Ids are unique here (an upsert
//! replaces in place); a delete swaps the last entry into the hole.

use std::collections::HashMap;

use crate::recall::ann::distance::DotKernel;
use crate::recall::ann::hnsw::Query;

/// Quantised vectors in insertion order (until a delete reorders them).
#[derive(Debug, Clone, Default)]
pub(crate) struct Tail {
    dim: usize,
    ids: Vec<u64>,
    codes: Vec<i8>,
    scales: Vec<f32>,
    slots: HashMap<u64, usize>,
}

impl Tail {
    pub fn new(dim: usize) -> Self {
        Self { dim, ..Self::default() }
    }

    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn contains(&self, id: u64) -> bool {
        self.slots.contains_key(&id)
    }

    /// Entry `slot`: its id, codes and scale.
    pub fn entry(&self, slot: usize) -> (u64, &[i8], f32) {
        (
            self.ids[slot],
            &self.codes[slot * self.dim..(slot + 1) * self.dim],
            self.scales[slot],
        )
    }

    /// Adds `id`, or replaces its vector if present.
    pub fn upsert(&mut self, id: u64, codes: &[i8], scale: f32) {
        debug_assert_eq!(codes.len(), self.dim);
        match self.slots.get(&id) {
            Some(&slot) => {
                self.codes[slot * self.dim..(slot + 1) * self.dim].copy_from_slice(codes);
                self.scales[slot] = scale;
            }
            None => {
                self.slots.insert(id, self.ids.len());
                self.ids.push(id);
                self.codes.extend_from_slice(codes);
                self.scales.push(scale);
            }
        }
    }

    /// Removes `id`; true if it was here.
    pub fn remove(&mut self, id: u64) -> bool {
        let Some(slot) = self.slots.remove(&id) else {
            return false;
        };
        let last = self.ids.len() - 1;
        if slot != last {
            let moved = self.ids[last];
            self.ids[slot] = moved;
            self.scales[slot] = self.scales[last];
            self.codes
                .copy_within(last * self.dim..(last + 1) * self.dim, slot * self.dim);
            self.slots.insert(moved, slot);
        }
        self.ids.pop();
        self.scales.pop();
        self.codes.truncate(last * self.dim);
        true
    }

    /// Offers every entry `accept` allows to `offer` with its distance.
    pub fn scan(
        &self,
        kernel: DotKernel,
        query: Query<'_>,
        accept: &mut impl FnMut(u64) -> bool,
        offer: &mut impl FnMut(f32, u64),
    ) {
        for ((id, codes), scale) in self.ids.iter().zip(self.codes.chunks_exact(self.dim)).zip(&self.scales) {
            if accept(*id) {
                offer(kernel.distance(query.codes, query.scale, codes, *scale), *id);
            }
        }
    }
}
