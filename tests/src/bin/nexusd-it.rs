//! `nexusd-it`: the daemon under test: the same program as `nexusd` (same
//! allocator, same `nexus_daemon::cli`), except that its WAL file system honours
//! `NEXUS_FAULT_INJECT` (ENOSPC, failed fdatasync) and `NEXUS_TEST_WEDGE_ON_SIGUSR2`
//! lets SIGUSR2 wedge its runtime (the watchdog test), so the fault tests can break
//! a real daemon. The shipped `nexusd` has no such hook.
//!
//! It exists only because cargo hands an integration test the path of a
//! binary (`CARGO_BIN_EXE_*`) when that binary belongs to the test's own
//! package: this wrapper makes `cargo nextest run -p nexus-tests` build the
//! daemon it drives, with no separate `cargo build -p nexus-daemon` step. It
//! adds nothing else; any behaviour belongs in `nexus_daemon::cli`.

use std::process::ExitCode;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    nexus_daemon::cli::main_with_test_hooks(nexus_daemon::cli::TestHooks::from_env())
}
