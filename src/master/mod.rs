//! The master process (mp mode, SPEC §2 and §4): binds or adopts the
//! listening sockets, starts one worker per slot, respawns workers that die
//! (with back-off), stops them gracefully, and hands everything to a new
//! binary on SIGUSR2. It serves no requests.
//!
//! Phases, logged so tests and operators can follow: serving → upgrading →
//! handed over → stopped (or back to serving: a failed or rolled-back
//! upgrade), and serving → stopping → stopped.

pub mod cover;
pub mod listeners;
mod pid_file;
mod slots;
pub mod spawn;
mod succession;
pub mod title;
pub mod upgrade;

use std::ffi::OsString;
use std::io::Read;
use std::path::PathBuf;
use std::process::Child;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::{Events, Poll, Token, Waker};
use nix::sys::signal::{self as nix_signal, Signal as NixSignal};
use nix::unistd::Pid;

use crate::config::Config;
use crate::config::value::duration_text;
use crate::metrics::Metrics;
use crate::reload::dns::Resolver;
use crate::reload::handoff::Handoff;
use crate::reload::watch::Watcher;
use crate::reload::{Outcome, Reloader};
use crate::signals::{Signal, Signals};
use slots::Slot;

/// A graceful stop waits this long for workers, then kills them (SPEC §4).
const STOP_LIMIT: Duration = Duration::from_secs(30);
/// A new binary must be serving within this, or the upgrade is abandoned.
const UPGRADE_LIMIT: Duration = Duration::from_secs(15);
/// After handing over, the old master keeps its sockets this long, ready to
/// take over again if the new master dies (automatic rollback).
const ROLLBACK_WINDOW: Duration = Duration::from_secs(10);
/// How long an upgrade waits for a binary that is still open for writing,
/// and how often it tries to run it meanwhile.
const EXEC_BUSY_LIMIT: Duration = Duration::from_secs(2);
const EXEC_BUSY_RETRY: Duration = Duration::from_millis(20);
/// A successor we stop with us has this long past our own stop deadline
/// (it has the same one) before it is killed.
const SUCCESSOR_GRACE: Duration = Duration::from_secs(5);
/// How often at most the old master's counters are copied into ours after
/// an upgrade (the loop turns at least once a second).
const CARRY_EVERY: Duration = Duration::from_millis(250);
const SIGNALS: Token = Token(0);
/// The successor's pipe, during the rollback window.
const SUCCESSOR: Token = Token(1);
/// The config watcher's wake-ups.
const WATCH: Token = Token(2);

enum Phase {
    Serving,
    /// SIGUSR2 came but the binary was still open for writing somewhere
    /// ("text file busy"): serving as usual, and trying again at `retry_at`
    /// until `give_up_at`.
    Launching {
        retry_at: Instant,
        give_up_at: Instant,
    },
    /// A new master is starting on our sockets.
    Upgrading {
        successor: Child,
        ready: std::io::PipeReader,
        deadline: Instant,
    },
    /// The new master serves; our workers drain; we keep the sockets until
    /// `until` to roll back if it fails (killed by a signal, or a non-zero
    /// exit). It says on `news` when it is stopping on purpose.
    HandedOver {
        successor: Child,
        until: Instant,
        news: Option<std::io::PipeReader>,
    },
    /// `successor`: a new master stopping with us, inside the rollback
    /// window; we wait for it too.
    Stopping {
        deadline: Instant,
        successor: Option<Child>,
    },
}

struct Master<'a> {
    config: &'a Config,
    args: Vec<OsString>,
    /// Where an upgrade finds the (possibly new) binary.
    binary: PathBuf,
    slots: Vec<Slot>,
    /// Workers of ours told to finish up after a handover.
    retiring: Vec<Child>,
    metrics: Metrics,
    /// When the predecessor's counters are next copied into ours.
    carry_at: Instant,
    /// Which slots have no serving worker, for the workers covering them.
    cover: cover::Table,
    poll: Poll,
    phase: Phase,
    /// Set by a successor's start: the old master waiting for our workers.
    report_ready_to: Option<std::fs::File>,
    /// The same pipe once we told it we serve: we tell it when we stop, so
    /// that it stops too instead of rolling back.
    predecessor: Option<std::fs::File>,
    /// Re-reads the config (SIGHUP, the watcher) and keeps the generation
    /// the workers run.
    reloader: Reloader,
    /// Where workers read the current generation.
    handoff: Handoff,
    /// `None` without a config file (or when it cannot be watched: SIGHUP
    /// still reloads).
    watcher: Option<Watcher>,
    /// Re-resolves backend names every `dns_interval`, off this loop.
    resolver: Resolver,
}

/// Runs the master until it is stopped or has handed over to a new binary.
/// `args` are the program's own arguments (without argv[0]), handed
/// unchanged to every worker and to a successor.
pub fn run(
    config: &Config,
    argv0: &OsString,
    args: Vec<OsString>,
    signals: Signals,
) -> Result<(), String> {
    let (sockets, report_ready_to, carried) = match upgrade::inherited() {
        Some(inherited) => {
            let inherited = inherited?;
            let sockets = listeners::adopt_all(
                inherited.sockets,
                config.listen,
                config.metrics_addr,
                config.workers,
            )?;
            crate::info!(
                "master adopted {} listening sockets from the old master",
                sockets.len()
            );
            (sockets, inherited.ready, inherited.counters)
        }
        None => (
            listeners::bind_all(config.listen, config.metrics_addr, config.workers)?,
            None,
            None,
        ),
    };
    let mut metrics = Metrics::create(sockets.len())
        .map_err(|e| format!("cannot create the shared metrics block: {e}"))?;
    if let Some((fd, labels)) = carried {
        // Counters restart from zero rather than the upgrade failing.
        match metrics.carry_from(fd, &labels, &config.backends) {
            Ok(()) => crate::info!("master carries the old master's counters over"),
            Err(e) => crate::warn!("counters restart from zero: old master's block: {e}"),
        }
    }
    let cover = cover::Table::create(sockets.len())
        .map_err(|e| format!("cannot create the table of empty slots: {e}"))?;
    let poll = Poll::new().map_err(|e| format!("cannot create the event loop: {e}"))?;
    signals
        .register(poll.registry(), SIGNALS)
        .map_err(|e| format!("cannot watch signals: {e}"))?;
    let reloader = Reloader::new(args.clone(), config.clone());
    let handoff =
        Handoff::create().map_err(|e| format!("cannot create the config hand-off: {e}"))?;
    handoff.publish(reloader.current())?;
    // One waker per Poll (mio): the watcher and the resolver share it.
    let waker = Arc::new(
        Waker::new(poll.registry(), WATCH)
            .map_err(|e| format!("cannot create the event loop's waker: {e}"))?,
    );
    let resolver = Resolver::new(Arc::clone(&waker));
    let watcher = match &config.config_file {
        Some(file) => Watcher::start(file, waker)
            .inspect_err(|e| crate::warn!("{e}; SIGHUP still reloads it"))
            .ok(),
        None => None,
    };
    let now = Instant::now();
    let slots = sockets
        .into_iter()
        .map(|sockets| Slot {
            sockets: Some(sockets),
            child: None,
            started: now,
            crashes: 0,
            respawn_at: Some(now),
        })
        .collect();
    let mut master = Master {
        config,
        args,
        binary: upgrade::original_path(argv0),
        slots,
        retiring: Vec::new(),
        metrics,
        carry_at: now,
        cover,
        poll,
        phase: Phase::Serving,
        report_ready_to,
        predecessor: None,
        reloader,
        handoff,
        watcher,
        resolver,
    };
    crate::info!("master starting {}", workers(master.slots.len()));
    master.respawn_due(now);
    master.run(&signals)
}

impl Master<'_> {
    fn run(&mut self, signals: &Signals) -> Result<(), String> {
        let mut events = Events::with_capacity(16);
        let mut announced = false;
        loop {
            // While workers come up or a successor does, poll often to
            // notice it (both report through memory or a pipe we check).
            let waiting =
                !announced || matches!(self.phase, Phase::Upgrading { .. }) || self.starting();
            let tick = if waiting {
                Duration::from_millis(10)
            } else {
                Duration::from_secs(1)
            };
            let now = Instant::now();
            let timeout = self
                .next_deadline()
                .map_or(tick, |at| at.saturating_duration_since(now))
                .min(tick);
            if let Err(e) = self.poll.poll(&mut events, Some(timeout))
                && e.kind() != std::io::ErrorKind::Interrupted
            {
                return Err(format!("event loop failed: {e}"));
            }
            let now = Instant::now();
            while let Some(signal) = signals.read() {
                self.on_signal(signal, now);
            }
            if !announced && self.all_ready() {
                announced = true;
                self.announce_serving()?;
            }
            if self.watcher.as_mut().is_some_and(|w| w.poll(now)) {
                self.reload("the file changed");
            }
            let period = self.reloader.current().config.dns_interval;
            let reloader = &self.reloader;
            if let Some(answers) = self.resolver.poll(now, period, || reloader.names()) {
                self.refresh_dns(&answers);
            }
            self.reap(now);
            if now >= self.carry_at {
                // The old tree may still count while it drains.
                self.metrics.refresh_carried(&self.config.backends);
                self.carry_at = now + CARRY_EVERY;
            }
            if let Some(done) = self.advance(now) {
                return done;
            }
            self.publish_cover();
        }
    }

    /// Phases in which our workers serve and dead ones are replaced.
    fn supervising(&self) -> bool {
        matches!(
            self.phase,
            Phase::Serving | Phase::Launching { .. } | Phase::Upgrading { .. }
        )
    }

    fn next_deadline(&self) -> Option<Instant> {
        let phase = match &self.phase {
            Phase::Serving => None,
            Phase::Launching { retry_at, .. } => Some(*retry_at),
            Phase::Upgrading { deadline, .. } | Phase::Stopping { deadline, .. } => Some(*deadline),
            Phase::HandedOver { until, .. } => Some(*until),
        };
        let reread = self.watcher.as_ref().and_then(Watcher::deadline);
        self.slots
            .iter()
            .filter_map(|s| s.respawn_at)
            .chain(phase)
            .chain(reread)
            .chain(self.resolver.deadline())
            .min()
    }

    fn announce_serving(&mut self) -> Result<(), String> {
        crate::info!(
            "master serving on {} with {}",
            self.config.listen,
            workers(self.slots.len())
        );
        if let Some(path) = &self.config.pid_file {
            pid_file::write(path)
                .map_err(|e| format!("cannot write pid file {}: {e}", path.display()))?;
        }
        if let Some(mut old) = self.report_ready_to.take() {
            upgrade::report_ready(&mut old);
            self.predecessor = Some(old);
        }
        crate::notify::ready();
        Ok(())
    }

    fn on_signal(&mut self, signal: Signal, now: Instant) {
        match (signal, &self.phase) {
            (Signal::Child, _) => {}
            // logrotate: the workers write the access log (a worker just
            // starting opens it anew anyway).
            (Signal::Reopen, _) => self.signal_serving(NixSignal::SIGUSR1, true),
            (Signal::Stop, Phase::Stopping { successor, .. }) => {
                crate::info!("master: second stop signal, killing workers");
                if let Some(successor) = successor {
                    // Its second stop signal: it kills its workers.
                    signal_child(successor, NixSignal::SIGTERM);
                }
                self.signal_workers(NixSignal::SIGKILL);
            }
            (Signal::Stop, _) => {
                crate::info!("master stopping: draining workers");
                let successor = match std::mem::replace(&mut self.phase, Phase::Serving) {
                    Phase::Upgrading { mut successor, .. } => {
                        let _ = successor.kill();
                        let _ = successor.wait();
                        None
                    }
                    // Whichever master an operator signals, the service
                    // stops: the new one drains its workers, we ours.
                    Phase::HandedOver { successor, .. } => {
                        crate::info!("master: stopping the new master {} too", successor.id());
                        signal_child(&successor, NixSignal::SIGTERM);
                        Some(successor)
                    }
                    _ => None,
                };
                self.stop(now, successor);
            }
            (Signal::Upgrade, Phase::Serving) => self.start_upgrade(now),
            (Signal::Upgrade, _) => {
                crate::warn!("master: upgrade signal ignored: an upgrade or stop is under way")
            }
            (Signal::Reload, _) => self.reload("SIGHUP"),
        }
    }

    /// Re-reads the config; a new generation is published and every
    /// serving worker told (SIGHUP). One still starting reads it itself
    /// once it serves (SIGHUP would kill it before its signal handling is
    /// up). Not while stopping or handed over: those workers are leaving.
    fn reload(&mut self, why: &str) {
        if !self.supervising() {
            crate::info!("master: config reload ({why}) skipped: stopping or upgrading");
            return;
        }
        if matches!(
            self.reloader.reload(why, &self.metrics),
            Outcome::Applied(_)
        ) {
            self.hand_out();
        }
    }

    /// The resolver's answers: a name whose addresses changed is handed
    /// out as a reload is.
    fn refresh_dns(&mut self, answers: &crate::reload::dns::Answers) {
        if self.supervising() && matches!(self.reloader.refresh(answers), Outcome::Applied(_)) {
            self.hand_out();
        }
    }

    /// Publishes the current generation and tells every serving worker.
    fn hand_out(&mut self) {
        if let Err(e) = self.handoff.publish(self.reloader.current()) {
            crate::error!("master: cannot hand the new config to the workers: {e}");
            return;
        }
        for i in (0..self.slots.len()).filter(|&i| self.serving(i)) {
            if let Some(child) = &self.slots[i].child {
                signal_child(child, NixSignal::SIGHUP);
            }
        }
    }

    /// Graceful stop: new connections are refused at once (our copies of
    /// the sockets close), workers drain.
    fn stop(&mut self, now: Instant, successor: Option<Child>) {
        crate::notify::stopping();
        if let Some(mut old) = self.predecessor.take() {
            upgrade::report_stopping(&mut old);
        }
        self.slots.iter_mut().for_each(|s| s.sockets = None);
        self.signal_workers(NixSignal::SIGTERM);
        self.phase = Phase::Stopping {
            deadline: now + STOP_LIMIT,
            successor,
        };
    }

    /// Moves the upgrade and stop phases on; `Some` ends the master.
    fn advance(&mut self, now: Instant) -> Option<Result<(), String>> {
        match std::mem::replace(&mut self.phase, Phase::Serving) {
            Phase::Serving => self.respawn_due(now),
            Phase::Launching {
                retry_at,
                give_up_at,
            } => {
                self.respawn_due(now);
                match now >= retry_at {
                    true => self.launch_successor(now, give_up_at),
                    false => {
                        self.phase = Phase::Launching {
                            retry_at,
                            give_up_at,
                        }
                    }
                }
            }
            Phase::Upgrading {
                mut successor,
                mut ready,
                deadline,
            } => {
                let mut byte = [0u8; 1];
                // Readable: one byte (ready), or end of file (it died).
                let verdict = match successor.try_wait() {
                    Ok(Some(status)) => Some(Err(format!("the new master exited: {status}"))),
                    _ if now >= deadline => Some(Err(format!(
                        "the new master was not serving after {}",
                        duration_text(UPGRADE_LIMIT)
                    ))),
                    _ => match nonblocking_read(&mut ready, &mut byte) {
                        Some(1) => Some(Ok(())),
                        Some(0) => {
                            Some(Err("the new master closed its readiness pipe".to_string()))
                        }
                        _ => None,
                    },
                };
                match verdict {
                    None => {
                        self.phase = Phase::Upgrading {
                            successor,
                            ready,
                            deadline,
                        }
                    }
                    Some(Ok(())) => {
                        crate::info!(
                            "upgrade: new master {} is serving; old workers finish up",
                            successor.id()
                        );
                        self.hand_over(now);
                        self.watch_successor(&ready);
                        self.phase = Phase::HandedOver {
                            successor,
                            until: now + ROLLBACK_WINDOW,
                            news: Some(ready),
                        };
                    }
                    Some(Err(why)) => {
                        let _ = successor.kill();
                        let _ = successor.wait();
                        crate::error!("upgrade failed: {why}; still serving");
                    }
                }
                if !matches!(self.phase, Phase::Upgrading { .. }) {
                    self.respawn_due(now);
                }
            }
            Phase::HandedOver {
                mut successor,
                until,
                mut news,
            } => {
                let mut byte = [0u8; 1];
                let stopping = match news.as_mut().map(|r| nonblocking_read(r, &mut byte)) {
                    Some(Some(1)) => byte[0] == upgrade::STOPPING,
                    // End of file: it exited (its status tells how) or
                    // closed the pipe.
                    Some(Some(0)) => {
                        news = None;
                        false
                    }
                    _ => false,
                };
                let status = match stopping {
                    true => None,
                    false => successor.try_wait().ok().flatten(),
                };
                if stopping || status.is_some_and(|s| s.success()) {
                    crate::info!(
                        "upgrade: the new master {} stopped on purpose within the rollback window; stopping too",
                        successor.id()
                    );
                    let successor = status.is_none().then_some(successor);
                    self.stop(now, successor);
                    return None;
                }
                if let Some(status) = status {
                    crate::error!(
                        "upgrade rolled back: the new master failed ({status}); serving again"
                    );
                    self.roll_back(now);
                    return None;
                }
                if now >= until && self.retiring.is_empty() {
                    crate::info!("master handed over to {} and exits", successor.id());
                    return Some(Ok(()));
                }
                self.phase = Phase::HandedOver {
                    successor,
                    until,
                    news,
                };
            }
            Phase::Stopping {
                deadline,
                mut successor,
            } => {
                if successor
                    .as_mut()
                    .is_some_and(|c| !matches!(c.try_wait(), Ok(None)))
                {
                    successor = None;
                }
                let done = self.slots.iter().all(|s| s.child.is_none())
                    && self.retiring.is_empty()
                    && successor.is_none();
                if done {
                    if let Some(path) = &self.config.pid_file {
                        pid_file::remove_if_ours(path);
                    }
                    crate::info!("master stopped");
                    return Some(Ok(()));
                }
                if now >= deadline {
                    crate::warn!(
                        "master: workers still running after {}, killing them",
                        duration_text(STOP_LIMIT)
                    );
                    self.signal_workers(NixSignal::SIGKILL);
                    if let Some(successor) = &successor {
                        // Its second stop signal: it kills its workers.
                        let last = now >= deadline + SUCCESSOR_GRACE;
                        let signal = if last {
                            NixSignal::SIGKILL
                        } else {
                            NixSignal::SIGTERM
                        };
                        signal_child(successor, signal);
                    }
                }
                self.phase = Phase::Stopping {
                    deadline,
                    successor,
                };
            }
        }
        None
    }
}

/// Reads without blocking: `None` if nothing is there yet.
fn nonblocking_read(pipe: &mut std::io::PipeReader, buf: &mut [u8]) -> Option<usize> {
    use std::os::fd::AsFd;
    let fd = pipe.as_fd();
    let flags = nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_GETFL).ok()?;
    let flags = nix::fcntl::OFlag::from_bits_truncate(flags) | nix::fcntl::OFlag::O_NONBLOCK;
    nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_SETFL(flags)).ok()?;
    pipe.read(buf).ok()
}

fn signal_child(child: &Child, signal: NixSignal) {
    let _ = nix_signal::kill(Pid::from_raw(child.id() as i32), signal);
}

/// "1 worker", "2 workers".
fn workers(n: usize) -> String {
    format!("{n} worker{}", if n == 1 { "" } else { "s" })
}
