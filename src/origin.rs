//! The test origin: a small blocking HTTP/1.1 server with one std thread per
//! connection, used by the demo, the integration tests and the benchmarks.
//! It owns a listener, its connection threads and a few counters; its
//! endpoints (`/bytes/N`, `/chunked/N`, `/echo`, `/ws`, ...) exercise every
//! framing the proxy must relay. A test and demo fixture, not for production.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::{self, BufWriter, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use mio::net::TcpListener;
use mio::{Events, Interest, Poll, Token, Waker};
use socket2::{Domain, Socket, Type};

/// Per-connection read buffer; fixed so a connection's memory is bounded.
const BUF_SIZE: usize = 128 * 1024;
/// Compact the read buffer before reading into less room than this.
const MIN_READ: usize = 16 * 1024;
/// Largest request head (and trailer section) accepted.
const MAX_HEAD: usize = 64 * 1024;
const MAX_HEADERS: usize = 100;
/// Longest chunk-size line accepted (extensions included).
const MAX_CHUNK_LINE: usize = 4096;
/// Idle limit when no `keep_alive_timeout` is configured: long enough that no
/// test or benchmark meets it, short enough that leaked connections end.
const IDLE_DEFAULT: Duration = Duration::from_secs(300);
/// Bound on any single read inside a request and on any write.
const IO_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a graceful close waits for the peer's FIN (see `linger_close`).
const LINGER: Duration = Duration::from_secs(2);
/// `/delay` refuses longer sleeps so a typo cannot park a thread for hours.
const MAX_DELAY_MS: u64 = 600_000;
const DELAY_SLICE: Duration = Duration::from_millis(10);
/// How often the accept thread re-checks the stop flag without a wake-up.
const ACCEPT_TICK: Duration = Duration::from_millis(100);
const ACCEPT_BATCH: usize = 256;
/// Connection threads only parse and copy; a small stack lets benchmarks
/// open thousands of connections.
const THREAD_STACK: usize = 256 * 1024;
const LISTEN_BACKLOG: i32 = 1024;
/// Body bytes written per `write_all` when streaming generated bodies.
const PATTERN_BLOCK: usize = 64 * 1024;
/// Chunk sizes of `/chunked/N`, cycled: tiny, odd and large on purpose.
const CHUNK_SIZES: [u64; 8] = [1, 100, 8192, 7, 65536, 3000, 2, 16384];
const WS_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

const LISTENER: Token = Token(0);
const WAKER: Token = Token(1);

/// `PATTERN[i] = b'a' + i % 26`, long enough that any 26-aligned offset still
/// leaves `PATTERN_BLOCK` bytes: generated bodies are slices of it.
static PATTERN: [u8; PATTERN_BLOCK + 26] = build_pattern();

const fn build_pattern() -> [u8; PATTERN_BLOCK + 26] {
    let mut p = [0u8; PATTERN_BLOCK + 26];
    let mut i = 0;
    while i < p.len() {
        p[i] = b'a' + (i % 26) as u8;
        i += 1;
    }
    p
}

/// How to start an [`Origin`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OriginConfig {
    /// Sent in `X-Origin` and in `GET /`'s body, so tests see who answered.
    pub name: String,
    /// `127.0.0.1:0` for an ephemeral port.
    pub addr: SocketAddr,
    /// `Some(n)`: every response carries `Keep-Alive: timeout=n` and a
    /// connection idle for n seconds is closed.
    pub keep_alive_timeout: Option<u32>,
    /// `Some(m)`: `Keep-Alive: ..., max=m` and the m-th response on a
    /// connection closes it.
    pub keep_alive_max: Option<u32>,
}

impl OriginConfig {
    /// Ephemeral port on 127.0.0.1, no keep-alive limits.
    pub fn new(name: &str) -> Self {
        OriginConfig {
            name: name.to_string(),
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            keep_alive_timeout: None,
            keep_alive_max: None,
        }
    }
}

/// State shared by the handle, the accept thread and connection threads.
struct Shared {
    name: String,
    keep_alive_timeout: Option<u32>,
    keep_alive_max: Option<u32>,
    connections: AtomicU64,
    requests: AtomicU64,
    health: AtomicU16,
    stopped: AtomicBool,
    /// Clones of the open sockets, so `stop` can shut them down under
    /// threads blocked in `read`.
    open: Mutex<HashMap<u64, TcpStream>>,
}

impl Shared {
    fn open(&self) -> MutexGuard<'_, HashMap<u64, TcpStream>> {
        // A poisoned map is still a valid map of sockets.
        self.open.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn stopped(&self) -> bool {
        self.stopped.load(Ordering::Acquire)
    }

    fn idle_timeout(&self) -> Duration {
        // A zero read timeout is an error for the socket API; 1 ms is "at once".
        self.keep_alive_timeout
            .map_or(IDLE_DEFAULT, |n| Duration::from_secs(u64::from(n)))
            .max(Duration::from_millis(1))
    }

    fn keep_alive_header(&self) -> Option<String> {
        match (self.keep_alive_timeout, self.keep_alive_max) {
            (None, None) => None,
            (Some(t), None) => Some(format!("timeout={t}")),
            (None, Some(m)) => Some(format!("max={m}")),
            (Some(t), Some(m)) => Some(format!("timeout={t}, max={m}")),
        }
    }
}

/// A running test origin. Dropping it stops it.
pub struct Origin {
    addr: SocketAddr,
    shared: Arc<Shared>,
    waker: Waker,
    acceptor: Mutex<Option<JoinHandle<()>>>,
    /// After `stop`, a bound socket that never listens: connects are still
    /// refused, but the kernel hands the port to no `bind(0)` while this
    /// origin lives. Without it a test that stopped a backend could find
    /// another test's listener answering on the same port.
    port_hold: Mutex<Option<Socket>>,
}

impl Origin {
    /// Binds and listens, spawns the accept thread and returns at once.
    pub fn start(cfg: OriginConfig) -> io::Result<Origin> {
        let listener = bind(cfg.addr)?;
        let addr = listener.local_addr()?;
        let mut listener = TcpListener::from_std(listener);
        let poll = Poll::new()?;
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)?;
        let waker = Waker::new(poll.registry(), WAKER)?;
        let shared = Arc::new(Shared {
            name: cfg.name.clone(),
            keep_alive_timeout: cfg.keep_alive_timeout,
            keep_alive_max: cfg.keep_alive_max,
            connections: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            health: AtomicU16::new(200),
            stopped: AtomicBool::new(false),
            open: Mutex::new(HashMap::new()),
        });
        let acceptor = thread::Builder::new()
            .name(format!("origin-{}-accept", cfg.name))
            .spawn({
                let shared = Arc::clone(&shared);
                move || accept_loop(poll, listener, &shared)
            })?;
        Ok(Origin {
            addr,
            shared,
            waker,
            acceptor: Mutex::new(Some(acceptor)),
            port_hold: Mutex::new(None),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// TCP connections that carried a counted request so far (see
    /// `requests`).
    pub fn connections(&self) -> u64 {
        self.shared.connections.load(Ordering::Relaxed)
    }

    /// Requests answered so far, `/health` and the load balancer's own
    /// health probes (`User-Agent: load_balancer-health`) excluded (counted as the response
    /// head is written, so it is up to date once a client sees the response).
    pub fn requests(&self) -> u64 {
        self.shared.requests.load(Ordering::Relaxed)
    }

    /// TCP connections open now (probes included): what a test watches to
    /// see a peer's pooled connections close.
    pub fn open_connections(&self) -> usize {
        self.shared.open().len()
    }

    /// Status answered on `GET /health` (default 200).
    pub fn set_health(&self, status: u16) {
        self.shared.health.store(status, Ordering::Relaxed);
    }

    /// Stops accepting (the port is closed when this returns) and shuts down
    /// every open connection: a dead backend. The port stays reserved until
    /// the origin is dropped; an origin started on the same address still
    /// binds it. Idempotent.
    pub fn stop(&self) {
        self.shut();
        let mut hold = self.port_hold.lock().unwrap_or_else(|e| e.into_inner());
        if hold.is_none() {
            *hold = hold_port(self.addr).ok();
        }
    }

    fn shut(&self) {
        self.shared.stopped.store(true, Ordering::Release);
        // Without the wake-up the accept thread still notices within a tick.
        let _ = self.waker.wake();
        let acceptor = self
            .acceptor
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(handle) = acceptor {
            let _ = handle.join();
        }
        for (_, stream) in self.shared.open().drain() {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }
}

impl Drop for Origin {
    fn drop(&mut self) {
        self.shut();
    }
}

/// Binds `addr` without listening. SO_REUSEADDR lets it share the port
/// with the stopped listener's TIME_WAIT connections and with a restarted
/// origin; automatic port selection still skips a port bound by anyone.
fn hold_port(addr: SocketAddr) -> io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    Ok(socket)
}

/// socket2 rather than std so the backlog is explicit (benchmarks open many
/// connections at once) and SO_REUSEADDR lets a stopped origin's port be
/// rebound by a restarted one.
fn bind(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(LISTEN_BACKLOG)?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

fn accept_loop(mut poll: Poll, listener: TcpListener, shared: &Arc<Shared>) {
    let mut events = Events::with_capacity(8);
    let mut next_id = 0u64;
    while !shared.stopped() {
        if !accept_batch(&listener, shared, &mut next_id) {
            // Batch full: more may be waiting, so accept again before polling.
            continue;
        }
        if poll.poll(&mut events, Some(ACCEPT_TICK)).is_err() {
            thread::sleep(ACCEPT_TICK);
        }
    }
}

/// Accepts until the listener would block (true) or the batch is used up.
fn accept_batch(listener: &TcpListener, shared: &Arc<Shared>, next_id: &mut u64) -> bool {
    for _ in 0..ACCEPT_BATCH {
        match listener.accept() {
            Ok((stream, _)) => {
                *next_id += 1;
                admit(stream.into(), shared, *next_id);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            // EMFILE and friends: back off; the tick retries.
            Err(_) => {
                thread::sleep(Duration::from_millis(10));
                return true;
            }
        }
    }
    false
}

fn admit(stream: TcpStream, shared: &Arc<Shared>, id: u64) {
    // mio accepts non-blocking; the connection threads want blocking I/O.
    if stream.set_nonblocking(false).is_err() {
        return;
    }
    let _ = stream.set_nodelay(true);
    let Ok(registered) = stream.try_clone() else {
        return;
    };
    {
        // Checked under the lock so `stop` cannot miss a connection.
        let mut open = shared.open();
        if shared.stopped() {
            let _ = stream.shutdown(Shutdown::Both);
            return;
        }
        open.insert(id, registered);
    }
    let worker = Arc::clone(shared);
    let spawned = thread::Builder::new()
        .name(format!("origin-{}-conn", shared.name))
        .stack_size(THREAD_STACK)
        .spawn(move || {
            serve(stream, &worker);
            worker.open().remove(&id);
        });
    if spawned.is_err()
        && let Some(stream) = shared.open().remove(&id)
    {
        let _ = stream.shutdown(Shutdown::Both);
    }
}

/// One connection: requests in order until either side ends it. An I/O or
/// protocol error just drops the socket.
fn serve(stream: TcpStream, shared: &Shared) {
    let Ok(mut conn) = Conn::new(stream) else {
        return;
    };
    if conn_loop(&mut conn, shared).is_ok() {
        conn.linger_close();
    }
}

fn conn_loop(conn: &mut Conn, shared: &Shared) -> io::Result<()> {
    let mut served = 0u32;
    let mut counted = false;
    loop {
        let req = match read_request(conn, shared)? {
            Incoming::Closed => return Ok(()),
            Incoming::Bad(status) => return reject(conn, shared, status),
            Incoming::Request(req) => req,
        };
        served = served.saturating_add(1);
        let mut x = Exchange::new(&req, shared, served);
        // A connection counts once it carries a counted request: health
        // probes of the balancer under test must not skew what tests count.
        if x.counted && !counted {
            counted = true;
            shared.connections.fetch_add(1, Ordering::Relaxed);
        }
        match respond(conn, shared, &req, &mut x) {
            // A malformed body read before any response: still answerable.
            Err(e) if e.kind() == io::ErrorKind::InvalidData && !x.started => {
                return reject(conn, shared, 400);
            }
            result => result?,
        }
        conn.out.flush()?;
        if !x.keep_alive {
            return Ok(());
        }
    }
}

// ---------------------------------------------------------------------------
// Connection I/O

/// A connection's socket with a fixed read buffer and a buffered writer.
/// Ranges handed out by `take`/`read_line` index `buf` and stay valid until
/// the next `fill`.
struct Conn {
    stream: TcpStream,
    out: BufWriter<TcpStream>,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    read_timeout: Option<Duration>,
}

impl Conn {
    fn new(stream: TcpStream) -> io::Result<Conn> {
        let writer = stream.try_clone()?;
        writer.set_write_timeout(Some(IO_TIMEOUT))?;
        Ok(Conn {
            stream,
            out: BufWriter::with_capacity(PATTERN_BLOCK, writer),
            buf: vec![0; BUF_SIZE],
            start: 0,
            end: 0,
            read_timeout: None,
        })
    }

    fn buffered(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    fn consume(&mut self, n: usize) {
        self.start += n.min(self.end - self.start);
    }

    /// Consumes up to `n` buffered bytes and returns where they are.
    fn take(&mut self, n: usize) -> Range<usize> {
        let n = n.min(self.end - self.start);
        let range = self.start..self.start + n;
        self.start += n;
        range
    }

    fn set_read_timeout(&mut self, timeout: Duration) -> io::Result<()> {
        // Skips the syscall when unchanged: this runs once per request.
        if self.read_timeout != Some(timeout) {
            self.stream.set_read_timeout(Some(timeout))?;
            self.read_timeout = Some(timeout);
        }
        Ok(())
    }

    /// One `read` into the buffer; 0 means the peer closed.
    fn fill(&mut self) -> io::Result<usize> {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        } else if self.buf.len() - self.end < MIN_READ && self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.end == self.buf.len() {
            return Err(invalid("read buffer full"));
        }
        // A read with a timeout is not restarted after a signal or a
        // stop/continue of the (test) process: EINTR is no peer error.
        let n = loop {
            match self.stream.read(&mut self.buf[self.end..]) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                other => break other?,
            }
        };
        self.end += n;
        Ok(n)
    }

    /// Reads until at least `n` (small) bytes are buffered.
    fn ensure(&mut self, n: usize) -> io::Result<()> {
        while self.end - self.start < n {
            if self.fill()? == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
        }
        Ok(())
    }

    /// Consumes one line and returns it without its CRLF (or bare LF).
    fn read_line(&mut self, max: usize) -> io::Result<Range<usize>> {
        loop {
            if let Some(i) = self.buffered().iter().position(|&b| b == b'\n') {
                let line = self.start..self.start + i;
                self.start += i + 1;
                let end = if i > 0 && self.buf[line.end - 1] == b'\r' {
                    line.end - 1
                } else {
                    line.end
                };
                return Ok(line.start..end);
            }
            if self.buffered().len() >= max {
                return Err(invalid("line too long"));
            }
            if self.fill()? == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
        }
    }

    /// Closes without resetting: half-close, then read until the peer's FIN
    /// (bounded), because closing with unread input sends an RST that can
    /// destroy the response still in flight.
    fn linger_close(&mut self) {
        let _ = self.out.flush();
        let _ = self.stream.shutdown(Shutdown::Write);
        let deadline = Instant::now() + LINGER;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || self.stream.set_read_timeout(Some(left)).is_err() {
                return;
            }
            match self.stream.read(&mut self.buf) {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    }
}

fn invalid(what: &'static str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what)
}

// ---------------------------------------------------------------------------
// Requests

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BodyKind {
    Length(u64),
    Chunked,
}

/// The `User-Agent` of the load balancer's active health probes.
const HEALTH_PROBE_AGENT: &str = "load_balancer-health";

struct Request {
    method: String,
    path: String,
    http10: bool,
    headers: Vec<(String, Vec<u8>)>,
    /// The head exactly as received, request line through the blank line.
    head: Vec<u8>,
    body: BodyKind,
}

impl Request {
    fn from_parsed(parsed: &httparse::Request, raw: &[u8]) -> Option<Request> {
        let headers: Vec<(String, Vec<u8>)> = parsed
            .headers
            .iter()
            .map(|h| (h.name.to_string(), h.value.to_vec()))
            .collect();
        // httparse skips blank lines before the request line; /echo should not.
        let start = raw
            .iter()
            .position(|&b| b != b'\r' && b != b'\n')
            .unwrap_or(0);
        let mut req = Request {
            method: parsed.method?.to_string(),
            path: parsed.path?.to_string(),
            http10: parsed.version? == 0,
            headers,
            head: raw[start..].to_vec(),
            body: BodyKind::Length(0),
        };
        req.body = req.body_kind()?;
        Some(req)
    }

    fn values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> {
        self.headers
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .filter_map(|(_, v)| std::str::from_utf8(v).ok())
    }

    fn header<'a>(&'a self, name: &'a str) -> Option<&'a str> {
        self.values(name).next().map(str::trim)
    }

    /// Whether a comma-separated header (any occurrence) lists `token`.
    fn has_token(&self, name: &str, token: &str) -> bool {
        self.values(name)
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    }

    /// RFC 9112 §6.3: chunked last wins over Content-Length; any other
    /// transfer coding, or disagreeing lengths, make the request unreadable.
    fn body_kind(&self) -> Option<BodyKind> {
        let codings: Vec<&str> = self
            .values("transfer-encoding")
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .collect();
        if let Some(last) = codings.last() {
            return last
                .eq_ignore_ascii_case("chunked")
                .then_some(BodyKind::Chunked);
        }
        let mut length = None;
        for value in self.values("content-length").flat_map(|v| v.split(',')) {
            let value = value.trim();
            if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            let n: u64 = value.parse().ok()?;
            if length.is_some_and(|l| l != n) {
                return None;
            }
            length = Some(n);
        }
        Some(BodyKind::Length(length.unwrap_or(0)))
    }

    fn has_body(&self) -> bool {
        self.body != BodyKind::Length(0)
    }
}

enum Incoming {
    Request(Request),
    /// Peer closed (or went quiet mid-head) between requests.
    Closed,
    /// Answer with this status and close.
    Bad(u16),
}

fn read_request(conn: &mut Conn, shared: &Shared) -> io::Result<Incoming> {
    loop {
        let pending = conn.buffered();
        if !pending.is_empty() {
            let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
            let mut parsed = httparse::Request::new(&mut headers);
            match parsed.parse(pending) {
                Ok(httparse::Status::Complete(len)) if len > MAX_HEAD => {
                    return Ok(Incoming::Bad(431));
                }
                Ok(httparse::Status::Complete(len)) => {
                    let req = Request::from_parsed(&parsed, &pending[..len]);
                    conn.consume(len);
                    return Ok(req.map_or(Incoming::Bad(400), Incoming::Request));
                }
                Ok(httparse::Status::Partial) if pending.len() >= MAX_HEAD => {
                    return Ok(Incoming::Bad(431));
                }
                Ok(httparse::Status::Partial) => {}
                Err(httparse::Error::TooManyHeaders) => return Ok(Incoming::Bad(431)),
                Err(_) => return Ok(Incoming::Bad(400)),
            }
        }
        // Between requests the idle limit applies, inside one the I/O bound.
        let timeout = if conn.buffered().is_empty() {
            shared.idle_timeout()
        } else {
            IO_TIMEOUT
        };
        conn.set_read_timeout(timeout)?;
        if conn.fill()? == 0 {
            return Ok(Incoming::Closed);
        }
    }
}

/// Decodes a request body (Content-Length or chunked) straight out of the
/// connection buffer, one piece at a time, storing nothing.
enum BodyReader {
    Length(u64),
    ChunkSize,
    ChunkData(u64),
    ChunkEnd,
    Trailers(usize),
    Done,
}

impl BodyReader {
    fn new(kind: BodyKind) -> Self {
        match kind {
            BodyKind::Length(n) => BodyReader::Length(n),
            BodyKind::Chunked => BodyReader::ChunkSize,
        }
    }

    /// The next piece of decoded body as a range of `conn.buf`, or `None` at
    /// the end. Returns as soon as any body bytes are available.
    fn next(&mut self, conn: &mut Conn) -> io::Result<Option<Range<usize>>> {
        conn.set_read_timeout(IO_TIMEOUT)?;
        loop {
            match *self {
                BodyReader::Done => return Ok(None),
                BodyReader::Length(0) => *self = BodyReader::Done,
                BodyReader::Length(left) => {
                    let piece = take_upto(conn, left)?;
                    *self = BodyReader::Length(left - piece.len() as u64);
                    return Ok(Some(piece));
                }
                BodyReader::ChunkData(left) => {
                    let piece = take_upto(conn, left)?;
                    let rest = left - piece.len() as u64;
                    *self = if rest == 0 {
                        BodyReader::ChunkEnd
                    } else {
                        BodyReader::ChunkData(rest)
                    };
                    return Ok(Some(piece));
                }
                BodyReader::ChunkSize => {
                    let line = conn.read_line(MAX_CHUNK_LINE)?;
                    *self = match parse_chunk_size(&conn.buf[line])? {
                        0 => BodyReader::Trailers(0),
                        n => BodyReader::ChunkData(n),
                    };
                }
                BodyReader::ChunkEnd => {
                    if !conn.read_line(2)?.is_empty() {
                        return Err(invalid("chunk data longer than its size"));
                    }
                    *self = BodyReader::ChunkSize;
                }
                BodyReader::Trailers(seen) => {
                    let line = conn.read_line(MAX_CHUNK_LINE)?;
                    let seen = seen + line.len() + 2;
                    *self = if line.is_empty() {
                        BodyReader::Done
                    } else if seen > MAX_HEAD {
                        return Err(invalid("trailers too large"));
                    } else {
                        BodyReader::Trailers(seen)
                    };
                }
            }
        }
    }
}

fn take_upto(conn: &mut Conn, left: u64) -> io::Result<Range<usize>> {
    conn.ensure(1)?;
    let n = usize::try_from(left).unwrap_or(usize::MAX);
    Ok(conn.take(n))
}

fn parse_chunk_size(line: &[u8]) -> io::Result<u64> {
    let size = line.split(|&b| b == b';').next().unwrap_or_default();
    let size = size.trim_ascii();
    if size.is_empty() || size.len() > 16 || !size.iter().all(u8::is_ascii_hexdigit) {
        return Err(invalid("bad chunk size"));
    }
    let text = std::str::from_utf8(size).map_err(|_| invalid("bad chunk size"))?;
    u64::from_str_radix(text, 16).map_err(|_| invalid("bad chunk size"))
}

/// Sends `100 Continue` when the client waits for it before its body.
fn continue_if_expected(conn: &mut Conn, req: &Request) -> io::Result<()> {
    if !req.http10 && req.has_body() && req.has_token("expect", "100-continue") {
        conn.out.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
        conn.out.flush()?;
    }
    Ok(())
}

/// Reads and discards a body nobody wants, keeping the connection in sync.
fn drain(conn: &mut Conn, req: &Request) -> io::Result<()> {
    continue_if_expected(conn, req)?;
    let mut body = BodyReader::new(req.body);
    while body.next(conn)?.is_some() {}
    Ok(())
}

// ---------------------------------------------------------------------------
// Responses

/// What one response may do to its connection.
struct Exchange {
    keep_alive: bool,
    http10: bool,
    head_only: bool,
    /// False for `/health` and for protocol errors.
    counted: bool,
    /// A final response head has been written.
    started: bool,
}

impl Exchange {
    fn new(req: &Request, shared: &Shared, served: u32) -> Self {
        let wanted = if req.http10 {
            req.has_token("connection", "keep-alive")
        } else {
            !req.has_token("connection", "close")
        };
        let under_max = shared.keep_alive_max.is_none_or(|max| served < max);
        Exchange {
            keep_alive: wanted && under_max,
            http10: req.http10,
            head_only: req.method == "HEAD",
            counted: route_path(&req.path) != "/health"
                && req.header("user-agent") != Some(HEALTH_PROBE_AGENT),
            started: false,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    Length(u64),
    Chunked,
    /// Body ends when the connection does.
    Close,
    /// 1xx, 204, 304: no body and no length.
    None,
    /// 101: the connection changes protocol; no Connection/Keep-Alive from us.
    Upgrade,
}

fn write_head(
    conn: &mut Conn,
    shared: &Shared,
    x: &mut Exchange,
    status: u16,
    framing: Framing,
    extra: &[(&str, &str)],
) -> io::Result<()> {
    if framing == Framing::Close {
        x.keep_alive = false;
    }
    let mut h = String::with_capacity(256);
    let _ = write!(h, "HTTP/1.1 {status} {}\r\n", reason(status));
    let _ = write!(h, "X-Origin: {}\r\n", shared.name);
    match framing {
        Framing::Length(n) => {
            let _ = write!(h, "Content-Length: {n}\r\n");
        }
        Framing::Chunked => h.push_str("Transfer-Encoding: chunked\r\n"),
        Framing::Close | Framing::None | Framing::Upgrade => {}
    }
    if framing != Framing::Upgrade {
        if !x.keep_alive {
            h.push_str("Connection: close\r\n");
        } else if x.http10 {
            h.push_str("Connection: keep-alive\r\n");
        }
        if let Some(ka) = shared.keep_alive_header() {
            let _ = write!(h, "Keep-Alive: {ka}\r\n");
        }
    }
    for (name, value) in extra {
        let _ = write!(h, "{name}: {value}\r\n");
    }
    h.push_str("\r\n");
    if x.counted {
        shared.requests.fetch_add(1, Ordering::Relaxed);
    }
    x.started = true;
    conn.out.write_all(h.as_bytes())
}

/// A whole response with a small in-memory body.
fn simple(
    conn: &mut Conn,
    shared: &Shared,
    x: &mut Exchange,
    status: u16,
    body: &str,
) -> io::Result<()> {
    if !status_has_body(status) {
        return write_head(conn, shared, x, status, Framing::None, &[]);
    }
    write_head(
        conn,
        shared,
        x,
        status,
        Framing::Length(body.len() as u64),
        &[],
    )?;
    if !x.head_only {
        conn.out.write_all(body.as_bytes())?;
    }
    Ok(())
}

fn status_has_body(status: u16) -> bool {
    !(100..200).contains(&status) && status != 204 && status != 304
}

/// Answers an unreadable request and closes.
fn reject(conn: &mut Conn, shared: &Shared, status: u16) -> io::Result<()> {
    let mut x = Exchange {
        keep_alive: false,
        http10: false,
        head_only: false,
        counted: false,
        started: false,
    };
    simple(conn, shared, &mut x, status, "bad request\n")?;
    conn.out.flush()
}

fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        101 => "Switching Protocols",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        206 => "Partial Content",
        301 => "Moved Permanently",
        302 => "Found",
        304 => "Not Modified",
        307 => "Temporary Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        408 => "Request Timeout",
        413 => "Content Too Large",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Status",
    }
}

/// Writes bytes `from..from + len` of the endless `abc..z` pattern.
fn write_pattern(out: &mut impl Write, mut from: u64, mut len: u64) -> io::Result<()> {
    while len > 0 {
        let take = len.min(PATTERN_BLOCK as u64);
        let offset = (from % 26) as usize;
        out.write_all(&PATTERN[offset..offset + take as usize])?;
        from += take;
        len -= take;
    }
    Ok(())
}

/// Writes one chunk of chunked framing (empty data is skipped: it would end
/// the body).
fn write_chunk(out: &mut impl Write, data: &[u8]) -> io::Result<()> {
    if data.is_empty() {
        return Ok(());
    }
    write!(out, "{:x}\r\n", data.len())?;
    out.write_all(data)?;
    out.write_all(b"\r\n")
}

// ---------------------------------------------------------------------------
// Endpoints

enum Route {
    Root,
    Bytes(u64),
    Chunked(u64),
    Close(u64),
    Delay(u64),
    Status(u16),
    Echo,
    Sink,
    Health,
    Ws,
    BadArgument,
    NotFound,
}

fn route_path(target: &str) -> &str {
    target.split('?').next().unwrap_or_default()
}

fn route(target: &str) -> Route {
    let path = route_path(target);
    // None: another prefix; Some(None): this prefix, but no plain number
    // (`parse` alone would accept a leading `+`).
    let number = |prefix: &str| {
        let arg = path.strip_prefix(prefix)?;
        let digits = arg.bytes().all(|b| b.is_ascii_digit());
        Some(arg.parse::<u64>().ok().filter(|_| digits))
    };
    match path {
        "/" => return Route::Root,
        "/echo" => return Route::Echo,
        "/sink" => return Route::Sink,
        "/health" => return Route::Health,
        "/ws" => return Route::Ws,
        _ => {}
    }
    let parsed = if let Some(n) = number("/bytes/") {
        n.map(Route::Bytes)
    } else if let Some(n) = number("/chunked/") {
        n.map(Route::Chunked)
    } else if let Some(n) = number("/close/") {
        n.map(Route::Close)
    } else if let Some(n) = number("/delay/") {
        n.filter(|&ms| ms <= MAX_DELAY_MS).map(Route::Delay)
    } else if let Some(n) = number("/status/") {
        n.filter(|s| (100..=999).contains(s))
            .map(|s| Route::Status(s as u16))
    } else {
        return Route::NotFound;
    };
    parsed.unwrap_or(Route::BadArgument)
}

fn respond(conn: &mut Conn, shared: &Shared, req: &Request, x: &mut Exchange) -> io::Result<()> {
    let route = route(&req.path);
    match route {
        Route::Echo => return echo(conn, shared, req, x),
        Route::Sink => return sink(conn, shared, req, x),
        Route::Ws => return websocket(conn, shared, req, x),
        _ => drain(conn, req)?,
    }
    match route {
        Route::Root => simple(
            conn,
            shared,
            x,
            200,
            &format!("hello from {}\n", shared.name),
        ),
        Route::Bytes(n) => {
            write_head(conn, shared, x, 200, Framing::Length(n), &[])?;
            if !x.head_only {
                write_pattern(&mut conn.out, 0, n)?;
            }
            Ok(())
        }
        Route::Chunked(n) => chunked_bytes(conn, shared, x, n),
        Route::Close(n) => {
            write_head(conn, shared, x, 200, Framing::Close, &[])?;
            if !x.head_only {
                write_pattern(&mut conn.out, 0, n)?;
            }
            Ok(())
        }
        Route::Delay(ms) => {
            pause(shared, Duration::from_millis(ms))?;
            simple(conn, shared, x, 200, &format!("delayed {ms}\n"))
        }
        Route::Status(status) => simple(conn, shared, x, status, &format!("status {status}\n")),
        Route::Health => {
            let status = shared.health.load(Ordering::Relaxed);
            simple(conn, shared, x, status, "health\n")
        }
        Route::BadArgument => simple(conn, shared, x, 400, "bad request\n"),
        Route::NotFound => simple(conn, shared, x, 404, "not found\n"),
        Route::Echo | Route::Sink | Route::Ws => Ok(()),
    }
}

/// Sleeps in slices so a stopped origin does not answer late.
fn pause(shared: &Shared, total: Duration) -> io::Result<()> {
    let deadline = Instant::now() + total;
    loop {
        if shared.stopped() {
            return Err(io::ErrorKind::ConnectionAborted.into());
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(());
        }
        thread::sleep(left.min(DELAY_SLICE));
    }
}

fn chunked_bytes(conn: &mut Conn, shared: &Shared, x: &mut Exchange, n: u64) -> io::Result<()> {
    // HTTP/1.0 has no chunked coding: fall back to a close-delimited body.
    if x.http10 {
        write_head(conn, shared, x, 200, Framing::Close, &[])?;
        if !x.head_only {
            write_pattern(&mut conn.out, 0, n)?;
        }
        return Ok(());
    }
    write_head(
        conn,
        shared,
        x,
        200,
        Framing::Chunked,
        &[("Trailer", "X-Trailer")],
    )?;
    if x.head_only {
        return Ok(());
    }
    let mut sent = 0u64;
    for &size in CHUNK_SIZES.iter().cycle() {
        if sent == n {
            break;
        }
        let size = size.min(n - sent);
        write!(conn.out, "{size:x}\r\n")?;
        write_pattern(&mut conn.out, sent, size)?;
        conn.out.write_all(b"\r\n")?;
        sent += size;
    }
    conn.out.write_all(b"0\r\nX-Trailer: done\r\n\r\n")
}

/// Echoes the head as received, then the body as it arrives, flushing each
/// piece so the client sees streaming, not store-and-forward.
fn echo(conn: &mut Conn, shared: &Shared, req: &Request, x: &mut Exchange) -> io::Result<()> {
    continue_if_expected(conn, req)?;
    let framing = match req.body {
        BodyKind::Length(n) => Framing::Length(req.head.len() as u64 + n),
        BodyKind::Chunked if x.http10 => Framing::Close,
        BodyKind::Chunked => Framing::Chunked,
    };
    write_head(conn, shared, x, 200, framing, &[])?;
    let send = |out: &mut BufWriter<TcpStream>, data: &[u8]| -> io::Result<()> {
        if x.head_only {
            return Ok(());
        }
        if framing == Framing::Chunked {
            write_chunk(out, data)?;
        } else {
            out.write_all(data)?;
        }
        out.flush()
    };
    send(&mut conn.out, &req.head)?;
    let mut body = BodyReader::new(req.body);
    while let Some(piece) = body.next(conn)? {
        send(&mut conn.out, &conn.buf[piece])?;
    }
    if framing == Framing::Chunked && !x.head_only {
        conn.out.write_all(b"0\r\n\r\n")?;
    }
    Ok(())
}

/// Counts and hashes the body without keeping it.
fn sink(conn: &mut Conn, shared: &Shared, req: &Request, x: &mut Exchange) -> io::Result<()> {
    continue_if_expected(conn, req)?;
    let mut count = 0u64;
    let mut hash = FNV_OFFSET;
    let mut body = BodyReader::new(req.body);
    while let Some(piece) = body.next(conn)? {
        count += piece.len() as u64;
        hash = fnv1a_update(hash, &conn.buf[piece]);
    }
    simple(conn, shared, x, 200, &format!("{count} {hash:016x}\n"))
}

/// FNV-1a 64, continued from `hash` (start from `FNV_OFFSET`).
fn fnv1a_update(mut hash: u64, data: &[u8]) -> u64 {
    for &b in data {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(FNV_PRIME);
    }
    hash
}

// ---------------------------------------------------------------------------
// WebSocket

fn websocket(conn: &mut Conn, shared: &Shared, req: &Request, x: &mut Exchange) -> io::Result<()> {
    let key = req.header("sec-websocket-key").filter(|k| !k.is_empty());
    let valid = req.method == "GET"
        && !req.http10
        && !req.has_body()
        && req.has_token("upgrade", "websocket");
    let Some(key) = key.filter(|_| valid) else {
        drain(conn, req)?;
        return simple(conn, shared, x, 400, "bad websocket handshake\n");
    };
    let accept = websocket_accept(key);
    let extra = [
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Accept", accept.as_str()),
    ];
    write_head(conn, shared, x, 101, Framing::Upgrade, &extra)?;
    conn.out.flush()?;
    // HTTP is over on this connection whatever happens next.
    x.keep_alive = false;
    conn.set_read_timeout(shared.idle_timeout())?;
    echo_frames(conn)
}

/// `Sec-WebSocket-Accept` for a client key (RFC 6455 §4.2.2).
fn websocket_accept(key: &str) -> String {
    let mut input = Vec::with_capacity(key.len() + WS_GUID.len());
    input.extend_from_slice(key.as_bytes());
    input.extend_from_slice(WS_GUID.as_bytes());
    base64(&sha1(&input))
}

/// Echoes frames (opcode, FIN and payload kept, mask removed) until a close
/// frame, which is answered in kind. Payloads stream through the buffer, so
/// any frame size works in bounded memory.
fn echo_frames(conn: &mut Conn) -> io::Result<()> {
    loop {
        conn.ensure(2)?;
        let (b0, b1) = (conn.buffered()[0], conn.buffered()[1]);
        let opcode = b0 & 0x0f;
        let masked = b1 & 0x80 != 0;
        let ext = match b1 & 0x7f {
            126 => 2,
            127 => 8,
            _ => 0,
        };
        let header_len = 2 + ext + if masked { 4 } else { 0 };
        conn.ensure(header_len)?;
        let header = &conn.buffered()[..header_len];
        let len = match ext {
            2 => u64::from(u16::from_be_bytes([header[2], header[3]])),
            8 => u64::from_be_bytes(header[2..10].try_into().unwrap_or([0xff; 8])),
            _ => u64::from(b1 & 0x7f),
        };
        let control = opcode >= 8;
        let known = matches!(opcode, 0..=2 | 8..=10);
        let fin = b0 & 0x80 != 0;
        // Client frames must be masked (RFC 6455 §5.1); RSV bits unused.
        if !masked || !known || b0 & 0x70 != 0 || len >> 63 != 0 || (control && (len > 125 || !fin))
        {
            return close_frame(conn, 1002);
        }
        let mut mask = [0u8; 4];
        mask.copy_from_slice(&header[header_len - 4..]);
        conn.consume(header_len);
        write_frame_header(&mut conn.out, b0, len)?;
        let mut offset = 0u64;
        while offset < len {
            let piece = take_upto(conn, len - offset)?;
            for (i, b) in conn.buf[piece.clone()].iter_mut().enumerate() {
                *b ^= mask[((offset + i as u64) % 4) as usize];
            }
            offset += piece.len() as u64;
            conn.out.write_all(&conn.buf[piece])?;
        }
        conn.out.flush()?;
        if opcode == 8 {
            return Ok(());
        }
    }
}

fn write_frame_header(out: &mut impl Write, b0: u8, len: u64) -> io::Result<()> {
    match len {
        0..=125 => out.write_all(&[b0, len as u8]),
        126..=0xffff => {
            out.write_all(&[b0, 126])?;
            out.write_all(&(len as u16).to_be_bytes())
        }
        _ => {
            out.write_all(&[b0, 127])?;
            out.write_all(&len.to_be_bytes())
        }
    }
}

fn close_frame(conn: &mut Conn, code: u16) -> io::Result<()> {
    write_frame_header(&mut conn.out, 0x88, 2)?;
    conn.out.write_all(&code.to_be_bytes())?;
    conn.out.flush()
}

/// SHA-1 (FIPS 180-4), only for the WebSocket handshake.
fn sha1(data: &[u8]) -> [u8; 20] {
    let mut h: [u32; 5] = [
        0x6745_2301,
        0xefcd_ab89,
        0x98ba_dcfe,
        0x1032_5476,
        0xc3d2_e1f0,
    ];
    let bit_len = (data.len() as u64).wrapping_mul(8);
    let mut msg = data.to_vec();
    msg.push(0x80);
    while msg.len() % 64 != 56 {
        msg.push(0);
    }
    msg.extend_from_slice(&bit_len.to_be_bytes());
    for block in msg.chunks_exact(64) {
        let mut w = [0u32; 80];
        for (word, bytes) in w.iter_mut().zip(block.chunks_exact(4)) {
            *word = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
        }
        for i in 16..80 {
            w[i] = (w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16]).rotate_left(1);
        }
        let [mut a, mut b, mut c, mut d, mut e] = h;
        for (i, &wi) in w.iter().enumerate() {
            let (f, k) = match i {
                0..=19 => ((b & c) | (!b & d), 0x5a82_7999),
                20..=39 => (b ^ c ^ d, 0x6ed9_eba1),
                40..=59 => ((b & c) | (b & d) | (c & d), 0x8f1b_bcdc),
                _ => (b ^ c ^ d, 0xca62_c1d6),
            };
            let t = a
                .rotate_left(5)
                .wrapping_add(f)
                .wrapping_add(e)
                .wrapping_add(k)
                .wrapping_add(wi);
            e = d;
            d = c;
            c = b.rotate_left(30);
            b = a;
            a = t;
        }
        for (state, v) in h.iter_mut().zip([a, b, c, d, e]) {
            *state = state.wrapping_add(v);
        }
    }
    let mut out = [0u8; 20];
    for (bytes, word) in out.chunks_exact_mut(4).zip(h) {
        bytes.copy_from_slice(&word.to_be_bytes());
    }
    out
}

/// Standard base64 with padding (RFC 4648 §4).
fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for group in data.chunks(3) {
        let b = [
            group[0],
            *group.get(1).unwrap_or(&0),
            *group.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for (i, shift) in [18, 12, 6, 0].into_iter().enumerate() {
            if i <= group.len() {
                out.push(char::from(ALPHABET[((n >> shift) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn sha1_known_vectors() {
        assert_eq!(hex(&sha1(b"")), "da39a3ee5e6b4b0d3255bfef95601890afd80709");
        assert_eq!(
            hex(&sha1(b"abc")),
            "a9993e364706816aba3e25717850c26c9cd0d89d"
        );
        let long = b"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
        assert_eq!(hex(&sha1(long)), "84983e441c3bd26ebaae4aa1f95129e5e54670f1");
        assert_eq!(
            hex(&sha1(&[b'a'; 1_000_000])),
            "34aa973cd4c4daa4f61eeb2bdbad27316534016f"
        );
    }

    #[test]
    fn base64_rfc4648_vectors() {
        let cases = [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ];
        for (input, want) in cases {
            assert_eq!(base64(input.as_bytes()), want, "{input:?}");
        }
    }

    #[test]
    fn websocket_accept_matches_rfc6455_example() {
        assert_eq!(
            websocket_accept("dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn fnv1a_known_vectors() {
        assert_eq!(fnv1a_update(FNV_OFFSET, b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a_update(FNV_OFFSET, b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a_update(FNV_OFFSET, b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn chunk_size_parsing() {
        assert_eq!(parse_chunk_size(b"1a").ok(), Some(26));
        assert_eq!(parse_chunk_size(b"A; ext=1").ok(), Some(10));
        assert!(parse_chunk_size(b"").is_err());
        assert!(parse_chunk_size(b"+5").is_err());
        assert!(parse_chunk_size(b"12345678901234567").is_err());
    }

    fn start(cfg: OriginConfig) -> Origin {
        Origin::start(cfg).expect("origin starts")
    }

    fn connect(origin: &Origin) -> TcpStream {
        let stream = TcpStream::connect(origin.addr()).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        stream
    }

    /// Writes `request` and reads until the origin closes.
    fn exchange(origin: &Origin, request: &[u8]) -> String {
        let mut stream = connect(origin);
        stream.write_all(request).expect("write");
        let mut out = Vec::new();
        stream.read_to_end(&mut out).expect("read to close");
        String::from_utf8_lossy(&out).into_owned()
    }

    fn pattern(n: usize) -> String {
        (0..n).map(|i| char::from(b'a' + (i % 26) as u8)).collect()
    }

    #[test]
    fn root_answers_with_name_and_counts() {
        let origin = start(OriginConfig::new("alpha"));
        let text = exchange(
            &origin,
            b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        );
        assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
        assert!(text.contains("X-Origin: alpha\r\n"), "{text}");
        assert!(text.contains("Content-Length: 17\r\n"), "{text}");
        assert!(text.ends_with("\r\n\r\nhello from alpha\n"), "{text}");
        assert_eq!(origin.requests(), 1);
        assert_eq!(origin.connections(), 1);
        assert_eq!(origin.name(), "alpha");
    }

    #[test]
    fn pipelined_requests_answer_in_order() {
        let origin = start(OriginConfig::new("p"));
        let request = b"GET /bytes/30 HTTP/1.1\r\nHost: x\r\n\r\n\
            POST /status/204 HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc\
            HEAD /bytes/5 HTTP/1.1\r\nHost: x\r\n\r\n\
            GET /chunked/3 HTTP/1.1\r\nHost: x\r\n\r\n\
            GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
        let text = exchange(&origin, request);
        let statuses: Vec<&str> = text.split("HTTP/1.1 ").skip(1).map(|r| &r[..3]).collect();
        assert_eq!(statuses, ["200", "204", "200", "200", "200"], "{text}");
        assert!(text.contains(&format!("\r\n\r\n{}HTTP/1.1 204", pattern(30))));
        assert!(text.contains("Content-Length: 5\r\n"));
        assert!(
            text.contains("1\r\na\r\n2\r\nbc\r\n0\r\nX-Trailer: done\r\n\r\n"),
            "{text}"
        );
        assert!(text.ends_with("health\n"));
        assert_eq!(origin.requests(), 4, "health is not counted");
    }

    #[test]
    fn echo_and_sink_read_both_body_framings() {
        let origin = start(OriginConfig::new("e"));
        let head = "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\n";
        let text = exchange(
            &origin,
            format!("{head}helloGET / HTTP/1.1\r\nConnection: close\r\n\r\n").as_bytes(),
        );
        let want_len = head.len() + 5;
        assert!(
            text.contains(&format!("Content-Length: {want_len}\r\n\r\n{head}hello")),
            "{text}"
        );
        assert!(text.ends_with("hello from e\n"), "{text}");

        let request =
            b"POST /sink HTTP/1.1\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n\
            3\r\nfoo\r\n3;x=y\r\nbar\r\n0\r\nX-T: 1\r\n\r\n";
        let text = exchange(&origin, request);
        assert!(text.ends_with("\r\n\r\n6 85944171f73967e8\n"), "{text}");
    }

    #[test]
    fn expect_continue_precedes_the_final_response() {
        let origin = start(OriginConfig::new("c"));
        let mut stream = connect(&origin);
        stream
            .write_all(b"PUT /sink HTTP/1.1\r\nContent-Length: 1\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n")
            .expect("write head");
        let mut interim = [0u8; 25];
        stream.read_exact(&mut interim).expect("100 Continue");
        assert_eq!(&interim, b"HTTP/1.1 100 Continue\r\n\r\n");
        stream.write_all(b"a").expect("write body");
        let mut rest = String::new();
        stream.read_to_string(&mut rest).expect("read");
        assert!(rest.starts_with("HTTP/1.1 200 OK"), "{rest}");
        assert!(rest.ends_with("1 af63dc4c8601ec8c\n"), "{rest}");
    }

    #[test]
    fn keep_alive_limits_are_advertised_and_enforced() {
        let origin = start(OriginConfig {
            keep_alive_timeout: Some(7),
            keep_alive_max: Some(2),
            ..OriginConfig::new("k")
        });
        let text = exchange(
            &origin,
            b"GET / HTTP/1.1\r\n\r\nGET / HTTP/1.1\r\n\r\nGET / HTTP/1.1\r\n\r\n",
        );
        assert_eq!(
            text.matches("HTTP/1.1 200").count(),
            2,
            "third request unanswered: {text}"
        );
        assert_eq!(text.matches("Keep-Alive: timeout=7, max=2\r\n").count(), 2);
        assert_eq!(text.matches("Connection: close\r\n").count(), 1);
    }

    #[test]
    fn http10_closes_unless_asked_and_bad_requests_get_400() {
        let origin = start(OriginConfig::new("o"));
        let text = exchange(&origin, b"GET /chunked/2 HTTP/1.0\r\n\r\n");
        assert!(text.contains("Connection: close\r\n"), "{text}");
        assert!(!text.contains("chunked"), "no chunked to 1.0: {text}");
        assert!(text.ends_with("\r\n\r\nab"), "{text}");

        let text = exchange(&origin, b"GARBAGE\x01 / HTTP/1.1\r\n\r\n");
        assert!(text.starts_with("HTTP/1.1 400 "), "{text}");
        let text = exchange(
            &origin,
            b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
        );
        assert!(text.starts_with("HTTP/1.1 400 "), "{text}");
        let text = exchange(
            &origin,
            b"POST /sink HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        );
        assert!(text.starts_with("HTTP/1.1 400 "), "{text}");
        let mut huge = b"GET / HTTP/1.1\r\nX: ".to_vec();
        huge.extend_from_slice(&[b'a'; MAX_HEAD]);
        huge.extend_from_slice(b"\r\n\r\n");
        let text = exchange(&origin, &huge);
        assert!(text.starts_with("HTTP/1.1 431 "), "{text}");
    }

    #[test]
    fn websocket_echoes_frames_and_closes() {
        let origin = start(OriginConfig::new("w"));
        let mut stream = connect(&origin);
        stream
            .write_all(b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
            .expect("handshake");
        let mask = [1u8, 2, 3, 4];
        let masked: Vec<u8> = b"hi!"
            .iter()
            .zip(mask.iter().cycle())
            .map(|(b, m)| b ^ m)
            .collect();
        let mut frame = vec![0x81, 0x83];
        frame.extend_from_slice(&mask);
        frame.extend_from_slice(&masked);
        frame.extend_from_slice(&[0x88, 0x82, 0, 0, 0, 0, 0x03, 0xe8]);
        stream.write_all(&frame).expect("frames");
        let mut out = Vec::new();
        stream.read_to_end(&mut out).expect("read to close");
        let text = String::from_utf8_lossy(&out);
        assert!(
            text.starts_with("HTTP/1.1 101 Switching Protocols\r\n"),
            "{text}"
        );
        assert!(text.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"));
        assert!(
            out.ends_with(&[0x81, 3, b'h', b'i', b'!', 0x88, 2, 0x03, 0xe8]),
            "{out:?}"
        );
    }

    #[test]
    fn stop_closes_the_port_and_open_connections() {
        let origin = start(OriginConfig::new("s"));
        let addr = origin.addr();
        let mut idle = connect(&origin);
        idle.write_all(b"GET / HTTP/1.1\r\n\r\n").expect("write");
        let mut first = [0u8; 12];
        idle.read_exact(&mut first).expect("response");
        origin.stop();
        let mut rest = Vec::new();
        idle.read_to_end(&mut rest).expect("EOF soon after stop");
        assert!(
            TcpStream::connect(addr).is_err(),
            "port still open after stop"
        );

        let again = start(OriginConfig {
            addr,
            ..OriginConfig::new("s2")
        });
        assert_eq!(again.addr(), addr, "a stopped origin's port can be reused");
    }

    #[test]
    fn a_stopped_port_is_refused_and_reserved_until_drop() {
        let origin = start(OriginConfig::new("s"));
        let addr = origin.addr();
        origin.stop();
        let err = TcpStream::connect(addr).expect_err("refused after stop");
        assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused);
        let plain_bind = || {
            let s = Socket::new(Domain::IPV4, Type::STREAM, None).expect("socket");
            s.bind(&addr.into())
        };
        assert!(plain_bind().is_err(), "port free for others after stop");
        drop(origin);
        assert!(plain_bind().is_ok(), "port still held after drop");
    }
}
