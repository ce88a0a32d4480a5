//! Micro-benchmark of the per-request HTTP/1.1 work: parsing a typical
//! request head and rewriting it for a backend, parsing a response head and
//! rewriting it for the client, framing a chunked body.
//! Std only (`harness = false`): `cargo bench --bench http1 [-- ITERATIONS]`.

use std::hint::black_box;
use std::time::Instant;

use load_balancer::http1::{
    BodyFramer, BodyKind, RequestHead, RequestRewrite, ResponseHead, ResponseRewrite,
};

const REQUEST: &[u8] = b"GET /api/v1/items?page=2 HTTP/1.1\r\nHost: example.com\r\n\
User-Agent: Mozilla/5.0 (X11; Linux x86_64) Gecko/20100101 Firefox/120.0\r\n\
Accept: text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8\r\n\
Accept-Language: en-US,en;q=0.5\r\nAccept-Encoding: gzip, deflate, br\r\n\
Connection: keep-alive\r\nCookie: session=abc123; theme=dark\r\n\
Upgrade-Insecure-Requests: 1\r\n\r\n";

const RESPONSE: &[u8] =
    b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Tue, 24 Nov 2026 16:00:00 GMT\r\n\
Content-Type: application/json\r\nContent-Length: 1234\r\nConnection: keep-alive\r\n\
Keep-Alive: timeout=5, max=100\r\nCache-Control: no-cache\r\n\r\n";

fn main() {
    let iterations: u64 = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(2_000_000);
    println!("{iterations} iterations per row");

    let mut req = RequestHead::default();
    let mut out = Vec::with_capacity(2048);
    let rw = RequestRewrite {
        client_ip: b"192.0.2.10",
        host: b"backend",
        override_host: false,
    };
    row("request parse", iterations, || {
        black_box(req.parse(black_box(REQUEST), "lb_backend").ok());
    });
    row("request parse + rewrite", iterations, || {
        let _ = req.parse(black_box(REQUEST), "lb_backend");
        out.clear();
        req.write_for_backend(REQUEST, &rw, &mut out);
        black_box(&out);
    });

    let mut resp = ResponseHead::default();
    let rrw = ResponseRewrite {
        close: false,
        client_http10: false,
        set_sticky: None,
    };
    row("response parse + rewrite", iterations, || {
        let _ = resp.parse(black_box(RESPONSE), false, false);
        out.clear();
        resp.write_for_client(RESPONSE, &rrw, &mut out);
        black_box(&out);
    });

    let mut chunked = Vec::new();
    for _ in 0..16 {
        chunked.extend_from_slice(b"400\r\n");
        chunked.extend_from_slice(&[b'x'; 0x400]);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    row("frame 16 KiB chunked body", iterations / 10, || {
        let mut framer = BodyFramer::new(BodyKind::Chunked);
        // Canonical input: re-framing it in place writes what it read.
        black_box(framer.reframe(black_box(&mut chunked), false).ok());
    });
}

fn row(name: &str, iterations: u64, mut f: impl FnMut()) {
    for _ in 0..iterations / 10 {
        f();
    }
    let start = Instant::now();
    for _ in 0..iterations {
        f();
    }
    let ns = start.elapsed().as_nanos() as f64 / iterations as f64;
    println!("{name:<28} {ns:>8.1} ns");
}
