//! Relaying one request and its response between the client and a backend
//! connection: body streaming with backpressure, response-head handling,
//! the one safe replay on a reused connection, and the end of the exchange.

use std::time::Instant;

use super::record::RetryReason;
use super::{Close, Ctx, Downward, Phase, Read, Session, Step, trace_head, write_edge};
use crate::config::Strategy;
use crate::error::ProxyError;
use crate::http1::{BodyFramer, BodyKind, ResponseRewrite, Version};

/// Body bytes up to this many are copied behind the response head and sent
/// with it in one `send` instead of a `writev` of head and body.
pub(super) const COALESCE_MAX: usize = 1024;

impl Session {
    /// One turn over the four parts of an exchange, each run only when it
    /// has something to do (the guards are here, so an idle part costs no
    /// call). `Ok(true)` if any part made progress.
    pub(super) fn step_exchange(&mut self, cx: &mut Ctx<'_>) -> Step {
        let mut progress = false;
        if !self.up_done {
            progress |= self.send_up(cx)?;
            if self.phase != Phase::Exchange {
                return Ok(true);
            }
        }
        // Reading the body and relaying the response never leave the phase.
        if !self.req_body.is_done() {
            progress |= self.pump_client(cx)?;
        }
        if !(self.down == Downward::Body && self.resp_body.is_done()) {
            progress |= self.recv_down(cx)?;
            if self.phase != Phase::Exchange {
                return Ok(true);
            }
        }
        progress |= self.send_down(cx)?;
        let flushed = self.outhead_pos == self.outhead.len() && self.down_pending == 0;
        if self.down == Downward::Body && self.resp_body.is_done() && flushed {
            return self.finish_exchange(cx);
        }
        Ok(progress)
    }

    /// Sends the rewritten head and whatever body bytes are framed.
    fn send_up(&mut self, cx: &mut Ctx<'_>) -> Step {
        if self.up_done {
            return Ok(false);
        }
        let body_at = self.hold_head + self.held;
        if self.body_pending == 0 && !self.req_body.is_done() && self.inbuf.len() > body_at {
            match self
                .req_body
                .reframe(&mut self.inbuf.data_mut()[body_at..], false)
            {
                Ok(r) => {
                    self.rec.received += r.used as u64;
                    self.inbuf.cut(body_at + r.out, r.used - r.out);
                    self.body_pending = r.out;
                }
                Err(e) if !self.response_started => {
                    return self.answer_error(cx, ProxyError::BadRequest(e.reason()));
                }
                Err(_) => return Err(Close),
            }
        }
        let Some(up) = self.upstream.and_then(|k| cx.pool.get_mut(k)) else {
            return Err(Close);
        };
        let head = &self.uphead[self.uphead_pos..];
        let body = &self.inbuf.data()[body_at..body_at + self.body_pending];
        if head.is_empty() && body.is_empty() {
            return Ok(self.note_request_sent(cx.now));
        }
        match up.write(head, body) {
            Ok(Some(n)) => {
                let from_head = n.min(head.len());
                self.turn_bytes += n;
                self.uphead_pos += from_head;
                self.held += n - from_head;
                self.body_pending -= n - from_head;
                if self.response_started {
                    // No replay is possible any more: keep nothing back.
                    self.release_held();
                }
                self.last_io = cx.now;
                // The common whole request in one write is done now rather
                // than on the next turn of the exchange loop.
                self.note_request_sent(cx.now);
                Ok(true)
            }
            Ok(None) => Ok(false),
            Err(_) => self.upstream_failed(cx, "write to backend failed"),
        }
    }

    /// Marks the request as wholly sent if it is: head written, body framed
    /// to its end and written. `true` if it was marked.
    fn note_request_sent(&mut self, now: Instant) -> bool {
        let sent = self.uphead_pos == self.uphead.len()
            && self.body_pending == 0
            && self.req_body.is_done();
        if sent {
            self.up_done = true;
            self.sent_at = now;
        }
        sent
    }

    /// Reads more of the request body. The next pipelined request is left in
    /// the socket until this exchange is over.
    pub(super) fn pump_client(&mut self, cx: &mut Ctx<'_>) -> Step {
        if self.req_body.is_done() {
            return Ok(false);
        }
        if self.inbuf.is_full() {
            if self.hold_head + self.held == 0 {
                return Ok(false);
            }
            // Room is worth more than the chance of a replay.
            self.replayable &= self.held == 0;
            self.release_held();
        }
        match self.read_client(cx)? {
            Read::Data => Ok(true),
            // The client gave up in the middle of its body.
            Read::Eof => Err(Close),
            Read::Blocked => Ok(false),
        }
    }

    /// Drops the buffered head and the sent body bytes kept for a replay.
    pub(super) fn release_held(&mut self) {
        self.inbuf.consume(self.hold_head + self.held);
        self.hold_head = 0;
        self.held = 0;
    }

    /// Parses or frames what the backend sent, then reads more and deals
    /// with that at once (the next part, `send_down`, can then relay it in
    /// the same turn). Only while the response is not complete.
    fn recv_down(&mut self, cx: &mut Ctx<'_>) -> Step {
        let Some(key) = self.upstream else {
            return Err(Close);
        };
        if self.take_down(cx, key)? || self.phase != Phase::Exchange {
            return Ok(true);
        }
        match self.read_upstream(cx, key) {
            Ok(Read::Data) => {
                self.dirty = true;
                self.take_down(cx, key)?;
                Ok(true)
            }
            Ok(Read::Eof) => self.upstream_closed(cx),
            Ok(Read::Blocked) => Ok(false),
            Err(why) => self.upstream_failed(cx, why),
        }
    }

    /// Parses a newly read response head, or frames the next run of body.
    fn take_down(&mut self, cx: &mut Ctx<'_>, key: usize) -> Step {
        match self.down {
            Downward::AwaitHead if self.dirty => self.parse_down_head(cx, key),
            Downward::Body if self.down_pending == 0 && !self.resp_body.is_done() => {
                self.frame_down(cx, key)
            }
            _ => Ok(false),
        }
    }

    /// Parses the response head once it is complete.
    fn parse_down_head(&mut self, cx: &mut Ctx<'_>, key: usize) -> Step {
        self.dirty = false;
        let Some(up) = cx.pool.get(key) else {
            return Err(Close);
        };
        if up.buf.is_empty() {
            return Ok(false);
        }
        let upgrade = self.req.upgrade.is_some();
        match self.resp.parse(up.buf.data(), self.req.is_head(), upgrade) {
            Err(e) => self.answer_error(cx, ProxyError::BadGateway(e.reason())),
            Ok(false) if up.buf.is_full() => {
                self.answer_error(cx, ProxyError::BadGateway("response head too large"))
            }
            Ok(false) => Ok(false),
            Ok(true) => {
                self.on_response_head(cx, key)?;
                // Frame the body bytes that came with the head now, so head
                // and body leave in one write.
                if self.phase == Phase::Exchange && self.down == Downward::Body {
                    self.frame_down(cx, key)?;
                }
                Ok(true)
            }
        }
    }

    /// Finds the next run of response body bytes to relay. `Ok(true)` if
    /// anything changed.
    fn frame_down(&mut self, cx: &mut Ctx<'_>, key: usize) -> Step {
        let Some(up) = cx.pool.get_mut(key) else {
            return Err(Close);
        };
        if up.buf.is_empty() {
            if self.upstream_eof {
                // Everything before the close is relayed: that was the body.
                self.resp_body = BodyFramer::Done;
                return Ok(true);
            }
            return Ok(false);
        }
        match self.resp_body.reframe(up.buf.data_mut(), self.dechunk) {
            Ok(r) => {
                up.buf.cut(r.out, r.used - r.out);
                self.down_pending = r.out;
                Ok(r.used > 0 || r.done)
            }
            Err(e) => {
                let label = &cx.backends[self.backend.map_or(0, |id| id.0)].label;
                crate::warn!("backend {label}: {} in a response body", e.reason());
                self.bad_response_body(cx, e.reason())
            }
        }
    }

    /// The backend broke its response body's framing: 502 while no byte of
    /// the response reached the client (its head is still ours to replace),
    /// else the client connection can only be cut.
    fn bad_response_body(&mut self, cx: &mut Ctx<'_>, why: &'static str) -> Step {
        let head_unsent = self.outhead_pos == 0 && !self.outhead.is_empty();
        if head_unsent && self.down_pending == 0 {
            self.outhead.clear();
            return self.answer_error(cx, ProxyError::BadGateway(why));
        }
        Err(Close)
    }

    /// One read from the backend into its buffer, if it has room.
    #[inline]
    pub(super) fn read_upstream(
        &mut self,
        cx: &mut Ctx<'_>,
        key: usize,
    ) -> Result<Read, &'static str> {
        if self.upstream_eof {
            return Ok(Read::Blocked);
        }
        let Some(up) = cx.pool.get_for_read(key) else {
            return Err("connection lost");
        };
        if !up.readable {
            return Ok(Read::Blocked);
        }
        let read = up.read().map_err(|e| crate::tls::read_failure(&e))?;
        if matches!(read, Read::Data) {
            self.last_io = cx.now;
        }
        Ok(read)
    }

    fn on_response_head(&mut self, cx: &mut Ctx<'_>, key: usize) -> Step {
        let Some(id) = self.backend else {
            return Err(Close);
        };
        let Some(up) = cx.pool.get_mut(key) else {
            return Err(Close);
        };
        // The backend answered: no replay can be needed any more.
        if !self.response_started {
            self.response_started = true;
            self.release_held();
        }
        let client_http10 = self.req.version() == Version::Http10;
        cx.heads.lend(&mut self.outhead);
        let head_at = self.outhead.len();
        if self.resp.is_interim() {
            // 1xx (100 Continue, 103 Early Hints) go to HTTP/1.1 clients as
            // they are; the final response follows on the same connection.
            if !client_http10 {
                let rw = ResponseRewrite {
                    close: false,
                    client_http10,
                    set_sticky: None,
                };
                self.resp
                    .write_for_client(up.buf.data(), &rw, &mut self.outhead);
            }
            up.buf.consume(self.resp.head_len);
            self.dirty = true;
            return Ok(true);
        }
        self.rec.status = self.resp.status;
        self.rec.response_head(cx.now);
        let backend = &cx.backends[id.0];
        self.close_after |= cx.draining || !self.resp.client_can_continue(client_http10);
        let set_sticky = match cx.config.strategy {
            Strategy::Sticky if self.req.sticky != Some(backend.sticky_id) => {
                Some(backend.sticky_id)
            }
            _ => None,
        };
        let rw = ResponseRewrite {
            close: self.close_after,
            client_http10,
            set_sticky,
        };
        self.resp
            .write_for_client(up.buf.data(), &rw, &mut self.outhead);
        up.buf.consume(self.resp.head_len);
        if cx.config.trace {
            trace_head("<-", &backend.label, &self.outhead[head_at..]);
        }
        if self.resp.status == 101 {
            self.end_request(cx, Some(id), 101);
            cx.backend_succeeded(id);
            self.phase = Phase::Tunnel;
            return Ok(true);
        }
        self.resp_body = BodyFramer::new(self.resp.body());
        self.dechunk = client_http10 && self.resp.body() == BodyKind::Chunked;
        self.down = Downward::Body;
        Ok(true)
    }

    /// Writes the response head and framed body bytes to the client.
    #[inline]
    pub(super) fn send_down(&mut self, cx: &mut Ctx<'_>) -> Step {
        if self.outhead_pos == self.outhead.len() && self.down_pending == 0 {
            return Ok(false);
        }
        self.send_down_now(cx)
    }

    fn send_down_now(&mut self, cx: &mut Ctx<'_>) -> Step {
        let Some(up) = self.upstream.and_then(|k| cx.pool.get_mut(k)) else {
            return Err(Close);
        };
        if self.outhead_pos < self.outhead.len()
            && self.down_pending > 0
            && self.down_pending <= COALESCE_MAX
        {
            // A small body rides behind its head: one `send` costs the
            // kernel less than a two-part `writev` (measured ~0.1 µs per
            // request), and copying this little is cheaper still.
            let n = self.down_pending;
            self.outhead.extend_from_slice(&up.buf.data()[..n]);
            up.buf.consume(n);
            self.down_pending = 0;
        }
        let head = &self.outhead[self.outhead_pos..];
        let body = &up.buf.data()[..self.down_pending];
        match write_edge(&self.client, head, body, &mut self.writable) {
            Ok(Some(n)) => {
                let from_head = n.min(head.len());
                self.rec.sent += n as u64;
                self.turn_bytes += n;
                self.outhead_pos += from_head;
                up.buf.consume(n - from_head);
                self.down_pending -= n - from_head;
                if self.outhead_pos == self.outhead.len() {
                    self.outhead.clear();
                    self.outhead_pos = 0;
                }
                self.last_io = cx.now;
                Ok(true)
            }
            Ok(None) => Ok(false),
            Err(_) => Err(Close),
        }
    }

    /// The response is fully relayed: the backend connection goes back to
    /// the pool if both sides kept HTTP framing intact.
    fn finish_exchange(&mut self, cx: &mut Ctx<'_>) -> Step {
        let reusable = self.resp.keep_alive && self.up_done && self.resp.keep_alive_max != Some(0);
        if let Some(key) = self.upstream.take() {
            cx.pool.release(
                key,
                reusable,
                self.resp.keep_alive_timeout,
                cx.now,
                cx.registry,
            );
        }
        if let Some(id) = self.backend.take() {
            cx.balancer.on_finish(id);
            self.end_request(cx, Some(id), self.resp.status);
            cx.backend_succeeded(id);
        }
        self.requests += 1;
        // Drop what is left of this request in the buffer: its head and any
        // body bytes sent after the response started (those were never
        // released, and would otherwise prefix the next request).
        self.release_held();
        if !self.up_done {
            // The backend answered before the request body ended; where the
            // next request would start is unknown.
            self.linger(cx);
            return Ok(true);
        }
        if self.close_after || cx.draining {
            self.linger(cx);
            return Ok(true);
        }
        self.enter_read_head(cx);
        Ok(true)
    }

    /// End of stream from the backend.
    fn upstream_closed(&mut self, cx: &mut Ctx<'_>) -> Step {
        match self.down {
            Downward::Body if self.resp_body == BodyFramer::UntilClose => {
                // The close ends a close-delimited body, once what is
                // buffered is relayed.
                self.upstream_eof = true;
                self.close_after = true;
                Ok(true)
            }
            _ => self.upstream_failed(cx, "backend closed the connection"),
        }
    }

    /// The backend connection broke before a response head. A request
    /// nothing of which was dropped is re-sent:
    /// - once on a fresh connection to the same backend when the broken one
    ///   was reused (the backend most likely closed it just as we sent: not
    ///   its fault, not counted against it);
    /// - otherwise to another backend, if the request is idempotent or
    ///   carries an `Idempotency-Key` (the failure counts against this one).
    ///
    /// Anything else is answered 502. After response bytes went out, the
    /// client connection can only be cut.
    pub(super) fn upstream_failed(&mut self, cx: &mut Ctx<'_>, why: &'static str) -> Step {
        if self.response_started {
            return Err(Close);
        }
        let reused = self
            .upstream
            .and_then(|k| cx.pool.get(k))
            .is_some_and(|u| u.is_reused());
        let Some(id) = self.backend else {
            return Err(Close);
        };
        let label = &cx.backends[id.0].label;
        if reused && self.replayable && !self.retried {
            self.retried = true;
            self.rec.retry(RetryReason::Reused);
            crate::debug!("backend {label}: {why} on a reused connection; re-sending");
            self.rewind_request(cx);
            let http1_only = self.req.upgrade.is_some();
            return match cx.pool.connect(
                id,
                cx.backends[id.0].addr,
                self.key,
                http1_only,
                cx.registry,
            ) {
                Ok(key) => {
                    cx.balancer.on_start(id);
                    self.backend = Some(id);
                    self.upstream = Some(key);
                    self.phase = Phase::Connecting;
                    self.phase_since = cx.now;
                    self.rec.connecting(cx.now);
                    Ok(true)
                }
                Err(_) => self.answer_error(cx, ProxyError::BadGateway(why)),
            };
        }
        let retry_safe = self.req.method().is_idempotent() || self.req.idempotency_key;
        // Another backend needs the head rewritten, so it must be buffered.
        if retry_safe && self.replayable && self.hold_head > 0 {
            crate::warn!("backend {label}: {why}; trying another backend");
            cx.backend_failed(id, why);
            self.rewind_request(cx);
            self.rec.retry_next(RetryReason::Failed);
            return self.choose_backend(cx);
        }
        crate::warn!("backend {label}: {why}");
        self.answer_error(cx, ProxyError::BadGateway(why))
    }

    /// Drops the broken connection and puts the request back to "nothing
    /// sent": the head and the kept body bytes are still buffered.
    pub(super) fn rewind_request(&mut self, cx: &mut Ctx<'_>) {
        self.drop_upstream(cx);
        self.uphead_pos = 0;
        self.held = 0;
        self.body_pending = 0;
        self.req_body = BodyFramer::new(self.req.body());
        self.up_done = false;
        self.dirty = false;
    }
}
