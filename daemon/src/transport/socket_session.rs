//! The socket transport: the same frames and the same handler over the Unix
//! stream itself. It exists as the in-run baseline for `nexus-bench` (what
//! the shared-memory path is measured against) and as a fallback for hosts
//! where memfd is unavailable. Frames are a 16-byte `FrameHeader` followed by
//! the payload, without ring padding.
//!
//! The client controls every byte and every pause on this stream, so:
//! - every wait has a bound: the first byte of the next frame within
//!   `idle_timeout`, the rest of that frame within `stalled_client_timeout`
//!   of its first byte, and each answer written (a client that stops reading
//!   fills the socket) within `stalled_client_timeout`;
//! - a frame's buffer grows only as its bytes arrive (doubling, never past
//!   the declared length), charged to the connection memory budget; a frame
//!   the budget cannot hold is read past and answered `Busy`; after a frame
//!   larger than `scratch_retain_bytes` the buffer is given back;
//! - a frame longer than `max_frame_bytes` is answered and the connection
//!   closed (the stream cannot be resynchronised without reading the bogus
//!   length), and past `max_bad_frames` malformed ones too.
//!
//! What this module does not do: decide answers (`handler.rs`) or admit
//! connections (`server.rs`, `admission.rs`).

use std::sync::Arc;
use std::time::Duration;

use nexus_shm_protocol::layout::{FRAME_HEADER_BYTES, FrameHeader, FrameKind};
use nexus_shm_protocol::wire::{ErrorCode, Response};
use rkyv::util::AlignedVec;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader, BufWriter};
use tokio::net::UnixStream;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::handler::{Reply, Shared};
use crate::metrics::bump;
use crate::transport::admission::{AdmissionError, Charge};
use crate::transport::frame::{FramePolicy, SessionEnd, Verdict};

/// Buffer size of each direction: a pipelined burst is read and written with
/// one syscall, which is what makes the baseline fair under load.
const SOCKET_BUFFER_BYTES: usize = 64 * 1024;

/// The largest answer buffer a session keeps between answers: answers up
/// to this size (a recall of eight memories of about a kilobyte) are
/// serialized without an allocation; a larger one gets a buffer of its own,
/// freed once written, so one big answer does not pin its size.
const ANSWER_RETAIN_BYTES: usize = 16 * 1024;

/// What a socket session is charged at admission besides its retained
/// request buffer (`scratch_retain_bytes`): its read and write buffers and
/// its retained answer buffer.
pub const FIXED_BYTES: u64 = (2 * SOCKET_BUFFER_BYTES + ANSWER_RETAIN_BYTES) as u64;

type Reader = BufReader<OwnedReadHalf>;
type Writer = BufWriter<OwnedWriteHalf>;

/// One socket client's session state. Holds at most one frame's payload
/// (bounded by `max_frame_bytes` and by the memory budget) and one answer.
pub struct SocketSession<'a> {
    shared: &'a Arc<Shared>,
    max_frame_bytes: u32,
    /// This connection's charge: [`FIXED_BYTES`] plus the payload buffer's
    /// capacity, at least `scratch_retain_bytes`.
    charge: &'a mut Charge,
    payload: AlignedVec<16>,
    /// The last answer's serialized bytes (kept up to [`ANSWER_RETAIN_BYTES`]).
    answer_bytes: AlignedVec<16>,
    policy: FramePolicy,
}

/// Why reading a frame's payload stopped short.
enum Unread {
    /// The session must end.
    End(SessionEnd),
    /// The memory budget could not hold the frame; its bytes were read past.
    OverBudget(AdmissionError),
}

impl<'a> SocketSession<'a> {
    /// A session charged to `charge` (already holding its admission charge).
    pub fn new(shared: &'a Arc<Shared>, max_frame_bytes: u32, charge: &'a mut Charge) -> Self {
        Self {
            shared,
            max_frame_bytes,
            charge,
            payload: AlignedVec::new(),
            answer_bytes: AlignedVec::new(),
            policy: FramePolicy::default(),
        }
    }

    /// Serves framed requests on `stream` until EOF, misbehaviour, idleness or shutdown.
    pub async fn run(mut self, stream: UnixStream, shutdown: &CancellationToken) -> SessionEnd {
        let (read_half, write_half) = stream.into_split();
        let mut reader = BufReader::with_capacity(SOCKET_BUFFER_BYTES, read_half);
        let mut writer = BufWriter::with_capacity(SOCKET_BUFFER_BYTES, write_half);
        loop {
            // Flush answers once no further request is already buffered.
            if reader.buffer().is_empty()
                && let Err(end) = self.within_stall(writer.flush()).await
            {
                return end;
            }
            if let Err(end) = self.await_next_frame(&mut reader, shutdown).await {
                return end;
            }
            match self.read_frame(&mut reader).await {
                Ok(Verdict::Answer(answer)) => {
                    if let Err(end) = self.send(&mut writer, answer).await {
                        return end;
                    }
                }
                Ok(Verdict::Last(answer, end)) => {
                    let _ = self.send(&mut writer, answer).await;
                    let _ = self.within_stall(writer.flush()).await;
                    return end;
                }
                Err(end) => return end,
            }
        }
    }

    /// Waits for the first byte of the next frame, at most `idle_timeout`.
    async fn await_next_frame(&self, reader: &mut Reader, shutdown: &CancellationToken) -> Result<(), SessionEnd> {
        let idle_timeout = self.shared.config().idle_timeout;
        tokio::select! {
            filled = tokio::time::timeout(idle_timeout, reader.fill_buf()) => match filled {
                Err(_) => {
                    bump(&self.shared.metrics.clients_disconnected_idle);
                    Err(SessionEnd::Idle)
                }
                Ok(Ok([])) => Err(SessionEnd::PeerGone),
                Ok(Ok(_)) => Ok(()),
                Ok(Err(e)) => Err(io_end(e)),
            },
            _ = shutdown.cancelled() => Err(SessionEnd::Shutdown),
        }
    }

    /// Reads one frame (all of it within `stalled_client_timeout` of its
    /// first byte) and returns its answer.
    async fn read_frame(&mut self, reader: &mut Reader) -> Result<Verdict, SessionEnd> {
        let deadline = Instant::now() + self.shared.config().stalled_client_timeout;
        let mut header_bytes = [0u8; FRAME_HEADER_BYTES as usize];
        match tokio::time::timeout_at(deadline, reader.read_exact(&mut header_bytes)).await {
            Err(_) => return Err(self.stalled()),
            Ok(Err(e)) => return Err(io_end(e)),
            Ok(Ok(_)) => {}
        }
        let header = FrameHeader::from_le_bytes(&header_bytes);
        if header.len > self.max_frame_bytes {
            let answer = self.frame_too_large(&header);
            return Ok(self.policy.unrecoverable(answer, self.shared));
        }
        match self.read_payload(reader, header.len as usize, deadline).await {
            Ok(()) => {}
            Err(Unread::End(end)) => return Err(end),
            Err(Unread::OverBudget(e)) => {
                bump(&self.shared.metrics.refused_memory_budget);
                let message = format!("{e}; retry the request later");
                let busy = Response::error(header.request_id, ErrorCode::Busy, message);
                return Ok(Verdict::Answer(busy.into()));
            }
        }
        let picked_up_ns = nexus_shm_protocol::monotonic_now_ns();
        let verdict = (self.policy)
            .answer(header.kind, header.request_id, &self.payload, picked_up_ns, self.shared)
            .await;
        self.give_back_payload();
        Ok(verdict)
    }

    /// Reads `len` payload bytes into `self.payload`, growing it as they
    /// arrive. A growth the budget refuses still reads the frame's bytes
    /// (discarding them) so the stream stays in sync.
    async fn read_payload(&mut self, reader: &mut Reader, len: usize, deadline: Instant) -> Result<(), Unread> {
        self.payload.clear();
        let mut consumed = 0;
        let mut refused = None;
        while consumed < len {
            let chunk = match tokio::time::timeout_at(deadline, reader.fill_buf()).await {
                Err(_) => return Err(Unread::End(self.stalled())),
                Ok(Err(e)) => return Err(Unread::End(io_end(e))),
                Ok(Ok([])) => return Err(Unread::End(SessionEnd::PeerGone)),
                Ok(Ok(chunk)) => chunk,
            };
            let take = chunk.len().min(len - consumed);
            if refused.is_none() {
                match self.grow_payload(take, len) {
                    Ok(()) => self.payload.extend_from_slice(&chunk[..take]),
                    Err(e) => refused = Some(e),
                }
            }
            reader.consume(take);
            consumed += take;
        }
        match refused {
            Some(e) => {
                self.give_back_payload();
                Err(Unread::OverBudget(e))
            }
            None => Ok(()),
        }
    }

    /// Makes room for `more` bytes: doubles the capacity (never past the
    /// frame's `len`), charging the growth beyond the retained size first.
    fn grow_payload(&mut self, more: usize, len: usize) -> Result<(), AdmissionError> {
        let needed = self.payload.len() + more;
        let capacity = self.payload.capacity();
        if needed <= capacity {
            return Ok(());
        }
        let target = (capacity * 2).clamp(needed, len.max(needed));
        let retained = self.retain_bytes();
        let extra = (target as u64).max(retained) - (capacity as u64).max(retained);
        self.charge.try_grow(extra)?;
        self.payload.reserve_exact(target - self.payload.len());
        debug_assert!(self.payload.capacity() >= needed);
        Ok(())
    }

    /// After a frame larger than `scratch_retain_bytes`, frees its buffer
    /// and the charge for it: one big batch must not pin its size for the
    /// connection's life.
    fn give_back_payload(&mut self) {
        let retained = self.retain_bytes();
        if self.payload.capacity() as u64 > retained {
            self.payload = AlignedVec::new();
            self.charge.shrink_to(FIXED_BYTES + retained);
        }
    }

    fn retain_bytes(&self) -> u64 {
        self.shared.config().scratch_retain_bytes
    }

    fn frame_too_large(&self, header: &FrameHeader) -> Response {
        let message = format!(
            "frame length {} exceeds the maximum of {} bytes",
            header.len, self.max_frame_bytes
        );
        Response::error(header.request_id, ErrorCode::FrameTooLarge, message)
    }

    /// Writes one answer (a recall's serialized straight from the
    /// memories' bytes), bounded by `stalled_client_timeout`.
    async fn send(&mut self, writer: &mut Writer, answer: Reply) -> Result<(), SessionEnd> {
        let bytes = answer.encode_into_vec(std::mem::take(&mut self.answer_bytes));
        let header = FrameHeader {
            len: bytes.len() as u32,
            kind: FrameKind::Response as u16,
            flags: 0,
            request_id: answer.request_id(),
        };
        let written = self.within_stall(write_frame(writer, &header, &bytes)).await;
        if bytes.capacity() <= ANSWER_RETAIN_BYTES {
            self.answer_bytes = bytes;
        }
        written
    }

    /// Runs a write within `stalled_client_timeout`.
    async fn within_stall(&self, write: impl Future<Output = std::io::Result<()>>) -> Result<(), SessionEnd> {
        let limit: Duration = self.shared.config().stalled_client_timeout;
        match tokio::time::timeout(limit, write).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(io_end(e)),
            Err(_) => Err(self.stalled()),
        }
    }

    fn stalled(&self) -> SessionEnd {
        bump(&self.shared.metrics.clients_disconnected_stalled);
        SessionEnd::Stalled
    }
}

async fn write_frame(writer: &mut Writer, header: &FrameHeader, payload: &[u8]) -> std::io::Result<()> {
    writer.write_all(&header.to_le_bytes()).await?;
    writer.write_all(payload).await
}

fn io_end(e: std::io::Error) -> SessionEnd {
    use std::io::ErrorKind::*;
    match e.kind() {
        UnexpectedEof | BrokenPipe | ConnectionReset | ConnectionAborted => SessionEnd::PeerGone,
        _ => SessionEnd::Io(e),
    }
}
