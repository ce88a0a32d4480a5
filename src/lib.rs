//! `load_balancer`: an HTTP/1.1 load balancer daemon.
//!
//! The module tree follows the life of a request: `worker` accepts and polls,
//! `proxy` runs each client connection's state machine, `http1` parses and
//! rewrites heads and frames bodies, `balance` picks a backend from
//! `upstream`, `pool` keeps idle backend connections. `origin` is the small
//! test origin used by the demo, the tests and the benchmarks.

pub mod balance;
pub mod config;
pub mod upstream;
