//! Naming the master `load_balancer: master` in `ps`, as workers are named
//! `load_balancer: worker N`: the master re-executes itself once at start
//! with that argv[0] (same pid, same arguments), which needs no writing over
//! the process's argument memory. The name it was started as is kept in the
//! environment, because an upgrade re-executes *that* path. And the short
//! name (`comm`, what `pgrep -x`, `pidof`, `top` show) of every process is
//! the binary's file name, not the `exe` of `/proc/self/exe`.

use std::ffi::{CString, OsString};
use std::os::unix::ffi::OsStrExt;
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

/// Sets `comm` to the binary's file name: executing `/proc/self/exe` (the
/// re-titled master, every worker) would leave it `exe`. Call first thing
/// in `main`, before any thread starts: threads inherit it, and it names
/// the calling thread only.
pub fn name_process() {
    let name = comm_for(std::fs::read_link("/proc/self/exe").ok().as_deref());
    if let Err(e) = nix::sys::prctl::set_name(&name) {
        crate::debug!("cannot set the process name: {e}");
    }
}

/// The file name of `exe` (a replaced binary reads "... (deleted)"), cut
/// to the kernel's 15 bytes; `load_balancer` if there is none.
fn comm_for(exe: Option<&std::path::Path>) -> CString {
    const COMM_MAX: usize = 15;
    let name = exe
        .and_then(|p| p.file_name())
        .map(|n| n.as_bytes())
        .map(|n| n.strip_suffix(b" (deleted)").unwrap_or(n))
        .filter(|n| !n.is_empty() && !n.contains(&0))
        .unwrap_or(b"load_balancer");
    let name = &name[..name.len().min(COMM_MAX)];
    CString::new(name).unwrap_or_else(|_| c"load_balancer".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn comm_is_the_binary_file_name() {
        let comm = |p: Option<&str>| comm_for(p.map(Path::new)).into_string().unwrap();
        assert_eq!(comm(Some("/usr/local/bin/load_balancer")), "load_balancer");
        assert_eq!(comm(Some("/usr/bin/lb (deleted)")), "lb");
        assert_eq!(
            comm(Some("/opt/a_very_long_binary_name")),
            "a_very_long_bin"
        );
        assert_eq!(comm(Some("/")), "load_balancer");
        assert_eq!(comm(None), "load_balancer");
    }
}
