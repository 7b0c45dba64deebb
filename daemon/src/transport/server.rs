//! The listener: accepts connections, runs the handshake, and starts one
//! session per admitted client.
//!
//! Entry point: [`run`]. Each connection is a tracked tokio task; shutdown is
//! a cancellation token, after which no connection is accepted and sessions
//! get `shutdown_timeout` to finish. The request loop itself lives in
//! `session.rs` (shared memory) and `socket_session.rs` (socket baseline).

use std::os::fd::{AsFd, AsRawFd};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use nexus_shm_protocol::PROTOCOL_VERSION;
use nexus_shm_protocol::handshake::{
    CLIENT_HELLO_BYTES, ClientHello, FLAG_SOCKET_TRANSPORT, HandshakeError, ServerHello, peer_credentials,
    send_with_fds,
};
use nexus_shm_protocol::layout::SegmentHeader;
use nexus_shm_protocol::segment::Segment;
use nexus_shm_protocol::wake::Bell;
use nexus_shm_protocol::wire::ErrorCode;
use tokio::io::{AsyncReadExt, Interest};
use tokio::net::UnixStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use crate::handler::Shared;
use crate::metrics::bump;
use crate::transport::admission::{AdmissionError, Charge, UidSlot, shm_session_bytes};
use crate::transport::frame::SessionEnd;
use crate::transport::listener::BoundSocket;
use crate::transport::shm_session::ShmSession;

/// Serves `socket` until `shutdown` is cancelled, then waits (bounded) for
/// the sessions to end. The socket file is removed when this returns.
pub async fn run(shared: Arc<Shared>, socket: BoundSocket, shutdown: CancellationToken) -> std::io::Result<()> {
    let std_listener = socket.listener().try_clone()?;
    std_listener.set_nonblocking(true)?;
    let listener = tokio::net::UnixListener::from_std(std_listener)?;
    let tracker = TaskTracker::new();
    let slots = Arc::new(Semaphore::new(shared.config().max_clients));
    let mut next_connection_id = 0u64;
    info!(socket = %socket.path().display(), "serving");
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, _)) => {
                next_connection_id += 1;
                let connection = Connection {
                    stream,
                    shared: shared.clone(),
                    slots: slots.clone(),
                    id: next_connection_id,
                    shutdown: shutdown.clone(),
                };
                tracker.spawn(connection.serve());
            }
            Err(error) => {
                // Usually EMFILE: back off instead of spinning on a full fd table.
                warn!(%error, "accept failed; retrying in 50 ms");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    shared.shutting_down.store(true, Ordering::Relaxed);
    drop(listener);
    // New clients now fail to connect at once instead of waiting on a daemon
    // that will not serve them; the lock is held until we are gone.
    socket.unpublish();
    tracker.close();
    let open = shared.metrics.connections_open.load(Ordering::Relaxed);
    info!(open, "shutting down: no new connections; waiting for sessions");
    if tokio::time::timeout(shared.config().shutdown_timeout, tracker.wait())
        .await
        .is_err()
    {
        warn!(timeout = ?shared.config().shutdown_timeout, "sessions still running at the shutdown deadline; leaving them");
    }
    drop(socket);
    Ok(())
}

/// One accepted connection before and during its session.
struct Connection {
    stream: UnixStream,
    shared: Arc<Shared>,
    slots: Arc<Semaphore>,
    id: u64,
    shutdown: CancellationToken,
}

/// What an admitted connection holds until its session ends.
struct Held {
    _permit: OwnedSemaphorePermit,
    _uid_slot: UidSlot,
    /// The connection's memory; a socket session grows and shrinks it.
    charge: Charge,
}

/// What the handshake admitted.
enum Admitted {
    /// The segment and bell whose fds the client now holds; the session
    /// takes the socket.
    SharedMemory(Arc<Segment>, Bell),
    Socket {
        max_frame_bytes: u32,
    },
}

/// A handshake that ended without a session; `reply` is sent when present.
struct Refusal {
    reply: Option<ServerHello>,
    reason: String,
}

impl Refusal {
    fn with_reply(code: ErrorCode, message: String) -> Self {
        Self {
            reply: Some(ServerHello::refusal(code, message.clone())),
            reason: message,
        }
    }

    fn silent(reason: impl Into<String>) -> Self {
        Self {
            reply: None,
            reason: reason.into(),
        }
    }
}

impl Connection {
    async fn serve(mut self) {
        let (admitted, mut held) = match self.handshake().await {
            Ok(ok) => ok,
            Err(refusal) => return self.refuse(refusal).await,
        };
        bump(&self.shared.metrics.connections_total);
        let end = match admitted {
            Admitted::SharedMemory(segment, bell) => {
                match ShmSession::new(self.id, &segment, bell, self.stream, held.charge, self.shared.clone()) {
                    Ok(session) => session.run(&self.shutdown).await,
                    Err(e) => SessionEnd::Io(e),
                }
            }
            Admitted::Socket { max_frame_bytes } => {
                let session = crate::transport::socket_session::SocketSession::new(
                    &self.shared,
                    max_frame_bytes,
                    &mut held.charge,
                );
                session.run(self.stream, &self.shutdown).await
            }
        };
        self.shared.metrics.connections_open.fetch_sub(1, Ordering::Relaxed);
        log_end(self.id, &end);
    }

    /// Admission in order of cost to the daemon: fds (before anything is
    /// read), the peer's uid, a bounded place among the pending handshakes
    /// while the hello is read, then the client slot, the uid's share and
    /// the memory charge. See `admission.rs`.
    async fn handshake(&mut self) -> Result<(Admitted, Held), Refusal> {
        let shared = self.shared.clone();
        let metrics = &shared.metrics;
        (shared.admission.fds.admit_connection())
            .map_err(|e| refused(ErrorCode::ConnectionSetupFailed, &e, &metrics.refused_fd_reserve))?;
        // Judged before a byte is read, so a refused peer costs no wait. Its
        // hello may still be on its way: the client reads our refusal even
        // when its own write then fails.
        let uid = self.check_peer()?;
        let hello = self.read_hello_in_turn(uid).await?;
        let permit = self.slots.clone().try_acquire_owned().map_err(|_| {
            let max = self.shared.config().max_clients;
            Refusal::with_reply(
                ErrorCode::TooManyClients,
                format!("nexusd serves at most {max} clients at once (max_clients)"),
            )
        })?;
        let uid_slot = (shared.admission.uids.try_take(uid))
            .map_err(|e| refused(ErrorCode::TooManyClients, &e, &metrics.refused_uid_share))?;
        let charge = (shared.admission.memory.try_charge(self.memory_charge(&hello)))
            .map_err(|e| refused(ErrorCode::ConnectionSetupFailed, &e, &metrics.refused_memory_budget))?;
        let held = Held {
            _permit: permit,
            _uid_slot: uid_slot,
            charge,
        };
        debug!(connection = self.id, uid, name = %hello.name, flags = hello.flags, "handshake");
        // Counted before the welcome is sent: a client that holds its welcome
        // must find itself in the Stats that any connection reads next.
        let shared = self.shared.clone();
        let open = &shared.metrics.connections_open;
        open.fetch_add(1, Ordering::Relaxed);
        let admitted = if hello.flags & FLAG_SOCKET_TRANSPORT != 0 {
            self.admit_socket().await
        } else {
            self.admit_shared_memory(&hello).await
        };
        match admitted {
            Ok(admitted) => Ok((admitted, held)),
            Err(refusal) => {
                open.fetch_sub(1, Ordering::Relaxed);
                Err(refusal)
            }
        }
    }

    /// The peer's uid, if the allow-list names it.
    fn check_peer(&self) -> Result<u32, Refusal> {
        let (uid, _gid, pid) =
            peer_credentials(self.stream.as_fd()).map_err(|e| Refusal::silent(format!("SO_PEERCRED failed: {e}")))?;
        if self.shared.config().allowed_uids.contains(&uid) {
            return Ok(uid);
        }
        let message = format!("uid {uid} (pid {pid}) is not allowed to use this nexusd");
        Err(Refusal::with_reply(ErrorCode::PermissionDenied, message))
    }

    /// Reads the hello holding a place among the pending handshakes, which
    /// a newer connection may take (eviction) if this one is slow.
    async fn read_hello_in_turn(&mut self, uid: u32) -> Result<ClientHello, Refusal> {
        let pending = self.shared.admission.pending.clone();
        let ticket = pending.enter(uid);
        tokio::select! {
            hello = self.read_hello() => hello,
            _ = ticket.evicted() => {
                bump(&self.shared.metrics.handshakes_evicted);
                let max = pending.max();
                let message = format!(
                    "more than {max} connections (max_pending_handshakes) were waiting to send their hello; \
                     this one was the oldest"
                );
                Err(Refusal::with_reply(ErrorCode::TooManyClients, message))
            }
        }
    }

    async fn read_hello(&mut self) -> Result<ClientHello, Refusal> {
        let mut bytes = [0u8; CLIENT_HELLO_BYTES];
        let timeout = self.shared.config().handshake_timeout;
        match tokio::time::timeout(timeout, self.stream.read_exact(&mut bytes)).await {
            Err(_) => return Err(Refusal::silent(format!("no hello within {timeout:?}"))),
            Ok(Err(e)) => return Err(Refusal::silent(format!("hello not received: {e}"))),
            Ok(Ok(_)) => {}
        }
        let hello = ClientHello::decode(&bytes).map_err(|e| match e {
            HandshakeError::BadMagic => {
                Refusal::with_reply(ErrorCode::BadHandshake, "not a Memory Nexus handshake".to_owned())
            }
            other => Refusal::with_reply(ErrorCode::BadHandshake, other.to_string()),
        })?;
        if hello.protocol_version != PROTOCOL_VERSION {
            let message = format!(
                "client speaks protocol version {}, this nexusd speaks version {PROTOCOL_VERSION}",
                hello.protocol_version
            );
            return Err(Refusal::with_reply(ErrorCode::VersionMismatch, message));
        }
        Ok(hello)
    }

    async fn admit_socket(&mut self) -> Result<Admitted, Refusal> {
        let max_frame_bytes = self.shared.config().max_frame_bytes;
        let mut hello = self.welcome(0);
        hello.max_frame_bytes = max_frame_bytes;
        self.send_hello(&hello, &[]).await?;
        Ok(Admitted::Socket { max_frame_bytes })
    }

    async fn admit_shared_memory(&mut self, hello: &ClientHello) -> Result<Admitted, Refusal> {
        let config = self.shared.config();
        let request_bytes = config.grant_ring_bytes(hello.request_ring_bytes);
        let response_bytes = config.grant_ring_bytes(hello.response_ring_bytes);
        let setup_failed = |e: &dyn std::fmt::Display| {
            Refusal::with_reply(
                ErrorCode::ConnectionSetupFailed,
                format!("cannot set the connection up: {e}"),
            )
        };
        let header =
            SegmentHeader::new(request_bytes, response_bytes, config.max_frame_bytes).map_err(|e| setup_failed(&e))?;
        let (segment, memfd) = Segment::create(header).map_err(|e| setup_failed(&e))?;
        let bell = Bell::new().map_err(|e| setup_failed(&e))?;
        let mut welcome = self.welcome(header.segment_bytes);
        welcome.request_ring_bytes = request_bytes;
        welcome.response_ring_bytes = response_bytes;
        welcome.max_frame_bytes = header.max_frame_bytes;
        self.send_hello(&welcome, &[memfd.as_raw_fd(), bell.as_raw_fd()])
            .await?;
        // Our copy of the memfd is no longer needed: the mapping keeps the
        // memory, and closing it leaves the client's fd as the only handle.
        drop(memfd);
        Ok(Admitted::SharedMemory(segment, bell))
    }

    fn welcome(&self, segment_bytes: u64) -> ServerHello {
        ServerHello {
            protocol_version: PROTOCOL_VERSION,
            status: 0,
            segment_bytes,
            request_ring_bytes: 0,
            response_ring_bytes: 0,
            max_frame_bytes: 0,
            connection_id: self.id,
            message: String::new(),
        }
    }

    async fn send_hello(&self, hello: &ServerHello, fds: &[i32]) -> Result<(), Refusal> {
        let timeout = self.shared.config().handshake_timeout;
        let bytes = hello.encode();
        let sending = send_all_with_fds(&self.stream, &bytes, fds);
        match tokio::time::timeout(timeout, sending).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(Refusal::silent(format!("sending the hello failed: {e}"))),
            Err(_) => Err(Refusal::silent("client did not read its hello in time")),
        }
    }

    /// What this connection is charged against `memory_budget_bytes`.
    fn memory_charge(&self, hello: &ClientHello) -> u64 {
        let config = self.shared.config();
        if hello.flags & FLAG_SOCKET_TRANSPORT != 0 {
            return crate::transport::socket_session::FIXED_BYTES + config.scratch_retain_bytes;
        }
        shm_session_bytes(
            config.grant_ring_bytes(hello.request_ring_bytes),
            config.grant_ring_bytes(hello.response_ring_bytes),
            config.scratch_retain_bytes,
        )
    }

    async fn refuse(self, refusal: Refusal) {
        bump(&self.shared.metrics.handshakes_refused);
        debug!(connection = self.id, reason = %refusal.reason, "handshake refused");
        if let Some(reply) = &refusal.reply {
            // Best effort and one non-blocking send straight on the fd (not
            // through tokio's readiness, which a fresh socket may not have
            // yet): a refusal fits in a fresh socket's buffer, and no refused
            // peer may hold a task (or an fd) waiting for it to read.
            let _ = send_with_fds(self.stream.as_fd(), &reply.encode(), &[]);
        }
    }
}

/// Writes all of `bytes` on a non-blocking socket, the fds riding on the first byte.
async fn send_all_with_fds(stream: &UnixStream, bytes: &[u8], fds: &[i32]) -> std::io::Result<()> {
    let mut sent = 0;
    while sent < bytes.len() {
        stream.writable().await?;
        let fds_now = if sent == 0 { fds } else { &[] };
        match stream.try_io(Interest::WRITABLE, || {
            send_with_fds(stream.as_fd(), &bytes[sent..], fds_now)
        }) {
            Ok(n) => sent += n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// A refusal for an admission budget, counted in `counter`.
fn refused(code: ErrorCode, error: &AdmissionError, counter: &std::sync::atomic::AtomicU64) -> Refusal {
    bump(counter);
    Refusal::with_reply(code, error.to_string())
}

fn log_end(connection: u64, end: &SessionEnd) {
    match end {
        SessionEnd::PeerGone | SessionEnd::Shutdown => debug!(connection, ?end, "session ended"),
        other => warn!(connection, end = ?other, "session closed by the daemon"),
    }
}
