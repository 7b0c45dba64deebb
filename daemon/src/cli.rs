//! `nexusd`'s command line: flags to [`Config`], logging, the runtime, signals.
//!
//! `main.rs` calls [`main`], the test wrapper `nexusd-it` calls
//! [`main_with_test_hooks`]; everything else is in the library so tests run
//! the very same code. Under systemd the daemon reports its start-up, its
//! liveness and its shutdown through [`crate::notify`].

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use anyhow::{Context, bail};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM, SIGUSR1};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{error, info, warn};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Registry, reload};

use crate::config::{Config, ConfigError, Environment, Key, Settings};
use crate::handler::Shared;
use crate::notify::{ServiceManager, State, WedgeSwitch};
use crate::recall::Recall;
use crate::store::Store;
use crate::store::wal::{RealFs, WalFs};
use crate::transport::listener::BoundSocket;

/// Changes the log filter of the running daemon (SIGHUP).
type LogHandle = reload::Handle<EnvFilter, Registry>;

const USAGE: &str = "\
nexusd — the Memory Nexus sidecar daemon

USAGE: nexusd [OPTIONS]

CONFIGURATION: defaults < config file < environment < flags. Each option --foo-bar VALUE
below is also the variable NEXUS_FOO_BAR=VALUE, same syntax (lists comma-separated:
NEXUS_ALLOW_UIDS=1000,1001; an empty variable counts as unset), and the config file key
foo_bar (allow_uids for --allow-uid; [limits] dimension for --dimension), except --config,
--check-config and --salvage-wal. NEXUS_* variables that name no setting are warned about.
docs/configuration.md lists every key.

OPTIONS:
  --config FILE                  TOML config file, re-read on SIGHUP (default: $NEXUS_CONFIG, else none)
  --check-config                 print the effective configuration as a TOML config file, where each
                                 value came from in a comment, and exit: 0, or 2 with the error
  --data-dir DIR                 durable state (default: ./nexus-data)
  --socket PATH                  Unix socket (default: $XDG_RUNTIME_DIR/nexusd.sock, else ./nexusd.sock)
  --socket-mode OCTAL            socket file permissions (default: 600)
  --allow-uid UID[,UID...]       admit these peer uids (repeatable; default: the daemon's own uid)
  --max-clients N                connections served at once (default: 1024)
  --max-clients-per-uid N        sessions one uid may hold (default: half of max-clients with several uids)
  --max-pending-handshakes N     connections waiting for their hello at once (default: 64)
  --memory-budget-bytes N        connection memory (rings, buffers) all clients may hold (default: 2147483648)
  --scratch-retain-bytes N       request buffer a session keeps after a larger request (default: 65536)
  --fd-limit N                   RLIMIT_NOFILE to run with (default: the hard limit)
  --fd-reserve N                 fds connections never take, kept for the store (default: 64)
  --idle-timeout-ms N            close a connection with no request for this long (default: 3600000)
  --ring-bytes N                 ring size granted when a client asks for none (default: 1048576)
  --max-ring-bytes N             largest ring granted (default: 67108864)
  --max-frame-bytes N            largest frame payload (default: 8388608)
  --spin-us N                    adaptive busy-wait budget before sleeping, for hosts with spare cores (default: 0 = off)
  --worker-threads N             tokio worker threads (default: one per core)
  --handshake-timeout-ms N       time a client has to send its hello (default: 2000)
  --stalled-client-timeout-ms N  time a full response ring is tolerated (default: 10000)
  --max-bad-frames N             malformed frames tolerated per connection (default: 16)
  --shutdown-timeout-ms N        time in-flight requests get at shutdown (default: 5000)
  --fsync POLICY                 always (default: acknowledge after fdatasync) | interval:<ms> | never
  --wal-segment-bytes N          WAL segment size before rotation (default: 67108864)
  --checkpoint-wal-bytes N       WAL volume that triggers a checkpoint (default: 268435456)
  --checkpoint-min-interval-ms N least time between two client-requested checkpoints (default: 60000)
  --dimension N                  fix the vector dimension (default: set by the first vector stored)
  --salvage-wal                  start despite mid-log WAL corruption, cutting the log at the first bad record
  --embedder MODEL               builtin (default: the shipped static model) | hashing | a model2vec directory
  --duplicates POLICY            near-duplicates on Remember: keep (default: stored, linked) | skip | merge | off
  --chunk-tokens N               words per chunk of a long text on Remember, 0 = off (default: 400)
  --bm25-k1 K1                   BM25 term-frequency saturation (default: 1.2)
  --fusion-weights LIST          fusion weights, factor=weight,... (default: vector=0.4,lexical=1,context=0.7,
                                 recency=0.02,importance=0.02,preference=0.2,diversity=0.02,date=0.3)
  --cache-entries N              recall cache: answers held (default: 4096)
  --cache-bytes N                recall cache: bytes held (default: 16777216)
  --cache-semantic-threshold C   recall cache: cosine for reusing a similar query's answer (default: 0.95)
  --breaker-failures N           consecutive engine failures that open its breaker (default: 5)
  --breaker-cool-down-ms N       time an open breaker keeps its engine out (default: 30000)
  --bm25-b B                     BM25 length normalisation, 0..=1 (default: 0.75)
  --stemming BOOL                English stemming in the lexical index (default: true)
  --log FILTER                   log filter, e.g. info or nexus_daemon=debug (default: info)
  --log-format FORMAT            human (default) | json: one JSON object per line
  --metrics-socket PATH          serve Prometheus text on this Unix socket, or tcp:127.0.0.1:PORT (default: off)
  -h, --help                     this text
  -V, --version                  the version

SIGNALS: SIGTERM/SIGINT graceful stop (a second one exits at once), SIGHUP reload the
config file (under the environment and flags of the start), SIGUSR1 checkpoint now.

SYSTEMD: with $NOTIFY_SOCKET set (Type=notify) nexusd sends STATUS= while replaying,
READY=1 once it serves, STOPPING=1 at shutdown, and WATCHDOG=1 at half of $WATCHDOG_USEC
while its serving loop answers. See systemd/README.md.
";

/// What the daemon under test (`nexusd-it`) may change to break itself on
/// purpose; `nexusd` runs with [`TestHooks::none`].
pub struct TestHooks {
    /// The WAL's file system: one that injects faults in the test daemon.
    pub wal_fs: Arc<dyn WalFs>,
    /// SIGUSR2 wedges the runtime (the watchdog test).
    pub wedge: WedgeSwitch,
}

impl TestHooks {
    /// The shipped daemon's: the real file system, no switch.
    pub fn none() -> Self {
        Self {
            wal_fs: Arc::new(RealFs),
            wedge: WedgeSwitch::OFF,
        }
    }

    /// What the test daemon's environment asks for (`NEXUS_FAULT_INJECT`,
    /// `NEXUS_TEST_WEDGE_ON_SIGUSR2`). For `nexusd-it` only.
    pub fn from_env() -> Self {
        Self {
            wal_fs: crate::store::wal::test_fs_from_env(),
            wedge: WedgeSwitch::from_env(),
        }
    }
}

/// Runs the daemon with the process's arguments; returns its exit code.
pub fn main() -> ExitCode {
    main_with_test_hooks(TestHooks::none())
}

/// Opts the process out of transparent huge pages. The allocator asks for them
/// on its heap segments where the kernel allows it (THP "madvise" mode): one live
/// allocation then pins 2 MiB, so memory freed when clients leave never shrinks
/// RSS, and the idle daemon starts at 12 MiB instead of 4.5 MiB (nexus-bench
/// fanout). The snapshot's vectors are file-backed and unaffected.
/// Must run before the first heap allocation to matter; returns the errno to log later.
fn disable_transparent_huge_pages() -> Result<(), nix::errno::Errno> {
    nix::sys::prctl::set_thp_disable(true)
}

/// `main` with the hooks chosen by the caller: the daemon under test
/// (`nexusd-it`) passes [`TestHooks::from_env`]; `nexusd` passes none.
/// Must be called first thing in the binary's `main`, while the process has
/// one thread (it removes the service manager's variables from the environment).
pub fn main_with_test_hooks(hooks: TestHooks) -> ExitCode {
    let thp = disable_transparent_huge_pages();
    // SAFETY: the binaries call this first thing in `main` (see above); no
    // other thread exists yet: the runtime and the signal thread start in `serve`.
    let (manager, notify_errors) = unsafe { ServiceManager::take_from_env() };
    make_created_files_private();
    let invocation = match parse(std::env::args_os().skip(1)) {
        Ok(Some(parsed)) => parsed,
        Ok(None) => return ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("nexusd: {e:#}");
            return ExitCode::from(2);
        }
    };
    // The environment is read once, here; the configuration keeps its
    // layer, so every SIGHUP lays the file under this same environment.
    let env = match Environment::capture() {
        Ok(env) => env,
        Err(e) => {
            eprintln!("nexusd: {e}");
            return ExitCode::from(2);
        }
    };
    let config_file = invocation.config_file.or_else(|| env.config_file.clone());
    let flags = invocation.flags;
    let config = match Config::build_explained(config_file.as_deref(), &env.settings, &flags) {
        // --check-config: built and validated as a start would, nothing opened or bound.
        Ok((config, origins)) if invocation.check_config => {
            env.warnings()
                .for_each(|warning| eprintln!("nexusd: warning: {warning}"));
            print!("{}", config.to_toml(&origins));
            return ExitCode::SUCCESS;
        }
        Ok((config, _)) => config,
        Err(e) => {
            eprintln!("nexusd: {e}");
            return ExitCode::from(2);
        }
    };
    let log = init_logging(&config.log, config.log_format);
    env.warnings().for_each(|warning| warn!("{warning}"));
    if let Err(errno) = thp {
        tracing::warn!(%errno, "could not opt out of transparent huge pages");
    }
    for error in notify_errors {
        warn!(%error, "systemd notification setting ignored");
    }
    match serve(config, flags, log, hooks, manager) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

fn serve(
    config: Config,
    flags: Settings,
    log: LogHandle,
    hooks: TestHooks,
    manager: ServiceManager,
) -> anyhow::Result<()> {
    // A bad endpoint is a configuration error: refused before any work.
    let metrics_endpoint = (config.metrics_socket.as_deref())
        .map(|setting| crate::telemetry::Endpoint::parse(setting, &config.socket_path))
        .transpose()?;
    let fd_limit = set_fd_limit(&config)?;
    info!(fd_limit, fd_reserve = config.fd_reserve, "file descriptors");
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if config.worker_threads > 0 {
        runtime.worker_threads(config.worker_threads);
    }
    let runtime = runtime
        .enable_all()
        .thread_name("nexusd-worker")
        .build()
        .context("cannot start the runtime")?;
    (hooks.wedge.install(runtime.handle())).context("cannot arm the test wedge switch")?;
    let manager = Arc::new(manager);
    runtime.block_on(async move {
        let signals = forward_signals()?;
        let replaying = format!("replaying the write-ahead log in {}", config.data_dir.display());
        manager.notify(&[State::Status(&replaying)]);
        // Replay happens before the socket exists: a client that can connect
        // sees every acknowledged write.
        // The directory is locked (and known to be ours) before any file in
        // it is read; then the snapshot is validated while the engines load
        // their indexes and the model (start-up waits for the longer).
        let store_config = config.store_config();
        let lock = Store::lock_data_dir(&store_config).context("cannot open the memory store")?;
        let (engines, snapshot) = std::thread::scope(|scope| {
            let snapshot = scope.spawn(|| Store::preload_snapshot(&store_config, &lock));
            let engines = crate::recall::setup::open_engines(&config.recall, Some(&config.data_dir));
            let snapshot = snapshot.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic));
            (engines, snapshot)
        });
        let engines = engines.context("cannot set up the search engines")?;
        let snapshot = snapshot.context("cannot open the memory store")?;
        let store = Store::open_locked(&store_config, hooks.wal_fs, engines.followers, lock, Some(snapshot))
            .context("cannot open the memory store")?;
        let recall = Recall::build(store.clone(), engines.engines, engines.parts, config.pipeline.clone())
            .context("cannot set up the recall pipeline")?;
        recall.opened();
        if let Some(neardup) = &engines.neardup {
            neardup.fill(store.clone());
        }
        let socket = BoundSocket::bind(&config.socket_path, config.socket_mode)?;
        let metrics_listener = match &metrics_endpoint {
            Some(endpoint) => Some(crate::telemetry::MetricsListener::bind(endpoint, config.socket_mode).await?),
            None => None,
        };
        info!(version = env!("CARGO_PKG_VERSION"), data_dir = %config.data_dir.display(), "nexusd ready");
        manager.notify(&[State::Ready, State::Status(&ready_status(&config, &store))]);
        let shared = Shared::new(config, store.clone(), recall, engines.preprocessor);
        let shutdown = CancellationToken::new();
        let server = tokio::spawn(crate::transport::server::run(shared.clone(), socket, shutdown.clone()));
        // Its own task: a scrape never waits on a session, nor a session on a scrape.
        let metrics = (metrics_listener)
            .map(|listener| tokio::spawn(crate::telemetry::serve(shared.clone(), listener, shutdown.clone())));
        let watchdog_stop = CancellationToken::new();
        let watchdog = start_watchdog(&manager, &store, &watchdog_stop);
        let background = TaskTracker::new();
        react_to_signals(signals, &shared, &flags, &log, &background).await;
        let stopping = "stopping: draining connections, then a final checkpoint";
        manager.notify(&[State::Stopping, State::Status(stopping)]);
        shutdown.cancel();
        server.await.context("the server task failed")??;
        if let Some(metrics) = metrics {
            metrics.await.context("the metrics endpoint failed")?;
        }
        background.close();
        background.wait().await;
        let lsn = store.close().await.context("the final checkpoint failed")?;
        for engine in &engines.dense {
            engine.stop();
        }
        // The pings go on until here: a drain or checkpoint that hangs is
        // for systemd's TimeoutStopSec= to end, as it would be when serving.
        watchdog_stop.cancel();
        if let Some(watchdog) = watchdog {
            watchdog.await.context("the watchdog task failed")?;
        }
        info!(lsn, "nexusd stopped: everything acknowledged is in the snapshot");
        Ok(())
    })
}

/// The `STATUS=` line once serving: where, and what start-up replayed.
fn ready_status(config: &Config, store: &Store) -> String {
    let report = store.open_report();
    format!(
        "serving {}: {} WAL records replayed in {} ms",
        config.socket_path.display(),
        report.replayed_records,
        report.replay.as_millis()
    )
}

/// Starts the `WATCHDOG=1` task when the unit has `WatchdogSec=`. Each ping
/// follows a probe of the serving path: a yield through the runtime's
/// scheduler (the queue every session task waits in) and a read of the
/// store's state under its lock (what every request takes). A deadlocked
/// runtime or store stops the pings, and systemd restarts the daemon.
fn start_watchdog(manager: &Arc<ServiceManager>, store: &Store, stop: &CancellationToken) -> Option<JoinHandle<()>> {
    let interval = manager.watchdog_interval?;
    manager.notifier.as_ref()?;
    let (manager, store, stop) = (manager.clone(), store.clone(), stop.clone());
    Some(tokio::spawn(async move {
        let Some(notifier) = &manager.notifier else { return };
        let probe = || async {
            tokio::task::yield_now().await;
            drop(store.counters());
        };
        crate::notify::feed_watchdog(notifier, interval, probe, stop).await;
    }))
}

/// What a signal asks for.
#[derive(Debug, Clone, Copy)]
enum Signal {
    Stop,
    Reload,
    Checkpoint,
}

/// signal-hook delivers signals to a thread of its own, which forwards them
/// into the runtime. A second SIGTERM/SIGINT exits at once (exit code 130):
/// the WAL already holds every acknowledged write.
fn forward_signals() -> anyhow::Result<mpsc::Receiver<Signal>> {
    let stopping = Arc::new(AtomicBool::new(false));
    for signal in [SIGTERM, SIGINT] {
        signal_hook::flag::register_conditional_shutdown(signal, 130, stopping.clone())
            .context("cannot install the signal handlers")?;
        signal_hook::flag::register(signal, stopping.clone()).context("cannot install the signal handlers")?;
    }
    let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT, SIGHUP, SIGUSR1])
        .context("cannot install the signal handlers")?;
    let (sender, receiver) = mpsc::channel(16);
    std::thread::Builder::new()
        .name("nexusd-signals".into())
        .spawn(move || {
            for signal in signals.forever() {
                let forwarded = match signal {
                    SIGHUP => Signal::Reload,
                    SIGUSR1 => Signal::Checkpoint,
                    _ => Signal::Stop,
                };
                if sender.blocking_send(forwarded).is_err() {
                    break;
                }
            }
        })
        .context("cannot start the signal thread")?;
    Ok(receiver)
}

/// Serves signals until one asks to stop.
async fn react_to_signals(
    mut signals: mpsc::Receiver<Signal>,
    shared: &Arc<Shared>,
    flags: &Settings,
    log: &LogHandle,
    background: &TaskTracker,
) {
    while let Some(signal) = signals.recv().await {
        match signal {
            Signal::Stop => {
                info!("shutdown requested");
                return;
            }
            Signal::Reload => reload(shared, flags, log),
            Signal::Checkpoint => {
                let store = shared.store.clone();
                background.spawn(async move {
                    match store.checkpoint().await {
                        Ok(lsn) => info!(lsn, "checkpoint on SIGUSR1 done"),
                        Err(error) => warn!(%error, "checkpoint on SIGUSR1 failed"),
                    }
                });
            }
        }
    }
}

/// SIGHUP: re-reads the config file and lays it under the environment
/// captured at start and the same flags; a bad file keeps the old configuration.
fn reload(shared: &Shared, flags: &Settings, log: &LogHandle) {
    let current = shared.config();
    let Some(path) = current.config_file.clone() else {
        info!("SIGHUP: no config file (--config or NEXUS_CONFIG) to reload");
        return;
    };
    let fresh = match Config::build(Some(&path), &current.env, flags) {
        Ok(fresh) => fresh,
        Err(error) => {
            warn!(%error, "SIGHUP: the config file is invalid; keeping the current configuration");
            return;
        }
    };
    let mut next = (*current).clone();
    let needs_restart = next.live_update(&fresh);
    if let Ok(filter) = EnvFilter::try_new(&next.log) {
        let _ = log.reload(filter);
    }
    shared.store.set_checkpoint_wal_bytes(next.checkpoint_wal_bytes);
    (shared.recall).set_config(next.pipeline.router.clone(), next.pipeline.tuning.clone());
    shared.set_config(next);
    if needs_restart.is_empty() {
        info!(path = %path.display(), "SIGHUP: configuration reloaded");
    } else {
        warn!(path = %path.display(), ?needs_restart, "SIGHUP: configuration reloaded; these changes take effect at restart");
    }
}

/// Sets RLIMIT_NOFILE's soft limit to `fd_limit` (default: the hard limit;
/// the usual soft 1024 would cap the daemon at a few hundred clients) and
/// checks that `fd_reserve` leaves room for clients under it.
fn set_fd_limit(config: &Config) -> anyhow::Result<u64> {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).context("getrlimit(RLIMIT_NOFILE)")?;
    let limit = config.fd_limit.unwrap_or(hard);
    if limit > hard {
        bail!("invalid setting fd_limit: {limit} exceeds the hard RLIMIT_NOFILE of {hard}");
    }
    if limit != soft {
        setrlimit(Resource::RLIMIT_NOFILE, limit, hard).context("setrlimit(RLIMIT_NOFILE)")?;
    }
    if config.fd_reserve > limit / 2 {
        let reserve = config.fd_reserve;
        bail!("invalid setting fd_reserve: {reserve} is more than half of the fd limit {limit}");
    }
    Ok(limit)
}

/// Everything the daemon creates (data directory, WAL, snapshots, lock
/// files) is private to its uid: 0700 directories, 0600 files. The socket's
/// mode is set explicitly (`socket_mode`).
fn make_created_files_private() {
    use nix::sys::stat::{Mode, umask};
    umask(Mode::from_bits_truncate(0o077));
}

/// Logs to stderr through `filter` (the returned handle swaps it on
/// SIGHUP), as text (coloured on a terminal) or, with `LogFormat::Json`, one
/// JSON object per line for journald and log shippers: no colours, the
/// event's fields at the top level, and the span it ran in under `span`
/// (a request's `id`, `op` and `route`, at `debug`).
fn init_logging(filter: &str, format: crate::config::LogFormat) -> LogHandle {
    use crate::config::LogFormat;
    use std::io::IsTerminal;
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let (filter, handle) = reload::Layer::new(filter);
    let human = (format == LogFormat::Human).then(|| {
        (tracing_subscriber::fmt::layer())
            .with_writer(std::io::stderr)
            .with_ansi(std::io::stderr().is_terminal())
            .with_target(false)
    });
    let json = (format == LogFormat::Json).then(|| {
        (tracing_subscriber::fmt::layer().json())
            .with_writer(std::io::stderr)
            .with_ansi(false)
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
    });
    tracing_subscriber::registry()
        .with(filter)
        .with(human)
        .with(json)
        .init();
    handle
}

/// What the command line asks for.
#[derive(Debug)]
struct Invocation {
    /// `--config FILE` (else `$NEXUS_CONFIG`, else none).
    config_file: Option<PathBuf>,
    /// The flags' layer of settings.
    flags: Settings,
    /// `--check-config`: print the effective configuration and exit.
    check_config: bool,
}

/// Parses flags; `Ok(None)` when --help or --version was answered. A key's
/// flag takes the very text its `NEXUS_*` variable takes ([`Key::set`]).
fn parse(args: impl IntoIterator<Item = OsString>) -> anyhow::Result<Option<Invocation>> {
    use lexopt::prelude::*;
    let mut invocation = Invocation {
        config_file: None,
        flags: Settings::default(),
        check_config: false,
    };
    let mut parser = lexopt::Parser::from_args(args);
    while let Some(arg) = parser.next()? {
        match arg {
            Long("config") => invocation.config_file = Some(PathBuf::from(parser.value()?)),
            Long("check-config") => invocation.check_config = true,
            Long("salvage-wal") => invocation.flags.salvage_wal = Some(true),
            Short('h') | Long("help") => {
                print!("{USAGE}");
                return Ok(None);
            }
            Short('V') | Long("version") => {
                println!("nexusd {}", env!("CARGO_PKG_VERSION"));
                return Ok(None);
            }
            Long(name) => {
                let flag = format!("--{name}");
                let Some(key) = Key::for_flag(&flag) else {
                    bail!("unknown option {flag} (nexusd --help lists them)");
                };
                set_flag(&mut invocation.flags, key, flag, &parser.value()?)?;
            }
            other => bail!("{} (nexusd --help lists the options)", other.unexpected()),
        }
    }
    Ok(Some(invocation))
}

/// Sets `key` from its flag's value; `--allow-uid` adds to the uids before it.
fn set_flag(flags: &mut Settings, key: &Key, flag: String, value: &std::ffi::OsStr) -> Result<(), ConfigError> {
    let earlier = if key.name == "allow_uids" {
        flags.allow_uids.take().unwrap_or_default()
    } else {
        Vec::new()
    };
    key.set(flags, value).map_err(|reason| ConfigError::Flag {
        flag,
        value: value.to_string_lossy().into_owned(),
        reason,
    })?;
    if let Some(uids) = &mut flags.allow_uids {
        uids.splice(0..0, earlier);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{KEYS, Origin};

    /// Parses `args` and builds the configuration over no file and no environment.
    fn build(args: &[&str]) -> Result<Config, ConfigError> {
        let invocation = parse(args.iter().map(OsString::from)).unwrap().unwrap();
        Config::build(
            invocation.config_file.as_deref(),
            &Settings::default(),
            &invocation.flags,
        )
    }

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
            "--dimension",
            "384",
        ];
        let config = build(&args).unwrap();
        assert_eq!(config.socket_path, PathBuf::from("/tmp/x.sock"));
        assert_eq!(config.socket_mode, 0o660);
        assert_eq!(config.allowed_uids, vec![7]);
        assert_eq!(config.spin, std::time::Duration::from_micros(20));
        assert_eq!(config.limits.dimension, 384);
    }

    #[test]
    fn allow_uid_is_repeatable_and_takes_lists() {
        let config = build(&["--allow-uid", "7", "--allow-uid", "8,9", "--allow-uids", "10"]).unwrap();
        assert_eq!(config.allowed_uids, vec![7, 8, 9, 10]);
    }

    #[test]
    fn bad_flags_are_reported() {
        let error = build(&["--max-clients", "0"]).unwrap_err().to_string();
        assert_eq!(
            error,
            "invalid setting max_clients: 0 is outside 1..=65536 connections (set by --max-clients)"
        );
        assert!(build(&["--socket-mode", "9x"]).is_err());
        assert!(build(&["--fsync", "sometimes"]).is_err());
        let error = parse(["--max-clients", "abc"].map(OsString::from))
            .unwrap_err()
            .to_string();
        assert_eq!(error, "--max-clients abc: max_clients expects a whole number");
        let error = parse(["--frobnicate"].map(OsString::from)).unwrap_err().to_string();
        assert_eq!(error, "unknown option --frobnicate (nexusd --help lists them)");
    }

    #[test]
    fn check_config_and_the_config_file_are_parsed() {
        let args = ["--check-config", "--config", "/etc/nexus/nexusd.toml", "--salvage-wal"];
        let invocation = parse(args.map(OsString::from)).unwrap().unwrap();
        assert!(invocation.check_config);
        assert_eq!(invocation.config_file, Some(PathBuf::from("/etc/nexus/nexusd.toml")));
        assert_eq!(invocation.flags.salvage_wal, Some(true));
    }

    /// Every key's flag is accepted and documented in --help.
    #[test]
    fn every_key_has_its_flag_in_the_usage() {
        for key in KEYS {
            let flag = key.flag();
            assert!(USAGE.contains(&format!("  {flag} ")), "{flag} is missing from USAGE");
            assert_eq!(Key::for_flag(&flag).map(|k| k.name), Some(key.name));
        }
        assert!(USAGE.contains("--check-config"));
    }

    /// The flag wins over the environment, which wins over the defaults;
    /// each origin is the one that won.
    #[test]
    fn a_flag_wins_over_the_environment() {
        let env = Environment::from_vars([("NEXUS_SPIN_US", "7"), ("NEXUS_MAX_BAD_FRAMES", "3")]).unwrap();
        let invocation = parse(["--spin-us", "20"].map(OsString::from)).unwrap().unwrap();
        let (config, origins) = Config::build_explained(None, &env.settings, &invocation.flags).unwrap();
        assert_eq!(config.spin, std::time::Duration::from_micros(20));
        assert_eq!(config.max_bad_frames, 3);
        assert_eq!(origins.of("spin_us"), Origin::Flag("--spin-us".into()));
        assert_eq!(origins.of("max_bad_frames"), Origin::Env("NEXUS_MAX_BAD_FRAMES".into()));
        assert_eq!(origins.of("max_clients"), Origin::Default);
    }
}
