//! Basic behaviour through both transports: Ping, Stats and Health answer
//! correctly over shared memory and over the socket, and so does every memory
//! operation. Durability and bad input of the store are `store.rs`.
//!
//! Malformed input is `bad_frames.rs`; the handshake is `handshake.rs`.

use nexus_client::Transport;
use nexus_client::wire::{
    FeedbackRequest, ForgetRequest, MemoryInput, PingRequest, RecallRequest, RememberReport, RememberRequest,
    RequestBody, ResponseBody,
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

/// Every memory operation works the same over both transports: a memory is
/// recallable as soon as Remember answers, Feedback/Flush/Checkpoint succeed,
/// and after Forget it is gone.
#[test]
fn memory_operations_work_over_both_transports() {
    let daemon = start(&[]);
    for (round, transport) in [Transport::SharedMemory, Transport::Socket].into_iter().enumerate() {
        let mut connection = daemon.connection(test_options(transport));
        let namespace = format!("agent-{round}");
        let [remember, recall, feedback, flush, checkpoint, forget] = memory_operations(&namespace);
        let ResponseBody::Remembered(RememberReport { ids, .. }) = check_call(&mut connection, remember, None).body
        else {
            panic!("Remember did not answer with ids");
        };
        let recalled = check_call(&mut connection, recall.clone(), None);
        let recall_id = recalled.request_id;
        let ResponseBody::Recalled(hits) = recalled.body else {
            panic!("Recall did not answer with hits");
        };
        assert_eq!(
            hits.iter().map(|h| (h.id, h.text.as_str())).collect::<Vec<_>>(),
            vec![(ids[0], "the sky is blue")]
        );
        let feedback = match feedback {
            RequestBody::Feedback(f) => RequestBody::Feedback(FeedbackRequest {
                memory_id: ids[0],
                recall_request_id: recall_id,
                ..f
            }),
            other => other,
        };
        check_call(&mut connection, feedback, None);
        assert!(matches!(check_call(&mut connection, flush, None).body, ResponseBody::Flushed(lsn) if lsn > 0));
        assert!(
            matches!(check_call(&mut connection, checkpoint, None).body, ResponseBody::Checkpointed(lsn) if lsn > 0)
        );
        let forget = RequestBody::Forget(match forget {
            RequestBody::Forget(_) => ForgetRequest::Ids(ids.clone()),
            _ => unreachable!("the sixth operation is Forget"),
        });
        assert_eq!(
            check_call(&mut connection, forget, None).body,
            ResponseBody::Forgotten(1)
        );
        assert_eq!(
            check_call(&mut connection, recall, None).body,
            ResponseBody::Recalled(vec![])
        );
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

fn memory_operations(namespace: &str) -> [RequestBody; 6] {
    let memory = MemoryInput {
        namespace: namespace.into(),
        text: "the sky is blue".into(),
        vector: Some(vec![0.5; 4]),
        ..MemoryInput::default()
    };
    [
        RequestBody::Remember(RememberRequest { memories: vec![memory] }),
        RequestBody::Recall(RecallRequest {
            namespace: namespace.into(),
            text: Some("sky".into()),
            k: 3,
            ..RecallRequest::default()
        }),
        RequestBody::Feedback(FeedbackRequest {
            memory_id: 0,
            recall_request_id: 1,
            useful: true,
        }),
        RequestBody::Flush,
        RequestBody::Checkpoint,
        RequestBody::Forget(ForgetRequest::Ids(vec![])),
    ]
}
