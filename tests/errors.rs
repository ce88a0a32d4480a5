//! SPEC §5's error table, one test per row: malformed or ambiguous requests,
//! oversized and slow heads, unreachable, broken and silent backends, idle
//! clients. Each error answer is checked to the exact status line, with
//! `Connection: close` and the close itself, and the proxy is then shown to
//! still serve a valid request on a fresh connection.

mod common;

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use common::{Client, IO_TIMEOUT, Lb, backend_arg, get};
use load_balancer::origin::{Origin, OriginConfig};

const BAD_REQUEST: &str = "HTTP/1.1 400 Bad Request";
/// How long an error answer and the close after it may take.
const ANSWER_WITHIN: Duration = Duration::from_secs(5);

fn origin() -> Origin {
    Origin::start(OriginConfig::new("a")).expect("origin starts")
}

/// A load balancer in front of one live origin.
fn lb_with_origin(extra: &[&str]) -> (Origin, Lb) {
    let o = origin();
    let mut args = vec!["-b".to_string(), backend_arg(&o)];
    args.extend(extra.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let lb = Lb::start(&args);
    (o, lb)
}

/// What came back on a connection, and whether it ended with the peer's
/// close (EOF or reset) rather than with our deadline.
struct Reply {
    bytes: Vec<u8>,
    closed: bool,
    elapsed: Duration,
}

impl Reply {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.bytes).into_owned()
    }
}

/// Reads from `stream` until the peer closes or `timeout` passes.
fn read_until_close(stream: &mut TcpStream, timeout: Duration) -> Reply {
    let started = Instant::now();
    let deadline = started + timeout;
    let mut bytes = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    let closed = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break false;
        }
        stream.set_read_timeout(Some(left)).expect("set timeout");
        match stream.read(&mut chunk) {
            Ok(0) => break true,
            Ok(n) => bytes.extend_from_slice(&chunk[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                break false;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => break true,
        }
    };
    Reply {
        bytes,
        closed,
        elapsed: started.elapsed(),
    }
}

fn connect(port: u16) -> TcpStream {
    let s = TcpStream::connect(("127.0.0.1", port)).expect("connect to the balancer");
    s.set_write_timeout(Some(IO_TIMEOUT)).expect("set timeout");
    s.set_nodelay(true).expect("nodelay");
    s
}

/// Sends `request` on a new connection and reads until the close. Write
/// errors are ignored: the proxy may answer before it has read everything.
fn exchange(port: u16, request: &[u8]) -> Reply {
    let mut s = connect(port);
    let _ = s.write_all(request);
    read_until_close(&mut s, ANSWER_WITHIN)
}

/// One complete error answer with `status_line`, `Connection: close`, a
/// body matching its `Content-Length`, nothing after it, then the close.
fn assert_error_answer(reply: &Reply, status_line: &str, what: &str) {
    let text = reply.text();
    assert!(
        text.starts_with(&format!("{status_line}\r\n")),
        "{what}: want {status_line:?}, got {text:?}"
    );
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("{what}: incomplete head {text:?}"));
    let fields: Vec<(&str, &str)> = head
        .split("\r\n")
        .skip(1)
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim(), v.trim()))
        .collect();
    let field = |name: &str| {
        fields
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| *v)
    };
    assert!(
        field("connection").is_some_and(|v| v.eq_ignore_ascii_case("close")),
        "{what}: no Connection: close in {head:?}"
    );
    let length: usize = field("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{what}: no Content-Length in {head:?}"));
    assert_eq!(body.len(), length, "{what}: body {body:?} after {head:?}");
    assert!(
        reply.closed,
        "{what}: connection still open {:?} after the answer",
        reply.elapsed
    );
}

/// The proxy survived: a valid request on a fresh connection is served.
fn assert_still_serves(lb: &Lb) {
    let r = get(lb.port(), "/");
    assert_eq!(r.status, 200, "proxy still serves after the error");
    assert_eq!(r.body_str(), "hello from a\n");
}

/// Each of `requests` on its own connection gets `status_line` and a close;
/// the origin never sees any of them.
fn assert_each_refused(requests: &[&[u8]], status_line: &str) {
    let (o, lb) = lb_with_origin(&[]);
    for request in requests {
        let what = String::from_utf8_lossy(request).into_owned();
        let reply = exchange(lb.port(), request);
        assert_error_answer(&reply, status_line, &what);
        assert_still_serves(&lb);
    }
    assert_eq!(
        o.requests(),
        requests.len() as u64,
        "only the valid requests reached the origin"
    );
}

// ------------------------------------------------------------------- 400

#[test]
fn malformed_request_lines_are_400() {
    assert_each_refused(
        &[
            b"GARBAGE\r\n\r\n",
            b"GET\r\nHost: a\r\n\r\n",
            b"GET / HTTP/1.1 extra\r\nHost: a\r\n\r\n",
            b"GET / FTP/1.1\r\nHost: a\r\n\r\n",
            b"GET / HTTP/9.1\r\nHost: a\r\n\r\n",
            b"G(T / HTTP/1.1\r\nHost: a\r\n\r\n",
            b"GET /a b HTTP/1.1\r\nHost: a\r\n\r\n",
        ],
        BAD_REQUEST,
    );
}

#[test]
fn obs_fold_is_400() {
    assert_each_refused(
        &[
            b"GET / HTTP/1.1\r\nHost: a\r\nX-Long: one\r\n two\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\nX-Long: one\r\n\ttwo\r\n\r\n",
        ],
        BAD_REQUEST,
    );
}

#[test]
fn bare_cr_in_a_value_is_400() {
    assert_each_refused(
        &[
            b"GET / HTTP/1.1\r\nHost: a\r\nX-Cr: a\rb\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\rX-Smuggled: 1\r\n\r\n",
        ],
        BAD_REQUEST,
    );
}

#[test]
fn nul_in_a_value_is_400() {
    assert_each_refused(
        &[b"GET / HTTP/1.1\r\nHost: a\r\nX-Nul: a\0b\r\n\r\n"],
        BAD_REQUEST,
    );
}

#[test]
fn other_control_characters_in_a_value_are_400_but_htab_is_fine() {
    assert_each_refused(
        &[
            b"GET / HTTP/1.1\r\nHost: a\r\nX-Ctl: a\x01b\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\nX-Ctl: a\x1bb\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\nX-Ctl: a\x7fb\r\n\r\n",
        ],
        BAD_REQUEST,
    );
    let (_o, lb) = lb_with_origin(&[]);
    let mut c = lb.client();
    c.send_raw(b"GET /echo HTTP/1.1\r\nHost: a\r\nX-Tab: a\tb\r\n\r\n");
    let r = c.read_response(false);
    assert_eq!(r.status, 200);
    assert!(r.body_str().contains("X-Tab: a\tb\r\n"), "{}", r.body_str());
}

#[test]
fn space_before_colon_is_400() {
    assert_each_refused(
        &[
            b"GET / HTTP/1.1\r\nHost : a\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length : 0\r\n\r\n",
        ],
        BAD_REQUEST,
    );
}

#[test]
fn invalid_header_names_are_400() {
    assert_each_refused(
        &[
            b"GET / HTTP/1.1\r\nHost: a\r\nX(y): 1\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\nX@y: 1\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\n: empty\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\nNo-Colon\r\n\r\n",
        ],
        BAD_REQUEST,
    );
}

#[test]
fn missing_or_repeated_host_in_http11_is_400() {
    assert_each_refused(
        &[
            b"GET / HTTP/1.1\r\n\r\n",
            b"GET / HTTP/1.1\r\nAccept: */*\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
        ],
        BAD_REQUEST,
    );
}

#[test]
fn content_length_with_transfer_encoding_is_400() {
    assert_each_refused(
        &[
            b"POST /sink HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            b"POST /sink HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n",
        ],
        BAD_REQUEST,
    );
}

#[test]
fn differing_content_lengths_are_400() {
    assert_each_refused(
        &[
            b"POST /sink HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
            b"POST /sink HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 6\r\n\r\nhello!",
            b"POST /sink HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\nhello",
            b"POST /sink HTTP/1.1\r\nHost: a\r\nContent-Length: 0x5\r\n\r\nhello",
        ],
        BAD_REQUEST,
    );
}

#[test]
fn transfer_encoding_other_than_a_lone_chunked_is_400() {
    assert_each_refused(
        &[
            b"POST /sink HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
            b"POST /sink HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n",
            b"POST /sink HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n",
            b"POST /sink HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n",
            b"POST /sink HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            b"POST /sink HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        ],
        BAD_REQUEST,
    );
}

#[test]
fn bad_chunk_size_in_a_request_body_is_400() {
    // `/sink` answers only after the whole body, so the proxy meets the bad
    // framing before any response byte: it can still answer 400.
    let (o, lb) = lb_with_origin(&[]);
    let bodies: [&[u8]; 4] = [
        b"zz\r\nhello\r\n0\r\n\r\n",
        b"5\r\nhello\r\n-1\r\nx\r\n0\r\n\r\n",
        b"5\r\nhello\r\n\r\n0\r\n\r\n",
        b"1ffffffffffffffff\r\nx\r\n0\r\n\r\n",
    ];
    for body in bodies {
        let mut request =
            b"POST /sink HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        request.extend_from_slice(body);
        let what = String::from_utf8_lossy(&request).into_owned();
        let reply = exchange(lb.port(), &request);
        assert_error_answer(&reply, BAD_REQUEST, &what);
        assert_still_serves(&lb);
    }
    assert_eq!(o.requests(), 4, "only the GETs were answered by the origin");
}

#[test]
fn an_error_after_a_valid_request_on_the_same_connection_closes_it() {
    let (_o, lb) = lb_with_origin(&[]);
    let mut s = connect(lb.port());
    s.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\nX: a\x01\r\n\r\n")
        .expect("send");
    let reply = read_until_close(&mut s, ANSWER_WITHIN);
    let text = reply.text();
    let ok = "HTTP/1.1 200 OK\r\n";
    assert!(text.starts_with(ok), "{text:?}");
    let second = text
        .find("\r\nhello from a\n")
        .map(|i| &text[i + "\r\nhello from a\n".len()..])
        .unwrap_or_else(|| panic!("first response incomplete: {text:?}"));
    let second = Reply {
        bytes: second.as_bytes().to_vec(),
        closed: reply.closed,
        elapsed: reply.elapsed,
    };
    assert_error_answer(&second, BAD_REQUEST, "second, malformed request");
    assert_still_serves(&lb);
}

// ------------------------------------------------------------------- 431

#[test]
fn head_over_64_kib_is_431() {
    let (o, lb) = lb_with_origin(&[]);
    let mut big = b"GET / HTTP/1.1\r\nHost: a\r\nX-Big: ".to_vec();
    big.resize(big.len() + 70 * 1024, b'x');
    big.extend_from_slice(b"\r\n\r\n");
    let reply = exchange(lb.port(), &big);
    assert_error_answer(
        &reply,
        "HTTP/1.1 431 Request Header Fields Too Large",
        "70 KiB head",
    );

    // Many fields, the same total.
    let mut many = b"GET / HTTP/1.1\r\nHost: a\r\n".to_vec();
    for i in 0..700 {
        many.extend_from_slice(format!("X-Field-{i:04}: {}\r\n", "v".repeat(90)).as_bytes());
    }
    many.extend_from_slice(b"\r\n");
    assert!(many.len() > 64 * 1024);
    let reply = exchange(lb.port(), &many);
    assert_error_answer(
        &reply,
        "HTTP/1.1 431 Request Header Fields Too Large",
        "700 fields",
    );
    assert_still_serves(&lb);

    // Just under the limit is served (with room for what the proxy adds).
    let mut c = lb.client();
    let value = "y".repeat(60 * 1024);
    let r = c.request("GET", "/", &[("X-Big", &value)], b"");
    assert_eq!(r.status, 200, "a 60 KiB head is fine");
    assert_eq!(o.requests(), 2);
}

// ------------------------------------------------------------------- 408

#[test]
fn slowloris_head_gets_408() {
    let (_o, lb) = lb_with_origin(&["--head-timeout-ms", "300"]);
    let mut s = connect(lb.port());
    s.write_all(b"GET / HTTP/1.1\r\nHost: a\r\nX-Slow: ")
        .expect("send part of a head");
    let reply = read_until_close(&mut s, ANSWER_WITHIN);
    assert_error_answer(&reply, "HTTP/1.1 408 Request Timeout", "half a head");
    assert!(
        reply.elapsed >= Duration::from_millis(250) && reply.elapsed < Duration::from_secs(3),
        "408 after {:?}, want about 300 ms",
        reply.elapsed
    );
    assert_still_serves(&lb);
}

#[test]
fn trickling_head_gets_408_from_its_first_byte() {
    // One byte every 50 ms: each byte must not restart the clock.
    let (_o, lb) = lb_with_origin(&["--head-timeout-ms", "300"]);
    let mut s = connect(lb.port());
    let started = Instant::now();
    s.write_all(b"GET / HTTP/1.1\r\nHost: a\r\nX-Slow: ")
        .expect("send");
    s.set_read_timeout(Some(Duration::from_millis(50)))
        .expect("timeout");
    let mut got = Vec::new();
    let mut chunk = [0u8; 1024];
    for _ in 0..60 {
        if s.write_all(b"a").is_err() {
            break;
        }
        match s.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => {
                got.extend_from_slice(&chunk[..n]);
                break;
            }
            Err(_) => {}
        }
    }
    let waited = started.elapsed();
    let mut rest = read_until_close(&mut s, ANSWER_WITHIN);
    got.append(&mut rest.bytes);
    rest.bytes = got;
    assert_error_answer(&rest, "HTTP/1.1 408 Request Timeout", "trickled head");
    assert!(
        waited < Duration::from_millis(1500),
        "408 only after {waited:?} of trickling"
    );
    assert_still_serves(&lb);
}

#[test]
fn silent_new_connection_is_closed_without_an_answer() {
    let (_o, lb) = lb_with_origin(&["--head-timeout-ms", "300"]);
    let mut s = connect(lb.port());
    let reply = read_until_close(&mut s, ANSWER_WITHIN);
    assert!(reply.closed, "still open after {:?}", reply.elapsed);
    assert!(
        reply.bytes.is_empty(),
        "nothing to answer: {:?}",
        reply.text()
    );
    assert!(
        reply.elapsed >= Duration::from_millis(250),
        "closed after {:?}",
        reply.elapsed
    );
    assert_still_serves(&lb);
}

// ------------------------------------------------------------------- 405

#[test]
fn connect_is_405() {
    let (o, lb) = lb_with_origin(&[]);
    let reply = exchange(
        lb.port(),
        b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n",
    );
    assert_error_answer(&reply, "HTTP/1.1 405 Method Not Allowed", "CONNECT");
    assert_still_serves(&lb);
    assert_eq!(o.requests(), 1, "CONNECT never reached the origin");
}

// ------------------------------------------------------------- backends

/// A port bound but not listening, held for the test's lifetime: connects
/// are refused, and no other test can take the port meanwhile (a port that
/// was merely free a moment ago may become some other test's listener).
struct DeadPort(socket2::Socket);

impl DeadPort {
    fn new() -> DeadPort {
        use socket2::{Domain, Socket, Type};
        let socket = Socket::new(Domain::IPV4, Type::STREAM, None).expect("socket");
        let addr = SocketAddr::from(([127, 0, 0, 1], 0));
        socket.bind(&addr.into()).expect("bind without listening");
        DeadPort(socket)
    }

    fn arg(&self) -> String {
        let addr = self.0.local_addr().expect("local addr");
        addr.as_socket().expect("inet address").to_string()
    }
}

#[test]
fn no_connectable_backend_is_502() {
    let (dead1, dead2) = (DeadPort::new(), DeadPort::new());
    let lb = Lb::start(&["-b", &dead1.arg(), "-b", &dead2.arg()]);
    let started = Instant::now();
    let reply = exchange(lb.port(), b"GET / HTTP/1.1\r\nHost: a\r\n\r\n");
    // 503 once the health probes (whose first round runs at start) know
    // both backends are down, 502 before that.
    let status_line = match reply.text().starts_with("HTTP/1.1 503 ") {
        true => "HTTP/1.1 503 Service Unavailable",
        false => "HTTP/1.1 502 Bad Gateway",
    };
    assert_error_answer(&reply, status_line, "dead backends");
    assert!(started.elapsed() < Duration::from_secs(3));
    // Still alive: answers again (502, or 503 once the backends are known
    // to be down).
    let reply = exchange(lb.port(), b"GET / HTTP/1.1\r\nHost: a\r\n\r\n");
    let text = reply.text();
    assert!(
        text.starts_with("HTTP/1.1 502 ") || text.starts_with("HTTP/1.1 503 "),
        "{text:?}"
    );
    assert!(reply.closed);
}

#[test]
fn refused_backend_among_a_live_one_loses_no_request() {
    let o = origin();
    let dead = DeadPort::new();
    let lb = Lb::start(&["-b", &dead.arg(), "-b", &backend_arg(&o)]);
    for i in 0..10 {
        let r = get(lb.port(), &format!("/?fresh={i}"));
        assert_eq!(r.status, 200, "fresh connection {i}");
    }
    let mut c = lb.client();
    for i in 0..10 {
        let body = format!("body number {i}");
        let r = c.request("POST", "/echo", &[], body.as_bytes());
        assert_eq!(r.status, 200, "keep-alive request {i}");
        assert!(r.body_str().ends_with(&body), "{}", r.body_str());
    }
    assert_eq!(o.requests(), 20);
}

/// What a [`FakeBackend`] does with a request, after reading its head.
#[derive(Clone, Copy)]
enum Act {
    /// Writes these bytes and closes.
    Send(&'static [u8]),
    /// Closes without a byte.
    Close,
    /// Keeps the connection open and says nothing until dropped.
    Silent,
}

const OK_CLOSE: &[u8] =
    b"HTTP/1.1 200 OK\r\nContent-Length: 13\r\nConnection: close\r\n\r\nhello from a\n";

/// A raw backend, one request per connection: a request for a path in
/// `routes` gets that path's [`Act`], any other a valid `200 hello from a`.
/// Routing by path, not by connection order, keeps a stray connection
/// (another test probing a port) from taking a scripted answer.
struct FakeBackend {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    hits: Arc<AtomicUsize>,
    thread: Option<JoinHandle<()>>,
}

impl FakeBackend {
    fn start(routes: Vec<(String, Act)>) -> FakeBackend {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let stop = Arc::new(AtomicBool::new(false));
        let hits = Arc::new(AtomicUsize::new(0));
        let thread = thread::spawn({
            let stop = Arc::clone(&stop);
            let hits = Arc::clone(&hits);
            move || {
                let mut parked = Vec::new();
                for conn in listener.incoming() {
                    if stop.load(Ordering::Acquire) {
                        break;
                    }
                    let Ok(mut conn) = conn else { continue };
                    let Some(path) = read_request_path(&mut conn) else {
                        continue;
                    };
                    let act = routes
                        .iter()
                        .find(|(p, _)| *p == path)
                        .map_or(Act::Send(OK_CLOSE), |(_, act)| *act);
                    if !matches!(act, Act::Send(OK_CLOSE)) {
                        hits.fetch_add(1, Ordering::AcqRel);
                    }
                    match act {
                        Act::Send(bytes) => {
                            let _ = conn.write_all(bytes);
                        }
                        Act::Close => {}
                        Act::Silent => parked.push(conn),
                    }
                }
            }
        });
        FakeBackend {
            addr,
            stop,
            hits,
            thread: Some(thread),
        }
    }

    fn arg(&self) -> String {
        self.addr.to_string()
    }

    /// Requests that got a scripted (non-default) answer.
    fn hits(&self) -> usize {
        self.hits.load(Ordering::Acquire)
    }
}

impl Drop for FakeBackend {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        // Wakes the accept loop so it sees the flag.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Reads a request head (bounded in time and size) and returns its path;
/// `None` if the peer sent no complete head.
fn read_request_path(conn: &mut TcpStream) -> Option<String> {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(2)));
    let mut seen = Vec::new();
    let mut chunk = [0u8; 4096];
    while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
        if seen.len() > 1 << 20 {
            return None;
        }
        match conn.read(&mut chunk) {
            Ok(0) | Err(_) => return None,
            Ok(n) => seen.extend_from_slice(&chunk[..n]),
        }
    }
    let text = String::from_utf8_lossy(&seen);
    text.split(' ').nth(1).map(str::to_string)
}

/// `GET path` on a new connection, read until the close.
fn get_raw(port: u16, path: &str) -> Reply {
    exchange(
        port,
        format!("GET {path} HTTP/1.1\r\nHost: a\r\n\r\n").as_bytes(),
    )
}

#[test]
fn malformed_backend_responses_are_502() {
    let garbage: [&'static [u8]; 7] = [
        b"THIS IS NOT HTTP\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 12abc\r\n\r\nhello",
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
        b"HTTP/1.1 200 OK\r\nBad Header Line\r\n\r\n",
        b"HTTP/1.1 2000 OK\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nX: a\0b\r\nContent-Length: 0\r\n\r\n",
    ];
    let routes = garbage
        .iter()
        .enumerate()
        .map(|(i, g)| (format!("/garbage/{i}"), Act::Send(g)))
        .collect();
    let backend = FakeBackend::start(routes);
    let lb = Lb::start(&["-b", &backend.arg()]);
    for (i, g) in garbage.iter().enumerate() {
        let what = format!("backend sent {:?}", String::from_utf8_lossy(g));
        let reply = get_raw(lb.port(), &format!("/garbage/{i}"));
        assert_error_answer(&reply, "HTTP/1.1 502 Bad Gateway", &what);
        assert_still_serves(&lb);
    }
    assert_eq!(backend.hits(), garbage.len(), "each sent once, no retry");
}

#[test]
fn unusual_but_valid_backend_heads_are_relayed_in_canonical_form() {
    // A status line without a reason phrase once panicked the worker; bare
    // LF line ends are accepted from a backend but never passed on.
    let heads: [(&'static [u8], &str); 2] = [
        (
            b"HTTP/1.1 204\r\nConnection: close\r\n\r\n",
            "HTTP/1.1 204 \r\n",
        ),
        (
            b"HTTP/1.1 200 OK\nX-A: 1\nContent-Length: 2\nConnection: close\n\nok",
            "HTTP/1.1 200 OK\r\nX-A: 1\r\nContent-Length: 2\r\n",
        ),
    ];
    let routes = heads
        .iter()
        .enumerate()
        .map(|(i, (h, _))| (format!("/odd/{i}"), Act::Send(h)))
        .collect();
    let backend = FakeBackend::start(routes);
    let lb = Lb::start(&["-b", &backend.arg()]);
    for (i, (sent, want)) in heads.iter().enumerate() {
        let request = format!("GET /odd/{i} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
        let text = exchange(lb.port(), request.as_bytes()).text();
        assert!(
            text.starts_with(want),
            "backend sent {:?}, client got {text:?}",
            String::from_utf8_lossy(sent)
        );
        let head = text.split("\r\n\r\n").next().unwrap_or_default();
        assert!(
            !head.replace("\r\n", "").contains('\n'),
            "bare LF reached the client: {text:?}"
        );
        assert_still_serves(&lb);
    }
    assert_eq!(backend.hits(), heads.len());
}

#[test]
fn backend_closing_before_answering_is_502() {
    let backend = FakeBackend::start(vec![("/close".into(), Act::Close)]);
    let lb = Lb::start(&["-b", &backend.arg()]);
    let reply = get_raw(lb.port(), "/close");
    assert_error_answer(&reply, "HTTP/1.1 502 Bad Gateway", "backend closed");
    assert_still_serves(&lb);
}

#[test]
fn silent_backend_is_504_in_bounded_time() {
    let backend = FakeBackend::start(vec![("/silent".into(), Act::Silent)]);
    let lb = Lb::start(&["-b", &backend.arg(), "--response-timeout-ms", "300"]);
    let reply = get_raw(lb.port(), "/silent");
    assert_error_answer(&reply, "HTTP/1.1 504 Gateway Timeout", "silent backend");
    assert!(
        reply.elapsed >= Duration::from_millis(250) && reply.elapsed < Duration::from_secs(3),
        "504 after {:?}, want about 300 ms",
        reply.elapsed
    );
    assert_still_serves(&lb);
    assert_eq!(backend.hits(), 1, "a GET that timed out is not re-sent");
}

#[test]
fn slow_origin_is_504_and_the_client_can_go_on() {
    let (_o, lb) = lb_with_origin(&["--response-timeout-ms", "300"]);
    let reply = get_raw(lb.port(), "/delay/3000");
    assert_error_answer(&reply, "HTTP/1.1 504 Gateway Timeout", "/delay/3000");
    assert!(
        reply.elapsed < Duration::from_secs(2),
        "{:?}",
        reply.elapsed
    );
    let r = get(lb.port(), "/delay/50");
    assert_eq!(r.status, 200, "a quick enough answer is relayed");
    assert_eq!(r.body_str(), "delayed 50\n");
}

// ------------------------------------------------------------------ idle

#[test]
fn idle_keep_alive_client_is_closed_without_an_answer() {
    let (_o, lb) = lb_with_origin(&["--idle-timeout-ms", "300"]);
    let mut c = Client::connect(lb.port());
    assert_eq!(c.request("GET", "/", &[], b"").status, 200);
    let started = Instant::now();
    assert!(
        !c.is_closed(Duration::from_millis(100)),
        "closed before the idle limit"
    );
    assert!(
        c.is_closed(Duration::from_secs(3)),
        "still open after {:?}",
        started.elapsed()
    );
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(250) && waited < Duration::from_secs(3),
        "closed after {waited:?}, want about 300 ms"
    );
    assert_still_serves(&lb);
}

#[test]
fn a_keep_alive_client_within_the_idle_limit_stays() {
    let (o, lb) = lb_with_origin(&["--idle-timeout-ms", "600"]);
    let mut c = Client::connect(lb.port());
    for _ in 0..4 {
        assert_eq!(c.request("GET", "/", &[], b"").status, 200);
        assert!(!c.is_closed(Duration::from_millis(200)));
    }
    assert_eq!(o.requests(), 4);
}
