//! Atomics used by the ring, swapped for loom's model-checked ones under `--cfg loom`.
//!
//! Only the ring's algorithm is model-checked; the segment mapping and the
//! syscalls are not built under loom (loom cannot model another process).

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{AtomicU32, AtomicU64, Ordering, fence};
#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{AtomicU32, AtomicU64, Ordering, fence};
