//! Counters of the process tree and their Prometheus text exposition
//! (SPEC §6). Each worker writes its own region of a shared block (`shm`),
//! a scrape sums all regions, so every worker answers with the same totals.
//!
//! Recording is a few plain stores on the request path: no locks, no
//! allocation; rendering happens only for a scrape.

use std::fmt::Write;
use std::io;
use std::os::fd::{OwnedFd, RawFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::shm::SharedCells;
use crate::upstream::{Backend, BackendId};

/// Status codes are counted exactly, 100–599.
const CODES: usize = 600;
/// Upper bounds of the request-duration histogram, in seconds.
const BUCKETS: [f64; 13] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// Process-tree-wide cells at the start of the block (written by the master).
const HEADER: usize = 8;
const RESTARTS: usize = 0;
const RELOADS_OK: usize = 1;
const RELOADS_FAILED: usize = 2;
/// Per-backend cells are laid out for this many backend ids, whatever the
/// running config has: a reload appends ids (`reload::table`) without
/// re-laying the block every process has mapped.
pub const MAX_BACKENDS: usize = 1024;

/// Where each counter sits in a worker's region of the shared block.
#[derive(Debug, Clone, Copy)]
struct Layout {
    backends: usize,
    slots: usize,
}

impl Layout {
    /// `[backend][code]` request counts; the extra last backend row is
    /// "none": answers the proxy gave itself.
    fn requests(&self, row: usize, code: usize) -> usize {
        row * CODES + code
    }
    fn failures(&self, backend: usize) -> usize {
        (self.backends + 1) * CODES + backend
    }
    fn bucket(&self, i: usize) -> usize {
        self.failures(self.backends) + i
    }
    fn duration_sum_us(&self) -> usize {
        self.bucket(BUCKETS.len())
    }
    fn duration_count(&self) -> usize {
        self.duration_sum_us() + 1
    }
    /// Open client connections of the worker (a gauge it overwrites).
    fn connections(&self) -> usize {
        self.duration_count() + 1
    }
    /// 1 while this worker considers the backend down (zero-initialised
    /// memory thus means "up").
    fn down(&self, backend: usize) -> usize {
        self.connections() + 1 + backend
    }
    /// The pid of the worker serving this slot, written once its loop runs:
    /// how a master knows its workers serve.
    fn ready(&self) -> usize {
        self.down(self.backends)
    }
    /// Failed active probes, by backend (each worker probes on its own).
    fn health_check_failures(&self, backend: usize) -> usize {
        self.ready() + 1 + backend
    }
    fn per_slot(&self) -> usize {
        self.health_check_failures(self.backends)
    }
    fn total(&self) -> usize {
        HEADER + self.slots * self.per_slot()
    }
    fn region(&self, slot: usize) -> usize {
        HEADER + slot * self.per_slot()
    }
}

/// One process's view of the shared counters: it writes its own region
/// and reads all of them.
pub struct Metrics {
    shm: Arc<SharedCells>,
    layout: Layout,
    base: usize,
    /// `(row, label)` of each backend in rotation, then the "none" row.
    labels: Vec<(usize, String)>,
}

impl Metrics {
    /// A new block for `slots` workers (the master, or sp mode with one),
    /// viewed as slot 0.
    pub fn create(backends: &[Backend], slots: usize) -> io::Result<Metrics> {
        let layout = Layout {
            backends: MAX_BACKENDS,
            slots: slots.max(1),
        };
        let shm = Arc::new(SharedCells::create(layout.total())?);
        Ok(Metrics::view(shm, layout, 0, backends))
    }

    /// The block a master handed to worker `slot` as `fd`. Its size gives
    /// the number of slots: after an upgrade to a lower `-w` the master keeps
    /// one worker per handed-over socket, more than the arguments say.
    pub fn attach(backends: &[Backend], slot: usize, fd: OwnedFd) -> io::Result<Metrics> {
        let shm = Arc::new(SharedCells::attach(fd)?);
        let mut layout = Layout {
            backends: MAX_BACKENDS,
            slots: 0,
        };
        let regions = shm.cells().len().saturating_sub(HEADER);
        if regions % layout.per_slot() != 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "metrics block laid out for other backends",
            ));
        }
        layout.slots = regions / layout.per_slot();
        if slot >= layout.slots {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "worker slot out of range",
            ));
        }
        Ok(Metrics::view(shm, layout, slot, backends))
    }

    fn view(shm: Arc<SharedCells>, layout: Layout, slot: usize, backends: &[Backend]) -> Metrics {
        let mut m = Metrics {
            shm,
            layout,
            base: layout.region(slot),
            labels: Vec::new(),
        };
        m.set_backends(backends.iter());
        m
    }

    /// The backends a scrape shows (those in rotation), after a reload.
    /// Ids past [`MAX_BACKENDS`] have no cells and are not shown.
    pub fn set_backends<'a>(&mut self, backends: impl Iterator<Item = &'a Backend>) {
        self.labels = backends
            .filter(|b| b.id.0 < MAX_BACKENDS)
            .map(|b| (b.id.0, b.label.clone()))
            .collect();
        self.labels.push((MAX_BACKENDS, "none".to_string()));
    }

    /// One config reload by the master (or the sp process).
    pub fn config_reloaded(&self, ok: bool) {
        let cell = if ok { RELOADS_OK } else { RELOADS_FAILED };
        self.header(cell).fetch_add(1, Ordering::Relaxed);
    }

    /// The descriptor workers attach to.
    pub fn shm_fd(&self) -> RawFd {
        self.shm.raw_fd()
    }

    /// Adds to one of this process's own cells. Each region has a single
    /// writer, so a plain load and store (no locked instruction) suffices.
    fn add(&self, cell: usize, n: u64) {
        let c = &self.shm.cells()[self.base + cell];
        c.store(c.load(Ordering::Relaxed).wrapping_add(n), Ordering::Relaxed);
    }

    fn sum(&self, cell: usize) -> u64 {
        let cells = self.shm.cells();
        (0..self.layout.slots)
            .map(|slot| cells[self.layout.region(slot) + cell].load(Ordering::Relaxed))
            .sum()
    }

    fn header(&self, cell: usize) -> &AtomicU64 {
        &self.shm.cells()[cell]
    }

    /// One answered request: by `backend`, or by the proxy itself (`None`).
    pub fn request(&self, backend: Option<BackendId>, status: u16, took: Duration) {
        let row = backend.map_or(self.layout.backends, |b| b.0.min(MAX_BACKENDS));
        let code = usize::from(status).min(CODES - 1);
        self.add(self.layout.requests(row, code), 1);
        let secs = took.as_secs_f64();
        if let Some(i) = BUCKETS.iter().position(|&le| secs <= le) {
            self.add(self.layout.bucket(i), 1);
        }
        self.add(self.layout.duration_sum_us(), took.as_micros() as u64);
        self.add(self.layout.duration_count(), 1);
    }

    /// This worker's open client connections now.
    pub fn set_connections(&self, n: usize) {
        self.shm.cells()[self.base + self.layout.connections()].store(n as u64, Ordering::Relaxed);
    }

    /// This worker's event loop is about to serve.
    pub fn set_ready(&self) {
        self.shm.cells()[self.base + self.layout.ready()]
            .store(u64::from(std::process::id()), Ordering::Relaxed);
    }

    /// Whether the worker `pid` reported serving in `slot` (master side).
    pub fn is_ready(&self, slot: usize, pid: u32) -> bool {
        let cell = &self.shm.cells()[self.layout.region(slot) + self.layout.ready()];
        cell.load(Ordering::Relaxed) == u64::from(pid)
    }

    /// This worker's view of a backend's health changed.
    pub fn set_backend_up(&self, backend: BackendId, up: bool) {
        self.shm.cells()[self.base + self.layout.down(backend.0)]
            .store(u64::from(!up), Ordering::Relaxed);
    }

    /// A backend counts as up for the process tree while every worker
    /// considers it up: each worker probes on its own, and one that sees a
    /// backend fail is not overruled.
    fn backend_up(&self, backend: usize) -> bool {
        self.sum(self.layout.down(backend)) == 0
    }

    /// A failure blamed on a backend (connect error, I/O error, timeout).
    pub fn failure(&self, backend: BackendId) {
        self.add(self.layout.failures(backend.0), 1);
    }

    /// `n` active health probes of `backend` failed.
    pub fn health_check_failures(&self, backend: BackendId, n: u64) {
        self.add(self.layout.health_check_failures(backend.0), n);
    }

    /// The master respawned a worker.
    pub fn worker_restarted(&self) {
        self.header(RESTARTS).fetch_add(1, Ordering::Relaxed);
    }

    /// The text exposition format, version 0.0.4, summed over all workers.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(4096);
        let layout = self.layout;
        let backends = &self.labels[..self.labels.len() - 1];
        header(
            &mut out,
            "lb_requests_total",
            "counter",
            "Requests answered, by backend and status code.",
        );
        for (row, label) in self.labels.iter().map(|(r, l)| (*r, l)) {
            for code in 0..CODES {
                let n = self.sum(layout.requests(row, code));
                if n > 0 {
                    let _ = writeln!(
                        out,
                        "lb_requests_total{{backend=\"{label}\",code=\"{code}\"}} {n}"
                    );
                }
            }
        }
        header(
            &mut out,
            "lb_request_duration_seconds",
            "histogram",
            "Time from a complete request head to the end of its response.",
        );
        let mut cumulative = 0;
        for (i, le) in BUCKETS.iter().enumerate() {
            cumulative += self.sum(layout.bucket(i));
            let _ = writeln!(
                out,
                "lb_request_duration_seconds_bucket{{le=\"{le}\"}} {cumulative}"
            );
        }
        let count = self.sum(layout.duration_count());
        let sum = self.sum(layout.duration_sum_us()) as f64 / 1e6;
        let _ = writeln!(
            out,
            "lb_request_duration_seconds_bucket{{le=\"+Inf\"}} {count}"
        );
        let _ = writeln!(out, "lb_request_duration_seconds_sum {sum}");
        let _ = writeln!(out, "lb_request_duration_seconds_count {count}");
        let up: Vec<bool> = backends.iter().map(|(b, _)| self.backend_up(*b)).collect();
        let healthy = up.iter().filter(|&&u| u).count();
        header(
            &mut out,
            "lb_backends_healthy",
            "gauge",
            "Backends up in every worker.",
        );
        let _ = writeln!(out, "lb_backends_healthy {healthy}");
        header(
            &mut out,
            "lb_backends_unhealthy",
            "gauge",
            "Backends down in at least one worker.",
        );
        let _ = writeln!(out, "lb_backends_unhealthy {}", backends.len() - healthy);
        header(
            &mut out,
            "lb_backend_up",
            "gauge",
            "1 if every worker considers the backend up.",
        );
        for ((_, label), up) in backends.iter().zip(&up) {
            let _ = writeln!(
                out,
                "lb_backend_up{{backend=\"{label}\"}} {}",
                u8::from(*up)
            );
        }
        header(
            &mut out,
            "lb_backend_failures_total",
            "counter",
            "Failures blamed on the backend.",
        );
        for &(i, ref label) in backends {
            let n = self.sum(layout.failures(i));
            let _ = writeln!(out, "lb_backend_failures_total{{backend=\"{label}\"}} {n}");
        }
        header(
            &mut out,
            "lb_health_check_failures_total",
            "counter",
            "Active health probes that failed, summed over workers.",
        );
        for &(i, ref label) in backends {
            let n = self.sum(layout.health_check_failures(i));
            let _ = writeln!(
                out,
                "lb_health_check_failures_total{{backend=\"{label}\"}} {n}"
            );
        }
        header(
            &mut out,
            "lb_connections_active",
            "gauge",
            "Open client connections.",
        );
        let _ = writeln!(
            out,
            "lb_connections_active {}",
            self.sum(layout.connections())
        );
        header(
            &mut out,
            "lb_worker_restarts_total",
            "counter",
            "Workers respawned by the master.",
        );
        let restarts = self.header(RESTARTS).load(Ordering::Relaxed);
        let _ = writeln!(out, "lb_worker_restarts_total {restarts}");
        header(
            &mut out,
            "lb_config_reloads_total",
            "counter",
            "Config reloads, by result.",
        );
        let ok = self.header(RELOADS_OK).load(Ordering::Relaxed);
        let failed = self.header(RELOADS_FAILED).load(Ordering::Relaxed);
        let _ = writeln!(out, "lb_config_reloads_total{{result=\"success\"}} {ok}");
        let _ = writeln!(
            out,
            "lb_config_reloads_total{{result=\"failure\"}} {failed}"
        );
        out
    }
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upstream::parse_spec;

    /// Another descriptor of `m`'s block, as a worker inherits it.
    fn reopen(m: &Metrics) -> OwnedFd {
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(format!("/proc/self/fd/{}", m.shm_fd()))
            .expect("reopen the block")
            .into()
    }

    #[test]
    fn a_worker_learns_the_slot_count_from_the_block() {
        let backends = vec![parse_spec("127.0.0.1:9001", BackendId(0)).unwrap()];
        let master = Metrics::create(&backends, 3).unwrap();
        let worker = Metrics::attach(&backends, 2, reopen(&master)).expect("slot 2 of 3");
        worker.set_ready();
        assert!(master.is_ready(2, std::process::id()));
        let err = Metrics::attach(&backends, 3, reopen(&master))
            .err()
            .expect("slot 3 of 3");
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    }

    #[test]
    fn renders_counts_histogram_and_gauges() {
        let backends = vec![parse_spec("127.0.0.1:9001", BackendId(0)).unwrap()];
        let m = Metrics::create(&backends, 1).unwrap();
        m.request(Some(BackendId(0)), 200, Duration::from_millis(3));
        m.request(Some(BackendId(0)), 200, Duration::from_millis(30));
        m.request(None, 400, Duration::ZERO);
        m.failure(BackendId(0));
        m.set_connections(7);
        let text = m.render();
        for line in [
            "lb_requests_total{backend=\"127.0.0.1:9001\",code=\"200\"} 2",
            "lb_requests_total{backend=\"none\",code=\"400\"} 1",
            "lb_request_duration_seconds_bucket{le=\"0.005\"} 2",
            "lb_request_duration_seconds_bucket{le=\"0.05\"} 3",
            "lb_request_duration_seconds_bucket{le=\"+Inf\"} 3",
            "lb_request_duration_seconds_count 3",
            "lb_backend_failures_total{backend=\"127.0.0.1:9001\"} 1",
            "lb_backend_up{backend=\"127.0.0.1:9001\"} 1",
            "lb_connections_active 7",
            "lb_health_check_failures_total{backend=\"127.0.0.1:9001\"} 0",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line}:\n{text}");
        }
        lint(&text);
    }

    #[test]
    fn health_check_failures_are_summed_over_workers() {
        let backends = vec![
            parse_spec("127.0.0.1:9001", BackendId(0)).unwrap(),
            parse_spec("127.0.0.1:9002", BackendId(1)).unwrap(),
        ];
        let master = Metrics::create(&backends, 2).unwrap();
        let w0 = Metrics::attach(&backends, 0, reopen(&master)).unwrap();
        let w1 = Metrics::attach(&backends, 1, reopen(&master)).unwrap();
        w0.health_check_failures(BackendId(1), 2);
        w1.health_check_failures(BackendId(1), 3);
        w1.failure(BackendId(0));
        let text = w0.render();
        for line in [
            "lb_health_check_failures_total{backend=\"127.0.0.1:9001\"} 0",
            "lb_health_check_failures_total{backend=\"127.0.0.1:9002\"} 5",
            "lb_backend_failures_total{backend=\"127.0.0.1:9001\"} 1",
            "lb_backend_failures_total{backend=\"127.0.0.1:9002\"} 0",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line}:\n{text}");
        }
        assert_eq!(text, w1.render(), "whichever worker answers");
        lint(&text);
    }

    /// What `promtool check metrics` insists on for the text format: each
    /// family announced once by HELP then TYPE, before its samples, samples
    /// of a family together, every sample line `name{labels} value` with a
    /// name of its family (histograms add `_bucket`, `_sum`, `_count`).
    fn lint(text: &str) {
        let mut families: Vec<(&str, &str)> = Vec::new();
        let mut help: Option<&str> = None;
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let (name, doc) = rest.split_once(' ').expect("HELP name text");
                assert!(!doc.is_empty(), "{line}");
                assert!(
                    families.iter().all(|(n, _)| *n != name),
                    "{name} announced twice"
                );
                help = Some(name);
            } else if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').expect("TYPE name kind");
                assert_eq!(help.take(), Some(name), "TYPE right after its HELP");
                assert!(["counter", "gauge", "histogram"].contains(&kind), "{line}");
                families.push((name, kind));
            } else {
                let &(family, kind) = families.last().expect("a sample before any TYPE");
                let (series, value) = line.rsplit_once(' ').expect("name value");
                assert!(value.parse::<f64>().is_ok(), "{line}");
                let name = series.split('{').next().unwrap_or_default();
                let ok = match kind {
                    "histogram" => ["_bucket", "_sum", "_count"]
                        .iter()
                        .any(|s| name.strip_suffix(s) == Some(family)),
                    _ => name == family,
                };
                assert!(ok, "{line} outside its family {family}");
                if kind == "counter" {
                    assert!(family.ends_with("_total"), "{family}");
                }
                if let Some(labels) = series.strip_prefix(name).filter(|l| !l.is_empty()) {
                    let inner = labels
                        .strip_prefix('{')
                        .and_then(|l| l.strip_suffix('}'))
                        .expect("{labels}");
                    for pair in inner.split(',') {
                        let (k, v) = pair.split_once('=').expect("label=value");
                        assert!(
                            !k.is_empty()
                                && k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'),
                            "{line}"
                        );
                        assert!(
                            v.len() >= 2 && v.starts_with('"') && v.ends_with('"'),
                            "{line}"
                        );
                    }
                }
            }
        }
        assert!(help.is_none(), "HELP without TYPE");
    }
}
