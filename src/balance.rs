//! Load-balancing strategies: which backend a request goes to.
//!
//! Strategies only *order* candidates; the caller's `admit` predicate decides
//! which backends may be used at all (healthy, not already tried for this
//! request). Sans-IO: no sockets, no clocks. Called by `proxy` per request.

use crate::config::Strategy;
use crate::upstream::{Backend, BackendId};

/// Name of the sticky cookie; its value is 16 lowercase hex digits of
/// [`Backend::sticky_id`].
pub const STICKY_COOKIE: &str = "lb_backend";

/// One worker's balancing state. Build it in the worker (after `fork`), or
/// call [`Balancer::reseed`] there, so workers do not share a random stream.
/// A reloaded backend set gets a new `Balancer`.
#[derive(Debug, Clone)]
pub struct Balancer {
    strategy: Strategy,
    /// Indexed like `backends`; `backends[i].id` is `BackendId(i)`.
    weight: Vec<i64>,
    /// Smooth weighted round-robin running scores.
    current: Vec<i64>,
    in_flight: Vec<u32>,
    sticky_ids: Vec<u64>,
    /// Where the next rotation scan starts (round_robin, sticky fallback,
    /// least_conn ties).
    next: usize,
    rng: u64,
}

impl Balancer {
    pub fn new(strategy: Strategy, backends: &[Backend]) -> Balancer {
        debug_assert!(
            backends
                .iter()
                .enumerate()
                .all(|(i, b)| b.id == BackendId(i)),
            "backend ids must be their indices"
        );
        Balancer {
            strategy,
            weight: backends
                .iter()
                .map(|b| i64::from(b.weight.max(1)))
                .collect(),
            current: vec![0; backends.len()],
            in_flight: vec![0; backends.len()],
            sticky_ids: backends.iter().map(|b| b.sticky_id).collect(),
            next: 0,
            rng: 0,
        }
        .seeded(time_and_pid_seed())
    }

    /// Restarts the random stream from `seed` (deterministic tests, or a
    /// fresh stream after `fork`).
    pub fn reseed(&mut self, seed: u64) {
        // splitmix64 spreads similar seeds apart; xorshift needs non-zero.
        let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        self.rng = (z ^ (z >> 31)) | 1;
    }

    fn seeded(mut self, seed: u64) -> Balancer {
        self.reseed(seed);
        self
    }

    /// A reload: the strategy and weights now configured, room for new
    /// backends (appended ids). Known backends keep their place in the
    /// rotation, their weighted score and their in-flight count.
    pub fn update(&mut self, strategy: Strategy, backends: &[Backend]) {
        let n = backends.len().max(self.len());
        self.strategy = strategy;
        self.weight.resize(n, 1);
        self.current.resize(n, 0);
        self.in_flight.resize(n, 0);
        self.sticky_ids.resize(n, 0);
        for b in backends {
            self.weight[b.id.0] = i64::from(b.weight.max(1));
            self.sticky_ids[b.id.0] = b.sticky_id;
        }
    }

    pub fn strategy(&self) -> Strategy {
        self.strategy
    }

    /// Chooses a backend among those `admit` accepts, or `None` if it accepts
    /// none. `pinned` is the backend named by the sticky cookie, used first
    /// by the `sticky` strategy and ignored by the others. `admit` is called
    /// at most once per backend. Does not allocate.
    pub fn pick(
        &mut self,
        pinned: Option<BackendId>,
        mut admit: impl FnMut(BackendId) -> bool,
    ) -> Option<BackendId> {
        match self.strategy {
            Strategy::RoundRobin => self.rotate(None, &mut admit),
            Strategy::Weighted => self.smooth_weighted(&mut admit),
            Strategy::Random => self.random(&mut admit),
            Strategy::LeastConn => self.least_conn(&mut admit),
            Strategy::Sticky => match pinned {
                Some(id) if id.0 < self.len() && admit(id) => Some(id),
                // A pinned backend that is down is not asked twice.
                Some(id) => self.rotate(Some(id.0), &mut admit),
                None => self.rotate(None, &mut admit),
            },
        }
    }

    /// The backend whose sticky id a cookie carries, if it is still in the set.
    pub fn backend_for_sticky(&self, sticky_id: u64) -> Option<BackendId> {
        self.sticky_ids
            .iter()
            .position(|&s| s == sticky_id)
            .map(BackendId)
    }

    /// A request was dispatched to `id`.
    pub fn on_start(&mut self, id: BackendId) {
        if let Some(n) = self.in_flight.get_mut(id.0) {
            *n = n.saturating_add(1);
        }
    }

    /// A request dispatched to `id` finished, however it ended.
    pub fn on_finish(&mut self, id: BackendId) {
        if let Some(n) = self.in_flight.get_mut(id.0) {
            *n = n.saturating_sub(1);
        }
    }

    /// Requests currently dispatched to `id` (as counted by `on_start`/`on_finish`).
    pub fn in_flight(&self, id: BackendId) -> u32 {
        self.in_flight.get(id.0).copied().unwrap_or(0)
    }

    fn len(&self) -> usize {
        self.weight.len()
    }

    /// The first admitted backend at or after `next`, wrapping; the next scan
    /// starts after it, so skipping a down backend does not hand its turn to
    /// its neighbour twice. `skip` is a backend already known not admitted.
    fn rotate(
        &mut self,
        skip: Option<usize>,
        admit: &mut impl FnMut(BackendId) -> bool,
    ) -> Option<BackendId> {
        let n = self.len();
        let mut i = self.next;
        for _ in 0..n {
            if Some(i) != skip && admit(BackendId(i)) {
                self.next = wrap(i + 1, n);
                return Some(BackendId(i));
            }
            i = wrap(i + 1, n);
        }
        None
    }

    /// nginx's smooth weighted round-robin: every admitted backend gains its
    /// weight, the leader is chosen and pays back the admitted total. A
    /// backend not admitted neither gains nor pays, so the others keep their
    /// ratio and it rejoins where it was.
    fn smooth_weighted(&mut self, admit: &mut impl FnMut(BackendId) -> bool) -> Option<BackendId> {
        let mut total = 0i64;
        let mut best: Option<usize> = None;
        for i in 0..self.len() {
            if !admit(BackendId(i)) {
                continue;
            }
            self.current[i] += self.weight[i];
            total += self.weight[i];
            if best.is_none_or(|b| self.current[i] > self.current[b]) {
                best = Some(i);
            }
        }
        let b = best?;
        self.current[b] -= total;
        Some(BackendId(b))
    }

    /// Uniform over admitted backends: one draw when it lands on an admitted
    /// backend (the usual case), else a reservoir sample over the others.
    /// Either way each admitted backend has probability 1/admitted.
    fn random(&mut self, admit: &mut impl FnMut(BackendId) -> bool) -> Option<BackendId> {
        let n = self.len();
        if n == 0 {
            return None;
        }
        let first = self.below(n);
        if admit(BackendId(first)) {
            return Some(BackendId(first));
        }
        let mut chosen = None;
        let mut seen = 0;
        for i in (0..n).filter(|&i| i != first) {
            if admit(BackendId(i)) {
                seen += 1;
                if self.below(seen) == 0 {
                    chosen = Some(BackendId(i));
                }
            }
        }
        chosen
    }

    /// Fewest in-flight requests relative to weight (nginx's least_conn);
    /// scanning from the rotation point and keeping the first minimum makes
    /// equally loaded backends take turns.
    fn least_conn(&mut self, admit: &mut impl FnMut(BackendId) -> bool) -> Option<BackendId> {
        let n = self.len();
        let mut best: Option<usize> = None;
        let mut i = self.next;
        for _ in 0..n {
            if admit(BackendId(i)) && best.is_none_or(|b| self.lighter(i, b)) {
                best = Some(i);
            }
            i = wrap(i + 1, n);
        }
        let b = best?;
        self.next = wrap(b + 1, n);
        Some(BackendId(b))
    }

    /// `in_flight[a]/weight[a] < in_flight[b]/weight[b]`, cross-multiplied so
    /// it is exact in integers.
    fn lighter(&self, a: usize, b: usize) -> bool {
        i64::from(self.in_flight[a]) * self.weight[b]
            < i64::from(self.in_flight[b]) * self.weight[a]
    }

    /// xorshift64*: a few ns, plenty for spreading load.
    fn next_u64(&mut self) -> u64 {
        let mut x = self.rng;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in `0..n` by multiply-shift (Lemire): no division, and the
    /// bias for small `n` is below 2⁻⁵⁰.
    fn below(&mut self, n: usize) -> usize {
        ((u128::from(self.next_u64()) * n as u128) >> 64) as usize
    }
}

/// `i % n` for `i <= n`, without the division (this runs per request).
fn wrap(i: usize, n: usize) -> usize {
    if i >= n { 0 } else { i }
}

fn time_and_pid_seed() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    nanos ^ u64::from(std::process::id()).rotate_left(32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upstream::parse_spec;

    fn backends(weights: &[u32]) -> Vec<Backend> {
        weights
            .iter()
            .enumerate()
            .map(|(i, w)| {
                parse_spec(&format!("127.0.0.1:{},weight={w}", 9000 + i), BackendId(i)).unwrap()
            })
            .collect()
    }

    fn run(b: &mut Balancer, picks: usize, admit: impl Fn(usize) -> bool) -> Vec<usize> {
        (0..picks)
            .map(|_| b.pick(None, |id| admit(id.0)).unwrap().0)
            .collect()
    }

    fn counts(seq: &[usize], n: usize) -> Vec<usize> {
        let mut c = vec![0; n];
        for &i in seq {
            c[i] += 1;
        }
        c
    }

    #[test]
    fn round_robin_rotates_strictly() {
        let mut b = Balancer::new(Strategy::RoundRobin, &backends(&[1, 5, 1]));
        assert_eq!(run(&mut b, 7, |_| true), [0, 1, 2, 0, 1, 2, 0]);
    }

    #[test]
    fn round_robin_skips_without_doubling_a_neighbour() {
        let mut b = Balancer::new(Strategy::RoundRobin, &backends(&[1, 1, 1, 1]));
        assert_eq!(run(&mut b, 6, |i| i != 1), [0, 2, 3, 0, 2, 3]);
        assert_eq!(
            counts(&run(&mut b, 3000, |i| i != 2), 4),
            [1000, 1000, 0, 1000]
        );
    }

    #[test]
    fn weighted_is_smooth_and_exact() {
        let mut b = Balancer::new(Strategy::Weighted, &backends(&[1, 3]));
        assert_eq!(run(&mut b, 8, |_| true), [1, 0, 1, 1, 1, 0, 1, 1]);
        // nginx's documented example: weights 5,1,1 give a a b a c a a.
        let mut b = Balancer::new(Strategy::Weighted, &backends(&[5, 1, 1]));
        assert_eq!(run(&mut b, 7, |_| true), [0, 0, 1, 0, 2, 0, 0]);
        let mut b = Balancer::new(Strategy::Weighted, &backends(&[2, 3, 5]));
        for _ in 0..3 {
            assert_eq!(
                counts(&run(&mut b, 10, |_| true), 3),
                [2, 3, 5],
                "every cycle is exact"
            );
        }
    }

    #[test]
    fn weighted_skip_keeps_the_ratio_among_the_rest() {
        let mut b = Balancer::new(Strategy::Weighted, &backends(&[1, 3, 2]));
        assert_eq!(counts(&run(&mut b, 600, |i| i != 2), 3), [150, 450, 0]);
        let mut b = Balancer::new(Strategy::Weighted, &backends(&[1, 1, 1, 1]));
        assert_eq!(counts(&run(&mut b, 300, |i| i != 0), 4), [0, 100, 100, 100]);
        // Down for a while, then back: it rejoins the exact ratio.
        let mut b = Balancer::new(Strategy::Weighted, &backends(&[1, 3]));
        run(&mut b, 5, |i| i == 1);
        assert_eq!(counts(&run(&mut b, 400, |_| true), 2), [100, 300]);
    }

    #[test]
    fn random_is_roughly_uniform_over_admitted() {
        let mut b = Balancer::new(Strategy::Random, &backends(&[1, 1, 1, 1]));
        b.reseed(42);
        let c = counts(&run(&mut b, 40_000, |_| true), 4);
        assert!(c.iter().all(|&k| (9_000..11_000).contains(&k)), "{c:?}");
        let c = counts(&run(&mut b, 30_000, |i| i != 1), 4);
        assert_eq!(c[1], 0);
        assert!(
            [c[0], c[2], c[3]]
                .iter()
                .all(|&k| (9_000..11_000).contains(&k)),
            "{c:?}"
        );
        assert_eq!(run(&mut b, 5, |i| i == 3), [3; 5]);
    }

    #[test]
    fn random_streams_differ_by_seed_and_repeat_with_it() {
        let set = backends(&[1; 8]);
        let mut a = Balancer::new(Strategy::Random, &set);
        let mut b = Balancer::new(Strategy::Random, &set);
        a.reseed(1);
        b.reseed(1);
        assert_eq!(run(&mut a, 50, |_| true), run(&mut b, 50, |_| true));
        b.reseed(2);
        assert_ne!(run(&mut a, 50, |_| true), run(&mut b, 50, |_| true));
    }

    #[test]
    fn least_conn_prefers_the_idlest_and_rotates_ties() {
        let mut b = Balancer::new(Strategy::LeastConn, &backends(&[1, 1, 1]));
        // Nothing finishes: picks spread 0,1,2,0,1,2.
        let mut seq = Vec::new();
        for _ in 0..6 {
            let id = b.pick(None, |_| true).unwrap();
            b.on_start(id);
            seq.push(id.0);
        }
        assert_eq!(seq, [0, 1, 2, 0, 1, 2]);
        // Backend 1 drains: it gets the next two.
        b.on_finish(BackendId(1));
        b.on_finish(BackendId(1));
        assert_eq!(b.pick(None, |_| true), Some(BackendId(1)));
        b.on_start(BackendId(1));
        assert_eq!(b.pick(None, |_| true), Some(BackendId(1)));
        b.on_start(BackendId(1));
        // The idlest not admitted: the tie among the rest rotates (1 went last).
        b.on_finish(BackendId(2));
        assert_eq!(b.pick(None, |id| id.0 != 2), Some(BackendId(0)));
        // Requests that finish at once: plain rotation.
        let mut b = Balancer::new(Strategy::LeastConn, &backends(&[1, 1, 1]));
        assert_eq!(run(&mut b, 4, |_| true), [0, 1, 2, 0]);
        // Saturating finish on an unknown or idle backend.
        b.on_finish(BackendId(0));
        b.on_finish(BackendId(99));
        b.on_start(BackendId(99));
        assert_eq!(b.in_flight(BackendId(0)), 0);
    }

    #[test]
    fn least_conn_weighs_in_flight_by_weight() {
        let mut b = Balancer::new(Strategy::LeastConn, &backends(&[1, 3]));
        let mut seq = Vec::new();
        for _ in 0..8 {
            let id = b.pick(None, |_| true).unwrap();
            b.on_start(id);
            seq.push(id.0);
        }
        assert_eq!(counts(&seq, 2), [2, 6]);
    }

    #[test]
    fn sticky_uses_the_pin_and_falls_back_to_rotation() {
        let set = backends(&[1, 1, 1]);
        let mut b = Balancer::new(Strategy::Sticky, &set);
        let pin = b.backend_for_sticky(set[2].sticky_id);
        assert_eq!(pin, Some(BackendId(2)));
        assert_eq!(b.backend_for_sticky(0x1234), None);
        for _ in 0..3 {
            assert_eq!(b.pick(pin, |_| true), pin);
        }
        // Pinned backend down: rotation over the others, never asking it twice.
        let mut asked = Vec::new();
        let got = b.pick(pin, |id| {
            asked.push(id.0);
            id.0 != 2
        });
        assert_eq!(got, Some(BackendId(0)));
        assert_eq!(asked, [2, 0]);
        assert_eq!(run(&mut b, 4, |i| i != 2), [1, 0, 1, 0]);
        // A stale id beyond the set is ignored: rotation goes on.
        assert_eq!(b.pick(Some(BackendId(9)), |_| true), Some(BackendId(1)));
        // Other strategies ignore the pin.
        let mut rr = Balancer::new(Strategy::RoundRobin, &set);
        assert_eq!(rr.pick(pin, |_| true), Some(BackendId(0)));
    }

    #[test]
    fn none_when_nothing_is_admitted() {
        for s in Strategy::ALL {
            let mut b = Balancer::new(s, &backends(&[1, 2, 3]));
            let mut calls = 0;
            assert_eq!(
                b.pick(Some(BackendId(0)), |_| {
                    calls += 1;
                    false
                }),
                None,
                "{s:?}"
            );
            assert_eq!(calls, 3, "{s:?}: admit once per backend");
            let mut empty = Balancer::new(s, &[]);
            assert_eq!(empty.pick(None, |_| true), None, "{s:?}");
        }
    }
}
