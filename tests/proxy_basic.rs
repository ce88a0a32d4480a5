//! The basic promise: requests reach the backends in turn, bodies and heads
//! are relayed, backend connections are kept alive and reused.

mod common;

use common::{Client, Lb, backend_arg, get};
use load_balancer::origin::{Origin, OriginConfig};

fn two_origins() -> (Origin, Origin) {
    let a = Origin::start(OriginConfig::new("a")).expect("origin a");
    let b = Origin::start(OriginConfig::new("b")).expect("origin b");
    (a, b)
}

#[test]
fn round_robin_alternates_between_backends() {
    let (a, b) = two_origins();
    let lb = Lb::start(&["-b", &backend_arg(&a), "-b", &backend_arg(&b)]);
    let names: Vec<String> = (0..6).map(|_| get(lb.port(), "/").body_str()).collect();
    assert_eq!(
        names[0..2].iter().filter(|n| n.contains("from a")).count(),
        1,
        "{names:?}"
    );
    for pair in names.windows(2) {
        assert_ne!(pair[0], pair[1], "{names:?}");
    }
}

#[test]
fn post_body_and_forwarding_headers_reach_the_backend() {
    let (a, _b) = two_origins();
    let lb = Lb::start(&["-b", &backend_arg(&a)]);
    let mut client = lb.client();
    let resp = client.request(
        "POST",
        "/echo",
        &[("X-Forwarded-For", "203.0.113.7")],
        b"hello=1",
    );
    assert_eq!(resp.status, 200);
    let echoed = resp.body_str();
    assert!(echoed.starts_with("POST /echo HTTP/1.1\r\n"), "{echoed}");
    assert!(
        echoed.contains("X-Forwarded-For: 203.0.113.7, 127.0.0.1\r\n"),
        "{echoed}"
    );
    assert!(echoed.contains("X-Forwarded-Proto: http\r\n"), "{echoed}");
    assert!(echoed.contains("Via: 1.1 load_balancer\r\n"), "{echoed}");
    assert!(echoed.ends_with("\r\n\r\nhello=1"), "{echoed}");
    assert_eq!(resp.header("Via"), Some("1.1 load_balancer"));
}

#[test]
fn backend_connections_are_reused_across_requests_and_clients() {
    let (a, _b) = two_origins();
    let lb = Lb::start(&["-b", &backend_arg(&a)]);
    for _ in 0..5 {
        let mut client = Client::connect(lb.port());
        for _ in 0..10 {
            assert_eq!(client.request("GET", "/", &[], b"").status, 200);
        }
    }
    assert_eq!(a.requests(), 50);
    assert_eq!(
        a.connections(),
        1,
        "one pooled connection serves sequential clients"
    );
}

#[test]
fn large_bodies_in_every_framing_arrive_whole() {
    let (a, _b) = two_origins();
    let lb = Lb::start(&["-b", &backend_arg(&a)]);
    let mut client = lb.client();
    for path in ["/bytes/3000000", "/chunked/3000000", "/close/3000000"] {
        let resp = client.request("GET", path, &[], b"");
        assert_eq!(resp.status, 200, "{path}");
        assert_eq!(resp.body.len(), 3_000_000, "{path}");
        assert!(
            resp.body
                .iter()
                .enumerate()
                .all(|(i, &b)| b == b'a' + (i % 26) as u8),
            "{path}"
        );
        if path.starts_with("/close") {
            assert_eq!(resp.header("Connection"), Some("close"));
            client = lb.client();
        }
    }
}

#[test]
fn metrics_are_served_on_the_listen_port_and_scrapes_are_not_counted() {
    let (a, _b) = two_origins();
    let lb = Lb::start(&["-b", &backend_arg(&a)]);
    let mut client = lb.client();
    assert_eq!(client.request("GET", "/", &[], b"").status, 200);
    let first = client.request("GET", "/metrics", &[], b"");
    assert_eq!(first.status, 200);
    assert!(
        first
            .header("Content-Type")
            .unwrap_or("")
            .starts_with("text/plain")
    );
    let line = format!(
        "lb_requests_total{{backend=\"{}\",code=\"200\"}} 1",
        a.addr()
    );
    assert!(
        first.body_str().lines().any(|l| l == line),
        "{}",
        first.body_str()
    );
    let second = client.request("GET", "/metrics", &[], b"").body_str();
    assert!(
        second.lines().any(|l| l == line),
        "a scrape was counted:\n{second}"
    );
    assert!(second.contains("lb_connections_active 1"), "{second}");
    assert_eq!(a.requests(), 1, "scrapes never reach a backend");
}

#[test]
fn metrics_addr_moves_metrics_to_their_own_listener() {
    let (a, _b) = two_origins();
    let metrics_port = common::free_port();
    let metrics_addr = format!("127.0.0.1:{metrics_port}");
    let lb = Lb::start(&["-b", &backend_arg(&a), "--metrics-addr", &metrics_addr]);
    // On the listen port /metrics is an ordinary path: the origin answers.
    let proxied = get(lb.port(), "/metrics");
    assert_eq!(proxied.header("X-Origin"), Some("a"));
    let scrape = get(metrics_port, "/metrics");
    assert_eq!(scrape.status, 200);
    assert!(
        scrape.body_str().contains("lb_requests_total{"),
        "{}",
        scrape.body_str()
    );
    assert_eq!(get(metrics_port, "/other").status, 404);
}
