//! nexus-benches: the measuring logic of the benchmarks, as a library.
//!
//! The `nexus-bench` binary is a thin command line over these functions, so an
//! integration test can run the very same measurement against a daemon it
//! started. Each module is one benchmark:
//!
//! - [`ann`]: the ANN index's recall@10 and queries/s against an exact scan;
//! - [`ping`]: Ping round trips through shared memory and through the Unix
//!   socket transport of the same daemon, alternated for fairness;
//! - [`idle`]: the daemon's CPU use while many clients sit idle;
//! - [`fanout`]: daemon fds/RSS before and after a thousand short clients;
//! - [`floor`]: the machine's own wake-up round trip (no daemon), to read `ping` against;
//! - [`remember`]: durable Remember throughput and latency against a bare fdatasync;
//! - [`startup`]: restart time from a big snapshot, and the WAL replay rate;
//! - [`report`]: percentiles and the number formats the tables share (each
//!   benchmark renders its own table, so `report` depends on none of them);
//! - [`daemon`]: starting a throwaway `nexusd` so one command reproduces a figure;
//! - [`stats`]: the daemon gauges read through `Stats`.
//!
//! What this crate does not do: tune or fix the daemon or client. It measures
//! them through their public APIs only. The ring micro-benchmarks (no daemon)
//! are the criterion bench `benches/ring.rs`.

pub mod ann;
pub mod daemon;
pub mod error;
pub mod eval;
pub mod fanout;
pub mod floor;
pub mod idle;
pub mod ping;
pub mod recall;
pub mod remember;
pub mod report;
pub mod startup;
pub mod stats;
pub mod sustained;

pub use error::BenchError;
