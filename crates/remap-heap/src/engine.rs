//! The heap on the `remap-compact` engine: the plan and fill as a [`Compactor`], and the
//! [`Backend`] that runs a concurrent cycle with handler threads or in SIGBUS mode.
//!
//! `unsafe` here is one `unsafe impl` of the engine's [`SignalSafeCompactor`] marker (the
//! promise that the fill is async-signal-safe); see its SAFETY comment.
#![allow(unsafe_code)]

use std::ops::Range;
use std::sync::Arc;

use remap_compact::{
    CompactError, Compactor, Cycle, CycleStats, FromSpace, PageBuffer, SignalSafeCompactor,
};

use crate::collector::Backend;
use crate::fill::{fill_page, PageSink};
use crate::heap::Heap;
use crate::mark::SourceWords;
use crate::plan::Plan;

/// From-space as heap words (from-space offsets are the heap offsets of before the flip).
struct FromWords<'a, 'b>(&'a FromSpace<'b>);

impl SourceWords for FromWords<'_, '_> {
    #[inline]
    fn read_word(&self, word: usize) -> u64 {
        self.0.read_u64(word * 8)
    }

    #[inline]
    fn prefetch_word(&self, word: usize) {
        self.0.prefetch(word * 8);
    }
}

/// The engine's page buffer as a sink of words, with runs copied by the engine's memcpy.
struct BufferWords<'a, 'b>(&'a mut PageBuffer<'b>);

impl<'s, 'f> PageSink<FromWords<'s, 'f>> for BufferWords<'_, '_> {
    #[inline]
    fn write_word(&mut self, i: usize, v: u64) {
        self.0.write_u64(i * 8, v);
    }

    #[inline]
    fn copy_words(&mut self, i: usize, src: &FromWords<'s, 'f>, src_word: usize, n: usize) {
        self.0.copy_from(i * 8, src.0, src_word * 8, n * 8);
    }

    #[inline]
    fn zero_words(&mut self, i: usize, n: usize) {
        self.0.fill(i * 8, n * 8, 0);
    }
}

/// A cycle's plan as the engine's [`Compactor`].
#[derive(Debug)]
pub struct HeapCompactor {
    plan: Arc<Plan>,
}

impl HeapCompactor {
    /// The compactor of `plan`.
    pub fn new(plan: Arc<Plan>) -> Self {
        HeapCompactor { plan }
    }
}

impl Compactor for HeapCompactor {
    fn pages(&self) -> usize {
        self.plan.pages()
    }

    fn reads(&self, page: usize) -> Range<usize> {
        self.plan.reads(page)
    }

    fn fill(&self, page: usize, src: &FromSpace<'_>, dst: &mut PageBuffer<'_>) {
        fill_page(&self.plan, page, &FromWords(src), &mut BufferWords(dst));
    }
}

// SAFETY: `SignalSafeCompactor` requires `reads` and `fill` to neither allocate, lock, panic nor
// call anything that is not async-signal-safe. Both only read the plan (bitmaps, prefix sums and
// the shape table, built before the flip and never written during the cycle), use one atomic
// swap (the corruption hook), and call the engine's `FromSpace`/`PageBuffer` accessors, which do
// none of those things for in-bounds accesses. Every access is in bounds: `reads(page)` covers
// the header of the first object landing on the page through the last live word landing on it,
// which are all the from-space words `fill_page` reads (the fill reads each object's header and
// words only, and reaches objects through the begin bitmap, never through heap references);
// destinations are inside `0..page_words`. Forwarding reads the plan's forwarding table, a
// `remap::Region` (relaxed atomic loads, no allocation, no lock; it panics only out of bounds):
// the fill forwards only references `t < live.len()`, whose chunk `t / 64` is below the chunk
// count the table was sized for, and the plan (so the table's mapping) outlives every fill
// (the cycle holds it in an `Arc` until its SIGBUS registration has waited out every active
// handler). Prefetches (of from-space lines and table entries) are hints that never fault and
// ignore addresses out of range. The fill never panics: where an invariant of the plan
// (live words follow while `d1` is not reached, which `Plan::new` establishes) could fail, it
// calls `abort`, which is async-signal-safe.
unsafe impl SignalSafeCompactor for HeapCompactor {}

/// How faults are served in an engine cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FaultMode {
    /// The engine's handler threads.
    Threads,
    /// The faulting mutator fills and publishes the page in its SIGBUS handler.
    Sigbus,
}

/// A concurrent cycle on the heap's [`remap_compact::Engine`].
#[derive(Debug, Clone, Copy)]
pub struct EngineBackend {
    /// How mutator faults are served.
    pub faults: FaultMode,
}

impl Backend for EngineBackend {
    type Stats = CycleStats;
    type Error = CompactError;
    type Running<'h> = Cycle<'h, HeapCompactor>;

    fn flip<'h>(
        &'h mut self,
        heap: &'h Heap,
        plan: Arc<Plan>,
    ) -> Result<Self::Running<'h>, CompactError> {
        let engine = heap
            .engine()
            .expect("an EngineBackend cycle needs a heap built on an Engine");
        let compactor = Arc::new(HeapCompactor::new(plan));
        match self.faults {
            FaultMode::Threads => engine.flip(compactor),
            FaultMode::Sigbus => engine.flip_sigbus(compactor),
        }
    }

    fn compact(running: Self::Running<'_>) -> Result<CycleStats, CompactError> {
        running.compact()
    }

    fn fault_stalls(stats: &CycleStats) -> Vec<(u32, std::time::Instant, std::time::Duration)> {
        stats
            .fault_spans
            .iter()
            .filter_map(|f| Some((f.thread?, f.start, f.len)))
            .collect()
    }
}
