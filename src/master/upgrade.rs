//! Binary upgrade (SPEC §4, SIGUSR2): the old master execs the binary at its
//! original path with the same arguments, handing over its listening
//! sockets and a readiness pipe; the new master adopts the sockets instead
//! of binding, and writes one byte on the pipe once its workers serve.
//!
//! Both sides live here: `spawn_successor` for the old master, `inherited`
//! for the new one. Sockets are handed over, never re-bound, so no
//! connection is refused during an upgrade.

use std::ffi::OsString;
use std::io::{self, Write};
use std::net::TcpListener;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};

use super::listeners::SlotSockets;

/// Inherited listening sockets, in slot order: `3,4,…`.
const LISTEN_FDS_ENV: &str = "LB_UPGRADE_LISTEN_FDS";
/// Inherited `--metrics-addr` sockets, in slot order.
const METRICS_FDS_ENV: &str = "LB_UPGRADE_METRICS_FDS";
/// The write end of the old master's readiness pipe.
const READY_FD_ENV: &str = "LB_UPGRADE_READY_FD";
/// The old master's shared counter block, whose totals the new one carries.
const COUNTERS_FD_ENV: &str = "LB_UPGRADE_COUNTERS_FD";
/// The backend labels of that block's rows, in id order, one per line.
const COUNTER_LABELS_ENV: &str = "LB_UPGRADE_COUNTER_LABELS";
/// Variables a worker must not see (they describe the master's handover).
pub const HANDOVER_ENV: [&str; 5] = [
    LISTEN_FDS_ENV,
    METRICS_FDS_ENV,
    READY_FD_ENV,
    COUNTERS_FD_ENV,
    COUNTER_LABELS_ENV,
];

/// The binary's original absolute path, as it was started: a file replaced
/// there (a new version) is what an upgrade runs. Symlinks are kept, not
/// resolved, so `/usr/local/bin/lb -> /opt/lb-2/lb` upgrades to where the
/// link points then.
pub fn original_path(argv0: &OsString) -> PathBuf {
    let given = Path::new(argv0);
    if given.components().count() > 1 {
        let cwd = std::env::current_dir().unwrap_or_default();
        // `./lb` is `<cwd>/lb`; `..` is left for the kernel to resolve.
        let cleaned: PathBuf = given
            .components()
            .filter(|c| *c != std::path::Component::CurDir)
            .collect();
        return cwd.join(cleaned);
    }
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(given))
            .find(|candidate| candidate.is_file())
    });
    found
        .or_else(|| std::env::current_exe().ok())
        .unwrap_or_else(|| given.to_path_buf())
}

/// What the new master inherited from the old one.
pub struct Inherited {
    pub sockets: Vec<SlotSockets>,
    /// Written once this master's workers serve.
    pub ready: Option<std::fs::File>,
    /// The old master's counter block and its rows' backend labels.
    pub counters: Option<(OwnedFd, Vec<String>)>,
}

/// The handover this process was started with, if any.
pub fn inherited() -> Option<Result<Inherited, String>> {
    let listen = std::env::var(LISTEN_FDS_ENV).ok()?;
    Some(adopt(&listen))
}

fn adopt(listen: &str) -> Result<Inherited, String> {
    let fds = |text: &str| -> Result<Vec<i32>, String> {
        text.split(',')
            .filter(|s| !s.is_empty())
            .map(|s| {
                s.parse::<i32>()
                    .map_err(|_| format!("bad descriptor list '{text}' from the old master"))
            })
            .collect()
    };
    let listen = fds(listen)?;
    let metrics = fds(&std::env::var(METRICS_FDS_ENV).unwrap_or_default())?;
    let mut sockets = Vec::with_capacity(listen.len());
    for (i, &fd) in listen.iter().enumerate() {
        let listen = crate::worker::inherited_listener(fd)
            .map_err(|e| format!("inherited socket {fd}: {e}"))?;
        let metrics = match metrics.get(i) {
            Some(&m) => Some(
                crate::worker::inherited_listener(m)
                    .map_err(|e| format!("inherited socket {m}: {e}"))?,
            ),
            None => None,
        };
        sockets.push(SlotSockets { listen, metrics });
    }
    let ready = std::env::var(READY_FD_ENV)
        .ok()
        .and_then(|s| s.parse::<i32>().ok())
        .map(|fd| std::fs::File::from(crate::worker::inherited_fd(fd)));
    let counters = std::env::var(COUNTERS_FD_ENV)
        .ok()
        .and_then(|s| s.parse::<i32>().ok())
        .map(|fd| {
            let labels = std::env::var(COUNTER_LABELS_ENV).unwrap_or_default();
            let labels = labels.lines().map(str::to_string).collect();
            (crate::worker::inherited_fd(fd), labels)
        });
    // Ours alone: not for our workers (they get sockets by name) nor a
    // later successor. A worker holding the pipe would also keep the old
    // master from seeing it close when we exit.
    let fds = sockets
        .iter()
        .flat_map(|s| std::iter::once(s.listen.as_fd()).chain(s.metrics.as_ref().map(AsFd::as_fd)))
        .chain(ready.as_ref().map(AsFd::as_fd))
        .chain(counters.as_ref().map(|(fd, _)| fd.as_fd()));
    for fd in fds {
        let flag = nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC);
        nix::fcntl::fcntl(fd, flag).map_err(|e| format!("inherited descriptor: {e}"))?;
    }
    Ok(Inherited {
        sockets,
        ready,
        counters,
    })
}

/// Sent on the readiness pipe: this master serves.
pub const READY: u8 = b'R';
/// Sent after `READY`: this master stops on purpose (a stop signal), so
/// the old one must stop too rather than roll back.
pub const STOPPING: u8 = b'S';

/// Tells the old master this one is serving.
pub fn report_ready(ready: &mut std::fs::File) {
    if let Err(e) = ready.write_all(&[READY]) {
        crate::warn!("cannot tell the old master we are ready: {e}");
    }
}

/// Tells the old master this one stops on purpose. It has usually exited
/// already (its rollback window is over): then the write fails, unheard.
pub fn report_stopping(ready: &mut std::fs::File) {
    let _ = ready.write_all(&[STOPPING]);
}

/// Our counter block as handed to a successor: its descriptor and the
/// backend label of each of its rows, in id order.
pub struct Counters<'a> {
    pub fd: RawFd,
    pub labels: &'a [String],
}

/// Starts the new master; returns it and the read end of its readiness
/// pipe (one byte when ready; end of file if it died first).
pub fn spawn_successor(
    path: &Path,
    args: &[OsString],
    slots: &[&SlotSockets],
    counters: Counters<'_>,
) -> io::Result<(Child, std::io::PipeReader)> {
    let (reader, writer) = std::io::pipe()?;
    // Descriptors 3.. in the child: listen sockets, metrics sockets, pipe,
    // counter block.
    let mut sources: Vec<i32> = slots.iter().map(|s| s.listen.as_raw_fd()).collect();
    sources.extend(
        slots
            .iter()
            .filter_map(|s| s.metrics.as_ref().map(TcpListener::as_raw_fd)),
    );
    sources.push(writer.as_raw_fd());
    sources.push(counters.fd);
    let targets: Vec<i32> = (0..sources.len() as i32).map(|i| 3 + i).collect();
    let n = slots.len();
    let list = |range: &[i32]| {
        range
            .iter()
            .map(i32::to_string)
            .collect::<Vec<_>>()
            .join(",")
    };
    let metrics_count = sources.len() - n - 2;
    let mut cmd = Command::new(path);
    // The new master names itself afresh (see `title`).
    cmd.args(args)
        .env_remove(super::title::ARGV0_ENV)
        .env(LISTEN_FDS_ENV, list(&targets[..n]))
        .env(METRICS_FDS_ENV, list(&targets[n..n + metrics_count]))
        .env(READY_FD_ENV, targets[sources.len() - 2].to_string())
        .env(COUNTERS_FD_ENV, targets[sources.len() - 1].to_string())
        .env(COUNTER_LABELS_ENV, counters.labels.join("\n"));
    let pairs: Vec<(i32, i32)> = sources.into_iter().zip(targets).collect();
    // SAFETY: between fork and exec the closure only makes async-signal-safe
    // calls (fcntl, dup2, sigprocmask) on integers in a vector allocated
    // before the fork; it allocates nothing itself.
    unsafe {
        cmd.pre_exec(move || {
            let mut parked = [0i32; 256];
            if pairs.len() > parked.len() {
                return Err(io::Error::other("too many sockets to hand over"));
            }
            for (i, &(fd, _)) in pairs.iter().enumerate() {
                parked[i] = libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 300);
                if parked[i] < 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            for (i, &(_, target)) in pairs.iter().enumerate() {
                if libc::dup2(parked[i], target) < 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            let mut empty: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut empty);
            libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
            Ok(())
        });
    }
    let child = cmd.spawn()?;
    drop(writer);
    Ok((child, reader))
}
