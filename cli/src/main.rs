//! The `kcache` CLI: parse, run one command on a Tokio runtime, exit with its code.
#![forbid(unsafe_code)]

use std::{io, process::ExitCode};

use clap::Parser;
use kcache_cli::{self as cli, Cli};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: starting the runtime: {e}");
            return ExitCode::from(cli::EXIT_UNAVAILABLE);
        }
    };
    let (stdin, mut out, mut err) = (io::stdin().lock(), io::stdout().lock(), io::stderr());
    ExitCode::from(runtime.block_on(cli::run(cli, stdin, &mut out, &mut err)))
}
