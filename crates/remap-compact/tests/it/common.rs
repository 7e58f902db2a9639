//! The synthetic compactor, heap set-up, mutators and verification shared by the tests.

use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use remap::pattern::pattern_word;
use remap::Region;
use remap_compact::{Compactor, Filler, FromSpace, PageBuffer, SignalSafeCompactor};

pub(crate) const SEED: u64 = 0x5eed;

pub(crate) fn page() -> usize {
    uffd::page_size()
}

/// Words of a page that mutators write (word `m` by mutator `m`); the rest are checked as read.
pub(crate) const MUTATOR_WORDS: usize = 4;

/// To-space page `i` is a function of from-space pages `stride * i` and `stride * i + 1`: its
/// first half is a copy of the first half of the first (the `copy_from` memcpy path), its second
/// half mixes both word by word. With stride 2 the heap halves and every from-space page is free
/// before the to-space page at its index is filled (so buffers recycle); with stride 1 each page
/// reads its own index (no in-place recycling).
pub(crate) struct Synthetic {
    pub(crate) stride: usize,
    pub(crate) pages: usize,
    pub(crate) heap_pages: usize,
    pub(crate) page: usize,
    /// How often each to-space page was filled.
    pub(crate) fills: Box<[AtomicU32]>,
    /// Fills by the compaction thread of this page block until `released` (forcing races).
    pub(crate) hold: Option<Hold>,
    /// Fill of this page panics.
    pub(crate) panic_on: Option<usize>,
}

/// A page whose fill by `who` blocks until `release` is set.
pub(crate) struct Hold {
    pub(crate) page: usize,
    pub(crate) who: Filler,
    pub(crate) entered: AtomicBool,
    pub(crate) release: AtomicBool,
}

impl Synthetic {
    pub(crate) fn new(stride: usize, heap_pages: usize) -> Self {
        let pages = if stride == 1 {
            heap_pages - 1
        } else {
            heap_pages / stride
        };
        Synthetic {
            stride,
            pages,
            heap_pages,
            page: page(),
            fills: (0..pages).map(|_| AtomicU32::new(0)).collect(),
            hold: None,
            panic_on: None,
        }
    }

    /// The expected word `w` of to-space page `i`, given from-space word function `from`.
    pub(crate) fn expected(&self, i: usize, w: usize, from: impl Fn(usize, usize) -> u64) -> u64 {
        let a = self.stride * i;
        if w < self.page / 16 {
            from(a, w)
        } else if a + 1 < self.heap_pages {
            from(a, w).rotate_left(7) ^ from(a + 1, w).wrapping_mul(3)
        } else {
            from(a, w).rotate_left(7)
        }
    }

    pub(crate) fn assert_each_filled_once(&self) {
        for (i, n) in self.fills.iter().enumerate() {
            assert_eq!(
                n.load(Ordering::Relaxed),
                1,
                "to-space page {i} filled {n:?} times"
            );
        }
    }
}

impl Compactor for Synthetic {
    fn pages(&self) -> usize {
        self.pages
    }

    fn reads(&self, page: usize) -> Range<usize> {
        let a = self.stride * page;
        a..(a + 2).min(self.heap_pages)
    }

    fn fill(&self, page: usize, src: &FromSpace<'_>, dst: &mut PageBuffer<'_>) {
        assert_eq!(dst.page(), page);
        self.fills[page].fetch_add(1, Ordering::Relaxed);
        if self.panic_on == Some(page) {
            panic!("synthetic fill of page {page} panics on purpose");
        }
        if let Some(hold) = &self.hold {
            if hold.page == page && dst.filler() == hold.who {
                hold.entered.store(true, Ordering::SeqCst);
                while !hold.release.load(Ordering::SeqCst) {
                    std::thread::sleep(Duration::from_micros(100));
                }
            }
        }
        let size = self.page;
        let a = self.stride * page;
        let half = size / 2;
        dst.copy_from(0, src, a * size, half);
        let has_b = src.pages().contains(&(a + 1));
        for off in (half..size).step_by(8) {
            let x = src.read_u64(a * size + off).rotate_left(7);
            let v = if has_b {
                x ^ src.read_u64((a + 1) * size + off).wrapping_mul(3)
            } else {
                x
            };
            dst.write_u64(off, v);
        }
    }
}

// SAFETY: `reads` is arithmetic; `fill` uses atomics, `nanosleep` (async-signal-safe) and the
// views' bounds-checked copies; it panics only on purpose (`panic_on`, the panic test, where
// aborting is the point) or on a broken engine (`assert_eq!`), which the tests want to see.
unsafe impl SignalSafeCompactor for Synthetic {}

/// A heap of `pages` pages filled with the pattern (page `j` as logical page `j`).
pub(crate) fn heap(pages: usize, dontfork: bool) -> Region {
    let region = Region::builder(pages * page())
        .dontfork(dontfork)
        .populate(true)
        .build()
        .unwrap();
    remap::pattern::fill(&region, SEED);
    region
}

pub(crate) fn pattern(j: usize, w: usize) -> u64 {
    pattern_word(SEED, j as u64, w as u64)
}

/// Checks every compacted page against the plan (from the pattern), except the mutator words
/// recorded in `written`, and that the pages past the plan read as zero.
pub(crate) fn verify(heap: &Region, plan: &Synthetic, written: &[Written]) {
    let size = page();
    let last: std::collections::HashMap<(usize, usize), u64> = written
        .iter()
        .map(|x| ((x.page, x.word), x.value))
        .collect();
    for i in 0..plan.pages {
        for w in 0..size / 8 {
            let expected = plan.expected(i, w, pattern);
            let found = heap.read_u64(i * size + w * 8);
            let want = last.get(&(i, w)).copied().unwrap_or(expected);
            assert_eq!(found, want, "to-space page {i} word {w}");
        }
    }
    for i in plan.pages..plan.heap_pages {
        assert_eq!(heap.read_u64(i * size), 0, "page {i} past the plan");
    }
}

/// A word a mutator wrote.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Written {
    pub(crate) page: usize,
    pub(crate) word: usize,
    pub(crate) value: u64,
}

/// xorshift64*.
pub(crate) struct Rng(pub(crate) u64);

impl Rng {
    pub(crate) fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub(crate) fn below(&mut self, n: usize) -> usize {
        #[allow(clippy::cast_possible_truncation)]
        let r = (self.next() % n as u64) as usize;
        r
    }
}

/// Mutator `m`: reads random compacted pages (checking a word past the mutator words against
/// the plan) and writes its own word `m` of some; returns what it wrote. Stops after `touches`
/// accesses or when `stop` is set (and at least `min` accesses were made).
pub(crate) fn mutate(
    heap: &Region,
    plan: &Synthetic,
    m: usize,
    touches: usize,
    stop: &AtomicBool,
) -> Vec<Written> {
    let size = page();
    let mut rng = Rng(0x9e37_79b9 ^ ((m as u64 + 1) * 0x1234_5678_9abc_def1));
    let mut written = Vec::new();
    for n in 0..touches {
        if n > 16 && stop.load(Ordering::Relaxed) {
            break;
        }
        let i = rng.below(plan.pages);
        let w = MUTATOR_WORDS + rng.below(size / 8 - MUTATOR_WORDS);
        // Mutators write only words below MUTATOR_WORDS; the rest keep the compacted contents.
        let found = heap.read_u64(i * size + w * 8);
        let expected = plan.expected(i, w, pattern);
        assert_eq!(found, expected, "mutator {m} read page {i} word {w}");
        if rng.below(2) == 0 {
            let value = rng.next() | 1;
            let word = m % MUTATOR_WORDS;
            heap.write_u64(i * size + word * 8, value);
            written.push(Written {
                page: i,
                word,
                value,
            });
        }
    }
    written
}

/// Resident anonymous memory of this process, in bytes (`/proc/self/smaps_rollup`).
pub(crate) fn anon_rss() -> usize {
    let text = std::fs::read_to_string("/proc/self/smaps_rollup").unwrap();
    let kb: usize = text
        .lines()
        .find(|l| l.starts_with("Anonymous:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|n| n.parse().ok())
        .unwrap();
    kb * 1024
}
