//! The `qscale` binary: parse the command line and hand over to the library.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = qscale::cli::Cli::parse();
    match qscale::cli::run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("qscale: {e:#}");
            ExitCode::from(1)
        }
    }
}
