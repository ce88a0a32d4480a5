//! Health (SPEC §8, issue 4): active probes, passive circuit breaker,
//! failover, panic mode.

mod common;

use std::thread;
use std::time::{Duration, Instant};

use common::{Client, Lb, backend_arg, get, wait_until};
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
    assert!(wait_until(Duration::from_secs(3), || {
        lb.stderr_lines().iter().any(|l| l.contains("is down"))
    }));
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
