//! Issue 9, faults: a crash at any moment of an index save leaves a state
//! that starts and answers exactly. SIGUSR1 starts a checkpoint (snapshot,
//! then every engine's index save); the daemon is killed with SIGKILL a
//! varying time later (before, during or after the save), restarted, and
//! every memory written so far must be found by each engine named alone:
//! BM25 by its unique word, the built-in embeddings by its text, the client
//! vectors by its exact vector; and nothing else may be there.

use std::time::Duration;

use nexus_client::Client;
use nexus_client::wire::{EngineChoice, MemoryInput, RecallRequest};
use nexus_tests::store::memory;

use crate::start;

const NAMESPACE: &str = "crashy";
/// Memories written before each crash.
const PER_ROUND: usize = 400;
/// Crashes.
const ROUNDS: usize = 6;
/// Vector dimension of the client space.
const DIM: usize = 8;

/// Memory `n`: a unique word, some shared words, and a vector pointing at
/// its own corner of the space.
fn numbered(n: usize) -> MemoryInput {
    let mut vector = vec![0.0f32; DIM];
    vector[n % DIM] = 1.0;
    vector[(n / DIM) % DIM] += 0.5;
    vector[(n / (DIM * DIM)) % DIM] += 0.25;
    vector[(n / (DIM * DIM * DIM)) % DIM] += 0.125;
    MemoryInput {
        vector: Some(vector),
        ..memory(NAMESPACE, &format!("note uniq{n:05} about topic {}", n % 7))
    }
}

fn ids_for(client: &Client, request: RecallRequest) -> Vec<u64> {
    let hits = client.recall(request).expect("a recall after the restart");
    hits.into_iter().map(|hit| hit.id).collect()
}

/// Every memory written so far is found by every engine.
fn check_all_found(client: &Client, ids: &[u64], round: usize) {
    for (n, id) in ids.iter().enumerate().step_by(7) {
        let input = numbered(n);
        let query = |engine, text: Option<String>, vector: Option<Vec<f32>>, k| RecallRequest {
            namespace: NAMESPACE.into(),
            text,
            vector,
            k,
            engine: Some(engine),
            ..RecallRequest::default()
        };
        let word = format!("uniq{n:05}");
        let lexical = ids_for(client, query(EngineChoice::Lexical, Some(word), None, 1));
        assert_eq!(lexical, vec![*id], "round {round}: memory {n} by its word");
        let dense = ids_for(client, query(EngineChoice::Dense, Some(input.text.clone()), None, 10));
        assert!(dense.contains(id), "round {round}: memory {n} by its text: {dense:?}");
        let vector = ids_for(client, query(EngineChoice::Vector, None, input.vector.clone(), 20));
        assert!(
            vector.contains(id),
            "round {round}: memory {n} by its vector: {vector:?}"
        );
    }
}

#[test]
fn a_kill_at_any_moment_of_an_index_save_leaves_indexes_that_answer_exactly() {
    let mut daemon = start(&[]);
    let mut ids: Vec<u64> = Vec::new();
    for round in 0..ROUNDS {
        let client = daemon.large_client();
        for batch in (0..PER_ROUND).step_by(100) {
            let from = round * PER_ROUND + batch;
            let memories = (from..from + 100).map(numbered).collect();
            ids.extend(client.remember(memories).expect("remember"));
        }
        drop(client);
        nexus_tests::signal(daemon.pid(), nix::sys::signal::Signal::SIGUSR1);
        // From right away (the snapshot is being written) to well after the
        // indexes' save began.
        std::thread::sleep(Duration::from_millis(round as u64 * 60));
        daemon.restart();
        let client = daemon.large_client();
        assert_eq!(
            daemon.stats_counter("memories"),
            ids.len() as u64,
            "round {round}: every acknowledged memory is back"
        );
        check_all_found(&client, &ids, round);
    }
    // The restarts did load saved indexes at some point, not only rebuild.
    let log = daemon.stderr_text();
    assert!(log.contains("loaded at LSN"), "no restart loaded a saved index:\n{log}");
}
