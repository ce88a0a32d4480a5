//! From a parsed request to a backend connection: picking a backend not yet
//! tried, taking a pooled connection or opening one (TCP, then TLS), and
//! what a failed connect means for the request (another backend, or an
//! error answer).

use super::record::RetryReason;
use super::{Close, Ctx, MAX_TRIES, Phase, Session, Step, trace_head};
use crate::error::ProxyError;
use crate::http1::RequestRewrite;
use crate::http2::Ready;
use crate::upstream::{BackendId, HostHeader};

impl Session {
    /// Picks a backend not yet tried for this request and starts the
    /// exchange on a pooled connection, or connects a new one.
    pub(super) fn choose_backend(&mut self, cx: &mut Ctx<'_>) -> Step {
        loop {
            let tried = &self.tries[..self.ntries];
            let pick = match self.ntries < MAX_TRIES {
                true => {
                    let health = &*cx.health;
                    cx.balancer
                        .pick(self.pinned, |b| health.admits(b) && !tried.contains(&b))
                }
                false => None,
            };
            let Some(id) = pick else {
                // Known down everywhere: 503 (panic mode tried them anyway).
                let e = match cx.health.all_down() {
                    true => ProxyError::AllBackendsDown,
                    false => ProxyError::NoBackend,
                };
                return self.answer_error(cx, e);
            };
            self.tries[self.ntries] = id;
            self.ntries += 1;
            self.rec.chose(id);
            self.write_upstream_head(cx, id);
            cx.balancer.on_start(id);
            self.backend = Some(id);
            // Nothing h2 is touched while no backend spoke it.
            if !cx.h2.is_empty() {
                match self.h2_ready(cx, id) {
                    Some(Ready::Stream(conn)) => return self.start_h2(cx, conn),
                    Some(Ready::Queue) => {
                        self.phase = Phase::H2Queued;
                        self.phase_since = cx.now;
                        return Ok(true);
                    }
                    Some(Ready::Open) | None => {}
                }
            }
            if let Some(step) = self.try_open_upstream(cx, id) {
                return step;
            }
        }
    }

    /// Sends the request to `id` over a pooled HTTP/1.1 connection or a new
    /// one; if no connection can be made, the next backend is tried.
    pub(super) fn open_upstream(&mut self, cx: &mut Ctx<'_>, id: BackendId) -> Step {
        match self.try_open_upstream(cx, id) {
            Some(step) => step,
            None => self.choose_backend(cx),
        }
    }

    /// `None` when connecting to `id` failed at once (it is let go).
    pub(super) fn try_open_upstream(&mut self, cx: &mut Ctx<'_>, id: BackendId) -> Option<Step> {
        if cx.config.trace {
            trace_head("->", &cx.backends[id.0].label, &self.uphead);
        }
        if let Some(key) = cx.pool.checkout(id, self.key, cx.now, cx.registry) {
            self.upstream = Some(key);
            self.phase = Phase::Exchange;
            self.last_io = cx.now;
            return Some(Ok(true));
        }
        let backend = &cx.backends[id.0];
        let http1_only = self.req.upgrade.is_some();
        match cx
            .pool
            .connect(id, backend.addr, self.key, http1_only, cx.registry)
        {
            Ok(key) => {
                self.upstream = Some(key);
                self.phase = Phase::Connecting;
                self.phase_since = cx.now;
                self.rec.connecting(cx.now);
                self.h2_opening(cx, id);
                Some(Ok(true))
            }
            Err(e) => {
                crate::warn!("backend {}: connect failed: {e}", backend.label);
                cx.balancer.on_finish(id);
                self.backend = None;
                self.rec.retry_next(RetryReason::Connect);
                None
            }
        }
    }

    pub(super) fn write_upstream_head(&mut self, cx: &mut Ctx<'_>, id: BackendId) {
        let backend = &cx.backends[id.0];
        let override_host = match backend.host_header {
            HostHeader::Auto => backend.tls,
            HostHeader::Preserve => false,
            HostHeader::Backend => true,
        };
        let rw = RequestRewrite {
            client_ip: self.client_ip.as_bytes(),
            host: cx.host_values[id.0].as_bytes(),
            override_host,
        };
        cx.heads.lend(&mut self.uphead);
        self.uphead.clear();
        self.uphead_pos = 0;
        self.req
            .write_for_backend(self.inbuf.data(), &rw, &mut self.uphead);
    }

    pub(super) fn step_connecting(&mut self, cx: &mut Ctx<'_>) -> Step {
        let Some(up) = self.upstream.and_then(|k| cx.pool.get_mut(k)) else {
            return self.connect_failed(cx, "connection lost");
        };
        if !up.connected {
            if !up.writable {
                return Ok(false);
            }
            // mio: writability after a non-blocking connect means it
            // finished, one way or the other; the socket error says which.
            match up.connect_result() {
                Ok(true) => up.connected = true,
                Ok(false) => {
                    up.writable = false;
                    return Ok(false);
                }
                Err(_) => return self.connect_failed(cx, "connection refused"),
            }
        }
        match up.handshake() {
            Ok(true) => {
                self.rec.connected(cx.now);
                if cx.config.tls_trace
                    && let (Some(line), Some(id)) = (up.tls_summary(), self.backend)
                {
                    crate::info!("tls {}: {line}", cx.backends[id.0].label);
                }
                if up.chose_h2() {
                    return self.adopt_h2(cx);
                }
                self.h2_opened(cx);
                self.phase = Phase::Exchange;
                self.last_io = cx.now;
                Ok(true)
            }
            Ok(false) => Ok(false),
            Err(e) => {
                let host = self
                    .backend
                    .map_or("", |id| cx.backends[id.0].host.as_str());
                let why = e.describe(host);
                self.connect_failed(cx, &why)
            }
        }
    }

    /// The backend could not be connected: nothing was sent, so any other
    /// backend may take the request (SPEC §5).
    pub(super) fn connect_failed(&mut self, cx: &mut Ctx<'_>, why: &str) -> Step {
        if let Some(id) = self.backend {
            crate::warn!("backend {}: {why}", cx.backends[id.0].label);
            cx.backend_failed(id, why);
        }
        self.drop_upstream(cx);
        if self.hold_head == 0 {
            // A replay whose head is no longer buffered can only go to the
            // backend it was written for.
            return self.answer_error(cx, ProxyError::NoBackend);
        }
        self.rec.retry_next(RetryReason::Connect);
        self.choose_backend(cx)
    }

    /// The new connection's handshake chose h2: it joins the worker's
    /// shared h2 connections and this request becomes its first stream.
    pub(super) fn adopt_h2(&mut self, cx: &mut Ctx<'_>) -> Step {
        self.h2_opened(cx);
        let (Some(key), Some(id)) = (self.upstream.take(), self.backend) else {
            return Err(Close);
        };
        let Some((stream, tls)) = cx.pool.take_tls(key, cx.registry) else {
            return self.connect_failed(cx, "connection lost");
        };
        let label = &cx.backends[id.0].label;
        match cx.h2.adopt(id, label, stream, tls, cx.registry, cx.now) {
            Ok(conn) => self.start_h2(cx, conn),
            Err(e) => {
                crate::warn!(
                    "backend {}: HTTP/2 set-up failed: {e}",
                    cx.backends[id.0].label
                );
                self.answer_error(cx, ProxyError::BadGateway("HTTP/2 set-up failed"))
            }
        }
    }

    pub(super) fn drop_upstream(&mut self, cx: &mut Ctx<'_>) {
        self.h2_opened(cx);
        if let Some(x) = self.h2.take() {
            // Dropping the stream's handles resets it if it is unfinished.
            x.release(cx);
        }
        if let Some(key) = self.upstream.take() {
            cx.pool.close(key, cx.registry);
        }
        if let Some(id) = self.backend.take() {
            cx.balancer.on_finish(id);
        }
    }
}
