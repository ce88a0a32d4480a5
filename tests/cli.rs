//! The binary's start-up contract (SPEC §1, §3): bad command lines and config
//! files exit 1 with one stderr line naming the culprit; `--help`,
//! `--version` and `--check` print to stdout and exit 0. Runs the real
//! binary; never starts a proxy (every case here fails or exits before
//! serving).

use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

struct Outcome {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// Runs the binary, killing it after 10 s so a regression that starts the
/// proxy instead of failing cannot hang the suite.
fn run(args: &[&str]) -> Outcome {
    let mut child = Command::new(env!("CARGO_BIN_EXE_load_balancer"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn load_balancer");
    // Drain both pipes on threads so a chatty child cannot block on a full one.
    let mut out = child.stdout.take().expect("stdout");
    let mut err = child.stderr.take().expect("stderr");
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        out.read_to_string(&mut s).map(|_| s)
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        err.read_to_string(&mut s).map(|_| s)
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("load_balancer {args:?} still running after 10 s");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    Outcome {
        code: status.code(),
        stdout: out.join().expect("stdout thread").expect("read stdout"),
        stderr: err.join().expect("stderr thread").expect("read stderr"),
    }
}

/// Asserts exit 1, nothing on stdout, and exactly one stderr line
/// `load_balancer: …` containing every fragment; returns that line.
fn fails(args: &[&str], fragments: &[&str]) -> String {
    let o = run(args);
    assert_eq!(o.code, Some(1), "{args:?}: stderr {:?}", o.stderr);
    assert_eq!(o.stdout, "", "{args:?}");
    let line = o
        .stderr
        .strip_suffix('\n')
        .unwrap_or_else(|| panic!("{args:?}: {:?}", o.stderr));
    assert!(
        !line.contains('\n'),
        "{args:?}: more than one line: {:?}",
        o.stderr
    );
    assert!(line.starts_with("load_balancer: "), "{args:?}: {line}");
    for f in fragments {
        assert!(line.contains(f), "{args:?}: {line:?} lacks {f:?}");
    }
    line.to_string()
}

/// A fresh file under cargo's per-target scratch directory.
fn config_file(contents: &str) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("cli-tests");
    std::fs::create_dir_all(&dir).expect("scratch dir");
    let path = dir.join(format!(
        "lb-{}-{}.json",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::write(&path, contents).expect("write config");
    path
}

#[test]
fn no_backend() {
    fails(&[], &["no backend", "-b", "-c"]);
    fails(&["-p", "9000", "--mode", "sp"], &["no backend"]);
}

#[test]
fn bad_backend_specs_are_named() {
    for (spec, why) in [
        ("127.0.0.1", "no port"),
        ("127.0.0.1:", "empty port"),
        ("127.0.0.1:99999", "not a number"),
        ("::1:8080", "bracketed"),
        ("[::1:8080", "unbalanced"),
        ("ftp://127.0.0.1", "unsupported scheme"),
        ("http://127.0.0.1/app", "no path"),
        ("127.0.0.1:80,weight=0", "at least 1"),
        ("127.0.0.1:80,weight=x", "not a whole number"),
        ("127.0.0.1:80,backup", "unknown option 'backup'"),
        ("bad_host name:80", "not a host name"),
    ] {
        fails(
            &["-b", "127.0.0.1:9001", "-b", spec],
            &[&format!("bad backend '{spec}'"), why],
        );
    }
}

#[test]
fn unresolvable_backend_host() {
    fails(
        &["-b", "no-such-host.invalid:80"],
        &["cannot resolve backend host 'no-such-host.invalid'"],
    );
}

#[test]
fn a_backend_at_our_own_listen_address_would_loop() {
    // Loopback reaches the default wildcard listener.
    fails(
        &["-b", "127.0.0.1:9001", "-b", "127.0.0.1:8080"],
        &[
            "backend 127.0.0.1:8080",
            "own listen address 0.0.0.0:8080",
            "loop",
        ],
    );
    let path = config_file(r#"{"backends": [{"host": "127.0.0.1", "port": 9005}]}"#);
    fails(
        &["-c", path.to_str().expect("utf-8 path"), "-p", "9005"],
        &["backend 127.0.0.1:9005", "own listen address"],
    );
}

#[test]
fn backend_with_config_file() {
    let path = config_file(r#"{"backends": [{"host": "127.0.0.1", "port": 9001}]}"#);
    let p = path.to_str().expect("utf-8 path");
    fails(
        &["-b", "127.0.0.1:9001", "-c", p],
        &["-b/--backend", "-c/--config"],
    );
}

#[test]
fn missing_config_file() {
    let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("no-such-config.json");
    let p = path.to_str().expect("utf-8 path");
    fails(
        &["-c", p],
        &[&format!(
            "config {p}: cannot read: No such file or directory"
        )],
    );
}

#[test]
fn invalid_json_names_line_and_column() {
    let path =
        config_file("{\n  \"backends\": [\n    {\"host\": \"127.0.0.1\" \"port\": 9001}\n  ]\n}\n");
    let p = path.to_str().expect("utf-8 path");
    fails(
        &["-c", p],
        &[
            &format!("config {p}: "),
            "expected `,` or `}` at line 3 column 26",
        ],
    );
}

#[test]
fn unknown_key_in_config() {
    let path = config_file(
        "{\n  \"backends\": [{\"host\": \"127.0.0.1\", \"port\": 9001}],\n  \"stratgy\": \"random\"\n}\n",
    );
    let p = path.to_str().expect("utf-8 path");
    fails(
        &["-c", p],
        &[
            &format!("config {p}: "),
            "unknown key \"stratgy\" (did you mean \"strategy\"?) at line 3 column 11",
        ],
    );
    let path = config_file(r#"{"backends": [{"host": "127.0.0.1", "port": 9001, "weigth": 2}]}"#);
    fails(
        &["-c", path.to_str().expect("utf-8 path")],
        &["unknown key \"backends[0].weigth\" (did you mean \"backends[0].weight\"?)"],
    );
}

#[test]
fn invalid_values_in_config() {
    for (json, why) in [
        (
            r#"{"backends": []}"#,
            "backends: the list is empty: give at least one backend",
        ),
        (r#"{"strategy": "random"}"#, "missing field `backends`"),
        (
            r#"{"backends": [{"host": "127.0.0.1", "port": 9001, "weight": 0}]}"#,
            "backends[0].weight: invalid value: integer `0`, expected a whole number, at least 1",
        ),
        (
            r#"{"backends": [{"host": "127.0.0.1", "port": 0}]}"#,
            "backends[0].port: invalid value: integer `0`, expected a port number 1-65535",
        ),
        (
            r#"{"backends": [{"host": "127.0.0.1", "port": 9001}], "strategy": "fastest"}"#,
            "unknown variant `fastest`",
        ),
        (
            r#"{"backends": [{"host": "127.0.0.1", "port": 9001}], "health": {"path": "x"}}"#,
            "must start with '/'",
        ),
        (
            r#"{"backends": [{"host": "a b", "port": 9001}]}"#,
            "backends[0]: bad backend host 'a b'",
        ),
    ] {
        let path = config_file(json);
        let p = path.to_str().expect("utf-8 path");
        fails(&["-c", p], &[&format!("config {p}: "), why]);
    }
}

#[test]
fn invalid_flags() {
    let b = ["-b", "127.0.0.1:9001"];
    for (extra, why) in [
        (
            &["-w", "0"][..],
            "'--workers <N>': expected a whole number, at least 1",
        ),
        (&["--health-interval-ms", "0"], "'--health-interval-ms <N>'"),
        (&["--connect-timeout-ms", "0"], "'--connect-timeout-ms <N>'"),
        (&["--health-path", "healthz"], "must start with '/'"),
        (
            &["--metrics-addr", "localhost"],
            "'--metrics-addr <ADDR:PORT>'",
        ),
        (&["-H", "nowhere"], "'--host <ADDR>'"),
        (
            &["-p", "http"],
            "invalid value 'http' for '--port <PORT>': expected a port number 1-65535",
        ),
        (&["-s", "fastest"], "'fastest'"),
        (&["--mode", "threads"], "'threads'"),
        (&["-l", "verbose"], "'verbose'"),
        (&["--frobnicate"], "'--frobnicate'"),
    ] {
        let args: Vec<&str> = b.iter().chain(extra).copied().collect();
        let line = fails(&args, &[why]);
        assert!(!line.contains("error:"), "{line}");
    }
}

#[test]
fn help_groups_options_and_shows_defaults() {
    let o = run(&["--help"]);
    assert_eq!(o.code, Some(0), "{}", o.stderr);
    assert_eq!(o.stderr, "");
    for want in [
        "Usage: load_balancer [OPTIONS]",
        "Listening:",
        "Backends:",
        "Processes:",
        "Health:",
        "Timeouts:",
        "Logging and debugging:",
        "TLS:",
        "-p, --port <PORT>",
        "-b, --backend <SPEC>",
        "-c, --config <FILE>",
        "--health-timeout-ms <N>",
        "--response-timeout-ms <N>",
        "[default: 8080]",
        "[default: 0.0.0.0]",
        "[default: round_robin]",
        "[default: mp]",
        "[default: info]",
        "[default: 5000]",
    ] {
        assert!(
            o.stdout.contains(want),
            "--help lacks {want:?}:\n{}",
            o.stdout
        );
    }
    assert_eq!(run(&["-h"]).stdout, o.stdout);
}

#[test]
fn version() {
    for flag in ["-V", "--version"] {
        let o = run(&[flag]);
        assert_eq!(o.code, Some(0), "{}", o.stderr);
        // --version adds build details (tests/operator.rs checks them).
        let first = format!("load_balancer {}\n", env!("CARGO_PKG_VERSION"));
        assert!(o.stdout.starts_with(&first), "{}", o.stdout);
        assert_eq!(o.stderr, "");
    }
}

/// A file with one backend and `extra` top-level keys.
fn with_keys(extra: &str) -> String {
    format!(r#"{{"backends": [{{"host": "127.0.0.1", "port": 9001}}]{extra}}}"#)
}

#[test]
fn every_key_with_a_bad_value_is_named() {
    for (extra, why) in [
        (
            r#", "listen": "0.0.0.0:8080""#,
            "listen: invalid value: string \"0.0.0.0:8080\", expected an address without a port",
        ),
        (
            r#", "listen": "any""#,
            "listen: invalid value: string \"any\", expected an IPv4 or IPv6 address",
        ),
        (
            r#", "port": 0"#,
            "port: invalid value: integer `0`, expected a port number 1-65535",
        ),
        (
            r#", "port": "80""#,
            "port: invalid type: string \"80\", expected a port number 1-65535",
        ),
        (
            r#", "workers": 0"#,
            "workers: invalid value: integer `0`, expected a whole number, at least 1",
        ),
        (
            r#", "mode": "threads""#,
            "mode: unknown variant `threads`, expected `mp` or `sp`",
        ),
        (
            r#", "loglevel": "trace""#,
            "loglevel: unknown variant `trace`",
        ),
        (
            r#", "strategy": "fastest""#,
            "strategy: unknown variant `fastest`",
        ),
        (
            r#", "metrics_addr": "9100""#,
            "metrics_addr: invalid value: string \"9100\", expected ADDR:PORT",
        ),
        (
            r#", "pid_file": """#,
            "pid_file: invalid value: string \"\", expected a file name",
        ),
        (
            r#", "insecure": "yes""#,
            "insecure: invalid type: string \"yes\", expected a boolean",
        ),
        (
            r#", "ca_file": 3"#,
            "ca_file: invalid type: integer `3`, expected a file name",
        ),
        (
            r#", "trace": null, "tls_trace": 1"#,
            "tls_trace: invalid type: integer `1`, expected a boolean",
        ),
        (
            r#", "access_log": """#,
            "access_log: invalid value: string \"\", expected a file name",
        ),
        (
            r#", "idle_timeout_ms": 0"#,
            "idle_timeout_ms: invalid value: integer `0`, expected a whole number of milliseconds",
        ),
        (
            r#", "health": {"timeout_ms": -1}"#,
            "health.timeout_ms: invalid value: integer `-1`",
        ),
        (
            r#", "health": {"unhealthy_threshold": 0}"#,
            "health.unhealthy_threshold: invalid value: integer `0`, expected a whole number",
        ),
        (
            r#", "workers": 2, "wrokers": 2"#,
            "unknown key \"wrokers\" (did you mean \"workers\"?)",
        ),
        (r#", "ca_file": "no-such-ca.pem""#, "ca_file "),
        (
            r#", "access_log": "/nonexistent/dir/access.log""#,
            "access_log /nonexistent/dir/access.log: the directory /nonexistent/dir does not exist",
        ),
        (
            r#", "port": 9100, "metrics_addr": "127.0.0.1:9100""#,
            "metrics_addr 127.0.0.1:9100 overlaps the listen address 0.0.0.0:9100",
        ),
    ] {
        let path = config_file(&with_keys(extra));
        let p = path.to_str().expect("utf-8 path");
        let line = fails(&["-c", p], &[&format!("config {p}: "), why]);
        assert!(!line.contains("nonzero") && !line.contains("u16"), "{line}");
        // --check gives the same single line and exit 1.
        fails(&["--check", "-c", p], &[why]);
    }
}

/// Runs `--check` with `args`, asserts exit 0 and nothing on stderr, and
/// returns the report.
fn check_ok(args: &[&str]) -> String {
    let full: Vec<&str> = ["--check"].iter().chain(args).copied().collect();
    let o = run(&full);
    assert_eq!(o.code, Some(0), "{full:?}: {}", o.stderr);
    assert_eq!(o.stderr, "", "{full:?}");
    o.stdout
}

#[test]
fn every_key_is_accepted_and_flags_given_win() {
    let path = config_file(&with_keys(
        r#", "listen": "127.0.0.1", "port": 9100, "workers": 3, "mode": "mp",
           "loglevel": "warn", "strategy": "least_conn",
           "metrics_addr": "127.0.0.1:9101", "pid_file": "lb.pid",
           "insecure": false, "trace": true, "tls_trace": true, "access_log": "-",
           "head_timeout_ms": 1000, "body_timeout_ms": 2000, "idle_timeout_ms": 3000,
           "connect_timeout_ms": 4000, "response_timeout_ms": 5000,
           "health": {"path": "/h", "interval_ms": 1500, "timeout_ms": 500,
                      "unhealthy_threshold": 4, "healthy_threshold": 5}"#,
    ));
    let p = path.to_str().expect("utf-8 path");
    let report = check_ok(&["-c", p]);
    let pid = path.with_file_name("lb.pid");
    for want in [
        format!("config {p}: ok\n"),
        "listen 127.0.0.1:9100, mode mp, 3 worker(s), strategy least_conn\n".into(),
        "backend 127.0.0.1:9001 at 127.0.0.1:9001, weight 1, plain\n".into(),
        "health GET /h every 1.5 s, timeout 500 ms, down after 4 failure(s), up after 5 success(es)\n".into(),
        "timeouts head 1 s, body 2 s, idle 3 s, connect 4 s, response 5 s\n".into(),
        "metrics on 127.0.0.1:9101 only\n".into(),
        "log level warn, trace, tls trace\n".into(),
        format!("pid file {}\n", pid.display()),
        "access log - (combined)\n".into(),
    ] {
        assert!(report.contains(&want), "lacks {want:?}:\n{report}");
    }
    let report = check_ok(&[
        "-c",
        p,
        "-p",
        "9200",
        "-H",
        "::1",
        "-w",
        "2",
        "-s",
        "random",
        "-l",
        "debug",
        "--metrics-addr",
        "[::1]:9201",
    ]);
    for want in [
        "listen [::1]:9200, mode mp, 2 worker(s), strategy random\n",
        "metrics on [::1]:9201 only\n",
        "log level debug, trace, tls trace\n",
    ] {
        assert!(report.contains(want), "lacks {want:?}:\n{report}");
    }
    let report = check_ok(&["-c", p, "--mode", "sp", "--health-path", "/cli"]);
    assert!(
        report.contains(
            "listen 127.0.0.1:9100, mode sp (one in-process worker), strategy least_conn\n"
        ),
        "{report}"
    );
    assert!(report.contains("health GET /cli every 1.5 s"), "{report}");
}

#[test]
fn check_prints_the_resolved_backends_and_exits_0() {
    let report = check_ok(&[
        "-b",
        "localhost:9001",
        "-b",
        "https://127.0.0.1:8443,weight=3",
        "-w",
        "2",
    ]);
    let lines: Vec<&str> = report.lines().collect();
    assert_eq!(lines[0], "command line: ok");
    assert_eq!(
        lines[1],
        "listen 0.0.0.0:8080, mode mp, 2 worker(s), strategy round_robin"
    );
    // The name, then the address it resolved to (localhost: v4 or v6).
    assert!(
        lines[2] == "backend localhost:9001 at 127.0.0.1:9001, weight 1, plain"
            || lines[2] == "backend localhost:9001 at [::1]:9001, weight 1, plain",
        "{report}"
    );
    assert_eq!(
        lines[3],
        "backend 127.0.0.1:8443 at 127.0.0.1:8443, weight 3, TLS"
    );
    assert_eq!(
        lines.iter().filter(|l| l.starts_with("health ")).count(),
        1,
        "{report}"
    );
}

#[test]
fn check_fails_with_one_line_on_a_bad_file_or_host() {
    let path = config_file("{\n  \"backends\": [{\"host\": \"127.0.0.1\", \"port\": 9001}],\n}\n");
    let p = path.to_str().expect("utf-8 path");
    fails(
        &["--check", "-c", p],
        &[
            &format!("config {p}: "),
            "trailing comma at line 3 column 1",
        ],
    );
    let path = config_file(r#"{"backends": [{"host": "no-such-host.invalid", "port": 80}]}"#);
    let p = path.to_str().expect("utf-8 path");
    fails(
        &["--check", "-c", p],
        &["backends[0]: cannot resolve backend host 'no-such-host.invalid'"],
    );
    fails(
        &["--check", "-b", "no-such-host.invalid:80"],
        &["cannot resolve backend host 'no-such-host.invalid'"],
    );
    fails(&["--check"], &["no backend"]);
    fails(
        &["--check", "-b", "127.0.0.1:9001", "-c", p],
        &["-b/--backend cannot be combined with -c/--config"],
    );
}

#[test]
fn check_binds_no_port() {
    // The port is taken, as it is while the running balancer holds it: a
    // check before a restart must still pass.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("addr").port().to_string();
    let metrics = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let metrics_addr = metrics.local_addr().expect("addr").to_string();
    let report = check_ok(&[
        "-b",
        "127.0.0.1:9001",
        "-H",
        "127.0.0.1",
        "-p",
        &port,
        "--metrics-addr",
        &metrics_addr,
        "--mode",
        "sp",
    ]);
    assert!(
        report.contains(&format!("listen 127.0.0.1:{port}")),
        "{report}"
    );
}

#[test]
fn bad_values_say_what_the_flag_takes_in_operator_words() {
    let b = ["-b", "127.0.0.1:9001"];
    for (extra, line) in [
        (
            &["-p", "0"][..],
            "invalid value '0' for '--port <PORT>': expected a port number 1-65535",
        ),
        (
            &["-p", "-1"],
            "invalid value '-1' for '--port <PORT>': expected a port number 1-65535",
        ),
        (
            &["-p"],
            "a value is required for '--port <PORT>' but none was supplied (expected a port number 1-65535)",
        ),
        (
            &["-w"],
            "a value is required for '--workers <N>' but none was supplied (expected a whole number, at least 1)",
        ),
        (
            &["-H"],
            "a value is required for '--host <ADDR>' but none was supplied (expected an IPv4 or IPv6 address such as 0.0.0.0 or ::)",
        ),
        (
            &["--mode"],
            "a value is required for '--mode <mp|sp>' but none was supplied (expected one of: mp, sp)",
        ),
        (
            &["-w", "-2"],
            "invalid value '-2' for '--workers <N>': expected a whole number, at least 1",
        ),
        (
            &["--idle-timeout-ms", "1.5"],
            "invalid value '1.5' for '--idle-timeout-ms <N>': expected a whole number of milliseconds, at least 1",
        ),
        (
            &["-H", "[::]:80"],
            "invalid value '[::]:80' for '--host <ADDR>': expected an address without a port (give the port with -p or the \"port\" key)",
        ),
        (
            &["--health-path", "/a\nb"],
            "invalid value '/a\\nb' for '--health-path <PATH>': must not contain spaces or control characters",
        ),
    ] {
        let args: Vec<&str> = b.iter().chain(extra).copied().collect();
        let got = fails(&args, &[]);
        assert_eq!(got, format!("load_balancer: {line}"), "{args:?}");
        assert!(!got.contains("()") && !got.contains("one of: )"), "{got}");
    }
}

#[test]
fn help_tells_the_truth_about_the_config_file() {
    let o = run(&["--help"]);
    assert_eq!(o.code, Some(0));
    assert!(!o.stdout.contains("hot-reloaded"), "{}", o.stdout);
    assert!(!o.stdout.contains("replace -b"), "{}", o.stdout);
    for want in [
        "-c, --config <FILE>",
        "JSON config file, reloaded on change and SIGHUP",
        "--dns-interval-ms <N>",
        "--check",
        "exit 0 or 1; serves nothing",
        "file is watched and re-read on change and on SIGHUP",
        "listen, port, workers and mode need SIGUSR2",
        "[default: on the listen port]",
    ] {
        assert!(
            o.stdout.contains(want),
            "--help lacks {want:?}:\n{}",
            o.stdout
        );
    }
}
