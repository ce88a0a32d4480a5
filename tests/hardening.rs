//! Issue 11's hardening, over raw TCP: the framing the proxy forwards comes
//! from the one decision it made (no `Connection` trick removes a framing
//! field, `Content-Length` lists travel as one value, chunked bodies are
//! re-framed and their trailers checked), absolute-form targets, bodiless
//! answers to HEAD, and the request-body timeout.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::{Lb, backend_arg, get, raw_exchange};
use load_balancer::origin::{Origin, OriginConfig};

const WITHIN: Duration = Duration::from_secs(5);

/// A backend that records the bytes each request brought, as it received
/// them, and answers every complete request with `reply`.
struct RawBackend {
    addr: SocketAddr,
    received: Arc<Mutex<Vec<Vec<u8>>>>,
}

impl RawBackend {
    fn start(reply: &'static [u8]) -> RawBackend {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let received = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&received);
        thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let log = Arc::clone(&log);
                thread::spawn(move || serve(conn, reply, &log));
            }
        });
        RawBackend { addr, received }
    }

    fn arg(&self) -> String {
        self.addr.to_string()
    }

    /// What came through the proxy; the health prober's requests left out.
    fn requests(&self) -> Vec<Vec<u8>> {
        let all = self.received.lock().expect("lock").clone();
        all.into_iter()
            .filter(|r| !text(r).contains("User-Agent: load_balancer-health\r\n"))
            .collect()
    }
}

fn serve(mut conn: TcpStream, reply: &[u8], log: &Mutex<Vec<Vec<u8>>>) {
    let _ = conn.set_read_timeout(Some(WITHIN));
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16384];
    loop {
        while let Some(n) = message_len(&buf) {
            log.lock().expect("lock").push(buf.drain(..n).collect());
            if conn.write_all(reply).is_err() {
                return;
            }
        }
        match conn.read(&mut chunk) {
            Ok(0) | Err(_) => {
                if !buf.is_empty() {
                    // What a broken exchange left: recorded as it came.
                    log.lock().expect("lock").push(buf);
                }
                return;
            }
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// The length of the complete request at the start of `buf`, read by a
/// strict parser of our own (httparse for the head; Content-Length or
/// canonical chunked framing for the body).
fn message_len(buf: &[u8]) -> Option<usize> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut req = httparse::Request::new(&mut headers);
    let head = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        _ => return None,
    };
    let field = |name: &str| {
        req.headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| String::from_utf8_lossy(h.value).into_owned())
            .collect::<Vec<_>>()
    };
    if field("transfer-encoding") == ["chunked"] {
        return chunked_len(&buf[head..]).map(|n| head + n);
    }
    let length = field("content-length")
        .first()
        .map_or(0, |v| v.parse::<usize>().expect("plain Content-Length"));
    (buf.len() >= head + length).then_some(head + length)
}

fn chunked_len(body: &[u8]) -> Option<usize> {
    let mut at = 0;
    loop {
        let line_end = at + body[at..].windows(2).position(|w| w == b"\r\n")?;
        let size = usize::from_str_radix(std::str::from_utf8(&body[at..line_end]).ok()?, 16)
            .expect("a size line we can read");
        at = line_end + 2;
        if size == 0 {
            // Trailer lines up to the empty one.
            loop {
                let end = at + body[at..].windows(2).position(|w| w == b"\r\n")?;
                let empty = end == at;
                at = end + 2;
                if empty {
                    return Some(at);
                }
            }
        }
        at += size + 2;
        if body.len() < at {
            return None;
        }
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn status_of(reply: &[u8]) -> String {
    text(reply).lines().next().unwrap_or("").to_string()
}

fn origin() -> Origin {
    Origin::start(OriginConfig::new("a")).expect("origin starts")
}

const OK: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";

// --------------------------------------------------- Connection and framing

#[test]
fn connection_naming_a_framing_field_or_host_is_400_and_smuggles_nothing() {
    let o = origin();
    let lb = Lb::start(&["-b", &backend_arg(&o)]);
    let hidden = b"GET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n";
    for connection in [
        "Content-Length",
        "content-length",
        "keep-alive, Content-Length",
        "Transfer-Encoding",
        "Host",
        "keep-alive,host",
    ] {
        let mut req = format!(
            "POST /a HTTP/1.1\r\nHost: a\r\nContent-Length: {}\r\nConnection: {connection}\r\n\r\n",
            hidden.len()
        )
        .into_bytes();
        req.extend_from_slice(hidden);
        let reply = raw_exchange(lb.port(), &req, WITHIN);
        assert_eq!(
            status_of(&reply),
            "HTTP/1.1 400 Bad Request",
            "{connection}"
        );
    }
    assert_eq!(get(lb.port(), "/").status, 200);
    assert_eq!(o.requests(), 1, "only the last GET reached the origin");
}

#[test]
fn equal_content_length_lists_travel_as_one_value_both_ways() {
    let backend = RawBackend::start(
        b"HTTP/1.1 200 OK\r\nContent-Length: 2, 2\r\nContent-Length: 2\r\n\r\nok",
    );
    let lb = Lb::start(&["-b", &backend.arg()]);
    for fields in [
        "Content-Length: 5,5\r\n",
        "Content-Length: 5 , 5\r\n",
        "Content-Length: 5\r\nContent-Length: 5\r\n",
    ] {
        let req = format!("POST / HTTP/1.1\r\nHost: a\r\n{fields}Connection: close\r\n\r\nhello");
        let reply = text(&raw_exchange(lb.port(), req.as_bytes(), WITHIN));
        assert!(reply.starts_with("HTTP/1.1 200 OK\r\n"), "{reply}");
        let lengths: Vec<&str> = reply
            .lines()
            .filter(|l| l.to_ascii_lowercase().starts_with("content-length"))
            .collect();
        assert_eq!(lengths, ["Content-Length: 2"], "{reply}");
        assert!(reply.ends_with("\r\n\r\nok"), "{reply}");
    }
    for got in backend.requests() {
        let got = text(&got);
        let lengths: Vec<&str> = got
            .lines()
            .filter(|l| l.to_ascii_lowercase().starts_with("content-length"))
            .collect();
        assert_eq!(lengths, ["Content-Length: 5"], "{got}");
        assert!(got.ends_with("\r\n\r\nhello"), "{got}");
    }
    assert_eq!(backend.requests().len(), 3);
}

// ------------------------------------------------------------ chunked bodies

#[test]
fn chunked_request_bodies_are_reframed_with_checked_trailers() {
    let backend = RawBackend::start(OK);
    let lb = Lb::start(&["-b", &backend.arg()]);
    let req =
        b"POST /up HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n\
                005;name=\"v;x\"\r\nhello\r\nA ; e\r\n0123456789\r\n0;last\r\n\
                X-Sum: 1\r\nContent-Length: 99\r\n\r\n";
    let reply = raw_exchange(lb.port(), req, WITHIN);
    assert_eq!(status_of(&reply), "HTTP/1.1 200 OK");
    let got = backend.requests();
    assert_eq!(got.len(), 1);
    let got = text(&got[0]);
    let body = got.split_once("\r\n\r\n").expect("head").1;
    assert_eq!(
        body, "5\r\nhello\r\na\r\n0123456789\r\n0\r\nX-Sum: 1\r\n\r\n",
        "sizes written by the proxy, extensions and the Content-Length trailer dropped"
    );
}

#[test]
fn malformed_chunk_lines_and_trailers_in_a_request_are_400() {
    let backend = RawBackend::start(OK);
    let lb = Lb::start(&["-b", &backend.arg()]);
    for body in [
        "2;\r\nab\r\n0\r\n\r\n",
        "a \r\n0123456789\r\n0\r\n\r\n",
        "5\t\r\nhello\r\n0\r\n\r\n",
        "5;a=\"b\r\nhello\r\n0\r\n\r\n",
        "0\r\nfoo\r\n\r\n",
        "0\r\nbad name: v\r\n\r\n",
        "0\r\nGET /x HTTP/1.1\r\n\r\n",
    ] {
        let req = format!("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n{body}");
        let reply = raw_exchange(lb.port(), req.as_bytes(), WITHIN);
        assert_eq!(status_of(&reply), "HTTP/1.1 400 Bad Request", "{body:?}");
    }
    // Whatever reached the backend of those never completed a request.
    for got in backend.requests() {
        assert!(message_len(&got).is_none(), "{}", text(&got));
    }
}

/// A backend that sends `reply` as its answer to every request.
fn lb_before(reply: &'static [u8]) -> (RawBackend, Lb) {
    let backend = RawBackend::start(reply);
    let lb = Lb::start(&["-b", &backend.arg()]);
    (backend, lb)
}

#[test]
fn a_malformed_first_chunk_from_the_backend_is_502() {
    for reply in [
        &b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n"[..],
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5 \r\nhello\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nbad trailer\r\n\r\n",
    ] {
        let (_backend, lb) = lb_before(reply);
        let got = raw_exchange(lb.port(), b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", WITHIN);
        assert_eq!(status_of(&got), "HTTP/1.1 502 Bad Gateway", "{}", text(reply));
    }
}

#[test]
fn chunked_responses_reach_the_client_reframed() {
    let (_backend, lb) = lb_before(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
          05;x=1\r\nhello\r\n0\r\nX-T: 1\r\nTransfer-Encoding: x\r\n\r\n",
    );
    let got = text(&raw_exchange(
        lb.port(),
        b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        WITHIN,
    ));
    let body = got.split_once("\r\n\r\n").expect("head").1;
    assert_eq!(body, "5\r\nhello\r\n0\r\nX-T: 1\r\n\r\n", "{got}");
}

// ------------------------------------------------------------------ targets

#[test]
fn absolute_form_targets_reach_the_backend_in_origin_form_with_their_host() {
    let backend = RawBackend::start(OK);
    let lb = Lb::start(&["-b", &backend.arg()]);
    for (target, line, host) in [
        ("http://evil.test/admin", "GET /admin HTTP/1.1", "evil.test"),
        (
            "https://s.test:8443/a?b",
            "GET /a?b HTTP/1.1",
            "s.test:8443",
        ),
        ("http://q.test", "GET / HTTP/1.1", "q.test"),
    ] {
        let req =
            format!("GET {target} HTTP/1.1\r\nHost: garden.test\r\nConnection: close\r\n\r\n");
        let reply = raw_exchange(lb.port(), req.as_bytes(), WITHIN);
        assert_eq!(status_of(&reply), "HTTP/1.1 200 OK");
        let got = backend
            .requests()
            .pop()
            .map(|r| text(&r))
            .unwrap_or_default();
        assert!(got.starts_with(&format!("{line}\r\n")), "{got}");
        assert!(got.contains(&format!("\r\nHost: {host}\r\n")), "{got}");
        assert!(!got.contains("garden.test"), "{got}");
    }
    let reply = raw_exchange(lb.port(), b"GET * HTTP/1.1\r\nHost: a\r\n\r\n", WITHIN);
    assert_eq!(status_of(&reply), "HTTP/1.1 400 Bad Request");
}

// --------------------------------------------------------------------- HEAD

#[test]
fn error_answers_to_head_carry_no_body() {
    let o = origin();
    let lb = Lb::start(&["-b", &backend_arg(&o)]);
    for req in [
        &b"HEAD / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n"[..],
        b"HEAD / HTTP/1.1\r\nHost: a\r\nBad Name: 1\r\n\r\n",
        b"HEAD / HTTP/1.1\r\n\r\n",
    ] {
        let reply = text(&raw_exchange(lb.port(), req, WITHIN));
        assert!(reply.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{reply}");
        assert!(
            reply.ends_with("\r\n\r\n"),
            "a body after the head: {reply:?}"
        );
    }
    // And a GET after a HEAD on one connection gets its body.
    let reply = text(&raw_exchange(
        lb.port(),
        b"HEAD / HTTP/1.1\r\nHost: a\r\n\r\nGET / HTTP/1.1\r\nBad Name: 1\r\n\r\n",
        WITHIN,
    ));
    assert!(reply.ends_with("\r\n\r\nBad Request\n"), "{reply:?}");
}

// ------------------------------------------------------------- body timeout

#[test]
fn a_stalled_request_body_gets_408_and_the_backend_connection_is_dropped() {
    let o = origin();
    let lb = Lb::start(&["-b", &backend_arg(&o), "--body-timeout-ms", "300"]);
    let mut s = TcpStream::connect(("127.0.0.1", lb.port())).expect("connect");
    s.write_all(b"POST /sink HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\n0123456789")
        .expect("send");
    let started = Instant::now();
    s.set_read_timeout(Some(WITHIN)).expect("timeout");
    let mut reply = Vec::new();
    let _ = s.read_to_end(&mut reply);
    let waited = started.elapsed();
    assert_eq!(
        status_of(&reply),
        "HTTP/1.1 408 Request Timeout",
        "{}",
        text(&reply)
    );
    assert!(waited < Duration::from_secs(4), "answered after {waited:?}");
    // The half-sent request's backend connection is not reused.
    assert_eq!(get(lb.port(), "/").status, 200);
    assert_eq!(o.connections(), 2, "a fresh backend connection");
}
