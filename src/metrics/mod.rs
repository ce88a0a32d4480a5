//! Counters of the process tree and their Prometheus exposition (SPEC §6).
//! Each worker writes its own region of a shared block (`shm`), a scrape
//! sums all regions, so every worker answers with the same totals.
//!
//! Recording is a few plain stores on the request path: no locks, no
//! allocation; the `prometheus` crate is used only for a scrape (`collect`
//! turns the cells into metric families, its `TextEncoder` writes them).
//! After a binary upgrade the new master seeds a region of its block with
//! the old block's totals (`carry`), so counters survive upgrades.

mod carry;
mod collect;
pub mod layout;
mod process;

use std::io;
use std::os::fd::{OwnedFd, RawFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::shm::SharedCells;
use crate::upstream::{Backend, BackendId};

pub use collect::Scrape;
use layout::{BUCKETS, CODES, HIST};
pub use layout::{MAX_BACKENDS, RetryReason};

/// One process's view of the shared counters: it writes its own region
/// and reads all of them.
pub struct Metrics {
    shm: Arc<SharedCells>,
    /// Worker slots in the block (the carried region comes after them).
    slots: usize,
    /// This process's own region.
    base: usize,
    /// The master's view of its predecessor's block, after an upgrade.
    predecessor: Option<carry::Predecessor>,
}

impl Metrics {
    /// A new block for `slots` workers (the master, or sp mode with one),
    /// viewed as slot 0.
    pub fn create(slots: usize) -> io::Result<Metrics> {
        let slots = slots.max(1);
        let shm = Arc::new(SharedCells::create(layout::total(slots))?);
        shm.cells()[layout::MAGIC].store(layout::LAYOUT_ID, Ordering::Relaxed);
        shm.cells()[layout::MASTER_PID].store(u64::from(std::process::id()), Ordering::Relaxed);
        Ok(Metrics::view(shm, slots, 0))
    }

    /// The block a master handed to worker `slot` as `fd`. Its size gives
    /// the number of slots: after an upgrade to a lower `-w` the master keeps
    /// one worker per handed-over socket, more than the arguments say.
    pub fn attach(slot: usize, fd: OwnedFd) -> io::Result<Metrics> {
        let shm = Arc::new(SharedCells::attach(fd)?);
        let slots = checked_slots(&shm)?;
        if slot >= slots {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "worker slot out of range",
            ));
        }
        Ok(Metrics::view(shm, slots, slot))
    }

    fn view(shm: Arc<SharedCells>, slots: usize, slot: usize) -> Metrics {
        Metrics {
            shm,
            slots,
            base: layout::region(slot),
            predecessor: None,
        }
    }

    /// The descriptor workers attach to (and a successor master reads).
    pub fn shm_fd(&self) -> RawFd {
        self.shm.raw_fd()
    }

    /// Adds to one of this process's own cells. Each region has a single
    /// writer, so a plain load and store (no locked instruction) suffices.
    #[inline]
    fn add(&self, cell: usize, n: u64) {
        let c = &self.shm.cells()[self.base + cell];
        c.store(c.load(Ordering::Relaxed).wrapping_add(n), Ordering::Relaxed);
    }

    #[inline]
    fn set(&self, cell: usize, n: u64) {
        self.shm.cells()[self.base + cell].store(n, Ordering::Relaxed);
    }

    /// A cell summed over every region: the workers' and the carried one.
    fn sum(&self, cell: usize) -> u64 {
        sum_regions(self.shm.cells(), self.slots, cell)
    }

    fn header(&self, cell: usize) -> &AtomicU64 {
        &self.shm.cells()[cell]
    }

    /// A tree-wide counter: ours plus what predecessors counted.
    fn header_total(&self, cell: usize) -> u64 {
        header_total(self.shm.cells(), cell)
    }

    /// A backend's row, or the "none" row (the proxy answered itself).
    /// Ids past the block's capacity are counted as "none" rather than
    /// written out of bounds.
    #[inline]
    fn row(backend: Option<BackendId>) -> usize {
        layout::row(backend.map_or(layout::NONE, |b| b.0.min(layout::NONE)))
    }

    /// One observation into the histogram at `at`.
    #[inline]
    fn observe(&self, at: usize, took: Duration) {
        if let Some(i) = layout::bucket(took.as_secs_f64()) {
            self.add(at + i, 1);
        }
        self.add(at + BUCKETS.len(), took.as_micros() as u64);
        self.add(at + BUCKETS.len() + 1, 1);
    }

    /// One answered request: by `backend`, or by the proxy itself (`None`).
    pub fn request(&self, backend: Option<BackendId>, status: u16, took: Duration) {
        let code = usize::from(status).min(CODES - 1);
        self.add(Metrics::row(backend) + code, 1);
        self.observe(layout::DURATION, took);
    }

    /// Bytes of one exchange with `backend`: the request as sent up (head
    /// and body), the response as relayed down.
    pub fn bytes(&self, backend: BackendId, request: u64, response: u64) {
        let row = Metrics::row(Some(backend));
        self.add(row + layout::R_REQUEST_BYTES, request);
        self.add(row + layout::R_RESPONSE_BYTES, response);
    }

    /// Upstream timings of one exchange with `backend`: connection set-up
    /// (`None` on a reused connection: nothing to observe) and the time
    /// from the request sent to the response head received.
    pub fn upstream_timings(
        &self,
        backend: BackendId,
        connect: Option<Duration>,
        response: Duration,
    ) {
        let row = Metrics::row(Some(backend));
        if let Some(connect) = connect {
            self.observe(row + layout::R_CONNECT, connect);
        }
        self.observe(row + layout::R_RESPONSE, response);
    }

    /// A request was sent again after `backend` failed it for `reason`.
    pub fn retry(&self, backend: BackendId, reason: RetryReason) {
        let row = Metrics::row(Some(backend));
        self.add(row + layout::R_RETRIES + reason as usize, 1);
    }

    /// A client connection was accepted.
    pub fn connection_accepted(&self) {
        self.add(layout::CONNECTIONS_TOTAL, 1);
    }

    /// This worker's open client connections now.
    pub fn set_connections(&self, n: usize) {
        self.set(layout::CONNECTIONS, n as u64);
    }

    /// This worker's pooled connections to `backend` now: idle ones and
    /// ones lent to a request.
    pub fn set_pool(&self, backend: BackendId, idle: usize, busy: usize) {
        if backend.0 < MAX_BACKENDS {
            self.set(layout::POOL_IDLE + backend.0, idle as u64);
            self.set(layout::POOL_BUSY + backend.0, busy as u64);
        }
    }

    /// This worker's event loop is about to serve.
    pub fn set_ready(&self) {
        self.set(layout::READY, u64::from(std::process::id()));
    }

    /// Whether the worker `pid` reported serving in `slot` (master side).
    pub fn is_ready(&self, slot: usize, pid: u32) -> bool {
        let cell = &self.shm.cells()[layout::region(slot) + layout::READY];
        cell.load(Ordering::Relaxed) == u64::from(pid)
    }

    /// This worker's view of a backend's health changed.
    pub fn set_backend_up(&self, backend: BackendId, up: bool) {
        if backend.0 < MAX_BACKENDS {
            self.set(layout::DOWN + backend.0, u64::from(!up));
        }
    }

    /// A backend counts as up for the process tree while every worker
    /// considers it up: each worker probes on its own, and one that sees a
    /// backend fail is not overruled.
    fn backend_up(&self, backend: usize) -> bool {
        backend >= MAX_BACKENDS || self.sum(layout::DOWN + backend) == 0
    }

    /// A failure blamed on a backend (connect error, I/O error, timeout).
    pub fn failure(&self, backend: BackendId) {
        self.add(Metrics::row(Some(backend)) + layout::R_FAILURES, 1);
    }

    /// `n` active health probes of `backend` failed.
    pub fn health_check_failures(&self, backend: BackendId, n: u64) {
        self.add(Metrics::row(Some(backend)) + layout::R_HEALTH_FAILURES, n);
    }

    /// The master respawned a worker.
    pub fn worker_restarted(&self) {
        self.header(layout::RESTARTS)
            .fetch_add(1, Ordering::Relaxed);
    }

    /// The master applied (`ok`) or refused a config reload.
    pub fn config_reloaded(&self, ok: bool) {
        let cell = match ok {
            true => layout::RELOADS_OK,
            false => layout::RELOADS_FAILED,
        };
        self.header(cell).fetch_add(1, Ordering::Relaxed);
    }

    /// The pids of the tree: the block's creator first (its start is the
    /// tree's), then each serving worker; sp mode's one process once.
    fn pids(&self) -> Vec<u32> {
        let cells = self.shm.cells();
        let pid = |cell: usize| u32::try_from(cells[cell].load(Ordering::Relaxed)).unwrap_or(0);
        let mut pids = vec![pid(layout::MASTER_PID)];
        for slot in 0..self.slots {
            let worker = pid(layout::region(slot) + layout::READY);
            if worker != 0 && !pids.contains(&worker) {
                pids.push(worker);
            }
        }
        pids
    }

    /// The text exposition format, version 0.0.4, summed over all workers,
    /// with backend labels from the caller's backend table (indexed by
    /// `BackendId`).
    pub fn render(&self, backends: &[Backend]) -> String {
        Scrape::new(self, backends).encode()
    }
}

/// The slot count of a handed-over block, checked against our layout.
fn checked_slots(shm: &SharedCells) -> io::Result<usize> {
    let cells = shm.cells();
    let magic = cells[layout::MAGIC].load(Ordering::Relaxed);
    match layout::slots_of(cells.len()) {
        Some(slots) if magic == layout::LAYOUT_ID => Ok(slots),
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "metrics block laid out by another version",
        )),
    }
}

fn sum_regions(cells: &[AtomicU64], slots: usize, cell: usize) -> u64 {
    (0..=slots)
        .map(|r| cells[layout::region(r) + cell].load(Ordering::Relaxed))
        .fold(0, u64::wrapping_add)
}

fn header_total(cells: &[AtomicU64], cell: usize) -> u64 {
    let own = cells[cell].load(Ordering::Relaxed);
    own.wrapping_add(cells[cell + layout::CARRIED].load(Ordering::Relaxed))
}

/// A histogram's cells summed over the tree: per-bucket counts, the sum in
/// seconds, the count.
fn histogram(m: &Metrics, at: usize) -> ([u64; BUCKETS.len()], f64, u64) {
    let mut buckets = [0; BUCKETS.len()];
    for (i, b) in buckets.iter_mut().enumerate() {
        *b = m.sum(at + i);
    }
    let sum = m.sum(at + BUCKETS.len()) as f64 / 1e6;
    (buckets, sum, m.sum(at + HIST - 1))
}

#[cfg(test)]
mod tests;
