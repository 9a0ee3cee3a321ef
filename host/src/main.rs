//! The `gofer` binary: server and CLI in one. All logic lives in the library.

fn main() -> std::process::ExitCode {
    gofer::cli::main()
}
