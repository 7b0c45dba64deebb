//! nexus-client: the tiny client of Memory Nexus.
//!
//! Blocking, no tokio, no daemon code: it depends on the protocol crate and
//! the few crates the transport needs. Two ways in:
//!
//! - [`Connection`]: one connection, one thread at a time (`&mut self`).
//!   Answers come as [`ResponseGuard`]s read in place from the shared
//!   response ring; `submit`/`recv` pipeline many requests.
//! - [`Client`]: a connection behind a mutex, shareable between threads
//!   (`Arc<Client>`); calls from several threads are served one after the
//!   other. For parallelism, give each thread its own `Connection` (each has
//!   its own rings, and the daemon serves connections concurrently).
//!
//! Every call has a timeout (the request carries it as its deadline too).
//! When the daemon goes away, calls fail with [`ClientError::DaemonGone`];
//! [`Client::reconnect`] (or [`Connection::reconnect`]) gets a fresh
//! connection.

mod connection;
mod error;

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

pub use connection::{ConnectOptions, Connection, ResponseGuard, Transport};
pub use error::ClientError;
pub use nexus_shm_protocol::wire;
use nexus_shm_protocol::wire::{
    ArchivedResponseBody, FeedbackRequest, ForgetRequest, HealthReport, ListPage, ListRequest, MemoryInput,
    PingRequest, Pong, RecallHit, RecallRequest, RememberReport, RememberRequest, Request, RequestBody, Response,
    StatsReport,
};
pub use nexus_shm_protocol::{SOCKET_ENV, default_socket_path};

/// A thread-safe client: one connection, calls serialized by a mutex.
pub struct Client {
    connection: Mutex<Connection>,
    path: PathBuf,
}

impl Client {
    /// Connects to the daemon at `path` with default options.
    pub fn connect(path: impl AsRef<Path>) -> Result<Self, ClientError> {
        Self::connect_with(path, ConnectOptions::default())
    }

    /// Connects to `$NEXUS_SOCKET` (or the daemon's default socket).
    pub fn connect_default() -> Result<Self, ClientError> {
        Self::connect(nexus_shm_protocol::default_socket_path())
    }

    /// Connects with explicit options.
    pub fn connect_with(path: impl AsRef<Path>, options: ConnectOptions) -> Result<Self, ClientError> {
        let connection = Connection::connect(path.as_ref(), options)?;
        Ok(Self {
            connection: Mutex::new(connection),
            path: path.as_ref().to_path_buf(),
        })
    }

    /// The socket path this client uses.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Replaces the connection with a fresh one (after `DaemonGone`).
    pub fn reconnect(&self) -> Result<(), ClientError> {
        let mut connection = self.lock();
        *connection = connection.reconnect()?;
        Ok(())
    }

    /// Runs `body` on the answer to `request`, read in place (zero-copy), with
    /// the connection locked for the duration.
    pub fn with_response<R>(
        &self,
        request: &mut Request,
        timeout: Option<Duration>,
        body: impl FnOnce(&ResponseGuard<'_>) -> R,
    ) -> Result<R, ClientError> {
        let mut connection = self.lock();
        let guard = connection.call(request, timeout)?;
        Ok(body(&guard))
    }

    /// Sends `body` and returns the answer as an owned value (status included).
    pub fn call(&self, body: RequestBody, timeout: Option<Duration>) -> Result<Response, ClientError> {
        let mut request = Request {
            request_id: 0,
            deadline_ns: 0,
            body,
        };
        self.with_response(&mut request, timeout, |answer| answer.to_owned_response())
    }

    /// Round trip with an empty payload.
    pub fn ping(&self) -> Result<Pong, ClientError> {
        let mut request = Request {
            request_id: 0,
            deadline_ns: 0,
            body: RequestBody::Ping(PingRequest::default()),
        };
        self.ok_body(&mut request, |body| match body {
            ArchivedResponseBody::Pong(pong) => Some(Pong {
                payload_bytes: pong.payload_bytes.to_native(),
                server_monotonic_ns: pong.server_monotonic_ns.to_native(),
            }),
            _ => None,
        })
    }

    /// The daemon's counters.
    pub fn stats(&self) -> Result<StatsReport, ClientError> {
        let mut request = Request {
            request_id: 0,
            deadline_ns: 0,
            body: RequestBody::Stats,
        };
        self.ok_body(&mut request, |body| match body {
            ArchivedResponseBody::Stats(stats) => rkyv::deserialize::<_, rkyv::rancor::Error>(stats).ok(),
            _ => None,
        })
    }

    /// The daemon's health probe.
    pub fn health(&self) -> Result<HealthReport, ClientError> {
        let mut request = Request {
            request_id: 0,
            deadline_ns: 0,
            body: RequestBody::Health,
        };
        self.ok_body(&mut request, |body| match body {
            ArchivedResponseBody::Health(health) => rkyv::deserialize::<_, rkyv::rancor::Error>(health).ok(),
            _ => None,
        })
    }

    /// Stores memories durably (one atomic batch); returns their ids in order
    /// (see [`Client::remember_report`] for chunks and near-duplicates).
    pub fn remember(&self, memories: Vec<MemoryInput>) -> Result<Vec<u64>, ClientError> {
        let mut request = request(RequestBody::Remember(RememberRequest { memories }));
        self.ok_body(&mut request, |body| match body {
            ArchivedResponseBody::Remembered(report) => Some(report.ids.iter().map(|id| id.to_native()).collect()),
            _ => None,
        })
    }

    /// Stores memories durably; returns what was done with each (ids, the
    /// chunks of long texts, near-duplicates found and the policy's action).
    pub fn remember_report(&self, memories: Vec<MemoryInput>) -> Result<RememberReport, ClientError> {
        let mut request = request(RequestBody::Remember(RememberRequest { memories }));
        self.ok_body(&mut request, |body| match body {
            ArchivedResponseBody::Remembered(report) => rkyv::deserialize::<_, rkyv::rancor::Error>(report).ok(),
            _ => None,
        })
    }

    /// The best memories for a query.
    pub fn recall(&self, query: RecallRequest) -> Result<Vec<RecallHit>, ClientError> {
        let mut request = request(RequestBody::Recall(query));
        self.ok_body(&mut request, |body| match body {
            ArchivedResponseBody::Recalled(hits) => rkyv::deserialize::<_, rkyv::rancor::Error>(hits).ok(),
            _ => None,
        })
    }

    /// The best memories for a query, with how the daemon answered: the
    /// request id (what [`Client::feedback`] names), the route and why, and
    /// what was missing if the answer is degraded.
    pub fn recall_answer(&self, query: RecallRequest) -> Result<RecallAnswer, ClientError> {
        let mut request = request(RequestBody::Recall(query));
        let mut connection = self.lock();
        let guard = connection.call(&mut request, None)?.into_result()?;
        let mismatch = || ClientError::Protocol("the answer does not match the request".into());
        let ArchivedResponseBody::Recalled(hits) = &guard.body else {
            return Err(mismatch());
        };
        let hits = rkyv::deserialize::<Vec<RecallHit>, rkyv::rancor::Error>(hits).map_err(|_| mismatch())?;
        let route = rkyv::deserialize::<wire::Route, rkyv::rancor::Error>(&guard.route).map_err(|_| mismatch())?;
        Ok(RecallAnswer {
            request_id: guard.request_id.to_native(),
            route,
            route_reason: guard.route_reason.to_string(),
            degraded: match &guard.status {
                wire::ArchivedStatus::Degraded { reason } => Some(reason.to_string()),
                _ => None,
            },
            hits,
        })
    }

    /// Deletes memories; returns how many were deleted.
    pub fn forget(&self, what: ForgetRequest) -> Result<u64, ClientError> {
        let mut request = request(RequestBody::Forget(what));
        self.ok_body(&mut request, |body| match body {
            ArchivedResponseBody::Forgotten(count) => Some(count.to_native()),
            _ => None,
        })
    }

    /// Records whether a recalled memory was useful.
    pub fn feedback(&self, memory_id: u64, recall_request_id: u64, useful: bool) -> Result<(), ClientError> {
        let body = RequestBody::Feedback(FeedbackRequest {
            memory_id,
            recall_request_id,
            useful,
        });
        self.ok_body(&mut request(body), |_| Some(()))
    }

    /// Makes every acknowledged write durable now; returns the durable log position.
    pub fn flush(&self) -> Result<u64, ClientError> {
        self.ok_body(&mut request(RequestBody::Flush), |body| match body {
            ArchivedResponseBody::Flushed(lsn) => Some(lsn.to_native()),
            _ => None,
        })
    }

    /// Writes a snapshot now; returns the log position it covers.
    pub fn checkpoint(&self) -> Result<u64, ClientError> {
        self.ok_body(&mut request(RequestBody::Checkpoint), |body| match body {
            ArchivedResponseBody::Checkpointed(lsn) => Some(lsn.to_native()),
            _ => None,
        })
    }

    /// One page of the stored memories, in (namespace, id) order; pass the
    /// page's `next` as the next request's `after` until it is `None`.
    pub fn list(&self, request: ListRequest) -> Result<ListPage, ClientError> {
        self.ok_body(&mut self::request(RequestBody::List(request)), |body| match body {
            ArchivedResponseBody::Listed(page) => rkyv::deserialize::<_, rkyv::rancor::Error>(page).ok(),
            _ => None,
        })
    }

    fn ok_body<T>(
        &self,
        request: &mut Request,
        pick: impl FnOnce(&ArchivedResponseBody) -> Option<T>,
    ) -> Result<T, ClientError> {
        let mut connection = self.lock();
        let guard = connection.call(request, None)?.into_result()?;
        pick(&guard.body).ok_or_else(|| ClientError::Protocol("the answer does not match the request".into()))
    }

    fn lock(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock leaves the connection in a state the
        // ring protocol tolerates (frames are published or not at all), so
        // poisoning is not a reason to refuse further calls.
        self.connection.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// A recall's results and how the daemon answered ([`Client::recall_answer`]).
#[derive(Debug, Clone, PartialEq)]
pub struct RecallAnswer {
    /// The recall's request id: what feedback on its results names.
    pub request_id: u64,
    /// The route taken.
    pub route: wire::Route,
    /// Why the router took it.
    pub route_reason: String,
    /// What the answer lacked (an engine down), if anything.
    pub degraded: Option<String>,
    /// Best first.
    pub hits: Vec<RecallHit>,
}

fn request(body: RequestBody) -> Request {
    Request {
        request_id: 0,
        deadline_ns: 0,
        body,
    }
}

/// Looks a counter up by name in a stats report.
pub fn counter(stats: &StatsReport, name: &str) -> Option<u64> {
    stats.counters.iter().find(|c| c.name == name).map(|c| c.value)
}
