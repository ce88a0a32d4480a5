//! Process limits a proxy needs raised before it serves.
//!
//! Every client connection costs a descriptor, and so does its backend
//! connection: the usual soft limit of 1024 open files caps a worker at
//! a few hundred clients, far below what the event loop handles. Like
//! HAProxy (and Go's runtime), the balancer raises its soft limit to the
//! hard one at start, so `LimitNOFILE=` in the unit (or `ulimit -Hn`) is
//! the one setting that decides. Workers inherit the raised limit.

use nix::sys::resource::{Resource, getrlimit, setrlimit};

/// Above this the kernel may refuse (`fs.nr_open`, 1 Mi by default), and
/// no worker needs more.
const CEILING: u64 = 1 << 20;

/// Raises the soft open-files limit to the hard one (at most `CEILING`).
/// Returns the limit in force; a refusal keeps the old one and says so.
pub fn raise_open_files() -> u64 {
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return 0;
    };
    let wanted = hard.min(CEILING);
    if soft >= wanted {
        return soft;
    }
    match setrlimit(Resource::RLIMIT_NOFILE, wanted, hard) {
        Ok(()) => {
            crate::debug!("open files limit raised from {soft} to {wanted}");
            wanted
        }
        Err(e) => {
            crate::warn!("cannot raise the open files limit from {soft} to {wanted}: {e}");
            soft
        }
    }
}
