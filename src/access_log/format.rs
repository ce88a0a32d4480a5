//! One access log line, formatted into the writer's reused buffer: no
//! allocation, no `fmt` machinery on the way (an IPv6 client address
//! excepted).
//!
//! `combined`: nginx's `combined` format, then the balancer's fields:
//!
//! ```text
//! 127.0.0.1 - - [07/Dec/2026:15:04:05 +0000] "GET /x HTTP/1.1" 200 612 "-" "curl/8" port=51234 backend=127.0.0.1:9001 connect=0.001 upstream=0.004 total=0.005 retries=0 retry=- received=83
//! ```
//!
//! The number after the status is every byte sent to the client (head
//! included, nginx's `$bytes_sent`); `received` is every byte taken from
//! it (head and body). Times are seconds with millisecond resolution; `-`
//! when there was none (a pooled connection needs no connect).

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::calendar;
use crate::proxy::record::Record;

const HEX: &[u8; 16] = b"0123456789abcdef";

/// The wall clock as the lines print it. The loop's own time (an
/// `Instant` it reads anyway) is turned into wall time from an anchor
/// taken once a second, and the texts of a second are built once: a line
/// costs no clock read and no calendar arithmetic.
pub(crate) struct Clock {
    /// Wall time since the epoch at `anchor`.
    wall_at_anchor: Duration,
    anchor: Instant,
    /// The second the texts below are for.
    second: u64,
    clf: [u8; 26],
    rfc3339: [u8; 19],
}

/// The time of one line.
pub(crate) struct Stamp<'a> {
    /// `07/Dec/2026:15:04:05 +0000`
    clf: &'a [u8; 26],
    /// `2026-12-07T15:04:05`
    rfc3339: &'a [u8; 19],
    millis: u32,
}

impl Clock {
    pub(crate) fn new() -> Clock {
        let mut clock = Clock {
            wall_at_anchor: Duration::ZERO,
            anchor: Instant::now(),
            second: u64::MAX,
            clf: [0; 26],
            rfc3339: [0; 19],
        };
        clock.anchor();
        clock
    }

    /// Reads the wall clock again: called once a second, so a clock that
    /// was set is followed within a second.
    pub(crate) fn anchor(&mut self) {
        self.anchor = Instant::now();
        self.wall_at_anchor = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
    }

    /// The texts for the loop time `now`.
    pub(crate) fn at(&mut self, now: Instant) -> Stamp<'_> {
        let wall = self.wall_at_anchor + now.saturating_duration_since(self.anchor);
        let second = wall.as_secs();
        if second != self.second {
            self.second = second;
            self.clf = calendar::clf_seconds(second);
            self.rfc3339 = calendar::rfc3339_seconds(second);
        }
        Stamp {
            clf: &self.clf,
            rfc3339: &self.rfc3339,
            millis: wall.subsec_millis(),
        }
    }
}

/// What a line needs besides the record.
pub(crate) struct Extra<'a> {
    /// When the request ended.
    pub stamp: Stamp<'a>,
    /// How long the request took.
    pub total: Duration,
    /// The backend's label, if one was chosen.
    pub backend: Option<&'a str>,
}

/// A field both formats print the same way, apart from the syntax: the
/// upstream side of the request.
enum Value<'a> {
    Text(Option<&'a [u8]>),
    Seconds(Option<Duration>),
    Number(u64),
}

/// The upstream fields, in the order both formats print them.
fn upstream_fields<'a>(r: &Record, x: &Extra<'a>) -> [(&'static [u8], Value<'a>); 6] {
    [
        (b"backend", Value::Text(x.backend.map(str::as_bytes))),
        (b"connect", Value::Seconds(r.connect)),
        (b"upstream", Value::Seconds(r.upstream)),
        (b"total", Value::Seconds(Some(x.total))),
        (b"retries", Value::Number(r.retries.into())),
        (
            b"retry",
            Value::Text(r.retry_reason.map(|w| w.label().as_bytes())),
        ),
    ]
}

pub(crate) fn combined(out: &mut Vec<u8>, r: &Record, x: &Extra<'_>) {
    ip(out, r.client);
    out.extend_from_slice(b" - - [");
    out.extend_from_slice(x.stamp.clf);
    out.extend_from_slice(b"] \"");
    quoted_or_dash(out, r.request_line());
    out.extend_from_slice(b"\" ");
    number(out, r.status.into());
    out.push(b' ');
    number(out, r.sent);
    out.extend_from_slice(b" \"");
    quoted_or_dash(out, r.referer());
    out.extend_from_slice(b"\" \"");
    quoted_or_dash(out, r.user_agent());
    out.extend_from_slice(b"\" port=");
    number(out, r.client.port().into());
    for (key, value) in upstream_fields(r, x) {
        out.push(b' ');
        out.extend_from_slice(key);
        out.push(b'=');
        match value {
            Value::Text(Some(text)) => escape_clf(out, text),
            Value::Seconds(Some(d)) => seconds(out, d),
            Value::Number(n) => number(out, n),
            Value::Text(None) | Value::Seconds(None) => out.push(b'-'),
        }
    }
    out.extend_from_slice(b" received=");
    number(out, r.received);
    out.push(b'\n');
}

pub(crate) fn json(out: &mut Vec<u8>, r: &Record, x: &Extra<'_>) {
    out.extend_from_slice(b"{\"time\":\"");
    out.extend_from_slice(x.stamp.rfc3339);
    out.push(b'.');
    out.extend_from_slice(&calendar::millis(x.stamp.millis));
    out.extend_from_slice(b"Z\",\"client\":\"");
    ip(out, r.client);
    out.extend_from_slice(b"\",\"client_port\":");
    number(out, r.client.port().into());
    out.extend_from_slice(b",\"request\":");
    json_string(out, r.request_line());
    out.extend_from_slice(b",\"status\":");
    number(out, r.status.into());
    out.extend_from_slice(b",\"sent\":");
    number(out, r.sent);
    out.extend_from_slice(b",\"received\":");
    number(out, r.received);
    out.extend_from_slice(b",\"referer\":");
    json_string(out, r.referer());
    out.extend_from_slice(b",\"user_agent\":");
    json_string(out, r.user_agent());
    for (key, value) in upstream_fields(r, x) {
        out.extend_from_slice(b",\"");
        out.extend_from_slice(key);
        out.extend_from_slice(b"\":");
        match value {
            Value::Text(Some(text)) => json_string(out, text),
            Value::Seconds(Some(d)) => seconds(out, d),
            Value::Number(n) => number(out, n),
            Value::Text(None) | Value::Seconds(None) => out.extend_from_slice(b"null"),
        }
    }
    out.extend_from_slice(b",\"rejected\":");
    out.extend_from_slice(if r.rejected() { b"true" } else { b"false" });
    out.extend_from_slice(b"}\n");
}

/// The client's address as `IpAddr`'s `Display` writes it; IPv4 without
/// `fmt`, which costs more than the rest of a line.
fn ip(out: &mut Vec<u8>, addr: SocketAddr) {
    match addr.ip() {
        IpAddr::V4(v4) => {
            let [a, b, c, d] = v4.octets();
            number(out, a.into());
            for octet in [b, c, d] {
                out.push(b'.');
                number(out, octet.into());
            }
        }
        IpAddr::V6(v6) => {
            use std::io::Write;
            let _ = write!(out, "{v6}");
        }
    }
}

fn number(out: &mut Vec<u8>, n: u64) {
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

/// `0.004`: seconds with milliseconds, as nginx's `$request_time`.
fn seconds(out: &mut Vec<u8>, d: Duration) {
    number(out, d.as_secs());
    out.push(b'.');
    out.extend_from_slice(&calendar::millis(d.subsec_millis()));
}

fn quoted_or_dash(out: &mut Vec<u8>, bytes: &[u8]) {
    match bytes.is_empty() {
        true => out.push(b'-'),
        false => escape_clf(out, bytes),
    }
}

/// nginx's escaping: `"`, `\`, control bytes and bytes ≥ 0x7f as `\xHH`,
/// so a field can neither end its quotes nor start a new line. Runs of
/// plain bytes are copied whole.
pub(crate) fn escape_clf(out: &mut Vec<u8>, bytes: &[u8]) {
    let mut rest = bytes;
    while let Some(at) = rest.iter().position(|&b| CLF_ESCAPED[usize::from(b)]) {
        out.extend_from_slice(&rest[..at]);
        out.extend_from_slice(&crate::log::hex_escape(rest[at]));
        rest = &rest[at + 1..];
    }
    out.extend_from_slice(rest);
}

/// The bytes `escape_clf` escapes, as a table: one load per byte.
const CLF_ESCAPED: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        table[b] = b < 0x20 || b >= 0x7f || b == b'"' as usize || b == b'\\' as usize;
        b += 1;
    }
    table
};

/// A JSON string. Bytes that are not UTF-8 become `\u00HH` (their Latin-1
/// reading), so the line is valid JSON whatever the client sent.
fn json_string(out: &mut Vec<u8>, bytes: &[u8]) {
    let utf8 = std::str::from_utf8(bytes).is_ok();
    let needs_escape = |b: u8| matches!(b, b'"' | b'\\' | ..0x20 | 0x7f) || (b >= 0x80 && !utf8);
    out.push(b'"');
    let mut rest = bytes;
    while let Some(at) = rest.iter().position(|&b| needs_escape(b)) {
        out.extend_from_slice(&rest[..at]);
        match rest[at] {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            b => u_escape(out, b),
        }
        rest = &rest[at + 1..];
    }
    out.extend_from_slice(rest);
    out.push(b'"');
}

fn u_escape(out: &mut Vec<u8>, b: u8) {
    out.extend_from_slice(b"\\u00");
    out.extend_from_slice(&[HEX[usize::from(b >> 4)], HEX[usize::from(b & 0xf)]]);
}

/// A byte string for the error log, escaped as in the access log.
pub(crate) struct Escaped<'a>(pub &'a [u8]);

impl std::fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for &b in self.0 {
            match b {
                b'"' | b'\\' | ..0x20 | 0x7f.. => write!(f, "\\x{b:02x}")?,
                _ => f.write_str(char::from(b).encode_utf8(&mut [0; 4]))?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    fn record() -> Record {
        let mut r = Record::new("127.0.0.1:5000".parse().unwrap(), Instant::now());
        r.capture(b"GET /a\"b\\c\xff HTTP/1.1\r\nUser-Agent: curl/8\r\n\r\n");
        r.status = 502;
        r.error = Some("every backend is down");
        r.sent = 120;
        r.received = 40;
        r
    }

    /// A clock at 2026-12-07T15:04:05.250Z, and its anchor instant.
    fn clock() -> (Clock, Instant) {
        let mut clock = Clock::new();
        clock.wall_at_anchor = Duration::from_millis(1_796_655_845_250);
        let anchor = clock.anchor;
        (clock, anchor)
    }

    fn extra(clock: &mut Clock, now: Instant) -> Extra<'_> {
        Extra {
            stamp: clock.at(now),
            total: Duration::from_millis(1500),
            backend: Some("127.0.0.1:9001"),
        }
    }

    #[test]
    fn combined_line() {
        let (mut clock, now) = clock();
        let mut out = Vec::new();
        combined(&mut out, &record(), &extra(&mut clock, now));
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "127.0.0.1 - - [07/Dec/2026:15:04:05 +0000] \"GET /a\\x22b\\x5cc\\xff HTTP/1.1\" 502 120 \"-\" \"curl/8\" port=5000 backend=127.0.0.1:9001 connect=- upstream=- total=1.500 retries=0 retry=- received=40\n"
        );
    }

    #[test]
    fn json_line_is_json() {
        let (mut clock, now) = clock();
        let mut out = Vec::new();
        json(&mut out, &record(), &extra(&mut clock, now));
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["time"], "2026-12-07T15:04:05.250Z");
        assert_eq!(v["request"], "GET /a\"b\\c\u{ff} HTTP/1.1");
        assert_eq!(v["status"], 502);
        assert_eq!(v["referer"], "");
        assert_eq!(v["connect"], serde_json::Value::Null);
        assert_eq!(v["total"], 1.5);
        assert_eq!(v["rejected"], true);
        assert!(out.ends_with(b"}\n") && out.iter().filter(|&&b| b == b'\n').count() == 1);
    }

    #[test]
    fn the_clock_follows_the_loop_time_across_seconds() {
        let (mut clock, now) = clock();
        let stamp = clock.at(now + Duration::from_millis(749));
        assert_eq!(
            (&stamp.rfc3339[..], stamp.millis),
            (&b"2026-12-07T15:04:05"[..], 999)
        );
        let stamp = clock.at(now + Duration::from_millis(750));
        assert_eq!(stamp.clf, b"07/Dec/2026:15:04:06 +0000");
        assert_eq!(stamp.millis, 0);
        // A loop time from before the anchor reads as the anchor.
        let earlier = now.checked_sub(Duration::from_secs(5)).unwrap_or(now);
        assert_eq!(clock.at(earlier).clf, b"07/Dec/2026:15:04:05 +0000");
    }

    /// The address fast path prints what `Display` prints.
    #[test]
    fn client_addresses_as_display_writes_them() {
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for i in 0..2000 {
            let ip: IpAddr = match i % 3 {
                0 => std::net::Ipv4Addr::from(next() as u32).into(),
                1 => std::net::Ipv6Addr::from(u128::from(next()) << 64 | u128::from(next())).into(),
                _ => std::net::Ipv4Addr::from([(next() % 3) as u8, 0, (next() % 256) as u8, 9])
                    .into(),
            };
            let mut out = Vec::new();
            super::ip(&mut out, SocketAddr::new(ip, 1));
            assert_eq!(String::from_utf8(out).unwrap(), ip.to_string());
        }
    }

    /// Escaping by runs agrees with escaping byte by byte, for both formats.
    #[test]
    fn escaping_by_runs_matches_byte_by_byte() {
        let mut seed = 7u64;
        for len in 0..300 {
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
                    // Mostly printable, some of everything else.
                    match (seed >> 33) % 8 {
                        0 => (seed >> 40) as u8,
                        _ => b' ' + ((seed >> 40) % 95) as u8,
                    }
                })
                .collect();
            let mut runs = Vec::new();
            escape_clf(&mut runs, &bytes);
            assert_eq!(
                String::from_utf8(runs).unwrap(),
                Escaped(&bytes).to_string()
            );
            let mut quoted = Vec::new();
            json_string(&mut quoted, &bytes);
            let back: String = serde_json::from_slice(&quoted).expect("valid JSON");
            let expected: String = match std::str::from_utf8(&bytes) {
                Ok(text) => text.to_string(),
                Err(_) => bytes.iter().map(|&b| char::from(b)).collect(),
            };
            assert_eq!(back, expected);
        }
    }

    #[test]
    fn escaped_display() {
        assert_eq!(Escaped(b"a\"\n\xc3").to_string(), "a\\x22\\x0a\\xc3");
    }
}
