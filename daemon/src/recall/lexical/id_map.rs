//! Hash maps keyed by the daemon's own integers (memory ids, term ids,
//! slot numbers, LSH band keys), with a multiply-rotate hasher in place of
//! SipHash: those maps are touched once per posting on insert and load,
//! where SipHash was most of the cost.
//!
//! Only for keys the daemon assigns or derives itself: a client cannot choose
//! them, so a fast non-keyed hash cannot be turned into a collision attack.
//! Maps keyed by client text (terms, entity keys, namespaces) keep SipHash.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// A `HashMap` keyed by a daemon-assigned integer.
pub type IdMap<K, V> = HashMap<K, V, BuildHasherDefault<IdHasher>>;

/// FxHash's step (rustc's hasher): rotate, xor, multiply by an odd constant
/// whose high bits mix every input bit (hashbrown reads the top bits).
#[derive(Debug, Default, Clone, Copy)]
pub struct IdHasher(u64);

const SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;

impl Hasher for IdHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.write_u64(u64::from(byte));
        }
    }

    fn write_u32(&mut self, n: u32) {
        self.write_u64(u64::from(n));
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(SEED);
    }

    fn write_usize(&mut self, n: usize) {
        self.write_u64(n as u64);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}
