//! HTTP/2 backends (SPEC §7): a TLS backend that picks `h2` by ALPN gets
//! the client's HTTP/1.1 requests as streams of one shared connection, with
//! bodies both ways, trailers, HEAD/204, interim and error translation,
//! and a refused stream re-sent. The origin is h2's own server
//! (tests/common/h2.rs).

mod common;

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
fn bodies_cross_whole_both_ways_with_flow_control() {
    let ca = Ca::new();
    let origin = origin(&ca, 100);
    let lb = balancer(&ca, &origin, &[]);
    let mut client = Client::connect(lb.port());
    // 3 MiB request body with a length: far past every h2 window.
    let body: Vec<u8> = (0..3 << 20).map(|i| (i % 251) as u8).collect();
    let r = client.request("POST", "/echo", &[], &body);
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-length"), Some("3145728"));
    assert!(r.body == body, "echoed body differs");
    // Chunked request body: sent as DATA, length known only at the end.
    let chunked = b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n";
    let r = client.request(
        "POST",
        "/other",
        &[("Transfer-Encoding", "chunked")],
        chunked,
    );
    assert_eq!(r.status, 200);
    assert!(r.body_str().ends_with("body=11\n"), "{}", r.body_str());
    // Its trailers end the stream as a HEADERS frame; framing ones do not
    // travel.
    let with_trailers = b"5\r\nhello\r\n0\r\nX-Sum: abc\r\nContent-Length: 9\r\n\r\n";
    let r = client.request(
        "POST",
        "/other",
        &[("Transfer-Encoding", "chunked")],
        with_trailers,
    );
    assert_eq!(r.status, 200);
    assert!(r.body_str().ends_with("body=5\n"), "{}", r.body_str());
    let trailers = origin.trailers().pop().expect("the request's trailers");
    assert_eq!(
        trailers.get("x-sum").map(|v| v.to_str().unwrap()),
        Some("abc")
    );
    assert_eq!(trailers.len(), 1, "{trailers:?}");
    // 5 MiB response without a length: chunked to the client.
    let r = client.request("GET", "/bytes/5242880", &[], b"");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("transfer-encoding"), Some("chunked"));
    assert_eq!(r.body.len(), 5 << 20);
    assert!(
        r.body
            .iter()
            .enumerate()
            .all(|(i, &b)| b == b'a' + (i % 26) as u8)
    );
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
fn a_refused_stream_is_sent_again_and_a_reset_one_is_a_502() {
    let ca = Ca::new();
    let origin = origin(&ca, 100);
    let lb = balancer(&ca, &origin, &[]);
    let mut client = Client::connect(lb.port());
    // A POST too: REFUSED_STREAM means the backend did not process it.
    let r = client.request("POST", "/refuse-once", &[], b"payload");
    assert_eq!(r.status, 200, "{}", r.body_str());
    assert!(r.body_str().contains("body=7"), "{}", r.body_str());
    let seen = origin.requests();
    assert_eq!(
        seen.iter().filter(|r| r.contains("/refuse-once")).count(),
        2,
        "{seen:?}"
    );
    let mut client = Client::connect(lb.port());
    let r = client.request("POST", "/reset", &[], b"x");
    assert_eq!(r.status, 502);
    assert!(
        lb.wait_for_log("backend reset the HTTP/2 stream", Duration::from_secs(5)),
        "{:?}",
        lb.stderr_lines()
    );
    // The connection itself is fine for the next request.
    let r = Client::connect(lb.port()).request("GET", "/after", &[], b"");
    assert_eq!(r.status, 200);
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
fn a_connection_that_sent_goaway_gets_no_new_stream() {
    let ca = Ca::new();
    let origin = origin(&ca, 100);
    let lb = balancer(&ca, &origin, &[]);
    let mut client = Client::connect(lb.port());
    assert_eq!(client.request("GET", "/goaway", &[], b"").status, 200);
    for i in 0..5 {
        let r = client.request("GET", &format!("/after/{i}"), &[], b"");
        assert_eq!(r.status, 200, "{}", r.body_str());
    }
    assert_eq!(origin.h2_connections(), 2, "{:?}", origin.requests());
}

#[test]
fn a_response_head_later_than_the_response_timeout_is_a_504() {
    let ca = Ca::new();
    let origin = origin(&ca, 100);
    let lb = balancer(&ca, &origin, &["--response-timeout-ms", "100"]);
    let mut client = Client::connect(lb.port());
    assert_eq!(client.request("GET", "/slow-head", &[], b"").status, 504);
    // The stream was cancelled; the shared connection still serves.
    let r = Client::connect(lb.port()).request("GET", "/next", &[], b"");
    assert_eq!(r.status, 200);
    assert_eq!(origin.h2_connections(), 1);
}

#[test]
fn a_connection_that_stops_answering_pings_takes_no_new_request() {
    // The backend's host goes silent without a FIN: the shared connection
    // looks open. Our PING (every health interval) goes unanswered within
    // the health timeout, so the next request opens a new connection
    // instead of hanging on the dead one until the response timeout.
    let ca = Ca::new();
    let origin = origin(&ca, 100);
    let relay = Relay::start(origin.port());
    let pem = ca.pem_file();
    let backend = format!("https://localhost:{}", relay.port());
    let lb = Lb::start(&[
        "-b",
        &backend,
        "--ca-file",
        pem.to_str().expect("utf8"),
        "--health-interval-ms",
        "300",
        "--health-timeout-ms",
        "300",
        "--response-timeout-ms",
        "30000",
    ]);
    let r = Client::connect(lb.port()).request("GET", "/first", &[], b"");
    assert_eq!(r.status, 200);
    assert_eq!(origin.h2_connections(), 1);
    relay.freeze();
    assert!(
        lb.wait_for_log("did not answer a PING", Duration::from_secs(5)),
        "{:#?}",
        lb.stderr_lines()
    );
    let started = Instant::now();
    let r = Client::connect(lb.port()).request("GET", "/after", &[], b"");
    assert_eq!(r.status, 200);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(origin.h2_connections(), 2);
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
fn a_client_that_stops_reading_holds_one_stream_window_not_the_body() {
    let ca = Ca::new();
    let origin = origin(&ca, 100);
    let lb = balancer(&ca, &origin, &[]);
    assert_eq!(
        Client::connect(lb.port())
            .request("GET", "/bytes/1000000", &[], b"")
            .status,
        200
    );
    let baseline = lb.rss_kb();
    // 64 MiB asked for, then nothing read: only what the windows let the
    // backend send may pile up (the socket buffers, a 256 KiB stream window).
    let mut client = Client::connect(lb.port());
    client
        .send_request("GET", "/bytes/67108864", &[], b"")
        .expect("send");
    let mut peak = baseline;
    let stalled = Instant::now();
    while stalled.elapsed() < Duration::from_millis(1500) {
        peak = peak.max(lb.rss_kb());
        thread::sleep(Duration::from_millis(20));
    }
    eprintln!("RSS baseline {baseline} kB, peak while stalled {peak} kB");
    assert!(peak < baseline + 16 * 1024, "{baseline} -> {peak} kB");
    // Reading on gets the whole body.
    let r = client.read_response(false);
    assert_eq!(r.body.len(), 64 << 20);
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

/// Lines of the balancer's log that contain `needle`.
fn log_count(lb: &Lb, needle: &str) -> usize {
    lb.stderr_lines()
        .iter()
        .filter(|l| l.contains(needle))
        .count()
}

#[test]
fn a_goaway_below_streams_in_flight_fails_no_get() {
    // 40 keep-alive clients keep GETs going over the one shared connection.
    // The origin stops reading, and once every client waits on a request
    // it never read, sends GOAWAY naming the last stream it did read: the
    // waiting streams are above it, never processed, and go again on a new
    // connection. No client sees anything but 200, and no request reaches
    // the origin twice.
    let ca = Ca::new();
    let origin = origin(&ca, 100);
    let lb = balancer(&ca, &origin, &["-l", "debug"]);
    // The shared connection exists and its SETTINGS are known.
    assert_eq!(common::get(lb.port(), "/warm").status, 200);
    const CLIENTS: usize = 40;
    let sent = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let port = lb.port();
    let clients: Vec<_> = (0..CLIENTS)
        .map(|i| {
            let (sent, done, stop) = (Arc::clone(&sent), Arc::clone(&done), Arc::clone(&stop));
            thread::spawn(move || {
                let mut client = Client::connect(port);
                let mut statuses = Vec::new();
                for j in 0.. {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let path = match (i, j) {
                        (0, 1) => "/goaway-below".to_string(),
                        _ => format!("/get/{i}/{j}"),
                    };
                    sent.fetch_add(1, Ordering::SeqCst);
                    let status = client
                        .try_request("GET", &path, &[], b"")
                        .map_or(0, |r| r.status);
                    done.fetch_add(1, Ordering::SeqCst);
                    statuses.push(status);
                    if status != 200 {
                        break;
                    }
                }
                statuses
            })
        })
        .collect();
    let in_flight = || sent.load(Ordering::SeqCst) - done.load(Ordering::SeqCst);
    let stuck = wait_until(Duration::from_secs(10), || {
        origin.holding_goaway() && in_flight() == CLIENTS
    });
    let before = done.load(Ordering::SeqCst);
    origin.send_goaway();
    // Traffic goes on over the new connection for a while.
    let went_on = wait_until(Duration::from_secs(10), || {
        done.load(Ordering::SeqCst) >= before + 4 * CLIENTS
    });
    stop.store(true, Ordering::SeqCst);
    let statuses: Vec<Vec<u16>> = clients
        .into_iter()
        .map(|c| c.join().expect("client"))
        .collect();
    assert!(stuck, "every client waits on the held connection");
    assert!(went_on, "{statuses:?}");
    let total: usize = statuses.iter().map(Vec::len).sum();
    assert!(
        statuses.iter().flatten().all(|&s| s == 200),
        "{statuses:?} {:#?}",
        lb.stderr_lines()
    );
    let refused = log_count(&lb, "HTTP/2 stream refused; re-sending");
    eprintln!("{total} GETs, {refused} above the GOAWAY's last stream re-sent");
    assert!(refused >= CLIENTS / 2, "{refused} re-sent");
    // Each request was processed once: the re-sent ones never were before.
    assert_eq!(origin.streams(), total + 1, "{:?}", origin.requests());
    assert!(origin.h2_connections() >= 2, "{}", origin.h2_connections());
}

#[test]
fn a_post_above_a_goaways_last_stream_is_sent_again_if_it_was_kept_whole() {
    // A stream above the last id was provably not processed (RFC 9113
    // §6.8): a POST with a length is re-sent once. One whose body was
    // de-chunked for the stream, or outgrew the 16 KiB client buffer,
    // cannot be sent again: 502 (README, "Errors").
    let ca = Ca::new();
    let origin = origin(&ca, 100);
    let lb = balancer(&ca, &origin, &["--trace", "-l", "debug"]);
    assert_eq!(common::get(lb.port(), "/warm").status, 200);
    let chunked = [("Transfer-Encoding", "chunked")];
    let large: Vec<u8> = (0..64 * 1024).map(pattern).collect();
    // Path, extra fields, body as sent, the status expected.
    type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a [u8], u16);
    let cases: [Case; 3] = [
        ("/echo", &[], b"posted above the last id", 200),
        ("/chunked", &chunked, b"7\r\nchunked\r\n0\r\n\r\n", 502),
        ("/large", &[], &large, 502),
    ];
    for (path, headers, body, status) in cases {
        // Each round holds a new connection: the previous one is gone.
        assert_eq!(common::get(lb.port(), "/goaway-below").status, 200);
        assert!(origin.holding_goaway());
        let traced = log_count(&lb, ":method: POST");
        let mut client = Client::connect(lb.port());
        client
            .send_request("POST", path, headers, body)
            .expect("send");
        // On the held connection, in a stream it will not read.
        assert!(
            wait_until(Duration::from_secs(5), || log_count(&lb, ":method: POST")
                > traced),
            "{:#?}",
            lb.stderr_lines()
        );
        origin.send_goaway();
        let r = client.read_response(false);
        assert_eq!(r.status, status, "{path}: {}", r.body_str());
        let posts = origin.requests();
        let posts: Vec<&String> = posts.iter().filter(|r| r.starts_with("POST")).collect();
        // The first one, once; the others never.
        assert_eq!(posts.len(), 1, "{path}: {posts:?}");
        if status == 200 {
            assert_eq!(r.body, body);
        } else {
            assert!(
                lb.wait_for_log(
                    "backend closed the HTTP/2 connection",
                    Duration::from_secs(5)
                ),
                "{:#?}",
                lb.stderr_lines()
            );
        }
    }
    assert_eq!(log_count(&lb, "HTTP/2 stream refused; re-sending"), 1);
    assert_eq!(common::get(lb.port(), "/after").status, 200);
    assert_eq!(origin.h2_connections(), cases.len() + 1);
}

/// Byte `i` of the large bodies below.
fn pattern(i: usize) -> u8 {
    (i % 251) as u8
}

#[test]
fn fifty_mib_up_and_down_through_h2_leave_the_balancers_rss_flat() {
    // 50 MiB posted to an origin that echoes each DATA as it arrives: the
    // upload and the echo cross the balancer at once. The client stops
    // reading for a while on the way: with the windows the bound, that
    // stops the echo, hence the origin's reading, hence the upload; the
    // balancer's RSS stays near its baseline, far below the body.
    const PIECE: usize = 1 << 20;
    let ca = Ca::new();
    let origin = origin(&ca, 100);
    let lb = balancer(&ca, &origin, &[]);
    let warm: Vec<u8> = (0..PIECE).map(pattern).collect();
    let r = Client::connect(lb.port()).request("POST", "/echo-stream", &[], &warm);
    assert_eq!(r.status, 200);
    assert!(r.body == warm, "the warm-up echo differs");
    let baseline = lb.rss_kb();
    assert!(baseline > 0, "RSS readable");

    let stop = AtomicBool::new(false);
    let (peak, elapsed) = thread::scope(|scope| {
        let sampler = scope.spawn(|| {
            let mut peak = 0;
            while !stop.load(Ordering::SeqCst) {
                peak = peak.max(lb.rss_kb());
                thread::sleep(Duration::from_millis(5));
            }
            peak
        });
        let elapsed = echo_fifty_mib(&lb);
        stop.store(true, Ordering::SeqCst);
        (sampler.join().expect("sampler"), elapsed)
    });
    eprintln!("50 MiB each way in {elapsed:?}; RSS baseline {baseline} kB, peak {peak} kB");
    assert!(peak < baseline + 16 * 1024, "{baseline} -> {peak} kB");
    assert_eq!(origin.h2_connections(), 1);
}

/// Posts `SIZE` bytes of `pattern` to `/echo-stream` while reading the
/// echo (stopping once for 500 ms at 8 MiB) and checks it byte by byte.
fn echo_fifty_mib(lb: &Lb) -> Duration {
    const SIZE: usize = 50 << 20;
    const PIECE: usize = 1 << 20;
    let started = Instant::now();
    let down = TcpStream::connect(lb.addr()).expect("connect");
    down.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut up = down.try_clone().expect("clone");
    let uploader = thread::spawn(move || -> std::io::Result<()> {
        let head = format!(
            "POST /echo-stream HTTP/1.1\r\nHost: localhost\r\nContent-Length: {SIZE}\r\n\r\n"
        );
        up.write_all(head.as_bytes())?;
        let mut piece = vec![0u8; PIECE];
        for at in (0..SIZE).step_by(PIECE) {
            for (i, b) in piece.iter_mut().enumerate() {
                *b = pattern(at + i);
            }
            up.write_all(&piece)?;
        }
        Ok(())
    });
    let mut reader = BufReader::new(down);
    let mut head = String::new();
    while !head.ends_with("\r\n\r\n") {
        assert!(reader.read_line(&mut head).expect("head") > 0, "{head}");
    }
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains(&format!("content-length: {SIZE}\r\n")),
        "{head}"
    );
    let mut buf = vec![0u8; 64 * 1024];
    let (mut got, mut stalled) = (0, false);
    while got < SIZE {
        if !stalled && got >= 8 << 20 {
            // Everything upstream must stop, not pile up in the balancer.
            stalled = true;
            thread::sleep(Duration::from_millis(500));
        }
        let want = buf.len().min(SIZE - got);
        let n = reader.read(&mut buf[..want]).expect("echo");
        assert!(n > 0, "echo cut at {got}");
        if let Some(bad) = (0..n).find(|&i| buf[i] != pattern(got + i)) {
            panic!("echo differs at byte {}", got + bad);
        }
        got += n;
    }
    uploader.join().expect("uploader").expect("upload");
    started.elapsed()
}

#[test]
fn an_answer_before_the_request_body_ended_reaches_the_client() {
    // The origin takes one stream window of a 4 MiB upload, answers 413
    // and resets the stream with NO_ERROR (RFC 9113 §8.1) while the
    // balancer still holds body it may not send: the client gets the 413
    // (not a 502), then its connection ends, the rest of its body unread.
    let ca = Ca::new();
    let origin = origin(&ca, 100);
    let lb = balancer(&ca, &origin, &[]);
    let mut client = Client::connect(lb.port());
    let mut up = client.stream().try_clone().expect("clone");
    let uploader = thread::spawn(move || {
        let size = 4 << 20;
        let head = format!(
            "POST /reject-early HTTP/1.1\r\nHost: localhost\r\nContent-Length: {size}\r\n\r\n"
        );
        // Cut short once the balancer is done with the request.
        let _ = up.write_all(head.as_bytes());
        let _ = up.write_all(&vec![b'u'; size]);
    });
    let r = client.read_response(false);
    assert_eq!(r.status, 413, "{} {:#?}", r.body_str(), lb.stderr_lines());
    assert!(client.is_closed(Duration::from_secs(5)));
    uploader.join().expect("uploader");
    assert!(
        !lb.stderr_lines().iter().any(|l| l.contains("warn")),
        "{:#?}",
        lb.stderr_lines()
    );
    // The shared connection goes on.
    assert_eq!(common::get(lb.port(), "/after").status, 200);
    assert_eq!(origin.h2_connections(), 1);
}
