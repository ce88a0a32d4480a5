//! Backend keep-alive pool (README "Backend connections"): connections are
//! reused whatever the framing of the previous exchange, retired before the
//! backend's announced `Keep-Alive: timeout`, dropped after `max`, and a
//! request that meets a reused connection the backend closed silently is
//! re-sent once on a fresh one.

mod common;

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use common::{Client, Lb, backend_arg};
use load_balancer::origin::{Origin, OriginConfig};

fn origin(cfg: OriginConfig) -> Origin {
    Origin::start(cfg).expect("origin starts")
}

#[test]
fn sequential_clients_share_one_backend_connection_whatever_the_framing() {
    let o = origin(OriginConfig::new("a"));
    let lb = Lb::start(&["-b", &backend_arg(&o)]);
    let mut expected_requests = 0;
    for round in 0..3 {
        let mut c = lb.client();
        let r = c.request("GET", "/", &[], b"");
        assert_eq!((r.status, r.body_str().as_str()), (200, "hello from a\n"));
        let r = c.request("HEAD", "/bytes/10", &[], b"");
        assert_eq!((r.status, r.header("content-length")), (200, Some("10")));
        let r = c.request("POST", "/echo", &[], format!("round {round}").as_bytes());
        assert!(r.body_str().ends_with(&format!("\r\n\r\nround {round}")));
        let r = c.request("GET", "/chunked/5000", &[], b"");
        assert_eq!((r.status, r.body.len()), (200, 5000));
        assert_eq!(r.trailer("x-trailer"), Some("done"));
        assert_eq!(c.request("GET", "/status/204", &[], b"").status, 204);
        assert_eq!(c.request("GET", "/status/304", &[], b"").status, 304);
        let r = c.request(
            "POST",
            "/sink",
            &[("Transfer-Encoding", "chunked")],
            b"3\r\nfoo\r\n3\r\nbar\r\n0\r\n\r\n",
        );
        assert_eq!(r.body_str(), "6 85944171f73967e8\n");
        let r = c.request("GET", "/status/404", &[], b"");
        assert_eq!(r.status, 404);
        expected_requests += 8;
    }
    assert_eq!(o.requests(), expected_requests);
    assert_eq!(
        o.connections(),
        1,
        "every exchange ended cleanly, so one backend connection serves all"
    );
}

#[test]
fn concurrent_clients_open_what_they_need_then_reuse_it() {
    let o = origin(OriginConfig::new("a"));
    let lb = Lb::start(&["-b", &backend_arg(&o)]);
    let port = lb.port();
    let workers: Vec<_> = (0..4)
        .map(|_| {
            thread::spawn(move || {
                let mut c = Client::connect(port);
                c.request("GET", "/delay/300", &[], b"").status
            })
        })
        .collect();
    for w in workers {
        assert_eq!(w.join().expect("client thread"), 200);
    }
    let opened = o.connections();
    assert!(
        (1..=4).contains(&opened),
        "{opened} connections for 4 requests"
    );
    for _ in 0..20 {
        assert_eq!(lb.client().request("GET", "/", &[], b"").status, 200);
    }
    assert_eq!(
        o.connections(),
        opened,
        "the idle pool serves later requests"
    );
}

#[test]
fn backend_that_closes_its_idle_connection_after_one_second_is_not_a_502() {
    // The origin announces `Keep-Alive: timeout=1` and closes idle
    // connections after 1 s; the proxy must not send on them.
    let o = origin(OriginConfig {
        keep_alive_timeout: Some(1),
        ..OriginConfig::new("k")
    });
    let lb = Lb::start(&["-b", &backend_arg(&o)]);
    let mut c = lb.client();
    assert_eq!(c.request("GET", "/", &[], b"").status, 200);
    thread::sleep(Duration::from_millis(1500));
    let r = c.request("GET", "/", &[], b"");
    assert_eq!(r.status, 200, "{}", r.body_str());
    let r = c.request("POST", "/echo", &[], b"body");
    assert_eq!(r.status, 200);
    assert!(r.body_str().ends_with("body"));
    assert_eq!(o.requests(), 3);
    assert_eq!(o.connections(), 2);
}

#[test]
fn idle_connection_is_retired_a_second_before_the_announced_timeout() {
    // timeout=3: kept for 2 s. Reused after 0.5 s; after 2.3 s the proxy
    // has retired it although the origin would still take it.
    let o = origin(OriginConfig {
        keep_alive_timeout: Some(3),
        ..OriginConfig::new("k")
    });
    let lb = Lb::start(&["-b", &backend_arg(&o)]);
    let mut c = lb.client();
    assert_eq!(c.request("GET", "/", &[], b"").status, 200);
    thread::sleep(Duration::from_millis(500));
    assert_eq!(c.request("GET", "/", &[], b"").status, 200);
    assert_eq!(o.connections(), 1, "reused within the window");
    thread::sleep(Duration::from_millis(2300));
    assert_eq!(c.request("GET", "/", &[], b"").status, 200);
    assert_eq!(
        o.connections(),
        2,
        "a connection idle past timeout - 1 s is not reused"
    );
    assert_eq!(o.requests(), 3);
}

#[test]
fn keep_alive_max_one_closes_every_backend_connection_without_errors() {
    let o = origin(OriginConfig {
        keep_alive_max: Some(1),
        ..OriginConfig::new("m")
    });
    let lb = Lb::start(&["-b", &backend_arg(&o)]);
    let mut c = lb.client();
    for i in 0..30 {
        let r = if i % 2 == 0 {
            c.request("GET", "/bytes/1000", &[], b"")
        } else {
            c.request("POST", "/echo", &[], b"x")
        };
        assert_eq!(r.status, 200, "request {i}");
        assert_eq!(
            r.header("connection"),
            None,
            "request {i}: client keeps alive"
        );
    }
    assert_eq!(o.requests(), 30);
    assert_eq!(
        o.connections(),
        30,
        "each backend connection carried one request"
    );
}

#[test]
fn keep_alive_max_three_uses_each_connection_three_times() {
    let o = origin(OriginConfig {
        keep_alive_max: Some(3),
        ..OriginConfig::new("m")
    });
    let lb = Lb::start(&["-b", &backend_arg(&o)]);
    for _ in 0..5 {
        let mut c = lb.client();
        for _ in 0..6 {
            assert_eq!(c.request("GET", "/", &[], b"").status, 200);
        }
    }
    assert_eq!(o.requests(), 30);
    assert_eq!(o.connections(), 10);
}

// ---------------------------------------------------------------------------
// A raw backend that closes keep-alive connections without saying so

/// Active health probes are sent here (`--health-path`) and answered
/// apart: they are not what these tests count. (The test origin serves
/// `/health` too, uncounted.)
const PROBE_PATH: &str = "/health";
const PROBE_ANSWER: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";

/// A balancer in front of a raw backend, probing it on [`PROBE_PATH`].
fn lb_for(backend: &RawBackend) -> Lb {
    Lb::start(&["--health-path", PROBE_PATH, "-b", &backend.addr.to_string()])
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Answer one request (keep-alive by default in HTTP/1.1), then close.
    CloseAfterAnswer,
    /// Answer one request, then read the next one and close (FIN) without
    /// answering: the backend closed just as the proxy reused the connection.
    CloseOnNextRequest,
    /// As `CloseOnNextRequest`, but with a reset.
    ResetOnNextRequest,
    /// Only the very first request of the first connection is answered;
    /// every other request is met with a close.
    AnswerOnlyTheFirst,
    /// Every request is met with a close.
    NeverAnswer,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Seen {
    conn: u64,
    method: String,
    path: String,
    body: Vec<u8>,
    answered: bool,
}

struct RawBackend {
    addr: SocketAddr,
    connections: Arc<AtomicU64>,
    seen: Arc<Mutex<Vec<Seen>>>,
    stop: Arc<AtomicBool>,
    acceptor: Option<JoinHandle<()>>,
}

impl RawBackend {
    fn start(mode: Mode) -> RawBackend {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("addr");
        let connections = Arc::new(AtomicU64::new(0));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let acceptor = thread::spawn({
            let (connections, seen, stop) = (connections.clone(), seen.clone(), stop.clone());
            move || {
                // Bounded: a test never runs this long.
                let deadline = Instant::now() + Duration::from_secs(60);
                while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                    match listener.accept() {
                        Ok((stream, _)) => {
                            let (connections, seen) = (connections.clone(), seen.clone());
                            thread::spawn(move || serve(stream, &connections, mode, &seen));
                        }
                        Err(_) => thread::sleep(Duration::from_millis(2)),
                    }
                }
            }
        });
        RawBackend {
            addr,
            connections,
            seen,
            stop,
            acceptor: Some(acceptor),
        }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn connections(&self) -> u64 {
        self.connections.load(Ordering::SeqCst)
    }
}

impl Drop for RawBackend {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(a) = self.acceptor.take() {
            let _ = a.join();
        }
    }
}

fn serve(mut stream: TcpStream, connections: &AtomicU64, mode: Mode, seen: &Mutex<Vec<Seen>>) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let mut buf = Vec::new();
    let mut served = 0;
    // Numbered at its first request, so probe connections take no number.
    let mut number = None;
    while let Ok(Some((method, path, body))) = read_request(&mut stream, &mut buf) {
        if path == PROBE_PATH {
            let _ = stream.write_all(PROBE_ANSWER);
            return;
        }
        let conn = *number.get_or_insert_with(|| connections.fetch_add(1, Ordering::SeqCst) + 1);
        let answer = match mode {
            Mode::CloseAfterAnswer => true,
            Mode::CloseOnNextRequest | Mode::ResetOnNextRequest => served == 0,
            Mode::AnswerOnlyTheFirst => conn == 1 && served == 0,
            Mode::NeverAnswer => false,
        };
        seen.lock().unwrap_or_else(|e| e.into_inner()).push(Seen {
            conn,
            method: method.clone(),
            path: path.clone(),
            body: body.clone(),
            answered: answer,
        });
        if !answer {
            if mode == Mode::ResetOnNextRequest {
                let _ = socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO));
            }
            return;
        }
        let text = format!(
            "conn={conn} {method} {path} body={}",
            String::from_utf8_lossy(&body)
        );
        let response = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{text}",
            text.len()
        );
        if stream.write_all(response.as_bytes()).is_err() {
            return;
        }
        served += 1;
        if mode == Mode::CloseAfterAnswer {
            return;
        }
    }
}

/// One `read`, retried on EINTR (a read with a timeout is not restarted
/// after a signal or a stop/continue of the process).
fn read_retrying(stream: &mut TcpStream, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        match stream.read(buf) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}

/// Reads one request with a `Content-Length` body; `None` at EOF.
fn read_request(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
) -> io::Result<Option<(String, String, Vec<u8>)>> {
    let mut chunk = [0u8; 8192];
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut req = httparse::Request::new(&mut headers);
        if let Ok(httparse::Status::Complete(len)) = req.parse(buf) {
            let method = req.method.unwrap_or_default().to_string();
            let path = req.path.unwrap_or_default().to_string();
            let length: usize = req
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                .and_then(|h| std::str::from_utf8(h.value).ok()?.trim().parse().ok())
                .unwrap_or(0);
            while buf.len() < len + length {
                let n = read_retrying(stream, &mut chunk)?;
                if n == 0 {
                    return Ok(None);
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            let body = buf[len..len + length].to_vec();
            buf.drain(..len + length);
            return Ok(Some((method, path, body)));
        }
        let n = read_retrying(stream, &mut chunk)?;
        if n == 0 {
            return Ok(None);
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

#[test]
fn backend_closing_after_every_answer_never_costs_a_request() {
    // The close races with the next request: the proxy either sees it while
    // the connection is idle, or meets it on reuse and re-sends.
    let backend = RawBackend::start(Mode::CloseAfterAnswer);
    let lb = lb_for(&backend);
    let mut c = lb.client();
    for i in 0..40 {
        let body = format!("payload {i}");
        let (method, body) = match i % 2 {
            0 => ("GET", ""),
            _ => ("POST", body.as_str()),
        };
        let path = format!("/r{i}");
        let r = c.request(method, &path, &[], body.as_bytes());
        assert_eq!(r.status, 200, "request {i}: {}", r.body_str());
        let text = r.body_str();
        assert!(
            text.ends_with(&format!(" {method} {path} body={body}")),
            "request {i}: {text}"
        );
    }
    let answered = backend.seen().iter().filter(|s| s.answered).count();
    assert_eq!(answered, 40);
}

fn resend_once_on_a_fresh_connection(mode: Mode) {
    let backend = RawBackend::start(mode);
    let lb = lb_for(&backend);

    let r = lb.client().request("GET", "/first", &[], b"");
    assert_eq!(r.body_str(), "conn=1 GET /first body=");

    // GET on the pooled connection, which the backend drops on receipt.
    let r = lb.client().request("GET", "/second", &[], b"");
    assert_eq!(r.status, 200, "{}", r.body_str());
    assert_eq!(r.body_str(), "conn=2 GET /second body=");

    // POST with a body: the replay carries the body again, whole.
    let mut c = lb.client();
    let r = c.request("POST", "/third", &[("X-Test", "1")], b"small body");
    assert_eq!(r.status, 200, "{}", r.body_str());
    assert_eq!(r.body_str(), "conn=3 POST /third body=small body");

    let seen = backend.seen();
    let summary: Vec<(u64, &str, bool)> = seen
        .iter()
        .map(|s| (s.conn, s.path.as_str(), s.answered))
        .collect();
    assert_eq!(
        summary,
        [
            (1, "/first", true),
            (1, "/second", false),
            (2, "/second", true),
            (2, "/third", false),
            (3, "/third", true),
        ]
    );
    assert!(
        seen.iter()
            .filter(|s| s.path == "/third")
            .all(|s| s.body == b"small body")
    );
    // The client connection is intact.
    assert_eq!(c.request("GET", "/fourth", &[], b"").status, 200);
}

#[test]
fn reused_connection_closed_by_the_backend_is_resent_once() {
    resend_once_on_a_fresh_connection(Mode::CloseOnNextRequest);
}

#[test]
fn reused_connection_reset_by_the_backend_is_resent_once() {
    resend_once_on_a_fresh_connection(Mode::ResetOnNextRequest);
}

#[test]
fn a_request_is_resent_at_most_once() {
    // The replay on a fresh connection fails too: 502, and the backend saw
    // the request exactly twice (once on the reused connection, once on
    // the fresh one), never a third time.
    let backend = RawBackend::start(Mode::AnswerOnlyTheFirst);
    let lb = lb_for(&backend);
    assert_eq!(lb.client().request("GET", "/first", &[], b"").status, 200);
    let r = lb.client().request("POST", "/second", &[], b"data");
    assert_eq!(r.status, 502, "{}", r.body_str());
    let seen = backend.seen();
    let second: Vec<u64> = seen
        .iter()
        .filter(|s| s.path == "/second")
        .map(|s| s.conn)
        .collect();
    assert_eq!(second, [1, 2], "{seen:?}");
    assert_eq!(backend.connections(), 2);
}

#[test]
fn fresh_connection_closed_before_answering_is_a_502_not_a_replay() {
    // Nothing proves that a backend which closed a *fresh* connection did
    // not act on the request: it is not re-sent.
    let backend = RawBackend::start(Mode::NeverAnswer);
    let lb = lb_for(&backend);
    let mut c = lb.client();
    let r = c.request("POST", "/once", &[], b"data");
    assert_eq!(r.status, 502, "{}", r.body_str());
    assert!(
        c.is_closed(Duration::from_secs(3)),
        "an error answer closes"
    );
    let seen = backend.seen();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(backend.connections(), 1);
}

#[test]
fn replay_carries_a_body_that_fits_the_client_buffer_whole() {
    let backend = RawBackend::start(Mode::CloseOnNextRequest);
    let lb = lb_for(&backend);
    assert_eq!(lb.client().request("GET", "/first", &[], b"").status, 200);
    let body: Vec<u8> = (0..8 * 1024).map(|i| b'A' + (i % 23) as u8).collect();
    let r = lb.client().request("PUT", "/big", &[], &body);
    assert_eq!(r.status, 200, "{}", r.body_str());
    let text = r.body_str();
    assert!(text.starts_with("conn=2 PUT /big body="), "{}", &text[..40]);
    assert!(
        text.as_bytes().ends_with(&body),
        "the replayed body is whole"
    );
    let sends: Vec<(u64, usize)> = backend
        .seen()
        .iter()
        .filter(|s| s.path == "/big")
        .map(|s| (s.conn, s.body.len()))
        .collect();
    assert_eq!(sends, [(1, body.len()), (2, body.len())]);
}

#[test]
fn request_whose_body_outgrew_the_buffer_is_not_replayed() {
    // 256 KiB cannot be kept for a replay: once part of it is dropped, a
    // backend that closes the reused connection means 502, not a re-send
    // of half a request.
    let backend = RawBackend::start(Mode::CloseOnNextRequest);
    let lb = lb_for(&backend);
    assert_eq!(lb.client().request("GET", "/first", &[], b"").status, 200);
    let body = vec![b'z'; 256 * 1024];
    let mut c = lb.client();
    let r = c.request("POST", "/huge", &[], &body);
    assert_eq!(r.status, 502, "{}", r.body_str());
    let sends: Vec<u64> = backend
        .seen()
        .iter()
        .filter(|s| s.path == "/huge")
        .map(|s| s.conn)
        .collect();
    assert_eq!(sends, [1], "sent once, on the reused connection");
}

#[test]
fn pipelined_requests_survive_a_replay_in_order() {
    let backend = RawBackend::start(Mode::CloseOnNextRequest);
    let lb = lb_for(&backend);
    assert_eq!(lb.client().request("GET", "/first", &[], b"").status, 200);
    // Three requests in one write; the first meets the dropped connection.
    let mut c = lb.client();
    c.send_request("POST", "/p1", &[], b"one").expect("send");
    c.send_request("GET", "/p2", &[], b"").expect("send");
    c.send_request("POST", "/p3", &[], b"three").expect("send");
    let bodies: Vec<String> = (0..3)
        .map(|_| {
            let r = c.read_response(false);
            assert_eq!(r.status, 200, "{}", r.body_str());
            r.body_str()
        })
        .collect();
    // Each connection of this backend answers one request: p1 is replayed
    // on conn 2, p2 meets conn 2 closing and goes to conn 3, and so on.
    assert_eq!(
        bodies,
        [
            "conn=2 POST /p1 body=one",
            "conn=3 GET /p2 body=",
            "conn=4 POST /p3 body=three"
        ]
    );
}
