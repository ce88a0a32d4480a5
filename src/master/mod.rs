//! The master process (mp mode, SPEC §2): binds the listening sockets,
//! starts one worker per slot, respawns workers that die (with back-off),
//! and stops them gracefully. It serves no requests.
//!
//! Phases, logged so tests and operators can follow: starting → serving →
//! stopping → stopped.

pub mod listeners;
pub mod spawn;

use std::ffi::OsString;
use std::io::Write;
use std::path::Path;
use std::process::Child;
use std::time::{Duration, Instant};

use mio::{Events, Poll, Token};
use nix::sys::signal::{self as nix_signal, Signal as NixSignal};
use nix::unistd::Pid;

use crate::config::Config;
use crate::metrics::Metrics;
use crate::signals::{Signal, Signals};
use listeners::SlotSockets;

/// A graceful stop waits this long for workers, then kills them (SPEC §4).
const STOP_LIMIT: Duration = Duration::from_secs(30);
/// A worker that lived this long was healthy: its next death respawns at once.
const STABLE_AFTER: Duration = Duration::from_secs(10);
/// Longest wait before respawning a worker that keeps crashing.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
const SIGNALS: Token = Token(0);

/// One worker slot: its sockets outlive any number of worker processes.
struct Slot {
    /// Dropped when the master stops, so new connections are refused while
    /// the workers drain.
    sockets: Option<SlotSockets>,
    child: Option<Child>,
    started: Instant,
    /// Consecutive short-lived runs, for the back-off.
    crashes: u32,
    respawn_at: Option<Instant>,
}

/// Runs the master until it is stopped. `args` are the program's own
/// arguments, handed unchanged to every worker.
pub fn run(config: &Config, args: Vec<OsString>, signals: Signals) -> Result<(), String> {
    let sockets = listeners::bind_all(config.listen, config.metrics_addr, config.workers)?;
    let metrics = Metrics::create(&config.backends, config.workers)
        .map_err(|e| format!("cannot create the shared metrics block: {e}"))?;
    let mut poll = Poll::new().map_err(|e| format!("cannot create the event loop: {e}"))?;
    signals
        .register(poll.registry(), SIGNALS)
        .map_err(|e| format!("cannot watch signals: {e}"))?;
    if let Some(path) = &config.pid_file {
        write_pid_file(path)
            .map_err(|e| format!("cannot write pid file {}: {e}", path.display()))?;
    }
    let now = Instant::now();
    let mut slots: Vec<Slot> = sockets
        .into_iter()
        .map(|sockets| Slot {
            sockets: Some(sockets),
            child: None,
            started: now,
            crashes: 0,
            respawn_at: Some(now),
        })
        .collect();
    crate::info!("master starting {} workers", slots.len());
    respawn_due(&mut slots, &args, &metrics, now);
    crate::info!(
        "master serving on {} with {} workers",
        config.listen,
        slots.len()
    );
    crate::notify::ready();

    let mut events = Events::with_capacity(16);
    let mut stop_deadline: Option<Instant> = None;
    loop {
        let now = Instant::now();
        let next = slots
            .iter()
            .filter_map(|s| s.respawn_at)
            .chain(stop_deadline)
            .min();
        let timeout = next.map_or(Duration::from_secs(1), |at| {
            at.saturating_duration_since(now)
        });
        if let Err(e) = poll.poll(&mut events, Some(timeout.min(Duration::from_secs(1)))) {
            if e.kind() != std::io::ErrorKind::Interrupted {
                return Err(format!("event loop failed: {e}"));
            }
        }
        let now = Instant::now();
        while let Some(signal) = signals.read() {
            match signal {
                Signal::Child => {}
                Signal::Stop if stop_deadline.is_some() => {
                    crate::info!("master: second stop signal, killing workers");
                    signal_all(&slots, NixSignal::SIGKILL);
                }
                Signal::Stop => {
                    crate::info!("master stopping: draining workers");
                    crate::notify::stopping();
                    stop_deadline = Some(now + STOP_LIMIT);
                    slots.iter_mut().for_each(|s| s.sockets = None);
                    signal_all(&slots, NixSignal::SIGTERM);
                }
                Signal::Reload | Signal::Upgrade => {
                    crate::warn!("master: {signal:?} signal not supported yet, ignored");
                }
            }
        }
        reap(&mut slots, stop_deadline.is_none(), now);
        match stop_deadline {
            Some(_) if slots.iter().all(|s| s.child.is_none()) => break,
            Some(deadline) if now >= deadline => {
                crate::warn!("master: workers still running after {STOP_LIMIT:?}, killing them");
                signal_all(&slots, NixSignal::SIGKILL);
            }
            Some(_) => {}
            None => respawn_due(&mut slots, &args, &metrics, now),
        }
    }
    if let Some(path) = &config.pid_file {
        let _ = std::fs::remove_file(path);
    }
    crate::info!("master stopped");
    Ok(())
}

/// Collects dead workers and schedules their respawn.
fn reap(slots: &mut [Slot], respawn: bool, now: Instant) {
    for (i, slot) in slots.iter_mut().enumerate() {
        let Some(child) = slot.child.as_mut() else {
            continue;
        };
        let status = match child.try_wait() {
            Ok(Some(status)) => status,
            Ok(None) => continue,
            Err(e) => {
                crate::error!("master: cannot wait for worker {i}: {e}");
                continue;
            }
        };
        let pid = child.id();
        slot.child = None;
        if !respawn {
            crate::info!("worker {i} (pid {pid}) exited: {status}");
            continue;
        }
        let lived = now.duration_since(slot.started);
        slot.crashes = if lived >= STABLE_AFTER {
            1
        } else {
            slot.crashes + 1
        };
        let delay = backoff(slot.crashes);
        crate::warn!("worker {i} (pid {pid}) died: {status}; respawning in {delay:?}");
        slot.respawn_at = Some(now + delay);
    }
}

/// First respawn at once, then 250 ms doubling up to [`MAX_BACKOFF`].
fn backoff(crashes: u32) -> Duration {
    match crashes {
        0 | 1 => Duration::ZERO,
        n => (Duration::from_millis(250) * 2u32.saturating_pow(n - 2)).min(MAX_BACKOFF),
    }
}

fn respawn_due(slots: &mut [Slot], args: &[OsString], metrics: &Metrics, now: Instant) {
    for (i, slot) in slots.iter_mut().enumerate() {
        if slot.respawn_at.is_none_or(|at| at > now) || slot.child.is_some() {
            continue;
        }
        slot.respawn_at = None;
        let Some(sockets) = slot.sockets.as_ref() else {
            continue;
        };
        match spawn::spawn_worker(i, sockets, metrics.shm_fd(), args) {
            Ok(child) => {
                crate::info!("worker {i} started (pid {})", child.id());
                if slot.crashes > 0 {
                    metrics.worker_restarted();
                }
                slot.child = Some(child);
                slot.started = now;
            }
            Err(e) => {
                slot.crashes += 1;
                let delay = backoff(slot.crashes).max(Duration::from_millis(250));
                crate::error!("master: cannot start worker {i}: {e}; retrying in {delay:?}");
                slot.respawn_at = Some(now + delay);
            }
        }
    }
}

fn signal_all(slots: &[Slot], signal: NixSignal) {
    for child in slots.iter().filter_map(|s| s.child.as_ref()) {
        let _ = nix_signal::kill(Pid::from_raw(child.id() as i32), signal);
    }
}

/// Written to a temporary file and renamed, so a reader never sees half a
/// pid.
fn write_pid_file(path: &Path) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut file = std::fs::File::create(&tmp)?;
    writeln!(file, "{}", std::process::id())?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_starts_immediately_then_doubles_to_a_cap() {
        assert_eq!(backoff(1), Duration::ZERO);
        assert_eq!(backoff(2), Duration::from_millis(250));
        assert_eq!(backoff(3), Duration::from_millis(500));
        assert_eq!(backoff(40), MAX_BACKOFF);
    }
}
