//! `nexusd`'s command line: flags to [`Config`], logging, the runtime, signals.
//!
//! `main.rs` (and the test wrapper `nexusd-it`) call [`main`]; everything
//! else is in the library so tests run the very same code.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::config::Config;
use crate::handler::Shared;
use crate::listener::BoundSocket;

const USAGE: &str = "\
nexusd — the Memory Nexus sidecar daemon

USAGE: nexusd [OPTIONS]

OPTIONS:
  --data-dir DIR                 durable state (default: ./nexus-data)
  --socket PATH                  Unix socket (default: $NEXUS_SOCKET, else $XDG_RUNTIME_DIR/nexusd.sock, else ./nexusd.sock)
  --socket-mode OCTAL            socket file permissions (default: 600)
  --allow-uid UID                admit this peer uid (repeatable; default: the daemon's own uid)
  --max-clients N                connections served at once (default: 1024)
  --ring-bytes N                 ring size granted when a client asks for none (default: 1048576)
  --max-ring-bytes N             largest ring granted (default: 67108864)
  --max-frame-bytes N            largest frame payload (default: 8388608)
  --spin-us N                    adaptive busy-wait budget before sleeping, for hosts with spare cores (default: 0 = off)
  --worker-threads N             tokio worker threads (default: one per core)
  --handshake-timeout-ms N       time a client has to send its hello (default: 2000)
  --stalled-client-timeout-ms N  time a full response ring is tolerated (default: 10000)
  --max-bad-frames N             malformed frames tolerated per connection (default: 16)
  --shutdown-timeout-ms N        time sessions get to finish at shutdown (default: 5000)
  --log FILTER                   log filter, e.g. info or nexus_daemon=debug (default: $NEXUS_LOG, else info)
  -h, --help                     this text
  -V, --version                  the version
";

/// Runs the daemon with the process's arguments; returns its exit code.
pub fn main() -> ExitCode {
    let (config, log_filter) = match parse(std::env::args_os().skip(1)) {
        Ok(Some(parsed)) => parsed,
        Ok(None) => return ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("nexusd: {e:#}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    init_logging(&log_filter);
    match serve(config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

fn serve(config: Config) -> anyhow::Result<()> {
    raise_fd_limit();
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("cannot create the data directory {}", config.data_dir.display()))?;
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if config.worker_threads > 0 {
        runtime.worker_threads(config.worker_threads);
    }
    let runtime = runtime
        .enable_all()
        .thread_name("nexusd-worker")
        .build()
        .context("cannot start the runtime")?;
    runtime.block_on(async move {
        let shutdown = CancellationToken::new();
        watch_signals(shutdown.clone())?;
        let socket = BoundSocket::bind(&config.socket_path, config.socket_mode)?;
        info!(version = env!("CARGO_PKG_VERSION"), data_dir = %config.data_dir.display(), "nexusd ready");
        let shared = Shared::new(config);
        crate::server::run(shared, socket, shutdown).await?;
        info!("nexusd stopped");
        Ok(())
    })
}

/// SIGTERM/SIGINT start a graceful shutdown; a second one exits at once.
fn watch_signals(shutdown: CancellationToken) -> anyhow::Result<()> {
    let mut term = signal(SignalKind::terminate()).context("cannot install the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot install the SIGINT handler")?;
    tokio::spawn(async move {
        let mut seen = 0;
        loop {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
            seen += 1;
            if seen == 1 {
                info!("shutdown requested");
                shutdown.cancel();
            } else {
                warn!("second shutdown signal: exiting now");
                std::process::exit(130);
            }
        }
    });
    Ok(())
}

/// Each client costs ~4 fds; the default soft limit (1024) would cap the
/// daemon at ~250 clients, so raise it to the hard limit.
fn raise_fd_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE)
        && soft < hard
    {
        let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
    }
}

fn init_logging(filter: &str) {
    let filter =
        tracing_subscriber::EnvFilter::try_new(filter).unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
}

/// Parses flags; `Ok(None)` when --help or --version was answered.
fn parse(args: impl IntoIterator<Item = OsString>) -> anyhow::Result<Option<(Config, String)>> {
    use lexopt::prelude::*;
    let mut config = Config::default();
    let mut log = std::env::var("NEXUS_LOG").unwrap_or_else(|_| "info".to_owned());
    let mut allowed: Vec<u32> = Vec::new();
    let mut parser = lexopt::Parser::from_args(args);
    while let Some(arg) = parser.next()? {
        match arg {
            Long("data-dir") => config.data_dir = PathBuf::from(parser.value()?),
            Long("socket") => config.socket_path = PathBuf::from(parser.value()?),
            Long("socket-mode") => {
                let text = parser.value()?.string()?;
                config.socket_mode = u32::from_str_radix(&text, 8)
                    .with_context(|| format!("--socket-mode {text}: not an octal mode"))?;
            }
            Long("allow-uid") => allowed.push(parser.value()?.parse()?),
            Long("max-clients") => config.max_clients = positive(parser.value()?.parse()?, "--max-clients")?,
            Long("ring-bytes") => config.default_ring_bytes = parser.value()?.parse()?,
            Long("max-ring-bytes") => config.max_ring_bytes = parser.value()?.parse()?,
            Long("max-frame-bytes") => config.max_frame_bytes = parser.value()?.parse()?,
            Long("spin-us") => config.spin = Duration::from_micros(parser.value()?.parse()?),
            Long("worker-threads") => config.worker_threads = parser.value()?.parse()?,
            Long("handshake-timeout-ms") => config.handshake_timeout = millis(parser.value()?.parse()?),
            Long("stalled-client-timeout-ms") => config.stalled_client_timeout = millis(parser.value()?.parse()?),
            Long("max-bad-frames") => config.max_bad_frames = parser.value()?.parse()?,
            Long("shutdown-timeout-ms") => config.shutdown_timeout = millis(parser.value()?.parse()?),
            Long("log") => log = parser.value()?.string()?,
            Short('h') | Long("help") => {
                print!("{USAGE}");
                return Ok(None);
            }
            Short('V') | Long("version") => {
                println!("nexusd {}", env!("CARGO_PKG_VERSION"));
                return Ok(None);
            }
            other => bail!(other.unexpected()),
        }
    }
    if !allowed.is_empty() {
        config.allowed_uids = allowed;
    }
    Ok(Some((config, log)))
}

fn positive(value: usize, flag: &str) -> anyhow::Result<usize> {
    if value == 0 {
        bail!("{flag} must be at least 1");
    }
    Ok(value)
}

fn millis(ms: u64) -> Duration {
    Duration::from_millis(ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_override_the_defaults() {
        let args = [
            "--socket",
            "/tmp/x.sock",
            "--socket-mode",
            "660",
            "--allow-uid",
            "7",
            "--spin-us",
            "20",
        ];
        let (config, _) = parse(args.map(OsString::from)).unwrap().unwrap();
        assert_eq!(config.socket_path, PathBuf::from("/tmp/x.sock"));
        assert_eq!(config.socket_mode, 0o660);
        assert_eq!(config.allowed_uids, vec![7]);
        assert_eq!(config.spin, Duration::from_micros(20));
    }

    #[test]
    fn bad_flags_are_reported() {
        assert!(parse(["--max-clients", "0"].map(OsString::from)).is_err());
        assert!(parse(["--socket-mode", "9x"].map(OsString::from)).is_err());
        assert!(parse(["--frobnicate"].map(OsString::from)).is_err());
    }
}
