//! Fuzzes WAL replay of crafted segments, the way `Store::open` runs it: the
//! public `wal::replay` over real files (on tmpfs), each payload validated as a
//! `LoggedRecord` and applied to a `State`, which is then read and checkpointed.
//!
//! Input: a flags byte (1: re-seal the checksums, so mutations reach the fields
//! behind them; 2: `--salvage-wal`; 4: two segments), the snapshot LSN replay
//! starts after, where the second segment starts (u16), then the segment bytes.
//! Each file is named after the first LSN its header claims. Properties besides
//! "never panics": replay's verdict is stable, so a second replay of what the first
//! left (torn tail cut, damage salvaged) succeeds with nothing left to cut and the
//! same records.
#![no_main]

use std::path::Path;
use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use nexus_daemon::store::logged::LoggedRecord;
use nexus_daemon::store::state::State;
use nexus_daemon::store::wal::{self, RealFs, ReplayReport, WalError, fuzz::reseal, fuzz::segment_bytes};
use nexus_fuzz::{Input, Scratch, store, write_seeds_if_asked};

const RESEAL: u8 = 1;
const SALVAGE: u8 = 2;
const TWO_SEGMENTS: u8 = 4;
/// Offset of the first-LSN field in a segment header (see the WAL's segment.rs).
const HEADER_FIRST_LSN_AT: usize = 16;
/// The salt of the seed segments.
const SEED_SALT: u32 = 0x5eed_5a17;

thread_local! {
    static SCRATCH: Scratch = Scratch::new("wal");
}

fuzz_target!(init: write_seeds_if_asked(seeds, run), |bytes: &[u8]| {
    run(bytes);
});

/// Replays the segments; true when replay accepted them and applied a record.
fn run(bytes: &[u8]) -> bool {
    let mut input = Input::new(bytes);
    let flags = input.u8();
    let after_lsn = u64::from(input.u8());
    let split = usize::from(input.u16());
    let mut first = input.rest().to_vec();
    let second = match flags & TWO_SEGMENTS {
        0 => None,
        _ => Some(first.split_off(split.min(first.len()))),
    };
    SCRATCH.with(|scratch| {
        let dir = scratch.fresh();
        std::fs::create_dir_all(dir.join("wal")).expect("create the wal directory");
        let first_lsn = write_segment(dir, first, flags, None);
        if let Some(second) = second {
            write_segment(dir, second, flags, Some(first_lsn));
        }
        check_replay(dir, after_lsn, flags & SALVAGE != 0)
    })
}

/// Writes one segment file; returns the LSN in its name.
fn write_segment(dir: &Path, mut bytes: Vec<u8>, flags: u8, taken: Option<u64>) -> u64 {
    if flags & RESEAL != 0 {
        reseal(&mut bytes);
    }
    let claimed = bytes
        .get(HEADER_FIRST_LSN_AT..HEADER_FIRST_LSN_AT + 8)
        .map_or(1, |field| u64::from_le_bytes(field.try_into().expect("8 bytes")));
    let name_lsn = if taken == Some(claimed) {
        claimed.wrapping_add(1)
    } else {
        claimed
    };
    std::fs::write(dir.join("wal").join(format!("{name_lsn:020}.wal")), bytes).expect("write a segment");
    name_lsn
}

fn check_replay(dir: &Path, after_lsn: u64, salvage: bool) -> bool {
    let Ok((first, state)) = replay_into_state(dir, after_lsn, salvage) else {
        return false;
    };
    assert!(first.last_lsn >= state.applied_lsn().max(after_lsn));
    store::exercise(&state);
    let (again, _) = replay_into_state(dir, after_lsn, false).expect("what one replay accepted, the next accepts");
    assert_eq!((again.torn_tail, again.salvaged), (None, None), "nothing left to cut");
    assert_eq!((again.records, again.last_lsn), (first.records, first.last_lsn));
    first.records > 0
}

/// Replay as `Store::open` runs it.
fn replay_into_state(dir: &Path, after_lsn: u64, salvage: bool) -> Result<(ReplayReport, State), WalError> {
    let mut state = State::from_snapshot(None);
    let report = wal::replay(dir, &RealFs, after_lsn, salvage, |lsn, payload| {
        state.apply(lsn, Arc::new(LoggedRecord::replayed(&payload)?));
        Ok(())
    })?;
    Ok((report, state))
}

fn seeds() -> Vec<(&'static str, Vec<u8>)> {
    let payloads = store::wal_payloads();
    let refs: Vec<&[u8]> = payloads.iter().map(Vec::as_slice).collect();
    let whole = segment_bytes(1, SEED_SALT, &refs);
    let first = segment_bytes(1, SEED_SALT, &refs[..3]);
    let second = segment_bytes(4, SEED_SALT ^ 1, &refs[3..]);
    let input = |flags: u8, after_lsn: u8, split: usize, segments: &[&[u8]]| {
        let mut out = vec![flags, after_lsn];
        out.extend_from_slice(&(split as u16).to_le_bytes());
        segments.iter().for_each(|bytes| out.extend_from_slice(bytes));
        out
    };
    let torn = [&whole[..whole.len() - 8], &[0xAB; 8][..]].concat();
    vec![
        ("clean", input(0, 0, 0, &[&whole])),
        ("preallocated", input(0, 0, 0, &[&whole, &[0; 512]])),
        ("torn-tail", input(0, 0, 0, &[&torn])),
        ("after-snapshot", input(RESEAL, 2, 0, &[&whole])),
        ("two-segments", input(TWO_SEGMENTS, 0, first.len(), &[&first, &second])),
        (
            "two-segments-salvage",
            input(TWO_SEGMENTS | SALVAGE | RESEAL, 1, first.len(), &[&first, &second]),
        ),
    ]
}
