//! Configuration and the files the daemon owns. A setting out of range
//! stops the start (or a SIGHUP) with its key named, and where it was set;
//! the config file lies under the environment, which lies under the flags,
//! at start, on SIGHUP and in `--check-config`'s account of them; the data
//! directory and everything in it are private; a planted symlink, another
//! daemon's lock file and another process's socket are never followed,
//! truncated or removed.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use nexus_client::wire::MemoryInput;
use nexus_tests::store::memory;
use nexus_tests::{BOUNDED_WAIT, Daemon, Launch, TestDir, signal, wait_for_exit, wait_until};
use nix::sys::signal::Signal;

use crate::{BINARIES, start};

/// What one `nexusd --check-config` run said.
struct Checked {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Checked {
    /// The line of the effective configuration that sets `key`.
    #[track_caller]
    fn line(&self, key: &str) -> &str {
        let prefix = format!("{key} = ");
        let found = self.stdout.lines().find(|line| line.starts_with(&prefix));
        found.unwrap_or_else(|| panic!("no {key} in:\n{}", self.stdout))
    }

    /// The effective configuration without its comments: what a daemon runs with.
    fn values(&self) -> Vec<String> {
        let lines = self.stdout.lines().filter(|line| !line.starts_with('#'));
        lines
            .map(|line| line.split("  #").next().unwrap_or(line).trim().to_owned())
            .collect()
    }
}

/// Runs the daemon with `--check-config`, `args` and, of the `NEXUS_*`
/// variables, only `env`; waits (bounded) for it to exit.
fn check_config(dir: &TestDir, args: &[&str], env: &[(&str, &str)]) -> Checked {
    let (stdout_path, stderr_path) = (dir.path().join("check.stdout"), dir.path().join("check.stderr"));
    let mut command = Command::new(BINARIES.daemon);
    command.arg("--check-config").args(args).stdin(Stdio::null());
    let inherited = std::env::vars_os().map(|(name, _)| name);
    for name in inherited.filter(|name| name.to_string_lossy().starts_with("NEXUS_")) {
        command.env_remove(name);
    }
    command.envs(env.iter().copied());
    command.stdout(std::fs::File::create(&stdout_path).expect("stdout file"));
    command.stderr(std::fs::File::create(&stderr_path).expect("stderr file"));
    let mut child = command.spawn().expect("spawn nexusd --check-config");
    let status = wait_for_exit(&mut child, "nexusd --check-config to exit");
    Checked {
        code: status.code(),
        stdout: std::fs::read_to_string(&stdout_path).unwrap_or_default(),
        stderr: std::fs::read_to_string(&stderr_path).unwrap_or_default(),
    }
}

/// Writes `text` as a config file in `dir`; returns its path as an argument.
fn config_file(dir: &TestDir, name: &str, text: &str) -> String {
    let path = dir.path().join(name);
    std::fs::write(&path, text).expect("config file");
    path.to_str().expect("utf-8 path").to_owned()
}

/// One key set by the file, the environment and a flag: the flag wins; one
/// set by the file and the environment: the environment wins; each value's
/// comment names where it came from. Nothing is created or bound.
#[test]
fn check_config_lays_the_file_under_the_environment_under_the_flags() {
    let dir = TestDir::new();
    let text = "spin_us = 5\nmax_bad_frames = 3\nidle_timeout_ms = 1000\n";
    let file = config_file(&dir, "nexusd.toml", text);
    let data_dir = dir.path().join("data");
    let socket = dir.path().join("nexusd.sock");
    let args = [
        "--config",
        &file,
        "--spin-us",
        "7",
        "--data-dir",
        data_dir.to_str().expect("utf-8"),
        "--socket",
        socket.to_str().expect("utf-8"),
    ];
    let env = [("NEXUS_SPIN_US", "6"), ("NEXUS_MAX_BAD_FRAMES", "4")];
    let checked = check_config(&dir, &args, &env);
    assert_eq!(checked.code, Some(0), "{}", checked.stderr);
    assert!(
        checked.line("spin_us").starts_with("spin_us = 7 ") && checked.line("spin_us").ends_with("# flag --spin-us")
    );
    let bad_frames = checked.line("max_bad_frames");
    assert!(bad_frames.starts_with("max_bad_frames = 4 ") && bad_frames.ends_with("# env NEXUS_MAX_BAD_FRAMES"));
    let idle = checked.line("idle_timeout_ms");
    assert!(
        idle.starts_with("idle_timeout_ms = 1000 ") && idle.ends_with("# file:3"),
        "{idle}"
    );
    assert!(checked.line("max_clients").ends_with("# default"));
    assert!(
        !data_dir.exists() && !socket.exists(),
        "--check-config opened the store or bound the socket"
    );
}

/// The effective configuration is a config file: fed back with --config it
/// passes, and gives the same values.
#[test]
fn check_config_prints_a_config_file_that_gives_the_same_configuration() {
    let dir = TestDir::new();
    let file = config_file(&dir, "nexusd.toml", "fsync = \"interval:5\"\n[limits]\nmax_batch = 9\n");
    let env = [("NEXUS_ALLOW_UIDS", "1000,1001"), ("NEXUS_STEMMING", "false")];
    let first = check_config(&dir, &["--config", &file, "--fusion-weights", "date=0.5"], &env);
    assert_eq!(first.code, Some(0), "{}", first.stderr);
    let printed = config_file(&dir, "printed.toml", &first.stdout);
    let again = check_config(&dir, &["--config", &printed], &[]);
    assert_eq!(again.code, Some(0), "{}\n{}", again.stderr, first.stdout);
    assert_eq!(again.values(), first.values());
    assert!(again.line("allow_uids").starts_with("allow_uids = [1000, 1001] "));
    assert!(first.line("max_batch").starts_with("max_batch = 9 "));
    assert!(
        again.line("max_batch").contains("# file:"),
        "every value now comes from the printed file"
    );
}

/// `$NEXUS_CONFIG` names the file when --config is absent.
#[test]
fn nexus_config_names_the_config_file() {
    let dir = TestDir::new();
    let file = config_file(&dir, "nexusd.toml", "\nmax_clients = 8\n");
    let checked = check_config(&dir, &[], &[("NEXUS_CONFIG", &file)]);
    assert_eq!(checked.code, Some(0), "{}", checked.stderr);
    assert!(checked.line("max_clients").ends_with("# file:2"), "{}", checked.stdout);
}

/// Flags, environment, and the one line expected on stderr.
type RefusalCase<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)], String);

/// Each refusal is one line on stderr naming the key and where it was set,
/// and exit code 2.
#[test]
fn check_config_names_the_key_and_where_it_was_set_when_it_refuses() {
    let dir = TestDir::new();
    let unknown = config_file(&dir, "unknown.toml", "spin_us = 5\n\nmax_client = 8\n");
    let bad_type = config_file(&dir, "type.toml", "spin_us = 5\nmax_bad_frames = \"many\"\n");
    let out_of_range = config_file(&dir, "range.toml", "\n\nspin_us = 10000000\n");
    let cases: [RefusalCase; 6] = [
        (
            &["--config", &unknown],
            &[],
            format!(
                "nexusd: config file {unknown}, line 3: unknown key \"max_client\" (did you mean \"max_clients\"?)"
            ),
        ),
        (
            &["--config", &bad_type],
            &[],
            format!(
                "nexusd: config file {bad_type}, line 2: max_bad_frames: invalid type: string \"many\", expected u32"
            ),
        ),
        (
            &["--config", &out_of_range],
            &[],
            format!("nexusd: invalid setting spin_us: 10000000 is outside 0..=1000 µs (set in {out_of_range}, line 3)"),
        ),
        (
            &[],
            &[("NEXUS_MAX_CLIENTS", "abc")],
            "nexusd: NEXUS_MAX_CLIENTS=abc: max_clients expects a whole number".to_owned(),
        ),
        (
            &["--config", &out_of_range],
            &[("NEXUS_SPIN_US", "20000")],
            "nexusd: invalid setting spin_us: 20000 is outside 0..=1000 µs (set by NEXUS_SPIN_US)".to_owned(),
        ),
        (
            &["--config", &out_of_range, "--spin-us", "30000"],
            &[("NEXUS_SPIN_US", "20000")],
            "nexusd: invalid setting spin_us: 30000 is outside 0..=1000 µs (set by --spin-us)".to_owned(),
        ),
    ];
    for (args, env, expected) in cases {
        let checked = check_config(&dir, args, env);
        assert_eq!(checked.code, Some(2), "{args:?} {env:?}: {}", checked.stderr);
        assert_eq!(checked.stderr, format!("{expected}\n"), "{args:?} {env:?}");
        assert_eq!(checked.stdout, "", "{args:?} {env:?}");
    }
}

/// The commented server example in systemd/examples passes as it ships.
#[test]
fn the_example_server_config_file_passes_check_config() {
    let example = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../systemd/examples/nexusd.toml");
    let example = example.to_str().expect("utf-8 path");
    let checked = check_config(&TestDir::new(), &["--config", example], &[]);
    assert_eq!(checked.code, Some(0), "{}", checked.stderr);
    assert!(
        checked
            .line("allow_uids")
            .ends_with(&format!("# file:{}", line_of(example, "allow_uids")))
    );
}

/// The environment applies to a real start, a variable that names no
/// setting is a warning (not a refusal), and SIGHUP lays the re-read file
/// under the environment the daemon started with.
#[test]
fn the_environment_outlives_a_sighup_and_an_unknown_variable_is_only_a_warning() {
    let dir = TestDir::new();
    let file = config_file(&dir, "nexusd.toml", "max_bad_frames = 16\n");
    let launch = Launch::args(&["--config", &file])
        .env("NEXUS_MAX_BAD_FRAMES", "0")
        .env("NEXUS_MAX_BAD_FRAME", "1");
    let daemon = Daemon::launch(BINARIES, dir, launch);
    assert!(
        daemon
            .stderr_text()
            .contains("ignoring NEXUS_MAX_BAD_FRAME: no such setting (did you mean NEXUS_MAX_BAD_FRAMES?)"),
        "{}",
        daemon.stderr_text()
    );
    // The environment's 0 wins over the file's 16: the first bad frame closes.
    crate::signals::send_bad_frame(&daemon);
    daemon.wait_for_counter("clients_disconnected_bad_frames", "the environment's limit", |n| n == 1);

    std::fs::write(&file, "max_bad_frames = 16\nspin_us = 5\n").expect("config");
    signal(daemon.pid(), Signal::SIGHUP);
    wait_until("the reload", BOUNDED_WAIT, || {
        daemon.stderr_text().contains("SIGHUP: configuration reloaded")
    });
    crate::signals::send_bad_frame(&daemon);
    daemon.wait_for_counter(
        "clients_disconnected_bad_frames",
        "still the environment's limit",
        |n| n == 2,
    );
}

/// The 1-based line of `file` where `key =` is set.
fn line_of(file: &str, key: &str) -> usize {
    let text = std::fs::read_to_string(file).expect("read the example");
    let prefix = format!("{key} =");
    let index = text.lines().position(|line| line.starts_with(&prefix));
    index.unwrap_or_else(|| panic!("no {key} in {file}")) + 1
}

/// Before: a 16-byte frame limit was accepted, and the first error answer
/// that did not fit recursed until the stack overflowed.
#[test]
fn nexusd_refuses_to_start_with_a_setting_out_of_range_and_names_it() {
    let mut daemon = start(&[]);
    daemon.kill();
    for (args, key) in [
        (&["--max-frame-bytes", "16"][..], "max_frame_bytes"),
        (&["--stalled-client-timeout-ms", "0"][..], "stalled_client_timeout_ms"),
        (&["--checkpoint-wal-bytes", "0"][..], "checkpoint_wal_bytes"),
    ] {
        daemon.set_args(args);
        let (status, stderr) = daemon.run_to_exit();
        assert_eq!(status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(&format!("invalid setting {key}")), "{args:?}: {stderr}");
    }
}

/// Before: SIGHUP applied any spin_us, so a typo made every idle session
/// spin a core.
#[test]
fn sighup_with_a_setting_out_of_range_keeps_the_configuration_in_force() {
    let dir = TestDir::new();
    let config = dir.path().join("nexusd.toml");
    std::fs::write(&config, "max_bad_frames = 16\n").expect("config");
    let config_arg = config.to_str().expect("utf-8 path").to_owned();
    let daemon = Daemon::start_in(BINARIES, dir, &["--config", &config_arg]);

    std::fs::write(&config, "max_bad_frames = 0\nspin_us = 10000000\n").expect("config");
    signal(daemon.pid(), Signal::SIGHUP);
    wait_until("the reload is refused naming spin_us", BOUNDED_WAIT, || {
        let log = daemon.stderr_text();
        log.contains("keeping the current configuration") && log.contains("invalid setting spin_us")
    });
    assert!(!daemon.stderr_text().contains("SIGHUP: configuration reloaded"));
    // max_bad_frames = 0 came in the same refused file: one bad frame is still forgiven.
    crate::signals::send_bad_frame(&daemon);
    daemon.client().ping().expect("still serving");
    assert_eq!(daemon.stats_counter("clients_disconnected_bad_frames"), 0);
}

/// Before: the WAL, the snapshots and LOCK were created 0644 (readable by
/// every user on the host).
#[test]
fn the_data_directory_and_everything_in_it_are_private() {
    let daemon = start(&[]);
    let client = daemon.client();
    let memories: Vec<MemoryInput> = (0..3).map(|i| memory("private", &format!("secret {i}"))).collect();
    client.remember(memories).expect("remember");
    client.checkpoint().expect("a snapshot file exists");
    let mut checked = 0;
    check_private_tree(&daemon.data_dir(), &mut checked);
    assert!(
        checked >= 4,
        "only {checked} entries checked (data dir, LOCK, wal/, a segment, a snapshot)"
    );
}

/// Before: a data directory anyone could write was used as it was.
#[test]
fn a_data_directory_others_can_write_is_refused() {
    let mut daemon = start(&[]);
    daemon.kill();
    let data_dir = daemon.data_dir();
    std::fs::set_permissions(&data_dir, std::fs::Permissions::from_mode(0o777)).expect("chmod 777");
    let (status, stderr) = daemon.run_to_exit();
    assert_ne!(status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains(&data_dir.display().to_string()) && stderr.contains("writable by its group or others"),
        "{stderr}"
    );
}

/// Before: LOCK was opened with O_CREAT|O_TRUNC through any symlink, so a
/// link planted there truncated its target, and a second daemon truncated
/// the running one's lock file before failing to lock it.
#[test]
fn lock_files_are_never_followed_through_a_symlink_nor_truncated() {
    let mut daemon = start(&[]);
    // A second daemon on the same data directory is refused, and the
    // running daemon's lock file keeps what it holds.
    let lock = daemon.data_dir().join("LOCK");
    std::fs::write(&lock, "held by the first daemon\n").expect("write LOCK");
    let (status, stderr) = run_daemon(&daemon, &daemon.dir().path().join("second.sock"));
    assert_ne!(status, Some(0), "{stderr}");
    assert!(stderr.contains("in use by another nexusd"), "{stderr}");
    assert_eq!(
        std::fs::read_to_string(&lock).expect("LOCK"),
        "held by the first daemon\n"
    );

    daemon.kill();
    let victim = daemon.dir().path().join("victim");
    for planted in [lock.clone(), socket_lock(&daemon)] {
        std::fs::write(&victim, "keep me").expect("victim");
        let _ = std::fs::remove_file(&planted);
        std::os::unix::fs::symlink(&victim, &planted).expect("plant a symlink");
        let (status, stderr) = daemon.run_to_exit();
        assert_ne!(status.code(), Some(0), "{}: {stderr}", planted.display());
        assert_eq!(std::fs::read_to_string(&victim).expect("victim"), "keep me");
        std::fs::remove_file(&planted).expect("remove the symlink");
    }
}

/// Before: the daemon removed whatever file was at its socket path when
/// it stopped, even a socket another process had bound there since.
#[test]
fn the_socket_is_removed_only_by_the_daemon_that_created_it() {
    let mut daemon = start(&[]);
    let path = daemon.socket_path();
    std::fs::remove_file(&path).expect("unlink the daemon's socket");
    let _theirs = UnixListener::bind(&path).expect("another process binds the path");
    let theirs = std::fs::symlink_metadata(&path).expect("their socket").ino();
    let status = daemon.sigterm_and_wait();
    assert_eq!(status.code(), Some(0));
    let left = std::fs::symlink_metadata(&path).expect("their socket is still there");
    assert_eq!(left.ino(), theirs, "the file at the path is still theirs");
}

/// Checks `path` and everything under it: directories 0700, files 0600.
fn check_private_tree(path: &Path, checked: &mut usize) {
    let meta = std::fs::symlink_metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mode = meta.mode() & 0o777;
    let expected = if meta.is_dir() { 0o700 } else { 0o600 };
    assert_eq!(mode, expected, "mode of {} is {mode:o}", path.display());
    *checked += 1;
    if meta.is_dir() {
        for entry in std::fs::read_dir(path).expect("read_dir") {
            check_private_tree(&entry.expect("entry").path(), checked);
        }
    }
}

/// The lock file beside the daemon's socket.
fn socket_lock(daemon: &Daemon) -> std::path::PathBuf {
    let mut name = daemon.socket_path().into_os_string();
    name.push(".lock");
    name.into()
}

/// Runs another daemon on `daemon`'s data directory with its own socket;
/// returns its exit code and stderr once it exits (bounded).
fn run_daemon(daemon: &Daemon, socket: &Path) -> (Option<i32>, String) {
    let output = daemon.dir().path().join("other.stderr");
    let stderr = std::fs::File::create(&output).expect("stderr file");
    let mut child = Command::new(BINARIES.daemon)
        .arg("--socket")
        .arg(socket)
        .arg("--data-dir")
        .arg(daemon.data_dir())
        .stderr(stderr)
        .spawn()
        .expect("spawn a second nexusd");
    let status = wait_for_exit(&mut child, "the second nexusd to exit");
    let text = std::fs::read_to_string(&output).unwrap_or_default();
    (status.code(), text)
}
