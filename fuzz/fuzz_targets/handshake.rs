//! Fuzzes the handshake decoders, the first bytes the daemon reads from a peer
//! (`ClientHello::decode`) and the first the client reads (`ServerHello::decode`).
//!
//! Input: one byte choosing the message (even: ClientHello, odd: ServerHello), then
//! its fixed-size bytes (zero-padded). Seeds are valid hellos, so mutations start
//! past the magic. Besides "never panics": a decoded hello encodes to bytes that
//! decode to the same hello.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nexus_fuzz::{Input, write_seeds_if_asked};
use nexus_shm_protocol::handshake::{
    CLIENT_HELLO_BYTES, ClientHello, FLAG_SOCKET_TRANSPORT, SERVER_HELLO_BYTES, ServerHello,
};
use nexus_shm_protocol::wire::ErrorCode;

fuzz_target!(init: write_seeds_if_asked(seeds, run), |bytes: &[u8]| {
    run(bytes);
});

/// Decodes one hello; true when it decoded.
fn run(bytes: &[u8]) -> bool {
    let mut input = Input::new(bytes);
    match input.u8() % 2 {
        0 => client_hello(&padded(input.rest())),
        _ => server_hello(&padded(input.rest())),
    }
}

fn client_hello(bytes: &[u8; CLIENT_HELLO_BYTES]) -> bool {
    let Ok(hello) = ClientHello::decode(bytes) else {
        return false;
    };
    assert_eq!(ClientHello::decode(&hello.encode()).as_ref(), Ok(&hello));
    true
}

fn server_hello(bytes: &[u8; SERVER_HELLO_BYTES]) -> bool {
    let Ok(hello) = ServerHello::decode(bytes) else {
        return false;
    };
    let again = ServerHello::decode(&hello.encode()).expect("an encoded hello decodes");
    // The message may differ: invalid UTF-8 decodes lossily, which can lengthen it
    // past what the encoding keeps. Every other field must survive.
    assert_eq!(
        (again.status, again.segment_bytes, again.connection_id),
        (hello.status, hello.segment_bytes, hello.connection_id)
    );
    assert_eq!(
        (
            again.request_ring_bytes,
            again.response_ring_bytes,
            again.max_frame_bytes
        ),
        (
            hello.request_ring_bytes,
            hello.response_ring_bytes,
            hello.max_frame_bytes
        )
    );
    true
}

fn padded<const N: usize>(bytes: &[u8]) -> [u8; N] {
    let mut out = [0u8; N];
    let len = bytes.len().min(N);
    out[..len].copy_from_slice(&bytes[..len]);
    out
}

fn seeds() -> Vec<(&'static str, Vec<u8>)> {
    let client = |name: &str, flags| ClientHello {
        protocol_version: nexus_shm_protocol::PROTOCOL_VERSION,
        flags,
        request_ring_bytes: 1 << 20,
        response_ring_bytes: 1 << 16,
        name: name.into(),
    };
    let granted = ServerHello {
        segment_bytes: 1 << 21,
        request_ring_bytes: 1 << 20,
        response_ring_bytes: 1 << 20,
        max_frame_bytes: 1 << 19,
        connection_id: 7,
        status: 0,
        ..ServerHello::refusal(ErrorCode::VersionMismatch, "")
    };
    let refusal = ServerHello::refusal(ErrorCode::VersionMismatch, "client v2, daemon v1: upgrade nexusd");
    let tagged = |tag: u8, bytes: &[u8]| [&[tag][..], bytes].concat();
    vec![
        ("client", tagged(0, &client("agent-7", 0).encode())),
        (
            "client-socket-utf8",
            tagged(0, &client("agent-ü-ß-语", FLAG_SOCKET_TRANSPORT).encode()),
        ),
        ("client-long-name", tagged(0, &client(&"n".repeat(64), 0).encode())),
        ("server-granted", tagged(1, &granted.encode())),
        ("server-refusal", tagged(1, &refusal.encode())),
    ]
}
