//! The access log of one worker: lines are formatted into an in-memory
//! batch and leave with one `write(2)` per batch, when it passes
//! [`FLUSH_AT`] bytes, at the worker's one-second tick, on SIGUSR1 before
//! the reopen, and when the worker stops.
//!
//! Every worker opens the file itself with `O_APPEND`: a batch is whole
//! lines and one write, so the workers' batches never split each other's
//! lines. The write is a plain blocking one to a regular file: it lands in
//! the page cache, so the loop only waits when the kernel throttles dirty
//! pages (a disk far behind), and then for one write a second or per
//! 64 KiB, never per request. A batch the kernel refuses (disk full, file
//! gone) is kept up to [`HOLD_MAX`] and retried at the next tick, then
//! dropped whole, never cut mid-line.

mod format;

pub(crate) use format::Escaped;

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::config::{AccessLog as Target, AccessLogFormat};
use crate::proxy::record::Record;

/// A batch is written once it holds this much.
pub const FLUSH_AT: usize = 64 * 1024;
/// What is kept while writes fail; beyond it the batch is dropped.
const HOLD_MAX: usize = 1024 * 1024;

enum Dest {
    Stdout,
    File { path: PathBuf, file: File },
}

pub struct AccessLog {
    dest: Dest,
    format: AccessLogFormat,
    batch: Vec<u8>,
    clock: format::Clock,
    /// Lines dropped since the last report (writes failing).
    dropped: u64,
}

/// Opens (creating it, mode 0640) `path` for appending.
fn open(path: &PathBuf) -> io::Result<File> {
    OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o640)
        .open(path)
}

impl AccessLog {
    /// Opens the log; an error names the file.
    pub fn open(target: &Target, format: AccessLogFormat) -> Result<AccessLog, String> {
        let dest = match target {
            Target::Stdout => Dest::Stdout,
            Target::File(path) => Dest::File {
                file: open(path)
                    .map_err(|e| format!("cannot open access log {}: {e}", path.display()))?,
                path: path.clone(),
            },
        };
        Ok(AccessLog {
            dest,
            format,
            batch: Vec::with_capacity(FLUSH_AT + 4096),
            clock: format::Clock::new(),
            dropped: 0,
        })
    }

    /// Adds the line of a request that ended at `now` (the loop's time);
    /// writes the batch if it is full.
    pub(crate) fn push(
        &mut self,
        r: &Record,
        now: Instant,
        total: Duration,
        backend: Option<&str>,
    ) {
        if self.batch.len() >= HOLD_MAX {
            self.dropped += 1;
            return;
        }
        let x = format::Extra {
            stamp: self.clock.at(now),
            total,
            backend,
        };
        match self.format {
            AccessLogFormat::Combined => format::combined(&mut self.batch, r, &x),
            AccessLogFormat::Json => format::json(&mut self.batch, r, &x),
        }
        if self.batch.len() >= FLUSH_AT {
            self.flush();
        }
    }

    /// The worker's one-second tick: the clock is read again and the batch
    /// written.
    pub fn tick(&mut self) {
        self.clock.anchor();
        self.flush();
    }

    /// Writes the batch, with one `write(2)`.
    pub fn flush(&mut self) {
        if self.batch.is_empty() {
            return;
        }
        let written = match &self.dest {
            Dest::Stdout => nix::unistd::write(io::stdout().as_fd(), &self.batch),
            Dest::File { file, .. } => nix::unistd::write(file.as_fd(), &self.batch),
        };
        match written {
            Ok(n) if n == self.batch.len() => self.batch.clear(),
            Ok(n) => {
                // A short write to a regular file means the disk is full:
                // the rest waits for the next tick.
                self.batch.drain(..n);
            }
            Err(nix::errno::Errno::EINTR | nix::errno::Errno::EAGAIN) => {}
            Err(e) => {
                if self.batch.len() >= HOLD_MAX {
                    let lines = self.batch.iter().filter(|&&b| b == b'\n').count();
                    self.dropped += lines as u64;
                    self.batch.clear();
                }
                crate::warn!("access log: write failed: {e}");
            }
        }
        if self.dropped > 0 && self.batch.is_empty() {
            crate::warn!("access log: {} lines dropped (writes failed)", self.dropped);
            self.dropped = 0;
        }
    }

    /// Whether this log writes to `target` in `format`.
    fn writes(&self, target: &Target, format: AccessLogFormat) -> bool {
        let same_dest = match (&self.dest, target) {
            (Dest::Stdout, Target::Stdout) => true,
            (Dest::File { path, .. }, Target::File(wanted)) => path == wanted,
            _ => false,
        };
        same_dest && self.format == format
    }

    /// A reload set `access_log` to `target` (`None`: off) in `format`.
    /// What `slot` has batched goes to the file it was for; a log that
    /// cannot be opened keeps the running one (as a failed reopen does).
    pub fn follow(slot: &mut Option<AccessLog>, target: Option<&Target>, format: AccessLogFormat) {
        match (slot.as_ref(), target) {
            (None, None) => {}
            (Some(log), Some(target)) if log.writes(target, format) => {}
            // Dropping flushes.
            (Some(_), None) => *slot = None,
            (_, Some(target)) => match AccessLog::open(target, format) {
                Ok(log) => *slot = Some(log),
                Err(e) => crate::error!("{e}; the access log stays as it was"),
            },
        }
    }

    /// SIGUSR1 (logrotate): what is batched goes to the old file, then the
    /// path is opened anew. If it cannot be, the old file stays in use.
    pub fn reopen(&mut self) {
        self.flush();
        if let Dest::File { path, file } = &mut self.dest {
            match open(path) {
                Ok(new) => *file = new,
                Err(e) => crate::error!(
                    "access log {}: cannot reopen, still writing the old file: {e}",
                    path.display()
                ),
            }
        }
    }
}

impl Drop for AccessLog {
    /// A stopping worker writes what it has.
    fn drop(&mut self) {
        self.flush();
    }
}
