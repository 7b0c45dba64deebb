//! `nexusd`: a thin wrapper over `nexus_daemon::cli::main`.

use std::process::ExitCode;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    nexus_daemon::cli::main()
}
