//! HTTP/2 to backends that chose `h2` by ALPN (SPEC §7), through the `h2`
//! crate's client, driven from the worker's mio loop without an async
//! runtime: the only place in the product with futures.
//!
//! `io` adapts the TLS transport to h2, `wake` turns h2's wake-ups into
//! tasks for the loop, `conns` keeps the shared connections, `translate`
//! maps heads between HTTP/1.1 and HTTP/2. The session side of an h2
//! exchange is `proxy::h2_exchange`.

pub mod conns;
pub mod io;
pub mod translate;
pub mod wake;

pub use conns::{ConnId, H2Conns, Liveness, Ready};
pub use wake::{Task, WakeQueue};
