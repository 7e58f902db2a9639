//! The run's one source of choices: a small seeded generator per thread, derived from the master
//! seed, so a seed names every choice and delay a thread makes (the scheduler stays free).

/// SplitMix64: tiny, fast, and good enough to pick ranges and delays.
#[derive(Debug, Clone)]
pub(crate) struct Rng {
    state: u64,
}

/// Mixes `x` into a well-distributed 64-bit value (the SplitMix64 finaliser).
pub(crate) fn mix(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

impl Rng {
    /// The generator of stream `stream` (one per thread) under `seed`.
    pub(crate) fn new(seed: u64, stream: u64) -> Rng {
        Rng {
            state: mix(seed ^ mix(stream.wrapping_add(0x9e37_79b9_7f4a_7c15))),
        }
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        mix(self.state)
    }

    /// Uniform in `0..n` (`n > 0`).
    pub(crate) fn below(&mut self, n: usize) -> usize {
        debug_assert!(n > 0);
        usize::try_from(self.next_u64() % n as u64).unwrap_or(0)
    }

    /// Uniform in `lo..=hi`.
    pub(crate) fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + self.below(hi - lo + 1)
    }

    /// True with probability `1 / n`.
    pub(crate) fn one_in(&mut self, n: usize) -> bool {
        self.below(n) == 0
    }

    /// A batch length in `1..=max`, log-uniform, so single pages and long runs are both common.
    pub(crate) fn batch_len(&mut self, max: usize) -> usize {
        let bits = usize::BITS - max.leading_zeros();
        let top = 1usize << self.below(bits as usize);
        self.range(1, top.min(max))
    }
}

#[cfg(test)]
mod tests {
    use super::Rng;

    #[test]
    fn same_seed_same_stream_same_choices() {
        let mut a = Rng::new(7, 3);
        let mut b = Rng::new(7, 3);
        let mut c = Rng::new(7, 4);
        let xs: Vec<u64> = (0..8).map(|_| a.next_u64()).collect();
        let ys: Vec<u64> = (0..8).map(|_| b.next_u64()).collect();
        let zs: Vec<u64> = (0..8).map(|_| c.next_u64()).collect();
        assert_eq!(xs, ys);
        assert_ne!(xs, zs);
    }

    #[test]
    fn batch_lengths_cover_one_to_max() {
        let mut rng = Rng::new(1, 1);
        let lens: Vec<usize> = (0..20_000).map(|_| rng.batch_len(512)).collect();
        assert!(lens.iter().all(|&n| (1..=512).contains(&n)));
        assert!(lens.contains(&1));
        assert!(lens.contains(&512));
    }
}
