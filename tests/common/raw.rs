//! A raw origin for the differential test: records exactly the bytes it
//! receives on each connection, reads them with the strict reader
//! (`strict.rs`), answers every complete request with a fixed small response
//! (or, for `/r/<n>`, with scripted raw bytes), and reports per test case
//! what arrived.
//!
//! One service thread runs a mio loop, so that [`RawOrigin::finish`] can
//! drain every byte the kernel holds for it: the proxy has written its
//! bytes before it answers (or closes) the client, so after the client saw
//! the outcome of a case, one drain sees everything the proxy sent for it,
//! with no timing guess. Included by `tests/differential.rs` with `#[path]`.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::sync::{Arc, mpsc};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token, Waker};

use crate::strict::{self, Kind, Message, Parsed};

const LISTENER: Token = Token(0);
const WAKER: Token = Token(1);
const FIRST_CONN: usize = 2;
/// The answer to every request that has no script.
const FIXED: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
const FIXED_HEAD: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n";
/// The answer to bytes the strict reader refuses: a status no proxy uses
/// for itself, so that the client can tell it from a refusal by the proxy,
/// and an answer at all, so that the proxy has no reason to send the
/// request again on another connection.
pub const REJECTED_STATUS: u16 = 555;
const REJECT: &[u8] =
    b"HTTP/1.1 555 Origin Rejected\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
/// The balancer's probe path; probe connections are left out of reports.
pub const PROBE_PATH: &str = "/__probe";

/// One step of a scripted response.
#[derive(Debug, Clone)]
pub enum Step {
    Send(Vec<u8>),
    /// Written one byte per send, so that the proxy reads it in pieces.
    Trickle(Vec<u8>),
    /// Waits for [`RawOrigin::release`].
    Gate,
    /// Half-closes the connection once everything before it is written
    /// (reading goes on, so that whatever the proxy still sends is seen).
    Close,
}

/// What one backend connection received during a case.
#[derive(Debug, Clone)]
pub struct ConnReport {
    pub received: Vec<u8>,
    /// Complete requests, in order.
    pub requests: Vec<Message>,
    /// Bytes of an incomplete request left at the end.
    pub pending: usize,
    /// Where the strict reader gave up, if it did.
    pub error: Option<String>,
    /// The peer closed the connection.
    pub closed: bool,
}

enum Command {
    Begin(mpsc::Sender<()>),
    Finish(Duration, mpsc::Sender<Vec<ConnReport>>),
    /// Shuts down the write side of every connection and waits (bounded)
    /// for the proxy to close them: nothing pooled survives into the next
    /// case.
    Reset(Duration, mpsc::Sender<()>),
    Release,
    Stop,
}

pub struct RawOrigin {
    addr: SocketAddr,
    commands: mpsc::Sender<Command>,
    waker: Arc<Waker>,
    thread: Option<JoinHandle<()>>,
}

impl RawOrigin {
    /// Listens on 127.0.0.1:0; `/r/<n>` is answered with `scripts[n]`.
    pub fn start(scripts: Vec<Vec<Step>>) -> io::Result<RawOrigin> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let (tx, rx) = mpsc::channel();
        let mut service = Service {
            poll,
            listener: TcpListener::from_std(listener),
            conns: Vec::new(),
            scripts,
            gate_open: false,
            commands: rx,
            finish: None,
            reset: None,
        };
        service
            .poll
            .registry()
            .register(&mut service.listener, LISTENER, Interest::READABLE)?;
        let thread = thread::Builder::new()
            .name("raw-origin".into())
            .spawn(move || service.run())?;
        Ok(RawOrigin {
            addr,
            commands: tx,
            waker,
            thread: Some(thread),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    fn send(&self, command: Command) {
        let _ = self.commands.send(command);
        let _ = self.waker.wake();
    }

    /// Starts a case: reports count from here.
    pub fn begin(&self) {
        let (tx, rx) = mpsc::channel();
        self.send(Command::Begin(tx));
        let _ = rx.recv_timeout(Duration::from_secs(5));
    }

    /// Drains what the kernel holds, waits up to `eof_wait` for connections
    /// left in the middle of a request to be closed, and reports every
    /// connection that received bytes since [`begin`](Self::begin).
    pub fn finish(&self, eof_wait: Duration) -> Vec<ConnReport> {
        let (tx, rx) = mpsc::channel();
        self.send(Command::Finish(eof_wait, tx));
        rx.recv_timeout(eof_wait + Duration::from_secs(5))
            .unwrap_or_default()
    }

    pub fn reset(&self, wait: Duration) {
        let (tx, rx) = mpsc::channel();
        self.send(Command::Reset(wait, tx));
        let _ = rx.recv_timeout(wait + Duration::from_secs(5));
    }

    /// Lets a script waiting at a [`Step::Gate`] go on.
    pub fn release(&self) {
        self.send(Command::Release);
    }
}

impl Drop for RawOrigin {
    fn drop(&mut self) {
        self.send(Command::Stop);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
    /// Start of the current case in `buf`.
    mark: usize,
    /// Bytes read as complete requests.
    parsed: usize,
    requests: Vec<Message>,
    error: Option<String>,
    eof: bool,
    out: Vec<u8>,
    script: VecDeque<Step>,
    close_when_flushed: bool,
    write_closed: bool,
}

impl Conn {
    fn is_probe(&self) -> bool {
        let prefix = format!("GET {PROBE_PATH} ");
        let n = self.buf.len().min(prefix.len());
        n > 0 && self.buf[..n] == prefix.as_bytes()[..n]
    }

    fn mid_request(&self) -> bool {
        self.buf.len() > self.parsed && !self.eof && self.error.is_none()
    }

    fn report(&self) -> ConnReport {
        ConnReport {
            received: self.buf[self.mark..].to_vec(),
            requests: self.requests.clone(),
            pending: self.buf.len() - self.parsed,
            error: self.error.clone(),
            closed: self.eof,
        }
    }
}

struct Service {
    poll: Poll,
    listener: TcpListener,
    conns: Vec<Option<Conn>>,
    scripts: Vec<Vec<Step>>,
    gate_open: bool,
    commands: mpsc::Receiver<Command>,
    finish: Option<(Instant, mpsc::Sender<Vec<ConnReport>>)>,
    reset: Option<(Instant, mpsc::Sender<()>)>,
}

impl Service {
    fn run(mut self) {
        let mut events = Events::with_capacity(64);
        loop {
            let timeout = [
                &self.finish.as_ref().map(|f| f.0),
                &self.reset.as_ref().map(|r| r.0),
            ]
            .into_iter()
            .flatten()
            .min()
            .map(|d| d.saturating_duration_since(Instant::now()));
            if let Err(e) = self.poll.poll(&mut events, timeout)
                && e.kind() != io::ErrorKind::Interrupted
            {
                return;
            }
            for event in events.iter() {
                match event.token() {
                    LISTENER => self.accept(),
                    WAKER => {}
                    Token(t) => self.serve(t - FIRST_CONN),
                }
            }
            while let Ok(command) = self.commands.try_recv() {
                match command {
                    Command::Begin(reply) => {
                        self.drain();
                        // A release no script waited for must not open the
                        // next case's gate.
                        self.gate_open = false;
                        for conn in self.conns.iter_mut().flatten() {
                            conn.mark = conn.buf.len();
                            conn.requests.clear();
                        }
                        let _ = reply.send(());
                    }
                    Command::Finish(wait, reply) => {
                        self.drain();
                        self.finish = Some((Instant::now() + wait, reply));
                    }
                    Command::Reset(wait, reply) => {
                        for conn in self.conns.iter_mut().flatten() {
                            let _ = conn.stream.shutdown(Shutdown::Write);
                        }
                        self.drain();
                        self.reset = Some((Instant::now() + wait, reply));
                    }
                    Command::Release => {
                        self.gate_open = true;
                        for i in 0..self.conns.len() {
                            self.serve(i);
                        }
                    }
                    Command::Stop => return,
                }
            }
            self.answer_waiters();
        }
    }

    /// Replies to a pending finish or reset once its condition holds or
    /// its deadline passed.
    fn answer_waiters(&mut self) {
        let now = Instant::now();
        let open = |conns: &Vec<Option<Conn>>, f: fn(&Conn) -> bool| {
            conns.iter().flatten().any(|c| !c.is_probe() && f(c))
        };
        if let Some((deadline, _)) = &self.finish
            && (now >= *deadline || !open(&self.conns, Conn::mid_request))
        {
            self.drain();
            let reports = self
                .conns
                .iter()
                .flatten()
                .filter(|c| !c.is_probe() && c.buf.len() > c.mark)
                .map(Conn::report)
                .collect();
            if let Some((_, reply)) = self.finish.take() {
                let _ = reply.send(reports);
            }
            self.forget_broken();
        }
        if let Some((deadline, _)) = &self.reset
            && (now >= *deadline || !open(&self.conns, |c| !c.eof))
        {
            for slot in self.conns.iter_mut() {
                if slot.as_ref().is_some_and(|c| !c.is_probe()) {
                    *slot = None;
                }
            }
            if let Some((_, reply)) = self.reset.take() {
                let _ = reply.send(());
            }
        }
    }

    /// Connections a case left unusable are closed, so the next case does
    /// not inherit them; closed ones are forgotten.
    fn forget_broken(&mut self) {
        for slot in self.conns.iter_mut() {
            let Some(conn) = slot else { continue };
            let broken = conn.error.is_some() || conn.buf.len() > conn.parsed;
            if conn.eof || conn.write_closed || broken {
                let _ = conn.stream.shutdown(Shutdown::Both);
                *slot = None;
            }
        }
    }

    fn drain(&mut self) {
        self.accept();
        for i in 0..self.conns.len() {
            self.serve(i);
        }
    }

    fn accept(&mut self) {
        while let Ok((mut stream, _)) = self.listener.accept() {
            let index = self
                .conns
                .iter()
                .position(Option::is_none)
                .unwrap_or(self.conns.len());
            let token = Token(FIRST_CONN + index);
            let _ = stream.set_nodelay(true);
            let interest = Interest::READABLE | Interest::WRITABLE;
            if self
                .poll
                .registry()
                .register(&mut stream, token, interest)
                .is_err()
            {
                continue;
            }
            let conn = Conn {
                stream,
                buf: Vec::new(),
                mark: 0,
                parsed: 0,
                requests: Vec::new(),
                error: None,
                eof: false,
                out: Vec::new(),
                script: VecDeque::new(),
                close_when_flushed: false,
                write_closed: false,
            };
            if self.reset.is_some() {
                let _ = conn.stream.shutdown(Shutdown::Write);
            }
            if index == self.conns.len() {
                self.conns.push(Some(conn));
            } else {
                self.conns[index] = Some(conn);
            }
        }
    }

    fn serve(&mut self, index: usize) {
        let Some(Some(conn)) = self.conns.get_mut(index) else {
            return;
        };
        read_available(conn);
        loop {
            run_script(conn, &mut self.gate_open);
            if !conn.script.is_empty() || conn.error.is_some() || conn.close_when_flushed {
                break;
            }
            match strict::parse(&conn.buf[conn.parsed..], Kind::Request, conn.eof) {
                Parsed::Complete(m) => {
                    conn.parsed += m.len;
                    respond(conn, &m, &self.scripts);
                    conn.requests.push(m);
                }
                Parsed::Partial => break,
                Parsed::Malformed(e) => {
                    conn.error = Some(e);
                    conn.out.extend_from_slice(REJECT);
                    conn.close_when_flushed = true;
                }
            }
        }
        flush(conn);
    }
}

fn read_available(conn: &mut Conn) {
    let mut chunk = [0u8; 64 * 1024];
    while !conn.eof {
        match conn.stream.read(&mut chunk) {
            Ok(0) => conn.eof = true,
            Ok(n) => conn.buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => conn.eof = true,
        }
    }
}

fn respond(conn: &mut Conn, m: &Message, scripts: &[Vec<Step>]) {
    let script = m
        .target()
        .strip_prefix("/r/")
        .and_then(|n| n.parse::<usize>().ok())
        .and_then(|n| scripts.get(n));
    match script {
        Some(steps) => conn.script.extend(steps.iter().cloned()),
        None if m.method() == "HEAD" => conn.out.extend_from_slice(FIXED_HEAD),
        None => conn.out.extend_from_slice(FIXED),
    }
}

fn run_script(conn: &mut Conn, gate_open: &mut bool) {
    while let Some(step) = conn.script.pop_front() {
        match step {
            Step::Send(bytes) => conn.out.extend_from_slice(&bytes),
            Step::Trickle(bytes) => {
                flush(conn);
                for (i, byte) in bytes.iter().enumerate() {
                    if !conn.out.is_empty() {
                        // The socket is full: the rest goes out as it drains.
                        conn.out.extend_from_slice(&bytes[i..]);
                        break;
                    }
                    conn.out.push(*byte);
                    flush(conn);
                }
            }
            Step::Gate if *gate_open => *gate_open = false,
            Step::Gate => {
                conn.script.push_front(Step::Gate);
                flush(conn);
                return;
            }
            Step::Close => conn.close_when_flushed = true,
        }
    }
}

fn flush(conn: &mut Conn) {
    while !conn.out.is_empty() {
        match conn.stream.write(&conn.out) {
            Ok(0) => break,
            Ok(n) => {
                conn.out.drain(..n);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
            Err(_) => {
                conn.out.clear();
                break;
            }
        }
    }
    if conn.close_when_flushed && conn.out.is_empty() && !conn.write_closed {
        let _ = conn.stream.shutdown(Shutdown::Write);
        conn.write_closed = true;
    }
}
