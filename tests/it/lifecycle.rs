//! The daemon's life as an operator sees it: one daemon per socket (a second
//! one refuses to start, naming the lock), a stale socket replaced, the
//! socket file private (0600), SIGTERM a clean exit that removes the
//! socket, and clients that learn the daemon died (`DaemonGone`, not a
//! timeout) and reconnect once it is back.

use std::io::ErrorKind;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};

use nexus_client::{ClientError, Transport};
use nexus_tests::{Daemon, TestDir, check_daemon_gone, describe_exit};

use crate::{BINARIES, start};

#[test]
fn a_second_daemon_on_the_same_socket_refuses_to_start_and_the_first_keeps_serving() {
    let daemon = start(&[]);
    let client = daemon.client();
    let inode_before = std::fs::metadata(daemon.socket_path()).expect("socket").ino();
    let (status, stderr) = daemon.run_second_daemon();
    assert!(
        !status.success(),
        "the second daemon must fail, it ended with {}",
        describe_exit(status)
    );
    assert!(
        stderr.contains("nexusd.sock.lock"),
        "the error names the lock file:\n{stderr}"
    );
    let inode_after = std::fs::metadata(daemon.socket_path())
        .expect("the first daemon's socket")
        .ino();
    assert_eq!(inode_after, inode_before, "the first daemon's socket is untouched");
    client.ping().expect("the first daemon's client is still served");
    daemon.client().ping().expect("new clients reach the first daemon");
}

#[test]
fn a_stale_socket_file_is_replaced_at_start() {
    let dir = TestDir::new();
    // A socket whose listener is gone: what a crashed daemon leaves behind.
    drop(UnixListener::bind(dir.socket_path()).expect("bind"));
    let refused = UnixStream::connect(dir.socket_path()).expect_err("nothing listens on a stale socket");
    assert_eq!(refused.kind(), ErrorKind::ConnectionRefused);
    let daemon = Daemon::start_in(BINARIES, dir, &[]);
    daemon.client().ping().expect("the new daemon serves on the old path");
}

#[test]
fn the_socket_file_is_a_socket_with_mode_0600() {
    let daemon = start(&[]);
    let meta = std::fs::symlink_metadata(daemon.socket_path()).expect("socket");
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
}

#[test]
fn sigterm_makes_the_daemon_exit_0_and_remove_its_socket() {
    let mut daemon = start(&[]);
    let shm = daemon.client_over(Transport::SharedMemory);
    let socket = daemon.client_over(Transport::Socket);
    shm.ping().expect("ping");
    socket.ping().expect("ping");
    // Both sessions are open and idle when the signal comes.
    let status = daemon.sigterm_and_wait();
    assert_eq!(status.code(), Some(0), "nexusd ended with {}", describe_exit(status));
    assert!(!daemon.socket_path().exists(), "the socket file is removed");
    check_daemon_gone(shm.ping());
    check_daemon_gone(socket.ping());
}

#[test]
fn clients_see_daemon_gone_when_the_daemon_is_killed_and_reconnect_after_a_restart() {
    let mut daemon = start(&[]);
    let clients = [
        daemon.client_over(Transport::SharedMemory),
        daemon.client_over(Transport::Socket),
    ];
    for client in &clients {
        client.ping().expect("ping before the kill");
    }
    daemon.kill();
    for client in &clients {
        check_daemon_gone(client.ping());
        assert!(
            matches!(client.reconnect(), Err(ClientError::Connect { .. })),
            "no daemon listens on the stale socket yet"
        );
    }
    daemon.restart();
    for client in &clients {
        client.reconnect().expect("reconnect after the restart");
        client.ping().expect("ping after the reconnect");
    }
}
