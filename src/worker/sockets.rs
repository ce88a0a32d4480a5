//! Listening sockets: the ones a worker inherits from its master, and the
//! one sp mode binds itself.

use std::io;
use std::net::SocketAddr;

use mio::net::TcpListener;

/// A descriptor a worker process inherited from its master.
pub fn inherited_fd(fd: i32) -> std::os::fd::OwnedFd {
    use std::os::fd::FromRawFd;
    // SAFETY: the master put an open descriptor at `fd` for this process
    // before exec (`master::spawn`) and nothing else in this process owns
    // it; each is taken exactly once, at start-up.
    unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) }
}

/// The listening socket a worker process inherited on descriptor `fd`.
pub fn inherited_listener(fd: i32) -> io::Result<std::net::TcpListener> {
    let socket = socket2::Socket::from(inherited_fd(fd));
    if !socket.is_listener()? {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("descriptor {fd} is not a listening socket"),
        ));
    }
    Ok(socket.into())
}

pub(super) fn adopt(listener: std::net::TcpListener) -> io::Result<TcpListener> {
    listener.set_nonblocking(true)?;
    Ok(TcpListener::from_std(listener))
}

/// Binds the listening socket for sp mode.
pub fn bind(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    crate::master::listeners::bind_listener(addr, false)
}
