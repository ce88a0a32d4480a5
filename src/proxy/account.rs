//! The end of a request: the one place where its [`Record`] is read — by
//! the metrics, the access log and, for a request the proxy answered with
//! an error, the error log's rejection line.
//!
//! [`Record`]: super::record::Record

use super::{Ctx, Phase, Session};
use crate::access_log::Escaped;
use crate::error::{Blame, ProxyError};
use crate::upstream::BackendId;

/// Status an access log line shows for a request whose client went away
/// (or was cut by a stop) before the answer was complete: nginx's 499.
const CUT: u16 = 499;

impl Session {
    /// The request ended with `status`. `backend` is whom the metrics
    /// count it for. A `101`'s line waits for the tunnel's end.
    pub(super) fn end_request(
        &mut self,
        cx: &mut Ctx<'_>,
        backend: Option<BackendId>,
        status: u16,
    ) {
        cx.metrics.request(backend, status, cx.now - self.started);
        self.rec.status = status;
        if status == 101 {
            self.rec.tunnel = true;
            return;
        }
        self.write_record(cx);
    }

    /// The proxy answers the request with `e`: the answer's bytes are
    /// counted as sent, and the rejection is logged at info (SPEC §6).
    pub(super) fn end_with_error(&mut self, cx: &mut Ctx<'_>, e: ProxyError, answer_len: usize) {
        if self.phase == Phase::ReadHead {
            // No head parsed: what came of it is all that was received.
            self.rec.received = self.inbuf.len() as u64;
        }
        self.rec.sent += answer_len as u64;
        self.rec.error = Some(e.reason());
        if ::log::log_enabled!(::log::Level::Info) {
            self.capture_line();
            crate::info!(
                "rejected {} for {} ({}: {}){}{}{}",
                e.status(),
                self.rec.client,
                blame_word(e.blame()),
                e.reason(),
                if self.rec.request_line().is_empty() {
                    ""
                } else {
                    ": \""
                },
                Escaped(self.rec.request_line()),
                if self.rec.request_line().is_empty() {
                    ""
                } else {
                    "\""
                },
            );
        }
        self.end_request(cx, self.backend, e.status());
    }

    /// A scrape of `/metrics`: in the access log, not in the metrics.
    pub(super) fn end_scrape(&mut self, cx: &mut Ctx<'_>, answer_len: usize) {
        self.rec.status = 200;
        self.rec.sent += answer_len as u64;
        self.write_record(cx);
    }

    /// The session closes: a tunnel's line is written now, and so is the
    /// line of a request cut before its end (`499` unless the backend's
    /// status was already relayed).
    pub(super) fn end_cut(&mut self, cx: &mut Ctx<'_>) {
        let in_flight = matches!(
            self.phase,
            Phase::Connecting | Phase::Exchange | Phase::H2Exchange
        );
        if self.rec.tunnel || in_flight {
            if self.rec.status == 0 || (in_flight && !self.response_started) {
                self.rec.status = CUT;
            }
            self.write_record(cx);
        }
    }

    /// The request line for the logs, if the buffer still starts with the
    /// request: before its head parsed, or while the head is kept.
    fn capture_line(&mut self) {
        let head_parsed = self.phase != Phase::ReadHead;
        if !head_parsed || self.hold_head > 0 {
            self.rec.capture(self.inbuf.data());
        }
    }

    fn write_record(&mut self, cx: &mut Ctx<'_>) {
        self.count_record(cx);
        if cx.access.is_some() {
            self.capture_line();
            let label = self.rec.backend.map(|id| cx.backends[id.0].label.as_str());
            let total = self.rec.total(cx.now);
            if let Some(log) = cx.access.as_deref_mut() {
                log.push(&self.rec, cx.now, total, label);
            }
        }
        self.rec.reset();
    }
}

impl Session {
    /// The per-backend families fed by the record: bytes both ways,
    /// upstream timings, retries.
    fn count_record(&self, cx: &Ctx<'_>) {
        let r = &self.rec;
        for &(left, why) in r.retried() {
            cx.metrics.retry(left, why);
        }
        let Some(id) = r.backend else {
            return;
        };
        cx.metrics.bytes(id, r.received, r.sent);
        if let Some(upstream) = r.upstream {
            cx.metrics.upstream_timings(id, r.connect, upstream);
        }
    }
}

fn blame_word(blame: Blame) -> &'static str {
    match blame {
        Blame::Client => "client",
        Blame::Backend => "backend",
        Blame::Proxy => "proxy",
    }
}
