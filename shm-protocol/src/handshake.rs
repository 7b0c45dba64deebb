//! The handshake over the Unix stream socket, and the fd passing it needs.
//!
//! Two fixed-size little-endian messages, so the daemon reads an exact byte
//! count under a timeout and a fuzzer can hit every field:
//!
//! ```text
//! ClientHello (96 B):  magic "NXCLIENT" | version u32 | flags u32 | request_ring_bytes u32
//!                      | response_ring_bytes u32 | name_len u16 | reserved u16 | name [64]
//!                      | reserved [4]
//! ServerHello (256 B): magic "NXSERVER" | version u32 | status u32 | segment_bytes u64
//!                      | request_ring_bytes u32 | response_ring_bytes u32 | max_frame_bytes u32
//!                      | reserved u32 | connection_id u64 | message_len u16 | message [200]
//!                      | reserved [14]
//! ```
//! The first 12 bytes of both (magic and version) are frozen for every future
//! version, so a mismatch is always reported in words, never as a hang. On
//! success the ServerHello carries one fd (SCM_RIGHTS): the sealed segment
//! memfd. The socket stays open for the connection's life: it carries the
//! wake-up bytes of both directions (`wake.rs`), and its EOF is how each side
//! learns the other is gone. (Version 1 also passed two eventfds for
//! wake-ups; a client could reconfigure those under the daemon.)

use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use nix::sys::socket::{ControlMessage, ControlMessageOwned, MsgFlags, recvmsg, sendmsg, sockopt};

use crate::wire::ErrorCode;

/// Bytes of a ClientHello.
pub const CLIENT_HELLO_BYTES: usize = 96;
/// Bytes of a ServerHello.
pub const SERVER_HELLO_BYTES: usize = 256;
/// Longest client name (UTF-8 bytes).
pub const MAX_CLIENT_NAME_BYTES: usize = 64;
/// Longest message in a ServerHello.
pub const MAX_SERVER_MESSAGE_BYTES: usize = 200;
/// Fds passed with a successful ServerHello: the segment memfd, nothing else.
pub const HANDSHAKE_FDS: usize = 1;
/// Flag: after the handshake, frames travel over the socket instead of the
/// segment (the in-run baseline of `nexus-bench`, and a fallback).
pub const FLAG_SOCKET_TRANSPORT: u32 = 1;

const CLIENT_MAGIC: [u8; 8] = *b"NXCLIENT";
const SERVER_MAGIC: [u8; 8] = *b"NXSERVER";

/// What the client asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientHello {
    /// The client's [`crate::PROTOCOL_VERSION`].
    pub protocol_version: u32,
    /// `FLAG_*` bits.
    pub flags: u32,
    /// Requested request-ring size (the daemon rounds it to a valid size).
    pub request_ring_bytes: u32,
    /// Requested response-ring size.
    pub response_ring_bytes: u32,
    /// For logs and stats; at most [`MAX_CLIENT_NAME_BYTES`].
    pub name: String,
}

/// What the daemon answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerHello {
    /// The daemon's protocol version.
    pub protocol_version: u32,
    /// 0 on success, else an [`ErrorCode`].
    pub status: u32,
    /// Length of the segment whose fd comes with this message.
    pub segment_bytes: u64,
    /// Granted request-ring size.
    pub request_ring_bytes: u32,
    /// Granted response-ring size.
    pub response_ring_bytes: u32,
    /// Largest frame payload in either ring (or on the socket transport).
    pub max_frame_bytes: u32,
    /// The daemon's id for this connection (logs).
    pub connection_id: u64,
    /// Human explanation (errors), at most [`MAX_SERVER_MESSAGE_BYTES`].
    pub message: String,
}

/// A handshake message that cannot be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HandshakeError {
    /// The bytes do not start with the expected magic: not a Nexus peer.
    #[error("not a Memory Nexus handshake (bad magic)")]
    BadMagic,
    /// The name or message is not valid UTF-8 or too long.
    #[error("handshake field {0} is invalid")]
    BadField(&'static str),
}

impl ClientHello {
    /// Encodes to the fixed wire form. Long names are cut at a char boundary.
    pub fn encode(&self) -> [u8; CLIENT_HELLO_BYTES] {
        let mut out = [0u8; CLIENT_HELLO_BYTES];
        out[0..8].copy_from_slice(&CLIENT_MAGIC);
        put_u32(&mut out, 8, self.protocol_version);
        put_u32(&mut out, 12, self.flags);
        put_u32(&mut out, 16, self.request_ring_bytes);
        put_u32(&mut out, 20, self.response_ring_bytes);
        let name = truncate_utf8(&self.name, MAX_CLIENT_NAME_BYTES);
        out[24..26].copy_from_slice(&(name.len() as u16).to_le_bytes());
        out[28..28 + name.len()].copy_from_slice(name.as_bytes());
        out
    }

    /// Decodes the fixed wire form. The version is returned, not judged: the
    /// daemon compares it and answers a mismatch in words.
    pub fn decode(bytes: &[u8; CLIENT_HELLO_BYTES]) -> Result<Self, HandshakeError> {
        if bytes[0..8] != CLIENT_MAGIC {
            return Err(HandshakeError::BadMagic);
        }
        let name_len = usize::from(u16::from_le_bytes([bytes[24], bytes[25]]));
        if name_len > MAX_CLIENT_NAME_BYTES {
            return Err(HandshakeError::BadField("name_len"));
        }
        let name = std::str::from_utf8(&bytes[28..28 + name_len]).map_err(|_| HandshakeError::BadField("name"))?;
        Ok(Self {
            protocol_version: get_u32(bytes, 8),
            flags: get_u32(bytes, 12),
            request_ring_bytes: get_u32(bytes, 16),
            response_ring_bytes: get_u32(bytes, 20),
            name: name.to_owned(),
        })
    }
}

impl ServerHello {
    /// A refusal with a code and an explanation.
    pub fn refusal(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            protocol_version: crate::PROTOCOL_VERSION,
            status: code as u32,
            segment_bytes: 0,
            request_ring_bytes: 0,
            response_ring_bytes: 0,
            max_frame_bytes: 0,
            connection_id: 0,
            message: message.into(),
        }
    }

    /// Encodes to the fixed wire form. Long messages are cut at a char boundary.
    pub fn encode(&self) -> [u8; SERVER_HELLO_BYTES] {
        let mut out = [0u8; SERVER_HELLO_BYTES];
        out[0..8].copy_from_slice(&SERVER_MAGIC);
        put_u32(&mut out, 8, self.protocol_version);
        put_u32(&mut out, 12, self.status);
        out[16..24].copy_from_slice(&self.segment_bytes.to_le_bytes());
        put_u32(&mut out, 24, self.request_ring_bytes);
        put_u32(&mut out, 28, self.response_ring_bytes);
        put_u32(&mut out, 32, self.max_frame_bytes);
        out[40..48].copy_from_slice(&self.connection_id.to_le_bytes());
        let message = truncate_utf8(&self.message, MAX_SERVER_MESSAGE_BYTES);
        out[48..50].copy_from_slice(&(message.len() as u16).to_le_bytes());
        out[50..50 + message.len()].copy_from_slice(message.as_bytes());
        out
    }

    /// Decodes the fixed wire form.
    pub fn decode(bytes: &[u8; SERVER_HELLO_BYTES]) -> Result<Self, HandshakeError> {
        if bytes[0..8] != SERVER_MAGIC {
            return Err(HandshakeError::BadMagic);
        }
        let message_len = usize::from(u16::from_le_bytes([bytes[48], bytes[49]]));
        if message_len > MAX_SERVER_MESSAGE_BYTES {
            return Err(HandshakeError::BadField("message_len"));
        }
        let message = String::from_utf8_lossy(&bytes[50..50 + message_len]).into_owned();
        Ok(Self {
            protocol_version: get_u32(bytes, 8),
            status: get_u32(bytes, 12),
            segment_bytes: u64::from_le_bytes(bytes[16..24].try_into().expect("8 bytes")),
            request_ring_bytes: get_u32(bytes, 24),
            response_ring_bytes: get_u32(bytes, 28),
            max_frame_bytes: get_u32(bytes, 32),
            connection_id: u64::from_le_bytes(bytes[40..48].try_into().expect("8 bytes")),
            message,
        })
    }
}

/// The peer's credentials (uid, gid, pid) from SO_PEERCRED.
pub fn peer_credentials(socket: BorrowedFd<'_>) -> std::io::Result<(u32, u32, i32)> {
    let creds = nix::sys::socket::getsockopt(&socket, sockopt::PeerCredentials)?;
    Ok((creds.uid(), creds.gid(), creds.pid()))
}

/// Sends `bytes` with `fds` attached (SCM_RIGHTS). Returns bytes sent; the
/// fds travel with the first byte, so a short send only needs the rest
/// written plainly.
pub fn send_with_fds(socket: BorrowedFd<'_>, bytes: &[u8], fds: &[RawFd]) -> std::io::Result<usize> {
    let iov = [IoSlice::new(bytes)];
    let cmsgs = [ControlMessage::ScmRights(fds)];
    let cmsgs: &[ControlMessage] = if fds.is_empty() { &[] } else { &cmsgs };
    Ok(sendmsg::<()>(
        socket.as_raw_fd(),
        &iov,
        cmsgs,
        MsgFlags::MSG_NOSIGNAL,
        None,
    )?)
}

/// Receives up to `buf.len()` bytes and any fds attached (close-on-exec).
/// Returns the byte count (0 on EOF) and the fds, owned.
pub fn recv_with_fds(socket: BorrowedFd<'_>, buf: &mut [u8]) -> std::io::Result<(usize, Vec<OwnedFd>)> {
    let mut iov = [IoSliceMut::new(buf)];
    let mut space = nix::cmsg_space!([RawFd; HANDSHAKE_FDS]);
    let msg = recvmsg::<()>(
        socket.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )?;
    let mut fds = Vec::new();
    for cmsg in msg.cmsgs()? {
        if let ControlMessageOwned::ScmRights(raw) = cmsg {
            // SAFETY: the kernel just installed these fds in our table for us
            // (SCM_RIGHTS); nothing else owns them, so each becomes an OwnedFd once.
            fds.extend(raw.into_iter().map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }));
        }
    }
    if msg.flags.contains(MsgFlags::MSG_CTRUNC) {
        return Err(std::io::Error::other("handshake carried more fds than expected"));
    }
    Ok((msg.bytes, fds))
}

fn put_u32(out: &mut [u8], at: usize, value: u32) {
    out[at..at + 4].copy_from_slice(&value.to_le_bytes());
}

fn get_u32(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"))
}

fn truncate_utf8(text: &str, max_bytes: usize) -> &str {
    let mut end = text.len().min(max_bytes);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn hellos_round_trip() {
        let hello = ClientHello {
            protocol_version: 1,
            flags: FLAG_SOCKET_TRANSPORT,
            request_ring_bytes: 1 << 20,
            response_ring_bytes: 1 << 16,
            name: "agent-ü".into(),
        };
        assert_eq!(ClientHello::decode(&hello.encode()).unwrap(), hello);
        let answer = ServerHello::refusal(ErrorCode::VersionMismatch, "client v2, daemon v1");
        assert_eq!(ServerHello::decode(&answer.encode()).unwrap(), answer);
    }

    proptest! {
        #[test]
        fn any_client_bytes_decode_or_fail_cleanly(bytes in proptest::collection::vec(any::<u8>(), CLIENT_HELLO_BYTES)) {
            let bytes: [u8; CLIENT_HELLO_BYTES] = bytes.try_into().unwrap();
            let _ = ClientHello::decode(&bytes);
        }

        #[test]
        fn any_server_bytes_decode_or_fail_cleanly(mut bytes in proptest::collection::vec(any::<u8>(), SERVER_HELLO_BYTES)) {
            bytes[..8].copy_from_slice(&SERVER_MAGIC);
            let bytes: [u8; SERVER_HELLO_BYTES] = bytes.try_into().unwrap();
            let _ = ServerHello::decode(&bytes);
        }
    }
}
