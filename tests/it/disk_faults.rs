//! A disk that fails under a running daemon. Full (a real 16 MiB tmpfs,
//! filled): writes are refused with DiskFull, reads go on, writes resume
//! once space is freed, and nothing acknowledged is lost. A failed
//! fdatasync (injected through `NEXUS_FAULT_INJECT`, which only the test
//! daemon `nexusd-it` honours): the write is not acknowledged, the WAL refuses
//! every later write (a retried fsync could lie), reads go on, and a
//! restart recovers everything acknowledged.

use nexus_client::wire::ErrorCode;
use nexus_daemon::store::wal::FAULT_INJECT_ENV;
use nexus_tests::disk::{Tmpfs, fill_disk};
use nexus_tests::store::{BATCH_MEMORIES, NamespaceLedger, batch_texts, check_namespace, check_status};
use nexus_tests::{Daemon, Launch, TestDir};

use crate::{BINARIES, start_with_env};

const NAMESPACE: &str = "disk";

/// Writes of ~16 KiB each: a 1 MiB segment fills in ~60 of them, and the
/// rotation that follows needs space the filler took.
const BIG_PADDING_WORDS: usize = 1600;
/// More writes than the segment the daemon started with can hold.
const MAX_WRITES_UNTIL_FULL: u64 = 200;

#[test]
fn a_full_disk_refuses_writes_with_disk_full_serves_reads_and_recovers_when_space_is_freed() {
    // Declared before the daemon, so dropped after it: the daemon is dead
    // before the tmpfs is unmounted, and the mount gone before its dir.
    let mount_dir = TestDir::new();
    let tmpfs = match Tmpfs::mount(&mount_dir.path().join("tmpfs"), "16m") {
        Ok(tmpfs) => tmpfs,
        Err(reason) => {
            println!("skipped: {reason}");
            return;
        }
    };
    // Chunking off: the big writes are payload that fills segments, and the
    // ledger checks each as one memory (chunks are preprocess.rs's business).
    let args = ["--wal-segment-bytes", "1048576", "--chunk-tokens", "0"];
    let launch = Launch::args(&args).data_dir(tmpfs.path().join("data"));
    let mut daemon = Daemon::launch(BINARIES, TestDir::new(), launch);
    let client = daemon.large_client();
    let mut ledger = NamespaceLedger::new(NAMESPACE);
    for id in 0..2 {
        ledger
            .remember(&client, id, batch_texts(id, BATCH_MEMORIES, 4))
            .unwrap_or_else(|e| panic!("a write before the disk filled: {e}"));
    }

    let filler = tmpfs.path().join("filler");
    fill_disk(&filler);
    let mut refusal = None;
    for id in 10..10 + MAX_WRITES_UNTIL_FULL {
        let result = ledger.remember(&client, id, batch_texts(id, 1, BIG_PADDING_WORDS));
        if result.is_err() {
            refusal = Some(check_status(result, ErrorCode::DiskFull));
            break;
        }
    }
    let message = refusal.unwrap_or_else(|| panic!("{MAX_WRITES_UNTIL_FULL} writes on a full disk all succeeded"));
    assert!(
        message.to_lowercase().contains("disk full"),
        "the refusal says the disk is full: {message}"
    );
    // Still full: refused again, the same way (the WAL is not failed for good).
    let again = ledger.remember(&client, 1000, batch_texts(1000, 1, BIG_PADDING_WORDS));
    check_status(again, ErrorCode::DiskFull);
    assert_eq!(
        daemon.stats_counter("wal_failed"),
        0,
        "a full disk does not fail the WAL"
    );
    check_namespace(&client, &ledger, "reads while the disk is full");

    std::fs::remove_file(&filler).expect("removing the filler");
    ledger
        .remember(&client, 2000, batch_texts(2000, BATCH_MEMORIES, 4))
        .unwrap_or_else(|e| panic!("the first write after space was freed: {e}"));
    check_namespace(&client, &ledger, "after space was freed");

    daemon.restart();
    check_namespace(&daemon.large_client(), &ledger, "after a restart");
}

/// Writes acknowledged before the injected fdatasync failure.
const ACKED_BEFORE_FAULT: u64 = 3;

#[test]
fn a_failed_fsync_fails_that_write_and_every_later_one_until_a_restart_which_recovers_all_acked_writes() {
    // `fsync-eio-after:N`: N fdatasyncs succeed, the next fails. The first
    // is the new segment's at start-up; then one per write (one client
    // writing one batch at a time: one group each).
    let spec = format!("fsync-eio-after:{}", 1 + ACKED_BEFORE_FAULT);
    let mut daemon = start_with_env(&[], &[(FAULT_INJECT_ENV, &spec)]);
    assert!(
        daemon.stderr_text().contains("fault injection armed"),
        "nexusd-it arms NEXUS_FAULT_INJECT:\n{}",
        daemon.stderr_text()
    );
    let client = daemon.client();
    let mut ledger = NamespaceLedger::new(NAMESPACE);
    for id in 0..ACKED_BEFORE_FAULT {
        ledger
            .remember(&client, id, batch_texts(id, BATCH_MEMORIES, 4))
            .unwrap_or_else(|e| panic!("write {id} (before the fault): {e}"));
    }
    let failed = ledger.remember(&client, 100, batch_texts(100, BATCH_MEMORIES, 4));
    let message = check_status(failed, ErrorCode::StorageFailed);
    assert!(
        message.contains("fdatasync"),
        "the refusal names the failed fdatasync: {message}"
    );

    let later = ledger.remember(&client, 200, batch_texts(200, BATCH_MEMORIES, 4));
    let message = check_status(later, ErrorCode::StorageFailed);
    assert!(
        message.contains("stopped accepting writes") && message.contains("restart"),
        "a later write is refused because the WAL failed, and says what to do: {message}"
    );
    assert_eq!(daemon.stats_counter("wal_failed"), 1);
    let visible = check_namespace(&client, &ledger, "reads after the failed fsync");
    assert_eq!(
        visible,
        ACKED_BEFORE_FAULT as usize * BATCH_MEMORIES,
        "nothing unacknowledged is served"
    );

    daemon.set_env(&[]);
    daemon.restart();
    assert_eq!(daemon.stats_counter("wal_failed"), 0);
    check_namespace(&daemon.large_client(), &ledger, "after a restart without the fault");
    ledger
        .remember(&daemon.client(), 300, batch_texts(300, BATCH_MEMORIES, 4))
        .unwrap_or_else(|e| panic!("a write after the restart: {e}"));
}
