//! `nexusd-it`: the daemon under test, byte for byte the same program as
//! `nexusd` (same allocator, same `nexus_daemon::cli::main`).
//!
//! It exists only because cargo hands an integration test the path of a
//! binary (`CARGO_BIN_EXE_*`) when that binary belongs to the test's own
//! package: this wrapper makes `cargo nextest run -p nexus-tests` build the
//! daemon it drives, with no separate `cargo build -p nexus-daemon` step. It
//! deliberately adds nothing; any behaviour belongs in `nexus_daemon::cli`.

use std::process::ExitCode;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    nexus_daemon::cli::main()
}
