//! Configuration and the files the daemon owns. A setting out of range
//! stops the start (or a SIGHUP) with its key named; the data directory and
//! everything in it are private; a planted symlink, another daemon's lock
//! file and another process's socket are never followed, truncated or
//! removed.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::UnixListener;
use std::path::Path;
use std::process::Command;

use nexus_client::wire::MemoryInput;
use nexus_tests::store::memory;
use nexus_tests::{BOUNDED_WAIT, Daemon, TestDir, signal, wait_for_exit, wait_until};
use nix::sys::signal::Signal;

use crate::{BINARIES, start};

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
