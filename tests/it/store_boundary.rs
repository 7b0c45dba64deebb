//! The store at the trust boundary (issue 7): what a client sends cannot
//! stall other clients, split a key into two memories, grow the WAL without
//! bound, hide a failed WAL, hang shutdown, or get an error about something
//! it did not send.
//!
//! Each test performs one scenario against a real `nexusd-it`; faults come
//! through `NEXUS_FAULT_INJECT` (ENOSPC, a failed or hung fdatasync).

use std::time::{Duration, Instant};

use nexus_client::wire::{
    ErrorCode, ForgetRequest, MemoryInput, RecallRequest, RememberRequest, Request, RequestBody, ResponseBody, Status,
};
use nexus_client::{Client, ClientError, ConnectOptions, Transport};
use nexus_daemon::store::wal::FAULT_INJECT_ENV;
use nexus_tests::store::{check_refused, check_status, memory, recall};
use nexus_tests::{BOUNDED_WAIT, LARGE_RING_BYTES, TestDir, test_options};

use crate::{start, start_with_env};

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
            let body = RequestBody::Recall(RecallRequest {
                namespace: "big".into(),
                text: Some(query),
                k: 10,
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
