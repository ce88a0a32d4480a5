//! One-pass tokenizer for the heads peers send nearly always: a canonical
//! request or status line, then `Name: value` field lines, every line
//! ending in CRLF. It accepts a strict subset of what httparse accepts and
//! yields the same parts; anything else (bare LF, empty lines before a
//! request, a status line without its space, non-ASCII in a target or a
//! reason, too many fields, an incomplete or invalid head) is left to
//! httparse, which knows the rest of RFC 9112 and names the error.
//!
//! Why a second tokenizer at all: every proxied request parses two heads,
//! and httparse's general loop (runtime SIMD dispatch per field, a header
//! array copied into our `Fields` afterwards) was the largest single block
//! of user-space work per request. Here field values and targets are
//! checked eight bytes at a time and fields land in `Fields` directly.

use super::header::{self, Field, Fields};
use super::{MAX_HEAD, MAX_HEADERS, Span};

/// A 256-entry table of the bytes for which `$test` (on `$b`) holds.
macro_rules! byte_set {
    (|$b:ident| $test:expr) => {{
        let mut set = [false; 256];
        let mut i = 0;
        while i < 256 {
            let $b = i as u8;
            set[i] = $test;
            i += 1;
        }
        set
    }};
}

/// RFC 9110 `tchar`: the bytes of a field name.
const NAME: [bool; 256] = byte_set!(|b| {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'!' | b'#'
                | b'$'
                | b'%'
                | b'&'
                | b'\''
                | b'*'
                | b'+'
                | b'-'
                | b'.'
                | b'^'
                | b'_'
                | b'`'
                | b'|'
                | b'~'
        )
});
/// Whether `b` may appear in a token (a field name, a chunk extension).
pub(super) fn is_tchar(b: u8) -> bool {
    NAME[b as usize]
}

/// Field value bytes as httparse allows them: HTAB, SP, VCHAR, obs-text.
const VALUE: [bool; 256] = byte_set!(|b| b == b'\t' || (b >= 0x20 && b != 0x7f));
/// Reason phrase bytes we take here: HTAB, SP, VCHAR (httparse turns a
/// reason with obs-text into an empty one; that case goes to it).
const REASON: [bool; 256] = byte_set!(|b| b == b'\t' || (b >= 0x20 && b < 0x7f));

/// What a status line says.
#[derive(Debug, Clone, Copy)]
pub(super) struct StatusLine {
    pub minor: u8,
    pub status: u16,
    pub reason: Span,
    /// Read by the scan: `HTTP/1.x ddd reason` and CRLF, as we would write
    /// it for HTTP/1.1.
    pub canonical: bool,
}

/// What a request line says.
#[derive(Debug, Clone, Copy)]
pub(super) struct RequestLine {
    pub method: Span,
    pub target: Span,
    pub minor: u8,
    /// Read by the scan: `method target HTTP/1.x` and CRLF, as we would
    /// write it for HTTP/1.1.
    pub canonical: bool,
}

/// Tokenizes a complete canonical response head at the start of `buf` into
/// `fields` (cleared first): the status line and the head's length, or
/// `None` if the head is not of that form or not complete (`fields` then
/// holds nothing useful).
pub(super) fn response(buf: &[u8], fields: &mut Fields) -> Option<(StatusLine, usize)> {
    let line = buf.get(..13)?;
    if &line[..7] != b"HTTP/1." || line[8] != b' ' || line[12] != b' ' {
        return None;
    }
    let minor = version_digit(line[7])?;
    let digit = |b: u8| {
        Some(b.wrapping_sub(b'0'))
            .filter(|d| *d <= 9)
            .map(u16::from)
    };
    let status = digit(line[9])? * 100 + digit(line[10])? * 10 + digit(line[11])?;
    let reason_len = buf[13..].iter().position(|&b| !REASON[b as usize])?;
    let reason_end = 13 + reason_len;
    if buf.get(reason_end..reason_end + 2)? != b"\r\n" {
        return None;
    }
    let reason = span(0, 13, reason_end);
    let len = field_lines(buf, reason_end + 2, fields)?;
    Some((
        StatusLine {
            minor,
            status,
            reason,
            canonical: true,
        },
        len,
    ))
}

/// Tokenizes a complete canonical request head, as `response` does.
pub(super) fn request(buf: &[u8], fields: &mut Fields) -> Option<(RequestLine, usize)> {
    let method_len = name_len(buf);
    if method_len == 0 || *buf.get(method_len)? != b' ' {
        return None;
    }
    let target_start = method_len + 1;
    let target_end = target_start + target_len(&buf[target_start..]);
    if target_end == target_start || *buf.get(target_end)? != b' ' {
        return None;
    }
    let version = buf.get(target_end + 1..target_end + 11)?;
    if &version[..7] != b"HTTP/1." || &version[8..] != b"\r\n" {
        return None;
    }
    let minor = version_digit(version[7])?;
    let len = field_lines(buf, target_end + 11, fields)?;
    Some((
        RequestLine {
            method: span(0, 0, method_len),
            target: span(0, target_start, target_end),
            minor,
            canonical: true,
        },
        len,
    ))
}

fn version_digit(b: u8) -> Option<u8> {
    match b {
        b'0' => Some(0),
        b'1' => Some(1),
        _ => None,
    }
}

fn span(at: usize, from: usize, to: usize) -> Span {
    Span {
        start: (at + from) as u32,
        end: (at + to) as u32,
    }
}

/// The field lines from `at` on and the empty line that ends them: the
/// head's length. A head over `MAX_HEAD` is left to httparse, which then
/// refuses it.
fn field_lines(buf: &[u8], mut at: usize, fields: &mut Fields) -> Option<usize> {
    fields.clear();
    loop {
        let rest = &buf[at..];
        if *rest.first()? == b'\r' {
            let len = at + 2;
            return (*rest.get(1)? == b'\n' && len <= MAX_HEAD).then_some(len);
        }
        let name_len = name_len(rest);
        if name_len == 0 || *rest.get(name_len)? != b':' || fields.len() == MAX_HEADERS {
            return None;
        }
        let mut value_start = name_len + 1;
        while value_start < rest.len() && matches!(rest[value_start], b' ' | b'\t') {
            value_start += 1;
        }
        let line_end = value_start + value_len(&rest[value_start..]);
        if rest.get(line_end..line_end + 2)? != b"\r\n" {
            return None;
        }
        let value = &rest[value_start..line_end];
        let trailing = value.iter().rev().take_while(|&&b| b == b' ' || b == b'\t');
        let value_end = line_end - trailing.count();
        fields.push(Field {
            kind: header::classify(&rest[..name_len]),
            name: span(at, 0, name_len),
            value: span(at, value_start, value_end),
        });
        at += line_end + 2;
    }
}

/// `b` in every byte of a word.
const fn splat(b: u8) -> u64 {
    0x0101_0101_0101_0101 * b as u64
}

/// The high bit of each byte of `x` that lies strictly between `low` and
/// `high` (`high` at most 128; a byte with its high bit set never does).
/// Exact per byte: the 7-bit arithmetic never carries into a neighbour.
fn between(x: u64, low: u8, high: u8) -> u64 {
    let seven = x & splat(0x7f);
    (splat(0x7f + high) - seven) & !x & (seven + splat(0x7f - low)) & splat(0x80)
}

fn word(s: &[u8]) -> Option<u64> {
    let mut w = [0u8; 8];
    w.copy_from_slice(s.get(..8)?);
    Some(u64::from_le_bytes(w))
}

/// Length of the field name at the start of `s`: the `tchar` bytes before
/// the first other one. Letters and `-`, nearly all of any name, are
/// checked eight at a time; any other byte is looked up on its own.
#[inline]
fn name_len(s: &[u8]) -> usize {
    let mut i = 0;
    while let Some(x) = s.get(i..).and_then(word) {
        let letters = between(x | splat(0x20), b'a' - 1, b'z' + 1);
        let dash = between(x, b'-' - 1, b'-' + 1);
        let other = !(letters | dash) & splat(0x80);
        if other == 0 {
            i += 8;
            continue;
        }
        i += other.trailing_zeros() as usize / 8;
        if !NAME[s[i] as usize] {
            return i;
        }
        i += 1;
    }
    i + s[i..]
        .iter()
        .position(|&b| !NAME[b as usize])
        .unwrap_or(s.len() - i)
}

/// Length of the request target at the start of `s`: visible ASCII, as
/// httparse takes it (it also takes obs-text, which it must then check for
/// UTF-8: that case is left to it).
fn target_len(s: &[u8]) -> usize {
    let mut i = 0;
    while let Some(x) = s.get(i..).and_then(word) {
        let stop = !between(x, 0x20, 0x7f) & splat(0x80);
        if stop != 0 {
            return i + stop.trailing_zeros() as usize / 8;
        }
        i += 8;
    }
    i + s[i..]
        .iter()
        .position(|&b| !(0x21..0x7f).contains(&b))
        .unwrap_or(s.len() - i)
}

/// Length of the field value at the start of `s`: the bytes before the
/// first one a value cannot hold (a CR ends it), eight at a time.
fn value_len(s: &[u8]) -> usize {
    let mut i = 0;
    while let Some(x) = s.get(i..).and_then(word) {
        // Bytes below 0x20, then DEL. The lowest flag of each is exact
        // (a borrow only runs upwards), which is the one used.
        let control = x.wrapping_sub(splat(0x20)) & !x & splat(0x80);
        let del = (x ^ splat(0x7f)).wrapping_sub(splat(1)) & !(x ^ splat(0x7f)) & splat(0x80);
        let stop = control | del;
        if stop == 0 {
            i += 8;
            continue;
        }
        i += stop.trailing_zeros() as usize / 8;
        if s[i] != b'\t' {
            return i;
        }
        i += 1;
    }
    i + s[i..]
        .iter()
        .position(|&b| !VALUE[b as usize])
        .unwrap_or(s.len() - i)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// xorshift64*: reproducible inputs without a dependency.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }

        fn pick<'a>(&mut self, items: &[&'a [u8]]) -> &'a [u8] {
            items[self.below(items.len())]
        }
    }

    const TARGET: [bool; 256] = byte_set!(|b| b > 0x20 && b < 0x7f);

    fn naive(s: &[u8], set: &[bool; 256]) -> usize {
        s.iter().position(|&b| !set[b as usize]).unwrap_or(s.len())
    }

    #[test]
    fn word_scans_match_a_byte_loop() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        // Every byte value at every position of a run of valid bytes...
        for fill in [b'a', b'Z', b'7', b'-'] {
            for len in [3, 8, 13, 16, 21] {
                for at in 0..len {
                    for b in 0..=255u8 {
                        let mut s = vec![fill; len];
                        s[at] = b;
                        assert_eq!(name_len(&s), naive(&s, &NAME), "name {s:?}");
                        assert_eq!(value_len(&s), naive(&s, &VALUE), "value {s:?}");
                        assert_eq!(target_len(&s), naive(&s, &TARGET), "target {s:?}");
                    }
                }
            }
        }
        // ...and random strings, where borrows between bytes could mislead.
        let alphabet: Vec<u8> = (0..=255).collect();
        for _ in 0..100_000 {
            let len = rng.below(24);
            let s: Vec<u8> = (0..len)
                .map(|_| match rng.below(4) {
                    0 => alphabet[rng.below(256)],
                    _ => b"aZ09-_.:\t \r\x7f\x80\xff\x1f\x20\x21"[rng.below(17)],
                })
                .collect();
            assert_eq!(name_len(&s), naive(&s, &NAME), "name {s:?}");
            assert_eq!(value_len(&s), naive(&s, &VALUE), "value {s:?}");
            assert_eq!(target_len(&s), naive(&s, &TARGET), "target {s:?}");
        }
    }

    /// A head that is usually canonical, often slightly not: the scan must
    /// either leave it to httparse or read exactly what httparse reads.
    /// Each part is a usual one, and one time in `odd` an unusual one.
    fn random_head(rng: &mut Rng, odd: usize, first: [&[&'static [u8]]; 2]) -> Vec<u8> {
        let mut part = |usual: &[&'static [u8]], unusual: &[&'static [u8]]| match rng.below(odd) {
            0 => rng.pick(unusual),
            _ => rng.pick(usual),
        };
        let mut h = Vec::new();
        h.extend_from_slice(part(first[0], first[1]));
        let fields = rng.below(8);
        let mut part = |usual: &[&'static [u8]], unusual: &[&'static [u8]]| match rng.below(odd) {
            0 => rng.pick(unusual),
            _ => rng.pick(usual),
        };
        for _ in 0..fields {
            let name = part(
                &[b"Content-Length", b"content-type", b"X-Request-ID", b"ETag"],
                &[
                    b"x_y.z~!#$%&'*+^`|",
                    b"Bad Name",
                    b"Bad\"Name",
                    b"",
                    b"N\x80",
                ],
            );
            let colon = part(&[b": ", b":"], &[b":\t ", b" : ", b";"]);
            let value = part(
                &[
                    b"12",
                    b"text/html; charset=utf-8",
                    b"Wed, 25 Nov 2026 00:00:00 GMT",
                ],
                &[
                    b"a\tb",
                    b"trailing  \t",
                    b"",
                    b"\xe2\x82\xac obs-text",
                    b"nul\x00here",
                    b"del\x7fhere",
                    b"bare\rcr",
                ],
            );
            let end = part(&[b"\r\n"], &[b"\n", b" \r\n", b"\r\n "]);
            for p in [name, colon, value, end] {
                h.extend_from_slice(p);
            }
        }
        h.extend_from_slice(part(&[b"\r\n"], &[b"\n", b"\r", b""]));
        h.extend_from_slice(b"body");
        match rng.below(8) {
            // A random byte changed.
            0 => {
                let at = rng.below(h.len());
                h[at] = rng.next() as u8;
            }
            // Cut short.
            1 => h.truncate(rng.below(h.len())),
            _ => {}
        }
        h
    }

    fn same_fields(parsed: &[httparse::Header<'_>], fields: &Fields, head: &[u8]) {
        let shown = String::from_utf8_lossy(head);
        assert_eq!(parsed.len(), fields.len(), "{shown:?}");
        for (i, h) in parsed.iter().enumerate() {
            let f = fields.get(i);
            assert_eq!(h.name.as_bytes(), f.name.get(head), "{shown:?}");
            assert_eq!(h.value, f.value.get(head), "{shown:?}");
            assert_eq!(header::classify(h.name.as_bytes()), f.kind, "{shown:?}");
        }
    }

    const STATUS_LINES: [&[&[u8]]; 2] = [
        &[
            b"HTTP/1.1 200 OK\r\n",
            b"HTTP/1.0 404 Not Found\r\n",
            b"HTTP/1.1 204 \r\n",
        ],
        &[
            b"HTTP/1.1 204\r\n",
            b"HTTP/1.1 301 Moved\tPermanently\r\n",
            b"HTTP/1.1 500 Caf\xc3\xa9\r\n",
            b"HTTP/2.0 200 OK\r\n",
            b"HTTP/1.1 99 OK\r\n",
            b"HTTP/1.1 200 OK\n",
        ],
    ];

    const REQUEST_LINES: [&[&[u8]]; 2] = [
        &[
            b"GET / HTTP/1.1\r\n",
            b"POST /api/v1/items?id=7&x=%20 HTTP/1.1\r\n",
            b"HEAD http://example.com/ HTTP/1.0\r\n",
        ],
        &[
            b"\r\nGET / HTTP/1.1\r\n",
            b"GET  / HTTP/1.1\r\n",
            b"GET /caf\xc3\xa9 HTTP/1.1\r\n",
            b"GET /\xff HTTP/1.1\r\n",
            b"GET / HTTP/1.2\r\n",
            b"GET / HTTP/1.1\n",
            b"G(T / HTTP/1.1\r\n",
            b"GET /a\"b{c}|d HTTP/1.1\r\n",
            b"GET / HTTP/1.1 \r\n",
            b" / HTTP/1.1\r\n",
        ],
    ];

    /// Runs `check` on 200,000 generated heads; it returns whether the scan
    /// took the head (and then compares it with httparse). The comparisons
    /// must have had real work to do.
    fn differential(seed: u64, first: [&[&'static [u8]]; 2], mut check: impl FnMut(&[u8]) -> bool) {
        let mut rng = Rng(seed);
        let mut scanned = 0;
        for i in 0..200_000 {
            let head = random_head(&mut rng, [2, 8, 40][i % 3], first);
            scanned += usize::from(check(&head));
        }
        assert!(scanned > 50_000, "only {scanned} heads scanned");
    }

    #[test]
    fn requests_it_accepts_read_as_httparse_reads_them() {
        differential(0x0123_4567_89ab_cdef, REQUEST_LINES, |head| {
            let mut fields = Fields::default();
            let Some((line, len)) = request(head, &mut fields) else {
                return false;
            };
            let mut raw = [httparse::EMPTY_HEADER; MAX_HEADERS];
            let mut req = httparse::Request::new(&mut raw);
            let parsed = req.parse(head);
            let shown = String::from_utf8_lossy(head);
            assert_eq!(parsed, Ok(httparse::Status::Complete(len)), "{shown:?}");
            let method = req.method.map(str::as_bytes);
            assert_eq!(method, Some(line.method.get(head)), "{shown:?}");
            let target = req.path.map(str::as_bytes);
            assert_eq!(target, Some(line.target.get(head)), "{shown:?}");
            assert_eq!(req.version, Some(line.minor), "{shown:?}");
            same_fields(req.headers, &fields, head);
            true
        });
    }

    #[test]
    fn responses_it_accepts_read_as_httparse_reads_them() {
        differential(0x2545_f491_4f6c_dd1d, STATUS_LINES, |head| {
            let mut fields = Fields::default();
            let Some((line, len)) = response(head, &mut fields) else {
                return false;
            };
            let mut raw = [httparse::EMPTY_HEADER; MAX_HEADERS];
            let mut res = httparse::Response::new(&mut raw);
            let parsed = res.parse(head);
            let shown = String::from_utf8_lossy(head);
            assert_eq!(parsed, Ok(httparse::Status::Complete(len)), "{shown:?}");
            let status = (res.version, res.code);
            assert_eq!(status, (Some(line.minor), Some(line.status)), "{shown:?}");
            let reason = res.reason.map(str::as_bytes);
            assert_eq!(reason, Some(line.reason.get(head)), "{shown:?}");
            same_fields(res.headers, &fields, head);
            true
        });
    }
}
