//! Answers the proxy gives itself: the SPEC §5 error answers (one canned
//! response per `ProxyError`), `/metrics` scrapes, and the lingering close
//! that follows an error so the client reads the answer, not a reset.

use std::io::Write;
use std::net::Shutdown;

use super::{Close, Ctx, Phase, Read, Session, Step, write_edge};
use crate::error::{Blame, ProxyError};
use crate::http1::BodyKind;
use crate::http1::request::Method;

impl Session {
    /// Answers with an error and closes (SPEC §5 error table).
    pub(super) fn answer_error(&mut self, cx: &mut Ctx<'_>, e: ProxyError) -> Step {
        if let (Some(id), Blame::Backend) = (self.backend, e.blame()) {
            cx.backend_failed(id, e.reason());
        }
        let answer = e.answer(self.answering_head());
        self.end_with_error(cx, e, answer.len());
        self.drop_upstream(cx);
        if self.outhead_pos > 0 && self.outhead_pos < self.outhead.len() {
            // Half of an interim response is out: nothing more can be framed.
            return Err(Close);
        }
        cx.heads.lend(&mut self.outhead);
        self.outhead.clear();
        self.outhead.extend_from_slice(answer);
        self.outhead_pos = 0;
        self.phase = Phase::Answer { close: true };
        self.last_io = cx.now;
        Ok(true)
    }

    /// Whether the request being answered is a HEAD. Before its head
    /// parsed, the request line's first bytes tell.
    fn answering_head(&self) -> bool {
        match self.req.method {
            Some(method) => method == Method::Head,
            None => {
                let buf = self.inbuf.data();
                let start = buf.iter().position(|&b| b != b'\r' && b != b'\n');
                start.is_some_and(|at| buf[at..].starts_with(b"HEAD "))
            }
        }
    }

    /// `GET /metrics` is ours on the listen port unless a separate metrics
    /// listener is configured, and always ours on that listener.
    pub(super) fn is_scrape(&self, cx: &Ctx<'_>) -> bool {
        let own = self.metrics_only || cx.config.metrics_addr.is_none();
        own && self.req.target.get(self.inbuf.data()) == b"/metrics"
            && matches!(self.req.method(), Method::Get | Method::Head)
            && self.req.body() == BodyKind::None
    }

    /// Answers a scrape; scrapes are not counted as requests (they are in
    /// the access log).
    pub(super) fn answer_metrics(&mut self, cx: &mut Ctx<'_>) -> Step {
        let body = cx.metrics.render(cx.listed);
        let close = !self.req.keep_alive || cx.draining;
        cx.heads.lend(&mut self.outhead);
        self.outhead.clear();
        self.outhead_pos = 0;
        let _ = write!(
            self.outhead,
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\n{}\r\n",
            body.len(),
            if close { "Connection: close\r\n" } else { "" }
        );
        if !self.req.is_head() {
            self.outhead.extend_from_slice(body.as_bytes());
        }
        self.end_scrape(cx, self.outhead.len());
        self.release_held();
        self.phase = Phase::Answer { close };
        self.last_io = cx.now;
        Ok(true)
    }

    pub(super) fn step_answer(&mut self, cx: &mut Ctx<'_>, close: bool) -> Step {
        if self.outhead_pos < self.outhead.len() {
            return self.flush_outhead(cx);
        }
        if close || cx.draining {
            self.linger(cx);
        } else {
            self.enter_read_head(cx);
        }
        Ok(true)
    }

    fn flush_outhead(&mut self, cx: &mut Ctx<'_>) -> Step {
        let head = &self.outhead[self.outhead_pos..];
        match write_edge(&self.client, head, &[], &mut self.writable) {
            Ok(Some(n)) => {
                self.outhead_pos += n;
                self.last_io = cx.now;
                Ok(true)
            }
            Ok(None) => Ok(false),
            Err(_) => Err(Close),
        }
    }

    pub(super) fn linger(&mut self, cx: &mut Ctx<'_>) {
        let _ = self.client.shutdown(Shutdown::Write);
        self.phase = Phase::Linger;
        self.phase_since = cx.now;
    }

    pub(super) fn step_linger(&mut self, cx: &mut Ctx<'_>) -> Step {
        self.inbuf.clear();
        match self.read_client(cx)? {
            Read::Data => Ok(true),
            Read::Eof => Err(Close),
            Read::Blocked => Ok(false),
        }
    }
}
