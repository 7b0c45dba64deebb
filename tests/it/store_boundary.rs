//! The store at the trust boundary (issue 7): what a client sends cannot
//! stall other clients, split a key into two memories, grow the WAL without
//! bound, hide a failed WAL, hang shutdown, or get an error about something
//! it did not send.
//!
//! Each test performs one scenario against a real `nexusd-it`; faults come
//! through `NEXUS_FAULT_INJECT` (ENOSPC, a failed or hung fdatasync).

use std::time::{Duration, Instant};

use nexus_client::wire::{
    EngineChoice, ErrorCode, ForgetRequest, MemoryInput, RecallRequest, RememberRequest, Request, RequestBody,
    ResponseBody, Status,
};
use nexus_client::{Client, ClientError, ConnectOptions, Transport};
use nexus_daemon::store::wal::FAULT_INJECT_ENV;
use nexus_tests::disk::{Tmpfs, fill_disk, snapshots, wal_segments};
use nexus_tests::store::{
    BATCH_MEMORIES, NamespaceLedger, batch_texts, check_namespace, check_refused, check_status, memory, recall,
};
use nexus_tests::{BOUNDED_WAIT, Daemon, LARGE_RING_BYTES, Launch, TestDir, test_options};

use crate::{BINARIES, start, start_with_env};

/// `Limits::default().max_forget_ids`.
const MAX_FORGET_IDS: usize = 100_000;

// Regression (issue 7, scenario 12): a Forget with too many ids was refused
// as "the batch has N memories", and a bad query vector as "memory 0".
#[test]
fn refusals_name_what_the_client_sent_ids_of_a_forget_and_the_query_vector() {
    let daemon = start(&[]);
    let client = daemon.large_client();
    client
        .remember(vec![memory("named", "a memory to forget by id")])
        .expect("a memory");
    let too_many = RequestBody::Forget(ForgetRequest::Ids((0..=MAX_FORGET_IDS as u64).collect()));
    let message = check_refused(&client, "a Forget of 100 001 ids", too_many, ErrorCode::BatchTooLarge);
    assert!(
        message.contains("100001 ids") && !message.contains("memories"),
        "the refusal counts ids: {message}"
    );

    let query = |vector: Vec<f32>| {
        RequestBody::Recall(RecallRequest {
            namespace: "named".into(),
            vector: Some(vector),
            k: 5,
            ..RecallRequest::default()
        })
    };
    let cases = [
        (
            "a NaN in the query vector",
            query(vec![0.5, f32::NAN]),
            ErrorCode::InvalidArgument,
        ),
        ("an empty query vector", query(vec![]), ErrorCode::InvalidArgument),
    ];
    for (what, body, expected) in cases {
        let message = check_refused(&client, what, body, expected);
        assert!(
            message.starts_with("query") && !message.contains("memory"),
            "{what}: the refusal names the query: {message}"
        );
    }
    client
        .remember(vec![MemoryInput {
            vector: Some(vec![0.5; 4]),
            ..memory("named", "four")
        }])
        .expect("a 4-d vector");
    let message = check_refused(
        &client,
        "a 3-d query vector in a 4-d store",
        query(vec![0.5; 3]),
        ErrorCode::DimensionMismatch,
    );
    assert!(message.starts_with("query"), "the refusal names the query: {message}");
}

// Regression (issue 7, scenario 11): after a failed fdatasync every write was
// refused, yet Health answered as for a healthy daemon.
#[test]
fn health_reports_a_fail_stopped_wal_as_refusing_writes() {
    // The first fdatasync is the new segment's at start-up; the next, the first write's.
    let daemon = start_with_env(&[], &[(FAULT_INJECT_ENV, "fsync-eio-after:1")]);
    let client = daemon.client();
    let healthy = client.health().expect("Health before the failure");
    assert_eq!(healthy.write_failure, None, "writes are accepted at first");
    let failed = client.remember(vec![memory("health", "lost to a failed fdatasync")]);
    check_status(failed, ErrorCode::StorageFailed);

    let report = client.health().expect("Health after the failure");
    assert!(report.serving, "reads are still served");
    let reason = report
        .write_failure
        .unwrap_or_else(|| panic!("Health does not say that writes are refused"));
    assert!(
        reason.contains("fdatasync"),
        "the reason names the failed fdatasync: {reason}"
    );
}

/// Shutdown's wait for in-flight requests and for the WAL writer, in the test below.
const SHUTDOWN_TIMEOUT_MS: &str = "500";

// Regression (issue 7, scenario 11): with an fdatasync that never returned,
// SIGTERM never ended the daemon: the final checkpoint waited for the WAL
// writer's rotation for ever.
#[test]
fn sigterm_ends_the_daemon_even_while_an_fdatasync_never_returns() {
    let mut daemon = start_with_env(
        &["--shutdown-timeout-ms", SHUTDOWN_TIMEOUT_MS],
        &[(FAULT_INJECT_ENV, "fsync-hang-after:1")],
    );
    let client = daemon.client();
    let stuck = client.call(
        RequestBody::Remember(RememberRequest {
            memories: vec![memory("hang", "its fdatasync never returns")],
        }),
        Some(Duration::from_millis(200)),
    );
    assert!(
        matches!(stuck, Err(ClientError::Timeout(_))),
        "the write waits for its fdatasync: {stuck:?}"
    );
    let pinged = daemon.client().ping();
    assert!(pinged.is_ok(), "the daemon still serves other clients: {pinged:?}");

    let status = daemon.sigterm_and_wait();
    assert!(
        !status.success(),
        "a shutdown that could not stop the WAL writer says so with its exit status"
    );
    let stderr = daemon.stderr_text();
    assert!(
        stderr.contains("did not answer within") || stderr.contains("did not stop within"),
        "the log names the stuck WAL writer:\n{stderr}"
    );
}

// Regression (issue 7, scenario 4): a Forget released its key before its
// record was logged; when the log write failed (disk full) the memory stayed,
// unindexed, and the next Remember of its key made a second memory.
#[test]
fn a_forget_that_fails_on_a_full_disk_leaves_its_key_naming_the_one_memory() {
    let marker_dir = TestDir::new();
    let full = marker_dir.path().join("disk-is-full");
    let spec = format!("disk-full-while:{}", full.display());
    let mut daemon = start_with_env(&[], &[(FAULT_INJECT_ENV, &spec)]);
    let client = daemon.client();
    let keyed = |text: &str| MemoryInput {
        key: Some("profile".into()),
        ..memory("keys", text)
    };
    let first = client.remember(vec![keyed("likes tea")]).expect("the first write");

    std::fs::write(&full, b"").expect("filling the disk (marker)");
    let forget = client.forget(ForgetRequest::Ids(first.clone()));
    check_status(forget, ErrorCode::DiskFull);
    std::fs::remove_file(&full).expect("freeing the disk (marker)");

    let again = client
        .remember(vec![keyed("likes coffee")])
        .expect("a write once space is back");
    assert_eq!(again, first, "the key still names its one memory");
    check_key_texts(&client, &[(first[0], "likes coffee")]);
    daemon.restart();
    check_key_texts(&daemon.client(), &[(first[0], "likes coffee")]);
}

/// The memories of namespace `keys`, by id and text.
#[track_caller]
fn check_key_texts(client: &Client, expected: &[(u64, &str)]) {
    let hits = recall(client, "keys", "likes");
    let found: Vec<(u64, &str)> = hits.iter().map(|h| (h.id, h.text.as_str())).collect();
    assert_eq!(found, expected, "memories of the keyed namespace");
}

/// The store the worst-case recall scans: many memories of many words.
const BIG_STORE_MEMORIES: usize = 60_000;
/// Memories per Remember while filling it.
const FILL_BATCH: usize = 1000;
/// Words per memory (~1.3 KiB of text).
const WORDS_PER_MEMORY: usize = 200;
/// `Limits::default().max_query_bytes`.
const MAX_QUERY_BYTES: usize = 64 * 1024;
/// How long the worst-case recall may take: far beyond its expected
/// fraction of a second, so only a hang fails it.
const RECALL_TIMEOUT: Duration = Duration::from_secs(60);
/// Writes and pings another client makes while one recall runs.
const OPS_DURING_RECALL: usize = 10;

// Regression (issue 7, scenario 3): a recall's query was bounded only by the
// frame size, its terms were deduplicated (and every memory's terms matched)
// in quadratic time, and the whole scan held the state's lock with no
// deadline check, so one big query stalled the apply thread and with it every
// other client's writes for minutes.
#[test]
fn a_worst_case_recall_runs_while_other_clients_keep_writing_and_pinging() {
    let daemon = start(&[]);
    fill_big_store(&daemon.large_client(), "big");
    let other = daemon.client();
    other.ping().expect("warm-up ping");
    other
        .remember(vec![memory("other", "warm-up write")])
        .expect("warm-up write");

    let hostile = daemon.large_client();
    let query = worst_case_query(MAX_QUERY_BYTES);
    std::thread::scope(|scope| {
        let recall = scope.spawn(|| {
            let started = Instant::now();
            // The exact scan, by name: the one engine whose cost grows
            // with the store, so the worst case a client can ask for.
            let body = RequestBody::Recall(RecallRequest {
                namespace: "big".into(),
                text: Some(query),
                k: 10,
                engine: Some(EngineChoice::Scan),
                ..RecallRequest::default()
            });
            let answer = hostile.call(body, Some(RECALL_TIMEOUT));
            (answer, started.elapsed(), Instant::now())
        });
        // The recall is on its way; the other client's requests come after it.
        let mut done = Vec::new();
        for n in 0..OPS_DURING_RECALL {
            let text = format!("written while a big recall runs {n}");
            other
                .remember(vec![memory("other", &text)])
                .expect("a write during the recall");
            other.ping().expect("a ping during the recall");
            done.push(Instant::now());
        }
        let (answer, took, recall_done) = recall.join().expect("the recall thread");
        let answer = answer.expect("the worst-case recall is answered");
        assert!(
            matches!(&answer.body, ResponseBody::Recalled(hits) if !hits.is_empty()),
            "the query shares words with the store: {:?}",
            answer.status
        );
        eprintln!("worst-case recall over {BIG_STORE_MEMORIES} memories took {took:?}");
        let last = *done.last().expect("ops ran");
        assert!(
            last < recall_done,
            "the other client's {OPS_DURING_RECALL} writes and pings finished only after the recall ({took:?}): \
             the recall stalled them"
        );
    });
}

// Regression (issue 7, scenario 3): no limit on a query's length, and no
// deadline check inside the scan.
#[test]
fn an_over_long_query_is_refused_and_a_scan_past_its_deadline_stops() {
    let daemon = start(&[]);
    fill_big_store(&daemon.large_client(), "big");
    let client = daemon.large_client();
    let over_long = RequestBody::Recall(RecallRequest {
        namespace: "big".into(),
        text: Some("w".repeat(MAX_QUERY_BYTES + 1)),
        k: 10,
        ..RecallRequest::default()
    });
    let message = check_refused(&client, "a 64 KiB + 1 query", over_long, ErrorCode::InvalidArgument);
    assert!(
        message.starts_with("query") && message.contains("max_query_bytes"),
        "the refusal names the query and the limit: {message}"
    );

    let mut connection = daemon.connection(ConnectOptions {
        request_ring_bytes: LARGE_RING_BYTES,
        response_ring_bytes: LARGE_RING_BYTES,
        ..test_options(Transport::SharedMemory)
    });
    let mut request = Request {
        request_id: 0,
        deadline_ns: 0,
        body: RequestBody::Recall(RecallRequest {
            namespace: "big".into(),
            text: Some(worst_case_query(MAX_QUERY_BYTES)),
            k: 10,
            engine: Some(EngineChoice::Scan),
            ..RecallRequest::default()
        }),
    };
    connection
        .submit(&mut request, Instant::now() + RECALL_DEADLINE)
        .expect("submitting the recall");
    let answer = connection
        .recv(Some(BOUNDED_WAIT))
        .expect("an answer to the recall")
        .to_owned_response();
    match answer.status {
        Status::Error { code, message } => {
            assert_eq!(code, ErrorCode::DeadlineExceeded as u32, "{message}");
            assert!(message.contains("after scanning"), "the scan itself stopped: {message}");
        }
        other => panic!("a recall over {BIG_STORE_MEMORIES} memories beat a {RECALL_DEADLINE:?} deadline: {other:?}"),
    }
}

/// The deadline of the recall above: far shorter than its scan.
const RECALL_DEADLINE: Duration = Duration::from_millis(20);

/// Writes [`BIG_STORE_MEMORIES`] memories of [`WORDS_PER_MEMORY`] words to `namespace`.
fn fill_big_store(client: &Client, namespace: &str) {
    for batch in 0..BIG_STORE_MEMORIES / FILL_BATCH {
        let memories = (0..FILL_BATCH)
            .map(|n| {
                let first = (batch * FILL_BATCH + n) * 7;
                let words: Vec<String> = (0..WORDS_PER_MEMORY).map(|w| format!("q{}", first + w)).collect();
                memory(namespace, &words.join(" "))
            })
            .collect();
        client
            .remember(memories)
            .unwrap_or_else(|e| panic!("filling batch {batch}: {e}"));
    }
}

/// As many distinct words as fit in `max_bytes`, some of them in the store.
fn worst_case_query(max_bytes: usize) -> String {
    let mut query = String::with_capacity(max_bytes);
    for n in 0.. {
        let word = format!("q{} ", n * 13);
        if query.len() + word.len() > max_bytes {
            break;
        }
        query.push_str(&word);
    }
    query
}

/// Clients asking for checkpoints at once, and requests each of them makes.
const CHECKPOINT_CLIENTS: usize = 4;
const CHECKPOINTS_PER_CLIENT: usize = 5;

// Regression (issue 7, scenario 8): every client Checkpoint wrote the whole
// store again, so clients could keep the daemon checkpointing back to back.
#[test]
fn client_checkpoints_while_one_runs_or_soon_after_share_it() {
    let daemon = start(&[]);
    let writer = daemon.client();
    let mut ledger = NamespaceLedger::new("rationed");
    ledger
        .remember(&writer, 0, batch_texts(0, BATCH_MEMORIES, 4))
        .expect("a first write");
    let clients: Vec<Client> = (0..CHECKPOINT_CLIENTS).map(|_| daemon.client()).collect();
    let lsns: Vec<u64> = std::thread::scope(|scope| {
        let askers: Vec<_> = (clients.iter())
            .map(|client| {
                scope.spawn(move || {
                    (0..CHECKPOINTS_PER_CLIENT)
                        .map(|_| client.checkpoint().expect("a checkpoint"))
                        .collect::<Vec<u64>>()
                })
            })
            .collect();
        // Writes go on meanwhile, so every request has something new to cover.
        for id in 1..=20 {
            ledger
                .remember(&writer, id, batch_texts(id, BATCH_MEMORIES, 4))
                .expect("a write during the checkpoints");
        }
        askers
            .into_iter()
            .flat_map(|asker| asker.join().expect("a checkpoint thread"))
            .collect()
    });
    assert_eq!(
        daemon.stats_counter("checkpoints_total"),
        1,
        "{} requests shared one checkpoint (answers: {lsns:?})",
        lsns.len()
    );
    assert!(lsns.iter().all(|lsn| *lsn == lsns[0]), "all answer its LSN: {lsns:?}");
    // An operator's SIGUSR1 is not rationed. One more write first: when the
    // asking threads started late, the shared checkpoint may already cover
    // every write, and a checkpoint with nothing new is rightly skipped.
    ledger
        .remember(&writer, 21, batch_texts(21, BATCH_MEMORIES, 4))
        .expect("a write after the checkpoints");
    nexus_tests::signal(daemon.pid(), nix::sys::signal::Signal::SIGUSR1);
    daemon.wait_for_counter("checkpoints_total", "SIGUSR1 wrote a checkpoint", |n| n == 2);
    check_namespace(&daemon.large_client(), &ledger, "after the checkpoints");
}

// Regression (issue 7, scenario 8): last_checkpoint_lsn was set to the
// applied LSN after replay, so after a restart that replayed records both
// Checkpoint and shutdown returned early, and the replayed segments stayed.
#[test]
fn after_a_restart_that_replayed_records_shutdown_and_checkpoint_write_a_snapshot() {
    let mut daemon = start(&[]);
    let mut ledger = NamespaceLedger::new("replayed");
    let mut write = |daemon: &Daemon, id: u64| {
        (ledger.remember(&daemon.client(), id, batch_texts(id, BATCH_MEMORIES, 4)))
            .unwrap_or_else(|e| panic!("batch {id}: {e}"));
    };
    write(&daemon, 0);
    daemon.client().checkpoint().expect("the first checkpoint");
    write(&daemon, 1);
    daemon.restart(); // SIGKILL: batch 1 is only in the WAL
    assert_eq!(daemon.stats_counter("replay_records"), 1);
    let status = daemon.sigterm_and_wait();
    assert_eq!(status.code(), Some(0), "nexusd ended with {status}");
    daemon.restart();
    assert_eq!(
        daemon.stats_counter("replay_records"),
        0,
        "the shutdown after a replay wrote a snapshot covering it"
    );

    write(&daemon, 2);
    daemon.restart(); // SIGKILL again: batch 2 is only in the WAL
    assert_eq!(daemon.stats_counter("replay_records"), 1);
    let mut replayed_segments = wal_segments(&daemon.data_dir());
    replayed_segments.pop(); // the newest is the one this start writes to
    let lsn = daemon.client().checkpoint().expect("a checkpoint after the replay");
    assert_eq!(
        lsn,
        daemon.stats_counter("applied_lsn"),
        "it covers the replayed record"
    );
    let snapshot = daemon.data_dir().join(format!("snapshot-{lsn:020}.nxs"));
    assert_eq!(
        snapshots(&daemon.data_dir()),
        vec![snapshot],
        "a snapshot at that LSN, alone"
    );
    let left: Vec<_> = (wal_segments(&daemon.data_dir()).into_iter())
        .filter(|segment| replayed_segments.contains(segment))
        .collect();
    assert!(left.is_empty(), "the replayed segments are deleted: {left:?} remain");
    daemon.restart();
    check_namespace(&daemon.large_client(), &ledger, "after the checkpoint and a restart");
}

/// kill -9 loop iterations, and batches written in each.
const CRASH_ITERATIONS: u64 = 20;
const BATCHES_PER_CRASH: u64 = 3;
/// The default WAL segment: each start preallocates one.
const SEGMENT_BYTES: u64 = 64 << 20;
/// WAL on disk a crash loop may leave: the running segment's preallocation,
/// plus room for the small segments of the runs since the last checkpoint.
const MAX_WAL_BYTES: u64 = SEGMENT_BYTES + (16 << 20);
/// Segments it may leave: twice the count that triggers a checkpoint (8 with
/// the defaults; past twice it a start compacts before serving), the running
/// one, and one a checkpoint may be starting.
const MAX_WAL_SEGMENTS: usize = 2 * 8 + 2;

// Regression (issue 7, scenario 8): every start opened a new preallocated
// 64 MiB segment and restarted the automatic-checkpoint count at zero, so a
// daemon that kept crashing never checkpointed: 40 crashes, 2.5 GiB of WAL.
#[test]
fn a_daemon_killed_over_and_over_keeps_its_wal_bounded() {
    let mut daemon = start(&[]);
    let mut ledgers = Vec::new();
    for iteration in 0..CRASH_ITERATIONS {
        let mut ledger = NamespaceLedger::new(&format!("crash-{iteration}"));
        let client = daemon.client();
        for id in 0..BATCHES_PER_CRASH {
            (ledger.remember(&client, id, batch_texts(id, BATCH_MEMORIES, 4)))
                .unwrap_or_else(|e| panic!("iteration {iteration}, batch {id}: {e}"));
        }
        ledgers.push(ledger);
        daemon.restart();
        let segments = wal_segments(&daemon.data_dir());
        let bytes: u64 = segments
            .iter()
            .map(|s| std::fs::metadata(s).map_or(0, |m| m.len()))
            .sum();
        assert!(
            bytes <= MAX_WAL_BYTES && segments.len() <= MAX_WAL_SEGMENTS,
            "after {} kills: {} WAL segments, {} MiB",
            iteration + 1,
            segments.len(),
            bytes >> 20
        );
    }
    assert!(!snapshots(&daemon.data_dir()).is_empty(), "the restarts checkpointed");
    let verifier = daemon.large_client();
    for ledger in &ledgers {
        check_namespace(&verifier, ledger, "after the kill loop");
    }
}

/// Memories written before the disk fills: a snapshot of several MiB.
const FULL_DISK_BATCHES: u64 = 12;
const FULL_DISK_BATCH_MEMORIES: usize = 80;
/// Words per memory there (~4 KiB of text).
const FULL_DISK_WORDS: usize = 400;
/// Space left free: room for the checkpoint's WAL rotation, not its snapshot.
const SPACE_LEFT_BYTES: usize = 2 << 20;

// Regression (issue 7, scenario 8): a checkpoint that failed (here: the disk
// filled up under its snapshot) left its partial temp file behind.
#[test]
fn a_checkpoint_that_fails_on_a_full_disk_leaves_no_temp_file() {
    let mount_dir = TestDir::new();
    let tmpfs = match Tmpfs::mount(&mount_dir.path().join("tmpfs"), "16m") {
        Ok(tmpfs) => tmpfs,
        Err(reason) => {
            println!("skipped: {reason}");
            return;
        }
    };
    // Chunking off: the 400-word texts are payload that fills the disk, and
    // the ledger checks each as one memory (chunks are preprocess.rs's business).
    let args = ["--wal-segment-bytes", "1048576", "--chunk-tokens", "0"];
    let launch = Launch::args(&args).data_dir(tmpfs.path().join("data"));
    let daemon = Daemon::launch(BINARIES, TestDir::new(), launch);
    let client = daemon.large_client();
    let mut ledger = NamespaceLedger::new("full");
    for id in 0..FULL_DISK_BATCHES {
        let texts = batch_texts(id, FULL_DISK_BATCH_MEMORIES, FULL_DISK_WORDS);
        ledger
            .remember(&client, id, texts)
            .unwrap_or_else(|e| panic!("batch {id}: {e}"));
    }
    let reserve = tmpfs.path().join("reserve");
    std::fs::write(&reserve, vec![1u8; SPACE_LEFT_BYTES]).expect("the reserve");
    let filler = tmpfs.path().join("filler");
    fill_disk(&filler);
    std::fs::remove_file(&reserve).expect("freeing the reserve");

    let failed = client.checkpoint();
    check_status(failed, ErrorCode::StorageFailed);
    let data = daemon.data_dir();
    let temps: Vec<String> = (std::fs::read_dir(&data).expect("the data dir"))
        .map(|entry| entry.expect("an entry").file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".tmp"))
        .collect();
    assert!(
        temps.is_empty(),
        "the failed checkpoint left {temps:?} in {}",
        data.display()
    );
    assert!(snapshots(&data).is_empty(), "no snapshot was written");

    std::fs::remove_file(&filler).expect("freeing the disk");
    let lsn = client.checkpoint().expect("a checkpoint once space is back");
    assert_eq!(snapshots(&data), vec![data.join(format!("snapshot-{lsn:020}.nxs"))]);
    check_namespace(&client, &ledger, "after the failed and the good checkpoint");
}

/// Batches written with fds gone: each is ~250 KiB, so a 1 MiB segment needs
/// a rotation within a few of them.
const MAX_WRITES_UNTIL_ROTATION: u64 = 10;

// Regression (issue 7, scenario 5): running out of file descriptors when the
// WAL opened its next segment fail-stopped it: every later write was refused
// until a restart, as after a failed fdatasync.
#[test]
fn running_out_of_fds_at_a_wal_rotation_fails_that_write_only() {
    let marker_dir = TestDir::new();
    let no_fds = marker_dir.path().join("out-of-fds");
    let spec = format!("emfile-while:{}", no_fds.display());
    let daemon = start_with_env(&["--wal-segment-bytes", "1048576"], &[(FAULT_INJECT_ENV, &spec)]);
    let client = daemon.large_client();
    let mut ledger = NamespaceLedger::new("fds");
    std::fs::write(&no_fds, b"").expect("using up the fds (marker)");
    let mut refusal = None;
    for id in 0..MAX_WRITES_UNTIL_ROTATION {
        let result = ledger.remember(&client, id, batch_texts(id, 100, 250));
        if result.is_err() {
            refusal = Some(check_status(result, ErrorCode::Busy));
            break;
        }
    }
    let message = refusal.unwrap_or_else(|| panic!("{MAX_WRITES_UNTIL_ROTATION} writes needed no new segment"));
    assert!(message.contains("file descriptors"), "the refusal says why: {message}");
    assert_eq!(daemon.stats_counter("wal_failed"), 0, "the WAL is not failed");
    let health = client.health().expect("Health");
    assert_eq!(health.write_failure, None, "writes are still accepted");

    std::fs::remove_file(&no_fds).expect("freeing the fds (marker)");
    ledger
        .remember(&client, 100, batch_texts(100, 100, 250))
        .unwrap_or_else(|e| panic!("the next write once fds are back: {e}"));
    check_namespace(&client, &ledger, "after the fds came back");
}
