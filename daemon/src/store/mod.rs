//! The durable memory store: WAL, state, snapshots.
pub mod wal;
