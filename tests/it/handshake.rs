//! Faults at the handshake: garbage bytes, a wrong protocol version, a
//! socket closed half way, a client that says nothing, a uid that is not
//! allowed. Each gets a clear refusal (or a silent close where there is no
//! one to tell), and the daemon goes on serving everyone else.
//!
//! The handshake's codec itself is unit-tested and fuzzed in shm-protocol;
//! here the bytes go to a real daemon over a raw `UnixStream`.

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::path::Path;

use nexus_shm_protocol::PROTOCOL_VERSION;
use nexus_shm_protocol::handshake::{CLIENT_HELLO_BYTES, ClientHello};
use nexus_shm_protocol::wire::ErrorCode;
use nexus_tests::{Daemon, TestDir, check_closed_by_daemon, check_handshake_refused, check_released, describe_exit};

use crate::{BINARIES, start};

/// Refused peers in the uid test: the refusal races with the peer's hello,
/// so one attempt could pass by luck.
const REFUSED_ATTEMPTS: usize = 40;

#[test]
fn garbage_on_the_handshake_socket_is_refused_with_bad_handshake() {
    let daemon = start(&[]);
    let garbage: Vec<u8> = (0..CLIENT_HELLO_BYTES)
        .map(|i| (i as u8).wrapping_mul(37) ^ 0x5A)
        .collect();
    let mut bad_name_len = valid_hello_bytes();
    bad_name_len[24..26].copy_from_slice(&u16::MAX.to_le_bytes());
    let mut bad_utf8_name = valid_hello_bytes();
    bad_utf8_name[24..26].copy_from_slice(&4u16.to_le_bytes());
    bad_utf8_name[28..32].copy_from_slice(&[0xFF, 0xFE, 0xFD, 0xFC]);

    for (what, bytes) in [
        ("garbage", garbage),
        ("a name longer than allowed", bad_name_len.to_vec()),
        ("a name that is not UTF-8", bad_utf8_name.to_vec()),
    ] {
        let answer = check_handshake_refused(&daemon.socket_path(), &bytes, ErrorCode::BadHandshake);
        assert!(!answer.message.is_empty(), "{what}: the refusal explains itself");
    }
    assert_eq!(daemon.stats_counter("handshakes_refused"), 3);
    check_still_serving(&daemon);
}

#[test]
fn a_wrong_protocol_version_is_refused_naming_both_versions() {
    let daemon = start(&[]);
    let hello = ClientHello {
        protocol_version: 999,
        ..ClientHello::decode(&valid_hello_bytes()).expect("a valid hello")
    };
    let answer = check_handshake_refused(&daemon.socket_path(), &hello.encode(), ErrorCode::VersionMismatch);
    assert_eq!(
        answer.protocol_version, PROTOCOL_VERSION,
        "the refusal carries the daemon's version"
    );
    for version in [999, PROTOCOL_VERSION] {
        assert!(
            answer.message.contains(&format!("version {version}")),
            "the message names version {version}: {:?}",
            answer.message
        );
    }
    assert_eq!(daemon.stats_counter("handshakes_refused"), 1);
    check_still_serving(&daemon);
}

#[test]
fn a_socket_closed_mid_handshake_leaves_nothing_behind() {
    let daemon = start(&[]);
    let idle = daemon.idle_resources();
    let mut stream = UnixStream::connect(daemon.socket_path()).expect("connect");
    stream.write_all(&valid_hello_bytes()[..40]).expect("half a hello");
    drop(stream);
    daemon.wait_for_counter("handshakes_refused", "the half handshake is given up", |n| n == 1);
    check_released(&daemon, idle);
    check_still_serving(&daemon);
}

#[test]
fn a_client_that_never_sends_its_hello_is_dropped_after_the_handshake_timeout() {
    let daemon = start(&["--handshake-timeout-ms", "300"]);
    let mut stream = UnixStream::connect(daemon.socket_path()).expect("connect");
    // Nothing to answer, so the daemon closes without a ServerHello.
    check_closed_by_daemon(&mut stream);
    assert_eq!(daemon.stats_counter("handshakes_refused"), 1);
    check_still_serving(&daemon);
}

/// Runs the peer as uid 65534 through `setpriv`. The socket is 0666 and its
/// directory 0755, so only the daemon's uid check stands in the way; a
/// second daemon that allows 65534 (and root, the harness's own uid) proves
/// the peer could get through otherwise.
#[test]
fn a_peer_whose_uid_is_not_allowed_is_refused_at_the_handshake() {
    if let Some(reason) = why_setpriv_cannot_run() {
        println!("skipped: {reason}");
        return;
    }
    let as_nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"];

    // Several attempts: each must get the refusal in words, not a broken
    // pipe, whatever the interleaving of its hello and the daemon's answer.
    let strict = start_traversable(&[]);
    let outcomes: Vec<(Option<i32>, String)> = (0..REFUSED_ATTEMPTS)
        .map(|_| {
            let (status, line) = strict.peer_via(&as_nobody, "ping").wait_exit();
            (status.code(), line)
        })
        .collect();
    let refused = format!("refused {}:", ErrorCode::PermissionDenied as u32);
    let clear = |(code, line): &&(Option<i32>, String)| {
        *code == Some(3) && line.starts_with(&refused) && line.contains("uid 65534")
    };
    let unclear: Vec<_> = outcomes.iter().filter(|o| !clear(o)).collect();
    assert!(
        unclear.is_empty(),
        "{} of {REFUSED_ATTEMPTS} peers were not told \"{refused} ... uid 65534 ...\" (exit code, last line): {unclear:?}",
        unclear.len()
    );
    assert_eq!(strict.stats_counter("handshakes_refused"), REFUSED_ATTEMPTS as u64);
    check_still_serving(&strict);

    let lenient = start_traversable(&["--allow-uid", "0", "--allow-uid", "65534"]);
    let (status, line) = lenient.peer_via(&as_nobody, "ping").wait_exit();
    assert_eq!(
        (status.code(), line.as_str()),
        (Some(0), "pong"),
        "with uid 65534 allowed the same peer is served ({})",
        describe_exit(status)
    );
}

/// A ClientHello the daemon accepts, as bytes to corrupt.
fn valid_hello_bytes() -> [u8; CLIENT_HELLO_BYTES] {
    ClientHello {
        protocol_version: PROTOCOL_VERSION,
        flags: 0,
        request_ring_bytes: 4096,
        response_ring_bytes: 4096,
        name: "handshake-test".into(),
    }
    .encode()
}

/// A well-behaved client is served after whatever the test did.
#[track_caller]
fn check_still_serving(daemon: &Daemon) {
    daemon.client().ping().expect("a well-behaved client is still served");
}

/// A daemon whose socket other uids can reach (only its uid check refuses them).
fn start_traversable(extra_args: &[&str]) -> Daemon {
    let dir = TestDir::new();
    dir.make_traversable();
    let args: Vec<&str> = ["--socket-mode", "666"].iter().chain(extra_args).copied().collect();
    Daemon::start_in(BINARIES, dir, &args)
}

/// Why the uid test cannot run here, if it cannot.
fn why_setpriv_cannot_run() -> Option<String> {
    if !nix::unistd::geteuid().is_root() {
        return Some("running a peer as another uid needs root (setpriv --reuid)".into());
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    let found = std::env::split_paths(&path).any(|dir| Path::new(&dir).join("setpriv").is_file());
    (!found).then(|| "setpriv (util-linux) is not on PATH".into())
}
