//! The current generation, shared by the watching master with its workers:
//! a memfd (inherited by every worker at spawn, like the metrics block)
//! holding the generation as JSON behind a sequence lock.
//!
//! One writer (the master) and rare writes: the writer makes the sequence
//! odd, writes, makes it even again; a reader copies the bytes and keeps
//! them only if the sequence was even and unchanged around the copy. A
//! worker reads it at start (so a respawned worker runs the current
//! generation, not argv) and when its master sends SIGHUP.

use std::io;
use std::os::fd::{OwnedFd, RawFd};
use std::sync::atomic::{Ordering, fence};

use super::Generation;
use crate::shm::SharedCells;

const SEQ: usize = 0;
const LEN: usize = 1;
const DATA: usize = 2;
/// Room for the JSON of a generation: ample for `metrics::MAX_BACKENDS`
/// backends. The memfd is sparse: unused room costs no memory.
const CAPACITY: usize = 8 << 20;
/// A reader retries a copy the writer overlapped this many times.
const READ_TRIES: usize = 10_000;

pub struct Handoff {
    cells: SharedCells,
}

impl Handoff {
    pub fn create() -> io::Result<Handoff> {
        Ok(Handoff {
            cells: SharedCells::create(DATA + CAPACITY / 8)?,
        })
    }

    /// The block a master handed over as `fd`.
    pub fn attach(fd: OwnedFd) -> io::Result<Handoff> {
        let cells = SharedCells::attach(fd)?;
        if cells.cells().len() <= DATA {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "config hand-off block too small",
            ));
        }
        Ok(Handoff { cells })
    }

    pub fn raw_fd(&self) -> RawFd {
        self.cells.raw_fd()
    }

    /// Makes `generation` the one workers read.
    pub fn publish(&self, generation: &Generation) -> Result<(), String> {
        let json = serde_json::to_vec(generation)
            .map_err(|e| format!("cannot encode generation {}: {e}", generation.number))?;
        let cells = self.cells.cells();
        let room = (cells.len() - DATA) * 8;
        if json.len() > room {
            return Err(format!(
                "generation {} is {} bytes, more than the {room} the hand-off holds",
                generation.number,
                json.len()
            ));
        }
        let seq = cells[SEQ].load(Ordering::Relaxed);
        cells[SEQ].store(seq | 1, Ordering::Relaxed);
        fence(Ordering::Release);
        cells[LEN].store(json.len() as u64, Ordering::Relaxed);
        for (i, chunk) in json.chunks(8).enumerate() {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            cells[DATA + i].store(u64::from_le_bytes(word), Ordering::Relaxed);
        }
        cells[SEQ].store((seq | 1) + 1, Ordering::Release);
        Ok(())
    }

    /// The sequence number of the last publish: changes with each.
    pub fn version(&self) -> u64 {
        self.cells.cells()[SEQ].load(Ordering::Acquire)
    }

    /// The generation published last.
    pub fn read(&self) -> Result<Generation, String> {
        let cells = self.cells.cells();
        for _ in 0..READ_TRIES {
            let before = cells[SEQ].load(Ordering::Acquire);
            if before & 1 == 1 {
                std::thread::yield_now();
                continue;
            }
            if before == 0 {
                return Err("no config generation was published".into());
            }
            let len = usize::try_from(cells[LEN].load(Ordering::Relaxed)).unwrap_or(usize::MAX);
            let room = (cells.len() - DATA) * 8;
            let mut bytes = Vec::with_capacity(len.min(room));
            for cell in &cells[DATA..DATA + len.min(room).div_ceil(8)] {
                bytes.extend_from_slice(&cell.load(Ordering::Relaxed).to_le_bytes());
            }
            fence(Ordering::Acquire);
            if cells[SEQ].load(Ordering::Relaxed) != before || len > room {
                continue;
            }
            bytes.truncate(len);
            return serde_json::from_slice(&bytes)
                .map_err(|e| format!("bad config generation in the hand-off: {e}"));
        }
        Err("the config hand-off stayed busy".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::cli;

    #[test]
    fn a_published_generation_reads_back() {
        let h = Handoff::create().unwrap();
        assert!(h.read().is_err(), "nothing published yet");
        let config = cli::parse_from(["load_balancer", "-b", "127.0.0.1:1,weight=3"]).unwrap();
        let mut g = Generation::first(config);
        h.publish(&g).unwrap();
        let v1 = h.version();
        g.number = 7;
        g.active[0] = false;
        h.publish(&g).unwrap();
        assert_ne!(h.version(), v1);
        let back = h.read().unwrap();
        assert_eq!(back.number, 7);
        assert_eq!(back.active, [false]);
        assert_eq!(back.config.backends, g.config.backends);
    }
}
