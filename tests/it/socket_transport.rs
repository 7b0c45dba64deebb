//! The socket transport against clients that control every byte and every
//! pause: a frame declared large but never sent, a client that never reads
//! its answers, a large request whose buffer must not stay pinned. Each is
//! cut off (or cleaned up) by the daemon, which goes on serving everyone else.
//!
//! The misbehaving sides are raw `UnixStream`s after a real handshake, so
//! the test decides exactly which bytes go out and when.

use std::io::{ErrorKind, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;

use nexus_client::Transport;
use nexus_client::wire::{ErrorCode, PingRequest, Request, RequestBody, Status, encode_to_vec};
use nexus_shm_protocol::PROTOCOL_VERSION;
use nexus_shm_protocol::handshake::{
    CLIENT_HELLO_BYTES, ClientHello, FLAG_SOCKET_TRANSPORT, SERVER_HELLO_BYTES, ServerHello,
};
use nexus_shm_protocol::layout::{FrameHeader, FrameKind};
use nexus_tests::{
    BOUNDED_WAIT, Daemon, RSS_TOLERANCE_BYTES, check_closed_by_daemon, check_rss_within_tolerance, error_code,
};

use crate::start;

/// Connections that each declare a maximal frame and stall: together far
/// more than `RSS_TOLERANCE_BYTES` if the daemon allocated up front.
const STALLED_FRAMES: usize = 6;
/// The daemon's default `max_frame_bytes` (8 MiB).
const MAX_FRAME_BYTES: u32 = 8 << 20;
/// Socket clients that each send one large request.
const LARGE_REQUESTS: usize = 8;
/// Payload of each large request: 4 MiB, well above `scratch_retain_bytes`.
const LARGE_PING_BYTES: usize = 4 << 20;

/// Before: the daemon zero-filled a buffer of the declared 8 MiB as soon as
/// it read the header, and waited for the rest for ever.
#[test]
fn a_frame_declared_large_but_never_sent_allocates_nothing_and_is_cut_off_after_the_stall_timeout() {
    let daemon = start(&["--stalled-client-timeout-ms", "500"]);
    daemon.idle_resources();
    let peak_before = peak_rss_bytes(&daemon);
    let mut streams: Vec<UnixStream> = (0..STALLED_FRAMES)
        .map(|i| {
            let mut stream = raw_socket_session(&daemon.socket_path());
            stream
                .write_all(&frame_header(i as u64, MAX_FRAME_BYTES))
                .expect("header");
            stream.write_all(&[0x5A; 10]).expect("the first 10 payload bytes");
            stream
        })
        .collect();
    // Each is closed without an answer once its frame stalled too long.
    streams.iter_mut().for_each(check_closed_by_daemon);
    assert_eq!(
        daemon.stats_counter("clients_disconnected_stalled"),
        STALLED_FRAMES as u64
    );
    // The peak RSS covers the whole time the frames were pending.
    let grown = peak_rss_bytes(&daemon).saturating_sub(peak_before);
    assert!(
        grown < RSS_TOLERANCE_BYTES,
        "the daemon's peak RSS grew by {} KiB for {STALLED_FRAMES} frames of which 10 bytes each arrived",
        grown / 1024
    );
    check_still_serving(&daemon);
}

/// Before: the daemon's flush waited for ever on a client that does not read.
#[test]
fn a_socket_client_that_never_reads_its_answers_is_disconnected() {
    let daemon = start(&["--stalled-client-timeout-ms", "500"]);
    let mut stream = raw_socket_session(&daemon.socket_path());
    stream.set_write_timeout(Some(BOUNDED_WAIT)).expect("set_write_timeout");
    let ping = request_frame(1, RequestBody::Ping(PingRequest { payload: Vec::new() }));
    // Pings until the daemon, its answers piling up unread, hangs up.
    let write_error = loop {
        if let Err(e) = stream.write_all(&ping) {
            break e;
        }
    };
    assert!(
        matches!(write_error.kind(), ErrorKind::BrokenPipe | ErrorKind::ConnectionReset),
        "the daemon hung up (a write timeout means it did not): {write_error}"
    );
    assert_eq!(daemon.stats_counter("clients_disconnected_stalled"), 1);
    check_still_serving(&daemon);
}

/// Before: a session kept the buffer of its largest request for its whole
/// life, so a few clients each sending one big batch pinned their size.
#[test]
fn a_large_request_on_the_socket_transport_does_not_pin_its_buffer() {
    let daemon = start(&[]);
    let clients: Vec<_> = (0..LARGE_REQUESTS)
        .map(|_| daemon.client_over(Transport::Socket))
        .collect();
    clients.iter().for_each(|client| {
        client.ping().expect("a small ping first");
    });
    let before = daemon.resources();
    let charged_before = daemon.stats_counter("memory_charged_bytes");
    for client in &clients {
        let body = RequestBody::Ping(PingRequest {
            payload: vec![0xA5; LARGE_PING_BYTES],
        });
        let answer = client.call(body, None).expect("a 4 MiB ping is answered");
        assert_eq!(error_code(&answer), None, "{:?}", answer.status);
    }
    daemon.wait_for_counter("memory_charged_bytes", "the large buffers are given back", |charged| {
        charged == charged_before
    });
    check_rss_within_tolerance(&daemon, before);
    clients.iter().for_each(|client| {
        client.ping().expect("still served");
    });
}

/// The budget charges a frame's buffer as it grows: a frame it cannot hold
/// is read past and answered Busy, and the connection goes on.
#[test]
fn a_frame_the_memory_budget_cannot_hold_is_answered_busy_and_the_connection_goes_on() {
    let daemon = start(&["--memory-budget-bytes", "4194304"]);
    let client = daemon.client_over(Transport::Socket);
    let body = RequestBody::Ping(PingRequest {
        payload: vec![0xA5; LARGE_PING_BYTES],
    });
    let answer = client.call(body, None).expect("the large ping is answered");
    match &answer.status {
        Status::Error { code, message } => {
            assert_eq!(*code, ErrorCode::Busy as u32, "{message}");
            assert!(message.contains("memory_budget_bytes"), "{message}");
        }
        other => panic!("a 4 MiB frame fit in a 4 MiB budget beside the observer: {other:?}"),
    }
    client
        .ping()
        .expect("the same connection is served after the refused frame");
    assert_eq!(daemon.stats_counter("refused_memory_budget"), 1);
}

/// A socket-transport session set up by hand: the hello sent, the welcome
/// read and checked. The stream is returned blocking, with no timeouts.
pub(crate) fn raw_socket_session(socket: &Path) -> UnixStream {
    let mut stream = UnixStream::connect(socket).unwrap_or_else(|e| panic!("connect {}: {e}", socket.display()));
    stream.set_read_timeout(Some(BOUNDED_WAIT)).expect("set_read_timeout");
    let hello = ClientHello {
        protocol_version: PROTOCOL_VERSION,
        flags: FLAG_SOCKET_TRANSPORT,
        request_ring_bytes: 0,
        response_ring_bytes: 0,
        name: "raw-socket".into(),
    };
    let bytes: [u8; CLIENT_HELLO_BYTES] = hello.encode();
    stream.write_all(&bytes).expect("sending the hello");
    let mut welcome = [0u8; SERVER_HELLO_BYTES];
    stream.read_exact(&mut welcome).expect("reading the welcome");
    let welcome = ServerHello::decode(&welcome).expect("a decodable welcome");
    assert_eq!(welcome.status, 0, "welcomed: {:?}", welcome.message);
    stream.set_read_timeout(None).expect("set_read_timeout");
    stream
}

/// The 16-byte header of a request frame declaring `len` payload bytes.
pub(crate) fn frame_header(request_id: u64, len: u32) -> [u8; 16] {
    FrameHeader {
        len,
        kind: FrameKind::Request as u16,
        flags: 0,
        request_id,
    }
    .to_le_bytes()
}

/// A whole request frame (header and archived request) for the socket transport.
pub(crate) fn request_frame(request_id: u64, body: RequestBody) -> Vec<u8> {
    let request = Request {
        request_id,
        deadline_ns: 0,
        body,
    };
    let payload = encode_to_vec(&request);
    let mut frame = frame_header(request_id, payload.len() as u32).to_vec();
    frame.extend_from_slice(&payload);
    frame
}

/// The daemon's peak resident set (VmHWM) so far.
fn peak_rss_bytes(daemon: &Daemon) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", daemon.pid())).expect("the daemon's status");
    let line = status
        .lines()
        .find(|line| line.starts_with("VmHWM:"))
        .expect("VmHWM in /proc/<pid>/status");
    let kib: u64 = line["VmHWM:".len()..]
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .expect("VmHWM in kB");
    kib * 1024
}

/// Both transports serve a well-behaved client.
#[track_caller]
pub(crate) fn check_still_serving(daemon: &Daemon) {
    daemon.client().ping().expect("a shared-memory client is served");
    (daemon.client_over(Transport::Socket).ping()).expect("a socket client is served");
}
