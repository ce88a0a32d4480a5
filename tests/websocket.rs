//! Upgrades through the proxy (SPEC §5): WebSocket frames tunnelled both
//! ways after a `101`, HTTP framing kept when the answer is not a `101`,
//! and `Upgrade: h2c` never forwarded.

mod common;

use std::io::Write;
use std::thread;
use std::time::Duration;

use common::{Client, Lb, WS_ACCEPT, backend_arg, ws_client_frame, ws_read_frame, ws_upgrade};
use load_balancer::origin::{Origin, OriginConfig};

const TEXT: u8 = 0x1;
const BINARY: u8 = 0x2;
const CLOSE: u8 = 0x8;
const PING: u8 = 0x9;

fn origin(name: &str) -> Origin {
    Origin::start(OriginConfig::new(name)).expect("origin starts")
}

fn upgraded(port: u16) -> Client {
    let mut c = Client::connect(port);
    let r = ws_upgrade(&mut c, "/ws");
    assert_eq!(r.status, 101, "{r:?}");
    assert_eq!(r.header("sec-websocket-accept"), Some(WS_ACCEPT));
    assert!(
        r.header("upgrade")
            .is_some_and(|v| v.eq_ignore_ascii_case("websocket")),
        "{r:?}"
    );
    assert!(
        r.header_all("connection")
            .iter()
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case("upgrade")),
        "{r:?}"
    );
    assert_eq!(r.header("content-length"), None);
    assert_eq!(r.header("transfer-encoding"), None);
    c
}

fn echo(c: &mut Client, opcode: u8, payload: &[u8]) {
    c.write_all(&ws_client_frame(opcode, payload))
        .expect("send frame");
    let (op, got) = ws_read_frame(c).expect("read frame");
    assert_eq!(op, opcode);
    assert!(
        got == payload,
        "payload of {} bytes came back as {} bytes",
        payload.len(),
        got.len()
    );
}

fn close(c: &mut Client) {
    c.write_all(&ws_client_frame(CLOSE, &1000u16.to_be_bytes()))
        .expect("send close");
    let (op, payload) = ws_read_frame(c).expect("read close");
    assert_eq!((op, payload.as_slice()), (CLOSE, &[0x03, 0xe8][..]));
    assert!(
        c.is_closed(Duration::from_secs(5)),
        "the tunnel ends when the backend closes"
    );
}

fn binary(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 8) as u8)
        .collect()
}

#[test]
fn websocket_frames_are_echoed_through_the_tunnel() {
    let o = origin("ws");
    let lb = Lb::start(&["-b", &backend_arg(&o)]);
    let mut c = upgraded(lb.port());
    echo(&mut c, TEXT, b"hello");
    echo(&mut c, TEXT, b"");
    echo(&mut c, BINARY, &(0..=255).collect::<Vec<u8>>());
    echo(&mut c, PING, b"ping?");
    // Every length encoding boundary of RFC 6455 §5.2.
    for len in [125, 126, 127, 65_535, 65_536, 100_000] {
        echo(&mut c, BINARY, &binary(len, len as u8));
    }
    echo(&mut c, TEXT, "héllo wörld ✓".as_bytes());
    close(&mut c);
    assert_eq!(o.requests(), 1, "one upgrade request reached the origin");
}

#[test]
fn a_one_megabyte_frame_streams_both_ways_at_once() {
    let o = origin("ws");
    let lb = Lb::start(&["-b", &backend_arg(&o)]);
    let mut c = upgraded(lb.port());
    let payload = binary(1024 * 1024 + 7, 3);
    let frame = ws_client_frame(BINARY, &payload);
    // Written from a second thread while this one reads the echo, so
    // neither side waits for the other's buffers to drain.
    let mut writer = c.stream().try_clone().expect("clone");
    let sender = thread::spawn(move || writer.write_all(&frame));
    let (op, got) = ws_read_frame(&mut c).expect("read the big frame");
    sender.join().expect("writer").expect("send big frame");
    assert_eq!(op, BINARY);
    assert_eq!(got.len(), payload.len());
    assert!(got == payload, "1 MB payload corrupted in the tunnel");
    echo(&mut c, TEXT, b"after the big one");
    close(&mut c);
}

#[test]
fn frames_sent_in_one_write_come_back_in_order() {
    let o = origin("ws");
    let lb = Lb::start(&["-b", &backend_arg(&o)]);
    let mut c = upgraded(lb.port());
    let payloads: Vec<Vec<u8>> = (0..50).map(|i| binary(i * 37, i as u8)).collect();
    let mut burst = Vec::new();
    for (i, p) in payloads.iter().enumerate() {
        let opcode = if i % 2 == 0 { BINARY } else { TEXT };
        let p = if opcode == TEXT {
            format!("message {i}").into_bytes()
        } else {
            p.clone()
        };
        burst.extend_from_slice(&ws_client_frame(opcode, &p));
    }
    c.write_all(&burst).expect("send burst");
    for (i, p) in payloads.iter().enumerate() {
        let (op, got) = ws_read_frame(&mut c).expect("read frame");
        if i % 2 == 0 {
            assert_eq!((op, &got), (BINARY, p), "frame {i}");
        } else {
            assert_eq!((op, got), (TEXT, format!("message {i}").into_bytes()));
        }
    }
    close(&mut c);
}

#[test]
fn first_frame_sent_right_behind_the_handshake_is_not_lost() {
    // A client may send its first frame before it has read the 101.
    let o = origin("ws");
    let lb = Lb::start(&["-b", &backend_arg(&o)]);
    let mut c = Client::connect(lb.port());
    let mut bytes = format!(
        "GET /ws HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {}\r\nSec-WebSocket-Version: 13\r\n\r\n",
        common::WS_KEY
    )
    .into_bytes();
    bytes.extend_from_slice(&ws_client_frame(TEXT, b"early bird"));
    c.send_raw(&bytes);
    let r = c.read_response(false);
    assert_eq!(r.status, 101);
    let (op, got) = ws_read_frame(&mut c).expect("read frame");
    assert_eq!((op, got.as_slice()), (TEXT, &b"early bird"[..]));
    close(&mut c);
}

#[test]
fn concurrent_tunnels_stay_separate() {
    let o = origin("ws");
    let lb = Lb::start(&["-b", &backend_arg(&o)]);
    let port = lb.port();
    let sessions: Vec<_> = (0..8u8)
        .map(|n| {
            thread::spawn(move || {
                let mut c = upgraded(port);
                for round in 0..20usize {
                    let payload = binary(1000 + round * 100, n);
                    echo(&mut c, BINARY, &payload);
                    echo(&mut c, TEXT, format!("client {n} round {round}").as_bytes());
                }
                close(&mut c);
            })
        })
        .collect();
    for s in sessions {
        s.join().expect("websocket session");
    }
    // Plain HTTP is unaffected afterwards.
    for _ in 0..5 {
        assert_eq!(lb.client().request("GET", "/", &[], b"").status, 200);
    }
}

#[test]
fn client_half_close_ends_the_tunnel() {
    let o = origin("ws");
    let lb = Lb::start(&["-b", &backend_arg(&o)]);
    let mut c = upgraded(lb.port());
    echo(&mut c, TEXT, b"one");
    c.shutdown_write();
    assert!(
        c.is_closed(Duration::from_secs(5)),
        "the client's FIN reaches the backend, whose close comes back"
    );
}

#[test]
fn upgrade_after_a_plain_request_on_the_same_connection() {
    let o = origin("ws");
    let lb = Lb::start(&["-b", &backend_arg(&o)]);
    let mut c = lb.client();
    assert_eq!(c.request("GET", "/", &[], b"").status, 200);
    let r = ws_upgrade(&mut c, "/ws");
    assert_eq!(r.status, 101);
    echo(&mut c, TEXT, b"upgraded midway");
    close(&mut c);
    // The backend connection that carried the tunnel is never pooled.
    for i in 0..5 {
        let r = lb.client().request("GET", &format!("/?{i}"), &[], b"");
        assert_eq!(r.status, 200, "request {i}");
    }
}

// ------------------------------------------------------------ no 101

#[test]
fn upgrade_answered_with_200_keeps_http_framing() {
    let o = origin("plain");
    let lb = Lb::start(&["-b", &backend_arg(&o)]);
    let mut c = lb.client();
    // `/` ignores the upgrade and answers 200.
    let r = ws_upgrade(&mut c, "/");
    assert_eq!(r.status, 200);
    assert_eq!(r.body_str(), "hello from plain\n");
    // Same connection: still HTTP.
    let r = c.request("GET", "/bytes/10", &[], b"");
    assert_eq!((r.status, r.body.as_slice()), (200, &b"abcdefghij"[..]));
    let r = c.request("POST", "/echo", &[], b"still http");
    assert!(r.body_str().ends_with("\r\n\r\nstill http"));
    assert_eq!(o.requests(), 3);
}

#[test]
fn upgrade_request_reaches_the_backend_with_its_upgrade_headers() {
    let o = origin("plain");
    let lb = Lb::start(&["-b", &backend_arg(&o)]);
    let mut c = lb.client();
    let r = ws_upgrade(&mut c, "/echo");
    assert_eq!(r.status, 200);
    let echoed = r.body_str();
    assert!(echoed.contains("\r\nUpgrade: websocket\r\n"), "{echoed}");
    let connection_has_upgrade = echoed.split("\r\n").any(|l| {
        l.split_once(':').is_some_and(|(n, v)| {
            n.eq_ignore_ascii_case("connection")
                && v.split(',')
                    .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
        })
    });
    assert!(connection_has_upgrade, "{echoed}");
    assert!(echoed.contains("Sec-WebSocket-Key: "), "{echoed}");
    assert_eq!(c.request("GET", "/", &[], b"").status, 200);
}

#[test]
fn refused_websocket_handshake_keeps_http_framing() {
    let o = origin("ws");
    let lb = Lb::start(&["-b", &backend_arg(&o)]);
    let mut c = lb.client();
    // No Sec-WebSocket-Key: the origin answers 400 (with a body), not 101.
    let r = c.request(
        "GET",
        "/ws",
        &[("Upgrade", "websocket"), ("Connection", "Upgrade")],
        b"",
    );
    assert_eq!(r.status, 400);
    assert_eq!(r.body_str(), "bad websocket handshake\n");
    let r = c.request("GET", "/", &[], b"");
    assert_eq!((r.status, r.body_str().as_str()), (200, "hello from ws\n"));
}

#[test]
fn h2c_upgrade_is_proxied_as_plain_http11() {
    let o = origin("h2c");
    let lb = Lb::start(&["-b", &backend_arg(&o)]);
    let mut c = lb.client();
    let r = c.request(
        "GET",
        "/echo",
        &[
            ("Upgrade", "h2c"),
            ("Connection", "Upgrade, HTTP2-Settings"),
            ("HTTP2-Settings", "AAMAAABkAARAAAAAAAIAAAAA"),
        ],
        b"",
    );
    assert_eq!(r.status, 200);
    let echoed = r.body_str().to_ascii_lowercase();
    assert!(!echoed.contains("\r\nupgrade:"), "{echoed}");
    assert!(!echoed.contains("h2c"), "{echoed}");
    assert!(!echoed.contains("http2-settings"), "{echoed}");
    // Still HTTP/1.1 on both sides.
    let r = c.request("GET", "/", &[], b"");
    assert_eq!((r.status, r.body_str().as_str()), (200, "hello from h2c\n"));
}
