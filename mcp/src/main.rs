//! `nexus-mcp`: the command an agent host launches. Reads its flags,
//! connects to nexusd (or exits 2 with one line saying how to start it), then
//! serves MCP on stdin/stdout until the host closes stdin.
//!
//! stdout is the protocol: nothing else may write there. Logs go to stderr
//! (`NEXUS_MCP_LOG` filters them, e.g. `nexus_mcp=debug`; warnings by
//! default).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use nexus_mcp::daemon::{self, Daemon};
use nexus_mcp::failure;
use nexus_mcp::server::NexusServer;
use rmcp::ServiceExt;

/// The environment variable with the default namespace (as `nexus` reads it).
const NAMESPACE_ENV: &str = "NEXUS_NAMESPACE";

/// The namespace of calls that name none, when neither flag nor environment
/// gives one (as `nexus` defaults).
const DEFAULT_NAMESPACE: &str = "default";

/// The environment variable with the log filter.
const LOG_ENV: &str = "NEXUS_MCP_LOG";

/// Exit code when nexusd cannot be reached (as `nexus`'s).
const EXIT_DOWN: u8 = 2;

/// Exit code when serving failed after start-up.
const EXIT_FAILED: u8 = 1;

/// Memory Nexus as an MCP server over stdio: give an agent host this command, and its model can remember, recall,
/// forget, judge and inspect memories in a running nexusd.
#[derive(Debug, Parser)]
#[command(name = "nexus-mcp", version)]
struct Flags {
    /// nexusd's socket [default: $NEXUS_SOCKET, else $XDG_RUNTIME_DIR/nexusd.sock, else ./nexusd.sock]
    #[arg(long, value_name = "PATH")]
    socket: Option<PathBuf>,
    /// The namespace of tool calls that name none, so each agent of a host can have its own memory
    /// [default: $NEXUS_NAMESPACE, else "default"]
    #[arg(long, value_name = "NAME")]
    namespace: Option<String>,
}

fn main() -> ExitCode {
    let flags = Flags::parse();
    init_logging();
    let socket = flags.socket.unwrap_or_else(nexus_client::default_socket_path);
    let namespace = flags
        .namespace
        .or_else(|| std::env::var(NAMESPACE_ENV).ok())
        .filter(|namespace| !namespace.is_empty())
        .unwrap_or_else(|| DEFAULT_NAMESPACE.to_owned());
    let daemon = match Daemon::connect(&socket) {
        Ok(daemon) => daemon,
        Err(error) => {
            eprintln!("nexus-mcp: {}", failure::line("connecting to nexusd", &error, &socket));
            return ExitCode::from(EXIT_DOWN);
        }
    };
    tracing::info!(socket = %socket.display(), %namespace, "connected to nexusd; serving MCP on stdio");
    match serve(NexusServer::new(daemon, &namespace)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("nexus-mcp: {message}");
            ExitCode::from(EXIT_FAILED)
        }
    }
}

/// Serves MCP on stdin/stdout until the host closes the session.
fn serve(server: NexusServer) -> Result<(), String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .max_blocking_threads(daemon::BLOCKING_THREADS)
        .build()
        .map_err(|error| format!("starting the async runtime failed: {error}"))?;
    runtime.block_on(async {
        let running = server
            .serve(rmcp::transport::stdio())
            .await
            .map_err(|error| format!("the MCP session did not start: {error}"))?;
        running
            .waiting()
            .await
            .map_err(|error| format!("the MCP session failed: {error}"))?;
        Ok(())
    })
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env(LOG_ENV)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
}
