//! The client does not trust the daemon blindly (issue 7, scenario 13): it
//! checks the daemon's uid, refuses a segment that is not sealed against
//! resizing, and keeps its deadline while answers to other requests keep
//! arriving. The misbehaving "daemons" here are fakes built from the
//! protocol crate in this process; the uid check runs against a real nexusd.

use std::io::Read;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use nexus_client::{ClientError, ConnectOptions, Connection};
use nexus_shm_protocol::PROTOCOL_VERSION;
use nexus_shm_protocol::handshake::{CLIENT_HELLO_BYTES, ServerHello, send_with_fds};
use nexus_shm_protocol::layout::{FrameKind, SegmentHeader};
use nexus_shm_protocol::segment::Segment;
use nexus_shm_protocol::wake::{Bell, futex_wake};
use nexus_shm_protocol::wire::{PingRequest, Request, RequestBody};
use nexus_tests::{TestDir, test_options};
use nix::sys::memfd::{MFdFlags, memfd_create};

use crate::start;

/// A call's timeout in these tests, and the bound on how long it may take.
const CALL_TIMEOUT: Duration = Duration::from_millis(300);
const WATCHDOG: Duration = Duration::from_secs(10);

#[test]
fn a_daemon_running_as_another_uid_than_expected_is_refused_before_anything_is_sent() {
    let daemon = start(&[]);
    let admitted_before = daemon.stats_counter("connections_total");
    let other_uid = nix::unistd::getuid().as_raw() + 1;
    let options = ConnectOptions {
        daemon_uid: Some(other_uid),
        ..test_options(nexus_client::Transport::SharedMemory)
    };
    match daemon.try_connection(options) {
        Err(ClientError::UntrustedDaemon { expected, .. }) => assert_eq!(expected, other_uid),
        Err(other) => panic!("expected UntrustedDaemon, got {other}"),
        Ok(_) => panic!("connected to a daemon of another uid"),
    }
    // Stats goes through the harness's long-lived observer: nothing new was
    // admitted, because ours never said hello.
    assert_eq!(daemon.stats_counter("connections_total"), admitted_before);
}

#[test]
fn a_segment_that_is_not_sealed_is_refused_before_it_is_mapped() {
    let dir = TestDir::new();
    let fake = FakeDaemon::start(dir.path(), Behaviour::UnsealedSegment);
    match Connection::connect(&fake.socket, test_options(nexus_client::Transport::SharedMemory)) {
        Err(ClientError::Handshake(message)) => assert!(message.contains("sealed"), "{message}"),
        Err(other) => panic!("expected a handshake error naming the seals, got {other}"),
        Ok(_) => panic!("mapped a segment its sender could still shrink"),
    }
    fake.stop();
}

#[test]
fn answers_to_other_requests_do_not_extend_a_calls_deadline() {
    // Before: each foreign answer sent the call back to waiting, with no
    // look at the deadline, so a daemon streaming them held it for ever.
    let dir = TestDir::new();
    let fake = FakeDaemon::start(dir.path(), Behaviour::StreamForeignAnswers);
    let options = ConnectOptions {
        timeout: CALL_TIMEOUT,
        ..test_options(nexus_client::Transport::SharedMemory)
    };
    let mut connection = Connection::connect(&fake.socket, options).expect("the fake daemon's handshake");
    let (done, outcome) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut request = Request {
            request_id: 0,
            deadline_ns: 0,
            body: RequestBody::Ping(PingRequest::default()),
        };
        let result = connection.call(&mut request, None).map(|_| ());
        let _ = done.send(result);
    });
    match outcome.recv_timeout(WATCHDOG) {
        Ok(Err(ClientError::Timeout(_))) => {}
        Ok(other) => panic!("expected a timeout, got {other:?}"),
        Err(_) => panic!("the call was still waiting after {WATCHDOG:?}"),
    }
    fake.stop();
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Behaviour {
    /// Passes a memfd with no seals.
    UnsealedSegment,
    /// A correct handshake, then answers with other request ids, forever.
    StreamForeignAnswers,
}

/// One-connection fake daemon on a Unix socket in a temp dir.
struct FakeDaemon {
    socket: PathBuf,
    stop: Arc<AtomicBool>,
    thread: JoinHandle<()>,
}

impl FakeDaemon {
    fn start(dir: &Path, behaviour: Behaviour) -> Self {
        let socket = dir.join("fake.sock");
        let listener = UnixListener::bind(&socket).expect("bind the fake daemon's socket");
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::spawn(move || {
            let (stream, _) = listener.accept().expect("accept");
            serve_fake(stream, behaviour, &stopped);
        });
        Self { socket, stop, thread }
    }

    fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().expect("the fake daemon's thread");
    }
}

fn serve_fake(mut stream: UnixStream, behaviour: Behaviour, stop: &AtomicBool) {
    let mut hello = [0u8; CLIENT_HELLO_BYTES];
    stream.read_exact(&mut hello).expect("the client's hello");
    let header = SegmentHeader::new(4096, 4096, 1024).expect("a valid layout");
    let (segment, memfd) = match behaviour {
        Behaviour::UnsealedSegment => (None, unsealed_memfd(header.segment_bytes)),
        Behaviour::StreamForeignAnswers => {
            let (segment, memfd) = Segment::create(header).expect("a segment");
            (Some(segment), memfd)
        }
    };
    let bell = Bell::new().expect("a bell");
    let welcome = ServerHello {
        protocol_version: PROTOCOL_VERSION,
        status: 0,
        segment_bytes: header.segment_bytes,
        request_ring_bytes: 4096,
        response_ring_bytes: 4096,
        max_frame_bytes: header.max_frame_bytes,
        connection_id: 1,
        message: String::new(),
    };
    send_with_fds(
        stream.as_fd(),
        &welcome.encode(),
        &[memfd.as_raw_fd(), bell.as_raw_fd()],
    )
    .expect("send the hello");
    let Some(segment) = segment else {
        while !stop.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(5));
        }
        return;
    };
    let (_requests, mut responses) = segment.daemon_ends().expect("fresh segment");
    while !stop.load(Ordering::Relaxed) {
        let _ = responses.try_write_bytes(FrameKind::Response, 999_999, &[0u8; 64]);
        futex_wake(responses.consumer_sleeping_word());
        // The client releases each foreign answer, which makes room again.
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn unsealed_memfd(len: u64) -> OwnedFd {
    let fd = memfd_create(c"unsealed", MFdFlags::MFD_CLOEXEC | MFdFlags::MFD_ALLOW_SEALING).expect("memfd");
    nix::unistd::ftruncate(&fd, len as i64).expect("size it");
    fd
}
