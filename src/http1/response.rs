//! Backend response heads: parsing with the framing rules of RFC 9112 §6.3,
//! learning the backend's keep-alive limits, and the rewrite sent to the
//! client. A head the proxy cannot trust is a `HeadError` (answered 502).

use std::mem::MaybeUninit;

use super::header::{self, Fields, Kind, put_content_length, put_field};
use super::scan;
use super::{BodyKind, HeadError, MAX_HEADERS, Span, VIA_NAME, Version};

/// What the client-bound copy of the head needs beyond the head itself.
#[derive(Debug, Clone, Copy)]
pub struct ResponseRewrite {
    /// Tell the client the connection closes after this response.
    pub close: bool,
    /// The client speaks HTTP/1.0: it gets `Connection: keep-alive` when the
    /// connection stays open, and a de-chunked body (it cannot read chunks).
    pub client_http10: bool,
    /// Pin the client to this backend with a `Set-Cookie`.
    pub set_sticky: Option<u64>,
}

/// A parsed response head. Reused across responses of a connection.
#[derive(Debug, Default)]
pub struct ResponseHead {
    pub head_len: usize,
    pub status: u16,
    reason: Span,
    /// The status line is already what the client gets: copied whole.
    line_verbatim: bool,
    pub version: Option<Version>,
    pub body: Option<BodyKind>,
    /// The backend keeps the connection open after this response.
    pub keep_alive: bool,
    /// `Keep-Alive: timeout=` in seconds, if the backend announced it.
    pub keep_alive_timeout: Option<u32>,
    /// `Keep-Alive: max=`: requests the backend still accepts on it.
    pub keep_alive_max: Option<u32>,
    /// The `Upgrade` value of a 101 answer.
    pub upgrade: Option<Span>,
    /// The `Transfer-Encoding` value, re-sent as it came (it may name codings
    /// such as gzip before `chunked`).
    transfer_encoding: Span,
    /// The message is (or, for HEAD, would be) chunked.
    chunked: bool,
    /// What the `Content-Length` fields agree on, when no
    /// `Transfer-Encoding` overrides them; forwarded as one field.
    content_length: Option<u64>,
    /// That length is one field of plain digits: it travels as it came.
    content_length_verbatim: bool,
    fields: Fields,
}

impl ResponseHead {
    pub fn body(&self) -> BodyKind {
        self.body.unwrap_or(BodyKind::None)
    }

    /// 1xx other than 101: forwarded, then the real response follows.
    pub fn is_interim(&self) -> bool {
        (100..200).contains(&self.status) && self.status != 101
    }

    /// Parses the head at the start of `buf`. `request_head`: the request was
    /// HEAD (no body whatever the fields say); `upgrade_requested`: a 101 is
    /// acceptable.
    pub fn parse(
        &mut self,
        buf: &[u8],
        request_head: bool,
        upgrade_requested: bool,
    ) -> Result<bool, HeadError> {
        let (line, head_len) = match scan::response(buf, &mut self.fields) {
            Some(head) => head,
            None => match self.tokenize(buf)? {
                Some(head) => head,
                None => return Ok(false),
            },
        };
        let scan::StatusLine {
            minor,
            status,
            reason,
            canonical,
        } = line;
        if !(100..=599).contains(&status) {
            return Err(HeadError::Malformed("status out of range"));
        }
        let version = Version::from_minor(minor);
        self.head_len = head_len;
        self.status = status;
        self.reason = reason;
        self.line_verbatim = canonical && version == Version::Http11;
        self.version = Some(version);
        self.keep_alive_timeout = None;
        self.keep_alive_max = None;
        self.upgrade = None;

        let mut lengths = header::Lengths::default();
        let mut transfer_encoding: Option<&[u8]> = None;
        let mut several_te = false;
        let mut chunked_count = 0;
        let mut close = false;
        let mut keep_alive_token = false;

        for i in 0..self.fields.len() {
            let f = self.fields.get(i);
            let value = f.value.get(buf);
            match f.kind {
                Kind::ContentLength => lengths.add(value).map_err(HeadError::Malformed)?,
                Kind::TransferEncoding => {
                    chunked_count += header::list_items(value)
                        .filter(|c| c.eq_ignore_ascii_case(b"chunked"))
                        .count();
                    several_te |= transfer_encoding.is_some();
                    transfer_encoding = Some(value);
                    self.transfer_encoding = f.value;
                }
                Kind::Connection => {
                    for token in header::list_items(value) {
                        if token.eq_ignore_ascii_case(b"close") {
                            close = true;
                        } else if token.eq_ignore_ascii_case(b"keep-alive") {
                            keep_alive_token = true;
                        } else if !token.eq_ignore_ascii_case(b"upgrade")
                            && !matches!(
                                header::classify(token),
                                Kind::ContentLength | Kind::TransferEncoding
                            )
                        {
                            // Framing fields are never dropped as hop-by-hop:
                            // the client reads the framing we forward.
                            self.fields.connection_names.push(Span::within(buf, token));
                        }
                    }
                }
                Kind::KeepAlive => {
                    let (timeout, max) = header::keep_alive_params(value);
                    self.keep_alive_timeout = timeout.or(self.keep_alive_timeout);
                    self.keep_alive_max = max.or(self.keep_alive_max);
                }
                Kind::Upgrade => self.upgrade = Some(f.value),
                _ => {}
            }
        }

        if status == 101 && !(upgrade_requested && self.upgrade.is_some()) {
            return Err(HeadError::Malformed("unrequested 101 Switching Protocols"));
        }
        if status != 101 {
            self.upgrade = None;
        }
        let mut reusable = match version {
            Version::Http11 => !close,
            Version::Http10 => keep_alive_token && !close,
        };
        // Chunked may be applied once (RFC 9112 §6.1): twice is a framing
        // no two readers agree on.
        if chunked_count > 1 {
            return Err(HeadError::Malformed("chunked applied more than once"));
        }
        self.chunked = transfer_encoding.is_some_and(|te| {
            !several_te
                && header::list_items(te)
                    .last()
                    .is_some_and(|c| c.eq_ignore_ascii_case(b"chunked"))
        });
        let no_body =
            request_head || (100..200).contains(&status) || status == 204 || status == 304;
        let body = if no_body {
            BodyKind::None
        } else if let Some(te) = transfer_encoding {
            // Transfer-Encoding overrides Content-Length (RFC 9112 §6.3), but a
            // message carrying both was built by something confused: do not
            // reuse that connection.
            reusable &= lengths.value.is_none() && !several_te;
            let last = header::list_items(te).last().unwrap_or(b"");
            if last.eq_ignore_ascii_case(b"chunked") && !several_te {
                BodyKind::Chunked
            } else {
                reusable = false;
                BodyKind::UntilClose
            }
        } else {
            match lengths.value {
                Some(0) => BodyKind::None,
                Some(n) => BodyKind::Length(n),
                None => {
                    reusable = false;
                    BodyKind::UntilClose
                }
            }
        };
        self.body = Some(body);
        // A length overridden by Transfer-Encoding, or in an answer that
        // must not carry one (1xx, 204), does not travel on.
        let length_allowed =
            transfer_encoding.is_none() && !(100..200).contains(&status) && status != 204;
        self.content_length = lengths.value.filter(|_| length_allowed);
        self.content_length_verbatim = lengths.verbatim();
        self.keep_alive = reusable && status != 101;
        Ok(true)
    }

    /// The general tokenizer, for heads `scan::response` leaves
    /// alone: httparse accepts what RFC 9112 allows (bare LF line ends, a
    /// status line without a reason) and names what is wrong. `Ok(None)`:
    /// the head is not complete yet.
    #[cold]
    #[inline(never)]
    fn tokenize(&mut self, buf: &[u8]) -> Result<Option<(scan::StatusLine, usize)>, HeadError> {
        // Uninitialised for the same reason as in request parsing.
        let mut raw = [const { MaybeUninit::uninit() }; MAX_HEADERS];
        let mut res = httparse::Response::new(&mut []);
        let parsed = httparse::ParserConfig::default()
            .parse_response_with_uninit_headers(&mut res, buf, &mut raw);
        let Some(head_len) = super::httparse_head_len(parsed, buf)? else {
            return Ok(None);
        };
        let (Some(minor), Some(status)) = (res.version, res.code) else {
            return Err(HeadError::Malformed("incomplete status line"));
        };
        self.fields.fill_from(buf, res.headers);
        let line = scan::StatusLine {
            minor,
            status,
            reason: Span::within(buf, res.reason.unwrap_or("").as_bytes()),
            canonical: false,
        };
        Ok(Some((line, head_len)))
    }

    /// Whether the client connection can stay open after this response is
    /// relayed as it is framed (close-delimited bodies end with the close).
    pub fn client_can_continue(&self, client_http10: bool) -> bool {
        match self.body() {
            BodyKind::UntilClose => false,
            // A de-chunked body has no length left, so the close ends it.
            BodyKind::Chunked => !client_http10,
            _ => true,
        }
    }

    /// Appends the head to send to the client.
    pub fn write_for_client(&self, buf: &[u8], rw: &ResponseRewrite, out: &mut Vec<u8>) {
        if self.line_verbatim {
            out.extend_from_slice(&buf[..self.reason.end as usize + 2]);
        } else {
            out.extend_from_slice(b"HTTP/1.1 ");
            push_status(out, self.status);
            out.push(b' ');
            out.extend_from_slice(self.reason.get(buf));
            out.extend_from_slice(b"\r\n");
        }
        // Via is replaced by ours below; the framing travels from the one
        // decision `parse` made.
        let length = self.content_length;
        let verbatim = self.content_length_verbatim && length.is_some();
        self.fields.write_forwarded(buf, out, |f| match f.kind {
            Kind::Via => false,
            Kind::ContentLength => verbatim,
            _ => true,
        });
        if let (Some(n), false) = (length, verbatim) {
            put_content_length(out, n);
        }
        // Also on a HEAD answer: it describes what a GET would get.
        if self.chunked && !rw.client_http10 {
            put_field(out, b"Transfer-Encoding", self.transfer_encoding.get(buf));
        }
        if let Some(upgrade) = self.upgrade {
            out.extend_from_slice(b"Connection: upgrade\r\n");
            put_field(out, b"Upgrade", upgrade.get(buf));
        } else if rw.close {
            out.extend_from_slice(b"Connection: close\r\n");
        } else if rw.client_http10 {
            out.extend_from_slice(b"Connection: keep-alive\r\n");
        }
        if let Some(id) = rw.set_sticky {
            out.extend_from_slice(b"Set-Cookie: ");
            out.extend_from_slice(crate::balance::STICKY_COOKIE.as_bytes());
            out.push(b'=');
            push_hex16(out, id);
            out.extend_from_slice(b"; Path=/; HttpOnly\r\n");
        }
        out.extend_from_slice(b"Via: ");
        self.fields.append_values(buf, Kind::Via, out);
        out.extend_from_slice(match self.version {
            Some(Version::Http10) => b"1.0 ",
            _ => b"1.1 ",
        });
        out.extend_from_slice(VIA_NAME.as_bytes());
        out.extend_from_slice(b"\r\n\r\n");
    }
}

fn push_status(out: &mut Vec<u8>, status: u16) {
    out.extend_from_slice(&[
        b'0' + (status / 100) as u8,
        b'0' + (status / 10 % 10) as u8,
        b'0' + (status % 10) as u8,
    ]);
}

/// 16 lowercase hex digits, the sticky cookie's value format.
pub fn push_hex16(out: &mut Vec<u8>, v: u64) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for shift in (0..16).rev() {
        out.push(HEX[((v >> (shift * 4)) & 0xf) as usize]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_with(input: &[u8], head: bool, upgrade: bool) -> Result<ResponseHead, HeadError> {
        let mut r = ResponseHead::default();
        assert!(r.parse(input, head, upgrade)?, "incomplete");
        Ok(r)
    }

    fn parse(input: &[u8]) -> ResponseHead {
        parse_with(input, false, false).expect("valid")
    }

    #[test]
    fn body_framing_per_rfc9112() {
        let cases: &[(&[u8], bool, BodyKind, bool)] = &[
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n",
                false,
                BodyKind::Length(5),
                true,
            ),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n",
                true,
                BodyKind::None,
                true,
            ),
            (
                b"HTTP/1.1 204 No Content\r\n\r\n",
                false,
                BodyKind::None,
                true,
            ),
            (
                b"HTTP/1.1 304 Not Modified\r\nContent-Length: 9\r\n\r\n",
                false,
                BodyKind::None,
                true,
            ),
            (
                b"HTTP/1.1 100 Continue\r\n\r\n",
                false,
                BodyKind::None,
                true,
            ),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
                false,
                BodyKind::Chunked,
                true,
            ),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
                false,
                BodyKind::Chunked,
                true,
            ),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
                false,
                BodyKind::UntilClose,
                false,
            ),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
                false,
                BodyKind::Chunked,
                false,
            ),
            (
                b"HTTP/1.1 200 OK\r\n\r\n",
                false,
                BodyKind::UntilClose,
                false,
            ),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
                false,
                BodyKind::None,
                true,
            ),
            (
                b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 1\r\n\r\n",
                false,
                BodyKind::Length(1),
                false,
            ),
            (
                b"HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n",
                false,
                BodyKind::Length(1),
                false,
            ),
            (
                b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 1\r\n\r\n",
                false,
                BodyKind::Length(1),
                true,
            ),
        ];
        for (input, head, body, reusable) in cases {
            let r = parse_with(input, *head, false).expect("valid");
            assert_eq!(
                (r.body(), r.keep_alive),
                (*body, *reusable),
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn malformed_responses() {
        let cases: &[&[u8]] = &[
            b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",
            b"HTTP/1.1 2000 OK\r\n\r\n",
            b"HTTP/1.1 099 OK\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nBad Name: 1\r\n\r\n",
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n",
            b"garbage\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, chunked\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
        ];
        for input in cases {
            assert!(
                parse_with(input, false, false).is_err(),
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn learns_keep_alive_limits() {
        let r =
            parse(b"HTTP/1.1 200 OK\r\nKeep-Alive: timeout=5, max=99\r\nContent-Length: 0\r\n\r\n");
        assert_eq!(
            (r.keep_alive_timeout, r.keep_alive_max),
            (Some(5), Some(99))
        );
    }

    #[test]
    fn framing_travels_as_one_decision() {
        let plain = ResponseRewrite {
            close: false,
            client_http10: false,
            set_sticky: None,
        };
        for (fields, want) in [
            ("Content-Length: 5\r\n", Some("Content-Length: 5\r\n")),
            ("Content-Length: 5, 5\r\n", Some("Content-Length: 5\r\n")),
            (
                "Content-Length: 5\r\nContent-Length: 5\r\n",
                Some("Content-Length: 5\r\n"),
            ),
            (
                "Connection: content-length\r\nContent-Length: 5\r\n",
                Some("Content-Length: 5\r\n"),
            ),
            // Transfer-Encoding overrides a length, which then never travels.
            ("Content-Length: 5\r\nTransfer-Encoding: chunked\r\n", None),
        ] {
            let input = format!("HTTP/1.1 200 OK\r\n{fields}X: y\r\n\r\n");
            let r = parse(input.as_bytes());
            let mut out = Vec::new();
            r.write_for_client(input.as_bytes(), &plain, &mut out);
            let out = String::from_utf8(out).unwrap();
            let lengths = out.to_ascii_lowercase().matches("content-length").count();
            match want {
                Some(line) => assert!(lengths == 1 && out.contains(line), "{fields:?} -> {out}"),
                None => assert!(
                    lengths == 0 && out.contains("chunked"),
                    "{fields:?} -> {out}"
                ),
            }
        }
    }

    #[test]
    fn rewrite_for_client() {
        let input = b"HTTP/1.1 200 OK\r\nConnection: keep-alive, X-Internal\r\nX-Internal: 1\r\n\
                      Keep-Alive: timeout=5\r\nTransfer-Encoding: chunked\r\nContent-Type: text/plain\r\n\r\n";
        let r = parse(input);
        let mut out = Vec::new();
        let rw = ResponseRewrite {
            close: false,
            client_http10: false,
            set_sticky: Some(0xab),
        };
        r.write_for_client(input, &rw, &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\
             Set-Cookie: lb_backend=00000000000000ab; Path=/; HttpOnly\r\nVia: 1.1 load_balancer\r\n\r\n"
        );
        let mut out = Vec::new();
        let rw = ResponseRewrite {
            close: true,
            client_http10: true,
            set_sticky: None,
        };
        r.write_for_client(input, &rw, &mut out);
        let text = String::from_utf8(out).unwrap();
        assert!(
            !text.contains("Transfer-Encoding") && text.contains("Connection: close\r\n"),
            "{text}"
        );
        assert!(!r.client_can_continue(true) && r.client_can_continue(false));
    }

    #[test]
    fn rewrite_copies_clean_lines_and_mends_the_rest() {
        let rw = ResponseRewrite {
            close: false,
            client_http10: false,
            set_sticky: None,
        };
        let rewrite = |input: &[u8]| {
            let mut out = Vec::new();
            parse(input).write_for_client(input, &rw, &mut out);
            String::from_utf8(out).unwrap()
        };
        assert_eq!(
            rewrite(b"HTTP/1.1 200 OK\r\nA:1\r\nConnection: keep-alive\r\nB: 2\nC: 3\r\n\r\n"),
            "HTTP/1.1 200 OK\r\nA:1\r\nB: 2\r\nC: 3\r\nVia: 1.1 load_balancer\r\n\r\n"
        );
        // No reason phrase at all (this used to panic the worker), an empty
        // field value, and an HTTP/1.0 status line.
        assert_eq!(
            rewrite(b"HTTP/1.1 204\r\nX-Empty:\r\nY: \r\n\r\n"),
            "HTTP/1.1 204 \r\nX-Empty:\r\nY: \r\nVia: 1.1 load_balancer\r\n\r\n"
        );
        assert!(
            rewrite(b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n")
                .starts_with("HTTP/1.1 200 OK\r\nContent-Length: 0\r\nVia: 1.0 ")
        );
    }

    #[test]
    fn head_answer_keeps_its_transfer_encoding() {
        let input = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
        let r = parse_with(input, true, false).expect("valid");
        assert_eq!(r.body(), BodyKind::None);
        let mut out = Vec::new();
        let rw = ResponseRewrite {
            close: false,
            client_http10: false,
            set_sticky: None,
        };
        r.write_for_client(input, &rw, &mut out);
        assert!(
            String::from_utf8(out)
                .unwrap()
                .contains("Transfer-Encoding: chunked\r\n")
        );
    }

    #[test]
    fn switching_protocols_when_asked() {
        let input =
            b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
                      Sec-WebSocket-Accept: x\r\n\r\n";
        let r = parse_with(input, false, true).expect("valid");
        assert!(r.upgrade.is_some() && !r.keep_alive);
        let mut out = Vec::new();
        let rw = ResponseRewrite {
            close: false,
            client_http10: false,
            set_sticky: None,
        };
        r.write_for_client(input, &rw, &mut out);
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.starts_with("HTTP/1.1 101 Switching Protocols\r\nSec-WebSocket-Accept: x\r\n"),
            "{text}"
        );
        assert!(
            text.contains("Connection: upgrade\r\nUpgrade: websocket\r\n"),
            "{text}"
        );
    }
}
