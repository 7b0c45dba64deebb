//! Fuzzes frame payload decoding: rkyv validation of a request as the daemon
//! does it for every frame (`wire::access_request`), then the handler's translation
//! of a Remember's memories into the store's input (`handler::new_memory`) and the
//! store's checks of them (`validate_memory`), and of a response as the client does
//! it (`wire::access_response`).
//!
//! Input: one byte choosing the message (even: request, odd: response), then the
//! payload, copied 16-aligned as both transports hand it over. Seeds are archives
//! of every request and response kind. Besides "never panics": a validated archive
//! deserializes, and its re-encoding validates again.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nexus_daemon::handler::new_memory;
use nexus_daemon::store::model::{Limits, validate_memory};
use nexus_fuzz::{Input, write_seeds_if_asked};
use nexus_shm_protocol::wire::{self, *};
use rkyv::util::AlignedVec;

fuzz_target!(init: write_seeds_if_asked(seeds, run), |bytes: &[u8]| {
    run(bytes);
});

/// Validates one payload; true when it was a valid archive.
fn run(bytes: &[u8]) -> bool {
    let mut input = Input::new(bytes);
    let choice = input.u8();
    let mut payload = AlignedVec::<16>::new();
    payload.extend_from_slice(input.rest());
    match choice % 2 {
        0 => request(&payload),
        _ => response(&payload),
    }
}

fn request(payload: &[u8]) -> bool {
    let Ok(archived) = wire::access_request(payload) else {
        return false;
    };
    if let ArchivedRequestBody::Remember(remember) = &archived.body {
        let limits = Limits::default();
        for (index, memory) in remember.memories.iter().enumerate() {
            let _ = validate_memory(index, new_memory(memory), &limits, 0);
        }
    }
    let owned: Request = rkyv::deserialize::<_, rkyv::rancor::Error>(archived).expect("a valid archive deserializes");
    assert!(wire::access_request(&wire::encode_to_vec(&owned)).is_ok());
    true
}

fn response(payload: &[u8]) -> bool {
    let Ok(archived) = wire::access_response(payload) else {
        return false;
    };
    let _ = archived.status.error_code();
    let owned: Response = rkyv::deserialize::<_, rkyv::rancor::Error>(archived).expect("a valid archive deserializes");
    assert!(wire::access_response(&wire::encode_to_vec(&owned)).is_ok());
    true
}

fn seeds() -> Vec<(&'static str, Vec<u8>)> {
    let tag = |key: &str, value: &str| MemoryTag {
        key: key.into(),
        value: value.into(),
    };
    let memory = MemoryInput {
        key: Some("caroline-food".into()),
        namespace: "demo".into(),
        text: "Caroline's favourite food is ramen".into(),
        vector: Some(vec![0.5, -0.25, 1.0, 0.0]),
        tags: vec![tag("who", "caroline")],
        created_at_ms: Some(1_700_000_000_000),
        importance: 1.0,
        source: Some("chat".into()),
    };
    let recall = RecallRequest {
        namespace: "demo".into(),
        text: Some("what food does Caroline like".into()),
        vector: Some(vec![0.5; 4]),
        k: 5,
        route: Some(Route::FullPipeline),
        filter: vec![tag("who", "caroline")],
        created: Some(TimeRange {
            start_ms: 1_600_000_000_000,
            end_ms: 1_700_000_000_000,
        }),
        engine: Some(EngineChoice::Lexical),
    };
    let requests = [
        ("ping", RequestBody::Ping(PingRequest { payload: vec![7; 24] })),
        (
            "remember",
            RequestBody::Remember(RememberRequest {
                memories: vec![
                    memory.clone(),
                    MemoryInput {
                        namespace: "n".into(),
                        ..Default::default()
                    },
                ],
            }),
        ),
        ("recall", RequestBody::Recall(recall)),
        ("forget-ids", RequestBody::Forget(ForgetRequest::Ids(vec![1, 2, 3]))),
        (
            "forget-namespace",
            RequestBody::Forget(ForgetRequest::Namespace("demo".into())),
        ),
        (
            "forget-tags",
            RequestBody::Forget(ForgetRequest::Tags {
                namespace: Some("demo".into()),
                tags: vec![tag("a", "b")],
            }),
        ),
        (
            "feedback",
            RequestBody::Feedback(FeedbackRequest {
                memory_id: 4,
                recall_request_id: 9,
                useful: true,
            }),
        ),
        ("stats", RequestBody::Stats),
        ("health", RequestBody::Health),
        ("flush", RequestBody::Flush),
        ("checkpoint", RequestBody::Checkpoint),
        (
            "list",
            RequestBody::List(ListRequest {
                namespace: "demo".into(),
                after: Some(ListCursor {
                    namespace: "demo".into(),
                    id: 7,
                }),
                limit: 100,
                max_bytes: 4096,
            }),
        ),
    ];
    let hit = RecallHit {
        id: 1,
        score: 0.5,
        text: "ramen".into(),
        namespace: "demo".into(),
        tags: vec![tag("nexus.chunk", "0/2")],
        created_at_ms: 1_683_554_160_000,
        why: vec![Signal {
            name: "lexical".into(),
            value: 0.5,
        }],
    };
    let responses = [
        (
            "pong",
            Response::ok(
                1,
                ResponseBody::Pong(Pong {
                    payload_bytes: 24,
                    server_monotonic_ns: 5,
                }),
            ),
        ),
        ("recalled", Response::ok(2, ResponseBody::Recalled(vec![hit]))),
        (
            "remembered",
            Response::ok(
                3,
                ResponseBody::Remembered(RememberReport {
                    ids: vec![1, 2],
                    notes: vec![RememberNote {
                        input: 1,
                        chunk_ids: vec![2, 3],
                        duplicate: Some(DuplicateNote {
                            original: 1,
                            similarity: 0.8,
                            action: DuplicateAction::Linked,
                        }),
                    }],
                }),
            ),
        ),
        (
            "stats-report",
            Response::ok(
                4,
                ResponseBody::Stats(StatsReport {
                    counters: vec![Counter {
                        name: "memories".into(),
                        value: 2,
                    }],
                }),
            ),
        ),
        (
            "health-report",
            Response::ok(
                5,
                ResponseBody::Health(HealthReport {
                    serving: false,
                    uptime_s: 3,
                    version: "0.1.0".into(),
                    write_failure: Some("fdatasync failed".into()),
                    degraded: vec!["engine dense: circuit breaker open".into()],
                }),
            ),
        ),
        (
            "listed",
            Response::ok(
                7,
                ResponseBody::Listed(ListPage {
                    memories: vec![StoredMemory {
                        id: 8,
                        namespace: "demo".into(),
                        key: Some("caroline-food".into()),
                        text: "ramen".into(),
                        vector: Some(vec![0.5, -0.25]),
                        tags: vec![tag("who", "caroline")],
                        created_at_ms: 1_700_000_000_000,
                        importance: 1.0,
                        source: None,
                    }],
                    next: None,
                }),
            ),
        ),
        (
            "error",
            Response::error(6, ErrorCode::MalformedFrame, "invalid archive"),
        ),
    ];
    let tagged = |tag: u8, bytes: &[u8]| [&[tag][..], bytes].concat();
    let requests = requests.into_iter().map(|(name, body)| {
        let request = Request {
            request_id: 1,
            deadline_ns: 0,
            body,
        };
        (name, tagged(0, &wire::encode_to_vec(&request)))
    });
    let responses = responses
        .into_iter()
        .map(|(name, response)| (name, tagged(1, &wire::encode_to_vec(&response))));
    requests.chain(responses).collect()
}
