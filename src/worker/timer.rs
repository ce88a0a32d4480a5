//! Deadlines of a worker's sessions, as a min-heap with lazy invalidation.
//!
//! A session keeps its own notion of when it next times out and arms the
//! heap only when that moves *earlier* than what is armed; a fired entry
//! that is no longer the session's deadline is re-armed or dropped. So the
//! common request cycle touches the heap not at all.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Instant;

/// A heap entry: the session slab key and the session's generation, so an
/// entry for a closed session never fires on its successor in the slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct TimerKey {
    pub key: usize,
    pub generation: u64,
}

#[derive(Debug, Default)]
pub struct Timers {
    heap: BinaryHeap<Reverse<(Instant, TimerKey)>>,
}

impl Timers {
    pub fn with_capacity(n: usize) -> Timers {
        Timers {
            heap: BinaryHeap::with_capacity(n),
        }
    }

    pub fn arm(&mut self, at: Instant, key: TimerKey) {
        self.heap.push(Reverse((at, key)));
    }

    /// The earliest armed instant, for the poll timeout.
    pub fn next(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse((at, _))| *at)
    }

    /// Pops one entry due at `now`.
    pub fn pop_due(&mut self, now: Instant) -> Option<(Instant, TimerKey)> {
        match self.heap.peek() {
            Some(Reverse((at, _))) if *at <= now => self.heap.pop().map(|Reverse(e)| e),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn pops_in_deadline_order_only_when_due() {
        let t0 = Instant::now();
        let mut timers = Timers::with_capacity(4);
        let k = |key| TimerKey { key, generation: 0 };
        timers.arm(t0 + Duration::from_secs(2), k(2));
        timers.arm(t0 + Duration::from_secs(1), k(1));
        assert_eq!(timers.next(), Some(t0 + Duration::from_secs(1)));
        assert_eq!(timers.pop_due(t0), None);
        let now = t0 + Duration::from_secs(3);
        assert_eq!(timers.pop_due(now).map(|e| e.1), Some(k(1)));
        assert_eq!(timers.pop_due(now).map(|e| e.1), Some(k(2)));
        assert_eq!(timers.pop_due(now), None);
    }
}
