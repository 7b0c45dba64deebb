//! Recall under sustained writes through a real daemon (issue 9, "sustained
//! writes"): a small run of `nexus-bench sustained`'s library function
//! against a daemon of the harness. What it holds the daemon to: right after
//! each acknowledged batch, the writer's next recalls find a memory of it
//! through the lexical, dense and vector engines (each named alone) while
//! the ANN tails grow faster than the graph builders drain them, and the
//! builders catch up once the writes stop.
//!
//! No latency is asserted (timed asserts flake on a loaded host); the p99
//! ratio is the benchmark's to report. The checks themselves are the
//! benchmark's (benches/src/sustained.rs), so a figure in BENCHMARKS.md and
//! this test mean the same thing.

use std::time::Duration;

use nexus_benches::sustained::{SustainedConfig, run_sustained, sustained_table};

use crate::start;

/// Memories written under load: 2 writers × 10,000, enough for several
/// graph builds per engine while writes go on (a build starts at 1,024
/// vectors), small enough for the test profile on 2 cores.
const LOAD_MEMORIES: u64 = 20_000;

/// Memories in graph before the load.
const SEED_MEMORIES: u64 = 2_000;

/// How long the builders get once writes stop. Generous (measured: under 5 s
/// in the test profile), and below the harness watchdog's 120 s, which
/// counts from the daemon's start and covers the writes too.
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(80);

#[test]
fn every_acknowledged_memory_is_recalled_under_sustained_writes_and_the_graph_catches_up() {
    let daemon = start(&[]);
    let config = SustainedConfig {
        memories: LOAD_MEMORIES,
        writers: 2,
        batch: 100,
        // A small client space keeps the vector engine's builds cheap; the
        // built-in space (dense) has the model's dimension whatever this is.
        dim: 32,
        text_bytes: 200,
        seed_memories: SEED_MEMORIES,
        idle: Duration::from_millis(300),
        catch_up_timeout: CATCH_UP_TIMEOUT,
        check_every_batch: true,
        ..SustainedConfig::new(daemon.socket_path())
    };
    let report = run_sustained(&config).expect("the sustained run completes");
    eprintln!("{}", sustained_table(&report));
    let batches = LOAD_MEMORIES / 100;
    assert_eq!(
        (report.batches_checked, report.visibility_checks),
        (batches, 3 * batches),
        "one memory of every batch checked through each engine"
    );
    assert_eq!(
        report.visibility_misses, 0,
        "acknowledged memories missing from the next recall: {:?}",
        report.miss_examples
    );
    assert!(
        report.caught_up,
        "the tails were still dense {} / vector {} (build threshold {}) {CATCH_UP_TIMEOUT:?} after the writes",
        report.residual_dense_tail, report.residual_vector_tail, report.tail_threshold
    );
    assert_eq!(daemon.stats_counter("memories"), SEED_MEMORIES + LOAD_MEMORIES);
    assert_eq!(report.load.degraded, 0, "no recall left an engine out under load");
}
