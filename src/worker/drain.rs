//! Stopping: the signals a worker reads, and the drain that lets requests
//! in flight finish while nothing new is accepted.

use std::time::{Duration, Instant};

use super::Worker;
use crate::proxy::Verdict;
use crate::signals::{Signal, Signals};

/// A graceful stop waits this long for requests in flight (SPEC §4).
const DRAIN_LIMIT: Duration = Duration::from_secs(30);
/// After an upgrade, idle keep-alive connections of a retiring worker stay
/// open this long, so clients are not cut mid-thought.
const UPGRADE_IDLE_GRACE: Duration = Duration::from_secs(10);

impl Worker {
    /// Reads pending signals; `true` means stop now.
    pub(super) fn on_signals(&mut self, now: Instant) -> bool {
        while let Some(signal) = self.signals.as_ref().and_then(Signals::read) {
            match signal {
                // Retiring after an upgrade, then told to stop: a plain
                // drain from here (idle connections go now).
                Signal::Stop if self.idle_close_at.is_some() => self.close_idle(),
                // A second stop signal means stop now (SPEC §4).
                Signal::Stop if self.drain_deadline.is_some() => return true,
                Signal::Stop => self.begin_drain(now, None),
                // From our master, after a new master took over the sockets.
                Signal::Upgrade if self.under_master && self.drain_deadline.is_none() => {
                    self.begin_drain(now, Some(UPGRADE_IDLE_GRACE));
                }
                Signal::Upgrade if !self.under_master => {
                    crate::warn!("SIGUSR2 ignored: binary upgrade needs mp mode (a master)");
                }
                Signal::Reload => self.reload("SIGHUP"),
                Signal::Reopen => {
                    if let Some(cover) = self.cover.as_mut() {
                        cover.refresh(self.poll.registry());
                    }
                    if let Some(log) = self.access.as_mut() {
                        log.reopen();
                    }
                }
                Signal::Upgrade | Signal::Child => {}
            }
        }
        false
    }

    /// Stops accepting and lets requests in flight finish, each connection
    /// closing after its response. Idle keep-alive connections close at
    /// once, or, when retiring after an upgrade, only once `idle_grace` has
    /// passed: until then a client's next request on one is still answered
    /// (with `Connection: close`), so no client ever has to re-send.
    pub(super) fn begin_drain(&mut self, now: Instant, idle_grace: Option<Duration>) {
        crate::info!(
            "{}: finishing requests on {} connections",
            if idle_grace.is_some() {
                "retiring"
            } else {
                "stopping"
            },
            self.sessions.len()
        );
        // Only the service's main process has NOTIFY_SOCKET: the sp worker.
        crate::notify::stopping();
        self.drain_deadline = Some(now + DRAIN_LIMIT);
        for listener in [self.listener.take(), self.metrics_listener.take()]
            .iter_mut()
            .flatten()
        {
            let _ = self.poll.registry().deregister(listener);
        }
        if let Some(cover) = self.cover.take() {
            cover.stop(self.poll.registry());
        }
        match idle_grace {
            Some(grace) => self.idle_close_at = Some(now + grace),
            None => self.close_idle(),
        }
    }

    pub(super) fn close_idle(&mut self) {
        self.idle_close_at = None;
        let idle: Vec<usize> = self
            .sessions
            .iter()
            .filter(|(_, s)| s.is_idle())
            .map(|(key, _)| key)
            .collect();
        for key in idle {
            self.settle(key, Verdict::Close);
        }
    }
}
