//! One frame → answer path and one bad-frame policy, shared by both transports.
//!
//! A session hands over a frame's kind, request id and payload, the payload
//! already copied into private aligned memory (the trust boundary: the client
//! cannot change these bytes any more). From there every transport does the
//! same: the kind must be `Request`, the archive must pass validation, and
//! the handler answers. A frame the daemon cannot use is answered with its
//! specific code and counted; past `max_bad_frames` the connection ends right
//! after that answer.
//!
//! What this module does not do: read or write frames (each session does, in
//! its own way), or decide answers (`handler.rs`).

use nexus_shm_protocol::layout::FrameKind;
use nexus_shm_protocol::monotonic_now_ns;
use nexus_shm_protocol::ring::RingError;
use nexus_shm_protocol::wire::{ErrorCode, Response, access_request};

use crate::handler::{Reply, Shared, handle};
use crate::metrics::bump;

/// Why a session ended.
#[derive(Debug)]
pub enum SessionEnd {
    /// The client closed its socket (or died).
    PeerGone,
    /// The daemon is shutting down.
    Shutdown,
    /// Too many malformed frames, or one that cannot be skipped.
    TooManyBadFrames,
    /// The client left its answers unread past `stalled_client_timeout`.
    Stalled,
    /// The shared ring state was impossible; the connection is poisoned.
    Corrupt(RingError),
    /// The client broke the protocol outside the frames (bytes on its socket
    /// after the handshake, a flood of empty wake-ups).
    ProtocolViolation(String),
    /// A syscall on the connection's fds failed.
    Io(std::io::Error),
    /// No request arrived for `idle_timeout`.
    Idle,
}

/// What to send for one frame (a recall's answer is serialized from the
/// memories it holds when the session writes it: see `handler::Reply`).
#[derive(Debug)]
pub enum Verdict {
    /// Send this answer and go on.
    Answer(Reply),
    /// Send this answer (best effort), then end the session.
    Last(Reply, SessionEnd),
}

/// The per-connection bad-frame count.
#[derive(Debug, Default)]
pub struct FramePolicy {
    bad_frames: u32,
}

impl FramePolicy {
    /// The answer to one frame whose payload is already private;
    /// `picked_up_ns` is CLOCK_MONOTONIC when the session took it (one clock
    /// read per frame at each end: they cost ~50 ns each on these VMs).
    pub async fn answer(
        &mut self,
        kind: u16,
        request_id: u64,
        payload: &[u8],
        picked_up_ns: u64,
        shared: &Shared,
    ) -> Verdict {
        if kind != FrameKind::Request as u16 {
            let message = format!("frame kind {kind} is not a request");
            return self.reject(
                Response::error(request_id, ErrorCode::UnknownFrameKind, message),
                shared,
            );
        }
        let request = match access_request(payload) {
            Ok(request) => request,
            Err(e) => {
                let message = format!("request frame failed validation: {e}");
                return self.reject(Response::error(request_id, ErrorCode::MalformedFrame, message), shared);
            }
        };
        let mut reply = handle(request, shared, picked_up_ns).await;
        reply.set_handled_ns(monotonic_now_ns().saturating_sub(picked_up_ns));
        bump(&shared.metrics.requests_total);
        Verdict::Answer(reply)
    }

    /// Counts a frame the daemon could not use (answered with `answer`);
    /// past `max_bad_frames` the connection ends after that answer.
    pub fn reject(&mut self, answer: Response, shared: &Shared) -> Verdict {
        bump(&shared.metrics.frames_rejected);
        self.bad_frames += 1;
        if self.bad_frames > shared.config().max_bad_frames {
            bump(&shared.metrics.clients_disconnected_bad_frames);
            return Verdict::Last(answer.into(), SessionEnd::TooManyBadFrames);
        }
        Verdict::Answer(answer.into())
    }

    /// A frame after which the stream cannot be trusted to resynchronise (a
    /// length beyond the maximum on the socket): answered, then the end.
    pub fn unrecoverable(&mut self, answer: Response, shared: &Shared) -> Verdict {
        bump(&shared.metrics.frames_rejected);
        self.bad_frames += 1;
        Verdict::Last(answer.into(), SessionEnd::TooManyBadFrames)
    }
}
