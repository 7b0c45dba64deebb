//! The end-to-end suite: real `nexusd` processes (`nexusd-it`) driven by the
//! real client and by misbehaving peer processes (`nexus-test-peer`).
//!
//! One binary, one module per area. Every test starts its own daemon in its
//! own temp dir, so tests run in parallel and a failing one leaves nothing
//! behind; the harness (`nexus_tests`, tests/src/lib.rs) bounds every wait.
//! Unit-level behaviour (ring arithmetic, codecs) is tested in the crates
//! themselves, not here.

mod admission;
mod bad_frames;
mod cli;
mod client_trust;
mod config_files;
mod crash;
mod disk_faults;
mod dying_clients;
mod eval_locomo;
mod fanout;
mod handshake;
mod hostile_peers;
mod index_crash;
mod lifecycle;
mod metrics;
mod preprocess;
mod readme;
mod recall_route;
mod signals;
mod socket_transport;
mod store;
mod store_boundary;
mod sustained_writes;
mod systemd_notify;
mod transfer;
mod transport;
mod wal_damage;

use nexus_tests::{Binaries, Daemon};

/// Where cargo put the binaries: `CARGO_BIN_EXE_*` exists only here, in
/// the integration test target, so the harness gets the paths from us.
const BINARIES: Binaries = Binaries {
    daemon: env!("CARGO_BIN_EXE_nexusd-it"),
    peer: env!("CARGO_BIN_EXE_nexus-test-peer"),
    cli: env!("CARGO_BIN_EXE_nexus-it"),
};

/// A daemon with `extra_args`, in a fresh temp dir.
fn start(extra_args: &[&str]) -> Daemon {
    Daemon::start(BINARIES, extra_args)
}

/// A daemon with `extra_args` and extra environment variables.
fn start_with_env(extra_args: &[&str], env: &[(&str, &str)]) -> Daemon {
    Daemon::start_with_env(BINARIES, extra_args, env)
}
