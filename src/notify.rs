//! systemd readiness notification (`Type=notify`): one datagram on the Unix
//! socket named by `NOTIFY_SOCKET`, when that variable is set. A few lines
//! here rather than a dependency; failures are logged and otherwise ignored
//! (a missing notification must never stop the proxy).

use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};

/// Sends `state` (e.g. `READY=1\nMAINPID=123`) if running under systemd.
pub fn notify(state: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let path = path.to_string_lossy();
    let addr = match path.strip_prefix('@') {
        // A leading '@' names a socket in the abstract namespace.
        Some(name) => SocketAddr::from_abstract_name(name.as_bytes()),
        None => SocketAddr::from_pathname(path.as_ref()),
    };
    let sent = addr.and_then(|addr| UnixDatagram::unbound()?.send_to_addr(state.as_bytes(), &addr));
    if let Err(e) = sent {
        crate::warn!("cannot notify systemd at {path}: {e}");
    }
}

pub fn ready() {
    notify(&format!("READY=1\nMAINPID={}", std::process::id()));
}

/// After a rollback: the old master is the main process again.
pub fn main_pid() {
    notify(&format!("MAINPID={}", std::process::id()));
}

pub fn stopping() {
    notify("STOPPING=1");
}
