//! The store side shared by the WAL and snapshot targets: sample memories for the
//! seeds, and the walk over a loaded state that both end with (every memory read,
//! then a checkpoint's serialization, which must validate). Recall is left out:
//! it is the daemon's own computation over memories, not decoding.

use std::sync::Arc;

use nexus_daemon::store::logged::LoggedRecord;
use nexus_daemon::store::model::{StoredMemory, StoredTag, WalRecord};
use nexus_daemon::store::snapshot::{ArchivedSnapshotBody, FeedbackTally, SnapshotBody, SnapshotBodyRef};
use nexus_daemon::store::state::State;

/// A memory as the store holds it, with every optional field set on odd ids.
pub fn memory(id: u64, namespace: &str, text: &str) -> StoredMemory {
    let odd = id % 2 == 1;
    StoredMemory {
        id,
        key: odd.then(|| format!("key-{id}")),
        namespace: namespace.into(),
        text: text.into(),
        vector: odd.then(|| vec![0.5, -0.25, 1.0, 0.0]),
        tags: vec![StoredTag {
            key: "who".into(),
            value: format!("w{}", id % 3),
        }],
        created_at_ms: 1_700_000_000_000 + id as i64,
        importance: 1.0,
        source: odd.then(|| "chat".into()),
    }
}

/// The payloads of a short history: two batches, a re-remember of a key, a
/// forget and a feedback, as the store encodes them for the WAL.
pub fn wal_payloads() -> Vec<Vec<u8>> {
    let records = [
        WalRecord::Remember(vec![
            memory(1, "demo", "Caroline went hiking"),
            memory(2, "demo", "Melanie paints"),
        ]),
        WalRecord::Remember(vec![memory(3, "other", "ramen is Caroline's favourite food")]),
        WalRecord::Forget(vec![2, 40]),
        WalRecord::Feedback {
            memory_id: 1,
            recall_request_id: 9,
            useful: true,
        },
        WalRecord::Remember(vec![StoredMemory {
            key: Some("key-1".into()),
            ..memory(5, "demo", "a newer text for key-1")
        }]),
    ];
    records
        .iter()
        .map(|record| LoggedRecord::encode(record).bytes().to_vec())
        .collect()
}

/// A snapshot body with memories in two namespaces and feedback.
pub fn snapshot_body(lsn: u64) -> SnapshotBody {
    SnapshotBody {
        lsn,
        next_id: 8,
        dim: 4,
        memories: vec![
            memory(1, "demo", "Caroline went hiking"),
            memory(4, "demo", "Melanie paints"),
            memory(7, "x", "ramen"),
        ],
        feedback: vec![FeedbackTally {
            memory_id: 4,
            useful: 2,
            not_useful: 1,
        }],
    }
}

/// Reads every memory of `state` the ways the daemon does, then serializes it as a
/// checkpoint would and checks that the result validates with every memory in it.
pub fn exercise(state: &State) {
    for id in state.matching("", &[]) {
        let memory = state.get(id).expect("a listed memory is there");
        let _ = (
            memory.namespace(),
            memory.key(),
            memory.text(),
            memory.has_tag("who", "w1"),
        );
    }
    let frozen = state.freeze();
    let body: SnapshotBodyRef<'_> = frozen.snapshot_body();
    let bytes = rkyv::to_bytes::<rkyv::rancor::Error>(&body).expect("a state serializes");
    let archived =
        rkyv::access::<ArchivedSnapshotBody, rkyv::rancor::Error>(&bytes).expect("a checkpoint of any state validates");
    assert_eq!(archived.memories.len(), state.len());
}

/// Shares a state's snapshot handle as the store does.
pub fn loaded(snapshot: nexus_daemon::store::snapshot::Snapshot) -> State {
    State::from_snapshot(Some(Arc::new(snapshot)))
}
