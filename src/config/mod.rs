//! The validated, immutable run-time configuration.
//!
//! `cli` turns the command line (and, through `file`, the `-c` JSON file)
//! into a [`Config`]; everything downstream (master, worker, balancer, pool)
//! reads only this type and never argv. Nothing here does I/O except reading
//! the config file and resolving backend host names, both in `parse_from`.

pub mod check;
pub mod cli;
pub mod file;
pub mod value;

use std::fmt;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::upstream::Backend;

/// Load-balancing strategy (SPEC §1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Strategy {
    RoundRobin,
    Weighted,
    Random,
    LeastConn,
    Sticky,
}

impl Strategy {
    pub const ALL: [Strategy; 5] = [
        Strategy::RoundRobin,
        Strategy::Weighted,
        Strategy::Random,
        Strategy::LeastConn,
        Strategy::Sticky,
    ];

    /// The name used on the command line and in the config file.
    pub fn name(self) -> &'static str {
        match self {
            Strategy::RoundRobin => "round_robin",
            Strategy::Weighted => "weighted",
            Strategy::Random => "random",
            Strategy::LeastConn => "least_conn",
            Strategy::Sticky => "sticky",
        }
    }

    pub fn from_name(name: &str) -> Option<Strategy> {
        Strategy::ALL.into_iter().find(|s| s.name() == name)
    }
}

/// Process model (SPEC §2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Mode {
    /// A master that forks one worker per slot.
    Multi,
    /// One worker, run in-process.
    Single,
}

impl Mode {
    /// `mp` / `sp`, as on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Multi => "mp",
            Mode::Single => "sp",
        }
    }
}

/// Log filter, most severe first so `level <= configured` means "print".
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub enum LogLevel {
    Err = 0,
    Warn = 1,
    Info = 2,
    Debug = 3,
}

impl LogLevel {
    /// `err` / `warn` / `info` / `debug`, as on the command line.
    pub fn name(self) -> &'static str {
        match self {
            LogLevel::Err => "err",
            LogLevel::Warn => "warn",
            LogLevel::Info => "info",
            LogLevel::Debug => "debug",
        }
    }
}

/// Active and passive health-check settings (SPEC §8).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct HealthConfig {
    pub path: String,
    pub interval: Duration,
    pub timeout: Duration,
    /// Consecutive failures that mark a backend down.
    pub unhealthy_threshold: u32,
    /// Consecutive successes that bring it back.
    pub healthy_threshold: u32,
}

impl Default for HealthConfig {
    /// SPEC §1 and §8 defaults.
    fn default() -> Self {
        HealthConfig {
            path: "/".into(),
            interval: Duration::from_millis(5000),
            timeout: Duration::from_millis(2000),
            unhealthy_threshold: 3,
            healthy_threshold: 2,
        }
    }
}

/// The proxy's timers (SPEC §5). Configurable so tests can run them quickly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Timeouts {
    /// A client must deliver a complete request head within this (408).
    pub head: Duration,
    /// A request body that stalls this long before the response started
    /// is answered 408.
    pub body: Duration,
    /// An idle keep-alive client connection is closed after this; also the
    /// inactivity limit while a body is streaming.
    pub idle: Duration,
    /// Connecting to a backend.
    pub connect: Duration,
    /// From the request being sent to the response head arriving (504).
    pub response: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            head: Duration::from_secs(10),
            body: Duration::from_secs(60),
            idle: Duration::from_secs(60),
            connect: Duration::from_secs(2),
            response: Duration::from_secs(60),
        }
    }
}

/// Everything the program needs to run, validated.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Config {
    pub listen: SocketAddr,
    /// The endpoints: every configured backend, a name once per address
    /// (`dns::endpoints`); `backends[i].id == BackendId(i)`.
    pub backends: Vec<Backend>,
    /// The backends as configured, with their last answers: what the
    /// process that reloads re-resolves. Workers never resolve, so it is
    /// not handed to them.
    #[serde(skip)]
    pub targets: Vec<crate::dns::Target>,
    /// `--dns-interval-ms` / `"dns_interval_ms"`: how often names are
    /// re-resolved; zero turns it off (reloads still resolve).
    pub dns_interval: Duration,
    pub strategy: Strategy,
    pub mode: Mode,
    pub workers: usize,
    pub log_level: LogLevel,
    pub insecure: bool,
    pub trace: bool,
    pub tls_trace: bool,
    pub pid_file: Option<PathBuf>,
    pub metrics_addr: Option<SocketAddr>,
    pub config_file: Option<PathBuf>,
    /// Extra trusted CAs for TLS backends (PEM), beside webpki-roots.
    pub ca_file: Option<PathBuf>,
    pub health: HealthConfig,
    pub timeouts: Timeouts,
    /// `--access-log` / `"access_log"`: one line per request; off when
    /// `None`.
    pub access_log: Option<AccessLog>,
    /// `--access-log-format` / `"access_log_format"`.
    pub access_log_format: AccessLogFormat,
}

/// How an access log line is written (README "Access log").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub enum AccessLogFormat {
    /// nginx `combined` followed by `key=value` fields of the balancer.
    #[default]
    Combined,
    /// One JSON object per line.
    Json,
}

impl AccessLogFormat {
    pub fn name(self) -> &'static str {
        match self {
            AccessLogFormat::Combined => "combined",
            AccessLogFormat::Json => "json",
        }
    }
}

/// Where the access log goes (`"access_log"`: a path, or `-` for stdout).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum AccessLog {
    Stdout,
    File(PathBuf),
}

impl AccessLog {
    /// `-` or the path, as the file spells it.
    pub fn name(&self) -> String {
        match self {
            AccessLog::Stdout => "-".into(),
            AccessLog::File(p) => p.display().to_string(),
        }
    }
}

/// A setting that differs between two configs but is only taken up by a
/// start (or, for a higher worker count, a binary upgrade): a reload must
/// report it rather than pretend to apply it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestartChange {
    /// The config file key.
    pub key: &'static str,
    pub running: String,
    pub wanted: String,
}

impl fmt::Display for RestartChange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} -> {}", self.key, self.running, self.wanted)
    }
}

impl Config {
    /// The settings of `wanted` that a reload cannot apply to a process
    /// running `self`: the listening sockets (`listen`, `port`,
    /// `metrics_addr`) are bound once by the master and handed over as they
    /// are on SIGUSR2; `workers` and `mode` shape the process tree.
    /// Empty when a reload can apply everything.
    pub fn restart_only_changes(&self, wanted: &Config) -> Vec<RestartChange> {
        let workers = |c: &Config| match c.mode {
            Mode::Multi => c.workers.to_string(),
            // sp runs one worker whatever -w says.
            Mode::Single => "1".to_string(),
        };
        let metrics = |c: &Config| c.metrics_addr.map_or("off".into(), |a| a.to_string());
        let pairs = [
            (
                "listen",
                self.listen.ip().to_string(),
                wanted.listen.ip().to_string(),
            ),
            (
                "port",
                self.listen.port().to_string(),
                wanted.listen.port().to_string(),
            ),
            ("workers", workers(self), workers(wanted)),
            ("mode", self.mode.name().into(), wanted.mode.name().into()),
            ("metrics_addr", metrics(self), metrics(wanted)),
        ];
        pairs
            .into_iter()
            .filter(|(_, running, wanted)| running != wanted)
            .map(|(key, running, wanted)| RestartChange {
                key,
                running,
                wanted,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(args: &[&str]) -> Config {
        let argv = ["load_balancer", "-b", "127.0.0.1:1"].iter().chain(args);
        cli::parse_from(argv).expect("valid command line")
    }

    fn changed(from: &[&str], to: &[&str]) -> Vec<String> {
        config(from)
            .restart_only_changes(&config(to))
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn restart_only_keys_are_listed_when_they_differ() {
        let none: [&str; 0] = [];
        assert_eq!(changed(&["-w", "2"], &["-w", "2"]), none);
        // What a reload can apply is not listed.
        let reloadable = [
            "-s",
            "random",
            "-l",
            "debug",
            "-t",
            "--health-path",
            "/h",
            "--idle-timeout-ms",
            "5",
            "-k",
            "--tls-trace",
        ];
        assert_eq!(
            changed(&["-w", "2"], &[&["-w", "2"][..], &reloadable].concat()),
            none
        );
        let table: &[(&[&str], &[&str], &[&str])] = &[
            (&["-p", "8080"], &["-p", "9090"], &["port 8080 -> 9090"]),
            (&["-H", "0.0.0.0"], &["-H", "::"], &["listen 0.0.0.0 -> ::"]),
            (&["-w", "2"], &["-w", "4"], &["workers 2 -> 4"]),
            (
                &["-w", "2"],
                &["-w", "2", "--mode", "sp"],
                &["workers 2 -> 1", "mode mp -> sp"],
            ),
            // sp runs one worker whatever -w says.
            (
                &["--mode", "sp", "-w", "2"],
                &["--mode", "sp", "-w", "8"],
                &[],
            ),
            (
                &[],
                &["--metrics-addr", "127.0.0.1:9100"],
                &["metrics_addr off -> 127.0.0.1:9100"],
            ),
            (
                &["-w", "1", "-p", "1000", "-H", "127.0.0.1"],
                &["-w", "3", "-p", "2000", "-H", "::1"],
                &[
                    "listen 127.0.0.1 -> ::1",
                    "port 1000 -> 2000",
                    "workers 1 -> 3",
                ],
            ),
        ];
        for &(from, to, want) in table {
            assert_eq!(changed(from, to), want, "{from:?} -> {to:?}");
        }
        let c = config(&["-p", "11"]).restart_only_changes(&config(&["-p", "12"]));
        assert_eq!(
            c,
            [RestartChange {
                key: "port",
                running: "11".into(),
                wanted: "12".into()
            }]
        );
    }
}
