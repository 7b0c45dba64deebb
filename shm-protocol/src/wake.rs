//! Wake-ups between the two processes: one byte over the connection's own
//! Unix socket, in either direction.
//!
//! Why the socket and not a shared eventfd (protocol version 1 used two):
//! a file descriptor both processes hold shares one open file description,
//! so the client could clear its `O_NONBLOCK` flag or saturate its counter and
//! make the daemon's next `read` or `write` block a worker thread forever. Each
//! end of a socket pair is its own open file description: the daemon's end is
//! private to the daemon, and every call here passes `MSG_DONTWAIT`, which
//! makes that one call non-blocking whatever the file's flags say. So no wake-up
//! call can block on anything the peer controls. The socket was already open
//! for the connection's life (its EOF is the crash signal), so a waiter watches
//! one fd for both "woken" and "peer gone".
//!
//! Whether to signal at all is decided by the ring's flag protocol
//! (`ring.rs`): a byte is sent only to a side that announced it sleeps, so a
//! busy connection makes no syscall per message and the bytes in flight are
//! bounded by the announcements. The daemon counts both and treats surplus
//! bytes from a client as a protocol violation.

use std::os::fd::{AsRawFd, BorrowedFd};
use std::time::Duration;

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::socket::{MsgFlags, recv, send};

/// The byte a wake-up carries. Any other byte from a peer is a protocol error.
pub const WAKE_BYTE: u8 = b'W';

/// Bytes read per `recv` when draining wake-ups: more than a well-behaved peer
/// ever has pending (one per announced sleep), few enough for the stack.
pub const DRAIN_CHUNK_BYTES: usize = 64;

/// What one drain of the socket found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Drained {
    /// Wake bytes consumed.
    pub wake_bytes: u64,
    /// Bytes that were not [`WAKE_BYTE`] (a protocol violation by the peer).
    pub foreign_bytes: u64,
    /// The peer closed its end (or reset the connection).
    pub peer_gone: bool,
    /// The socket had nothing more to read (`EAGAIN`), as opposed to the
    /// chunk bound stopping the drain.
    pub read_dry: bool,
}

/// Wakes the peer: one [`WAKE_BYTE`], never blocking. A full socket buffer
/// (`EAGAIN`) means unread bytes are already waiting for the peer, which wakes
/// it just as well, so it is not an error. A closed peer is (`EPIPE`,
/// `ECONNRESET`); `MSG_NOSIGNAL` keeps that from raising SIGPIPE.
pub fn signal(socket: BorrowedFd<'_>) -> std::io::Result<()> {
    match send(
        socket.as_raw_fd(),
        &[WAKE_BYTE],
        MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL,
    ) {
        Ok(_) | Err(Errno::EAGAIN) | Err(Errno::EINTR) => Ok(()),
        Err(errno) => Err(errno.into()),
    }
}

/// Consumes whatever the peer sent, without blocking, at most `max_chunks`
/// reads of [`DRAIN_CHUNK_BYTES`] (a bound on the work a flooding peer can
/// cause per call; the caller judges the counts).
pub fn drain(socket: BorrowedFd<'_>, max_chunks: u32) -> std::io::Result<Drained> {
    let mut drained = Drained::default();
    let mut chunk = [0u8; DRAIN_CHUNK_BYTES];
    for _ in 0..max_chunks {
        match recv(socket.as_raw_fd(), &mut chunk, MsgFlags::MSG_DONTWAIT) {
            Ok(0) => {
                drained.peer_gone = true;
                break;
            }
            Ok(n) => {
                let wake = chunk[..n].iter().filter(|&&b| b == WAKE_BYTE).count() as u64;
                drained.wake_bytes += wake;
                drained.foreign_bytes += n as u64 - wake;
            }
            Err(Errno::EAGAIN) => {
                drained.read_dry = true;
                break;
            }
            Err(Errno::EINTR) => continue,
            Err(Errno::ECONNRESET) => {
                drained.peer_gone = true;
                break;
            }
            Err(errno) => return Err(errno.into()),
        }
    }
    Ok(drained)
}

/// Blocks until the socket is readable (a wake-up or the peer's EOF) or
/// `timeout` passes (`None`: forever), then drains it. Returns `None` on
/// timeout. For the blocking client; the daemon awaits readiness through tokio.
pub fn wait(socket: BorrowedFd<'_>, timeout: Option<Duration>) -> std::io::Result<Option<Drained>> {
    let timeout = match timeout {
        None => PollTimeout::NONE,
        // Round up so a deadline 0.3 ms away does not turn into a busy loop.
        Some(left) => PollTimeout::try_from(left.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32)
            .unwrap_or(PollTimeout::MAX),
    };
    let mut fds = [PollFd::new(socket, PollFlags::POLLIN)];
    match poll(&mut fds, timeout) {
        Ok(0) | Err(Errno::EINTR) => Ok(None),
        Ok(_) => {
            let events = fds[0].revents().unwrap_or(PollFlags::empty());
            let mut drained = drain(socket, 4)?;
            if events.intersects(PollFlags::POLLHUP | PollFlags::POLLERR) {
                drained.peer_gone = true;
            }
            Ok(Some(drained))
        }
        Err(errno) => Err(errno.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;
    use std::os::unix::net::UnixStream;

    #[test]
    fn signals_arrive_as_wake_bytes_and_coalesce_into_one_wait() {
        let (a, b) = UnixStream::pair().unwrap();
        assert_eq!(wait(b.as_fd(), Some(Duration::from_millis(1))).unwrap(), None);
        signal(a.as_fd()).unwrap();
        signal(a.as_fd()).unwrap();
        let drained = wait(b.as_fd(), Some(Duration::from_millis(100))).unwrap().unwrap();
        assert_eq!(drained.wake_bytes, 2);
        assert_eq!(drained.foreign_bytes, 0);
        assert!(!drained.peer_gone);
        assert_eq!(
            drain(b.as_fd(), 4).unwrap().wake_bytes,
            0,
            "both were consumed by one wait"
        );
    }

    #[test]
    fn a_closed_peer_is_reported_by_wait_and_by_signal() {
        let (a, b) = UnixStream::pair().unwrap();
        drop(a);
        let drained = wait(b.as_fd(), Some(Duration::from_millis(100))).unwrap().unwrap();
        assert!(drained.peer_gone);
        assert!(
            signal(b.as_fd()).is_err(),
            "a closed peer is an error, not a silent wake-up"
        );
    }

    #[test]
    fn foreign_bytes_are_counted_apart() {
        let (a, b) = UnixStream::pair().unwrap();
        std::io::Write::write_all(&mut &a, b"Wxyz").unwrap();
        let drained = drain(b.as_fd(), 4).unwrap();
        assert_eq!((drained.wake_bytes, drained.foreign_bytes), (1, 3));
    }

    #[test]
    fn a_blocking_peer_socket_never_blocks_signal_or_drain() {
        // The peer's end is blocking and its buffer is full: our calls on our
        // own end still return at once (MSG_DONTWAIT on every call).
        let (a, b) = UnixStream::pair().unwrap();
        a.set_nonblocking(false).unwrap();
        b.set_nonblocking(false).unwrap();
        for _ in 0..1_000_000 {
            if send(a.as_raw_fd(), &[WAKE_BYTE; 4096], MsgFlags::MSG_DONTWAIT).is_err() {
                break;
            }
        }
        signal(a.as_fd()).unwrap();
        let drained = drain(b.as_fd(), 2).unwrap();
        assert_eq!(
            drained.wake_bytes,
            2 * DRAIN_CHUNK_BYTES as u64,
            "bounded by max_chunks"
        );
    }
}
