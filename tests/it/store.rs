//! The store's contract through the real client: bad input gets its own
//! error code and writes nothing; a key makes Remember an upsert (same id,
//! text replaced); Forget by namespace and by tags; all of it durable
//! across a SIGKILL and restart.

use nexus_client::Client;
use nexus_client::wire::{
    ErrorCode, FeedbackRequest, ForgetRequest, MemoryInput, RecallRequest, RememberRequest, RequestBody,
};
use nexus_tests::Daemon;
use nexus_tests::store::{MAX_K, check_refused, memory, recall, tag};

use crate::start;

/// `Limits::default()`: the values the refusals below sit just past.
const MAX_TEXT_BYTES: usize = 64 * 1024;
const MAX_TAGS: usize = 32;
const MAX_BATCH: usize = 10_000;

#[test]
fn each_bad_write_or_query_gets_its_own_error_and_nothing_is_written() {
    let daemon = start(&[]);
    let client = daemon.large_client();
    let first = with_vector(memory("bad", "the first vector fixes the dimension"), vec![0.5; 4]);
    let ids = client.remember(vec![first]).expect("the first vector");
    let before = store_counters(&daemon);

    let remember = |memories: Vec<MemoryInput>| RequestBody::Remember(RememberRequest { memories });
    let cases = [
        (
            "a vector of another dimension",
            remember(vec![with_vector(memory("bad", "three"), vec![0.5; 3])]),
            ErrorCode::DimensionMismatch,
        ),
        (
            "two dimensions in one batch",
            remember(vec![
                with_vector(memory("bad", "four"), vec![0.5; 4]),
                with_vector(memory("bad", "five"), vec![0.5; 5]),
            ]),
            ErrorCode::DimensionMismatch,
        ),
        (
            "a text over 64 KiB",
            remember(vec![memory("bad", &"x".repeat(MAX_TEXT_BYTES + 1))]),
            ErrorCode::InvalidArgument,
        ),
        (
            "33 tags",
            remember(vec![MemoryInput {
                tags: (0..=MAX_TAGS).map(|n| tag(&format!("k{n}"), "v")).collect(),
                ..memory("bad", "tagged")
            }]),
            ErrorCode::InvalidArgument,
        ),
        ("an empty batch", remember(vec![]), ErrorCode::InvalidArgument),
        (
            "a NaN in a vector",
            remember(vec![with_vector(memory("bad", "nan"), vec![0.5, f32::NAN, 0.5, 0.5])]),
            ErrorCode::InvalidArgument,
        ),
        (
            "a NaN importance",
            remember(vec![MemoryInput {
                importance: f32::NAN,
                ..memory("bad", "nan importance")
            }]),
            ErrorCode::InvalidArgument,
        ),
        (
            "an empty namespace",
            remember(vec![memory("", "nowhere")]),
            ErrorCode::InvalidArgument,
        ),
        (
            "a valid memory in a batch with a bad one",
            remember(vec![
                memory("bad", "fine"),
                memory("bad", &"x".repeat(MAX_TEXT_BYTES + 1)),
            ]),
            ErrorCode::InvalidArgument,
        ),
        (
            "10 001 memories in one batch",
            remember((0..=MAX_BATCH).map(|_| memory("b", "m")).collect()),
            ErrorCode::BatchTooLarge,
        ),
        (
            "feedback on an unknown id",
            RequestBody::Feedback(FeedbackRequest {
                memory_id: ids[0] + 1000,
                recall_request_id: 0,
                useful: true,
            }),
            ErrorCode::NotFound,
        ),
        (
            "recall with k = 1001",
            RequestBody::Recall(RecallRequest {
                namespace: "bad".into(),
                text: Some("vector".into()),
                k: MAX_K + 1,
                ..RecallRequest::default()
            }),
            ErrorCode::InvalidArgument,
        ),
        (
            "recall with a query vector of another dimension",
            RequestBody::Recall(RecallRequest {
                namespace: "bad".into(),
                vector: Some(vec![0.5; 3]),
                k: 5,
                ..RecallRequest::default()
            }),
            ErrorCode::DimensionMismatch,
        ),
    ];
    for (what, body, expected) in cases {
        let message = check_refused(&client, what, body, expected);
        assert!(!message.is_empty(), "{what}: the refusal explains itself");
        assert_eq!(store_counters(&daemon), before, "{what}: nothing was written");
    }
    let hits = recall(&client, "bad", "vector");
    assert_eq!(
        hits.iter().map(|h| h.id).collect::<Vec<_>>(),
        ids,
        "only the first memory exists"
    );
}

#[test]
fn with_dimension_set_the_first_vector_must_match_it() {
    let daemon = start(&["--dimension", "8"]);
    let client = daemon.client();
    let before = store_counters(&daemon);
    let body = RequestBody::Remember(RememberRequest {
        memories: vec![with_vector(memory("dim", "four"), vec![0.5; 4])],
    });
    check_refused(&client, "a 4-dimensional vector", body, ErrorCode::DimensionMismatch);
    assert_eq!(store_counters(&daemon), before, "nothing was written");
    client
        .remember(vec![with_vector(memory("dim", "eight"), vec![0.5; 8])])
        .expect("a vector of the configured dimension");
}

#[test]
fn the_same_key_twice_is_one_memory_with_the_second_text_and_it_survives_a_restart() {
    let mut daemon = start(&[]);
    let keyed = |namespace: &str, text: &str| MemoryInput {
        key: Some("profile".into()),
        ..memory(namespace, text)
    };
    let client = daemon.client();
    let first = client.remember(vec![keyed("upsert", "likes tea")]).expect("first");
    let second = client.remember(vec![keyed("upsert", "likes coffee")]).expect("second");
    assert_eq!(second, first, "the same key in the same namespace is the same memory");
    let elsewhere = client.remember(vec![keyed("other", "likes tea")]).expect("other");
    assert_ne!(elsewhere, first, "the same key in another namespace is another memory");
    check_texts(&daemon.client(), "upsert", &[(first[0], "likes coffee")]);

    daemon.restart();
    check_texts(&daemon.client(), "upsert", &[(first[0], "likes coffee")]);
    assert_eq!(daemon.stats_counter("memories"), 2);
    let again = daemon
        .client()
        .remember(vec![keyed("upsert", "likes water")])
        .expect("after the restart");
    assert_eq!(again, first, "the key still names the same memory after a restart");
    check_texts(&daemon.client(), "upsert", &[(first[0], "likes water")]);
}

#[test]
fn forget_by_namespace_and_by_tags_is_durable() {
    let mut daemon = start(&[]);
    let client = daemon.client();
    let red = |text: &str| MemoryInput {
        tags: vec![tag("color", "red")],
        ..memory("kept", text)
    };
    client
        .remember(vec![memory("gone", "a likes"), memory("gone", "b likes")])
        .expect("gone");
    let kept = client
        .remember(vec![red("c likes"), memory("kept", "d likes"), red("e likes")])
        .expect("kept");
    let red_elsewhere = client
        .remember(vec![MemoryInput {
            tags: vec![tag("color", "red")],
            ..memory("other", "f likes")
        }])
        .expect("other");

    assert_eq!(
        client
            .forget(ForgetRequest::Namespace("gone".into()))
            .expect("forget ns"),
        2
    );
    let by_tags = ForgetRequest::Tags {
        namespace: Some("kept".into()),
        tags: vec![tag("color", "red")],
    };
    assert_eq!(client.forget(by_tags).expect("forget tags"), 2);
    let check = |client: &Client| {
        check_texts(client, "gone", &[]);
        check_texts(client, "kept", &[(kept[1], "d likes")]);
        check_texts(client, "other", &[(red_elsewhere[0], "f likes")]);
    };
    check(&client);
    daemon.restart();
    check(&daemon.client());
    assert_eq!(daemon.stats_counter("memories"), 2);
}

/// The Stats that any write moves.
fn store_counters(daemon: &Daemon) -> (u64, u64) {
    (daemon.stats_counter("memories"), daemon.stats_counter("applied_lsn"))
}

fn with_vector(memory: MemoryInput, vector: Vec<f32>) -> MemoryInput {
    MemoryInput {
        vector: Some(vector),
        ..memory
    }
}

/// Checks a namespace's memories (recalled by the word they all share) by id and text.
#[track_caller]
fn check_texts(client: &Client, namespace: &str, expected: &[(u64, &str)]) {
    let hits = recall(client, namespace, "likes");
    let found: Vec<(u64, &str)> = hits.iter().map(|h| (h.id, h.text.as_str())).collect();
    assert_eq!(found, expected, "memories of {namespace}");
}

// Regression: a key's id stayed reserved after its memory was forgotten, so
// remembering the key again reused the forgotten id ("ids are never
// reused") until a restart, after which the same sequence gave a new id.
#[test]
fn a_key_remembered_again_after_its_memory_was_forgotten_gets_a_fresh_id() {
    let daemon = start(&[]);
    let client = daemon.client();
    let keyed = MemoryInput {
        key: Some("profile".into()),
        ..memory("reuse", "likes tea")
    };
    let forgotten = client.remember(vec![keyed.clone()]).expect("first");
    assert_eq!(client.forget(ForgetRequest::Ids(forgotten.clone())).expect("forget"), 1);
    let fresh = client.remember(vec![keyed]).expect("again");
    assert_ne!(fresh, forgotten, "the forgotten memory's id is not handed out again");
    check_texts(&client, "reuse", &[(fresh[0], "likes tea")]);
}
