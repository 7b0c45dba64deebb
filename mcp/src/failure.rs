//! A failed call to nexusd as one line: what failed, nexusd's own message,
//! and the fix where there is one. The same words as the `nexus` command
//! line's (cli/src/errors.rs), so a user meets one phrasing of "nexusd is
//! not running" whichever tool they use; the fixes name this server's
//! arguments instead of the CLI's flags.
//!
//! What it does not do: decide how a line reaches the user (the server makes
//! it a tool error, `main` prints it at start-up) or retry (`daemon` does,
//! once).

use std::io;
use std::path::Path;
use std::time::Duration;

use nexus_client::ClientError;
use nexus_client::wire::ErrorCode;

/// The line for `error`, which happened during `operation` ("remember",
/// "recall", ..., or "connecting to nexusd") against the daemon at `socket`.
pub fn line(operation: &str, error: &ClientError, socket: &Path) -> String {
    let shown = socket.display();
    match error {
        ClientError::Connect { source, .. } => connect_line(source, socket),
        ClientError::Refused { code, message } => refusal_line(*code, message, socket),
        ClientError::VersionMismatch { message } => format!(
            "nexusd on {shown} speaks another protocol version: {message}: use the nexus-mcp built with the running nexusd (the same release)"
        ),
        ClientError::Handshake(message) => format!(
            "the handshake with {shown} failed: {message}: check that --socket names nexusd's socket and that nexusd is not stuck"
        ),
        ClientError::UntrustedDaemon { expected, actual, .. } => format!(
            "the process on {shown} runs as uid {actual}, not nexusd's uid {expected}: check --socket (or $NEXUS_SOCKET), \
             or set NEXUS_DAEMON_UID to the uid nexusd runs as"
        ),
        ClientError::DaemonGone => format!(
            "{operation} failed: nexusd closed the connection (it stopped or restarted) and was not back: call again once nexusd is up"
        ),
        ClientError::Timeout(waited) => format!(
            "{operation} failed: no answer from nexusd on {shown} within {} ms: nexusd is overloaded or stuck; look at nexusd's log",
            millis(*waited)
        ),
        ClientError::Busy(waited) => format!(
            "{operation} failed: nexusd is busy (its request ring stayed full for {} ms): try again in a moment",
            millis(*waited)
        ),
        ClientError::FrameTooLarge { max } => format!(
            "{operation} failed: the request is larger than nexusd's maximum frame of {max} bytes: send less at once (a shorter text)"
        ),
        ClientError::Status { code, message } => status_line(operation, *code, message),
        other => format!("{operation} failed: {other}"),
    }
}

/// The socket could not be reached: the CLI's words, with the command that
/// starts nexusd when none runs.
fn connect_line(source: &io::Error, socket: &Path) -> String {
    let shown = socket.display();
    match source.kind() {
        io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused => format!(
            "nexusd is not running on {shown}: start it with `nexusd --socket {shown}` (or `systemctl start nexusd`)"
        ),
        io::ErrorKind::PermissionDenied => format!(
            "cannot connect to nexusd on {shown}: permission denied: join the group that owns the socket, \
             or add `--allow-uid {}` to nexusd with a `--socket-mode` that lets you in",
            current_uid()
        ),
        _ => format!("cannot connect to nexusd on {shown}: {source}: check --socket (or $NEXUS_SOCKET)"),
    }
}

fn refusal_line(code: u32, message: &str, socket: &Path) -> String {
    let shown = socket.display();
    match ErrorCode::from_u32(code) {
        Some(ErrorCode::PermissionDenied) => format!(
            "nexusd on {shown} refused this process: {message}: add `--allow-uid {}` to nexusd's flags \
             (or `allowed_uids` in its config), or join its group",
            current_uid()
        ),
        Some(ErrorCode::TooManyClients) => format!(
            "nexusd on {shown} refused the connection: {message}: wait for clients to disconnect, or raise nexusd's --max-clients"
        ),
        _ => format!("nexusd on {shown} refused the connection: {message}"),
    }
}

/// nexusd answered with an error: its message (without a repeated
/// "operation: " prefix), and a fix in this server's terms where one is
/// obvious.
fn status_line(operation: &str, code: u32, message: &str) -> String {
    let message = message
        .strip_prefix(operation)
        .and_then(|rest| rest.strip_prefix(": "))
        .unwrap_or(message);
    let Some(known) = ErrorCode::from_u32(code) else {
        return format!("{operation} failed: nexusd error {code}: {message}");
    };
    let fix = match (known, operation) {
        // An unknown recall's message ends with its own fix (after "; ").
        (ErrorCode::NotFound, "feedback") if !message.contains("; ") => {
            Some("judge a memory `id` from the results of the recall whose `recall_id` you give")
        }
        (ErrorCode::NotAvailable, "recall") => {
            Some("let nexusd pick the route (omit `route`, or give \"auto\"), or try \"smart\"")
        }
        (ErrorCode::BatchTooLarge, _) => Some("send less at once"),
        (ErrorCode::DiskFull, _) => Some("free space on nexusd's data disk (recall keeps working meanwhile)"),
        (ErrorCode::StorageFailed, _) => Some("restart nexusd: its write-ahead log stopped after a disk error"),
        (ErrorCode::Busy, _) => Some("try again in a moment"),
        (ErrorCode::ShuttingDown, _) => Some("start nexusd again"),
        (ErrorCode::Internal, _) => Some("this is a bug in nexusd: report it with nexusd's log"),
        _ => None,
    };
    match fix {
        Some(fix) => format!("{operation} failed: {message}: {fix}"),
        None => format!("{operation} failed: {message}"),
    }
}

fn current_uid() -> u32 {
    nix::unistd::getuid().as_raw()
}

fn millis(duration: Duration) -> u128 {
    duration.as_millis()
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    const SOCKET: &str = "/run/nexus/nexusd.sock";

    fn connect(kind: io::ErrorKind) -> ClientError {
        ClientError::Connect {
            path: PathBuf::from(SOCKET),
            source: io::Error::from(kind),
        }
    }

    fn status(code: ErrorCode, message: &str) -> ClientError {
        ClientError::Status {
            code: code as u32,
            message: message.into(),
        }
    }

    /// Each failure → the words its line must hold.
    #[test]
    fn every_failure_is_one_line_with_the_daemons_message_and_a_fix() {
        let table: Vec<(&str, ClientError, &[&str])> = vec![
            (
                "connecting to nexusd",
                connect(io::ErrorKind::NotFound),
                &[
                    "nexusd is not running on /run/nexus/nexusd.sock",
                    "start it with `nexusd --socket /run/nexus/nexusd.sock` (or `systemctl start nexusd`)",
                ],
            ),
            ("recall", connect(io::ErrorKind::ConnectionRefused), &["is not running"]),
            (
                "recall",
                connect(io::ErrorKind::PermissionDenied),
                &["permission denied", "--allow-uid"],
            ),
            (
                "connecting to nexusd",
                ClientError::Refused {
                    code: ErrorCode::TooManyClients as u32,
                    message: "at max_clients".into(),
                },
                &["at max_clients", "--max-clients"],
            ),
            (
                "recall",
                ClientError::DaemonGone,
                &["recall failed: nexusd closed the connection"],
            ),
            (
                "stats",
                ClientError::Timeout(Duration::from_millis(5000)),
                &["stats failed: no answer", "5000 ms"],
            ),
            (
                "feedback",
                status(
                    ErrorCode::NotFound,
                    "feedback: memory 5 was not among the results of recall 9",
                ),
                &["feedback failed: memory 5 was not among the results of recall 9: judge a memory `id`"],
            ),
            (
                "recall",
                status(
                    ErrorCode::NotAvailable,
                    "route CacheOnly: no answer to this query is cached",
                ),
                &["no answer to this query is cached: let nexusd pick the route"],
            ),
            (
                "remember",
                status(ErrorCode::InvalidArgument, "importance -1 is out of range"),
                &["remember failed: importance -1 is out of range"],
            ),
            (
                "recall",
                ClientError::Status {
                    code: 9999,
                    message: "new".into(),
                },
                &["nexusd error 9999: new"],
            ),
        ];
        for (operation, error, words) in table {
            let line = line(operation, &error, Path::new(SOCKET));
            assert!(!line.contains('\n'), "one line: {line:?}");
            for word in words {
                assert!(line.contains(word), "{line:?} lacks {word:?}");
            }
        }
    }

    #[test]
    fn the_daemons_own_fix_is_not_doubled() {
        let error = status(
            ErrorCode::NotFound,
            "feedback: recall 9 is unknown; judge results of a recent recall",
        );
        let line = line("feedback", &error, Path::new(SOCKET));
        assert_eq!(
            line,
            "feedback failed: recall 9 is unknown; judge results of a recent recall"
        );
    }
}
