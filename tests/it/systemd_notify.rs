//! nexusd under a fake systemd: the test binds the datagram socket that
//! `$NOTIFY_SOCKET` names and reads what the daemon reports there, as
//! systemd would for `systemd/nexusd.service` (Type=notify, WatchdogSec=).
//! READY=1 must follow replay, WATCHDOG=1 must come at half of
//! `$WATCHDOG_USEC` and stop when the serving runtime is wedged (the test
//! daemon's SIGUSR2 switch), and STOPPING=1 must follow SIGTERM.

use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use nexus_client::Transport;
use nexus_tests::store::{NamespaceLedger, batch_texts, check_namespace};
use nexus_tests::{BOUNDED_WAIT, Daemon, Launch, TestDir, signal, test_options};
use nix::sys::signal::Signal;

use crate::BINARIES;

/// The watchdog timeout handed to the daemon: 200 ms, so it pings every 100 ms.
const WATCHDOG_USEC: u64 = 200_000;
/// How long the ping rate is counted over.
const RATE_WINDOW: Duration = Duration::from_secs(1);
/// Silence that proves the pings stopped: fifteen ping intervals.
const QUIET: Duration = Duration::from_millis(1500);
/// Pings tolerated after SIGUSR2: those already sent or in a tick when the
/// workers were taken. A daemon that keeps pinging exceeds it within a second.
const MAX_PINGS_AFTER_WEDGE: usize = 5;

/// systemd's side of sd_notify: a datagram socket in the daemon's temp dir.
struct FakeManager {
    socket: UnixDatagram,
    path: PathBuf,
}

impl FakeManager {
    fn bind(dir: &TestDir) -> Self {
        let path = dir.path().join("notify.sock");
        let socket = UnixDatagram::bind(&path).unwrap_or_else(|e| panic!("bind {}: {e}", path.display()));
        Self { socket, path }
    }

    /// A launch of the daemon with `$NOTIFY_SOCKET` pointing here.
    fn launch(&self, args: &[&str]) -> Launch {
        Launch::args(args).env("NOTIFY_SOCKET", self.path.to_str().expect("a UTF-8 temp path"))
    }

    /// The next datagram's lines, or `None` after `timeout` without one.
    fn next(&self, timeout: Duration) -> Option<Vec<String>> {
        self.socket
            .set_read_timeout(Some(timeout.max(Duration::from_millis(1))))
            .expect("set_read_timeout");
        let mut buffer = [0u8; 4096];
        match self.socket.recv(&mut buffer) {
            Ok(n) => Some(
                String::from_utf8_lossy(&buffer[..n])
                    .lines()
                    .map(str::to_owned)
                    .collect(),
            ),
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => None,
            Err(e) => panic!("recv on the fake NOTIFY_SOCKET: {e}"),
        }
    }

    /// Datagrams up to and including the first holding `line`; panics after
    /// `BOUNDED_WAIT` without it.
    #[track_caller]
    fn until(&self, line: &str) -> Vec<Vec<String>> {
        let deadline = Instant::now() + BOUNDED_WAIT;
        let mut seen = Vec::new();
        while let Some(datagram) = self.next(deadline.saturating_duration_since(Instant::now())) {
            let found = datagram.iter().any(|l| l == line);
            seen.push(datagram);
            if found {
                return seen;
            }
        }
        panic!("no {line:?} within {BOUNDED_WAIT:?}; received {seen:?}")
    }

    /// Throws away what is queued (a previous run's messages).
    fn drain(&self) {
        while self.next(Duration::from_millis(1)).is_some() {}
    }
}

/// Watchdog pings among `datagrams`.
fn pings(datagrams: &[Vec<String>]) -> usize {
    datagrams.iter().flatten().filter(|line| *line == "WATCHDOG=1").count()
}

// Before: nexusd never notified systemd, so a Type=notify unit timed out
// at start; READY=1 must come once the restart's replay is done.
#[test]
fn ready_follows_the_replay_of_a_restart_and_the_daemon_then_serves_every_acknowledged_write() {
    let dir = TestDir::new();
    let manager = FakeManager::bind(&dir);
    let mut daemon = Daemon::launch(BINARIES, dir, manager.launch(&[]));
    manager.until("READY=1");
    let client = daemon.client();
    let mut ledger = NamespaceLedger::new("notify-replay");
    for batch in 0..20 {
        ledger
            .remember(&client, batch, batch_texts(batch, 5, 0))
            .expect("remember");
    }
    drop(client);
    daemon.kill();
    manager.drain();

    daemon.restart();
    let start = manager.until("READY=1");
    let replaying = start
        .iter()
        .position(|d| d.iter().any(|l| l.starts_with("STATUS=replaying")));
    assert_eq!(
        replaying,
        Some(0),
        "the replay is announced first, READY=1 last: {start:?}"
    );
    let replayed = daemon.stats_counter("replay_records");
    assert!(
        replayed >= 20,
        "the restart replayed the 20 acknowledged batches ({replayed})"
    );
    let status = format!("{replayed} WAL records replayed");
    assert!(
        start
            .last()
            .unwrap()
            .iter()
            .any(|l| l.starts_with("STATUS=serving") && l.contains(&status)),
        "READY=1 carries a status saying what was replayed: {start:?}"
    );
    // A large client: 100 hits with their tags and times outgrow a small ring.
    check_namespace(&daemon.large_client(), &ledger, "served after READY=1");
}

// Before: no WATCHDOG=1 at all, so WatchdogSec= restarted a healthy daemon;
// the pings come at half of $WATCHDOG_USEC and stop once the runtime that
// serves clients is wedged, so systemd restarts a hung daemon.
#[test]
fn watchdog_pings_come_at_half_the_timeout_and_stop_when_the_serving_runtime_is_wedged() {
    let dir = TestDir::new();
    let manager = FakeManager::bind(&dir);
    let launch = manager
        .launch(&["--worker-threads", "2"])
        .env("WATCHDOG_USEC", &WATCHDOG_USEC.to_string())
        .env(nexus_daemon::notify::TEST_WEDGE_ENV, "1");
    let daemon = Daemon::launch(BINARIES, dir, launch);
    manager.until("READY=1");

    let counted_from = Instant::now();
    let mut window = Vec::new();
    while let Some(datagram) = manager.next(RATE_WINDOW.saturating_sub(counted_from.elapsed())) {
        window.push(datagram);
    }
    let interval = Duration::from_micros(WATCHDOG_USEC) / 2;
    let expected = (counted_from.elapsed().as_secs_f64() / interval.as_secs_f64()).round() as usize;
    let counted = pings(&window);
    assert!(
        (expected / 3..=expected * 5 / 2).contains(&counted),
        "{counted} pings in {:?}; about {expected} expected at one per {interval:?}",
        counted_from.elapsed()
    );

    signal(daemon.pid(), Signal::SIGUSR2);
    let mut late = Vec::new();
    while let Some(datagram) = manager.next(QUIET) {
        late.push(datagram);
        assert!(
            pings(&late) <= MAX_PINGS_AFTER_WEDGE,
            "the pings went on after the runtime was wedged: {late:?}"
        );
    }
    assert!(
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(daemon.pid() as i32), None).is_ok(),
        "the wedged daemon is still alive: only the watchdog can notice it"
    );
    let options = nexus_client::ConnectOptions {
        timeout: Duration::from_millis(500),
        ..test_options(Transport::SharedMemory)
    };
    assert!(
        daemon.try_connection(options).is_err(),
        "the wedged daemon no longer completes a handshake"
    );
}

// Before: systemd learnt of the shutdown only from the exit; STOPPING=1
// now says the drain has begun.
#[test]
fn sigterm_sends_stopping_before_the_daemon_exits() {
    let dir = TestDir::new();
    let manager = FakeManager::bind(&dir);
    let mut daemon = Daemon::launch(BINARIES, dir, manager.launch(&[]));
    manager.until("READY=1");
    let status = daemon.sigterm_and_wait();
    assert!(status.success(), "nexusd ended with {status}");
    let stop = manager.until("STOPPING=1");
    assert!(
        stop.last().unwrap().iter().any(|l| l.starts_with("STATUS=stopping")),
        "STOPPING=1 carries a status: {stop:?}"
    );
}
