//! Relaying an upgraded connection (WebSocket and other `Upgrade`s after a
//! `101`): bytes both ways untouched, half-closes passed on, until both
//! directions are finished.

use std::net::Shutdown;

use super::{Close, Ctx, Read, Session, Step};

impl Session {
    pub(super) fn step_tunnel(&mut self, cx: &mut Ctx<'_>) -> Step {
        let Some(key) = self.upstream else {
            return Err(Close);
        };
        let mut progress = false;

        // Backend to client: the 101 head, then everything it sends.
        if let Some(up) = cx.pool.get(key) {
            self.down_pending = up.buf.len();
        }
        progress |= self.send_down(cx)?;
        if !self.upstream_eof {
            match self.read_upstream(cx, key) {
                Ok(Read::Data) => progress = true,
                Ok(Read::Eof) => {
                    self.upstream_eof = true;
                    progress = true;
                }
                Ok(Read::Blocked) => {}
                Err(_) => return Err(Close),
            }
        }
        let down_flushed =
            self.outhead.is_empty() && cx.pool.get(key).is_none_or(|up| up.buf.is_empty());
        if self.upstream_eof && down_flushed && !self.shut_down {
            let _ = self.client.shutdown(Shutdown::Write);
            self.shut_down = true;
        }

        // Client to backend: whatever the client sent after the request.
        progress |= self.send_tunnel_up(cx, key)?;
        if !self.client_eof {
            match self.read_client(cx)? {
                Read::Data => progress = true,
                Read::Eof => {
                    self.client_eof = true;
                    progress = true;
                }
                Read::Blocked => {}
            }
        }
        if self.client_eof && self.inbuf.is_empty() && !self.shut_up {
            if let Some(up) = cx.pool.get_mut(key) {
                up.shutdown_write();
            }
            self.shut_up = true;
        }

        if self.shut_up && self.shut_down {
            return Err(Close);
        }
        Ok(progress)
    }

    fn send_tunnel_up(&mut self, cx: &mut Ctx<'_>, key: usize) -> Step {
        let Some(up) = cx.pool.get_mut(key) else {
            return Err(Close);
        };
        match up.write(self.inbuf.data(), &[]) {
            Ok(Some(n)) => {
                self.rec.received += n as u64;
                self.turn_bytes += n;
                self.inbuf.consume(n);
                self.last_io = cx.now;
                Ok(true)
            }
            Ok(None) => Ok(false),
            Err(_) => Err(Close),
        }
    }
}
