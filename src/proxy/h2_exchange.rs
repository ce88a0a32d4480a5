//! Relaying one request and its response over an HTTP/2 stream of a shared
//! backend connection (`http2::H2Conns`): the sibling of `exchange` for
//! backends that chose `h2`.
//!
//! The request body is framed from the client's buffer as for HTTP/1.1 and
//! sent as DATA only as the stream's send window allows; response DATA is
//! written to the client and its window released only once the client's
//! socket took the bytes, so a slow client slows its stream, not the
//! worker's memory. Futures are polled with the session's waker, which
//! queues the session for the worker's loop.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use h2::client::ResponseFuture;
use h2::{RecvStream, SendStream};

use super::{Close, Ctx, Downward, Phase, Session, Step, write_edge};
use crate::config::Strategy;
use crate::error::ProxyError;
use crate::http1::body::Out;
use crate::http1::response::push_hex16;
use crate::http1::{BodyKind, Version};
use crate::http2::translate::{self, ClientHead, Framing};
use crate::http2::{ConnId, Ready, Task, WakeQueue};
use crate::upstream::BackendId;

/// The state of one h2 stream, boxed in the session so that HTTP/1.1
/// sessions do not carry its size.
pub(super) struct H2Exchange {
    conn: ConnId,
    /// Until the response head arrives.
    response: Option<ResponseFuture>,
    /// Until the request body is sent.
    send: Option<SendStream<Bytes>>,
    /// The response body, once the head was written.
    recv: Option<RecvStream>,
    framing: Framing,
    status: u16,
    /// DATA received and not yet written to the client, from `chunk_pos`.
    chunk: Bytes,
    chunk_pos: usize,
    /// The last DATA and trailers were received.
    body_done: bool,
    /// Request trailer lines framed so far, in `inbuf` right after the
    /// body bytes not sent yet: they go as HEADERS once the DATA is out.
    trailers: usize,
    /// The stream took no more of the request body (see `h2_body_stopped`):
    /// the rest is not read.
    body_stopped: bool,
}

impl H2Exchange {
    /// Gives the stream back to its connection's count; dropping the
    /// handles resets the stream if it is unfinished.
    pub(super) fn release(self, cx: &mut Ctx<'_>) {
        cx.h2.release(self.conn, cx.now);
    }
}

impl Session {
    /// The session's waker for h2 futures, made on its first h2 request.
    fn h2_waker(&mut self, cx: &Ctx<'_>) -> Waker {
        let (key, generation) = (self.key, self.generation);
        self.h2_waker
            .get_or_insert_with(|| {
                WakeQueue::waker(cx.h2.wake_queue(), Task::Session { key, generation })
            })
            .clone()
    }

    /// Where a request to `id` goes if the backend speaks h2 (`None`: it
    /// does not, or this request needs HTTP/1.1).
    #[inline(never)]
    pub(super) fn h2_ready(&mut self, cx: &mut Ctx<'_>, id: BackendId) -> Option<Ready> {
        if self.req.upgrade.is_some() || !cx.h2.speaks_h2(id) {
            return None;
        }
        let waker = self.h2_waker(cx);
        Some(cx.h2.ready(id, &mut Context::from_waker(&waker)))
    }

    /// Queued for a stream to the chosen h2 backend (`Phase::H2Queued`):
    /// woken when one may have come free; bounded by the connect timeout.
    pub(super) fn step_h2_queued(&mut self, cx: &mut Ctx<'_>) -> Step {
        let Some(id) = self.backend else {
            return Err(Close);
        };
        match self.h2_ready(cx, id) {
            Some(Ready::Stream(conn)) => self.start_h2(cx, conn),
            Some(Ready::Queue) => Ok(false),
            Some(Ready::Open) | None => self.open_upstream(cx, id),
        }
    }

    /// A new connection to `id` is being opened: if the backend is known
    /// to speak h2, it is counted as one more h2 connection to come, so
    /// that sessions arriving meanwhile queue instead of opening more.
    pub(super) fn h2_opening(&mut self, cx: &mut Ctx<'_>, id: BackendId) {
        if self.req.upgrade.is_none() && cx.h2.speaks_h2(id) {
            cx.h2.begin_open(id);
            self.h2_opening = Some(id);
        }
    }

    /// The connection counted by `h2_opening` is open, or failed.
    pub(super) fn h2_opened(&mut self, cx: &mut Ctx<'_>) {
        if let Some(id) = self.h2_opening.take() {
            cx.h2.end_open(id);
        }
    }

    /// Opens the stream for the request whose head is in `uphead`.
    pub(super) fn start_h2(&mut self, cx: &mut Ctx<'_>, conn: ConnId) -> Step {
        let mut request = match translate::request(&self.uphead) {
            Ok(request) => request,
            Err(why) => return self.answer_error(cx, ProxyError::BadRequest(why)),
        };
        if self.hold_head > 0 && self.req.accepts_trailers(self.inbuf.data()) {
            request
                .headers_mut()
                .insert(http::header::TE, http::HeaderValue::from_static("trailers"));
        }
        if cx.config.trace
            && let Some(id) = self.backend
        {
            for line in translate::trace_request(&request) {
                crate::info!("trace -> {} (h2): {line}", cx.backends[id.0].label);
            }
        }
        let no_body = self.req_body.is_done();
        let (response, send) = match cx.h2.send(conn, request, no_body, cx.now) {
            Ok(stream) => stream,
            Err(e) => return self.h2_failed(cx, &e),
        };
        self.h2 = Some(Box::new(H2Exchange {
            conn,
            response: Some(response),
            send: (!no_body).then_some(send),
            recv: None,
            framing: Framing::None,
            status: 0,
            chunk: Bytes::new(),
            chunk_pos: 0,
            body_done: false,
            trailers: 0,
            body_stopped: false,
        }));
        self.uphead_pos = self.uphead.len();
        self.phase = Phase::H2Exchange;
        self.last_io = cx.now;
        if no_body {
            self.up_done = true;
            self.sent_at = cx.now;
        }
        Ok(true)
    }

    /// One turn over the parts of an h2 exchange. `Ok(true)` on progress.
    pub(super) fn step_h2(&mut self, cx: &mut Ctx<'_>) -> Step {
        let Some(mut x) = self.h2.take() else {
            return Err(Close);
        };
        let waker = self.h2_waker(cx);
        let mut tcx = Context::from_waker(&waker);
        let step = self.h2_turn(cx, &mut x, &mut tcx);
        // A step that left the phase (answer, retry, finish) dropped the
        // stream; otherwise it stays with the session.
        if self.phase == Phase::H2Exchange && self.h2.is_none() {
            self.h2 = Some(x);
        } else {
            cx.h2.release(x.conn, cx.now);
        }
        step
    }

    fn h2_turn(&mut self, cx: &mut Ctx<'_>, x: &mut H2Exchange, tcx: &mut Context<'_>) -> Step {
        let mut progress = false;
        if x.send.is_some() {
            progress |= self.h2_send_body(cx, x, tcx)?;
            if self.phase != Phase::H2Exchange {
                return Ok(true);
            }
        }
        if !self.req_body.is_done() && !x.body_stopped {
            progress |= self.pump_client(cx)?;
        }
        if x.response.is_some() {
            progress |= self.h2_response_head(cx, x, tcx)?;
            if self.phase != Phase::H2Exchange {
                return Ok(true);
            }
        }
        // The next DATA is taken before writing, so that its size line
        // leaves with the previous chunk's CRLF in one write.
        if x.recv.is_some() && x.chunk_pos == x.chunk.len() {
            progress |= self.h2_recv_body(x, tcx)?;
        }
        progress |= self.h2_send_down(cx, x)?;
        if x.body_done && x.chunk_pos == x.chunk.len() && self.outhead.is_empty() {
            return self.h2_finish(cx, x);
        }
        Ok(progress)
    }

    /// Frames what the client sent of the body and hands h2 as much as the
    /// stream's window takes.
    fn h2_send_body(
        &mut self,
        cx: &mut Ctx<'_>,
        x: &mut H2Exchange,
        tcx: &mut Context<'_>,
    ) -> Step {
        // Trailer lines framed earlier wait right after the unsent body.
        let body_at = self.hold_head + self.held + x.trailers;
        if self.body_pending == 0 && !self.req_body.is_done() && self.inbuf.len() > body_at {
            match self
                .req_body
                .reframe_to(&mut self.inbuf.data_mut()[body_at..], Out::DataThenTrailers)
            {
                Ok(r) => {
                    self.rec.received += r.used as u64;
                    self.inbuf.cut(body_at + r.out, r.used - r.out);
                    self.body_pending = r.out - r.trailers;
                    x.trailers += r.trailers;
                    // Dechunked in place: the buffer no longer holds the
                    // body as the client framed it, so it cannot be
                    // framed again for a re-send.
                    if self.req.body() == BodyKind::Chunked && r.used > 0 {
                        self.replayable = false;
                    }
                }
                Err(e) if !self.response_started => {
                    return self.answer_error(cx, ProxyError::BadRequest(e.reason()));
                }
                Err(_) => return Err(Close),
            }
        }
        let Some(send) = x.send.as_mut() else {
            return Ok(false);
        };
        let mut progress = false;
        while self.body_pending > 0 {
            send.reserve_capacity(self.body_pending);
            let room = match send.capacity() {
                0 => match send.poll_capacity(tcx) {
                    Poll::Ready(Some(Ok(n))) => n,
                    Poll::Ready(Some(Err(_)) | None) => return Ok(h2_body_stopped(x)),
                    Poll::Pending => return Ok(progress),
                },
                n => n,
            };
            let n = room.min(self.body_pending);
            let body_at = self.hold_head + self.held;
            let data = translate::data(&self.inbuf.data()[body_at..body_at + n]);
            let last = self.req_body.is_done() && n == self.body_pending && x.trailers == 0;
            if send.send_data(data, last).is_err() {
                return Ok(h2_body_stopped(x));
            }
            self.held += n;
            self.body_pending -= n;
            if self.response_started {
                self.release_held();
            }
            self.last_io = cx.now;
            progress = true;
            if last {
                x.send = None;
                self.up_done = true;
                self.sent_at = cx.now;
                return Ok(true);
            }
        }
        if self.req_body.is_done() {
            // The body's end came with no bytes left to carry it: the
            // trailers end the stream, or an empty DATA does.
            let sent = if x.trailers > 0 {
                let at = self.hold_head + self.held;
                let fields = match translate::trailers(&self.inbuf.data()[at..at + x.trailers]) {
                    Ok(fields) => fields,
                    Err(why) => return self.answer_error(cx, ProxyError::BadRequest(why)),
                };
                self.held += x.trailers;
                x.trailers = 0;
                send.send_trailers(fields)
            } else {
                send.send_data(Bytes::new(), true)
            };
            if sent.is_err() {
                return Ok(h2_body_stopped(x));
            }
            x.send = None;
            self.up_done = true;
            self.sent_at = cx.now;
            return Ok(true);
        }
        Ok(progress)
    }

    /// Polls for the response head: interim ones are forwarded, the final
    /// one is written for the client.
    fn h2_response_head(
        &mut self,
        cx: &mut Ctx<'_>,
        x: &mut H2Exchange,
        tcx: &mut Context<'_>,
    ) -> Step {
        let Some(response) = x.response.as_mut() else {
            return Ok(false);
        };
        let client_http10 = self.req.version() == Version::Http10;
        let mut progress = false;
        while let Poll::Ready(Some(Ok(interim))) = response.poll_informational(tcx) {
            if !client_http10 {
                cx.heads.lend(&mut self.outhead);
                translate::interim_head(&interim, &mut self.outhead);
            }
            progress = true;
        }
        let head = match Pin::new(response).poll(tcx) {
            Poll::Pending => return Ok(progress),
            Poll::Ready(Err(e)) => return self.h2_failed(cx, &e),
            Poll::Ready(Ok(head)) => head,
        };
        x.response = None;
        let Some(id) = self.backend else {
            return Err(Close);
        };
        if !self.response_started {
            self.response_started = true;
            self.release_held();
        }
        let backend = &cx.backends[id.0];
        self.close_after |= cx.draining;
        let set_sticky = match cx.config.strategy {
            Strategy::Sticky if self.req.sticky != Some(backend.sticky_id) => {
                Some(backend.sticky_id)
            }
            _ => None,
        };
        let how = ClientHead {
            head_request: self.req.is_head(),
            client_http10,
            close: self.close_after,
            set_sticky,
        };
        cx.heads.lend(&mut self.outhead);
        let head_at = self.outhead.len();
        x.framing = translate::response_head(&head, &how, &mut self.outhead);
        if x.framing == Framing::UntilClose {
            self.close_after = true;
        }
        if cx.config.trace {
            super::trace_head("<- (h2)", &backend.label, &self.outhead[head_at..]);
        }
        x.status = head.status().as_u16();
        self.rec.status = x.status;
        self.rec.response_head(cx.now);
        self.down = Downward::Body;
        match x.framing {
            Framing::None => x.body_done = true,
            _ => x.recv = Some(head.into_body()),
        }
        self.last_io = cx.now;
        Ok(true)
    }

    /// Takes the next DATA frame (or the end and trailers) of the response.
    fn h2_recv_body(&mut self, x: &mut H2Exchange, tcx: &mut Context<'_>) -> Step {
        let Some(recv) = x.recv.as_mut() else {
            return Ok(false);
        };
        match recv.poll_data(tcx) {
            Poll::Pending => Ok(false),
            Poll::Ready(Some(Ok(data))) => {
                if x.framing == Framing::Chunked && !data.is_empty() {
                    push_chunk_size(&mut self.outhead, data.len());
                    self.outhead.extend_from_slice(b"\r\n");
                }
                x.chunk = data;
                x.chunk_pos = 0;
                Ok(true)
            }
            // Cut mid-body: the client can only be cut too.
            Poll::Ready(Some(Err(_))) => Err(Close),
            Poll::Ready(None) => {
                let trailers = match recv.poll_trailers(tcx) {
                    Poll::Pending => return Ok(false),
                    Poll::Ready(Ok(trailers)) => trailers,
                    Poll::Ready(Err(_)) => return Err(Close),
                };
                if x.framing == Framing::Chunked {
                    translate::last_chunk(trailers.as_ref(), &mut self.outhead);
                }
                x.recv = None;
                x.body_done = true;
                Ok(true)
            }
        }
    }

    /// Writes our head bytes and the current DATA to the client; window is
    /// released for what the client's socket took.
    fn h2_send_down(&mut self, cx: &mut Ctx<'_>, x: &mut H2Exchange) -> Step {
        let head = &self.outhead[self.outhead_pos..];
        let body = &x.chunk[x.chunk_pos..];
        if head.is_empty() && body.is_empty() {
            return Ok(false);
        }
        match write_edge(&self.client, head, body, &mut self.writable) {
            Ok(Some(n)) => {
                let from_head = n.min(head.len());
                self.rec.sent += n as u64;
                self.turn_bytes += n;
                self.outhead_pos += from_head;
                let from_body = n - from_head;
                x.chunk_pos += from_body;
                if self.outhead_pos == self.outhead.len() {
                    self.outhead.clear();
                    self.outhead_pos = 0;
                }
                if x.chunk_pos == x.chunk.len() && !x.chunk.is_empty() {
                    let len = x.chunk.len();
                    x.chunk = Bytes::new();
                    x.chunk_pos = 0;
                    if x.framing == Framing::Chunked {
                        self.outhead.extend_from_slice(b"\r\n");
                    }
                    if let Some(recv) = x.recv.as_mut() {
                        let _ = recv.flow_control().release_capacity(len);
                    }
                }
                self.last_io = cx.now;
                Ok(true)
            }
            Ok(None) => Ok(false),
            Err(_) => Err(Close),
        }
    }

    /// The response is relayed: account for it and go on with the client.
    fn h2_finish(&mut self, cx: &mut Ctx<'_>, x: &mut H2Exchange) -> Step {
        cx.h2.release(x.conn, cx.now);
        // `step_h2` must not release it again.
        x.conn = ConnId {
            key: usize::MAX,
            serial: 0,
        };
        if let Some(id) = self.backend.take() {
            cx.balancer.on_finish(id);
            self.end_request(cx, Some(id), x.status);
            cx.backend_succeeded(id);
        }
        self.requests += 1;
        self.release_held();
        if !self.up_done || self.close_after || cx.draining {
            // The backend answered before the body ended: where the next
            // request would start is unknown.
            self.linger(cx);
            return Ok(true);
        }
        self.enter_read_head(cx);
        Ok(true)
    }

    fn h2_failed(&mut self, cx: &mut Ctx<'_>, e: &h2::Error) -> Step {
        let refused =
            e.reason() == Some(h2::Reason::REFUSED_STREAM) || (e.is_go_away() && e.is_remote());
        if refused
            && self.replayable
            && self.hold_head > 0
            && !self.retried
            && !self.response_started
        {
            // Not processed by the backend (RFC 9113 §8.7): any request
            // may go again, on another connection.
            self.retried = true;
            if let Some(id) = self.backend {
                crate::debug!(
                    "backend {}: HTTP/2 stream refused; re-sending",
                    cx.backends[id.0].label
                );
            }
            self.rewind_request(cx);
            self.rec.retry_next(super::record::RetryReason::Refused);
            self.ntries = self.ntries.saturating_sub(1);
            return self.choose_backend(cx);
        }
        let why = match e.reason() {
            _ if e.is_io() => "HTTP/2 connection to the backend failed",
            Some(_) if e.is_go_away() => "backend closed the HTTP/2 connection",
            Some(_) => "backend reset the HTTP/2 stream",
            None => "HTTP/2 exchange with the backend failed",
        };
        self.h2_failed_why(cx, why)
    }

    fn h2_failed_why(&mut self, cx: &mut Ctx<'_>, why: &'static str) -> Step {
        if self.response_started {
            return Err(Close);
        }
        if let Some(id) = self.backend {
            crate::warn!("backend {}: {why}", cx.backends[id.0].label);
        }
        self.answer_error(cx, ProxyError::BadGateway(why))
    }
}

/// The stream takes no more of the request body: the backend reset or
/// refused it, or answered early and then reset it with NO_ERROR (RFC 9113
/// §8.1). Not a failure in itself: the response, or its error (a refusal
/// is re-sent), decides what the client gets; the rest of the body is not
/// read, so the client connection ends after the response (`up_done`
/// stays false), as when an HTTP/1.1 backend answers early.
fn h2_body_stopped(x: &mut H2Exchange) -> bool {
    x.send = None;
    x.body_stopped = true;
    true
}

/// A chunk-size line's number: lowercase hex without leading zeros.
fn push_chunk_size(out: &mut Vec<u8>, n: usize) {
    let at = out.len();
    push_hex16(out, n as u64);
    let zeros = out[at..].iter().take_while(|&&d| d == b'0').count().min(15);
    out.drain(at..at + zeros);
}

impl std::fmt::Debug for H2Exchange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("H2Exchange")
            .field("status", &self.status)
            .finish()
    }
}
