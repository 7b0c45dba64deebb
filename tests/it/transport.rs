//! Basic behaviour through both transports: Ping, Stats and Health answer
//! correctly over shared memory and over the socket, and the memory
//! operations, not built yet, say so with `NotAvailable`.
//!
//! Malformed input is `bad_frames.rs`; the handshake is `handshake.rs`.

use nexus_client::Transport;
use nexus_client::wire::{
    ErrorCode, FeedbackRequest, ForgetRequest, MemoryInput, PingRequest, RecallRequest, RememberRequest, RequestBody,
    ResponseBody,
};
use nexus_shm_protocol::monotonic_now_ns;
use nexus_tests::{check_call, test_options};

use crate::start;

#[test]
fn ping_stats_and_health_answer_over_shared_memory() {
    check_ping_stats_health(Transport::SharedMemory);
}

#[test]
fn ping_stats_and_health_answer_over_the_socket() {
    check_ping_stats_health(Transport::Socket);
}

/// The memory operations land with a later issue (the durable store and the
/// recall pipeline); until then each must answer `NotAvailable` (200), never
/// a fake success. That change replaces this test with real behaviour.
#[test]
fn memory_operations_answer_not_available_until_the_store_lands() {
    let daemon = start(&[]);
    for transport in [Transport::SharedMemory, Transport::Socket] {
        let mut connection = daemon.connection(test_options(transport));
        for body in memory_operations() {
            check_call(&mut connection, body, Some(ErrorCode::NotAvailable));
        }
    }
}

/// One client and one pipelining connection over `transport`: every probe
/// answers, and the counters describe exactly what happened.
#[track_caller]
fn check_ping_stats_health(transport: Transport) {
    let daemon = start(&[]);
    let client = daemon.client_over(transport);
    assert_eq!(client.ping().expect("ping").payload_bytes, 0);

    let mut connection = daemon.connection(test_options(transport));
    let before_ns = monotonic_now_ns();
    let payload = PingRequest { payload: vec![7; 1000] };
    let answer = check_call(&mut connection, RequestBody::Ping(payload), None);
    let after_ns = monotonic_now_ns();
    let ResponseBody::Pong(pong) = answer.body else {
        panic!("Ping was answered with {:?}", answer.body);
    };
    assert_eq!(pong.payload_bytes, 1000, "the daemon reports the payload it received");
    assert!(
        (before_ns..=after_ns).contains(&pong.server_monotonic_ns),
        "the daemon's clock is the host's CLOCK_MONOTONIC: {before_ns} <= {} <= {after_ns}",
        pong.server_monotonic_ns
    );

    let health = client.health().expect("health");
    assert!(health.serving);
    assert_eq!(health.version, env!("CARGO_PKG_VERSION"));

    let stats = client.stats().expect("stats");
    let counter = |name| nexus_client::counter(&stats, name).unwrap_or_else(|| panic!("no {name} in {stats:?}"));
    assert_eq!(counter("process_pid"), u64::from(daemon.pid()));
    assert_eq!(
        counter("connections_open"),
        3,
        "the harness's observer, the client and the connection"
    );
    assert_eq!(
        counter("requests_total"),
        3,
        "two pings and a health probe before this Stats"
    );
    assert_eq!(counter("frames_rejected"), 0);
}

fn memory_operations() -> Vec<RequestBody> {
    let memory = MemoryInput {
        namespace: "agent".into(),
        text: "the sky is blue".into(),
        vector: Some(vec![0.5; 4]),
        ..MemoryInput::default()
    };
    vec![
        RequestBody::Remember(RememberRequest { memories: vec![memory] }),
        RequestBody::Recall(RecallRequest {
            namespace: "agent".into(),
            text: Some("sky".into()),
            k: 3,
            ..RecallRequest::default()
        }),
        RequestBody::Forget(ForgetRequest::Ids(vec![1])),
        RequestBody::Feedback(FeedbackRequest {
            memory_id: 1,
            recall_request_id: 1,
            useful: true,
        }),
        RequestBody::Flush,
        RequestBody::Checkpoint,
    ]
}
