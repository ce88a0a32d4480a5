//! A TCP relay that can go silent: connections it accepted before
//! `freeze` stop carrying bytes either way and stay open, as when a
//! backend's host vanishes without a FIN (power loss, a dropped NAT entry).
//! Later connections relay normally.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::thread;
use std::time::Duration;

pub struct Relay {
    port: u16,
    accepted: Arc<AtomicUsize>,
    frozen_below: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl Relay {
    pub fn start(target: u16) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").expect("relay bind");
        let port = listener.local_addr().expect("addr").port();
        let relay = Relay {
            port,
            accepted: Arc::default(),
            frozen_below: Arc::default(),
            stop: Arc::default(),
        };
        let (accepted, frozen_below, stop) = (
            Arc::clone(&relay.accepted),
            Arc::clone(&relay.frozen_below),
            Arc::clone(&relay.stop),
        );
        thread::spawn(move || {
            for client in listener.incoming() {
                if stop.load(SeqCst) {
                    return;
                }
                let (Ok(client), Ok(server)) = (client, TcpStream::connect(("127.0.0.1", target)))
                else {
                    continue;
                };
                let index = accepted.fetch_add(1, SeqCst);
                for (from, to) in [
                    (client.try_clone(), server.try_clone()),
                    (server.try_clone(), client.try_clone()),
                ] {
                    let (Ok(from), Ok(to)) = (from, to) else {
                        continue;
                    };
                    let (frozen_below, stop) = (Arc::clone(&frozen_below), Arc::clone(&stop));
                    thread::spawn(move || pump(from, to, index, &frozen_below, &stop));
                }
            }
        });
        relay
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Silences every connection accepted so far.
    pub fn freeze(&self) {
        self.frozen_below.store(self.accepted.load(SeqCst), SeqCst);
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, SeqCst);
        // Wakes the accept loop so it sees `stop`.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

/// Copies `from` to `to` until either ends; a frozen connection's bytes
/// are read and dropped, so the sender sees no backpressure either.
fn pump(
    mut from: TcpStream,
    mut to: TcpStream,
    index: usize,
    frozen_below: &AtomicUsize,
    stop: &AtomicBool,
) {
    let _ = from.set_read_timeout(Some(Duration::from_millis(50)));
    let mut buf = [0u8; 16 * 1024];
    while !stop.load(SeqCst) {
        match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) if index >= frozen_below.load(SeqCst) => {
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
            Ok(_) => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => break,
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}
