//! Entry point: parse the command line, then hand over to the worker (sp) or
//! the master (mp). Everything of substance lives in the library.

use std::process::ExitCode;
use std::sync::Arc;

use load_balancer::config::Mode;
use load_balancer::config::cli::{self, CliError};
use load_balancer::signals::Signals;
use load_balancer::worker::{self, Worker};

fn main() -> ExitCode {
    let config = match cli::parse_from(std::env::args_os()) {
        Ok(config) => config,
        Err(CliError::Display(text)) => {
            print!("{text}");
            return ExitCode::SUCCESS;
        }
        Err(CliError::Invalid(line)) => return fail(&line),
    };
    load_balancer::log::set_level(config.log_level);
    // Before any thread exists, so every thread inherits the blocked mask.
    let signals = match Signals::install() {
        Ok(signals) => signals,
        Err(e) => return fail(&format!("cannot set up signal handling: {e}")),
    };
    if config.mode == Mode::Multi {
        load_balancer::warn!(
            "mp mode is not available yet: serving with one in-process worker (sp)"
        );
    }
    let listener = match worker::bind(config.listen) {
        Ok(listener) => listener,
        Err(e) => return fail(&format!("cannot listen on {}: {e}", config.listen)),
    };
    let metrics_listener = match config.metrics_addr.map(worker::bind).transpose() {
        Ok(l) => l,
        Err(e) => {
            let addr = config
                .metrics_addr
                .map(|a| a.to_string())
                .unwrap_or_default();
            return fail(&format!("cannot listen on --metrics-addr {addr}: {e}"));
        }
    };
    let config = Arc::new(config);
    let mut worker = match Worker::new(Arc::clone(&config), listener, metrics_listener) {
        Ok(worker) => worker,
        Err(e) => return fail(&format!("cannot start the worker: {e}")),
    };
    if let Err(e) = worker.handle_signals(signals) {
        return fail(&format!("cannot set up signal handling: {e}"));
    }
    load_balancer::info!(
        "serving on {} with {} backend(s), strategy {:?}",
        config.listen,
        config.backends.len(),
        config.strategy
    );
    match worker.run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&format!("event loop failed: {e}")),
    }
}

fn fail(line: &str) -> ExitCode {
    eprintln!("load_balancer: {line}");
    ExitCode::from(1)
}
