//! Client request heads: strict parsing (the SPEC §5 error table and the
//! request-smuggling defences) and the rewrite sent to a backend.
//!
//! `RequestHead` is reused for every request of a connection; it keeps
//! offsets into the client's read buffer, which must stay unchanged between
//! `parse` and `write_for_backend`.

use std::mem::MaybeUninit;

use super::header::{self, Fields, Kind, put_content_length, put_field};
use super::scan;
use super::{BodyKind, HeadError, MAX_HEADERS, Span, VIA_NAME, Version};

/// Most field names one `Connection` header section may list besides the
/// standard tokens; more is treated as malformed.
const MAX_CONNECTION_TOKENS: usize = 16;

/// Request methods the proxy distinguishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Head,
    Post,
    Put,
    Delete,
    Options,
    Trace,
    Other,
}

impl Method {
    fn parse(s: &[u8]) -> Method {
        match s {
            b"GET" => Method::Get,
            b"HEAD" => Method::Head,
            b"POST" => Method::Post,
            b"PUT" => Method::Put,
            b"DELETE" => Method::Delete,
            b"OPTIONS" => Method::Options,
            b"TRACE" => Method::Trace,
            _ => Method::Other,
        }
    }

    /// Idempotent methods (RFC 9110 §9.2.2) may be re-sent after a failure.
    pub fn is_idempotent(self) -> bool {
        !matches!(self, Method::Post | Method::Other)
    }
}

/// What the backend-bound copy of the head needs beyond the head itself.
#[derive(Debug, Clone, Copy)]
pub struct RequestRewrite<'a> {
    /// The client's address as text, appended to `X-Forwarded-For`.
    pub client_ip: &'a [u8],
    /// Replaces the client's `Host` (TLS backends), or fills a missing one.
    pub host: &'a [u8],
    /// Send `host` even though the client gave one.
    pub override_host: bool,
}

/// A parsed client request head. Reused across requests of a connection.
#[derive(Debug, Default)]
pub struct RequestHead {
    /// Bytes of the head, including the final empty line.
    pub head_len: usize,
    pub method: Option<Method>,
    method_span: Span,
    /// The origin-form target (path and query); for an absolute-form
    /// target, the part after the authority, which may be empty (then `/`).
    pub target: Span,
    /// The authority of an absolute-form target: it replaces `Host`.
    authority: Option<Span>,
    /// The request line is already what the backend gets: copied whole.
    line_verbatim: bool,
    pub version: Option<Version>,
    pub body: Option<BodyKind>,
    /// The client wants the connection kept open after this exchange.
    pub keep_alive: bool,
    /// `Expect: 100-continue`.
    pub expect_continue: bool,
    /// The value of an `Upgrade` that will be forwarded (never h2c).
    pub upgrade: Option<Span>,
    pub has_host: bool,
    /// The client marked a non-idempotent request safe to retry.
    pub idempotency_key: bool,
    /// The sticky cookie's backend id, if the request carries one.
    pub sticky: Option<u64>,
    /// The body length its `Content-Length` fields agree on.
    content_length: Option<u64>,
    /// That length is one field spelled as plain digits: it travels as it
    /// came. Anything else (a list, repeated lines) is written anew.
    content_length_verbatim: bool,
    fields: Fields,
}

impl RequestHead {
    pub fn method(&self) -> Method {
        self.method.unwrap_or(Method::Other)
    }

    pub fn version(&self) -> Version {
        self.version.unwrap_or(Version::Http11)
    }

    pub fn body(&self) -> BodyKind {
        self.body.unwrap_or(BodyKind::None)
    }

    pub fn is_head(&self) -> bool {
        self.method == Some(Method::Head)
    }

    /// The client's `TE` lists `trailers` (HTTP/2 carries that one TE
    /// value, RFC 9113 §8.2.2; HTTP/1.1 forwarding drops TE as hop-by-hop).
    pub fn accepts_trailers(&self, buf: &[u8]) -> bool {
        let mut values = Vec::new();
        self.fields.append_values(buf, Kind::Te, &mut values);
        values
            .split(|&b| b == b',')
            .filter_map(|t| t.split(|&b| b == b';').next())
            .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"trailers"))
    }

    /// The general tokenizer, for heads `scan::request` leaves alone:
    /// httparse accepts what RFC 9112 allows (bare LF line ends, empty
    /// lines before the request line, a UTF-8 target) and names what is
    /// wrong. `Ok(None)`: the head is not complete yet.
    #[cold]
    #[inline(never)]
    fn tokenize(&mut self, buf: &[u8]) -> Result<Option<(scan::RequestLine, usize)>, HeadError> {
        // Uninitialised: zeroing MAX_HEADERS fields per head was a measurable
        // share of the proxy's user-space time.
        let mut raw = [const { MaybeUninit::uninit() }; MAX_HEADERS];
        let mut req = httparse::Request::new(&mut []);
        let parsed = req.parse_with_uninit_headers(buf, &mut raw);
        let Some(head_len) = super::httparse_head_len(parsed, buf)? else {
            return Ok(None);
        };
        let (Some(method), Some(path), Some(minor)) = (req.method, req.path, req.version) else {
            return Err(HeadError::Malformed("incomplete request line"));
        };
        self.fields.fill_from(buf, req.headers);
        let line = scan::RequestLine {
            method: Span::within(buf, method.as_bytes()),
            target: Span::within(buf, path.as_bytes()),
            minor,
            canonical: false,
        };
        Ok(Some((line, head_len)))
    }

    /// Parses the head at the start of `buf`. `Ok(false)`: incomplete, read
    /// more. `Ok(true)`: `self` describes the head. An error means the
    /// request must be answered with an error and the connection closed.
    pub fn parse(&mut self, buf: &[u8], sticky_cookie: &str) -> Result<bool, HeadError> {
        // Known only once this head's request line is read: an error answer
        // must not take the previous request's method for this one's.
        self.method = None;
        let (line, head_len) = match scan::request(buf, &mut self.fields) {
            Some(head) => head,
            None => match self.tokenize(buf)? {
                Some(head) => head,
                None => return Ok(false),
            },
        };
        let method = line.method.get(buf);
        if method == b"CONNECT" {
            return Err(HeadError::MethodNotAllowed);
        }
        let version = Version::from_minor(line.minor);

        self.head_len = head_len;
        self.method = Some(Method::parse(method));
        self.method_span = line.method;
        let (target, authority) = split_target(buf, line.target, self.method())?;
        self.target = target;
        self.authority = authority;
        self.line_verbatim = line.canonical && version == Version::Http11 && authority.is_none();
        self.version = Some(version);
        self.expect_continue = false;
        self.upgrade = None;
        self.has_host = false;
        self.idempotency_key = false;
        self.sticky = None;

        let mut lengths = header::Lengths::default();
        let mut chunked = false;
        let mut transfer_encodings = 0;
        let mut hosts = 0;
        let mut close = false;
        let mut keep_alive_token = false;
        let mut upgrade_token = false;
        let mut upgrade_value: Option<Span> = None;

        for i in 0..self.fields.len() {
            let f = self.fields.get(i);
            let value = f.value.get(buf);
            match f.kind {
                Kind::ContentLength => lengths.add(value).map_err(HeadError::Smuggling)?,
                Kind::TransferEncoding => {
                    // Only a lone `chunked` is accepted: any other coding
                    // (even `gzip, chunked`) is a framing another hop may
                    // read differently.
                    transfer_encodings += 1;
                    let trimmed = header::trim(value);
                    if transfer_encodings > 1 || !trimmed.eq_ignore_ascii_case(b"chunked") {
                        return Err(HeadError::Smuggling("Transfer-Encoding other than chunked"));
                    }
                    chunked = true;
                }
                Kind::Host => hosts += 1,
                Kind::Connection => {
                    for token in header::list_items(value) {
                        if token.eq_ignore_ascii_case(b"close") {
                            close = true;
                        } else if token.eq_ignore_ascii_case(b"keep-alive") {
                            keep_alive_token = true;
                        } else if token.eq_ignore_ascii_case(b"upgrade") {
                            upgrade_token = true;
                        } else if matches!(
                            header::classify(token),
                            Kind::ContentLength | Kind::TransferEncoding | Kind::Host
                        ) {
                            // Dropping these as hop-by-hop would change how
                            // the backend reads the message (smuggling).
                            return Err(HeadError::Smuggling(
                                "Connection names Content-Length, Transfer-Encoding or Host",
                            ));
                        } else if self.fields.connection_names.len() < MAX_CONNECTION_TOKENS {
                            self.fields.connection_names.push(Span::within(buf, token));
                        } else {
                            return Err(HeadError::Malformed("too many Connection options"));
                        }
                    }
                }
                Kind::Upgrade => upgrade_value = Some(f.value),
                Kind::IdempotencyKey => self.idempotency_key = true,
                Kind::Expect => {
                    self.expect_continue =
                        header::trim(value).eq_ignore_ascii_case(b"100-continue");
                }
                Kind::Cookie if self.sticky.is_none() => {
                    self.sticky = sticky_value(value, sticky_cookie.as_bytes());
                }
                _ => {}
            }
        }

        if hosts > 1 {
            return Err(HeadError::Malformed("several Host fields"));
        }
        if hosts == 0 && version == Version::Http11 {
            return Err(HeadError::Malformed("missing Host"));
        }
        self.has_host = hosts == 1;
        if chunked && lengths.value.is_some() {
            return Err(HeadError::Smuggling(
                "both Content-Length and Transfer-Encoding",
            ));
        }
        if chunked && version == Version::Http10 {
            return Err(HeadError::Smuggling(
                "Transfer-Encoding in an HTTP/1.0 request",
            ));
        }
        self.content_length = lengths.value.filter(|_| !chunked);
        self.content_length_verbatim = lengths.verbatim();
        self.body = Some(match (chunked, lengths.value) {
            (true, _) => BodyKind::Chunked,
            (false, Some(n)) if n > 0 => BodyKind::Length(n),
            _ => BodyKind::None,
        });
        self.keep_alive = match version {
            Version::Http11 => !close,
            Version::Http10 => keep_alive_token && !close,
        };
        // An upgrade is forwarded only when it is announced properly and is
        // not h2c: h2c would let a client talk HTTP/2 to the backend past
        // our parsing (SPEC §5).
        if let Some(v) = upgrade_value
            && upgrade_token
            && version == Version::Http11
            && !header::has_token(v.get(buf), b"h2c")
        {
            self.upgrade = Some(v);
        }
        Ok(true)
    }

    /// Appends the head to send to a backend: HTTP/1.1, hop-by-hop fields
    /// dropped, forwarding fields added (SPEC §5).
    pub fn write_for_backend(&self, buf: &[u8], rw: &RequestRewrite<'_>, out: &mut Vec<u8>) {
        if self.line_verbatim {
            let line_end = self.target.end as usize + b" HTTP/1.1\r\n".len();
            out.extend_from_slice(&buf[self.method_span.start as usize..line_end]);
        } else {
            out.extend_from_slice(self.method_span.get(buf));
            out.push(b' ');
            let target = self.target.get(buf);
            if !target.starts_with(b"/") && target != b"*" {
                // `http://a` or `http://a?q`: the path of an empty one is `/`.
                out.push(b'/');
            }
            out.extend_from_slice(target);
            out.extend_from_slice(b" HTTP/1.1\r\n");
        }

        // The URL's authority wins over the client's Host (RFC 9112 §3.2.2);
        // a TLS backend gets its own name.
        let host = match (rw.override_host, self.authority) {
            (false, Some(authority)) => Some(authority.get(buf)),
            (true, _) => Some(rw.host),
            (false, None) => None,
        };
        let mut host_written = false;
        self.fields.write_forwarded(buf, out, |f| match f.kind {
            // Replaced by ours below.
            Kind::XForwardedFor | Kind::XForwardedProto | Kind::Via => false,
            // The framing travels from the one decision `parse` made.
            Kind::ContentLength => self.content_length_verbatim,
            Kind::Host if host.is_some() => false,
            Kind::Host => {
                host_written = true;
                true
            }
            _ => true,
        });
        if !host_written {
            put_field(out, b"Host", host.unwrap_or(rw.host));
        }
        if self.body == Some(BodyKind::Chunked) {
            out.extend_from_slice(b"Transfer-Encoding: chunked\r\n");
        } else if let (Some(n), false) = (self.content_length, self.content_length_verbatim) {
            put_content_length(out, n);
        }
        if let Some(upgrade) = self.upgrade {
            out.extend_from_slice(b"Connection: upgrade\r\n");
            put_field(out, b"Upgrade", upgrade.get(buf));
        }

        out.extend_from_slice(b"X-Forwarded-For: ");
        self.fields.append_values(buf, Kind::XForwardedFor, out);
        out.extend_from_slice(rw.client_ip);
        out.extend_from_slice(b"\r\nX-Forwarded-Proto: http\r\nVia: ");
        self.fields.append_values(buf, Kind::Via, out);
        out.extend_from_slice(match self.version() {
            Version::Http10 => b"1.0 ",
            Version::Http11 => b"1.1 ",
        });
        out.extend_from_slice(VIA_NAME.as_bytes());
        out.extend_from_slice(b"\r\n\r\n");
    }
}

/// Splits a request target (RFC 9112 §3.2) into what the backend gets as
/// its origin-form target and, for the absolute form, the authority that
/// replaces `Host`. The asterisk form is only for OPTIONS; the authority
/// form (CONNECT) was refused before.
fn split_target(
    buf: &[u8],
    target: Span,
    method: Method,
) -> Result<(Span, Option<Span>), HeadError> {
    let text = target.get(buf);
    // A fragment is for the client alone (RFC 9112 §3.2 has none in any
    // form); forwarding one lets two hops disagree on the path (HAProxy
    // refuses it too).
    if text.contains(&b'#') {
        return Err(HeadError::Malformed("fragment in the request target"));
    }
    match text.first() {
        Some(b'/') => return Ok((target, None)),
        Some(b'*') if text.len() == 1 && method == Method::Options => return Ok((target, None)),
        _ => {}
    }
    let bad = HeadError::Malformed("invalid request target");
    let scheme = text.iter().position(|&b| b == b':').ok_or(bad)?;
    let is_http = text[..scheme].eq_ignore_ascii_case(b"http")
        || text[..scheme].eq_ignore_ascii_case(b"https");
    if !is_http || text.get(scheme + 1..scheme + 3) != Some(b"//") {
        return Err(bad);
    }
    let from = scheme + 3;
    let len = text[from..]
        .iter()
        .position(|&b| b == b'/' || b == b'?')
        .unwrap_or(text.len() - from);
    let authority = &text[from..from + len];
    // Userinfo has no place in an HTTP URL any more (RFC 9110 §4.2.4).
    if authority.is_empty() || authority.contains(&b'@') {
        return Err(bad);
    }
    let at = target.start + from as u32;
    let authority = Span {
        start: at,
        end: at + len as u32,
    };
    let path = Span {
        start: authority.end,
        end: target.end,
    };
    Ok((path, Some(authority)))
}

/// Finds `name=<16 hex digits>` among the `; `-separated pairs of a Cookie.
fn sticky_value(cookie: &[u8], name: &[u8]) -> Option<u64> {
    cookie.split(|&b| b == b';').find_map(|pair| {
        let pair = header::trim(pair);
        let value = pair.strip_prefix(name)?.strip_prefix(b"=")?;
        let text = std::str::from_utf8(value).ok()?;
        if text.len() != 16 {
            return None;
        }
        u64::from_str_radix(text, 16).ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http1::MAX_HEAD;

    const COOKIE: &str = "lb_backend";

    fn parse(input: &[u8]) -> Result<RequestHead, HeadError> {
        let mut head = RequestHead::default();
        match head.parse(input, COOKIE)? {
            true => Ok(head),
            false => panic!("incomplete: {:?}", String::from_utf8_lossy(input)),
        }
    }

    fn rewritten(input: &[u8], rw: &RequestRewrite<'_>) -> String {
        let head = parse(input).expect("valid");
        let mut out = Vec::new();
        head.write_for_backend(input, rw, &mut out);
        String::from_utf8(out).expect("utf8")
    }

    const PLAIN: RequestRewrite<'static> = RequestRewrite {
        client_ip: b"10.0.0.9",
        host: b"backend:80",
        override_host: false,
    };

    #[test]
    fn refuses_the_error_table_rows() {
        let cases: &[(&[u8], HeadError)] = &[
            (b"GET / HTTP/1.1\r\nHost: a\r\n folded\r\n\r\n", HeadError::Malformed("invalid header name")),
            (b"GET / HTTP/1.1\r\nHost: a\rb\r\n\r\n", HeadError::Malformed("invalid header value")),
            (b"GET / HTTP/1.1\r\nHost: a\0b\r\n\r\n", HeadError::Malformed("invalid header value")),
            (b"GET / HTTP/1.1\r\nX: \x01\r\nHost: a\r\n\r\n", HeadError::Malformed("invalid header value")),
            (b"GET / HTTP/1.1\r\nHost : a\r\n\r\n", HeadError::Malformed("invalid header name")),
            (b"GET / HTTP/1.1\r\n\r\n", HeadError::Malformed("missing Host")),
            (b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", HeadError::Malformed("several Host fields")),
            (b"GET / HTTP/9.1\r\nHost: a\r\n\r\n", HeadError::Malformed("invalid version")),
            (b"CONNECT a:443 HTTP/1.1\r\nHost: a\r\n\r\n", HeadError::MethodNotAllowed),
            (
                b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
                HeadError::Smuggling("both Content-Length and Transfer-Encoding"),
            ),
            (
                b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n",
                HeadError::Smuggling("differing Content-Length values"),
            ),
            (
                b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3, 4\r\n\r\n",
                HeadError::Smuggling("invalid Content-Length"),
            ),
            (
                b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
                HeadError::Smuggling("Transfer-Encoding other than chunked"),
            ),
            (
                b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
                HeadError::Smuggling("Transfer-Encoding other than chunked"),
            ),
            (
                b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
                HeadError::Smuggling("Transfer-Encoding in an HTTP/1.0 request"),
            ),
        ];
        for (input, want) in cases {
            let got = parse(input).err();
            assert_eq!(got, Some(*want), "{:?}", String::from_utf8_lossy(input));
        }
    }

    #[test]
    fn incomplete_until_the_blank_line_and_431_past_the_limit() {
        let mut head = RequestHead::default();
        assert_eq!(
            head.parse(b"GET / HTTP/1.1\r\nHost: a\r\n", COOKIE),
            Ok(false)
        );
        let mut big = b"GET / HTTP/1.1\r\nHost: a\r\nX: ".to_vec();
        big.resize(MAX_HEAD + 1, b'a');
        assert_eq!(head.parse(&big, COOKIE), Err(HeadError::TooLarge));
        // Complete and canonical, but one byte over: refused all the same.
        let mut whole = b"GET / HTTP/1.1\r\nHost: a\r\nX: ".to_vec();
        whole.resize(MAX_HEAD - 3, b'a');
        whole.extend_from_slice(b"\r\n\r\n");
        assert_eq!(whole.len(), MAX_HEAD + 1);
        assert_eq!(head.parse(&whole, COOKIE), Err(HeadError::TooLarge));
        whole.remove(30);
        assert_eq!(head.parse(&whole, COOKIE), Ok(true));
        let mut many = b"GET / HTTP/1.1\r\nHost: a\r\n".to_vec();
        for i in 0..MAX_HEADERS {
            many.extend_from_slice(format!("X-{i}: 1\r\n").as_bytes());
        }
        many.extend_from_slice(b"\r\n");
        assert_eq!(head.parse(&many, COOKIE), Err(HeadError::TooLarge));
    }

    #[test]
    fn framing_and_persistence() {
        let h = parse(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 5\r\n\r\n").unwrap();
        assert_eq!(h.body(), BodyKind::Length(5));
        assert!(h.keep_alive);
        let h =
            parse(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: Chunked \r\n\r\n").unwrap();
        assert_eq!(h.body(), BodyKind::Chunked);
        let h = parse(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n").unwrap();
        assert!(!h.keep_alive);
        let h = parse(b"GET / HTTP/1.0\r\n\r\n").unwrap();
        assert!(!h.keep_alive);
        let h = parse(b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n").unwrap();
        assert!(h.keep_alive);
        let h = parse(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n").unwrap();
        assert_eq!(h.body(), BodyKind::None);
        let h = parse(
            b"PUT / HTTP/1.1\r\nHost: a\r\nExpect: 100-Continue\r\nContent-Length: 1\r\n\r\n",
        )
        .unwrap();
        assert!(h.expect_continue);
    }

    #[test]
    fn rewrite_drops_hop_by_hop_and_adds_forwarding_fields() {
        let out = rewritten(
            b"GET /x?y HTTP/1.1\r\nHost: example.com\r\nConnection: keep-alive, X-Secret\r\n\
              X-Secret: 1\r\nKeep-Alive: timeout=5\r\nTE: trailers\r\nProxy-Connection: x\r\n\
              X-Forwarded-For: 1.2.3.4\r\nX-Forwarded-Proto: https\r\nVia: 1.1 edge\r\nAccept: */*\r\n\r\n",
            &PLAIN,
        );
        assert_eq!(
            out,
            "GET /x?y HTTP/1.1\r\nHost: example.com\r\nAccept: */*\r\n\
             X-Forwarded-For: 1.2.3.4, 10.0.0.9\r\nX-Forwarded-Proto: http\r\n\
             Via: 1.1 edge, 1.1 load_balancer\r\n\r\n"
        );
    }

    #[test]
    fn rewrite_copies_clean_lines_and_mends_the_rest() {
        // Runs of kept CRLF lines go out byte for byte (spacing included);
        // a bare-LF line and an HTTP/1.0 request line are written anew.
        let out = rewritten(
            b"GET /a HTTP/1.1\r\nHost:h\r\nA:  1\r\nConnection: x\r\nX: 0\r\nB: 2\nC: 3\r\n\r\n",
            &PLAIN,
        );
        assert_eq!(
            out,
            "GET /a HTTP/1.1\r\nHost:h\r\nA:  1\r\nB: 2\r\nC: 3\r\n\
             X-Forwarded-For: 10.0.0.9\r\nX-Forwarded-Proto: http\r\n\
             Via: 1.1 load_balancer\r\n\r\n"
        );
        let out = rewritten(b"\r\nPOST /b HTTP/1.0\r\nHost: h\r\n\r\n", &PLAIN);
        assert!(
            out.starts_with("POST /b HTTP/1.1\r\nHost: h\r\nX-"),
            "{out}"
        );
    }

    #[test]
    fn connection_naming_framing_or_host_is_refused() {
        let why = "Connection names Content-Length, Transfer-Encoding or Host";
        for connection in [
            "Content-Length",
            "content-length",
            "keep-alive, CONTENT-LENGTH",
            "Transfer-Encoding",
            "close,transfer-encoding",
            "host",
            " keep-alive , Host ",
        ] {
            let head = format!(
                "POST /a HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nConnection: {connection}\r\n\r\n"
            );
            assert_eq!(
                parse(head.as_bytes()).err(),
                Some(HeadError::Smuggling(why)),
                "{connection}"
            );
        }
    }

    #[test]
    fn content_length_travels_as_one_field() {
        for (fields, kept) in [
            ("Content-Length: 5\r\n", "Content-Length: 5\r\n"),
            ("Content-Length: 5,5\r\n", "Content-Length: 5\r\n"),
            ("Content-Length: 5 , 5\r\n", "Content-Length: 5\r\n"),
            (
                "Content-Length: 5\r\ncontent-length: 5\r\n",
                "Content-Length: 5\r\n",
            ),
            ("Content-Length: 0, 0\r\n", "Content-Length: 0\r\n"),
        ] {
            let head = format!("POST / HTTP/1.1\r\nHost: a\r\n{fields}X: 1\r\n\r\n");
            let out = rewritten(head.as_bytes(), &PLAIN);
            assert_eq!(
                out.to_ascii_lowercase().matches("content-length").count(),
                1,
                "{out}"
            );
            assert!(out.contains(kept), "{fields:?} -> {out}");
        }
    }

    #[test]
    fn absolute_form_becomes_origin_form_and_its_authority_the_host() {
        for (target, line, host) in [
            ("http://evil.test/admin", "GET /admin HTTP/1.1", "evil.test"),
            ("HTTP://a.test:81/x?y=1", "GET /x?y=1 HTTP/1.1", "a.test:81"),
            ("https://s.test", "GET / HTTP/1.1", "s.test"),
            ("http://q.test?z", "GET /?z HTTP/1.1", "q.test"),
        ] {
            let head = format!("GET {target} HTTP/1.1\r\nHost: garden.test\r\n\r\n");
            let out = rewritten(head.as_bytes(), &PLAIN);
            assert!(out.starts_with(&format!("{line}\r\n")), "{out}");
            assert!(out.contains(&format!("\r\nHost: {host}\r\n")), "{out}");
            assert!(!out.contains("garden"), "{out}");
        }
        // A TLS backend still gets its own name.
        let tls = RequestRewrite {
            override_host: true,
            ..PLAIN
        };
        let out = rewritten(b"GET http://e.test/ HTTP/1.1\r\nHost: e.test\r\n\r\n", &tls);
        assert!(out.contains("\r\nHost: backend:80\r\n"), "{out}");
        let out = rewritten(b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n", &PLAIN);
        assert!(out.starts_with("OPTIONS * HTTP/1.1\r\n"), "{out}");
        let bad = HeadError::Malformed("invalid request target");
        for target in [
            "*",
            "http://user@h.test/",
            "http:///x",
            "ftp://h.test/",
            "h.test/x",
            "http:/x",
        ] {
            let head = format!("GET {target} HTTP/1.1\r\nHost: a\r\n\r\n");
            assert_eq!(parse(head.as_bytes()).err(), Some(bad), "{target}");
        }
        let fragment = HeadError::Malformed("fragment in the request target");
        for target in ["/a#b", "http://a.test/b#c", "/#"] {
            let head = format!("GET {target} HTTP/1.1\r\nHost: a\r\n\r\n");
            assert_eq!(parse(head.as_bytes()).err(), Some(fragment), "{target}");
        }
    }

    #[test]
    fn rewrite_host_rules() {
        let tls = RequestRewrite {
            override_host: true,
            ..PLAIN
        };
        let out = rewritten(b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n", &tls);
        assert!(
            out.contains("\r\nHost: backend:80\r\n") && !out.contains("example.com"),
            "{out}"
        );
        let out = rewritten(b"GET / HTTP/1.0\r\n\r\n", &PLAIN);
        assert!(
            out.starts_with("GET / HTTP/1.1\r\nHost: backend:80\r\n"),
            "{out}"
        );
        assert!(out.contains("Via: 1.0 load_balancer"), "{out}");
    }

    #[test]
    fn upgrade_forwarded_but_never_h2c() {
        let ws =
            b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n";
        let out = rewritten(ws, &PLAIN);
        assert!(
            out.contains("Connection: upgrade\r\nUpgrade: websocket\r\n"),
            "{out}"
        );
        let h2c = b"GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade, HTTP2-Settings\r\n\
                    Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n\r\n";
        assert!(parse(h2c).unwrap().upgrade.is_none());
        let out = rewritten(h2c, &PLAIN);
        assert!(
            !out.contains("h2c") && !out.contains("HTTP2-Settings") && !out.contains("pgrade"),
            "{out}"
        );
        // Upgrade without the Connection token is not an upgrade.
        let bare = b"GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n\r\n";
        assert!(parse(bare).unwrap().upgrade.is_none());
    }

    #[test]
    fn chunked_request_keeps_its_framing_field() {
        let out = rewritten(
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n",
            &PLAIN,
        );
        assert!(out.contains("Transfer-Encoding: chunked\r\n"), "{out}");
    }

    #[test]
    fn sticky_cookie_is_found_among_others() {
        let h = parse(
            b"GET / HTTP/1.1\r\nHost: a\r\nCookie: a=1; lb_backend=00000000000000ff; b=2\r\n\r\n",
        )
        .unwrap();
        assert_eq!(h.sticky, Some(255));
        let h = parse(b"GET / HTTP/1.1\r\nHost: a\r\nCookie: lb_backend=zz\r\n\r\n").unwrap();
        assert_eq!(h.sticky, None);
    }

    #[test]
    fn idempotency() {
        assert!(Method::Get.is_idempotent() && Method::Put.is_idempotent());
        assert!(!Method::Post.is_idempotent() && !Method::Other.is_idempotent());
    }
}
