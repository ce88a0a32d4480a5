//! A strict HTTP/1.1 message reader for the differential test: what a
//! careful origin (or client) behind the proxy would accept. It reads the
//! RFC 9112 grammar with no leniency (CRLF only, no obs-fold, one decimal
//! `Content-Length`, chunk size lines in the proxy's canonical form) and
//! notes what it can still read but a proxy must not send (`violations`).
//! Included by `tests/differential.rs` with `#[path]`.

/// Longest line the reader waits for before calling the input malformed.
const MAX_LINE: usize = 64 * 1024;
/// Field names a proxy must not forward in trailers: framing and
/// hop-by-hop fields (RFC 9110 §6.5.1, SPEC §5).
const FORBIDDEN_TRAILERS: [&str; 8] = [
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "upgrade",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Request,
    /// `head_request`: the answer to a HEAD, which has no body.
    Response {
        head_request: bool,
    },
}

#[derive(Debug, Clone, Default)]
pub struct Message {
    /// Request: method, target, version. Response: version, status, reason.
    pub start: [String; 3],
    pub headers: Vec<(String, Vec<u8>)>,
    pub body: Vec<u8>,
    pub chunked: bool,
    pub trailers: Vec<(String, Vec<u8>)>,
    /// Readable, but not what a proxy may send.
    pub violations: Vec<String>,
    /// Bytes of input the message took.
    pub len: usize,
}

impl Message {
    pub fn method(&self) -> &str {
        &self.start[0]
    }

    pub fn target(&self) -> &str {
        &self.start[1]
    }

    pub fn status(&self) -> u16 {
        self.start[1].parse().unwrap_or(0)
    }

    pub fn all(&self, name: &str) -> Vec<&[u8]> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_slice())
            .collect()
    }

    /// A one-line summary for failure messages.
    pub fn summary(&self) -> String {
        format!(
            "{} {} {} ({} fields, body {:?})",
            self.start[0],
            self.start[1],
            self.start[2],
            self.headers.len(),
            String::from_utf8_lossy(&self.body[..self.body.len().min(60)])
        )
    }
}

#[derive(Debug)]
pub enum Parsed {
    /// More bytes are needed.
    Partial,
    Complete(Message),
    /// A strict reader stops here.
    Malformed(String),
}

/// Reads one message from the start of `buf`; `eof`: no more bytes will
/// come (completes a close-delimited response).
pub fn parse(buf: &[u8], kind: Kind, eof: bool) -> Parsed {
    let mut cur = Cursor { buf, pos: 0 };
    match read_message(&mut cur, kind, eof) {
        Ok(Some(mut m)) => {
            m.len = cur.pos;
            Parsed::Complete(m)
        }
        Ok(None) => Parsed::Partial,
        Err(e) => Parsed::Malformed(e),
    }
}

/// `Ok(None)`: incomplete input.
type Step<T> = Result<Option<T>, String>;

struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn rest(&self) -> &'a [u8] {
        &self.buf[self.pos..]
    }

    /// The next CRLF-terminated line without its CRLF.
    fn line(&mut self) -> Step<&'a [u8]> {
        let rest = self.rest();
        let Some(i) = rest.iter().position(|&b| b == b'\n') else {
            if rest.len() > MAX_LINE {
                return Err("line too long".into());
            }
            return Ok(None);
        };
        if i == 0 || rest[i - 1] != b'\r' {
            return Err(format!("bare LF after {:?}", show(&rest[..i])));
        }
        let line = &rest[..i - 1];
        if line.contains(&b'\r') {
            return Err(format!("bare CR in {:?}", show(line)));
        }
        self.pos += i + 1;
        Ok(Some(line))
    }

    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let rest = self.rest();
        if rest.len() < n {
            return None;
        }
        self.pos += n;
        Some(&rest[..n])
    }
}

/// Printable form of raw bytes for messages.
pub fn show(bytes: &[u8]) -> String {
    let cut = &bytes[..bytes.len().min(80)];
    format!("{}", cut.escape_ascii())
}

fn read_message(cur: &mut Cursor, kind: Kind, eof: bool) -> Step<Message> {
    let Some(start) = cur.line()? else {
        return Ok(None);
    };
    let mut m = Message {
        start: match kind {
            Kind::Request => request_line(start)?,
            Kind::Response { .. } => status_line(start)?,
        },
        ..Message::default()
    };
    loop {
        let Some(line) = cur.line()? else {
            return Ok(None);
        };
        if line.is_empty() {
            break;
        }
        m.headers.push(field_line(line)?);
    }
    httparse_agrees(&cur.buf[..cur.pos], kind, m.headers.len())?;
    check_connection(&mut m);
    match framing(&mut m, kind)? {
        Framing::None => {}
        Framing::Length(n) => {
            let Ok(n) = usize::try_from(n) else {
                return Ok(None);
            };
            let Some(body) = cur.take(n) else {
                return Ok(None);
            };
            m.body = body.to_vec();
        }
        Framing::Chunked => {
            m.chunked = true;
            if read_chunked(cur, &mut m)?.is_none() {
                return Ok(None);
            }
        }
        Framing::Close if eof => {
            m.body = cur.rest().to_vec();
            cur.pos = cur.buf.len();
        }
        Framing::Close => return Ok(None),
    }
    Ok(Some(m))
}

/// A second strict reader must see the same head: httparse, which a good
/// part of the Rust ecosystem parses with.
fn httparse_agrees(head: &[u8], kind: Kind, fields: usize) -> Result<(), String> {
    let mut slots = vec![httparse::EMPTY_HEADER; fields + 1];
    let (status, seen) = match kind {
        Kind::Request => {
            let mut r = httparse::Request::new(&mut slots);
            let status = r.parse(head);
            (status, r.headers.len())
        }
        Kind::Response { .. } => {
            let mut r = httparse::Response::new(&mut slots);
            let status = r.parse(head);
            (status, r.headers.len())
        }
    };
    match status {
        Ok(httparse::Status::Complete(n)) if n == head.len() && seen == fields => Ok(()),
        other => Err(format!(
            "httparse reads the head otherwise ({other:?}, {seen} fields)"
        )),
    }
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn is_token(s: &[u8]) -> bool {
    !s.is_empty() && s.iter().all(|&b| is_tchar(b))
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn request_line(line: &[u8]) -> Result<[String; 3], String> {
    let parts: Vec<&[u8]> = line.split(|&b| b == b' ').collect();
    let bad = || format!("bad request line {:?}", show(line));
    let [method, target, version] = parts[..] else {
        return Err(bad());
    };
    let target_ok = !target.is_empty() && target.iter().all(|&b| (0x21..0x7f).contains(&b));
    if !is_token(method) || !target_ok || !matches!(version, b"HTTP/1.1" | b"HTTP/1.0") {
        return Err(bad());
    }
    Ok([text(method), text(target), text(version)])
}

fn status_line(line: &[u8]) -> Result<[String; 3], String> {
    let bad = || format!("bad status line {:?}", show(line));
    let mut parts = line.splitn(3, |&b| b == b' ');
    let version = parts.next().unwrap_or_default();
    let code = parts.next().unwrap_or_default();
    let reason = parts.next().unwrap_or_default();
    let reason_ok = reason
        .iter()
        .all(|&b| b == b'\t' || b == b' ' || (0x21..0x7f).contains(&b) || b >= 0x80);
    if !matches!(version, b"HTTP/1.1" | b"HTTP/1.0")
        || code.len() != 3
        || !code.iter().all(u8::is_ascii_digit)
        || !reason_ok
    {
        return Err(bad());
    }
    Ok([text(version), text(code), text(reason)])
}

/// `name ":" OWS value OWS`, RFC 9110 §5: a token name, no whitespace
/// before the colon, no control character but HTAB in the value.
pub fn field_line(line: &[u8]) -> Result<(String, Vec<u8>), String> {
    if matches!(line.first(), Some(b' ' | b'\t')) {
        return Err(format!("obs-fold or leading whitespace {:?}", show(line)));
    }
    let colon = line
        .iter()
        .position(|&b| b == b':')
        .ok_or_else(|| format!("field line without a colon {:?}", show(line)))?;
    let name = &line[..colon];
    if !is_token(name) {
        return Err(format!("bad field name in {:?}", show(line)));
    }
    let ows = |b: &u8| *b == b' ' || *b == b'\t';
    let value = &line[colon + 1..];
    let start = value.iter().position(|b| !ows(b)).unwrap_or(value.len());
    let end = value.iter().rposition(|b| !ows(b)).map_or(start, |i| i + 1);
    let value = &value[start..end];
    if value.iter().any(|&b| b != b'\t' && (b < 0x20 || b == 0x7f)) {
        return Err(format!("control character in {:?}", show(line)));
    }
    Ok((text(name), value.to_vec()))
}

/// Comma-separated list elements, trimmed, empty ones dropped.
fn list(values: &[&[u8]]) -> Vec<String> {
    values
        .iter()
        .flat_map(|v| v.split(|&b| b == b','))
        .map(|e| text(e).trim_matches([' ', '\t']).to_ascii_lowercase())
        .filter(|e| !e.is_empty())
        .collect()
}

fn check_connection(m: &mut Message) {
    for option in list(&m.all("connection")) {
        if matches!(
            option.as_str(),
            "content-length" | "transfer-encoding" | "host"
        ) {
            m.violations
                .push(format!("Connection names {option} in the forwarded head"));
        }
    }
}

enum Framing {
    None,
    Length(u64),
    Chunked,
    Close,
}

/// RFC 9112 §6.3, read strictly: one framing header, a single decimal
/// `Content-Length`, `chunked` once and last.
fn framing(m: &mut Message, kind: Kind) -> Result<Framing, String> {
    let mut violations = Vec::new();
    let framing = framing_of(m, kind, &mut violations);
    m.violations.extend(violations);
    framing
}

fn framing_of(m: &Message, kind: Kind, violations: &mut Vec<String>) -> Result<Framing, String> {
    let te: Vec<&[u8]> = m.all("transfer-encoding");
    let cl: Vec<&[u8]> = m.all("content-length");
    if let Kind::Request = kind {
        let hosts = m.all("host").len();
        if hosts != 1 {
            violations.push(format!("{hosts} Host fields"));
        }
    }
    let bodiless = match kind {
        Kind::Request => false,
        Kind::Response { head_request } => {
            let status = m.status();
            head_request || (100..200).contains(&status) || status == 204 || status == 304
        }
    };
    if !te.is_empty() && !cl.is_empty() {
        return Err("both Content-Length and Transfer-Encoding".into());
    }
    if !te.is_empty() {
        if te.len() > 1 {
            violations.push(format!("Transfer-Encoding in {} lines", te.len()));
        }
        let codings = list(&te);
        let chunks = codings.iter().filter(|c| *c == "chunked").count();
        let last_chunked = codings.last().is_some_and(|c| c == "chunked");
        return match (kind, last_chunked && chunks == 1) {
            _ if bodiless => Ok(Framing::None),
            (_, true) => Ok(Framing::Chunked),
            (Kind::Request, false) => Err(format!("request Transfer-Encoding {codings:?}")),
            (Kind::Response { .. }, false) if chunks > 0 => {
                Err(format!("response Transfer-Encoding {codings:?}"))
            }
            (Kind::Response { .. }, false) => Ok(Framing::Close),
        };
    }
    if !cl.is_empty() {
        if cl.len() != 1 {
            return Err(format!("{} Content-Length lines", cl.len()));
        }
        let value = cl[0];
        if value.is_empty() || !value.iter().all(u8::is_ascii_digit) {
            return Err(format!(
                "Content-Length {:?} is not one decimal",
                show(value)
            ));
        }
        let n: u64 = text(value)
            .parse()
            .map_err(|_| format!("Content-Length {} overflows", text(value)))?;
        return Ok(if bodiless {
            Framing::None
        } else {
            Framing::Length(n)
        });
    }
    Ok(match kind {
        Kind::Request => Framing::None,
        Kind::Response { .. } if bodiless => Framing::None,
        Kind::Response { .. } => Framing::Close,
    })
}

/// Chunks whose size lines are bare lowercase hex without leading zeros,
/// extensions or whitespace (the proxy writes its own), then trailers that
/// are valid field lines.
fn read_chunked(cur: &mut Cursor, m: &mut Message) -> Step<()> {
    loop {
        let Some(line) = cur.line()? else {
            return Ok(None);
        };
        let canonical = !line.is_empty()
            && line.len() <= 16
            && line
                .iter()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b))
            && (line == b"0" || line[0] != b'0');
        if !canonical {
            return Err(format!("chunk line {:?} is not canonical", show(line)));
        }
        let size = u64::from_str_radix(&text(line), 16).map_err(|e| e.to_string())?;
        if size == 0 {
            break;
        }
        let Ok(size) = usize::try_from(size) else {
            return Ok(None);
        };
        let Some(data) = cur.take(size) else {
            return Ok(None);
        };
        m.body.extend_from_slice(data);
        let Some(end) = cur.take(2) else {
            return Ok(None);
        };
        if end != b"\r\n" {
            return Err("chunk data not followed by CRLF".into());
        }
    }
    loop {
        let Some(line) = cur.line()? else {
            return Ok(None);
        };
        if line.is_empty() {
            return Ok(Some(()));
        }
        let (name, value) = field_line(line).map_err(|e| format!("trailer: {e}"))?;
        if FORBIDDEN_TRAILERS.contains(&name.to_ascii_lowercase().as_str()) {
            m.violations.push(format!("trailer {name} forwarded"));
        }
        m.trailers.push((name, value));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(bytes: &[u8]) -> Parsed {
        parse(bytes, Kind::Request, false)
    }

    #[test]
    fn reads_canonical_chunked_and_rejects_odd_lines() {
        let ok = b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\r\n0\r\nX-T: v\r\n\r\n";
        let Parsed::Complete(m) = request(ok) else {
            panic!("valid chunked request");
        };
        assert_eq!(m.body, b"ab");
        assert_eq!(m.len, ok.len());
        assert_eq!(m.trailers, vec![("X-T".to_string(), b"v".to_vec())]);
        for line in ["2;", "2 ", "02", "A", "2;a=b"] {
            let bytes = format!(
                "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n{line}\r\nab\r\n0\r\n\r\n"
            );
            assert!(
                matches!(request(bytes.as_bytes()), Parsed::Malformed(_)),
                "{line:?}"
            );
        }
    }

    #[test]
    fn rejects_lists_and_double_framing() {
        for head in [
            "Content-Length: 5,5\r\n",
            "Content-Length: 5\r\nContent-Length: 5\r\n",
            "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n",
            "Transfer-Encoding: chunked, gzip\r\n",
            "X: a\r\n b\r\n",
        ] {
            let bytes = format!("POST / HTTP/1.1\r\nHost: a\r\n{head}\r\nhello");
            assert!(
                matches!(request(bytes.as_bytes()), Parsed::Malformed(_)),
                "{head:?}"
            );
        }
        assert!(matches!(
            request(b"GET / HTTP/1.1\nHost: a\n\n"),
            Parsed::Malformed(_)
        ));
    }
}
