//! One client connection: the state machine that reads requests, picks a
//! backend, relays the exchange and answers errors.
//!
//! A `Session` never blocks and never polls: the worker tells it about
//! readiness and calls [`Session::drive`], which makes all the progress it
//! can and returns. Backend sockets are borrowed from the `pool` for the
//! length of one exchange. `exchange` relays a request and its response,
//! `tunnel` relays an upgraded connection.

mod account;
mod answer;
mod connect;
mod exchange;
mod h2_exchange;
pub(crate) mod record;
mod timeout;
mod tunnel;

use std::io::{self, Write};
use std::net::{IpAddr, SocketAddr};
use std::task::Waker;
use std::time::{Duration, Instant};

use mio::Registry;
use mio::event::Event;
use mio::net::TcpStream;

use crate::access_log::AccessLog;
use crate::balance::{Balancer, STICKY_COOKIE};
use crate::buffer::{Buf, BufPool, HeadPool};
use crate::config::{Config, Strategy};
use crate::error::ProxyError;
use crate::health::Health;
use crate::http1::{BodyFramer, MAX_HEAD, RequestHead, ResponseHead};
use crate::http2::H2Conns;
use crate::metrics::Metrics;
use crate::net::{Read, read_edge, write_edge};
use crate::pool::Pool;
use crate::upstream::{Backend, BackendId};

/// Client read buffer: one request head fits in the common case; it grows
/// once, to just over `MAX_HEAD`, for a connection that sends a huge head.
/// Lent from the worker's `BufPool` only while the connection has bytes.
pub const CLIENT_BUF: usize = 16 * 1024;
/// Storage for one written head: a typical head plus a coalesced small
/// body (`exchange::COALESCE_MAX`). Lent from the worker's `HeadPool`.
pub const HEAD_BUF: usize = 1024 + exchange::COALESCE_MAX;
/// Backends tried for one request before giving up (each at most once).
const MAX_TRIES: usize = 8;
/// How long a closed-by-us connection is drained so the client reads our
/// answer instead of a reset.
const LINGER: Duration = Duration::from_secs(2);
/// Idle limit of an upgraded (WebSocket) connection, as HAProxy's
/// `timeout tunnel`: such connections legitimately sit quiet for minutes.
const TUNNEL_IDLE: Duration = Duration::from_secs(3600);
/// Bytes a session may write (to the client and the backend together) in
/// one `drive` before it yields its turn to the other ready connections.
/// Without it a session with a fast backend and a fast client relays until
/// its backend socket runs dry (tens of MiB on loopback) while every other
/// connection of the worker waits. Sixteen backend-buffer reads: far above
/// any small exchange, so the plain request path never yields. Measured at
/// 1 MiB bodies, 2 workers: 128 KiB cost 1.85x the CPU per request at 200
/// connections (every session's buffer in flight at once, none warm in
/// cache); 512 KiB gave the best req/s and p99 at 50 and 200.
pub const TURN_BUDGET: usize = 16 * crate::pool::UPSTREAM_BUF;

/// What a session needs from its worker while it runs.
pub struct Ctx<'a> {
    pub now: Instant,
    pub registry: &'a Registry,
    pub pool: &'a mut Pool,
    /// Shared HTTP/2 connections to backends that chose h2.
    pub h2: &'a mut H2Conns,
    /// Storage for client read buffers (`CLIENT_BUF` each).
    pub bufs: &'a mut BufPool,
    /// Storage for the heads sessions write (`HEAD_BUF` each).
    pub heads: &'a mut HeadPool,
    pub balancer: &'a mut Balancer,
    pub backends: &'a [Backend],
    /// The backends `/metrics` reports (those a reload has not removed).
    pub listed: &'a [Backend],
    /// `Host` value sent to each backend when its own name is used.
    pub host_values: &'a [String],
    pub config: &'a Config,
    /// The worker is stopping: connections close after their response.
    pub draining: bool,
    pub metrics: &'a Metrics,
    /// `--access-log`; `None` (off) costs one branch per request.
    pub access: Option<&'a mut AccessLog>,
    pub health: &'a mut Health,
}

impl Ctx<'_> {
    /// A failure blamed on backend `id`: feeds its circuit breaker.
    fn backend_failed(&mut self, id: BackendId, why: &str) {
        self.metrics.failure(id);
        if self
            .health
            .on_failure(id, why, &self.backends[id.0].label)
            .is_some()
        {
            self.metrics.set_backend_up(id, self.health.is_up(id));
        }
    }

    /// A complete exchange with backend `id`.
    fn backend_succeeded(&mut self, id: BackendId) {
        if self
            .health
            .on_success(id, &self.backends[id.0].label)
            .is_some()
        {
            self.metrics.set_backend_up(id, self.health.is_up(id));
        }
    }
}

/// Where a connection is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Waiting for (the rest of) a request head; idle keep-alive too.
    ReadHead,
    /// A new backend connection is being established.
    Connecting,
    /// Request going up, response coming down.
    Exchange,
    /// Waiting for a stream of the chosen h2 backend to come free.
    H2Queued,
    /// The same over a stream of a shared HTTP/2 connection.
    H2Exchange,
    /// After `101`: bytes relayed both ways untouched.
    Tunnel,
    /// Writing an answer of our own, then closing or reading the next request.
    Answer { close: bool },
    /// Our side is shut: what the client still sends is read and dropped,
    /// so its kernel does not reset the connection before it read our answer.
    Linger,
}

/// Response side of an exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Downward {
    AwaitHead,
    Body,
}

/// What the worker does with the session after `drive`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Waiting for an event or a timer.
    Open,
    /// Used its `TURN_BUDGET` with more to do: the worker must drive it
    /// again after the current batch of events. Edge-triggered readiness
    /// will not be reported again for bytes already in its sockets, so
    /// nothing else would.
    Yield,
    Close,
}

/// `Err(Close)` ends the session at once (peer gone, nothing to answer).
struct Close;
/// `Ok(true)`: progress was made, run the state machine again.
type Step = Result<bool, Close>;

/// The client's address as text, rendered once per connection for
/// `X-Forwarded-For` without allocating per request.
struct IpText {
    bytes: [u8; 46],
    len: usize,
}

impl IpText {
    fn new(ip: IpAddr) -> IpText {
        let mut bytes = [0u8; 46];
        let mut cursor = io::Cursor::new(&mut bytes[..]);
        let _ = write!(cursor, "{ip}");
        let len = cursor.position() as usize;
        IpText { bytes, len }
    }

    fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

pub struct Session {
    key: usize,
    generation: u64,
    /// Accepted on the `--metrics-addr` listener: serves only `/metrics`.
    metrics_only: bool,
    /// When the current request's head was complete.
    started: Instant,
    /// What the current request was, for the metrics and the logs.
    rec: record::Record,
    client: TcpStream,
    client_ip: IpText,
    readable: bool,
    writable: bool,
    /// The client's FIN (or an error) was reported; never cleared (see
    /// `read_client`).
    read_closed: bool,
    /// Bytes from the client: request heads, bodies, pipelined requests.
    inbuf: Buf,
    phase: Phase,
    req: RequestHead,
    resp: ResponseHead,
    /// New bytes arrived since the last parse attempt.
    dirty: bool,

    // Backend choice.
    pinned: Option<BackendId>,
    tries: [BackendId; MAX_TRIES],
    ntries: usize,
    backend: Option<BackendId>,
    upstream: Option<usize>,
    /// The request was already re-sent once on a fresh connection.
    retried: bool,
    /// The stream of an exchange with an h2 backend.
    h2: Option<Box<h2_exchange::H2Exchange>>,
    /// Queues this session for the loop when an h2 future can progress;
    /// made on the session's first h2 request.
    h2_waker: Option<Waker>,
    /// Opening a new connection to this h2 backend (see `h2_ready`).
    h2_opening: Option<BackendId>,

    // Request side. `inbuf` holds, in order: the head (`hold_head` bytes,
    // kept so the head can be rewritten for another backend), body bytes
    // already sent but kept for a replay (`held`), framed body bytes not yet
    // sent (`body_pending`), then anything else the client sent.
    uphead: Vec<u8>,
    uphead_pos: usize,
    hold_head: usize,
    held: usize,
    body_pending: usize,
    req_body: BodyFramer,
    /// Nothing sent to the backend has been dropped: a replay is possible.
    replayable: bool,
    /// The whole request reached the backend.
    up_done: bool,
    sent_at: Instant,

    // Response side.
    outhead: Vec<u8>,
    outhead_pos: usize,
    down: Downward,
    resp_body: BodyFramer,
    /// Strip chunk framing (an HTTP/1.0 client cannot read it).
    dechunk: bool,
    /// Framed response bytes at the front of the backend buffer, not yet sent.
    down_pending: usize,
    response_started: bool,
    close_after: bool,

    // Tunnel half-closes.
    client_eof: bool,
    upstream_eof: bool,
    shut_up: bool,
    shut_down: bool,

    // Timers.
    last_io: Instant,
    head_started: Option<Instant>,
    phase_since: Instant,
    armed: Option<Instant>,
    requests: u32,

    /// Bytes written to either peer in the current `drive` (`TURN_BUDGET`).
    turn_bytes: usize,
    /// On the worker's list of sessions to drive again (`Verdict::Yield`).
    queued: bool,
}

impl Session {
    pub fn new(
        key: usize,
        generation: u64,
        client: TcpStream,
        peer: SocketAddr,
        metrics_only: bool,
        now: Instant,
    ) -> Session {
        Session {
            key,
            generation,
            metrics_only,
            started: now,
            rec: record::Record::new(peer, now),
            client,
            client_ip: IpText::new(peer.ip()),
            // Clients usually send right after connecting: try reading at
            // once instead of waiting a poll round for the first event.
            readable: true,
            writable: true,
            read_closed: false,
            inbuf: Buf::empty(),
            phase: Phase::ReadHead,
            req: RequestHead::default(),
            resp: ResponseHead::default(),
            dirty: false,
            pinned: None,
            tries: [BackendId(0); MAX_TRIES],
            ntries: 0,
            backend: None,
            upstream: None,
            retried: false,
            h2: None,
            h2_waker: None,
            h2_opening: None,
            uphead: Vec::new(),
            uphead_pos: 0,
            hold_head: 0,
            held: 0,
            body_pending: 0,
            req_body: BodyFramer::Done,
            replayable: true,
            up_done: false,
            sent_at: now,
            outhead: Vec::new(),
            outhead_pos: 0,
            down: Downward::AwaitHead,
            resp_body: BodyFramer::Done,
            dechunk: false,
            down_pending: 0,
            response_started: false,
            close_after: false,
            client_eof: false,
            upstream_eof: false,
            shut_up: false,
            shut_down: false,
            last_io: now,
            head_started: None,
            phase_since: now,
            armed: None,
            requests: 0,
            turn_bytes: 0,
            queued: false,
        }
    }

    /// Between requests with nothing buffered: can be closed at once by a
    /// graceful stop without losing anything.
    pub fn is_idle(&self) -> bool {
        self.phase == Phase::ReadHead && self.inbuf.is_empty()
    }

    /// Puts the session on the worker's list of sessions to drive again;
    /// `false` if it already is on it.
    pub fn enqueue(&mut self) -> bool {
        !std::mem::replace(&mut self.queued, true)
    }

    /// Takes the session off that list (it is about to be driven).
    pub fn dequeue(&mut self) {
        self.queued = false;
    }

    pub fn client_mut(&mut self) -> &mut TcpStream {
        &mut self.client
    }

    /// Remembers readiness; edge-triggered events are not repeated.
    pub fn on_event(&mut self, event: &Event) {
        if event.is_readable() || event.is_read_closed() || event.is_error() {
            self.readable = true;
        }
        if event.is_read_closed() || event.is_error() {
            self.read_closed = true;
        }
        if event.is_writable() || event.is_write_closed() || event.is_error() {
            self.writable = true;
        }
    }

    /// Makes all the progress possible now, or up to `TURN_BUDGET` bytes
    /// of it (`Verdict::Yield`: the rest waits for the next turn).
    pub fn drive(&mut self, cx: &mut Ctx<'_>) -> Verdict {
        self.turn_bytes = 0;
        loop {
            let step = match self.phase {
                Phase::ReadHead => self.step_read_head(cx),
                Phase::Connecting => self.step_connecting(cx),
                Phase::H2Queued => self.step_h2_queued(cx),
                Phase::Exchange => self.step_exchange(cx),
                Phase::H2Exchange => self.step_h2(cx),
                Phase::Tunnel => self.step_tunnel(cx),
                Phase::Answer { close } => self.step_answer(cx, close),
                Phase::Linger => self.step_linger(cx),
            };
            match step {
                Ok(true) if self.turn_bytes >= TURN_BUDGET => return Verdict::Yield,
                Ok(true) => continue,
                Ok(false) => return Verdict::Open,
                Err(Close) => {
                    self.teardown(cx);
                    return Verdict::Close;
                }
            }
        }
    }

    /// Releases what the session holds besides its own socket.
    pub fn teardown(&mut self, cx: &mut Ctx<'_>) {
        self.end_cut(cx);
        self.drop_upstream(cx);
        self.inbuf.clear();
        cx.bufs.reclaim(&mut self.inbuf);
        for head in [&mut self.uphead, &mut self.outhead] {
            head.clear();
            cx.heads.reclaim(head);
        }
    }

    // ----------------------------------------------------------- request head

    /// Between requests: the written heads are sent and their storage goes
    /// back; so does the read buffer's, unless a pipelined request is
    /// already in it.
    fn enter_read_head(&mut self, cx: &mut Ctx<'_>) {
        self.phase = Phase::ReadHead;
        let pipelined = !self.inbuf.is_empty();
        self.head_started = pipelined.then_some(cx.now);
        self.rec.started = cx.now;
        self.dirty = pipelined;
        self.last_io = cx.now;
        cx.bufs.reclaim(&mut self.inbuf);
        self.uphead.clear();
        self.uphead_pos = 0;
        self.outhead.clear();
        self.outhead_pos = 0;
        cx.heads.reclaim(&mut self.uphead);
        cx.heads.reclaim(&mut self.outhead);
    }

    fn step_read_head(&mut self, cx: &mut Ctx<'_>) -> Step {
        if self.dirty {
            self.dirty = false;
            match self.req.parse(self.inbuf.data(), STICKY_COOKIE) {
                Err(e) => return self.answer_error(cx, e.into()),
                Ok(true) => return self.start_request(cx),
                // Room for one byte past the limit, so an oversized head is
                // seen as such rather than as a full buffer.
                Ok(false) if self.inbuf.is_full() => self.inbuf.grow_to(MAX_HEAD + 1),
                Ok(false) => {}
            }
        }
        match self.read_client(cx)? {
            Read::Data => {
                if self.head_started.is_none() {
                    self.head_started = Some(cx.now);
                    self.rec.started = cx.now;
                }
                self.dirty = true;
                Ok(true)
            }
            // A client may close between requests; mid-head it gave up.
            Read::Eof => Err(Close),
            Read::Blocked => Ok(false),
        }
    }

    fn start_request(&mut self, cx: &mut Ctx<'_>) -> Step {
        self.head_started = None;
        self.started = cx.now;
        self.hold_head = self.req.head_len;
        self.rec.begin(cx.now, self.req.head_len);
        if cx.access.is_some() {
            // The head leaves the buffer once the response starts.
            self.rec.capture(self.inbuf.data());
        }
        if self.is_scrape(cx) {
            return self.answer_metrics(cx);
        }
        if self.metrics_only {
            return self.answer_error(cx, ProxyError::NotFound);
        }
        self.pinned = match cx.config.strategy {
            Strategy::Sticky => self
                .req
                .sticky
                .and_then(|id| cx.balancer.backend_for_sticky(id)),
            _ => None,
        };
        self.ntries = 0;
        self.retried = false;
        self.held = 0;
        self.body_pending = 0;
        self.req_body = BodyFramer::new(self.req.body());
        self.replayable = true;
        self.up_done = false;
        self.down = Downward::AwaitHead;
        self.down_pending = 0;
        self.response_started = false;
        self.upstream_eof = false;
        self.close_after = !self.req.keep_alive || cx.draining;
        // `outhead` is empty here: `enter_read_head` left it so.
        self.choose_backend(cx)
    }
    // ------------------------------------------------------------- client io

    /// One read from the client, into storage lent for it; the storage goes
    /// back if nothing came and nothing is buffered.
    #[inline]
    fn read_client(&mut self, cx: &mut Ctx<'_>) -> Result<Read, Close> {
        if !self.readable {
            return Ok(Read::Blocked);
        }
        self.read_client_now(cx)
    }

    fn read_client_now(&mut self, cx: &mut Ctx<'_>) -> Result<Read, Close> {
        cx.bufs.lend(&mut self.inbuf);
        let read = read_edge(
            &mut self.inbuf,
            &self.client,
            &mut self.readable,
            self.read_closed,
        );
        let read = read.map_err(|_| Close)?;
        match read {
            Read::Data => self.last_io = cx.now,
            Read::Eof | Read::Blocked => cx.bufs.reclaim(&mut self.inbuf),
        }
        Ok(read)
    }
}

/// `-t`: prints a head as it crosses the proxy, one line per field.
fn trace_head(direction: &str, backend: &str, head: &[u8]) {
    let text = String::from_utf8_lossy(head);
    for line in text.split("\r\n").filter(|l| !l.is_empty()) {
        crate::info!("trace {direction} {backend}: {line}");
    }
}
