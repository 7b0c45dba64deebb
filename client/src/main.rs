//! `nexus`: the command-line client (ping, stats, health).

use std::process::ExitCode;
use std::time::Instant;

use nexus_client::{Client, ClientError};

const USAGE: &str = "\
nexus — talk to a running nexusd

USAGE: nexus [--socket PATH] COMMAND

COMMANDS:
  ping [--count N]   round trips through shared memory, with their latency
  stats [--json]     the daemon's counters
  health             exit 0 when the daemon serves, 1 otherwise

The socket defaults to $NEXUS_SOCKET, else $XDG_RUNTIME_DIR/nexusd.sock, else ./nexusd.sock.
";

fn main() -> ExitCode {
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
    let mut socket = nexus_shm_protocol::default_socket_path();
    let mut command: Option<String> = None;
    let (mut count, mut json) = (3u32, false);
    while let Some(arg) = parser.next()? {
        match arg {
            Long("socket") => socket = parser.value()?.into(),
            Long("count") => count = parser.value()?.parse()?,
            Long("json") => json = true,
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
        "ping" => ping(&client, count)?,
        "stats" => stats(&client, json)?,
        other => return Err(format!("unknown command {other:?}\n\n{USAGE}").into()),
    }
    Ok(ExitCode::SUCCESS)
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
    match Client::connect(socket).and_then(|client| client.health()) {
        Ok(report) if report.serving => {
            println!("serving (nexusd {}, up {} s)", report.version, report.uptime_s);
            ExitCode::SUCCESS
        }
        Ok(_) => {
            println!("not serving (shutting down)");
            ExitCode::FAILURE
        }
        Err(e) => {
            println!("unhealthy: {e}");
            ExitCode::FAILURE
        }
    }
}
