//! `nexus`: the command-line client (the code is in the library, so the
//! end-to-end tests run the very same entry point).

fn main() -> std::process::ExitCode {
    nexus_cli::main()
}
