//! The cost floor of our design, for `benches/load.sh --floor`: a byte
//! relay with the load balancer's process model and system calls (one mio
//! loop, edge-triggered epoll, one recv and one send per message and
//! direction) but no HTTP at all. Each client connection is paired with its
//! own backend connection at accept, alternating between the backends, and
//! bytes are copied verbatim both ways.
//!
//! Whatever it spends per request is spent by the kernel and the event loop
//! alone; the load balancer's own cost is what it spends above this. Small
//! bodies only: it stops with an error on a partial write instead of
//! buffering, so a misuse shows up as failed requests, not a good number.
//!
//!   relay_floor [-w N] <port> <backend addr>...
//!
//! `-w N` runs N relay processes on `SO_REUSEPORT` sockets of the port, as
//! the load balancer's workers do (not pinned to CPUs: on the 2-core bench
//! machine pinning made no measurable difference).

use std::io::{self, Read, Write};
use std::net::SocketAddr;

use load_balancer::master::listeners::bind_reuseport;
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};

const LISTENER: Token = Token(usize::MAX);
/// Set in the relay processes that `-w N` starts.
const CHILD_ENV: &str = "RELAY_FLOOR_CHILD";

fn main() {
    if let Err(e) = run() {
        eprintln!("relay_floor: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), String> {
    let mut args = std::env::args().skip(1).peekable();
    let usage = "usage: relay_floor [-w N] <port> <backend addr>...";
    let mut processes = 1;
    if args.peek().map(String::as_str) == Some("-w") {
        args.next();
        processes = args.next().and_then(|n| n.parse().ok()).ok_or(usage)?;
    }
    let port: u16 = args.next().and_then(|p| p.parse().ok()).ok_or(usage)?;
    let backends = args
        .map(|a| a.parse::<SocketAddr>().map_err(|e| format!("{a}: {e}")))
        .collect::<Result<Vec<_>, _>>()?;
    if backends.is_empty() {
        return Err(usage.into());
    }
    if processes > 1 && std::env::var_os(CHILD_ENV).is_none() {
        return run_processes(processes);
    }
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut listener = bind_reuseport(addr)
        .map(TcpListener::from_std)
        .map_err(|e| format!("{addr}: {e}"))?;
    let mut poll = Poll::new().map_err(|e| e.to_string())?;
    poll.registry()
        .register(&mut listener, LISTENER, Interest::READABLE)
        .map_err(|e| e.to_string())?;
    // Client at an even index, its backend at the next odd one.
    let mut conns: Vec<Option<TcpStream>> = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut events = Events::with_capacity(1024);
    let mut next_backend = 0;
    loop {
        if let Err(e) = poll.poll(&mut events, None) {
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e.to_string());
        }
        for event in events.iter() {
            if event.token() == LISTENER {
                while let Ok((client, _)) = listener.accept() {
                    let backend = backends[next_backend % backends.len()];
                    next_backend += 1;
                    pair(&poll, &mut conns, client, backend)
                        .map_err(|e| format!("backend {backend}: {e}"))?;
                }
                continue;
            }
            relay(&mut conns, event.token().0, &mut buf)?;
        }
    }
}

/// Runs `n` copies of this program with the same arguments and waits for
/// them; each binds its own `SO_REUSEPORT` socket.
fn run_processes(n: usize) -> Result<(), String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut children = (0..n)
        .map(|_| {
            std::process::Command::new(&exe)
                .args(std::env::args_os().skip(1))
                .env(CHILD_ENV, "1")
                .spawn()
                .map_err(|e| format!("{}: {e}", exe.display()))
        })
        .collect::<Result<Vec<_>, _>>()?;
    for child in &mut children {
        child.wait().map_err(|e| e.to_string())?;
    }
    Ok(())
}

fn pair(
    poll: &Poll,
    conns: &mut Vec<Option<TcpStream>>,
    mut client: TcpStream,
    backend: SocketAddr,
) -> io::Result<()> {
    let upstream = std::net::TcpStream::connect(backend)?;
    upstream.set_nonblocking(true)?;
    let mut upstream = TcpStream::from_std(upstream);
    client.set_nodelay(true)?;
    upstream.set_nodelay(true)?;
    let i = conns.len();
    poll.registry()
        .register(&mut client, Token(i), Interest::READABLE)?;
    poll.registry()
        .register(&mut upstream, Token(i + 1), Interest::READABLE)?;
    conns.push(Some(client));
    conns.push(Some(upstream));
    Ok(())
}

/// Copies everything readable on `conns[i]` to its partner; closes both when
/// either side ends.
fn relay(conns: &mut [Option<TcpStream>], i: usize, buf: &mut [u8]) -> Result<(), String> {
    let partner = i ^ 1;
    loop {
        let Some(from) = conns[i].as_mut() else {
            return Ok(());
        };
        let n = match from.read(buf) {
            Ok(n) if n > 0 => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            // End of stream or a reset: the pair is done.
            _ => {
                conns[i] = None;
                conns[partner] = None;
                return Ok(());
            }
        };
        if let Some(to) = conns[partner].as_mut() {
            match to.write(&buf[..n]) {
                Ok(w) if w == n => {}
                _ => return Err("partial write: the floor relay is for small bodies only".into()),
            }
        }
        if n < buf.len() {
            return Ok(());
        }
    }
}
