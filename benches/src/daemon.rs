//! A throwaway `nexusd` for one benchmark run (`--spawn-daemon`).
//!
//! Starts the given binary on a socket and data directory inside a fresh
//! temporary directory, waits until it answers a Ping, and stops it (SIGTERM,
//! then SIGKILL after a grace period) when the run is over, so one command
//! reproduces a measurement. Its stderr goes to `nexusd.log` in that
//! directory and is quoted when it fails to start. It does not choose any
//! daemon flag beyond `--socket` and `--data-dir`: the rest is `--daemon-arg`.

use std::ffi::OsString;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nexus_client::{Client, ConnectOptions};

use crate::error::BenchError;

/// How long a fresh daemon gets to accept connections: it binds its socket
/// within milliseconds; seconds only pass on a machine that is swapping.
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(15);

/// How long SIGTERM gets before SIGKILL: above the daemon's default
/// `--shutdown-timeout-ms` (5 s), so a clean shutdown is never cut short.
pub const STOP_GRACE: Duration = Duration::from_secs(8);

/// Poll period while waiting for the daemon to come up or go away.
const POLL_PERIOD: Duration = Duration::from_millis(2);

/// Lines of the daemon's log quoted in errors.
const LOG_TAIL_LINES: usize = 20;

/// A running daemon owned by this process; stopped and cleaned up on drop.
pub struct SpawnedDaemon {
    child: Option<Child>,
    dir: PathBuf,
    socket: PathBuf,
    /// The directory was made for this daemon and is removed with it.
    owns_dir: bool,
}

impl SpawnedDaemon {
    /// Starts `binary` with `--socket`/`--data-dir` in a new temp directory
    /// plus `extra_args`, and waits until it answers a Ping.
    pub fn start(binary: &Path, extra_args: &[OsString]) -> Result<Self, BenchError> {
        let dir = fresh_temp_dir()?;
        let mut daemon = Self::start_in(binary, &dir, extra_args, STARTUP_TIMEOUT)?;
        daemon.owns_dir = true;
        Ok(daemon)
    }

    /// Starts `binary` on the socket and data directory inside `dir` (which is
    /// kept: a restart finds the data of the previous run there) and waits up
    /// to `ready_within` until it answers a Ping.
    pub fn start_in(
        binary: &Path,
        dir: &Path,
        extra_args: &[OsString],
        ready_within: Duration,
    ) -> Result<Self, BenchError> {
        let dir = dir.to_path_buf();
        let socket = dir.join("nexusd.sock");
        let log = File::options().create(true).append(true).open(dir.join("nexusd.log"))?;
        let child = Command::new(binary)
            .arg("--socket")
            .arg(&socket)
            .arg("--data-dir")
            .arg(dir.join("data"))
            .args(extra_args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|source| BenchError::Spawn {
                binary: binary.to_path_buf(),
                source,
            })?;
        let mut daemon = Self {
            child: Some(child),
            dir,
            socket,
            owns_dir: false,
        };
        daemon.wait_until_serving(ready_within)?;
        Ok(daemon)
    }

    /// A fresh temporary directory for [`start_in`](Self::start_in); the caller removes it.
    pub fn temp_dir() -> Result<PathBuf, BenchError> {
        fresh_temp_dir()
    }

    /// The daemon's data directory.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// Kills the daemon with SIGKILL (a crash: no checkpoint, no WAL flush
    /// beyond what was acknowledged) and reaps it.
    pub fn kill(mut self) -> Result<ExitStatus, BenchError> {
        let Some(mut child) = self.child.take() else {
            unreachable!("the child is only taken by stop or kill, which consume self");
        };
        child.kill()?;
        Ok(child.wait()?)
    }

    /// The socket the daemon listens on.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Stops the daemon (SIGTERM, SIGKILL after [`STOP_GRACE`]) and returns its status.
    pub fn stop(mut self) -> Result<ExitStatus, BenchError> {
        let Some(mut child) = self.child.take() else {
            unreachable!("the child is only taken by stop or kill, which consume self");
        };
        terminate(&mut child)
    }

    fn wait_until_serving(&mut self, ready_within: Duration) -> Result<(), BenchError> {
        let started = Instant::now();
        let options = ConnectOptions {
            name: "nexus-bench readiness probe".into(),
            timeout: Duration::from_secs(1),
            ..ConnectOptions::default()
        };
        loop {
            if let Some(status) = self.child_mut().try_wait()? {
                return Err(BenchError::DaemonExited {
                    status,
                    log_tail: self.log_tail(),
                });
            }
            if self.socket.exists()
                && let Ok(client) = Client::connect_with(&self.socket, options.clone())
                && client.ping().is_ok()
            {
                return Ok(());
            }
            if started.elapsed() > ready_within {
                return Err(BenchError::DaemonNotReady {
                    socket: self.socket.clone(),
                    waited: started.elapsed(),
                    log_tail: self.log_tail(),
                });
            }
            std::thread::sleep(POLL_PERIOD);
        }
    }

    fn child_mut(&mut self) -> &mut Child {
        self.child.as_mut().expect("the child is present until stop or drop")
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.join("nexusd.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n")
    }
}

impl Drop for SpawnedDaemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // Best effort on the error path: the run already failed.
            let _ = terminate(&mut child);
        }
        if self.owns_dir {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// SIGTERM, wait up to the grace period, then SIGKILL; always reaps the child.
fn terminate(child: &mut Child) -> Result<ExitStatus, BenchError> {
    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;
    if let Some(status) = child.try_wait()? {
        return Ok(status);
    }
    let pid = Pid::from_raw(i32::try_from(child.id()).expect("pids fit in i32"));
    // ESRCH only if it exited meanwhile; the wait below reaps it either way.
    let _ = kill(pid, Signal::SIGTERM);
    let deadline = Instant::now() + STOP_GRACE;
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait()? {
            return Ok(status);
        }
        std::thread::sleep(POLL_PERIOD);
    }
    child.kill()?;
    Ok(child.wait()?)
}

/// `$TMPDIR/nexus-bench-<pid>-<ns>`: unique per run, short enough for a
/// socket path (108 bytes).
fn fresh_temp_dir() -> Result<PathBuf, BenchError> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    let dir = std::env::temp_dir().join(format!("nexus-bench-{}-{nanos}", std::process::id()));
    std::fs::create_dir(&dir)?;
    Ok(dir)
}
