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
use h2::{SendStream, client};
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

/// Names one connection across slab-slot reuse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnId {
    pub key: usize,
    pub serial: u64,
}

struct H2Conn {
    backend: BackendId,
    serial: u64,
    send: SendRequest<Bytes>,
    driver: Connection<TlsIo, Bytes>,
    waker: Waker,
    /// Streams a session still holds.
    streams: usize,
    idle_since: Instant,
    /// Ended, or closed to new streams by a GOAWAY or an error.
    closed: bool,
}

pub struct H2Conns {
    conns: Slab<H2Conn>,
    /// Per backend (by id): new connections being opened for it by
    /// sessions that found every h2 connection full.
    opening: Vec<usize>,
    serial: u64,
    queue: Arc<WakeQueue>,
    idle_timeout: Duration,
}

/// The two halves of a new stream.
pub type Stream = (ResponseFuture, SendStream<Bytes>);

impl H2Conns {
    pub fn new(queue: Arc<WakeQueue>, idle_timeout: Duration) -> H2Conns {
        H2Conns {
            conns: Slab::new(),
            opening: Vec::new(),
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
        let (send, driver) = match handshake.as_mut().poll(&mut Context::from_waker(&waker)) {
            Poll::Ready(Ok(halves)) => halves,
            Poll::Ready(Err(e)) => return Err(io::Error::other(e)),
            Poll::Pending => return Err(io::Error::other("HTTP/2 preface not accepted")),
        };
        entry.insert(H2Conn {
            backend,
            serial,
            send,
            driver,
            waker,
            streams: 0,
            idle_since: now,
            closed: false,
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
        if let Poll::Ready(result) = Pin::new(&mut conn.driver).poll(&mut cx) {
            if let Err(e) = result {
                crate::debug!("h2 connection to backend {}: {e}", conn.backend.0);
            }
            // Its streams were told by h2 (their wakers run); nothing more
            // can move on it.
            self.conns.remove(id.key);
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

    /// A connection to `backend` for a new stream, or `None`: then the
    /// caller opens a new one (and says so with [`H2Conns::begin_open`]).
    /// A connection with room under the backend's stream limit comes
    /// first; when all are full and enough are open or opening, the least
    /// loaded one, where h2 queues the stream until one of its own ends.
    /// `cx` is the session's: it is woken when the stream can be opened.
    pub fn ready(&mut self, backend: BackendId, cx: &mut Context<'_>) -> Option<ConnId> {
        let mut open = 0;
        let mut least: Option<(usize, usize)> = None;
        for (key, conn) in self.conns.iter_mut() {
            if conn.backend != backend || conn.closed {
                continue;
            }
            open += 1;
            if conn.streams < conn.send.current_max_send_streams() {
                match conn.send.poll_ready(cx) {
                    Poll::Ready(Ok(())) => {
                        return Some(ConnId {
                            key,
                            serial: conn.serial,
                        });
                    }
                    Poll::Ready(Err(_)) => {
                        conn.closed = true;
                        continue;
                    }
                    Poll::Pending => {}
                }
            }
            if least.is_none_or(|(_, streams)| conn.streams < streams) {
                least = Some((key, conn.streams));
            }
        }
        let opening = self.opening.get(backend.0).copied().unwrap_or(0);
        match least {
            Some((key, _)) if open + opening >= MAX_CONNS_PER_BACKEND => Some(ConnId {
                key,
                serial: self.conns[key].serial,
            }),
            _ => None,
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

    /// A session is done with its stream on `id`.
    pub fn release(&mut self, id: ConnId, now: Instant) {
        if let Some(conn) = self.conns.get_mut(id.key)
            && conn.serial == id.serial
        {
            conn.streams = conn.streams.saturating_sub(1);
            conn.idle_since = now;
        }
    }

    /// Closes connections idle past the idle timeout, and closed ones whose
    /// streams are all done.
    pub fn sweep(&mut self, now: Instant) {
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
