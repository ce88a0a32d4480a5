//! One-pass tokenizer for the response heads backends send nearly always:
//! `HTTP/1.x ddd reason`, then `Name: value` lines, every line ending in
//! CRLF. It accepts a strict subset of what httparse accepts and yields the
//! same parts; anything else (bare LF, a status line without its space, an
//! incomplete or invalid head) is left to httparse, which knows the rest of
//! RFC 9112 and names the error.
//!
//! Why a second tokenizer at all: the response head is parsed once per
//! proxied request, and httparse's general loop (runtime SIMD dispatch, a
//! header array copied into our fields afterwards) was the largest single
//! block of user-space work per request.

use super::header::{self, Field, Fields};
use super::{MAX_HEADERS, Span};

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
/// Field value bytes as httparse allows them: HTAB, SP, VCHAR, obs-text.
const VALUE: [bool; 256] = byte_set!(|b| b == b'\t' || (b >= 0x20 && b != 0x7f));
/// Reason phrase bytes we take here: HTAB, SP, VCHAR (httparse turns a
/// reason with obs-text into an empty one; that case goes to it).
const REASON: [bool; 256] = byte_set!(|b| b == b'\t' || (b >= 0x20 && b < 0x7f));

/// Tokenizes a complete canonical head at the start of `buf` into `fields`
/// (cleared first). Returns the minor version, the status, the reason and
/// the head's length, or `None` if the head is not of that form (or not
/// complete), in which case `fields` holds nothing useful.
pub(super) fn canonical_head(buf: &[u8], fields: &mut Fields) -> Option<(u8, u16, Span, usize)> {
    let line = buf.get(..13)?;
    if &line[..7] != b"HTTP/1." || line[8] != b' ' || line[12] != b' ' {
        return None;
    }
    let minor = match line[7] {
        b'0' => 0,
        b'1' => 1,
        _ => return None,
    };
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
    let reason = Span {
        start: 13,
        end: reason_end as u32,
    };

    fields.clear();
    let mut at = reason_end + 2;
    loop {
        let rest = &buf[at..];
        if *rest.first()? == b'\r' {
            return (*rest.get(1)? == b'\n').then_some((minor, status, reason, at + 2));
        }
        let name_len = name_len(rest);
        if name_len == 0 || *rest.get(name_len)? != b':' || fields.len() == MAX_HEADERS {
            return None;
        }
        let mut value_start = name_len + 1;
        while matches!(rest.get(value_start)?, b' ' | b'\t') {
            value_start += 1;
        }
        let value_len = value_len(&rest[value_start..]);
        let line_end = value_start + value_len;
        if rest.get(line_end..line_end + 2)? != b"\r\n" {
            return None;
        }
        let mut value_end = line_end;
        while value_end > value_start && matches!(rest[value_end - 1], b' ' | b'\t') {
            value_end -= 1;
        }
        let span = |from: usize, to: usize| Span {
            start: (at + from) as u32,
            end: (at + to) as u32,
        };
        fields.push(Field {
            kind: header::classify(&rest[..name_len]),
            name: span(0, name_len),
            value: span(value_start, value_end),
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
/// the first other one. Letters, digits and `-` are checked eight at a time.
fn name_len(s: &[u8]) -> usize {
    let mut i = 0;
    while let Some(x) = s.get(i..).and_then(word) {
        let letters = between(x | splat(0x20), b'a' - 1, b'z' + 1);
        let digits = between(x, b'0' - 1, b'9' + 1);
        let dash = between(x, b'-' - 1, b'-' + 1);
        let other = !(letters | digits | dash) & splat(0x80);
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
        }
    }

    /// A head that is usually canonical, often slightly not: the scan must
    /// either leave it to httparse or read exactly what httparse reads.
    /// Each part is a usual one, and one time in `odd` an unusual one.
    fn random_head(rng: &mut Rng, odd: usize) -> Vec<u8> {
        let mut part = |usual: &[&'static [u8]], unusual: &[&'static [u8]]| match rng.below(odd) {
            0 => rng.pick(unusual),
            _ => rng.pick(usual),
        };
        let mut h = Vec::new();
        h.extend_from_slice(part(
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
        ));
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

    #[test]
    fn accepts_only_what_httparse_reads_the_same_way() {
        let mut rng = Rng(0x2545_f491_4f6c_dd1d);
        let mut scanned = 0;
        for i in 0..200_000 {
            let head = random_head(&mut rng, [2, 8, 40][i % 3]);
            let mut fields = Fields::default();
            let Some((minor, status, reason, len)) = canonical_head(&head, &mut fields) else {
                continue;
            };
            scanned += 1;
            let mut raw = [httparse::EMPTY_HEADER; MAX_HEADERS];
            let mut res = httparse::Response::new(&mut raw);
            let parsed = res.parse(&head);
            let shown = String::from_utf8_lossy(&head);
            assert_eq!(parsed, Ok(httparse::Status::Complete(len)), "{shown:?}");
            assert_eq!(
                (res.version, res.code),
                (Some(minor), Some(status)),
                "{shown:?}"
            );
            assert_eq!(
                res.reason.map(str::as_bytes),
                Some(reason.get(&head)),
                "{shown:?}"
            );
            assert_eq!(res.headers.len(), fields.len(), "{shown:?}");
            for (i, h) in res.headers.iter().enumerate() {
                let f = fields.get(i);
                assert_eq!(h.name.as_bytes(), f.name.get(&head), "{shown:?}");
                assert_eq!(h.value, f.value.get(&head), "{shown:?}");
                assert_eq!(header::classify(h.name.as_bytes()), f.kind, "{shown:?}");
            }
        }
        // The comparison above must have had real work to do.
        assert!(scanned > 50_000, "only {scanned} heads scanned");
    }
}
