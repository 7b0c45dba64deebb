//! The one connection to nexusd, used from async code: `nexus-client` is
//! blocking, so each call runs on tokio's blocking pool, and a call that
//! finds the daemon gone (restarted under us) reconnects and is made once
//! more.
//!
//! The retry repeats a remember too: a daemon that died mid-write may have
//! made it durable without answering, and the repeat is then stored as a
//! near-duplicate that nexusd links to the first (recall shows one of them);
//! a memory with a `key` is simply replaced. Losing the write would be worse.
//!
//! What it does not do: word failures (`failure`) or shape answers (`shape`).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use nexus_client::{Client, ClientError, ConnectOptions};

/// How long the handshake and each call may take: a recall on the slowest
/// route answers in milliseconds, so this only ends calls to a stuck daemon.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// Threads of tokio's blocking pool, which runs the calls. The client
/// serves one call at a time (one connection behind a mutex), so more
/// threads would only wait on that mutex.
pub const BLOCKING_THREADS: usize = 4;

/// A connected nexusd, shareable between concurrent tool calls.
#[derive(Clone)]
pub struct Daemon {
    client: Arc<Client>,
    socket: PathBuf,
}

impl Daemon {
    /// Connects to nexusd at `socket` (the handshake included).
    pub fn connect(socket: &Path) -> Result<Self, ClientError> {
        let options = ConnectOptions {
            name: "nexus-mcp".into(),
            timeout: CALL_TIMEOUT,
            ..ConnectOptions::default()
        };
        Ok(Self {
            client: Arc::new(Client::connect_with(socket, options)?),
            socket: socket.to_path_buf(),
        })
    }

    /// The socket this daemon listens on (for failure lines).
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Runs `call` on the blocking pool; when nexusd went away, reconnects
    /// and runs it once more. After any other error that leaves the
    /// connection unusable, reconnects for the next call.
    pub async fn call<T, F>(&self, call: F) -> Result<T, ClientError>
    where
        T: Send + 'static,
        F: Fn(&Client) -> Result<T, ClientError> + Send + 'static,
    {
        let client = Arc::clone(&self.client);
        let task = tokio::task::spawn_blocking(move || call_with_one_reconnect(&client, call));
        match task.await {
            Ok(outcome) => outcome,
            // The call panicked (a bug): say so as a failed call, not a dead server.
            Err(join) => Err(ClientError::Protocol(format!(
                "the call to nexusd failed inside nexus-mcp: {join}"
            ))),
        }
    }
}

fn call_with_one_reconnect<T>(
    client: &Client,
    call: impl Fn(&Client) -> Result<T, ClientError>,
) -> Result<T, ClientError> {
    match call(client) {
        Err(ClientError::DaemonGone) => {
            tracing::info!("nexusd closed the connection; reconnecting once");
            client.reconnect()?;
            call(client)
        }
        Err(error) if error.is_fatal() => {
            if let Err(reconnect) = client.reconnect() {
                tracing::warn!(%reconnect, "reconnecting after a broken connection failed");
            }
            Err(error)
        }
        outcome => outcome,
    }
}
