//! HTTP/2 backends (SPEC §7): a TLS backend that picks `h2` by ALPN gets
//! the client's HTTP/1.1 requests as streams of one shared connection, with
//! bodies both ways, trailers, HEAD/204, interim and error translation,
//! and a refused stream re-sent. The origin is h2's own server
//! (tests/common/h2.rs). `bodies.rs` and `failures.rs` hold the tests of
//! bodies and of what a backend does wrong.

mod bodies;
#[path = "../common/mod.rs"]
mod common;
mod failures;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use common::h2::H2Origin;
use common::relay::Relay;
use common::tls::Ca;
use common::{Client, Lb, wait_until};

/// A balancer in front of `origin` as `https://localhost:PORT`.
fn balancer(ca: &Ca, origin: &H2Origin, extra: &[&str]) -> Lb {
    let pem = ca.pem_file();
    let backend = format!("https://localhost:{}", origin.port());
    let mut args = vec!["-b", &backend, "--ca-file", pem.to_str().expect("utf8")];
    args.extend_from_slice(extra);
    Lb::start(&args)
}

fn origin(ca: &Ca, max_streams: u32) -> H2Origin {
    H2Origin::start(ca.leaf(&["localhost"], false), max_streams)
}

#[test]
fn requests_to_an_h2_backend_share_one_connection_as_streams() {
    let ca = Ca::new();
    let origin = origin(&ca, 100);
    let lb = balancer(&ca, &origin, &[]);
    for i in 0..20 {
        let mut client = Client::connect(lb.port());
        let r = client.request("GET", &format!("/item/{i}?q=1"), &[], b"");
        assert_eq!(r.status, 200);
        assert_eq!(
            r.body_str(),
            format!(
                "h2 GET /item/{i} authority=localhost:{} body=0\n",
                origin.port()
            )
        );
        assert_eq!(r.header("x-origin"), Some("h2"));
        assert!(
            r.header("via")
                .is_some_and(|v| v.ends_with("2 load_balancer"))
        );
    }
    assert_eq!(origin.streams(), 20);
    assert_eq!(origin.h2_connections(), 1, "{:?}", origin.requests());
    // Hop-by-hop fields stay behind; forwarding fields go up.
    let fields = origin.headers().pop().expect("a request");
    assert!(fields.get("te").is_none());
    assert!(fields.get("connection").is_none());
    assert!(fields.get("host").is_none());
    assert_eq!(
        fields.get("x-forwarded-for").map(|v| v.to_str().unwrap()),
        Some("127.0.0.1")
    );
}

#[test]
fn concurrent_clients_are_multiplexed_within_the_backends_stream_limit() {
    let ca = Ca::new();
    let origin = origin(&ca, 4);
    let lb = balancer(&ca, &origin, &["-l", "debug"]);
    // One request first, so the connection exists and is known to be h2.
    assert_eq!(
        Client::connect(lb.port())
            .request("GET", "/", &[], b"")
            .status,
        200
    );
    let port = lb.port();
    let clients: Vec<_> = (0..16)
        .map(|i| {
            thread::spawn(move || {
                let mut client = Client::connect(port);
                (0..5)
                    .map(|j| {
                        client
                            .try_request("GET", &format!("/slow-head/{i}/{j}"), &[], b"")
                            .map_or(0, |r| r.status)
                    })
                    .collect::<Vec<u16>>()
            })
        })
        .collect();
    for c in clients {
        let statuses = c.join().expect("client");
        assert!(
            statuses.iter().all(|&s| s == 200),
            "{statuses:?} {:#?}",
            lb.stderr_lines()
        );
    }
    assert_eq!(origin.streams(), 81);
    assert!(origin.max_concurrent() <= 4, "{}", origin.max_concurrent());
    assert!(origin.max_concurrent() >= 2, "streams were not multiplexed");
    assert!(
        origin.h2_connections() <= 4 + 1,
        "{}",
        origin.h2_connections()
    );
}

#[test]
fn requests_beyond_every_stream_limit_queue_for_the_connect_timeout_then_get_503() {
    // One stream per connection and at most 4 connections: of 8 slow
    // requests at once, 4 wait for a stream. Within the queue bound (the
    // connect timeout) they are served; past it they get 503, not a 504
    // after the response timeout.
    let ca = Ca::new();
    let origin = origin(&ca, 1);
    for (connect_timeout, queue_outlives_head) in [("3000", true), ("100", false)] {
        let lb = balancer(&ca, &origin, &["--connect-timeout-ms", connect_timeout]);
        let warm = Client::connect(lb.port()).request("GET", "/", &[], b"");
        assert_eq!(warm.status, 200);
        let port = lb.port();
        let clients: Vec<_> = (0..8)
            .map(|_| {
                thread::spawn(move || {
                    let started = Instant::now();
                    let status = Client::connect(port)
                        .try_request("GET", "/slow-head", &[], b"")
                        .map_or(0, |r| r.status);
                    (status, started.elapsed())
                })
            })
            .collect();
        let answers: Vec<(u16, Duration)> = clients
            .into_iter()
            .map(|c| c.join().expect("client"))
            .collect();
        let served = answers.iter().filter(|(s, _)| *s == 200).count();
        let queued_out = answers.iter().filter(|(s, _)| *s == 503).count();
        assert_eq!(
            served + queued_out,
            8,
            "{answers:?} {:#?}",
            lb.stderr_lines()
        );
        if queue_outlives_head {
            assert_eq!(served, 8, "{answers:?}");
        } else {
            assert!(served >= 4 && queued_out >= 1, "{answers:?}");
            assert!(
                lb.wait_for_log(
                    "no HTTP/2 stream to the backend came free",
                    Duration::from_secs(5)
                ),
                "{:#?}",
                lb.stderr_lines()
            );
        }
        assert!(origin.max_concurrent() <= 1, "{}", origin.max_concurrent());
    }
}

#[test]
fn trailers_head_and_bodiless_statuses_translate() {
    let ca = Ca::new();
    let origin = origin(&ca, 100);
    let lb = balancer(&ca, &origin, &[]);
    let mut client = Client::connect(lb.port());
    // `TE: trailers` is the one TE HTTP/2 carries (gRPC needs it).
    let r = client.request("GET", "/trailers", &[("TE", "gzip, trailers")], b"");
    assert_eq!(r.status, 200);
    assert_eq!(r.body_str(), "with trailers\n");
    assert_eq!(r.trailer("x-checksum"), Some("abc123"));
    let te = origin.headers().pop().expect("a request");
    assert_eq!(te.get("te").map(|v| v.to_str().unwrap()), Some("trailers"));
    let r = client.request("HEAD", "/anything", &[], b"");
    assert_eq!(r.status, 200);
    assert!(r.body.is_empty());
    for status in [204, 304, 404, 503] {
        let r = client.request("GET", &format!("/status/{status}"), &[], b"");
        assert_eq!(r.status, status);
        assert!(r.body.is_empty());
    }
    // The connection survived all of it.
    let r = client.request("GET", "/last", &[], b"");
    assert_eq!(r.status, 200);
}

#[test]
fn an_http10_client_gets_a_body_ended_by_close() {
    let ca = Ca::new();
    let origin = origin(&ca, 100);
    let lb = balancer(&ca, &origin, &[]);
    let answer = common::raw_exchange(
        lb.port(),
        b"GET /bytes/100 HTTP/1.0\r\nHost: localhost\r\n\r\n",
        Duration::from_secs(5),
    );
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(
        !text.to_ascii_lowercase().contains("transfer-encoding"),
        "{text}"
    );
    assert!(text.contains("Connection: close"), "{text}");
    let body = text.split("\r\n\r\n").nth(1).expect("body");
    assert_eq!(body.len(), 100);
}

#[test]
fn trace_shows_h2_requests_as_pseudo_headers_and_tls_trace_shows_alpn_h2() {
    let ca = Ca::new();
    let origin = origin(&ca, 100);
    let lb = balancer(&ca, &origin, &["--trace", "--tls-trace"]);
    let r = Client::connect(lb.port()).request("GET", "/traced?x=1", &[], b"");
    assert_eq!(r.status, 200);
    for needle in [
        ":method: GET",
        ":path: /traced?x=1",
        ":scheme: https",
        "ALPN h2",
    ] {
        assert!(
            lb.wait_for_log(needle, Duration::from_secs(5)),
            "{needle}: {:?}",
            lb.stderr_lines()
        );
    }
    assert!(
        lb.wait_for_log(
            &format!(":authority: localhost:{}", origin.port()),
            Duration::from_secs(5)
        ),
        "{:?}",
        lb.stderr_lines()
    );
}

#[test]
fn health_probes_of_an_h2_backend_speak_http1_and_keep_it_up() {
    let ca = Ca::new();
    let origin = origin(&ca, 100);
    let lb = balancer(&ca, &origin, &["--health-interval-ms", "100"]);
    assert!(wait_until(Duration::from_secs(5), || {
        origin
            .seen
            .http1_connections
            .load(std::sync::atomic::Ordering::SeqCst)
            >= 3
    }));
    let r = Client::connect(lb.port()).request("GET", "/", &[], b"");
    assert_eq!(r.status, 200);
    assert!(
        !lb.stderr_lines().iter().any(|l| l.contains("down")),
        "{:?}",
        lb.stderr_lines()
    );
}

#[test]
fn a_websocket_upgrade_to_an_h2_backend_goes_over_its_own_http1_connection() {
    let ca = Ca::new();
    let origin = origin(&ca, 100);
    let lb = balancer(&ca, &origin, &[]);
    // The backend is known to speak h2 first.
    assert_eq!(
        Client::connect(lb.port())
            .request("GET", "/", &[], b"")
            .status,
        200
    );
    let mut client = Client::connect(lb.port());
    let r = client.request(
        "GET",
        "/ws",
        &[
            ("Connection", "Upgrade"),
            ("Upgrade", "websocket"),
            ("Sec-WebSocket-Key", common::WS_KEY),
            ("Sec-WebSocket-Version", "13"),
        ],
        b"",
    );
    assert_eq!(r.status, 101);
    client.send_raw(b"ping through the tunnel");
    let mut echoed = [0u8; 23];
    std::io::Read::read_exact(&mut client.stream(), &mut echoed).expect("echo");
    assert_eq!(&echoed, b"ping through the tunnel");
    assert_eq!(
        origin
            .seen
            .tunnels
            .load(std::sync::atomic::Ordering::SeqCst),
        1
    );
    assert_eq!(origin.h2_connections(), 1);
}

#[test]
fn a_removed_h2_backends_idle_connection_closes_at_once() {
    use load_balancer::origin::{Origin, OriginConfig};
    let ca = Ca::new();
    let h2 = origin(&ca, 100);
    let plain = Origin::start(OriginConfig::new("plain")).expect("origin");
    let pem = ca.pem_file();
    let config = |with_h2: bool| {
        let mut backends = vec![format!(
            r#"{{"host": "127.0.0.1", "port": {}}}"#,
            plain.addr().port()
        )];
        if with_h2 {
            backends.push(format!(
                r#"{{"host": "https://localhost", "port": {}}}"#,
                h2.port()
            ));
        }
        format!(
            r#"{{"backends": [{}], "ca_file": "{}"}}"#,
            backends.join(", "),
            pem.display()
        )
    };
    let file = common::scratch_file("h2-retire.json", &config(true));
    let lb = Lb::start(&["-c", file.to_str().expect("utf8")]);
    for _ in 0..4 {
        assert_eq!(common::get(lb.port(), "/").status, 200);
    }
    assert!(h2.streams() > 0, "round robin reached the h2 backend");
    assert!(wait_until(Duration::from_secs(2), || h2.h2_open() == 1));
    std::fs::write(&file, config(false)).expect("rewrite the config");
    lb.signal("HUP");
    assert!(
        lb.wait_for_log("removed localhost:", Duration::from_secs(3)),
        "{:#?}",
        lb.stderr_lines()
    );
    // Not at the idle timeout (60 s): now.
    assert!(
        wait_until(Duration::from_secs(2), || h2.h2_open() == 0),
        "the idle h2 connection closes: {} open",
        h2.h2_open()
    );
    assert_eq!(
        common::get(lb.port(), "/").header("x-origin"),
        Some("plain")
    );
}

/// A removed h2 backend's connection that still carries a stream is not
/// cut: the response in flight arrives whole, and the connection closes
/// once that last stream is done.
#[test]
fn a_removed_h2_backends_busy_connection_closes_after_its_last_stream() {
    use load_balancer::origin::{Origin, OriginConfig};
    let ca = Ca::new();
    let h2 = origin(&ca, 100);
    let plain = Origin::start(OriginConfig::new("plain")).expect("origin");
    let pem = ca.pem_file();
    let h2_only = format!(
        r#"{{"backends": [{{"host": "https://localhost", "port": {}}}], "ca_file": "{}"}}"#,
        h2.port(),
        pem.display()
    );
    let file = common::scratch_file("h2-retire-busy.json", &h2_only);
    let lb = Lb::start(&["-c", file.to_str().expect("utf8")]);
    // 64 MiB asked for and not read yet: the stream stays open, held by
    // flow control, while the backend is removed.
    let mut client = Client::connect(lb.port());
    client
        .send_request("GET", "/bytes/67108864", &[], b"")
        .expect("send");
    assert!(wait_until(Duration::from_secs(2), || h2.streams() == 1));
    let plain_only = format!(
        r#"{{"backends": [{{"host": "127.0.0.1", "port": {}}}]}}"#,
        plain.addr().port()
    );
    std::fs::write(&file, plain_only).expect("rewrite the config");
    lb.signal("HUP");
    assert!(
        lb.wait_for_log("removed localhost:", Duration::from_secs(3)),
        "{:#?}",
        lb.stderr_lines()
    );
    assert_eq!(h2.h2_open(), 1, "the busy connection was cut");
    let r = client.read_response(false);
    assert_eq!(r.status, 200);
    assert_eq!(r.body.len(), 64 << 20);
    assert!(
        r.body
            .iter()
            .enumerate()
            .all(|(i, &b)| b == b'a' + (i % 26) as u8)
    );
    assert!(
        wait_until(Duration::from_secs(3), || h2.h2_open() == 0),
        "the connection closes after its last stream: {} open",
        h2.h2_open()
    );
    assert_eq!(
        common::get(lb.port(), "/").header("x-origin"),
        Some("plain")
    );
}

/// Byte `i` of the large bodies the tests send.
fn pattern(i: usize) -> u8 {
    (i % 251) as u8
}
