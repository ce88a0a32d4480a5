//! Backend connections of one worker: the busy ones and, per backend, a LIFO
//! stack of idle keep-alive connections ready for reuse.
//!
//! The pool retires an idle connection before the backend would close it
//! (its learned `Keep-Alive: timeout`), and drops one the backend closed
//! while idle. It never parses HTTP; `proxy` tells it whether a connection
//! is reusable. Called only from the worker's event loop.

use std::io::{self, Read as _};
use std::net::{Shutdown, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Interest, Registry};
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection};
use slab::Slab;

use crate::buffer::{Buf, BufPool};
use crate::net::{self, Read};
use crate::tls::{self, HandshakeError};
use crate::upstream::{Backend, BackendId};
use crate::worker::token;

/// Read buffer per busy backend connection: the response direction's bound.
/// Idle connections hand theirs back to the pool's `BufPool`.
pub const UPSTREAM_BUF: usize = 32 * 1024;

/// One connection to a backend: plain TCP, or TLS over it. Everything
/// that moves its bytes goes through its methods, so callers never know
/// which it is.
#[derive(Debug)]
pub struct Upstream {
    stream: TcpStream,
    /// `Some` for a TLS backend. Boxed: a rustls connection is large and
    /// plain connections should not carry its size.
    tls: Option<Box<ClientConnection>>,
    pub backend: BackendId,
    /// Bytes read from the backend, not yet relayed. Storage is lent by
    /// `Pool::get_for_read` and taken back when the connection goes idle.
    pub buf: Buf,
    /// Readiness remembered from edge-triggered events; cleared on WouldBlock.
    pub readable: bool,
    pub writable: bool,
    /// The backend's FIN (or an error) was reported. Unlike `readable` this
    /// is never cleared: epoll reports it once, and a short read that
    /// returned the last data does not show it.
    pub read_closed: bool,
    pub connected: bool,
    /// Exchanges completed on this connection: a reused connection may have
    /// been closed by the backend in the meantime.
    pub served: u32,
    /// Retire the connection from the idle stack at this instant.
    idle_until: Instant,
    /// The session using it, or `None` while idle.
    pub owner: Option<usize>,
}

impl Upstream {
    pub fn is_reused(&self) -> bool {
        self.served > 0
    }

    /// One read into `buf` (see `net::read_edge`; TLS delivers plaintext).
    #[inline]
    pub fn read(&mut self) -> io::Result<Read> {
        match &mut self.tls {
            None => net::read_edge(
                &mut self.buf,
                &self.stream,
                &mut self.readable,
                self.read_closed,
            ),
            Some(conn) => tls::read(conn, &self.stream, &mut self.buf, &mut self.readable),
        }
    }

    /// Sends `a` then `b` (see `net::write_edge`). `Ok(None)`: would block.
    #[inline]
    pub fn write(&mut self, a: &[u8], b: &[u8]) -> io::Result<Option<usize>> {
        match &mut self.tls {
            None => net::write_edge(&self.stream, a, b, &mut self.writable),
            Some(conn) => tls::write(conn, &self.stream, a, b, &mut self.writable),
        }
    }

    /// After the TCP connect: drives the TLS handshake as far as it can go.
    /// `Ok(true)` once the connection can carry a request.
    pub fn handshake(&mut self) -> Result<bool, HandshakeError> {
        match &mut self.tls {
            None => Ok(true),
            Some(conn) => {
                tls::handshake(conn, &self.stream, &mut self.readable, &mut self.writable)
            }
        }
    }

    /// The TLS handshake chose HTTP/2 by ALPN.
    pub fn chose_h2(&self) -> bool {
        self.tls
            .as_deref()
            .is_some_and(|c| c.alpn_protocol() == Some(b"h2"))
    }

    /// `--tls-trace`'s line for a finished handshake; `None` on plain TCP.
    pub fn tls_summary(&self) -> Option<String> {
        self.tls.as_deref().map(tls::summary)
    }

    /// A readiness event arrived: TLS records waiting for room in the
    /// socket go out now, even when no session has more to write.
    pub fn on_ready(&mut self) -> io::Result<()> {
        match &mut self.tls {
            Some(conn) if self.writable => tls::flush(conn, &self.stream, &mut self.writable),
            _ => Ok(()),
        }
    }

    /// Ends our direction of the stream (tunnels): FIN, or close_notify.
    pub fn shutdown_write(&mut self) {
        match &mut self.tls {
            None => {
                let _ = self.stream.shutdown(Shutdown::Write);
            }
            Some(conn) => tls::close(conn, &self.stream),
        }
    }

    /// The socket's pending error after a non-blocking connect, and whether
    /// it is connected yet.
    pub fn connect_result(&self) -> io::Result<bool> {
        if let Some(e) = self.stream.take_error()? {
            return Err(e);
        }
        match self.stream.peer_addr() {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotConnected => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Closes the connection (close_notify first on TLS).
    fn retire(mut self, registry: &Registry) {
        if let Some(conn) = &mut self.tls {
            tls::close(conn, &self.stream);
        }
        let _ = registry.deregister(&mut self.stream);
    }
}

#[derive(Debug)]
pub struct Pool {
    conns: Slab<Upstream>,
    idle: Vec<Vec<usize>>,
    max_idle: usize,
    default_idle: Duration,
    bufs: BufPool,
    /// Per backend: its TLS client configuration (shared by backends with
    /// the same options), `None` for a plain backend. ALPN offers only
    /// `http/1.1`: tunnels, which h2 cannot carry here.
    tls: Vec<Option<Arc<ClientConfig>>>,
    /// The same offering `h2` first, for every other request.
    tls_h2: Vec<Option<Arc<ClientConfig>>>,
    /// Per backend: the TLS server name, `None` for a plain backend.
    names: Vec<Option<ServerName<'static>>>,
    /// Scratch for `gauges`, one count per backend.
    busy: Vec<usize>,
    /// Per backend: a reload took it out of rotation; its connections are
    /// closed instead of pooled when their exchange ends.
    retired: Vec<bool>,
}

impl Pool {
    /// `tls[i]` is backend i's configuration (`tls::backend_configs`); every
    /// TLS backend needs one.
    pub fn new(
        backends: &[Backend],
        max_idle: usize,
        default_idle: Duration,
        tls: Vec<Option<Arc<ClientConfig>>>,
    ) -> Result<Pool, String> {
        let mut pool = Pool {
            conns: Slab::with_capacity(1024),
            idle: Vec::new(),
            max_idle,
            default_idle,
            bufs: BufPool::new(UPSTREAM_BUF),
            tls_h2: Vec::new(),
            retired: Vec::new(),
            tls: Vec::new(),
            names: Vec::new(),
            busy: Vec::new(),
        };
        pool.set_table(backends, &vec![true; backends.len()], tls)?;
        Ok(pool)
    }

    /// A reload's backend table (an extension of the one before): room
    /// for new backends, their TLS settings, and the idle connections of
    /// backends no longer `active` closed at once.
    pub fn update(
        &mut self,
        backends: &[Backend],
        active: &[bool],
        tls: Vec<Option<Arc<ClientConfig>>>,
        registry: &Registry,
    ) -> Result<(), String> {
        self.set_table(backends, active, tls)?;
        for i in 0..backends.len() {
            if self.retired[i] {
                while let Some(key) = self.idle[i].pop() {
                    self.close(key, registry);
                }
            }
        }
        Ok(())
    }

    /// The per-backend tables sized for `backends`, with their TLS
    /// settings; nothing changes if a TLS backend has no configuration.
    fn set_table(
        &mut self,
        backends: &[Backend],
        active: &[bool],
        tls: Vec<Option<Arc<ClientConfig>>>,
    ) -> Result<(), String> {
        let names = backends
            .iter()
            .map(|b| b.tls.then(|| tls::server_name(b.tls_name())).transpose())
            .collect::<Result<Vec<_>, _>>()?;
        let configured = |i: usize| tls.get(i).is_some_and(Option::is_some);
        if (0..names.len()).any(|i| names[i].is_some() && !configured(i)) {
            return Err("a TLS backend needs a TLS client configuration".into());
        }
        // Room for every idle connection allowed, so steady state pushes
        // without allocating.
        let max_idle = self.max_idle;
        self.idle
            .resize_with(backends.len(), || Vec::with_capacity(max_idle));
        self.busy.resize(backends.len(), 0);
        self.tls_h2 = tls
            .iter()
            .map(|c| c.as_deref().map(tls::offering_h2))
            .collect();
        self.tls = tls;
        self.names = names;
        self.retired = (0..backends.len())
            .map(|i| !active.get(i).copied().unwrap_or(false))
            .collect();
        Ok(())
    }

    pub fn get(&self, key: usize) -> Option<&Upstream> {
        self.conns.get(key)
    }

    pub fn get_mut(&mut self, key: usize) -> Option<&mut Upstream> {
        self.conns.get_mut(key)
    }

    /// A connection about to be read from, with buffer storage to read
    /// into if it is readable (storage is not lent for a read that cannot
    /// happen).
    pub fn get_for_read(&mut self, key: usize) -> Option<&mut Upstream> {
        let conn = self.conns.get_mut(key)?;
        if conn.readable {
            self.bufs.lend(&mut conn.buf);
        }
        Some(conn)
    }

    /// Idle connections to `backend` right now.
    pub fn idle_count(&self, backend: BackendId) -> usize {
        self.idle[backend.0].len()
    }

    /// Calls `f(backend, idle, busy)` for every backend: connections
    /// waiting in its idle stack, and those lent to a request (connecting
    /// ones included). Walks all connections: for a once-a-tick report.
    pub fn gauges(&mut self, mut f: impl FnMut(BackendId, usize, usize)) {
        self.busy.iter_mut().for_each(|n| *n = 0);
        for (_, conn) in &self.conns {
            if conn.owner.is_some()
                && let Some(n) = self.busy.get_mut(conn.backend.0)
            {
                *n += 1;
            }
        }
        for (i, idle) in self.idle.iter().enumerate() {
            f(BackendId(i), idle.len(), self.busy[i]);
        }
    }

    /// The most recently used idle connection to `backend` that is still
    /// within its keep-alive window (LIFO keeps few connections warm).
    pub fn checkout(
        &mut self,
        backend: BackendId,
        owner: usize,
        now: Instant,
        registry: &Registry,
    ) -> Option<usize> {
        while let Some(key) = self.idle[backend.0].pop() {
            if self.conns[key].idle_until > now {
                self.conns[key].owner = Some(owner);
                return Some(key);
            }
            self.close(key, registry);
        }
        None
    }

    /// Starts a non-blocking connect; completion shows as writability.
    /// A TLS connection offers `h2` unless `http1_only`.
    pub fn connect(
        &mut self,
        backend: BackendId,
        addr: SocketAddr,
        owner: usize,
        http1_only: bool,
        registry: &Registry,
    ) -> io::Result<usize> {
        let config = match http1_only {
            true => &self.tls[backend.0],
            false => &self.tls_h2[backend.0],
        };
        let tls = match (&self.names[backend.0], config) {
            (Some(name), Some(config)) => Some(Box::new(tls::connection(config, name)?)),
            _ => None,
        };
        let mut stream = TcpStream::connect(addr)?;
        // Heads and small bodies go out in one write each; Nagle would only
        // delay them.
        stream.set_nodelay(true)?;
        let entry = self.conns.vacant_entry();
        let key = entry.key();
        registry.register(
            &mut stream,
            token::upstream(key),
            Interest::READABLE | Interest::WRITABLE,
        )?;
        entry.insert(Upstream {
            stream,
            tls,
            backend,
            buf: Buf::empty(),
            readable: false,
            writable: false,
            read_closed: false,
            connected: false,
            served: 0,
            idle_until: Instant::now(),
            owner: Some(owner),
        });
        Ok(key)
    }

    /// Returns a connection after an exchange: pushed on its backend's idle
    /// stack if reusable and there is room, closed otherwise.
    /// `keep_alive_timeout` is what the backend announced, in seconds.
    pub fn release(
        &mut self,
        key: usize,
        reusable: bool,
        keep_alive_timeout: Option<u32>,
        now: Instant,
        registry: &Registry,
    ) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        let backend = conn.backend;
        if !reusable
            || self.retired[backend.0]
            || conn.read_closed
            || !conn.buf.is_empty()
            || self.idle[backend.0].len() >= self.max_idle
        {
            self.close(key, registry);
            return;
        }
        self.bufs.reclaim(&mut conn.buf);
        conn.owner = None;
        conn.served += 1;
        conn.idle_until = now + idle_window(keep_alive_timeout, self.default_idle);
        self.idle[backend.0].push(key);
    }

    /// Hands a busy TLS connection's transport over (to HTTP/2, which
    /// drives it from then on); its slot is freed.
    pub fn take_tls(
        &mut self,
        key: usize,
        registry: &Registry,
    ) -> Option<(TcpStream, Box<ClientConnection>)> {
        let mut conn = self.conns.try_remove(key)?;
        conn.buf.clear();
        self.bufs.reclaim(&mut conn.buf);
        match conn.tls.take() {
            Some(tls) => Some((conn.stream, tls)),
            None => {
                conn.retire(registry);
                None
            }
        }
    }

    /// Closes a connection, busy or idle.
    pub fn close(&mut self, key: usize, registry: &Registry) {
        if let Some(mut conn) = self.conns.try_remove(key) {
            if conn.owner.is_none() {
                self.idle[conn.backend.0].retain(|&k| k != key);
            }
            conn.buf.clear();
            self.bufs.reclaim(&mut conn.buf);
            conn.retire(registry);
        }
    }

    /// Readiness on an idle connection: the backend closed it or sent bytes
    /// nobody asked for. Either way it cannot carry a request any more.
    pub fn on_idle_event(&mut self, key: usize, registry: &Registry) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        let alive = match &mut conn.tls {
            // TLS sends housekeeping (session tickets) on an idle connection.
            Some(tls_conn) => tls::still_idle(tls_conn, &conn.stream),
            None => {
                let mut probe = [0u8; 1];
                matches!((&conn.stream).read(&mut probe), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
            }
        };
        if !alive {
            self.close(key, registry);
        }
    }

    /// Closes idle connections past their window (the oldest sit at the
    /// bottom of each stack, so this stops at the first live one) and frees
    /// buffer storage unused since the last sweep. Returns how many
    /// buffers were freed.
    pub fn sweep(&mut self, now: Instant, registry: &Registry) -> usize {
        let freed = self.bufs.trim();
        let Pool { conns, idle, .. } = self;
        for stack in idle.iter_mut() {
            let expired = stack
                .iter()
                .take_while(|&&k| conns[k].idle_until <= now)
                .count();
            for key in stack.drain(..expired) {
                if let Some(conn) = conns.try_remove(key) {
                    conn.retire(registry);
                }
            }
        }
        freed
    }
}

/// How long an idle connection may be kept: shorter than the backend's own
/// keep-alive timeout, so we never send on a connection it is closing (the
/// classic reuse race that turns into a 502).
fn idle_window(announced_secs: Option<u32>, default: Duration) -> Duration {
    match announced_secs {
        None => default,
        Some(0) => Duration::ZERO,
        Some(secs) => {
            let announced = Duration::from_secs(u64::from(secs));
            let margin = Duration::from_secs(1).min(announced / 2);
            (announced - margin).min(default)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idle_window_stays_inside_the_backends_timeout() {
        let default = Duration::from_secs(30);
        assert_eq!(idle_window(None, default), default);
        assert_eq!(idle_window(Some(5), default), Duration::from_secs(4));
        assert_eq!(idle_window(Some(1), default), Duration::from_millis(500));
        assert_eq!(idle_window(Some(0), default), Duration::ZERO);
        assert_eq!(idle_window(Some(3600), default), default);
    }
}
