//! [`Holes`]: the pages of a served region that were unmapped or remapped away, re-reserved so
//! the region's own unmap never hits memory someone else mapped there, and the region handed
//! back whole or cut short before a hole that could not be re-reserved (see the server's
//! [Shutdown](super#shutdown) docs).

use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};

use super::page_bits::PageBits;
use super::ServerError;
use crate::region::{self, Region};

/// Gone and lost pages of one region, as bitmaps allocated up front: marking never allocates
/// (see the fork notes on [`PageSource`](super::PageSource)).
#[derive(Debug)]
pub(crate) struct Holes {
    /// Pages unmapped or remapped away: faults there are dropped.
    gone: PageBits,
    any_gone: AtomicBool,
    /// Gone pages that could not be re-reserved (someone mapped there first).
    lost: PageBits,
}

impl Holes {
    pub(crate) fn new(pages: usize) -> Self {
        Self {
            gone: PageBits::new(pages),
            any_gone: AtomicBool::new(false),
            lost: PageBits::new(pages),
        }
    }

    /// Whether the page at `offset` of `region` is gone.
    pub(crate) fn is_gone(&self, region: &Region, offset: usize) -> bool {
        self.any_gone.load(Ordering::Acquire) && self.gone.get(offset / region.page_size())
    }

    /// Marks the part of `start..end` (addresses) inside `region` as gone, and re-reserves it.
    /// Returns how many re-reservations failed (those pages are marked lost).
    pub(crate) fn mark_gone(&self, region: &Region, start: usize, end: usize) -> u64 {
        let page = region.page_size();
        let (lo, hi) = (start.max(region.addr()), end.min(region.range().end));
        if lo >= hi {
            return 0;
        }
        let base = region.addr();
        self.any_gone.store(true, Ordering::Release);
        // Re-reserve only the pages not gone already: an `mremap` reports its old range twice
        // (UNMAP and REMAP), and the second report must not mistake our own reservation for a
        // foreign one. Each page is marked before its run is re-reserved.
        let mut failed = 0;
        let mut run: Option<Range<usize>> = None;
        for p in (lo - base) / page..(hi - base).div_ceil(page) {
            if self.gone.set(p) {
                continue;
            }
            match &mut run {
                Some(r) if r.end == p => r.end = p + 1,
                _ => {
                    if let Some(done) = run.replace(p..p + 1) {
                        failed += self.rereserve(region, done);
                    }
                }
            }
        }
        if let Some(done) = run {
            failed += self.rereserve(region, done);
        }
        failed
    }

    /// Re-reserves the gone pages `pages` (indices); marks them lost when someone else mapped
    /// memory there first.
    fn rereserve(&self, region: &Region, pages: Range<usize>) -> u64 {
        let page = region.page_size();
        let (off, len) = (pages.start * page, pages.len() * page);
        if region::rereserve(region, off, len).is_err() {
            for p in pages {
                self.lost.set(p);
            }
            return 1;
        }
        0
    }

    /// Calls `f` with each run of pages (indices) that is not gone: what is left to unregister.
    pub(crate) fn for_each_present_run(&self, f: impl FnMut(Range<usize>)) {
        self.gone.for_each_run(false, f);
    }

    /// Hands `region` back: whole, or, when part of it was unmapped and someone else mapped
    /// memory there that we could not re-reserve, cut short before that hole (the rest is
    /// leaked, never unmapped).
    pub(crate) fn into_region(self, region: Region) -> Result<Region, ServerError> {
        let page = region.page_size();
        let mut keep = region.len();
        self.lost.for_each_run(true, |pages| {
            // The foreign mapping may be gone by now: try once more.
            let (off, len) = (pages.start * page, pages.len() * page);
            if region::rereserve(&region, off, len).is_err() {
                keep = keep.min(off);
            }
        });
        if keep == region.len() {
            return Ok(region);
        }
        let addr = region.addr();
        region::truncate_leaking(region, keep).ok_or(ServerError::RegionLost { addr })
    }
}
