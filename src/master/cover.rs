//! Covering for an empty slot (SPEC §2): while a slot has no serving worker
//! — its worker died and waits out a respawn back-off, or is still starting
//! — the serving workers of the other slots also accept from that slot's
//! sockets. The kernel keeps routing about 1/N of new connections to each
//! `SO_REUSEPORT` socket whatever happens to its worker; covered, they and
//! the connections already queued when the worker died are accepted at
//! once instead of after the back-off, and none is reset.
//!
//! Every worker inherits every slot's sockets, and registers another
//! slot's only while the master's table says that slot is empty. The table
//! is one byte per slot (1 = empty) in a memfd; the master rewrites it and
//! sends SIGUSR1 to its serving workers when it changes, and a worker reads
//! it once more when it starts serving. Both sides live here, as in
//! `upgrade.rs`.

use std::fs::File;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::FileExt;
use std::sync::atomic::{Ordering, fence};

use mio::net::{TcpListener, TcpStream};
use mio::{Interest, Registry};

use crate::worker::token;

/// The table's descriptor in a worker.
const TABLE_FD_ENV: &str = "LB_COVER_TABLE_FD";
/// Every slot's listening socket, in slot order: `7,8,…`.
const LISTEN_FDS_ENV: &str = "LB_COVER_LISTEN_FDS";
/// Every slot's `--metrics-addr` socket, in slot order (or nothing).
const METRICS_FDS_ENV: &str = "LB_COVER_METRICS_FDS";

/// The master's side: which slots are empty, as its workers read it.
pub struct Table {
    file: File,
    /// What the workers were last told.
    published: Vec<u8>,
}

impl Table {
    /// A table of `slots` slots, none empty yet.
    pub fn create(slots: usize) -> io::Result<Table> {
        let fd = nix::sys::memfd::memfd_create(
            "load_balancer-cover",
            nix::sys::memfd::MFdFlags::MFD_CLOEXEC,
        )
        .map_err(io::Error::from)?;
        let file = File::from(fd);
        let published = vec![0u8; slots];
        file.write_all_at(&published, 0)?;
        Ok(Table { file, published })
    }

    pub fn raw_fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }

    /// Records which slots are empty; `true` if that changed, and the
    /// serving workers must be told (after this returns: a worker that
    /// reports serving later reads the table itself).
    pub fn publish(&mut self, empty: impl Iterator<Item = bool>) -> io::Result<bool> {
        let now: Vec<u8> = empty.map(u8::from).collect();
        if now == self.published {
            return Ok(false);
        }
        self.file.write_all_at(&now, 0)?;
        self.published = now;
        // Pairs with the fence in `Cover::refresh`: a worker whose
        // "serving" mark we do not see yet reads this table after setting it.
        fence(Ordering::SeqCst);
        Ok(true)
    }
}

/// The descriptor layout of a spawned worker beyond its own sockets
/// (`spawn.rs`): the table, then every slot's sockets.
pub struct Inheritance {
    pub pairs: Vec<(RawFd, RawFd)>,
    pub env: [(&'static str, String); 3],
}

/// Where a worker finds the table and every slot's sockets, starting at
/// descriptor `first`.
pub fn inheritance(table: RawFd, listen: &[RawFd], metrics: &[RawFd], first: RawFd) -> Inheritance {
    let mut pairs = vec![(table, first)];
    let mut next = first + 1;
    let mut place = |fds: &[RawFd]| -> String {
        let mut targets = Vec::with_capacity(fds.len());
        for &fd in fds {
            pairs.push((fd, next));
            targets.push(next.to_string());
            next += 1;
        }
        targets.join(",")
    };
    let listen = place(listen);
    let metrics = place(metrics);
    Inheritance {
        pairs,
        env: [
            (TABLE_FD_ENV, first.to_string()),
            (LISTEN_FDS_ENV, listen),
            (METRICS_FDS_ENV, metrics),
        ],
    }
}

/// A worker's side: the other slots' sockets, registered while empty.
pub struct Cover {
    own: usize,
    table: File,
    listen: Vec<TcpListener>,
    /// Empty, or one per slot like `listen`.
    metrics: Vec<TcpListener>,
    /// Slots whose sockets are registered here.
    watching: Vec<bool>,
    /// Next covered socket to accept from (`Cover::accept`).
    cursor: usize,
}

impl Cover {
    /// The table and sockets this worker of slot `own` inherited, if its
    /// master passed them.
    pub fn inherited(own: usize) -> Option<io::Result<Cover>> {
        let table = std::env::var(TABLE_FD_ENV).ok()?;
        Some(Cover::adopt(own, &table))
    }

    fn adopt(own: usize, table: &str) -> io::Result<Cover> {
        let fds = |text: &str| -> io::Result<Vec<RawFd>> {
            text.split(',')
                .filter(|s| !s.is_empty())
                .map(|s| {
                    s.parse().map_err(|_| {
                        io::Error::new(io::ErrorKind::InvalidInput, format!("bad fd '{s}'"))
                    })
                })
                .collect()
        };
        let listeners = |var: &str| -> io::Result<Vec<TcpListener>> {
            fds(&std::env::var(var).unwrap_or_default())?
                .into_iter()
                .map(|fd| {
                    let l = crate::worker::inherited_listener(fd)?;
                    l.set_nonblocking(true)?;
                    Ok(TcpListener::from_std(l))
                })
                .collect()
        };
        let table = fds(table)?.first().copied().ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidInput, "no cover table descriptor")
        })?;
        let table = File::from(crate::worker::inherited_fd(table));
        let listen = listeners(LISTEN_FDS_ENV)?;
        let metrics = listeners(METRICS_FDS_ENV)?;
        if !metrics.is_empty() && metrics.len() != listen.len() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "metrics sockets do not match the slots",
            ));
        }
        Ok(Cover {
            own,
            table,
            watching: vec![false; listen.len()],
            listen,
            metrics,
            cursor: 0,
        })
    }

    /// Reads the table and registers exactly the empty slots' sockets (on
    /// the tokens of our own, so an event on either drains both).
    pub fn refresh(&mut self, registry: &Registry) {
        // Pairs with the fence in `Table::publish`, see there.
        fence(Ordering::SeqCst);
        let mut empty = vec![0u8; self.listen.len()];
        if let Err(e) = self.table.read_exact_at(&mut empty, 0) {
            crate::warn!("cannot read which slots are empty: {e}");
            return;
        }
        for (slot, &flag) in empty.iter().enumerate() {
            let want = flag != 0 && slot != self.own;
            if want != self.watching[slot] {
                self.watch(registry, slot, want);
            }
        }
    }

    fn watch(&mut self, registry: &Registry, slot: usize, on: bool) {
        let sockets = [
            (Some(&mut self.listen[slot]), token::LISTENER),
            (self.metrics.get_mut(slot), token::METRICS_LISTENER),
        ];
        for (socket, token) in sockets {
            let Some(socket) = socket else { continue };
            let done = match on {
                true => registry.register(socket, token, Interest::READABLE),
                false => registry.deregister(socket),
            };
            if let Err(e) = done {
                crate::warn!("cannot change covering slot {slot}: {e}");
            }
        }
        crate::debug!(
            "{} slot {slot}",
            if on {
                "covering for"
            } else {
                "no longer covering"
            }
        );
        self.watching[slot] = on;
    }

    /// The next connection queued on a covered socket of that kind;
    /// `WouldBlock` once each has been drained.
    pub fn accept(&mut self, metrics: bool) -> io::Result<(TcpStream, SocketAddr)> {
        let sockets = if metrics { &self.metrics } else { &self.listen };
        while self.cursor < sockets.len() {
            if self.watching[self.cursor] {
                match sockets[self.cursor].accept() {
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    other => return other,
                }
            }
            self.cursor += 1;
        }
        self.cursor = 0;
        Err(io::ErrorKind::WouldBlock.into())
    }

    /// Stops covering (a draining worker accepts nothing). Deregistering
    /// matters: closing our descriptor would not remove a socket that
    /// other processes still hold from our epoll set.
    pub fn stop(mut self, registry: &Registry) {
        for slot in 0..self.watching.len() {
            if self.watching[slot] {
                self.watch(registry, slot, false);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inheritance_places_the_table_then_each_kind_of_socket() {
        let layout = inheritance(20, &[21, 22], &[23, 24], 6);
        assert_eq!(
            layout.pairs,
            vec![(20, 6), (21, 7), (22, 8), (23, 9), (24, 10)]
        );
        assert_eq!(layout.env[0].1, "6");
        assert_eq!(layout.env[1].1, "7,8");
        assert_eq!(layout.env[2].1, "9,10");
    }

    #[test]
    fn a_table_is_published_only_when_it_changes() {
        let mut table = Table::create(3).expect("memfd");
        assert!(!table.publish([false, false, false].into_iter()).unwrap());
        assert!(table.publish([false, true, false].into_iter()).unwrap());
        assert!(!table.publish([false, true, false].into_iter()).unwrap());
        let mut read = [9u8; 3];
        table.file.read_exact_at(&mut read, 0).unwrap();
        assert_eq!(read, [0, 1, 0]);
    }
}
