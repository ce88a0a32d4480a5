//! The master's socket table: one `SO_REUSEPORT` listening socket per worker
//! slot (and one per slot for `--metrics-addr`), bound once and kept by the
//! master for its whole life, so a respawned worker takes over the very
//! socket whose accept queue survived its predecessor.

use std::io;
use std::net::{SocketAddr, TcpListener};

use socket2::{Domain, Socket, Type};

/// The sockets of one worker slot.
#[derive(Debug)]
pub struct SlotSockets {
    pub listen: TcpListener,
    pub metrics: Option<TcpListener>,
}

/// Binds the sockets of `slots` worker slots.
pub fn bind_all(
    listen: SocketAddr,
    metrics: Option<SocketAddr>,
    slots: usize,
) -> Result<Vec<SlotSockets>, String> {
    // SO_REUSEPORT would let us share the port with another process of the
    // same user without a word; a plain bind first makes "port in use" an
    // error, as operators expect.
    check_free(listen).map_err(|e| format!("cannot listen on {listen}: {e}"))?;
    if let Some(addr) = metrics {
        check_free(addr).map_err(|e| format!("cannot listen on --metrics-addr {addr}: {e}"))?;
    }
    (0..slots)
        .map(|_| {
            Ok(SlotSockets {
                listen: bind_reuseport(listen)
                    .map_err(|e| format!("cannot listen on {listen}: {e}"))?,
                metrics: metrics
                    .map(|addr| {
                        bind_reuseport(addr)
                            .map_err(|e| format!("cannot listen on --metrics-addr {addr}: {e}"))
                    })
                    .transpose()?,
            })
        })
        .collect()
}

/// The sockets an old master handed over, topped up with new ones if this
/// configuration asks for more workers. Handed-over sockets are all kept,
/// even beyond `slots`, since connections may be queued on each; a lower
/// worker count takes effect at the next cold start.
pub fn adopt_all(
    mut inherited: Vec<SlotSockets>,
    listen: SocketAddr,
    metrics: Option<SocketAddr>,
    slots: usize,
) -> Result<Vec<SlotSockets>, String> {
    if let Some(first) = inherited.first()
        && first.listen.local_addr().ok() != Some(listen)
        && listen.port() != 0
    {
        crate::warn!(
            "the handed-over sockets listen on {}, not on {listen}: a new address needs a restart",
            first
                .listen
                .local_addr()
                .map_or("an unknown address".to_string(), |a| a.to_string())
        );
    }
    if inherited.len() > slots {
        crate::warn!(
            "keeping {} workers (one per handed-over socket) instead of {slots}",
            inherited.len()
        );
    }
    let addr = inherited
        .first()
        .and_then(|s| s.listen.local_addr().ok())
        .unwrap_or(listen);
    while inherited.len() < slots {
        inherited.push(SlotSockets {
            listen: bind_reuseport(addr).map_err(|e| format!("cannot listen on {addr}: {e}"))?,
            metrics: metrics
                .map(|m| {
                    bind_reuseport(m)
                        .map_err(|e| format!("cannot listen on --metrics-addr {m}: {e}"))
                })
                .transpose()?,
        });
    }
    Ok(inherited)
}

fn check_free(addr: SocketAddr) -> io::Result<()> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM.cloexec(), None)?;
    socket.set_reuse_address(true)?;
    prefer_dual_stack(&socket, addr);
    socket.bind(&addr.into())
}

/// One worker slot's listening socket: `SO_REUSEPORT`, non-blocking,
/// close-on-exec, a large backlog. Also used by the cost-floor relay in
/// `benches/floor`, so that it listens exactly as the workers do.
pub fn bind_reuseport(addr: SocketAddr) -> io::Result<TcpListener> {
    bind_listener(addr, true)
}

/// A listening socket as workers use them; `reuse_port` for a slot's (sp
/// mode's one socket has no siblings).
pub fn bind_listener(addr: SocketAddr, reuse_port: bool) -> io::Result<TcpListener> {
    let socket = Socket::new(
        Domain::for_address(addr),
        Type::STREAM.nonblocking().cloexec(),
        None,
    )?;
    socket.set_reuse_address(true)?;
    if reuse_port {
        socket.set_reuse_port(true)?;
    }
    prefer_dual_stack(&socket, addr);
    socket.bind(&addr.into())?;
    socket.listen(4096)?;
    Ok(socket.into())
}

/// `-H ::` serves IPv4 clients too.
pub fn prefer_dual_stack(socket: &Socket, addr: SocketAddr) {
    if addr.is_ipv6() {
        let _ = socket.set_only_v6(false);
    }
}
