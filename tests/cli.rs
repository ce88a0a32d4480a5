//! The binary's start-up contract (SPEC §1, §3): bad command lines and config
//! files exit 1 with one stderr line naming the culprit; `--help` and
//! `--version` print to stdout and exit 0. Runs the real binary; never starts
//! a proxy (every case here fails or exits before serving).

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
            "unknown field `stratgy`",
            "at line 3 column 11",
        ],
    );
    let path = config_file(r#"{"backends": [{"host": "127.0.0.1", "port": 9001, "weigth": 2}]}"#);
    fails(
        &["-c", path.to_str().expect("utf-8 path")],
        &["unknown field `weigth`"],
    );
}

#[test]
fn invalid_values_in_config() {
    for (json, why) in [
        (r#"{"backends": []}"#, "\"backends\" is empty"),
        (r#"{"strategy": "random"}"#, "missing field `backends`"),
        (
            r#"{"backends": [{"host": "127.0.0.1", "port": 9001, "weight": 0}]}"#,
            "nonzero",
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
        (&["-w", "0"][..], "'--workers <N>': must be at least 1"),
        (&["--health-interval-ms", "0"], "'--health-interval-ms <N>'"),
        (&["--connect-timeout-ms", "0"], "'--connect-timeout-ms <N>'"),
        (&["--health-path", "healthz"], "must start with '/'"),
        (
            &["--metrics-addr", "localhost"],
            "'--metrics-addr <ADDR:PORT>'",
        ),
        (&["-H", "nowhere"], "'--host <ADDR>'"),
        (&["-p", "http"], "'--port <PORT>'"),
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
