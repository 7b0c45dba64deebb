//! Replay of damaged logs: torn tails are cut and reported, mid-log corruption names the
//! file, the offset and `--salvage-wal`, salvage keeps the prefix and the cut bytes,
//! LSN gaps are corruption unless a snapshot covers them, `after_lsn` skips.
//!
//! Not here: the writer (commit.rs) and injected I/O errors (faults.rs).

use std::os::unix::fs::FileExt;
use std::sync::Arc;

use super::super::Lsn;

use super::super::record::framed_len;
use super::super::segment::SEGMENT_HEADER_BYTES;
use super::super::{RealFs, ReplayPayload, WalConfig, WalError, replay};
use super::support::{
    TempDir, append_and_flush, check_replay, config, expected, payload, replay_all, start, write_raw_segment,
};

/// Flips one byte of a file.
fn damage(path: &std::path::Path, offset: u64) {
    let file = std::fs::OpenOptions::new().read(true).write(true).open(path).unwrap();
    let mut byte = [0_u8];
    file.read_exact_at(&mut byte, offset).unwrap();
    file.write_all_at(&[byte[0] ^ 0x40], offset).unwrap();
}

fn file_len(path: &std::path::Path) -> u64 {
    std::fs::metadata(path).unwrap().len()
}

#[test]
fn preallocated_zeros_after_the_last_record_are_a_clean_end() {
    let dir = TempDir::new("clean");
    write_raw_segment(&dir, 1..=5);
    let report = check_replay(&dir, 0, &expected(1..=5));
    assert_eq!((report.torn_tail, report.last_lsn, report.records), (None, 5, 5));
    // Regression (issue 7, scenario 8): a killed writer's preallocated zeros
    // stayed on disk and were scanned again at every start.
    let records_end = write_raw_segment_end(1..=5);
    assert_eq!(file_len(&dir.segment(1)), records_end, "the zeros are given back");
    let again = check_replay(&dir, 0, &expected(1..=5));
    assert_eq!(again.torn_tail, None, "a trimmed segment is a clean one");
}

/// Where the records `write_raw_segment` writes for `lsns` end.
fn write_raw_segment_end(lsns: std::ops::RangeInclusive<Lsn>) -> u64 {
    let payload_bytes: usize = lsns.map(|lsn| framed_len(payload(lsn).len())).sum();
    (SEGMENT_HEADER_BYTES + payload_bytes) as u64
}

#[test]
fn torn_last_record_is_truncated_and_reported() {
    let dir = TempDir::new("torn");
    let offsets = write_raw_segment(&dir, 1..=5);
    damage(&dir.segment(1), offsets[4] + 20);
    let report = check_replay(&dir, 0, &expected(1..=4));
    let torn = report.torn_tail.expect("torn tail reported");
    assert_eq!((torn.file, torn.offset), (dir.segment(1), offsets[4]));
    assert!(torn.bytes_cut > 0);
    assert_eq!(file_len(&dir.segment(1)), offsets[4]);
    let again = check_replay(&dir, 0, &expected(1..=4));
    assert_eq!(again.torn_tail, None, "the cut is durable and replay is idempotent");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_continues_after_a_cut_torn_tail() {
    let dir = TempDir::new("torn-then-append");
    let offsets = write_raw_segment(&dir, 1..=5);
    let segment = dir.segment(1);
    std::fs::OpenOptions::new()
        .write(true)
        .open(&segment)
        .unwrap()
        .set_len(offsets[4] + 9)
        .unwrap();
    let report = check_replay(&dir, 0, &expected(1..=4));
    assert_eq!(report.torn_tail.map(|t| t.offset), Some(offsets[4]));
    let (wal, outcomes) = start(config(&dir), Arc::new(RealFs), report.last_lsn + 1);
    append_and_flush(&wal, &outcomes, 5..=7).await;
    wal.shutdown().unwrap();
    check_replay(&dir, 0, &expected(1..=7));
}

#[test]
fn newest_segment_without_a_header_is_removed() {
    let dir = TempDir::new("unborn");
    write_raw_segment(&dir, 1..=3);
    std::fs::write(dir.segment(4), vec![0_u8; 4096]).unwrap();
    let report = check_replay(&dir, 0, &expected(1..=3));
    assert_eq!(report.torn_tail.map(|t| (t.file, t.offset)), Some((dir.segment(4), 0)));
    assert!(!dir.segment(4).exists());
}

#[test]
fn mid_log_corruption_names_file_offset_and_salvage_flag() {
    let dir = TempDir::new("corrupt");
    let offsets = write_raw_segment(&dir, 1..=5);
    damage(&dir.segment(1), offsets[1] + 17);
    let error = replay_all(dir.path(), &RealFs, 0, false).unwrap_err();
    let WalError::Corrupt { ref file, offset, .. } = error else {
        panic!("expected Corrupt, got {error}")
    };
    assert_eq!((file, offset), (&dir.segment(1), offsets[1]));
    let message = error.to_string();
    for part in [
        "00000000000000000001.wal",
        &format!("byte offset {}", offsets[1]),
        "--salvage-wal",
    ] {
        assert!(message.contains(part), "{message:?} lacks {part:?}");
    }
    assert_eq!(file_len(&dir.segment(1)), 64 << 10, "nothing is cut without salvage");
}

#[test]
fn salvage_keeps_the_prefix_and_a_copy_of_what_it_cut() {
    let dir = TempDir::new("salvage");
    let offsets = write_raw_segment(&dir, 1..=5);
    let segment = dir.segment(1);
    damage(&segment, offsets[1] + 17);
    let original = std::fs::read(&segment).unwrap();
    let (report, records) = replay_all(dir.path(), &RealFs, 0, true).unwrap();
    assert_eq!(records, expected(1..=1));
    let salvaged = report.salvaged.expect("salvage reported");
    assert_eq!((salvaged.file.clone(), salvaged.offset), (segment.clone(), offsets[1]));
    let kept = std::fs::read(&salvaged.kept_copy).unwrap();
    assert_eq!(
        salvaged.kept_copy.file_name().unwrap(),
        format!("00000000000000000001.wal.salvaged-{}", offsets[1]).as_str()
    );
    assert_eq!(
        kept[..],
        original[offsets[1] as usize..offsets[1] as usize + kept.len()]
    );
    assert!(
        kept.len() as u64 >= offsets[4] - offsets[1],
        "the cut records are all kept"
    );
    assert_eq!(file_len(&segment), offsets[1]);
    let again = check_replay(&dir, 0, &expected(1..=1));
    assert_eq!((again.salvaged, again.torn_tail), (None, None));
}

/// Builds a log of three sealed segments (records 1..=30 spread over them).
async fn three_segments(dir: &TempDir) -> Vec<super::super::SealedSegment> {
    let config = WalConfig {
        segment_bytes: 4096,
        max_group_bytes: 1024,
        ..config(dir)
    };
    let (wal, outcomes) = start(config, Arc::new(RealFs), 1);
    let mut sealed = Vec::new();
    for (from, to) in [(1, 10), (11, 20), (21, 30)] {
        append_and_flush(&wal, &outcomes, from..=to).await;
        sealed = wal.rotate().await.unwrap().sealed;
    }
    wal.shutdown().unwrap();
    assert!(sealed.len() >= 3, "{sealed:?}");
    sealed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn torn_record_in_a_sealed_segment_is_corruption() {
    let dir = TempDir::new("sealed-corrupt");
    let sealed = three_segments(&dir).await;
    let first = &sealed[0];
    damage(&first.path, first.bytes - 1);
    let error = replay_all(dir.path(), &RealFs, 0, false).unwrap_err();
    assert!(
        matches!(&error, WalError::Corrupt { file, .. } if *file == first.path),
        "{error}"
    );
    assert!(error.to_string().contains("later segment"), "{error}");

    let (report, records) = replay_all(dir.path(), &RealFs, 0, true).unwrap();
    assert_eq!(records, expected(1..first.last_lsn));
    let salvaged = report.salvaged.unwrap();
    assert_eq!(
        salvaged.moved_aside.len(),
        sealed.len() - 1 + 1,
        "later sealed segments and the last one"
    );
    assert!(salvaged.moved_aside.iter().all(|path| path.exists()));
    assert!(sealed[1..].iter().all(|s| !s.path.exists()));
    check_replay(&dir, 0, &expected(1..first.last_lsn));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lsn_gap_is_corruption_unless_the_snapshot_covers_it() {
    let dir = TempDir::new("gap");
    let sealed = three_segments(&dir).await;
    std::fs::remove_file(&sealed[1].path).unwrap();
    let error = replay_all(dir.path(), &RealFs, 0, false).unwrap_err();
    assert!(
        matches!(&error, WalError::Corrupt { file, offset: 0, .. } if *file == sealed[2].path),
        "{error}"
    );
    assert!(error.to_string().contains("missing"), "{error}");
    let covered = sealed[1].last_lsn;
    check_replay(&dir, covered, &expected(covered + 1..=30));
}

#[test]
fn records_up_to_after_lsn_are_skipped_and_counted() {
    let dir = TempDir::new("skip");
    write_raw_segment(&dir, 1..=10);
    let report = check_replay(&dir, 4, &expected(5..=10));
    assert_eq!((report.skipped_before, report.records, report.last_lsn), (4, 6, 10));
    let past_the_log = check_replay(&dir, 12, &[]);
    assert_eq!((past_the_log.skipped_before, past_the_log.last_lsn), (10, 12));
}

#[test]
fn empty_or_missing_directory_replays_nothing() {
    let dir = TempDir::new("empty");
    let report = check_replay(&dir, 7, &[]);
    assert_eq!((report.records, report.last_lsn, report.segments), (0, 7, 0));
}

#[test]
fn apply_error_stops_replay_with_the_lsn() {
    let dir = TempDir::new("apply");
    write_raw_segment(&dir, 1..=5);
    let refuse_third = |lsn, _: ReplayPayload<'_>| if lsn == 3 { Err("no".into()) } else { Ok(()) };
    let error = replay(dir.path(), &RealFs, 0, false, refuse_third).unwrap_err();
    assert!(matches!(error, WalError::ApplyFailed { lsn: 3, .. }), "{error}");
}

#[test]
fn damaged_segment_header_with_records_after_it_is_corruption() {
    let dir = TempDir::new("header");
    write_raw_segment(&dir, 1..=3);
    const { assert!(SEGMENT_HEADER_BYTES > 20) };
    damage(&dir.segment(1), 20);
    let error = replay_all(dir.path(), &RealFs, 0, false).unwrap_err();
    assert!(matches!(error, WalError::Corrupt { offset: 0, .. }), "{error}");
}
