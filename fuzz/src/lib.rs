//! What the fuzz targets share: valid seed inputs written on request, a scratch
//! directory on tmpfs for the targets that decode files, and a small reader of
//! fuzzer bytes.
//!
//! Seeds matter here: a target whose inputs fail the first check (a magic, a
//! checksum, rkyv's root pointer) proves nothing, so each target writes valid
//! inputs of every kind it decodes into `$NEXUS_FUZZ_SEED_DIR` when that is set
//! (`smoke.sh` sets it to the target's corpus). They are made by the same code the
//! daemon and client use, so they follow the formats as these change. Not here:
//! the decoding itself (each target calls the real entry points).

pub mod store;

use std::path::{Path, PathBuf};

/// Environment variable naming the directory a target writes its seeds into at start.
pub const SEED_DIR_ENV: &str = "NEXUS_FUZZ_SEED_DIR";

/// Writes `seeds()` as files `seed-<name>` into `$NEXUS_FUZZ_SEED_DIR`, if set,
/// after checking that each one `reaches` past the decoder's first checks (a seed
/// that does not would leave the fuzzer where random bytes start). Called from a
/// target's `init`, before libFuzzer reads its corpus directories.
pub fn write_seeds_if_asked(seeds: impl FnOnce() -> Vec<(&'static str, Vec<u8>)>, reaches: impl Fn(&[u8]) -> bool) {
    let Some(dir) = std::env::var_os(SEED_DIR_ENV).filter(|dir| !dir.is_empty()) else {
        return;
    };
    let dir = PathBuf::from(dir);
    std::fs::create_dir_all(&dir).expect("create the seed directory");
    for (name, bytes) in seeds() {
        assert!(reaches(&bytes), "seed {name} does not reach the decoder: fix the seed");
        std::fs::write(dir.join(format!("seed-{name}")), bytes).expect("write a seed");
    }
}

/// A per-process directory for the files a target decodes, emptied by each
/// [`Scratch::fresh`]. On tmpfs when there is one: replay and snapshots fsync.
pub struct Scratch {
    dir: PathBuf,
}

impl Scratch {
    /// The scratch directory of target `name` in this process (not yet created).
    pub fn new(name: &str) -> Self {
        let shm = Path::new("/dev/shm");
        let base = if shm.is_dir() {
            shm.to_path_buf()
        } else {
            std::env::temp_dir()
        };
        Self {
            dir: base.join(format!("nexus-fuzz-{name}-{}", std::process::id())),
        }
    }

    /// The directory, emptied and created.
    pub fn fresh(&self) -> &Path {
        let _ = std::fs::remove_dir_all(&self.dir);
        std::fs::create_dir_all(&self.dir).expect("create the scratch directory");
        &self.dir
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Reads fixed-width values off the front of fuzzer bytes; past the end, zeros.
pub struct Input<'a> {
    bytes: &'a [u8],
}

impl<'a> Input<'a> {
    /// Reads from the start of `bytes`.
    pub fn new(bytes: &'a [u8]) -> Self {
        Self { bytes }
    }

    /// The next byte.
    pub fn u8(&mut self) -> u8 {
        let (first, rest) = self.bytes.split_first().unwrap_or((&0, &[]));
        self.bytes = rest;
        *first
    }

    /// The next two bytes, little-endian.
    pub fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }

    /// The next eight bytes, little-endian.
    pub fn u64(&mut self) -> u64 {
        let mut out = [0u8; 8];
        out.iter_mut().for_each(|byte| *byte = self.u8());
        u64::from_le_bytes(out)
    }

    /// The next `len` bytes (fewer at the end).
    pub fn take(&mut self, len: usize) -> &'a [u8] {
        let (taken, rest) = self.bytes.split_at(len.min(self.bytes.len()));
        self.bytes = rest;
        taken
    }

    /// Everything left.
    pub fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.bytes)
    }

    /// True when nothing is left.
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }
}
