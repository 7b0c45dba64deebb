//! `nexus`: the command-line client.

pub mod transfer;

use std::process::ExitCode;
use std::time::Instant;

use nexus_client::wire::{EngineChoice, ForgetRequest, HealthReport, MemoryInput, MemoryTag, RecallRequest, Route};
use nexus_client::{Client, ClientError};

/// What the memory commands were given.
#[derive(Default)]
struct MemoryArgs {
    text: Option<String>,
    namespace: Option<String>,
    key: Option<String>,
    tags: Vec<MemoryTag>,
    k: u32,
    id: Option<u64>,
    engine: Option<EngineChoice>,
    route: Option<Route>,
}

const USAGE: &str = "\
nexus — talk to a running nexusd

USAGE: nexus [--socket PATH] COMMAND

COMMANDS:
  remember TEXT [--namespace NS] [--key KEY] [--tag K=V]...   store a memory durably; prints its id
  recall TEXT [--namespace NS] [--k N] [--tag K=V]... [--route R] [--engine E]
                     the best memories for TEXT, each with its score's factors; R forces a
                     route (cache, smart, full, max; default: the router picks); E asks one
                     engine alone (lexical, dense or scan)
  forget --id ID | --namespace NS                             delete memories
  flush | checkpoint                                          make writes durable now / snapshot now
  ping [--count N]   round trips through shared memory, with their latency
  stats [--json]     the daemon's counters
  health             exit 0 when the daemon serves reads and writes, 1 otherwise

The socket defaults to $NEXUS_SOCKET, else $XDG_RUNTIME_DIR/nexusd.sock, else ./nexusd.sock.
";

/// Runs `nexus` with the process's arguments; returns its exit code.
pub fn main() -> ExitCode {
    match run() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("nexus: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<ExitCode, Box<dyn std::error::Error>> {
    use lexopt::prelude::*;
    let mut parser = lexopt::Parser::from_env();
    let mut socket = nexus_client::default_socket_path();
    let mut command: Option<String> = None;
    let (mut count, mut json) = (3u32, false);
    let mut memory = MemoryArgs {
        k: 5,
        ..MemoryArgs::default()
    };
    while let Some(arg) = parser.next()? {
        match arg {
            Long("socket") => socket = parser.value()?.into(),
            Long("count") => count = parser.value()?.parse()?,
            Long("json") => json = true,
            Long("namespace") => memory.namespace = Some(parser.value()?.string()?),
            Long("key") => memory.key = Some(parser.value()?.string()?),
            Long("k") => memory.k = parser.value()?.parse()?,
            Long("id") => memory.id = Some(parser.value()?.parse()?),
            Long("engine") => {
                memory.engine = Some(match parser.value()?.string()?.as_str() {
                    "lexical" => EngineChoice::Lexical,
                    "dense" => EngineChoice::Dense,
                    "scan" => EngineChoice::Scan,
                    other => return Err(format!("--engine {other}: expected lexical, dense or scan").into()),
                })
            }
            Long("route") => {
                memory.route = Some(match parser.value()?.string()?.as_str() {
                    "cache" => Route::CacheOnly,
                    "smart" => Route::SmartRouting,
                    "full" => Route::FullPipeline,
                    "max" => Route::MaximumIntelligence,
                    other => return Err(format!("--route {other}: expected cache, smart, full or max").into()),
                })
            }
            Long("tag") => {
                let tag = parser.value()?.string()?;
                let (key, value) = tag.split_once('=').ok_or(format!("--tag {tag}: expected KEY=VALUE"))?;
                memory.tags.push(MemoryTag {
                    key: key.into(),
                    value: value.into(),
                });
            }
            Value(value) if command.is_some() && memory.text.is_none() => memory.text = Some(value.string()?),
            Short('h') | Long("help") => {
                print!("{USAGE}");
                return Ok(ExitCode::SUCCESS);
            }
            Value(value) if command.is_none() => command = Some(value.string()?),
            other => return Err(other.unexpected().into()),
        }
    }
    let Some(command) = command else {
        eprint!("{USAGE}");
        return Ok(ExitCode::from(2));
    };
    if command == "health" {
        return Ok(health(&socket));
    }
    let client = Client::connect(&socket)?;
    match command.as_str() {
        "remember" => remember(&client, memory)?,
        "recall" => recall(&client, memory)?,
        "forget" => forget(&client, memory)?,
        "flush" => println!("durable up to log position {}", client.flush()?),
        "checkpoint" => println!("snapshot covers log position {}", client.checkpoint()?),
        "ping" => ping(&client, count)?,
        "stats" => stats(&client, json)?,
        other => return Err(format!("unknown command {other:?}\n\n{USAGE}").into()),
    }
    Ok(ExitCode::SUCCESS)
}

const DEFAULT_NAMESPACE: &str = "default";

fn remember(client: &Client, args: MemoryArgs) -> Result<(), Box<dyn std::error::Error>> {
    let text = args.text.ok_or("remember needs the TEXT to store")?;
    let memory = MemoryInput {
        key: args.key,
        namespace: args.namespace.unwrap_or_else(|| DEFAULT_NAMESPACE.into()),
        text,
        tags: args.tags,
        importance: 1.0,
        source: Some("nexus-cli".into()),
        ..MemoryInput::default()
    };
    let ids = client.remember(vec![memory])?;
    println!("remembered as id {}", ids[0]);
    Ok(())
}

fn recall(client: &Client, args: MemoryArgs) -> Result<(), Box<dyn std::error::Error>> {
    let query = RecallRequest {
        namespace: args.namespace.unwrap_or_else(|| DEFAULT_NAMESPACE.into()),
        text: Some(args.text.ok_or("recall needs the query TEXT")?),
        k: args.k,
        filter: args.tags,
        engine: args.engine,
        route: args.route,
        ..RecallRequest::default()
    };
    let answer = client.recall_answer(query)?;
    if answer.route != Route::None {
        println!("route {:?}: {}", answer.route, answer.route_reason);
    }
    if let Some(reason) = &answer.degraded {
        println!("degraded: {reason}");
    }
    if answer.hits.is_empty() {
        println!("no memory matches");
    }
    for hit in answer.hits {
        let why: Vec<String> = hit.why.iter().map(|s| format!("{} {:.3}", s.name, s.value)).collect();
        println!("{:>8}  {:.4}  {}  ({})", hit.id, hit.score, hit.text, why.join(", "));
    }
    Ok(())
}

fn forget(client: &Client, args: MemoryArgs) -> Result<(), Box<dyn std::error::Error>> {
    let what = match (args.id, args.namespace) {
        (Some(id), _) => ForgetRequest::Ids(vec![id]),
        (None, Some(namespace)) => ForgetRequest::Namespace(namespace),
        (None, None) => return Err("forget needs --id ID or --namespace NS".into()),
    };
    println!("forgot {} memories", client.forget(what)?);
    Ok(())
}

fn ping(client: &Client, count: u32) -> Result<(), ClientError> {
    for _ in 0..count {
        let started = Instant::now();
        client.ping()?;
        println!(
            "pong from {} in {:.1} µs",
            client.path().display(),
            started.elapsed().as_secs_f64() * 1e6
        );
    }
    Ok(())
}

fn stats(client: &Client, json: bool) -> Result<(), ClientError> {
    let stats = client.stats()?;
    if json {
        let fields: Vec<String> = stats
            .counters
            .iter()
            .map(|c| format!("\"{}\":{}", c.name, c.value))
            .collect();
        println!("{{{}}}", fields.join(","));
    } else {
        for counter in &stats.counters {
            println!("{:<34} {}", counter.name, counter.value);
        }
    }
    Ok(())
}

fn health(socket: &std::path::Path) -> ExitCode {
    let verdict = match Client::connect(socket).and_then(|client| client.health()) {
        Ok(report) => health_verdict(&report),
        Err(e) => Err(format!("unhealthy: {e}")),
    };
    match verdict {
        Ok(line) => {
            println!("{line}");
            ExitCode::SUCCESS
        }
        Err(line) => {
            println!("{line}");
            ExitCode::FAILURE
        }
    }
}

/// What `nexus health` prints: `Ok` when the daemon serves reads and
/// writes (exit 0), `Err` otherwise (exit 1). A daemon that serves reads but
/// refuses every write (its WAL stopped) is not healthy: a probe must say so.
fn health_verdict(report: &HealthReport) -> Result<String, String> {
    if !report.serving {
        return Err("not serving (shutting down)".into());
    }
    if let Some(reason) = &report.write_failure {
        return Err(format!("serving reads, refusing writes: {reason}"));
    }
    Ok(format!("serving (nexusd {}, up {} s)", report.version, report.uptime_s))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(serving: bool, write_failure: Option<&str>) -> HealthReport {
        HealthReport {
            serving,
            uptime_s: 7,
            version: "0.1.0".into(),
            write_failure: write_failure.map(str::to_owned),
        }
    }

    // Regression (issue 7, scenario 11): `nexus health` exited 0 for a daemon
    // whose WAL had stopped accepting writes.
    #[test]
    fn health_fails_when_writes_are_refused_or_the_daemon_stops() {
        assert!(health_verdict(&report(true, None)).is_ok());
        let refused = health_verdict(&report(true, Some("fdatasync of 1.wal failed"))).unwrap_err();
        assert!(refused.contains("refusing writes: fdatasync"), "{refused}");
        assert!(health_verdict(&report(false, None)).is_err());
    }
}
