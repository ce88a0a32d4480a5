//! Watching the config file: its *directory* is watched (inotify through
//! `notify`), because the ways a file gets replaced are seen there and not
//! on the file itself: an in-place write, a write-temp-then-rename (the
//! old inode is gone), a Kubernetes ConfigMap swap (`..data` symlink moved
//! to a new timestamped directory).
//!
//! notify's thread only raises a flag and wakes the owner's mio loop; the
//! loop debounces (re-reads once the events stopped for [`SETTLE`]) and
//! re-reads on its own thread. A re-read that finds the effective config
//! unchanged applies nothing, so an over-eager event costs one parse.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use notify::{EventKind, RecursiveMode, Watcher as _};

/// Quiet time after the last event before the file is re-read: an editor's
/// or a config manager's burst (truncate, write, chmod, rename) is one
/// reload.
pub const SETTLE: Duration = Duration::from_millis(150);

pub struct Watcher {
    _inner: notify::RecommendedWatcher,
    dirty: Arc<AtomicBool>,
    /// When the re-read is due: `SETTLE` after the last event seen.
    due: Option<Instant>,
}

impl Watcher {
    /// Watches the directory of `file`; `waker` wakes the owner's loop,
    /// which then calls [`Watcher::poll`].
    pub fn start(file: &Path, waker: Arc<mio::Waker>) -> Result<Watcher, String> {
        let dir = match file.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let name = file.file_name().map(|n| n.to_os_string());
        let dirty = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&dirty);
        let handler = move |event: notify::Result<notify::Event>| match event {
            Ok(event) => {
                if matters(&event, name.as_deref()) {
                    flag.store(true, Ordering::Release);
                    let _ = waker.wake();
                }
            }
            Err(e) => crate::warn!("config watch: {e}"),
        };
        let mut inner = notify::recommended_watcher(handler)
            .map_err(|e| format!("cannot watch the config file: {e}"))?;
        inner
            .watch(&dir, RecursiveMode::NonRecursive)
            .map_err(|e| format!("cannot watch {}: {e}", dir.display()))?;
        Ok(Watcher {
            _inner: inner,
            dirty,
            due: None,
        })
    }

    /// After a wake-up or a timeout: `true` when the file should be
    /// re-read now.
    pub fn poll(&mut self, now: Instant) -> bool {
        if self.dirty.swap(false, Ordering::Acquire) {
            self.due = Some(now + SETTLE);
            return false;
        }
        match self.due {
            Some(at) if now >= at => {
                self.due = None;
                true
            }
            _ => false,
        }
    }

    /// When the loop must wake for a pending re-read.
    pub fn deadline(&self) -> Option<Instant> {
        self.due
    }
}

/// Events that can change what the file reads: any change to an entry
/// named like it, or to a `..`-prefixed entry (Kubernetes' `..data` and
/// its timestamped directories). Reads and opens are not changes.
fn matters(event: &notify::Event, name: Option<&std::ffi::OsStr>) -> bool {
    if matches!(event.kind, EventKind::Access(_)) {
        return false;
    }
    event.paths.iter().any(|p| {
        p.file_name()
            .is_some_and(|n| Some(n) == name || n.to_str().is_some_and(|s| s.starts_with("..")))
    })
}
