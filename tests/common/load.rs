//! Helpers for tests that change the backend set under load (reload,
//! DNS): client threads that count who answered and every failure, and a
//! backend with a slow endpoint to keep a request in flight.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use super::{Client, wait_until};

/// Client threads over fresh and keep-alive connections, counting who
/// answered and every failure.
pub struct Load {
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<Vec<(Instant, String)>>>,
    failures: Arc<Mutex<Vec<String>>>,
    threads: Vec<JoinHandle<()>>,
}

impl Load {
    pub fn start(port: u16) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let failures = Arc::new(Mutex::new(Vec::new()));
        let threads = (0..4)
            .map(|i| {
                let (stop, seen, failures) = (stop.clone(), seen.clone(), failures.clone());
                thread::spawn(move || {
                    let keep_alive = i % 2 == 0;
                    let mut client: Option<Client> = None;
                    while !stop.load(Ordering::Relaxed) {
                        let c = match client.take() {
                            Some(c) => c,
                            None => match Client::try_connect(port) {
                                Ok(c) => c,
                                Err(e) => {
                                    failures.lock().unwrap().push(format!("connect: {e}"));
                                    continue;
                                }
                            },
                        };
                        let mut c = c;
                        match c.try_request("GET", "/", &[], b"") {
                            Ok(r) if r.status == 200 => {
                                let who = r.header("x-origin").unwrap_or("?").to_string();
                                seen.lock().unwrap().push((Instant::now(), who));
                                if keep_alive {
                                    client = Some(c);
                                }
                            }
                            Ok(r) => failures
                                .lock()
                                .unwrap()
                                .push(format!("status {}", r.status)),
                            Err(e) => failures.lock().unwrap().push(format!("request: {e}")),
                        }
                        thread::sleep(Duration::from_millis(2));
                    }
                })
            })
            .collect();
        Load {
            stop,
            seen,
            failures,
            threads,
        }
    }

    /// Answers per origin since `since`.
    pub fn counts_since(&self, since: Instant) -> HashMap<String, usize> {
        let mut counts = HashMap::new();
        for (at, who) in self.seen.lock().unwrap().iter() {
            if *at >= since {
                *counts.entry(who.clone()).or_default() += 1;
            }
        }
        counts
    }

    /// Waits until `name` answered since `since`.
    pub fn wait_for(&self, name: &str, since: Instant, timeout: Duration) -> bool {
        wait_until(timeout, || self.counts_since(since).contains_key(name))
    }

    pub fn finish(mut self) -> Vec<String> {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            t.join().expect("load thread");
        }
        self.failures.lock().unwrap().clone()
    }
}

/// A backend whose `/slow` answers after 2 s, saying on `arrived` when
/// one came in; every other request (health probes) is answered at once.
/// Counts the requests that are not probes.
pub struct SlowOrigin {
    pub addr: SocketAddr,
    pub requests: Arc<AtomicU32>,
    pub arrived: std::sync::mpsc::Receiver<()>,
}

impl SlowOrigin {
    pub fn start(addr: SocketAddr) -> SlowOrigin {
        let listener = std::net::TcpListener::bind(addr).expect("bind");
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(AtomicU32::new(0));
        let (tx, arrived) = std::sync::mpsc::channel();
        let counted = requests.clone();
        thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (tx, counted) = (tx.clone(), counted.clone());
                thread::spawn(move || {
                    let mut reader = BufReader::new(stream.try_clone().unwrap());
                    let mut stream = stream;
                    loop {
                        let mut head = String::new();
                        loop {
                            let mut line = String::new();
                            match reader.read_line(&mut line) {
                                Ok(0) | Err(_) => return,
                                Ok(_) if line == "\r\n" => break,
                                Ok(_) => head.push_str(&line),
                            }
                        }
                        if !head.contains("load_balancer-health") {
                            counted.fetch_add(1, Ordering::SeqCst);
                        }
                        if head.starts_with("GET /slow") {
                            let _ = tx.send(());
                            thread::sleep(Duration::from_secs(2));
                        }
                        let answer =
                            "HTTP/1.1 200 OK\r\nX-Origin: slow\r\nContent-Length: 2\r\n\r\nok";
                        if stream.write_all(answer.as_bytes()).is_err() {
                            return;
                        }
                    }
                });
            }
        });
        SlowOrigin {
            addr,
            requests,
            arrived,
        }
    }
}
