//! Clients that die or stop reading: killed with SIGKILL while writing a
//! frame or while the daemon writes its answers, or alive but never reading
//! their answers. The daemon frees each connection's resources (exactly, by
//! fd count), never blocks the other clients, and does not grow its memory.
//!
//! The misbehaving clients are `nexus-test-peer` processes, so a SIGKILL
//! hits a real process at a known point (it prints when it is there).

use nexus_shm_protocol::wire::{PingRequest, RequestBody};
use nexus_tests::{BOUNDED_WAIT, Daemon, check_released, check_rss_within_tolerance, error_code, wait_until};

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

#[test]
fn an_idle_shared_memory_client_is_closed_after_the_idle_timeout_and_an_active_one_is_not() {
    let daemon = start(&["--idle-timeout-ms", "300"]);
    let idle = daemon.client();
    let active = daemon.client();
    idle.ping().expect("the idle client's only request");
    std::thread::scope(|scope| {
        // A client that keeps asking, every 50 ms, well inside the timeout.
        let keeps_asking = scope.spawn(|| {
            let until = std::time::Instant::now() + std::time::Duration::from_millis(1200);
            while std::time::Instant::now() < until {
                active.ping().expect("a client that keeps asking is never idle");
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
        });
        // Fresh connections for Stats: the harness's long-lived observer is
        // itself a quiet client here.
        wait_until("the idle client is closed", BOUNDED_WAIT, || {
            idle_closures(&daemon) >= 1
        });
        keeps_asking.join().expect("the active client was served throughout");
    });
    assert!(matches!(idle.ping(), Err(nexus_client::ClientError::DaemonGone)));
    // The quiet client and, possibly, the harness's quiet observer.
    assert!(idle_closures(&daemon) <= 2);
}

fn idle_closures(daemon: &Daemon) -> u64 {
    let stats = daemon.client().stats().expect("Stats over a fresh connection");
    nexus_client::counter(&stats, "clients_disconnected_idle").expect("the counter exists")
}

/// A big request grows a shared-memory session's scratch buffer; going idle
/// gives it back, and the budget's charge with it (issue 7, scenario 7).
#[test]
fn a_large_request_over_shared_memory_does_not_pin_its_scratch_buffer() {
    const PAYLOAD_BYTES: usize = 3 << 20;
    const CLIENTS: usize = 8;
    let daemon = start(&[]);
    let clients: Vec<_> = (0..CLIENTS).map(|_| daemon.large_client()).collect();
    clients.iter().for_each(|client| {
        client.ping().expect("a small ping first");
    });
    // Private memory only: the rings' pages are shared memory, resident in
    // the daemon's RSS for as long as the clients stay connected.
    let anon_before = rss_anon_bytes(daemon.pid());
    let charged_before = daemon.stats_counter("memory_charged_bytes");
    for client in &clients {
        let body = RequestBody::Ping(PingRequest {
            payload: vec![0xA5; PAYLOAD_BYTES],
        });
        let answer = client.call(body, None).expect("a 3 MiB ping is answered");
        assert_eq!(error_code(&answer), None, "{:?}", answer.status);
    }
    daemon.wait_for_counter(
        "memory_charged_bytes",
        "the scratch buffers are given back",
        |charged| charged == charged_before,
    );
    // Pinned, the buffers would hold 24 MiB; half of that is slack for the
    // allocator's caches.
    let pinned_bytes = (CLIENTS * PAYLOAD_BYTES) as u64;
    wait_until("the scratch buffers' pages are released", BOUNDED_WAIT, || {
        rss_anon_bytes(daemon.pid()) < anon_before + pinned_bytes / 2
    });
}

/// RssAnon of a process, from /proc/PID/status.
fn rss_anon_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("the daemon's /proc status");
    let kib: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix("RssAnon:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("RssAnon in /proc/PID/status");
    kib * 1024
}
