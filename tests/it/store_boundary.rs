//! The store at the trust boundary (issue 7): what a client sends cannot
//! stall other clients, split a key into two memories, grow the WAL without
//! bound, hide a failed WAL, hang shutdown, or get an error about something
//! it did not send.
//!
//! Each test performs one scenario against a real `nexusd-it`; faults come
//! through `NEXUS_FAULT_INJECT` (ENOSPC, a failed or hung fdatasync).

use nexus_client::wire::{ErrorCode, ForgetRequest, RecallRequest, RequestBody};
use nexus_tests::store::check_refused;

use crate::start;

/// `Limits::default().max_forget_ids`.
const MAX_FORGET_IDS: usize = 100_000;

// Regression (issue 7, scenario 12): a Forget with too many ids was refused
// as "the batch has N memories", and a bad query vector as "memory 0".
#[test]
fn refusals_name_what_the_client_sent_ids_of_a_forget_and_the_query_vector() {
    let daemon = start(&[]);
    let client = daemon.large_client();
    client
        .remember(vec![nexus_tests::store::memory("named", "a memory to forget by id")])
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
        .remember(vec![nexus_client::wire::MemoryInput {
            vector: Some(vec![0.5; 4]),
            ..nexus_tests::store::memory("named", "four")
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
