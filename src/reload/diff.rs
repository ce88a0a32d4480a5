//! What a new generation changes, for the one log line of a reload and to
//! tell a reload from a re-read that changed nothing.

use std::fmt;

use super::Generation;
use crate::config::{Config, RestartChange, Strategy};
use crate::upstream::Backend;

#[derive(Debug, Default, PartialEq, Eq)]
pub struct Diff {
    /// Labels of backends that join the rotation.
    pub added: Vec<String>,
    /// Labels of backends that leave it.
    pub removed: Vec<String>,
    /// `(label, old weight, new weight)`.
    pub reweighted: Vec<(String, u32, u32)>,
    /// Labels of backends whose other settings (TLS, Host, name) changed.
    pub changed: Vec<String>,
    pub strategy: Option<(Strategy, Strategy)>,
    /// Other run-time settings that changed, by config key.
    pub settings: Vec<&'static str>,
    /// What only a restart or upgrade applies: logged, not applied.
    pub restart_only: Vec<RestartChange>,
}

impl Diff {
    /// From `old` to `new`, whose table extends `old`'s (`table::merge`).
    pub fn between(old: &Generation, new: &Generation) -> Diff {
        let mut diff = Diff::default();
        let was_active = |b: &Backend| old.active.get(b.id.0).copied().unwrap_or(false);
        for b in &new.config.backends {
            let before = old.config.backends.get(b.id.0);
            match (was_active(b), new.active[b.id.0]) {
                (false, true) => diff.added.push(b.label.clone()),
                (true, false) => diff.removed.push(b.label.clone()),
                (true, true) => {
                    let Some(before) = before else { continue };
                    if before.weight != b.weight {
                        diff.reweighted
                            .push((b.label.clone(), before.weight, b.weight));
                    }
                    let same = Backend {
                        weight: b.weight,
                        ..before.clone()
                    };
                    if same != *b {
                        diff.changed.push(b.label.clone());
                    }
                }
                (false, false) => {}
            }
        }
        let (o, n) = (&old.config, &new.config);
        if o.strategy != n.strategy {
            diff.strategy = Some((o.strategy, n.strategy));
        }
        diff.settings = settings(o, n);
        diff.restart_only = o.restart_only_changes(n);
        diff
    }

    pub fn is_empty(&self) -> bool {
        *self == Diff::default()
    }
}

/// Run-time settings (besides backends and strategy) that differ.
fn settings(o: &Config, n: &Config) -> Vec<&'static str> {
    let pairs = [
        ("health", o.health != n.health),
        ("timeouts", o.timeouts != n.timeouts),
        ("dns_interval_ms", o.dns_interval != n.dns_interval),
        ("loglevel", o.log_level != n.log_level),
        ("insecure", o.insecure != n.insecure),
        ("trace", o.trace != n.trace),
        ("tls_trace", o.tls_trace != n.tls_trace),
        ("ca_file", o.ca_file != n.ca_file),
        ("access_log", o.access_log != n.access_log),
        (
            "access_log_format",
            o.access_log_format != n.access_log_format,
        ),
        ("pid_file", o.pid_file != n.pid_file),
    ];
    pairs
        .into_iter()
        .filter(|&(_, differs)| differs)
        .map(|(key, _)| key)
        .collect()
}

impl fmt::Display for Diff {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts: Vec<String> = Vec::new();
        if !self.added.is_empty() {
            parts.push(format!("added {}", self.added.join(", ")));
        }
        if !self.removed.is_empty() {
            parts.push(format!("removed {}", self.removed.join(", ")));
        }
        if !self.reweighted.is_empty() {
            let each: Vec<String> = self
                .reweighted
                .iter()
                .map(|(l, a, b)| format!("{l} {a} -> {b}"))
                .collect();
            parts.push(format!("re-weighted {}", each.join(", ")));
        }
        if !self.changed.is_empty() {
            parts.push(format!("settings of {}", self.changed.join(", ")));
        }
        if let Some((a, b)) = self.strategy {
            parts.push(format!("strategy {} -> {}", a.name(), b.name()));
        }
        if !self.settings.is_empty() {
            parts.push(format!("changed {}", self.settings.join(", ")));
        }
        if !self.restart_only.is_empty() {
            let keys: Vec<&str> = self.restart_only.iter().map(|c| c.key).collect();
            parts.push(format!("not applied (needs SIGUSR2) {}", keys.join(", ")));
        }
        match parts.is_empty() {
            true => f.write_str("no change"),
            false => f.write_str(&parts.join("; ")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::cli;
    use crate::reload::table::Table;

    fn config(args: &[&str]) -> Config {
        let argv = std::iter::once(&"load_balancer").chain(args);
        cli::parse_from(argv).expect("valid command line")
    }

    fn diff(from: &[&str], to: &[&str]) -> String {
        let old = Generation::first(config(from));
        let new = Table::merge(&old, config(to));
        Diff::between(&old, &new).to_string()
    }

    #[test]
    fn each_kind_of_change_is_named() {
        let a = ["-b", "127.0.0.1:1", "-b", "127.0.0.1:2"];
        assert_eq!(diff(&a, &a), "no change");
        let table: &[(&[&str], &str)] = &[
            (
                &[
                    "-b",
                    "127.0.0.1:1",
                    "-b",
                    "127.0.0.1:2",
                    "-b",
                    "127.0.0.1:3",
                ],
                "added 127.0.0.1:3",
            ),
            (&["-b", "127.0.0.1:2"], "removed 127.0.0.1:1"),
            // Order in the file is not identity.
            (&["-b", "127.0.0.1:2", "-b", "127.0.0.1:1"], "no change"),
            (
                &["-b", "127.0.0.1:1,weight=3", "-b", "127.0.0.1:2"],
                "re-weighted 127.0.0.1:1 1 -> 3",
            ),
            (
                &["-b", "127.0.0.1:1", "-b", "127.0.0.1:2", "-s", "least_conn"],
                "strategy round_robin -> least_conn",
            ),
            (
                &[
                    "-b",
                    "127.0.0.1:1",
                    "-b",
                    "127.0.0.1:2",
                    "--health-path",
                    "/h",
                ],
                "changed health",
            ),
            (
                &["-b", "127.0.0.1:1", "-b", "127.0.0.1:2", "-p", "9"],
                "not applied (needs SIGUSR2) port",
            ),
            (
                &["-b", "127.0.0.1:3", "-s", "random", "-l", "debug"],
                "added 127.0.0.1:3; removed 127.0.0.1:1, 127.0.0.1:2; \
                 strategy round_robin -> random; changed loglevel",
            ),
        ];
        for &(to, want) in table {
            assert_eq!(diff(&a, to), want, "-> {to:?}");
        }
    }

    #[test]
    fn an_unchanged_config_is_an_empty_diff() {
        let old = Generation::first(config(&["-b", "127.0.0.1:1"]));
        let new = Table::merge(&old, config(&["-b", "127.0.0.1:1"]));
        assert!(Diff::between(&old, &new).is_empty());
    }
}
