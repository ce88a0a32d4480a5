//! A fixed-capacity byte buffer with a read and a write end: bytes are read
//! from a socket into the free tail and consumed from the front.
//!
//! Capacity is fixed per connection (it only grows once, for a large request
//! head), which is what bounds memory per connection whatever the body size.

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

    pub fn data(&self) -> &[u8] {
        &self.data[self.start..self.end]
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

    /// No room left even after moving the data to the front.
    pub fn is_full(&self) -> bool {
        self.len() == self.data.len()
    }

    pub fn consume(&mut self, n: usize) {
        debug_assert!(n <= self.len());
        self.start += n;
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
}
