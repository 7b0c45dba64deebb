//! Admission against a real daemon: connections that never say hello, a uid
//! that wants every slot, a client that goes quiet, a file descriptor table
//! filled by connections, a memory budget filled by rings. Each is refused
//! or cut off with a clear code and the setting's name, and the daemon goes
//! on serving (and writing) for everyone else.

use std::io::Read;
use std::os::unix::net::UnixStream;

use nexus_client::wire::{ErrorCode, MemoryInput};
use nexus_client::{ClientError, ConnectOptions, Connection, Transport};
use nexus_shm_protocol::handshake::{SERVER_HELLO_BYTES, ServerHello};
use nexus_tests::store::{batch_texts, memory};
use nexus_tests::{
    BOUNDED_WAIT, LARGE_RING_BYTES, check_closed_by_daemon, poll_until, raise_fd_limit, test_options, wait_until,
};

use crate::socket_transport::{check_still_serving, raw_socket_session};
use crate::start;

/// Silent connections opened against a bound of [`PENDING_BOUND`].
const SILENT_CONNECTIONS: usize = 100;
const PENDING_BOUND: usize = 8;
/// Most connections the fd test opens before it expects a refusal.
const MAX_CONNECTIONS_TRIED: usize = 500;
/// Memories per Remember in the fd test, ~1 KiB each: 15 batches pass the
/// 1 MiB WAL segment, so the WAL rotates (opens a file) while fds are short.
const FD_TEST_BATCH: usize = 100;
const FD_TEST_BATCHES: u64 = 15;

/// Before: every silent connection kept its task and fd until the
/// handshake timeout, with no bound on how many waited.
#[test]
fn silent_connections_are_bounded_and_do_not_block_a_client_that_says_hello() {
    let daemon = start(&[
        "--max-pending-handshakes",
        &PENDING_BOUND.to_string(),
        "--handshake-timeout-ms",
        "60000",
    ]);
    let idle = daemon.idle_resources();
    let mut silent: Vec<UnixStream> = (0..SILENT_CONNECTIONS)
        .map(|_| UnixStream::connect(daemon.socket_path()).expect("connect"))
        .collect();
    daemon
        .client()
        .ping()
        .expect("a client that says hello at once is served");
    // All but the newest few (the client took a place too) are told why
    // and closed, long before the handshake timeout.
    let at_least_evicted = SILENT_CONNECTIONS - PENDING_BOUND;
    let mut refused: Vec<Option<ServerHello>> = vec![None; SILENT_CONNECTIONS];
    let (mut closed, mut evicted) = (0, 0);
    let settled = poll_until(BOUNDED_WAIT, || {
        for (stream, answer) in silent.iter_mut().zip(refused.iter_mut()) {
            if answer.is_none() {
                *answer = read_refusal_if_closed(stream);
            }
        }
        closed = refused.iter().flatten().count();
        evicted = daemon.stats_counter("handshakes_evicted") as usize;
        closed >= at_least_evicted && closed == evicted
    });
    assert!(
        settled,
        "{closed} silent connections were closed with a refusal, {evicted} evicted, at least {at_least_evicted} expected"
    );
    for answer in refused.iter().flatten() {
        assert_eq!(answer.status, ErrorCode::TooManyClients as u32, "{:?}", answer.message);
        assert!(
            answer.message.contains("max_pending_handshakes"),
            "{:?}",
            answer.message
        );
    }
    let now = daemon.resources();
    assert!(
        now.open_fds <= idle.open_fds + PENDING_BOUND as u64 + 2,
        "the daemon holds {} fds for {PENDING_BOUND} pending handshakes (idle: {})",
        now.open_fds,
        idle.open_fds
    );
    assert!(daemon.stats_counter("handshakes_pending") <= PENDING_BOUND as u64);
}

/// Before: one uid could hold every `max_clients` slot.
#[test]
fn a_uid_cannot_hold_more_than_its_share_of_the_clients() {
    // The harness's observer is the first of the three.
    let daemon = start(&["--max-clients-per-uid", "3"]);
    let first = daemon.client();
    let second = daemon.client_over(Transport::Socket);
    let refused = daemon.try_connection(test_options(Transport::SharedMemory)).err();
    match &refused {
        Some(ClientError::Refused { code, message }) => {
            assert_eq!(*code, ErrorCode::TooManyClients as u32, "{message}");
            assert!(message.contains("max_clients_per_uid"), "{message}");
        }
        other => panic!("the fourth connection of one uid was not refused: {other:?}"),
    }
    first.ping().expect("the first clients are served");
    second.ping().expect("the first clients are served");
    assert_eq!(daemon.stats_counter("refused_uid_share"), 1);
    drop(first);
    wait_until("a freed place is taken again", BOUNDED_WAIT, || {
        daemon.try_connection(test_options(Transport::SharedMemory)).is_ok()
    });
}

/// Before: a connection without requests was kept for ever.
#[test]
fn an_idle_socket_connection_is_closed_after_the_idle_timeout_and_an_active_one_is_not() {
    let daemon = start(&["--idle-timeout-ms", "300"]);
    let mut idle = raw_socket_session(&daemon.socket_path());
    idle.set_nonblocking(true).expect("set_nonblocking");
    let active = daemon.client_over(Transport::Socket);
    let mut byte = [0u8; 1];
    wait_until("the idle connection is closed", BOUNDED_WAIT, || {
        active.ping().expect("the active client is served meanwhile");
        std::thread::sleep(std::time::Duration::from_millis(20));
        matches!(idle.read(&mut byte), Ok(0))
    });
    active.ping().expect("the active client outlived the idle one");
}

/// Before: connections could take every fd, and the WAL then failed to
/// open its next segment. Now they are refused inside the reserve, and
/// writes that rotate the WAL and a checkpoint go on.
#[test]
fn connections_that_exhaust_the_fds_are_refused_and_writes_go_on() {
    raise_fd_limit();
    let daemon = start(&[
        "--fd-limit",
        "128",
        "--fd-reserve",
        "32",
        "--wal-segment-bytes",
        "1048576",
    ]);
    let writer = daemon.large_client();
    let mut held: Vec<Connection> = Vec::new();
    let refusal = loop {
        assert!(
            held.len() < MAX_CONNECTIONS_TRIED,
            "no refusal after {} connections",
            held.len()
        );
        match daemon.try_connection(test_options(Transport::Socket)) {
            Ok(connection) => held.push(connection),
            Err(error) => break error,
        }
    };
    match &refusal {
        ClientError::Refused { code, message } => {
            assert_eq!(*code, ErrorCode::ConnectionSetupFailed as u32, "{message}");
            assert!(message.contains("fd_reserve"), "{message}");
        }
        other => panic!("connection {} failed without a refusal: {other}", held.len() + 1),
    }
    let segments_before = daemon.stats_counter("wal_segments");
    for batch in 0..FD_TEST_BATCHES {
        let memories: Vec<MemoryInput> = batch_texts(batch, FD_TEST_BATCH, 100)
            .iter()
            .map(|text| memory("fds", text))
            .collect();
        writer
            .remember(memories)
            .expect("Remember succeeds while fds are short");
    }
    assert!(
        daemon.stats_counter("wal_segments") > segments_before,
        "the WAL rotated while the connections held every fd but the reserve"
    );
    writer.checkpoint().expect("a checkpoint succeeds while fds are short");
    assert!(daemon.stats_counter("refused_fd_reserve") >= 1);
    drop(held);
    wait_until(
        "fds freed by closed connections admit clients again",
        BOUNDED_WAIT,
        || daemon.try_connection(test_options(Transport::Socket)).is_ok(),
    );
}

/// Before: rings were granted to every client up to `max_clients`, with no
/// bound on their sum.
#[test]
fn a_handshake_that_would_exceed_the_memory_budget_is_refused_and_charges_are_given_back() {
    let daemon = start(&["--memory-budget-bytes", "4194304"]);
    let charged_idle = daemon.stats_counter("memory_charged_bytes");
    let large = ConnectOptions {
        request_ring_bytes: LARGE_RING_BYTES,
        response_ring_bytes: LARGE_RING_BYTES,
        ..test_options(Transport::SharedMemory)
    };
    check_over_budget(daemon.try_connection(large).err());
    let mut small = Vec::new();
    let refusal = loop {
        assert!(
            small.len() < MAX_CONNECTIONS_TRIED,
            "no refusal after {} clients",
            small.len()
        );
        match daemon.try_connection(test_options(Transport::SharedMemory)) {
            Ok(connection) => small.push(connection),
            Err(error) => break error,
        }
    };
    check_over_budget(Some(refusal));
    assert!(small.len() >= 10, "only {} small clients fit in 4 MiB", small.len());
    let charged_full = daemon.stats_counter("memory_charged_bytes");
    assert!(
        charged_full <= 4 << 20,
        "charged {charged_full} bytes of a 4 MiB budget"
    );
    drop(small);
    daemon.wait_for_counter("memory_charged_bytes", "the clients' charges are given back", |n| {
        n == charged_idle
    });
    check_still_serving(&daemon);
}

#[track_caller]
fn check_over_budget(refusal: Option<ClientError>) {
    match refusal {
        Some(ClientError::Refused { code, message }) => {
            assert_eq!(code, ErrorCode::ConnectionSetupFailed as u32, "{message}");
            assert!(message.contains("memory_budget_bytes"), "{message}");
        }
        other => panic!("a client beyond the memory budget was not refused: {other:?}"),
    }
}

/// The refusal on `stream` if the daemon already wrote one and closed it;
/// `None` if the connection is still waiting.
fn read_refusal_if_closed(stream: &mut UnixStream) -> Option<ServerHello> {
    stream.set_nonblocking(true).expect("set_nonblocking");
    let mut bytes = [0u8; SERVER_HELLO_BYTES];
    match stream.read(&mut bytes) {
        Ok(SERVER_HELLO_BYTES) => {}
        Ok(n) => panic!("{n} bytes instead of a refusal"),
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return None,
        Err(e) => panic!("reading a refusal: {e}"),
    }
    stream.set_nonblocking(false).expect("set_nonblocking");
    check_closed_by_daemon(stream);
    Some(ServerHello::decode(&bytes).expect("a decodable refusal"))
}
