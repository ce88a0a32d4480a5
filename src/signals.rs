//! Process signals as ordinary events of the mio loop, through a signalfd:
//! the signals are blocked and read like data, so no code runs in an
//! asynchronous signal handler.
//!
//! `install` must run before any thread is spawned, so every thread
//! inherits the blocked mask and the signals reach only the signalfd.

use std::io;
use std::os::fd::AsRawFd;

use mio::unix::SourceFd;
use mio::{Interest, Registry, Token};
use nix::sys::signal::{SigSet, Signal as NixSignal};
use nix::sys::signalfd::{SfdFlags, SignalFd};

/// What the operator asked for (SPEC §4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// SIGTERM, SIGINT: graceful stop.
    Stop,
    /// SIGHUP: re-read the config file.
    Reload,
    /// SIGUSR2: binary upgrade.
    Upgrade,
    /// SIGCHLD (master only): a worker changed state.
    Child,
    /// SIGUSR1: reopen the access log (logrotate). A master passes it on
    /// to its workers; it also tells a worker that the set of slots
    /// without a serving worker may have changed (`master::cover`): both
    /// are idempotent, so one signal serves both.
    Reopen,
}

pub struct Signals {
    fd: SignalFd,
}

fn handled(with_child: bool) -> SigSet {
    let mut set = SigSet::empty();
    let base = [
        NixSignal::SIGTERM,
        NixSignal::SIGINT,
        NixSignal::SIGHUP,
        NixSignal::SIGUSR2,
        NixSignal::SIGUSR1,
    ];
    for s in base {
        set.add(s);
    }
    if with_child {
        set.add(NixSignal::SIGCHLD);
    }
    set
}

impl Signals {
    /// For a worker (or sp mode).
    pub fn install() -> io::Result<Signals> {
        Signals::install_set(handled(false))
    }

    /// For the master, which also hears about its children.
    pub fn install_master() -> io::Result<Signals> {
        Signals::install_set(handled(true))
    }

    fn install_set(set: SigSet) -> io::Result<Signals> {
        set.thread_block().map_err(io::Error::from)?;
        let fd = SignalFd::with_flags(&set, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
            .map_err(io::Error::from)?;
        Ok(Signals { fd })
    }

    pub fn register(&self, registry: &Registry, token: Token) -> io::Result<()> {
        registry.register(
            &mut SourceFd(&self.fd.as_raw_fd()),
            token,
            Interest::READABLE,
        )
    }

    /// The next pending signal, if any.
    pub fn read(&self) -> Option<Signal> {
        loop {
            let info = self.fd.read_signal().ok()??;
            match NixSignal::try_from(info.ssi_signo as i32) {
                Ok(NixSignal::SIGTERM | NixSignal::SIGINT) => return Some(Signal::Stop),
                Ok(NixSignal::SIGHUP) => return Some(Signal::Reload),
                Ok(NixSignal::SIGUSR2) => return Some(Signal::Upgrade),
                Ok(NixSignal::SIGCHLD) => return Some(Signal::Child),
                Ok(NixSignal::SIGUSR1) => return Some(Signal::Reopen),
                _ => continue,
            }
        }
    }
}
