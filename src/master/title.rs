//! Naming the master `load_balancer: master` in `ps`, as workers are named
//! `load_balancer: worker N`: the master re-executes itself once at start
//! with that argv[0] (same pid, same arguments), which needs no writing over
//! the process's argument memory. The name it was started as is kept in the
//! environment, because an upgrade re-executes *that* path.

use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::process::Command;

/// Set in the re-executed master: argv[0] as the operator gave it.
pub const ARGV0_ENV: &str = "LB_MASTER_ARGV0";
pub const TITLE: &str = "load_balancer: master";

/// The argv[0] the operator started us with.
pub fn original_argv0(args: &[OsString]) -> OsString {
    std::env::var_os(ARGV0_ENV)
        .or_else(|| args.first().cloned())
        .unwrap_or_else(|| "load_balancer".into())
}

/// Re-executes this process under the master's title, unless it already
/// runs under it. Returns only if that is not possible (then the master
/// simply keeps its original name).
pub fn become_titled(args: &[OsString]) {
    if std::env::var_os(ARGV0_ENV).is_some() {
        return;
    }
    let Some(argv0) = args.first() else {
        return;
    };
    let err = Command::new("/proc/self/exe")
        .arg0(TITLE)
        .args(&args[1..])
        .env(ARGV0_ENV, argv0)
        .exec();
    crate::debug!("master keeps its name: cannot re-execute itself: {err}");
}
