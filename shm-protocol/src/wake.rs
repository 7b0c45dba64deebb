//! Wake-ups between the two processes, built so that the daemon never makes a
//! call that can block on an object the client can reconfigure.
//!
//! - Client → daemon: the daemon's *bell*, an eventfd the daemon creates and
//!   passes to the client. The client rings it with a write; the daemon awaits
//!   it through epoll (edge-triggered, via tokio) and never reads or writes it.
//!   A shared eventfd shares its open file description, so a client can clear
//!   `O_NONBLOCK` or saturate the counter; with no read or write on the
//!   daemon's side there is nothing for that to block. (Each write by the
//!   client raises a new edge even while the counter is non-zero, so an
//!   unread counter loses no wake-up; it would take 2^64 - 2 rings to fill.)
//! - Daemon → client: a futex wake on the ring's own flag word in the shared
//!   segment (`consumer_sleeping` of the response ring, `producer_waiting` of
//!   the request ring). `FUTEX_WAKE` never blocks, whatever the word holds. The
//!   client waits with `FUTEX_WAIT` on that word, in slices, checking between
//!   slices whether the daemon's socket reached EOF (a dead daemon wakes no one).
//!
//! Chosen by measurement (ARCHITECTURE.md, "Wake-ups"): one byte each way on
//! the connection's socket was also safe but cost 1.6 µs more per round trip
//! than eventfds on a machine whose eventfd round trip is 1.7 µs; a futex wake
//! and an unread eventfd cost what the version-1 eventfd pair cost.
//!
//! Whether to signal at all is decided by the ring's flag protocol (`ring.rs`):
//! a side is woken only after it announced sleep, so a busy connection makes no
//! syscall per message.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::sync::atomic::AtomicU32;
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::eventfd::{EfdFlags, EventFd};

/// The daemon's bell: an eventfd the client writes to wake the daemon.
#[derive(Debug)]
pub struct Bell(OwnedFd);

impl Bell {
    /// A new bell (close-on-exec, non-blocking for whoever writes it).
    pub fn new() -> std::io::Result<Self> {
        let fd = EventFd::from_value_and_flags(0, EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)?;
        Ok(Self(fd.into()))
    }

    /// Wraps a bell received from the daemon.
    pub fn from_owned(fd: OwnedFd) -> Self {
        Self(fd)
    }

    /// Client side: wakes the daemon. A full counter (`EAGAIN`) leaves a
    /// pending wake-up, so it is not an error.
    pub fn ring(&self) -> std::io::Result<()> {
        match nix::unistd::write(&self.0, &1u64.to_ne_bytes()) {
            Ok(_) | Err(Errno::EAGAIN) => Ok(()),
            Err(errno) => Err(errno.into()),
        }
    }
}

impl AsFd for Bell {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }
}

impl AsRawFd for Bell {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}

/// Wakes the threads of any process waiting on `word` with [`futex_wait`].
/// Never blocks; a word the peer scribbled on is just an address to the kernel.
pub fn futex_wake(word: &AtomicU32) {
    // SAFETY: FUTEX_WAKE only reads the address to find its hash bucket; the
    // address is valid (a live reference into mapped memory) and 4-aligned.
    // Without FUTEX_PRIVATE_FLAG, so waiters in the other process (same
    // shared mapping) are found. Its result (how many woke) is not needed.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAKE,
            i32::MAX,
            std::ptr::null::<libc::timespec>(),
        );
    }
}

/// Sleeps while `word` still holds `expected`, at most `timeout`; returns at
/// once when it does not (the waker got there first). Spurious returns are
/// possible: callers re-check their condition.
pub fn futex_wait(word: &AtomicU32, expected: u32, timeout: Duration) -> std::io::Result<()> {
    let timeout = libc::timespec {
        tv_sec: timeout.as_secs().min(i64::MAX as u64) as libc::time_t,
        tv_nsec: libc::c_long::from(timeout.subsec_nanos() as i32),
    };
    // SAFETY: the address is valid and 4-aligned (a live reference into mapped
    // memory); FUTEX_WAIT reads the word atomically and sleeps only while it
    // equals `expected`, for at most the relative `timeout` (a valid timespec
    // on our stack).
    let result = unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT,
            expected,
            &raw const timeout,
        )
    };
    if result == 0 {
        return Ok(());
    }
    match Errno::last() {
        Errno::EAGAIN | Errno::ETIMEDOUT | Errno::EINTR => Ok(()),
        errno => Err(errno.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::Ordering;
    use std::time::Instant;

    #[test]
    fn a_futex_waiter_wakes_when_the_word_changes_and_is_woken() {
        let word = Arc::new(AtomicU32::new(1));
        let waiter = {
            let word = word.clone();
            std::thread::spawn(move || {
                while word.load(Ordering::Acquire) == 1 {
                    futex_wait(&word, 1, Duration::from_secs(10)).unwrap();
                }
            })
        };
        std::thread::sleep(Duration::from_millis(20));
        word.store(0, Ordering::Release);
        futex_wake(&word);
        waiter.join().unwrap();
    }

    #[test]
    fn a_futex_wait_on_a_changed_word_returns_at_once_and_a_timeout_is_not_an_error() {
        let word = AtomicU32::new(0);
        let started = Instant::now();
        futex_wait(&word, 1, Duration::from_secs(30)).unwrap();
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "a stale expectation must not sleep"
        );
        futex_wait(&word, 0, Duration::from_millis(1)).unwrap();
    }

    #[test]
    fn a_saturated_bell_is_still_rung_without_error() {
        let bell = Bell::new().unwrap();
        nix::unistd::write(&bell.0, &(u64::MAX - 1).to_ne_bytes()).unwrap();
        bell.ring().unwrap();
    }
}
