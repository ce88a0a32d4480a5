//! Backends given by name follow DNS (issue 13 item 4): re-resolved every
//! `--dns-interval-ms`, each address an endpoint, addresses that come and
//! go applied as a reload is (drained, not cut), a failed lookup keeping
//! the last good addresses. Names are answered by the test hosts file
//! (`LB_TEST_HOSTS`), which the balancer re-reads on every lookup; the
//! addresses are loopback ones (127.0.0.2, 127.0.0.3) sharing one port, as
//! the endpoints of one name do.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use common::load::{Load, SlowOrigin};
use common::{Client, Lb, wait_until};
use load_balancer::origin::{Origin, OriginConfig};

const APPLY: Duration = Duration::from_secs(3);
const BIN: &str = env!("CARGO_BIN_EXE_load_balancer");

fn hosts_file(tag: &str) -> PathBuf {
    static N: AtomicU32 = AtomicU32::new(0);
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"));
    dir.join(format!(
        "dns-{tag}-{}-{}.hosts",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ))
}

/// Atomic, so a lookup never reads half a file.
fn set_hosts(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).expect("write hosts");
    std::fs::rename(&tmp, path).expect("rename hosts");
}

fn start(hosts: &Path, args: &[&str]) -> Lb {
    let env = [("LB_TEST_HOSTS", hosts.to_str().expect("utf-8 path"))];
    Lb::start_env(Path::new(BIN), args, &env)
}

fn origin_at(name: &str, addr: SocketAddr) -> Origin {
    let mut cfg = OriginConfig::new(name);
    cfg.addr = addr;
    Origin::start(cfg).expect("origin")
}

fn metric(port: u16, series: &str) -> Option<f64> {
    let text = common::get(port, "/metrics").body_str();
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

fn count_lines(lb: &Lb, needle: &str) -> usize {
    lb.stderr_lines()
        .iter()
        .filter(|l| l.contains(needle))
        .count()
}

#[test]
fn a_name_gains_and_loses_addresses_under_load() {
    let slow = SlowOrigin::start("127.0.0.2:0".parse().unwrap());
    let port = slow.addr.port();
    let b = origin_at("b", SocketAddr::from(([127, 0, 0, 3], port)));
    let hosts = hosts_file("moves");
    set_hosts(&hosts, "api.test 127.0.0.2\n");
    let backend = format!("api.test:{port}");
    let lb = start(
        &hosts,
        &[
            "--mode",
            "mp",
            "-w",
            "2",
            "-b",
            &backend,
            "--dns-interval-ms",
            "200",
            "--health-interval-ms",
            "200",
            "--health-path",
            "/health",
            "-l",
            "debug",
        ],
    );
    let load = Load::start(lb.port());
    assert!(load.wait_for("slow", Instant::now(), APPLY));

    // A second address: a second endpoint, serving and probed.
    let t = Instant::now();
    set_hosts(&hosts, "api.test 127.0.0.2 127.0.0.3\n");
    assert!(load.wait_for("b", t, APPLY), "{:#?}", lb.stderr_lines());
    let line = format!("dns: {backend} now 127.0.0.2, 127.0.0.3 (added 127.0.0.3)");
    assert!(lb.wait_for_log(&line, APPLY), "{:#?}", lb.stderr_lines());
    let up_b = format!("lb_backend_up{{backend=\"{backend}@127.0.0.3\"}}");
    b.set_health(503);
    assert!(
        wait_until(APPLY, || metric(lb.port(), &up_b) == Some(0.0)),
        "the new endpoint is probed: {:?}",
        metric(lb.port(), &up_b)
    );
    b.set_health(200);
    assert!(wait_until(APPLY, || metric(lb.port(), &up_b) == Some(1.0)));
    // The first endpoint kept its label: its series goes on.
    let up_a = format!("lb_backend_up{{backend=\"{backend}\"}}");
    assert_eq!(metric(lb.port(), &up_a), Some(1.0));

    // The first address goes while a request is in flight on it.
    let lb_port = lb.port();
    // Round robin: asked until the first address gets it (bounded).
    let client = thread::spawn(move || {
        for _ in 0..20 {
            let mut c = Client::connect(lb_port);
            c.set_read_timeout(Duration::from_secs(10));
            let r = c.request("GET", "/slow", &[], b"");
            if r.header("x-origin") == Some("slow") {
                return (r, Instant::now());
            }
        }
        panic!("/slow never reached the first address");
    });
    slow.arrived
        .recv_timeout(APPLY)
        .expect("the slow request reached the first address");
    set_hosts(&hosts, "api.test 127.0.0.3\n");
    let line = format!("dns: {backend} now 127.0.0.3 (removed 127.0.0.2)");
    assert!(lb.wait_for_log(&line, APPLY), "{:#?}", lb.stderr_lines());
    assert!(
        wait_until(APPLY, || count_lines(&lb, "applied: removed") == 2),
        "both workers took it up: {:#?}",
        lb.stderr_lines()
    );
    let applied = Instant::now();
    thread::sleep(Duration::from_millis(500));
    let counts = load.counts_since(applied);
    assert_eq!(counts.get("slow"), None, "no new request: {counts:?}");
    assert!(counts.get("b").is_some_and(|&n| n > 0), "{counts:?}");
    let (r, done) = client.join().expect("slow client");
    assert!(
        done > applied,
        "the request was in flight across the change"
    );
    assert_eq!(r.status, 200, "the request in flight completes");
    assert_eq!(r.header("x-origin"), Some("slow"));

    // A failed lookup keeps the last good address, warned once.
    set_hosts(&hosts, "api.test\n");
    let warning = "dns: cannot resolve backend host 'api.test'";
    assert!(lb.wait_for_log(warning, APPLY), "{:#?}", lb.stderr_lines());
    thread::sleep(Duration::from_millis(1000));
    assert_eq!(count_lines(&lb, warning), 1, "once per streak");
    let t = Instant::now();
    assert!(load.wait_for("b", t, APPLY), "still served");

    let failures = load.finish();
    assert!(failures.is_empty(), "failed requests: {failures:?}");
}

#[test]
fn zero_interval_resolves_on_reload_only() {
    let a = origin_at("a", "127.0.0.2:0".parse().unwrap());
    let port = a.addr().port();
    let b = origin_at("b", SocketAddr::from(([127, 0, 0, 3], port)));
    let hosts = hosts_file("zero");
    set_hosts(&hosts, "api.test 127.0.0.2\n");
    let backend = format!("api.test:{port}");
    let lb = start(&hosts, &["-b", &backend, "--dns-interval-ms", "0"]);
    set_hosts(&hosts, "api.test 127.0.0.3\n");
    thread::sleep(Duration::from_millis(800));
    for _ in 0..10 {
        let r = common::get(lb.port(), "/");
        assert_eq!(r.header("x-origin"), Some("a"), "no periodic lookup");
    }
    assert_eq!(count_lines(&lb, "dns:"), 0, "{:#?}", lb.stderr_lines());
    // A reload resolves again.
    lb.signal("HUP");
    assert!(
        wait_until(APPLY, || common::get(lb.port(), "/").header("x-origin")
            == Some("b")),
        "{:#?}",
        lb.stderr_lines()
    );
    assert!(lb.wait_for_log(&format!("removed {backend}"), APPLY));
    drop(b);
}

#[test]
fn check_prints_every_address_of_a_name() {
    let hosts = hosts_file("check");
    set_hosts(&hosts, "api.test 10.0.0.8 10.0.0.7\none.test 10.0.0.9\n");
    let out = Command::new(BIN)
        .args(["--check", "-b", "api.test:80,weight=2", "-b", "one.test:81"])
        .env("LB_TEST_HOSTS", &hosts)
        .output()
        .expect("run --check");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    for line in [
        "backend api.test:80@10.0.0.7 at 10.0.0.7:80, weight 2, plain",
        "backend api.test:80@10.0.0.8 at 10.0.0.8:80, weight 2, plain",
        "backend one.test:81 at 10.0.0.9:81, weight 1, plain",
        "names re-resolved every 30 s, each address an endpoint",
    ] {
        assert!(text.lines().any(|l| l == line), "{line:?} in\n{text}");
    }
    // A name without an address is an error, as at start.
    set_hosts(&hosts, "api.test\n");
    let out = Command::new(BIN)
        .args(["--check", "-b", "api.test:80"])
        .env("LB_TEST_HOSTS", &hosts)
        .output()
        .expect("run --check");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot resolve backend host 'api.test': no address"),
        "{err}"
    );
}

#[test]
fn sp_mode_follows_a_name_too() {
    let a = origin_at("a", "127.0.0.2:0".parse().unwrap());
    let port = a.addr().port();
    let b = origin_at("b", SocketAddr::from(([127, 0, 0, 3], port)));
    let hosts = hosts_file("sp");
    set_hosts(&hosts, "api.test 127.0.0.2\n");
    let backend = format!("api.test:{port}");
    let lb = start(&hosts, &["-b", &backend, "--dns-interval-ms", "100"]);
    let load = Load::start(lb.port());
    assert!(load.wait_for("a", Instant::now(), APPLY));
    let t = Instant::now();
    set_hosts(&hosts, "api.test 127.0.0.3\n");
    assert!(load.wait_for("b", t, APPLY), "{:#?}", lb.stderr_lines());
    let line = format!("dns: {backend} now 127.0.0.3 (added 127.0.0.3; removed 127.0.0.2)");
    assert!(lb.wait_for_log(&line, APPLY), "{:#?}", lb.stderr_lines());
    let failures = load.finish();
    assert!(failures.is_empty(), "failed requests: {failures:?}");
    drop((a, b));
}
