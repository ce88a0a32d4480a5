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

/// One backend's streaks. Passive and probe failures are counted apart
/// because each has its own kind of success to clear it (see [`Breaker`]).
#[derive(Debug, Clone, Copy, Default)]
struct Streaks {
    /// Consecutive passive failures while up.
    passive_failures: u32,
    /// Consecutive failed probes while up.
    probe_failures: u32,
    /// Consecutive successes (passive or probe) while down.
    successes: u32,
    /// A good probe or a whole passive exchange happened since start. Never
    /// cleared: a backend that once served is judged by thresholds, even
    /// after a flap.
    proven: bool,
}

/// Per-backend consecutive failure and success counters (SPEC §8), with
/// HAProxy's `fall`/`rise` reading of the thresholds.
///
/// Rules:
/// - a passive failure (connect error or timeout, I/O error mid-exchange,
///   response-head timeout) counts toward `unhealthy_threshold`; a passive
///   success resets that count. A good probe does not: a backend that
///   answers its health path but fails real requests must still be caught;
/// - a failed probe of a *proven* backend (one that has had a good probe or
///   a whole passive exchange since start) counts toward
///   `unhealthy_threshold` in its own streak, which only a good probe
///   resets: a passive success does not, so a health endpoint that turns
///   503 to drain a backend takes it out even while real requests succeed.
///   One slow probe under load thus never pulls a healthy backend out;
/// - a failed probe of a backend never proven marks it down at once (as
///   HAProxy's default `init-state up`): it has never shown it works, and
///   a backend dead at start should not get `unhealthy_threshold` rounds
///   of traffic;
/// - on a down backend any success (probe or passive) counts toward
///   `healthy_threshold`, and reaching it brings the backend back; any
///   failure restarts that count. Passive outcomes on a down backend only
///   happen in panic mode, when requests still go to down backends.
#[derive(Debug, Clone)]
pub struct Breaker {
    streaks: Vec<Streaks>,
    unhealthy_threshold: u32,
    healthy_threshold: u32,
}

impl Breaker {
    /// Thresholds of 0 are taken as 1: the config rejects them, and 0 would
    /// mean "down before any failure", which no caller can want.
    pub fn new(n: usize, unhealthy_threshold: u32, healthy_threshold: u32) -> Breaker {
        Breaker {
            streaks: vec![Streaks::default(); n],
            unhealthy_threshold: unhealthy_threshold.max(1),
            healthy_threshold: healthy_threshold.max(1),
        }
    }

    /// After a reload: room for `n` backends (new ones unproven) and the
    /// thresholds now configured; streaks of known backends are kept.
    pub fn update(&mut self, n: usize, unhealthy_threshold: u32, healthy_threshold: u32) {
        if n > self.streaks.len() {
            self.streaks.resize(n, Streaks::default());
        }
        self.unhealthy_threshold = unhealthy_threshold.max(1);
        self.healthy_threshold = healthy_threshold.max(1);
    }

    pub fn unhealthy_threshold(&self) -> u32 {
        self.unhealthy_threshold
    }

    pub fn healthy_threshold(&self) -> u32 {
        self.healthy_threshold
    }

    /// Consecutive passive failures of an up backend so far.
    pub fn failures(&self, id: BackendId) -> u32 {
        self.streaks[id.0].passive_failures
    }

    /// Consecutive failed probes of an up, proven backend so far.
    pub fn probe_failures(&self, id: BackendId) -> u32 {
        self.streaks[id.0].probe_failures
    }

    /// Consecutive successes of a down backend so far.
    pub fn successes(&self, id: BackendId) -> u32 {
        self.streaks[id.0].successes
    }

    /// Whether `id` has succeeded once since start (then a failed probe
    /// counts toward the threshold instead of marking it down at once).
    pub fn is_proven(&self, id: BackendId) -> bool {
        self.streaks[id.0].proven
    }

    /// A passive failure of a request sent to `id`.
    pub fn on_failure(&mut self, id: BackendId, bitmap: &mut HealthBitmap) -> Option<Transition> {
        let s = &mut self.streaks[id.0];
        s.successes = 0;
        if !bitmap.is_up(id) {
            // Already down (panic mode): nothing more to learn from it.
            return None;
        }
        s.passive_failures = s.passive_failures.saturating_add(1);
        if s.passive_failures < self.unhealthy_threshold {
            return None;
        }
        self.mark(id, false, bitmap)
    }

    /// A request to `id` completed: its response head arrived and the
    /// exchange ended cleanly (whatever the status code: a 500 is the
    /// application's answer, not the backend being unreachable).
    pub fn on_success(&mut self, id: BackendId, bitmap: &mut HealthBitmap) -> Option<Transition> {
        let s = &mut self.streaks[id.0];
        s.passive_failures = 0;
        s.proven = true;
        self.count_success(id, bitmap)
    }

    /// The verdict of one active probe of `id`.
    pub fn on_probe(
        &mut self,
        id: BackendId,
        ok: bool,
        bitmap: &mut HealthBitmap,
    ) -> Option<Transition> {
        let s = &mut self.streaks[id.0];
        if ok {
            s.probe_failures = 0;
            s.proven = true;
            return self.count_success(id, bitmap);
        }
        s.successes = 0;
        if !bitmap.is_up(id) {
            return None;
        }
        if s.proven {
            s.probe_failures = s.probe_failures.saturating_add(1);
            if s.probe_failures < self.unhealthy_threshold {
                return None;
            }
        }
        self.mark(id, false, bitmap)
    }

    /// A success of either kind: counts toward `healthy_threshold` on a
    /// down backend, nothing more on an up one.
    fn count_success(&mut self, id: BackendId, bitmap: &mut HealthBitmap) -> Option<Transition> {
        if bitmap.is_up(id) {
            return None;
        }
        let s = &mut self.streaks[id.0];
        s.successes = s.successes.saturating_add(1);
        if s.successes < self.healthy_threshold {
            return None;
        }
        self.mark(id, true, bitmap)
    }

    /// Every streak restarts on a transition: each state's streak counts
    /// only what happened in that state. `proven` stays.
    fn mark(&mut self, id: BackendId, up: bool, bitmap: &mut HealthBitmap) -> Option<Transition> {
        let s = &mut self.streaks[id.0];
        s.passive_failures = 0;
        s.probe_failures = 0;
        s.successes = 0;
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
            name: "a first probe that fails marks the backend down at once",
            unhealthy: 3,
            healthy: 2,
            events: &[Bad, Bad],
            transitions: &[(0, D)],
            up_at_end: false,
        },
        Case {
            name: "a passive failure proves nothing",
            unhealthy: 3,
            healthy: 2,
            events: &[F, Bad],
            transitions: &[(1, D)],
            up_at_end: false,
        },
        Case {
            name: "a proven backend survives failed probes below the threshold",
            unhealthy: 3,
            healthy: 2,
            events: &[Ok, Bad, Bad],
            transitions: &[],
            up_at_end: true,
        },
        Case {
            name: "threshold failed probes mark a proven backend down once",
            unhealthy: 3,
            healthy: 2,
            events: &[Ok, Ok, Bad, Bad, Bad, Bad],
            transitions: &[(4, D)],
            up_at_end: false,
        },
        Case {
            name: "a good probe resets the failed-probe streak",
            unhealthy: 3,
            healthy: 2,
            events: &[Ok, Bad, Bad, Ok, Bad, Bad, Ok, Bad, Bad],
            transitions: &[],
            up_at_end: true,
        },
        Case {
            name: "a passive success proves a backend",
            unhealthy: 3,
            healthy: 2,
            events: &[S, Bad, Bad],
            transitions: &[],
            up_at_end: true,
        },
        Case {
            name: "a passive success does not reset the failed-probe streak",
            unhealthy: 3,
            healthy: 2,
            events: &[Ok, Bad, Bad, S, Bad],
            transitions: &[(4, D)],
            up_at_end: false,
        },
        Case {
            name: "passive and probe failures keep separate streaks",
            unhealthy: 3,
            healthy: 2,
            events: &[Ok, F, F, Bad, Bad, F],
            transitions: &[(5, D)],
            up_at_end: false,
        },
        Case {
            name: "a backend stays proven after a flap",
            unhealthy: 2,
            healthy: 2,
            events: &[Ok, Bad, Bad, Ok, Ok, Bad],
            transitions: &[(2, D), (4, U)],
            up_at_end: true,
        },
        Case {
            name: "a backend down from its first probe is proven once back",
            unhealthy: 3,
            healthy: 2,
            events: &[Bad, Ok, Ok, Bad, Bad],
            transitions: &[(0, D), (2, U)],
            up_at_end: true,
        },
        Case {
            name: "an unhealthy threshold of one keeps the old at-once rule",
            unhealthy: 1,
            healthy: 1,
            events: &[Ok, Bad, Ok],
            transitions: &[(1, D), (2, U)],
            up_at_end: true,
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
        assert!(breaker.is_proven(id));
        breaker.on_success(id, &mut bitmap);
        breaker.on_probe(id, false, &mut bitmap);
        assert_eq!(breaker.probe_failures(id), 1, "counted: proven");
        breaker.on_probe(id, true, &mut bitmap);
        assert_eq!(breaker.probe_failures(id), 0, "reset by a good probe");
        assert_eq!(
            (breaker.unhealthy_threshold(), breaker.healthy_threshold()),
            (3, 2)
        );
    }
}
