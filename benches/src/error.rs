//! The benchmarks' errors: each names what the measurement could not do.
//!
//! Only `main.rs` turns these into `anyhow` reports; library callers (tests)
//! match on them.

use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::Duration;

use nexus_client::ClientError;

/// Everything a benchmark run can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BenchError {
    /// A client call failed; `context` says which step.
    #[error("{context}: {source}")]
    Client {
        /// The step that failed ("connect shm client", "ping", ...).
        context: String,
        /// The client's error.
        #[source]
        source: ClientError,
    },
    /// nexusd answered a Ping with something else than a matching Pong.
    #[error("unexpected answer to request {request_id}: {detail}")]
    BadAnswer {
        /// The request id of the answer.
        request_id: u64,
        /// What was wrong with it.
        detail: String,
    },
    /// The daemon's Stats lack a counter the benchmark needs.
    #[error("nexusd's Stats have no counter `{0}` (is the daemon older than the benchmark?)")]
    MissingCounter(&'static str),
    /// The daemon binary could not be started.
    #[error("cannot start {binary}: {source}")]
    Spawn {
        /// The binary given to --spawn-daemon.
        binary: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The spawned daemon exited before it accepted a connection.
    #[error("nexusd exited ({status}) before serving; its log ends with:\n{log_tail}")]
    DaemonExited {
        /// Its exit status.
        status: ExitStatus,
        /// The last lines of its stderr.
        log_tail: String,
    },
    /// The spawned daemon did not accept connections in time.
    #[error("nexusd did not serve on {socket} within {waited:?}; its log ends with:\n{log_tail}")]
    DaemonNotReady {
        /// The socket it was told to use.
        socket: PathBuf,
        /// How long we waited.
        waited: Duration,
        /// The last lines of its stderr.
        log_tail: String,
    },
    /// A benchmark parameter is out of range.
    #[error("invalid benchmark parameter: {0}")]
    InvalidArgument(String),
    /// A local syscall (temp dir, rlimit, signal) failed.
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
}

/// Wraps a client error with the step it happened in, for `map_err`.
pub(crate) fn client_step(context: impl Into<String>) -> impl FnOnce(ClientError) -> BenchError {
    move |source| BenchError::Client {
        context: context.into(),
        source,
    }
}
