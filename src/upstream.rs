//! The backend set: what a backend is, and parsing of the `-b <SPEC>` grammar.
//!
//! Owns the immutable description of each backend (address, weight, TLS,
//! stable sticky id). It does no I/O after start-up: names are resolved once
//! by `parse_spec`. Connections to backends live in `pool`, not here.

use std::net::SocketAddr;

/// Index of a backend in `Config::backends` (and in every per-backend table).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BackendId(pub usize);

/// Which `Host` header a backend receives (SPEC §5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostHeader {
    /// Client's Host for plain HTTP backends, the backend's name for TLS ones.
    Auto,
    /// Always the client's Host.
    Preserve,
    /// Always the backend's own `host[:port]`.
    Backend,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backend {
    pub id: BackendId,
    /// Host as configured: a DNS name or an IP literal (IPv6 without brackets).
    /// Used for SNI and for `Host` when the backend's name is sent.
    pub host: String,
    pub port: u16,
    /// Resolved once at start-up.
    pub addr: SocketAddr,
    /// ≥ 1.
    pub weight: u32,
    pub tls: bool,
    pub host_header: HostHeader,
    /// `host:port` (`[v6]:port`), for logs and metrics labels.
    pub label: String,
    /// Stable id derived from `label` (not from a counter), so every worker and
    /// every instance with the same backends agrees on sticky cookies.
    pub sticky_id: u64,
}
