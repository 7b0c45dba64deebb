//! A damaged WAL or snapshot at start-up. A torn last record (cut short, or garbled)
//! is what a crash mid-write leaves: it is truncated, reported in the log
//! and in Stats, and everything before it is served. Damage with valid
//! records after it is not a torn write: the daemon refuses to start,
//! naming the file, the offset and `--salvage-wal`; with that flag it
//! starts with the valid prefix and keeps the cut bytes beside the segment.
//! A snapshot with a flipped byte is refused, naming the file.
//!
//! The segments are parsed here (tests/src/disk.rs) from the documented
//! format, so the damage lands exactly on the record intended.

use std::path::{Path, PathBuf};

use nexus_tests::Daemon;
use nexus_tests::disk::{RecordSpan, SNAPSHOT_HEADER_BYTES, flip_byte, snapshots, truncate, wal_records, wal_segments};
use nexus_tests::store::{BATCH_MEMORIES, NamespaceLedger, batch_texts, check_namespace};

use crate::start;

/// Batches written before the damage; each is one WAL record.
const BATCHES: u64 = 5;
const NAMESPACE: &str = "wal";
const ARGS: [&str; 2] = ["--wal-segment-bytes", "1048576"];

#[test]
fn a_last_record_cut_short_is_truncated_at_restart_and_the_records_before_it_are_served() {
    check_torn_tail_is_repaired(|segment, last| truncate(segment, last.payload_offset() + last.payload_len / 2));
}

#[test]
fn a_garbled_last_record_is_truncated_at_restart_and_the_records_before_it_are_served() {
    check_torn_tail_is_repaired(|segment, last| flip_byte(segment, last.payload_offset() + last.payload_len / 2));
}

#[test]
fn a_garbled_record_in_the_middle_of_the_log_stops_the_start_until_salvage_is_asked_for() {
    let (mut daemon, mut ledger, segment, records) = write_then_kill();
    let damaged = records[1];
    flip_byte(&segment, damaged.payload_offset() + damaged.payload_len / 2);

    let (status, stderr) = daemon.run_to_exit();
    assert!(!status.success(), "nexusd must refuse to start; it ended with {status}");
    for needed in [
        segment.display().to_string(),
        format!("byte offset {}", damaged.offset),
        "--salvage-wal".to_owned(),
    ] {
        assert!(stderr.contains(&needed), "the refusal names {needed:?}:\n{stderr}");
    }

    daemon.set_args(&[ARGS[0], ARGS[1], "--salvage-wal"]);
    daemon.restart();
    // The prefix before the damage is served; the damaged record and the
    // valid ones after it are cut (kept aside, not applied).
    for batch in &mut ledger.batches[1..] {
        batch.ids = None;
    }
    let client = daemon.large_client();
    assert_eq!(
        check_namespace(&client, &ledger, "after --salvage-wal"),
        BATCH_MEMORIES,
        "only the first batch survives"
    );
    let kept = PathBuf::from(format!("{}.salvaged-{}", segment.display(), damaged.offset));
    assert!(kept.exists(), "the cut bytes are kept in {}", kept.display());
    check_writes_work_and_survive_a_restart(&mut daemon, &mut ledger);
}

// Regression: the start-up error said "the write was not made durable" and
// repeated the whole corruption message (the WAL error shown as part of the
// store error's text and again as its source).
#[test]
fn the_refusal_to_start_on_a_corrupt_wal_states_the_corruption_once() {
    let (mut daemon, _ledger, segment, records) = write_then_kill();
    flip_byte(&segment, records[1].payload_offset());
    let (status, stderr) = daemon.run_to_exit();
    assert!(!status.success(), "nexusd must refuse to start; it ended with {status}");
    assert_eq!(stderr.matches("WAL corrupt in").count(), 1, "said once:\n{stderr}");
    assert!(
        !stderr.contains("the write was not made durable"),
        "no write was refused; the start was:\n{stderr}"
    );
}

#[test]
fn a_snapshot_with_a_flipped_byte_in_its_body_stops_the_start_naming_the_file() {
    let mut daemon = start(&ARGS);
    let client = daemon.client();
    let mut ledger = NamespaceLedger::new(NAMESPACE);
    for id in 0..BATCHES {
        ledger
            .remember(&client, id, batch_texts(id, BATCH_MEMORIES, 4))
            .unwrap_or_else(|e| panic!("batch {id}: {e}"));
    }
    let lsn = client.checkpoint().expect("checkpoint");
    let status = daemon.sigterm_and_wait();
    assert_eq!(status.code(), Some(0), "nexusd ended with {status}");
    let snapshot = daemon.data_dir().join(format!("snapshot-{lsn:020}.nxs"));
    assert_eq!(
        snapshots(&daemon.data_dir()),
        vec![snapshot.clone()],
        "one snapshot, at the checkpoint's LSN"
    );
    let len = std::fs::metadata(&snapshot).expect("snapshot").len() as usize;
    flip_byte(&snapshot, SNAPSHOT_HEADER_BYTES + (len - SNAPSHOT_HEADER_BYTES) / 2);

    let (status, stderr) = daemon.run_to_exit();
    assert!(
        !status.success(),
        "nexusd must refuse a corrupt snapshot; it ended with {status}"
    );
    assert!(
        stderr.contains(&snapshot.display().to_string()) && stderr.contains("corrupt"),
        "the refusal names the corrupt snapshot {}:\n{stderr}",
        snapshot.display()
    );
}

/// Writes, kills, damages the last record with `damage`, restarts: the
/// torn record is gone, reported, and everything else is served.
#[track_caller]
fn check_torn_tail_is_repaired(damage: impl FnOnce(&Path, RecordSpan)) {
    let (mut daemon, mut ledger, segment, records) = write_then_kill();
    damage(&segment, *records.last().expect("records"));
    daemon.restart();

    assert_eq!(daemon.stats_counter("torn_records_truncated"), 1);
    let stderr = daemon.stderr_text();
    assert!(
        stderr.contains("WAL torn tail truncated") && stderr.contains(&segment.display().to_string()),
        "the log reports the torn tail and its file:\n{stderr}"
    );
    // The torn record was the last batch: it is not served, the others are.
    ledger.batches.last_mut().expect("batches").ids = None;
    let client = daemon.large_client();
    let visible = check_namespace(&client, &ledger, "after the torn tail was cut");
    assert_eq!(
        visible,
        (BATCHES as usize - 1) * BATCH_MEMORIES,
        "the torn batch is gone"
    );
    check_writes_work_and_survive_a_restart(&mut daemon, &mut ledger);
}

/// A daemon that acknowledged [`BATCHES`] batches, one record each, then
/// was SIGKILLed; its only segment and that segment's records.
fn write_then_kill() -> (Daemon, NamespaceLedger, PathBuf, Vec<RecordSpan>) {
    let mut daemon = start(&ARGS);
    let client = daemon.client();
    let mut ledger = NamespaceLedger::new(NAMESPACE);
    for id in 0..BATCHES {
        ledger
            .remember(&client, id, batch_texts(id, BATCH_MEMORIES, 4))
            .unwrap_or_else(|e| panic!("batch {id}: {e}"));
    }
    daemon.kill();
    let segments = wal_segments(&daemon.data_dir());
    let [segment] = segments.as_slice() else {
        panic!("expected one WAL segment, found {segments:?}");
    };
    let records = wal_records(segment);
    let lsns: Vec<u64> = records.iter().map(|r| r.lsn).collect();
    assert_eq!(
        lsns,
        (1..=BATCHES).collect::<Vec<_>>(),
        "one record per batch in {}",
        segment.display()
    );
    (daemon, ledger, segment.clone(), records)
}

/// After a repaired start: a new batch is acknowledged and, like the
/// served prefix, survives another SIGKILL (which finds no torn tail).
#[track_caller]
fn check_writes_work_and_survive_a_restart(daemon: &mut Daemon, ledger: &mut NamespaceLedger) {
    let id = 100;
    ledger
        .remember(&daemon.client(), id, batch_texts(id, BATCH_MEMORIES, 4))
        .unwrap_or_else(|e| panic!("a write after the repaired start: {e}"));
    daemon.restart();
    assert_eq!(daemon.stats_counter("torn_records_truncated"), 0);
    check_namespace(&daemon.large_client(), ledger, "after a second restart");
}
