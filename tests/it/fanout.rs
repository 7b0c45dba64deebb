//! Many clients at once: a thousand connections, all open together, each
//! pinging, all served; once they leave, the daemon's fd count returns
//! exactly to idle and its RSS to within `RSS_TOLERANCE_BYTES` of where it
//! was after the same load once before.
//!
//! What a connection costs is what a leak would cost, so the test makes it
//! visible: each client's pings cover its whole 16 KiB request ring, so the
//! daemon touches 24 KiB of segment per client (header page, four request
//! pages, one response page). Had the sessions kept their segments, RSS
//! would stay ~23 MiB up, beyond the 16 MiB tolerance; had they kept their
//! fds (three each), the exact fd check fails.

use nexus_client::Transport;
use nexus_client::wire::{PingRequest, RequestBody, ResponseBody};
use nexus_tests::{Daemon, Resources, check_call, check_fds_released, check_released, raise_fd_limit, test_options};

use crate::start;

const N_CLIENTS: usize = 1000;
/// Threads pinging the connections: the daemon serves them concurrently,
/// as it would serve many agent processes.
const N_THREADS: usize = 4;
/// Pings per client, with payloads that together wrap its request ring.
const PINGS_PER_CLIENT: usize = 3;
const PING_PAYLOAD_BYTES: usize = 6000;

#[test]
fn a_thousand_clients_at_once_are_all_served_and_leave_nothing_behind() {
    // One fd per connection on our side (the socket; the segment fd is
    // closed once mapped), with room to spare.
    let fd_limit = raise_fd_limit();
    assert!(
        fd_limit >= 4 * N_CLIENTS as u64,
        "RLIMIT_NOFILE hard limit {fd_limit} is too low for this test"
    );
    let daemon = start(&[]);
    let idle = daemon.idle_resources();
    serve_a_thousand_clients(&daemon, idle);
    check_fds_released(&daemon, idle);
    // mimalloc keeps the heap of the first round's peak for reuse (RSS stays
    // ~20 MiB up, and flat over later rounds), so RSS is judged after a
    // second, identical round: a leak grows with every round, reuse does not.
    let warmed = daemon.resources();
    serve_a_thousand_clients(&daemon, warmed);
    check_released(&daemon, warmed);
}

/// Opens all connections, checks they are open at once, pings through each
/// from a few threads, then closes them all.
#[track_caller]
fn serve_a_thousand_clients(daemon: &Daemon, before: Resources) {
    let mut connections: Vec<_> = (0..N_CLIENTS)
        .map(|_| daemon.connection(test_options(Transport::SharedMemory)))
        .collect();
    // The daemon counts a session once its handshake is sent, so poll.
    let all_open = before.connections_open + N_CLIENTS as u64;
    daemon.wait_for_counter("connections_open", "all clients are connected at once", |n| {
        n == all_open
    });
    let served_before = daemon.stats_counter("requests_total");
    std::thread::scope(|scope| {
        for chunk in connections.chunks_mut(N_CLIENTS / N_THREADS) {
            scope.spawn(|| chunk.iter_mut().for_each(check_pings));
        }
    });
    let served = daemon.stats_counter("requests_total") - served_before;
    assert!(
        served >= (N_CLIENTS * PINGS_PER_CLIENT) as u64,
        "{served} requests served"
    );
}

#[track_caller]
fn check_pings(connection: &mut nexus_client::Connection) {
    for _ in 0..PINGS_PER_CLIENT {
        let body = RequestBody::Ping(PingRequest {
            payload: vec![0x5A; PING_PAYLOAD_BYTES],
        });
        let answer = check_call(connection, body, None);
        assert!(
            matches!(answer.body, ResponseBody::Pong(pong) if pong.payload_bytes as usize == PING_PAYLOAD_BYTES),
            "Ping answered with {:?}",
            answer.body
        );
    }
}
