//! A worker: one single-threaded mio event loop serving one listening
//! socket, with its own sessions, backend pool and balancer.
//!
//! Each turn: poll (timeout from the nearest deadline) → dispatch readiness
//! to sessions and backend connections → run what h2 woke → drive again the
//! sessions that used their turn budget last time → fire due timers → sweep
//! the pool. Nothing here blocks; the worker knows nothing of HTTP.

mod accept;
mod drain;
pub mod follow;
mod sockets;
pub mod timer;
pub mod token;

use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::net::TcpListener;
use mio::{Events, Interest, Poll, Waker};
use slab::Slab;

use crate::access_log::AccessLog;
use crate::balance::Balancer;
use crate::buffer::{BufPool, HeadPool};
use crate::config::Config;
use crate::health::Health;
use crate::http2::{H2Conns, Liveness, Task, WakeQueue};
use crate::master::cover::Cover;
use crate::metrics::Metrics;
use crate::pool::Pool;
use crate::proxy::{CLIENT_BUF, Ctx, HEAD_BUF, Session, Verdict};
use crate::signals::Signals;
use crate::tls;
use crate::upstream::Backend;
pub use sockets::{bind, inherited_fd, inherited_listener};
use timer::Timers;
use token::Slot;

/// Idle connections kept per backend (as nginx's `keepalive` directive).
const MAX_IDLE_PER_BACKEND: usize = 128;
/// Idle backend connections are closed after this unless the backend
/// announced a shorter keep-alive timeout.
const POOL_IDLE: Duration = Duration::from_secs(30);
/// The longest poll sleep, so the pool sweep runs even when all is quiet.
const TICK: Duration = Duration::from_secs(1);

pub struct Worker {
    poll: Poll,
    /// `None` once draining: new connections are refused.
    listener: Option<TcpListener>,
    signals: Option<Signals>,
    /// Set by a stop signal: when in-flight requests must be done by.
    drain_deadline: Option<Instant>,
    /// Retiring after an upgrade: when idle keep-alive connections close.
    idle_close_at: Option<Instant>,
    under_master: bool,
    /// `--metrics-addr`: connections here serve only `/metrics`.
    metrics_listener: Option<TcpListener>,
    /// Under a master: the other slots' sockets, accepted from while their
    /// slot has no serving worker (`master::cover`).
    cover: Option<Cover>,
    metrics: Metrics,
    /// The backends `/metrics` reports: the active ones of the table
    /// (a backend a reload removed keeps its id but leaves the scrape).
    listed: Vec<Backend>,
    /// `--access-log`: this worker's batch and file.
    access: Option<AccessLog>,
    health: Health,
    /// Wakes the loop when the probe thread has new verdicts (or, in sp
    /// mode, the config watcher saw a change).
    waker: Arc<Waker>,
    /// Boxed: a vacant entry then costs a pointer, not a whole session,
    /// so a slab grown by a peak and pinned by one late connection at its
    /// top holds little once the peak is gone.
    sessions: Slab<Box<Session>>,
    pool: Pool,
    /// HTTP/2 connections shared by the sessions.
    h2: H2Conns,
    /// Sessions and h2 connections that h2 woke, run after the events.
    wake: Arc<WakeQueue>,
    /// Sessions that used their turn budget with more to do (`Verdict::
    /// Yield`), as (key, generation): driven again after the next batch of
    /// events. No event would come for them (edge-triggered), so an entry
    /// must never be dropped unserved.
    again: Vec<(usize, u64)>,
    /// The list being served this turn; kept only for its storage, so
    /// re-queueing never allocates in steady state.
    again_turn: Vec<(usize, u64)>,
    /// Storage for client read buffers, lent while a connection has bytes.
    client_bufs: BufPool,
    /// Storage for the heads sessions write, lent while one is in flight.
    heads: HeadPool,
    balancer: Balancer,
    backends: Vec<Backend>,
    host_values: Vec<String>,
    timers: Timers,
    config: Arc<Config>,
    /// Where config generations come from (`follow`); `None`: never
    /// reloads.
    reload: Option<follow::Source>,
    /// The config generation running, and which backends of the table
    /// are in rotation.
    generation_number: u64,
    active: Vec<bool>,
    generation: u64,
    last_sweep: Instant,
    /// Set while accepting fails for want of descriptors or memory: when
    /// to try again.
    accept_retry: Option<Instant>,
    /// The most sessions open at once since memory was last released.
    peak_sessions: usize,
}

impl Worker {
    pub fn new(
        config: Arc<Config>,
        listener: std::net::TcpListener,
        metrics_listener: Option<std::net::TcpListener>,
        metrics: Metrics,
    ) -> io::Result<Worker> {
        let poll = Poll::new()?;
        let mut listener = sockets::adopt(listener)?;
        poll.registry()
            .register(&mut listener, token::LISTENER, Interest::READABLE)?;
        let mut metrics_listener = metrics_listener.map(sockets::adopt).transpose()?;
        if let Some(l) = metrics_listener.as_mut() {
            poll.registry()
                .register(l, token::METRICS_LISTENER, Interest::READABLE)?;
        }
        let access = config
            .access_log
            .as_ref()
            .map(|target| AccessLog::open(target, config.access_log_format))
            .transpose()
            .map_err(io::Error::other)?;
        let backends = config.backends.clone();
        let backends_len = backends.len();
        let tls = tls::backend_configs(&backends, config.insecure, config.ca_file.as_deref())
            .map_err(io::Error::other)?;
        let pool = Pool::new(&backends, MAX_IDLE_PER_BACKEND, POOL_IDLE, tls.clone())
            .map_err(io::Error::other)?;
        let waker = Arc::new(Waker::new(poll.registry(), token::WAKER)?);
        let wake = WakeQueue::new();
        let mut health = Health::new(&backends, &config.health);
        health.start_probes(&backends, tls.clone(), Arc::clone(&waker))?;
        Ok(Worker {
            poll,
            listener: Some(listener),
            signals: None,
            drain_deadline: None,
            idle_close_at: None,
            under_master: false,
            metrics_listener,
            cover: None,
            metrics,
            access,
            health,
            waker,
            sessions: Slab::with_capacity(1024),
            pool,
            h2: H2Conns::new(
                Arc::clone(&wake),
                POOL_IDLE,
                Liveness {
                    every: config.health.interval,
                    timeout: config.health.timeout,
                },
            ),
            wake,
            again: Vec::with_capacity(1024),
            again_turn: Vec::with_capacity(1024),
            client_bufs: BufPool::new(CLIENT_BUF),
            heads: HeadPool::new(HEAD_BUF),
            balancer: Balancer::new(config.strategy, &backends),
            host_values: backends.iter().map(Backend::host_value).collect(),
            listed: backends.clone(),
            backends,
            timers: Timers::with_capacity(1024),
            reload: None,
            generation_number: 1,
            active: vec![true; backends_len],
            config,
            generation: 0,
            last_sweep: Instant::now(),
            accept_retry: None,
            peak_sessions: 0,
        })
    }

    /// SIGTERM/SIGINT stop the worker gracefully; for an mp worker
    /// (`under_master`) SIGUSR2 from its master retires it after an upgrade,
    /// and SIGUSR1 says which other slots to cover; SIGUSR1 also reopens
    /// the access log.
    pub fn handle_signals(&mut self, signals: Signals, under_master: bool) -> io::Result<()> {
        signals.register(self.poll.registry(), token::SIGNALS)?;
        self.signals = Some(signals);
        self.under_master = under_master;
        let slot = std::env::var(crate::master::spawn::SLOT_ENV).ok();
        match slot.and_then(|s| s.parse().ok()).and_then(Cover::inherited) {
            Some(Ok(cover)) => self.cover = Some(cover),
            Some(Err(e)) => crate::warn!("cannot cover other slots: {e}"),
            None => {}
        }
        Ok(())
    }

    /// Runs the event loop until stopped (Ok) or an unrecoverable poll
    /// error.
    pub fn run(&mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(1024);
        self.metrics.set_ready();
        // After reporting serving: the master signals changes only to
        // workers that did.
        if let Some(cover) = self.cover.as_mut() {
            cover.refresh(self.poll.registry());
        }
        // A generation published while this worker was starting was not
        // signalled to it.
        if matches!(self.reload, Some(follow::Source::Master(_))) {
            self.reload("start");
        }
        loop {
            if let Some(deadline) = self.drain_deadline {
                let now = Instant::now();
                if self.idle_close_at.is_some_and(|at| now >= at) {
                    self.close_idle();
                }
                if self.sessions.is_empty() || now >= deadline {
                    crate::info!("stopped ({} connections cut)", self.sessions.len());
                    return Ok(());
                }
            }
            let now = Instant::now();
            let timeout = match self.wake.is_empty() && self.again.is_empty() {
                true => self
                    .timers
                    .next()
                    .into_iter()
                    .chain(self.reload_deadline())
                    .chain(self.accept_retry)
                    .min()
                    .map_or(TICK, |at| at.saturating_duration_since(now).min(TICK)),
                // Woken tasks left over from the last turn, or sessions
                // that yielded: look for new events, but do not sleep.
                false => Duration::ZERO,
            };
            if let Err(e) = self.poll.poll(&mut events, Some(timeout)) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            let now = Instant::now();
            for event in events.iter() {
                match token::decode(event.token()) {
                    Slot::Listener => self.accept(false, now),
                    Slot::MetricsListener => self.accept(true, now),
                    Slot::Session(key) => {
                        if let Some(session) = self.sessions.get_mut(key) {
                            session.on_event(event);
                            self.drive(key, now);
                        }
                    }
                    Slot::Upstream(key) => self.on_upstream_event(key, event, now),
                    Slot::H2(key) => self.h2.on_event(key),
                    Slot::Signals => {
                        if self.on_signals(now) {
                            return Ok(());
                        }
                    }
                    Slot::Waker => self.apply_probes(),
                }
            }
            self.run_woken(now);
            self.run_again(now);
            if self.accept_retry.is_some_and(|at| now >= at) {
                self.retry_accept(now);
            }
            self.fire_timers(now);
            self.poll_watch(now);
            if now.duration_since(self.last_sweep) >= TICK {
                self.sweep(now);
            }
        }
    }

    /// Once a tick: expired idle backend connections go, and so does
    /// storage a whole tick left unused. Once a peak has passed (anything
    /// was freed), the allocator hands its free pages back to the system:
    /// glibc keeps them otherwise, so RSS would stay at the peak.
    fn sweep(&mut self, now: Instant) {
        self.last_sweep = now;
        if let Some(log) = self.access.as_mut() {
            log.tick();
        }
        let mut freed = self.pool.sweep(now, self.poll.registry());
        let metrics = &self.metrics;
        self.pool
            .gauges(|backend, idle, busy| metrics.set_pool(backend, idle, busy));
        self.h2.sweep(now);
        freed += self.client_bufs.trim();
        freed += self.heads.trim();
        // Sessions free their own heads' field lists when they close.
        let open = self.sessions.len();
        let peak_passed = self.peak_sessions > 2 * open.max(128);
        if peak_passed {
            self.sessions.shrink_to_fit();
            self.peak_sessions = open;
        }
        if freed > 0 || peak_passed {
            release_free_memory();
        }
    }

    /// Runs what h2 woke: connections to poll, sessions to drive. Bounded,
    /// so a task that keeps waking itself cannot starve the sockets; what
    /// is left runs next turn, after a poll that does not sleep.
    #[inline]
    fn run_woken(&mut self, now: Instant) {
        if !self.wake.is_empty() {
            self.run_woken_now(now);
        }
    }

    fn run_woken_now(&mut self, now: Instant) {
        for _ in 0..4096 {
            match self.wake.pop() {
                None => return,
                Some(Task::Conn { key, serial }) => {
                    self.h2.drive(crate::http2::ConnId { key, serial })
                }
                Some(Task::Session { key, generation }) => {
                    let live = self
                        .sessions
                        .get(key)
                        .is_some_and(|s| s.timer_key().generation == generation);
                    if live {
                        self.drive(key, now);
                    }
                }
            }
        }
    }

    /// Drives once more each session that yielded its turn before this
    /// turn's events. One that yields again waits for the next turn, behind
    /// the connections that have events by then: every ready connection
    /// moves at most `TURN_BUDGET` bytes before the others get theirs.
    #[inline]
    fn run_again(&mut self, now: Instant) {
        if !self.again.is_empty() {
            self.run_again_now(now);
        }
    }

    fn run_again_now(&mut self, now: Instant) {
        let mut turn = std::mem::take(&mut self.again_turn);
        std::mem::swap(&mut turn, &mut self.again);
        for &(key, generation) in &turn {
            let Some(session) = self.sessions.get_mut(key) else {
                continue;
            };
            // It was closed and its key reused since.
            if session.timer_key().generation != generation {
                continue;
            }
            session.dequeue();
            self.drive(key, now);
        }
        turn.clear();
        self.again_turn = turn;
    }

    /// New verdicts from the probe thread.
    fn apply_probes(&mut self) {
        let metrics = &self.metrics;
        let failed = |id, n| metrics.health_check_failures(id, n);
        if self.health.apply_probes(&self.backends, failed) {
            for b in &self.backends {
                self.metrics.set_backend_up(b.id, self.health.is_up(b.id));
            }
        }
    }

    fn on_upstream_event(&mut self, key: usize, event: &mio::event::Event, now: Instant) {
        let Some(up) = self.pool.get_mut(key) else {
            return;
        };
        if event.is_readable() || event.is_read_closed() || event.is_error() {
            up.readable = true;
        }
        if event.is_read_closed() || event.is_error() {
            up.read_closed = true;
        }
        if event.is_writable() || event.is_write_closed() || event.is_error() {
            up.writable = true;
        }
        if up.on_ready().is_err() {
            // A TLS record could not be sent: whoever reads next sees it.
            up.read_closed = true;
            up.readable = true;
        }
        match up.owner {
            Some(session) => self.drive(session, now),
            None => self.pool.on_idle_event(key, self.poll.registry()),
        }
    }

    /// Runs a session's state machine and settles its fate.
    fn drive(&mut self, key: usize, now: Instant) {
        let (sessions, mut cx) = self.split(now);
        let Some(session) = sessions.get_mut(key) else {
            return;
        };
        let verdict = session.drive(&mut cx);
        self.settle(key, verdict);
    }

    fn settle(&mut self, key: usize, verdict: Verdict) {
        match verdict {
            Verdict::Open => {
                if let Some(session) = self.sessions.get_mut(key) {
                    session.arm(&mut self.timers, &self.config);
                }
            }
            Verdict::Yield => {
                if let Some(session) = self.sessions.get_mut(key) {
                    session.arm(&mut self.timers, &self.config);
                    if session.enqueue() {
                        self.again.push((key, session.timer_key().generation));
                    }
                }
            }
            Verdict::Close => {
                let mut session = self.sessions.remove(key);
                let _ = self.poll.registry().deregister(session.client_mut());
                self.metrics.set_connections(self.sessions.len());
            }
        }
    }

    /// The session table and, borrowed beside it, what a session needs.
    fn split(&mut self, now: Instant) -> (&mut Slab<Box<Session>>, Ctx<'_>) {
        let cx = Ctx {
            now,
            registry: self.poll.registry(),
            pool: &mut self.pool,
            h2: &mut self.h2,
            bufs: &mut self.client_bufs,
            heads: &mut self.heads,
            balancer: &mut self.balancer,
            backends: &self.backends,
            listed: &self.listed,
            host_values: &self.host_values,
            config: &self.config,
            draining: self.drain_deadline.is_some(),
            metrics: &self.metrics,
            access: self.access.as_mut(),
            health: &mut self.health,
        };
        (&mut self.sessions, cx)
    }

    fn fire_timers(&mut self, now: Instant) {
        while let Some((at, tk)) = self.timers.pop_due(now) {
            let (sessions, mut cx) = self.split(now);
            let Some(session) = sessions.get_mut(tk.key) else {
                continue;
            };
            if session.timer_key() != tk {
                continue;
            }
            if let Some(verdict) = session.on_timer(at, &mut cx) {
                self.settle(tk.key, verdict);
            }
        }
    }
}

/// Pins the calling process to one CPU, so each worker keeps its caches
/// and its share of the machine (worker i on CPU i mod n).
pub fn pin_to_cpu(slot: usize) -> io::Result<()> {
    use nix::sched::{CpuSet, sched_setaffinity};
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut set = CpuSet::new();
    set.set(slot % cpus).map_err(io::Error::from)?;
    sched_setaffinity(nix::unistd::Pid::from_raw(0), &set).map_err(io::Error::from)
}

/// Returns the allocator's free pages to the system.
fn release_free_memory() {
    // SAFETY: malloc_trim only walks glibc's own heap under its locks; it
    // takes no pointer and invalidates no live allocation.
    unsafe {
        libc::malloc_trim(0);
    }
}
