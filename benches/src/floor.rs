//! The machine's floor for a round trip with a wake-up each way, no daemon:
//! two threads ping-ponging through a pair of eventfds (blocking `read`), and
//! through a Unix stream socketpair (blocking `read`/`write` of 64 bytes), and
//! through the transport's own pair: an eventfd bell one way and a futex word
//! the other (`wake::Bell`, `wake::futex_wake`/`futex_wait`).
//!
//! `nexus-bench ping` at depth 1 is two such wake-ups plus the daemon's work,
//! so this says how much of its latency is the machine's (a KVM guest's
//! cross-core wake-up varies from day to day and between hosts) and how much
//! is ours. Threads, not processes: the scheduler's wake-up path is the same.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::Instant;

use std::sync::atomic::{AtomicU32, Ordering};

use nexus_shm_protocol::wake;
use nix::sys::eventfd::{EfdFlags, EventFd};
use serde::Serialize;

use crate::error::BenchError;
use crate::report::{micros, percentile};

/// Round trips per mechanism.
pub const DEFAULT_ROUND_TRIPS: u64 = 50_000;

/// The measurement (also the `--json` object).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct FloorReport {
    /// Round trips measured per mechanism.
    pub round_trips: u64,
    /// Median round trip through two eventfds, nanoseconds.
    pub eventfd_p50_ns: u64,
    /// 99th percentile of the same.
    pub eventfd_p99_ns: u64,
    /// Median round trip through a Unix stream socketpair, nanoseconds.
    pub socketpair_p50_ns: u64,
    /// 99th percentile of the same.
    pub socketpair_p99_ns: u64,
    /// Median round trip through an eventfd bell and a futex word, as the
    /// transport wakes each side, nanoseconds.
    pub bell_futex_p50_ns: u64,
    /// 99th percentile of the same.
    pub bell_futex_p99_ns: u64,
}

/// Measures both mechanisms, `round_trips` each (after a tenth as warm-up).
pub fn run_floor(round_trips: u64) -> Result<FloorReport, BenchError> {
    if round_trips == 0 {
        return Err(BenchError::InvalidArgument("--round-trips must be at least 1".into()));
    }
    let mut eventfd = eventfd_round_trips(round_trips)?;
    let mut socketpair = socketpair_round_trips(round_trips)?;
    let mut bell_futex = bell_futex_round_trips(round_trips)?;
    eventfd.sort_unstable();
    socketpair.sort_unstable();
    bell_futex.sort_unstable();
    Ok(FloorReport {
        round_trips,
        eventfd_p50_ns: percentile(&eventfd, 0.5),
        eventfd_p99_ns: percentile(&eventfd, 0.99),
        socketpair_p50_ns: percentile(&socketpair, 0.5),
        socketpair_p99_ns: percentile(&socketpair, 0.99),
        bell_futex_p50_ns: percentile(&bell_futex, 0.5),
        bell_futex_p99_ns: percentile(&bell_futex, 0.99),
    })
}

fn eventfd_round_trips(n: u64) -> Result<Vec<u64>, BenchError> {
    let blocking_eventfd = || EventFd::from_value_and_flags(0, EfdFlags::EFD_CLOEXEC).map_err(std::io::Error::from);
    let (to_echo, to_main) = (blocking_eventfd()?, blocking_eventfd()?);
    let total = n + n / 10;
    std::thread::scope(|scope| {
        let echo = scope.spawn(|| -> std::io::Result<()> {
            for _ in 0..total {
                to_echo.read()?;
                to_main.write(1)?;
            }
            Ok(())
        });
        let mut samples = Vec::with_capacity(n as usize);
        for i in 0..total {
            let sent = Instant::now();
            to_echo.write(1).map_err(std::io::Error::from)?;
            to_main.read().map_err(std::io::Error::from)?;
            if i >= total - n {
                samples.push(sent.elapsed().as_nanos() as u64);
            }
        }
        echo.join().expect("the echo thread panicked")?;
        Ok(samples)
    })
}

fn bell_futex_round_trips(n: u64) -> Result<Vec<u64>, BenchError> {
    let bell = EventFd::from_value_and_flags(0, EfdFlags::EFD_CLOEXEC).map_err(std::io::Error::from)?;
    let word = AtomicU32::new(0);
    let total = n + n / 10;
    std::thread::scope(|scope| {
        let echo = scope.spawn(|| -> std::io::Result<()> {
            for _ in 0..total {
                bell.read()?;
                word.store(0, Ordering::Release);
                wake::futex_wake(&word);
            }
            Ok(())
        });
        let mut samples = Vec::with_capacity(n as usize);
        for i in 0..total {
            let sent = Instant::now();
            word.store(1, Ordering::Release);
            bell.write(1).map_err(std::io::Error::from)?;
            while word.load(Ordering::Acquire) == 1 {
                wake::futex_wait(&word, 1, std::time::Duration::from_secs(1))?;
            }
            if i >= total - n {
                samples.push(sent.elapsed().as_nanos() as u64);
            }
        }
        echo.join().expect("the echo thread panicked")?;
        Ok(samples)
    })
}

fn socketpair_round_trips(n: u64) -> Result<Vec<u64>, BenchError> {
    let (mut main_end, mut echo_end) = UnixStream::pair()?;
    let total = n + n / 10;
    std::thread::scope(|scope| {
        let echo = scope.spawn(move || -> std::io::Result<()> {
            let mut message = [0_u8; 64];
            for _ in 0..total {
                echo_end.read_exact(&mut message)?;
                echo_end.write_all(&message)?;
            }
            Ok(())
        });
        let mut message = [7_u8; 64];
        let mut samples = Vec::with_capacity(n as usize);
        for i in 0..total {
            let sent = Instant::now();
            main_end.write_all(&message)?;
            main_end.read_exact(&mut message)?;
            if i >= total - n {
                samples.push(sent.elapsed().as_nanos() as u64);
            }
        }
        echo.join().expect("the echo thread panicked")?;
        Ok(samples)
    })
}

/// The floor result as a table.
pub fn floor_table(r: &FloorReport) -> String {
    format!(
        "floor: {} round trips between two threads\neventfd pair   p50 {}  p99 {}\nsocketpair     p50 {}  p99 {}\nbell + futex   p50 {}  p99 {}\n",
        r.round_trips,
        micros(r.eventfd_p50_ns),
        micros(r.eventfd_p99_ns),
        micros(r.socketpair_p50_ns),
        micros(r.socketpair_p99_ns),
        micros(r.bell_futex_p50_ns),
        micros(r.bell_futex_p99_ns)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_mechanisms_complete_their_round_trips() {
        let report = run_floor(200).expect("floor");
        assert_eq!(report.round_trips, 200);
        assert!(report.eventfd_p50_ns > 0 && report.eventfd_p50_ns <= report.eventfd_p99_ns);
        assert!(report.socketpair_p50_ns > 0 && report.socketpair_p50_ns <= report.socketpair_p99_ns);
    }
}
