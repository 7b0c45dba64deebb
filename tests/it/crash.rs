//! kill -9 at random moments under concurrent writes: after every restart,
//! every acknowledged batch is there with its ids and texts, and no batch is
//! ever partly visible (one Remember is one WAL record: all or nothing).
//!
//! Each writer of each iteration writes to a namespace of its own (so it can
//! write at full speed for the whole kill window and still stay under the
//! thousand memories one recall checks); after each restart all namespaces
//! so far are checked again, so a later checkpoint, segment
//! rotation or replay that loses older data is caught too. Iterations vary
//! the checkpoint threshold and fsync policy so kills land mid-checkpoint
//! and mid-rotation (1 MiB segments). A process crash loses nothing
//! acknowledged under any fsync policy (acks follow the write; only a power
//! loss can drop unsynced pages).
//!
//! CI runs [`DEFAULT_ITERATIONS`]; `NEXUS_SOAK_ITERATIONS=<n>` runs a longer
//! soak (in rounds of [`ITERATIONS_PER_DAEMON`] on fresh data dirs, each
//! under its own watchdog), `NEXUS_SOAK_SEED=<n>` replays a failing seed.

use std::time::Duration;

use nexus_client::ClientError;
use nexus_tests::disk::snapshots;
use nexus_tests::store::{NamespaceLedger, Rng, check_namespace, with_writers};

use crate::start;

/// Iterations of the CI run.
const DEFAULT_ITERATIONS: usize = 50;
/// Iterations per daemon (and data dir) before a fresh one: bounds the data
/// re-checked after each restart and keeps each round under the watchdog.
const ITERATIONS_PER_DAEMON: usize = 50;
/// Writer threads, each with its own connection.
const WRITERS: u64 = 3;
/// Acknowledged batches after which a writer stops: 330 x 3 memories stays
/// under the 1000 one recall can return, and lasts most of the kill window.
const MAX_BATCHES_PER_WRITER: u64 = 330;
/// Filler words per memory text: ~1 KiB per batch record, so 1 MiB segments
/// rotate every few iterations.
const PADDING_WORDS: usize = 20;
/// The kill comes this many milliseconds after the writers start.
const KILL_AFTER_MS: (u64, u64) = (10, 150);
const DEFAULT_SEED: u64 = 0x6e65_7875_735f_6b39;

#[test]
fn acknowledged_batches_survive_sigkill_at_random_moments_and_no_batch_is_ever_partial() {
    let iterations = env_number("NEXUS_SOAK_ITERATIONS").unwrap_or(DEFAULT_ITERATIONS as u64) as usize;
    let seed = env_number("NEXUS_SOAK_SEED").unwrap_or(DEFAULT_SEED);
    eprintln!("kill -9 loop: {iterations} iterations, NEXUS_SOAK_SEED={seed}");
    let mut rng = Rng::new(seed);
    let mut done = 0;
    let mut round = 0;
    while done < iterations {
        let count = (iterations - done).min(ITERATIONS_PER_DAEMON);
        kill_loop_round(&mut rng, seed, round, count);
        done += count;
        round += 1;
    }
}

/// Flags of iteration `i`: plain; frequent checkpoints; checkpoints with
/// interval fsync. All with the smallest segments, so rotations happen too.
fn iteration_args(i: usize) -> &'static [&'static str] {
    const SEGMENT: [&str; 2] = ["--wal-segment-bytes", "1048576"];
    match i % 3 {
        0 => &SEGMENT,
        1 => &[SEGMENT[0], SEGMENT[1], "--checkpoint-wal-bytes", "65536"],
        _ => &[
            SEGMENT[0],
            SEGMENT[1],
            "--checkpoint-wal-bytes",
            "262144",
            "--fsync",
            "interval:5",
        ],
    }
}

fn kill_loop_round(rng: &mut Rng, seed: u64, round: usize, iterations: usize) {
    let mut daemon = start(iteration_args(0));
    let mut ledgers: Vec<NamespaceLedger> = Vec::new();
    let mut killed_mid_write = 0;
    for i in 0..iterations {
        let delay = Duration::from_millis(rng.between(KILL_AFTER_MS.0, KILL_AFTER_MS.1));
        let clients: Vec<_> = (0..WRITERS).map(|_| daemon.client()).collect();
        let writers_namespace = |writer: u64| format!("r{round}-i{i}-w{writer}");
        let ((), runs) = with_writers(
            &clients,
            writers_namespace,
            MAX_BATCHES_PER_WRITER,
            PADDING_WORDS,
            |_| {
                std::thread::sleep(delay);
                daemon.kill();
            },
        );
        let acked: usize = runs.iter().map(|run| run.ledger.acked()).sum();
        let sent: usize = runs.iter().map(|run| run.ledger.batches.len()).sum();
        let context = format!(
            "seed {seed}, round {round}, iteration {i} (args {:?}, killed after {delay:?}, {acked} of {sent} batches acked)",
            iteration_args(i),
        );
        for run in &runs {
            match &run.ended_by {
                None => {}
                Some(ClientError::DaemonGone) => killed_mid_write += 1,
                Some(other) => panic!("{context}: a writer failed with {other:?}, not DaemonGone"),
            }
        }
        eprintln!("{context}");
        ledgers.extend(runs.into_iter().map(|run| run.ledger));
        daemon.set_args(iteration_args(i + 1));
        daemon.restart();
        let verifier = daemon.large_client();
        let visible: usize = ledgers
            .iter()
            .map(|ledger| check_namespace(&verifier, ledger, &context))
            .sum();
        assert_eq!(
            daemon.stats_counter("memories"),
            visible as u64,
            "{context}: Stats memories vs the memories recalled"
        );
    }
    // The loop must have exercised what it claims: kills that interrupt
    // writes (not only an idle daemon), and checkpoints among them.
    assert!(
        killed_mid_write >= iterations,
        "only {killed_mid_write} writers (of {WRITERS} x {iterations}) were interrupted by a kill"
    );
    if iterations >= 6 {
        assert!(
            !snapshots(&daemon.data_dir()).is_empty(),
            "no checkpoint happened during round {round}"
        );
    }
}

fn env_number(name: &str) -> Option<u64> {
    let value = std::env::var(name).ok()?;
    let parsed = value.trim().parse();
    Some(parsed.unwrap_or_else(|_| panic!("{name}={value:?} is not a number")))
}
