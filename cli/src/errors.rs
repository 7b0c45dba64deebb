//! What can go wrong in `nexus`, and the one line and exit code each becomes.
//!
//! Every failure ends in [`diagnose`]: one function maps each error to
//! `nexus: <what failed>: <cause>[: <fix>]` and an [`Exit`], so the wording
//! and the codes live in one table (and one test of it). The codes are part
//! of the interface scripts and probes rely on: 0 done, 1 the operation
//! failed, 2 the command line was wrong or nexusd cannot be reached.
//!
//! What it does not do: print (the caller does, once) or retry.

use std::io;
use std::path::PathBuf;
use std::time::Duration;

use nexus_client::ClientError;
use nexus_client::wire::ErrorCode;

use crate::transfer::TransferError;

/// How `nexus` exits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Done (for `health`: healthy).
    Success,
    /// The operation failed (for `health`: degraded).
    Failed,
    /// The command line was wrong (clap's convention).
    Usage,
    /// nexusd cannot be reached or is not serving: not running, refused the
    /// handshake, gone mid-call, silent until the timeout, shutting down.
    Down,
}

impl Exit {
    /// The process exit code.
    pub fn code(self) -> u8 {
        match self {
            Self::Success => 0,
            Self::Failed => 1,
            Self::Usage | Self::Down => 2,
        }
    }
}

/// The operation a failure happened in: the "what failed" of the line, and
/// a key for fixes that depend on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// Opening the connection (handshake included).
    Connect,
    /// `remember`.
    Remember,
    /// `recall`.
    Recall,
    /// `forget`.
    Forget,
    /// `feedback`.
    Feedback,
    /// `stats`.
    Stats,
    /// `health`.
    Health,
    /// `flush`.
    Flush,
    /// `checkpoint`.
    Checkpoint,
    /// `ping`.
    Ping,
    /// `import`.
    Import,
    /// `export`.
    Export,
}

impl Operation {
    fn label(self) -> &'static str {
        match self {
            Self::Connect => "connecting to nexusd",
            Self::Remember => "remember",
            Self::Recall => "recall",
            Self::Forget => "forget",
            Self::Feedback => "feedback",
            Self::Stats => "stats",
            Self::Health => "health",
            Self::Flush => "flush",
            Self::Checkpoint => "checkpoint",
            Self::Ping => "ping",
            Self::Import => "import",
            Self::Export => "export",
        }
    }
}

/// Everything a `nexus` command can fail with.
#[derive(Debug)]
pub enum CliError {
    /// The command line is wrong: clap's own errors, and the few rules its
    /// types cannot state (a forget with nothing to forget, a remember with
    /// no text).
    Usage(clap::Error),
    /// A call to nexusd failed, connecting included.
    Daemon {
        /// What was being done.
        operation: Operation,
        /// How it failed.
        error: ClientError,
    },
    /// A local file or stream could not be read, understood or created
    /// (a vector file, stdin, an import file, an export's `--output`).
    Local {
        /// What was being done, e.g. "reading the vector file v.json".
        what: String,
        /// Why it failed.
        cause: String,
    },
    /// Import or export failed.
    Transfer {
        /// Import or export.
        operation: Operation,
        /// How it failed.
        error: TransferError,
    },
    /// Writing the answer to stdout (or `--output`) failed.
    Output(io::Error),
}

impl CliError {
    /// A `Daemon` error for `operation` (for `map_err`).
    pub fn daemon(operation: Operation) -> impl FnOnce(ClientError) -> Self {
        move |error| Self::Daemon { operation, error }
    }
}

impl From<io::Error> for CliError {
    fn from(error: io::Error) -> Self {
        Self::Output(error)
    }
}

/// What the user is told: the line after `nexus: ` (none for a closed
/// output pipe, which is how `nexus stats | head` ends), and the exit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnosis {
    /// The message, without the `nexus: ` prefix; one line.
    pub line: Option<String>,
    /// The exit code's meaning.
    pub exit: Exit,
}

/// Facts about this invocation the messages name.
#[derive(Debug, Clone)]
pub struct Context {
    /// The socket `nexus` talked to.
    pub socket: PathBuf,
    /// This process's uid (what `--allow-uid` needs).
    pub uid: u32,
}

/// The one mapping from a failure to its line and exit code.
pub fn diagnose(error: &CliError, context: &Context) -> Diagnosis {
    match error {
        CliError::Usage(error) => Diagnosis {
            line: Some(usage_line(error)),
            exit: Exit::Usage,
        },
        CliError::Daemon { operation, error } => daemon_diagnosis(*operation, error, context),
        CliError::Local { what, cause } => failed(format!("{what}: {cause}")),
        CliError::Transfer { operation, error } => transfer_diagnosis(*operation, error, context),
        CliError::Output(error) if error.kind() == io::ErrorKind::BrokenPipe => Diagnosis {
            line: None,
            exit: Exit::Success,
        },
        CliError::Output(error) => failed(format!("writing the output failed: {error}")),
    }
}

/// Prints the diagnosis's line on stderr; returns its exit.
pub fn report(error: &CliError, context: &Context) -> Exit {
    let diagnosis = diagnose(error, context);
    if let Some(line) = &diagnosis.line {
        eprintln!("nexus: {line}");
    }
    diagnosis.exit
}

fn daemon_diagnosis(operation: Operation, error: &ClientError, context: &Context) -> Diagnosis {
    let socket = context.socket.display();
    let uid = context.uid;
    let what = operation.label();
    match error {
        ClientError::Connect { source, .. } => match source.kind() {
            io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused => down(format!(
                "nexusd is not running on {socket}: start it with `nexusd --socket {socket}` (or `systemctl start nexusd`)"
            )),
            io::ErrorKind::PermissionDenied => down(format!(
                "cannot connect to nexusd on {socket}: permission denied: join the group that owns the socket, \
                 or add `--allow-uid {uid}` to nexusd with a `--socket-mode` that lets you in"
            )),
            _ => down(format!(
                "cannot connect to nexusd on {socket}: {source}: check --socket (or $NEXUS_SOCKET)"
            )),
        },
        ClientError::Refused { code, message } => down(refusal_line(*code, message, context)),
        ClientError::VersionMismatch { message } => down(format!(
            "nexusd on {socket} speaks another protocol version: {message}: use the `nexus` built with the running nexusd (the same release)"
        )),
        ClientError::Handshake(message) => down(format!(
            "the handshake with {socket} failed: {message}: check that --socket names nexusd's socket \
             and that nexusd is not stuck (--timeout-ms sets the wait)"
        )),
        ClientError::UntrustedDaemon { expected, actual, .. } => down(format!(
            "the process on {socket} runs as uid {actual}, not nexusd's uid {expected}: check --socket (or $NEXUS_SOCKET), \
             or set NEXUS_DAEMON_UID to the uid nexusd runs as"
        )),
        ClientError::DaemonGone => down(format!(
            "{what} failed: nexusd closed the connection (it stopped or restarted): run the command again once nexusd is up"
        )),
        ClientError::Timeout(waited) => down(format!(
            "{what} failed: no answer from nexusd on {socket} within {} ms: nexusd is overloaded or stuck; \
             raise --timeout-ms, or look at nexusd's log",
            millis(*waited)
        )),
        ClientError::Busy(waited) => failed(format!(
            "{what} failed: nexusd is busy (its request ring stayed full for {} ms): try again in a moment",
            millis(*waited)
        )),
        ClientError::FrameTooLarge { max } => failed(format!(
            "{what} failed: the request is larger than nexusd's maximum frame of {max} bytes: send less at once \
             (a shorter text, a smaller --batch)"
        )),
        ClientError::Protocol(message) => failed(format!(
            "{what} failed: protocol error: {message}: use the `nexus` built with the running nexusd"
        )),
        ClientError::Status { code, message } => status_diagnosis(operation, *code, message),
        ClientError::Io(error) => failed(format!("{what} failed: I/O error talking to nexusd: {error}")),
        other => failed(format!("{what} failed: {other}")),
    }
}

fn refusal_line(code: u32, message: &str, context: &Context) -> String {
    let socket = context.socket.display();
    let uid = context.uid;
    match ErrorCode::from_u32(code) {
        Some(ErrorCode::PermissionDenied) => format!(
            "nexusd on {socket} refused this process: {message}: add `--allow-uid {uid}` to nexusd's flags \
             (or `allowed_uids` in its config), or join its group"
        ),
        Some(ErrorCode::TooManyClients) => format!(
            "nexusd on {socket} refused the connection: {message}: wait for clients to disconnect, or raise nexusd's --max-clients"
        ),
        _ => format!("nexusd on {socket} refused the connection: {message}"),
    }
}

/// The daemon answered with an error status: its message, and a fix where
/// one is obvious.
fn status_diagnosis(operation: Operation, code: u32, message: &str) -> Diagnosis {
    let what = operation.label();
    let Some(known) = ErrorCode::from_u32(code) else {
        return failed(format!("{what} failed: nexusd error {code}: {message}"));
    };
    let fix = match (known, operation) {
        (ErrorCode::DimensionMismatch, _) => {
            Some("send a vector of the store's dimension (`nexus stats` shows it as `dimension`)")
        }
        // An unknown recall's message ends with its own fix (after "; ").
        (ErrorCode::NotFound, Operation::Feedback) if !message.contains("; ") => {
            Some("judge one of the results of the recall whose request id `nexus recall` printed")
        }
        // The daemon names routes as the wire does; say it in flags.
        (ErrorCode::NotAvailable, Operation::Recall) if message.contains("CacheOnly") => {
            Some("in `nexus` terms: drop --route, or use --route smart")
        }
        (ErrorCode::NotAvailable, Operation::Recall) => {
            Some("let the router pick (drop --route and --engine), or wait for the engines to recover (`nexus health`)")
        }
        (ErrorCode::BatchTooLarge, _) => Some("send fewer memories at once (a smaller --batch)"),
        (ErrorCode::DiskFull, _) => Some("free space on nexusd's data disk (reads keep working meanwhile)"),
        (ErrorCode::StorageFailed, _) => {
            Some("restart nexusd: its write-ahead log stopped after a disk error (see its log)")
        }
        (ErrorCode::DeadlineExceeded, _) => Some("raise --timeout-ms"),
        (ErrorCode::Busy, _) => Some("try again in a moment"),
        (ErrorCode::ShuttingDown, _) => Some("start nexusd again"),
        (ErrorCode::Internal, _) => Some("this is a bug in nexusd: report it with nexusd's log"),
        _ => None,
    };
    // The daemon often names the operation itself ("feedback: ..."): once is enough.
    let message = message
        .strip_prefix(what)
        .and_then(|rest| rest.strip_prefix(": "))
        .unwrap_or(message);
    let line = match fix {
        Some(fix) => format!("{what} failed: {message}: {fix}"),
        None => format!("{what} failed: {message}"),
    };
    match known {
        ErrorCode::ShuttingDown => down(line),
        _ => failed(line),
    }
}

/// An import or export that stopped: a connection failure words like any
/// other; a failed batch or page keeps the transfer's account (which lines,
/// how many were imported) with the exit the daemon's error calls for.
fn transfer_diagnosis(operation: Operation, error: &TransferError, context: &Context) -> Diagnosis {
    if error.is_closed_pipe() {
        return Diagnosis {
            line: None,
            exit: Exit::Success,
        };
    }
    let line = format!("{} failed: {error}", operation.label());
    match (error, error.client_error()) {
        (TransferError::Connect { source }, _) => daemon_diagnosis(operation, source, context),
        (_, Some(source)) => Diagnosis {
            line: Some(line),
            exit: daemon_diagnosis(operation, source, context).exit,
        },
        (_, None) => failed(line),
    }
}

/// Clap's error (several lines: message, tips, usage) as one line.
fn usage_line(error: &clap::Error) -> String {
    let rendered = error.render().to_string();
    let mut message = String::new();
    let mut extras = Vec::new();
    for line in rendered.lines().map(str::trim).filter(|line| !line.is_empty()) {
        if let Some(rest) = line.strip_prefix("error: ") {
            message.push_str(rest);
        } else if let Some(tip) = line.strip_prefix("tip: ") {
            extras.push(tip.to_owned());
        } else if let Some(usage) = line.strip_prefix("Usage: ") {
            extras.push(format!("usage: {usage}"));
        } else if !line.starts_with("For more information") {
            message.push(' ');
            message.push_str(line);
        }
    }
    extras.insert(0, message);
    extras.join("; ")
}

fn down(line: String) -> Diagnosis {
    Diagnosis {
        line: Some(line),
        exit: Exit::Down,
    }
}

fn failed(line: String) -> Diagnosis {
    Diagnosis {
        line: Some(line),
        exit: Exit::Failed,
    }
}

fn millis(duration: Duration) -> u128 {
    duration.as_millis()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn context() -> Context {
        Context {
            socket: PathBuf::from("/run/nexus/nexusd.sock"),
            uid: 1000,
        }
    }

    fn daemon(operation: Operation, error: ClientError) -> CliError {
        CliError::Daemon { operation, error }
    }

    fn connect(kind: io::ErrorKind) -> ClientError {
        ClientError::Connect {
            path: PathBuf::from("/run/nexus/nexusd.sock"),
            source: io::Error::from(kind),
        }
    }

    fn status(code: ErrorCode, message: &str) -> ClientError {
        ClientError::Status {
            code: code as u32,
            message: message.into(),
        }
    }

    /// Each failure → (its exit, the words its line must hold).
    #[test]
    fn every_failure_has_one_line_an_exit_and_a_fix_where_there_is_one() {
        use Operation::*;
        let usage = clap::Command::new("nexus")
            .arg(clap::Arg::new("k").long("k"))
            .try_get_matches_from(["nexus", "--kk", "3"])
            .unwrap_err();
        let table: Vec<(CliError, Exit, &[&str])> = vec![
            (
                daemon(Connect, connect(io::ErrorKind::NotFound)),
                Exit::Down,
                &[
                    "nexusd is not running on /run/nexus/nexusd.sock",
                    "start it with `nexusd --socket /run/nexus/nexusd.sock` (or `systemctl start nexusd`)",
                ],
            ),
            (
                daemon(Connect, connect(io::ErrorKind::ConnectionRefused)),
                Exit::Down,
                &["is not running"],
            ),
            (
                daemon(Connect, connect(io::ErrorKind::PermissionDenied)),
                Exit::Down,
                &["permission denied", "--allow-uid 1000", "group"],
            ),
            (
                daemon(
                    Connect,
                    ClientError::Refused {
                        code: ErrorCode::PermissionDenied as u32,
                        message: "uid 1000 (pid 7) is not allowed to use this nexusd".into(),
                    },
                ),
                Exit::Down,
                &[
                    "refused this process: uid 1000 (pid 7) is not allowed",
                    "`--allow-uid 1000`",
                    "join its group",
                ],
            ),
            (
                daemon(
                    Connect,
                    ClientError::Refused {
                        code: ErrorCode::TooManyClients as u32,
                        message: "at max_clients".into(),
                    },
                ),
                Exit::Down,
                &["at max_clients", "--max-clients"],
            ),
            (
                daemon(
                    Connect,
                    ClientError::VersionMismatch {
                        message: "client 4, daemon 5".into(),
                    },
                ),
                Exit::Down,
                &["another protocol version: client 4, daemon 5", "same release"],
            ),
            (
                daemon(Connect, ClientError::Handshake("bad magic".into())),
                Exit::Down,
                &["handshake", "bad magic"],
            ),
            (
                daemon(
                    Connect,
                    ClientError::UntrustedDaemon {
                        path: PathBuf::from("/x"),
                        expected: 0,
                        actual: 1000,
                    },
                ),
                Exit::Down,
                &["runs as uid 1000", "NEXUS_DAEMON_UID"],
            ),
            (
                daemon(Recall, ClientError::DaemonGone),
                Exit::Down,
                &["recall failed: nexusd closed the connection"],
            ),
            (
                daemon(Stats, ClientError::Timeout(Duration::from_millis(5000))),
                Exit::Down,
                &["stats failed: no answer", "5000 ms", "--timeout-ms"],
            ),
            (
                daemon(Remember, ClientError::Busy(Duration::from_secs(1))),
                Exit::Failed,
                &["busy", "try again"],
            ),
            (
                daemon(Remember, ClientError::FrameTooLarge { max: 8 << 20 }),
                Exit::Failed,
                &["maximum frame of 8388608 bytes", "send less"],
            ),
            (
                daemon(Ping, ClientError::Protocol("garbage".into())),
                Exit::Failed,
                &["protocol error: garbage"],
            ),
            (
                daemon(
                    Remember,
                    status(
                        ErrorCode::DimensionMismatch,
                        "memory 0: vector dimension 3 differs from the store's dimension 4",
                    ),
                ),
                Exit::Failed,
                &[
                    "remember failed: memory 0: vector dimension 3 differs from the store's dimension 4",
                    "`dimension`",
                ],
            ),
            (
                daemon(
                    Feedback,
                    status(
                        ErrorCode::NotFound,
                        "feedback: memory 5 was not among the results of recall 9",
                    ),
                ),
                Exit::Failed,
                &["feedback failed: memory 5 was not among the results of recall 9: judge one of the results"],
            ),
            (
                daemon(
                    Recall,
                    status(ErrorCode::NotAvailable, "engines dense, lexical are down"),
                ),
                Exit::Failed,
                &["engines dense, lexical are down", "drop --route"],
            ),
            (
                daemon(
                    Recall,
                    status(
                        ErrorCode::NotAvailable,
                        "route CacheOnly: no answer to this query is cached",
                    ),
                ),
                Exit::Failed,
                &["no answer to this query is cached: in `nexus` terms: drop --route, or use --route smart"],
            ),
            (
                daemon(Remember, status(ErrorCode::DiskFull, "disk full")),
                Exit::Failed,
                &["free space"],
            ),
            (
                daemon(Remember, status(ErrorCode::StorageFailed, "fsync failed")),
                Exit::Failed,
                &["restart nexusd"],
            ),
            (
                daemon(Recall, status(ErrorCode::ShuttingDown, "shutting down")),
                Exit::Down,
                &["shutting down"],
            ),
            (
                daemon(Recall, status(ErrorCode::InvalidArgument, "k = 0")),
                Exit::Failed,
                &["recall failed: k = 0"],
            ),
            (
                daemon(
                    Recall,
                    ClientError::Status {
                        code: 9999,
                        message: "new".into(),
                    },
                ),
                Exit::Failed,
                &["nexusd error 9999: new"],
            ),
            (
                CliError::Local {
                    what: "reading the vector file v.json".into(),
                    cause: "No such file".into(),
                },
                Exit::Failed,
                &["reading the vector file v.json: No such file"],
            ),
            (
                CliError::Transfer {
                    operation: Import,
                    error: TransferError::Strict {
                        line: 3,
                        reason: "no text".into(),
                        imported: 2,
                    },
                },
                Exit::Failed,
                &["import failed: line 3: no text"],
            ),
            (
                CliError::Transfer {
                    operation: Import,
                    error: TransferError::Daemon {
                        first_line: 1,
                        last_line: 1000,
                        imported: 0,
                        source: ClientError::DaemonGone,
                    },
                },
                Exit::Down,
                &["import failed: nexusd failed the batch of lines 1-1000"],
            ),
            (
                CliError::Transfer {
                    operation: Export,
                    error: TransferError::List {
                        written: 5,
                        source: connect(io::ErrorKind::NotFound),
                    },
                },
                Exit::Down,
                &["export failed: listing the memories failed after 5"],
            ),
            (
                CliError::Transfer {
                    operation: Import,
                    error: TransferError::Connect {
                        source: connect(io::ErrorKind::ConnectionRefused),
                    },
                },
                Exit::Down,
                &["nexusd is not running on /run/nexus/nexusd.sock"],
            ),
            (
                CliError::Usage(usage),
                Exit::Usage,
                &["unexpected argument '--kk'", "--k", "usage: nexus"],
            ),
            (
                CliError::Output(io::Error::other("disk full")),
                Exit::Failed,
                &["writing the output failed: disk full"],
            ),
        ];
        for (error, exit, words) in table {
            let diagnosis = diagnose(&error, &context());
            let line = diagnosis.line.unwrap_or_else(|| panic!("{error:?} has no line"));
            assert_eq!(diagnosis.exit, exit, "{line}");
            assert!(!line.contains('\n'), "one line: {line:?}");
            for word in words {
                assert!(line.contains(word), "{line:?} lacks {word:?}");
            }
        }
    }

    #[test]
    fn a_closed_pipe_ends_quietly() {
        let quiet = Diagnosis {
            line: None,
            exit: Exit::Success,
        };
        assert_eq!(
            diagnose(&CliError::Output(io::ErrorKind::BrokenPipe.into()), &context()),
            quiet
        );
        let export = CliError::Transfer {
            operation: Operation::Export,
            error: TransferError::ClosedPipe { written: 3 },
        };
        assert_eq!(diagnose(&export, &context()), quiet);
    }

    #[test]
    fn exit_codes_are_the_documented_ones() {
        let codes = [Exit::Success, Exit::Failed, Exit::Usage, Exit::Down].map(Exit::code);
        assert_eq!(codes, [0, 1, 2, 2]);
    }
}
