//! The daemon's signals with a store behind it. SIGTERM under write load:
//! exit 0, nothing acknowledged lost, and the next start loads the final
//! snapshot instead of replaying the log. SIGUSR1: a checkpoint now.
//! SIGHUP: the config file is re-read and applied live; a broken file is
//! reported and the configuration in force is kept.

use std::sync::atomic::Ordering;

use nexus_client::wire::ErrorCode;
use nexus_client::{ClientError, Transport};
use nexus_shm_protocol::layout::FrameKind;
use nexus_tests::disk::snapshots;
use nexus_tests::store::{BATCH_MEMORIES, NamespaceLedger, batch_texts, check_namespace, with_writers};
use nexus_tests::{BOUNDED_WAIT, Daemon, RawFrame, TestDir, check_raw_frame, signal, test_options, wait_until};
use nix::sys::signal::Signal;

use crate::{BINARIES, start};

const WRITERS: u64 = 3;
/// Per writer: 330 batches x 3 memories, under the 1000 one recall checks.
const MAX_BATCHES_PER_WRITER: u64 = 330;
/// Acknowledged batches (all writers) before the SIGTERM: the load is on.
const BATCHES_BEFORE_SIGTERM: u64 = 30;

#[test]
fn sigterm_under_write_load_exits_0_keeps_every_acknowledged_write_and_the_next_start_loads_a_snapshot() {
    let mut daemon = start(&["--shutdown-timeout-ms", "2000", "--wal-segment-bytes", "1048576"]);
    let clients: Vec<_> = (0..WRITERS).map(|_| daemon.client()).collect();
    let (status, runs) = with_writers(
        &clients,
        |writer: u64| format!("term-w{writer}"),
        MAX_BATCHES_PER_WRITER,
        4,
        |progress| {
            wait_until("the writers have written", BOUNDED_WAIT, || {
                progress.load(Ordering::Relaxed) >= BATCHES_BEFORE_SIGTERM
            });
            daemon.sigterm_and_wait()
        },
    );
    assert_eq!(status.code(), Some(0), "nexusd ended with {status}");
    let mut interrupted = 0;
    for run in &runs {
        match &run.ended_by {
            Some(ClientError::DaemonGone) => interrupted += 1,
            Some(ClientError::Status { code, .. }) if *code == ErrorCode::ShuttingDown as u32 => interrupted += 1,
            other => panic!("a writer ended with {other:?}, not ShuttingDown or DaemonGone"),
        }
    }
    assert_eq!(interrupted, WRITERS, "the SIGTERM came while every writer was writing");

    daemon.restart();
    let verifier = daemon.large_client();
    for run in &runs {
        check_namespace(&verifier, &run.ledger, "after SIGTERM under load and a restart");
    }
    assert!(
        daemon.stats_counter("last_checkpoint_lsn") > 0,
        "the start loaded the snapshot written at shutdown"
    );
    // At most each writer's one request in flight past the shutdown bound can
    // be logged after the final checkpoint.
    let replayed = daemon.stats_counter("replay_records");
    assert!(
        replayed <= WRITERS,
        "{replayed} WAL records replayed after a clean stop"
    );
}

#[test]
fn sigusr1_writes_a_checkpoint() {
    let mut daemon = start(&[]);
    let client = daemon.client();
    let mut ledger = NamespaceLedger::new("usr1");
    ledger
        .remember(&client, 0, batch_texts(0, BATCH_MEMORIES, 4))
        .expect("remember");
    assert_eq!(daemon.stats_counter("checkpoints_total"), 0);
    assert!(
        snapshots(&daemon.data_dir()).is_empty(),
        "no snapshot before the signal"
    );

    signal(daemon.pid(), Signal::SIGUSR1);
    daemon.wait_for_counter("checkpoints_total", "SIGUSR1 wrote a checkpoint", |n| n == 1);
    let lsn = daemon.stats_counter("last_checkpoint_lsn");
    assert_eq!(
        lsn,
        daemon.stats_counter("applied_lsn"),
        "the checkpoint covers every write"
    );
    let snapshot = daemon.data_dir().join(format!("snapshot-{lsn:020}.nxs"));
    assert_eq!(snapshots(&daemon.data_dir()), vec![snapshot]);
    // The running daemon now reads those memories from the new snapshot.
    check_namespace(&daemon.large_client(), &ledger, "served after the checkpoint");

    // A second checkpoint over a state that is part snapshot, part new writes.
    ledger
        .remember(&client, 1, batch_texts(1, BATCH_MEMORIES, 4))
        .expect("remember after the checkpoint");
    signal(daemon.pid(), Signal::SIGUSR1);
    daemon.wait_for_counter("checkpoints_total", "the second SIGUSR1 wrote a checkpoint", |n| n == 2);
    let lsn = daemon.stats_counter("last_checkpoint_lsn");
    let snapshot = daemon.data_dir().join(format!("snapshot-{lsn:020}.nxs"));
    assert_eq!(
        snapshots(&daemon.data_dir()),
        vec![snapshot],
        "the older snapshot is gone"
    );
    check_namespace(&daemon.large_client(), &ledger, "served after the second checkpoint");

    daemon.restart();
    assert_eq!(daemon.stats_counter("last_checkpoint_lsn"), lsn, "the start loaded it");
    assert_eq!(daemon.stats_counter("replay_records"), 0);
    check_namespace(&daemon.large_client(), &ledger, "after a restart from the snapshot");
}

/// Background checkpoints (every 64 KiB of WAL) while writers write: each one
/// rebases the running state onto its new snapshot, and every acknowledged
/// memory must stay readable through that, served live and after a restart.
#[test]
fn memories_stay_readable_while_background_checkpoints_rebase_the_state() {
    const BATCHES: u64 = 150;
    let mut daemon = start(&["--checkpoint-wal-bytes", "65536"]);
    let clients: Vec<_> = (0..WRITERS).map(|_| daemon.client()).collect();
    let ((), runs) = with_writers(&clients, |writer: u64| format!("rebase-w{writer}"), BATCHES, 40, |_| ());
    for run in &runs {
        assert!(run.ended_by.is_none(), "a writer failed: {:?}", run.ended_by);
    }
    let checkpoints = daemon.stats_counter("checkpoints_total");
    assert!(checkpoints >= 2, "only {checkpoints} checkpoints ran during the writes");
    let verifier = daemon.large_client();
    for run in &runs {
        check_namespace(&verifier, &run.ledger, "served live after background checkpoints");
    }
    daemon.restart();
    let verifier = daemon.large_client();
    for run in &runs {
        check_namespace(&verifier, &run.ledger, "after a restart");
    }
}

#[test]
fn sighup_applies_a_changed_config_file_and_keeps_the_current_one_when_the_file_is_broken() {
    let dir = TestDir::new();
    let config = dir.path().join("nexusd.toml");
    std::fs::write(&config, "max_bad_frames = 16\n").expect("config");
    let config_arg = config.to_str().expect("utf-8 path").to_owned();
    let daemon = Daemon::start_in(BINARIES, dir, &["--config", &config_arg]);
    // 16 tolerated: one bad frame is answered and forgiven.
    send_bad_frame(&daemon);
    daemon.client().ping().expect("ping");
    assert_eq!(daemon.stats_counter("clients_disconnected_bad_frames"), 0);

    std::fs::write(&config, "max_bad_frames = 0\n").expect("config");
    signal(daemon.pid(), Signal::SIGHUP);
    wait_for_log(&daemon, "SIGHUP: configuration reloaded");
    send_bad_frame(&daemon);
    daemon.wait_for_counter("clients_disconnected_bad_frames", "the new limit applies", |n| n == 1);

    std::fs::write(&config, "max_bad_frames = = 3\n").expect("config");
    signal(daemon.pid(), Signal::SIGHUP);
    wait_for_log(&daemon, "keeping the current configuration");
    let client = daemon.client();
    client.ping().expect("still serving");
    let mut ledger = NamespaceLedger::new("hup");
    ledger
        .remember(&client, 0, batch_texts(0, BATCH_MEMORIES, 4))
        .expect("still writing");
    check_namespace(&client, &ledger, "after a broken config file");
    send_bad_frame(&daemon);
    daemon.wait_for_counter("clients_disconnected_bad_frames", "the reloaded limit stays", |n| {
        n == 2
    });
}

/// One malformed frame on a fresh connection, answered MalformedFrame.
pub(crate) fn send_bad_frame(daemon: &Daemon) {
    let mut connection = daemon.connection(test_options(Transport::SharedMemory));
    let garbage = [0xAB_u8; 64];
    let frame = RawFrame {
        kind: FrameKind::Request as u16,
        request_id: 1,
        declared_len: garbage.len() as u32,
        payload: &garbage,
    };
    check_raw_frame(&mut connection, frame, ErrorCode::MalformedFrame);
}

#[track_caller]
fn wait_for_log(daemon: &Daemon, line: &str) {
    wait_until(&format!("the log says {line:?}"), BOUNDED_WAIT, || {
        daemon.stderr_text().contains(line)
    });
}
