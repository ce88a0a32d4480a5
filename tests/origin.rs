//! The test origin and the shared harness against each other, no balancer in
//! between: proves both before the proxy tests lean on them.

mod common;

use std::io::{Read, Write};
use std::thread;
use std::time::Duration;

use common::*;
use load_balancer::origin::{Origin, OriginConfig};

fn origin(name: &str) -> Origin {
    Origin::start(OriginConfig::new(name)).expect("origin starts")
}

fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| b'a' + (i % 26) as u8).collect()
}

fn fnv1a(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

#[test]
fn root_and_counters() {
    let o = origin("a");
    let port = o.addr().port();
    let r = get(port, "/");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-origin"), Some("a"));
    assert_eq!(r.body_str(), "hello from a\n");
    assert_eq!(backend_arg(&o), format!("127.0.0.1:{port}"));
    assert!(wait_until(Duration::from_secs(1), || o.requests() == 1));
    assert_eq!(o.connections(), 1);
}

#[test]
fn chunked_body_with_trailer() {
    let o = origin("c");
    let r = get(o.addr().port(), "/chunked/100000");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("transfer-encoding"), Some("chunked"));
    assert_eq!(r.header("content-length"), None);
    assert_eq!(r.body, pattern(100_000));
    assert_eq!(r.trailer("x-trailer"), Some("done"));
}

#[test]
fn keep_alive_pipelining_head_and_close_delimited() {
    let o = origin("p");
    let mut c = Client::connect(o.addr().port());
    c.send_request("GET", "/bytes/70000", &[], b"")
        .expect("send");
    c.send_request("HEAD", "/bytes/10", &[], b"").expect("send");
    c.send_request("POST", "/status/204", &[], b"ignored")
        .expect("send");
    c.send_request("GET", "/close/1000", &[], b"")
        .expect("send");
    let r = c.read_response(false);
    assert_eq!((r.status, r.body.len()), (200, 70_000));
    assert_eq!(r.body, pattern(70_000));
    let r = c.read_response(true);
    assert_eq!((r.status, r.header("content-length")), (200, Some("10")));
    assert!(r.body.is_empty());
    assert_eq!(c.read_response(false).status, 204);
    let r = c.read_response(false);
    assert_eq!(r.header("connection"), Some("close"));
    assert_eq!(r.body, pattern(1000));
    assert!(c.is_closed(Duration::from_secs(2)));
    assert_eq!(o.connections(), 1, "all on one connection");
}

#[test]
fn expect_continue_then_echo() {
    let o = origin("e");
    let mut c = Client::connect(o.addr().port());
    c.send_raw(
        b"POST /echo HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n",
    );
    assert_eq!(c.read_response(false).status, 100);
    c.send_raw(b"body");
    let r = c.read_response(false);
    assert_eq!(r.status, 200);
    assert_eq!(
        r.body_str(),
        "POST /echo HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\nbody"
    );

    let chunks = b"5\r\nhello\r\n1\r\n!\r\n0\r\n\r\n";
    let r = c.request("PUT", "/echo", &[("Transfer-Encoding", "chunked")], chunks);
    assert_eq!(r.header("transfer-encoding"), Some("chunked"));
    assert!(r.body_str().ends_with("\r\n\r\nhello!"), "{}", r.body_str());
}

#[test]
fn large_bodies_stream_both_ways() {
    const SIZE: usize = 64 * 1024 * 1024;
    let o = origin("big");
    let mut c = Client::connect(o.addr().port());
    let head = format!("POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: {SIZE}\r\n\r\n");
    c.send_raw(head.as_bytes());
    // The origin echoes while it reads, so write from another thread.
    let mut writer = c.stream().try_clone().expect("clone");
    let feeder = thread::spawn(move || {
        let block = pattern(26 * 4096);
        let mut sent = 0;
        while sent < SIZE {
            let n = block.len().min(SIZE - sent);
            writer.write_all(&block[..n]).expect("write body");
            sent += n;
        }
    });
    let mut response_head = Vec::new();
    while !response_head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        c.read_exact(&mut byte).expect("response head");
        response_head.push(byte[0]);
    }
    let text = String::from_utf8_lossy(&response_head).into_owned();
    assert!(
        text.contains(&format!("Content-Length: {}\r\n", head.len() + SIZE)),
        "{text}"
    );
    let mut echoed_head = vec![0u8; head.len()];
    c.read_exact(&mut echoed_head).expect("echoed head");
    assert_eq!(echoed_head, head.as_bytes());
    let mut seen = 0usize;
    let mut buf = vec![0u8; 256 * 1024];
    let expected = pattern(26 * 4096 * 2);
    while seen < SIZE {
        let n = c
            .read(&mut buf[..(SIZE - seen).min(26 * 4096)])
            .expect("echoed body");
        assert!(n > 0, "closed after {seen} bytes");
        let offset = seen % (26 * 4096);
        assert!(
            buf[..n] == expected[offset..offset + n],
            "corrupt at {seen}"
        );
        seen += n;
    }
    feeder.join().expect("feeder");
    let body = pattern(1_000_003);
    let r = c.request("POST", "/sink", &[], &body);
    assert_eq!(r.body_str(), format!("1000003 {:016x}\n", fnv1a(&body)));
}

#[test]
fn websocket_round_trip() {
    let o = origin("w");
    let mut c = Client::connect(o.addr().port());
    let r = ws_upgrade(&mut c, "/ws");
    assert_eq!(r.status, 101);
    assert_eq!(r.header("sec-websocket-accept"), Some(WS_ACCEPT));
    let big = pattern(70_000);
    for (opcode, payload) in [
        (1u8, &b"hello"[..]),
        (2, &big[..300]),
        (2, &big[..]),
        (9, b"ping"),
    ] {
        c.write_all(&ws_client_frame(opcode, payload))
            .expect("frame");
        let (got_op, got) = ws_read_frame(&mut c).expect("echo");
        assert_eq!((got_op, got.as_slice()), (opcode, payload));
    }
    c.write_all(&ws_client_frame(8, &1000u16.to_be_bytes()))
        .expect("close");
    let (op, payload) = ws_read_frame(&mut c).expect("close echo");
    assert_eq!((op, payload), (8, 1000u16.to_be_bytes().to_vec()));
    assert!(c.is_closed(Duration::from_secs(2)));
}

#[test]
fn keep_alive_timeout_closes_idle_connections() {
    let o = Origin::start(OriginConfig {
        keep_alive_timeout: Some(1),
        ..OriginConfig::new("k")
    })
    .expect("origin");
    let mut c = Client::connect(o.addr().port());
    let r = c.request("GET", "/", &[], b"");
    assert_eq!(r.header("keep-alive"), Some("timeout=1"));
    assert!(c.is_closed(Duration::from_secs(3)));
}

#[test]
fn health_stop_and_restart() {
    let o = origin("h");
    let addr = o.addr();
    o.set_health(503);
    let r = get(addr.port(), "/health");
    assert_eq!((r.status, r.body_str().as_str()), (503, "health\n"));
    assert_eq!(o.requests(), 0, "/health is not counted");
    let raw = raw_exchange(
        addr.port(),
        b"GET /delay/20 HTTP/1.1\r\nConnection: close\r\n\r\n",
        Duration::from_secs(5),
    );
    assert!(String::from_utf8_lossy(&raw).ends_with("delayed 20\n"));

    let mut idle = Client::connect(addr.port());
    o.stop();
    assert!(idle.is_closed(Duration::from_secs(2)));
    assert!(Client::try_connect(addr.port()).is_err());
    let back = Origin::start(OriginConfig {
        addr,
        ..OriginConfig::new("h2")
    })
    .expect("restart on the same port");
    assert_eq!(get(addr.port(), "/").body_str(), "hello from h2\n");
    drop(back);
}

#[test]
fn run_lb_reports_an_exit() {
    let (code, _stdout, _stderr) = run_lb(&["--help"], Duration::from_secs(10));
    assert!(code.is_some(), "--help must exit on its own");
}

#[test]
#[should_panic(expected = "failed to start")]
fn lb_start_panics_when_the_process_exits() {
    let _lb = Lb::start(&["--no-such-option"]);
}
