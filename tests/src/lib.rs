//! nexus-tests: the harness the end-to-end tests (`tests/it`) drive real
//! `nexusd` processes with.
//!
//! - [`Daemon`]: a `nexusd-it` child in a private temp dir, killed, reaped and
//!   cleaned up on drop, its stderr printed when the test failed;
//! - [`Peer`]: a `nexus-test-peer` child (a misbehaving client in its own
//!   process), read line by line and killed on drop;
//! - [`wait_until`] and the watchdog: every wait is bounded, so a hang fails
//!   the test instead of blocking the suite;
//! - one `check_*` helper per boundary (handshake bytes, raw frames, calls,
//!   resources), so a change of API touches one function;
//! - [`store`]: memories, recall, and the ledger of acknowledged writes the
//!   crash tests compare a restarted daemon against;
//! - [`disk`]: a tmpfs mount, a disk filler, and the WAL and snapshot file
//!   formats as far as tests damage them.
//!
//! What it deliberately does not do: decide what the daemon should answer.
//! The expectations live in the tests; this crate only moves bytes and waits
//! (the one exception, the ledger, states the durability contract every
//! crash test shares: acknowledged means present, a batch is all or nothing).

pub mod disk;
pub mod store;

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, PoisonError, mpsc};
use std::time::{Duration, Instant};

use nexus_client::wire::{ErrorCode, Request, RequestBody, Response, StatsReport, Status};
use nexus_client::{Client, ClientError, ConnectOptions, Connection, Transport};
use nexus_shm_protocol::handshake::{SERVER_HELLO_BYTES, ServerHello};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// The longest any single wait in a test may take before it counts as a
/// hang. Generous (the debug build on a loaded 2-core host is slow), and
/// never reached by a passing test: every wait polls and returns early.
pub const BOUNDED_WAIT: Duration = Duration::from_secs(10);

/// How long one test may hold a daemon before the watchdog aborts the test
/// process. A backstop for a wait this harness forgot to bound; with
/// nextest each test is its own process, so only the hung test dies.
pub const WATCHDOG_LIMIT: Duration = Duration::from_secs(120);

/// RSS growth tolerated between two idle moments of a daemon. RSS never
/// returns to the byte: mimalloc keeps freed pages of each worker thread's
/// heap for reuse, and tokio keeps the capacity its queues reached. The
/// tests therefore compare against a moment after the same load (or a load
/// much smaller than 16 MiB), and 16 MiB covers the jitter of that reuse
/// (~2 MiB measured) with a wide margin while staying below what the
/// thousand-client test would leak if sessions kept their rings (~23 MiB,
/// see `fanout.rs`).
pub const RSS_TOLERANCE_BYTES: u64 = 16 << 20;

/// Ring size the tests ask for: small, so a thousand connections stay cheap
/// and a few hundred frames fill a ring.
pub const SMALL_RING_BYTES: u32 = 16 * 1024;

/// Ring size of [`Daemon::large_client`]: frames up to 4 MiB, enough for a
/// thousand recalled memories or a 10 001-memory batch.
pub const LARGE_RING_BYTES: u32 = 8 << 20;

/// Paths of the binaries under test. Only an integration test target sees
/// `CARGO_BIN_EXE_*`, so `tests/it` fills this in and hands it over.
#[derive(Debug, Clone, Copy)]
pub struct Binaries {
    /// `nexusd-it`: the daemon.
    pub daemon: &'static str,
    /// `nexus-test-peer`: the misbehaving client.
    pub peer: &'static str,
    /// `nexus-it`: the `nexus` command line.
    pub cli: &'static str,
}

/// A private directory under the system temp dir, removed on drop (the
/// daemon crate's one temp-dir helper, with the daemon's paths in it).
#[derive(Debug)]
pub struct TestDir {
    temp: nexus_daemon::testing::TempDir,
}

/// How a [`Daemon`] is started: flags, environment, data directory. Kept by
/// the daemon for every restart; [`Daemon::set_args`] and
/// [`Daemon::set_env`] change it for the next one.
#[derive(Debug, Clone, Default)]
pub struct Launch {
    /// Flags after `--socket` and `--data-dir`.
    pub args: Vec<String>,
    /// Extra environment variables (e.g. `NEXUS_FAULT_INJECT`).
    pub env: Vec<(String, String)>,
    /// The data directory (default: `data` in the daemon's temp dir).
    pub data_dir: Option<PathBuf>,
}

impl Launch {
    /// A launch with these flags, no extra environment, the default data dir.
    pub fn args(args: &[&str]) -> Self {
        Self {
            args: args.iter().map(|s| s.to_string()).collect(),
            ..Self::default()
        }
    }

    /// Adds an environment variable.
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_owned(), value.to_owned()));
        self
    }

    /// Uses `dir` as the data directory (e.g. on a small tmpfs).
    pub fn data_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.data_dir = Some(dir.into());
        self
    }
}

/// A running `nexusd-it` with its own socket and data dir.
pub struct Daemon {
    binaries: Binaries,
    launch: Launch,
    child: Option<Child>,
    /// The connection that proved the daemon ready, kept open for Stats so
    /// that reading counters does not itself open and close connections
    /// (which would move the fd count). It counts in `connections_open`.
    observer: Mutex<Option<Client>>,
    peers_started: AtomicU32,
    _watchdog: Watchdog,
    /// Last field: the directory outlives everything that uses it.
    dir: TestDir,
}

/// A `nexus-test-peer` process; killed and reaped on drop.
pub struct Peer {
    role: String,
    child: Child,
    lines: mpsc::Receiver<String>,
    stderr_path: PathBuf,
}

/// The daemon's resource gauges at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resources {
    /// `process_open_fds`.
    pub open_fds: u64,
    /// `process_rss_bytes`.
    pub rss_bytes: u64,
    /// `connections_open`.
    pub connections_open: u64,
}

impl TestDir {
    /// A fresh, empty directory only this process uses (pid + counter), mode 0700.
    pub fn new() -> Self {
        Self {
            temp: nexus_daemon::testing::TempDir::new("it"),
        }
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        self.temp.path()
    }

    /// Where the daemon's socket lives.
    pub fn socket_path(&self) -> PathBuf {
        self.temp.join("nexusd.sock")
    }

    /// Lets other uids reach the socket inside (the `setpriv` test).
    pub fn make_traversable(&self) {
        set_mode(self.temp.path(), 0o755);
    }
}

impl Default for TestDir {
    fn default() -> Self {
        Self::new()
    }
}

impl Daemon {
    /// Starts a daemon in a fresh temp dir with `--socket`, `--data-dir` and
    /// `extra_args`; returns once it completed a handshake. The daemon must
    /// admit this process's uid (it is the observer's).
    pub fn start(binaries: Binaries, extra_args: &[&str]) -> Self {
        Self::start_in(binaries, TestDir::new(), extra_args)
    }

    /// Starts a daemon in a directory the test prepared (a stale socket, ...).
    pub fn start_in(binaries: Binaries, dir: TestDir, extra_args: &[&str]) -> Self {
        Self::launch(binaries, dir, Launch::args(extra_args))
    }

    /// Starts a daemon with extra environment variables (`NEXUS_FAULT_INJECT`).
    pub fn start_with_env(binaries: Binaries, extra_args: &[&str], env: &[(&str, &str)]) -> Self {
        let launch = env
            .iter()
            .fold(Launch::args(extra_args), |launch, (key, value)| launch.env(key, value));
        Self::launch(binaries, TestDir::new(), launch)
    }

    /// Starts a daemon in `dir` as `launch` says; returns once it completed a handshake.
    pub fn launch(binaries: Binaries, dir: TestDir, launch: Launch) -> Self {
        let mut daemon = Self {
            binaries,
            launch,
            child: None,
            observer: Mutex::new(None),
            peers_started: AtomicU32::new(0),
            _watchdog: Watchdog::arm(dir.path().join("nexusd.stderr")),
            dir,
        };
        daemon.spawn();
        daemon
    }

    /// The socket clients connect to.
    pub fn socket_path(&self) -> PathBuf {
        self.dir.socket_path()
    }

    /// The daemon's temp dir.
    pub fn dir(&self) -> &TestDir {
        &self.dir
    }

    /// The data directory (snapshots, `LOCK`, `wal/`).
    pub fn data_dir(&self) -> PathBuf {
        self.launch
            .data_dir
            .clone()
            .unwrap_or_else(|| self.dir.path().join("data"))
    }

    /// Replaces the flags for the next start (`restart`, `run_to_exit`).
    pub fn set_args(&mut self, extra_args: &[&str]) {
        self.launch.args = extra_args.iter().map(|s| s.to_string()).collect();
    }

    /// Replaces the extra environment for the next start.
    pub fn set_env(&mut self, env: &[(&str, &str)]) {
        self.launch.env = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    }

    /// The daemon's pid (panics after `kill`).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("the daemon is running").id()
    }

    /// Everything the daemon wrote to stderr so far (both runs after a restart).
    pub fn stderr_text(&self) -> String {
        std::fs::read_to_string(self.stderr_path()).unwrap_or_default()
    }

    /// A shared-memory client with small rings.
    pub fn client(&self) -> Client {
        self.client_over(Transport::SharedMemory)
    }

    /// A shared-memory client with [`LARGE_RING_BYTES`] rings, for big batches
    /// and recalls of up to a thousand memories.
    pub fn large_client(&self) -> Client {
        let options = ConnectOptions {
            request_ring_bytes: LARGE_RING_BYTES,
            response_ring_bytes: LARGE_RING_BYTES,
            ..test_options(Transport::SharedMemory)
        };
        Client::connect_with(self.socket_path(), options)
            .unwrap_or_else(|e| panic!("cannot connect to {}: {e}", self.socket_path().display()))
    }

    /// A client with small rings over `transport`.
    pub fn client_over(&self, transport: Transport) -> Client {
        let socket = self.socket_path();
        Client::connect_with(&socket, test_options(transport))
            .unwrap_or_else(|e| panic!("cannot connect to {}: {e}", socket.display()))
    }

    /// A connection with explicit options.
    pub fn connection(&self, options: ConnectOptions) -> Connection {
        self.try_connection(options)
            .unwrap_or_else(|e| panic!("cannot connect to {}: {e}", self.socket_path().display()))
    }

    /// A connection attempt whose failure the test inspects.
    pub fn try_connection(&self, options: ConnectOptions) -> Result<Connection, ClientError> {
        Connection::connect(self.socket_path(), options)
    }

    /// The daemon's Stats, through the long-lived observer connection.
    pub fn stats(&self) -> StatsReport {
        let observer = self.observer.lock().unwrap_or_else(PoisonError::into_inner);
        let client = observer
            .as_ref()
            .expect("the daemon is running (no Stats after kill or SIGTERM)");
        client.stats().unwrap_or_else(|e| panic!("Stats failed: {e}"))
    }

    /// One Stats counter; panics when the daemon does not report it.
    pub fn stats_counter(&self, name: &str) -> u64 {
        let stats = self.stats();
        nexus_client::counter(&stats, name).unwrap_or_else(|| panic!("Stats has no counter {name}: {stats:?}"))
    }

    /// Polls `name` until `condition` holds; panics (with the last value) after `BOUNDED_WAIT`.
    #[track_caller]
    pub fn wait_for_counter(&self, name: &str, what: &str, condition: impl Fn(u64) -> bool) -> u64 {
        let mut last = 0;
        let held = poll_until(BOUNDED_WAIT, || {
            last = self.stats_counter(name);
            condition(last)
        });
        assert!(
            held,
            "timed out after {BOUNDED_WAIT:?} waiting until {what} (last {name} = {last})"
        );
        last
    }

    /// The resource gauges now.
    pub fn resources(&self) -> Resources {
        let stats = self.stats();
        let gauge = |name| nexus_client::counter(&stats, name).unwrap_or_else(|| panic!("Stats has no {name}"));
        Resources {
            open_fds: gauge("process_open_fds"),
            rss_bytes: gauge("process_rss_bytes"),
            connections_open: gauge("connections_open"),
        }
    }

    /// The resource gauges once the daemon is idle: no connection but the
    /// observer, after one warm-up round trip so lazily built state exists.
    pub fn idle_resources(&self) -> Resources {
        let warm_up = self.client();
        warm_up.ping().unwrap_or_else(|e| panic!("warm-up ping failed: {e}"));
        drop(warm_up);
        self.wait_for_counter("connections_open", "the warm-up connection closes", |open| open == 1);
        self.resources()
    }

    /// Starts a peer process in `role` against this daemon's socket.
    pub fn peer(&self, role: &str) -> Peer {
        self.peer_via(&[], role)
    }

    /// Starts a peer through a wrapper command (e.g. `setpriv --reuid=65534 ...`).
    pub fn peer_via(&self, wrapper: &[&str], role: &str) -> Peer {
        let n = self.peers_started.fetch_add(1, Ordering::Relaxed);
        let stderr_path = self.dir.path().join(format!("peer-{n}-{role}.stderr"));
        let mut command = match wrapper.split_first() {
            Some((program, args)) => {
                let mut command = Command::new(program);
                command.args(args).arg(self.binaries.peer);
                command
            }
            None => Command::new(self.binaries.peer),
        };
        command.arg(role).arg(self.socket_path());
        Peer::spawn(role, command, stderr_path)
    }

    /// SIGKILL (no cleanup: the socket file stays behind, stale), then reap.
    pub fn kill(&mut self) {
        self.forget_observer();
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Kills the daemon if it runs and starts it again in the same
    /// directory (replacing the stale socket), with the same arguments
    /// unless `set_args`/`set_env` changed them.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// SIGTERM, then waits (bounded) for the exit and reaps it.
    pub fn sigterm_and_wait(&mut self) -> ExitStatus {
        self.forget_observer();
        let mut child = self.child.take().expect("the daemon is running");
        signal(child.id(), Signal::SIGTERM);
        wait_for_exit(&mut child, "nexusd to exit after SIGTERM")
    }

    /// Starts the (stopped) daemon as configured and expects it to refuse:
    /// waits (bounded) for its exit and returns the status and what this run
    /// wrote to stderr (also kept in the daemon's log). A daemon that starts
    /// serving instead is killed when the wait times out, failing the test.
    #[track_caller]
    pub fn run_to_exit(&mut self) -> (ExitStatus, String) {
        assert!(self.child.is_none(), "run_to_exit needs a stopped daemon");
        let stderr_path = self.stderr_path();
        let log_start = std::fs::metadata(&stderr_path).map(|m| m.len()).unwrap_or(0);
        let mut child = spawn_logged(self.command(), &stderr_path, Stdio::null());
        let status = wait_for_exit(&mut child, "nexusd to exit (it was expected to refuse to start)");
        let log = std::fs::read(&stderr_path).unwrap_or_default();
        let this_run = log.get(log_start as usize..).unwrap_or_default();
        (status, String::from_utf8_lossy(this_run).into_owned())
    }

    /// Runs another daemon on this daemon's socket (a different data dir)
    /// and returns how it exited and what it wrote to stderr.
    pub fn run_second_daemon(&self) -> (ExitStatus, String) {
        let stderr_path = self.dir.path().join("second.stderr");
        let mut command = Command::new(self.binaries.daemon);
        command
            .arg("--socket")
            .arg(self.socket_path())
            .arg("--data-dir")
            .arg(self.dir.path().join("second-data"));
        let mut child = spawn_logged(command, &stderr_path, Stdio::null());
        let status = wait_for_exit(&mut child, "the second nexusd to exit");
        (status, std::fs::read_to_string(&stderr_path).unwrap_or_default())
    }

    /// The daemon's command line as `self.launch` says.
    fn command(&self) -> Command {
        let mut command = Command::new(self.binaries.daemon);
        command
            .arg("--socket")
            .arg(self.socket_path())
            .arg("--data-dir")
            .arg(self.data_dir())
            .args(&self.launch.args)
            .env_remove("NEXUS_SOCKET")
            .env_remove("NEXUS_LOG")
            .env_remove(nexus_daemon::store::wal::FAULT_INJECT_ENV)
            .envs(self.launch.env.iter().map(|(k, v)| (k, v)));
        command
    }

    fn spawn(&mut self) {
        let socket = self.socket_path();
        let command = self.command();
        // Owned by `self` at once, so a panic below still kills it in `Drop`
        // (which also prints its stderr).
        let child = self
            .child
            .insert(spawn_logged(command, &self.stderr_path(), Stdio::null()));
        // Ready when a real client completes a handshake: a missing socket
        // (ENOENT) or a stale one left by a killed daemon (ECONNREFUSED)
        // only means "not yet". That client becomes the Stats observer.
        let mut observer = None;
        let ready = poll_until(BOUNDED_WAIT, || {
            if let Ok(Some(status)) = child.try_wait() {
                panic!("nexusd exited ({}) before it was ready", describe_exit(status));
            }
            match Client::connect_with(&socket, test_options(Transport::SharedMemory)) {
                Ok(client) => observer = Some(client),
                Err(ClientError::Connect { .. }) => {}
                Err(other) => panic!("the first handshake with nexusd failed: {other}"),
            }
            observer.is_some()
        });
        assert!(
            ready,
            "nexusd did not serve {} within {BOUNDED_WAIT:?}",
            socket.display()
        );
        *self.observer.lock().unwrap_or_else(PoisonError::into_inner) = observer;
    }

    fn forget_observer(&self) {
        *self.observer.lock().unwrap_or_else(PoisonError::into_inner) = None;
    }

    fn stderr_path(&self) -> PathBuf {
        self.dir.path().join("nexusd.stderr")
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!(
                "---- nexusd stderr ({}) ----\n{}---- end of nexusd stderr ----",
                self.stderr_path().display(),
                self.stderr_text()
            );
        }
    }
}

impl Peer {
    fn spawn(role: &str, command: Command, stderr_path: PathBuf) -> Self {
        let mut child = spawn_logged(command, &stderr_path, Stdio::piped());
        let stdout = child.stdout.take().expect("stdout is piped");
        let (sender, lines) = mpsc::channel();
        // Ends by itself at the peer's EOF (its exit or its death).
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if sender.send(line).is_err() {
                    break;
                }
            }
        });
        Self {
            role: role.to_owned(),
            child,
            lines,
            stderr_path,
        }
    }

    /// The peer's pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits (bounded) for the peer to print `wanted`; panics on another
    /// line, on its exit, or on a timeout, showing its stderr.
    #[track_caller]
    pub fn expect_line(&mut self, wanted: &str) {
        match self.lines.recv_timeout(BOUNDED_WAIT) {
            Ok(line) if line == wanted => {}
            Ok(line) => self.fail(&format!("printed {line:?} instead of {wanted:?}")),
            Err(mpsc::RecvTimeoutError::Timeout) => {
                self.fail(&format!("did not print {wanted:?} within {BOUNDED_WAIT:?}"))
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => self.fail(&format!("closed stdout before {wanted:?}")),
        }
    }

    /// Waits (bounded) for the peer to exit; returns its status and last line.
    #[track_caller]
    pub fn wait_exit(&mut self) -> (ExitStatus, String) {
        let status = wait_for_exit(&mut self.child, &format!("peer {} to exit", self.role));
        // The reader thread may still hold the last lines: read to its EOF.
        let mut last_line = String::new();
        loop {
            match self.lines.recv_timeout(BOUNDED_WAIT) {
                Ok(line) => last_line = line,
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
                Err(mpsc::RecvTimeoutError::Timeout) => self.fail("exited but its stdout stayed open"),
            }
        }
        (status, last_line)
    }

    /// SIGKILL and reap.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    #[track_caller]
    fn fail(&mut self, what: &str) -> ! {
        self.kill();
        let stderr = std::fs::read_to_string(&self.stderr_path).unwrap_or_default();
        panic!("peer {} {what}; its stderr:\n{stderr}", self.role)
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Connection options of the tests: small rings, a 5 s call timeout.
pub fn test_options(transport: Transport) -> ConnectOptions {
    ConnectOptions {
        name: "nexus-it".into(),
        request_ring_bytes: SMALL_RING_BYTES,
        response_ring_bytes: SMALL_RING_BYTES,
        timeout: Duration::from_secs(5),
        transport,
        spin: Duration::ZERO,
        ..ConnectOptions::default()
    }
}

/// Polls `condition` every few milliseconds; panics with `what` once
/// `timeout` passed without it holding.
#[track_caller]
pub fn wait_until(what: &str, timeout: Duration, condition: impl FnMut() -> bool) {
    if !poll_until(timeout, condition) {
        panic!("timed out after {timeout:?} waiting until {what}");
    }
}

/// Raises this process's RLIMIT_NOFILE soft limit to its hard limit (the
/// thousand-client test holds three fds per connection); returns the new limit.
pub fn raise_fd_limit() -> u64 {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).expect("getrlimit");
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard).expect("raising RLIMIT_NOFILE to the hard limit");
    }
    hard
}

/// Sends one handshake message as raw bytes and checks the refusal: the
/// ServerHello's status is `expected`, and the daemon then closes the socket.
#[track_caller]
pub fn check_handshake_refused(socket: &Path, hello_bytes: &[u8], expected: ErrorCode) -> ServerHello {
    let mut stream = UnixStream::connect(socket).unwrap_or_else(|e| panic!("connect {}: {e}", socket.display()));
    stream.set_read_timeout(Some(BOUNDED_WAIT)).expect("set_read_timeout");
    stream.write_all(hello_bytes).expect("sending the hello bytes");
    let mut bytes = [0u8; SERVER_HELLO_BYTES];
    stream
        .read_exact(&mut bytes)
        .unwrap_or_else(|e| panic!("no ServerHello after {} hello bytes: {e}", hello_bytes.len()));
    let answer = ServerHello::decode(&bytes).unwrap_or_else(|e| panic!("undecodable ServerHello: {e}"));
    assert_eq!(
        answer.status, expected as u32,
        "status of the ServerHello (message {:?})",
        answer.message
    );
    check_closed_by_daemon(&mut stream);
    answer
}

/// Checks that the daemon closed `stream`: the next read is EOF (bounded).
#[track_caller]
pub fn check_closed_by_daemon(stream: &mut UnixStream) {
    stream.set_read_timeout(Some(BOUNDED_WAIT)).expect("set_read_timeout");
    let mut byte = [0u8; 1];
    match stream.read(&mut byte) {
        Ok(0) => {}
        Ok(_) => panic!("the daemon sent more bytes instead of closing the connection"),
        Err(e) => panic!("the daemon did not close the connection: {e}"),
    }
}

/// Publishes one raw frame and checks its answer: the same request id and
/// an error status with `expected`'s code. Returns the error message.
#[track_caller]
pub fn check_raw_frame(connection: &mut Connection, frame: RawFrame<'_>, expected: ErrorCode) -> String {
    connection
        .send_raw_frame(frame.kind, frame.request_id, frame.declared_len, frame.payload)
        .unwrap_or_else(|e| panic!("sending {frame:?} failed: {e}"));
    let answer = connection
        .recv(None)
        .unwrap_or_else(|e| panic!("no answer to {frame:?}: {e}"))
        .to_owned_response();
    assert_eq!(
        answer.request_id, frame.request_id,
        "the answer names the bad frame's request id"
    );
    match answer.status {
        Status::Error { code, message } => {
            assert_eq!(code, expected as u32, "code for {frame:?} (message {message:?})");
            message
        }
        other => panic!("{frame:?} was answered {other:?}, expected error {expected:?}"),
    }
}

/// A frame as `Connection::send_raw_frame` publishes it.
#[derive(Debug, Clone, Copy)]
pub struct RawFrame<'a> {
    /// Raw frame kind (1 = Request).
    pub kind: u16,
    /// Request id in the frame header.
    pub request_id: u64,
    /// The payload length the header claims.
    pub declared_len: u32,
    /// The bytes actually published.
    pub payload: &'a [u8],
}

/// Calls `body` and checks the answer's status: `None` for Ok, else the
/// error code. Returns the whole answer for further checks.
#[track_caller]
pub fn check_call(connection: &mut Connection, body: RequestBody, expected: Option<ErrorCode>) -> Response {
    let mut request = Request {
        request_id: 0,
        deadline_ns: 0,
        body,
    };
    let answer = connection
        .call(&mut request, None)
        .unwrap_or_else(|e| panic!("{:?} failed: {e}", request.body))
        .to_owned_response();
    assert_eq!(answer.request_id, request.request_id, "the answer's request id");
    assert_eq!(
        error_code(&answer),
        expected.map(|c| c as u32),
        "status of the answer to {:?}: {:?}",
        request.body,
        answer.status
    );
    answer
}

/// The error code of an answer, `None` for Ok and Degraded.
pub fn error_code(answer: &Response) -> Option<u32> {
    match &answer.status {
        Status::Error { code, .. } => Some(*code),
        Status::Ok | Status::Degraded { .. } => None,
    }
}

/// Checks that a call failed with `DaemonGone` (not a timeout, not a success).
#[track_caller]
pub fn check_daemon_gone<T: std::fmt::Debug>(result: Result<T, ClientError>) {
    match result {
        Err(ClientError::DaemonGone) => {}
        other => panic!("expected ClientError::DaemonGone, got {other:?}"),
    }
}

/// Checks that the daemon released everything a load took: the connection
/// count and the fd count return exactly to `before`, RSS to within
/// [`RSS_TOLERANCE_BYTES`] of it. Each is polled (bounded): sessions end
/// asynchronously after their clients go.
#[track_caller]
pub fn check_released(daemon: &Daemon, before: Resources) {
    check_fds_released(daemon, before);
    check_rss_within_tolerance(daemon, before);
}

/// Checks (bounded poll) that the connection and fd counts return exactly to `before`'s.
#[track_caller]
pub fn check_fds_released(daemon: &Daemon, before: Resources) {
    let mut now = daemon.resources();
    let released = poll_until(BOUNDED_WAIT, || {
        now = daemon.resources();
        now.connections_open == before.connections_open && now.open_fds == before.open_fds
    });
    assert!(
        released,
        "connections and fds did not return: before {before:?}, now {now:?}"
    );
}

/// Checks (bounded poll) that RSS is at most [`RSS_TOLERANCE_BYTES`] above `before`'s.
#[track_caller]
pub fn check_rss_within_tolerance(daemon: &Daemon, before: Resources) {
    let limit = before.rss_bytes + RSS_TOLERANCE_BYTES;
    let mut rss = daemon.resources().rss_bytes;
    let settled = poll_until(BOUNDED_WAIT, || {
        rss = daemon.resources().rss_bytes;
        rss <= limit
    });
    assert!(
        settled,
        "RSS grew by {} KiB (before {} KiB, now {} KiB, tolerance {} KiB)",
        rss.saturating_sub(before.rss_bytes) / 1024,
        before.rss_bytes / 1024,
        rss / 1024,
        RSS_TOLERANCE_BYTES / 1024
    );
}

/// Sends `signal` to `pid`.
pub fn signal(pid: u32, signal: Signal) {
    let pid = Pid::from_raw(i32::try_from(pid).expect("pids fit in i32"));
    kill(pid, signal).unwrap_or_else(|e| panic!("kill({pid}, {signal}) failed: {e}"));
}

/// Describes an exit status for messages: "exit code 1" or "signal 9".
pub fn describe_exit(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit code {code}"),
        (None, Some(signal)) => format!("signal {signal}"),
        (None, None) => format!("{status}"),
    }
}

/// Aborts the test process if the test outlives [`WATCHDOG_LIMIT`]: the
/// backstop for a hang no bounded wait caught. Disarmed when dropped.
struct Watchdog {
    _disarm: mpsc::Sender<()>,
}

impl Watchdog {
    fn arm(daemon_stderr: PathBuf) -> Self {
        let (disarm, armed) = mpsc::channel::<()>();
        std::thread::spawn(move || {
            if let Err(mpsc::RecvTimeoutError::Timeout) = armed.recv_timeout(WATCHDOG_LIMIT) {
                let stderr = std::fs::read_to_string(&daemon_stderr).unwrap_or_default();
                eprintln!("watchdog: a test held its daemon for {WATCHDOG_LIMIT:?}: a hang; aborting.\n{stderr}");
                std::process::abort();
            }
        });
        Self { _disarm: disarm }
    }
}

/// Spawns `command` with stderr appended to `stderr_path`, no stdin, and
/// SIGKILL as its parent-death signal so no child outlives a crashed test.
fn spawn_logged(mut command: Command, stderr_path: &Path, stdout: Stdio) -> Child {
    let stderr = File::options()
        .create(true)
        .append(true)
        .open(stderr_path)
        .unwrap_or_else(|e| panic!("cannot open {}: {e}", stderr_path.display()));
    command.stdin(Stdio::null()).stdout(stdout).stderr(stderr);
    // SAFETY: the closure runs in the forked child before exec and only
    // calls prctl(2), which is async-signal-safe and touches no memory of
    // the parent's (no allocation, no locks).
    unsafe {
        command.pre_exec(|| nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(std::io::Error::from));
    }
    command
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {:?}: {e}", command.get_program()))
}

/// Waits (bounded) for `child` to exit and reaps it; kills it on timeout.
#[track_caller]
pub fn wait_for_exit(child: &mut Child, what: &str) -> ExitStatus {
    let mut status = None;
    let exited = poll_until(BOUNDED_WAIT, || {
        status = child.try_wait().expect("try_wait");
        status.is_some()
    });
    if !exited {
        let _ = child.kill();
        let _ = child.wait();
        panic!("timed out after {BOUNDED_WAIT:?} waiting for {what}");
    }
    status.expect("set when exited")
}

/// Polls `condition` until it holds (true) or `timeout` passes (false).
pub fn poll_until(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn set_mode(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {mode:o} {}: {e}", path.display()));
}
