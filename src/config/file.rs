//! The `-c FILE` JSON config (SPEC §3): reading, strict parsing, validation.
//!
//! Loading is a pure function of the file (plus DNS for backend names): no
//! state and no defaults, so the hot reloader can call [`load`] again and the
//! caller (`cli::parse_from`) decides how explicit flags override it.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer, de};

use rustls::pki_types::ServerName;

use super::value::{Count, FileName, Ip, Millis, Period, Port, Socket};
use super::{AccessLog, AccessLogFormat, LogLevel, Mode, Strategy};
use crate::upstream::{self, Backend, BackendId, ClientCert, HostHeader, TlsOptions};

/// A valid config file. `None` (or `false`) means "not in the file": the
/// command line or the built-in default applies. Every key but `backends`
/// mirrors a flag of SPEC §1.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FileConfig {
    /// Non-empty, as parsed (names not resolved yet);
    /// `backends[i].id == BackendId(i)`.
    pub backends: Vec<Backend>,
    pub strategy: Option<Strategy>,
    /// `dns_interval_ms`; zero is off.
    pub dns_interval: Option<Duration>,
    pub health: FileHealth,
    pub timeouts: FileTimeouts,
    /// `listen`: the address part of the listen socket (`-H`).
    pub listen: Option<IpAddr>,
    pub port: Option<u16>,
    pub workers: Option<usize>,
    pub mode: Option<Mode>,
    pub log_level: Option<LogLevel>,
    pub metrics_addr: Option<SocketAddr>,
    /// Paths as written; [`load`] makes relative ones relative to the
    /// file's directory.
    pub pid_file: Option<PathBuf>,
    pub ca_file: Option<PathBuf>,
    pub access_log: Option<AccessLog>,
    pub access_log_format: Option<AccessLogFormat>,
    /// The switches (`-k`, `-t`, `--tls-trace`): a flag can only turn one
    /// on, so `false` and absent mean the same.
    pub insecure: bool,
    pub trace: bool,
    pub tls_trace: bool,
}

/// The file's timeout keys (`head_timeout_ms`, ...); every one optional.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FileTimeouts {
    pub head: Option<Duration>,
    pub body: Option<Duration>,
    pub idle: Option<Duration>,
    pub connect: Option<Duration>,
    pub response: Option<Duration>,
}

/// The file's `health` object; every key is optional.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FileHealth {
    pub path: Option<String>,
    pub interval: Option<Duration>,
    pub timeout: Option<Duration>,
    pub unhealthy_threshold: Option<u32>,
    pub healthy_threshold: Option<u32>,
}

/// Reads and validates the file. The error is one line naming the file, and
/// for JSON and value errors the key and the line and column. Relative
/// paths in the file are taken from the file's directory, as an operator
/// who keeps a config beside its certificates expects.
pub fn load(path: &Path) -> Result<FileConfig, String> {
    let name = path.display();
    let bytes = std::fs::read(path)
        .map_err(|e| format!("config {name}: cannot read: {}", io_reason(&e)))?;
    let mut config = parse(&bytes).map_err(|e| format!("config {name}: {e}"))?;
    let dir = path.parent().unwrap_or(Path::new(""));
    for p in [&mut config.pid_file, &mut config.ca_file] {
        *p = p.take().map(|p| dir.join(p));
    }
    if let Some(AccessLog::File(p)) = &mut config.access_log {
        *p = dir.join(&*p);
    }
    check_tls_files(&mut config.backends, dir).map_err(|e| format!("config {name}: {e}"))?;
    Ok(config)
}

/// The backends' PEM files (`ca_file`, `client_cert`, `client_key`): a
/// relative path is taken from the config file's directory (as nginx does
/// for its certificates) and made absolute, then every file is read and
/// checked, so a bad one stops the start (or a reload) here.
pub fn check_tls_files(backends: &mut [Backend], dir: &Path) -> Result<(), String> {
    let anchor = |p: &mut PathBuf| {
        let joined = dir.join(&*p);
        *p = std::path::absolute(&joined).unwrap_or(joined);
    };
    for (i, b) in backends.iter_mut().enumerate() {
        let own = &mut b.tls_options;
        if own.is_empty() {
            continue;
        }
        if let Some(p) = own.ca_file.as_mut() {
            anchor(p);
        }
        if let Some(c) = own.client_cert.as_mut() {
            anchor(&mut c.cert);
            anchor(&mut c.key);
        }
        crate::tls::check_options(own).map_err(|e| format!("backends[{i}]: {e}"))?;
    }
    Ok(())
}

/// [`load`] without the file system, for tests and for a reloader that has
/// already read the bytes. The error does not name the file.
pub fn parse(json: &[u8]) -> Result<FileConfig, String> {
    // serde would accept a struct written as a positional array; nobody
    // means that, so say what is expected instead.
    match json.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'{') | None => {}
        Some(_) => {
            return Err("the top level must be a JSON object: {\"backends\": [...]}".into());
        }
    }
    let mut de = serde_json::Deserializer::from_slice(json);
    let raw: JsonFile = serde_path_to_error::deserialize(&mut de).map_err(json_error)?;
    de.end().map_err(|e| e.to_string())?;
    let backends = raw
        .backends
        .iter()
        .enumerate()
        .map(|(i, b)| {
            let host_header = match b.host_header {
                None => HostHeader::Auto,
                Some(JsonHostHeader::Preserve) => HostHeader::Preserve,
                Some(JsonHostHeader::Backend) => HostHeader::Backend,
            };
            let weight = b.weight.map_or(upstream::DEFAULT_WEIGHT, Count::get);
            let mut backend = upstream::backend_from_parts(
                &b.host,
                b.port.get(),
                weight,
                host_header,
                BackendId(i),
            )
            .map_err(|e| format!("backends[{i}]: {e}"))?;
            backend.tls_options =
                tls_options(b, backend.tls).map_err(|e| format!("backends[{i}]: {e}"))?;
            Ok(backend)
        })
        .collect::<Result<Vec<_>, String>>()?;
    let health = raw.health.unwrap_or_default();
    let ms = |v: Option<Millis>| v.map(Millis::get);
    Ok(FileConfig {
        backends,
        strategy: raw.strategy.map(|s| match s {
            JsonStrategy::RoundRobin => Strategy::RoundRobin,
            JsonStrategy::Weighted => Strategy::Weighted,
            JsonStrategy::Random => Strategy::Random,
            JsonStrategy::LeastConn => Strategy::LeastConn,
            JsonStrategy::Sticky => Strategy::Sticky,
        }),
        dns_interval: raw.dns_interval_ms.map(Period::get),
        health: FileHealth {
            path: health.path,
            interval: ms(health.interval_ms),
            timeout: ms(health.timeout_ms),
            unhealthy_threshold: health.unhealthy_threshold.map(Count::get),
            healthy_threshold: health.healthy_threshold.map(Count::get),
        },
        timeouts: FileTimeouts {
            head: ms(raw.head_timeout_ms),
            body: ms(raw.body_timeout_ms),
            idle: ms(raw.idle_timeout_ms),
            connect: ms(raw.connect_timeout_ms),
            response: ms(raw.response_timeout_ms),
        },
        listen: raw.listen.map(|ip| ip.0),
        port: raw.port.map(Port::get),
        // A u32 count fits a usize on every target we build for.
        workers: raw.workers.map(|n| n.get() as usize),
        mode: raw.mode.map(|m| match m {
            JsonMode::Mp => Mode::Multi,
            JsonMode::Sp => Mode::Single,
        }),
        log_level: raw.loglevel.map(|l| match l {
            JsonLogLevel::Err => LogLevel::Err,
            JsonLogLevel::Warn => LogLevel::Warn,
            JsonLogLevel::Info => LogLevel::Info,
            JsonLogLevel::Debug => LogLevel::Debug,
        }),
        metrics_addr: raw.metrics_addr.map(|a| a.0),
        pid_file: raw.pid_file.map(|f| f.0),
        ca_file: raw.ca_file.map(|f| f.0),
        access_log: raw.access_log.map(|f| match f.0.as_os_str() == "-" {
            true => AccessLog::Stdout,
            false => AccessLog::File(f.0),
        }),
        access_log_format: raw.access_log_format.map(|f| match f {
            JsonAccessLogFormat::Combined => AccessLogFormat::Combined,
            JsonAccessLogFormat::Json => AccessLogFormat::Json,
        }),
        insecure: raw.insecure.unwrap_or(false),
        trace: raw.trace.unwrap_or(false),
        tls_trace: raw.tls_trace.unwrap_or(false),
    })
}

/// A backend's TLS keys, paths as written (`load` anchors and reads them).
fn tls_options(b: &JsonBackend, tls: bool) -> Result<TlsOptions, String> {
    let given = [
        ("ca_file", b.ca_file.is_some()),
        ("sni", b.sni.is_some()),
        ("client_cert", b.client_cert.is_some()),
        ("client_key", b.client_key.is_some()),
    ];
    if !tls && let Some((key, _)) = given.iter().find(|(_, set)| *set) {
        return Err(format!("{key} needs a TLS backend (https:// or port 443)"));
    }
    let client_cert = match (&b.client_cert, &b.client_key) {
        (Some(cert), Some(key)) => Some(ClientCert {
            cert: cert.clone(),
            key: key.clone(),
        }),
        (None, None) => None,
        (Some(_), None) => {
            return Err("client_cert needs client_key (its private key, PEM)".into());
        }
        (None, Some(_)) => {
            return Err(
                "client_key needs client_cert (the certificate it is the key of, PEM)".into(),
            );
        }
    };
    Ok(TlsOptions {
        ca_file: b.ca_file.clone(),
        sni: b.sni.clone(),
        client_cert,
    })
}

/// The probe path goes verbatim into a request line, so it must be an
/// origin-form path without spaces or control characters.
pub fn check_health_path(path: &str) -> Result<(), &'static str> {
    if !path.starts_with('/') {
        return Err("must start with '/'");
    }
    if path.bytes().any(|b| b <= b' ' || b == 0x7f) {
        return Err("must not contain spaces or control characters");
    }
    Ok(())
}

/// One line from a serde error: the key path in front (`health.timeout_ms:
/// ...`), an unknown key with the nearest known one, and serde_json's
/// line and column at the end.
fn json_error(e: serde_path_to_error::Error<serde_json::Error>) -> String {
    let path = e.path().to_string();
    let inner = e.into_inner();
    let text = inner.to_string();
    if inner.line() == 0 {
        return text;
    }
    let at = format!(" at line {} column {}", inner.line(), inner.column());
    let message = text.strip_suffix(&at).unwrap_or(&text);
    // "." is the top level; "?" is where a syntax error stopped serde
    // before it knew the next key: name the object it was in.
    let path = path.strip_suffix(".?").unwrap_or(&path);
    let message = match message.strip_prefix("unknown field `") {
        Some(rest) => unknown_key(path, rest),
        None if path == "." || path == "?" => message.to_string(),
        None => format!("{path}: {message}"),
    };
    format!("{message}{at}")
}

/// `rest` is serde's "X`, expected `a`, `b` ..." after "unknown field `".
fn unknown_key(path: &str, rest: &str) -> String {
    let mut names = rest.split('`').step_by(2);
    let field = names.next().unwrap_or_default();
    let known: Vec<&str> = names.collect();
    let parent = path.strip_suffix(field).unwrap_or("");
    let hint = match known.iter().min_by_key(|k| edit_distance(field, k)) {
        Some(near) if edit_distance(field, near) <= 2 => {
            format!("did you mean \"{parent}{near}\"?")
        }
        _ if known.is_empty() => "this object takes no keys".to_string(),
        _ => format!("expected one of: {}", known.join(", ")),
    };
    format!("unknown key \"{path}\" ({hint})")
}

/// Levenshtein distance, for "did you mean" on short key names.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diag = row[0];
        row[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let next = (diag + usize::from(ca != cb))
                .min(row[j] + 1)
                .min(row[j + 1] + 1);
            diag = row[j + 1];
            row[j + 1] = next;
        }
    }
    row[b.len()]
}

/// `io::Error`'s text without the " (os error N)" tail: the line is for people.
fn io_reason(e: &std::io::Error) -> String {
    let text = e.to_string();
    match text.find(" (os error ") {
        Some(cut) => text[..cut].to_string(),
        None => text,
    }
}

// The wire format. Validation that needs no DNS happens during
// deserialisation so that serde_json reports the line and column.

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonFile {
    #[serde(deserialize_with = "non_empty_backends")]
    backends: Vec<JsonBackend>,
    strategy: Option<JsonStrategy>,
    health: Option<JsonHealth>,
    head_timeout_ms: Option<Millis>,
    body_timeout_ms: Option<Millis>,
    idle_timeout_ms: Option<Millis>,
    connect_timeout_ms: Option<Millis>,
    response_timeout_ms: Option<Millis>,
    dns_interval_ms: Option<Period>,
    listen: Option<Ip>,
    port: Option<Port>,
    workers: Option<Count>,
    mode: Option<JsonMode>,
    loglevel: Option<JsonLogLevel>,
    metrics_addr: Option<Socket>,
    pid_file: Option<FileName>,
    insecure: Option<bool>,
    ca_file: Option<FileName>,
    trace: Option<bool>,
    tls_trace: Option<bool>,
    access_log: Option<FileName>,
    access_log_format: Option<JsonAccessLogFormat>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonBackend {
    host: String,
    port: Port,
    weight: Option<Count>,
    host_header: Option<JsonHostHeader>,
    #[serde(default, deserialize_with = "pem_path")]
    ca_file: Option<PathBuf>,
    #[serde(default, deserialize_with = "sni_name")]
    sni: Option<String>,
    #[serde(default, deserialize_with = "pem_path")]
    client_cert: Option<PathBuf>,
    #[serde(default, deserialize_with = "pem_path")]
    client_key: Option<PathBuf>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct JsonHealth {
    #[serde(default, deserialize_with = "health_path")]
    path: Option<String>,
    interval_ms: Option<Millis>,
    timeout_ms: Option<Millis>,
    unhealthy_threshold: Option<Count>,
    healthy_threshold: Option<Count>,
}

#[derive(Deserialize, Clone, Copy)]
#[serde(rename_all = "snake_case")]
enum JsonStrategy {
    RoundRobin,
    Weighted,
    Random,
    LeastConn,
    Sticky,
}

#[derive(Deserialize, Clone, Copy)]
#[serde(rename_all = "snake_case")]
enum JsonMode {
    Mp,
    Sp,
}

#[derive(Deserialize, Clone, Copy)]
#[serde(rename_all = "snake_case")]
enum JsonAccessLogFormat {
    Combined,
    Json,
}

#[derive(Deserialize, Clone, Copy)]
#[serde(rename_all = "snake_case")]
enum JsonLogLevel {
    Err,
    Warn,
    Info,
    Debug,
}

#[derive(Deserialize, Clone, Copy)]
#[serde(rename_all = "snake_case")]
enum JsonHostHeader {
    Preserve,
    Backend,
}

fn non_empty_backends<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<JsonBackend>, D::Error> {
    let v = Vec::<JsonBackend>::deserialize(d)?;
    if v.is_empty() {
        return Err(de::Error::custom(
            "the list is empty: give at least one backend",
        ));
    }
    Ok(v)
}

fn pem_path<'de, D: Deserializer<'de>>(d: D) -> Result<Option<PathBuf>, D::Error> {
    let path = String::deserialize(d)?;
    if path.is_empty() {
        return Err(de::Error::custom("an empty path: name a PEM file"));
    }
    Ok(Some(PathBuf::from(path)))
}

/// `sni` must be a DNS name: an IP address is never sent as SNI (RFC 6066).
fn sni_name<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let name = String::deserialize(d)?;
    match crate::tls::server_name(&name) {
        Ok(ServerName::DnsName(_)) => Ok(Some(name.to_ascii_lowercase())),
        Ok(_) => Err(de::Error::custom(format!(
            "sni '{name}' is an IP address, which SNI cannot carry (leave sni out to check the certificate against the host's IP)"
        ))),
        Err(_) => Err(de::Error::custom(format!(
            "sni '{}' is not a DNS name",
            name.escape_debug()
        ))),
    }
}

fn health_path<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let path = String::deserialize(d)?;
    check_health_path(&path)
        .map_err(|why| de::Error::custom(format!("'{}' {why}", path.escape_debug())))?;
    Ok(Some(path))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn err(json: &str) -> String {
        parse(json.as_bytes()).expect_err(json)
    }

    #[test]
    fn spec_example_minus_dns() {
        let json = r#"{
          "backends": [
            {"host": "127.0.0.1", "port": 9001},
            {"host": "127.0.0.1", "port": 9002, "weight": 2},
            {"host": "localhost", "port": 443, "host_header": "preserve"},
            {"host": "https://127.0.0.1", "port": 8443, "host_header": "backend"}
          ],
          "strategy": "weighted",
          "health": {"path": "/", "interval_ms": 5000, "timeout_ms": 2000,
                     "unhealthy_threshold": 3, "healthy_threshold": 2}
        }"#;
        let c = parse(json.as_bytes()).unwrap();
        assert_eq!(c.strategy, Some(Strategy::Weighted));
        let summary: Vec<_> = c
            .backends
            .iter()
            .map(|b| (b.id, b.label.as_str(), b.weight, b.tls, b.host_header))
            .collect();
        assert_eq!(
            summary,
            [
                (BackendId(0), "127.0.0.1:9001", 1, false, HostHeader::Auto),
                (BackendId(1), "127.0.0.1:9002", 2, false, HostHeader::Auto),
                (BackendId(2), "localhost:443", 1, true, HostHeader::Preserve),
                (BackendId(3), "127.0.0.1:8443", 1, true, HostHeader::Backend),
            ]
        );
        assert_eq!(
            c.health,
            FileHealth {
                path: Some("/".into()),
                interval: Some(Duration::from_millis(5000)),
                timeout: Some(Duration::from_millis(2000)),
                unhealthy_threshold: Some(3),
                healthy_threshold: Some(2),
            }
        );
    }

    #[test]
    fn every_flag_has_a_key() {
        let json = r#"{
          "backends": [{"host": "127.0.0.1", "port": 9001}],
          "listen": "::1", "port": 9000, "workers": 3, "mode": "sp",
          "loglevel": "debug", "strategy": "sticky",
          "metrics_addr": "[::1]:9100", "pid_file": "/run/lb.pid",
          "insecure": true, "ca_file": "ca.pem", "trace": true, "tls_trace": false,
          "access_log": "-", "access_log_format": "json",
          "head_timeout_ms": 1, "body_timeout_ms": 2, "idle_timeout_ms": 3,
          "connect_timeout_ms": 4, "response_timeout_ms": 5, "dns_interval_ms": 0,
          "health": {"path": "/h", "interval_ms": 6, "timeout_ms": 7,
                     "unhealthy_threshold": 8, "healthy_threshold": 9}
        }"#;
        let c = parse(json.as_bytes()).unwrap();
        let ms = |n| Some(Duration::from_millis(n));
        let want = FileConfig {
            backends: c.backends.clone(),
            strategy: Some(Strategy::Sticky),
            dns_interval: Some(Duration::ZERO),
            health: FileHealth {
                path: Some("/h".into()),
                interval: ms(6),
                timeout: ms(7),
                unhealthy_threshold: Some(8),
                healthy_threshold: Some(9),
            },
            timeouts: FileTimeouts {
                head: ms(1),
                body: ms(2),
                idle: ms(3),
                connect: ms(4),
                response: ms(5),
            },
            listen: Some("::1".parse().unwrap()),
            port: Some(9000),
            workers: Some(3),
            mode: Some(Mode::Single),
            log_level: Some(LogLevel::Debug),
            metrics_addr: Some("[::1]:9100".parse().unwrap()),
            pid_file: Some("/run/lb.pid".into()),
            ca_file: Some("ca.pem".into()),
            access_log: Some(AccessLog::Stdout),
            access_log_format: Some(AccessLogFormat::Json),
            insecure: true,
            trace: true,
            tls_trace: false,
        };
        assert_eq!(c, want);
        // Each enum value by its name; null means "not set".
        for (mode, want) in [("mp", Mode::Multi), ("sp", Mode::Single)] {
            let c = parse(with(&format!(r#""mode": "{mode}""#)).as_bytes()).unwrap();
            assert_eq!(c.mode, Some(want));
        }
        for level in [
            LogLevel::Err,
            LogLevel::Warn,
            LogLevel::Info,
            LogLevel::Debug,
        ] {
            let c = parse(with(&format!(r#""loglevel": "{}""#, level.name())).as_bytes());
            assert_eq!(c.unwrap().log_level, Some(level));
        }
        let c = parse(with(r#""listen": "[::]", "port": null, "access_log": "./-""#).as_bytes());
        let c = c.unwrap();
        assert_eq!(c.listen, Some("::".parse().unwrap()));
        assert_eq!(c.port, None);
        assert_eq!(c.access_log, Some(AccessLog::File("./-".into())));
    }

    #[test]
    fn only_backends_is_required() {
        let c = parse(br#"{"backends":[{"host":"::1","port":80}]}"#).unwrap();
        assert_eq!(c.backends[0].label, "[::1]:80");
        assert_eq!(c.strategy, None);
        assert_eq!(c.health, FileHealth::default());
    }

    /// A valid file with `extra` keys added at the top level.
    fn with(extra: &str) -> String {
        format!(r#"{{"backends": [{{"host": "127.0.0.1", "port": 1}}], {extra}}}"#)
    }

    #[test]
    fn bad_files_name_the_problem_and_position() {
        let table: &[(&str, &str)] = &[
            ("", "EOF while parsing a value at line 1 column 0"),
            (
                "{\n  \"backends\": [\n",
                "EOF while parsing a list at line 3 column 0",
            ),
            (
                r#"{"backends": [{"host": "127.0.0.1", "port": 1},]}"#,
                "trailing comma at line 1 column 48",
            ),
            (
                r#"{"backends": [{"host": "127.0.0.1", "port": 1,}]}"#,
                "backends[0]: trailing comma at line 1 column 47",
            ),
            (
                "{\n \"backends\": [],\n}",
                "backends: the list is empty: give at least one backend at line 2 column 15",
            ),
            (
                r#"{"strategy": "random"}"#,
                "missing field `backends` at line 1 column 22",
            ),
            (
                "{\"backends\": [{\"host\": \"127.0.0.1\", \"port\": 1}],\n  \"stratgy\": \"random\"}",
                "unknown key \"stratgy\" (did you mean \"strategy\"?) at line 2 column 11",
            ),
            (
                r#"{"backends": [{"host": "127.0.0.1", "port": 1, "wieght": 2}]}"#,
                "unknown key \"backends[0].wieght\" (did you mean \"backends[0].weight\"?)",
            ),
            (
                r#"{"backends": [{"host": "127.0.0.1", "port": 1}], "health": {"pth": "/"}}"#,
                "unknown key \"health.pth\" (did you mean \"health.path\"?)",
            ),
            (
                r#"{"backends": [{"host": "127.0.0.1", "port": 0}]}"#,
                "backends[0].port: invalid value: integer `0`, expected a port number 1-65535 at line 1 column 45",
            ),
            (
                r#"{"backends": [{"host": "127.0.0.1", "port": 70000}]}"#,
                "backends[0].port: invalid value: integer `70000`, expected a port number 1-65535",
            ),
            (
                r#"{"backends": [{"host": "127.0.0.1", "port": "80"}]}"#,
                "backends[0].port: invalid type: string \"80\", expected a port number",
            ),
            (
                r#"{"backends": [{"host": "127.0.0.1", "port": 1, "weight": 0}]}"#,
                "backends[0].weight: invalid value: integer `0`, expected a whole number, at least 1 at line 1 column 58",
            ),
            (
                r#"{"backends": [{"host": "127.0.0.1", "port": 1}], "strategy": "fastest"}"#,
                "strategy: unknown variant `fastest`, expected one of `round_robin`",
            ),
            (
                r#"{"backends": [{"host": "127.0.0.1", "port": 1, "host_header": "auto"}]}"#,
                "backends[0].host_header: unknown variant `auto`",
            ),
            (
                r#"{"backends": [{"host": "127.0.0.1", "port": 1}], "health": {"path": "health"}}"#,
                "health.path: 'health' must start with '/' at line 1",
            ),
            (
                r#"{"backends": [{"host": "127.0.0.1", "port": 1}], "health": {"path": "/a\tb"}}"#,
                "health.path: '/a\\tb' must not contain spaces",
            ),
            (
                r#"{"backends": [{"host": "127.0.0.1", "port": 1}], "health": {"interval_ms": 0}}"#,
                "health.interval_ms: invalid value: integer `0`, expected a whole number of milliseconds, at least 1 at line 1 column",
            ),
            (
                r#"{"backends": [{"host": "127.0.0.1", "port": 1}], "health": {"healthy_threshold": 0}}"#,
                "health.healthy_threshold: invalid value: integer `0`, expected a whole number",
            ),
            (
                r#"{"backends": [{"host": "127.0.0.1", "port": 1}], "backends": []}"#,
                "duplicate field `backends`",
            ),
            (
                r#"{"backends": [{"host": "127.0.0.1", "port": 1}, {"host": "a b", "port": 1}]}"#,
                "backends[1]: bad backend host 'a b'",
            ),
            (
                r#"{"backends": [{"host": "127.0.0.1:80", "port": 80}]}"#,
                "backends[0]: bad backend host '127.0.0.1:80' port 80: put the port",
            ),
            (
                r#"{"backends": [{"host": "127.0.0.1", "port": 1}], "dns_interval_ms": -1}"#,
                "dns_interval_ms: invalid value: integer `-1`, expected a whole number of milliseconds (0 turns it off)",
            ),
            (
                r#"{"backends": [{"host": "127.0.0.1", "port": 1}, {"host": "127.0.0.1", "port": 80, "ca_file": "ca.pem"}]}"#,
                "backends[1]: ca_file needs a TLS backend (https:// or port 443)",
            ),
            (
                r#"{"backends": [{"host": "http://127.0.0.1", "port": 8443, "sni": "api.test"}]}"#,
                "backends[0]: sni needs a TLS backend",
            ),
            (
                r#"{"backends": [{"host": "127.0.0.1", "port": 80, "client_key": "k.pem"}]}"#,
                "backends[0]: client_key needs a TLS backend",
            ),
            (
                r#"{"backends": [{"host": "127.0.0.1", "port": 443, "client_cert": "c.pem"}]}"#,
                "backends[0]: client_cert needs client_key",
            ),
            (
                r#"{"backends": [{"host": "127.0.0.1", "port": 443, "client_key": "k.pem"}]}"#,
                "backends[0]: client_key needs client_cert",
            ),
            (
                r#"{"backends": [{"host": "127.0.0.1", "port": 443, "ca_file": ""}]}"#,
                "an empty path: name a PEM file at line 1 column 63",
            ),
            (
                r#"{"backends": [{"host": "127.0.0.1", "port": 443, "sni": "10.0.0.1"}]}"#,
                "sni '10.0.0.1' is an IP address, which SNI cannot carry",
            ),
            (
                r#"{"backends": [{"host": "127.0.0.1", "port": 443, "sni": "a b"}]}"#,
                "sni 'a b' is not a DNS name at line 1",
            ),
            (
                r#"{"backends": [{"host": "127.0.0.1", "port": 443, "sni": 7}]}"#,
                "invalid type: integer `7`, expected a string",
            ),
            (
                r#"{"backends": [{"host": "127.0.0.1", "port": 443, "ca-file": "x"}]}"#,
                "unknown key \"backends[0].ca-file\" (did you mean \"backends[0].ca_file\"?)",
            ),
            // The keys beside backends: each named when its value is wrong.
            (
                &with(r#""listen": "0.0.0.0:8080""#),
                "listen: invalid value: string \"0.0.0.0:8080\", expected an address without a port",
            ),
            (
                &with(r#""listen": "localhost""#),
                "listen: invalid value: string \"localhost\", expected an IPv4 or IPv6 address",
            ),
            (
                &with(r#""listen": 0"#),
                "listen: invalid type: integer `0`, expected an IPv4 or IPv6",
            ),
            (
                &with(r#""port": 0"#),
                "port: invalid value: integer `0`, expected a port number 1-65535",
            ),
            (
                &with(r#""port": 65536"#),
                "port: invalid value: integer `65536`",
            ),
            (
                &with(r#""workers": 0"#),
                "workers: invalid value: integer `0`, expected a whole number, at least 1",
            ),
            (
                &with(r#""workers": -2"#),
                "workers: invalid value: integer `-2`",
            ),
            (
                &with(r#""workers": 1.5"#),
                "workers: invalid type: floating point `1.5`",
            ),
            (
                &with(r#""mode": "threads""#),
                "mode: unknown variant `threads`, expected `mp` or `sp`",
            ),
            (
                &with(r#""loglevel": "trace""#),
                "loglevel: unknown variant `trace`, expected one of `err`, `warn`, `info`, `debug`",
            ),
            (
                &with(r#""log_level": "info""#),
                "unknown key \"log_level\" (did you mean \"loglevel\"?)",
            ),
            (
                &with(r#""metrics_addr": "9100""#),
                "metrics_addr: invalid value: string \"9100\", expected ADDR:PORT such as",
            ),
            (
                &with(r#""metrics_addr": "127.0.0.1:0""#),
                "metrics_addr: invalid value: string \"127.0.0.1:0\", expected ADDR:PORT with a port 1-65535",
            ),
            (
                &with(r#""pid_file": """#),
                "pid_file: invalid value: string \"\", expected a file name",
            ),
            (
                &with(r#""pid_file": 1"#),
                "pid_file: invalid type: integer `1`, expected a file name",
            ),
            (
                &with(r#""ca_file": """#),
                "ca_file: invalid value: string \"\", expected a file name",
            ),
            (
                &with(r#""access_log": """#),
                "access_log: invalid value: string \"\", expected a file name",
            ),
            (
                &with(r#""insecure": "yes""#),
                "insecure: invalid type: string \"yes\", expected a boolean",
            ),
            (
                &with(r#""trace": 1"#),
                "trace: invalid type: integer `1`, expected a boolean",
            ),
            (
                &with(r#""tls_trace": 1"#),
                "tls_trace: invalid type: integer `1`, expected a boolean",
            ),
            (
                &with(r#""head_timeout_ms": 0"#),
                "head_timeout_ms: invalid value: integer `0`, expected a whole number of milliseconds",
            ),
            (
                &with(r#""response_timeout_ms": "5s""#),
                "response_timeout_ms: invalid type: string \"5s\"",
            ),
            (
                &with(r#""frobnicate": 1"#),
                "unknown key \"frobnicate\" (expected one of: backends, strategy, health, head_timeout_ms",
            ),
            (&with(r#""port": 1, "port": 2"#), "duplicate field `port`"),
            (
                &with(r#""health": {"path": "/", "x": 1}"#),
                "unknown key \"health.x\" (expected one of: path, interval_ms",
            ),
            (
                r#"{"backends": [{"host": "127.0.0.1", "port": 1}]} {}"#,
                "trailing characters at line 1 column 50",
            ),
            (" [1]", "must be a JSON object"),
            ("1", "must be a JSON object"),
            (
                r#"{"backends": [["127.0.0.1", 80]]}"#,
                "invalid length 2, expected struct JsonBackend with 8 elements",
            ),
        ];
        let mut wrong = Vec::new();
        for (json, fragment) in table {
            let e = err(json);
            if !e.contains(fragment) || e.contains('\n') {
                wrong.push(format!("{json}\n  gave: {e}"));
            }
        }
        assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    }

    #[test]
    fn load_names_the_file() {
        let dir = std::env::temp_dir().join(format!("lb-file-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let missing = dir.join("missing.json");
        assert_eq!(
            load(&missing).unwrap_err(),
            format!(
                "config {}: cannot read: No such file or directory",
                missing.display()
            )
        );
        let bad = dir.join("bad.json");
        std::fs::write(
            &bad,
            "{\n  \"backends\": [{\"host\": \"127.0.0.1\", \"port\": 1}],\n  \"x\": 1\n}",
        )
        .unwrap();
        let e = load(&bad).unwrap_err();
        assert!(
            e.starts_with(&format!("config {}: unknown key \"x\"", bad.display())),
            "{e}"
        );
        assert!(e.ends_with("at line 3 column 5"), "{e}");
        let good = dir.join("good.json");
        std::fs::write(&good, r#"{"backends": [{"host": "127.0.0.1", "port": 1}]}"#).unwrap();
        assert_eq!(load(&good).unwrap().backends.len(), 1);
        // A second load of the same file gives the same result (reload).
        assert_eq!(load(&good).unwrap(), load(&good).unwrap());
        // Relative paths are taken from the file's directory.
        std::fs::write(
            &good,
            r#"{"backends": [{"host": "127.0.0.1", "port": 1}], "pid_file": "run/lb.pid",
                "ca_file": "/etc/ca.pem", "access_log": "log/access.log"}"#,
        )
        .unwrap();
        let c = load(&good).unwrap();
        assert_eq!(c.pid_file, Some(dir.join("run/lb.pid")));
        assert_eq!(c.ca_file, Some(PathBuf::from("/etc/ca.pem")));
        assert_eq!(
            c.access_log,
            Some(AccessLog::File(dir.join("log/access.log")))
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn tls_keys_are_kept_as_written_until_load() {
        let c = parse(
            br#"{"backends": [
              {"host": "https://10.0.0.5", "port": 8443, "ca_file": "certs/ca.pem",
               "sni": "API.Internal", "client_cert": "/etc/c.pem", "client_key": "k.pem"},
              {"host": "127.0.0.1", "port": 443},
              {"host": "127.0.0.1", "port": 80}
            ]}"#,
        )
        .unwrap();
        assert_eq!(
            c.backends[0].tls_options,
            TlsOptions {
                ca_file: Some("certs/ca.pem".into()),
                sni: Some("api.internal".into()),
                client_cert: Some(ClientCert {
                    cert: "/etc/c.pem".into(),
                    key: "k.pem".into()
                }),
            }
        );
        assert_eq!(c.backends[0].tls_name(), "api.internal");
        assert_eq!(c.backends[1].tls_name(), "127.0.0.1");
        assert!(c.backends[1].tls_options.is_empty() && c.backends[2].tls_options.is_empty());
    }

    #[test]
    fn load_anchors_tls_files_to_the_config_directory_and_checks_them() {
        let dir = std::env::temp_dir().join(format!("lb-file-tls-{}", std::process::id()));
        let certs = dir.join("certs");
        std::fs::create_dir_all(&certs).unwrap();
        let made = rcgen::generate_simple_self_signed(vec!["client.test".into()]).unwrap();
        let other = rcgen::generate_simple_self_signed(vec!["other.test".into()]).unwrap();
        std::fs::write(certs.join("ca.pem"), made.cert.pem()).unwrap();
        std::fs::write(certs.join("c.pem"), made.cert.pem()).unwrap();
        std::fs::write(certs.join("k.pem"), made.signing_key.serialize_pem()).unwrap();
        std::fs::write(certs.join("other-k.pem"), other.signing_key.serialize_pem()).unwrap();
        std::fs::write(certs.join("junk.pem"), "not PEM at all\n").unwrap();
        let config = dir.join("lb.json");
        let write = |backend: &str| {
            let json = format!(
                r#"{{"backends": [{{"host": "127.0.0.1", "port": 1}}, {{"host": "127.0.0.1", "port": 443, {backend}}}]}}"#
            );
            std::fs::write(&config, json).unwrap();
        };
        write(
            r#""ca_file": "certs/ca.pem", "client_cert": "certs/c.pem", "client_key": "certs/k.pem""#,
        );
        let c = load(&config).unwrap();
        let own = &c.backends[1].tls_options;
        assert_eq!(own.ca_file.as_deref(), Some(certs.join("ca.pem").as_path()));
        let client = own.client_cert.as_ref().unwrap();
        assert_eq!(
            (client.cert.as_path(), client.key.as_path()),
            (certs.join("c.pem").as_path(), certs.join("k.pem").as_path())
        );
        let show = |p: &str| certs.join(p).display().to_string();
        let cases = [
            (
                r#""ca_file": "certs/none.pem""#,
                format!(
                    "ca_file {}: cannot read: No such file or directory",
                    show("none.pem")
                ),
            ),
            (
                r#""ca_file": "certs/junk.pem""#,
                format!("ca_file {}: no PEM certificate in it", show("junk.pem")),
            ),
            (
                r#""ca_file": "certs/k.pem""#,
                format!("ca_file {}: no PEM certificate in it", show("k.pem")),
            ),
            (
                r#""client_cert": "certs/c.pem", "client_key": "certs/c.pem""#,
                format!("client_key {}: no private key in it", show("c.pem")),
            ),
            (
                r#""client_cert": "certs/k.pem", "client_key": "certs/k.pem""#,
                format!("client_cert {}: no PEM certificate in it", show("k.pem")),
            ),
            (
                r#""client_cert": "certs/c.pem", "client_key": "certs/other-k.pem""#,
                format!(
                    "client_key {} is not the key of client_cert {}",
                    show("other-k.pem"),
                    show("c.pem")
                ),
            ),
        ];
        for (backend, want) in cases {
            write(backend);
            let e = load(&config).unwrap_err();
            let want = format!("config {}: backends[1]: {want}", config.display());
            assert!(
                e.starts_with(&want),
                "{backend}\n  gave: {e}\n  want: {want}"
            );
            assert!(!e.contains('\n'), "{e}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn health_paths() {
        assert!(check_health_path("/").is_ok());
        assert!(check_health_path("/healthz?full=1").is_ok());
        for bad in ["", "healthz", "/a b", "/a\tb", "/\r\n"] {
            assert!(check_health_path(bad).is_err(), "{bad:?}");
        }
    }
}
