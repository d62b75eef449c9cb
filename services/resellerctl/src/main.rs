//! `resellerctl`: the reseller portal's command-line client. Parses the command line,
//! runs the command, prints errors in plain words and exits with 0 on success, 1 when
//! the portal refused or failed, 2 on a usage error, 3 when the portal is unreachable,
//! and for uploads 4 when some devices were rejected and 5 when none was accepted
//! ([`errors`] has the table).

#![forbid(unsafe_code)]

mod cli;
mod client;
mod commands;
mod device_file;
mod errors;
mod output;
mod upload;
mod views;

use std::process::ExitCode;

use clap::Parser;

use crate::cli::Cli;
use crate::errors::{EXIT_FAILURE, EXIT_USAGE};

fn main() -> ExitCode {
    // A bug must not dump a backtrace on a user: one line, and how to report it.
    std::panic::set_hook(Box::new(|info| {
        eprintln!(
            "resellerctl: internal error: {info}\nplease report this with the command you ran"
        );
    }));
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => {
            let _ = err.print();
            return if err.use_stderr() {
                ExitCode::from(EXIT_USAGE)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start: {err}");
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    let result = runtime.block_on(commands::run(cli));
    // Whatever is still running (a reader of a file the portal refused) has no say in
    // the exit; do not wait on it for long.
    runtime.shutdown_timeout(std::time::Duration::from_millis(500));
    match result {
        Ok(outcome) => ExitCode::from(outcome.exit_code()),
        Err(err) if err.is_broken_pipe() => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::from(err.exit_code())
        }
    }
}
