//! One access log line, formatted into the writer's reused buffer: no
//! allocation, no `fmt` machinery on the way.
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

use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::proxy::record::Record;

const MONTHS: [&[u8; 3]; 12] = [
    b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov", b"Dec",
];
const HEX: &[u8; 16] = b"0123456789abcdef";

/// What a line needs besides the record.
pub(crate) struct Extra<'a> {
    /// Wall-clock time of the request's end.
    pub now: SystemTime,
    /// How long the request took.
    pub total: Duration,
    /// The backend's label, if one was chosen.
    pub backend: Option<&'a str>,
}

pub(crate) fn combined(out: &mut Vec<u8>, r: &Record, x: &Extra<'_>) {
    ip(out, r.client);
    out.extend_from_slice(b" - - [");
    clf_time(out, x.now);
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
    out.extend_from_slice(b" backend=");
    match x.backend {
        Some(label) => escape_clf(out, label.as_bytes()),
        None => out.push(b'-'),
    }
    out.extend_from_slice(b" connect=");
    seconds_or_dash(out, r.connect);
    out.extend_from_slice(b" upstream=");
    seconds_or_dash(out, r.upstream);
    out.extend_from_slice(b" total=");
    seconds(out, x.total);
    out.extend_from_slice(b" retries=");
    number(out, r.retries.into());
    out.extend_from_slice(b" retry=");
    out.extend_from_slice(r.retry_reason.map_or("-", |w| w.label()).as_bytes());
    out.extend_from_slice(b" received=");
    number(out, r.received);
    out.push(b'\n');
}

pub(crate) fn json(out: &mut Vec<u8>, r: &Record, x: &Extra<'_>) {
    out.extend_from_slice(b"{\"time\":\"");
    rfc3339(out, x.now);
    out.extend_from_slice(b"\",\"client\":\"");
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
    out.extend_from_slice(b",\"backend\":");
    match x.backend {
        Some(label) => json_string(out, label.as_bytes()),
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b",\"connect\":");
    json_seconds(out, r.connect);
    out.extend_from_slice(b",\"upstream\":");
    json_seconds(out, r.upstream);
    out.extend_from_slice(b",\"total\":");
    seconds(out, x.total);
    out.extend_from_slice(b",\"retries\":");
    number(out, r.retries.into());
    out.extend_from_slice(b",\"retry\":");
    match r.retry_reason {
        Some(w) => json_string(out, w.label().as_bytes()),
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b",\"rejected\":");
    out.extend_from_slice(if r.rejected() { b"true" } else { b"false" });
    out.extend_from_slice(b"}\n");
}

fn ip(out: &mut Vec<u8>, addr: SocketAddr) {
    use std::io::Write;
    let _ = write!(out, "{}", addr.ip());
}

/// Decimal, with at least `width` digits.
fn padded(out: &mut Vec<u8>, mut n: u64, width: usize) {
    let mut digits = [b'0'; 20];
    let mut at = digits.len();
    while n > 0 || digits.len() - at < width {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
    }
    out.extend_from_slice(&digits[at..]);
}

fn number(out: &mut Vec<u8>, n: u64) {
    padded(out, n, 1);
}

/// `0.004`: seconds with milliseconds, as nginx's `$request_time`.
fn seconds(out: &mut Vec<u8>, d: Duration) {
    number(out, d.as_secs());
    out.push(b'.');
    padded(out, d.subsec_millis().into(), 3);
}

fn seconds_or_dash(out: &mut Vec<u8>, d: Option<Duration>) {
    match d {
        Some(d) => seconds(out, d),
        None => out.push(b'-'),
    }
}

fn json_seconds(out: &mut Vec<u8>, d: Option<Duration>) {
    match d {
        Some(d) => seconds(out, d),
        None => out.extend_from_slice(b"null"),
    }
}

fn since_epoch(now: SystemTime) -> Duration {
    now.duration_since(UNIX_EPOCH).unwrap_or_default()
}

/// `07/Dec/2026:15:04:05 +0000` (UTC, as the error log).
fn clf_time(out: &mut Vec<u8>, now: SystemTime) {
    let secs = since_epoch(now).as_secs();
    let (year, month, day) = crate::log::civil_from_days(secs / 86_400);
    let of_day = secs % 86_400;
    padded(out, day, 2);
    out.push(b'/');
    out.extend_from_slice(MONTHS[(month as usize).clamp(1, 12) - 1]);
    out.push(b'/');
    padded(out, year, 4);
    out.push(b':');
    padded(out, of_day / 3600, 2);
    out.push(b':');
    padded(out, of_day / 60 % 60, 2);
    out.push(b':');
    padded(out, of_day % 60, 2);
    out.extend_from_slice(b" +0000");
}

/// `2026-12-07T15:04:05.123Z`.
fn rfc3339(out: &mut Vec<u8>, now: SystemTime) {
    let d = since_epoch(now);
    let secs = d.as_secs();
    let (year, month, day) = crate::log::civil_from_days(secs / 86_400);
    let of_day = secs % 86_400;
    padded(out, year, 4);
    out.push(b'-');
    padded(out, month, 2);
    out.push(b'-');
    padded(out, day, 2);
    out.push(b'T');
    padded(out, of_day / 3600, 2);
    out.push(b':');
    padded(out, of_day / 60 % 60, 2);
    out.push(b':');
    padded(out, of_day % 60, 2);
    out.push(b'.');
    padded(out, d.subsec_millis().into(), 3);
    out.push(b'Z');
}

fn quoted_or_dash(out: &mut Vec<u8>, bytes: &[u8]) {
    match bytes.is_empty() {
        true => out.push(b'-'),
        false => escape_clf(out, bytes),
    }
}

/// nginx's escaping: `"`, `\`, control bytes and bytes ≥ 0x7f as `\xHH`,
/// so a field can neither end its quotes nor start a new line.
pub(crate) fn escape_clf(out: &mut Vec<u8>, bytes: &[u8]) {
    for &b in bytes {
        match b {
            b'"' | b'\\' | ..0x20 | 0x7f.. => out.extend_from_slice(&[
                b'\\',
                b'x',
                HEX[usize::from(b >> 4)],
                HEX[usize::from(b & 0xf)],
            ]),
            _ => out.push(b),
        }
    }
}

/// A JSON string. Bytes that are not UTF-8 become `\u00HH` (their Latin-1
/// reading), so the line is valid JSON whatever the client sent.
fn json_string(out: &mut Vec<u8>, bytes: &[u8]) {
    let utf8 = std::str::from_utf8(bytes).is_ok();
    out.push(b'"');
    for &b in bytes {
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            ..0x20 | 0x7f => u_escape(out, b),
            0x80.. if !utf8 => u_escape(out, b),
            _ => out.push(b),
        }
    }
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

    fn extra() -> Extra<'static> {
        Extra {
            // 2026-12-07T15:04:05.250Z
            now: UNIX_EPOCH + Duration::from_millis(1_796_655_845_250),
            total: Duration::from_millis(1500),
            backend: Some("127.0.0.1:9001"),
        }
    }

    #[test]
    fn combined_line() {
        let mut out = Vec::new();
        combined(&mut out, &record(), &extra());
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "127.0.0.1 - - [07/Dec/2026:15:04:05 +0000] \"GET /a\\x22b\\x5cc\\xff HTTP/1.1\" 502 120 \"-\" \"curl/8\" port=5000 backend=127.0.0.1:9001 connect=- upstream=- total=1.500 retries=0 retry=- received=40\n"
        );
    }

    #[test]
    fn json_line_is_json() {
        let mut out = Vec::new();
        json(&mut out, &record(), &extra());
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
    fn escaped_display() {
        assert_eq!(Escaped(b"a\"\n\xc3").to_string(), "a\\x22\\x0a\\xc3");
    }
}
