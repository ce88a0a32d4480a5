//! The active prober: one thread per worker that sends `GET <health-path>` to
//! every backend each interval and publishes verdicts in [`ProbeResults`].
//! Blocking I/O with timeouts on its own thread, so the event loop never waits
//! on a probe; it changes no health state itself. Spawned by the worker via
//! `Health::start_probes`; read lock-free by `Health::apply_probes`.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rustls::{AlertDescription, CertificateError, ClientConfig, ClientConnection};

use crate::config::HealthConfig;
use crate::upstream::{Backend, BackendId};

/// Name of the probe thread, as seen in `top -H` and core dumps.
const THREAD_NAME: &str = "lb-health";
/// A status line longer than this is not one a health endpoint sends.
const MAX_STATUS_LINE: usize = 1024;
/// Floors for zero durations, which the config rejects but which would
/// otherwise spin the thread or make the socket calls fail.
const MIN_INTERVAL: Duration = Duration::from_millis(1);
const MIN_TIMEOUT: Duration = Duration::from_millis(1);

/// What one probe of one backend found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A status line arrived in time; healthy iff 200.
    Status(u16),
    /// TCP connect succeeded and nothing more was checked (kept for
    /// verdicts stored by tests; every backend now gets the HTTP probe).
    Connected,
    ConnectRefused,
    /// Any other connect error (unreachable, reset, …).
    ConnectFailed,
    /// Connect or status line not done within the probe timeout.
    TimedOut,
    /// The backend closed before sending a whole status line.
    Closed,
    MalformedStatus,
    /// An I/O error after connecting.
    Io,
    /// The TLS handshake failed; proxied traffic would fail the same way.
    Tls(TlsFailure),
}

/// Why a probe's TLS handshake failed, in the words an operator needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsFailure {
    UnknownIssuer,
    Expired,
    WrongName,
    /// The backend wants a client certificate and got none (TLS 1.3 says
    /// so only after our side of the handshake, at the first read).
    ClientCertRequired,
    /// The backend refused the client certificate we presented.
    ClientCertRejected,
    Other,
}

impl Outcome {
    pub fn is_ok(self) -> bool {
        matches!(self, Outcome::Status(200) | Outcome::Connected)
    }

    /// 0 is "no verdict"; statuses are offset past the other codes because
    /// httparse accepts any three digits, `000` included.
    fn encode(self) -> u16 {
        match self {
            Outcome::Connected => 1,
            Outcome::ConnectRefused => 2,
            Outcome::ConnectFailed => 3,
            Outcome::TimedOut => 4,
            Outcome::Closed => 5,
            Outcome::MalformedStatus => 6,
            Outcome::Io => 7,
            Outcome::Tls(TlsFailure::UnknownIssuer) => 8,
            Outcome::Tls(TlsFailure::Expired) => 9,
            Outcome::Tls(TlsFailure::WrongName) => 10,
            Outcome::Tls(TlsFailure::Other) => 11,
            Outcome::Tls(TlsFailure::ClientCertRequired) => 12,
            Outcome::Tls(TlsFailure::ClientCertRejected) => 13,
            Outcome::Status(code) => STATUS_BASE + code.min(999),
        }
    }

    fn decode(v: u16) -> Option<Outcome> {
        Some(match v {
            1 => Outcome::Connected,
            2 => Outcome::ConnectRefused,
            3 => Outcome::ConnectFailed,
            4 => Outcome::TimedOut,
            5 => Outcome::Closed,
            6 => Outcome::MalformedStatus,
            7 => Outcome::Io,
            8 => Outcome::Tls(TlsFailure::UnknownIssuer),
            9 => Outcome::Tls(TlsFailure::Expired),
            10 => Outcome::Tls(TlsFailure::WrongName),
            11 => Outcome::Tls(TlsFailure::Other),
            12 => Outcome::Tls(TlsFailure::ClientCertRequired),
            13 => Outcome::Tls(TlsFailure::ClientCertRejected),
            v if v >= STATUS_BASE => Outcome::Status(v - STATUS_BASE),
            _ => return None,
        })
    }
}

const NO_VERDICT: u16 = 0;
const STATUS_BASE: u16 = 1000;

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Outcome::Status(code) => write!(f, "status {code}"),
            Outcome::Connected => f.write_str("connected"),
            Outcome::ConnectRefused => f.write_str("connect refused"),
            Outcome::ConnectFailed => f.write_str("connect failed"),
            Outcome::TimedOut => f.write_str("timed out"),
            Outcome::Closed => f.write_str("closed before a status line"),
            Outcome::MalformedStatus => f.write_str("malformed status line"),
            Outcome::Io => f.write_str("I/O error"),
            Outcome::Tls(TlsFailure::UnknownIssuer) => {
                f.write_str("TLS handshake failed: certificate signed by an unknown issuer")
            }
            Outcome::Tls(TlsFailure::Expired) => {
                f.write_str("TLS handshake failed: certificate expired")
            }
            Outcome::Tls(TlsFailure::WrongName) => {
                f.write_str("TLS handshake failed: certificate not valid for the backend's name")
            }
            Outcome::Tls(TlsFailure::ClientCertRequired) => f.write_str(
                "TLS handshake failed: the backend requires a client certificate (\"client_cert\" and \"client_key\")",
            ),
            Outcome::Tls(TlsFailure::ClientCertRejected) => {
                f.write_str("TLS handshake failed: the backend rejected the client certificate")
            }
            Outcome::Tls(TlsFailure::Other) => f.write_str("TLS handshake failed"),
        }
    }
}

/// Verdicts shared between the probe thread (writer) and the event loop
/// (reader). The loop's side is lock-free: one atomic load of `round` when
/// nothing is new, one swap per backend when something is.
#[derive(Debug)]
pub struct ProbeResults {
    /// Per backend, the encoded [`Outcome`] of the latest probe not yet taken
    /// by the loop, or `NO_VERDICT`. An `AtomicU16` rather than a bare
    /// ok/failed byte so the loop can log *why* a backend went down.
    verdicts: Vec<AtomicU16>,
    /// Per backend, failed probes since start. Unlike a verdict, which the
    /// next round overwrites if the loop is late, every failure is counted
    /// here, so `lb_health_check_failures_total` misses none.
    failed: Vec<AtomicU64>,
    /// Completed rounds. Bumped after a round's verdicts are stored, so a
    /// reader that sees it change also sees those verdicts.
    round: AtomicU64,
    /// Only the probe thread's sleep and `stop` touch this lock, never the
    /// loop's hot path.
    stopped: Mutex<bool>,
    wake: Condvar,
}

impl ProbeResults {
    pub fn new(n: usize) -> ProbeResults {
        ProbeResults {
            verdicts: (0..n).map(|_| AtomicU16::new(NO_VERDICT)).collect(),
            failed: (0..n).map(|_| AtomicU64::new(0)).collect(),
            round: AtomicU64::new(0),
            stopped: Mutex::new(false),
            wake: Condvar::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.verdicts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.verdicts.is_empty()
    }

    /// Completed probe rounds so far. Unchanged since the last look means
    /// there is nothing to take.
    pub fn round(&self) -> u64 {
        self.round.load(Ordering::Acquire)
    }

    /// The verdict of `id`'s latest probe (`true` = healthy) if the loop has
    /// not taken it yet. Each verdict is taken at most once, so a probe is
    /// never counted twice toward `healthy_threshold`; if the loop falls a
    /// round behind, only the newest verdict counts.
    pub fn take(&self, id: BackendId) -> Option<bool> {
        self.take_outcome(id).map(Outcome::is_ok)
    }

    /// As [`ProbeResults::take`], with what the probe saw.
    pub fn take_outcome(&self, id: BackendId) -> Option<Outcome> {
        let v = self.verdicts.get(id.0)?.swap(NO_VERDICT, Ordering::AcqRel);
        Outcome::decode(v)
    }

    /// Failed probes of `id` since start (0 for no such backend).
    pub fn failed(&self, id: BackendId) -> u64 {
        self.failed
            .get(id.0)
            .map_or(0, |n| n.load(Ordering::Acquire))
    }

    /// Asks the probe thread to exit. It does so at once if it is sleeping
    /// between rounds, or after the probe in progress (at most the probe
    /// timeout) otherwise.
    pub fn stop(&self) {
        *self.stopped.lock().unwrap_or_else(PoisonError::into_inner) = true;
        self.wake.notify_all();
    }

    pub fn is_stopped(&self) -> bool {
        *self.stopped.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(super) fn store(&self, id: BackendId, outcome: Outcome) {
        if !outcome.is_ok() {
            // One writer (the probe thread), so no locked add is needed.
            let n = &self.failed[id.0];
            n.store(n.load(Ordering::Relaxed) + 1, Ordering::Release);
        }
        self.verdicts[id.0].store(outcome.encode(), Ordering::Release);
    }

    pub(super) fn finish_round(&self) {
        self.round.fetch_add(1, Ordering::AcqRel);
    }

    /// Sleeps until `deadline` or `stop`, whichever is first; `true` if
    /// stopped. A condvar rather than `thread::sleep` so a stopping worker
    /// does not wait out an interval.
    fn sleep_until(&self, deadline: Instant) -> bool {
        let mut stopped = self.stopped.lock().unwrap_or_else(PoisonError::into_inner);
        loop {
            if *stopped {
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            stopped = self
                .wake
                .wait_timeout(stopped, deadline - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }
}

/// Starts the probe thread. It probes every backend at once, then every
/// `cfg.interval`, stores each verdict in `results`, and calls `waker.wake()`
/// after each round. It exits when `results.stop()` is called.
///
/// Backends are probed one after another, so a round where every backend
/// hangs takes `len × cfg.timeout`; rounds then run back to back rather than
/// piling up.
///
/// Spawn it in the worker process (after `fork`/`exec`): threads do not
/// survive a fork.
pub fn spawn(
    backends: Vec<Backend>,
    cfg: HealthConfig,
    tls: Vec<Option<Arc<ClientConfig>>>,
    results: Arc<ProbeResults>,
    waker: Arc<mio::Waker>,
) -> io::Result<JoinHandle<()>> {
    assert!(
        backends.iter().all(|b| b.id.0 < results.len()),
        "one verdict slot per backend id"
    );
    std::thread::Builder::new()
        .name(THREAD_NAME.into())
        .spawn(move || run(&backends, &cfg, &tls, &results, &waker))
}

fn run(
    backends: &[Backend],
    cfg: &HealthConfig,
    tls: &[Option<Arc<ClientConfig>>],
    results: &ProbeResults,
    waker: &mio::Waker,
) {
    let interval = cfg.interval.max(MIN_INTERVAL);
    let mut next = Instant::now();
    // Probes are not being made for want of our own resources.
    let mut short = false;
    loop {
        for backend in backends {
            if results.is_stopped() {
                return;
            }
            let config = tls.get(backend.id.0).and_then(Option::as_ref);
            match probe_one(backend, cfg, config) {
                Probe::Made(outcome) => {
                    if !outcome.is_ok() {
                        crate::debug!("health probe of {}: {outcome}", backend.label);
                    }
                    results.store(backend.id, outcome);
                    if std::mem::take(&mut short) {
                        crate::info!("health probes run again");
                    }
                }
                // No verdict: the backend keeps its state, and neither
                // the breaker nor the failure counter hears of it.
                Probe::NotMade(e) => {
                    if !std::mem::replace(&mut short, true) {
                        crate::warn!(
                            "health probe of {} not made: {e}; backends keep their state \
                             until probes can run again",
                            backend.label
                        );
                    }
                }
            }
        }
        results.finish_round();
        if let Err(e) = waker.wake() {
            // Not fatal: the verdicts stay stored until the loop next calls
            // `apply_probes` for any reason.
            crate::warn!("health probe could not wake its worker: {e}");
        }
        // A fixed schedule, so probing time does not stretch the period; a
        // round that overran starts the next one now instead of bursting.
        next += interval;
        next = next.max(Instant::now());
        if results.sleep_until(next) {
            return;
        }
    }
}

/// One probe: made, and its outcome says how the backend did, or not made
/// for want of this process's own resources (a worker out of descriptors),
/// which says nothing about the backend.
enum Probe {
    Made(Outcome),
    NotMade(io::Error),
}

/// Probes one backend: the same GET for every backend, over TLS (with the
/// verification proxied traffic gets, from the worker's configuration) for
/// TLS backends.
fn probe_one(backend: &Backend, cfg: &HealthConfig, tls: Option<&Arc<ClientConfig>>) -> Probe {
    let deadline = Instant::now() + cfg.timeout.max(MIN_TIMEOUT);
    let mut tcp = match connect(backend.addr, deadline) {
        Ok(s) => s,
        Err(probe) => return probe,
    };
    // A second descriptor of the socket, to set its timeouts on while a
    // stream borrows it.
    let timeouts = match tcp.try_clone() {
        Ok(t) => t,
        Err(e) if crate::net::out_of_resources(&e) => return Probe::NotMade(e),
        Err(_) => return Probe::Made(Outcome::Io),
    };
    let request = request(backend, &cfg.path);
    Probe::Made(match (backend.tls, tls) {
        (true, Some(config)) => {
            let conn = crate::tls::server_name(backend.tls_name())
                .ok()
                .and_then(|name| ClientConnection::new(Arc::clone(config), name).ok());
            let Some(mut conn) = conn else {
                return Probe::Made(Outcome::Tls(TlsFailure::Other));
            };
            let mut stream = rustls::Stream::new(&mut conn, &mut tcp);
            probe_http(&mut stream, &timeouts, &request, deadline)
        }
        // A TLS backend without a configuration only happens in unit tests.
        (true, None) => Outcome::Connected,
        (false, _) => probe_http(&mut tcp, &timeouts, &request, deadline),
    })
}

/// The whole exchange (connect, send, status line) must fit before
/// `deadline`: SPEC §8 wants a 200 *within* the timeout. `timeouts` is the
/// socket under `stream`, for its timeouts.
fn probe_http(
    stream: &mut (impl Read + Write),
    timeouts: &TcpStream,
    request: &str,
    deadline: Instant,
) -> Outcome {
    let Some(left) = remaining(deadline) else {
        return Outcome::TimedOut;
    };
    let sent = timeouts
        .set_write_timeout(Some(left))
        .and_then(|()| stream.write_all(request.as_bytes()))
        .and_then(|()| stream.flush());
    if let Err(e) = sent {
        return io_outcome(&e);
    }
    let mut buf = [0u8; MAX_STATUS_LINE];
    let mut filled = 0;
    loop {
        let Some(left) = remaining(deadline) else {
            return Outcome::TimedOut;
        };
        if let Err(e) = timeouts.set_read_timeout(Some(left)) {
            return io_outcome(&e);
        }
        match stream.read(&mut buf[filled..]) {
            Ok(0) => return Outcome::Closed,
            Ok(n) => {
                let start = filled;
                filled += n;
                if let Some(nl) = buf[start..filled].iter().position(|&b| b == b'\n') {
                    return parse_status(&buf[..=start + nl]);
                }
                if filled == buf.len() {
                    return Outcome::MalformedStatus;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return io_outcome(&e),
        }
    }
}

fn connect(addr: SocketAddr, deadline: Instant) -> Result<TcpStream, Probe> {
    let left = remaining(deadline).ok_or(Probe::Made(Outcome::TimedOut))?;
    TcpStream::connect_timeout(&addr, left).map_err(|e| match e.kind() {
        _ if crate::net::out_of_resources(&e) => Probe::NotMade(e),
        io::ErrorKind::ConnectionRefused => Probe::Made(Outcome::ConnectRefused),
        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => Probe::Made(Outcome::TimedOut),
        _ => Probe::Made(Outcome::ConnectFailed),
    })
}

fn remaining(deadline: Instant) -> Option<Duration> {
    Some(deadline.saturating_duration_since(Instant::now())).filter(|d| !d.is_zero())
}

fn io_outcome(e: &io::Error) -> Outcome {
    if let Some(tls) = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    {
        return Outcome::Tls(match tls {
            rustls::Error::InvalidCertificate(c) => match c {
                CertificateError::UnknownIssuer => TlsFailure::UnknownIssuer,
                CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                    TlsFailure::Expired
                }
                CertificateError::NotValidForName
                | CertificateError::NotValidForNameContext { .. } => TlsFailure::WrongName,
                _ => TlsFailure::Other,
            },
            rustls::Error::AlertReceived(AlertDescription::CertificateRequired) => {
                TlsFailure::ClientCertRequired
            }
            rustls::Error::AlertReceived(
                AlertDescription::BadCertificate
                | AlertDescription::UnsupportedCertificate
                | AlertDescription::CertificateRevoked
                | AlertDescription::CertificateExpired
                | AlertDescription::CertificateUnknown
                | AlertDescription::UnknownCA
                | AlertDescription::AccessDenied,
            ) => TlsFailure::ClientCertRejected,
            _ => TlsFailure::Other,
        });
    }
    match e.kind() {
        // A socket timeout reads as WouldBlock on Unix.
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => Outcome::TimedOut,
        _ => Outcome::Io,
    }
}

/// Parses a status line (ending in `\n`) with httparse. The headers are not
/// read: an empty header section is appended so the parse completes.
fn parse_status(line: &[u8]) -> Outcome {
    let mut head = Vec::with_capacity(line.len() + 2);
    head.extend_from_slice(line);
    head.extend_from_slice(b"\r\n");
    let mut headers = [httparse::EMPTY_HEADER; 0];
    let mut response = httparse::Response::new(&mut headers);
    match response.parse(&head) {
        Ok(httparse::Status::Complete(_)) => response
            .code
            .map_or(Outcome::MalformedStatus, Outcome::Status),
        _ => Outcome::MalformedStatus,
    }
}

fn request(backend: &Backend, path: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: {}\r\nUser-Agent: load_balancer-health\r\n\
         Connection: close\r\n\r\n",
        backend.host_value()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upstream::parse_spec;
    use mio::{Events, Poll, Token};
    use std::net::TcpListener;
    use std::thread;

    const WAKER: Token = Token(7);

    fn backend(spec: &str, id: usize) -> Backend {
        parse_spec(spec, BackendId(id)).unwrap()
    }

    fn cfg(interval_ms: u64, timeout_ms: u64) -> HealthConfig {
        HealthConfig {
            path: "/healthz".into(),
            interval: Duration::from_millis(interval_ms),
            timeout: Duration::from_millis(timeout_ms),
            unhealthy_threshold: 3,
            healthy_threshold: 2,
        }
    }

    /// A backend answering every request with `status`, recording the
    /// requests it gets. The thread lives until the test process ends.
    fn origin(status: Arc<AtomicU16>) -> (SocketAddr, Arc<Mutex<Vec<String>>>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&seen);
        thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { continue };
                let mut req = Vec::new();
                let mut buf = [0u8; 512];
                while !req.ends_with(b"\r\n\r\n") {
                    match conn.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => req.extend_from_slice(&buf[..n]),
                    }
                }
                log.lock()
                    .unwrap()
                    .push(String::from_utf8_lossy(&req).into_owned());
                let code = status.load(Ordering::Relaxed);
                let _ = write!(
                    conn,
                    "HTTP/1.1 {code} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                );
            }
        });
        (addr, seen)
    }

    /// A backend that reads each request, writes `answer` and closes; with
    /// `None` it never even accepts (the kernel's backlog completes the
    /// connect) and never answers.
    fn fixed(answer: Option<&'static [u8]>) -> (SocketAddr, TcpListener) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        if let Some(answer) = answer {
            let l = listener.try_clone().unwrap();
            thread::spawn(move || {
                for mut conn in l.incoming().flatten() {
                    // Reading first, so closing does not reset the prober's
                    // socket before it reads the answer.
                    let _ = conn.set_read_timeout(Some(Duration::from_secs(1)));
                    let mut req = Vec::new();
                    let mut buf = [0u8; 512];
                    while !req.ends_with(b"\r\n\r\n") {
                        match conn.read(&mut buf) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => req.extend_from_slice(&buf[..n]),
                        }
                    }
                    let _ = conn.write_all(answer);
                }
            });
        }
        (addr, listener)
    }

    /// Polls until the waker fires or `limit` passes; `true` if it fired.
    fn wait_wake(poll: &mut Poll, events: &mut Events, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        while let Some(left) = remaining(deadline) {
            poll.poll(events, Some(left)).unwrap();
            if events.iter().any(|e| e.token() == WAKER) {
                return true;
            }
        }
        false
    }

    fn join_within(handle: JoinHandle<()>, limit: Duration) -> Duration {
        let start = Instant::now();
        while !handle.is_finished() {
            assert!(start.elapsed() < limit, "probe thread still running");
            thread::sleep(Duration::from_millis(5));
        }
        handle.join().unwrap();
        start.elapsed()
    }

    #[test]
    fn verdicts_follow_the_backend_and_wake_the_loop() {
        let status = Arc::new(AtomicU16::new(200));
        let (addr, seen) = origin(Arc::clone(&status));
        let b = backend(&addr.to_string(), 0);
        let mut poll = Poll::new().unwrap();
        let mut events = Events::with_capacity(8);
        let waker = Arc::new(mio::Waker::new(poll.registry(), WAKER).unwrap());
        let results = Arc::new(ProbeResults::new(1));
        let handle = spawn(
            vec![b],
            cfg(30, 1000),
            Vec::new(),
            Arc::clone(&results),
            waker,
        )
        .unwrap();

        assert!(wait_wake(&mut poll, &mut events, Duration::from_secs(5)));
        assert!(results.round() >= 1);
        assert_eq!(results.take(BackendId(0)), Some(true));
        assert_eq!(results.take(BackendId(0)), None, "a verdict is taken once");
        assert_eq!(results.take(BackendId(1)), None, "no such backend");

        status.store(500, Ordering::Relaxed);
        let deadline = Instant::now() + Duration::from_secs(5);
        let bad = loop {
            assert!(Instant::now() < deadline, "verdict never flipped to failed");
            assert!(wait_wake(&mut poll, &mut events, Duration::from_secs(5)));
            // A round that began before the switch may still say 200.
            match results.take_outcome(BackendId(0)) {
                Some(o) if !o.is_ok() => break o,
                _ => {}
            }
        };
        assert_eq!(bad, Outcome::Status(500));

        status.store(200, Ordering::Relaxed);
        let deadline = Instant::now() + Duration::from_secs(5);
        while results.take(BackendId(0)) != Some(true) {
            assert!(Instant::now() < deadline, "verdict never flipped back");
            wait_wake(&mut poll, &mut events, Duration::from_secs(1));
        }

        results.stop();
        join_within(handle, Duration::from_secs(2));
        let first = seen.lock().unwrap()[0].clone();
        assert_eq!(
            first,
            format!(
                "GET /healthz HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: load_balancer-health\r\n\
                 Connection: close\r\n\r\n"
            )
        );
    }

    #[test]
    fn stop_does_not_wait_out_the_interval() {
        let (addr, _listener) = fixed(Some(b"HTTP/1.1 200 OK\r\n\r\n"));
        let mut poll = Poll::new().unwrap();
        let mut events = Events::with_capacity(8);
        let waker = Arc::new(mio::Waker::new(poll.registry(), WAKER).unwrap());
        let results = Arc::new(ProbeResults::new(1));
        let b = backend(&addr.to_string(), 0);
        let handle = spawn(
            vec![b],
            cfg(60_000, 1000),
            Vec::new(),
            Arc::clone(&results),
            waker,
        )
        .unwrap();
        // The first round runs at once; then the thread sleeps for a minute.
        assert!(wait_wake(&mut poll, &mut events, Duration::from_secs(5)));
        assert_eq!(results.round(), 1);
        results.stop();
        assert!(results.is_stopped());
        let took = join_within(handle, Duration::from_secs(2));
        assert!(took < Duration::from_millis(500), "took {took:?}");
    }

    #[test]
    fn stop_before_the_first_round_probes_nothing() {
        let poll = Poll::new().unwrap();
        let waker = Arc::new(mio::Waker::new(poll.registry(), WAKER).unwrap());
        let results = Arc::new(ProbeResults::new(1));
        results.stop();
        let b = backend("127.0.0.1:1", 0);
        let handle = spawn(
            vec![b],
            cfg(10, 1000),
            Vec::new(),
            Arc::clone(&results),
            waker,
        )
        .unwrap();
        join_within(handle, Duration::from_secs(2));
        assert_eq!(results.round(), 0);
        assert_eq!(results.take(BackendId(0)), None);
    }

    fn made(probe: Probe) -> Outcome {
        match probe {
            Probe::Made(outcome) => outcome,
            Probe::NotMade(e) => panic!("probe not made: {e}"),
        }
    }

    #[test]
    fn every_way_a_backend_can_fail() {
        let refused = {
            let l = TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        let (silent, _l1) = fixed(None);
        let (closes, _l2) = fixed(Some(b""));
        let (garbage, _l3) = fixed(Some(b"SSH-2.0-OpenSSH_9.6\r\n"));
        let (partial, _l4) = fixed(Some(b"HTTP/1.1 20"));
        let (error, _l5) = fixed(Some(b"HTTP/1.1 503 Service Unavailable\r\n\r\n"));
        let (ok10, _l6) = fixed(Some(b"HTTP/1.0 200 OK\r\n\r\n"));
        let c = cfg(1000, 200);
        let cases = [
            (refused, Outcome::ConnectRefused),
            (silent, Outcome::TimedOut),
            (closes, Outcome::Closed),
            (garbage, Outcome::MalformedStatus),
            (partial, Outcome::Closed),
            (error, Outcome::Status(503)),
            (ok10, Outcome::Status(200)),
        ];
        for (addr, want) in cases {
            let start = Instant::now();
            let got = made(probe_one(&backend(&addr.to_string(), 0), &c, None));
            assert_eq!(got, want, "{addr}");
            assert!(
                start.elapsed() < Duration::from_millis(1000),
                "{addr}: bounded by the timeout"
            );
        }
    }

    #[test]
    fn tls_backends_without_a_configuration_get_a_connect_only_check() {
        let (addr, _listener) = fixed(None);
        let b = backend(&format!("https://{addr}"), 0);
        assert!(b.tls);
        assert_eq!(
            made(probe_one(&b, &cfg(1000, 200), None)),
            Outcome::Connected
        );
        let refused = {
            let l = TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        let b = backend(&format!("https://{refused}"), 0);
        assert_eq!(
            made(probe_one(&b, &cfg(1000, 200), None)),
            Outcome::ConnectRefused
        );
    }

    #[test]
    fn status_lines() {
        let cases: &[(&[u8], Outcome)] = &[
            (b"HTTP/1.1 200 OK\r\n", Outcome::Status(200)),
            (b"HTTP/1.1 200 \r\n", Outcome::Status(200)),
            (b"HTTP/1.1 200\r\n", Outcome::Status(200)),
            (b"HTTP/1.1 200 OK\n", Outcome::Status(200)),
            (b"HTTP/1.0 500 Oops\r\n", Outcome::Status(500)),
            (b"HTTP/1.1 000 Zero\r\n", Outcome::Status(0)),
            (b"HTTP/2 200\r\n", Outcome::MalformedStatus),
            (b"HTTP/1.1 2000 OK\r\n", Outcome::MalformedStatus),
            (b"ICY 200 OK\r\n", Outcome::MalformedStatus),
            (b"\r\n", Outcome::MalformedStatus),
        ];
        for (line, want) in cases {
            assert_eq!(parse_status(line), *want, "{}", line.escape_ascii());
        }
    }

    #[test]
    fn outcomes_survive_the_atomic() {
        let all = [
            Outcome::Status(0),
            Outcome::Status(200),
            Outcome::Status(999),
            Outcome::Connected,
            Outcome::ConnectRefused,
            Outcome::ConnectFailed,
            Outcome::TimedOut,
            Outcome::Closed,
            Outcome::MalformedStatus,
            Outcome::Io,
            Outcome::Tls(TlsFailure::UnknownIssuer),
            Outcome::Tls(TlsFailure::Expired),
            Outcome::Tls(TlsFailure::WrongName),
            Outcome::Tls(TlsFailure::ClientCertRequired),
            Outcome::Tls(TlsFailure::ClientCertRejected),
            Outcome::Tls(TlsFailure::Other),
        ];
        let results = ProbeResults::new(1);
        for o in all {
            results.store(BackendId(0), o);
            assert_eq!(results.take_outcome(BackendId(0)), Some(o));
            assert_eq!(results.take_outcome(BackendId(0)), None);
        }
        assert_eq!(Outcome::decode(NO_VERDICT), None);
        assert_eq!(results.failed(BackendId(0)), 14, "every failed outcome");
        assert_eq!(results.failed(BackendId(1)), 0, "no such backend");
        assert!(Outcome::Status(200).is_ok() && Outcome::Connected.is_ok());
        assert!(!Outcome::Status(204).is_ok() && !Outcome::TimedOut.is_ok());
    }

    #[test]
    fn host_header_names_the_backend() {
        let cases = [
            ("127.0.0.1:8080", "127.0.0.1:8080"),
            ("http://127.0.0.1", "127.0.0.1"),
            ("[::1]:8080", "[::1]:8080"),
            ("https://127.0.0.1", "127.0.0.1"),
            ("https://127.0.0.1:8443", "127.0.0.1:8443"),
        ];
        for (spec, host) in cases {
            let b = backend(spec, 0);
            assert_eq!(b.host_value(), host, "{spec}");
            assert!(request(&b, "/h").contains(&format!("\r\nHost: {host}\r\n")));
        }
    }
}
