//! Plain socket I/O with the edge-triggered discipline every connection of
//! the event loop follows: readiness remembered per socket, cleared only on
//! `WouldBlock` or a short read or write. Used by client sessions and by the
//! plain transport of backend connections (`tls` wraps the same calls).

use std::io::{self, IoSlice};

use mio::net::TcpStream;
use rustix::net::{self, RecvFlags, SendAncillaryBuffer, SendFlags};

use crate::buffer::Buf;

/// What one read gave.
pub enum Read {
    Data,
    Eof,
    Blocked,
}

/// One read into `buf` from an edge-triggered socket whose remembered
/// readiness is `readable`. A short read means the socket is drained (the
/// next edge will say when there is more), unless the peer's FIN is already
/// known (`read_closed`): epoll reports that once, so reading goes on until
/// the end of stream shows.
pub fn read_edge(
    buf: &mut Buf,
    src: &TcpStream,
    readable: &mut bool,
    read_closed: bool,
) -> io::Result<Read> {
    if !*readable || buf.is_full() {
        return Ok(Read::Blocked);
    }
    loop {
        return match buf.read_from(&mut RawSocket(src)) {
            Ok((0, _)) => Ok(Read::Eof),
            Ok((_, short)) => {
                *readable = !short || read_closed;
                Ok(Read::Data)
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                *readable = false;
                Ok(Read::Blocked)
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => Err(e),
        };
    }
}

/// One write of up to two slices (a head and a body run: one syscall for a
/// small response) to an edge-triggered socket. `Ok(None)`: it would block.
/// A short write means the socket buffer is full; the next writable edge
/// says when there is room.
pub fn write_edge(
    dst: &TcpStream,
    a: &[u8],
    b: &[u8],
    writable: &mut bool,
) -> io::Result<Option<usize>> {
    if !*writable || (a.is_empty() && b.is_empty()) {
        return Ok(None);
    }
    loop {
        let written = match (a.is_empty(), b.is_empty()) {
            (_, true) => RawSocket(dst).send(a),
            (true, false) => RawSocket(dst).send(b),
            (false, false) => RawSocket(dst).send_two(a, b),
        };
        return match written {
            Ok(n) => {
                *writable = n == a.len() + b.len();
                Ok(Some(n))
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                *writable = false;
                Ok(None)
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => Err(e),
        };
    }
}

/// Socket I/O through `rustix`'s direct system calls. glibc's `recv` and
/// `send` are thread-cancellation points: in a process with a second thread
/// (the health prober) each call also toggles the cancellation state with
/// atomic operations. Otherwise these are the plain socket calls.
pub struct RawSocket<'a>(pub &'a TcpStream);

impl RawSocket<'_> {
    fn send(&self, bytes: &[u8]) -> io::Result<usize> {
        Ok(net::send(self.0, bytes, SendFlags::NOSIGNAL)?)
    }

    fn send_two(&self, a: &[u8], b: &[u8]) -> io::Result<usize> {
        let parts = [IoSlice::new(a), IoSlice::new(b)];
        let mut no_control = SendAncillaryBuffer::default();
        Ok(net::sendmsg(
            self.0,
            &parts,
            &mut no_control,
            SendFlags::NOSIGNAL,
        )?)
    }
}

impl io::Read for RawSocket<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let (n, _) = net::recv(self.0, buf, RecvFlags::empty())?;
        Ok(n)
    }
}

/// For rustls, which writes its records through `io::Write`.
impl io::Write for RawSocket<'_> {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.send(bytes)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Errors that say this process or the system is out of something
/// (descriptors, buffers, memory) rather than that a peer failed: accept(2)
/// and a probe's connect answer them the same way, by trying again later
/// and blaming no one.
pub fn out_of_resources(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}
