//! Starting a worker: fork+exec of the running binary (`/proc/self/exe`)
//! with its slot's sockets as inherited descriptors 3 and 4, the metrics
//! block on 5, the config hand-off (`reload::handoff`) on 6, and from 7 on
//! what it needs to cover an empty slot.
//!
//! The master is multi-threaded once the config watcher runs, and between
//! fork and exec a multi-threaded process may only make async-signal-safe
//! calls; `pre_exec` below makes nothing else.

use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command};

use super::listeners::SlotSockets;

/// The environment a worker process finds its slot in.
pub const SLOT_ENV: &str = "LB_WORKER_SLOT";
/// Set when descriptor 4 carries the slot's `--metrics-addr` socket.
pub const METRICS_ENV: &str = "LB_WORKER_METRICS";
/// The descriptors a worker inherits its sockets and the shared metrics
/// block on.
pub const LISTEN_FD: i32 = 3;
pub const METRICS_FD: i32 = 4;
pub const SHM_FD: i32 = 5;
/// The current config generation (`reload::handoff`).
pub const HANDOFF_FD: i32 = 6;

/// What every worker also inherits, whatever its slot: the shared metrics
/// block, and the table and sockets it needs to cover an empty slot
/// (`cover.rs`).
pub struct Shared<'a> {
    pub shm: i32,
    pub cover_table: i32,
    pub handoff: i32,
    /// Every slot's sockets, in slot order.
    pub slots: &'a [&'a SlotSockets],
}

/// Spawns the worker of `slot` with the master's own arguments.
pub fn spawn_worker(
    slot: usize,
    sockets: &SlotSockets,
    shared: &Shared<'_>,
    args: &[std::ffi::OsString],
) -> io::Result<Child> {
    let master = std::process::id() as libc::pid_t;
    let mut cmd = Command::new("/proc/self/exe");
    cmd.arg0(format!("load_balancer: worker {slot}"))
        .args(args)
        .env(SLOT_ENV, slot.to_string())
        .env_remove(METRICS_ENV)
        // systemd hears from the master only.
        .env_remove("NOTIFY_SOCKET");
    cmd.env_remove(super::title::ARGV0_ENV);
    for var in super::upgrade::HANDOVER_ENV {
        cmd.env_remove(var);
    }
    // (source, target) descriptor pairs, built before the fork.
    let mut pairs = vec![
        (sockets.listen.as_raw_fd(), LISTEN_FD),
        (shared.shm, SHM_FD),
        (shared.handoff, HANDOFF_FD),
    ];
    if let Some(m) = &sockets.metrics {
        cmd.env(METRICS_ENV, "1");
        pairs.push((m.as_raw_fd(), METRICS_FD));
    }
    let listen: Vec<i32> = shared.slots.iter().map(|s| s.listen.as_raw_fd()).collect();
    let metrics: Vec<i32> = shared
        .slots
        .iter()
        .filter_map(|s| s.metrics.as_ref().map(|m| m.as_raw_fd()))
        .collect();
    let cover = super::cover::inheritance(shared.cover_table, &listen, &metrics, HANDOFF_FD + 1);
    pairs.extend(cover.pairs);
    for (var, value) in cover.env {
        cmd.env(var, value);
    }
    // Sources are parked above every target first: a source could sit on
    // a target number.
    let park_above = pairs.iter().map(|&(_, target)| target).max().unwrap_or(0) + 1;
    let mut parked = vec![0i32; pairs.len()];
    // SAFETY: the closure runs in the child between fork and exec and makes
    // only async-signal-safe system calls (dup2, fcntl, prctl, getppid,
    // sigprocmask) on integers in vectors allocated before the fork; it
    // allocates nothing and touches no lock.
    unsafe {
        cmd.pre_exec(move || {
            for (i, &(fd, _)) in pairs.iter().enumerate() {
                parked[i] = park_fd(fd, park_above)?;
            }
            for (i, &(_, target)) in pairs.iter().enumerate() {
                inherit_fd(parked[i], target)?;
            }
            // The worker dies with the master (SIGTERM: it drains first).
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                return Err(io::Error::last_os_error());
            }
            if libc::getppid() != master {
                // The master died before prctl took effect.
                libc::_exit(0);
            }
            // The master blocks its signals for its signalfd; the worker
            // starts from a clean mask and blocks what it reads itself.
            let mut empty: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut empty);
            libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
            Ok(())
        });
    }
    cmd.spawn()
}

/// A close-on-exec copy of `fd` at `above` or higher.
///
/// # Safety
/// Async-signal-safe: only fcntl.
unsafe fn park_fd(fd: i32, above: i32) -> io::Result<i32> {
    // SAFETY: a plain descriptor syscall.
    let parked = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, above) };
    if parked < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(parked)
}

/// Puts `fd` at `target` without close-on-exec.
///
/// # Safety
/// Async-signal-safe: only dup2 and fcntl.
unsafe fn inherit_fd(fd: i32, target: i32) -> io::Result<()> {
    // SAFETY: plain descriptor syscalls; errors are reported, not ignored.
    unsafe {
        if libc::dup2(fd, target) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}
