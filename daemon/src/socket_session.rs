//! The socket transport: the same frames and the same handler over the Unix
//! stream itself. It exists as the in-run baseline for `nexus-bench` (what
//! the shared-memory path is measured against) and as a fallback for hosts
//! where memfd is unavailable. Frames are a 16-byte `FrameHeader` followed by
//! the payload, without ring padding.

use std::sync::Arc;
use std::time::Instant;

use nexus_shm_protocol::layout::{FrameHeader, FrameKind};
use nexus_shm_protocol::monotonic_now_ns;
use nexus_shm_protocol::wire::{ErrorCode, Response, Status, access_request, encode_to_vec};
use rkyv::util::AlignedVec;
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader, BufWriter};
use tokio::net::UnixStream;
use tokio_util::sync::CancellationToken;

use crate::handler::{Shared, handle};
use crate::metrics::bump;
use crate::session::SessionEnd;

/// Buffer size of each direction: a pipelined burst is read and written with
/// one syscall, which is what makes the baseline fair under load.
const SOCKET_BUFFER_BYTES: usize = 64 * 1024;

/// Serves framed requests on `stream` until EOF, misbehaviour or shutdown.
pub async fn run(
    stream: UnixStream,
    shared: &Arc<Shared>,
    max_frame_bytes: u32,
    shutdown: &CancellationToken,
) -> SessionEnd {
    let (read_half, write_half) = stream.into_split();
    let mut reader = BufReader::with_capacity(SOCKET_BUFFER_BYTES, read_half);
    let mut writer = BufWriter::with_capacity(SOCKET_BUFFER_BYTES, write_half);
    let mut payload = AlignedVec::<16>::new();
    let mut bad_frames = 0u32;
    loop {
        // Flush answers once no further request is already buffered.
        if reader.buffer().is_empty()
            && let Err(e) = writer.flush().await
        {
            return SessionEnd::Io(e);
        }
        let mut header_bytes = [0u8; 16];
        tokio::select! {
            read = reader.read_exact(&mut header_bytes) => if read.is_err() { return SessionEnd::PeerGone },
            _ = shutdown.cancelled() => return SessionEnd::Shutdown,
        }
        let header = FrameHeader::from_le_bytes(&header_bytes);
        if header.len > max_frame_bytes {
            // The stream cannot be resynchronised without reading the bogus
            // length, so answer and close.
            let message = format!(
                "frame length {} exceeds the maximum of {max_frame_bytes} bytes",
                header.len
            );
            let _ = write_answer(
                &mut writer,
                &Response::error(header.request_id, ErrorCode::FrameTooLarge, message),
            )
            .await;
            let _ = writer.flush().await;
            bump(&shared.metrics.frames_rejected);
            return SessionEnd::TooManyBadFrames;
        }
        payload.clear();
        payload.resize(header.len as usize, 0);
        if reader.read_exact(&mut payload).await.is_err() {
            return SessionEnd::PeerGone;
        }
        let picked_up = Instant::now();
        let answer = answer(&header, &payload, shared, picked_up).await;
        if is_rejection(&answer) {
            bump(&shared.metrics.frames_rejected);
            bad_frames += 1;
            if bad_frames > shared.config().max_bad_frames {
                bump(&shared.metrics.clients_disconnected_bad_frames);
                let _ = write_answer(&mut writer, &answer).await;
                let _ = writer.flush().await;
                return SessionEnd::TooManyBadFrames;
            }
        }
        if let Err(e) = write_answer(&mut writer, &answer).await {
            return SessionEnd::Io(e);
        }
    }
}

async fn answer(header: &FrameHeader, payload: &[u8], shared: &Shared, picked_up: Instant) -> Response {
    if header.kind != FrameKind::Request as u16 {
        let message = format!("frame kind {} is not a request", header.kind);
        return Response::error(header.request_id, ErrorCode::UnknownFrameKind, message);
    }
    match access_request(payload) {
        Ok(request) => {
            let mut response = handle(request, shared, monotonic_now_ns()).await;
            response.timings.handled_ns = picked_up.elapsed().as_nanos() as u64;
            bump(&shared.metrics.requests_total);
            response
        }
        Err(e) => Response::error(
            header.request_id,
            ErrorCode::MalformedFrame,
            format!("request frame failed validation: {e}"),
        ),
    }
}

async fn write_answer(
    writer: &mut BufWriter<tokio::net::unix::OwnedWriteHalf>,
    answer: &Response,
) -> std::io::Result<()> {
    let bytes = encode_to_vec(answer);
    let header = FrameHeader {
        len: bytes.len() as u32,
        kind: FrameKind::Response as u16,
        flags: 0,
        request_id: answer.request_id,
    };
    writer.write_all(&header.to_le_bytes()).await?;
    writer.write_all(&bytes).await
}

/// True for the answers to frames the daemon could not use.
fn is_rejection(answer: &Response) -> bool {
    matches!(&answer.status, Status::Error { code, .. }
        if *code == ErrorCode::UnknownFrameKind as u32 || *code == ErrorCode::MalformedFrame as u32)
}
