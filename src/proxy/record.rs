//! What one request was, filled in by the session as the request goes and
//! read at one place when it ends (`Session::end_request`): by the metrics,
//! the access log and the rejection line of the error log.
//!
//! Fixed fields and instants only; the text an access log line quotes
//! (request line, `Referer`, `User-Agent`) is copied, bounded, into one
//! buffer owned by the record and reused by every request of the
//! connection, and only when something reads it (the access log is on, or
//! a rejection is logged).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::upstream::BackendId;

/// Longest request line kept (nginx cuts at its buffer too); longer ones
/// end in `...`.
const LINE_MAX: usize = 1024;
/// Longest `Referer` / `User-Agent` value kept.
const FIELD_MAX: usize = 256;

pub(crate) use crate::metrics::RetryReason;

/// Retries a record remembers, each with the backend it left: more than
/// one session can make (tries, plus one re-send on a fresh connection).
const RETRIES_KEPT: usize = 4;

/// One request's account. Getters and `pub(crate)` fields are the API the
/// metrics and the access log read.
#[derive(Debug)]
pub(crate) struct Record {
    /// The client's address and port (the connection's).
    pub(crate) client: SocketAddr,
    /// When the request began: its head complete, or for a request
    /// rejected mid-head, its first byte.
    pub(crate) started: Instant,
    /// The status answered (ours or the backend's); 0 until known.
    pub(crate) status: u16,
    /// Bytes taken from the client for this request: head and body as they
    /// came on the wire (chunk framing included); for a tunnel, everything
    /// the client sent through it.
    pub(crate) received: u64,
    /// Bytes written to the client for this request, heads included.
    pub(crate) sent: u64,
    /// The last backend chosen; `None`: rejected before any was chosen.
    pub(crate) backend: Option<BackendId>,
    /// Time to open a new backend connection (TCP, and TLS when used);
    /// `None` when a pooled or shared connection carried the request.
    pub(crate) connect: Option<Duration>,
    /// From the start of the request to the backend's response head.
    pub(crate) upstream: Option<Duration>,
    /// Times the request was sent again, and why the last time.
    pub(crate) retries: u8,
    pub(crate) retry_reason: Option<RetryReason>,
    /// The first `RETRIES_KEPT` retries: the backend left, and why.
    retried: [(BackendId, RetryReason); RETRIES_KEPT],
    /// The reason in words when the proxy answered with an error.
    pub(crate) error: Option<&'static str>,
    connect_started: Option<Instant>,
    retry_pending: Option<RetryReason>,
    /// A `101` was relayed: the line is written when the tunnel ends.
    pub(crate) tunnel: bool,
    /// `line | referer | agent`, each bounded; ends in `text_ends`.
    text: Vec<u8>,
    text_ends: [u16; 3],
    /// `text` describes this request (filled once per request).
    captured: bool,
}

impl Record {
    pub(crate) fn new(client: SocketAddr, now: Instant) -> Record {
        Record {
            client,
            started: now,
            status: 0,
            received: 0,
            sent: 0,
            backend: None,
            connect: None,
            upstream: None,
            retries: 0,
            retry_reason: None,
            retried: [(BackendId(0), RetryReason::Connect); RETRIES_KEPT],
            error: None,
            connect_started: None,
            retry_pending: None,
            tunnel: false,
            text: Vec::new(),
            text_ends: [0; 3],
            captured: false,
        }
    }

    /// Ready for the next request of the connection.
    pub(crate) fn reset(&mut self) {
        let Record { client, text, .. } = self;
        let mut text = std::mem::take(text);
        text.clear();
        *self = Record {
            text,
            ..Record::new(*client, self.started)
        };
    }

    /// The request's head is complete: `head_len` bytes of it.
    pub(crate) fn begin(&mut self, now: Instant, head_len: usize) {
        self.started = now;
        self.received = head_len as u64;
    }

    /// Backend `id` takes the request; a retry announced by
    /// [`Record::retry_next`] is counted now that it happens.
    pub(crate) fn chose(&mut self, id: BackendId) {
        let left = self.backend.replace(id);
        if let Some(why) = self.retry_pending.take() {
            self.retry_from(left.unwrap_or(id), why);
        }
    }

    /// The next backend chosen, if any, is a retry for `why`.
    pub(crate) fn retry_next(&mut self, why: RetryReason) {
        self.retry_pending = Some(why);
    }

    pub(crate) fn connecting(&mut self, now: Instant) {
        self.connect_started = Some(now);
        self.connect = None;
    }

    pub(crate) fn connected(&mut self, now: Instant) {
        if let Some(at) = self.connect_started.take() {
            self.connect = Some(now - at);
        }
    }

    pub(crate) fn response_head(&mut self, now: Instant) {
        self.upstream = Some(now - self.started);
    }

    /// The request goes again to the backend it is with.
    pub(crate) fn retry(&mut self, why: RetryReason) {
        if let Some(id) = self.backend {
            self.retry_from(id, why);
        }
    }

    fn retry_from(&mut self, left: BackendId, why: RetryReason) {
        if let Some(slot) = self.retried.get_mut(usize::from(self.retries)) {
            *slot = (left, why);
        }
        self.retries = self.retries.saturating_add(1);
        self.retry_reason = Some(why);
    }

    /// Each retry (as far as kept): the backend it left, and why.
    pub(crate) fn retried(&self) -> &[(BackendId, RetryReason)] {
        &self.retried[..usize::from(self.retries).min(RETRIES_KEPT)]
    }

    /// Whether the proxy answered the request with an error before any
    /// backend was chosen (a `/metrics` scrape is not rejected).
    pub(crate) fn rejected(&self) -> bool {
        self.backend.is_none() && self.error.is_some()
    }

    pub(crate) fn total(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.started)
    }

    /// Copies the request line, `Referer` and `User-Agent` out of `head`
    /// (the start of the read buffer), once per request. For a head that
    /// did not parse, the first line is taken if one is there.
    pub(crate) fn capture(&mut self, head: &[u8]) {
        if self.captured {
            return;
        }
        self.captured = true;
        self.text.clear();
        let mut lines = head.split(|&b| b == b'\n').map(|l| match l {
            [rest @ .., b'\r'] => rest,
            l => l,
        });
        // RFC 9112 §2.2: empty lines before the request line are skipped.
        let line = lines.by_ref().find(|l| !l.is_empty()).unwrap_or_default();
        push_bounded(&mut self.text, line, LINE_MAX);
        self.text_ends[0] = self.text.len() as u16;
        let (mut referer, mut agent) = (None, None);
        for l in lines.take_while(|l| !l.is_empty()) {
            if let Some(v) = field_value(l, b"referer") {
                referer.get_or_insert(v);
            } else if let Some(v) = field_value(l, b"user-agent") {
                agent.get_or_insert(v);
            }
        }
        push_bounded(&mut self.text, referer.unwrap_or_default(), FIELD_MAX);
        self.text_ends[1] = self.text.len() as u16;
        push_bounded(&mut self.text, agent.unwrap_or_default(), FIELD_MAX);
        self.text_ends[2] = self.text.len() as u16;
    }

    /// The request line as received (bounded), empty if none came.
    pub(crate) fn request_line(&self) -> &[u8] {
        self.part(0)
    }

    pub(crate) fn referer(&self) -> &[u8] {
        self.part(1)
    }

    pub(crate) fn user_agent(&self) -> &[u8] {
        self.part(2)
    }

    fn part(&self, i: usize) -> &[u8] {
        if !self.captured {
            return &[];
        }
        let start = match i {
            0 => 0,
            _ => self.text_ends[i - 1],
        };
        &self.text[usize::from(start)..usize::from(self.text_ends[i])]
    }
}

fn push_bounded(out: &mut Vec<u8>, bytes: &[u8], max: usize) {
    match bytes.len() > max {
        true => {
            out.extend_from_slice(&bytes[..max - 3]);
            out.extend_from_slice(b"...");
        }
        false => out.extend_from_slice(bytes),
    }
}

/// The value of `line` if it is the field `name` (lowercase). A field
/// name ends at the colon (the parser refused whitespace before it), so
/// only lines of the right length are compared.
fn field_value<'a>(line: &'a [u8], name: &[u8]) -> Option<&'a [u8]> {
    let (field, value) = line.split_at_checked(name.len())?;
    let value = value.strip_prefix(b":")?;
    field.eq_ignore_ascii_case(name).then(|| value.trim_ascii())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> Record {
        Record::new("127.0.0.1:5000".parse().unwrap(), Instant::now())
    }

    #[test]
    fn each_retry_names_the_backend_it_left() {
        let mut r = record();
        r.chose(BackendId(3));
        r.retry(RetryReason::Reused);
        r.retry_next(RetryReason::Connect);
        r.chose(BackendId(5));
        r.retry_next(RetryReason::Failed);
        r.chose(BackendId(7));
        assert_eq!(
            r.retried(),
            [
                (BackendId(3), RetryReason::Reused),
                (BackendId(3), RetryReason::Connect),
                (BackendId(5), RetryReason::Failed),
            ]
        );
        assert_eq!(r.retry_reason, Some(RetryReason::Failed));
        r.reset();
        assert!(r.retried().is_empty());
    }

    #[test]
    fn capture_finds_line_referer_and_agent() {
        let mut r = record();
        r.capture(b"\r\nGET /x?a=1 HTTP/1.1\r\nHost: h\r\nuser-agent:  curl/8 \r\nReferer: http://r/\r\n\r\nbody: no\r\n");
        assert_eq!(r.request_line(), b"GET /x?a=1 HTTP/1.1");
        assert_eq!(r.referer(), b"http://r/");
        assert_eq!(r.user_agent(), b"curl/8");
        r.capture(b"POST / HTTP/1.1\r\n\r\n");
        assert_eq!(r.request_line(), b"GET /x?a=1 HTTP/1.1", "once per request");
        r.reset();
        assert_eq!(r.request_line(), b"");
        r.capture(b"POST / HTTP/1.1\r\n\r\n");
        assert_eq!(r.request_line(), b"POST / HTTP/1.1");
        assert_eq!(r.user_agent(), b"");
    }

    #[test]
    fn long_lines_are_bounded() {
        let mut r = record();
        let long = format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(5000));
        r.capture(long.as_bytes());
        assert_eq!(r.request_line().len(), LINE_MAX);
        assert!(r.request_line().ends_with(b"..."));
    }

    #[test]
    fn reset_keeps_the_client_and_clears_the_rest() {
        let mut r = record();
        r.status = 200;
        r.retry(RetryReason::Connect);
        r.chose(BackendId(1));
        r.reset();
        assert_eq!(r.client.port(), 5000);
        assert_eq!(
            (r.status, r.retries, r.backend, r.error),
            (0, 0, None, None)
        );
        assert!(!r.rejected());
    }
}
