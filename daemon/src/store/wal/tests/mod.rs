//! Tests of the WAL, by area. They run against real files in a temporary directory
//! (the machines' ext4, so syncs are real), through [`super::RealFs`] or
//! [`super::FaultyFs`]; nothing here asserts a wall-clock duration.
//!
//! Not here: crash tests with a real `nexusd` (tests/it, through `nexusd-it` and `NEXUS_FAULT_INJECT`).

mod codec;
mod commit;
mod faults;
mod recovery;
mod support;
