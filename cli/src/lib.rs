//! `nexus`: the command line of Memory Nexus, a shell's way to a running
//! nexusd.
//!
//! It stores and finds memories, judges results, moves memories in and out
//! as JSON lines, and looks after the daemon (stats, a health probe, flush,
//! checkpoint, ping). Every subcommand prints text for a person, or one JSON
//! object with `--json`; every failure is one line on stderr saying what
//! failed, why, and the fix, and the exit code says which kind it was
//! (`errors`: 0 done, 1 failed, 2 usage error or nexusd down).
//!
//! This file is the command line (clap's types, which are also `--help`) and
//! the dispatch; `commands` runs each subcommand, `output` renders, `errors`
//! words failures, `parse` reads what clap cannot type. It decides nothing
//! about memories (nexusd does), and the JSON-lines format of import and
//! export is `transfer`'s.

mod commands;
mod errors;
mod output;
mod parse;
pub mod transfer;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{ArgGroup, Args, CommandFactory, Parser, Subcommand, ValueEnum};
use nexus_client::wire::{EngineChoice, MemoryTag, Route};

use crate::errors::{CliError, Context, Exit};
use crate::parse::TimeBound;

/// Runs `nexus` with the process's arguments; returns its exit code.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => return ExitCode::from(clap_exit(error)),
    };
    let context = Context {
        socket: cli.global.socket_path(),
        uid: nix::unistd::getuid().as_raw(),
    };
    let exit = match commands::run(cli, &context) {
        Ok(exit) => exit,
        Err(error) => errors::report(&error, &context),
    };
    ExitCode::from(exit.code())
}

/// Help and version go to stdout (exit 0); a bare `nexus` prints the help
/// on stderr; every other parse error is one line (exit 2).
fn clap_exit(error: clap::Error) -> u8 {
    use clap::error::ErrorKind;
    match error.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            let _ = error.print();
            u8::from(error.use_stderr()) * Exit::Usage.code()
        }
        _ => {
            let context = Context {
                socket: PathBuf::new(),
                uid: 0,
            };
            errors::report(&CliError::Usage(error), &context).code()
        }
    }
}

/// A usage error of `subcommand` for rules clap's types cannot state,
/// worded like clap's own (with that subcommand's usage).
fn usage_error(subcommand: &str, kind: clap::error::ErrorKind, message: impl std::fmt::Display) -> CliError {
    let mut command = Cli::command();
    command.build();
    let error = match command.find_subcommand_mut(subcommand) {
        Some(subcommand) => subcommand.error(kind, message),
        None => command.error(kind, message),
    };
    CliError::Usage(error)
}

/// Talk to a running nexusd: remember, recall and forget memories, and look after the daemon.
#[derive(Debug, Parser)]
#[command(
    name = "nexus",
    bin_name = "nexus",
    version,
    propagate_version = true,
    arg_required_else_help = true
)]
struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    command: Command,
}

/// The help heading of the flags every subcommand takes.
const GLOBAL: &str = "Global options";

/// Flags every subcommand takes.
#[derive(Debug, Args)]
struct Global {
    /// nexusd's socket [default: $NEXUS_SOCKET, else $XDG_RUNTIME_DIR/nexusd.sock, else ./nexusd.sock]
    #[arg(long, global = true, value_name = "PATH", help_heading = GLOBAL)]
    socket: Option<PathBuf>,
    /// Print one JSON object instead of text (for scripts)
    #[arg(long, global = true, help_heading = GLOBAL)]
    json: bool,
    /// How long to wait for the handshake and for each answer, in milliseconds
    #[arg(long, global = true, value_name = "MS", default_value_t = 5_000, help_heading = GLOBAL,
          value_parser = clap::value_parser!(u64).range(1..=3_600_000))]
    timeout_ms: u64,
}

impl Global {
    fn socket_path(&self) -> PathBuf {
        self.socket.clone().unwrap_or_else(nexus_client::default_socket_path)
    }
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Store a memory durably; prints its id
    Remember(RememberArgs),
    /// The best memories for a query, each with its score (--explain: why)
    Recall(RecallArgs),
    /// Delete memories by id, by namespace, or by tags
    Forget(ForgetArgs),
    /// Say whether a recalled memory was useful (it ranks later recalls)
    Feedback(FeedbackArgs),
    /// Store memories from a JSON-lines file (one memory per line); exit 1 when a line was bad
    Import(ImportArgs),
    /// Write the stored memories as JSON lines (what import reads)
    Export(ExportArgs),
    /// The daemon's counters, grouped (--json: every counter by name)
    Stats,
    /// Probe: exit 0 healthy, 1 degraded, 2 down
    Health,
    /// Make every acknowledged write durable now
    Flush,
    /// Write a snapshot now
    Checkpoint,
    /// Round trips through shared memory, with their latency
    Ping(PingArgs),
    /// Print a shell completion script to stdout
    Completions(CompletionsArgs),
}

/// Where a memory lives when `--namespace` is not given and
/// `$NEXUS_NAMESPACE` is unset.
const DEFAULT_NAMESPACE: &str = "default";

/// Environment variable with the namespace `remember` and `recall` use by default.
const NAMESPACE_ENV: &str = "NEXUS_NAMESPACE";

/// `--namespace` of remember and recall, with its fallbacks.
#[derive(Debug, Args)]
struct NamespaceArg {
    /// Namespace (agent, user, session) [default: $NEXUS_NAMESPACE, else "default"]
    #[arg(long, value_name = "NS")]
    namespace: Option<String>,
}

impl NamespaceArg {
    fn resolve(&self) -> String {
        namespace_or_default(self.namespace.clone())
    }
}

/// `explicit`, else `$NEXUS_NAMESPACE`, else [`DEFAULT_NAMESPACE`].
fn namespace_or_default(explicit: Option<String>) -> String {
    explicit
        .or_else(|| std::env::var(NAMESPACE_ENV).ok().filter(|ns| !ns.is_empty()))
        .unwrap_or_else(|| DEFAULT_NAMESPACE.to_owned())
}

#[derive(Debug, Args)]
struct RememberArgs {
    /// The text; `-` or nothing reads it from stdin (when stdin is not a terminal)
    text: Option<String>,
    #[command(flatten)]
    namespace: NamespaceArg,
    /// Client key: remembering the same key again replaces that memory
    #[arg(long)]
    key: Option<String>,
    /// A label, repeatable
    #[arg(long = "tag", value_name = "K=V", value_parser = parse::tag)]
    tags: Vec<MemoryTag>,
    /// Weight in recall scoring
    #[arg(long, value_name = "F", default_value_t = 1.0)]
    importance: f32,
    /// The memory's embedding: a JSON array of numbers, or raw little-endian f32 when the name ends in .f32
    #[arg(long, value_name = "PATH")]
    vector_file: Option<PathBuf>,
    /// When it happened: RFC 3339 (2024-05-01T12:00:00Z) or a date (UTC midnight) [default: now]
    #[arg(long, value_name = "TIME", value_parser = parse::time_bound)]
    created_at: Option<TimeBound>,
    /// Where it came from (a tool, a document, a chat)
    #[arg(long, default_value = "nexus-cli")]
    source: String,
}

#[derive(Debug, Args)]
struct RecallArgs {
    /// What to look for
    query: String,
    /// How many results
    #[arg(short = 'k', long = "top-k", alias = "k", value_name = "N", default_value_t = 5,
          value_parser = clap::value_parser!(u32).range(1..))]
    k: u32,
    /// Force a route instead of letting the router pick
    #[arg(long, value_enum)]
    route: Option<RouteArg>,
    /// Answer with this engine alone (diagnosis, evaluation)
    #[arg(long, value_enum, requires_if("vector", "vector_file"))]
    engine: Option<EngineArg>,
    #[command(flatten)]
    namespace: NamespaceArg,
    /// Only memories carrying this label, repeatable (all must match)
    #[arg(long = "tag", value_name = "K=V", value_parser = parse::tag)]
    tags: Vec<MemoryTag>,
    /// Only memories created at or after this time: RFC 3339, or a date (UTC)
    #[arg(long, value_name = "TIME", value_parser = parse::time_bound)]
    since: Option<TimeBound>,
    /// Only memories created at or before this time (a date includes its whole day, UTC)
    #[arg(long, value_name = "TIME", value_parser = parse::time_bound)]
    until: Option<TimeBound>,
    /// The query's embedding (as remember's --vector-file); needed by --engine vector
    #[arg(long, value_name = "PATH")]
    vector_file: Option<PathBuf>,
    /// Show each result's factors (lexical, vector, recency, ...) and their contributions
    #[arg(long)]
    explain: bool,
}

/// The routes `--route` names.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum RouteArg {
    /// Only the cache (refused when nothing is cached for the query)
    Cache,
    /// One vector space and lexical, light fusion
    Smart,
    /// Every engine, full fusion
    Full,
    /// Full pipeline, query expansion and exact re-rank
    Max,
}

impl From<RouteArg> for Route {
    fn from(route: RouteArg) -> Self {
        match route {
            RouteArg::Cache => Route::CacheOnly,
            RouteArg::Smart => Route::SmartRouting,
            RouteArg::Full => Route::FullPipeline,
            RouteArg::Max => Route::MaximumIntelligence,
        }
    }
}

/// The engines `--engine` names.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum EngineArg {
    /// BM25 over the texts
    Lexical,
    /// ANN over the built-in embeddings
    Dense,
    /// The exact scan (linear in the namespace)
    Scan,
    /// ANN over the vectors clients sent (needs --vector-file)
    Vector,
}

impl From<EngineArg> for EngineChoice {
    fn from(engine: EngineArg) -> Self {
        match engine {
            EngineArg::Lexical => EngineChoice::Lexical,
            EngineArg::Dense => EngineChoice::Dense,
            EngineArg::Scan => EngineChoice::Scan,
            EngineArg::Vector => EngineChoice::Vector,
        }
    }
}

#[derive(Debug, Args)]
struct ForgetArgs {
    /// A memory id, repeatable
    #[arg(long = "id", value_name = "ID", conflicts_with_all = ["namespace", "tags"])]
    ids: Vec<u64>,
    /// Every memory of this namespace (with --tag: only there)
    #[arg(long, value_name = "NS")]
    namespace: Option<String>,
    /// Memories carrying this label, repeatable (all must match)
    #[arg(long = "tag", value_name = "K=V", value_parser = parse::tag)]
    tags: Vec<MemoryTag>,
}

#[derive(Debug, Args)]
#[command(group(ArgGroup::new("verdict").required(true).args(["useful", "not_useful"])))]
struct FeedbackArgs {
    /// The memory judged (an id from the recall's results)
    memory_id: u64,
    /// The recall's request id (`nexus recall` prints it)
    #[arg(long = "recall", value_name = "REQUEST_ID")]
    recall: u64,
    /// It helped
    #[arg(long)]
    useful: bool,
    /// It did not help
    #[arg(long)]
    not_useful: bool,
}

#[derive(Debug, Args)]
struct ImportArgs {
    /// The JSON-lines file, or - for stdin
    file: PathBuf,
    /// Stop at the first bad line (default: report it on stderr and go on)
    #[arg(long)]
    strict: bool,
    /// Memories per request at most
    #[arg(long, value_name = "N", default_value_t = DEFAULT_IMPORT_BATCH,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    batch: u32,
    /// Namespace of the lines that name none [default: $NEXUS_NAMESPACE, else "default"]
    #[arg(long, value_name = "NS")]
    namespace: Option<String>,
    /// No progress bar on stderr (there is none when stderr is not a terminal)
    #[arg(long)]
    no_progress: bool,
}

/// `--batch`'s default, as the flag's type.
const DEFAULT_IMPORT_BATCH: u32 = transfer::DEFAULT_BATCH as u32;

#[derive(Debug, Args)]
struct ExportArgs {
    /// Only this namespace [default: every namespace]
    #[arg(long, value_name = "NS")]
    namespace: Option<String>,
    /// Write to this file instead of stdout (and print a summary)
    #[arg(long, value_name = "FILE")]
    output: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct PingArgs {
    /// How many round trips
    #[arg(long, value_name = "N", default_value_t = 3,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    count: u32,
}

#[derive(Debug, Args)]
struct CompletionsArgs {
    /// The shell to complete for
    #[arg(value_enum)]
    shell: clap_complete::Shell,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("nexus").chain(args.iter().copied()))
    }

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn global_flags_go_anywhere_and_recall_takes_its_filters() {
        let cli = parse(&[
            "recall",
            "hiking",
            "-k",
            "3",
            "--route",
            "max",
            "--tag",
            "who=caroline",
            "--since",
            "2024-05-01",
            "--json",
            "--socket",
            "/s",
        ])
        .unwrap();
        assert!(cli.global.json);
        assert_eq!(cli.global.socket_path(), PathBuf::from("/s"));
        let Command::Recall(recall) = cli.command else {
            panic!("parsed as {:?}", cli.command)
        };
        assert_eq!((recall.query.as_str(), recall.k), ("hiking", 3));
        assert!(matches!(recall.route, Some(RouteArg::Max)));
        assert_eq!(recall.tags[0].value, "caroline");
        assert!(recall.since.unwrap().whole_day);
    }

    #[test]
    fn bad_values_are_usage_errors() {
        use clap::error::ErrorKind;
        let kind = |args: &[&str]| parse(args).unwrap_err().kind();
        assert_eq!(kind(&["recall", "x", "--tag", "nokey"]), ErrorKind::ValueValidation);
        assert_eq!(kind(&["recall", "x", "--route", "fast"]), ErrorKind::InvalidValue);
        assert_eq!(kind(&["recall", "x", "-k", "0"]), ErrorKind::ValueValidation);
        assert_eq!(
            kind(&["recall", "x", "--since", "last week"]),
            ErrorKind::ValueValidation
        );
        assert_eq!(
            kind(&["feedback", "1", "--recall", "2"]),
            ErrorKind::MissingRequiredArgument
        );
        assert_eq!(
            kind(&["feedback", "1", "--recall", "2", "--useful", "--not-useful"]),
            ErrorKind::ArgumentConflict
        );
        assert_eq!(
            kind(&["forget", "--id", "1", "--namespace", "x"]),
            ErrorKind::ArgumentConflict
        );
        assert_eq!(kind(&["frobnicate"]), ErrorKind::InvalidSubcommand);
        assert_eq!(
            kind(&["recall", "x", "--engine", "vector"]),
            ErrorKind::MissingRequiredArgument
        );
    }
}
