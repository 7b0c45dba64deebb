//! Wake-ups between the two processes: one eventfd per direction.
//!
//! Chosen by measurement (ARCHITECTURE.md, "Wake-ups"): a blocking eventfd
//! read costs about as much as a futex here, and unlike a futex it can be
//! awaited by tokio in the daemon (`AsyncFd`) and polled with a timeout in the
//! client. Whether to signal at all is decided by the ring's flag protocol
//! (`ring.rs`); this module only moves the signal.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::time::Duration;

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::eventfd::{EfdFlags, EventFd};

/// One direction's wake-up fd. Non-blocking; waiting goes through `poll`.
#[derive(Debug)]
pub struct WakeFd(OwnedFd);

impl WakeFd {
    /// A new eventfd (close-on-exec, non-blocking).
    pub fn new() -> std::io::Result<Self> {
        let fd = EventFd::from_value_and_flags(0, EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)?;
        Ok(Self(fd.into()))
    }

    /// Wraps an eventfd received from the peer. Reads and writes of 8 bytes
    /// on anything else fail with a clear error, never undefined behaviour.
    pub fn from_owned(fd: OwnedFd) -> Self {
        Self(fd)
    }

    /// Wakes the other side. A full counter (EAGAIN, 2^64-2 pending signals)
    /// already guarantees a wake-up, so it is not an error.
    pub fn signal(&self) -> std::io::Result<()> {
        match nix::unistd::write(&self.0, &1u64.to_ne_bytes()) {
            Ok(_) | Err(Errno::EAGAIN) => Ok(()),
            Err(errno) => Err(errno.into()),
        }
    }

    /// Consumes pending signals without blocking; true when there were any.
    pub fn drain(&self) -> std::io::Result<bool> {
        let mut buf = [0u8; 8];
        match nix::unistd::read(&self.0, &mut buf) {
            Ok(_) => Ok(true),
            Err(Errno::EAGAIN) => Ok(false),
            Err(errno) => Err(errno.into()),
        }
    }

    /// Blocks until signalled or `timeout` passes (`None`: forever); drains
    /// the signal. Returns false on timeout.
    pub fn wait(&self, timeout: Option<Duration>) -> std::io::Result<bool> {
        let timeout = match timeout {
            None => PollTimeout::NONE,
            // Round up so a deadline 0.3 ms away does not turn into a busy loop.
            Some(left) => PollTimeout::try_from(left.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32)
                .unwrap_or(PollTimeout::MAX),
        };
        let mut fds = [PollFd::new(self.0.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, timeout) {
            Ok(0) => Ok(false),
            Ok(_) => self.drain().map(|_| true),
            Err(Errno::EINTR) => Ok(false),
            Err(errno) => Err(errno.into()),
        }
    }
}

impl AsFd for WakeFd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }
}

impl AsRawFd for WakeFd {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_coalesce_into_one_wake_up() {
        let fd = WakeFd::new().unwrap();
        assert!(!fd.wait(Some(Duration::from_millis(1))).unwrap());
        fd.signal().unwrap();
        fd.signal().unwrap();
        assert!(fd.wait(Some(Duration::from_millis(100))).unwrap());
        assert!(!fd.drain().unwrap(), "both signals were consumed by one wait");
    }
}
