//! Header-field helpers shared by request and response handling: naming the
//! fields the proxy cares about, splitting comma lists, reading numbers.

use super::Span;

/// The fields a proxy treats specially; everything else is `Other` and is
/// forwarded untouched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Other,
    Connection,
    KeepAlive,
    ProxyConnection,
    Te,
    Trailer,
    TransferEncoding,
    Upgrade,
    Http2Settings,
    ContentLength,
    Host,
    XForwardedFor,
    XForwardedProto,
    Via,
    Cookie,
    Expect,
    IdempotencyKey,
}

// `Fields` keeps one bit per kind in a u32.
const _: () = assert!((Kind::IdempotencyKey as u32) < 32);

impl Kind {
    /// Hop-by-hop fields (RFC 9110 §7.6.1, plus Proxy-Connection and the h2c
    /// upgrade settings) are never forwarded as they came.
    pub(crate) fn is_hop_by_hop(self) -> bool {
        matches!(
            self,
            Kind::Connection
                | Kind::KeepAlive
                | Kind::ProxyConnection
                | Kind::Te
                | Kind::Trailer
                | Kind::TransferEncoding
                | Kind::Upgrade
                | Kind::Http2Settings
        )
    }
}

/// Classifies a field name; the length switch keeps this to one or two
/// compares for any name.
pub(crate) fn classify(name: &[u8]) -> Kind {
    let is = |lower: &str| token_is(name, lower.as_bytes());
    match name.len() {
        2 if is("te") => Kind::Te,
        3 if is("via") => Kind::Via,
        4 if is("host") => Kind::Host,
        6 if is("cookie") => Kind::Cookie,
        6 if is("expect") => Kind::Expect,
        7 if is("trailer") => Kind::Trailer,
        7 if is("upgrade") => Kind::Upgrade,
        10 if is("connection") => Kind::Connection,
        10 if is("keep-alive") => Kind::KeepAlive,
        14 if is("content-length") => Kind::ContentLength,
        14 if is("http2-settings") => Kind::Http2Settings,
        15 if is("x-forwarded-for") => Kind::XForwardedFor,
        15 if is("idempotency-key") => Kind::IdempotencyKey,
        16 if is("proxy-connection") => Kind::ProxyConnection,
        17 if is("transfer-encoding") => Kind::TransferEncoding,
        17 if is("x-forwarded-proto") => Kind::XForwardedProto,
        _ => Kind::Other,
    }
}

/// Case-insensitive equality of a field name with `lower`, a lowercase name
/// of letters, digits and `-`. Setting bit 5 lowercases a letter and leaves
/// a digit or `-` as it is; the only other bytes it maps onto those are
/// control characters, which a parsed name (a token) cannot contain. Names
/// of 8 bytes or more are compared a word at a time, the last word
/// overlapping the one before.
fn token_is(name: &[u8], lower: &[u8]) -> bool {
    const BIT5: u64 = 0x2020_2020_2020_2020;
    let n = name.len();
    if n != lower.len() {
        return false;
    }
    if n < 8 {
        return name
            .iter()
            .zip(lower)
            .fold(0u8, |diff, (&a, &b)| diff | ((a | 0x20) ^ b))
            == 0;
    }
    let word = |s: &[u8], at: usize| {
        let mut w = [0u8; 8];
        w.copy_from_slice(&s[at..at + 8]);
        u64::from_le_bytes(w)
    };
    let mut diff = (word(name, n - 8) | BIT5) ^ word(lower, n - 8);
    let mut at = 0;
    while at + 8 < n {
        diff |= (word(name, at) | BIT5) ^ word(lower, at);
        at += 8;
    }
    diff == 0
}

/// One header field of a parsed head, as offsets into the head's buffer.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Field {
    pub kind: Kind,
    pub name: Span,
    pub value: Span,
}

/// The fields of one head and the names its `Connection` header lists,
/// as spans into the head's buffer. Shared by requests and responses.
#[derive(Debug, Default)]
pub(crate) struct Fields {
    list: Vec<Field>,
    /// Field names listed in `Connection`: hop-by-hop, never forwarded.
    pub connection_names: Vec<Span>,
    /// One bit per `Kind` present, so the rewrite skips scans for fields
    /// a head does not have (most have no `Via` or `X-Forwarded-For`).
    kinds: u32,
}

impl Fields {
    pub fn clear(&mut self) {
        self.list.clear();
        self.connection_names.clear();
        self.kinds = 0;
    }

    pub fn push(&mut self, field: Field) {
        self.kinds |= 1 << field.kind as u32;
        self.list.push(field);
    }

    pub fn len(&self) -> usize {
        self.list.len()
    }

    /// Replaces the fields with those httparse found in `buf`.
    pub fn fill_from(&mut self, buf: &[u8], headers: &[httparse::Header<'_>]) {
        self.clear();
        for h in headers {
            self.push(Field {
                kind: classify(h.name.as_bytes()),
                name: Span::within(buf, h.name.as_bytes()),
                value: Span::within(buf, h.value),
            });
        }
    }

    pub fn get(&self, i: usize) -> Field {
        self.list[i]
    }

    /// Whether `Connection` names the field called `name`. Inline, so the
    /// common head without such names pays one compare per field.
    #[inline]
    pub fn named_by_connection(&self, buf: &[u8], name: Span) -> bool {
        !self.connection_names.is_empty() && self.listed_in_connection(buf, name)
    }

    #[cold]
    #[inline(never)]
    fn listed_in_connection(&self, buf: &[u8], name: Span) -> bool {
        let name = name.get(buf);
        self.connection_names
            .iter()
            .any(|t| t.get(buf).eq_ignore_ascii_case(name))
    }

    /// Appends the fields that travel to the next hop: never a hop-by-hop
    /// one or one `Connection` names, nor any that `keep` refuses (it sees
    /// only the others). Adjacent field lines that end in CRLF right after
    /// their value go out as they came, in one copy per run (a typical head
    /// is one or two runs); any other line is written anew as
    /// `Name: value`, so a bare-LF line ending never travels on.
    pub fn write_forwarded(
        &self,
        buf: &[u8],
        out: &mut Vec<u8>,
        mut keep: impl FnMut(&Field) -> bool,
    ) {
        let mut run = 0..0;
        for f in &self.list {
            if f.kind.is_hop_by_hop() || self.named_by_connection(buf, f.name) || !keep(f) {
                out.extend_from_slice(&buf[run.clone()]);
                run = 0..0;
                continue;
            }
            let (start, end) = (f.name.start as usize, f.value.end as usize);
            let crlf = buf.get(end..end + 2) == Some(b"\r\n");
            if crlf && start == run.end && !run.is_empty() {
                run.end = end + 2;
                continue;
            }
            out.extend_from_slice(&buf[run.clone()]);
            run = 0..0;
            if crlf {
                run = start..end + 2;
            } else {
                put_field(out, f.name.get(buf), f.value.get(buf));
            }
        }
        out.extend_from_slice(&buf[run]);
    }

    /// Writes the values of every `kind` field followed by ", ", so the
    /// proxy's own element can follow (a list field split over several lines
    /// is one list, RFC 9110 §5.3).
    pub fn append_values(&self, buf: &[u8], kind: Kind, out: &mut Vec<u8>) {
        if self.kinds & (1 << kind as u32) == 0 {
            return;
        }
        for f in self.list.iter().filter(|f| f.kind == kind) {
            let v = trim(f.value.get(buf));
            if !v.is_empty() {
                out.extend_from_slice(v);
                out.extend_from_slice(b", ");
            }
        }
    }
}

/// Appends one field line, `Name: value` and CRLF.
pub(crate) fn put_field(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// Appends `Content-Length: n` and CRLF.
pub(crate) fn put_content_length(out: &mut Vec<u8>, n: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    let mut n = n;
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    put_field(out, b"Content-Length", &digits[at..]);
}

/// Iterates the trimmed, non-empty elements of a comma-separated list.
pub(crate) fn list_items(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|&b| b == b',')
        .map(trim)
        .filter(|s| !s.is_empty())
}

pub(crate) fn trim(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

/// A Content-Length value: 1*DIGIT, or a list of identical such values
/// (RFC 9112 §6.3 allows a recipient to accept that). `None` if invalid.
pub(crate) fn content_length(value: &[u8]) -> Option<u64> {
    let mut result = None;
    for item in value.split(|&b| b == b',') {
        let n = decimal(trim(item))?;
        match result {
            Some(prev) if prev != n => return None,
            _ => result = Some(n),
        }
    }
    result
}

/// Folds one `Content-Length` field into the value seen so far: every
/// field must be valid and all must agree. The error names what is wrong;
/// the caller decides whether that is smuggling (request) or a broken
/// backend (response).
fn merge_content_length(prev: Option<u64>, value: &[u8]) -> Result<u64, &'static str> {
    let n = content_length(value).ok_or("invalid Content-Length")?;
    match prev {
        Some(p) if p != n => Err("differing Content-Length values"),
        _ => Ok(n),
    }
}

/// The `Content-Length` fields of one head, folded as they are met: the
/// length they agree on, and whether it can travel as it came.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Lengths {
    pub value: Option<u64>,
    fields: u8,
    plain: bool,
}

impl Lengths {
    /// Adds one field; the error names what is wrong (see
    /// [`merge_content_length`]).
    pub fn add(&mut self, value: &[u8]) -> Result<(), &'static str> {
        self.value = Some(merge_content_length(self.value, value)?);
        self.fields = self.fields.saturating_add(1);
        // Valid (merged above): a byte loop, as values are a few digits.
        self.plain = value.iter().all(u8::is_ascii_digit);
        Ok(())
    }

    /// One field of plain digits: copied as it came, not written anew.
    pub fn verbatim(&self) -> bool {
        self.fields == 1 && self.plain
    }
}

/// Strict unsigned decimal: digits only, no sign, no overflow.
pub(crate) fn decimal(s: &[u8]) -> Option<u64> {
    if s.is_empty() || s.len() > 19 {
        return None;
    }
    s.iter().try_fold(0u64, |acc, &b| {
        b.is_ascii_digit().then(|| acc * 10 + u64::from(b - b'0'))
    })
}

/// The `timeout=` and `max=` parameters of a `Keep-Alive` response field.
pub(crate) fn keep_alive_params(value: &[u8]) -> (Option<u32>, Option<u32>) {
    let (mut timeout, mut max) = (None, None);
    for item in list_items(value) {
        let Some(eq) = item.iter().position(|&b| b == b'=') else {
            continue;
        };
        let (key, val) = (trim(&item[..eq]), trim(&item[eq + 1..]));
        let val = decimal(val).map(|v| v.min(u64::from(u32::MAX)) as u32);
        if key.eq_ignore_ascii_case(b"timeout") {
            timeout = val;
        } else if key.eq_ignore_ascii_case(b"max") {
            max = val;
        }
    }
    (timeout, max)
}

/// Whether a comma list contains `token`, case-insensitively.
pub(crate) fn has_token(value: &[u8], token: &[u8]) -> bool {
    list_items(value).any(|t| t.eq_ignore_ascii_case(token))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_case_insensitively() {
        let cases: &[(&[u8], Kind)] = &[
            (b"Content-Length", Kind::ContentLength),
            (b"TRANSFER-ENCODING", Kind::TransferEncoding),
            (b"x-forwarded-for", Kind::XForwardedFor),
            (b"HTTP2-Settings", Kind::Http2Settings),
            (b"te", Kind::Te),
            (b"Content-Type", Kind::Other),
            // Same length and one byte off, in the first word, in the last
            // (overlapping) one, and by bytes whose bit 5 is set already.
            (b"Xontent-Length", Kind::Other),
            (b"Content-Lengtx", Kind::Other),
            (b"Transfer-Encodin_", Kind::Other),
            (b"Connectio_", Kind::Other),
            (b"keep_alive", Kind::Other),
            (b"X-Forwarded-Fo^", Kind::Other),
        ];
        for (name, kind) in cases {
            assert_eq!(classify(name), *kind, "{}", String::from_utf8_lossy(name));
        }
    }

    #[test]
    fn content_length_values() {
        let cases: &[(&[u8], Option<u64>)] = &[
            (b"0", Some(0)),
            (b"42", Some(42)),
            (b"42, 42", Some(42)),
            (b"42,43", None),
            (b"+42", None),
            (b"-1", None),
            (b"4 2", None),
            (b"", None),
            (b"0x10", None),
            (b"99999999999999999999", None),
        ];
        for (input, want) in cases {
            assert_eq!(
                content_length(input),
                *want,
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn keep_alive_parameters() {
        assert_eq!(
            keep_alive_params(b"timeout=5, max=100"),
            (Some(5), Some(100))
        );
        assert_eq!(keep_alive_params(b"Timeout = 7"), (Some(7), None));
        assert_eq!(keep_alive_params(b"max=x"), (None, None));
    }

    #[test]
    fn tokens() {
        assert!(has_token(b"keep-alive, Upgrade", b"upgrade"));
        assert!(!has_token(b"keep-alive", b"close"));
        assert_eq!(trim(b" \t a b \t"), b"a b");
    }
}
