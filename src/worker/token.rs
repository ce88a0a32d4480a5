//! The `mio::Token` layout of a worker: which slab a readiness event is for.
//!
//! Client sessions take even tokens and backend connections odd ones, so a
//! token decodes to its table without a lookup; HTTP/2 connections are odd
//! with the second-highest bit set; the top values are fixed sources (listener,
//! waker).

use mio::Token;

pub const LISTENER: Token = Token(usize::MAX - 1);
pub const WAKER: Token = Token(usize::MAX - 2);
pub const METRICS_LISTENER: Token = Token(usize::MAX - 3);
pub const SIGNALS: Token = Token(usize::MAX - 4);

/// What a token points at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slot {
    Listener,
    MetricsListener,
    Signals,
    Waker,
    Session(usize),
    Upstream(usize),
    H2(usize),
}

/// Marks an HTTP/2 connection's token (far above any slab key).
const H2_BIT: usize = 1 << (usize::BITS - 2);

pub fn session(key: usize) -> Token {
    Token(key * 2)
}

pub fn upstream(key: usize) -> Token {
    Token(key * 2 + 1)
}

/// Odd like a backend connection's, so client events decode as before.
pub fn h2(key: usize) -> Token {
    Token((key * 2 + 1) | H2_BIT)
}

pub fn decode(token: Token) -> Slot {
    match token {
        LISTENER => Slot::Listener,
        WAKER => Slot::Waker,
        METRICS_LISTENER => Slot::MetricsListener,
        SIGNALS => Slot::Signals,
        Token(t) if t % 2 == 0 => Slot::Session(t / 2),
        Token(t) if t & H2_BIT != 0 => Slot::H2((t & !H2_BIT) / 2),
        Token(t) => Slot::Upstream(t / 2),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        assert_eq!(decode(session(7)), Slot::Session(7));
        assert_eq!(decode(upstream(7)), Slot::Upstream(7));
        assert_eq!(decode(h2(7)), Slot::H2(7));
        assert_eq!(decode(LISTENER), Slot::Listener);
        assert_eq!(decode(WAKER), Slot::Waker);
    }
}
