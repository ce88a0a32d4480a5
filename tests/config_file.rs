//! The config file as a complete start (SPEC §3, issue 13 item 0): `-c FILE`
//! alone sets the listen address, port, mode, workers, strategy and the
//! rest; flags given explicitly win over the file. Real processes; the
//! invalid files are in tests/cli.rs.

mod common;

use std::time::Duration;

use common::{Lb, children, free_port, scratch_file, wait_until};
use load_balancer::origin::{Origin, OriginConfig};

/// Starts the balancer with exactly `args(port, config path)`, where the
/// config is `json(port)`; a port taken in between by another test is
/// retried with a new one.
fn start(json: impl Fn(u16) -> String, args: impl Fn(u16, &str) -> Vec<String>) -> (Lb, u16) {
    let mut last = String::new();
    for _ in 0..3 {
        let port = free_port();
        let file = scratch_file("config-file.json", &json(port));
        let args = args(port, file.to_str().expect("utf-8 path"));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        match Lb::start_exact(&args, port) {
            Ok(lb) => return (lb, port),
            Err(log) if log.contains("in use") => last = log,
            Err(log) => panic!("{args:?} did not start:\n{log}"),
        }
    }
    panic!("no free port:\n{last}");
}

fn backends(origins: &[&Origin]) -> String {
    let list: Vec<String> = origins
        .iter()
        .map(|o| format!(r#"{{"host": "127.0.0.1", "port": {}}}"#, o.addr().port()))
        .collect();
    list.join(", ")
}

#[test]
fn the_file_alone_sets_listener_mode_workers_and_strategy() {
    let a = Origin::start(OriginConfig::new("a")).expect("origin a");
    let b = Origin::start(OriginConfig::new("b")).expect("origin b");
    let list = backends(&[&a, &b]);
    let (lb, port) = start(
        |port| {
            format!(
                r#"{{"backends": [{list}], "listen": "127.0.0.1", "port": {port},
                    "mode": "mp", "workers": 2, "strategy": "round_robin",
                    "loglevel": "info", "connect_timeout_ms": 500}}"#
            )
        },
        |_, file| vec!["-c".into(), file.into()],
    );
    // mp with two workers: the master has two children.
    assert!(
        wait_until(Duration::from_secs(5), || children(lb.pid()).len() == 2),
        "children: {:?}",
        children(lb.pid())
    );
    let mut client = lb.client();
    let mut seen = Vec::new();
    for _ in 0..4 {
        let r = client.request("GET", "/", &[], b"");
        assert_eq!(r.status, 200);
        seen.push(r.header("X-Origin").unwrap_or_default().to_string());
    }
    // One keep-alive connection is one worker: its rotation alternates.
    seen.sort();
    assert_eq!(seen, ["a", "a", "b", "b"]);
    assert_eq!(lb.port(), port);
}

#[test]
fn explicit_flags_win_over_the_file() {
    let a = Origin::start(OriginConfig::new("a")).expect("origin");
    let list = backends(&[&a]);
    let taken = free_port();
    // The file says mp on one port with least_conn; the flags say sp on
    // another with random: the flags' port, mode and strategy are used.
    let (lb, port) = start(
        |_| {
            format!(
                r#"{{"backends": [{list}], "listen": "127.0.0.1", "port": {taken},
                    "mode": "mp", "workers": 3, "strategy": "least_conn"}}"#
            )
        },
        |port, file| {
            let port = port.to_string();
            ["-c", file, "-p", &port, "--mode", "sp", "-s", "random"]
                .map(String::from)
                .to_vec()
        },
    );
    // The strategy by its name, not its Rust spelling (`Random`).
    let line = format!("serving on 127.0.0.1:{port} with 1 backend(s), strategy random");
    assert!(
        lb.wait_for_log(&line, Duration::from_secs(5)),
        "{:?}",
        lb.stderr_lines()
    );
    assert!(children(lb.pid()).is_empty(), "sp forks no worker");
    assert_eq!(lb.client().request("GET", "/", &[], b"").status, 200);
}

#[test]
fn access_log_keys_write_the_log() {
    let a = Origin::start(OriginConfig::new("a")).expect("origin");
    let list = backends(&[&a]);
    let log = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("config-access-{}.json", std::process::id()));
    let _ = std::fs::remove_file(&log);
    let (lb, _) = start(
        |port| {
            format!(
                r#"{{"backends": [{list}], "listen": "127.0.0.1", "port": {port},
                    "mode": "sp", "strategy": "weighted", "access_log": "{}",
                    "access_log_format": "json"}}"#,
                log.display()
            )
        },
        |_, file| vec!["-c".into(), file.into()],
    );
    assert!(lb.wait_for_log("strategy weighted", Duration::from_secs(5)));
    assert_eq!(lb.client().request("GET", "/", &[], b"").status, 200);
    let text = || std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        wait_until(Duration::from_secs(5), || !text().is_empty()),
        "no access log line"
    );
    let v: serde_json::Value = serde_json::from_str(text().trim_end()).expect("a JSON line");
    assert_eq!(v["status"], 200);
}
