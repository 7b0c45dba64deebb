//! Each subcommand, start to finish: read and check the local inputs first
//! (so a bad file or flag is reported without a daemon), then connect, make
//! the call, and hand the answer to `output`.
//!
//! What it does not do: word failures (`errors`), render (`output`), or know
//! the JSON-lines format (`transfer`).

use std::fs::File;
use std::io::{self, BufRead, BufReader, IsTerminal, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use clap::CommandFactory;
use clap::error::ErrorKind;
use nexus_client::wire::{ForgetRequest, MemoryInput, RecallRequest};
use nexus_client::{Client, ConnectOptions};
use serde_json::json;

use crate::errors::{self, CliError, Context, Exit, Operation};
use crate::output::{self, HealthStatus, Output};
use crate::transfer::{self, ImportOptions, ImportReport, Progress};
use crate::{
    Cli, Command, CompletionsArgs, ExportArgs, FeedbackArgs, ForgetArgs, ImportArgs, PingArgs, RecallArgs,
    RememberArgs, namespace_or_default, parse, usage_error,
};

/// Runs the parsed command line; `Ok` carries the exit (health reports
/// degraded and down as exits, not errors).
pub fn run(cli: Cli, context: &Context) -> Result<Exit, CliError> {
    let mut out = Output::stdout(cli.global.json);
    let session = Session {
        context,
        timeout: Duration::from_millis(cli.global.timeout_ms),
    };
    match cli.command {
        Command::Remember(args) => remember(&session, args, &mut out),
        Command::Recall(args) => recall(&session, args, &mut out),
        Command::Forget(args) => forget(&session, args, &mut out),
        Command::Feedback(args) => feedback(&session, args, &mut out),
        Command::Import(args) => import(&session, args, &mut out),
        Command::Export(args) => export(&session, args, &mut out),
        Command::Stats => stats(&session, &mut out),
        Command::Health => health(&session, &mut out),
        Command::Flush => flush(&session, &mut out),
        Command::Checkpoint => checkpoint(&session, &mut out),
        Command::Ping(args) => ping(&session, args, &mut out),
        Command::Completions(args) => completions(args, &mut out),
    }
}

/// How to reach the daemon.
struct Session<'a> {
    context: &'a Context,
    timeout: Duration,
}

impl Session<'_> {
    fn connect(&self) -> Result<Client, CliError> {
        let options = ConnectOptions {
            name: "nexus".into(),
            timeout: self.timeout,
            ..ConnectOptions::default()
        };
        Client::connect_with(&self.context.socket, options).map_err(CliError::daemon(Operation::Connect))
    }

    fn socket(&self) -> String {
        self.context.socket.display().to_string()
    }
}

fn remember<W: Write>(session: &Session, args: RememberArgs, out: &mut Output<W>) -> Result<Exit, CliError> {
    let text = remember_text(args.text.as_deref())?;
    let vector = args.vector_file.as_deref().map(read_vector).transpose()?;
    let memory = MemoryInput {
        key: args.key,
        vector,
        tags: args.tags,
        created_at_ms: args.created_at.map(|time| time.ms),
        importance: args.importance,
        source: Some(args.source),
        ..MemoryInput::new(args.namespace.resolve(), text)
    };
    let client = session.connect()?;
    let report = client
        .remember_report(vec![memory])
        .map_err(CliError::daemon(Operation::Remember))?;
    out.emit(
        || output::remember_json(&report),
        |w, _| output::remember_human(w, &report),
    )?;
    Ok(Exit::Success)
}

/// The text argument, or stdin for `-` (or no argument when stdin is not a
/// terminal: a terminal would wait for typing the user did not mean).
fn remember_text(arg: Option<&str>) -> Result<String, CliError> {
    let stdin = io::stdin();
    let text = match arg {
        Some(text) if text != "-" => text.to_owned(),
        None if stdin.is_terminal() => {
            return Err(usage_error(
                "remember",
                ErrorKind::MissingRequiredArgument,
                "remember needs the TEXT to store: give it as an argument, or pipe it in (`echo TEXT | nexus remember`)",
            ));
        }
        _ => parse::stdin_text(stdin.lock()).map_err(|cause| CliError::Local {
            what: "reading the text to remember from stdin".into(),
            cause,
        })?,
    };
    if text.trim().is_empty() {
        return Err(CliError::Local {
            what: "remember".into(),
            cause: "the text is empty: there is nothing to remember".into(),
        });
    }
    Ok(text)
}

fn read_vector(path: &Path) -> Result<Vec<f32>, CliError> {
    parse::vector_file(path).map_err(|cause| CliError::Local {
        what: format!("reading the vector file {}", path.display()),
        cause,
    })
}

fn recall<W: Write>(session: &Session, args: RecallArgs, out: &mut Output<W>) -> Result<Exit, CliError> {
    let created = parse::created_range(args.since, args.until)
        .map_err(|message| usage_error("recall", ErrorKind::ArgumentConflict, message))?;
    let vector = args.vector_file.as_deref().map(read_vector).transpose()?;
    let request = RecallRequest {
        vector,
        route: args.route.map(Into::into),
        filter: args.tags,
        created,
        engine: args.engine.map(Into::into),
        ..RecallRequest::new(args.namespace.resolve(), args.query, args.k)
    };
    let client = session.connect()?;
    let answer = client
        .recall_answer(request)
        .map_err(CliError::daemon(Operation::Recall))?;
    out.emit(
        || output::recall_json(&answer),
        |w, width| output::recall_human(w, &answer, args.explain, width),
    )?;
    Ok(Exit::Success)
}

fn forget<W: Write>(session: &Session, args: ForgetArgs, out: &mut Output<W>) -> Result<Exit, CliError> {
    let what = forget_request(args)?;
    let client = session.connect()?;
    let forgotten = client.forget(what).map_err(CliError::daemon(Operation::Forget))?;
    out.emit(
        || json!({ "forgotten": forgotten }),
        |w, _| {
            let noun = if forgotten == 1 { "memory" } else { "memories" };
            writeln!(w, "forgot {} {noun}", output::thousands(forgotten))
        },
    )?;
    Ok(Exit::Success)
}

/// What a forget deletes; a forget that names nothing is refused (a typo
/// must not read as "forget everything", nor silently do nothing).
fn forget_request(args: ForgetArgs) -> Result<ForgetRequest, CliError> {
    if args.namespace.as_deref() == Some("") {
        return Err(usage_error(
            "forget",
            ErrorKind::InvalidValue,
            "forget --namespace is empty: name the namespace to delete",
        ));
    }
    match (args.ids.is_empty(), args.tags.is_empty(), args.namespace) {
        (false, _, _) => Ok(ForgetRequest::Ids(args.ids)),
        (true, false, namespace) => Ok(ForgetRequest::Tags {
            namespace,
            tags: args.tags,
        }),
        (true, true, Some(namespace)) => Ok(ForgetRequest::Namespace(namespace)),
        (true, true, None) => Err(usage_error(
            "forget",
            ErrorKind::MissingRequiredArgument,
            "forget needs what to delete: --id ID, --namespace NS, or --tag K=V (nothing was deleted)",
        )),
    }
}

fn feedback<W: Write>(session: &Session, args: FeedbackArgs, out: &mut Output<W>) -> Result<Exit, CliError> {
    let useful = args.useful && !args.not_useful;
    let client = session.connect()?;
    client
        .feedback(args.memory_id, args.recall, useful)
        .map_err(CliError::daemon(Operation::Feedback))?;
    out.emit(
        || json!({ "memory_id": args.memory_id, "recall_request_id": args.recall, "useful": useful }),
        |w, _| {
            let verdict = if useful { "useful" } else { "not useful" };
            writeln!(
                w,
                "noted: memory {} was {verdict} for recall {}",
                args.memory_id, args.recall
            )
        },
    )?;
    Ok(Exit::Success)
}

/// Imports a JSON-lines file (or stdin); every bad line is reported on
/// stderr with its number, and makes the exit 1 even when the rest went in.
fn import<W: Write>(session: &Session, args: ImportArgs, out: &mut Output<W>) -> Result<Exit, CliError> {
    let (input, total_bytes) = import_input(&args.file)?;
    let show_progress = !args.no_progress && io::stderr().is_terminal();
    let options = ImportOptions {
        namespace: namespace_or_default(args.namespace),
        batch: args.batch as usize,
        strict: args.strict,
        progress: if show_progress {
            Progress::Bar { total_bytes }
        } else {
            Progress::Hidden
        },
        ..ImportOptions::default()
    };
    let client = session.connect()?;
    let report = transfer::import(&client, input, &options).map_err(|error| CliError::Transfer {
        operation: Operation::Import,
        error,
    })?;
    for bad in &report.bad_lines {
        eprintln!("nexus: import: line {} skipped: {}", bad.line, bad.reason);
    }
    let unlisted = report.skipped.saturating_sub(report.bad_lines.len() as u64);
    if unlisted > 0 {
        eprintln!(
            "nexus: import: {unlisted} more bad lines skipped (only the first {} are listed)",
            report.bad_lines.len()
        );
    }
    out.emit(|| import_json(&report), |w, _| import_human(w, &report))?;
    Ok(if report.skipped > 0 {
        Exit::Failed
    } else {
        Exit::Success
    })
}

/// The import's input and its size when known (a file, for the progress
/// bar's ETA); `-` is stdin.
fn import_input(path: &Path) -> Result<(Box<dyn BufRead>, Option<u64>), CliError> {
    if path.as_os_str() == "-" {
        return Ok((Box::new(io::stdin().lock()), None));
    }
    let local = |cause: io::Error| CliError::Local {
        what: format!("opening the import file {}", path.display()),
        cause: cause.to_string(),
    };
    let file = File::open(path).map_err(local)?;
    let size = file.metadata().ok().filter(|m| m.is_file()).map(|m| m.len());
    Ok((Box::new(BufReader::new(file)), size))
}

fn import_json(report: &ImportReport) -> serde_json::Value {
    let bad_lines: Vec<serde_json::Value> = report
        .bad_lines
        .iter()
        .map(|bad| json!({ "line": bad.line, "reason": bad.reason }))
        .collect();
    json!({
        "lines": report.lines,
        "imported": report.imported,
        "skipped": report.skipped,
        "duplicates_not_stored": report.duplicates_not_stored,
        "bad_lines": bad_lines,
        "elapsed_ms": report.elapsed.as_millis() as u64,
    })
}

fn import_human(w: &mut impl Write, report: &ImportReport) -> io::Result<()> {
    let seconds = report.elapsed.as_secs_f64();
    write!(
        w,
        "imported {} of {} lines in {seconds:.2} s",
        output::thousands(report.imported),
        output::thousands(report.lines)
    )?;
    if report.skipped > 0 {
        write!(
            w,
            "; {} bad lines skipped (listed on stderr)",
            output::thousands(report.skipped)
        )?;
    }
    if report.duplicates_not_stored > 0 {
        write!(
            w,
            "; {} near-duplicates not stored (duplicates policy: skip)",
            output::thousands(report.duplicates_not_stored)
        )?;
    }
    writeln!(w)
}

/// Exports as JSON lines to stdout, or to `--output` with a summary on
/// stdout. The file is created only once nexusd answered, so a daemon that
/// is down leaves an existing file alone.
fn export<W: Write>(session: &Session, args: ExportArgs, out: &mut Output<W>) -> Result<Exit, CliError> {
    let client = session.connect()?;
    let namespace = args.namespace.as_deref();
    let failed = |error| CliError::Transfer {
        operation: Operation::Export,
        error,
    };
    let Some(path) = args.output else {
        let written = transfer::export(&client, io::stdout().lock(), namespace).map_err(failed)?;
        if !out.is_json() && io::stderr().is_terminal() {
            eprintln!("exported {} memories", output::thousands(written));
        }
        return Ok(Exit::Success);
    };
    let file = File::create(&path).map_err(|cause| CliError::Local {
        what: format!("creating the export file {}", path.display()),
        cause: cause.to_string(),
    })?;
    let written = transfer::export(&client, file, namespace).map_err(failed)?;
    out.emit(
        || json!({ "exported": written, "output": path.display().to_string() }),
        |w, _| {
            writeln!(
                w,
                "exported {} memories to {}",
                output::thousands(written),
                path.display()
            )
        },
    )?;
    Ok(Exit::Success)
}

fn stats<W: Write>(session: &Session, out: &mut Output<W>) -> Result<Exit, CliError> {
    let client = session.connect()?;
    let stats = client.stats().map_err(CliError::daemon(Operation::Stats))?;
    out.emit(|| output::stats_json(&stats), |w, _| output::stats_human(w, &stats))?;
    Ok(Exit::Success)
}

/// The probe: 0 healthy, 1 degraded (each reason printed), 2 down. Failing
/// to reach the daemon is an answer here, not an error: it prints as the
/// other failures do (one line on stderr) and, with `--json`, as a status.
fn health<W: Write>(session: &Session, out: &mut Output<W>) -> Result<Exit, CliError> {
    let socket = session.socket();
    let report = session
        .connect()
        .and_then(|client| client.health().map_err(CliError::daemon(Operation::Health)));
    match report {
        Ok(report) => {
            out.emit(
                || output::health_json(&socket, &report),
                |w, _| output::health_human(w, &socket, &report),
            )?;
            Ok(match HealthStatus::of(&report) {
                HealthStatus::Healthy => Exit::Success,
                HealthStatus::Degraded => Exit::Failed,
                HealthStatus::Down => Exit::Down,
            })
        }
        Err(error) => {
            let line = errors::diagnose(&error, session.context).line.unwrap_or_default();
            if out.is_json() {
                let status = json!({ "status": HealthStatus::Down.word(), "socket": socket, "error": line });
                out.emit(|| status, |_, _| Ok(()))?;
            }
            errors::report(&error, session.context);
            Ok(Exit::Down)
        }
    }
}

fn flush<W: Write>(session: &Session, out: &mut Output<W>) -> Result<Exit, CliError> {
    let client = session.connect()?;
    let lsn = client.flush().map_err(CliError::daemon(Operation::Flush))?;
    out.emit(
        || json!({ "durable_lsn": lsn }),
        |w, _| writeln!(w, "durable up to log position {lsn}"),
    )?;
    Ok(Exit::Success)
}

fn checkpoint<W: Write>(session: &Session, out: &mut Output<W>) -> Result<Exit, CliError> {
    let client = session.connect()?;
    let lsn = client.checkpoint().map_err(CliError::daemon(Operation::Checkpoint))?;
    out.emit(
        || json!({ "checkpoint_lsn": lsn }),
        |w, _| writeln!(w, "snapshot covers log position {lsn}"),
    )?;
    Ok(Exit::Success)
}

/// Round trips, each printed as it completes (text), then a summary; with
/// `--json` one object at the end.
fn ping<W: Write>(session: &Session, args: PingArgs, out: &mut Output<W>) -> Result<Exit, CliError> {
    let client = session.connect()?;
    let socket = session.socket();
    let mut round_trips_us = Vec::with_capacity(args.count as usize);
    for _ in 0..args.count {
        let started = Instant::now();
        client.ping().map_err(CliError::daemon(Operation::Ping))?;
        let us = started.elapsed().as_secs_f64() * 1e6;
        round_trips_us.push(us);
        if !out.is_json() {
            writeln!(out.writer(), "pong from {socket} in {us:.1} µs")?;
        }
    }
    round_trips_us.sort_by(f64::total_cmp);
    let (min, max) = (round_trips_us[0], round_trips_us[round_trips_us.len() - 1]);
    let median = round_trips_us[round_trips_us.len() / 2];
    out.emit(
        || {
            json!({
                "socket": socket,
                "count": args.count,
                "min_us": min,
                "median_us": median,
                "max_us": max,
            })
        },
        |w, _| {
            writeln!(
                w,
                "{} round trips: min {min:.1} µs, median {median:.1} µs, max {max:.1} µs",
                args.count
            )
        },
    )?;
    Ok(Exit::Success)
}

fn completions<W: Write>(args: CompletionsArgs, out: &mut Output<W>) -> Result<Exit, CliError> {
    clap_complete::generate(args.shell, &mut Cli::command(), "nexus", out.writer());
    out.writer().flush()?;
    Ok(Exit::Success)
}

#[cfg(test)]
mod tests {
    use super::*;
    use nexus_client::wire::MemoryTag;

    fn forget_args(ids: &[u64], namespace: Option<&str>, tags: &[(&str, &str)]) -> ForgetArgs {
        ForgetArgs {
            ids: ids.to_vec(),
            namespace: namespace.map(str::to_owned),
            tags: tags
                .iter()
                .map(|(key, value)| MemoryTag {
                    key: (*key).into(),
                    value: (*value).into(),
                })
                .collect(),
        }
    }

    #[test]
    fn forget_deletes_what_it_names_and_refuses_to_name_nothing() {
        assert_eq!(
            forget_request(forget_args(&[1, 2], None, &[])).unwrap(),
            ForgetRequest::Ids(vec![1, 2])
        );
        assert_eq!(
            forget_request(forget_args(&[], Some("a"), &[])).unwrap(),
            ForgetRequest::Namespace("a".into())
        );
        let ForgetRequest::Tags { namespace, tags } =
            forget_request(forget_args(&[], Some("a"), &[("k", "v")])).unwrap()
        else {
            panic!("tags with a namespace are a tag forget")
        };
        assert_eq!((namespace.as_deref(), tags.len()), (Some("a"), 1));
        for nothing in [forget_args(&[], None, &[]), forget_args(&[], Some(""), &[])] {
            assert!(matches!(forget_request(nothing), Err(CliError::Usage(_))));
        }
    }
}
