//! The byte stream under an h2 connection: rustls over a non-blocking mio
//! socket, as tokio's `AsyncRead`/`AsyncWrite` so the `h2` crate can drive
//! it. WouldBlock becomes `Pending`.
//!
//! No waker is stored: the worker polls the h2 connection again on every
//! readiness event of its socket, and `Pending` is returned only after the
//! socket said WouldBlock, so an edge is always coming.

use std::io::{self, Read as _, Write as _};
use std::pin::Pin;
use std::task::{Context, Poll};

use mio::net::TcpStream;
use rustls::ClientConnection;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::net::RawSocket;

pub struct TlsIo {
    pub stream: TcpStream,
    pub tls: Box<ClientConnection>,
}

impl TlsIo {
    /// Sends the records rustls holds. `Ok(false)`: the socket is full.
    fn flush_records(&mut self) -> io::Result<bool> {
        while self.tls.wants_write() {
            match self.tls.write_tls(&mut RawSocket(&self.stream)) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }
}

impl AsyncRead for TlsIo {
    fn poll_read(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let mut socket_eof = false;
        loop {
            let state = match this.tls.process_new_packets() {
                Ok(state) => state,
                Err(e) => {
                    // Tell the backend why (the alert rustls queued).
                    let _ = this.flush_records();
                    return Poll::Ready(Err(io::Error::other(e)));
                }
            };
            let ready = state.plaintext_bytes_to_read().min(buf.remaining());
            if ready > 0 {
                // Only what rustls holds is initialised: h2 hands over its
                // whole spare capacity, and zeroing it each read cost more
                // than the read.
                let n = this.tls.reader().read(buf.initialize_unfilled_to(ready))?;
                buf.advance(n);
                return Poll::Ready(Ok(()));
            }
            // The end of the stream, with close_notify or without (h2 tells
            // a cut frame from a clean end): nothing filled.
            if state.peer_has_closed() || socket_eof {
                return Poll::Ready(Ok(()));
            }
            match this.tls.read_tls(&mut RawSocket(&this.stream)) {
                Ok(0) => socket_eof = true,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Poll::Pending,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

impl AsyncWrite for TlsIo {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        this.flush_records()?;
        let n = this.tls.writer().write(buf)?;
        if n == 0 && !buf.is_empty() {
            // rustls' buffer is full, which it stays only while the socket
            // is: the writable edge brings the next poll.
            return Poll::Pending;
        }
        // What does not leave now goes with the next flush.
        this.flush_records()?;
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut().flush_records()? {
            true => Poll::Ready(Ok(())),
            false => Poll::Pending,
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.tls.send_close_notify();
        Pin::new(this).poll_flush(cx)
    }
}
