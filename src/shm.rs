//! A block of 64-bit counters in memory shared by the master and all its
//! workers (a memfd mapped by each process), so any worker can answer a
//! `/metrics` scrape with totals for the whole process tree.
//!
//! The only `unsafe` here is mapping and viewing that memory; every access
//! after that goes through `AtomicU64`.

use std::io;
use std::num::NonZeroUsize;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::ptr::NonNull;
use std::sync::atomic::AtomicU64;

use nix::sys::memfd::{MFdFlags, memfd_create};
use nix::sys::mman::{MapFlags, ProtFlags, mmap, munmap};

pub struct SharedCells {
    ptr: NonNull<AtomicU64>,
    len: usize,
    fd: OwnedFd,
}

// SAFETY: the mapping is only ever accessed through `AtomicU64`, which is
// safe to share between threads (and, mapped shared, between processes).
unsafe impl Send for SharedCells {}
// SAFETY: as above: all access is atomic.
unsafe impl Sync for SharedCells {}

impl SharedCells {
    /// A new zeroed block of `len` counters.
    pub fn create(len: usize) -> io::Result<SharedCells> {
        let fd = memfd_create("load_balancer-metrics", MFdFlags::MFD_CLOEXEC)
            .map_err(io::Error::from)?;
        nix::unistd::ftruncate(fd.as_fd(), (len.max(1) * 8) as i64).map_err(io::Error::from)?;
        SharedCells::map(fd, len)
    }

    /// Maps the whole block another process created and handed over as
    /// `fd`; its size says how many counters it holds.
    pub fn attach(fd: OwnedFd) -> io::Result<SharedCells> {
        let size = nix::sys::stat::fstat(fd.as_fd())
            .map_err(io::Error::from)?
            .st_size;
        let len = usize::try_from(size).unwrap_or(0) / 8;
        if len == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "shared metrics block is empty",
            ));
        }
        SharedCells::map(fd, len)
    }

    fn map(fd: OwnedFd, len: usize) -> io::Result<SharedCells> {
        let bytes = NonZeroUsize::new(len.max(1) * 8).expect("non-zero");
        // SAFETY: a fresh shared mapping of a file we own, at an address the
        // kernel picks; nothing else in this process refers to that range.
        let addr = unsafe {
            mmap(
                None,
                bytes,
                ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                MapFlags::MAP_SHARED,
                fd.as_fd(),
                0,
            )
        }
        .map_err(io::Error::from)?;
        Ok(SharedCells {
            ptr: addr.cast(),
            len,
            fd,
        })
    }

    pub fn cells(&self) -> &[AtomicU64] {
        // SAFETY: the mapping is `len * 8` bytes, page-aligned (so aligned
        // for AtomicU64), lives as long as `self`, and is only accessed
        // through atomics by every process that maps it.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }

    /// The descriptor to hand to a worker.
    pub fn raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

impl Drop for SharedCells {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly what `map` mapped; `cells()` borrows of
        // `self` cannot outlive this.
        let _ = unsafe { munmap(self.ptr.cast(), self.len.max(1) * 8) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering;

    #[test]
    fn a_second_mapping_sees_the_same_counters() {
        let a = SharedCells::create(16).expect("create");
        a.cells()[3].store(42, Ordering::Relaxed);
        let dup = a.fd.try_clone().expect("dup");
        let b = SharedCells::attach(dup).expect("attach");
        assert_eq!(b.cells().len(), 16, "the whole block is mapped");
        assert_eq!(b.cells()[3].load(Ordering::Relaxed), 42);
        b.cells()[4].fetch_add(1, Ordering::Relaxed);
        assert_eq!(a.cells()[4].load(Ordering::Relaxed), 1);
    }
}
