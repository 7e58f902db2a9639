//! [`PageBits`]: one atomic bit per page of a region, allocated once, so that marking and testing
//! pages on the event-reading path never allocates (see the fork notes on
//! [`PageSource`](super::PageSource)).

use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};

/// A fixed set of page indices `0..pages`, lock-free.
#[derive(Debug)]
pub(crate) struct PageBits {
    words: Box<[AtomicU64]>,
    pages: usize,
}

impl PageBits {
    /// All clear. Allocates `pages / 8` bytes (rounded up to a word): 32 KiB per GiB of 4 KiB
    /// pages.
    pub(crate) fn new(pages: usize) -> Self {
        Self {
            words: (0..pages.div_ceil(64)).map(|_| AtomicU64::new(0)).collect(),
            pages,
        }
    }

    /// Sets page `page`; returns whether it was set already. Out of range: `true`, nothing set.
    pub(crate) fn set(&self, page: usize) -> bool {
        if page >= self.pages {
            return true;
        }
        let bit = 1u64 << (page % 64);
        self.words[page / 64].fetch_or(bit, Ordering::AcqRel) & bit != 0
    }

    /// Whether page `page` is set (out of range: `false`).
    pub(crate) fn get(&self, page: usize) -> bool {
        page < self.pages && self.words[page / 64].load(Ordering::Acquire) & (1 << (page % 64)) != 0
    }

    /// Calls `f` with each maximal run of pages whose bit is `value`, in order.
    pub(crate) fn for_each_run(&self, value: bool, mut f: impl FnMut(Range<usize>)) {
        let mut start = None;
        for page in 0..self.pages {
            match (self.get(page) == value, start) {
                (true, None) => start = Some(page),
                (false, Some(s)) => {
                    f(s..page);
                    start = None;
                }
                _ => {}
            }
        }
        if let Some(s) = start {
            f(s..self.pages);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::PageBits;

    #[test]
    fn sets_tests_and_walks_runs_across_words() {
        let bits = PageBits::new(130);
        assert!(!bits.set(3));
        assert!(bits.set(3), "second set reports it was set");
        for page in 62..66 {
            bits.set(page);
        }
        bits.set(129);
        assert!(bits.set(130), "out of range is never settable");
        assert!(bits.get(64) && !bits.get(66) && !bits.get(500));
        let mut set = Vec::new();
        bits.for_each_run(true, |r| set.push(r));
        assert_eq!(set, [3..4, 62..66, 129..130]);
        let mut clear = Vec::new();
        bits.for_each_run(false, |r| clear.push(r));
        assert_eq!(clear, [0..3, 4..62, 66..129]);
    }
}
