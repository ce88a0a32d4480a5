//! Load-balancing strategies: which backend a request goes to.
//!
//! Strategies only *order* candidates; the caller's `admit` predicate decides
//! which backends may be used at all (healthy, not already tried for this
//! request). Sans-IO: no sockets, no clocks. Called by `proxy` per request.
