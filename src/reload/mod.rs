//! Config hot reload (SPEC §3, the SIGHUP row of §4): re-reading the
//! config, deciding what changed, and handing the result to the workers.
//!
//! The process that watches (the master, or the sp process) owns a
//! [`Reloader`]: it re-runs the start-up parse with the original arguments
//! (so flags given at start keep overriding the file), maps the new backend
//! list onto the append-only backend table (`table`), and publishes the
//! outcome as a numbered [`Generation`] (`handoff`). Workers apply a
//! generation between events (`worker::apply`).

pub mod diff;
pub mod dns;
pub mod handoff;
pub mod table;
pub mod watch;

use std::ffi::OsString;

use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::config::cli::{self, CliError};
use crate::metrics::Metrics;
use diff::Diff;
use table::Table;

/// What a worker runs: the effective config whose `backends` is the whole
/// append-only table (`backends[i].id == BackendId(i)`, ids never reused
/// for another address), and which of them are in rotation.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Generation {
    /// 1 at start, +1 per applied reload.
    pub number: u64,
    pub config: Config,
    /// `active[i]`: backend i is in the running config; a retired backend
    /// takes no new request but keeps its id for what is in flight.
    pub active: Vec<bool>,
}

impl Generation {
    /// The first generation: every backend of the start-up config active.
    pub fn first(config: Config) -> Generation {
        let active = vec![true; config.backends.len()];
        Generation {
            number: 1,
            config,
            active,
        }
    }

    /// The backends in rotation, in table order.
    pub fn active_backends(&self) -> impl Iterator<Item = &crate::upstream::Backend> {
        self.config
            .backends
            .iter()
            .filter(|b| self.active.get(b.id.0).copied().unwrap_or(false))
    }
}

/// Why a re-read applied nothing.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// A new generation with this diff.
    Applied(Diff),
    /// The effective config is the one running: not a reload.
    Unchanged,
    /// The file is gone: the running config stays.
    Missing,
    /// Invalid: the reason, one line.
    Invalid(String),
}

/// The watching process's side: the arguments to re-parse and the
/// generation running now.
pub struct Reloader {
    /// The program's arguments without argv[0], as given at start.
    args: Vec<OsString>,
    current: Generation,
    /// Names whose last lookup failed: warned once per streak (`dns`).
    failing: std::collections::HashSet<dns::Name>,
}

impl Reloader {
    pub fn new(args: Vec<OsString>, config: Config) -> Reloader {
        Reloader {
            args,
            current: Generation::first(config),
            failing: Default::default(),
        }
    }

    pub fn current(&self) -> &Generation {
        &self.current
    }

    /// Re-reads the config as start-up does and, if it is valid and
    /// differs, makes it the current generation. Logs the outcome once and
    /// counts it in `metrics`.
    pub fn reload(&mut self, why: &str, metrics: &Metrics) -> Outcome {
        let outcome = self.reread();
        match &outcome {
            Outcome::Applied(diff) => {
                metrics.config_reloaded(true);
                crate::info!(
                    "config reloaded ({why}), generation {}: {diff}",
                    self.current.number
                );
                for change in &diff.restart_only {
                    crate::warn!(
                        "config reload: {change} needs SIGUSR2 (binary upgrade); still {}",
                        change.running
                    );
                }
            }
            Outcome::Unchanged => {
                crate::debug!("config re-read ({why}): nothing changed")
            }
            Outcome::Missing => {
                let path = self.file_name();
                crate::warn!("config file {path} is gone ({why}): keeping the running config")
            }
            Outcome::Invalid(reason) => {
                metrics.config_reloaded(false);
                crate::error!("config reload failed ({why}): {reason}; keeping the running config");
            }
        }
        outcome
    }

    fn file_name(&self) -> String {
        self.current
            .config
            .config_file
            .as_ref()
            .map_or_else(String::new, |p| p.display().to_string())
    }

    fn reread(&mut self) -> Outcome {
        if let Some(path) = &self.current.config.config_file
            && matches!(std::fs::symlink_metadata(path), Err(e) if e.kind() == std::io::ErrorKind::NotFound)
        {
            return Outcome::Missing;
        }
        let argv =
            std::iter::once(OsString::from("load_balancer")).chain(self.args.iter().cloned());
        let wanted = match cli::parse_from(argv) {
            Ok(config) => config,
            Err(CliError::Invalid(line)) => return Outcome::Invalid(line),
            Err(CliError::Display(_)) => {
                return Outcome::Invalid("the arguments ask for a report, not a run".into());
            }
        };
        let next = Table::merge(&self.current, wanted);
        if next.config.backends.len() > crate::metrics::MAX_BACKENDS {
            return Outcome::Invalid(format!(
                "more than {} backend addresses since start; restart to reload this",
                crate::metrics::MAX_BACKENDS
            ));
        }
        let diff = Diff::between(&self.current, &next);
        if diff.is_empty() {
            return Outcome::Unchanged;
        }
        self.current = Generation {
            number: self.current.number + 1,
            ..next
        };
        Outcome::Applied(diff)
    }
}
