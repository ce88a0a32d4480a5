//! The request table of the differential test: malformed and borderline
//! requests built from RFC 9110/9112 and issue 11, most of them
//! combinatorially (each framing × each odd field, each chunk line × each
//! position). Each case says what SPEC §5 wants (refuse, forward, or either)
//! and what the client meant, so that a forwarded request can be compared.
//! Included by `tests/differential.rs` with `#[path]`; the head and
//! target cases are in `diff_cases_head.rs`.

use crate::diff_cases_head;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// SPEC §5 answers 400 (or closes mid-body).
    Refuse,
    /// SPEC §5 forwards it (normalised).
    Forward,
    /// Either is safe, as long as a forwarded request reads one way.
    Either,
}

#[derive(Debug, Clone)]
pub struct Case {
    pub group: &'static str,
    pub name: String,
    pub bytes: Vec<u8>,
    pub expect: Expect,
    /// Targets the origin may see (empty: any origin-form).
    pub targets: Vec<String>,
    /// The Host the origin must see (case-insensitive), if any is meant.
    pub host: Option<String>,
    /// The body the client meant.
    pub body: Vec<u8>,
    /// Trailers that may be forwarded.
    pub trailers: Vec<(String, String)>,
    /// A marker request follows on the same connection when forwarded.
    pub keep_alive: bool,
    pub head: bool,
    /// The client half-closes after its bytes (a body that never ends).
    pub client_eof: bool,
    /// What is wrong is in the body: the head may have reached the origin
    /// before the refusal (never a complete request).
    pub mid_body: bool,
    /// Sent one byte per write, so that every line and field is split
    /// across reads of the proxy.
    pub trickle: bool,
}

pub const HOST: &str = "a.test";
pub const HELLO: &[u8] = b"hello";
/// A complete request hidden in a body.
pub const SMUGGLE: &[u8] = b"GET /smuggled HTTP/1.1\r\nHost: a.test\r\n\r\n";

impl Case {
    pub fn new(group: &'static str, name: String, expect: Expect, bytes: Vec<u8>) -> Case {
        Case {
            group,
            name,
            bytes,
            expect,
            targets: vec!["/c".into()],
            host: Some(HOST.into()),
            body: Vec::new(),
            trailers: Vec::new(),
            keep_alive: true,
            head: false,
            client_eof: false,
            mid_body: matches!(group, "chunk-line" | "trailer"),
            trickle: false,
        }
    }

    pub fn body(mut self, body: &[u8]) -> Case {
        self.body = body.to_vec();
        self
    }

    pub fn target(mut self, targets: &[&str]) -> Case {
        self.targets = targets.iter().map(|t| t.to_string()).collect();
        self
    }

    pub fn host(mut self, host: Option<&str>) -> Case {
        self.host = host.map(str::to_string);
        self
    }

    pub fn trailers(mut self, trailers: &[(&str, &str)]) -> Case {
        self.trailers = trailers
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect();
        self
    }

    pub fn close(mut self) -> Case {
        self.keep_alive = false;
        self
    }

    pub fn head(mut self) -> Case {
        self.head = true;
        self
    }

    pub fn eof(mut self) -> Case {
        self.client_eof = true;
        self.mid_body = true;
        self
    }

    pub fn mid_body(mut self) -> Case {
        self.mid_body = true;
        self
    }
}

/// `POST /c` with Host and `fields` (each ending in CRLF), then `body`.
pub fn post(fields: &str, body: &[u8]) -> Vec<u8> {
    with_method("POST", fields, body)
}

pub fn with_method(method: &str, fields: &str, body: &[u8]) -> Vec<u8> {
    let mut bytes = format!("{method} /c HTTP/1.1\r\nHost: {HOST}\r\n{fields}\r\n").into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

pub fn chunked(body: &[u8]) -> Vec<u8> {
    let mut bytes = format!("{:x}\r\n", body.len()).into_bytes();
    bytes.extend_from_slice(body);
    bytes.extend_from_slice(b"\r\n0\r\n\r\n");
    bytes
}

pub fn data(n: usize) -> Vec<u8> {
    (0..n).map(|i| b'a' + (i % 26) as u8).collect()
}

pub fn esc(s: &str) -> String {
    s.escape_debug().to_string()
}

/// The body framings the header groups combine with: (name, field, body
/// as sent, body meant).
fn framings() -> Vec<(&'static str, String, Vec<u8>, Vec<u8>)> {
    let mut out = Vec::new();
    for (tag, body) in [("hello", HELLO), ("smuggle", SMUGGLE)] {
        let cl = format!("Content-Length: {}\r\n", body.len());
        out.push((
            if tag == "hello" { "CL" } else { "CL+smuggle" },
            cl,
            body.to_vec(),
            body.to_vec(),
        ));
        let te = "Transfer-Encoding: chunked\r\n".to_string();
        let name = if tag == "hello" {
            "chunked"
        } else {
            "chunked+smuggle"
        };
        out.push((name, te, chunked(body), body.to_vec()));
    }
    out.push(("no body", String::new(), Vec::new(), Vec::new()));
    out
}

pub fn all() -> Vec<Case> {
    let mut cases = Vec::new();
    connection(&mut cases);
    content_length(&mut cases);
    transfer_encoding(&mut cases);
    chunk_lines(&mut cases);
    trailers(&mut cases);
    diff_cases_head::head_fields(&mut cases);
    diff_cases_head::targets(&mut cases);
    diff_cases_head::head_requests(&mut cases);
    // The framing groups once more, split into one-byte writes: an
    // incremental parser must reach the same verdict whatever the reads.
    let framing = [
        "connection",
        "content-length",
        "transfer-encoding",
        "chunk-line",
        "trailer",
    ];
    let split: Vec<Case> = cases
        .iter()
        .filter(|c| framing.contains(&c.group) && !c.client_eof)
        .map(|c| Case {
            name: format!("{} (byte by byte)", c.name),
            trickle: true,
            ..c.clone()
        })
        .collect();
    cases.extend(split);
    cases
}

fn connection(cases: &mut Vec<Case>) {
    let naming = [
        "Content-Length",
        "content-length",
        "CONTENT-LENGTH",
        "keep-alive, Content-Length",
        "Content-Length, keep-alive",
        "keep-alive,content-length",
        "  content-length  ",
        "close, Content-Length",
        "Transfer-Encoding",
        "transfer-encoding",
        "keep-alive, Transfer-Encoding",
        "TE, transfer-encoding",
        "Host",
        "host",
        "keep-alive, HOST",
        "x-foo, Host",
        ",Host",
        "Content-Length,Transfer-Encoding,Host",
        "keep-alive\r\nConnection: content-length",
        "keep-alive\r\nConnection: Host",
        "x-foo\r\nConnection: Transfer-Encoding",
    ];
    for option in naming {
        for (framing, field, sent, meant) in framings() {
            let fields = format!("Connection: {option}\r\n{field}");
            let name = format!("Connection: {} × {framing}", esc(option));
            let case = Case::new("connection", name, Expect::Refuse, post(&fields, &sent));
            let case = case.body(&meant);
            cases.push(if option.contains("close") {
                case.close()
            } else {
                case
            });
        }
    }
    let harmless = [
        "keep-alive",
        "x-foo",
        "Content-Length-X",
        "Hostname",
        "Transfer-Encodings",
    ];
    for option in harmless {
        for (framing, field, sent, meant) in framings() {
            let fields = format!("Connection: {option}\r\nX-Foo: 1\r\n{field}");
            let name = format!("Connection: {option} × {framing}");
            let case = Case::new("connection", name, Expect::Forward, post(&fields, &sent));
            cases.push(case.body(&meant));
        }
    }
}

fn content_length(cases: &mut Vec<Case>) {
    use Expect::*;
    for body in [HELLO, SMUGGLE] {
        let n = body.len();
        let m = n + 1;
        let one = |v: String| vec![v];
        let table: Vec<(Expect, Vec<String>)> = vec![
            (Forward, one(format!("{n}"))),
            (Forward, one(format!(" {n}"))),
            (Forward, one(format!("\t{n}"))),
            (Forward, one(format!("{n} "))),
            (Forward, one(format!("{n}\t"))),
            (Forward, one(format!("{n},{n}"))),
            (Forward, one(format!("{n}, {n}"))),
            (Forward, one(format!("{n} , {n}"))),
            (Forward, one(format!("{n} ,{n}"))),
            (Forward, one(format!("{n},{n},{n}"))),
            (Forward, vec![format!("{n}"), format!("{n}")]),
            (
                Forward,
                vec![format!("{n}"), format!("{n}"), format!("{n}")],
            ),
            (Forward, vec![format!("{n}"), format!("{n}, {n}")]),
            (Either, one(format!("0{n}"))),
            (Either, one(format!("{n},,{n}"))),
            (Either, one(format!(",{n}"))),
            (Either, one(format!("{n},"))),
            (Refuse, one(format!("{n},{m}"))),
            (Refuse, one(format!("{m},{n}"))),
            (Refuse, one(format!("{n}, {m}"))),
            (Refuse, vec![format!("{n}"), format!("{m}")]),
            (Refuse, vec![format!("{m}"), format!("{n}")]),
            (Refuse, vec![format!("{n}"), format!("{n}, {m}")]),
            (Refuse, one(format!("+{n}"))),
            (Refuse, one(format!("-{n}"))),
            (Refuse, one(format!("0x{n:x}"))),
            (Refuse, one(format!("{n}a"))),
            (Refuse, one(format!("{n}.0"))),
            (Refuse, one(format!("{n} {n}"))),
            (Refuse, one(format!("{n};"))),
            (Refuse, one(String::new())),
            (Refuse, one("99999999999999999999999".into())),
            (Refuse, one("1e1".into())),
        ];
        for (expect, lines) in table {
            let fields: String = lines
                .iter()
                .map(|v| format!("Content-Length: {v}\r\n"))
                .collect();
            let name = format!("CL {} × {}", esc(&lines.join(" | ")), n);
            let case = Case::new("content-length", name, expect, post(&fields, body));
            cases.push(case.body(body));
        }
    }
    let get = with_method("GET", "Content-Length: 5\r\n", HELLO);
    cases.push(
        Case::new(
            "content-length",
            "GET with CL 5".into(),
            Expect::Forward,
            get,
        )
        .body(HELLO),
    );
    // A body that never ends: the origin may see a beginning, never a request.
    for value in ["18446744073709551615", "99999999999", "4294967296"] {
        let fields = format!("Content-Length: {value}\r\n");
        let name = format!("CL {value}, body cut by the client");
        cases.push(Case::new("content-length", name, Expect::Refuse, post(&fields, HELLO)).eof());
    }
}

fn transfer_encoding(cases: &mut Vec<Case>) {
    use Expect::*;
    let te = |v: &str| format!("Transfer-Encoding: {v}\r\n");
    let table: Vec<(Expect, String)> = vec![
        (Forward, te("chunked")),
        (Forward, te(" chunked")),
        (Forward, te("chunked ")),
        (Forward, te("\tchunked")),
        (Either, te("Chunked")),
        (Either, te("CHUNKED")),
        (Either, te("gzip, chunked")),
        (Either, te("gzip") + &te("chunked")),
        (Either, te(",chunked")),
        (Either, te("chunked;foo=bar")),
        (Refuse, te("chunked, gzip")),
        (Refuse, te("gzip")),
        (Refuse, te("identity")),
        (Refuse, te("chunked, chunked")),
        (Refuse, te("chunked") + &te("chunked")),
        (Refuse, te("chunked, identity")),
        (Refuse, te("xchunked")),
        (Refuse, te("\"chunked\"")),
        (Refuse, te("chunk")),
        (Refuse, te("chunked\x0b")),
        (Refuse, te("")),
        (Refuse, te("chunked") + "Transfer-encoding: cow\r\n"),
        (Refuse, "Transfer-Encoding : chunked\r\n".into()),
        (Refuse, "Transfer-Encoding:\r\n chunked\r\n".into()),
        (Refuse, "X-A: b\r\n Transfer-Encoding: chunked\r\n".into()),
        (Refuse, te("chunked") + "Content-Length: 4\r\n"),
        (Refuse, "Content-Length: 4\r\n".to_string() + &te("chunked")),
        (Refuse, te("chunked") + "Content-Length: 4, 4\r\n"),
        (Refuse, te("gzip") + "Content-Length: 4\r\n"),
    ];
    for body in [HELLO, SMUGGLE] {
        for (expect, fields) in &table {
            let name = format!("{} × chunked {}", esc(fields.trim_end()), body.len());
            let case = Case::new(
                "transfer-encoding",
                name,
                *expect,
                post(fields, &chunked(body)),
            );
            cases.push(case.body(body));
        }
    }
    let mut v10 =
        b"POST /c HTTP/1.0\r\nHost: a.test\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    v10.extend(chunked(HELLO));
    cases.push(
        Case::new(
            "transfer-encoding",
            "HTTP/1.0 with chunked".into(),
            Either,
            v10,
        )
        .body(HELLO)
        .close(),
    );
    // The classic CL.TE and TE.CL pairs, lengths chosen to split the body.
    let mut clte = b"0\r\n\r\n".to_vec();
    clte.extend_from_slice(SMUGGLE);
    let fields = "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n";
    cases.push(Case::new(
        "transfer-encoding",
        "CL.TE smuggle".into(),
        Refuse,
        post(fields, &clte),
    ));
    let fields = "Transfer-Encoding: chunked\r\nContent-Length: 4\r\n";
    cases.push(Case::new(
        "transfer-encoding",
        "TE.CL smuggle".into(),
        Refuse,
        post(fields, &chunked(SMUGGLE)),
    ));
}

/// Chunk size lines a strict reader refuses (RFC 9112 §7.1).
pub const BAD_CHUNK_LINES: [&str; 27] = [
    "2;",
    "2 ",
    "2\t",
    "2  ",
    "2 \t",
    "2;a=\"unbalanced",
    "2;a=\"x",
    "2;a=b\"c",
    "2;=b",
    "2;a=",
    "2;;",
    "2;a b",
    "2;a=b c",
    "0x2",
    "-2",
    "+2",
    " 2",
    "\t2",
    "",
    "g",
    "2g",
    "2 junk",
    "2\x00",
    "2;a=\x01",
    "2;a=\"\x01\"",
    "10000000000000002",
    "2,2",
];

/// Chunk size lines RFC 9112 allows, with their data sizes.
pub const ODD_VALID_CHUNK_LINES: [(&str, usize); 17] = [
    ("2;a", 2),
    ("2;a=b", 2),
    ("2; a=b", 2),
    ("2 ;a=b", 2),
    ("2\t;a=b", 2),
    ("2;a=b;c=d", 2),
    ("2;a=\"b c\"", 2),
    ("2;a=\"b\\\"c\"", 2),
    ("2;a=\"\"", 2),
    ("2;a = b", 2),
    ("02", 2),
    ("0002", 2),
    ("A", 10),
    ("0A", 10),
    ("a", 10),
    ("1F", 31),
    ("2;ext=\"GET /smuggled HTTP/1.1\"", 2),
];

fn chunk_lines(cases: &mut Vec<Case>) {
    let te = "Transfer-Encoding: chunked\r\n";
    let lines = BAD_CHUNK_LINES
        .iter()
        .map(|l| (Expect::Refuse, *l, 2))
        .chain(
            ODD_VALID_CHUNK_LINES
                .iter()
                .map(|(l, n)| (Expect::Forward, *l, *n)),
        );
    for (expect, line, n) in lines {
        for second in [false, true] {
            let mut body = Vec::new();
            let mut meant = Vec::new();
            if second {
                body.extend_from_slice(b"3\r\nabc\r\n");
                meant.extend_from_slice(b"abc");
            }
            body.extend(format!("{line}\r\n").bytes());
            body.extend(data(n));
            meant.extend(data(n));
            body.extend_from_slice(b"\r\n0\r\n\r\n");
            let name = format!(
                "chunk line {:?} as {} chunk",
                line,
                if second { "second" } else { "first" }
            );
            cases.push(Case::new("chunk-line", name, expect, post(te, &body)).body(&meant));
        }
    }
    let last: [(Expect, &str); 11] = [
        (Expect::Forward, "0;a=b"),
        (Expect::Forward, "00"),
        (Expect::Forward, "000"),
        (Expect::Forward, "0;a=\"x\""),
        (Expect::Forward, "0 ;a=b"),
        (Expect::Refuse, "0;"),
        (Expect::Refuse, "0 "),
        (Expect::Refuse, "0\t"),
        (Expect::Refuse, "0;a=\"x"),
        (Expect::Refuse, "0x0"),
        (Expect::Refuse, "-0"),
    ];
    for (expect, line) in last {
        let body = format!("3\r\nabc\r\n{line}\r\n\r\n");
        let name = format!("last chunk {line:?}");
        cases.push(Case::new("chunk-line", name, expect, post(te, body.as_bytes())).body(b"abc"));
    }
    let raw: [(Expect, &str, &[u8]); 8] = [
        (
            Expect::Either,
            "size line ends in bare LF",
            b"2\nab\r\n0\r\n\r\n",
        ),
        (
            Expect::Either,
            "chunk data ends in bare LF",
            b"2\r\nab\n0\r\n\r\n",
        ),
        (
            Expect::Either,
            "last chunk and end in bare LF",
            b"2\r\nab\r\n0\n\n",
        ),
        (
            Expect::Refuse,
            "size line ends in bare CR",
            b"2\rab\r\n0\r\n\r\n",
        ),
        (
            Expect::Refuse,
            "chunk data longer than its size",
            b"2\r\nabc\r\n0\r\n\r\n",
        ),
        (
            Expect::Refuse,
            "chunk data shorter than its size",
            b"3\r\nab\r\n0\r\n\r\n",
        ),
        (
            Expect::Refuse,
            "no CRLF after chunk data",
            b"2\r\nab0\r\n\r\n",
        ),
        (
            Expect::Refuse,
            "chunk data then a request",
            b"2\r\nab\r\nGET /x HTTP/1.1\r\n\r\n",
        ),
    ];
    for (expect, name, body) in raw {
        cases.push(Case::new("chunk-line", name.into(), expect, post(te, body)).body(b"ab"));
    }
    // Sizes the client never fills: nothing complete may reach the origin.
    for size in ["ffffffff", "7fffffffffffffff", "ffffffffffffffff"] {
        let body = format!("{size}\r\nabc");
        let name = format!("chunk size {size}, body cut by the client");
        cases.push(
            Case::new(
                "chunk-line",
                name,
                Expect::Refuse,
                post(te, body.as_bytes()),
            )
            .eof(),
        );
    }
}

fn trailers(cases: &mut Vec<Case>) {
    use Expect::*;
    let te = "Transfer-Encoding: chunked\r\n";
    // (expect, trailer lines, trailers that may be forwarded)
    type Row<'a> = (Expect, &'a str, Vec<(&'a str, &'a str)>);
    let table: Vec<Row> = vec![
        (Refuse, "foo", vec![]),
        (Refuse, "bad name: v", vec![]),
        (Refuse, "GET /x HTTP/1.1", vec![]),
        (Refuse, "HTTP/1.1 200 OK", vec![]),
        (Refuse, " folded: v", vec![]),
        (Refuse, "\tX-T: v", vec![]),
        (Refuse, "X-T: v\r\n folded", vec![]),
        (Refuse, "X-T: a\x00b", vec![]),
        (Refuse, "X-T: a\rb", vec![]),
        (Refuse, "X-T: \x01", vec![]),
        (Refuse, "X\x7fT: v", vec![]),
        (Refuse, ": v", vec![]),
        (Refuse, "X-T : v", vec![]),
        (
            Refuse,
            "X-T: v\r\nGET /smuggled HTTP/1.1\r\nHost: a.test",
            vec![],
        ),
        (Forward, "X-T: v", vec![("X-T", "v")]),
        (Forward, "X-T:v", vec![("X-T", "v")]),
        (Forward, "X-T:   v  ", vec![("X-T", "v")]),
        (Forward, "X-T:", vec![("X-T", "")]),
        (Forward, "X-T: a\tb", vec![("X-T", "a\tb")]),
        (
            Forward,
            "X-A: 1\r\nX-B: 2",
            vec![("X-A", "1"), ("X-B", "2")],
        ),
        (Forward, "Content-Length: 5", vec![]),
        (Forward, "Content-Length: 0\r\nX-T: v", vec![("X-T", "v")]),
        (Forward, "Transfer-Encoding: chunked", vec![]),
        (Forward, "Connection: close", vec![]),
        (Forward, "Trailer: X-T", vec![]),
    ];
    for body in [HELLO, b"".as_slice()] {
        for (expect, lines, allowed) in &table {
            let mut sent = if body.is_empty() {
                Vec::new()
            } else {
                format!("{:x}\r\n", body.len()).into_bytes()
            };
            if !body.is_empty() {
                sent.extend_from_slice(body);
                sent.extend_from_slice(b"\r\n");
            }
            sent.extend(format!("0\r\n{lines}\r\n\r\n").bytes());
            let name = format!("trailer {} after {} body bytes", esc(lines), body.len());
            let case = Case::new("trailer", name, *expect, post(te, &sent));
            cases.push(case.body(body).trailers(allowed));
        }
    }
}
