//! `nexus-bench`: the command line of the Memory Nexus load benchmarks.
//!
//! Parses flags, optionally starts a throwaway daemon (`--spawn-daemon`),
//! calls the measuring functions of the `nexus_benches` library and prints
//! their report (a table, or one JSON object with `--json`). No measuring
//! logic lives here, so tests can run exactly what this binary runs.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use nexus_benches::ann::{AnnBenchConfig, run_ann};
use nexus_benches::daemon::SpawnedDaemon;
use nexus_benches::eval::{EvalConfig, run_locomo};
use nexus_benches::fanout::{FanoutConfig, run_fanout};
use nexus_benches::floor::{DEFAULT_ROUND_TRIPS, run_floor};
use nexus_benches::idle::{IdleConfig, run_idle};
use nexus_benches::ping::{PingConfig, run_ping};
use nexus_benches::recall::{RecallConfig, run_recall};
use nexus_benches::remember::{RememberConfig, run_remember};
use nexus_benches::startup::{StartupConfig, run_startup};
use nexus_benches::sustained::{SustainedConfig, run_sustained};
use nexus_benches::{ann, eval, fanout, floor, idle, ping, recall, remember, startup, sustained};
use nexus_client::Transport;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const USAGE: &str = "\
nexus-bench — Memory Nexus load benchmarks

USAGE:
  nexus-bench ping   [COMMON] [--iterations N] [--warmup N] [--rounds R] [--payload BYTES] [--depth D] [--spin-us US]
  nexus-bench idle   [COMMON] [--clients N] [--seconds S] [--ring-bytes N]
  nexus-bench fanout [COMMON] [--clients N] [--pings N] [--ring-bytes N] [--settle-timeout-ms MS]
  nexus-bench remember [COMMON] [--clients C] [--batch B] [--count N] [--dim D] [--text-bytes T] [--uds]
                     [--warmup REQUESTS] [--fsync-dir DIR] [--fsync-samples N]
  nexus-bench floor [--round-trips N] [--json]
  nexus-bench startup --spawn-daemon NEXUSD [--daemon-arg ARG]... [--memories N] [--replay-records N]
                     [--dim D] [--text-bytes T] [--json]
  nexus-bench ann [--vectors N] [--dim D] [--data FILE.f32] [--queries FILE.f32] [--query-count Q]
                  [--clusters C] [--efs EF,EF,...] [--m M] [--ef-construction EF] [--rerank R] [--json]
  nexus-bench eval locomo [COMMON] --data FILE [--k-max K]
  nexus-bench sustained [COMMON] [--memories N] [--writers W] [--batch B] [--dim D] [--text-bytes T]
                     [--seed-memories S] [--idle-s SECONDS] [--catch-up-timeout-s SECONDS]
  nexus-bench recall [COMMON] [--route cache|smart|full|max] [--memories N] [--dim D] [--clients C]
                     [--duration S] [--k K] [--clusters N] [--seed N] [--remember-percent P] [--skip-load]

COMMON:
  --socket PATH             the daemon's socket (default: $NEXUS_SOCKET, else the daemon's default)
  --spawn-daemon NEXUSD     start this nexusd on a temp socket and data dir, measure, stop it
  --daemon-arg ARG          one more argument for the spawned daemon (repeatable)
  --json                    print one JSON object instead of a table

ping: shared memory vs the Unix-socket transport of the same daemon, alternating
  rounds after a warm-up. Defaults: 100000 iterations per transport, 10000 warm-up,
  10 rounds, payload 0, depth 1, client spin 0.
idle: daemon CPU while N clients (default 100) sit idle for S seconds (default 10).
fanout: daemon fds/RSS before and after N clients (default 1000, 16 KiB rings,
  3 pings each) connect and leave.
remember: durable Remember from C client threads (default 1), B memories per
  request (default 1), N memories in all (default 10000), D-dimensional vectors
  (default 384), T-byte texts (default 1024); with a bare fdatasync measured on
  --fsync-dir (default: the spawned daemon's data dir, else nexusd's default).
floor: no daemon; the machine's round trip through two eventfds, through a
  Unix socketpair, and through an eventfd bell one way and a futex the other
  (the transport's own wake-ups), between two threads (what a depth-1 ping cannot beat).
startup: fill a fresh store with N memories (default 1000000), checkpoint, time
  the restart from the snapshot; write --replay-records (default 200000) single
  records, SIGKILL, time the restart and the WAL replay rate.
ann: no daemon; the ANN index (recall::ann) built from N vectors (default 100000,
  384-d: a seeded set of C clusters (default 1000), or the first N rows of raw little-endian f32
  --data), recall@10 against exact search and one-thread queries/s for each
  search effort (default 16,24,32,48,64,96,128 and the shipped one), beside an
  exact int8 scan of the same vectors; Q queries (default 1000: the set's own,
  or --queries rows).
eval locomo: retrieval quality on a LoCoMo-format JSON file: every dialog turn
  written as a memory (namespace = sample_id, key = dia_id, created at its
  session's date, text only), every question of categories 1-4 asked in its
  conversation with the lexical engine, the dense engine and the smart route,
  k = K (default 20); recall@5/10/20 (fraction of evidence turns in the top k)
  and hit@5/10/20 (at least one), overall and per category. Memories of other
  namespaces are left alone; a re-run replaces the same keys.
sustained: recall while W writers (default 2) write N memories (default 100000)
  in batches of B (default 100; D-d vectors, default 384; T-byte texts, default
  200) as fast as they are acknowledged, on S seeded ones (default 10000): recall
  p50/p99 idle (--idle-s, default 5), under the load and after it; after every
  batch one of its memories recalled through lexical, dense and vector (a miss
  is a violation); the largest tails; the time until both tails are below the
  build threshold (fails past --catch-up-timeout-s, default 120). Use a fresh
  daemon: it writes namespaces sustained-0.. and checkpoints.
recall: recall on one forced route (default smart) from C client threads
  (default 1) in a closed loop for S seconds (default 10), k results (default 8),
  after loading a seeded synthetic corpus of N memories (default 100000) in
  namespace `bench` (template texts with a Zipfian tail; D-d vectors, default 384, from a mixture
  of --clusters clusters, default 64; keys bench-0.., so a re-run upserts) unless
  --skip-load; the ANN tails are sealed first. Reports daemon and round-trip
  percentiles, throughput, degraded and error answers, each client's slowest
  answer, and the wake-up floor measured in the same run. `cache` cycles over 64
  queries warmed first. --remember-percent P makes P % of each client's requests
  durable Remembers of one new memory (the mixed load; their round trips apart).
";

/// The parsed command line.
struct Args {
    command: Command,
    socket: Option<PathBuf>,
    spawn_daemon: Option<PathBuf>,
    daemon_args: Vec<OsString>,
    json: bool,
}

enum Command {
    Ping(PingConfig),
    Idle(IdleConfig),
    Fanout(FanoutConfig),
    Remember(RememberConfig),
    Startup(StartupConfig),
    Floor { round_trips: u64 },
    Ann(AnnBenchConfig),
    Eval(EvalConfig),
    Sustained(SustainedConfig),
    Recall(RecallConfig),
}

fn main() -> anyhow::Result<()> {
    let Some(args) = parse(std::env::args_os().skip(1))? else {
        return Ok(());
    };
    if let Command::Floor { round_trips } = args.command {
        let result = run_floor(round_trips).context("floor benchmark")?;
        print!("{}", render(args.json, &result, || floor::floor_table(&result))?);
        return Ok(());
    }
    if let Command::Ann(config) = &args.command {
        let result = run_ann(config).context("ann benchmark")?;
        print!("{}", render(args.json, &result, || ann::ann_table(&result))?);
        return Ok(());
    }
    if let Command::Startup(config) = args.command {
        // It starts, kills and restarts its own daemons.
        let Some(binary) = args.spawn_daemon else {
            bail!("startup needs --spawn-daemon NEXUSD: it restarts the daemon it measures");
        };
        let config = StartupConfig {
            binary,
            daemon_args: args.daemon_args,
            ..config
        };
        let result = run_startup(&config).context("startup benchmark")?;
        print!("{}", render(args.json, &result, || startup::startup_table(&result))?);
        return Ok(());
    }
    let daemon = match &args.spawn_daemon {
        Some(binary) => Some(
            SpawnedDaemon::start(binary, &args.daemon_args)
                .with_context(|| format!("--spawn-daemon {}", binary.display()))?,
        ),
        None => None,
    };
    let socket = match (&daemon, &args.socket) {
        (Some(daemon), _) => daemon.socket().to_path_buf(),
        (None, Some(socket)) => socket.clone(),
        (None, None) => nexus_shm_protocol::default_socket_path(),
    };
    let data_dir = match &daemon {
        Some(daemon) => daemon.data_dir(),
        None => nexus_daemon::config::Config::default().data_dir,
    };
    let output = run(args.command, socket, data_dir, args.json)?;
    if let Some(daemon) = daemon {
        let status = daemon.stop().context("stopping the spawned daemon")?;
        if !status.success() {
            eprintln!("nexus-bench: the spawned daemon exited with {status}");
        }
    }
    print!("{output}");
    Ok(())
}

/// Runs one benchmark and renders its report.
/// `data_dir` is the daemon's, where a bare fdatasync is measured unless `--fsync-dir` says otherwise.
fn run(command: Command, socket: PathBuf, data_dir: PathBuf, json: bool) -> anyhow::Result<String> {
    let rendered = match command {
        Command::Ping(config) => {
            let config = PingConfig { socket, ..config };
            let result = run_ping(&config).context("ping benchmark")?;
            render(json, &result, || ping::ping_table(&config, &result))?
        }
        Command::Idle(config) => {
            let result = run_idle(&IdleConfig { socket, ..config }).context("idle benchmark")?;
            render(json, &result, || idle::idle_table(&result))?
        }
        Command::Fanout(config) => {
            let result = run_fanout(&FanoutConfig { socket, ..config }).context("fanout benchmark")?;
            render(json, &result, || fanout::fanout_table(&result))?
        }
        Command::Remember(config) => {
            let fsync_dir = match config.fsync_dir.as_os_str().is_empty() {
                true => data_dir,
                false => config.fsync_dir,
            };
            let result = run_remember(&RememberConfig {
                socket,
                fsync_dir,
                ..config
            })
            .context("remember benchmark")?;
            render(json, &result, || remember::remember_table(&result))?
        }
        Command::Eval(config) => {
            let result = run_locomo(&EvalConfig { socket, ..config }).context("eval locomo")?;
            render(json, &result, || eval::eval_table(&result))?
        }
        Command::Sustained(config) => {
            let result = run_sustained(&SustainedConfig { socket, ..config }).context("sustained benchmark")?;
            let rendered = render(json, &result, || sustained::sustained_table(&result))?;
            if !result.passed() {
                print!("{rendered}");
                bail!(
                    "sustained: {} visibility misses; caught up: {}",
                    result.visibility_misses,
                    result.caught_up
                );
            }
            rendered
        }
        Command::Recall(config) => {
            let result = run_recall(&RecallConfig { socket, ..config }).context("recall benchmark")?;
            render(json, &result, || recall::recall_table(&result))?
        }
        Command::Startup(_) | Command::Floor { .. } | Command::Ann(_) => {
            unreachable!("startup, floor and ann are run by main before any daemon is spawned")
        }
    };
    Ok(rendered)
}

fn render<T: serde::Serialize>(json: bool, value: &T, table: impl FnOnce() -> String) -> anyhow::Result<String> {
    if json {
        Ok(serde_json::to_string(value)? + "\n")
    } else {
        Ok(table())
    }
}

/// Parses the command line; `Ok(None)` when --help was answered.
fn parse(args: impl IntoIterator<Item = OsString>) -> anyhow::Result<Option<Args>> {
    use lexopt::prelude::*;
    let mut parser = lexopt::Parser::from_args(args);
    // The socket is known only once every flag is read (--spawn-daemon picks one).
    let placeholder = PathBuf::new();
    let mut command = match parser.next()? {
        Some(Value(name)) if name == "ping" => Command::Ping(PingConfig::new(placeholder)),
        Some(Value(name)) if name == "idle" => Command::Idle(IdleConfig::new(placeholder)),
        Some(Value(name)) if name == "fanout" => Command::Fanout(FanoutConfig::new(placeholder)),
        Some(Value(name)) if name == "remember" => Command::Remember(RememberConfig::new(placeholder, PathBuf::new())),
        Some(Value(name)) if name == "startup" => Command::Startup(StartupConfig::new(placeholder)),
        Some(Value(name)) if name == "ann" => Command::Ann(AnnBenchConfig::default()),
        Some(Value(name)) if name == "eval" => eval_command(&mut parser)?,
        Some(Value(name)) if name == "sustained" => Command::Sustained(SustainedConfig::new(placeholder)),
        Some(Value(name)) if name == "recall" => Command::Recall(RecallConfig::new(placeholder)),
        Some(Value(name)) if name == "floor" => Command::Floor {
            round_trips: DEFAULT_ROUND_TRIPS,
        },
        Some(Short('h') | Long("help")) | None => {
            print!("{USAGE}");
            return Ok(None);
        }
        Some(other) => bail!("{}\n\n{USAGE}", other.unexpected()),
    };
    let (mut socket, mut spawn_daemon, mut daemon_args, mut json) = (None, None, Vec::new(), false);
    while let Some(arg) = parser.next()? {
        match arg {
            Long("socket") => socket = Some(parser.value()?.into()),
            Long("spawn-daemon") => spawn_daemon = Some(parser.value()?.into()),
            Long("daemon-arg") => daemon_args.push(parser.value()?),
            Long("json") => json = true,
            Long("uds") => match &mut command {
                Command::Remember(config) => config.transport = Transport::Socket,
                _ => bail!("--uds is an option of remember (ping measures both transports)\n\n{USAGE}"),
            },
            Long("skip-load") => match &mut command {
                Command::Recall(config) => config.skip_load = true,
                _ => bail!("--skip-load is an option of recall\n\n{USAGE}"),
            },
            Short('h') | Long("help") => {
                print!("{USAGE}");
                return Ok(None);
            }
            Long(flag) if matches!(command, Command::Recall(_)) => {
                // recall's options parse themselves, with errors naming the flag.
                let flag = flag.to_owned();
                let value = parser.value()?.string()?;
                if let Command::Recall(config) = &mut command {
                    config.set_option(&flag, &value)?;
                }
            }
            Long(flag) => {
                let flag = flag.to_owned();
                let value = parser.value()?.string()?;
                set_option(&mut command, &flag, &value).with_context(|| format!("--{flag} {value}"))?;
            }
            other => bail!("{}\n\n{USAGE}", other.unexpected()),
        }
    }
    if let Command::Eval(config) = &command
        && config.data.as_os_str().is_empty()
    {
        bail!("eval locomo needs --data FILE (a LoCoMo-format JSON file)\n\n{USAGE}");
    }
    Ok(Some(Args {
        command,
        socket,
        spawn_daemon,
        daemon_args,
        json,
    }))
}

/// `eval` is followed by what to evaluate; `locomo` is the one eval there is.
fn eval_command(parser: &mut lexopt::Parser) -> anyhow::Result<Command> {
    match parser.next()? {
        Some(lexopt::Arg::Value(name)) if name == "locomo" => {
            Ok(Command::Eval(EvalConfig::new(PathBuf::new(), PathBuf::new())))
        }
        _ => bail!("eval needs what to evaluate: `eval locomo`\n\n{USAGE}"),
    }
}

/// Applies a subcommand-specific `--flag value`.
fn set_option(command: &mut Command, flag: &str, value: &str) -> anyhow::Result<()> {
    match (command, flag) {
        (Command::Ping(c), "iterations") => c.iterations = value.parse()?,
        (Command::Ping(c), "warmup") => c.warmup = value.parse()?,
        (Command::Ping(c), "rounds") => c.rounds = value.parse()?,
        (Command::Ping(c), "payload") => c.payload_bytes = value.parse()?,
        (Command::Ping(c), "depth") => c.depth = value.parse()?,
        (Command::Ping(c), "spin-us") => c.client_spin = Duration::from_micros(value.parse()?),
        (Command::Idle(c), "clients") => c.n_clients = value.parse()?,
        (Command::Idle(c), "seconds") => c.window = Duration::try_from_secs_f64(value.parse()?)?,
        (Command::Idle(c), "ring-bytes") => c.ring_bytes = value.parse()?,
        (Command::Fanout(c), "clients") => c.n_clients = value.parse()?,
        (Command::Fanout(c), "pings") => c.pings_per_client = value.parse()?,
        (Command::Fanout(c), "ring-bytes") => c.ring_bytes = value.parse()?,
        (Command::Fanout(c), "settle-timeout-ms") => c.settle_timeout = Duration::from_millis(value.parse()?),
        (Command::Remember(c), "clients") => c.clients = value.parse()?,
        (Command::Remember(c), "batch") => c.batch = value.parse()?,
        (Command::Remember(c), "count") => c.count = value.parse()?,
        (Command::Remember(c), "dim") => c.dim = value.parse()?,
        (Command::Remember(c), "text-bytes") => c.text_bytes = value.parse()?,
        (Command::Remember(c), "warmup") => c.warmup_requests = value.parse()?,
        (Command::Remember(c), "fsync-dir") => c.fsync_dir = value.into(),
        (Command::Remember(c), "fsync-samples") => c.fsync_samples = value.parse()?,
        (Command::Floor { round_trips }, "round-trips") => *round_trips = value.parse()?,
        (Command::Startup(c), "memories") => c.memories = value.parse()?,
        (Command::Startup(c), "replay-records") => c.replay_records = value.parse()?,
        (Command::Startup(c), "dim") => c.dim = value.parse()?,
        (Command::Startup(c), "text-bytes") => c.text_bytes = value.parse()?,
        (Command::Ann(c), "vectors") => c.vectors = value.parse()?,
        (Command::Ann(c), "dim") => c.dim = value.parse()?,
        (Command::Ann(c), "data") => c.data = Some(value.into()),
        (Command::Ann(c), "queries") => c.queries_file = Some(value.into()),
        (Command::Ann(c), "query-count") => c.queries = value.parse()?,
        (Command::Ann(c), "clusters") => c.clusters = value.parse()?,
        (Command::Ann(c), "efs") => c.efs = value.split(',').map(str::parse).collect::<Result<_, _>>()?,
        (Command::Ann(c), "m") => c.m = Some(value.parse()?),
        (Command::Ann(c), "ef-construction") => c.ef_construction = Some(value.parse()?),
        (Command::Ann(c), "rerank") => c.rerank = Some(value.parse()?),
        (Command::Eval(c), "data") => c.data = value.into(),
        (Command::Eval(c), "k-max") => c.k_max = value.parse()?,
        (Command::Sustained(c), "memories") => c.memories = value.parse()?,
        (Command::Sustained(c), "writers") => c.writers = value.parse()?,
        (Command::Sustained(c), "batch") => c.batch = value.parse()?,
        (Command::Sustained(c), "dim") => c.dim = value.parse()?,
        (Command::Sustained(c), "text-bytes") => c.text_bytes = value.parse()?,
        (Command::Sustained(c), "seed-memories") => c.seed_memories = value.parse()?,
        (Command::Sustained(c), "idle-s") => c.idle = Duration::try_from_secs_f64(value.parse()?)?,
        (Command::Sustained(c), "catch-up-timeout-s") => {
            c.catch_up_timeout = Duration::try_from_secs_f64(value.parse()?)?
        }
        _ => bail!("unknown option for this benchmark\n\n{USAGE}"),
    }
    Ok(())
}
