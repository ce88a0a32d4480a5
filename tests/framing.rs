//! SPEC §5's framing promises, end to end through the proxy: keep-alive and
//! pipelining, every body framing both ways, bodiless responses, 1xx and
//! `Expect: 100-continue`, hop-by-hop stripping, the forwarding fields,
//! `Host`, h2c refusal, and HTTP/1.0 clients.

mod common;

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{Client, IO_TIMEOUT, Lb, Response, backend_arg};
use load_balancer::origin::{Origin, OriginConfig};

fn origin() -> Origin {
    Origin::start(OriginConfig::new("a")).expect("origin starts")
}

fn lb_for(o: &Origin) -> Lb {
    Lb::start(&["-b", &backend_arg(o)])
}

/// The origin's generated body: `b'a' + i % 26`.
fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| b'a' + (i % 26) as u8).collect()
}

fn fnv1a(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// The head `/echo` saw, split into its request line and fields.
struct Echoed {
    request_line: String,
    fields: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Echoed {
    fn parse(r: &Response) -> Echoed {
        assert_eq!(r.status, 200, "/echo answered {}", r.status);
        let text = &r.body;
        let end = text
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .unwrap_or_else(|| panic!("no head in the echo: {:?}", r.body_str()));
        let head = String::from_utf8_lossy(&text[..end]).into_owned();
        let mut lines = head.split("\r\n");
        let request_line = lines.next().unwrap_or_default().to_string();
        let fields = lines
            .map(|l| {
                let (n, v) = l
                    .split_once(':')
                    .unwrap_or_else(|| panic!("bad echoed line {l:?}"));
                (n.to_string(), v.trim().to_string())
            })
            .collect();
        Echoed {
            request_line,
            fields,
            body: text[end + 4..].to_vec(),
        }
    }

    fn all(&self, name: &str) -> Vec<&str> {
        self.fields
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    fn one(&self, name: &str) -> Option<&str> {
        let all = self.all(name);
        assert!(all.len() <= 1, "{name} sent {} times: {all:?}", all.len());
        all.first().copied()
    }

    fn has(&self, name: &str) -> bool {
        !self.all(name).is_empty()
    }
}

// ------------------------------------------------------------ keep-alive

#[test]
fn many_requests_share_one_client_connection() {
    let o = origin();
    let lb = lb_for(&o);
    let mut c = lb.client();
    for i in 0..100 {
        let r = match i % 4 {
            0 => c.request("GET", "/", &[], b""),
            1 => c.request("GET", &format!("/bytes/{i}"), &[], b""),
            2 => c.request("GET", &format!("/chunked/{i}"), &[], b""),
            _ => c.request("POST", "/sink", &[], &pattern(i)),
        };
        assert_eq!(r.status, 200, "request {i}");
        assert_eq!(
            r.header("connection"),
            None,
            "request {i} keeps the connection"
        );
        match i % 4 {
            0 => assert_eq!(r.body_str(), "hello from a\n"),
            1 | 2 => assert_eq!(r.body, pattern(i), "request {i}"),
            _ => assert_eq!(
                r.body_str(),
                format!("{i} {:016x}\n", fnv1a(&pattern(i))),
                "request {i}"
            ),
        }
    }
    assert_eq!(o.requests(), 100);
    assert_eq!(o.connections(), 1, "one backend connection, kept alive");
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let o = origin();
    let lb = lb_for(&o);
    let mut c = lb.client();
    // Three requests, one write.
    c.send_raw(
        b"GET /bytes/10 HTTP/1.1\r\nHost: a\r\n\r\n\
          POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 11\r\n\r\nhello world\
          GET /chunked/30 HTTP/1.1\r\nHost: a\r\nX-Last: yes\r\n\r\n",
    );
    let first = c.read_response(false);
    assert_eq!(first.status, 200);
    assert_eq!(first.body, pattern(10));
    let second = Echoed::parse(&c.read_response(false));
    assert_eq!(second.request_line, "POST /echo HTTP/1.1");
    assert_eq!(second.body, b"hello world");
    assert!(
        !second.has("x-last"),
        "the next request is not part of this one"
    );
    let third = c.read_response(false);
    assert_eq!(third.status, 200);
    assert_eq!(third.body, pattern(30));
    assert_eq!(third.trailer("x-trailer"), Some("done"));
    // The connection is still in sync.
    assert_eq!(c.request("GET", "/", &[], b"").body_str(), "hello from a\n");
}

#[test]
fn many_pipelined_small_responses_stay_whole_and_in_order() {
    // Small bodies leave in the same write as their head; thousands of
    // pipelined requests, written while the answers stream back, must get
    // every body whole and in its own response.
    const REQUESTS: usize = 2000;
    let o = origin();
    let lb = lb_for(&o);
    let mut c = lb.client();
    let mut writer = c.stream().try_clone().expect("clone");
    let sender = std::thread::spawn(move || {
        for i in 0..REQUESTS {
            let req = format!("GET /bytes/{} HTTP/1.1\r\nHost: a\r\n\r\n", i % 1500 + 1);
            writer.write_all(req.as_bytes()).expect("send request");
        }
    });
    for i in 0..REQUESTS {
        let r = c.read_response(false);
        assert_eq!(r.status, 200, "response {i}");
        assert_eq!(r.body, pattern(i % 1500 + 1), "response {i}");
    }
    sender.join().expect("sender");
}

#[test]
fn pipelined_requests_split_anywhere_still_match() {
    let o = origin();
    let lb = lb_for(&o);
    let mut c = lb.client();
    let all: &[u8] = b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc\
                       GET /echo?second HTTP/1.1\r\nHost: a\r\n\r\n\
                       POST /echo?third HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n\
                       2\r\nxy\r\n0\r\n\r\n\
                       GET /bytes/5 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n";
    // Odd split points, with the proxy given time to see each piece alone.
    for piece in all.chunks(37) {
        c.send_raw(piece);
        c.stream().flush().expect("flush");
        std::thread::sleep(Duration::from_millis(2));
    }
    let r1 = Echoed::parse(&c.read_response(false));
    assert_eq!(r1.request_line, "POST /echo HTTP/1.1");
    assert_eq!(r1.body, b"abc");
    let r2 = Echoed::parse(&c.read_response(false));
    assert_eq!(r2.request_line, "GET /echo?second HTTP/1.1");
    assert!(r2.body.is_empty());
    let r3 = Echoed::parse(&c.read_response(false));
    assert_eq!(r3.request_line, "POST /echo?third HTTP/1.1");
    assert_eq!(r3.body, b"xy");
    let r4 = c.read_response(false);
    assert_eq!(r4.body, pattern(5));
    assert_eq!(r4.header("connection"), Some("close"));
    assert!(c.is_closed(Duration::from_secs(3)), "closed as asked");
}

#[test]
fn half_closed_client_gets_its_responses_then_the_close() {
    // A client that shuts its sending side after its requests still gets
    // every answer, and the proxy then closes instead of waiting for more.
    // The second request and the FIN arrive while the proxy is busy with
    // the first, so one read returns the request and the FIN is already
    // queued behind it (edge-triggered epoll will not report it again).
    let o = origin();
    let lb = lb_for(&o);
    let mut c = lb.client();
    c.send_raw(b"GET /delay/200 HTTP/1.1\r\nHost: a\r\n\r\n");
    c.send_raw(b"GET /bytes/100 HTTP/1.1\r\nHost: a\r\n\r\n");
    c.shutdown_write();
    let r = c.read_response(false);
    assert_eq!(r.body_str(), "delayed 200\n");
    let r = c.read_response(false);
    assert_eq!(r.body, pattern(100));
    assert!(
        c.is_closed(Duration::from_secs(3)),
        "the proxy did not notice the client's FIN"
    );
}

// ---------------------------------------------------------- body framing

#[test]
fn content_length_response() {
    let o = origin();
    let lb = lb_for(&o);
    let mut c = lb.client();
    for n in [0usize, 1, 16 * 1024, 100_000] {
        let r = c.request("GET", &format!("/bytes/{n}"), &[], b"");
        assert_eq!(r.status, 200);
        assert_eq!(r.header("content-length"), Some(n.to_string().as_str()));
        assert_eq!(r.header("transfer-encoding"), None);
        assert_eq!(r.body, pattern(n));
    }
}

#[test]
fn chunked_response_with_trailers_reaches_the_client() {
    let o = origin();
    let lb = lb_for(&o);
    let mut c = lb.client();
    for n in [1usize, 100, 100_000] {
        let r = c.request("GET", &format!("/chunked/{n}"), &[], b"");
        assert_eq!(r.status, 200);
        assert_eq!(r.header("transfer-encoding"), Some("chunked"));
        assert_eq!(r.header("content-length"), None);
        assert_eq!(r.body, pattern(n));
        assert_eq!(r.trailer("x-trailer"), Some("done"), "trailer relayed");
    }
}

#[test]
fn chunked_response_framing_is_relayed_byte_exact() {
    // Raw view: the chunks and the trailer section arrive as the origin
    // framed them.
    let o = origin();
    let lb = lb_for(&o);
    let mut s = TcpStream::connect(lb.addr()).expect("connect");
    s.write_all(b"GET /chunked/3 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        .expect("send");
    let text = read_to_close(&mut s);
    let (head, body) = text.split_once("\r\n\r\n").expect("head");
    assert!(head.contains("\r\nTransfer-Encoding: chunked"), "{head}");
    assert_eq!(body, "1\r\na\r\n2\r\nbc\r\n0\r\nX-Trailer: done\r\n\r\n");
}

#[test]
fn close_delimited_response() {
    let o = origin();
    let lb = lb_for(&o);
    let mut c = lb.client();
    let r = c.request("GET", "/close/50000", &[], b"");
    assert_eq!(r.status, 200);
    assert_eq!(r.body, pattern(50_000));
    assert_eq!(r.header("content-length"), None);
    assert_eq!(r.header("transfer-encoding"), None);
    assert_eq!(r.header("connection"), Some("close"));
    assert!(c.is_closed(Duration::from_secs(1)));
}

#[test]
fn head_response_has_no_body() {
    let o = origin();
    let lb = lb_for(&o);
    let mut c = lb.client();
    let r = c.request("HEAD", "/bytes/1000", &[], b"");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-length"), Some("1000"));
    let r = c.request("HEAD", "/chunked/1000", &[], b"");
    assert_eq!(r.status, 200);
    // Had a body leaked, this response would not parse.
    assert_no_more_bytes(&c);
    let r = c.request("GET", "/", &[], b"");
    assert_eq!(r.body_str(), "hello from a\n");
}

#[test]
fn status_204_and_304_have_no_body() {
    let o = origin();
    let lb = lb_for(&o);
    let mut c = lb.client();
    for status in [204u16, 304] {
        let r = c.request("GET", &format!("/status/{status}"), &[], b"");
        assert_eq!(r.status, status);
        assert_eq!(r.header("content-length"), None);
        assert_eq!(r.header("transfer-encoding"), None);
        assert_no_more_bytes(&c);
        assert_eq!(
            c.request("GET", "/", &[], b"").status,
            200,
            "after {status}"
        );
    }
}

/// Nothing beyond the response just read arrives within 150 ms.
fn assert_no_more_bytes(c: &Client) {
    let s = c.stream().try_clone().expect("clone");
    s.set_nonblocking(false).expect("blocking");
    s.set_read_timeout(Some(Duration::from_millis(150)))
        .expect("timeout");
    let mut byte = [0u8; 64];
    match s.peek(&mut byte) {
        Ok(n) => panic!(
            "unexpected bytes after the response: {:?}",
            String::from_utf8_lossy(&byte[..n])
        ),
        Err(e) => assert!(
            matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ),
            "{e}"
        ),
    }
    s.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
}

// ------------------------------------------------------------------ 1xx

#[test]
fn expect_100_continue_gets_100_before_the_body() {
    let o = origin();
    let lb = lb_for(&o);
    let mut c = lb.client();
    c.send_raw(
        b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n",
    );
    // The body is held back until the interim answer arrives.
    let interim = c.read_response(false);
    assert_eq!(interim.status, 100, "100 Continue first");
    assert!(interim.body.is_empty());
    c.send_raw(b"hello");
    let r = c.read_response(false);
    let echoed = Echoed::parse(&r);
    assert_eq!(echoed.body, b"hello");
    assert_eq!(echoed.one("expect"), Some("100-continue"));
}

#[test]
fn keep_alive_after_expect_100_continue() {
    // The body sent after the 100 must not be mistaken for the start of the
    // next request on the same connection.
    let o = origin();
    let lb = lb_for(&o);
    let mut c = lb.client();
    c.send_raw(
        b"POST /sink HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n",
    );
    assert_eq!(c.read_response(false).status, 100);
    c.send_raw(b"hello");
    let r = c.read_response(false);
    assert_eq!(r.body_str(), format!("5 {:016x}\n", fnv1a(b"hello")));
    assert_eq!(r.header("connection"), None);
    let r = c.request("GET", "/echo", &[], b"");
    let echoed = Echoed::parse(&r);
    assert_eq!(echoed.request_line, "GET /echo HTTP/1.1");
}

#[test]
fn request_body_sent_after_the_response_started_keeps_the_connection_in_sync() {
    // `/echo` answers as soon as it has the head; the body follows later.
    let o = origin();
    let lb = lb_for(&o);
    let mut c = lb.client();
    c.send_raw(b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n");
    // Wait for the echoed head so the response has surely started.
    let s = c.stream().try_clone().expect("clone");
    s.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
    let mut peek = [0u8; 1];
    s.peek(&mut peek).expect("response starts before the body");
    c.send_raw(b"5\r\nhello\r\n0\r\n\r\n");
    let echoed = Echoed::parse(&c.read_response(false));
    assert_eq!(echoed.body, b"hello");
    let r = c.request("GET", "/echo?next", &[], b"");
    assert_eq!(Echoed::parse(&r).request_line, "GET /echo?next HTTP/1.1");
}

#[test]
fn interim_100_for_an_http10_client_is_not_relayed() {
    let o = origin();
    let lb = lb_for(&o);
    let mut c = lb.client();
    // HTTP/1.0 has no 1xx; the origin sees the proxy's HTTP/1.1 request.
    c.send_raw(b"POST /sink HTTP/1.0\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\nhi");
    let r = c.read_response(false);
    assert_eq!(r.status, 200);
    assert_eq!(r.body_str(), format!("2 {:016x}\n", fnv1a(b"hi")));
}

// ------------------------------------------------------- request bodies

#[test]
fn chunked_request_body_reaches_echo_intact() {
    let o = origin();
    let lb = lb_for(&o);
    let mut c = lb.client();
    c.send_raw(
        b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n\
          5\r\nhello\r\n1;ext=1\r\n \r\nA\r\n0123456789\r\n0\r\nX-Req-Trailer: t\r\n\r\n",
    );
    let echoed = Echoed::parse(&c.read_response(false));
    assert_eq!(echoed.body, b"hello 0123456789");
    assert_eq!(echoed.one("transfer-encoding"), Some("chunked"));
    assert_eq!(echoed.one("content-length"), None);
    assert_eq!(c.request("GET", "/", &[], b"").status, 200);
}

#[test]
fn large_chunked_request_body_is_streamed_whole() {
    let o = origin();
    let lb = lb_for(&o);
    let mut c = lb.client();
    let data = pattern(2_000_000);
    let mut body = Vec::with_capacity(data.len() + 4096);
    for piece in data.chunks(30_011) {
        body.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
        body.extend_from_slice(piece);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(b"0\r\n\r\n");
    let r = c.request("POST", "/sink", &[("Transfer-Encoding", "chunked")], &body);
    assert_eq!(r.status, 200);
    assert_eq!(
        r.body_str(),
        format!("{} {:016x}\n", data.len(), fnv1a(&data))
    );
}

// --------------------------------------------------------- hop-by-hop

#[test]
fn hop_by_hop_request_fields_are_not_forwarded() {
    let o = origin();
    let lb = lb_for(&o);
    let mut c = lb.client();
    let r = c.request(
        "GET",
        "/echo",
        &[
            ("Connection", "keep-alive, X-Secret, x-other-secret"),
            ("X-Secret", "1"),
            ("X-Other-Secret", "2"),
            ("Keep-Alive", "timeout=5, max=100"),
            ("TE", "trailers"),
            ("Proxy-Connection", "keep-alive"),
            ("Trailer", "X-Foo"),
            ("X-Keep", "yes"),
        ],
        b"",
    );
    let echoed = Echoed::parse(&r);
    for gone in [
        "connection",
        "x-secret",
        "x-other-secret",
        "keep-alive",
        "te",
        "proxy-connection",
        "trailer",
        "upgrade",
    ] {
        assert!(
            !echoed.has(gone),
            "{gone} reached the origin: {:?}",
            echoed.fields
        );
    }
    assert_eq!(echoed.one("x-keep"), Some("yes"));
    // The client's keep-alive intent was honoured, not forwarded.
    assert_eq!(r.header("connection"), None);
    assert_eq!(c.request("GET", "/", &[], b"").status, 200);
}

#[test]
fn hop_by_hop_response_fields_are_not_relayed() {
    let o = Origin::start(OriginConfig {
        keep_alive_timeout: Some(30),
        ..OriginConfig::new("a")
    })
    .expect("origin");
    let lb = lb_for(&o);
    let mut c = lb.client();
    let r = c.request("GET", "/chunked/10", &[], b"");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("keep-alive"), None, "{:?}", r.headers);
    assert_eq!(r.header("trailer"), None, "{:?}", r.headers);
    assert_eq!(r.header_all("transfer-encoding"), vec!["chunked"]);
    assert_eq!(r.trailer("x-trailer"), Some("done"));
    assert_eq!(r.header("x-origin"), Some("a"), "end-to-end fields stay");
}

// ---------------------------------------------------- forwarding fields

#[test]
fn forwarding_fields_are_added_and_appended() {
    let o = origin();
    let lb = lb_for(&o);
    let mut c = lb.client();

    let plain = Echoed::parse(&c.request("GET", "/echo", &[], b""));
    assert_eq!(plain.one("x-forwarded-for"), Some("127.0.0.1"));
    assert_eq!(plain.one("x-forwarded-proto"), Some("http"));
    assert_eq!(plain.one("via"), Some("1.1 load_balancer"));

    let r = c.request(
        "GET",
        "/echo",
        &[
            ("X-Forwarded-For", "203.0.113.7"),
            ("X-Forwarded-For", "198.51.100.1, 192.0.2.9"),
            ("X-Forwarded-Proto", "https"),
            ("Via", "1.0 fred"),
        ],
        b"",
    );
    let echoed = Echoed::parse(&r);
    assert_eq!(
        echoed.one("x-forwarded-for"),
        Some("203.0.113.7, 198.51.100.1, 192.0.2.9, 127.0.0.1")
    );
    assert_eq!(echoed.one("x-forwarded-proto"), Some("http"));
    assert_eq!(echoed.one("via"), Some("1.0 fred, 1.1 load_balancer"));
    assert_eq!(
        r.header_all("via"),
        vec!["1.1 load_balancer"],
        "Via on the response"
    );
}

#[test]
fn host_is_forwarded_unchanged() {
    let o = origin();
    let lb = lb_for(&o);
    let mut c = lb.client();
    for host in ["example.test:8443", "Mixed.Case.example", "[::1]:80"] {
        let echoed = Echoed::parse(&c.request("GET", "/echo", &[("Host", host)], b""));
        assert_eq!(echoed.one("host"), Some(host));
    }
    let echoed = Echoed::parse(&c.request("GET", "/echo?q=1&r=%20", &[], b""));
    assert_eq!(echoed.request_line, "GET /echo?q=1&r=%20 HTTP/1.1");
}

// ------------------------------------------------------------------ h2c

#[test]
fn h2c_upgrade_is_not_forwarded() {
    let o = origin();
    let lb = lb_for(&o);
    let mut c = lb.client();
    let variants: [&[(&str, &str)]; 3] = [
        &[
            ("Connection", "Upgrade, HTTP2-Settings"),
            ("Upgrade", "h2c"),
            ("HTTP2-Settings", "AAMAAABkAAQCAAAAAAIAAAAA"),
        ],
        // HTTP2-Settings not named in Connection: still never forwarded.
        &[
            ("Connection", "Upgrade"),
            ("Upgrade", "h2c"),
            ("HTTP2-Settings", "AAMAAABkAAQCAAAAAAIAAAAA"),
        ],
        // Upgrade without the Connection token.
        &[
            ("Upgrade", "h2c"),
            ("HTTP2-Settings", "AAMAAABkAAQCAAAAAAIAAAAA"),
        ],
    ];
    for headers in variants {
        let r = c.request("GET", "/echo", headers, b"");
        assert_eq!(r.status, 200, "plain HTTP/1.1 answer, not 101");
        assert_eq!(r.header("upgrade"), None);
        let echoed = Echoed::parse(&r);
        for gone in ["upgrade", "http2-settings", "connection"] {
            assert!(
                !echoed.has(gone),
                "{gone} reached the origin: {:?}",
                echoed.fields
            );
        }
        assert!(!r.body_str().contains("h2c"), "{}", r.body_str());
    }
    // The connection is still plain HTTP/1.1.
    assert_eq!(c.request("GET", "/", &[], b"").body_str(), "hello from a\n");
}

// ------------------------------------------------------------ HTTP/1.0

/// Reads until the peer closes (bounded by `IO_TIMEOUT`).
fn read_to_close(s: &mut TcpStream) -> String {
    s.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
    let deadline = Instant::now() + IO_TIMEOUT;
    let mut out = Vec::new();
    let mut chunk = [0u8; 64 * 1024];
    while Instant::now() < deadline {
        match s.read(&mut chunk) {
            Ok(0) => return String::from_utf8_lossy(&out).into_owned(),
            Ok(n) => out.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => panic!("read: {e} after {:?}", String::from_utf8_lossy(&out)),
        }
    }
    panic!("not closed: {:?}", String::from_utf8_lossy(&out));
}

#[test]
fn http10_client_gets_close_by_default() {
    let o = origin();
    let lb = lb_for(&o);
    let mut c = lb.client();
    c.send_raw(b"GET / HTTP/1.0\r\n\r\n");
    let r = c.read_response(false);
    assert_eq!(r.status, 200);
    assert_eq!(r.body_str(), "hello from a\n");
    assert_eq!(r.header("connection"), Some("close"));
    assert!(
        c.is_closed(Duration::from_secs(3)),
        "closed after the answer"
    );
}

#[test]
fn http10_keep_alive_client_stays_open() {
    let o = origin();
    let lb = lb_for(&o);
    let mut c = lb.client();
    for i in 0..3 {
        c.send_raw(b"GET /bytes/7 HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
        let r = c.read_response(false);
        assert_eq!(r.status, 200, "request {i}");
        assert_eq!(r.body, pattern(7));
        assert_eq!(r.header("connection"), Some("keep-alive"), "request {i}");
    }
    let echoed = Echoed::parse(&{
        c.send_raw(b"GET /echo HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
        c.read_response(false)
    });
    assert_eq!(echoed.request_line, "GET /echo HTTP/1.1", "sent on as 1.1");
    assert!(echoed.has("host"), "a Host is supplied for the backend");
    assert_eq!(echoed.one("via"), Some("1.0 load_balancer"));
    assert!(!echoed.has("connection") && !echoed.has("keep-alive"));
}

#[test]
fn http10_client_gets_chunked_responses_dechunked_and_close_delimited() {
    let o = origin();
    let lb = lb_for(&o);
    for keep_alive in [false, true] {
        let mut s = TcpStream::connect(lb.addr()).expect("connect");
        let request: &[u8] = if keep_alive {
            b"GET /chunked/100000 HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"
        } else {
            b"GET /chunked/100000 HTTP/1.0\r\n\r\n"
        };
        s.write_all(request).expect("send");
        let text = read_to_close(&mut s);
        let (head, body) = text.split_once("\r\n\r\n").expect("head");
        let lower = head.to_ascii_lowercase();
        assert!(lower.starts_with("http/1.1 200 "), "{head}");
        assert!(!lower.contains("transfer-encoding"), "{head}");
        assert!(!lower.contains("content-length"), "{head}");
        assert!(lower.contains("\r\nconnection: close"), "{head}");
        assert_eq!(body.as_bytes(), pattern(100_000), "keep-alive={keep_alive}");
    }
}

#[test]
fn http10_request_body_with_content_length() {
    let o = origin();
    let lb = lb_for(&o);
    let mut s = TcpStream::connect(lb.addr()).expect("connect");
    s.write_all(b"POST /echo HTTP/1.0\r\nContent-Length: 4\r\n\r\nping")
        .expect("send");
    let text = read_to_close(&mut s);
    assert!(text.starts_with("HTTP/1.1 200 "), "{text}");
    assert!(text.ends_with("\r\n\r\nping"), "{text}");
}
