//! Malformed frames from a connected client: a payload that fails rkyv
//! validation, a length beyond the maximum frame or beyond the published
//! bytes, an unknown kind. Each is answered with its own error code and the
//! connection stays usable; a client that keeps doing it is disconnected,
//! and other clients never notice.
//!
//! The ring's own checks are unit-tested in shm-protocol; here the frames
//! go through the real client's `send_raw_frame` to a real daemon.

use nexus_client::wire::{ErrorCode, PingRequest, Request, RequestBody, encode_to_vec};
use nexus_client::{ClientError, Connection, Transport};
use nexus_shm_protocol::layout::{FrameKind, max_frame_for_capacity};
use nexus_tests::{
    RawFrame, SMALL_RING_BYTES, check_call, check_daemon_gone, check_raw_frame, error_code, test_options,
};

use crate::start;

/// Payload bytes that are no rkyv archive of a `Request`.
const GARBAGE: [u8; 64] = [0xAB; 64];

/// A frame kind no one defined.
const UNKNOWN_KIND: u16 = 7;

/// Offenders in the last-answer test: whether the client sleeps before the
/// answer and the close arrive is timing, so one attempt proves little.
const DISCONNECT_ATTEMPTS: usize = 20;

#[test]
fn each_bad_frame_over_shared_memory_gets_its_own_error_code_and_the_ring_stays_usable() {
    let daemon = start(&[]);
    let mut connection = daemon.connection(test_options(Transport::SharedMemory));
    let max_frame = max_frame_for_capacity(u64::from(SMALL_RING_BYTES)) as u32;
    let ping = ping_archive();
    let truncated = &ping[..ping.len() / 2];
    let request = FrameKind::Request as u16;
    let cases = [
        (frame(request, 101, &GARBAGE), ErrorCode::MalformedFrame),
        (frame(request, 102, truncated), ErrorCode::MalformedFrame),
        (frame(UNKNOWN_KIND, 103, &ping), ErrorCode::UnknownFrameKind),
        (
            frame(FrameKind::Response as u16, 104, &ping),
            ErrorCode::UnknownFrameKind,
        ),
        (
            declaring(request, 105, max_frame + 1, &GARBAGE[..16]),
            ErrorCode::FrameTooLarge,
        ),
        (
            declaring(request, 106, u32::MAX, &GARBAGE[..16]),
            ErrorCode::FrameTooLarge,
        ),
        (declaring(request, 107, 1000, &GARBAGE[..16]), ErrorCode::FrameOverrun),
        // A wrap marker with nothing published after it.
        (frame(FrameKind::Wrap as u16, 108, &[]), ErrorCode::FrameOverrun),
    ];
    for (bad, expected) in cases {
        check_raw_frame(&mut connection, bad, expected);
        check_call(&mut connection, ping_body(), None);
    }
    assert_eq!(daemon.stats_counter("frames_rejected"), cases.len() as u64);
    assert_eq!(daemon.stats_counter("clients_disconnected_bad_frames"), 0);
}

#[test]
fn each_bad_frame_over_the_socket_gets_its_own_error_code() {
    let daemon = start(&[]);
    let mut connection = daemon.connection(test_options(Transport::Socket));
    let request = FrameKind::Request as u16;
    check_raw_frame(
        &mut connection,
        frame(request, 201, &GARBAGE),
        ErrorCode::MalformedFrame,
    );
    check_call(&mut connection, ping_body(), None);
    check_raw_frame(
        &mut connection,
        frame(UNKNOWN_KIND, 202, &ping_archive()),
        ErrorCode::UnknownFrameKind,
    );
    check_call(&mut connection, ping_body(), None);
    // A stream cannot skip a length it will never read: answered, then closed.
    let oversize = declaring(request, 203, u32::MAX, &GARBAGE[..16]);
    check_raw_frame(&mut connection, oversize, ErrorCode::FrameTooLarge);
    check_daemon_gone(call_ping(&mut connection));
    assert_eq!(daemon.stats_counter("frames_rejected"), 3);
    daemon.client().ping().expect("other clients are served");
}

#[test]
fn a_client_that_keeps_sending_bad_frames_over_shared_memory_is_disconnected() {
    check_repeat_offender_is_disconnected(Transport::SharedMemory);
}

#[test]
fn a_client_that_keeps_sending_bad_frames_over_the_socket_is_disconnected() {
    check_repeat_offender_is_disconnected(Transport::Socket);
}

/// With `--max-bad-frames 3`, three bad frames are answered and forgiven;
/// the fourth is answered (the client learns why) and ends the connection.
/// A bystander is served before, between and after.
#[track_caller]
fn check_repeat_offender_is_disconnected(transport: Transport) {
    let daemon = start(&["--max-bad-frames", "3"]);
    let bystander = daemon.client();
    let mut offender = daemon.connection(test_options(transport));
    let request = FrameKind::Request as u16;
    for id in 1..=3 {
        check_raw_frame(&mut offender, frame(request, id, &GARBAGE), ErrorCode::MalformedFrame);
        bystander.ping().expect("the bystander is served");
    }
    check_call(&mut offender, ping_body(), None);

    offender
        .send_raw_frame(request, 4, GARBAGE.len() as u32, &GARBAGE)
        .expect("publishing the fourth bad frame");
    if transport == Transport::Socket {
        offender.flush().expect("sending the fourth bad frame");
    }
    daemon.wait_for_counter("clients_disconnected_bad_frames", "the offender is disconnected", |n| {
        n == 1
    });
    let last = offender
        .recv(None)
        .expect("the answer written before closing")
        .to_owned_response();
    assert_eq!(last.request_id, 4, "the last answer is to the fourth bad frame");
    assert_eq!(
        error_code(&last),
        Some(ErrorCode::MalformedFrame as u32),
        "the last answer says why"
    );
    check_daemon_gone(call_ping(&mut offender));
    bystander.ping().expect("the bystander is still served");
    daemon.wait_for_counter("connections_open", "only the bystander and the observer remain", |n| {
        n == 2
    });
}

/// The answer that ends a connection ("why you are disconnected") is
/// written before the daemon closes, so the client must read it before it
/// reports `DaemonGone`, even when it was asleep waiting and both arrive
/// together. Several offenders, since one may pass by the luck of timing.
#[test]
fn the_answer_written_before_a_disconnect_reaches_a_waiting_client() {
    let daemon = start(&["--max-bad-frames", "0"]);
    let outcomes: Vec<String> = (0..DISCONNECT_ATTEMPTS)
        .map(|_| {
            let mut offender = daemon.connection(test_options(Transport::SharedMemory));
            offender
                .send_raw_frame(FrameKind::Request as u16, 1, GARBAGE.len() as u32, &GARBAGE)
                .expect("publishing a bad frame");
            match offender.recv(None) {
                Ok(answer) => format!("{:?}", error_code(&answer.to_owned_response())),
                Err(error) => format!("{error:?}"),
            }
        })
        .collect();
    let expected = format!("{:?}", Some(ErrorCode::MalformedFrame as u32));
    let lost = outcomes.iter().filter(|outcome| **outcome != expected).count();
    assert_eq!(
        lost, 0,
        "{lost} of {DISCONNECT_ATTEMPTS} last answers were lost: {outcomes:?}"
    );
    assert_eq!(
        daemon.stats_counter("clients_disconnected_bad_frames"),
        DISCONNECT_ATTEMPTS as u64
    );
}

fn frame(kind: u16, request_id: u64, payload: &[u8]) -> RawFrame<'_> {
    declaring(kind, request_id, payload.len() as u32, payload)
}

fn declaring(kind: u16, request_id: u64, declared_len: u32, payload: &[u8]) -> RawFrame<'_> {
    RawFrame {
        kind,
        request_id,
        declared_len,
        payload,
    }
}

fn ping_body() -> RequestBody {
    RequestBody::Ping(PingRequest::default())
}

/// A valid archived Ping request, to send under a wrong kind or truncated.
fn ping_archive() -> Vec<u8> {
    let request = Request {
        request_id: 0,
        deadline_ns: 0,
        body: ping_body(),
    };
    encode_to_vec(&request).to_vec()
}

fn call_ping(connection: &mut Connection) -> Result<(), ClientError> {
    let mut request = Request {
        request_id: 0,
        deadline_ns: 0,
        body: ping_body(),
    };
    connection.call(&mut request, None).map(drop)
}
