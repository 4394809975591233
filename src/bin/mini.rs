//! The `mini` binary: parses the command line and hands it to the dispatcher.

use std::process::ExitCode;

fn main() -> ExitCode {
    mini::main_with_args(std::env::args_os())
}
