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
//! success the ServerHello carries two fds (SCM_RIGHTS): the sealed segment
//! memfd and the daemon's bell (an eventfd the client writes to wake the
//! daemon, which never reads it; see `wake.rs`). The socket stays open for the
//! connection's life: its EOF is how each side learns the other is gone, and
//! nothing else travels on it. (Version 1 also passed a client eventfd that
//! the daemon wrote: a client could make that write block.)

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
/// Fds passed with a successful ServerHello: the segment memfd, the daemon's bell.
pub const HANDSHAKE_FDS: usize = 2;
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

    /// Hellos as a current client sends them, every other field arbitrary.
    fn client_hellos() -> impl Strategy<Value = ClientHello> {
        let name = "\\PC{0,40}".prop_map(|name| truncate_utf8(&name, MAX_CLIENT_NAME_BYTES).to_owned());
        (any::<u32>(), any::<u32>(), any::<u32>(), name).prop_map(|(flags, request, response, name)| ClientHello {
            protocol_version: crate::PROTOCOL_VERSION,
            flags,
            request_ring_bytes: request,
            response_ring_bytes: response,
            name,
        })
    }

    /// Answers with every field arbitrary, the message valid UTF-8.
    fn server_hellos() -> impl Strategy<Value = ServerHello> {
        let message = "\\PC{0,80}".prop_map(|text| truncate_utf8(&text, MAX_SERVER_MESSAGE_BYTES).to_owned());
        let numbers = (
            any::<u32>(),
            any::<u64>(),
            any::<u32>(),
            any::<u32>(),
            any::<u32>(),
            any::<u64>(),
        );
        (numbers, message).prop_map(
            |((status, segment, request, response, max_frame, id), message)| ServerHello {
                protocol_version: crate::PROTOCOL_VERSION,
                status,
                segment_bytes: segment,
                request_ring_bytes: request,
                response_ring_bytes: response,
                max_frame_bytes: max_frame,
                connection_id: id,
                message,
            },
        )
    }

    /// `N` arbitrary bytes behind the right magic and version, with a length
    /// field (at `len_at`) up to twice its limit, so both verdicts occur.
    fn bytes_behind_magic<const N: usize>(
        magic: [u8; 8],
        len_at: usize,
        max_len: usize,
    ) -> impl Strategy<Value = [u8; N]> {
        let len = 0..=(2 * max_len) as u16;
        (proptest::collection::vec(any::<u8>(), N), len).prop_map(move |(bytes, len)| {
            let mut bytes: [u8; N] = bytes.try_into().expect("N bytes");
            bytes[..8].copy_from_slice(&magic);
            put_u32(&mut bytes, 8, crate::PROTOCOL_VERSION);
            bytes[len_at..len_at + 2].copy_from_slice(&len.to_le_bytes());
            bytes
        })
    }

    proptest! {
        // The fields reach the decoder: the old property tests fed arbitrary
        // bytes, whose magic never matched, so they only ever saw BadMagic.
        #[test]
        fn client_hellos_decode_to_every_field_whatever_the_reserved_bytes(hello in client_hellos(), noise in any::<[u8; 4]>()) {
            let mut bytes = hello.encode();
            bytes[26..28].copy_from_slice(&noise[..2]);
            bytes[92..96].copy_from_slice(&noise);
            prop_assert_eq!(ClientHello::decode(&bytes), Ok(hello));
        }

        #[test]
        fn client_bytes_with_the_right_magic_fail_only_on_their_name(bytes in bytes_behind_magic::<CLIENT_HELLO_BYTES>(CLIENT_MAGIC, 24, MAX_CLIENT_NAME_BYTES)) {
            let name_len = usize::from(u16::from_le_bytes([bytes[24], bytes[25]]));
            let decoded = ClientHello::decode(&bytes);
            if name_len > MAX_CLIENT_NAME_BYTES {
                prop_assert_eq!(decoded, Err(HandshakeError::BadField("name_len")));
            } else if let Ok(name) = std::str::from_utf8(&bytes[28..28 + name_len]) {
                let hello = decoded.expect("a valid name decodes");
                prop_assert_eq!(&hello.name, name);
                prop_assert_eq!(hello.protocol_version, crate::PROTOCOL_VERSION);
                let fields = [hello.flags, hello.request_ring_bytes, hello.response_ring_bytes];
                prop_assert_eq!(fields, [get_u32(&bytes, 12), get_u32(&bytes, 16), get_u32(&bytes, 20)]);
            } else {
                prop_assert_eq!(decoded, Err(HandshakeError::BadField("name")));
            }
        }

        #[test]
        fn any_client_bytes_without_the_magic_are_refused_as_bad_magic(bytes in any::<[u8; CLIENT_HELLO_BYTES]>()) {
            prop_assume!(bytes[..8] != CLIENT_MAGIC);
            prop_assert_eq!(ClientHello::decode(&bytes), Err(HandshakeError::BadMagic));
        }

        #[test]
        fn server_hellos_decode_to_every_field(hello in server_hellos()) {
            prop_assert_eq!(ServerHello::decode(&hello.encode()), Ok(hello));
        }

        #[test]
        fn server_bytes_with_the_right_magic_fail_only_on_their_message_length(bytes in bytes_behind_magic::<SERVER_HELLO_BYTES>(SERVER_MAGIC, 48, MAX_SERVER_MESSAGE_BYTES)) {
            let message_len = usize::from(u16::from_le_bytes([bytes[48], bytes[49]]));
            let decoded = ServerHello::decode(&bytes);
            if message_len > MAX_SERVER_MESSAGE_BYTES {
                prop_assert_eq!(decoded, Err(HandshakeError::BadField("message_len")));
            } else {
                let hello = decoded.expect("any message of a valid length decodes (lossily)");
                prop_assert_eq!(hello.message, String::from_utf8_lossy(&bytes[50..50 + message_len]));
                prop_assert_eq!((hello.status, hello.max_frame_bytes), (get_u32(&bytes, 12), get_u32(&bytes, 32)));
            }
        }

        #[test]
        fn any_server_bytes_without_the_magic_are_refused_as_bad_magic(bytes in any::<[u8; SERVER_HELLO_BYTES]>()) {
            prop_assume!(bytes[..8] != SERVER_MAGIC);
            prop_assert_eq!(ServerHello::decode(&bytes), Err(HandshakeError::BadMagic));
        }
    }
}
