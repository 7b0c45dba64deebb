//! One connection to nexusd, used from one thread at a time (`&mut self`).
//!
//! Requests are serialized straight into the request ring; answers are read
//! in place from the response ring through a [`ResponseGuard`] that releases
//! the frame when dropped. Waiting follows the ring's flag protocol: announce
//! sleep, re-check, then sleep on the flag word itself (a futex the daemon
//! wakes), checking the socket for the daemon's EOF between slices of the wait.
//! The daemon's bell is rung by the first request published after the daemon
//! announced sleep (its flag, swapped back, makes that one syscall per sleep,
//! never one per request), so its wake-up overlaps our work on the answers
//! still to read; `flush` and a wait check once more. The socket transport (the benchmark baseline)
//! offers the same calls over the Unix stream.
//!
//! The daemon is not trusted blindly either: its uid is checked
//! (SO_PEERCRED), the segment must be sealed before it is mapped, every answer
//! is validated before it is read, and a call's deadline bounds its wait even
//! while answers to other requests keep arriving.

use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nexus_shm_protocol::handshake::{
    ClientHello, FLAG_SOCKET_TRANSPORT, HANDSHAKE_FDS, SERVER_HELLO_BYTES, ServerHello, peer_credentials, recv_with_fds,
};
use nexus_shm_protocol::layout::{FrameHeader, FrameKind};
use nexus_shm_protocol::ring::{Consumer, Frame, Producer, RingError};
use nexus_shm_protocol::segment::Segment;
use nexus_shm_protocol::wake::{Bell, futex_wait};
use nexus_shm_protocol::wire::{ArchivedResponse, ErrorCode, Request, access_response, encode_into, encode_to_vec};
use nexus_shm_protocol::{PROTOCOL_VERSION, monotonic_now_ns};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use rkyv::util::AlignedVec;
use std::sync::atomic::{AtomicU32, Ordering};

use crate::error::ClientError;

/// Which path frames take after the handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Transport {
    /// The shared-memory rings (the product).
    #[default]
    SharedMemory,
    /// Frames over the Unix socket (the benchmark baseline).
    Socket,
}

/// How to connect.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    /// Shown in the daemon's logs.
    pub name: String,
    /// Request-ring size to ask for (0: the daemon's default).
    pub request_ring_bytes: u32,
    /// Response-ring size to ask for (0: the daemon's default).
    pub response_ring_bytes: u32,
    /// Timeout of a call when none is given, and of the handshake.
    pub timeout: Duration,
    /// Frame path.
    pub transport: Transport,
    /// Opt-in busy-wait before sleeping for an answer (0: never). Only worth
    /// it with spare cores.
    pub spin: Duration,
    /// The uid nexusd must run as (checked with SO_PEERCRED before anything
    /// is sent). `None`: the uid that owns the socket file, so a process of
    /// another user answering on a path we were given is refused. Default:
    /// `$NEXUS_DAEMON_UID` when set (for a daemon under its own system user).
    pub daemon_uid: Option<u32>,
}

/// Environment variable with the uid nexusd is expected to run as.
pub const DAEMON_UID_ENV: &str = "NEXUS_DAEMON_UID";

impl Default for ConnectOptions {
    fn default() -> Self {
        Self {
            name: std::env::args().next().unwrap_or_else(|| "nexus-client".into()),
            request_ring_bytes: 0,
            response_ring_bytes: 0,
            timeout: Duration::from_secs(5),
            transport: Transport::SharedMemory,
            spin: Duration::ZERO,
            daemon_uid: std::env::var(DAEMON_UID_ENV)
                .ok()
                .and_then(|uid| uid.trim().parse().ok()),
        }
    }
}

/// A connection. Not `Sync`: use one per thread, or `Client` to share one.
pub struct Connection {
    socket: UnixStream,
    path: PathBuf,
    options: ConnectOptions,
    frames: Frames,
    next_request_id: u64,
    max_frame_bytes: u64,
    broken: bool,
    clock: ClockBase,
}

/// Where a connection's request ids start: a value unlikely to be any
/// other connection's, so an id also names a recall across processes
/// (`nexus recall` in one process, `nexus feedback --recall ID` in the
/// next: the daemon keeps recent recalls by request id). Mixed from the
/// time, the pid and a per-process counter; never 0.
fn first_request_id() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static CONNECTIONS: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let seed = nanos ^ (u64::from(std::process::id()) << 40) ^ CONNECTIONS.fetch_add(1, Ordering::Relaxed);
    // splitmix64's finaliser, kept to 53 bits so the id survives JSON
    // numbers (a double's mantissa); a connection counts up from it in the
    // low 20 bits, the 33 above them stay its own.
    let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    (((z ^ (z >> 31)) >> 11) & !((1 << 20) - 1)) | 1
}

/// `Instant` and the daemon's CLOCK_MONOTONIC nanoseconds are the same clock
/// on Linux; one pair of readings at connect time converts every deadline
/// after it, instead of two clock reads per request (~50 ns each on a VM).
#[derive(Debug, Clone, Copy)]
struct ClockBase {
    instant: Instant,
    monotonic_ns: u64,
}

impl ClockBase {
    fn now() -> Self {
        Self {
            instant: Instant::now(),
            monotonic_ns: monotonic_now_ns(),
        }
    }

    /// `at` as CLOCK_MONOTONIC nanoseconds.
    fn monotonic_ns(&self, at: Instant) -> u64 {
        let since = at.saturating_duration_since(self.instant).as_nanos();
        self.monotonic_ns.saturating_add(since.min(u128::from(u64::MAX)) as u64)
    }
}

enum Frames {
    Shm(ShmFrames),
    Socket(SocketFrames),
}

struct ShmFrames {
    requests: Producer,
    responses: Consumer,
    /// The daemon's bell (an eventfd it awaits and never reads).
    bell: Bell,
    /// Requests published since the daemon was last offered a wake-up.
    unsignalled: bool,
}

/// How long one futex sleep lasts before the client looks whether the daemon
/// is still there: a killed daemon wakes no one, so this bounds how late a
/// waiting call notices `DaemonGone`.
const DAEMON_CHECK_SLICE: Duration = Duration::from_millis(20);

struct SocketFrames {
    outgoing: Vec<u8>,
    incoming: AlignedVec<16>,
}

/// An answer read in place. Dereferences to the archived response; the
/// frame goes back to the ring when the guard drops.
pub struct ResponseGuard<'a> {
    connection: &'a mut Connection,
    frame: Option<Frame>,
}

impl Connection {
    /// Connects and completes the handshake.
    pub fn connect(path: impl AsRef<Path>, options: ConnectOptions) -> Result<Self, ClientError> {
        let path = path.as_ref().to_path_buf();
        let socket = UnixStream::connect(&path).map_err(|source| ClientError::Connect {
            path: path.clone(),
            source,
        })?;
        socket.set_read_timeout(Some(options.timeout))?;
        socket.set_write_timeout(Some(options.timeout))?;
        check_daemon_uid(&socket, &path, options.daemon_uid)?;
        let hello = ClientHello {
            protocol_version: PROTOCOL_VERSION,
            flags: if options.transport == Transport::Socket {
                FLAG_SOCKET_TRANSPORT
            } else {
                0
            },
            request_ring_bytes: options.request_ring_bytes,
            response_ring_bytes: options.response_ring_bytes,
            name: options.name.clone(),
        };
        let sent = (&socket).write_all(&hello.encode()).map_err(handshake_io);
        // Even when our hello could not be written, the daemon may have
        // answered first (a refusal) and closed: that answer is the better error.
        let (welcome, fds) = match (read_server_hello(&socket), sent) {
            (Ok(answer), Ok(())) => answer,
            (Err(refusal @ (ClientError::Refused { .. } | ClientError::VersionMismatch { .. })), _) => {
                return Err(refusal);
            }
            (_, Err(write_error)) => return Err(write_error),
            (Err(read_error), Ok(())) => return Err(read_error),
        };
        let frames = match options.transport {
            Transport::SharedMemory => Frames::Shm(map_segment(&welcome, fds)?),
            Transport::Socket => Frames::Socket(SocketFrames {
                outgoing: Vec::with_capacity(4096),
                incoming: AlignedVec::new(),
            }),
        };
        Ok(Self {
            socket,
            path,
            options,
            frames,
            next_request_id: first_request_id(),
            max_frame_bytes: u64::from(welcome.max_frame_bytes),
            broken: false,
            clock: ClockBase::now(),
        })
    }

    /// A new connection with the same path and options.
    pub fn reconnect(&self) -> Result<Self, ClientError> {
        Self::connect(&self.path, self.options.clone())
    }

    /// The default call timeout.
    pub fn timeout(&self) -> Duration {
        self.options.timeout
    }

    /// Sends `request` and waits for its answer (answers to earlier requests
    /// that timed out are skipped).
    pub fn call(&mut self, request: &mut Request, timeout: Option<Duration>) -> Result<ResponseGuard<'_>, ClientError> {
        let timeout = timeout.unwrap_or(self.options.timeout);
        let deadline = Instant::now() + timeout;
        let id = self.submit(request, deadline)?;
        self.flush()?;
        let frame = loop {
            let (frame, answer_id) = self.next_frame(deadline, timeout)?;
            if answer_id == id {
                break frame;
            }
            // A late answer to a call that already timed out: drop it. The
            // deadline still holds while such answers keep coming.
            self.release(frame)?;
            if Instant::now() >= deadline {
                return Err(ClientError::Timeout(timeout));
            }
        };
        self.guard(frame)
    }

    /// Queues `request` (its id and deadline are set here) without waiting
    /// for the answer: the pipelining half of `call`. Returns the request id.
    pub fn submit(&mut self, request: &mut Request, deadline: Instant) -> Result<u64, ClientError> {
        self.usable()?;
        request.request_id = self.next_request_id;
        self.next_request_id = self.next_request_id.wrapping_add(1).max(1);
        request.deadline_ns = self.clock.monotonic_ns(deadline);
        let max = self.max_frame_bytes;
        let result = match &mut self.frames {
            Frames::Shm(shm) => shm.submit(request, deadline, &self.socket, max),
            Frames::Socket(socket) => socket.submit(request, max),
        };
        self.note(result).map(|()| request.request_id)
    }

    /// Makes submitted requests reach the daemon: writes the queued frames
    /// (socket transport) or wakes the daemon if it sleeps (shared memory,
    /// where `submit` already published them). `call` and `recv` flush by
    /// themselves before they wait.
    pub fn flush(&mut self) -> Result<(), ClientError> {
        let result = match &mut self.frames {
            Frames::Socket(socket) => {
                let written = (&self.socket).write_all(&socket.outgoing).map_err(gone_or_io);
                socket.outgoing.clear();
                written
            }
            Frames::Shm(shm) => shm.wake_daemon_if_asleep(),
        };
        self.note(result)
    }

    /// The next answer in arrival order (pipelining), within `timeout`.
    /// Requests still unflushed are flushed before any wait.
    pub fn recv(&mut self, timeout: Option<Duration>) -> Result<ResponseGuard<'_>, ClientError> {
        let timeout = timeout.unwrap_or(self.options.timeout);
        if matches!(self.frames, Frames::Socket(_)) {
            self.flush()?;
        }
        self.usable()?;
        // An answer already there costs no clock read (pipelining's common case).
        if let Frames::Shm(shm) = &self.frames
            && let Ok(Some(frame)) = shm.responses.peek()
        {
            return self.guard(Some(frame));
        }
        let (frame, _) = self.next_frame(Instant::now() + timeout, timeout)?;
        self.guard(frame)
    }

    /// Publishes a frame as given, even a malformed one: `declared_len` may
    /// differ from `payload.len()` and `kind` may be anything. For protocol
    /// tests and fuzzing of the daemon; never needed by applications.
    pub fn send_raw_frame(
        &mut self,
        kind: u16,
        request_id: u64,
        declared_len: u32,
        payload: &[u8],
    ) -> Result<(), ClientError> {
        self.usable()?;
        match &mut self.frames {
            Frames::Shm(shm) => {
                let written = shm
                    .requests
                    .write_raw_for_tests(kind, request_id, declared_len, payload);
                if !written.map_err(|e| ClientError::Protocol(e.to_string()))? {
                    return Err(ClientError::Busy(Duration::ZERO));
                }
                shm.unsignalled = true;
                shm.wake_daemon_if_asleep()
            }
            Frames::Socket(socket) => {
                let header = FrameHeader {
                    len: declared_len,
                    kind,
                    flags: 0,
                    request_id,
                };
                socket.outgoing.extend_from_slice(&header.to_le_bytes());
                socket.outgoing.extend_from_slice(payload);
                Ok(())
            }
        }
    }

    fn next_frame(&mut self, deadline: Instant, timeout: Duration) -> Result<(Option<Frame>, u64), ClientError> {
        self.usable()?;
        let spin = self.options.spin;
        let result = match &mut self.frames {
            Frames::Shm(shm) => shm
                .next_frame(deadline, timeout, spin, &self.socket)
                .map(|f| (Some(f), f.request_id)),
            Frames::Socket(socket) => socket
                .next_frame(deadline, timeout, &self.socket, self.max_frame_bytes)
                .map(|id| (None, id)),
        };
        self.note(result)
    }

    fn guard(&mut self, frame: Option<Frame>) -> Result<ResponseGuard<'_>, ClientError> {
        // Validate once here so the guard's Deref cannot fail.
        if let Err(e) = access_response(self.payload(frame.as_ref())) {
            self.release(frame)?;
            self.broken = true;
            return Err(ClientError::Protocol(format!("invalid answer from nexusd: {e}")));
        }
        Ok(ResponseGuard {
            connection: self,
            frame,
        })
    }

    fn payload(&self, frame: Option<&Frame>) -> &[u8] {
        match (&self.frames, frame) {
            // SAFETY: the daemon never writes a published frame before we
            // release it (it only writes free space), and the slice does not
            // outlive the guard, which releases the frame on drop.
            (Frames::Shm(shm), Some(frame)) => unsafe { shm.responses.payload_in_place(frame) },
            (Frames::Socket(socket), _) => &socket.incoming,
            (Frames::Shm(_), None) => &[],
        }
    }

    fn release(&mut self, frame: Option<Frame>) -> Result<(), ClientError> {
        if let (Frames::Shm(shm), Some(frame)) = (&mut self.frames, frame) {
            shm.responses.release(&frame);
            if shm.responses.producer_needs_wake() {
                shm.bell.ring()?;
            }
        }
        Ok(())
    }

    fn usable(&self) -> Result<(), ClientError> {
        if self.broken {
            Err(ClientError::DaemonGone)
        } else {
            Ok(())
        }
    }

    /// Marks the connection broken after a fatal error.
    fn note<T>(&mut self, result: Result<T, ClientError>) -> Result<T, ClientError> {
        if let Err(e) = &result
            && e.is_fatal()
        {
            self.broken = true;
        }
        result
    }
}

impl ShmFrames {
    fn submit(
        &mut self,
        request: &Request,
        deadline: Instant,
        socket: &UnixStream,
        max: u64,
    ) -> Result<(), ClientError> {
        loop {
            let written = self.requests.try_write(FrameKind::Request, request.request_id, |slot| {
                encode_into(request, slot)
            });
            match written {
                Ok(Some(_)) => break,
                Ok(None) => self.wait_for_room(deadline, socket)?,
                Err(RingError::FrameTooLarge { .. }) => return Err(ClientError::FrameTooLarge { max }),
                Err(e) => return Err(ClientError::Protocol(e.to_string())),
            }
        }
        self.unsignalled = true;
        // Eager: a daemon that sleeps is woken by the first request after it
        // slept, so its wake-up overlaps our own work on the next answers.
        self.wake_daemon_if_asleep()
    }

    /// Offers the daemon a wake-up for what was published since the last
    /// one: only if it announced sleep (one per sleep, not per request).
    fn wake_daemon_if_asleep(&mut self) -> Result<(), ClientError> {
        if std::mem::take(&mut self.unsignalled) && self.requests.consumer_needs_wake() {
            self.bell.ring()?;
        }
        Ok(())
    }

    fn wait_for_room(&mut self, deadline: Instant, socket: &UnixStream) -> Result<(), ClientError> {
        let seen_free = self
            .requests
            .free_bytes()
            .map_err(|e| ClientError::Protocol(e.to_string()))?;
        // The daemon may be asleep with our earlier frames unread: make sure it is not.
        self.wake_daemon_if_asleep()?;
        let now = Instant::now();
        if now >= deadline {
            return Err(ClientError::Busy(Duration::ZERO));
        }
        if self.requests.prepare_wait_for_space(seen_free) {
            let waited = wait_on(self.requests.producer_waiting_word(), socket, deadline);
            self.requests.end_wait_for_space();
            if !waited? && Instant::now() >= deadline {
                return Err(ClientError::Busy(deadline - now));
            }
        }
        Ok(())
    }

    fn next_frame(
        &mut self,
        deadline: Instant,
        timeout: Duration,
        spin: Duration,
        socket: &UnixStream,
    ) -> Result<Frame, ClientError> {
        let spin_until = Instant::now() + spin;
        let mut daemon_gone = false;
        loop {
            match self.responses.peek() {
                Ok(Some(frame)) => return Ok(frame),
                Ok(None) if daemon_gone => return Err(ClientError::DaemonGone),
                Ok(None) => {}
                Err(e) => return Err(ClientError::Protocol(format!("response ring: {e}"))),
            }
            let now = Instant::now();
            if now < spin_until {
                std::hint::spin_loop();
                continue;
            }
            if now >= deadline {
                return Err(ClientError::Timeout(timeout));
            }
            // About to sleep: whatever we published must reach the daemon first.
            self.wake_daemon_if_asleep()?;
            if self.responses.prepare_sleep() {
                let waited = wait_on(self.responses.consumer_sleeping_word(), socket, deadline);
                self.responses.end_sleep();
                match waited {
                    // The daemon may have written a last answer (why it is
                    // closing) before it closed: look once more before giving up.
                    Err(ClientError::DaemonGone) => daemon_gone = true,
                    other => {
                        other?;
                    }
                }
            }
        }
    }
}

impl SocketFrames {
    fn submit(&mut self, request: &Request, max: u64) -> Result<(), ClientError> {
        let bytes = encode_to_vec(request);
        if bytes.len() as u64 > max {
            return Err(ClientError::FrameTooLarge { max });
        }
        let header = FrameHeader {
            len: bytes.len() as u32,
            kind: FrameKind::Request as u16,
            flags: 0,
            request_id: request.request_id,
        };
        self.outgoing.extend_from_slice(&header.to_le_bytes());
        self.outgoing.extend_from_slice(&bytes);
        Ok(())
    }

    fn next_frame(
        &mut self,
        deadline: Instant,
        timeout: Duration,
        socket: &UnixStream,
        max: u64,
    ) -> Result<u64, ClientError> {
        let left = deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_micros(1));
        socket.set_read_timeout(Some(left))?;
        let mut header = [0u8; 16];
        read_exact_or(socket, &mut header, timeout)?;
        let header = FrameHeader::from_le_bytes(&header);
        if u64::from(header.len) > max || header.kind != FrameKind::Response as u16 {
            return Err(ClientError::Protocol(format!(
                "bad frame header from nexusd: {header:?}"
            )));
        }
        self.incoming.clear();
        self.incoming.resize(header.len as usize, 0);
        read_exact_or(socket, &mut self.incoming, timeout)?;
        Ok(header.request_id)
    }
}

impl std::ops::Deref for ResponseGuard<'_> {
    type Target = ArchivedResponse;

    fn deref(&self) -> &ArchivedResponse {
        let bytes = self.connection.payload(self.frame.as_ref());
        // SAFETY: these exact bytes passed `access_response` (full bytecheck
        // validation) in `Connection::guard`, and they cannot change while the
        // guard holds the frame (see `Connection::payload`).
        unsafe { rkyv::access_unchecked::<ArchivedResponse>(bytes) }
    }
}

impl ResponseGuard<'_> {
    /// The answer as an owned value (a copy; the guard's own view is free).
    pub fn to_owned_response(&self) -> nexus_shm_protocol::wire::Response {
        rkyv::deserialize::<_, rkyv::rancor::Error>(&**self).expect("a validated archive deserializes")
    }

    /// `Ok(self)` for ok/degraded answers, the error status as `ClientError::Status`.
    pub fn into_result(self) -> Result<Self, ClientError> {
        match &self.status {
            nexus_shm_protocol::wire::ArchivedStatus::Error { code, message } => Err(ClientError::Status {
                code: code.to_native(),
                message: message.to_string(),
            }),
            _ => Ok(self),
        }
    }
}

impl Drop for ResponseGuard<'_> {
    fn drop(&mut self) {
        // A failed wake-up signal surfaces on the next call as DaemonGone/Io.
        let frame = self.frame.take();
        if self.connection.release(frame).is_err() {
            self.connection.broken = true;
        }
    }
}

/// Sleeps on a flag word this side set to 1 until the daemon clears it (and
/// wakes the futex), the deadline passes (false), or the daemon's socket
/// reaches EOF (`DaemonGone`).
fn wait_on(flag: &AtomicU32, socket: &UnixStream, deadline: Instant) -> Result<bool, ClientError> {
    loop {
        if flag.load(Ordering::Acquire) != 1 {
            return Ok(true);
        }
        let now = Instant::now();
        if now >= deadline {
            return Ok(false);
        }
        futex_wait(flag, 1, (deadline - now).min(DAEMON_CHECK_SLICE))?;
        if flag.load(Ordering::Acquire) != 1 {
            return Ok(true);
        }
        check_daemon_alive(socket)?;
    }
}

/// The daemon writes nothing on the socket after the handshake, so any
/// readiness there is its EOF (or a daemon breaking the protocol).
fn check_daemon_alive(socket: &UnixStream) -> Result<(), ClientError> {
    let mut fds = [PollFd::new(socket.as_fd(), PollFlags::POLLIN)];
    match poll(&mut fds, PollTimeout::ZERO) {
        Ok(0) | Err(nix::errno::Errno::EINTR) => Ok(()),
        Ok(_) => Err(ClientError::DaemonGone),
        Err(errno) => Err(std::io::Error::from(errno).into()),
    }
}

/// Refuses a peer that runs as another uid than the daemon we expect: the
/// configured one, else the owner of the socket file.
fn check_daemon_uid(socket: &UnixStream, path: &Path, expected: Option<u32>) -> Result<(), ClientError> {
    let expected = match expected {
        Some(uid) => uid,
        None => std::fs::metadata(path)
            .map_err(|e| ClientError::Handshake(format!("cannot stat {}: {e}", path.display())))?
            .uid(),
    };
    let (actual, _, _) =
        peer_credentials(socket.as_fd()).map_err(|e| ClientError::Handshake(format!("SO_PEERCRED failed: {e}")))?;
    if actual != expected {
        return Err(ClientError::UntrustedDaemon {
            path: path.to_path_buf(),
            expected,
            actual,
        });
    }
    Ok(())
}

fn read_server_hello(socket: &UnixStream) -> Result<(ServerHello, Vec<OwnedFd>), ClientError> {
    let mut bytes = [0u8; SERVER_HELLO_BYTES];
    let mut fds = Vec::new();
    let mut filled = 0;
    while filled < bytes.len() {
        let (n, mut received) = recv_with_fds(socket.as_fd(), &mut bytes[filled..]).map_err(handshake_io)?;
        if n == 0 {
            return Err(ClientError::Handshake(
                "nexusd closed the connection during the handshake".into(),
            ));
        }
        filled += n;
        fds.append(&mut received);
    }
    let hello = ServerHello::decode(&bytes).map_err(|e| ClientError::Handshake(e.to_string()))?;
    match ErrorCode::from_u32(hello.status) {
        _ if hello.status == 0 => Ok((hello, fds)),
        Some(ErrorCode::VersionMismatch) => Err(ClientError::VersionMismatch { message: hello.message }),
        _ => Err(ClientError::Refused {
            code: hello.status,
            message: hello.message,
        }),
    }
}

fn map_segment(welcome: &ServerHello, fds: Vec<OwnedFd>) -> Result<ShmFrames, ClientError> {
    let Ok([memfd, bell]) = <[OwnedFd; HANDSHAKE_FDS]>::try_from(fds) else {
        return Err(ClientError::Handshake(
            "nexusd did not pass the segment and bell fds".into(),
        ));
    };
    let segment = Segment::map(&memfd).map_err(|e| ClientError::Handshake(e.to_string()))?;
    if segment.header().segment_bytes != welcome.segment_bytes {
        return Err(ClientError::Handshake("segment size differs from the hello".into()));
    }
    // The mapping keeps the memory; no one else needs a handle to it.
    drop(memfd);
    let (requests, responses) = segment_ends(&segment)?;
    Ok(ShmFrames {
        requests,
        responses,
        bell: Bell::from_owned(bell),
        unsignalled: false,
    })
}

fn segment_ends(segment: &Arc<Segment>) -> Result<(Producer, Consumer), ClientError> {
    segment.client_ends().map_err(|e| ClientError::Handshake(e.to_string()))
}

fn read_exact_or(mut socket: &UnixStream, buf: &mut [u8], timeout: Duration) -> Result<(), ClientError> {
    socket.read_exact(buf).map_err(|e| match e.kind() {
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => ClientError::Timeout(timeout),
        _ => gone_or_io(e),
    })
}

fn gone_or_io(e: std::io::Error) -> ClientError {
    use std::io::ErrorKind::*;
    match e.kind() {
        UnexpectedEof | BrokenPipe | ConnectionReset | ConnectionAborted => ClientError::DaemonGone,
        _ => ClientError::Io(e),
    }
}

fn handshake_io(e: std::io::Error) -> ClientError {
    match e.kind() {
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => {
            ClientError::Handshake("nexusd did not answer the handshake in time".into())
        }
        _ => ClientError::Handshake(format!("handshake I/O failed: {e}")),
    }
}
