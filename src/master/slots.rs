//! Supervising the worker slots: which have a serving worker, reaping the
//! dead, respawning them with back-off, and telling the serving workers
//! which empty slots to cover (`cover.rs`). Part of `Master`, apart only
//! to keep the phases in `mod.rs` readable.

use std::process::Child;
use std::time::{Duration, Instant};

use nix::sys::signal::{self as nix_signal, Signal as NixSignal};
use nix::unistd::Pid;

use super::listeners::SlotSockets;
use super::{Master, spawn};
use crate::config::value::duration_text;

/// A worker that lived this long was healthy: its next death respawns at once.
const STABLE_AFTER: Duration = Duration::from_secs(10);
/// Longest wait before respawning a worker that keeps crashing.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// While no worker serves, nobody covers an empty slot (`cover.rs`): a
/// back-off then waits at most this long, so that a connection still
/// waits no more than about 1 s for an accept (SPEC §2).
const UNCOVERED_BACKOFF: Duration = Duration::from_millis(500);

/// One worker slot: its sockets outlive any number of worker processes.
pub(super) struct Slot {
    /// Dropped when the master stops, so new connections are refused while
    /// the workers drain.
    pub(super) sockets: Option<SlotSockets>,
    pub(super) child: Option<Child>,
    pub(super) started: Instant,
    /// Consecutive short-lived runs, for the back-off.
    pub(super) crashes: u32,
    pub(super) respawn_at: Option<Instant>,
}

impl Master<'_> {
    /// Whether our worker in `slot` reported serving.
    pub(super) fn serving(&self, slot: usize) -> bool {
        self.slots[slot]
            .child
            .as_ref()
            .is_some_and(|c| self.metrics.is_ready(slot, c.id()))
    }

    /// A worker was started but has not reported serving yet.
    pub(super) fn starting(&self) -> bool {
        (0..self.slots.len()).any(|i| self.slots[i].child.is_some() && !self.serving(i))
    }

    /// Every slot has a live worker that reported serving.
    pub(super) fn all_ready(&self) -> bool {
        (0..self.slots.len()).all(|i| self.serving(i))
    }

    /// Tells the serving workers which slots they must cover, when that
    /// changed: every slot without a serving worker (dead, in back-off, or
    /// still starting).
    pub(super) fn publish_cover(&mut self) {
        if !self.supervising() {
            return;
        }
        let empty: Vec<bool> = (0..self.slots.len()).map(|i| !self.serving(i)).collect();
        match self.cover.publish(empty.iter().copied()) {
            Ok(false) => {}
            Ok(true) => {
                // Reads the table itself once it serves.
                self.signal_serving(NixSignal::SIGUSR1, false);
            }
            Err(e) => crate::error!("master: cannot update the table of empty slots: {e}"),
        }
    }

    /// Collects dead workers and schedules their respawn.
    pub(super) fn reap(&mut self, now: Instant) {
        self.retiring
            .retain_mut(|c| !matches!(c.try_wait(), Ok(Some(_))));
        let respawn = self.supervising();
        let mut died = Vec::new();
        for (i, slot) in self.slots.iter_mut().enumerate() {
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
            died.push((i, pid, status));
        }
        if !respawn {
            return;
        }
        // With no worker serving, nobody covers an empty slot: every
        // back-off is cut short.
        let alone = !(0..self.slots.len()).any(|i| self.serving(i));
        let cap = |delay: Duration| match alone {
            true => delay.min(UNCOVERED_BACKOFF),
            false => delay,
        };
        for (i, pid, status) in died {
            let delay = cap(backoff(self.slots[i].crashes));
            let when = match delay.is_zero() {
                true => "now".to_string(),
                false => format!("in {}", duration_text(delay)),
            };
            crate::warn!("worker {i} (pid {pid}) died: {status}; respawning {when}");
            self.slots[i].respawn_at = Some(now + delay);
        }
        if alone {
            for slot in &mut self.slots {
                slot.respawn_at = slot.respawn_at.map(|at| at.min(now + UNCOVERED_BACKOFF));
            }
        }
    }

    pub(super) fn respawn_due(&mut self, now: Instant) {
        for i in 0..self.slots.len() {
            let slot = &mut self.slots[i];
            if slot.respawn_at.is_none_or(|at| at > now) || slot.child.is_some() {
                continue;
            }
            slot.respawn_at = None;
            // All slots' sockets, or none: they are dropped together at a stop.
            let Some(sockets) = self
                .slots
                .iter()
                .map(|s| s.sockets.as_ref())
                .collect::<Option<Vec<&SlotSockets>>>()
            else {
                continue;
            };
            let shared = spawn::Shared {
                shm: self.metrics.shm_fd(),
                cover_table: self.cover.raw_fd(),
                handoff: self.handoff.raw_fd(),
                slots: &sockets,
            };
            let spawned = spawn::spawn_worker(i, sockets[i], &shared, &self.args);
            let slot = &mut self.slots[i];
            match spawned {
                Ok(child) => {
                    crate::info!("worker {i} started (pid {})", child.id());
                    if slot.crashes > 0 {
                        self.metrics.worker_restarted();
                    }
                    slot.child = Some(child);
                    slot.started = now;
                }
                Err(e) => {
                    slot.crashes += 1;
                    let delay = backoff(slot.crashes).max(Duration::from_millis(250));
                    crate::error!(
                        "master: cannot start worker {i}: {e}; retrying in {}",
                        duration_text(delay)
                    );
                    slot.respawn_at = Some(now + delay);
                }
            }
        }
    }

    /// Only serving workers, and with `retiring` those retiring after an
    /// upgrade (they served, and still write the access log): one still
    /// starting may not read signals yet, and SIGUSR1 would kill it.
    pub(super) fn signal_serving(&self, signal: NixSignal, retiring: bool) {
        let serving = (0..self.slots.len())
            .filter(|&i| self.serving(i))
            .filter_map(|i| self.slots[i].child.as_ref());
        let retiring = self.retiring.iter().filter(|_| retiring);
        for child in serving.chain(retiring) {
            let _ = nix_signal::kill(Pid::from_raw(child.id() as i32), signal);
        }
    }

    pub(super) fn signal_workers(&self, signal: NixSignal) {
        let children = self
            .slots
            .iter()
            .filter_map(|s| s.child.as_ref())
            .chain(&self.retiring);
        for child in children {
            let _ = nix_signal::kill(Pid::from_raw(child.id() as i32), signal);
        }
    }
}

/// First respawn at once, then 250 ms doubling up to [`MAX_BACKOFF`].
fn backoff(crashes: u32) -> Duration {
    match crashes {
        0 | 1 => Duration::ZERO,
        n => (Duration::from_millis(250) * 2u32.saturating_pow(n - 2)).min(MAX_BACKOFF),
    }
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
