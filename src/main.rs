//! Entry point: parse the command line, then become the master (mp), the
//! single in-process worker (sp), or — when started by a master — one of
//! its workers. Everything of substance lives in the library.

use std::ffi::OsString;
use std::process::ExitCode;
use std::sync::Arc;

use load_balancer::access_log::AccessLog;
use load_balancer::config::cli::{self, CliError};
use load_balancer::config::{Config, Mode};
use load_balancer::master::{self, spawn};
use load_balancer::metrics::Metrics;
use load_balancer::reload::handoff::Handoff;
use load_balancer::reload::{Generation, Reloader};
use load_balancer::signals::Signals;
use load_balancer::worker::follow::Source;
use load_balancer::worker::{self, Worker};

fn main() -> ExitCode {
    master::title::name_process();
    let args: Vec<OsString> = std::env::args_os().collect();
    if let Some(code) = load_balancer::generate::from_args(&args) {
        return code;
    }
    let slot = std::env::var(spawn::SLOT_ENV)
        .ok()
        .and_then(|s| s.parse::<usize>().ok());
    // A master's worker runs the generation its master validated (argv and
    // the file may have changed since: a respawned worker must not re-read
    // them).
    let (config, followed) = match slot {
        Some(slot) => match master_generation(slot) {
            Ok((handoff, generation)) => (generation.config.clone(), Some((handoff, generation))),
            Err(line) => return fail(&line),
        },
        None => match cli::parse_from(&args) {
            Ok(config) => (config, None),
            Err(CliError::Display(text)) => {
                print!("{text}");
                return ExitCode::SUCCESS;
            }
            Err(CliError::Invalid(line)) => return fail(&line),
        },
    };
    load_balancer::log::set_level(config.log_level);
    load_balancer::log::set_role(load_balancer::log::Role::of(slot, config.mode));
    if slot.is_none() {
        load_balancer::limits::raise_open_files();
    }
    if slot.is_none() && config.insecure && config.backends.iter().any(|b| b.tls) {
        load_balancer::warn!(
            "-k: TLS certificates of backends are NOT verified; anyone on the path can impersonate them (for development only)"
        );
    }
    let result = match (slot, config.mode) {
        (Some(slot), _) => match followed {
            Some((handoff, generation)) => run_worker_process(config, slot, handoff, generation),
            None => Err(format!("worker {slot}: no config from the master")),
        },
        (None, Mode::Single) => {
            let reloader = Reloader::new(args.into_iter().skip(1).collect(), config.clone());
            run_single(config, reloader)
        }
        (None, Mode::Multi) => {
            let argv0 = master::title::original_argv0(&args);
            master::title::become_titled(&args);
            run_master(config, &argv0, args.into_iter().skip(1).collect())
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(line) => fail(&line),
    }
}

fn run_master(config: Config, argv0: &OsString, args: Vec<OsString>) -> Result<(), String> {
    // Each worker opens the access log itself; a path they cannot open is
    // a start-up error here rather than a crash loop of workers.
    if let Some(target) = &config.access_log {
        AccessLog::open(target, config.access_log_format)?;
    }
    // Before any thread exists, so every thread inherits the blocked mask.
    let signals =
        Signals::install_master().map_err(|e| format!("cannot set up signal handling: {e}"))?;
    master::run(&config, argv0, args, signals)
}

/// The config hand-off a master gave worker `slot`, and what it holds.
fn master_generation(slot: usize) -> Result<(Handoff, Generation), String> {
    let handoff = Handoff::attach(worker::inherited_fd(spawn::HANDOFF_FD))
        .map_err(|e| format!("worker {slot}: no config from the master: {e}"))?;
    let generation = handoff.read().map_err(|e| format!("worker {slot}: {e}"))?;
    Ok((handoff, generation))
}

fn run_single(config: Config, reloader: Reloader) -> Result<(), String> {
    let signals = Signals::install().map_err(|e| format!("cannot set up signal handling: {e}"))?;
    let listener = worker::bind(config.listen)
        .map_err(|e| format!("cannot listen on {}: {e}", config.listen))?;
    let metrics = match config.metrics_addr {
        Some(addr) => Some(
            worker::bind(addr)
                .map_err(|e| format!("cannot listen on --metrics-addr {addr}: {e}"))?,
        ),
        None => None,
    };
    load_balancer::info!(
        "serving on {} with {} backend(s), strategy {}",
        config.listen,
        config.backends.len(),
        config.strategy.name()
    );
    let counters =
        Metrics::create(1).map_err(|e| format!("cannot create the metrics block: {e}"))?;
    let generation = reloader.current().clone();
    let source = Source::Own {
        reloader: Box::new(reloader),
        watcher: None,
        resolver: None,
    };
    serve(
        config,
        listener,
        metrics,
        counters,
        signals,
        (source, generation),
    )
}

/// A worker started by a master: its sockets are inherited descriptors.
fn run_worker_process(
    config: Config,
    slot: usize,
    handoff: Handoff,
    generation: Generation,
) -> Result<(), String> {
    let signals = Signals::install()
        .map_err(|e| format!("worker {slot}: cannot set up signal handling: {e}"))?;
    let listener = worker::inherited_listener(spawn::LISTEN_FD)
        .map_err(|e| format!("worker {slot}: no listening socket from the master: {e}"))?;
    let metrics = match std::env::var_os(spawn::METRICS_ENV) {
        Some(_) => Some(
            worker::inherited_listener(spawn::METRICS_FD)
                .map_err(|e| format!("worker {slot}: no metrics socket from the master: {e}"))?,
        ),
        None => None,
    };
    let shm = worker::inherited_fd(spawn::SHM_FD);
    let counters = Metrics::attach(slot, shm)
        .map_err(|e| format!("worker {slot}: no metrics block from the master: {e}"))?;
    if let Err(e) = worker::pin_to_cpu(slot) {
        load_balancer::warn!("worker {slot}: cannot pin to a CPU: {e}");
    }
    let source = Source::Master(handoff);
    serve(
        config,
        listener,
        metrics,
        counters,
        signals,
        (source, generation),
    )
}

fn serve(
    config: Config,
    listener: std::net::TcpListener,
    metrics: Option<std::net::TcpListener>,
    counters: Metrics,
    signals: Signals,
    (source, generation): (Source, Generation),
) -> Result<(), String> {
    let mut worker = Worker::new(Arc::new(config), listener, metrics, counters)
        .map_err(|e| format!("cannot start the worker: {e}"))?;
    worker.follow(source, &generation);
    if let Err(e) = worker.watch() {
        load_balancer::warn!("{e}; SIGHUP still reloads it");
    }
    let under_master = std::env::var_os(spawn::SLOT_ENV).is_some();
    worker
        .handle_signals(signals, under_master)
        .map_err(|e| format!("cannot set up signal handling: {e}"))?;
    // Only the service's main process has NOTIFY_SOCKET (the master keeps
    // it from its workers): in sp mode that is this worker.
    load_balancer::notify::ready();
    worker.run().map_err(|e| format!("event loop failed: {e}"))
}

fn fail(line: &str) -> ExitCode {
    eprintln!("load_balancer: {line}");
    ExitCode::from(1)
}
