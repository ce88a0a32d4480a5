//! Backend health for one worker (SPEC §8): the up/down bitmap, the circuit
//! breaker that flips it, and the active prober that feeds the breaker.
//! Owned by the worker and used on its event-loop thread only, shared with no
//! other worker; never blocks (probe I/O runs on the prober's own thread).
//! Panic mode is decided by the caller: see [`Health`].

pub mod bitmap;
pub mod breaker;
pub mod probe;

use std::io;
use std::sync::Arc;
use std::thread::JoinHandle;

use crate::config::HealthConfig;
use crate::upstream::{Backend, BackendId};
pub use bitmap::HealthBitmap;
pub use breaker::{Breaker, Transition};
pub use probe::{Outcome, ProbeResults};

/// One worker's view of its backends' health. Each up/down transition is
/// logged once, at warn.
///
/// Panic mode is the caller's decision, not this type's: when
/// [`Health::all_down`] is true, requests are still attempted across every
/// backend rather than refused ([`Health::admits`] encodes exactly that), and
/// passive successes there count toward bringing a backend back.
pub struct Health {
    bitmap: HealthBitmap,
    breaker: Breaker,
    /// `None` until `start_probes` (or `attach_probes`).
    probes: Option<Arc<ProbeResults>>,
    /// The probe round last applied, so `apply_probes` is one atomic load
    /// when nothing is new.
    seen_round: u64,
    /// Per backend, the prober's failed-probe count last reported.
    seen_failed: Vec<u64>,
    cfg: HealthConfig,
    /// Backends a reload took out of rotation: kept down in `bitmap` (so
    /// panic mode counts only the configured ones), never probed, never
    /// admitted.
    retired: Vec<bool>,
}

impl Health {
    /// Every backend starts up. No prober runs until [`Health::start_probes`].
    pub fn new(backends: &[Backend], cfg: &HealthConfig) -> Health {
        let n = backends.len();
        Health {
            bitmap: HealthBitmap::new(n),
            breaker: Breaker::new(n, cfg.unhealthy_threshold, cfg.healthy_threshold),
            probes: None,
            seen_round: 0,
            seen_failed: vec![0; n],
            cfg: cfg.clone(),
            retired: vec![false; n],
        }
    }

    /// A reload's new backend table (`backends`, an extension of the one
    /// before) and settings: new backends start up; `active[i]` false
    /// retires backend i, true brings a retired one back up; the breaker
    /// state of the others is kept. Probes must be restarted after this.
    pub fn update(&mut self, n: usize, active: &[bool], cfg: &HealthConfig) {
        self.bitmap.grow(n);
        self.breaker
            .update(n, cfg.unhealthy_threshold, cfg.healthy_threshold);
        if self.seen_failed.len() < n {
            self.seen_failed.resize(n, 0);
        }
        self.retired.resize(n, false);
        for (i, &on) in active.iter().enumerate().take(n) {
            let id = BackendId(i);
            match (on, self.retired[i]) {
                (false, false) => {
                    self.retired[i] = true;
                    self.bitmap.set(id, false);
                }
                (true, true) => {
                    self.retired[i] = false;
                    self.bitmap.set(id, true);
                }
                _ => {}
            }
        }
        self.cfg = cfg.clone();
    }

    /// Whether a reload took `id` out of rotation.
    pub fn is_retired(&self, id: BackendId) -> bool {
        self.retired.get(id.0).copied().unwrap_or(false)
    }

    /// Spawns this worker's probe thread, which wakes the loop through
    /// `waker` after each round; the loop should then call
    /// [`Health::apply_probes`]. Call it in the worker process, after any
    /// fork. A prober already running is stopped first.
    pub fn start_probes(
        &mut self,
        backends: &[Backend],
        tls: Vec<Option<Arc<rustls::ClientConfig>>>,
        waker: Arc<mio::Waker>,
    ) -> io::Result<JoinHandle<()>> {
        // Indexed by id: after a reload `backends` (those in rotation) may
        // skip ids.
        let slots = backends.iter().map(|b| b.id.0 + 1).max().unwrap_or(0);
        let results = Arc::new(ProbeResults::new(slots.max(self.bitmap.len())));
        // Attached before the thread runs: attaching takes the round and the
        // failure counts as already seen, so a first round finished in
        // between would be skipped.
        self.attach_probes(Arc::clone(&results));
        let spawned = probe::spawn(backends.to_vec(), self.cfg.clone(), tls, results, waker);
        if spawned.is_err() {
            self.stop_probes();
        }
        spawned
    }

    /// Reads verdicts from `results` from now on (a prober started by other
    /// means, or a test's hand-filled results).
    pub fn attach_probes(&mut self, results: Arc<ProbeResults>) {
        self.stop_probes();
        self.seen_round = results.round();
        for (i, seen) in self.seen_failed.iter_mut().enumerate() {
            *seen = results.failed(BackendId(i));
        }
        self.probes = Some(results);
    }

    /// Tells the prober to exit; it does within the probe timeout. Also done
    /// on drop, so a worker that drops its `Health` leaves no thread probing.
    pub fn stop_probes(&mut self) {
        if let Some(probes) = self.probes.take() {
            probes.stop();
        }
    }

    #[inline]
    pub fn is_up(&self, id: BackendId) -> bool {
        self.bitmap.is_up(id)
    }

    /// True when no backend is up: panic mode. The caller then sends
    /// requests to every backend (and answers 503, not 502, if none of them
    /// can be connected, since every backend is known down).
    #[inline]
    pub fn all_down(&self) -> bool {
        self.bitmap.all_down()
    }

    /// Whether a request may go to `id`: it is up, or every backend is down
    /// (panic mode). The balancer's `admit` predicate, before the
    /// "not already tried for this request" check.
    #[inline]
    pub fn admits(&self, id: BackendId) -> bool {
        // A retired backend is always down in the bitmap, so only panic
        // mode needs to ask.
        self.bitmap.is_up(id) || (self.bitmap.all_down() && !self.is_retired(id))
    }

    pub fn up_count(&self) -> usize {
        self.bitmap.up_count()
    }

    pub fn len(&self) -> usize {
        self.bitmap.len()
    }

    pub fn is_empty(&self) -> bool {
        self.bitmap.is_empty()
    }

    /// For metrics (`lb_backend_up`) and tests.
    pub fn bitmap(&self) -> &HealthBitmap {
        &self.bitmap
    }

    /// A passive failure: connect error or timeout, I/O error mid-exchange,
    /// or no response head in time. `reason` is a short phrase for the log
    /// ("connect refused", "response timeout"); `label` the backend's.
    pub fn on_failure(&mut self, id: BackendId, reason: &str, label: &str) -> Option<Transition> {
        let t = self.breaker.on_failure(id, &mut self.bitmap);
        if t.is_some() {
            let n = self.breaker.unhealthy_threshold();
            let what = match n {
                1 => "1 failure".to_string(),
                n => format!("{n} consecutive failures"),
            };
            crate::warn!("backend {label} is down: {what} ({reason})");
            self.log_panic_entry();
        }
        t
    }

    /// A request to `id` got its whole response. Cheap when the backend is
    /// up (one store), so it can be called after every exchange.
    pub fn on_success(&mut self, id: BackendId, label: &str) -> Option<Transition> {
        let t = self.breaker.on_success(id, &mut self.bitmap);
        if t.is_some() && self.is_retired(id) {
            // An exchange that was in flight when a reload retired it.
            self.bitmap.set(id, false);
            return None;
        }
        if t.is_some() {
            self.log_up(label);
        }
        t
    }

    /// Feeds the breaker the verdicts of probe rounds not applied yet, and
    /// returns whether any backend changed state (to refresh gauges).
    /// `failed(id, n)` hears of the `n` probes of `id` that failed since the
    /// last call (for `lb_health_check_failures_total`); every failed probe
    /// is reported once, even one whose verdict a later round overwrote.
    /// Call it when the prober's waker fires; calling it more often is
    /// harmless and costs one atomic load.
    pub fn apply_probes(
        &mut self,
        backends: &[Backend],
        mut failed: impl FnMut(BackendId, u64),
    ) -> bool {
        let Some(probes) = &self.probes else {
            return false;
        };
        let round = probes.round();
        if round == self.seen_round {
            return false;
        }
        self.seen_round = round;
        let probes = Arc::clone(probes);
        let mut changed = false;
        for backend in backends {
            let id = backend.id;
            if let Some(seen) = self.seen_failed.get_mut(id.0) {
                let total = probes.failed(id);
                if total > *seen {
                    failed(id, total - *seen);
                    *seen = total;
                }
            }
            let Some(outcome) = probes.take_outcome(id) else {
                continue;
            };
            changed |= self.apply_probe(id, outcome, &backend.label);
        }
        changed
    }

    /// One probe verdict; `true` on a transition.
    fn apply_probe(&mut self, id: BackendId, outcome: Outcome, label: &str) -> bool {
        let proven = self.breaker.is_proven(id);
        match self.breaker.on_probe(id, outcome.is_ok(), &mut self.bitmap) {
            Some(Transition::Down) => {
                match (proven, self.breaker.unhealthy_threshold()) {
                    (false, _) => crate::warn!(
                        "backend {label} is down: health probe failed ({outcome}) \
                         before any success since start"
                    ),
                    (true, 1) => {
                        crate::warn!("backend {label} is down: health probe failed ({outcome})")
                    }
                    (true, n) => crate::warn!(
                        "backend {label} is down: health probe failed {n} times in a row ({outcome})"
                    ),
                }
                self.log_panic_entry();
                true
            }
            Some(Transition::Up) => {
                self.log_up(label);
                true
            }
            None => {
                if !outcome.is_ok() && self.bitmap.is_up(id) {
                    crate::info!(
                        "health probe of {label} failed ({outcome}), {} of {} in a row \
                         to mark it down",
                        self.breaker.probe_failures(id),
                        self.breaker.unhealthy_threshold()
                    );
                }
                false
            }
        }
    }

    fn log_up(&self, label: &str) {
        crate::warn!("backend {label} is up again");
        if self.bitmap.up_count() == 1 && self.bitmap.len() > 1 {
            crate::warn!("panic mode over: requests go to up backends only");
        }
    }

    /// Called right after a backend went down.
    fn log_panic_entry(&self) {
        if self.bitmap.all_down() {
            crate::warn!("every backend is down: panic mode, requests still go to all of them");
        }
    }
}

impl Drop for Health {
    fn drop(&mut self) {
        self.stop_probes();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upstream::parse_spec;
    use std::io::{Read, Write};
    use std::net::{SocketAddr, TcpListener};
    use std::sync::atomic::{AtomicU16, Ordering};
    use std::time::{Duration, Instant};

    fn backends(n: usize) -> Vec<Backend> {
        (0..n)
            .map(|i| parse_spec(&format!("127.0.0.1:{}", 9001 + i), BackendId(i)).unwrap())
            .collect()
    }

    fn cfg() -> HealthConfig {
        HealthConfig::default()
    }

    /// A test stand-in for the probe thread: stores one round of verdicts.
    fn round(results: &ProbeResults, verdicts: &[(usize, Outcome)]) {
        for &(i, o) in verdicts {
            results.store(BackendId(i), o);
        }
        results.finish_round();
    }

    /// Applies probe rounds, ignoring the failure counts.
    fn apply(h: &mut Health, bs: &[Backend]) -> bool {
        h.apply_probes(bs, |_, _| {})
    }

    #[test]
    fn passive_failures_then_panic_mode() {
        let bs = backends(2);
        let mut h = Health::new(&bs, &cfg());
        let (a, b) = (BackendId(0), BackendId(1));
        assert!(h.admits(a) && h.admits(b));
        assert_eq!(h.on_failure(a, "connect refused", &bs[0].label), None);
        assert_eq!(h.on_failure(a, "connect refused", &bs[0].label), None);
        assert_eq!(
            h.on_failure(a, "connect refused", &bs[0].label),
            Some(Transition::Down)
        );
        assert!(!h.is_up(a) && !h.admits(a) && h.admits(b));
        assert_eq!(h.up_count(), 1);
        for _ in 0..3 {
            h.on_failure(b, "response timeout", &bs[1].label);
        }
        // Panic mode: every backend is down, so every backend is admitted.
        assert!(h.all_down());
        assert!(h.admits(a) && h.admits(b));
        assert_eq!(h.on_success(b, &bs[1].label), None);
        assert_eq!(h.on_success(b, &bs[1].label), Some(Transition::Up));
        assert!(!h.all_down() && h.admits(b) && !h.admits(a));
    }

    #[test]
    fn probe_verdicts_are_applied_once() {
        let bs = backends(3);
        let mut h = Health::new(&bs, &cfg());
        assert!(!apply(&mut h, &bs), "no prober attached");
        let results = Arc::new(ProbeResults::new(3));
        h.attach_probes(Arc::clone(&results));
        assert!(!apply(&mut h, &bs), "no round yet");

        round(
            &results,
            &[(0, Outcome::Status(500)), (1, Outcome::Status(200))],
        );
        assert!(apply(&mut h, &bs));
        assert!(
            !h.is_up(BackendId(0)),
            "a failed first probe marks down at once"
        );
        assert!(h.is_up(BackendId(1)) && h.is_up(BackendId(2)));
        assert!(!apply(&mut h, &bs), "same round again changes nothing");

        round(&results, &[(0, Outcome::Status(200))]);
        assert!(!apply(&mut h, &bs), "one good probe of two");
        // A round whose verdict was already taken must not count twice.
        results.finish_round();
        assert!(!apply(&mut h, &bs));
        assert!(!h.is_up(BackendId(0)));
        round(&results, &[(0, Outcome::Status(200))]);
        assert!(apply(&mut h, &bs));
        assert!(h.is_up(BackendId(0)));
        assert!(results.take(BackendId(0)).is_none(), "consumed");
    }

    /// HAProxy's `fall`/`rise`: once a backend answered a probe, failed
    /// probes count toward `unhealthy_threshold`, good ones toward
    /// `healthy_threshold`.
    #[test]
    fn a_proven_backend_falls_after_the_threshold_and_rises_after_the_other() {
        let bs = backends(2);
        let mut h = Health::new(&bs, &cfg());
        let results = Arc::new(ProbeResults::new(2));
        h.attach_probes(Arc::clone(&results));
        let a = BackendId(0);
        round(&results, &[(0, Outcome::Status(200))]);
        assert!(!apply(&mut h, &bs));
        for bad in [Outcome::TimedOut, Outcome::Status(503)] {
            round(&results, &[(0, bad)]);
            assert!(!apply(&mut h, &bs), "{bad}: below the threshold");
            assert!(h.is_up(a));
        }
        round(&results, &[(0, Outcome::ConnectRefused)]);
        assert!(apply(&mut h, &bs), "third failed probe in a row");
        assert!(!h.is_up(a));
        round(&results, &[(0, Outcome::Status(200))]);
        assert!(!apply(&mut h, &bs), "one good probe of two");
        round(&results, &[(0, Outcome::Status(200))]);
        assert!(apply(&mut h, &bs));
        assert!(h.is_up(a));
        // Back up, still proven: one failed probe is not enough again.
        round(&results, &[(0, Outcome::TimedOut)]);
        assert!(!apply(&mut h, &bs));
        assert!(h.is_up(a));
    }

    #[test]
    fn a_passive_success_before_the_first_probe_proves_the_backend() {
        let bs = backends(1);
        let mut h = Health::new(&bs, &cfg());
        let results = Arc::new(ProbeResults::new(1));
        h.attach_probes(Arc::clone(&results));
        h.on_success(BackendId(0), &bs[0].label);
        round(&results, &[(0, Outcome::TimedOut)]);
        assert!(!apply(&mut h, &bs));
        assert!(h.is_up(BackendId(0)));
    }

    /// The counter behind `lb_health_check_failures_total` misses no
    /// failure, even when the loop applies two rounds at once and the breaker
    /// sees only the newest verdict.
    #[test]
    fn every_failed_probe_is_reported_once() {
        let bs = backends(2);
        let mut h = Health::new(&bs, &cfg());
        let results = Arc::new(ProbeResults::new(2));
        // Failures before `attach_probes` belong to an earlier reader.
        results.store(BackendId(1), Outcome::Io);
        h.attach_probes(Arc::clone(&results));
        let mut reported = vec![0u64; 2];
        let mut apply_counting = |h: &mut Health| {
            h.apply_probes(&bs, |id, n| reported[id.0] += n);
        };
        round(
            &results,
            &[(0, Outcome::TimedOut), (1, Outcome::Status(200))],
        );
        round(
            &results,
            &[(0, Outcome::Status(500)), (1, Outcome::Status(200))],
        );
        apply_counting(&mut h);
        round(&results, &[(0, Outcome::Status(200)), (1, Outcome::Closed)]);
        apply_counting(&mut h);
        apply_counting(&mut h);
        assert_eq!(reported, [2, 1]);
    }

    /// The prober's first round can finish before `start_probes` returns
    /// (a refused connect is instant): its verdict and failure must still
    /// be applied, not taken as already seen. Repeated, since it is a race.
    #[test]
    fn the_first_round_is_never_skipped() {
        // Bound, not listening: refused, and the port stays ours.
        let socket =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        socket
            .bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())
            .unwrap();
        let refused = socket.local_addr().unwrap().as_socket().unwrap();
        let bs = vec![parse_spec(&refused.to_string(), BackendId(0)).unwrap()];
        let config = HealthConfig {
            interval: Duration::from_secs(60),
            timeout: Duration::from_millis(500),
            ..HealthConfig::default()
        };
        for _ in 0..20 {
            let mut h = Health::new(&bs, &config);
            let mut poll = mio::Poll::new().unwrap();
            let mut events = mio::Events::with_capacity(4);
            let waker = Arc::new(mio::Waker::new(poll.registry(), mio::Token(0)).unwrap());
            h.start_probes(&bs, Vec::new(), waker).unwrap();
            let mut failed = 0;
            let deadline = Instant::now() + Duration::from_secs(5);
            while h.is_up(BackendId(0)) {
                assert!(Instant::now() < deadline, "first verdict never applied");
                poll.poll(&mut events, Some(Duration::from_millis(100)))
                    .unwrap();
                h.apply_probes(&bs, |_, n| failed += n);
            }
            assert_eq!(failed, 1);
        }
    }

    #[test]
    fn drop_stops_the_prober() {
        let bs = backends(1);
        let mut h = Health::new(&bs, &cfg());
        let results = Arc::new(ProbeResults::new(1));
        h.attach_probes(Arc::clone(&results));
        drop(h);
        assert!(results.is_stopped());
    }

    /// End to end with a real prober: a backend whose health endpoint turns
    /// 500 goes down, and comes back after `healthy_threshold` good rounds.
    #[test]
    fn real_prober_drives_the_bitmap() {
        let status = Arc::new(AtomicU16::new(200));
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let answer = Arc::clone(&status);
        std::thread::spawn(move || {
            for mut conn in listener.incoming().flatten() {
                let mut buf = [0u8; 1024];
                let mut req = Vec::new();
                while !req.ends_with(b"\r\n\r\n") {
                    match conn.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => req.extend_from_slice(&buf[..n]),
                    }
                }
                let code = answer.load(Ordering::Relaxed);
                let _ = write!(conn, "HTTP/1.1 {code} X\r\nContent-Length: 0\r\n\r\n");
            }
        });
        let bs = vec![parse_spec(&addr.to_string(), BackendId(0)).unwrap()];
        let config = HealthConfig {
            interval: Duration::from_millis(20),
            timeout: Duration::from_millis(500),
            ..HealthConfig::default()
        };
        let mut h = Health::new(&bs, &config);
        let mut poll = mio::Poll::new().unwrap();
        let mut events = mio::Events::with_capacity(4);
        let waker = Arc::new(mio::Waker::new(poll.registry(), mio::Token(0)).unwrap());
        let handle = h.start_probes(&bs, Vec::new(), waker).unwrap();

        let mut wait_for = |h: &mut Health, up: bool| {
            let deadline = Instant::now() + Duration::from_secs(5);
            while h.is_up(BackendId(0)) != up {
                assert!(Instant::now() < deadline, "never became up={up}");
                poll.poll(&mut events, Some(Duration::from_millis(100)))
                    .unwrap();
                apply(h, &bs);
            }
        };
        status.store(500, Ordering::Relaxed);
        wait_for(&mut h, false);
        status.store(200, Ordering::Relaxed);
        wait_for(&mut h, true);
        drop(h);
        let start = Instant::now();
        while !handle.is_finished() {
            assert!(
                start.elapsed() < Duration::from_secs(2),
                "prober outlived Health"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}
