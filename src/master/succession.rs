//! The master's side of a binary upgrade (SPEC §4): starting the new
//! binary, handing our sockets over once it serves, and taking over again
//! when it fails inside the rollback window. The descriptor passing itself
//! is `upgrade.rs`.

use std::time::Instant;

use nix::sys::signal::{self as nix_signal, Signal as NixSignal};
use nix::unistd::Pid;

use super::listeners::SlotSockets;
use super::{EXEC_BUSY_LIMIT, EXEC_BUSY_RETRY, Master, Phase, SUCCESSOR, UPGRADE_LIMIT};
use super::{pid_file, upgrade};
use crate::config::value::duration_text;

impl Master<'_> {
    pub(super) fn start_upgrade(&mut self, now: Instant) {
        crate::info!("master upgrading: starting {}", self.binary.display());
        self.launch_successor(now, now + EXEC_BUSY_LIMIT);
        if matches!(self.phase, Phase::Launching { .. }) {
            crate::info!(
                "upgrade: the binary is still open for writing; retrying for up to {}",
                duration_text(EXEC_BUSY_LIMIT)
            );
        }
    }

    /// Starts the new master, or schedules another try while the binary is
    /// busy: a file just written may still be open for writing (by the
    /// package manager, or a copy still being closed) for a moment.
    pub(super) fn launch_successor(&mut self, now: Instant, give_up_at: Instant) {
        let sockets: Vec<&SlotSockets> = self
            .slots
            .iter()
            .filter_map(|s| s.sockets.as_ref())
            .collect();
        let labels: Vec<String> = self
            .config
            .backends
            .iter()
            .map(|b| b.label.clone())
            .collect();
        let counters = upgrade::Counters {
            fd: self.metrics.shm_fd(),
            labels: &labels,
        };
        match upgrade::spawn_successor(&self.binary, &self.args, &sockets, counters) {
            Ok((successor, ready)) => {
                self.phase = Phase::Upgrading {
                    successor,
                    ready,
                    deadline: now + UPGRADE_LIMIT,
                };
            }
            Err(e) if e.kind() == std::io::ErrorKind::ExecutableFileBusy && now < give_up_at => {
                self.phase = Phase::Launching {
                    retry_at: now + EXEC_BUSY_RETRY,
                    give_up_at,
                };
            }
            Err(e) => crate::error!(
                "upgrade failed: cannot start {}: {e}; still serving",
                self.binary.display()
            ),
        }
    }

    /// The new master failed within the rollback window: our workers serve
    /// again, and the pid file and systemd name us again.
    pub(super) fn roll_back(&mut self, now: Instant) {
        self.slots.iter_mut().for_each(|s| s.respawn_at = Some(now));
        self.respawn_due(now);
        if let Some(path) = &self.config.pid_file
            && let Err(e) = pid_file::write(path)
        {
            crate::error!("cannot write pid file {}: {e}", path.display());
        }
        crate::notify::main_pid();
    }

    /// Registers the successor's pipe, so that its news (or its end) wakes
    /// us at once.
    pub(super) fn watch_successor(&self, pipe: &std::io::PipeReader) {
        use std::os::fd::AsRawFd;
        let fd = pipe.as_raw_fd();
        let registered = self.poll.registry().register(
            &mut mio::unix::SourceFd(&fd),
            SUCCESSOR,
            mio::Interest::READABLE,
        );
        if let Err(e) = registered {
            // Still read each turn; only later.
            crate::warn!("master: cannot watch the new master's pipe: {e}");
        }
    }

    /// Our workers stop accepting and finish what they have; the sockets
    /// stay open here (for a rollback) and in the new master's workers.
    pub(super) fn hand_over(&mut self, now: Instant) {
        for slot in &mut self.slots {
            slot.respawn_at = None;
            if let Some(child) = slot.child.take() {
                // SIGUSR2 to a worker: retire without cutting idle
                // keep-alive connections (see worker::begin_drain).
                let _ = nix_signal::kill(Pid::from_raw(child.id() as i32), NixSignal::SIGUSR2);
                self.retiring.push(child);
            }
            slot.started = now;
        }
    }
}
