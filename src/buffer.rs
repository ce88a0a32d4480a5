//! A fixed-capacity byte buffer with a read and a write end: bytes are read
//! from a socket into the free tail and consumed from the front.
//!
//! Capacity is fixed per connection (it only grows once, for a large request
//! head), which is what bounds memory per connection whatever the body size.
//! A connection holds storage only while it has bytes to keep: a `BufPool`
//! lends it before a read and takes it back once the buffer is empty, so an
//! idle keep-alive connection costs no buffer, and the storage a worker
//! reuses stays warm in its CPU's cache. A `HeadPool` does the same for the
//! heads a connection writes.

use std::io::{self, Read};

#[derive(Debug)]
pub struct Buf {
    data: Vec<u8>,
    start: usize,
    end: usize,
}

impl Buf {
    pub fn with_capacity(cap: usize) -> Buf {
        Buf {
            data: vec![0; cap],
            start: 0,
            end: 0,
        }
    }

    /// A buffer without storage: it holds nothing until a pool lends some.
    pub const fn empty() -> Buf {
        Buf {
            data: Vec::new(),
            start: 0,
            end: 0,
        }
    }

    pub fn has_storage(&self) -> bool {
        !self.data.is_empty()
    }

    pub fn data(&self) -> &[u8] {
        &self.data[self.start..self.end]
    }

    pub fn data_mut(&mut self) -> &mut [u8] {
        &mut self.data[self.start..self.end]
    }

    pub fn len(&self) -> usize {
        self.end - self.start
    }

    pub fn is_empty(&self) -> bool {
        self.start == self.end
    }

    pub fn capacity(&self) -> usize {
        self.data.len()
    }

    /// No room left even after moving the data to the front (a buffer
    /// without storage is not full: a pool lends it room before a read).
    pub fn is_full(&self) -> bool {
        self.len() == self.data.len() && self.has_storage()
    }

    pub fn consume(&mut self, n: usize) {
        debug_assert!(n <= self.len());
        self.start += n;
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
    }

    /// Removes `n` bytes at offset `at` of the data, moving what follows
    /// them down (a re-framed body left a gap behind its rewritten part).
    pub fn cut(&mut self, at: usize, n: usize) {
        if n == 0 {
            return;
        }
        debug_assert!(at + n <= self.len());
        let from = self.start + at;
        self.data.copy_within(from + n..self.end, from);
        self.end -= n;
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
    }

    pub fn clear(&mut self) {
        self.start = 0;
        self.end = 0;
    }

    /// Grows the capacity to at least `cap` (used once for large heads).
    pub fn grow_to(&mut self, cap: usize) {
        if cap > self.data.len() {
            self.data.resize(cap, 0);
        }
    }

    /// One `read` into the free space. `Ok((0, _))` means end of stream; a
    /// full buffer must not be passed (it would look like end of stream).
    /// The flag says the read came back short: the socket is drained, so an
    /// edge-triggered caller can wait for the next event instead of paying
    /// for a `read` that would only say WouldBlock.
    pub fn read_from(&mut self, src: &mut impl Read) -> io::Result<(usize, bool)> {
        debug_assert!(!self.is_full());
        // Move the data home when the tail got short, so reads stay large.
        if self.start > 0 && self.tail_room() < self.data.len() / 4 {
            self.data.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        let room = self.data.len() - self.end;
        let n = src.read(&mut self.data[self.end..])?;
        self.end += n;
        Ok((n, n < room))
    }

    /// Free space at the tail before a compaction would be needed.
    pub fn tail_room(&self) -> usize {
        self.data.len() - self.end
    }
}

/// Spare storage of one kind, lent last in, first out, so what is in use
/// is what was touched most recently. What stayed spare for a whole trim
/// interval is freed, so a burst does not pin its peak.
#[derive(Debug, Default)]
struct Spares {
    free: Vec<Vec<u8>>,
    /// The fewest spares seen since the last trim: that many were not
    /// needed during the interval.
    low: usize,
}

impl Spares {
    #[inline]
    fn take(&mut self) -> Option<Vec<u8>> {
        let spare = self.free.pop();
        self.low = self.low.min(self.free.len());
        spare
    }

    #[inline]
    fn put(&mut self, storage: Vec<u8>) {
        self.free.push(storage);
    }

    /// Returns how many spares were freed.
    fn trim(&mut self) -> usize {
        let unused = self.low.min(self.free.len());
        self.free.drain(..unused);
        self.low = self.free.len();
        unused
    }
}

/// Storage for the read buffers of one worker's connections, all of one
/// size, lent only while a buffer holds bytes.
#[derive(Debug)]
pub struct BufPool {
    size: usize,
    spares: Spares,
}

impl BufPool {
    pub fn new(size: usize) -> BufPool {
        BufPool {
            size,
            spares: Spares::default(),
        }
    }

    /// Gives `buf` storage if it has none.
    #[inline]
    pub fn lend(&mut self, buf: &mut Buf) {
        if buf.has_storage() {
            return;
        }
        buf.data = match self.spares.take() {
            Some(data) => data,
            None => self.allocate(),
        };
        buf.start = 0;
        buf.end = 0;
    }

    /// New storage: only while the pool grows to what the load needs.
    #[cold]
    #[inline(never)]
    fn allocate(&self) -> Vec<u8> {
        vec![0; self.size]
    }

    /// Takes back the storage of an empty buffer; one that holds bytes keeps
    /// it. Storage grown for a large head is freed rather than kept.
    #[inline]
    pub fn reclaim(&mut self, buf: &mut Buf) {
        if !buf.is_empty() || !buf.has_storage() {
            return;
        }
        let data = std::mem::take(&mut buf.data);
        if data.len() == self.size {
            self.spares.put(data);
        }
    }

    /// Frees the storage that was not lent since the last trim; returns
    /// how many buffers that was.
    pub fn trim(&mut self) -> usize {
        self.spares.trim()
    }

    /// Storage held for later loans.
    pub fn free_count(&self) -> usize {
        self.spares.free.len()
    }
}

/// Storage for the heads a worker writes (rewritten request and response
/// heads, its own answers), lent while a head is being written and sent.
/// A head vector without capacity still works (it allocates): lending only
/// decides where the storage comes from.
#[derive(Debug)]
pub struct HeadPool {
    capacity: usize,
    spares: Spares,
}

impl HeadPool {
    pub fn new(capacity: usize) -> HeadPool {
        HeadPool {
            capacity,
            spares: Spares::default(),
        }
    }

    /// Gives `head` storage if it has none.
    #[inline]
    pub fn lend(&mut self, head: &mut Vec<u8>) {
        if head.capacity() == 0 {
            *head = match self.spares.take() {
                Some(storage) => storage,
                None => self.allocate(),
            };
        }
    }

    #[cold]
    #[inline(never)]
    fn allocate(&self) -> Vec<u8> {
        Vec::with_capacity(self.capacity)
    }

    /// Takes back the storage of an empty head, grown or not: a backend
    /// that always sends large heads then costs no allocation per request
    /// (heads are bounded by `MAX_HEAD`, and storage left unused goes at
    /// the next trim).
    #[inline]
    pub fn reclaim(&mut self, head: &mut Vec<u8>) {
        if !head.is_empty() || head.capacity() == 0 {
            return;
        }
        self.spares.put(std::mem::take(head));
    }

    /// Frees the storage that was not lent since the last trim.
    pub fn trim(&mut self) -> usize {
        self.spares.trim()
    }

    /// Storage held for later loans.
    pub fn free_count(&self) -> usize {
        self.spares.free.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_consumes_and_compacts() {
        let mut b = Buf::with_capacity(8);
        let mut src: &[u8] = b"abcdefghij";
        assert_eq!(b.read_from(&mut src).unwrap(), (8, false));
        assert!(b.is_full());
        b.consume(5);
        assert_eq!(b.data(), b"fgh");
        assert_eq!(b.read_from(&mut src).unwrap(), (2, true));
        assert_eq!(b.data(), b"fghij");
        b.consume(5);
        assert!(b.is_empty() && b.tail_room() == 8);
    }

    #[test]
    fn storage_is_lent_while_needed_and_trimmed_when_unused() {
        let mut pool = BufPool::new(8);
        let mut a = Buf::empty();
        assert!(a.is_empty() && !a.is_full() && a.capacity() == 0);
        pool.lend(&mut a);
        assert_eq!(a.capacity(), 8);
        let mut src: &[u8] = b"abc";
        a.read_from(&mut src).unwrap();
        // Holding bytes: the storage stays.
        pool.reclaim(&mut a);
        assert_eq!((a.data(), pool.free_count()), (&b"abc"[..], 0));
        a.consume(3);
        pool.reclaim(&mut a);
        assert_eq!((a.capacity(), pool.free_count()), (0, 1));
        // The storage returned last is lent next.
        let mut b = Buf::empty();
        pool.lend(&mut b);
        assert_eq!((b.capacity(), pool.free_count()), (8, 0));
        // Grown storage is not kept.
        b.grow_to(16);
        pool.reclaim(&mut b);
        assert_eq!((b.capacity(), pool.free_count()), (0, 0));
    }

    #[test]
    fn trim_frees_only_what_a_whole_interval_left_unused() {
        let mut pool = BufPool::new(4);
        let mut bufs: Vec<Buf> = (0..3).map(|_| Buf::empty()).collect();
        for b in &mut bufs {
            pool.lend(b);
        }
        for b in &mut bufs {
            pool.reclaim(b);
        }
        pool.trim();
        assert_eq!(pool.free_count(), 3);
        // Two are lent and returned during the next interval: one stayed
        // unused throughout and goes.
        pool.lend(&mut bufs[0]);
        pool.lend(&mut bufs[1]);
        pool.reclaim(&mut bufs[0]);
        pool.reclaim(&mut bufs[1]);
        pool.trim();
        assert_eq!(pool.free_count(), 2);
        // A quiet interval frees the rest.
        pool.trim();
        assert_eq!(pool.free_count(), 0);
    }

    #[test]
    fn heads_are_lent_while_written_and_kept_grown() {
        let mut pool = HeadPool::new(16);
        let mut head = Vec::new();
        pool.lend(&mut head);
        assert!(head.capacity() >= 16);
        head.extend_from_slice(b"HTTP/1.1 200 OK");
        // Still holding a head: kept.
        pool.reclaim(&mut head);
        assert_eq!((head.len(), pool.free_count()), (15, 0));
        head.clear();
        pool.reclaim(&mut head);
        assert_eq!((head.capacity(), pool.free_count()), (0, 1));
        // Grown storage comes back as it is and is lent again.
        pool.lend(&mut head);
        head.extend_from_slice(&[b'x'; 100]);
        head.clear();
        pool.reclaim(&mut head);
        pool.lend(&mut head);
        assert!(head.capacity() >= 100);
        head.clear();
        pool.reclaim(&mut head);
        // Unused for two trims: freed.
        pool.trim();
        pool.trim();
        assert_eq!(pool.free_count(), 0);
    }
}
