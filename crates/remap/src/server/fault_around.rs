//! Fault-around: resolving a run of pages per fault in one ioctl (see
//! [`PageSource`'s docs](super::PageSource#fault-around)).
//!
//! One entry point, [`resolve`], asks the source for the fault's resolution (a run when the
//! source has a window) and carries it out: a single page through [`apply`], a run here. It
//! is shared by the handler threads, the tokio server and the SIGBUS handler, so like `apply`
//! it stays async-signal-safe: no allocation, lock, log or panic, only atomics, the source's own
//! calls, ioctls and (settling a pool run that stopped early) one `pread(2)` of pagemap.

use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};

use uffd::{CopyFlags, MoveFlags, RangeError, Uffd};

use super::engine::{Engine, Failure};
use super::{bump, Counters, Fault, PageSource, PoolLease, Resolution};
use crate::counters::add;
use crate::region::{self, Region};

/// The largest fault-around window, in pages: 256 KiB of 4 KiB pages, a handler's scratch
/// buffer for a filling source, and one stack buffer of pagemap entries to settle a pool run.
pub(crate) const MAX_WINDOW: usize = 64;

/// The window `source` asks for, clamped to `1..=MAX_WINDOW`.
pub(crate) fn window<S: PageSource + ?Sized>(source: &S) -> usize {
    source.fault_around().clamp(1, MAX_WINDOW)
}

/// Bytes of scratch buffer a handler thread needs for `source`: one page per page of its window.
pub(crate) fn scratch_len<S: PageSource + ?Sized>(region: &Region, source: &S) -> usize {
    region.page_size() * window(source)
}

/// Pages from the faulting page at `offset` on that a run may cover: the window, clipped to
/// the end of the region and before the first page that `gone` says was unmapped away (a run
/// into another mapping would fail whole). At least 1.
fn room(region: &Region, offset: usize, window: usize, gone: &dyn Fn(usize) -> bool) -> usize {
    let page = region.page_size();
    let left = region.pages().saturating_sub(offset / page);
    let room = window.min(left).max(1);
    (1..room).find(|&i| gone(offset + i * page)).unwrap_or(room)
}

/// Resolves `fault` of `region` from `source`: asks the source (for a run from the faulting
/// page on when it has a fault-around window) and carries the answer out, with the ioctl that
/// also wakes the faulting thread, as `caller` needs. Returns the resolution's kind (for
/// logging a failure) and the outcome: `Ok` when the faulting page was served, else the failure
/// for the caller to handle as it handles [`apply`]'s (a race on EEXIST, a retry on EAGAIN, the
/// fallback otherwise).
///
/// A run counts one serve (taken back if nothing was served) and its further pages in
/// `pages_around`. A run that fails at its first page for a reason other than EEXIST or EAGAIN
/// is retried as the faulting page alone, so a window that ran into something unexpected (a VMA
/// boundary) costs one ioctl, never the fault.
pub(crate) fn resolve<S: PageSource>(
    engine: &Engine<S>,
    fault: &Fault,
    scratch: &mut [u8],
    leave_as_zero: bool,
    gone: &dyn Fn(usize) -> bool,
) -> (&'static str, Result<(), Failure>) {
    let (uffd, region, counters, source) = (
        &engine.uffd,
        &engine.region,
        &engine.counters,
        &engine.source,
    );
    let page = region.page_size();
    let one = page.min(scratch.len());
    let window = window(source);
    // In a block of its own: the resolution borrows `scratch` until it is dropped, and the
    // retry below needs it again.
    let (kind, outcome) = {
        let offered = if window == 1 {
            1
        } else {
            room(region, fault.offset, window, gone)
        };
        let resolution = if window == 1 {
            source.resolve(fault, &mut scratch[..one])
        } else {
            let scratch_pages = (offered * page).min(scratch.len());
            source.resolve_around(fault, offered, &mut scratch[..scratch_pages])
        };
        let resolution = match resolution {
            Resolution::Leave if leave_as_zero => Resolution::Zero,
            other => other,
        };
        let kind = resolution.kind();
        match resolution {
            // More than was offered: unusable (it may reach past the window's bounds), and
            // retried below as the faulting page alone.
            Resolution::Copy(bytes) if bytes.len() > offered * page => (kind, Err(Failure::Bad)),
            Resolution::Lease(lease) if lease.pages() > offered => (kind, Err(Failure::Bad)),
            Resolution::Copy(bytes) if bytes.len() > page => {
                (kind, copy_run(uffd, region, counters, fault.offset, bytes))
            }
            Resolution::Lease(lease) if lease.pages() > 1 => {
                (kind, move_run(uffd, region, counters, fault.offset, lease))
            }
            single => return (kind, engine.apply(fault.offset, single)),
        }
    };
    match outcome {
        Ok(()) => (kind, Ok(())),
        Err(
            failure @ Failure::Kernel(RangeError::Exists { .. } | RangeError::EventsPending { .. }),
        ) => (kind, Err(failure)),
        Err(_) => {
            // The run failed at its first page: retry that page alone.
            let resolution = match source.resolve(fault, &mut scratch[..one]) {
                Resolution::Leave if leave_as_zero => Resolution::Zero,
                other => other,
            };
            let kind = resolution.kind();
            (kind, engine.apply(fault.offset, resolution))
        }
    }
}

/// `UFFDIO_COPY` of `bytes` (several whole pages) to `offset`: served when at least the
/// faulting page was copied (the kernel stops at the first page already present and wakes the
/// pages it copied).
fn copy_run(
    uffd: &Uffd,
    region: &Region,
    counters: &Counters,
    offset: usize,
    bytes: &[u8],
) -> Result<(), Failure> {
    let page = region.page_size();
    if bytes.len() % page != 0 {
        return Err(Failure::Bad);
    }
    let pages = bytes.len() / page;
    counted_first(counters, &counters.served_copy, pages);
    let outcome = region::copy_from_slice(uffd, region, offset, bytes, CopyFlags::empty());
    let done = match &outcome {
        Ok(done) => *done,
        Err(err) => err.done(),
    };
    served(counters, &counters.served_copy, pages, done / page, outcome)
}

/// `UFFDIO_MOVE` of the pages of `lease` to `offset`, then settles the lease from pagemap. The
/// pages that left the pool are in place, counted or not by the kernel (see
/// [`PoolLease::settle_run`]); those it did not count it did not wake either, so they are woken
/// here.
fn move_run(
    uffd: &Uffd,
    region: &Region,
    counters: &Counters,
    offset: usize,
    lease: PoolLease<'_>,
) -> Result<(), Failure> {
    let page = region.page_size();
    let pages = lease.pages();
    counted_first(counters, &counters.served_move, pages);
    let outcome = region::move_between(
        uffd,
        region,
        offset,
        lease.region(),
        lease.offset(),
        pages * page,
        MoveFlags::empty(),
    );
    let counted = match &outcome {
        Ok(done) => *done,
        Err(err) => err.done(),
    } / page;
    let moved = lease.settle_run(&outcome);
    let result = served(counters, &counters.served_move, pages, moved, outcome);
    if moved > counted {
        // Moved but not counted, so not woken: wake them (the faulting page among them when
        // nothing was counted).
        let uncounted: Range<usize> = offset + counted * page..offset + moved * page;
        let _ = region::wake_in(uffd, region, uncounted.start, uncounted.len());
    }
    result
}

/// Counts a run of `pages` pages before its ioctl, as if it will serve them all (one serve in
/// `counter`, the rest in `pages_around`), so a thread woken by the ioctl already sees them
/// counted; [`served`] takes back what the run did not place.
fn counted_first(counters: &Counters, counter: &AtomicU64, pages: usize) {
    bump(counter);
    add(&counters.pages_around, pages as u64 - 1);
}

/// The end of a run of `pages` pages that placed `placed` of them from the faulting one on:
/// served when it placed at least one, with the count of [`counted_first`] corrected; else the
/// serve is taken back too and the ioctl's failure is the outcome.
fn served(
    counters: &Counters,
    counter: &AtomicU64,
    pages: usize,
    placed: usize,
    outcome: Result<usize, RangeError>,
) -> Result<(), Failure> {
    let unplaced = pages - placed.clamp(1, pages);
    if unplaced > 0 {
        counters
            .pages_around
            .fetch_sub(unplaced as u64, Ordering::Relaxed);
    }
    if placed > 0 {
        return Ok(());
    }
    counter.fetch_sub(1, Ordering::Relaxed);
    match outcome {
        Err(err) => Err(Failure::Kernel(err)),
        Ok(_) => Err(Failure::Bad),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_is_the_window_clipped_to_the_region_end_and_gone_pages() {
        let region = Region::new(8 * 4096).unwrap();
        let page = region.page_size();
        assert_eq!(room(&region, 0, 4, &|_| false), 4);
        assert_eq!(room(&region, 6 * page, 4, &|_| false), 2, "region end");
        assert_eq!(room(&region, 7 * page, 16, &|_| false), 1);
        assert_eq!(room(&region, 0, 8, &|off| off >= 3 * page), 3, "gone page");
        assert_eq!(
            room(&region, 0, 1, &|_| true),
            1,
            "the faulting page itself is not asked"
        );
    }
}
