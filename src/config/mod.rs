//! The validated, immutable run-time configuration.
//!
//! `cli` turns the command line (and, through `file`, the `-c` JSON file)
//! into a [`Config`]; everything downstream (master, worker, balancer, pool)
//! reads only this type and never argv. Nothing here does I/O except reading
//! the config file and resolving backend host names, both in `parse_from`.

pub mod cli;
pub mod file;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::upstream::Backend;

/// Load-balancing strategy (SPEC §1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
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
#[derive(Debug, Clone, PartialEq, Eq)]
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
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub backends: Vec<Backend>,
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
}
