//! The validated, immutable run-time configuration.
//!
//! `cli` turns the command line into a [`Config`]; everything downstream
//! (master, worker, balancer, pool) reads only this type and never argv.
//! Nothing here does I/O except host-name resolution at start-up in `cli`.

pub mod cli;

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

/// Process model (SPEC §2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// A master that forks one worker per slot.
    Multi,
    /// One worker, run in-process.
    Single,
}

/// Log filter, most severe first so `level <= configured` means "print".
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    Err = 0,
    Warn = 1,
    Info = 2,
    Debug = 3,
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

/// The proxy's timers (SPEC §5). Configurable so tests can run them quickly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// A client must deliver a complete request head within this (408).
    pub head: Duration,
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
    pub health: HealthConfig,
    pub timeouts: Timeouts,
}
