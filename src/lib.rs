//! `load_balancer`: an HTTP/1.1 load balancer daemon.
//!
//! The module tree follows the life of a request: `worker` accepts and polls,
//! `proxy` runs each client connection's state machine, `http1` parses and
//! rewrites heads and frames bodies, `balance` picks a backend from
//! `upstream`, `pool` keeps backend connections. `origin` is the small test
//! origin used by the demo, the tests and the benchmarks.

pub mod log;
// The `log` crate's macros as `crate::info!` etc.; `log.rs` is their backend.
pub use ::log::{debug, error, info, warn};

pub mod access_log;
pub mod balance;
pub mod buffer;
pub mod build_info;
pub mod calendar;
pub mod config;
pub mod dns;
pub mod error;
pub mod generate;
pub mod health;
pub mod http1;
pub mod http2;
pub mod limits;
pub mod master;
pub mod metrics;
pub mod net;
pub mod notify;
pub mod origin;
pub mod pool;
pub mod proxy;
pub mod reload;
pub mod shm;
pub mod signals;
pub mod tls;
pub mod upstream;
pub mod worker;
pub mod x509;
