//! One up/down bit per backend, for every strategy to skip down backends.
//!
//! Owns nothing but the bits and a running count of the ones set; it decides
//! nothing (that is `breaker`'s job) and does no I/O. Read on every pick by
//! the balancer's `admit` predicate, written only by `Breaker`.

use crate::upstream::BackendId;

/// Up/down state of `len` backends, indexed by [`BackendId`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthBitmap {
    /// Bit `i % 64` of word `i / 64` is backend `i`; bits past `len` stay 0 so
    /// whole-word counting needs no masking.
    words: Vec<u64>,
    len: usize,
    /// Kept in step with `words` so `all_down` is a compare, not a scan: the
    /// caller asks it on every request to decide on panic mode.
    up: usize,
}

impl HealthBitmap {
    /// `n` backends, all up: a backend is innocent until it fails.
    pub fn new(n: usize) -> HealthBitmap {
        let mut words = vec![u64::MAX; n.div_ceil(64)];
        let tail = n % 64;
        if tail != 0 {
            words[n / 64] = (1u64 << tail) - 1;
        }
        HealthBitmap {
            words,
            len: n,
            up: n,
        }
    }

    /// `false` for an id past `len` (a backend that does not exist is not up).
    #[inline]
    pub fn is_up(&self, id: BackendId) -> bool {
        self.words
            .get(id.0 >> 6)
            .is_some_and(|w| (w >> (id.0 & 63)) & 1 != 0)
    }

    /// Panics if `id` is past `len`: that is a caller bug, and a stray bit
    /// would corrupt `up_count`.
    pub fn set(&mut self, id: BackendId, up: bool) {
        assert!(
            id.0 < self.len,
            "backend {} out of range ({})",
            id.0,
            self.len
        );
        let word = &mut self.words[id.0 >> 6];
        let mask = 1u64 << (id.0 & 63);
        let was = *word & mask != 0;
        if was == up {
            return;
        }
        if up {
            *word |= mask;
            self.up += 1;
        } else {
            *word &= !mask;
            self.up -= 1;
        }
    }

    /// Room for `n` backends; the new ones start up (a reload appends).
    pub fn grow(&mut self, n: usize) {
        if n <= self.len {
            return;
        }
        self.words.resize(n.div_ceil(64), 0);
        let old = self.len;
        self.len = n;
        for i in old..n {
            self.words[i >> 6] |= 1u64 << (i & 63);
        }
        self.up += n - old;
    }

    pub fn up_count(&self) -> usize {
        self.up
    }

    /// True when no backend is up, including when there are no backends.
    /// The caller uses it for panic mode (see [`crate::health`]).
    pub fn all_down(&self) -> bool {
        self.up == 0
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count_by_scan(b: &HealthBitmap) -> usize {
        (0..b.len()).filter(|&i| b.is_up(BackendId(i))).count()
    }

    #[test]
    fn starts_all_up_for_every_size() {
        for n in [0, 1, 63, 64, 65, 128, 129, 1000] {
            let b = HealthBitmap::new(n);
            assert_eq!(b.len(), n);
            assert_eq!(b.up_count(), n, "n={n}");
            assert_eq!(count_by_scan(&b), n, "n={n}");
            assert_eq!(b.all_down(), n == 0, "n={n}");
            assert!(!b.is_up(BackendId(n)), "no bit past len, n={n}");
        }
    }

    #[test]
    fn set_flips_one_bit_and_keeps_the_count() {
        let mut b = HealthBitmap::new(130);
        for i in [0, 63, 64, 127, 128, 129] {
            b.set(BackendId(i), false);
            assert!(!b.is_up(BackendId(i)));
        }
        assert_eq!(b.up_count(), 124);
        assert_eq!(count_by_scan(&b), 124);
        assert!(b.is_up(BackendId(1)) && b.is_up(BackendId(65)));
        // Setting a bit to what it already is must not move the count.
        b.set(BackendId(0), false);
        b.set(BackendId(1), true);
        assert_eq!(b.up_count(), 124);
        b.set(BackendId(64), true);
        assert!(b.is_up(BackendId(64)));
        assert_eq!(b.up_count(), 125);
    }

    #[test]
    fn all_down_when_the_last_one_goes() {
        let mut b = HealthBitmap::new(70);
        for i in 0..70 {
            assert!(!b.all_down());
            b.set(BackendId(i), false);
        }
        assert!(b.all_down());
        assert_eq!(b.up_count(), 0);
        b.set(BackendId(69), true);
        assert!(!b.all_down());
        assert_eq!(b.up_count(), 1);
    }

    #[test]
    fn out_of_range_reads_are_down() {
        let b = HealthBitmap::new(3);
        assert!(!b.is_up(BackendId(3)));
        assert!(!b.is_up(BackendId(64)));
        assert!(!b.is_up(BackendId(usize::MAX)));
    }

    #[test]
    #[should_panic(expected = "out of range")]
    fn out_of_range_write_panics() {
        HealthBitmap::new(64).set(BackendId(64), false);
    }
}
