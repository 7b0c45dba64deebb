//! `nexus-it`: the `nexus` command line under test, the very same entry point
//! (`nexus_cli::main`). It exists for the reason `nexusd-it` does: cargo gives
//! an integration test the path of its own package's binaries only.

fn main() -> std::process::ExitCode {
    nexus_cli::main()
}
