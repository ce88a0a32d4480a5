//! Load-balancing strategies seen from outside (SPEC §1, §5; README
//! "Strategies"): which origin answers is read from its `X-Origin` header.

mod common;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use common::{Client, Lb, Response, backend_arg, get, wait_until};
use load_balancer::origin::{Origin, OriginConfig};

fn origins(names: &[&str]) -> Vec<Origin> {
    names
        .iter()
        .map(|n| Origin::start(OriginConfig::new(n)).expect("origin starts"))
        .collect()
}

/// `-s <strategy> -b <o1> -b <o2> ...`, each backend spec with `suffix`.
fn lb_args(strategy: &str, origins: &[&Origin], suffixes: &[&str]) -> Vec<String> {
    let mut args = vec!["-s".to_string(), strategy.to_string()];
    for (i, o) in origins.iter().enumerate() {
        args.push("-b".into());
        args.push(format!(
            "{}{}",
            backend_arg(o),
            suffixes.get(i).copied().unwrap_or("")
        ));
    }
    args
}

fn start(args: &[String]) -> Lb {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Lb::start(&args)
}

fn origin_of(r: &Response) -> String {
    assert_eq!(r.status, 200, "{}", r.body_str());
    r.header("x-origin")
        .unwrap_or_else(|| panic!("no X-Origin: {r:?}"))
        .to_string()
}

fn count<'a>(names: impl IntoIterator<Item = &'a String>) -> HashMap<&'a str, usize> {
    let mut counts = HashMap::new();
    for n in names {
        *counts.entry(n.as_str()).or_insert(0) += 1;
    }
    counts
}

// ------------------------------------------------------------- round_robin

#[test]
fn round_robin_rotates_strictly_over_three_backends() {
    let o = origins(&["a", "b", "c"]);
    let lb = start(&lb_args("round_robin", &[&o[0], &o[1], &o[2]], &[]));
    // Fresh connections, then one keep-alive connection: balancing is per
    // request either way, and the rotation just continues.
    let mut names: Vec<String> = (0..30).map(|_| origin_of(&get(lb.port(), "/"))).collect();
    let mut c = lb.client();
    names.extend((0..30).map(|_| origin_of(&c.request("GET", "/", &[], b""))));
    let first: Vec<&String> = names[..3].iter().collect();
    assert!(
        first[0] != first[1] && first[1] != first[2] && first[0] != first[2],
        "{names:?}"
    );
    for (i, n) in names.iter().enumerate() {
        assert_eq!(n, &names[i % 3], "request {i}: {names:?}");
    }
}

#[test]
fn round_robin_is_the_default() {
    let o = origins(&["a", "b"]);
    let lb = Lb::start(&["-b", &backend_arg(&o[0]), "-b", &backend_arg(&o[1])]);
    let names: Vec<String> = (0..10).map(|_| origin_of(&get(lb.port(), "/"))).collect();
    for pair in names.windows(2) {
        assert_ne!(pair[0], pair[1], "{names:?}");
    }
}

#[test]
fn round_robin_skips_a_backend_that_refuses_connections() {
    let o = origins(&["a", "b", "c"]);
    let lb = start(&lb_args("round_robin", &[&o[0], &o[1], &o[2]], &[]));
    o[1].stop();
    let names: Vec<String> = (0..30)
        .map(|i| {
            let r = get(lb.port(), &format!("/?{i}"));
            origin_of(&r)
        })
        .collect();
    let counts = count(&names);
    assert_eq!(counts.get("b"), None, "{names:?}");
    assert!(counts["a"] >= 10 && counts["c"] >= 10, "{counts:?}");
}

// ---------------------------------------------------------------- weighted

#[test]
fn weighted_one_to_three_is_exact_and_smooth() {
    let o = origins(&["a", "b"]);
    let lb = start(&lb_args(
        "weighted",
        &[&o[0], &o[1]],
        &[",weight=1", ",weight=3"],
    ));
    let mut c = lb.client();
    let names: Vec<String> = (0..400)
        .map(|_| origin_of(&c.request("GET", "/", &[], b"")))
        .collect();
    let counts = count(&names);
    let a = counts.get("a").copied().unwrap_or(0);
    let b = counts.get("b").copied().unwrap_or(0);
    assert_eq!(a + b, 400);
    // 1:3 within ±5 % of the total (smooth WRR is in fact exact).
    assert!((80..=120).contains(&a), "a={a} b={b}");
    // Smooth: b a b b repeated, so every 4 consecutive picks hold one a
    // (a plain weighted rotation would give a b b b and runs of six b).
    for (i, w) in names.windows(4).enumerate() {
        let a_in_window = w.iter().filter(|n| *n == "a").count();
        assert_eq!(a_in_window, 1, "window at {i}: {w:?}");
    }
    assert_eq!(
        &names[..4],
        ["b", "a", "b", "b"],
        "nginx's order for weights 1:3"
    );
}

#[test]
fn weighted_over_fresh_connections_keeps_the_ratio() {
    let o = origins(&["a", "b", "c"]);
    let lb = start(&lb_args(
        "weighted",
        &[&o[0], &o[1], &o[2]],
        &[",weight=5", ",weight=1", ",weight=1"],
    ));
    let names: Vec<String> = (0..70).map(|_| origin_of(&get(lb.port(), "/"))).collect();
    let counts = count(&names);
    assert_eq!(
        (counts["a"], counts["b"], counts["c"]),
        (50, 10, 10),
        "{names:?}"
    );
    // Smooth: nginx's documented a a b a c a a, over and over.
    for (i, n) in names.iter().enumerate() {
        let want = ["a", "a", "b", "a", "c", "a", "a"][i % 7];
        assert_eq!(n, want, "request {i}: {names:?}");
    }
}

// -------------------------------------------------------------- least_conn

/// Sends `GET path` on a new connection from a thread.
fn request_in_background(port: u16, path: &str) -> thread::JoinHandle<Response> {
    let path = path.to_string();
    thread::spawn(move || {
        let mut c = Client::connect(port);
        c.set_read_timeout(Duration::from_secs(10));
        c.request("GET", &path, &[], b"")
    })
}

#[test]
fn least_conn_sends_fast_requests_to_the_idle_backend() {
    let o = origins(&["a", "b"]);
    let lb = start(&lb_args("least_conn", &[&o[0], &o[1]], &[]));
    let total = || o[0].connections() + o[1].connections();

    // One slow request: whichever backend takes it (the first connection
    // either origin accepts) is busy for 1.5 s.
    let slow = request_in_background(lb.port(), "/delay/1500");
    assert!(wait_until(Duration::from_secs(5), || total() == 1));
    let (busy, idle) = match o[0].connections() {
        1 => (&o[0], &o[1]),
        _ => (&o[1], &o[0]),
    };

    // Every fast request meanwhile goes to the idle one (round robin would
    // send every other one to the busy backend).
    let names: Vec<String> = (0..12).map(|_| origin_of(&get(lb.port(), "/"))).collect();
    assert!(
        !slow.is_finished(),
        "the slow request must still be in flight"
    );
    assert!(names.iter().all(|n| n == idle.name()), "{names:?}");
    assert_eq!(origin_of(&slow.join().expect("slow client")), busy.name());

    // Both idle again: ties take turns, so both get a share.
    let names: Vec<String> = (0..12).map(|_| origin_of(&get(lb.port(), "/"))).collect();
    let counts = count(&names);
    assert!(
        counts.get("a").copied().unwrap_or(0) >= 3 && counts.get("b").copied().unwrap_or(0) >= 3,
        "{names:?}"
    );
}

#[test]
fn least_conn_spreads_concurrent_slow_requests_by_load() {
    let o = origins(&["a", "b"]);
    let lb = start(&lb_args("least_conn", &[&o[0], &o[1]], &[]));
    let total = || o[0].connections() + o[1].connections();
    // Each slow request is sent once the previous one reached its origin,
    // so the balancer always knows the current load: the second must go
    // where the first did not.
    let first = request_in_background(lb.port(), "/delay/1000");
    assert!(wait_until(Duration::from_secs(5), || total() == 1));
    let second = request_in_background(lb.port(), "/delay/1000");
    assert!(wait_until(Duration::from_secs(5), || total() == 2));
    assert_eq!(
        (o[0].connections(), o[1].connections()),
        (1, 1),
        "one slow request on each backend"
    );
    let a = origin_of(&first.join().expect("first"));
    let b = origin_of(&second.join().expect("second"));
    assert_ne!(a, b);
}

#[test]
fn least_conn_forgets_requests_that_ended_badly() {
    // In-flight counts must come back down however an exchange ends:
    // clients that gave up, 502s, finished WebSocket tunnels. A leaked
    // count would starve that backend for good.
    let o = origins(&["a", "b"]);
    let lb = start(&lb_args("least_conn", &[&o[0], &o[1]], &[]));
    let port = lb.port();

    // Clients that give up while their backend is still working.
    for _ in 0..4 {
        let mut c = Client::connect(port);
        c.send_request("GET", "/delay/200", &[], b"").expect("send");
        drop(c);
    }
    // Tunnels that are opened and closed.
    for _ in 0..4 {
        let mut c = Client::connect(port);
        let r = common::ws_upgrade(&mut c, "/ws");
        assert_eq!(r.status, 101);
        c.send_raw(&common::ws_client_frame(0x8, &1000u16.to_be_bytes()));
        let (op, _) = common::ws_read_frame(&mut c).expect("close frame");
        assert_eq!(op, 0x8);
        assert!(c.is_closed(Duration::from_secs(5)));
    }
    // Let the abandoned delays finish and their sessions end.
    assert!(wait_until(Duration::from_secs(5), || {
        o[0].requests() + o[1].requests() >= 8
    }));
    thread::sleep(Duration::from_millis(200));

    let names: Vec<String> = (0..12).map(|_| origin_of(&get(port, "/"))).collect();
    let counts = count(&names);
    assert!(
        counts.get("a").copied().unwrap_or(0) >= 3 && counts.get("b").copied().unwrap_or(0) >= 3,
        "an in-flight count leaked: {names:?}"
    );
}

/// Active health probes go here (`--health-path`): answered 200 by the
/// garbage backend (and by the origin, which does not count it), so only
/// the requests under test fail.
const PROBE_PATH: &str = "/health";

/// A backend that answers every request with bytes that are not HTTP.
fn garbage_backend() -> (std::net::SocketAddr, Arc<AtomicBool>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.set_nonblocking(true).expect("nonblocking");
    let addr = listener.local_addr().expect("addr");
    let stop = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&stop);
    thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !flag.load(Ordering::Relaxed) && Instant::now() < deadline {
            let Ok((mut s, _)) = listener.accept() else {
                thread::sleep(Duration::from_millis(2));
                continue;
            };
            let _ = s.set_nonblocking(false);
            let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
            let mut buf = [0u8; 4096];
            let n = s.read(&mut buf).unwrap_or(0);
            let probe = format!("GET {PROBE_PATH} ");
            let answer: &[u8] = match buf[..n].starts_with(probe.as_bytes()) {
                true => b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                false => b"NOT HTTP AT ALL\r\n\r\n",
            };
            let _ = s.write_all(answer);
        }
    });
    (addr, stop)
}

#[test]
fn least_conn_forgets_exchanges_that_ended_in_502() {
    let o = origins(&["a"]);
    let (bad, stop) = garbage_backend();
    let lb = Lb::start(&[
        "--health-path",
        PROBE_PATH,
        "-s",
        "least_conn",
        "-b",
        &backend_arg(&o[0]),
        "-b",
        &bad.to_string(),
    ]);
    // Four requests: two failures stay under any passive-health threshold
    // (SPEC §8: three), so only balancing decides.
    let statuses: Vec<u16> = (0..4).map(|_| get(lb.port(), "/").status).collect();
    stop.store(true, Ordering::Relaxed);
    assert!(
        statuses.iter().all(|s| [200, 502].contains(s)),
        "{statuses:?}"
    );
    // Both idle between requests: the turns alternate, 502 or not; a count
    // leaked by the first 502 would send everything after it to `a`.
    let bad_answers = statuses.iter().filter(|&&s| s == 502).count();
    assert!(
        bad_answers == 2,
        "an in-flight count leaked on a 502: {statuses:?}"
    );
}

// ------------------------------------------------------------------ random

#[test]
fn random_gives_every_backend_a_share() {
    let o = origins(&["a", "b"]);
    let lb = start(&lb_args("random", &[&o[0], &o[1]], &[]));
    let mut c = lb.client();
    let names: Vec<String> = (0..200)
        .map(|_| origin_of(&c.request("GET", "/", &[], b"")))
        .collect();
    let counts = count(&names);
    // Binomial(200, 1/2): fewer than 60 has a probability near 1e-8.
    assert!(
        counts.get("a").copied().unwrap_or(0) >= 60 && counts.get("b").copied().unwrap_or(0) >= 60,
        "{counts:?}"
    );
    let alternating = names.windows(2).all(|w| w[0] != w[1]);
    assert!(!alternating, "random must not be a strict rotation");
}

// ------------------------------------------------------------------ sticky

/// The `lb_backend` value of a response's Set-Cookie, after checking its
/// format: `lb_backend=<16 hex digits>; Path=/; HttpOnly`.
fn sticky_cookie(r: &Response) -> Option<String> {
    let cookies: Vec<&str> = r
        .header_all("set-cookie")
        .into_iter()
        .filter(|c| c.starts_with("lb_backend="))
        .collect();
    assert!(cookies.len() <= 1, "{cookies:?}");
    let cookie = cookies.first()?;
    let value = cookie
        .strip_prefix("lb_backend=")?
        .strip_suffix("; Path=/; HttpOnly")
        .unwrap_or_else(|| panic!("unexpected attributes: {cookie:?}"));
    assert!(
        value.len() == 16 && value.bytes().all(|b| b.is_ascii_hexdigit()),
        "{cookie:?}"
    );
    Some(value.to_string())
}

fn get_with_cookie(port: u16, path: &str, cookie: &str) -> Response {
    Client::connect(port).request("GET", path, &[("Cookie", cookie)], b"")
}

/// Sends cookie-less requests until both backends were seen; returns
/// backend name -> cookie value.
fn learn_cookies(port: u16) -> HashMap<String, String> {
    let mut cookies = HashMap::new();
    for _ in 0..20 {
        let r = get(port, "/");
        let name = origin_of(&r);
        let value = sticky_cookie(&r).expect("a client without the cookie gets one");
        if let Some(known) = cookies.insert(name.clone(), value.clone()) {
            assert_eq!(known, value, "{name} has one cookie value");
        }
        if cookies.len() == 2 {
            break;
        }
    }
    assert_eq!(cookies.len(), 2, "both backends seen: {cookies:?}");
    cookies
}

#[test]
fn sticky_pins_a_client_to_one_backend() {
    let o = origins(&["a", "b"]);
    let lb = start(&lb_args("sticky", &[&o[0], &o[1]], &[]));
    let cookies = learn_cookies(lb.port());
    assert_ne!(cookies["a"], cookies["b"]);
    for name in ["a", "b"] {
        let cookie = format!("lb_backend={}", cookies[name]);
        for i in 0..10 {
            let r = get_with_cookie(lb.port(), &format!("/?{i}"), &cookie);
            assert_eq!(origin_of(&r), name);
            assert_eq!(sticky_cookie(&r), None, "already pinned: no new cookie");
        }
        // On one keep-alive connection too.
        let mut c = lb.client();
        for _ in 0..5 {
            let r = c.request("GET", "/", &[("Cookie", &cookie)], b"");
            assert_eq!(origin_of(&r), name);
        }
    }
}

#[test]
fn sticky_leaves_other_cookies_untouched() {
    let o = origins(&["a", "b"]);
    let lb = start(&lb_args("sticky", &[&o[0], &o[1]], &[]));
    let cookies = learn_cookies(lb.port());
    let value = format!("theme=dark; lb_backend={}; session=x%3Dy", cookies["b"]);
    let r = Client::connect(lb.port()).request(
        "POST",
        "/echo",
        &[("Cookie", value.as_str()), ("Cookie", "second=2")],
        b"hi",
    );
    assert_eq!(origin_of(&r), "b");
    let echoed = r.body_str();
    assert!(
        echoed.contains(&format!("\r\nCookie: {value}\r\nCookie: second=2\r\n")),
        "{echoed}"
    );
    // Without our cookie, the others still pass and one is set.
    let r = get_with_cookie(lb.port(), "/echo", "theme=light");
    assert!(r.body_str().contains("\r\nCookie: theme=light\r\n"));
    assert!(sticky_cookie(&r).is_some());
}

#[test]
fn sticky_cookie_is_the_same_across_instances_and_backend_order() {
    let o = origins(&["a", "b"]);
    let first = start(&lb_args("sticky", &[&o[0], &o[1]], &[]));
    let cookies = learn_cookies(first.port());
    drop(first);
    // Another instance, backends listed the other way round.
    let second = start(&lb_args("sticky", &[&o[1], &o[0]], &[]));
    for name in ["a", "b"] {
        let cookie = format!("lb_backend={}", cookies[name]);
        for _ in 0..4 {
            let r = get_with_cookie(second.port(), "/", &cookie);
            assert_eq!(origin_of(&r), name);
            assert_eq!(sticky_cookie(&r), None);
        }
    }
    assert_eq!(learn_cookies(second.port()), cookies);
}

#[test]
fn sticky_repins_a_client_with_an_unknown_or_malformed_cookie() {
    let o = origins(&["a", "b"]);
    let lb = start(&lb_args("sticky", &[&o[0], &o[1]], &[]));
    let cookies = learn_cookies(lb.port());
    for bad in [
        "lb_backend=0000000000000000",
        "lb_backend=zz",
        "lb_backend=",
        "lb_backend=123456789abcdef01",
    ] {
        let r = get_with_cookie(lb.port(), "/", bad);
        let name = origin_of(&r);
        assert_eq!(
            sticky_cookie(&r).as_ref(),
            Some(&cookies[&name]),
            "{bad}: pinned to {name}"
        );
    }
}

#[test]
fn sticky_client_whose_backend_is_gone_is_served_and_repinned() {
    let o = origins(&["a", "b"]);
    let lb = start(&lb_args("sticky", &[&o[0], &o[1]], &[]));
    let cookies = learn_cookies(lb.port());
    let old = format!("lb_backend={}", cookies["a"]);
    // Leave a pooled connection to `a` behind too.
    assert_eq!(origin_of(&get_with_cookie(lb.port(), "/", &old)), "a");
    o[0].stop();
    for i in 0..5 {
        let r = get_with_cookie(lb.port(), &format!("/?{i}"), &old);
        assert_eq!(origin_of(&r), "b", "request {i}");
        assert_eq!(
            sticky_cookie(&r).as_ref(),
            Some(&cookies["b"]),
            "request {i}: re-pinned"
        );
    }
    let new = format!("lb_backend={}", cookies["b"]);
    for _ in 0..5 {
        let r = get_with_cookie(lb.port(), "/", &new);
        assert_eq!(origin_of(&r), "b");
        assert_eq!(sticky_cookie(&r), None);
    }
}
