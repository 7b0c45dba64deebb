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
//!   print "disconnected" once the daemon drops it;
//! - `hostile-bell`: on 4 connections, publish a ping, then clear
//!   `O_NONBLOCK` on the daemon's bell and saturate its counter (what blocked a
//!   daemon worker for ever when the daemon still read and wrote shared
//!   eventfds), scribble on the futex words, print "armed", hold still;
//! - `hostile-cursors`: 40 times: handshake, write impossible cursors into
//!   both ring headers before the first request, ring the bell, wait for the
//!   daemon to close; print "closed N of 40";
//! - `socket-bytes`: after the handshake, write bytes on the socket; print
//!   "disconnected" once the daemon closes it;
//! - `bell-flood`: ring the bell over and over with nothing published; print
//!   "disconnected" once the daemon closes the connection.
//!
//! Exit codes are part of the contract with `tests/it`: see [`exit`]. This
//! binary asserts nothing itself; the tests judge what the daemon did.

use std::io::{Read, Write};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use nexus_client::{ClientError, ConnectOptions, Connection};
use nexus_shm_protocol::PROTOCOL_VERSION;
use nexus_shm_protocol::handshake::{ClientHello, SERVER_HELLO_BYTES, ServerHello, recv_with_fds};
use nexus_shm_protocol::layout::{FrameKind, REQUEST_RING_HEADER_OFFSET, RESPONSE_RING_HEADER_OFFSET};
use nexus_shm_protocol::segment::Segment;
use nexus_shm_protocol::wire::{PingRequest, Request, RequestBody};
use nix::fcntl::{FcntlArg, OFlag, fcntl};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

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

const USAGE: &str = "usage: nexus-test-peer ping|hold-partial-frame|flood-then-die|flood-no-read|\
                     flood-keep-submitting|hostile-bell|hostile-cursors|socket-bytes|bell-flood SOCKET";

/// Connections the `hostile-bell` role arms: more than the daemon's worker
/// threads, so one blocked call per worker would freeze every session.
const HOSTILE_BELL_CONNECTIONS: usize = 4;

/// Handshakes the `hostile-cursors` role attacks (the race with the
/// daemon's ring set-up was won in 20 of 33 tries against version 1).
const HOSTILE_CURSOR_TRIES: usize = 40;

/// How long a hostile role waits for the daemon to close its connection.
const CLOSE_WAIT: Duration = Duration::from_secs(10);

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
        "hostile-bell" => hostile_bell(socket),
        "hostile-cursors" => hostile_cursors(socket),
        "socket-bytes" => socket_bytes(socket),
        "bell-flood" => bell_flood(socket),
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

/// Publishes a ping on each of several connections, then makes each bell
/// blocking and full: a daemon that read or wrote it would block for ever.
fn hostile_bell(socket: &Path) -> u8 {
    let mut armed = Vec::new();
    for _ in 0..HOSTILE_BELL_CONNECTIONS {
        match arm_hostile_bell(socket) {
            Ok(connection) => armed.push(connection),
            Err(e) => return finish(&format!("error: {e}"), exit::CLIENT_ERROR),
        }
    }
    say("armed");
    sleep_forever()
}

fn arm_hostile_bell(socket: &Path) -> std::io::Result<RawConnection> {
    let connection = RawConnection::open(socket)?;
    let (mut requests, responses) = connection.segment.client_ends().map_err(std::io::Error::other)?;
    let ping = nexus_shm_protocol::wire::encode_to_vec(&ping_request(1));
    requests
        .try_write_bytes(FrameKind::Request, 1, &ping)
        .map_err(std::io::Error::other)?;
    let flags = fcntl(connection.bell.as_fd(), FcntlArg::F_GETFL)?;
    let blocking = OFlag::from_bits_truncate(flags) - OFlag::O_NONBLOCK;
    fcntl(connection.bell.as_fd(), FcntlArg::F_SETFL(blocking))?;
    nix::unistd::write(&connection.bell, &(u64::MAX - 1).to_ne_bytes())?;
    responses
        .consumer_sleeping_word()
        .store(0xdead_beef, std::sync::atomic::Ordering::Relaxed);
    requests
        .producer_waiting_word()
        .store(u32::MAX, std::sync::atomic::Ordering::Relaxed);
    Ok(connection)
}

/// Writes impossible cursors into a fresh segment before any request, many
/// times over; counts the connections the daemon closed.
fn hostile_cursors(socket: &Path) -> u8 {
    let mut closed = 0;
    for attempt in 0..HOSTILE_CURSOR_TRIES {
        let connection = match RawConnection::open(socket) {
            Ok(connection) => connection,
            Err(e) => return finish(&format!("error: {e}"), exit::CLIENT_ERROR),
        };
        let (head, tail) = HOSTILE_CURSORS[attempt % HOSTILE_CURSORS.len()];
        connection.scribble_cursors(head, tail);
        let _ = nix::unistd::write(&connection.bell, &1u64.to_ne_bytes());
        if connection.closed_by_daemon(CLOSE_WAIT) {
            closed += 1;
        }
    }
    finish(&format!("closed {closed} of {HOSTILE_CURSOR_TRIES}"), exit::OK)
}

/// (head, tail) an attacker writes into both ring headers: near the end of
/// the ring, unaligned, near 2^64, far ahead.
const HOSTILE_CURSORS: [(u64, u64); 5] = [
    (4096 - 8, 4096 - 8),
    (0, 4096 - 16),
    (u64::MAX - 15, u64::MAX - 15),
    (7, 7),
    (0, 1 << 40),
];

/// Writes on the socket after the handshake; a daemon that drained such bytes
/// 64 at a time would spend its time on them.
fn socket_bytes(socket: &Path) -> u8 {
    let mut connection = match RawConnection::open(socket) {
        Ok(connection) => connection,
        Err(e) => return finish(&format!("error: {e}"), exit::CLIENT_ERROR),
    };
    let _ = connection.stream.write_all(&[0x5A; 4096]);
    match connection.closed_by_daemon(CLOSE_WAIT) {
        true => finish("disconnected", exit::OK),
        false => finish("error: still connected", exit::CLIENT_ERROR),
    }
}

/// Rings the bell with nothing published until the daemon gives up on us.
fn bell_flood(socket: &Path) -> u8 {
    let connection = match RawConnection::open(socket) {
        Ok(connection) => connection,
        Err(e) => return finish(&format!("error: {e}"), exit::CLIENT_ERROR),
    };
    let deadline = Instant::now() + CLOSE_WAIT;
    while Instant::now() < deadline {
        for _ in 0..256 {
            let _ = nix::unistd::write(&connection.bell, &1u64.to_ne_bytes());
        }
        if connection.closed_by_daemon(Duration::ZERO) {
            return finish("disconnected", exit::OK);
        }
    }
    finish("error: still connected", exit::CLIENT_ERROR)
}

/// A connection made by hand: the socket, the mapped segment, the bell.
struct RawConnection {
    stream: UnixStream,
    segment: Arc<Segment>,
    bell: OwnedFd,
    memfd: OwnedFd,
}

impl RawConnection {
    fn open(socket: &Path) -> std::io::Result<Self> {
        let (stream, fds) = raw_handshake(socket)?;
        let Ok([memfd, bell]) = <[OwnedFd; 2]>::try_from(fds) else {
            return Err(std::io::Error::other("expected the segment and the bell"));
        };
        let segment = Segment::map(&memfd).map_err(std::io::Error::other)?;
        Ok(Self {
            stream,
            segment,
            bell,
            memfd,
        })
    }

    /// Writes `head`/`tail` into both ring headers, behind the ring ends' backs.
    fn scribble_cursors(&self, head: u64, tail: u64) {
        // SAFETY: a shared mapping of the memfd we hold, as long as the
        // segment; only this process's own view of hostile bytes is at stake.
        let mut map = unsafe { memmap2::MmapMut::map_mut(&self.memfd) }.expect("the segment maps again");
        for ring_header in [REQUEST_RING_HEADER_OFFSET, RESPONSE_RING_HEADER_OFFSET] {
            let at = ring_header as usize;
            map[at..at + 8].copy_from_slice(&tail.to_le_bytes());
            map[at + 128..at + 136].copy_from_slice(&head.to_le_bytes());
        }
    }

    /// True once the daemon closed its end (EOF), waiting at most `limit`.
    fn closed_by_daemon(&self, limit: Duration) -> bool {
        let mut fds = [PollFd::new(self.stream.as_fd(), PollFlags::POLLIN)];
        let timeout = PollTimeout::try_from(limit.as_millis().min(i32::MAX as u128) as i32).unwrap_or(PollTimeout::MAX);
        if !matches!(poll(&mut fds, timeout), Ok(n) if n > 0) {
            return false;
        }
        let mut byte = [0u8; 1];
        matches!((&self.stream).read(&mut byte), Ok(0) | Err(_))
    }
}

fn ping_request(request_id: u64) -> Request {
    Request {
        request_id,
        deadline_ns: 0,
        body: RequestBody::Ping(PingRequest::default()),
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
