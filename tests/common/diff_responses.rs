//! The response table of the differential test: what the scripted origin
//! sends (Content-Length lists, odd and malformed chunk lines first or after
//! relayed bytes, trailers, odd heads) and what the client must get.
//! Included by `tests/differential.rs` with `#[path]`.

use crate::diff_cases::{BAD_CHUNK_LINES, ODD_VALID_CHUNK_LINES, data};
use crate::raw::Step;

/// What the client must get for a scripted response.
#[derive(Debug, Clone)]
pub enum Want {
    /// A strict 200 with this body and at most these trailers; `marker`:
    /// the connection is then reused for a marker request.
    Relay {
        body: Vec<u8>,
        trailers: Vec<(String, String)>,
        marker: bool,
    },
    BadGateway,
    /// 502, or (the head having gone out alone) a cut after a valid prefix.
    BadGatewayOrCut,
    /// 502, a close before the message completes, or a strict relay.
    Either {
        body: Vec<u8>,
    },
    /// The origin sends a valid first chunk, waits until the client has
    /// it, then a malformed one: the client's connection must be cut.
    CutAfter,
}

pub struct RespCase {
    pub name: String,
    pub script: Vec<Step>,
    pub want: Want,
    pub head: bool,
}

fn relay(body: &[u8]) -> Want {
    Want::Relay {
        body: body.to_vec(),
        trailers: Vec::new(),
        marker: true,
    }
}

fn either(body: &[u8]) -> Want {
    Want::Either {
        body: body.to_vec(),
    }
}

pub fn response_cases() -> Vec<RespCase> {
    let mut out = Vec::new();
    let mut add = |name: String, want: Want, bytes: Vec<u8>, close: bool| {
        let mut script = vec![Step::Send(bytes)];
        if close {
            script.push(Step::Close);
        }
        out.push(RespCase {
            name,
            script,
            want,
            head: false,
        });
    };
    let with = |fields: &str, body: &[u8]| {
        let mut bytes = format!("HTTP/1.1 200 OK\r\n{fields}\r\n").into_bytes();
        bytes.extend_from_slice(body);
        bytes
    };
    for v in ["2, 2", "2,2", "2 , 2"] {
        let bytes = with(&format!("Content-Length: {v}\r\n"), b"ok");
        add(format!("CL {v}"), relay(b"ok"), bytes, false);
    }
    let two = with("Content-Length: 2\r\nContent-Length: 2\r\n", b"ok");
    add("CL 2 twice".into(), relay(b"ok"), two, false);
    add(
        "CL 02".into(),
        either(b"ok"),
        with("Content-Length: 02\r\n", b"ok"),
        true,
    );
    let bad_cl = [
        "2, 3",
        "3,2",
        "+2",
        "-2",
        "0x2",
        "2a",
        "",
        "2 2",
        "99999999999999999999999",
    ];
    for v in bad_cl {
        let bytes = with(&format!("Content-Length: {v}\r\n"), b"ok");
        add(format!("CL {v:?}"), Want::BadGateway, bytes, true);
    }
    let differing = with("Content-Length: 2\r\nContent-Length: 3\r\n", b"ok");
    add("CL 2 and CL 3".into(), Want::BadGateway, differing, true);
    let both = with(
        "Content-Length: 2\r\nTransfer-Encoding: chunked\r\n",
        b"2\r\nok\r\n0\r\n\r\n",
    );
    add("CL and chunked".into(), either(b"ok"), both, true);
    let te = "Transfer-Encoding: chunked\r\n";
    let chunk_body = |line: &str, n: usize| {
        let mut body = format!("{line}\r\n").into_bytes();
        body.extend(data(n));
        body.extend_from_slice(b"\r\n0\r\n\r\n");
        body
    };
    for (line, n) in ODD_VALID_CHUNK_LINES {
        let bytes = with(te, &chunk_body(line, n));
        add(
            format!("chunk line {line:?}"),
            relay(&data(n)),
            bytes,
            false,
        );
    }
    for last in ["0;a=b", "000"] {
        let bytes = with(te, format!("2\r\nok\r\n{last}\r\n\r\n").as_bytes());
        add(format!("last chunk {last:?}"), relay(b"ok"), bytes, false);
    }
    for line in BAD_CHUNK_LINES {
        let bytes = with(te, &chunk_body(line, 2));
        add(
            format!("first chunk line {line:?}"),
            Want::BadGateway,
            bytes,
            true,
        );
    }
    let trailers: [(&str, Want); 9] = [
        (
            "X-T: v",
            Want::Relay {
                body: b"ok".to_vec(),
                trailers: vec![("X-T".into(), "v".into())],
                marker: true,
            },
        ),
        ("Content-Length: 5", relay(b"ok")),
        ("Transfer-Encoding: chunked", relay(b"ok")),
        ("Connection: close", relay(b"ok")),
        ("foo", either(b"ok")),
        ("bad name: v", either(b"ok")),
        ("GET /x HTTP/1.1", either(b"ok")),
        ("X-T: a\x00b", either(b"ok")),
        (" X-T: v", either(b"ok")),
    ];
    for (line, want) in trailers {
        let bytes = with(te, format!("2\r\nok\r\n0\r\n{line}\r\n\r\n").as_bytes());
        let close = matches!(want, Want::Either { .. });
        add(format!("trailer {:?}", line), want, bytes, close);
    }
    let heads: [(&str, Want, Vec<u8>); 7] = [
        (
            "bare LF in the head",
            either(b"ok"),
            b"HTTP/1.1 200 OK\nContent-Length: 2\n\nok".to_vec(),
        ),
        (
            "obs-fold in the head",
            either(b"ok"),
            with("X-A: a\r\n b\r\nContent-Length: 2\r\n", b"ok"),
        ),
        (
            "NUL in a field value",
            Want::BadGateway,
            with("X-A: a\x00b\r\nContent-Length: 2\r\n", b"ok"),
        ),
        (
            "Connection: Content-Length",
            either(b"ok"),
            with("Connection: Content-Length\r\nContent-Length: 2\r\n", b"ok"),
        ),
        (
            "chunked twice",
            Want::BadGateway,
            with(
                "Transfer-Encoding: chunked, chunked\r\n",
                b"2\r\nok\r\n0\r\n\r\n",
            ),
        ),
        (
            "gzip, chunked",
            either(b"ok"),
            with(
                "Transfer-Encoding: gzip, chunked\r\n",
                b"2\r\nok\r\n0\r\n\r\n",
            ),
        ),
        (
            "identity, close-delimited",
            either(b"ok"),
            with("Transfer-Encoding: identity\r\n", b"ok"),
        ),
    ];
    for (name, want, bytes) in heads {
        add(name.into(), want, bytes, true);
    }
    let plain = Want::Relay {
        body: b"ok".to_vec(),
        trailers: Vec::new(),
        marker: false,
    };
    add("close-delimited".into(), plain, with("", b"ok"), true);
    for bad in ["2;", "2 ", "zz", "2;a=\"x", "-1"] {
        out.push(RespCase {
            name: format!("chunk line {bad:?} after relayed bytes"),
            script: vec![
                Step::Send(with(te, b"3\r\nabc\r\n")),
                Step::Gate,
                Step::Send(format!("{bad}\r\nok\r\n0\r\n\r\n").into_bytes()),
                Step::Close,
            ],
            want: Want::CutAfter,
            head: false,
        });
    }
    for (name, fields) in [
        ("HEAD, CL 2", "Content-Length: 2\r\n"),
        ("HEAD, CL 2, 2", "Content-Length: 2, 2\r\n"),
        ("HEAD, chunked", "Transfer-Encoding: chunked\r\n"),
    ] {
        out.push(RespCase {
            name: name.into(),
            script: vec![Step::Send(with(fields, b""))],
            want: relay(b""),
            head: true,
        });
    }
    // Each plain script again, written one byte at a time.
    let split: Vec<RespCase> = out
        .iter()
        .filter(|c| !c.script.iter().any(|s| matches!(s, Step::Gate)))
        .map(|c| RespCase {
            name: format!("{} (byte by byte)", c.name),
            script: c
                .script
                .iter()
                .map(|s| match s {
                    Step::Send(bytes) => Step::Trickle(bytes.clone()),
                    other => other.clone(),
                })
                .collect(),
            // A head that arrives alone may be relayed before the chunk
            // line that is wrong arrives; then only a cut is left.
            want: match c.want {
                Want::BadGateway if c.name.contains("chunk line") => Want::BadGatewayOrCut,
                ref want => want.clone(),
            },
            head: c.head,
        })
        .collect();
    out.extend(split);
    out
}
