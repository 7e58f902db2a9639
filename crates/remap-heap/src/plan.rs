//! The sliding-compaction plan: every live object's new address, without forwarding pointers.
//!
//! Live objects slide towards the start of the heap in address order, so the new address of a
//! live word is [`RESERVED_WORDS`] plus the number of live words before it. The plan keeps, per
//! chunk of 64 heap words (one word of the live bitmap), the number of live words before the
//! chunk (a prefix sum of the per-chunk live counts); a popcount of the chunk's bitmap word below
//! the word finishes the count. Forwarding is two memory reads and a popcount, from tables in
//! ordinary memory the compactor never moves, and it allocates nothing: the fill can run in a
//! signal handler.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use remap::region::HUGE_PAGE_SIZE;
use remap::{Region, Thp};

use crate::bitmap::{select_bit, Bitmap};
use crate::mark::Marks;
use crate::object::RESERVED_WORDS;
use crate::shape::ShapeTable;

/// A deliberate corruption for testing that verification catches it (the hidden
/// `--inject-corruption` of `remap compact`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Corruption {
    /// Flip one bit of one data word of one object in the compacted heap.
    WrongByte,
    /// Rewrite one reference to point one word past its target (into the middle of an object).
    DanglingRef,
}

/// The forwarding table: per chunk of 64 heap words, its live bits and the live words before it
/// (the prefix sum), side by side in 16 bytes, so that forwarding a reference costs one cache
/// line, not one in the live bitmap and another in a separate prefix array.
///
/// References point anywhere in the heap, so on a heap larger than the cache every forwarding
/// misses, and on a VM a miss into a table of 4 KiB pages is also a TLB miss with a
/// two-dimensional page walk (the table is 32 MiB for a 1 GiB heap, 8192 pages). The table
/// therefore lives in its own mapping advised `MADV_HUGEPAGE` and aligned to 2 MiB (16 TLB
/// entries for that heap). It is written once while the plan is built, then only read.
#[derive(Debug)]
struct ForwardTable {
    region: Region,
    chunks: usize,
}

/// Bytes per chunk entry: the live bits, then the live words before the chunk.
const CHUNK_ENTRY: usize = 16;

impl ForwardTable {
    fn new(chunks: usize) -> ForwardTable {
        let page = rustix::param::page_size();
        let len = (chunks * CHUNK_ENTRY).div_ceil(page).max(1) * page;
        let build = |thp| {
            Region::builder(len)
                .huge_aligned(len >= HUGE_PAGE_SIZE)
                .thp(thp)
                .build()
        };
        // Without THP support `MADV_HUGEPAGE` fails; ordinary pages are only slower.
        let region = build(Thp::Huge)
            .or_else(|_| build(Thp::Default))
            .unwrap_or_else(|e| panic!("cannot map the forwarding table ({len} bytes): {e}"));
        ForwardTable { region, chunks }
    }

    #[inline]
    fn set(&self, chunk: usize, bits: u64, before: u64) {
        self.region.write_u64(chunk * CHUNK_ENTRY, bits);
        self.region.write_u64(chunk * CHUNK_ENTRY + 8, before);
    }

    #[inline]
    fn bits(&self, chunk: usize) -> u64 {
        self.region.read_u64(chunk * CHUNK_ENTRY)
    }

    #[inline]
    fn before(&self, chunk: usize) -> usize {
        self.region.read_u64(chunk * CHUNK_ENTRY + 8) as usize
    }

    #[inline]
    fn prefetch(&self, chunk: usize) {
        if chunk < self.chunks {
            remap_compact::prefetch(self.region.as_ptr().wrapping_add(chunk * CHUNK_ENTRY));
        }
    }
}

/// The compaction plan of one cycle: built from the marks in the pause, then read-only.
#[derive(Debug)]
pub struct Plan {
    pub(crate) live: Bitmap,
    pub(crate) begin: Bitmap,
    /// Per chunk of 64 words: its live bits and the live words before it.
    chunks: ForwardTable,
    /// Per to-space page: the from-space word of the first live word landing on it (one more
    /// entry, the bitmap length, as a sentinel). Computed once, in one pass, so that neither the
    /// fill nor `reads` searches the prefix sums.
    page_start: Vec<usize>,
    /// Per to-space page: the first word of the object holding that live word.
    page_first_object: Vec<usize>,
    live_words: usize,
    objects: usize,
    page_words: usize,
    pub(crate) shapes: Arc<ShapeTable>,
    pub(crate) corruption: Option<Corruption>,
    pub(crate) corruption_done: AtomicBool,
}

impl Plan {
    /// Builds the plan for `marks` with to-space pages of `page_size` bytes.
    ///
    /// # Panics
    ///
    /// If `page_size` is not a positive multiple of 8, or the forwarding table cannot be mapped
    /// (out of memory, as an allocation failure would abort).
    pub fn new(marks: Marks, page_size: usize, shapes: Arc<ShapeTable>) -> Plan {
        assert!(page_size % 8 == 0 && page_size > 0);
        let chunks = marks.live.word_count();
        let table = ForwardTable::new(chunks);
        let mut before: usize = 0;
        for c in 0..chunks {
            let bits = marks.live.word(c);
            table.set(c, bits, before as u64);
            before += bits.count_ones() as usize;
        }
        let page_words = page_size / 8;
        let live_end = RESERVED_WORDS + marks.live_words;
        let pages = live_end.div_ceil(page_words);
        let mut page_start = Vec::with_capacity(pages + 1);
        let mut page_first_object = Vec::with_capacity(pages);
        let mut c = 0;
        for p in 0..pages {
            let d0 = (p * page_words).max(RESERVED_WORDS);
            if d0 >= live_end || chunks == 0 {
                page_start.push(marks.live.len());
                page_first_object.push(marks.live.len());
                continue;
            }
            let k = d0 - RESERVED_WORDS;
            while c + 1 < chunks && table.before(c + 1) <= k {
                c += 1;
            }
            let n = u32::try_from(k - table.before(c)).expect("within a 64-word chunk");
            let s = c * 64 + select_bit(marks.live.word(c), n) as usize;
            page_start.push(s);
            page_first_object.push(
                marks
                    .begin
                    .prev_set(s)
                    .expect("every live word belongs to a live object"),
            );
        }
        page_start.push(marks.live.len());
        Plan {
            live: marks.live,
            begin: marks.begin,
            chunks: table,
            page_start,
            page_first_object,
            live_words: marks.live_words,
            objects: marks.objects,
            page_words,
            shapes,
            corruption: None,
            corruption_done: AtomicBool::new(false),
        }
    }

    /// Arms a [`Corruption`] at the first page filled at or after `page` that has a candidate.
    pub fn with_corruption(mut self, corruption: Option<Corruption>) -> Plan {
        self.corruption = corruption;
        self
    }

    /// Whether the armed corruption has been applied.
    pub fn corruption_applied(&self) -> bool {
        self.corruption_done.load(Ordering::Relaxed)
    }

    /// Claims the armed corruption of kind `kind` (once per plan).
    #[inline]
    pub(crate) fn take_corruption(&self, kind: Corruption) -> bool {
        self.corruption == Some(kind) && !self.corruption_done.swap(true, Ordering::Relaxed)
    }

    /// Live words, headers included.
    pub fn live_words(&self) -> usize {
        self.live_words
    }

    /// Live objects.
    pub fn objects(&self) -> usize {
        self.objects
    }

    /// Words per page.
    pub fn page_words(&self) -> usize {
        self.page_words
    }

    /// One past the last word of the compacted heap: the allocation top after the cycle.
    pub fn live_end(&self) -> usize {
        RESERVED_WORDS + self.live_words
    }

    /// The number of to-space pages the compacted heap occupies (every page the fill writes).
    pub fn pages(&self) -> usize {
        self.live_end().div_ceil(self.page_words)
    }

    /// Whether heap word `w` is the first word of a live object.
    #[inline]
    pub fn is_live_object(&self, w: usize) -> bool {
        w < self.begin.len() && self.begin.get(w)
    }

    /// The new word index of live heap word `w` (the count of live words before it, after the
    /// reserved words). Meaningless for a word that is not live.
    #[inline]
    pub fn forward(&self, w: usize) -> usize {
        let chunk = w / 64;
        let below = self.chunks.bits(chunk) & ((1u64 << (w % 64)) - 1);
        RESERVED_WORDS + self.chunks.before(chunk) + below.count_ones() as usize
    }

    /// A hint that [`forward`](Self::forward)`(w)` comes soon: starts loading the cache line of
    /// `w`'s chunk. References point anywhere in the heap, so on a heap larger than the cache
    /// each forwarding misses; prefetched a few references ahead, the misses overlap.
    #[inline]
    pub(crate) fn prefetch_forward(&self, w: usize) {
        self.chunks.prefetch(w / 64);
    }

    /// The from-space word of the first live word landing on to-space page `page`.
    #[inline]
    pub(crate) fn live_start_of_page(&self, page: usize) -> usize {
        self.page_start[page]
    }

    /// The from-space word one past the last live word landing on to-space page `page` (the
    /// first live word of the next page, or the end of the heap).
    #[inline]
    pub(crate) fn live_end_of_page(&self, page: usize) -> usize {
        self.page_start[page + 1]
    }

    /// The to-space word range `d0..d1` of page `page` that live data lands on (empty for a
    /// page past the end), clipped to the reserved words.
    #[inline]
    pub(crate) fn live_span(&self, page: usize) -> (usize, usize) {
        let start = page * self.page_words;
        let d0 = start.max(RESERVED_WORDS);
        let d1 = (start + self.page_words).min(self.live_end());
        (d0, d1)
    }

    /// The first live object (its from-space word) with a word landing on page `page` (which
    /// has live words).
    #[inline]
    pub(crate) fn first_object_of_page(&self, page: usize) -> usize {
        self.page_first_object[page]
    }

    /// The from-space pages that to-space page `page`'s fill reads: from the page holding the
    /// header of the first object landing on it to the page of its last word.
    pub fn reads(&self, page: usize) -> std::ops::Range<usize> {
        let (d0, d1) = self.live_span(page);
        if d0 >= d1 {
            return 0..0;
        }
        let first = self.page_first_object[page];
        // The last live word landing on the page is the last one before the next page's first.
        let last = self
            .live
            .prev_set(self.page_start[page + 1] - 1)
            .expect("the page has live words");
        first / self.page_words..last / self.page_words + 1
    }
}
