//! sd_notify: what nexusd tells systemd when it runs as a `Type=notify`
//! service (`systemd/nexusd.service`).
//!
//! - [`ServiceManager::take_from_env`] reads `$NOTIFY_SOCKET` and
//!   `$WATCHDOG_USEC` once at start and removes them (and `$WATCHDOG_PID`)
//!   from the environment, so no child process inherits them;
//! - [`Notifier`] sends one datagram per state change (`READY=1`,
//!   `STATUS=…`, `WATCHDOG=1`, `STOPPING=1`) to the manager's socket, a path
//!   or an abstract name (`@…`). It is the protocol of sd_notify(3) written
//!   on std's `UnixDatagram`: the messages are a few lines of text, so a
//!   crate would add nothing;
//! - [`feed_watchdog`] is the `WATCHDOG=1` loop: a task on the serving
//!   runtime that pings only after a probe of the serving path answered, so
//!   a wedged runtime or store stops the pings and systemd restarts nexusd;
//! - [`WedgeSwitch`]: the test daemon's way to wedge the runtime on purpose
//!   (`nexusd-it` only), so a test can see the pings stop.
//!
//! What it does not do: decide when the daemon is ready or what the probe
//! checks (`cli.rs` does), or socket activation (see `systemd/README.md`).

use std::future::Future;
use std::io;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::Duration;

use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// Where systemd listens for notifications (set for `Type=notify` units).
pub const NOTIFY_SOCKET_ENV: &str = "NOTIFY_SOCKET";
/// The watchdog timeout in µs (set when the unit has `WatchdogSec=`).
pub const WATCHDOG_USEC_ENV: &str = "WATCHDOG_USEC";
/// The pid `WATCHDOG_USEC` is meant for; a child that inherited both from
/// its parent must not take the parent's watchdog.
pub const WATCHDOG_PID_ENV: &str = "WATCHDOG_PID";
/// Environment variable the test daemon `nexusd-it` honours (see
/// [`WedgeSwitch::from_env`]): `1` makes SIGUSR2 wedge the runtime.
pub const TEST_WEDGE_ENV: &str = "NEXUS_TEST_WEDGE_ON_SIGUSR2";

/// Pings per watchdog timeout: systemd's own advice (sd_watchdog_enabled(3))
/// is to ping at half the timeout, so one late ping is not yet a restart.
pub const PINGS_PER_WATCHDOG_TIMEOUT: u32 = 2;
/// Shortest ping interval honoured: a typo such as `WatchdogSec=1ms` must not
/// turn the watchdog task into a busy loop.
pub const MIN_WATCHDOG_INTERVAL: Duration = Duration::from_millis(10);
/// Longest `STATUS=` text sent: the manager's datagram buffer is a few KiB
/// and `systemctl status` shows one line.
pub const MAX_STATUS_BYTES: usize = 512;

/// One state change, as sd_notify(3) spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State<'a> {
    /// Start-up is finished: the socket accepts and replay is done.
    Ready,
    /// A line for `systemctl status`.
    Status(&'a str),
    /// The serving loop is alive.
    Watchdog,
    /// Shutdown has begun.
    Stopping,
}

/// A notification that could not be set up or sent.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NotifyError {
    /// `$NOTIFY_SOCKET` is neither an absolute path nor an abstract name.
    #[error("{NOTIFY_SOCKET_ENV}={value:?} is neither an absolute socket path nor an abstract name starting with '@'")]
    BadSocketAddress {
        /// The value found.
        value: String,
    },
    /// `$WATCHDOG_USEC` is not a positive number of microseconds.
    #[error("{WATCHDOG_USEC_ENV}={value:?} is not a positive number of microseconds")]
    BadWatchdogTimeout {
        /// The value found.
        value: String,
    },
    /// The datagram socket could not be created or the message not sent.
    #[error("cannot notify the service manager at {socket}: {source}")]
    Send {
        /// `$NOTIFY_SOCKET` as given.
        socket: String,
        /// The system's error.
        source: io::Error,
    },
}

/// What the service manager asked for at start.
#[derive(Debug, Default)]
pub struct ServiceManager {
    /// Where to send notifications; `None` when not run by a manager
    /// that listens (a plain `nexusd` in a terminal).
    pub notifier: Option<Notifier>,
    /// How often to send `WATCHDOG=1`; `None` without `WatchdogSec=`.
    pub watchdog_interval: Option<Duration>,
}

/// A connection to the service manager's notification socket.
#[derive(Debug)]
pub struct Notifier {
    socket: UnixDatagram,
    address: SocketAddr,
    /// `$NOTIFY_SOCKET` as given, for error messages.
    name: String,
}

impl ServiceManager {
    /// Reads `$NOTIFY_SOCKET` and `$WATCHDOG_USEC` and removes them and
    /// `$WATCHDOG_PID` from the environment. Errors name the bad variable;
    /// the caller logs them and runs on without that part.
    ///
    /// # Safety
    ///
    /// Changes the process environment: no other thread may exist yet (call
    /// it first thing in `main`), since another thread reading the
    /// environment at the same time is undefined behaviour.
    pub unsafe fn take_from_env() -> (Self, Vec<NotifyError>) {
        let socket = std::env::var(NOTIFY_SOCKET_ENV).ok();
        let watchdog_usec = std::env::var(WATCHDOG_USEC_ENV).ok();
        let watchdog_pid = std::env::var(WATCHDOG_PID_ENV).ok();
        for name in [NOTIFY_SOCKET_ENV, WATCHDOG_USEC_ENV, WATCHDOG_PID_ENV] {
            // SAFETY: the caller guarantees that this process has one thread
            // (the contract of this `unsafe fn`).
            unsafe { std::env::remove_var(name) };
        }
        let mut errors = Vec::new();
        let notifier = socket.and_then(|value| Notifier::connect(&value).map_err(|e| errors.push(e)).ok());
        let watchdog_interval =
            watchdog_interval(watchdog_usec.as_deref(), watchdog_pid.as_deref(), std::process::id())
                .map_err(|e| errors.push(e))
                .ok()
                .flatten();
        let manager = Self {
            notifier,
            watchdog_interval,
        };
        (manager, errors)
    }

    /// Sends `states` when a manager listens; a failure is logged, never
    /// fatal (a daemon that serves is more use than one that exits because
    /// systemd went away).
    pub fn notify(&self, states: &[State<'_>]) {
        if let Some(notifier) = &self.notifier
            && let Err(error) = notifier.send(states)
        {
            warn!(%error, "sd_notify failed");
        }
    }
}

impl Notifier {
    /// A notifier for `$NOTIFY_SOCKET`'s value: an absolute path, or `@name`
    /// for a name in the abstract namespace.
    pub fn connect(value: &str) -> Result<Self, NotifyError> {
        let address = socket_address(value)?;
        let socket = UnixDatagram::unbound().map_err(|source| NotifyError::Send {
            socket: value.to_owned(),
            source,
        })?;
        Ok(Self {
            socket,
            address,
            name: value.to_owned(),
        })
    }

    /// Sends `states` in one datagram, so systemd sees `READY=1` and its
    /// `STATUS=` together.
    pub fn send(&self, states: &[State<'_>]) -> Result<(), NotifyError> {
        let message = message(states);
        self.socket
            .send_to_addr(message.as_bytes(), &self.address)
            .map(drop)
            .map_err(|source| NotifyError::Send {
                socket: self.name.clone(),
                source,
            })
    }
}

/// Sends `WATCHDOG=1` every `interval` while `probe` keeps answering, until
/// `stop` is cancelled. Runs as a task on the serving runtime: when its
/// workers are wedged this task is never polled, and when the probe hangs
/// the loop waits on it, so in both cases the pings stop and systemd
/// restarts the daemon after `WatchdogSec=`. A missed tick is not made up
/// with a burst of pings: each ping must follow a probe that answered.
pub async fn feed_watchdog<P, F>(notifier: &Notifier, interval: Duration, mut probe: P, stop: CancellationToken)
where
    P: FnMut() -> F,
    F: Future<Output = ()>,
{
    let interval = interval.max(MIN_WATCHDOG_INTERVAL);
    info!(?interval, "systemd watchdog: pinging while the serving loop answers");
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut failed = false;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = ticks.tick() => {}
        }
        probe().await;
        match notifier.send(&[State::Watchdog]) {
            Ok(()) => failed = false,
            // Logged once per failure streak, not once per tick.
            Err(error) if !failed => {
                failed = true;
                warn!(%error, "systemd watchdog ping failed");
            }
            Err(_) => {}
        }
    }
}

/// The daemon under test's switch to wedge its own runtime, so a test can
/// check that the watchdog pings stop when the serving loop cannot run.
/// `nexusd` never arms it; `nexusd-it` arms it when
/// `$NEXUS_TEST_WEDGE_ON_SIGUSR2` is `1`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WedgeSwitch {
    armed: bool,
}

impl WedgeSwitch {
    /// The switch `nexusd` runs with: never wedges.
    pub const OFF: Self = Self { armed: false };

    /// Armed when `$NEXUS_TEST_WEDGE_ON_SIGUSR2` is `1` (for `nexusd-it` only).
    pub fn from_env() -> Self {
        Self {
            armed: std::env::var(TEST_WEDGE_ENV).is_ok_and(|value| value == "1"),
        }
    }

    /// When armed, SIGUSR2 occupies every worker thread of `runtime` with a
    /// task that blocks for ever (the bug a watchdog exists for: blocking
    /// code in async tasks, a deadlock). The process stays alive; the
    /// signal thread and the main thread still run.
    pub fn install(self, runtime: &tokio::runtime::Handle) -> io::Result<()> {
        if !self.armed {
            return Ok(());
        }
        let mut signals = signal_hook::iterator::Signals::new([signal_hook::consts::SIGUSR2])?;
        let runtime = runtime.clone();
        std::thread::Builder::new()
            .name("nexusd-test-wedge".into())
            .spawn(move || {
                if signals.forever().next().is_some() {
                    wedge(&runtime);
                }
            })?;
        warn!("test switch armed: SIGUSR2 wedges every runtime worker");
        Ok(())
    }
}

/// Blocks every worker of `runtime` for good. The tasks are left running
/// on purpose: they are the fault being simulated.
fn wedge(runtime: &tokio::runtime::Handle) {
    let workers = runtime.metrics().num_workers();
    warn!(workers, "SIGUSR2: wedging every runtime worker (test switch)");
    for _ in 0..workers {
        drop(runtime.spawn(async {
            loop {
                std::thread::park();
            }
        }));
    }
}

/// `$NOTIFY_SOCKET`'s value as a socket address.
fn socket_address(value: &str) -> Result<SocketAddr, NotifyError> {
    use std::os::linux::net::SocketAddrExt;
    let bad = || NotifyError::BadSocketAddress {
        value: value.to_owned(),
    };
    if let Some(name) = value.strip_prefix('@') {
        return SocketAddr::from_abstract_name(name.as_bytes()).map_err(|_| bad());
    }
    if !value.starts_with('/') {
        return Err(bad());
    }
    SocketAddr::from_pathname(value).map_err(|_| bad())
}

/// The ping interval for `$WATCHDOG_USEC`: `None` when unset or meant for
/// another process (`$WATCHDOG_PID`).
fn watchdog_interval(usec: Option<&str>, pid: Option<&str>, own_pid: u32) -> Result<Option<Duration>, NotifyError> {
    let Some(usec) = usec else { return Ok(None) };
    if pid.is_some_and(|pid| pid.trim().parse::<u32>().ok() != Some(own_pid)) {
        return Ok(None);
    }
    let bad = || NotifyError::BadWatchdogTimeout { value: usec.to_owned() };
    let timeout_us: u64 = usec.trim().parse().map_err(|_| bad())?;
    if timeout_us == 0 {
        return Err(bad());
    }
    Ok(Some(Duration::from_micros(timeout_us) / PINGS_PER_WATCHDOG_TIMEOUT))
}

/// The datagram for `states`: one `KEY=value` line each. A status is cut
/// to one line of at most [`MAX_STATUS_BYTES`].
fn message(states: &[State<'_>]) -> String {
    let mut message = String::new();
    for state in states {
        match state {
            State::Ready => message.push_str("READY=1\n"),
            State::Watchdog => message.push_str("WATCHDOG=1\n"),
            State::Stopping => message.push_str("STOPPING=1\n"),
            State::Status(text) => {
                message.push_str("STATUS=");
                message.push_str(one_line(text, MAX_STATUS_BYTES));
                message.push('\n');
            }
        }
    }
    message
}

/// The first line of `text`, cut at a character boundary to `max_bytes`.
fn one_line(text: &str, max_bytes: usize) -> &str {
    let line = text.lines().next().unwrap_or("");
    if line.len() <= max_bytes {
        return line;
    }
    let end = (0..=max_bytes).rev().find(|&i| line.is_char_boundary(i)).unwrap_or(0);
    &line[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_key_value_lines_and_a_status_stays_one_line() {
        assert_eq!(
            message(&[State::Ready, State::Status("serving\nsecond line")]),
            "READY=1\nSTATUS=serving\n"
        );
        assert_eq!(message(&[State::Watchdog]), "WATCHDOG=1\n");
        assert_eq!(message(&[State::Stopping]), "STOPPING=1\n");
        let long = "é".repeat(MAX_STATUS_BYTES);
        assert_eq!(one_line(&long, MAX_STATUS_BYTES).len(), MAX_STATUS_BYTES);
        assert_eq!(one_line(&long, 3), "é");
    }

    #[test]
    fn the_watchdog_pings_at_half_its_timeout_and_only_for_its_own_pid() {
        let half = Some(Duration::from_millis(100));
        assert_eq!(watchdog_interval(Some("200000"), None, 7).unwrap(), half);
        assert_eq!(watchdog_interval(Some("200000"), Some("7"), 7).unwrap(), half);
        assert_eq!(watchdog_interval(Some("200000"), Some("8"), 7).unwrap(), None);
        assert_eq!(watchdog_interval(None, None, 7).unwrap(), None);
        assert!(watchdog_interval(Some("0"), None, 7).is_err());
        assert!(watchdog_interval(Some("soon"), None, 7).is_err());
    }

    #[test]
    fn socket_addresses_are_absolute_paths_or_abstract_names() {
        assert!(socket_address("/run/systemd/notify").is_ok());
        assert!(socket_address("@nexus/notify").is_ok());
        assert!(matches!(
            socket_address("run/notify"),
            Err(NotifyError::BadSocketAddress { .. })
        ));
        assert!(socket_address(&format!("/{}", "x".repeat(200))).is_err());
    }

    /// The abstract namespace ('@' in `$NOTIFY_SOCKET`) is what systemd
    /// uses for user managers and containers; a path-only client would
    /// send nothing there.
    #[test]
    fn a_notification_reaches_an_abstract_socket() {
        use std::os::linux::net::SocketAddrExt;
        let name = format!("nexus-notify-test-{}", std::process::id());
        let address = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let listener = UnixDatagram::bind_addr(&address).unwrap();
        listener.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let notifier = Notifier::connect(&format!("@{name}")).unwrap();
        notifier.send(&[State::Ready, State::Status("ok")]).unwrap();
        let mut buffer = [0u8; 64];
        let n = listener.recv(&mut buffer).unwrap();
        assert_eq!(&buffer[..n], b"READY=1\nSTATUS=ok\n");
    }
}
