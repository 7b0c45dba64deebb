//! The client's errors: each names the failure as the caller sees it.

use std::path::PathBuf;
use std::time::Duration;

/// Everything a call can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// No daemon answers at the socket path.
    #[error("cannot connect to nexusd at {path} (is it running? set NEXUS_SOCKET or --socket): {source}")]
    Connect {
        /// The socket path tried.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The daemon refused the handshake (uid not allowed, too many clients, ...).
    #[error("nexusd refused the connection ({code}): {message}")]
    Refused {
        /// The wire error code.
        code: u32,
        /// The daemon's explanation.
        message: String,
    },
    /// The daemon speaks another protocol version.
    #[error("protocol version mismatch: {message}")]
    VersionMismatch {
        /// The daemon's explanation.
        message: String,
    },
    /// The daemon's handshake or segment was not understood.
    #[error("handshake failed: {0}")]
    Handshake(String),
    /// The process answering on the socket runs as another uid than expected
    /// (`ConnectOptions::daemon_uid`, `NEXUS_DAEMON_UID`).
    #[error("the process on {path} runs as uid {actual}, not the expected nexusd uid {expected}")]
    UntrustedDaemon {
        /// The socket path.
        path: PathBuf,
        /// The uid expected.
        expected: u32,
        /// The peer's uid (SO_PEERCRED).
        actual: u32,
    },
    /// The daemon closed the connection or died; reconnect to go on.
    #[error("the connection to nexusd is gone (daemon stopped or closed it); reconnect")]
    DaemonGone,
    /// No answer within the call's timeout.
    #[error("no answer from nexusd within {0:?}")]
    Timeout(Duration),
    /// The request ring stayed full until the deadline.
    #[error("nexusd is busy: the request ring stayed full for {0:?}")]
    Busy(Duration),
    /// The request does not fit in a frame.
    #[error("the request exceeds the maximum frame of {max} bytes")]
    FrameTooLarge {
        /// The negotiated maximum payload.
        max: u64,
    },
    /// The daemon's answer or the shared state was invalid; the connection is closed.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// The daemon answered with an error status.
    #[error("nexusd error {code}: {message}")]
    Status {
        /// The wire error code (see `nexus_shm_protocol::wire::ErrorCode`).
        code: u32,
        /// The daemon's explanation.
        message: String,
    },
    /// A syscall failed.
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
}

impl ClientError {
    /// True when the connection cannot be used any more and must be replaced.
    pub fn is_fatal(&self) -> bool {
        matches!(self, Self::DaemonGone | Self::Protocol(_) | Self::Io(_))
    }
}
