//! A worker following config generations (`reload`): where it learns of
//! them, and applying one between events without failing a request.
//!
//! Under a master the generation comes from the hand-off block, announced
//! by SIGHUP; the sp process watches and re-reads the file itself. Applying
//! never shifts a `BackendId` (the table only grows): unchanged backends
//! keep their pooled connections, breaker state, balancer position and
//! metric cells; a retired one takes no new request, its idle connections
//! (HTTP/1.1 pooled ones and h2 ones without a stream) close now and busy
//! ones when their exchange (or last stream) ends; a new one serves at
//! once and is probed. The access log moves to a new path or format with
//! the generation.

use std::sync::Arc;
use std::time::Instant;

use super::Worker;
use crate::access_log::AccessLog;
use crate::reload::diff::Diff;
use crate::reload::dns::Resolver;
use crate::reload::handoff::Handoff;
use crate::reload::watch::Watcher;
use crate::reload::{Generation, Outcome, Reloader};
use crate::tls;
use crate::upstream::Backend;

/// Where new generations come from.
pub enum Source {
    /// Under a master: read on SIGHUP (and once when the loop starts, for
    /// a publish that came while this worker was starting).
    Master(Handoff),
    /// The sp process: its own re-reads (SIGHUP, the watcher) and DNS
    /// lookups (the resolver, started by `follow`).
    Own {
        reloader: Box<Reloader>,
        watcher: Option<Watcher>,
        resolver: Option<Resolver>,
    },
}

impl Worker {
    /// Follows `source` from now on; `current` is what the worker was built
    /// from (its backends retired as `current.active` says).
    pub fn follow(&mut self, mut source: Source, current: &Generation) {
        if let Source::Own { resolver, .. } = &mut source {
            *resolver = Some(Resolver::new(Arc::clone(&self.waker)));
        }
        self.reload = Some(source);
        self.generation_number = current.number;
        if current.active.iter().any(|on| !on) {
            self.apply(current.clone());
        }
    }

    /// The sp watcher's wake-ups share the probe thread's waker.
    pub fn watch(&mut self) -> Result<(), String> {
        let Some(file) = self.config.config_file.clone() else {
            return Ok(());
        };
        let waker = Arc::clone(&self.waker);
        if let Some(Source::Own { watcher, .. }) = self.reload.as_mut() {
            *watcher = Some(Watcher::start(&file, waker)?);
        }
        Ok(())
    }

    /// When an sp re-read (the watcher's debounce) or lookup is due.
    pub(super) fn reload_deadline(&self) -> Option<Instant> {
        match &self.reload {
            Some(Source::Own {
                watcher, resolver, ..
            }) => {
                let reread = watcher.as_ref().and_then(Watcher::deadline);
                let lookup = resolver.as_ref().and_then(Resolver::deadline);
                reread.into_iter().chain(lookup).min()
            }
            _ => None,
        }
    }

    /// After a wake-up or timeout: the sp watcher's debounce and the
    /// resolver's timer and answers.
    pub(super) fn poll_watch(&mut self, now: Instant) {
        let Some(Source::Own {
            reloader,
            watcher,
            resolver,
        }) = self.reload.as_mut()
        else {
            return;
        };
        if watcher.as_mut().is_some_and(|w| w.poll(now)) {
            self.reload("the file changed");
            return;
        }
        let period = self.config.dns_interval;
        let answers = resolver
            .as_mut()
            .and_then(|r| r.poll(now, period, || reloader.names()));
        if let Some(answers) = answers
            && let Outcome::Applied(_) = reloader.refresh(&answers)
        {
            let next = reloader.current().clone();
            self.apply(next);
        }
    }

    /// SIGHUP, or the sp watcher: take up the current generation.
    pub(super) fn reload(&mut self, why: &str) {
        let next = match self.reload.as_mut() {
            None => {
                crate::warn!("SIGHUP ignored: this process does not follow a config");
                return;
            }
            Some(Source::Master(handoff)) => match handoff.read() {
                Ok(g) if g.number > self.generation_number => g,
                Ok(_) => return,
                Err(e) => {
                    crate::error!(
                        "cannot read the new config: {e}; keeping generation {}",
                        self.generation_number
                    );
                    return;
                }
            },
            Some(Source::Own { reloader, .. }) => match reloader.reload(why, &self.metrics) {
                Outcome::Applied(_) => reloader.current().clone(),
                _ => return,
            },
        };
        self.apply(next);
    }

    /// Swaps in `next`, between events.
    fn apply(&mut self, next: Generation) {
        let table = &next.config.backends;
        let extends = table.len() >= self.backends.len()
            && table
                .iter()
                .zip(&self.backends)
                .all(|(n, o)| n.addr == o.addr);
        if !extends {
            crate::error!(
                "config generation {} does not extend the backend table; keeping {}",
                next.number,
                self.generation_number
            );
            return;
        }
        let cfg = &next.config;
        let tls = match tls::backend_configs(table, cfg.insecure, cfg.ca_file.as_deref()) {
            Ok(t) => t,
            Err(e) => {
                crate::error!(
                    "config generation {}: {e}; keeping {}",
                    next.number,
                    self.generation_number
                );
                return;
            }
        };
        if let Err(e) = self
            .pool
            .update(table, &next.active, tls.clone(), self.poll.registry())
        {
            crate::error!(
                "config generation {}: {e}; keeping {}",
                next.number,
                self.generation_number
            );
            return;
        }
        let before = Generation {
            number: self.generation_number,
            config: (*self.config).clone(),
            active: self.active.clone(),
        };
        let diff = Diff::between(&before, &next);
        self.h2.retire(&next.active);
        self.balancer.update(cfg.strategy, table);
        self.health.update(table.len(), &next.active, &cfg.health);
        let probed: Vec<Backend> = next.active_backends().cloned().collect();
        if let Err(e) = self
            .health
            .start_probes(&probed, tls, Arc::clone(&self.waker))
        {
            crate::error!("cannot restart health probes: {e}");
        }
        self.listed = next.active_backends().cloned().collect();
        for b in next.active_backends() {
            self.metrics.set_backend_up(b.id, self.health.is_up(b.id));
        }
        self.host_values = table.iter().map(Backend::host_value).collect();
        self.backends = table.clone();
        crate::log::set_level(cfg.log_level);
        AccessLog::follow(
            &mut self.access,
            cfg.access_log.as_ref(),
            cfg.access_log_format,
        );
        self.generation_number = next.number;
        crate::debug!("config generation {} applied: {diff}", next.number);
        self.active = next.active;
        self.config = Arc::new(next.config);
    }
}
