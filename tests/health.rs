//! Health (SPEC §8, issues 4 and 11): active probes with HAProxy's
//! fall/rise thresholds, passive circuit breaker, failover, panic mode.

mod common;

use std::thread;
use std::time::{Duration, Instant};

use common::ProbeAnswer::{Silent, Status};
use common::{Client, Lb, ScriptedOrigin, backend_arg, get, scratch_file, wait_until};
use load_balancer::origin::{Origin, OriginConfig};

fn origin(name: &str) -> Origin {
    Origin::start(OriginConfig::new(name)).expect("origin")
}

fn metric(text: &str, line_prefix: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(line_prefix)?.strip_prefix(' ')?.parse().ok())
}

fn backend_up(lb: &Lb, o: &Origin) -> Option<u64> {
    let text = get(lb.port(), "/metrics").body_str();
    metric(&text, &format!("lb_backend_up{{backend=\"{}\"}}", o.addr()))
}

const PROBES: [&str; 4] = ["--health-path", "/health", "--health-interval-ms", "100"];

#[test]
fn a_backend_failing_its_probe_gets_no_traffic_and_comes_back() {
    let (a, b) = (origin("a"), origin("b"));
    let mut args = PROBES.to_vec();
    let (ba, bb) = (backend_arg(&a), backend_arg(&b));
    args.extend(["-b", &ba, "-b", &bb]);
    let lb = Lb::start(&args);
    a.set_health(500);
    let marked = Instant::now();
    assert!(wait_until(Duration::from_secs(3), || backend_up(&lb, &a) == Some(0)));
    assert!(
        marked.elapsed() < Duration::from_millis(1000),
        "down within a few intervals"
    );
    assert!(lb.wait_for_log("is down: health probe failed", Duration::from_secs(1)));
    let served = a.requests();
    for _ in 0..20 {
        assert_eq!(get(lb.port(), "/").body_str(), "hello from b\n");
    }
    assert_eq!(a.requests(), served, "a down backend receives no traffic");
    a.set_health(200);
    assert!(wait_until(Duration::from_secs(3), || backend_up(&lb, &a) == Some(1)));
    assert!(lb.wait_for_log("is up again", Duration::from_secs(1)));
    let names: Vec<String> = (0..4).map(|_| get(lb.port(), "/").body_str()).collect();
    assert!(names.iter().any(|n| n == "hello from a\n"), "{names:?}");
}

#[test]
fn killing_a_backend_mid_run_loses_no_idempotent_request() {
    let (a, b) = (origin("a"), origin("b"));
    let (ba, bb) = (backend_arg(&a), backend_arg(&b));
    let lb = Lb::start(&["-b", &ba, "-b", &bb]);
    let port = lb.port();
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let client_done = done.clone();
    let client = thread::spawn(move || {
        let (mut ok, mut failures) = (0u32, 0u32);
        let mut c = Client::connect(port);
        while !client_done.load(std::sync::atomic::Ordering::Relaxed) {
            match c.try_request("GET", "/", &[], b"") {
                Ok(r) if r.status == 200 => ok += 1,
                _ => {
                    failures += 1;
                    c = Client::connect(port);
                }
            }
        }
        (ok, failures)
    });
    assert!(wait_until(Duration::from_secs(5), || a.requests() > 20));
    a.stop();
    let after_stop = b.requests();
    assert!(wait_until(Duration::from_secs(5), || b.requests() > after_stop + 50));
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let (ok, failures) = client.join().expect("client");
    assert_eq!(failures, 0, "failover hides the dead backend ({ok} ok)");
}

/// A backend that passes its health probe but drops every other request
/// before answering: only passive failures can catch it.
fn flaky_backend() -> (std::net::SocketAddr, thread::JoinHandle<()>) {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().unwrap();
    let handle = thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(20);
        listener.set_nonblocking(true).unwrap();
        while Instant::now() < deadline {
            let Ok((mut s, _)) = listener.accept() else {
                thread::sleep(Duration::from_millis(5));
                continue;
            };
            s.set_nonblocking(false).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
            let mut buf = [0u8; 4096];
            let n = s.read(&mut buf).unwrap_or(0);
            if buf[..n].starts_with(b"GET /health ") {
                let _ = s.write_all(
                    b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                );
            }
        }
    });
    (addr, handle)
}

#[test]
fn passive_failures_mark_a_backend_down_after_three() {
    let b = origin("b");
    let (flaky, _thread) = flaky_backend();
    let (fa, bb) = (flaky.to_string(), backend_arg(&b));
    let lb = Lb::start(&["-b", &fa, "-b", &bb, "--health-path", "/health"]);
    // GET is idempotent: each failure on the flaky backend fails over to b.
    for _ in 0..10 {
        assert_eq!(get(lb.port(), "/").body_str(), "hello from b\n");
    }
    assert!(lb.wait_for_log("is down: 3 consecutive failures", Duration::from_secs(2)));
    let text = get(lb.port(), "/metrics").body_str();
    let failures = metric(
        &text,
        &format!("lb_backend_failures_total{{backend=\"{fa}\"}}"),
    );
    assert_eq!(failures, Some(3), "{text}");
    assert_eq!(backend_up(&lb, &b), Some(1));
}

#[test]
fn every_backend_down_is_503_fast_then_recovers() {
    let a = origin("a");
    let addr = a.addr();
    let mut args = PROBES.to_vec();
    let ba = backend_arg(&a);
    args.extend(["-b", &ba]);
    let lb = Lb::start(&args);
    a.stop();
    assert!(
        lb.wait_for_log("is down", Duration::from_secs(3)),
        "{}",
        lb.stderr_lines().join("\n")
    );
    let started = Instant::now();
    assert_eq!(get(lb.port(), "/").status, 503);
    assert!(started.elapsed() < Duration::from_secs(1), "no hang");
    // Recovery: the same address serves again.
    let mut cfg = OriginConfig::new("a2");
    cfg.addr = addr;
    let _back = Origin::start(cfg).expect("restart origin on the same port");
    assert!(wait_until(Duration::from_secs(3), || get(lb.port(), "/")
        .status
        == 200));
}

#[test]
fn a_silent_backend_is_504_after_the_timeout_and_counts_as_a_failure() {
    let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let silent_addr = silent.local_addr().unwrap().to_string();
    let lb = Lb::start(&[
        "-b",
        &silent_addr,
        "--response-timeout-ms",
        "300",
        "--health-interval-ms",
        "60000",
    ]);
    let started = Instant::now();
    assert_eq!(get(lb.port(), "/").status, 504);
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert!(started.elapsed() < Duration::from_secs(3));
    let text = get(lb.port(), "/metrics").body_str();
    let failures = metric(
        &text,
        &format!("lb_backend_failures_total{{backend=\"{silent_addr}\"}}"),
    );
    assert_eq!(failures, Some(1), "{text}");
    drop(silent);
}

#[test]
fn distribution_stays_even_among_the_healthy() {
    let (a, b, c) = (origin("a"), origin("b"), origin("c"));
    let mut args = PROBES.to_vec();
    let (ba, bb, bc) = (backend_arg(&a), backend_arg(&b), backend_arg(&c));
    args.extend(["-b", &ba, "-b", &bb, "-b", &bc]);
    let lb = Lb::start(&args);
    b.set_health(503);
    assert!(wait_until(Duration::from_secs(3), || backend_up(&lb, &b) == Some(0)));
    let (a0, c0) = (a.requests(), c.requests());
    let mut client = lb.client();
    for _ in 0..100 {
        assert_eq!(client.request("GET", "/", &[], b"").status, 200);
    }
    assert_eq!((a.requests() - a0, c.requests() - c0), (50, 50));
}

#[test]
fn a_post_is_retried_elsewhere_only_with_an_idempotency_key() {
    let b = origin("b");
    let (flaky, _thread) = flaky_backend();
    let (fa, bb) = (flaky.to_string(), backend_arg(&b));
    let lb = Lb::start(&["-b", &fa, "-b", &bb, "--health-path", "/health"]);
    // Round-robin starts with the first backend: the flaky one.
    let plain = lb.client().request("POST", "/echo", &[], b"x");
    assert_eq!(
        plain.status, 502,
        "a POST may have been processed: not re-sent"
    );
    assert_eq!(get(lb.port(), "/").status, 200); // b's turn
    let keyed = lb
        .client()
        .request("POST", "/echo", &[("Idempotency-Key", "k1")], b"x");
    assert_eq!(keyed.status, 200);
    assert_eq!(keyed.header("X-Origin"), Some("b"));
}

/// One scrape: `lb_backend_up` and `lb_health_check_failures_total` of the
/// backend at `addr`, and the whole text.
struct Probed {
    up: Option<u64>,
    failed: Option<u64>,
    text: String,
}

fn probed(lb: &Lb, addr: std::net::SocketAddr) -> Probed {
    let text = get(lb.port(), "/metrics").body_str();
    Probed {
        up: metric(&text, &format!("lb_backend_up{{backend=\"{addr}\"}}")),
        failed: metric(
            &text,
            &format!("lb_health_check_failures_total{{backend=\"{addr}\"}}"),
        ),
        text,
    }
}

/// A `-c` file with these backends and health thresholds; probe path,
/// interval and timeout come from the command line.
fn thresholds_config(backends: &[std::net::SocketAddr], unhealthy: u32, healthy: u32) -> String {
    let list: Vec<String> = backends
        .iter()
        .map(|a| format!(r#"{{"host": "{}", "port": {}}}"#, a.ip(), a.port()))
        .collect();
    let json = format!(
        r#"{{"backends": [{}], "health": {{"unhealthy_threshold": {unhealthy}, "healthy_threshold": {healthy}}}}}"#,
        list.join(", ")
    );
    let path = scratch_file("health.json", &json);
    path.to_str().expect("utf-8 path").to_string()
}

fn start_with_thresholds(s: &ScriptedOrigin, b: &Origin, unhealthy: u32, healthy: u32) -> Lb {
    let config = thresholds_config(&[s.addr(), b.addr()], unhealthy, healthy);
    Lb::start(&[
        "-c",
        &config,
        "--health-path",
        "/health",
        "--health-interval-ms",
        "100",
        "--health-timeout-ms",
        "300",
    ])
}

/// Waits until `s` has answered `n` probes more than `after`.
fn wait_for_probes(s: &ScriptedOrigin, after: usize, n: usize) {
    assert!(
        wait_until(Duration::from_secs(10), || s.probes().len() >= after + n),
        "{n} more probes never came: {:?}",
        s.probes()
    );
}

#[test]
fn a_proven_backend_stays_in_rotation_through_failed_probes_below_the_threshold() {
    let s = ScriptedOrigin::start("s");
    let b = origin("b");
    let lb = start_with_thresholds(&s, &b, 3, 2);
    // Two good probes answered: the first one's verdict has been applied,
    // so the backend has proven itself.
    wait_for_probes(&s, 0, 2);
    // One 500, one timeout, then two in a row: each streak stays below 3.
    s.push(&[Status(500), Silent, Status(200), Status(503), Status(503)]);
    let mut seen = None;
    assert!(
        wait_until(Duration::from_secs(10), || {
            let p = probed(&lb, s.addr());
            assert_eq!(p.up, Some(1), "taken out of rotation:\n{}", p.text);
            let done = p.failed == Some(4);
            seen = Some(p);
            done
        }),
        "four failed probes never counted: {:?}",
        seen.map(|p| p.text)
    );
    // A good probe after the script is applied too, and changes nothing.
    let after = s.probes().len();
    wait_for_probes(&s, after, 2);
    let p = probed(&lb, s.addr());
    assert_eq!((p.up, p.failed), (Some(1), Some(4)), "{}", p.text);
    assert!(
        p.text
            .lines()
            .any(|l| l == "# TYPE lb_health_check_failures_total counter"),
        "{}",
        p.text
    );
    let b_line = format!(
        "lb_health_check_failures_total{{backend=\"{}\"}} 0",
        b.addr()
    );
    assert!(p.text.lines().any(|l| l == b_line), "{}", p.text);
    assert!(
        !lb.stderr_lines().iter().any(|l| l.contains("is down")),
        "{:?}",
        lb.stderr_lines()
    );
    let mut client = lb.client();
    let names: Vec<String> = (0..4)
        .map(|_| client.request("GET", "/", &[], b"").body_str())
        .collect();
    assert!(names.iter().any(|n| n == "hello from s\n"), "{names:?}");
}

#[test]
fn a_proven_backend_is_out_after_threshold_failed_probes_and_back_after_threshold_good_ones() {
    let s = ScriptedOrigin::start("s");
    let b = origin("b");
    let lb = start_with_thresholds(&s, &b, 3, 3);
    wait_for_probes(&s, 0, 2);
    s.set_default(Status(500));
    // Out once three failed probes in a row are applied, not before.
    assert!(wait_until(Duration::from_secs(10), || {
        let p = probed(&lb, s.addr());
        let failed = p.failed.expect("the counter is exposed");
        assert!(
            p.up == Some(1) || failed >= 3,
            "down after {failed} failed probes:\n{}",
            p.text
        );
        p.up == Some(0)
    }));
    assert!(lb.wait_for_log(
        "is down: health probe failed 3 times in a row (status 500)",
        Duration::from_secs(1)
    ));
    for _ in 0..6 {
        assert_eq!(get(lb.port(), "/").body_str(), "hello from b\n");
    }
    // Back once three good probes in a row are applied, not before.
    s.set_default(Status(200));
    let good_since_last_failure = || {
        let probes = s.probes();
        probes.iter().rev().take_while(|a| a.is_good()).count()
    };
    assert!(wait_until(Duration::from_secs(10), || {
        // Probes answered by the time of the scrape bound those applied.
        let p = probed(&lb, s.addr());
        let good = good_since_last_failure();
        assert!(
            p.up == Some(0) || good >= 3,
            "up after {good} good probes:\n{}",
            p.text
        );
        p.up == Some(1)
    }));
    assert!(lb.wait_for_log("is up again", Duration::from_secs(1)));
    // Every failed probe counted once, including those while down.
    let failed = s.probes().iter().filter(|a| !a.is_good()).count() as u64;
    assert!(failed >= 3);
    let mut last = None;
    assert!(
        wait_until(Duration::from_secs(5), || {
            last = probed(&lb, s.addr()).failed;
            last == Some(failed)
        }),
        "counter {last:?}, failed probes {failed}"
    );
}

#[test]
fn a_backend_dead_at_start_is_out_after_its_first_probe() {
    // Bound but not listening: connects are refused, and no other test can
    // take the port meanwhile.
    let socket =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    let any: std::net::SocketAddr = "127.0.0.1:0".parse().expect("addr");
    socket.bind(&any.into()).expect("bind");
    let dead = socket
        .local_addr()
        .ok()
        .and_then(|a| a.as_socket())
        .expect("bound address");
    let b = origin("b");
    let (dead_arg, bb) = (dead.to_string(), backend_arg(&b));
    // One probe round only: the first verdict alone must take it out.
    let lb = Lb::start(&[
        "-b",
        &dead_arg,
        "-b",
        &bb,
        "--health-path",
        "/health",
        "--health-interval-ms",
        "60000",
    ]);
    let mut last = None;
    assert!(
        wait_until(Duration::from_secs(5), || {
            let p = probed(&lb, dead);
            let done = p.up == Some(0);
            last = Some(p);
            done
        }),
        "{:?}",
        last.map(|p| p.text)
    );
    let p = last.expect("scraped");
    assert_eq!(p.failed, Some(1), "{}", p.text);
    assert!(lb.wait_for_log(
        "is down: health probe failed (connect refused) before any success since start",
        Duration::from_secs(1)
    ));
    for _ in 0..4 {
        assert_eq!(get(lb.port(), "/").body_str(), "hello from b\n");
    }
    let text = get(lb.port(), "/metrics").body_str();
    let passive = metric(
        &text,
        &format!("lb_backend_failures_total{{backend=\"{dead}\"}}"),
    );
    assert_eq!(passive, Some(0), "no request was tried on it:\n{text}");
}
