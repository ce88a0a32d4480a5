//! What an h2 backend does wrong or ends: refused and reset streams,
//! GOAWAY (with streams above its last id re-sent), a late response head,
//! unanswered PINGs, and an answer before the request body ended.

use super::*;

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
