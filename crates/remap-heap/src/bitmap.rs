//! A plain bit per heap word, with the searches the marker and the compaction plan need.

/// One bit per heap word.
#[derive(Debug, Clone)]
pub struct Bitmap {
    words: Vec<u64>,
    bits: usize,
}

impl Bitmap {
    /// A bitmap of `bits` zero bits.
    pub fn new(bits: usize) -> Self {
        Bitmap {
            words: vec![0; bits.div_ceil(64)],
            bits,
        }
    }

    /// The number of bits.
    pub fn len(&self) -> usize {
        self.bits
    }

    /// Whether the bitmap has no bits.
    pub fn is_empty(&self) -> bool {
        self.bits == 0
    }

    /// Bit `i`.
    #[inline]
    pub fn get(&self, i: usize) -> bool {
        self.words[i / 64] >> (i % 64) & 1 == 1
    }

    /// Sets bit `i`.
    #[inline]
    pub fn set(&mut self, i: usize) {
        self.words[i / 64] |= 1 << (i % 64);
    }

    /// Sets bits `start..end`.
    pub fn set_range(&mut self, start: usize, end: usize) {
        let mut i = start;
        while i < end {
            let bit = i % 64;
            let n = (64 - bit).min(end - i);
            let mask = if n == 64 {
                u64::MAX
            } else {
                ((1u64 << n) - 1) << bit
            };
            self.words[i / 64] |= mask;
            i += n;
        }
    }

    /// The 64-bit word holding bits `64 * w .. 64 * w + 64`.
    #[inline]
    pub fn word(&self, w: usize) -> u64 {
        self.words[w]
    }

    /// The number of 64-bit words.
    pub fn word_count(&self) -> usize {
        self.words.len()
    }

    /// The highest set bit at or below `i`, if any.
    pub fn prev_set(&self, i: usize) -> Option<usize> {
        let mut w = i / 64;
        let bit = i % 64;
        let mut word = self.words[w] & (u64::MAX >> (63 - bit));
        loop {
            if word != 0 {
                return Some(w * 64 + 63 - word.leading_zeros() as usize);
            }
            if w == 0 {
                return None;
            }
            w -= 1;
            word = self.words[w];
        }
    }

    /// The lowest set bit at or above `i`, if any.
    pub fn next_set(&self, i: usize) -> Option<usize> {
        if i >= self.bits {
            return None;
        }
        let mut w = i / 64;
        let mut word = self.words[w] & (u64::MAX << (i % 64));
        loop {
            if word != 0 {
                let found = w * 64 + word.trailing_zeros() as usize;
                return (found < self.bits).then_some(found);
            }
            w += 1;
            if w == self.words.len() {
                return None;
            }
            word = self.words[w];
        }
    }

    /// The number of set bits.
    pub fn count_ones(&self) -> usize {
        self.words.iter().map(|w| w.count_ones() as usize).sum()
    }
}

/// The position of the `n`-th (0-based) set bit of `word`; `n < word.count_ones()`.
#[inline]
pub(crate) fn select_bit(mut word: u64, n: u32) -> u32 {
    for _ in 0..n {
        word &= word - 1;
    }
    word.trailing_zeros()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_and_searches() {
        let mut b = Bitmap::new(300);
        b.set_range(10, 140);
        b.set(200);
        assert_eq!(b.count_ones(), 131);
        assert!(b.get(10) && b.get(139) && !b.get(140) && !b.get(9));
        assert_eq!(b.prev_set(199), Some(139));
        assert_eq!(b.prev_set(9), None);
        assert_eq!(b.next_set(140), Some(200));
        assert_eq!(b.next_set(201), None);
        assert_eq!(b.prev_set(299), Some(200));
    }

    #[test]
    fn select_finds_the_nth_bit() {
        assert_eq!(select_bit(0b1011_0000, 0), 4);
        assert_eq!(select_bit(0b1011_0000, 1), 5);
        assert_eq!(select_bit(0b1011_0000, 2), 7);
        assert_eq!(select_bit(u64::MAX, 63), 63);
    }
}
