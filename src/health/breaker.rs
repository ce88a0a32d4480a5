//! The circuit breaker: turns passive outcomes and probe verdicts into up/down
//! transitions of the [`HealthBitmap`].
//!
//! Pure: no clock, no I/O, no logging (the caller logs the transitions it
//! returns). Driven by `health::Health` on the worker's event-loop thread.

use super::bitmap::HealthBitmap;
use crate::upstream::BackendId;

/// A change of a backend's state, returned once, when it happens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    Down,
    Up,
}

/// Per-backend consecutive failure and success counters (SPEC §8).
///
/// Rules:
/// - a passive failure (connect error or timeout, I/O error mid-exchange,
///   response-head timeout) counts toward `unhealthy_threshold`; reaching it
///   marks an up backend down;
/// - a passive success resets the failure count; a good probe does not (a
///   backend that answers its health path but fails real requests must
///   still be caught). On a down backend either counts toward
///   `healthy_threshold`, and reaching it brings the backend back. Passive
///   successes on a down backend only happen in panic mode, when requests
///   still go to down backends;
/// - a failed probe marks an up backend down at once: unlike a passive
///   failure, which may be the network or one unlucky connection, it is the
///   backend itself saying it is unhealthy. On a down backend it restarts the
///   success count.
#[derive(Debug, Clone)]
pub struct Breaker {
    failures: Vec<u32>,
    successes: Vec<u32>,
    unhealthy_threshold: u32,
    healthy_threshold: u32,
}

impl Breaker {
    /// Thresholds of 0 are taken as 1: the config rejects them, and 0 would
    /// mean "down before any failure", which no caller can want.
    pub fn new(n: usize, unhealthy_threshold: u32, healthy_threshold: u32) -> Breaker {
        Breaker {
            failures: vec![0; n],
            successes: vec![0; n],
            unhealthy_threshold: unhealthy_threshold.max(1),
            healthy_threshold: healthy_threshold.max(1),
        }
    }

    pub fn unhealthy_threshold(&self) -> u32 {
        self.unhealthy_threshold
    }

    pub fn healthy_threshold(&self) -> u32 {
        self.healthy_threshold
    }

    /// Consecutive passive failures of an up backend so far.
    pub fn failures(&self, id: BackendId) -> u32 {
        self.failures[id.0]
    }

    /// Consecutive successes of a down backend so far.
    pub fn successes(&self, id: BackendId) -> u32 {
        self.successes[id.0]
    }

    /// A passive failure of a request sent to `id`.
    pub fn on_failure(&mut self, id: BackendId, bitmap: &mut HealthBitmap) -> Option<Transition> {
        self.successes[id.0] = 0;
        if !bitmap.is_up(id) {
            // Already down (panic mode): nothing more to learn from it.
            return None;
        }
        let failures = &mut self.failures[id.0];
        *failures = failures.saturating_add(1);
        if *failures < self.unhealthy_threshold {
            return None;
        }
        self.mark(id, false, bitmap)
    }

    /// A request to `id` completed: its response head arrived and the
    /// exchange ended cleanly (whatever the status code: a 500 is the
    /// application's answer, not the backend being unreachable).
    pub fn on_success(&mut self, id: BackendId, bitmap: &mut HealthBitmap) -> Option<Transition> {
        self.failures[id.0] = 0;
        if bitmap.is_up(id) {
            return None;
        }
        let successes = &mut self.successes[id.0];
        *successes = successes.saturating_add(1);
        if *successes < self.healthy_threshold {
            return None;
        }
        self.mark(id, true, bitmap)
    }

    /// The verdict of one active probe of `id`.
    pub fn on_probe(
        &mut self,
        id: BackendId,
        ok: bool,
        bitmap: &mut HealthBitmap,
    ) -> Option<Transition> {
        if ok {
            if bitmap.is_up(id) {
                return None;
            }
            return self.on_success(id, bitmap);
        }
        self.successes[id.0] = 0;
        match bitmap.is_up(id) {
            true => self.mark(id, false, bitmap),
            false => None,
        }
    }

    /// Both counters restart on a transition: each state's streak counts
    /// only what happened in that state.
    fn mark(&mut self, id: BackendId, up: bool, bitmap: &mut HealthBitmap) -> Option<Transition> {
        self.failures[id.0] = 0;
        self.successes[id.0] = 0;
        bitmap.set(id, up);
        Some(if up { Transition::Up } else { Transition::Down })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Clone, Copy)]
    enum Ev {
        /// Passive failure.
        F,
        /// Passive success.
        S,
        /// Probe answered 200.
        Ok,
        /// Probe failed.
        Bad,
    }
    use Ev::*;

    struct Case {
        name: &'static str,
        unhealthy: u32,
        healthy: u32,
        events: &'static [Ev],
        /// Index of each event that must return a transition, and which.
        transitions: &'static [(usize, Transition)],
        up_at_end: bool,
    }

    const D: Transition = Transition::Down;
    const U: Transition = Transition::Up;

    const CASES: &[Case] = &[
        Case {
            name: "fewer failures than the threshold keep it up",
            unhealthy: 3,
            healthy: 2,
            events: &[F, F],
            transitions: &[],
            up_at_end: true,
        },
        Case {
            name: "threshold failures mark it down once",
            unhealthy: 3,
            healthy: 2,
            events: &[F, F, F, F, F],
            transitions: &[(2, D)],
            up_at_end: false,
        },
        Case {
            name: "a success resets the failure streak",
            unhealthy: 3,
            healthy: 2,
            events: &[F, F, S, F, F, S, F, F],
            transitions: &[],
            up_at_end: true,
        },
        Case {
            name: "a good probe does not reset the failure streak",
            unhealthy: 3,
            healthy: 2,
            events: &[F, F, Ok, F, F],
            transitions: &[(3, D)],
            up_at_end: false,
        },
        Case {
            name: "down backend comes back after healthy_threshold successes",
            unhealthy: 3,
            healthy: 2,
            events: &[F, F, F, S, S, S],
            transitions: &[(2, D), (4, U)],
            up_at_end: true,
        },
        Case {
            name: "a failure while down restarts the success streak",
            unhealthy: 3,
            healthy: 2,
            events: &[F, F, F, S, F, S, S],
            transitions: &[(2, D), (6, U)],
            up_at_end: true,
        },
        Case {
            name: "a failed probe marks an up backend down at once",
            unhealthy: 3,
            healthy: 2,
            events: &[Bad, Bad],
            transitions: &[(0, D)],
            up_at_end: false,
        },
        Case {
            name: "good probes bring a down backend back",
            unhealthy: 3,
            healthy: 2,
            events: &[Bad, Ok, Ok, Ok],
            transitions: &[(0, D), (2, U)],
            up_at_end: true,
        },
        Case {
            name: "a failed probe while down restarts the success streak",
            unhealthy: 3,
            healthy: 2,
            events: &[Bad, Ok, Bad, Ok, Ok],
            transitions: &[(0, D), (4, U)],
            up_at_end: true,
        },
        Case {
            name: "probe and passive successes count together",
            unhealthy: 3,
            healthy: 3,
            events: &[Bad, Ok, S, Ok],
            transitions: &[(0, D), (3, U)],
            up_at_end: true,
        },
        Case {
            name: "failures before a flap do not carry over after it",
            unhealthy: 3,
            healthy: 1,
            events: &[F, F, Bad, Ok, F, F],
            transitions: &[(2, D), (3, U)],
            up_at_end: true,
        },
        Case {
            name: "successes while up do not bank toward a later recovery",
            unhealthy: 1,
            healthy: 2,
            events: &[S, S, S, F, S],
            transitions: &[(3, D)],
            up_at_end: false,
        },
        Case {
            name: "thresholds of one flip on every change",
            unhealthy: 1,
            healthy: 1,
            events: &[F, S, F, S],
            transitions: &[(0, D), (1, U), (2, D), (3, U)],
            up_at_end: true,
        },
        Case {
            name: "zero thresholds behave as one",
            unhealthy: 0,
            healthy: 0,
            events: &[S, F, S],
            transitions: &[(1, D), (2, U)],
            up_at_end: true,
        },
    ];

    #[test]
    fn table() {
        for case in CASES {
            let mut bitmap = HealthBitmap::new(3);
            let mut breaker = Breaker::new(3, case.unhealthy, case.healthy);
            // Backend 1 is under test; 0 and 2 must never move.
            let id = BackendId(1);
            let mut got = Vec::new();
            for (i, ev) in case.events.iter().enumerate() {
                let t = match ev {
                    F => breaker.on_failure(id, &mut bitmap),
                    S => breaker.on_success(id, &mut bitmap),
                    Ok => breaker.on_probe(id, true, &mut bitmap),
                    Bad => breaker.on_probe(id, false, &mut bitmap),
                };
                if let Some(t) = t {
                    got.push((i, t));
                }
            }
            assert_eq!(got, case.transitions, "{}", case.name);
            assert_eq!(bitmap.is_up(id), case.up_at_end, "{}", case.name);
            assert!(
                bitmap.is_up(BackendId(0)) && bitmap.is_up(BackendId(2)),
                "{}: neighbours untouched",
                case.name
            );
            let expected_up = 2 + usize::from(case.up_at_end);
            assert_eq!(bitmap.up_count(), expected_up, "{}", case.name);
        }
    }

    #[test]
    fn backends_count_independently() {
        let mut bitmap = HealthBitmap::new(2);
        let mut breaker = Breaker::new(2, 2, 2);
        let (a, b) = (BackendId(0), BackendId(1));
        assert_eq!(breaker.on_failure(a, &mut bitmap), None);
        // A success elsewhere must not reset `a`'s streak.
        assert_eq!(breaker.on_success(b, &mut bitmap), None);
        assert_eq!(breaker.failures(a), 1);
        assert_eq!(breaker.on_failure(a, &mut bitmap), Some(Transition::Down));
        assert!(!bitmap.is_up(a) && bitmap.is_up(b));
    }

    #[test]
    fn counters_are_visible() {
        let mut bitmap = HealthBitmap::new(1);
        let mut breaker = Breaker::new(1, 3, 2);
        let id = BackendId(0);
        breaker.on_failure(id, &mut bitmap);
        breaker.on_failure(id, &mut bitmap);
        assert_eq!(breaker.failures(id), 2);
        breaker.on_failure(id, &mut bitmap);
        assert_eq!(breaker.failures(id), 0, "restarted by the transition");
        breaker.on_success(id, &mut bitmap);
        assert_eq!(breaker.successes(id), 1);
        assert_eq!(
            (breaker.unhealthy_threshold(), breaker.healthy_threshold()),
            (3, 2)
        );
    }
}
