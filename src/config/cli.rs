//! Command line (SPEC §1) and, through `file`, the `-c` file (SPEC §3) →
//! validated [`Config`](super::Config).
//!
//! Called once by `main`, and again with the same argv to re-read the config
//! file on reload. Never exits or prints: the caller does, from [`CliError`].

use std::ffi::OsString;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use clap::builder::PossibleValue;
use clap::error::{ContextKind, ContextValue, ErrorKind};
use clap::{ColorChoice, Parser, ValueEnum};

use super::{AccessLog, AccessLogFormat, Config, HealthConfig, LogLevel, Mode, Strategy, Timeouts};
use super::{file, value};
use crate::upstream::{self, BackendId};

/// Why the command line did not yield a [`Config`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CliError {
    /// `--help`, `--version`, `--check` of a valid configuration: print
    /// this to stdout and exit 0.
    Display(String),
    /// One line naming the culprit, for stderr; exit 1.
    Invalid(String),
}

const AFTER_HELP: &str = "\
Backend SPEC: host:port, [v6addr]:port, http://host[:port] or https://host[:port],
optionally followed by ,weight=N (N >= 1, default 1), e.g. -b 10.0.0.5:8080,weight=3.
Port 443 or https:// means TLS to that backend. A host name is resolved at start,
on reload and every --dns-interval-ms; each of its addresses is an endpoint.

Config FILE: JSON with \"backends\" and a key for every other option (README);
-b cannot be combined with it, other flags given explicitly override it. The
file is watched and re-read on change and on SIGHUP (reload: backends, weights,
strategy, health, timeouts; listen, port, workers and mode need SIGUSR2).";

// Flags that the config file may also set are `Option`s (or switches) with
// no clap default, so "given explicitly" stays visible; their defaults are
// applied after the merge and written into the help text by hand.
#[derive(Parser, Debug)]
#[command(
    name = "load_balancer",
    version,
    long_version = crate::build_info::LONG_VERSION,
    about = "HTTP/1.1 load balancer daemon",
    after_help = AFTER_HELP,
    color = ColorChoice::Never,
    // `-p -1` is a bad port, not an unknown flag `-1`.
    allow_negative_numbers = true,
)]
struct Args {
    /// Listen port [default: 8080]
    #[arg(short = 'p', long, value_name = "PORT", value_parser = flag(value::port),
          help_heading = "Listening")]
    port: Option<u16>,

    /// Listen address (IPv4 or IPv6) [default: 0.0.0.0]
    #[arg(short = 'H', long = "host", value_name = "ADDR", value_parser = flag(value::ip),
          help_heading = "Listening")]
    host: Option<IpAddr>,

    /// Serve /metrics on this separate listener only [default: on the listen port]
    #[arg(long, value_name = "ADDR:PORT", value_parser = flag(value::socket),
          help_heading = "Listening")]
    metrics_addr: Option<SocketAddr>,

    /// Backend, repeatable (SPEC below)
    #[arg(
        short = 'b',
        long = "backend",
        value_name = "SPEC",
        help_heading = "Backends"
    )]
    backends: Vec<String>,

    /// JSON config file, reloaded on change and SIGHUP; explicit flags override it (FILE below)
    #[arg(short = 'c', long = "config", value_name = "FILE", value_parser = flag(value::path),
          help_heading = "Backends")]
    config: Option<PathBuf>,

    /// round_robin | weighted | random | least_conn | sticky [default: round_robin]
    #[arg(
        short = 's',
        long,
        value_name = "NAME",
        hide_possible_values = true,
        help_heading = "Backends"
    )]
    strategy: Option<Strategy>,

    /// Re-resolve backend host names this often, 0 = only at start and reload [default: 30000]
    #[arg(long, value_name = "N", value_parser = flag(value::period), help_heading = "Backends")]
    dns_interval_ms: Option<Duration>,

    /// Validate flags and config (DNS included), print the resolved backends, exit 0 or 1; serves nothing
    #[arg(long, help_heading = "Backends")]
    check: bool,

    /// Worker processes in mp mode [default: CPU count]
    #[arg(short = 'w', long, value_name = "N", value_parser = flag(value::workers),
          help_heading = "Processes")]
    workers: Option<usize>,

    /// Multi-process (master + workers) or single-process [default: mp]
    #[arg(
        long,
        value_name = "mp|sp",
        hide_possible_values = true,
        help_heading = "Processes"
    )]
    mode: Option<Mode>,

    /// Write the master's PID here (kept true across upgrades)
    #[arg(long, value_name = "FILE", value_parser = flag(value::path), help_heading = "Processes")]
    pid_file: Option<PathBuf>,

    /// Active probe path [default: /]
    #[arg(long, value_name = "PATH", value_parser = parse_health_path, help_heading = "Health")]
    health_path: Option<String>,

    /// Active probe period [default: 5000]
    #[arg(long, value_name = "N", value_parser = flag(value::millis), help_heading = "Health")]
    health_interval_ms: Option<Duration>,

    /// Active probe timeout [default: 2000]
    #[arg(long, value_name = "N", value_parser = flag(value::millis), help_heading = "Health")]
    health_timeout_ms: Option<Duration>,

    /// A client must send a complete request head within this (408) [default: 10000]
    #[arg(long, value_name = "N", value_parser = flag(value::millis), help_heading = "Timeouts")]
    head_timeout_ms: Option<Duration>,

    /// A request body may stall this long before the response started (408) [default: 60000]
    #[arg(long, value_name = "N", value_parser = flag(value::millis), help_heading = "Timeouts")]
    body_timeout_ms: Option<Duration>,

    /// Close an idle keep-alive client connection after this [default: 60000]
    #[arg(long, value_name = "N", value_parser = flag(value::millis), help_heading = "Timeouts")]
    idle_timeout_ms: Option<Duration>,

    /// Give up connecting to a backend after this [default: 2000]
    #[arg(long, value_name = "N", value_parser = flag(value::millis), help_heading = "Timeouts")]
    connect_timeout_ms: Option<Duration>,

    /// A backend must send its response head within this (504) [default: 60000]
    #[arg(long, value_name = "N", value_parser = flag(value::millis), help_heading = "Timeouts")]
    response_timeout_ms: Option<Duration>,

    /// err | warn | info | debug [default: info]
    #[arg(
        short = 'l',
        long = "loglevel",
        value_name = "LEVEL",
        hide_possible_values = true,
        help_heading = "Logging and debugging"
    )]
    loglevel: Option<LogLevel>,

    /// One line per request to this file (or - for stdout); reopened on SIGUSR1 [default: off]
    #[arg(long, value_name = "PATH|-", value_parser = flag(value::path),
          help_heading = "Logging and debugging")]
    access_log: Option<PathBuf>,

    /// combined | json [default: combined]
    #[arg(
        long,
        value_name = "FORMAT",
        hide_possible_values = true,
        help_heading = "Logging and debugging"
    )]
    access_log_format: Option<AccessLogFormat>,

    /// Dump request/response heads as they cross the proxy
    #[arg(short = 't', long, help_heading = "Logging and debugging")]
    trace: bool,

    /// Do not verify backend TLS certificates (dev only)
    #[arg(short = 'k', long, help_heading = "TLS")]
    insecure: bool,

    /// Log TLS handshakes: version, cipher, ALPN, peer cert
    #[arg(long, help_heading = "TLS")]
    tls_trace: bool,

    /// Extra trusted CAs for TLS backends (PEM bundle), added to the built-in roots
    #[arg(long, value_name = "PEM", value_parser = flag(value::path), help_heading = "TLS")]
    ca_file: Option<PathBuf>,
}

/// The clap definition, for the man page and completions (`generate.rs`).
pub fn command() -> clap::Command {
    <Args as clap::CommandFactory>::command()
}

/// Parses `args` (argv[0] first), reads `-c FILE` if given, resolves backend
/// host names and validates everything. Calling it again with the same args
/// re-reads the file: that is how a reload gets a fresh [`Config`]. With
/// `--check`, a valid configuration comes back as the report to print
/// ([`CliError::Display`]).
pub fn parse_from<I, T>(args: I) -> Result<Config, CliError>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let args = Args::try_parse_from(args).map_err(from_clap)?;
    let check = args.check;
    let config = build(args).map_err(CliError::Invalid)?;
    match check {
        true => Err(CliError::Display(super::check::report(&config))),
        false => Ok(config),
    }
}

fn build(a: Args) -> Result<Config, String> {
    let file = match (&a.config, a.backends.is_empty()) {
        (Some(_), false) => {
            return Err(
                "-b/--backend cannot be combined with -c/--config (backends come from the file)"
                    .into(),
            );
        }
        (None, true) => {
            return Err("no backend: give -b HOST:PORT (repeatable) or -c FILE".into());
        }
        (Some(path), true) => Some(file::load(path)?),
        (None, false) => None,
    };
    // Where a value came from, for errors that only the merge can find.
    let file_name = a.config.as_ref().map(|p| p.display().to_string());
    let blame = |flag: &str, given: bool, key: &str| match (&file_name, given) {
        (Some(name), false) => format!("config {name}: {key}"),
        _ => flag.to_string(),
    };
    let (backends, f) = match file {
        Some(mut f) => (std::mem::take(&mut f.backends), f),
        None => {
            let backends = a
                .backends
                .iter()
                .enumerate()
                .map(|(i, spec)| upstream::parse_spec(spec, BackendId(i)))
                .collect::<Result<Vec<_>, _>>()?;
            (backends, file::FileConfig::default())
        }
    };
    let listen = SocketAddr::new(
        a.host
            .or(f.listen)
            .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
        a.port.or(f.port).unwrap_or(DEFAULT_PORT),
    );
    let defaults = HealthConfig::default();
    let fh = &f.health;
    let health = HealthConfig {
        path: a
            .health_path
            .or_else(|| fh.path.clone())
            .unwrap_or(defaults.path),
        interval: a
            .health_interval_ms
            .or(fh.interval)
            .unwrap_or(defaults.interval),
        timeout: a
            .health_timeout_ms
            .or(fh.timeout)
            .unwrap_or(defaults.timeout),
        unhealthy_threshold: fh
            .unhealthy_threshold
            .unwrap_or(defaults.unhealthy_threshold),
        healthy_threshold: fh.healthy_threshold.unwrap_or(defaults.healthy_threshold),
    };
    let metrics_addr = a.metrics_addr.or(f.metrics_addr);
    if let Some(m) = metrics_addr {
        let same_ip =
            m.ip() == listen.ip() || m.ip().is_unspecified() || listen.ip().is_unspecified();
        if m.port() == listen.port() && same_ip {
            let name = blame("--metrics-addr", a.metrics_addr.is_some(), "metrics_addr");
            return Err(format!(
                "{name} {m} overlaps the listen address {listen}: pick another port"
            ));
        }
    }
    let ca_file = a.ca_file.clone().or(f.ca_file.clone());
    if let Some(path) = &ca_file {
        crate::tls::load_ca_file(path).map_err(|e| {
            // The reason without the flag's name, under the name used.
            let why = e.split_once(": ").map_or(e.as_str(), |(_, why)| why);
            let name = blame("--ca-file", a.ca_file.is_some(), "ca_file");
            format!("{name} {}: {why}", path.display())
        })?;
    }
    let access_log = match &a.access_log {
        Some(p) if p.as_os_str() == "-" => Some(AccessLog::Stdout),
        Some(p) => Some(AccessLog::File(p.clone())),
        None => f.access_log.clone(),
    };
    if let Some(AccessLog::File(path)) = &access_log {
        let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
        if let Some(dir) = dir.filter(|d| !d.is_dir()) {
            let name = blame("--access-log", a.access_log.is_some(), "access_log");
            return Err(format!(
                "{name} {}: the directory {} does not exist",
                path.display(),
                dir.display()
            ));
        }
    }
    let targets = crate::dns::resolve(backends).map_err(|(i, e)| match &file_name {
        Some(name) => format!("config {name}: backends[{i}]: {e}"),
        None => e,
    })?;
    let backends = crate::dns::endpoints(&targets);
    if let Some(b) = backends.iter().find(|b| reaches(b.addr, listen)) {
        return Err(format!(
            "backend {} ({}) is this balancer's own listen address {listen}: requests would loop",
            b.label, b.addr
        ));
    }
    let d = Timeouts::default();
    let ft = &f.timeouts;
    Ok(Config {
        listen,
        backends,
        targets,
        dns_interval: a
            .dns_interval_ms
            .or(f.dns_interval)
            .unwrap_or(DEFAULT_DNS_INTERVAL),
        strategy: a.strategy.or(f.strategy).unwrap_or(Strategy::RoundRobin),
        mode: a.mode.or(f.mode).unwrap_or(Mode::Multi),
        workers: a.workers.or(f.workers).unwrap_or_else(cpu_count),
        log_level: a.loglevel.or(f.log_level).unwrap_or(LogLevel::Info),
        insecure: a.insecure || f.insecure,
        trace: a.trace || f.trace,
        tls_trace: a.tls_trace || f.tls_trace,
        pid_file: a.pid_file.or(f.pid_file).map(absolute),
        metrics_addr,
        config_file: a.config.map(absolute),
        ca_file: ca_file.map(absolute),
        health,
        timeouts: Timeouts {
            head: a.head_timeout_ms.or(ft.head).unwrap_or(d.head),
            body: a.body_timeout_ms.or(ft.body).unwrap_or(d.body),
            idle: a.idle_timeout_ms.or(ft.idle).unwrap_or(d.idle),
            connect: a.connect_timeout_ms.or(ft.connect).unwrap_or(d.connect),
            response: a.response_timeout_ms.or(ft.response).unwrap_or(d.response),
        },
        access_log_format: a
            .access_log_format
            .or(f.access_log_format)
            .unwrap_or_default(),
        access_log: access_log.map(|log| match log {
            AccessLog::File(p) => AccessLog::File(absolute(p)),
            AccessLog::Stdout => AccessLog::Stdout,
        }),
    })
}

const DEFAULT_PORT: u16 = 8080;
const DEFAULT_DNS_INTERVAL: Duration = Duration::from_secs(30);

/// Whether connecting to `backend` lands on a socket listening on `listen`.
/// Only what is certain without asking the interfaces: the same address, or
/// a wildcard listener reached through loopback (`[::]` is dual-stack here,
/// `0.0.0.0` takes IPv4 only). A backend on another of this host's
/// addresses is not caught.
pub fn reaches(backend: SocketAddr, listen: SocketAddr) -> bool {
    let ip = backend.ip();
    let wildcard_takes = listen.ip().is_unspecified() && (listen.is_ipv6() || ip.is_ipv4());
    backend.port() == listen.port()
        && (ip == listen.ip() || (wildcard_takes && (ip.is_loopback() || ip.is_unspecified())))
}

/// Errors keep the path as typed; the `Config` holds it absolute so a reload
/// or the pid file still finds it if the process changes directory.
fn absolute(p: PathBuf) -> PathBuf {
    std::path::absolute(&p).unwrap_or(p)
}

fn cpu_count() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

/// Help and version go to stdout; every other clap error becomes the first
/// line of its message (no "error:" prefix, no usage block), because SPEC §1
/// wants one line and exit 1 where clap would print a paragraph and exit 2.
fn from_clap(e: clap::Error) -> CliError {
    let text = e.render().to_string();
    match e.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => CliError::Display(text),
        _ => {
            // A value with a newline or escape in it must not break the line.
            let text = match e.get(ContextKind::InvalidValue) {
                Some(ContextValue::String(value)) => text.replace(value, &one_line(value)),
                _ => text,
            };
            let first = text
                .lines()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("invalid arguments");
            let mut line = first
                .strip_prefix("error: ")
                .unwrap_or(first)
                .trim_end()
                .to_string();
            // clap puts these hints on later lines, which the one-line
            // contract would drop; keep them on the line.
            let valid = match e.get(ContextKind::ValidValue) {
                Some(ContextValue::Strings(valid)) if !valid.is_empty() => Some(valid.join(", ")),
                _ => None,
            };
            let arg = match e.get(ContextKind::InvalidArg) {
                Some(ContextValue::String(arg)) => arg.as_str(),
                _ => "",
            };
            match (valid, e.kind()) {
                (Some(valid), _) => line.push_str(&format!(" (expected one of: {valid})")),
                // A value parser already said what it expects; an unknown
                // flag takes nothing (clap names its own flag there, so a
                // `-ms` in the name must not bring a hint along).
                (None, ErrorKind::ValueValidation | ErrorKind::UnknownArgument) => {}
                (None, _) => {
                    if let Some(what) = expected_for(arg) {
                        line.push_str(&format!(" (expected {what})"));
                    }
                }
            }
            if let Some(ContextValue::String(arg)) = e.get(ContextKind::SuggestedArg) {
                line.push_str(&format!(" (did you mean '{arg}'?)"));
            }
            CliError::Invalid(line)
        }
    }
}

/// Control characters (a newline in a value) escaped, so that the message
/// stays one line.
fn one_line(s: &str) -> String {
    s.chars()
        .map(|c| match c.is_control() {
            true => c.escape_debug().to_string(),
            false => c.to_string(),
        })
        .collect()
}

/// What a flag takes, for "a value is required for '--port <PORT>'".
/// `arg` is clap's rendering, `--port <PORT>`.
fn expected_for(arg: &str) -> Option<&'static str> {
    let long = arg.split(' ').next().unwrap_or(arg);
    Some(match long {
        "--port" => value::PORT,
        "--host" => value::IP,
        "--metrics-addr" => value::SOCKET,
        "--workers" => value::COUNT,
        "--backend" => "host:port, [v6addr]:port, http://host[:port] or https://host[:port]",
        "--config" | "--pid-file" | "--ca-file" => value::PATH,
        "--health-path" => "a path starting with '/'",
        _ if long.ends_with("-ms") => value::MILLIS,
        _ => return None,
    })
}

/// A value parser from one of `value`'s, whose error says what is expected:
/// clap shows it as "invalid value 'X' for '--flag <V>': expected ...".
fn flag<T: 'static>(
    parse: fn(&str) -> Result<T, &'static str>,
) -> impl Fn(&str) -> Result<T, String> + Clone + Send + Sync + 'static {
    move |s| parse(s).map_err(|what| format!("expected {what}"))
}

fn parse_health_path(s: &str) -> Result<String, String> {
    file::check_health_path(s)
        .map(|()| s.to_string())
        .map_err(str::to_string)
}

impl ValueEnum for Strategy {
    fn value_variants<'a>() -> &'a [Self] {
        &Strategy::ALL
    }
    fn to_possible_value(&self) -> Option<PossibleValue> {
        Some(PossibleValue::new(self.name()))
    }
}

impl ValueEnum for Mode {
    fn value_variants<'a>() -> &'a [Self] {
        &[Mode::Multi, Mode::Single]
    }
    fn to_possible_value(&self) -> Option<PossibleValue> {
        // No per-value help: it would make clap switch `--help` to its
        // verbose layout, unlike `-h`.
        Some(PossibleValue::new(self.name()))
    }
}

impl ValueEnum for AccessLogFormat {
    fn value_variants<'a>() -> &'a [Self] {
        &[AccessLogFormat::Combined, AccessLogFormat::Json]
    }
    fn to_possible_value(&self) -> Option<PossibleValue> {
        Some(PossibleValue::new(self.name()))
    }
}

impl ValueEnum for LogLevel {
    fn value_variants<'a>() -> &'a [Self] {
        &[
            LogLevel::Err,
            LogLevel::Warn,
            LogLevel::Info,
            LogLevel::Debug,
        ]
    }
    fn to_possible_value(&self) -> Option<PossibleValue> {
        Some(PossibleValue::new(self.name()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Config, CliError> {
        parse_from(std::iter::once("load_balancer").chain(args.iter().copied()))
    }

    fn invalid(args: &[&str]) -> String {
        match parse(args) {
            Err(CliError::Invalid(line)) => {
                assert!(!line.contains('\n'), "{args:?}: {line}");
                assert!(!line.starts_with("error"), "{args:?}: {line}");
                line
            }
            other => panic!("{args:?}: expected Invalid, got {other:?}"),
        }
    }

    #[test]
    fn access_log_flags() {
        let c = parse(&["-b", "127.0.0.1:9001"]).unwrap();
        assert_eq!(c.access_log, None);
        assert_eq!(c.access_log_format, AccessLogFormat::Combined);
        let c = parse(&["-b", "127.0.0.1:9001", "--access-log", "-"]).unwrap();
        assert_eq!(c.access_log, Some(AccessLog::Stdout));
        let c = parse(&[
            "-b",
            "127.0.0.1:9001",
            "--access-log",
            "/tmp/a.log",
            "--access-log-format",
            "json",
        ])
        .unwrap();
        assert_eq!(c.access_log, Some(AccessLog::File("/tmp/a.log".into())));
        assert_eq!(c.access_log_format, AccessLogFormat::Json);
        let e = invalid(&[
            "-b",
            "127.0.0.1:9001",
            "--access-log",
            "/nonexistent/dir/a.log",
        ]);
        assert!(
            e.starts_with("--access-log /nonexistent/dir/a.log: the directory"),
            "{e}"
        );
        let e = invalid(&["-b", "127.0.0.1:9001", "--access-log-format", "xml"]);
        assert!(e.contains("combined") && e.contains("json"), "{e}");
    }

    #[test]
    fn defaults() {
        let c = parse(&["-b", "127.0.0.1:9001"]).unwrap();
        assert_eq!(c.listen, "0.0.0.0:8080".parse().unwrap());
        assert_eq!(c.backends.len(), 1);
        assert_eq!(c.strategy, Strategy::RoundRobin);
        assert_eq!(c.mode, Mode::Multi);
        assert_eq!(c.workers, cpu_count());
        assert_eq!(c.log_level, LogLevel::Info);
        assert!(!c.insecure && !c.trace && !c.tls_trace);
        assert_eq!(
            (c.pid_file, c.metrics_addr, c.config_file),
            (None, None, None)
        );
        assert_eq!(c.health, HealthConfig::default());
        assert_eq!(c.timeouts, Timeouts::default());
    }

    #[test]
    fn every_flag() {
        let c = parse(&[
            "-p",
            "9000",
            "-H",
            "::1",
            "-b",
            "127.0.0.1:1",
            "--backend",
            "https://[::1],weight=4",
            "-w",
            "3",
            "-s",
            "least_conn",
            "--mode",
            "sp",
            "-l",
            "debug",
            "-k",
            "-t",
            "--tls-trace",
            "--pid-file",
            "/run/lb.pid",
            "--metrics-addr",
            "127.0.0.1:9100",
            "--health-path",
            "/healthz",
            "--health-interval-ms",
            "100",
            "--health-timeout-ms",
            "50",
            "--head-timeout-ms",
            "1",
            "--body-timeout-ms",
            "5",
            "--idle-timeout-ms",
            "2",
            "--connect-timeout-ms",
            "3",
            "--response-timeout-ms",
            "4",
        ])
        .unwrap();
        assert_eq!(c.listen, "[::1]:9000".parse().unwrap());
        let b: Vec<_> = c
            .backends
            .iter()
            .map(|b| (b.id, b.label.as_str(), b.weight, b.tls))
            .collect();
        assert_eq!(
            b,
            [
                (BackendId(0), "127.0.0.1:1", 1, false),
                (BackendId(1), "[::1]:443", 4, true)
            ]
        );
        assert_eq!(c.workers, 3);
        assert_eq!(c.strategy, Strategy::LeastConn);
        assert_eq!(c.mode, Mode::Single);
        assert_eq!(c.log_level, LogLevel::Debug);
        assert!(c.insecure && c.trace && c.tls_trace);
        assert_eq!(c.pid_file, Some(PathBuf::from("/run/lb.pid")));
        assert_eq!(c.metrics_addr, Some("127.0.0.1:9100".parse().unwrap()));
        assert_eq!(c.health.path, "/healthz");
        assert_eq!(c.health.interval, Duration::from_millis(100));
        assert_eq!(c.health.timeout, Duration::from_millis(50));
        let ms = Duration::from_millis;
        assert_eq!(
            c.timeouts,
            Timeouts {
                head: ms(1),
                body: ms(5),
                idle: ms(2),
                connect: ms(3),
                response: ms(4)
            }
        );
        let c = parse(&["-b", "127.0.0.1:1", "--host", "[::]", "--port=2"]).unwrap();
        assert_eq!(c.listen, "[::]:2".parse().unwrap());
        let c = parse(&["-b", "127.0.0.1:1", "--pid-file", "lb.pid"]).unwrap();
        assert_eq!(
            c.pid_file,
            Some(std::env::current_dir().unwrap().join("lb.pid"))
        );
    }

    #[test]
    fn help_and_version_are_displayed() {
        let Err(CliError::Display(help)) = parse(&["--help"]) else {
            panic!("--help")
        };
        for want in [
            "Listening:",
            "Backends:",
            "Processes:",
            "Health:",
            "Timeouts:",
            "Logging and debugging:",
            "TLS:",
            "[default: 8080]",
            "[default: 0.0.0.0]",
            "[default: round_robin]",
            "[default: CPU count]",
            "[default: mp]",
            "[default: info]",
            "[default: /]",
            "[default: 5000]",
            "[default: 2000]",
            "[default: 10000]",
            "[default: 60000]",
            "--health-interval-ms",
            "-V, --version",
            "weight=N",
        ] {
            assert!(help.contains(want), "help lacks {want:?}:\n{help}");
        }
        assert_eq!(parse(&["-h"]).err(), parse(&["--help"]).err());
        let Err(CliError::Display(v)) = parse(&["-V"]) else {
            panic!("-V")
        };
        assert_eq!(v, format!("load_balancer {}\n", env!("CARGO_PKG_VERSION")));
        let Err(CliError::Display(long)) = parse(&["--version"]) else {
            panic!("--version")
        };
        assert!(long.starts_with(&v) && long.contains("\ncommit:"), "{long}");
    }

    #[test]
    fn a_backend_that_is_our_own_listener_is_caught_where_certain() {
        let at = |s: &str| s.parse::<SocketAddr>().unwrap();
        let listen_any = at("0.0.0.0:8080");
        assert!(reaches(at("127.0.0.1:8080"), listen_any));
        assert!(reaches(at("127.0.0.9:8080"), listen_any));
        assert!(reaches(at("0.0.0.0:8080"), listen_any));
        assert!(!reaches(at("127.0.0.1:8081"), listen_any));
        // Another host, or another local address a specific listener does
        // not accept on.
        assert!(!reaches(at("192.0.2.7:8080"), listen_any));
        assert!(!reaches(at("127.0.0.2:8080"), at("127.0.0.1:8080")));
        assert!(reaches(at("[::1]:8080"), at("[::]:8080")));
        assert!(reaches(at("127.0.0.1:8080"), at("[::]:8080")));
        assert!(!reaches(at("[::1]:8080"), listen_any));
    }

    #[test]
    fn invalid_command_lines_give_one_line() {
        let table: &[(&[&str], &str)] = &[
            (&[], "no backend: give -b HOST:PORT (repeatable) or -c FILE"),
            (
                &["-b", "127.0.0.1:1", "-c", "x.json"],
                "-b/--backend cannot be combined with -c/--config",
            ),
            (&["-b", "127.0.0.1"], "bad backend '127.0.0.1': no port"),
            (
                &["-b", "127.0.0.1:1", "-b", "::1:80"],
                "bad backend '::1:80': an IPv6 address must be bracketed",
            ),
            (
                &["-b", "127.0.0.1:1,weight=0"],
                "bad backend '127.0.0.1:1,weight=0': weight must be at least 1",
            ),
            (&["-b", "127.0.0.1:1,weight=two"], "weight 'two'"),
            (&["-b", "127.0.0.1:1,down"], "unknown option 'down'"),
            (
                &["-b", "no-such-host.invalid:80"],
                "cannot resolve backend host 'no-such-host.invalid'",
            ),
            (
                &["-b", "127.0.0.1:1", "-w", "0"],
                "invalid value '0' for '--workers <N>': expected a whole number, at least 1",
            ),
            (&["-b", "127.0.0.1:1", "-w", "many"], "'--workers <N>'"),
            (
                &["-b", "127.0.0.1:1", "--health-interval-ms", "0"],
                "invalid value '0' for '--health-interval-ms <N>': expected a whole number of milliseconds, at least 1",
            ),
            (
                &["-b", "127.0.0.1:1", "--health-timeout-ms", "0"],
                "'--health-timeout-ms <N>'",
            ),
            (
                &["-b", "127.0.0.1:1", "--head-timeout-ms", "0"],
                "'--head-timeout-ms <N>'",
            ),
            (
                &["-b", "127.0.0.1:1", "--idle-timeout-ms", "0"],
                "'--idle-timeout-ms <N>'",
            ),
            (
                &["-b", "127.0.0.1:1", "--connect-timeout-ms", "0"],
                "'--connect-timeout-ms <N>'",
            ),
            (
                &["-b", "127.0.0.1:1", "--response-timeout-ms", "x"],
                "'--response-timeout-ms <N>'",
            ),
            (
                &["-b", "127.0.0.1:1", "--response-timeout-ms", "-5"],
                "invalid value '-5' for '--response-timeout-ms <N>': expected a whole number of milliseconds",
            ),
            (
                &["-b", "127.0.0.1:1", "--health-path", "health"],
                "must start with '/'",
            ),
            (
                &["-b", "127.0.0.1:1", "--metrics-addr", "9100"],
                "'--metrics-addr <ADDR:PORT>': expected ADDR:PORT",
            ),
            (
                &["-b", "127.0.0.1:1", "--metrics-addr", "0.0.0.0:8080"],
                "overlaps the listen address",
            ),
            (
                &["-b", "127.0.0.1:8080"],
                "backend 127.0.0.1:8080 (127.0.0.1:8080) is this balancer's own listen address 0.0.0.0:8080",
            ),
            (
                &[
                    "-b",
                    "127.0.0.1:1",
                    "-b",
                    "[::1]:9000",
                    "-p",
                    "9000",
                    "-H",
                    "::",
                ],
                "backend [::1]:9000 ([::1]:9000) is this balancer's own listen address [::]:9000",
            ),
            (
                &["-b", "10.0.0.1:9000", "-p", "9000", "-H", "10.0.0.1"],
                "requests would loop",
            ),
            (
                &["-b", "127.0.0.1:1", "-H", "localhost"],
                "'--host <ADDR>': expected an IPv4 or IPv6 address",
            ),
            (
                &["-b", "127.0.0.1:1", "-p", "0"],
                "invalid value '0' for '--port <PORT>': expected a port number 1-65535",
            ),
            (
                &["-b", "127.0.0.1:1", "-p", "-1"],
                "invalid value '-1' for '--port <PORT>': expected a port number 1-65535",
            ),
            (
                &["-b", "127.0.0.1:1", "-w", "-1"],
                "invalid value '-1' for '--workers <N>': expected a whole number, at least 1",
            ),
            // A missing value says what the flag takes, and never lists an
            // empty set of choices.
            (
                &["-b", "127.0.0.1:1", "-p"],
                "a value is required for '--port <PORT>' but none was supplied (expected a port number 1-65535)",
            ),
            (
                &["-b", "127.0.0.1:1", "-H"],
                "a value is required for '--host <ADDR>' but none was supplied (expected an IPv4 or IPv6 address",
            ),
            (
                &["-b", "127.0.0.1:1", "--connect-timeout-ms"],
                "(expected a whole number of milliseconds, at least 1)",
            ),
            (&["-b", "127.0.0.1:1", "-c"], "(expected a file name)"),
            (
                &["-b", "127.0.0.1:1", "-s"],
                "a value is required for '--strategy <NAME>' but none was supplied (expected one of: round_robin,",
            ),
            (
                &["-b", "127.0.0.1:1", "-H", "0.0.0.0:8080"],
                "invalid value '0.0.0.0:8080' for '--host <ADDR>': expected an address without a port",
            ),
            (
                &["-b", "127.0.0.1:1", "--health-path", "/a\nb"],
                "invalid value '/a\\nb' for '--health-path <PATH>': must not contain spaces",
            ),
            (
                &["-b", "127.0.0.1:1", "--metrics-addr", "127.0.0.1:0"],
                "expected ADDR:PORT with a port 1-65535",
            ),
            (
                &["-b", "127.0.0.1:1", "-s", "fastest"],
                "invalid value 'fastest' for '--strategy <NAME>' (expected one of: round_robin, weighted, random, least_conn, sticky)",
            ),
            (
                &["-b", "127.0.0.1:1", "--mode", "threads"],
                "invalid value 'threads' for '--mode <mp|sp>' (expected one of: mp, sp)",
            ),
            (
                &["-b", "127.0.0.1:1", "-l", "trace"],
                "'--loglevel <LEVEL>'",
            ),
            (
                &["-b", "127.0.0.1:1", "--frobnicate"],
                "unexpected argument '--frobnicate' found",
            ),
            (
                &["-b", "127.0.0.1:1", "--stratgy", "random"],
                "unexpected argument '--stratgy' found (did you mean '--strategy'?)",
            ),
            (&["-b"], "a value is required for '--backend <SPEC>'"),
            (
                &["-b", "127.0.0.1:1", "stray"],
                "unexpected argument 'stray' found",
            ),
            (
                &["-c", "/nonexistent/lb.json"],
                "config /nonexistent/lb.json: cannot read: No such file or directory",
            ),
        ];
        // Nothing is expected of a flag that does not exist.
        let unknown = invalid(&["-b", "127.0.0.1:1", "--queue-timeout-ms", "5"]);
        assert!(
            unknown.starts_with("unexpected argument '--queue-timeout-ms' found")
                && !unknown.contains("(expected"),
            "{unknown}"
        );
        let mut wrong = Vec::new();
        for &(args, fragment) in table {
            let line = invalid(args);
            if !line.contains(fragment) {
                wrong.push(format!("{args:?}\n  gave: {line}"));
            }
        }
        assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    }

    /// A scratch config file for one test.
    fn scratch(test: &str, json: &str) -> (PathBuf, String) {
        let dir = std::env::temp_dir().join(format!("lb-cli-{test}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("lb.json");
        std::fs::write(&path, json).unwrap();
        let p = path.to_str().unwrap().to_string();
        (path, p)
    }

    #[test]
    fn the_file_alone_is_a_complete_start() {
        let (path, p) = scratch(
            "complete",
            r#"{"backends": [{"host": "127.0.0.1", "port": 1}],
                "listen": "127.0.0.1", "port": 9000, "workers": 3, "mode": "sp",
                "loglevel": "warn", "metrics_addr": "127.0.0.1:9100",
                "pid_file": "lb.pid", "insecure": true, "trace": true, "tls_trace": true,
                "access_log": "-"}"#,
        );
        let dir = path.parent().unwrap();
        let c = parse(&["-c", &p]).unwrap();
        assert_eq!(c.listen, "127.0.0.1:9000".parse().unwrap());
        assert_eq!(
            (c.workers, c.mode, c.log_level),
            (3, Mode::Single, LogLevel::Warn)
        );
        assert_eq!(c.metrics_addr, Some("127.0.0.1:9100".parse().unwrap()));
        assert_eq!(c.pid_file, Some(dir.join("lb.pid")));
        assert!(c.insecure && c.trace && c.tls_trace);
        assert_eq!(c.access_log, Some(AccessLog::Stdout));
        // Flags given explicitly win, key by key.
        let c = parse(&[
            "-c",
            &p,
            "-H",
            "::1",
            "-w",
            "2",
            "--mode",
            "mp",
            "-l",
            "debug",
            "--metrics-addr",
            "[::1]:9200",
            "--pid-file",
            "/run/cli.pid",
        ])
        .unwrap();
        assert_eq!(c.listen, "[::1]:9000".parse().unwrap());
        assert_eq!(
            (c.workers, c.mode, c.log_level),
            (2, Mode::Multi, LogLevel::Debug)
        );
        assert_eq!(c.metrics_addr, Some("[::1]:9200".parse().unwrap()));
        assert_eq!(c.pid_file, Some(PathBuf::from("/run/cli.pid")));
        let c = parse(&["-c", &p, "-p", "9001"]).unwrap();
        assert_eq!(c.listen, "127.0.0.1:9001".parse().unwrap());
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn merged_values_are_checked_under_the_name_that_set_them() {
        let (path, p) = scratch(
            "merged",
            r#"{"backends": [{"host": "127.0.0.1", "port": 1}], "port": 9000,
                "metrics_addr": "127.0.0.1:9000"}"#,
        );
        let line = invalid(&["-c", &p]);
        assert_eq!(
            line,
            format!(
                "config {p}: metrics_addr 127.0.0.1:9000 overlaps the listen address 0.0.0.0:9000: pick another port"
            )
        );
        // The flag moves the listener away from the file's metrics port.
        assert!(parse(&["-c", &p, "-p", "9001"]).is_ok());
        let line = invalid(&["-c", &p, "-p", "9001", "--metrics-addr", "0.0.0.0:9001"]);
        assert!(
            line.starts_with("--metrics-addr 0.0.0.0:9001 overlaps"),
            "{line}"
        );

        let write = |json: &str| std::fs::write(&path, json).unwrap();
        write(r#"{"backends": [{"host": "127.0.0.1", "port": 1}], "ca_file": "missing.pem"}"#);
        let line = invalid(&["-c", &p]);
        let ca = path.parent().unwrap().join("missing.pem");
        assert!(
            line.starts_with(&format!(
                "config {p}: ca_file {}: cannot read",
                ca.display()
            )),
            "{line}"
        );
        let line = invalid(&["-b", "127.0.0.1:1", "--ca-file", "/nonexistent.pem"]);
        assert!(
            line.starts_with("--ca-file /nonexistent.pem: cannot read"),
            "{line}"
        );
        write(
            r#"{"backends": [{"host": "127.0.0.1", "port": 1}], "access_log": "/nonexistent/a.log"}"#,
        );
        assert_eq!(
            invalid(&["-c", &p]),
            format!(
                "config {p}: access_log /nonexistent/a.log: the directory /nonexistent does not exist"
            )
        );
        write(r#"{"backends": [{"host": "127.0.0.1", "port": 8080}], "listen": "127.0.0.1"}"#);
        assert!(
            invalid(&["-c", &p]).contains("is this balancer's own listen address 127.0.0.1:8080")
        );
        std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
    }

    #[test]
    fn explicit_flags_override_the_file_except_backends() {
        let dir = std::env::temp_dir().join(format!("lb-cli-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("lb.json");
        std::fs::write(
            &path,
            r#"{"backends": [{"host": "127.0.0.1", "port": 1}, {"host": "127.0.0.1", "port": 2, "weight": 5}],
                "strategy": "weighted",
                "health": {"path": "/file", "interval_ms": 7, "timeout_ms": 8,
                           "unhealthy_threshold": 9, "healthy_threshold": 10},
                "head_timeout_ms": 11, "body_timeout_ms": 12, "idle_timeout_ms": 13,
                "connect_timeout_ms": 14, "response_timeout_ms": 15}"#,
        )
        .unwrap();
        let p = path.to_str().unwrap();
        let c = parse(&["-c", p]).unwrap();
        assert_eq!(c.config_file.as_deref(), Some(path.as_path()));
        assert_eq!(c.backends.len(), 2);
        assert_eq!(c.backends[1].weight, 5);
        assert_eq!(c.strategy, Strategy::Weighted);
        let ms = Duration::from_millis;
        assert_eq!(
            c.health,
            HealthConfig {
                path: "/file".into(),
                interval: ms(7),
                timeout: ms(8),
                unhealthy_threshold: 9,
                healthy_threshold: 10,
            }
        );
        assert_eq!(
            c.timeouts,
            Timeouts {
                head: ms(11),
                body: ms(12),
                idle: ms(13),
                connect: ms(14),
                response: ms(15),
            }
        );
        let c = parse(&[
            "-c",
            p,
            "-s",
            "random",
            "--health-path",
            "/cli",
            "--health-timeout-ms",
            "3",
            "--body-timeout-ms",
            "4",
        ])
        .unwrap();
        assert_eq!((c.timeouts.body, c.timeouts.head), (ms(4), ms(11)));
        assert_eq!(c.strategy, Strategy::Random);
        assert_eq!(
            (c.health.path.as_str(), c.health.interval, c.health.timeout),
            ("/cli", ms(7), ms(3))
        );
        assert_eq!(c.health.unhealthy_threshold, 9);

        std::fs::write(&path, r#"{"backends": [{"host": "127.0.0.1", "port": 1}]}"#).unwrap();
        let c = parse(&["-c", p]).unwrap();
        assert_eq!(c.strategy, Strategy::RoundRobin);
        assert_eq!(c.health, HealthConfig::default());

        std::fs::write(
            &path,
            "{\"backends\": [{\"host\": \"127.0.0.1\", \"port\": 1}],\n\"strategy\": \"fast\"}",
        )
        .unwrap();
        let line = invalid(&["-c", p]);
        assert!(
            line.starts_with(&format!("config {p}: strategy: unknown variant `fast`")),
            "{line}"
        );
        assert!(line.ends_with("at line 2 column 18"), "{line}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
