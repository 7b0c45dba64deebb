//! Injected failures through `FaultyFs`: ENOSPC (fail the group, cut back, resume) and
//! a failed fdatasync (fail the group, poison the WAL, never retry).
//!
//! Not here: damage found at replay (recovery.rs).

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::super::{FaultyFs, FsyncPolicy, Lsn, RealFs, WalConfig, WalError, WalFs};
use super::support::{
    Outcome, TempDir, WATCHDOG, append_and_flush, check_replay, config, expected, payload, replay_all, start,
    wait_for_outcomes,
};

fn faulty() -> (FaultyFs, Arc<dyn WalFs>) {
    let fs = FaultyFs::new();
    (fs.clone(), Arc::new(fs))
}

#[track_caller]
fn assert_failed(outcome: &Outcome, ticket: u64, message_part: &str) {
    match outcome {
        Outcome::Failed { ticket: got, error } => {
            assert_eq!(*got, ticket);
            assert!(error.contains(message_part), "{error}");
        }
        other => panic!("ticket {ticket} should have failed, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enospc_fails_the_group_and_later_appends_succeed() {
    let dir = TempDir::new("enospc");
    let (faulty, fs) = faulty();
    let (wal, outcomes) = start(config(&dir), fs, 1);
    append_and_flush(&wal, &outcomes, 1..=3).await;
    faulty.faults().fail_write_with_enospc(1);
    wal.append(payload(100), 100).await.unwrap();
    assert_eq!(wal.flush().await.unwrap(), 3, "the failed record took no LSN");
    assert_failed(&outcomes.lock().unwrap()[3], 100, "disk full");
    assert!(!wal.stats().failed, "out of space does not poison the WAL");
    append_and_flush(&wal, &outcomes, 4..=6).await;
    assert_eq!(wal.stats().records_failed, 1);
    wal.shutdown().unwrap();
    check_replay(&dir, 0, &expected(1..=6));
}

/// The half-written group must be cut back durably: it was reported failed, so it must
/// not reappear at replay even if nothing is written after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enospc_partial_write_does_not_reappear_at_replay() {
    let dir = TempDir::new("enospc-partial");
    let (faulty, fs) = faulty();
    let (wal, outcomes) = start(config(&dir), fs, 1);
    append_and_flush(&wal, &outcomes, 1..=3).await;
    faulty.faults().fail_write_with_enospc(1);
    wal.append(vec![0xEE; 4000], 100).await.unwrap();
    wal.flush().await.unwrap();
    assert_failed(&outcomes.lock().unwrap()[3], 100, "disk full");
    wal.shutdown().unwrap();
    let report = check_replay(&dir, 0, &expected(1..=3));
    assert_eq!(report.torn_tail, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disk_full_fails_writes_and_rotation_until_space_returns() {
    let dir = TempDir::new("disk-full");
    let (faulty, fs) = faulty();
    let config = WalConfig {
        segment_bytes: 4096,
        max_group_bytes: 1024,
        ..config(&dir)
    };
    let (wal, outcomes) = start(config, fs, 1);
    append_and_flush(&wal, &outcomes, 1..=20).await;
    faulty.faults().set_disk_full(true);
    // Enough to need a new segment, which cannot be preallocated either.
    for ticket in 1000..1030 {
        wal.append(vec![1; 300], ticket).await.unwrap();
        wal.flush().await.unwrap();
    }
    let seen = outcomes.lock().unwrap().clone();
    for (outcome, ticket) in seen[20..].iter().zip(1000..) {
        assert_failed(outcome, ticket, "disk full");
    }
    faulty.faults().set_disk_full(false);
    append_and_flush(&wal, &outcomes, 21..=60).await;
    let stats = wal.stats();
    assert!(!stats.failed && stats.segments > 2, "{stats:?}");
    assert_eq!(stats.records_failed, 30);
    wal.shutdown().unwrap();
    check_replay(&dir, 0, &expected(1..=60));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_fdatasync_fails_the_group_and_poisons_the_wal() {
    let dir = TempDir::new("eio");
    let (faulty, fs) = faulty();
    let (wal, outcomes) = start(config(&dir), fs, 1);
    append_and_flush(&wal, &outcomes, 1..=3).await;
    faulty.faults().fail_sync_with_eio(1);
    wal.append(payload(4), 4).await.unwrap();
    assert_failed(&wait_for_outcomes(&outcomes, 4)[3], 4, "fdatasync");
    let syncs_after_failure = faulty.faults().syncs();
    assert!(wal.stats().failed);

    let refused = wal.append(payload(5), 5).await.unwrap_err();
    assert!(matches!(refused, WalError::Failed { .. }), "{refused}");
    assert!(refused.to_string().contains("restart"), "{refused}");
    assert!(matches!(wal.flush().await, Err(WalError::Failed { .. })));
    assert!(matches!(wal.rotate().await, Err(WalError::Failed { .. })));
    assert!(matches!(wal.shutdown(), Err(WalError::Failed { .. })));
    assert_eq!(
        faulty.faults().syncs(),
        syncs_after_failure,
        "a failed fdatasync is never retried"
    );
    assert_eq!(outcomes.lock().unwrap().len(), 4, "nothing else acknowledged");

    // Restart: exactly the acknowledged records, possibly plus the unacknowledged one
    // (its bytes may have reached the disk), never anything else.
    let (report, records) = replay_all(dir.path(), &*Arc::new(faulty) as &dyn WalFs, 0, false).unwrap();
    assert_eq!(records[..3], expected(1..=3)[..]);
    assert!(records[3..] == expected(4..=4)[..] || records.len() == 3, "{records:?}");
    assert_eq!(report.last_lsn, records.len() as Lsn);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_interval_sync_poisons_the_wal() {
    let dir = TempDir::new("eio-interval");
    let (faulty, fs) = faulty();
    let config = WalConfig {
        fsync: FsyncPolicy::Interval(Duration::from_millis(1)),
        ..config(&dir)
    };
    let (wal, outcomes) = start(config, fs, 1);
    faulty.faults().fail_sync_with_eio(1);
    wal.append(payload(1), 1).await.unwrap();
    wait_for_outcomes(&outcomes, 1);
    let started = Instant::now();
    while !wal.stats().failed {
        assert!(started.elapsed() < WATCHDOG, "hung: the interval sync never ran");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    assert!(matches!(wal.append(payload(2), 2).await, Err(WalError::Failed { .. })));
    assert!(wal.shutdown().is_err());
}

#[test]
fn fault_specs_arm_countdowns_and_reject_typos() {
    let dir = TempDir::new("spec");
    let fs = FaultyFs::from_spec("fsync-eio-after:2, write-enospc-after:1").unwrap();
    let mut file = fs.create_new(&dir.path().join("scratch")).unwrap();
    file.write_all_at(b"ok", 0).unwrap();
    assert!(file.write_all_at(b"full", 2).is_err(), "second write runs out of space");
    file.write_all_at(b"again", 2).unwrap();
    file.sync_data().unwrap();
    file.sync_data().unwrap();
    assert_eq!(
        file.sync_data().unwrap_err().raw_os_error(),
        Some(nix::errno::Errno::EIO as i32)
    );
    file.sync_data().unwrap();
    assert!(FaultyFs::from_spec("disk-full").is_ok());
    for typo in ["fsync-eio", "fsync-eio-after:x", "disk-full:3", "write-enospc-after"] {
        let error = FaultyFs::from_spec(typo).unwrap_err();
        assert!(matches!(error, WalError::BadFaultSpec { .. }), "{typo}: {error}");
    }
}

// Regression (issue 7, scenario 5): running out of file descriptors when a
// rotation created the next segment fail-stopped the WAL, as a failed
// fdatasync does, although nothing had been written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_fds_at_rotation_fails_the_group_and_later_appends_succeed() {
    let dir = TempDir::new("emfile");
    let (faulty, fs) = faulty();
    let config = WalConfig {
        segment_bytes: 4096,
        max_group_bytes: 1024,
        ..config(&dir)
    };
    let (wal, outcomes) = start(config, fs, 1);
    append_and_flush(&wal, &outcomes, 1..=20).await;
    faulty.faults().set_out_of_fds(true);
    // Enough to need a new segment, which cannot be opened.
    append_each_flushed(&wal, 1000..1030).await;
    let during = outcomes.lock().unwrap()[20..].to_vec();
    let first_refused = (during.iter())
        .position(|outcome| matches!(outcome, Outcome::Failed { .. }))
        .unwrap_or_else(|| panic!("a rotation was needed: {during:?}"));
    for outcome in &during[first_refused..] {
        assert_failed(outcome, outcome_ticket(outcome), "file descriptors");
    }
    assert!(!wal.stats().failed, "running out of fds does not poison the WAL");

    faulty.faults().set_out_of_fds(false);
    append_each_flushed(&wal, 2000..2010).await;
    let after = outcomes.lock().unwrap()[50..].to_vec();
    assert!(
        after.iter().all(|outcome| matches!(outcome, Outcome::Durable { .. })),
        "{after:?}"
    );
    assert!(wal.stats().segments >= 2, "rotation resumed");
    let acked = (outcomes.lock().unwrap().iter())
        .filter(|outcome| matches!(outcome, Outcome::Durable { .. }))
        .count() as Lsn;
    wal.shutdown().unwrap();
    let (report, records) = replay_all(dir.path(), &RealFs, 0, false).unwrap();
    assert_eq!(
        (report.last_lsn, records.len() as Lsn),
        (acked, acked),
        "every acknowledged record replays"
    );
}

/// Appends a 300-byte record per ticket, flushing after each.
async fn append_each_flushed(wal: &super::super::Wal<u64>, tickets: std::ops::Range<u64>) {
    for ticket in tickets {
        wal.append(vec![1; 300], ticket).await.unwrap();
        wal.flush().await.unwrap();
    }
}

fn outcome_ticket(outcome: &Outcome) -> u64 {
    match outcome {
        Outcome::Durable { ticket, .. } | Outcome::Failed { ticket, .. } => *ticket,
    }
}
