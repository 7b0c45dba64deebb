//! Clients that attack the transport itself (issue 7, scenarios 1 and 2): a
//! bell made blocking and saturated, impossible ring cursors written before
//! the first request, bytes on the socket, a flood of empty wake-ups. Each
//! attack runs in a `nexus-test-peer` process against a real daemon; then a
//! well-behaved client must be served within its usual latency, and the
//! daemon must still stop gracefully.

use std::time::{Duration, Instant};

use nexus_client::Client;
use nexus_tests::Daemon;

use crate::start;

/// Pings timed for a latency sample.
const SAMPLE_PINGS: usize = 300;

#[test]
fn a_client_that_makes_the_bell_blocking_and_full_blocks_no_daemon_call() {
    // Against version 1 (the daemon read and wrote shared eventfds) this froze
    // one worker per hostile connection: accept, every session and shutdown.
    let mut daemon = start(&[]);
    let client = daemon.client();
    let usual = median_ping(&client);
    let mut peer = daemon.peer("hostile-bell");
    peer.expect_line("armed");
    check_serves_as_usual(&daemon, &client, usual);
    let status = daemon.sigterm_and_wait();
    assert!(status.success(), "graceful stop behind hostile bells: {status:?}");
    peer.kill();
}

#[test]
fn impossible_cursors_written_before_the_first_request_close_only_that_connection() {
    // Version 1 resumed its cursors from this client-written header and wrote
    // past the end of the mapping (SIGSEGV in 2 of ~40 tries).
    let daemon = start(&[]);
    let client = daemon.client();
    let usual = median_ping(&client);
    let mut peer = daemon.peer("hostile-cursors");
    let (status, last_line) = peer.wait_exit();
    assert!(status.success(), "peer failed: {last_line}");
    assert_eq!(
        last_line, "closed 40 of 40",
        "every hostile connection is closed by the daemon"
    );
    check_serves_as_usual(&daemon, &client, usual);
}

#[test]
fn a_client_that_writes_on_its_socket_after_the_handshake_is_disconnected() {
    let daemon = start(&[]);
    let client = daemon.client();
    let usual = median_ping(&client);
    let mut peer = daemon.peer("socket-bytes");
    let (status, last_line) = peer.wait_exit();
    assert!(status.success(), "peer: {last_line}");
    check_serves_as_usual(&daemon, &client, usual);
}

#[test]
fn a_client_that_floods_its_bell_with_nothing_to_do_is_disconnected() {
    let daemon = start(&[]);
    let client = daemon.client();
    let usual = median_ping(&client);
    let mut peer = daemon.peer("bell-flood");
    let (status, last_line) = peer.wait_exit();
    assert!(status.success(), "peer: {last_line}");
    assert!(daemon.stats_counter("clients_disconnected_corrupt") >= 1);
    check_serves_as_usual(&daemon, &client, usual);
}

/// The well-behaved client's median ping now is within a generous factor of
/// what it was before the attack, and a new client can still connect. (Not a
/// benchmark: a frozen worker shows as seconds, a healthy daemon as µs.)
#[track_caller]
fn check_serves_as_usual(daemon: &Daemon, client: &Client, usual: Duration) {
    let now = median_ping(client);
    let allowed = usual * 20 + Duration::from_millis(5);
    assert!(now <= allowed, "median ping {now:?} after the attack, {usual:?} before");
    daemon.client().ping().expect("a new client is admitted and served");
}

fn median_ping(client: &Client) -> Duration {
    let mut samples: Vec<Duration> = (0..SAMPLE_PINGS)
        .map(|_| {
            let started = Instant::now();
            client.ping().expect("the well-behaved client is served");
            started.elapsed()
        })
        .collect();
    samples.sort_unstable();
    samples[samples.len() / 2]
}
