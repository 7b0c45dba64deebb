//! Fuzzes snapshot loading as `Store::open` does it: `Snapshot::open` (header,
//! checksums, rkyv validation of the whole archive) on a real file (on tmpfs), then
//! `State::from_snapshot`, which indexes every memory, then a read of everything and
//! a checkpoint's serialization of the loaded state.
//!
//! Input: a flags byte (1: re-seal the checksums, so mutations reach the header
//! fields and the archive behind them), then the file's bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nexus_daemon::store::snapshot::{self, ArchivedSnapshotBody, Snapshot, SnapshotBodyRef, reseal_for_fuzzing};
use nexus_fuzz::{Input, Scratch, store, write_seeds_if_asked};

const RESEAL: u8 = 1;

thread_local! {
    static SCRATCH: Scratch = Scratch::new("snapshot");
}

fuzz_target!(init: write_seeds_if_asked(seeds, run), |bytes: &[u8]| {
    run(bytes);
});

/// Loads one snapshot file; true when it opened.
fn run(bytes: &[u8]) -> bool {
    let mut input = Input::new(bytes);
    let flags = input.u8();
    let mut file = input.rest().to_vec();
    if flags & RESEAL != 0 {
        reseal_for_fuzzing(&mut file);
    }
    SCRATCH.with(|scratch| {
        let path = scratch.fresh().join("snapshot-00000000000000000001.nxs");
        std::fs::write(&path, &file).expect("write the snapshot file");
        let Ok(opened) = Snapshot::open(&path) else {
            return false;
        };
        let state = store::loaded(opened);
        store::exercise(&state);
        true
    })
}

fn seeds() -> Vec<(&'static str, Vec<u8>)> {
    let scratch = Scratch::new("snapshot-seeds");
    let bodies = [
        (
            "empty",
            snapshot::SnapshotBody {
                lsn: 0,
                next_id: 1,
                dim: 0,
                memories: vec![],
                feedback: vec![],
            },
        ),
        ("three", store::snapshot_body(12)),
    ];
    let mut seeds = Vec::new();
    for (name, body) in bodies {
        let bytes = rkyv::to_bytes::<rkyv::rancor::Error>(&body).expect("serialize a body");
        let archived = rkyv::access::<ArchivedSnapshotBody, rkyv::rancor::Error>(&bytes).expect("validate a body");
        let path = snapshot::write(scratch.fresh(), &SnapshotBodyRef::of(archived)).expect("write a snapshot");
        let file = std::fs::read(path).expect("read the snapshot back");
        seeds.push((name, [&[0u8][..], &file].concat()));
    }
    let resealed = seeds.iter().map(|(name, bytes)| {
        let label = if *name == "empty" {
            "empty-resealed"
        } else {
            "three-resealed"
        };
        (label, [&[RESEAL][..], &bytes[1..]].concat())
    });
    seeds.extend(resealed.collect::<Vec<_>>());
    seeds
}
