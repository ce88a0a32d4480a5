//! Counters across a binary upgrade. The old master hands its block's
//! descriptor and its backend labels to the new one; the new master keeps
//! that block mapped and, on every turn of its loop, stores the old tree's
//! totals into the "carried" region of its own block, matched by backend
//! label (address:port), not by id: the new backend table may differ.
//!
//! Storing (not adding) the totals makes a refresh idempotent, so the old
//! workers' last requests, counted while they drain, are picked up too,
//! and once the old tree is gone the carried values stay as they were.
//! The old block's own carried region is part of its totals, so a chain of
//! upgrades keeps only one predecessor mapped.

use std::collections::HashMap;
use std::io;
use std::os::fd::OwnedFd;
use std::sync::atomic::Ordering;

use super::layout::{self, CARRIED, HEADER_COUNTERS};
use super::{Metrics, checked_slots, header_total, sum_regions};
use crate::shm::SharedCells;
use crate::upstream::Backend;

pub struct Predecessor {
    shm: SharedCells,
    slots: usize,
    /// Row of each backend label in the old block.
    rows: HashMap<String, usize>,
}

impl Metrics {
    /// Adopts the old master's block `fd`, whose rows belong to `labels`
    /// (its backend table, in id order), and carries its totals over now.
    pub fn carry_from(
        &mut self,
        fd: OwnedFd,
        labels: &[String],
        backends: &[Backend],
    ) -> io::Result<()> {
        let shm = SharedCells::attach(fd)?;
        let slots = checked_slots(&shm)?;
        let mut rows = HashMap::with_capacity(labels.len());
        for (row, label) in labels.iter().enumerate().take(layout::MAX_BACKENDS) {
            rows.entry(label.clone()).or_insert(row);
        }
        self.predecessor = Some(Predecessor { shm, slots, rows });
        self.refresh_carried(backends);
        Ok(())
    }

    /// Stores the predecessor's current totals in our carried region
    /// (master side, once per loop turn; nothing without a predecessor).
    /// A label that appears twice in `backends` is carried to its first id.
    pub fn refresh_carried(&self, backends: &[Backend]) {
        let Some(old) = &self.predecessor else {
            return;
        };
        let from = old.shm.cells();
        let to = self.shm.cells();
        let carried = layout::region(self.slots);
        let copy = |src: usize, dst: usize, n: usize| {
            for c in 0..n {
                let total = sum_regions(from, old.slots, src + c);
                to[carried + dst + c].store(total, Ordering::Relaxed);
            }
        };
        copy(0, 0, layout::row(0));
        copy(
            layout::row(layout::NONE),
            layout::row(layout::NONE),
            layout::ROW,
        );
        let mut seen = std::collections::HashSet::with_capacity(backends.len());
        for (id, b) in backends.iter().enumerate().take(layout::MAX_BACKENDS) {
            if let Some(&row) = old.rows.get(&b.label)
                && seen.insert(row)
            {
                copy(layout::row(row), layout::row(id), layout::ROW);
            }
        }
        for cell in HEADER_COUNTERS {
            to[cell + CARRIED].store(header_total(from, cell), Ordering::Relaxed);
        }
    }
}
