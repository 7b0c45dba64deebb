//! Clients that die or stop reading: killed with SIGKILL while writing a
//! frame or while the daemon writes its answers, or alive but never reading
//! their answers. The daemon frees each connection's resources (exactly, by
//! fd count), never blocks the other clients, and does not grow its memory.
//!
//! The misbehaving clients are `nexus-test-peer` processes, so a SIGKILL
//! hits a real process at a known point (it prints when it is there).

use nexus_tests::{Daemon, check_released, check_rss_within_tolerance};

use crate::start;

/// A stall timeout no test reaches: whatever frees a connection in these
/// tests, it is not the stalled-client rule.
const NEVER_STALLED_MS: &str = "600000";

#[test]
fn a_client_killed_while_writing_a_frame_frees_its_connection() {
    let daemon = start(&[]);
    let idle = daemon.idle_resources();
    let mut peer = daemon.peer("hold-partial-frame");
    peer.expect_line("writing");
    daemon.wait_for_counter("connections_open", "the peer's session runs", |n| {
        n == idle.connections_open + 1
    });
    peer.kill();
    check_released(&daemon, idle);
    assert_eq!(
        daemon.stats_counter("frames_rejected"),
        0,
        "the unpublished frame was never seen"
    );
    assert_eq!(daemon.stats_counter("clients_disconnected_corrupt"), 0);
    daemon.client().ping().expect("the daemon still serves");
}

#[test]
fn a_client_killed_while_the_daemon_writes_its_answers_frees_its_connection() {
    let daemon = start(&["--stalled-client-timeout-ms", NEVER_STALLED_MS]);
    let idle = daemon.idle_resources();
    let mut peer = daemon.peer("flood-then-die");
    // Printed once its request ring stayed full: the daemon holds an answer
    // it cannot write into the full response ring.
    peer.expect_line("flooding");
    peer.kill();
    check_released(&daemon, idle);
    assert_eq!(
        daemon.stats_counter("clients_disconnected_stalled"),
        0,
        "freed by the death, not the stall rule"
    );
    daemon.client().ping().expect("the daemon still serves");
}

#[test]
fn clients_that_never_read_block_no_one_and_do_not_grow_memory() {
    let daemon = start(&["--stalled-client-timeout-ms", NEVER_STALLED_MS]);
    let idle = daemon.idle_resources();
    let mut stalled: Vec<_> = (0..4).map(|_| daemon.peer("flood-no-read")).collect();
    for peer in &mut stalled {
        peer.expect_line("flooding");
    }
    let bystander = daemon.client();
    for _ in 0..200 {
        bystander.ping().expect("a bystander is served while others stall");
    }
    // Still stalled (the timeout is far away), so the pings above were
    // served while four sessions each held an answer they could not write.
    assert_eq!(daemon.stats_counter("clients_disconnected_stalled"), 0);
    assert_eq!(daemon.stats_counter("connections_open"), idle.connections_open + 5);
    check_rss_within_tolerance(&daemon, idle);
    drop(bystander);
    drop(stalled);
    check_released(&daemon, idle);
}

#[test]
fn a_client_that_never_reads_is_disconnected_after_the_stall_timeout() {
    let daemon = start(&["--stalled-client-timeout-ms", "500"]);
    let idle = daemon.idle_resources();
    let mut peer = daemon.peer("flood-no-read");
    peer.expect_line("flooding");
    check_disconnected_as_stalled_while_others_are_served(&daemon);
    // The peer process still lives; the daemon's side is gone all the same.
    check_released(&daemon, idle);
}

/// A client that never reads but keeps submitting (retrying on `Busy`, as
/// the client library's own `submit` does, which signals the daemon each
/// time) is as stalled as a silent one and must be disconnected too.
#[test]
fn a_client_that_keeps_submitting_without_reading_is_disconnected_after_the_stall_timeout() {
    let daemon = start(&["--stalled-client-timeout-ms", "500"]);
    let idle = daemon.idle_resources();
    let mut peer = daemon.peer("flood-keep-submitting");
    peer.expect_line("flooding");
    check_disconnected_as_stalled_while_others_are_served(&daemon);
    peer.expect_line("disconnected");
    check_released(&daemon, idle);
}

/// Pings from a bystander until the stalled counter reaches one; every ping
/// must succeed meanwhile.
#[track_caller]
fn check_disconnected_as_stalled_while_others_are_served(daemon: &Daemon) {
    let bystander = daemon.client();
    daemon.wait_for_counter(
        "clients_disconnected_stalled",
        "the stalled client is disconnected",
        |n| {
            bystander
                .ping()
                .expect("a bystander is served while another client stalls");
            n == 1
        },
    );
}
