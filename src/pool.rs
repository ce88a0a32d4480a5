//! Backend connections of one worker: the busy ones and, per backend, a LIFO
//! stack of idle keep-alive connections ready for reuse.
//!
//! The pool retires an idle connection before the backend would close it
//! (its learned `Keep-Alive: timeout`), and drops one the backend closed
//! while idle. It never parses HTTP; `proxy` tells it whether a connection
//! is reusable. Called only from the worker's event loop.

use std::io::{self, Read};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Interest, Registry};
use slab::Slab;

use crate::buffer::{Buf, BufPool};
use crate::upstream::BackendId;
use crate::worker::token;

/// Read buffer per busy backend connection: the response direction's bound.
/// Idle connections hand theirs back to the pool's `BufPool`.
pub const UPSTREAM_BUF: usize = 32 * 1024;

/// One connection to a backend.
#[derive(Debug)]
pub struct Upstream {
    pub stream: TcpStream,
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
}

#[derive(Debug)]
pub struct Pool {
    conns: Slab<Upstream>,
    idle: Vec<Vec<usize>>,
    max_idle: usize,
    default_idle: Duration,
    bufs: BufPool,
}

impl Pool {
    pub fn new(backends: usize, max_idle: usize, default_idle: Duration) -> Pool {
        Pool {
            conns: Slab::with_capacity(1024),
            idle: (0..backends)
                .map(|_| Vec::with_capacity(max_idle))
                .collect(),
            max_idle,
            default_idle,
            bufs: BufPool::new(UPSTREAM_BUF),
        }
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
    pub fn connect(
        &mut self,
        backend: BackendId,
        addr: SocketAddr,
        owner: usize,
        registry: &Registry,
    ) -> io::Result<usize> {
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

    /// Closes a connection, busy or idle.
    pub fn close(&mut self, key: usize, registry: &Registry) {
        if let Some(mut conn) = self.conns.try_remove(key) {
            if conn.owner.is_none() {
                self.idle[conn.backend.0].retain(|&k| k != key);
            }
            let _ = registry.deregister(&mut conn.stream);
            conn.buf.clear();
            self.bufs.reclaim(&mut conn.buf);
        }
    }

    /// Readiness on an idle connection: the backend closed it or sent bytes
    /// nobody asked for. Either way it cannot carry a request any more.
    pub fn on_idle_event(&mut self, key: usize, registry: &Registry) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        let mut probe = [0u8; 1];
        match conn.stream.read(&mut probe) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            _ => self.close(key, registry),
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
                if let Some(mut conn) = conns.try_remove(key) {
                    let _ = registry.deregister(&mut conn.stream);
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
