//! The metrics endpoint (`metrics_socket`, off by default): `GET /metrics`
//! answered with the OpenMetrics text of `metrics::exposition`, over HTTP/1.1
//! on a Unix socket or a loopback TCP port.
//!
//! ```text
//! curl --unix-socket /run/nexus/metrics.sock http://localhost/metrics
//! ```
//!
//! A side door, built so it cannot hurt the front one: its own task and
//! accept loop, at most [`MAX_CONNECTIONS`] connections at once (more are
//! answered 503 and closed), one request per connection, a request head of
//! at most [`MAX_REQUEST_HEAD_BYTES`] read within [`READ_DEADLINE`], the
//! answer written within [`WRITE_DEADLINE`]. The scrape itself (the Stats
//! report, which takes the store's read lock, and the encoding) runs on the
//! blocking pool, never on a worker that serves sessions. It stops with the
//! daemon (`shutdown`), and its Unix socket is owned like the main one
//! (`transport::listener`: a lock, a stale file replaced, `socket_mode`,
//! removed at the end).
//!
//! What this module does not do: decide what is exposed or how it is named
//! (`metrics::exposition`), or speak more HTTP than a scraper needs (no
//! keep-alive, no chunked bodies, no TLS: loopback and a private socket only).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use crate::handler::Shared;
use crate::metrics::WAL_FSYNC;
use crate::metrics::exposition::{CONTENT_TYPE, MAX_NAMESPACE_LABELS, NamespaceMemories, Scrape};
use crate::transport::listener::{BoundSocket, ListenError};

/// Scrapes served at once. Prometheus scrapes one at a time; a few more
/// leave room for an operator's curl, and no more bounds what a local
/// process can make the daemon encode (each scrape is ~50 KB of text).
pub const MAX_CONNECTIONS: usize = 8;

/// Largest request head read: a scraper's is a few hundred bytes.
pub const MAX_REQUEST_HEAD_BYTES: usize = 8 << 10;

/// Time a client has to send its request head: a slow or silent client
/// holds one of [`MAX_CONNECTIONS`] for at most this long.
pub const READ_DEADLINE: Duration = Duration::from_secs(2);

/// Time a client has to take the answer.
pub const WRITE_DEADLINE: Duration = Duration::from_secs(2);

/// What `tcp:` introduces in `metrics_socket`.
const TCP_PREFIX: &str = "tcp:";

/// Where the endpoint listens, from `metrics_socket`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// A Unix socket at this path.
    Unix(PathBuf),
    /// A loopback TCP address (`tcp:127.0.0.1:9464`).
    Tcp(SocketAddr),
}

/// Why the endpoint cannot be set up. The messages name the setting.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EndpointError {
    /// `tcp:` followed by something that is not `IP:PORT`.
    #[error(
        "{setting:?} is not tcp:IP:PORT ({reason}); \
         write tcp:127.0.0.1:PORT, or a Unix socket path"
    )]
    BadAddress {
        /// The setting as given.
        setting: String,
        /// What the parser said.
        reason: String,
    },
    /// An address other hosts could reach.
    #[error(
        "{addr} is not a loopback address; the metrics endpoint \
         listens on 127.0.0.1 or [::1] only (put a proxy in front of it to export metrics)"
    )]
    NotLoopback {
        /// The address given.
        addr: SocketAddr,
    },
    /// The same path as the daemon's own socket.
    #[error("{path} is the daemon's own socket; give the metrics another path")]
    SameAsSocket {
        /// The path.
        path: PathBuf,
    },
    /// The TCP port could not be bound.
    #[error("cannot serve metrics on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// The Unix socket could not be taken.
    #[error("cannot serve metrics: {0}")]
    Listen(#[from] ListenError),
    /// The socket could not be handed to the runtime.
    #[error("cannot serve metrics on {endpoint}: {source}")]
    Register {
        /// The endpoint.
        endpoint: String,
        /// The OS error.
        source: std::io::Error,
    },
}

impl Endpoint {
    /// Reads `metrics_socket`: `tcp:IP:PORT` (loopback only), else a Unix
    /// socket path that must differ from the daemon's `socket`.
    pub fn parse(setting: &Path, socket: &Path) -> Result<Self, EndpointError> {
        let text = setting.to_string_lossy();
        let Some(address) = text.strip_prefix(TCP_PREFIX) else {
            if setting == socket {
                return Err(EndpointError::SameAsSocket {
                    path: setting.to_path_buf(),
                });
            }
            return Ok(Self::Unix(setting.to_path_buf()));
        };
        let addr: SocketAddr = address
            .parse()
            .map_err(|e: std::net::AddrParseError| EndpointError::BadAddress {
                setting: text.to_string(),
                reason: e.to_string(),
            })?;
        if !addr.ip().is_loopback() {
            return Err(EndpointError::NotLoopback { addr });
        }
        Ok(Self::Tcp(addr))
    }
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Unix(path) => write!(f, "{}", path.display()),
            Self::Tcp(addr) => write!(f, "{TCP_PREFIX}{addr}"),
        }
    }
}

/// The endpoint's bound listener (the Unix socket file is removed when it drops).
pub struct MetricsListener {
    inner: Listening,
    /// Where it listens, for the logs (a TCP port 0 resolved).
    endpoint: Endpoint,
}

enum Listening {
    Unix {
        /// Owns the path: kept until the server ends, then removes the file.
        _socket: BoundSocket,
        listener: UnixListener,
    },
    Tcp(TcpListener),
}

impl MetricsListener {
    /// Binds `endpoint` (a Unix socket gets `socket_mode`). Must run inside
    /// the runtime.
    pub async fn bind(endpoint: &Endpoint, socket_mode: u32) -> Result<Self, EndpointError> {
        let register = |source| EndpointError::Register {
            endpoint: endpoint.to_string(),
            source,
        };
        match endpoint {
            Endpoint::Unix(path) => {
                let socket = BoundSocket::bind(path, socket_mode)?;
                let std_listener = socket.listener().try_clone().map_err(register)?;
                std_listener.set_nonblocking(true).map_err(register)?;
                let listener = UnixListener::from_std(std_listener).map_err(register)?;
                Ok(Self {
                    inner: Listening::Unix {
                        _socket: socket,
                        listener,
                    },
                    endpoint: endpoint.clone(),
                })
            }
            Endpoint::Tcp(addr) => {
                let bind = |source| EndpointError::Bind { addr: *addr, source };
                let listener = TcpListener::bind(addr).await.map_err(bind)?;
                let bound = listener.local_addr().map_err(bind)?;
                Ok(Self {
                    inner: Listening::Tcp(listener),
                    endpoint: Endpoint::Tcp(bound),
                })
            }
        }
    }

    async fn accept(&self) -> std::io::Result<Stream> {
        match &self.inner {
            Listening::Unix { listener, .. } => Ok(Stream::Unix(listener.accept().await?.0)),
            Listening::Tcp(listener) => Ok(Stream::Tcp(listener.accept().await?.0)),
        }
    }
}

/// One scraper's connection.
enum Stream {
    Unix(UnixStream),
    Tcp(TcpStream),
}

/// Serves scrapes until `shutdown`, then waits for the open ones to end
/// (each is bounded by the deadlines, and ends at once on `shutdown`).
pub async fn serve(shared: Arc<Shared>, listener: MetricsListener, shutdown: CancellationToken) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let tracker = TaskTracker::new();
    info!(endpoint = %listener.endpoint, "serving metrics");
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let stream = match accepted {
            Ok(stream) => stream,
            Err(error) => {
                // Usually EMFILE: back off instead of spinning on a full fd table.
                warn!(%error, "metrics: accept failed; retrying in 50 ms");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            refuse_busy(&stream);
            continue;
        };
        tracker.spawn(connection(stream, shared.clone(), shutdown.clone(), permit));
    }
    drop(listener);
    tracker.close();
    tracker.wait().await;
    info!("metrics endpoint stopped");
}

/// At [`MAX_CONNECTIONS`]: a best-effort 503 (never waiting on the client), then close.
fn refuse_busy(stream: &Stream) {
    const BUSY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
    let _ = match stream {
        Stream::Unix(stream) => stream.try_write(BUSY),
        Stream::Tcp(stream) => stream.try_write(BUSY),
    };
    debug!("metrics: {MAX_CONNECTIONS} scrapes in progress; one more refused");
}

async fn connection(stream: Stream, shared: Arc<Shared>, shutdown: CancellationToken, _slot: OwnedSemaphorePermit) {
    let exchanged = tokio::select! {
        _ = shutdown.cancelled() => return,
        exchanged = async {
            match stream {
                Stream::Unix(mut stream) => exchange(&mut stream, &shared).await,
                Stream::Tcp(mut stream) => exchange(&mut stream, &shared).await,
            }
        } => exchanged,
    };
    if let Err(error) = exchanged {
        debug!(%error, "metrics: connection ended without an answer");
    }
}

/// Why a connection ended without its answer.
#[derive(Debug, thiserror::Error)]
enum ExchangeError {
    #[error("the client sent no complete request head within {READ_DEADLINE:?}")]
    ReadTimedOut,
    #[error("the client did not take the answer within {WRITE_DEADLINE:?}")]
    WriteTimedOut,
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// Reads one request and answers it.
async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    shared: &Arc<Shared>,
) -> Result<(), ExchangeError> {
    let head = match tokio::time::timeout(READ_DEADLINE, read_head(stream)).await {
        Ok(head) => head?,
        Err(_) => {
            let timed_out = plain(408, "Request Timeout", "the request head took too long\n");
            let _ = tokio::time::timeout(WRITE_DEADLINE, stream.write_all(&timed_out)).await;
            return Err(ExchangeError::ReadTimedOut);
        }
    };
    let answer = match head {
        Head::TooLarge => plain(
            431,
            "Request Header Fields Too Large",
            "the request head exceeds 8 KiB\n",
        ),
        Head::Closed => return Ok(()),
        Head::Complete(request_line) => match route(&request_line) {
            Target::Metrics => metrics_answer(shared).await,
            Target::NotFound => plain(404, "Not Found", "not found: the metrics are at GET /metrics\n"),
            Target::Malformed => plain(400, "Bad Request", "not an HTTP/1.x request line\n"),
        },
    };
    match tokio::time::timeout(WRITE_DEADLINE, stream.write_all(&answer)).await {
        Ok(written) => written?,
        Err(_) => return Err(ExchangeError::WriteTimedOut),
    }
    let _ = tokio::time::timeout(WRITE_DEADLINE, stream.shutdown()).await;
    Ok(())
}

/// A request head as far as it was read.
enum Head {
    /// Up to the blank line; the request line.
    Complete(String),
    /// [`MAX_REQUEST_HEAD_BYTES`] without a blank line.
    TooLarge,
    /// The client closed before finishing it.
    Closed,
}

async fn read_head<S: AsyncRead + Unpin>(stream: &mut S) -> std::io::Result<Head> {
    let mut head = vec![0u8; MAX_REQUEST_HEAD_BYTES];
    let mut filled = 0;
    while filled < head.len() {
        let read = stream.read(&mut head[filled..]).await?;
        if read == 0 {
            return Ok(Head::Closed);
        }
        // Only the newly read bytes (and the 3 before them) can complete the blank line.
        let from = filled.saturating_sub(3);
        filled += read;
        if head[from..filled].windows(4).any(|w| w == b"\r\n\r\n") {
            let line_end = head.iter().position(|&b| b == b'\r').unwrap_or(filled);
            return Ok(Head::Complete(String::from_utf8_lossy(&head[..line_end]).into_owned()));
        }
    }
    Ok(Head::TooLarge)
}

/// What a request line asks for.
#[derive(Debug, PartialEq, Eq)]
enum Target {
    Metrics,
    NotFound,
    Malformed,
}

/// `GET /metrics HTTP/1.x` (a query string is ignored) is the one thing served.
fn route(request_line: &str) -> Target {
    let mut parts = request_line.split(' ');
    let (Some(method), Some(target), Some(version), None) = (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Target::Malformed;
    };
    if !version.starts_with("HTTP/1.") || !target.starts_with('/') {
        return Target::Malformed;
    }
    let path = target.split('?').next().unwrap_or(target);
    match (method, path) {
        ("GET", "/metrics") => Target::Metrics,
        _ => Target::NotFound,
    }
}

/// The 200 answer with a fresh scrape, or a 500 naming why there is none.
async fn metrics_answer(shared: &Arc<Shared>) -> Vec<u8> {
    let shared = shared.clone();
    let encoded = tokio::task::spawn_blocking(move || take_scrape(&shared).encode()).await;
    match encoded {
        Ok(Ok(text)) => response(200, "OK", CONTENT_TYPE, text.as_bytes()),
        Ok(Err(error)) => plain(500, "Internal Server Error", &format!("encoding failed: {error}\n")),
        Err(error) => plain(500, "Internal Server Error", &format!("the scrape failed: {error}\n")),
    }
}

/// Everything a scrape shows, read now (blocking: takes the store's lock).
fn take_scrape(shared: &Shared) -> Scrape {
    let namespaces =
        (shared.store).with_namespace_sizes(|sizes| NamespaceMemories::largest(sizes, MAX_NAMESPACE_LABELS));
    Scrape {
        stats: crate::handler::stats(shared),
        recall_latency: shared.metrics.recall_latency().collect(),
        request_latency: shared.metrics.request_latency().collect(),
        wal_fsync: WAL_FSYNC.snapshot(),
        request_ring_occupancy: shared.metrics.request_ring_occupancy.snapshot(),
        namespaces,
    }
}

fn plain(status: u16, reason: &str, body: &str) -> Vec<u8> {
    response(status, reason, "text/plain; charset=utf-8", body.as_bytes())
}

fn response(status: u16, reason: &str, content_type: &str, body: &[u8]) -> Vec<u8> {
    let head = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let mut answer = Vec::with_capacity(head.len() + body.len());
    answer.extend_from_slice(head.as_bytes());
    answer.extend_from_slice(body);
    answer
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_get_metrics_is_served() {
        assert_eq!(route("GET /metrics HTTP/1.1"), Target::Metrics);
        assert_eq!(route("GET /metrics?name[]=x HTTP/1.0"), Target::Metrics);
        assert_eq!(route("GET / HTTP/1.1"), Target::NotFound);
        assert_eq!(route("POST /metrics HTTP/1.1"), Target::NotFound);
        assert_eq!(route("GET /metrics"), Target::Malformed);
        assert_eq!(route("GET /metrics HTTP/2 extra"), Target::Malformed);
        assert_eq!(route("\u{0}\u{1}"), Target::Malformed);
    }

    #[test]
    fn the_endpoint_is_a_unix_path_or_a_loopback_port() {
        let socket = Path::new("/run/nexus/nexusd.sock");
        let parse = |setting: &str| Endpoint::parse(Path::new(setting), socket);
        assert_eq!(
            parse("/run/nexus/metrics.sock").unwrap(),
            Endpoint::Unix("/run/nexus/metrics.sock".into())
        );
        assert_eq!(
            parse("tcp:127.0.0.1:9464").unwrap(),
            Endpoint::Tcp("127.0.0.1:9464".parse().unwrap())
        );
        assert!(matches!(parse("tcp:[::1]:9464"), Ok(Endpoint::Tcp(_))));
        let public = parse("tcp:0.0.0.0:9464").unwrap_err().to_string();
        assert!(
            public.contains("0.0.0.0:9464") && public.contains("loopback"),
            "{public}"
        );
        let name = parse("tcp:localhost:9464").unwrap_err().to_string();
        assert!(name.contains("tcp:127.0.0.1:PORT"), "{name}");
        assert!(matches!(
            parse("/run/nexus/nexusd.sock"),
            Err(EndpointError::SameAsSocket { .. })
        ));
    }

    #[tokio::test]
    async fn a_head_is_read_up_to_its_blank_line_and_no_further_than_8_kib() {
        let (mut client, mut server) = tokio::io::duplex(64 << 10);
        client
            .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let Head::Complete(line) = read_head(&mut server).await.unwrap() else {
            panic!("a complete head")
        };
        assert_eq!(line, "GET /metrics HTTP/1.1");
        let (mut client, mut server) = tokio::io::duplex(64 << 10);
        client.write_all(&[b'a'; MAX_REQUEST_HEAD_BYTES + 1]).await.unwrap();
        assert!(matches!(read_head(&mut server).await.unwrap(), Head::TooLarge));
        drop(client);
    }
}
