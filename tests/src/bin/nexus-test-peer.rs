//! `nexus-test-peer`: a misbehaving client, run by the integration tests as a
//! separate process so that it can be killed with SIGKILL at a chosen moment
//! or run under another uid (`setpriv`).
//!
//! Usage: `nexus-test-peer ROLE SOCKET`, ROLE one of:
//!
//! - `ping`: connect, ping once, print the outcome, exit (run under `setpriv`);
//! - `hold-partial-frame`: start writing a frame into the request ring, print
//!   "writing", never publish it;
//! - `flood-then-die`, `flood-no-read`: submit pings without reading answers
//!   until both rings are full, print "flooding", then hold still (the test
//!   kills it, or waits for the daemon to drop it);
//! - `flood-keep-submitting`: the same, but keep retrying the submit, and
//!   print "disconnected" once the daemon drops it.
//!
//! Exit codes are part of the contract with `tests/it`: see [`exit`]. This
//! binary asserts nothing itself; the tests judge what the daemon did.

use std::io::Write;
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use nexus_client::{ClientError, ConnectOptions, Connection};
use nexus_shm_protocol::PROTOCOL_VERSION;
use nexus_shm_protocol::handshake::{ClientHello, SERVER_HELLO_BYTES, ServerHello, recv_with_fds};
use nexus_shm_protocol::layout::FrameKind;
use nexus_shm_protocol::segment::Segment;
use nexus_shm_protocol::wire::{PingRequest, Request, RequestBody};

/// Exit codes the tests check.
mod exit {
    /// The role's goal was reached (a pong; a disconnect observed).
    pub const OK: u8 = 0;
    /// Bad command line.
    pub const USAGE: u8 = 2;
    /// The daemon refused the handshake (`ClientError::Refused`).
    pub const REFUSED: u8 = 3;
    /// Any other client error.
    pub const CLIENT_ERROR: u8 = 4;
}

/// How long one flooding submit waits for room before it counts as "full".
/// Short, because a full request ring is the state the flooding roles want.
const FLOOD_SUBMIT_WAIT: Duration = Duration::from_millis(200);

/// Upper bound on the requests a flooding role submits before giving up on
/// filling the rings (they fill after a few hundred with the tests' ring sizes).
const MAX_FLOOD_REQUESTS: u32 = 1_000_000;

const USAGE: &str =
    "usage: nexus-test-peer ping|hold-partial-frame|flood-then-die|flood-no-read|flood-keep-submitting SOCKET";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [role, socket] = args.as_slice() else {
        eprintln!("{USAGE}");
        return ExitCode::from(exit::USAGE);
    };
    let socket = Path::new(socket);
    let code = match role.as_str() {
        "ping" => ping(socket),
        "hold-partial-frame" => hold_partial_frame(socket),
        "flood-then-die" | "flood-no-read" => flood_then_idle(socket),
        "flood-keep-submitting" => flood_keep_submitting(socket),
        _ => {
            eprintln!("{USAGE}");
            exit::USAGE
        }
    };
    ExitCode::from(code)
}

/// Connects, pings once, prints `pong`, `refused CODE: MESSAGE` or `error: ...`.
fn ping(socket: &Path) -> u8 {
    let connected = nexus_client::Client::connect_with(socket, options());
    match connected.and_then(|client| client.ping()) {
        Ok(_) => finish("pong", exit::OK),
        Err(ClientError::Refused { code, message }) => finish(&format!("refused {code}: {message}"), exit::REFUSED),
        Err(other) => finish(&format!("error: {other}"), exit::CLIENT_ERROR),
    }
}

/// Handshakes by hand, then starts writing a request frame into the ring and
/// never finishes it: the encoder prints "writing" and sleeps inside
/// `Producer::try_write`, so the frame is never published.
fn hold_partial_frame(socket: &Path) -> u8 {
    let (stream, fds) = match raw_handshake(socket) {
        Ok(done) => done,
        Err(e) => return finish(&format!("error: {e}"), exit::CLIENT_ERROR),
    };
    let Some(memfd) = fds.into_iter().next() else {
        return finish("error: no segment fd in the hello", exit::CLIENT_ERROR);
    };
    let segment = Segment::map(&memfd).expect("the daemon's segment maps");
    let (mut requests, _responses) = segment.client_ends().expect("fresh segment");
    let _ = requests.try_write(FrameKind::Request, 1, |slot: &mut [MaybeUninit<u8>]| {
        for byte in slot.iter_mut().take(64) {
            byte.write(0xAB);
        }
        say("writing");
        sleep_forever()
    });
    drop(stream);
    finish("error: the frame was published", exit::CLIENT_ERROR)
}

/// Fills the request ring (the daemon's answers fill the response ring first),
/// prints "flooding", then stays connected without reading or signalling.
fn flood_then_idle(socket: &Path) -> u8 {
    match flood(socket) {
        Ok(_connection) => {
            say("flooding");
            sleep_forever()
        }
        Err(e) => finish(&format!("error: {e}"), exit::CLIENT_ERROR),
    }
}

/// Like `flood-no-read`, but keeps trying to submit (as a real client that
/// retries on `Busy` would); prints "disconnected" once the daemon drops it.
fn flood_keep_submitting(socket: &Path) -> u8 {
    let mut connection = match flood(socket) {
        Ok(connection) => connection,
        Err(e) => return finish(&format!("error: {e}"), exit::CLIENT_ERROR),
    };
    say("flooding");
    loop {
        match submit_ping(&mut connection) {
            Ok(_) | Err(ClientError::Busy(_)) => continue,
            Err(ClientError::DaemonGone) => return finish("disconnected", exit::OK),
            Err(other) => return finish(&format!("error: {other}"), exit::CLIENT_ERROR),
        }
    }
}

/// Submits pings without reading answers until the request ring stays full.
fn flood(socket: &Path) -> Result<Connection, ClientError> {
    let mut connection = Connection::connect(socket, options())?;
    for _ in 0..MAX_FLOOD_REQUESTS {
        match submit_ping(&mut connection) {
            Ok(_) => {}
            Err(ClientError::Busy(_)) => return Ok(connection),
            Err(other) => return Err(other),
        }
    }
    Err(ClientError::Protocol("the rings never filled".into()))
}

fn submit_ping(connection: &mut Connection) -> Result<u64, ClientError> {
    let mut request = Request {
        request_id: 0,
        deadline_ns: 0,
        body: RequestBody::Ping(PingRequest::default()),
    };
    connection.submit(&mut request, Instant::now() + FLOOD_SUBMIT_WAIT)
}

/// Small rings, so the flooding roles fill them after a few hundred frames.
fn options() -> ConnectOptions {
    ConnectOptions {
        name: "nexus-test-peer".into(),
        request_ring_bytes: 4096,
        response_ring_bytes: 4096,
        timeout: Duration::from_secs(5),
        ..ConnectOptions::default()
    }
}

/// The client side of the handshake, done with the protocol crate alone so
/// the peer owns the raw ring ends (the client library never exposes them).
fn raw_handshake(socket: &Path) -> std::io::Result<(UnixStream, Vec<OwnedFd>)> {
    let mut stream = UnixStream::connect(socket)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let hello = ClientHello {
        protocol_version: PROTOCOL_VERSION,
        flags: 0,
        request_ring_bytes: 4096,
        response_ring_bytes: 4096,
        name: "nexus-test-peer".into(),
    };
    stream.write_all(&hello.encode())?;
    let mut bytes = [0u8; SERVER_HELLO_BYTES];
    let mut fds = Vec::new();
    let mut filled = 0;
    while filled < bytes.len() {
        let (n, mut received) = recv_with_fds(stream.as_fd(), &mut bytes[filled..])?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        filled += n;
        fds.append(&mut received);
    }
    let welcome = ServerHello::decode(&bytes).map_err(std::io::Error::other)?;
    if welcome.status != 0 {
        return Err(std::io::Error::other(format!(
            "refused {}: {}",
            welcome.status, welcome.message
        )));
    }
    Ok((stream, fds))
}

/// Prints one line to stdout, flushed at once: the test is waiting for it.
fn say(line: &str) {
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(stdout, "{line}");
    let _ = stdout.flush();
}

/// Prints the role's last line and returns the exit code that goes with it.
fn finish(line: &str, code: u8) -> u8 {
    say(line);
    code
}

/// Holds the current state until SIGKILL; the tests always end it that way.
fn sleep_forever() -> ! {
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}
