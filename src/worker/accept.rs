//! Taking new client connections: from our own socket, then from the
//! sockets of empty slots we cover, and what to do when accept(2) fails.

use std::io;
use std::time::{Duration, Instant};

use mio::Interest;

use super::{Worker, token};
use crate::net;
use crate::proxy::Session;

/// How soon accepting is tried again after the process ran out of
/// descriptors (or the kernel of memory): connections already queued raise
/// no new event, so without a retry they would wait for the next one.
const ACCEPT_RETRY: Duration = Duration::from_millis(100);

impl Worker {
    pub(super) fn accept(&mut self, metrics_only: bool, now: Instant) {
        // Our own socket first, then those of empty slots we cover: they
        // share its token.
        let mut own_drained = false;
        loop {
            let accepted = match (own_drained, metrics_only, self.metrics_listener.as_ref()) {
                (true, ..) => match self.cover.as_mut() {
                    Some(cover) => cover.accept(metrics_only),
                    None => return,
                },
                (false, true, Some(l)) => l.accept(),
                (false, true, None) => return,
                (false, false, _) => match self.listener.as_ref() {
                    Some(l) => l.accept(),
                    None => return,
                },
            };
            match accepted {
                Ok((mut stream, peer)) => {
                    // Small responses leave in one segment without waiting
                    // for the client's ACK.
                    let _ = stream.set_nodelay(true);
                    let entry = self.sessions.vacant_entry();
                    let key = entry.key();
                    let interest = Interest::READABLE | Interest::WRITABLE;
                    if let Err(e) =
                        self.poll
                            .registry()
                            .register(&mut stream, token::session(key), interest)
                    {
                        crate::warn!("cannot register a client connection: {e}");
                        continue;
                    }
                    self.generation += 1;
                    entry.insert(Box::new(Session::new(
                        key,
                        self.generation,
                        stream,
                        peer,
                        metrics_only,
                        now,
                    )));
                    self.metrics.connection_accepted();
                    self.metrics.set_connections(self.sessions.len());
                    self.peak_sessions = self.peak_sessions.max(self.sessions.len());
                    self.drive(key, now);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock && !own_drained => {
                    own_drained = true;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if net::out_of_resources(&e) => {
                    // Keep serving what we have; try again soon, since the
                    // connections queued meanwhile raise no new event.
                    if self.accept_retry.is_none() {
                        crate::warn!(
                            "accept failed: {e}; retrying every {} ms while it lasts",
                            ACCEPT_RETRY.as_millis()
                        );
                    }
                    self.accept_retry = Some(now + ACCEPT_RETRY);
                    return;
                }
                // A connection reset while queued (ECONNABORTED) and the
                // network errors Linux reports through accept concern that
                // connection only, and consume it: the rest of the queue is
                // still there.
                Err(e) if one_connection_failed(&e) => crate::debug!("accept: {e}"),
                Err(e) => {
                    crate::warn!("accept failed: {e}");
                    return;
                }
            }
        }
    }

    /// The retry after accepting failed for want of resources.
    pub(super) fn retry_accept(&mut self, now: Instant) {
        self.accept_retry = None;
        self.accept(false, now);
        if self.metrics_listener.is_some() {
            self.accept(true, now);
        }
        if self.accept_retry.is_none() {
            crate::info!("accepting connections again");
        }
    }
}

/// Accept errors about the connection being accepted (accept(2): Linux
/// passes a pending network error of the new connection to the caller).
fn one_connection_failed(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(
            libc::ECONNABORTED
                | libc::EPROTO
                | libc::EPERM
                | libc::ENETDOWN
                | libc::ENOPROTOOPT
                | libc::EHOSTDOWN
                | libc::ENONET
                | libc::EHOSTUNREACH
                | libc::EOPNOTSUPP
                | libc::ENETUNREACH
        )
    )
}
