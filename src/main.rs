//! Entry point: parse the command line, then hand over to the worker (sp) or
//! the master (mp). Everything of substance lives in the library.

use std::process::ExitCode;

use load_balancer::config::cli::{self, CliError};

fn main() -> ExitCode {
    match cli::parse_from(std::env::args_os()) {
        Ok(_config) => ExitCode::SUCCESS,
        Err(CliError::Display(text)) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(CliError::Invalid(line)) => {
            eprintln!("load_balancer: {line}");
            ExitCode::from(1)
        }
    }
}
