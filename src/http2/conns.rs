//! A worker's HTTP/2 connections to backends that chose `h2` by ALPN:
//! shared by every session, one (or a few, when the backend's
//! `SETTINGS_MAX_CONCURRENT_STREAMS` is reached) per backend.
//!
//! Each connection's `h2::client::Connection` future is polled here, on
//! its socket's readiness and whenever h2 wakes it (a stream queued
//! frames). A connection that ended, or that a GOAWAY closed to new
//! streams, takes no new request; one idle past the idle timeout closes.

use std::io;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};
use std::{future::Future, pin::Pin, sync::Arc};

use bytes::Bytes;
use h2::client::{Connection, ResponseFuture, SendRequest};
use h2::{Ping, PingPong, SendStream, client};
use mio::net::TcpStream;
use mio::{Interest, Registry};
use rustls::ClientConnection;
use slab::Slab;

use super::io::TlsIo;
use super::wake::{Task, WakeQueue};
use crate::upstream::BackendId;
use crate::worker::token;

/// Per-stream receive window: what a backend may send ahead of a slow
/// client, so it bounds the memory one stream holds.
const STREAM_WINDOW: u32 = 256 * 1024;
/// Per-connection receive window: several streams' worth, so one slow
/// client (whose bytes are not released yet) does not stall the others.
const CONN_WINDOW: u32 = 8 * 1024 * 1024;
/// New connections opened to one backend while the others are full.
const MAX_CONNS_PER_BACKEND: usize = 4;

/// What a session that wants a stream to an h2 backend does now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ready {
    /// Open the stream on this connection.
    Stream(ConnId),
    /// Open a new connection (then say so with [`H2Conns::begin_open`]).
    Open,
    /// Every connection is at the backend's stream limit and no more may
    /// be opened: wait; the session's waker runs when a stream ends.
    Queue,
}

/// Names one connection across slab-slot reuse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnId {
    pub key: usize,
    pub serial: u64,
}

struct H2Conn {
    backend: BackendId,
    /// The backend's label, for log lines.
    label: String,
    serial: u64,
    send: SendRequest<Bytes>,
    driver: Connection<TlsIo, Bytes>,
    waker: Waker,
    /// Streams a session still holds.
    streams: usize,
    idle_since: Instant,
    /// Ended, or closed to new streams by a GOAWAY, an error or a PING
    /// left unanswered.
    closed: bool,
    /// Our PINGs: a backend that vanished without a FIN (a host gone, a
    /// NAT entry dropped) would otherwise take new streams that hang until
    /// the response timeout.
    pings: Option<PingPong>,
    /// When the PING in flight was sent.
    ping_sent: Option<Instant>,
    last_ping: Instant,
}

/// How often each connection is PINGed and how long its PONG may take:
/// the health-probe interval and timeout, the cadence at which the
/// operator wants a dead backend noticed.
#[derive(Debug, Clone, Copy)]
pub struct Liveness {
    pub every: Duration,
    pub timeout: Duration,
}

impl H2Conn {
    /// One step of the PING cycle, once a tick. A connection whose PONG is
    /// late takes no new stream (its own streams go on, under their
    /// timeouts) and closes once they are done.
    fn check_liveness(&mut self, liveness: Liveness, now: Instant) {
        let Some(pings) = self.pings.as_mut() else {
            return;
        };
        let mut cx = Context::from_waker(&self.waker);
        match self.ping_sent {
            Some(sent) => match pings.poll_pong(&mut cx) {
                Poll::Ready(Ok(_)) => self.ping_sent = None,
                Poll::Ready(Err(_)) => self.closed = true,
                Poll::Pending if now.duration_since(sent) >= liveness.timeout => {
                    crate::warn!(
                        "backend {}: its HTTP/2 connection did not answer a PING within \
                         {} ms; it takes no new request",
                        self.label,
                        liveness.timeout.as_millis()
                    );
                    self.closed = true;
                }
                Poll::Pending => {}
            },
            // h2 marks send_ping/poll_pong hidden, but they are its
            // PingPong's non-async surface (hyper's keep-alive uses them).
            None if now.duration_since(self.last_ping) >= liveness.every
                && pings.send_ping(Ping::opaque()).is_ok() =>
            {
                self.ping_sent = Some(now);
                self.last_ping = now;
                // Queued in h2: the connection's task writes it.
                self.waker.wake_by_ref();
            }
            None => {}
        }
    }
}

pub struct H2Conns {
    conns: Slab<H2Conn>,
    /// Per backend (by id): new connections being opened for it by
    /// sessions that found every h2 connection full.
    opening: Vec<usize>,
    /// Per backend (by id): sessions queued for a stream (see `Ready`).
    queued: Vec<Vec<Waker>>,
    serial: u64,
    queue: Arc<WakeQueue>,
    idle_timeout: Duration,
    liveness: Liveness,
}

/// The two halves of a new stream.
pub type Stream = (ResponseFuture, SendStream<Bytes>);

impl H2Conns {
    pub fn new(queue: Arc<WakeQueue>, idle_timeout: Duration, liveness: Liveness) -> H2Conns {
        H2Conns {
            liveness,
            conns: Slab::new(),
            opening: Vec::new(),
            queued: Vec::new(),
            serial: 0,
            queue,
            idle_timeout,
        }
    }

    /// Takes over a TLS connection whose handshake chose `h2`: its socket
    /// moves to an h2 token and the HTTP/2 preface goes out.
    pub fn adopt(
        &mut self,
        backend: BackendId,
        label: &str,
        mut stream: TcpStream,
        tls: Box<ClientConnection>,
        registry: &Registry,
        now: Instant,
    ) -> io::Result<ConnId> {
        self.serial += 1;
        let serial = self.serial;
        let entry = self.conns.vacant_entry();
        let key = entry.key();
        registry.reregister(
            &mut stream,
            token::h2(key),
            Interest::READABLE | Interest::WRITABLE,
        )?;
        let waker = WakeQueue::waker(&self.queue, Task::Conn { key, serial });
        let mut handshake = Box::pin(
            client::Builder::new()
                .initial_window_size(STREAM_WINDOW)
                .initial_connection_window_size(CONN_WINDOW)
                .enable_push(false)
                // Until the backend's SETTINGS say how many streams it
                // takes, this connection carries only its opener's.
                .initial_max_send_streams(1)
                .handshake::<_, Bytes>(TlsIo { stream, tls }),
        );
        // The handshake only queues the preface and SETTINGS into rustls'
        // buffer, so it is done on the first poll.
        let (send, mut driver) = match handshake.as_mut().poll(&mut Context::from_waker(&waker)) {
            Poll::Ready(Ok(halves)) => halves,
            Poll::Ready(Err(e)) => return Err(io::Error::other(e)),
            Poll::Pending => return Err(io::Error::other("HTTP/2 preface not accepted")),
        };
        let pings = driver.ping_pong();
        entry.insert(H2Conn {
            backend,
            label: label.to_string(),
            serial,
            send,
            driver,
            waker,
            streams: 0,
            idle_since: now,
            closed: false,
            pings,
            ping_sent: None,
            last_ping: now,
        });
        let id = ConnId { key, serial };
        self.drive(id);
        Ok(id)
    }

    /// Moves the connection's frames both ways. Called on its socket's
    /// readiness and when h2 woke it.
    pub fn drive(&mut self, id: ConnId) {
        let Some(conn) = self.conns.get_mut(id.key) else {
            return;
        };
        if conn.serial != id.serial {
            return;
        }
        let mut cx = Context::from_waker(&conn.waker);
        let backend = conn.backend;
        if let Poll::Ready(result) = Pin::new(&mut conn.driver).poll(&mut cx) {
            if let Err(e) = result {
                crate::debug!("backend {}: HTTP/2 connection ended: {e}", conn.label);
            }
            // Its streams were told by h2 (their wakers run); nothing more
            // can move on it. Queued sessions may open another.
            self.conns.remove(id.key);
            self.wake_queued(backend);
            return;
        }
        // The backend's SETTINGS may have raised its stream limit.
        let room = conn.streams < conn.send.current_max_send_streams();
        if room && self.queued.get(backend.0).is_some_and(|q| !q.is_empty()) {
            self.wake_queued(backend);
        }
    }

    /// Readiness on an h2 socket.
    pub fn on_event(&mut self, key: usize) {
        if let Some(serial) = self.conns.get(key).map(|c| c.serial) {
            self.drive(ConnId { key, serial });
        }
    }

    /// Whether `backend` has any h2 connection (it chose h2 before).
    #[inline]
    pub fn speaks_h2(&self, backend: BackendId) -> bool {
        // The plain path's whole cost: one length check.
        !self.conns.is_empty() && self.conns.iter().any(|(_, c)| c.backend == backend)
    }

    /// Where a new stream to `backend` goes: a connection with room under
    /// the backend's stream limit, else a new connection while fewer than
    /// `MAX_CONNS_PER_BACKEND` are open or opening, else the queue. `cx`
    /// is the session's: it is woken when a stream may be opened.
    pub fn ready(&mut self, backend: BackendId, cx: &mut Context<'_>) -> Ready {
        let mut open = 0;
        for (key, conn) in self.conns.iter_mut() {
            if conn.backend != backend || conn.closed {
                continue;
            }
            open += 1;
            if conn.streams < conn.send.current_max_send_streams() {
                match conn.send.poll_ready(cx) {
                    Poll::Ready(Ok(())) => {
                        return Ready::Stream(ConnId {
                            key,
                            serial: conn.serial,
                        });
                    }
                    Poll::Ready(Err(_)) => conn.closed = true,
                    Poll::Pending => {}
                }
            }
        }
        let opening = self.opening.get(backend.0).copied().unwrap_or(0);
        if open + opening < MAX_CONNS_PER_BACKEND {
            return Ready::Open;
        }
        if self.queued.len() <= backend.0 {
            self.queued.resize_with(backend.0 + 1, Vec::new);
        }
        let queue = &mut self.queued[backend.0];
        if !queue.iter().any(|w| w.will_wake(cx.waker())) {
            queue.push(cx.waker().clone());
        }
        Ready::Queue
    }

    /// Something that may free a stream to `backend` happened (a stream
    /// ended, a connection opened, closed or raised its limit): every
    /// queued session tries again, in the order they queued.
    fn wake_queued(&mut self, backend: BackendId) {
        if let Some(queue) = self.queued.get_mut(backend.0) {
            for waker in queue.drain(..) {
                waker.wake();
            }
        }
    }

    /// A session starts opening a connection to an h2 backend.
    pub fn begin_open(&mut self, backend: BackendId) {
        if self.opening.len() <= backend.0 {
            self.opening.resize(backend.0 + 1, 0);
        }
        self.opening[backend.0] += 1;
    }

    /// ... and is done with it, whatever came of it.
    pub fn end_open(&mut self, backend: BackendId) {
        if let Some(n) = self.opening.get_mut(backend.0) {
            *n = n.saturating_sub(1);
        }
        self.wake_queued(backend);
    }

    /// Opens a stream on a connection `ready` returned.
    pub fn send(
        &mut self,
        id: ConnId,
        request: http::Request<()>,
        end_of_stream: bool,
        now: Instant,
    ) -> Result<Stream, h2::Error> {
        let conn = match self.conns.get_mut(id.key) {
            Some(conn) if conn.serial == id.serial => conn,
            _ => return Err(h2::Error::from(h2::Reason::REFUSED_STREAM)),
        };
        // A clone per stream: h2 rejects a second request on one handle
        // while the first waits for the backend's stream limit, but takes
        // any number from separate handles, queued in order.
        match conn.send.clone().send_request(request, end_of_stream) {
            Ok(stream) => {
                conn.streams += 1;
                conn.idle_since = now;
                Ok(stream)
            }
            Err(e) => {
                conn.closed = true;
                Err(e)
            }
        }
    }

    /// A session is done with its stream on `id`. A closed connection
    /// (GOAWAY, or its backend retired) goes with its last stream.
    pub fn release(&mut self, id: ConnId, now: Instant) {
        if let Some(conn) = self.conns.get_mut(id.key)
            && conn.serial == id.serial
        {
            conn.streams = conn.streams.saturating_sub(1);
            conn.idle_since = now;
            let backend = conn.backend;
            if conn.closed && conn.streams == 0 {
                self.conns.remove(id.key);
            }
            self.wake_queued(backend);
        }
    }

    /// A new config generation: connections to a backend no longer
    /// `active` take no new stream; idle ones close now rather than at the
    /// idle timeout, busy ones with their last stream (`release`).
    pub fn retire(&mut self, active: &[bool]) {
        let retired = |b: BackendId| !active.get(b.0).copied().unwrap_or(false);
        for (_, conn) in self.conns.iter_mut() {
            if retired(conn.backend) {
                conn.closed = true;
            }
        }
        self.conns
            .retain(|_, c| !(retired(c.backend) && c.streams == 0));
    }

    /// Closes connections idle past the idle timeout, and closed ones whose
    /// streams are all done; PINGs the others (see `Liveness`).
    pub fn sweep(&mut self, now: Instant) {
        let liveness = self.liveness;
        for (_, conn) in self.conns.iter_mut() {
            if !conn.closed {
                conn.check_liveness(liveness, now);
            }
        }
        let idle_timeout = self.idle_timeout;
        self.conns.retain(|_, c| {
            c.streams > 0 || (!c.closed && now.duration_since(c.idle_since) < idle_timeout)
        });
    }

    /// The queue that h2 wakers of this worker feed.
    pub fn wake_queue(&self) -> &Arc<WakeQueue> {
        &self.queue
    }

    pub fn len(&self) -> usize {
        self.conns.len()
    }

    pub fn is_empty(&self) -> bool {
        self.conns.is_empty()
    }
}
