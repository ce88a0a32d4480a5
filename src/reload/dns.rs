//! Periodic re-resolution of backend names (issue 13 item 4): the process
//! that reloads (the master, or the sp process) asks a resolver thread for
//! fresh answers every `dns_interval`; a changed answer becomes a new
//! generation exactly as a reload does (an address gone is retired:
//! drained, not cut; a new one is appended and probed).
//!
//! getaddrinfo blocks for as long as DNS takes, so it never runs on an
//! event loop: the thread resolves and posts the answers back, then wakes
//! the owner's loop through its `mio::Waker`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::diff::Diff;
use super::table::Table;
use super::{Generation, Outcome, Reloader};
use crate::dns::{self, Target};

/// A backend name to resolve: host and port.
pub type Name = (String, u16);
/// The resolver's answers, by name.
pub type Answers = HashMap<Name, Result<Vec<SocketAddr>, String>>;

/// The owner's side of the resolver thread, and its timer.
pub struct Resolver {
    waker: Arc<mio::Waker>,
    /// Started on the first lookup, so a config without names (or with
    /// the period off) costs no thread.
    jobs: Option<Sender<Vec<Name>>>,
    answers: Arc<Mutex<Option<Answers>>>,
    /// Set with the answers, so the loop's check per turn is one atomic
    /// load, not a lock.
    ready: Arc<AtomicBool>,
    /// When the next lookup is due; `None` while one is in flight or the
    /// period is off.
    due: Option<Instant>,
    /// The period `due` was computed with: a reload that changes it
    /// restarts the wait.
    period: Duration,
    in_flight: bool,
}

impl Resolver {
    pub fn new(waker: Arc<mio::Waker>) -> Resolver {
        Resolver {
            waker,
            jobs: None,
            answers: Arc::new(Mutex::new(None)),
            ready: Arc::new(AtomicBool::new(false)),
            due: None,
            period: Duration::ZERO,
            in_flight: false,
        }
    }

    /// When the owner's loop must wake to start a lookup.
    pub fn deadline(&self) -> Option<Instant> {
        self.due
    }

    /// Once per loop turn: starts a lookup of `names()` when one is due
    /// (every `period`, zero is off) and returns the answers of one that
    /// finished.
    pub fn poll(
        &mut self,
        now: Instant,
        period: Duration,
        names: impl FnOnce() -> Vec<Name>,
    ) -> Option<Answers> {
        if self.ready.load(Ordering::Relaxed) && self.ready.swap(false, Ordering::Acquire) {
            self.in_flight = false;
            self.due = None;
            let answers = self
                .answers
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take();
            if answers.is_some() {
                return answers;
            }
        }
        if self.in_flight {
            return None;
        }
        if period != self.period {
            self.period = period;
            self.due = None;
        }
        if period.is_zero() {
            self.due = None;
            return None;
        }
        match self.due {
            None => self.due = Some(now + period),
            Some(at) if now >= at => {
                self.due = Some(now + period);
                let names = names();
                if !names.is_empty() && self.send(names) {
                    self.in_flight = true;
                    self.due = None;
                }
            }
            Some(_) => {}
        }
        None
    }

    /// Hands `names` to the thread (started now if need be); `false` if it
    /// cannot run, logged.
    fn send(&mut self, names: Vec<Name>) -> bool {
        if self.jobs.is_none() {
            let (tx, rx) = mpsc::channel::<Vec<Name>>();
            let slot = Arc::clone(&self.answers);
            let ready = Arc::clone(&self.ready);
            let waker = Arc::clone(&self.waker);
            let spawned = std::thread::Builder::new()
                .name("lb-dns".into())
                .spawn(move || {
                    for job in rx {
                        let answers: Answers = job
                            .into_iter()
                            .map(|(host, port)| {
                                let answer = dns::lookup(&host, port);
                                ((host, port), answer)
                            })
                            .collect();
                        *slot.lock().unwrap_or_else(|e| e.into_inner()) = Some(answers);
                        ready.store(true, Ordering::Release);
                        let _ = waker.wake();
                    }
                });
            match spawned {
                Ok(_) => self.jobs = Some(tx),
                Err(e) => {
                    crate::error!(
                        "cannot start the DNS resolver thread: {e}; names are resolved on reload only"
                    );
                    return false;
                }
            }
        }
        self.jobs.as_ref().is_some_and(|tx| tx.send(names).is_ok())
    }
}

impl Reloader {
    /// The distinct names of the running config, for the resolver.
    pub fn names(&self) -> Vec<Name> {
        let mut names: Vec<Name> = self
            .current
            .config
            .targets
            .iter()
            .filter(|t| t.is_named())
            .map(|t| (t.backend.host.clone(), t.backend.port))
            .collect();
        names.sort();
        names.dedup();
        names
    }

    /// Takes up the resolver's `answers`: a name whose addresses changed
    /// makes a new generation, logged as one line per name. A failed
    /// answer keeps the name's last good addresses (warned once per
    /// streak of failures).
    pub fn refresh(&mut self, answers: &Answers) -> Outcome {
        let listen = self.current.config.listen;
        let mut targets = self.current.config.targets.clone();
        let mut lines = Vec::new();
        for t in targets.iter_mut().filter(|t| t.is_named()) {
            let name = (t.backend.host.clone(), t.backend.port);
            let label = &t.backend.label;
            match answers.get(&name) {
                None => {}
                Some(Err(e)) if self.failing.insert(name.clone()) => {
                    crate::warn!("dns: {e}; {label} keeps {}", list(&t.addrs));
                }
                // Still failing: warned when the streak began.
                Some(Err(_)) => {}
                Some(Ok(addrs)) => {
                    // Never a loop through our own listener (as at start).
                    let addrs: Vec<SocketAddr> = addrs
                        .iter()
                        .copied()
                        .filter(|a| !crate::config::cli::reaches(*a, listen))
                        .collect();
                    if addrs.is_empty() {
                        continue;
                    }
                    if self.failing.remove(&name) {
                        crate::info!("dns: {label} resolves again");
                    }
                    if addrs != t.addrs {
                        lines.push(change_line(t, &addrs));
                        t.addrs = addrs;
                    }
                }
            }
        }
        if lines.is_empty() {
            return Outcome::Unchanged;
        }
        let mut wanted = self.current.config.clone();
        wanted.backends = dns::endpoints(&targets);
        wanted.targets = targets;
        let next = Table::merge(&self.current, wanted);
        if next.config.backends.len() > crate::metrics::MAX_BACKENDS {
            let reason = format!(
                "dns: more than {} backend addresses since start; keeping the running set (restart to take up: {})",
                crate::metrics::MAX_BACKENDS,
                lines.join("; ")
            );
            crate::error!("{reason}");
            return Outcome::Invalid(reason);
        }
        let diff = Diff::between(&self.current, &next);
        self.current = Generation {
            number: self.current.number + 1,
            ..next
        };
        for line in &lines {
            crate::info!("dns: {line}; generation {}", self.current.number);
        }
        Outcome::Applied(diff)
    }
}

/// `api.test:443 now 10.0.0.7, 10.0.0.8 (added 10.0.0.8; removed 10.0.0.5)`.
fn change_line(t: &Target, now: &[SocketAddr]) -> String {
    let added: Vec<SocketAddr> = now
        .iter()
        .filter(|a| !t.addrs.contains(a))
        .copied()
        .collect();
    let removed: Vec<SocketAddr> = t
        .addrs
        .iter()
        .filter(|a| !now.contains(a))
        .copied()
        .collect();
    let mut what = Vec::new();
    if !added.is_empty() {
        what.push(format!("added {}", list(&added)));
    }
    if !removed.is_empty() {
        what.push(format!("removed {}", list(&removed)));
    }
    format!(
        "{} now {} ({})",
        t.backend.label,
        list(now),
        what.join("; ")
    )
}

fn list(addrs: &[SocketAddr]) -> String {
    let ips: Vec<String> = addrs.iter().map(|a| a.ip().to_string()).collect();
    ips.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::cli;
    use crate::upstream::BackendId;

    fn addrs(list: &[&str]) -> Vec<SocketAddr> {
        list.iter().map(|a| a.parse().expect("address")).collect()
    }

    /// A reloader running `-b api.test:80 -b 10.0.0.1:80` with `api.test`
    /// at `first`, as if parsed so.
    fn reloader(first: &[&str]) -> Reloader {
        let mut config = cli::parse_from(["load_balancer", "-b", "10.0.0.1:80"]).expect("valid");
        let named = crate::upstream::parse_spec("api.test:80,weight=2", BackendId(0)).unwrap();
        config.targets.insert(
            0,
            Target {
                backend: named,
                addrs: addrs(first),
            },
        );
        config.backends = dns::endpoints(&config.targets);
        Reloader::new(Vec::new(), config)
    }

    fn answer(ips: &[&str]) -> Answers {
        let mut a = Answers::new();
        a.insert(("api.test".into(), 80), Ok(addrs(ips)));
        a
    }

    fn table(r: &Reloader) -> Vec<(usize, String, u32, bool)> {
        let g = r.current();
        g.config
            .backends
            .iter()
            .map(|b| (b.id.0, b.label.clone(), b.weight, g.active[b.id.0]))
            .collect()
    }

    #[test]
    fn addresses_that_come_and_go_are_endpoints_of_the_table() {
        let mut r = reloader(&["10.0.0.7:80"]);
        assert_eq!(r.names(), [("api.test".to_string(), 80)]);
        assert_eq!(r.refresh(&answer(&["10.0.0.7:80"])), Outcome::Unchanged);
        // A second address: the first keeps its id and its label.
        let Outcome::Applied(diff) = r.refresh(&answer(&["10.0.0.8:80", "10.0.0.7:80"])) else {
            panic!("a new address is a new generation");
        };
        assert_eq!(diff.to_string(), "added api.test:80@10.0.0.8");
        assert_eq!(r.current().number, 2);
        assert_eq!(
            table(&r),
            [
                (0, "api.test:80".into(), 2, true),
                (1, "10.0.0.1:80".into(), 1, true),
                (2, "api.test:80@10.0.0.8".into(), 2, true),
            ]
        );
        // The first address goes: retired, not removed from the table.
        let Outcome::Applied(diff) = r.refresh(&answer(&["10.0.0.8:80"])) else {
            panic!("a gone address is a new generation");
        };
        assert_eq!(diff.to_string(), "removed api.test:80");
        assert_eq!(r.current().active, [false, true, true]);
        // It comes back: its old id again.
        r.refresh(&answer(&["10.0.0.7:80", "10.0.0.8:80"]));
        assert_eq!(r.current().active, [true, true, true]);
        assert_eq!(r.current().config.backends.len(), 3);
    }

    #[test]
    fn a_failed_answer_keeps_the_last_good_addresses() {
        let mut r = reloader(&["10.0.0.7:80", "10.0.0.8:80"]);
        let mut failed = Answers::new();
        failed.insert(("api.test".into(), 80), Err("cannot resolve".into()));
        assert_eq!(r.refresh(&failed), Outcome::Unchanged);
        assert!(r.failing.contains(&("api.test".to_string(), 80)));
        // An empty answer is no answer either.
        assert_eq!(r.refresh(&answer(&[])), Outcome::Unchanged);
        assert!(!r.failing.is_empty(), "still failing");
        assert_eq!(r.current().active, [true, true, true]);
        assert!(matches!(
            r.refresh(&answer(&["10.0.0.7:80"])),
            Outcome::Applied(_)
        ));
        assert!(r.failing.is_empty(), "the streak ended");
    }

    #[test]
    fn the_timer_asks_once_per_period_and_zero_is_off() {
        let poll = mio::Poll::new().unwrap();
        let waker = Arc::new(mio::Waker::new(poll.registry(), mio::Token(0)).unwrap());
        let mut r = Resolver::new(waker);
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let none = || -> Vec<Name> { panic!("not due") };
        assert!(r.poll(t0, Duration::ZERO, none).is_none());
        assert_eq!(r.deadline(), None, "off");
        assert!(r.poll(t0, ms(100), none).is_none());
        assert_eq!(r.deadline(), Some(t0 + ms(100)));
        assert!(r.poll(t0 + ms(50), ms(100), none).is_none());
        // Due: no names, so no lookup, and the next period starts.
        let mut asked = 0;
        r.poll(t0 + ms(100), ms(100), || {
            asked += 1;
            Vec::new()
        });
        assert_eq!(asked, 1);
        assert_eq!(r.deadline(), Some(t0 + ms(200)));
        // Due with a name: looked up on the thread, answered through poll.
        r.poll(t0 + ms(200), ms(100), || vec![("localhost".into(), 80)]);
        assert_eq!(r.deadline(), None, "in flight");
        let got = (0..500).find_map(|_| {
            std::thread::sleep(ms(10));
            r.poll(Instant::now(), ms(100), none)
        });
        let got = got.expect("an answer within 5 s");
        assert!(got[&("localhost".to_string(), 80)].is_ok(), "{got:?}");
    }
}
