//! Fair turns (README "Performance"): a session moves at most a turn's
//! budget of bytes before the other ready connections of its worker get
//! theirs, and one that stopped at its budget is driven again by the worker
//! itself: edge-triggered readiness is not reported twice for bytes already
//! in a socket, so nothing else would wake it.

mod common;

use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use common::{IO_TIMEOUT, Lb, wait_until};

const MB: u64 = 1024 * 1024;
/// Generous bound on any transfer here (tens of MiB through loopback).
const TRANSFER_TIMEOUT: Duration = Duration::from_secs(60);

/// Sends `GET path`, reads the response head and returns the body length
/// it announces, leaving the stream at the first body byte.
fn request(stream: &mut TcpStream, path: &str) -> io::Result<u64> {
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    write!(stream, "GET {path} HTTP/1.1\r\nHost: fair\r\n\r\n")?;
    // Byte by byte up to the blank line: the body stays in the socket.
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if stream.read(&mut byte)? == 0 {
            return Err(io::Error::other("closed before the response head"));
        }
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 200"), "unexpected head: {head}");
    head.lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| io::Error::other(format!("no content-length in {head}")))
}

/// Reads `len` body bytes, adding each read to `counter`. Fails on a stall
/// longer than `IO_TIMEOUT` (a read timeout) or a close before the end.
fn drain(stream: &mut TcpStream, len: u64, counter: &AtomicU64) -> io::Result<()> {
    let mut buf = vec![0u8; 64 * 1024];
    let mut got = 0;
    while got < len {
        let n = match stream.read(&mut buf) {
            Ok(0) => return Err(io::Error::other(format!("closed at {got} of {len}"))),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(io::Error::other(format!("{e} at {got} of {len} bytes"))),
        };
        got += n as u64;
        counter.fetch_add(n as u64, Ordering::Relaxed);
    }
    Ok(())
}

/// A backend that answers `GET /big` with a body written in large blocks,
/// far faster than it is relayed: whenever the proxy looks, its socket has
/// bytes waiting. Anything else (the health probe, `/small`) gets an empty
/// 200. Serves until `stop`, then until the next connection (`Backend::stop`).
struct Backend {
    addr: std::net::SocketAddr,
    stop: Arc<AtomicBool>,
    server: JoinHandle<()>,
}

impl Backend {
    fn start(body: u64) -> Backend {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let server = thread::spawn(move || {
            for conn in listener.incoming() {
                if flag.load(Ordering::Relaxed) {
                    return;
                }
                if let Ok(conn) = conn {
                    thread::spawn(move || serve_one(conn, body));
                }
            }
        });
        Backend { addr, stop, server }
    }

    fn arg(&self) -> String {
        self.addr.to_string()
    }

    fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wakes the blocking accept.
        let _ = TcpStream::connect(self.addr);
        self.server.join().expect("backend thread");
    }
}

fn serve_one(mut conn: TcpStream, body: u64) {
    let _ = conn.set_nonblocking(false);
    let _ = conn.set_read_timeout(Some(TRANSFER_TIMEOUT));
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match conn.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    let len = if head.starts_with(b"GET /big ") {
        body
    } else {
        0
    };
    let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {len}\r\n\r\n");
    if conn.write_all(head.as_bytes()).is_err() {
        return;
    }
    // In large blocks: the body is written far faster than relayed.
    let block = vec![b'x'; MB as usize];
    let mut left = len;
    while left > 0 {
        let n = left.min(MB);
        if conn.write_all(&block[..n as usize]).is_err() {
            return;
        }
        left -= n;
    }
    // Silent from here; the proxy closing the connection ends the wait.
    let _ = conn.read(&mut buf);
}

/// A body many budgets long, written by the backend faster than it is
/// relayed: the session stops at its budget again and again with bytes
/// left in the backend socket, and whenever no new segment follows (the
/// backend's last block, or a window too small to be worth announcing)
/// only the worker's own re-queue carries the rest to the client (which
/// reads at once, so no write readiness comes either). Without the
/// re-queue this transfer stalled after a few MiB.
#[test]
fn a_session_that_used_its_budget_finishes_without_new_events() {
    const BODY: u64 = 16 * MB;
    let backend = Backend::start(BODY);
    let lb = Lb::start(&["-b", &backend.arg()]);
    let mut client = TcpStream::connect(lb.addr()).expect("connect");
    let len = request(&mut client, "/big").expect("response head");
    assert_eq!(len, BODY);
    let got = AtomicU64::new(0);
    if let Err(e) = drain(&mut client, len, &got) {
        panic!("the body stalled: {e}");
    }
    drop(client);
    drop(lb);
    backend.stop();
}

/// Downloads whose bytes are all waiting (a backend faster than the
/// proxy, clients that read at once) do not hold the worker: another
/// client's small request through the same worker is answered while they
/// move only a few budgets more. Without turns, each of them relays until
/// its backend socket runs dry before the next connection is looked at.
#[test]
fn streaming_downloads_do_not_hold_the_worker() {
    const HOGS: usize = 4;
    const HOG: u64 = 256 * MB;
    /// Many times what the hogs move while the victim is served with turns
    /// (a few MiB, mostly the client threads' scheduling), a small part of
    /// what they move without.
    const HOGS_WHILE_VICTIM: u64 = 64 * MB;
    let backend = Backend::start(HOG);
    let lb = Lb::start(&["-b", &backend.arg()]);
    let counters: Arc<Vec<AtomicU64>> = Arc::new((0..HOGS).map(|_| AtomicU64::new(0)).collect());
    let hogs: Vec<JoinHandle<io::Result<()>>> = (0..HOGS)
        .map(|i| {
            let (addr, counters) = (lb.addr(), Arc::clone(&counters));
            thread::spawn(move || {
                let mut stream = TcpStream::connect(addr)?;
                let len = request(&mut stream, "/big")?;
                drain(&mut stream, len, &counters[i])
            })
        })
        .collect();
    let moved = || {
        counters
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .sum::<u64>()
    };
    let all_streaming = wait_until(TRANSFER_TIMEOUT, || {
        counters.iter().all(|c| c.load(Ordering::Relaxed) >= MB)
    });
    assert!(all_streaming, "the hogs did not all start: {counters:?}");
    let before = moved();
    let mut victim = TcpStream::connect(lb.addr()).expect("connect");
    let len = request(&mut victim, "/small").expect("victim's response head");
    drain(&mut victim, len, &AtomicU64::new(0)).expect("victim's body");
    let during = moved() - before;
    eprintln!("the hogs moved {during} bytes while the victim was served");
    for (i, hog) in hogs.into_iter().enumerate() {
        match hog.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => panic!("hog {i}: {e}"),
            Err(_) => panic!("hog {i} panicked"),
        }
    }
    assert!(
        during < HOGS_WHILE_VICTIM,
        "the hogs moved {during} bytes while one small request waited"
    );
    drop(victim);
    drop(lb);
    backend.stop();
}
