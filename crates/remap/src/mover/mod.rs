//! The mover: batched, THP-aware `UFFDIO_MOVE` between [`Region`]s, with retries, policies and
//! statistics.
//!
//! A [`Mover`] owns a [`uffd::Uffd`] with which the destination regions are registered
//! ([`Mover::register`]). It moves a range ([`Mover::move_range`]), a list of page pairs
//! ([`Mover::move_pages`]), or whatever a [`Batch`] collected, possibly across several region
//! pairs, the way a compactor publishes pages.
//!
//! ```
//! use remap::mover::Mover;
//! use remap::region::Region;
//!
//! let uffd = uffd::Uffd::new()?;
//! if !uffd.supports_move() {
//!     return Ok(()); // a kernel before 6.8
//! }
//! let mover = Mover::new(uffd);
//! let src = Region::builder(8 * 4096).populate(true).build()?;
//! let dst = Region::new(8 * 4096)?;
//! mover.register(&dst)?;
//! remap::pattern::fill(&src, 1);
//!
//! // Publish pages 0..4 of src as pages 4..8 of dst, and page 7 as page 0.
//! let report = mover.move_pages(&dst, &src, &[(4, 0), (5, 1), (6, 2), (7, 3), (0, 7)])?;
//! assert_eq!(report.move_ioctls, 2); // two runs: 4 contiguous pages, then one
//! assert_eq!(remap::pattern::verify_page(&dst, 5, 1, 1), Ok(()));
//! assert_eq!(remap::pattern::verify_page(&dst, 0, 1, 7), Ok(()));
//! assert_eq!(src.read_u64(0), 0); // the page left the source
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Coalescing
//!
//! A batch keeps its page moves in the order pushed and merges each into the previous one when
//! both the destination and the source continue it (same region pair, both offsets contiguous).
//! Each such *run* is issued as one `UFFDIO_MOVE` (more only after partial progress or a refused
//! page). The kernel walks a run PMD by PMD and, since 6.18, moves consecutive small pages under
//! one page-table lock and one TLB flush, so one ioctl for 512 pages costs a fraction of 512
//! ioctls (see `docs/performance.md`: ~1.1 us per single-page call against ~62-90 ns per page in
//! 2 MiB calls).
//!
//! # Whole-PMD moves
//!
//! The kernel moves a transparent huge page by moving its PMD entry (no split, no per-page work,
//! ~1.2 us per 2 MiB) only when all of these hold at that step of the call:
//!
//! - the source address and the destination address are both 2 MiB aligned;
//! - at least 2 MiB remain in the call;
//! - the source PMD maps a THP (or the huge zero page), exclusively;
//! - the destination PMD is empty (`pmd_none`): no page table exists there yet.
//!
//! Otherwise it splits the THP and moves 4 KiB pages. The last rule matters: a destination that
//! already took a fault on the small-page path (a region not eligible for THP, touched and then
//! emptied) has a page table under that PMD, and an aligned move into it splits. Moving into a
//! fresh, never-touched destination keeps the THP whole. The destination's own THP advice is not
//! consulted.
//!
//! The mover does not split a run at 2 MiB boundaries: one ioctl per run already lets the kernel
//! take the whole-PMD path at every aligned step. Two statistics describe it:
//!
//! - [`MoveReport::aligned_bytes`], always counted, at no cost: the bytes *issued aligned*, in
//!   2 MiB chunks whose source and destination addresses are both 2 MiB aligned and that lay
//!   entirely inside one ioctl's range. This is an upper bound on the whole-PMD moves, not a
//!   count of them: an aligned chunk of a source made of 4 KiB pages (a `Thp::NoHuge` region
//!   that happens to be aligned, or a THP split earlier) is moved page by page and still counts
//!   here. The other moved bytes are [`MoveReport::pte_bytes`].
//! - [`MoveReport::whole_pmd_bytes`], only with [`MoveOptions::verify_pmd`]: the aligned chunks
//!   that really moved whole. Before each ioctl the mover checks which aligned source chunks are
//!   PMD-mapped THPs, and after it which destination chunks now are
//!   ([`crate::inspect::is_thp_mapped`]: pagemap and `/proc/kpageflags` as root, `smaps`
//!   `AnonHugePages` otherwise, where it is exact only for mappings with one aligned 2 MiB
//!   range); a chunk counts when both hold. That reads `/proc` several times per chunk, so it is
//!   off by default and meant for tests, benches and diagnostics, never the hot path.
//!
//! # Waking
//!
//! Three modes ([`Wake`]):
//!
//! - [`Wake::PerRange`], the default: every move is issued with `UFFDIO_MOVE_MODE_DONTWAKE`, and
//!   one `UFFDIO_WAKE` per coalesced destination range follows at the end of the operation
//!   (after an error, for the part already moved, so no faulting thread waits for a page that
//!   arrived). No waiter runs before every page of the operation is in place, which a multi-run
//!   [`Batch`] publishing related pages needs. The price is one extra system call per range.
//! - [`Wake::Kernel`]: moves are issued without `DONTWAKE`, and the kernel wakes the threads
//!   waiting on the part each ioctl moved, `[dst, dst + moved)`, as that ioctl returns. A run is
//!   almost always moved by one ioctl, and then that is exactly the range a separate
//!   `UFFDIO_WAKE` would cover: for single-run operations (one `move_range` per page, say) it
//!   saves one system call per call, as much as the move itself for a 4 KiB run. It gives up the
//!   publication order: waiters on an earlier run may run before later runs have moved, and
//!   after partial progress the moved prefix of a run is woken before its rest.
//! - [`Wake::None`]: `DONTWAKE` and no wake; the caller wakes, for example after publishing
//!   several batches.
//!
//! # Errors, retries and the nothing-lost guarantee
//!
//! A move that made partial progress is re-issued for the rest ([`MoveReport::retries`]). When
//! non-cooperative events (fork, mremap, `MADV_DONTNEED`, munmap) are queued on the fd, the kernel
//! refuses every move with EAGAIN until someone reads them; the mover cannot read them (that is
//! the event loop's job, and the event's producer is blocked until then), so it never spins: it
//! returns [`MoveError::EventsPending`] with the bytes done. Read the events, then resume: call
//! [`Batch::flush`] again, or re-issue the rest of the range. Hard errors come back typed, with
//! the errno and the bytes done.
//!
//! `UFFDIO_MOVE` moves page by page, in address order, and each page is either moved or not:
//! after any error every page is at its source or at its destination, with its contents; none is
//! lost or duplicated. (One documented exception to "not duplicated": [`MoveError::Discard`].)
//!
//! # Refused pages: EBUSY and holes
//!
//! `UFFDIO_MOVE` refuses (EBUSY) a page mapped more than once: after a `fork()` every page of a
//! private mapping is shared with the child, and stays shared until the parent writes it again,
//! even after the child exits; KSM-merged and DMA-pinned pages are refused too. [`Region`]s are
//! built with `MADV_DONTFORK` by default so the child never shares them. By default EBUSY is an
//! error ([`BusyPolicy::Error`]); with [`BusyPolicy::CopyFallback`] the mover copies each refused
//! page into the destination (`UFFDIO_COPY`) and drops it from the source (`MADV_DONTNEED`), so
//! the end state is the same as a move: at the destination, gone from the source. Only refused
//! pages are copied; the move resumes after each.
//!
//! A source page that was never populated is a hole: an error by default ([`HolePolicy::Error`],
//! from the kernel's ENOENT); [`HolePolicy::Skip`] passes `ALLOW_SRC_HOLES`, and the destination
//! stays empty there. The kernel reports hole bytes as moved; with
//! [`MoveOptions::count_holes`] the mover reads the source's pagemap once per run before moving
//! (one `pread`, off by default) and reports them in [`MoveReport::hole_bytes`] instead.
//!
//! The count follows the kernel's walk, which re-reads each source page when it gets there. A run
//! whose destination overlaps its source from above (one region, `dst_off` inside
//! `(src_off, src_off + len)`) meets the pages it has just moved again as source pages and moves
//! them on: moving pages [0, 3) to [1, 4) with only page 0 populated moves that page three times,
//! to page 3, and skips no hole; the report says 3 pages moved, 0 holes.
//!
//! # Kernel undercounts
//!
//! Linux 6.18 can move pages a `UFFDIO_MOVE` does not count when page migration (compaction)
//! races it: EEXIST with nothing counted, or a partial EAGAIN count, although the page at the
//! count (often the rest of the request too) sits intact at the destination and is gone from the
//! source (`docs/findings/move-undercounts-a-moved-page.md`). Trusting the count would re-issue
//! those pages and stop with EEXIST on the first, reporting moved pages as not moved. So after
//! an EEXIST, an EAGAIN or a short count the mover reads pagemap page by page from the count on
//! (the cold path only): each page gone from the source and there at the destination is counted
//! as moved ([`MoveReport::kernel_undercounts`] counts the corrections, each logged with
//! `tracing::warn!`), up to the first page still at its source; the run then continues after the
//! moved pages, or the error carries the corrected count. A genuine EEXIST (the destination page
//! populated by someone else while the source page is still there) and a genuine partial count
//! are unchanged.
//!
//! A page counts only when it left the source *and* arrived. One case looks the same afterwards:
//! a source *hole* moved onto a destination page populated before the ioctl, which the kernel
//! refuses (EEXIST, or a short count when pages before it moved) and which leaves "a hole at the
//! source, a page at the destination" too. Telling them apart takes the source's state from
//! before the ioctl, a pagemap read that costs about as much as a whole-PMD move (~3 us here), so
//! it is not on the hot path: with [`MoveOptions::verify_counts`] (or hole counting) the mover
//! reads it once per run and the correction is exact; without it, under [`HolePolicy::Error`]
//! the mover takes the caller's word that the source has no holes (such a hole is counted as
//! moved; nothing is lost: the source had no page), and under [`HolePolicy::Skip`], where holes
//! are expected, it believes the kernel's count (a page moved uncounted then makes the resumed
//! move fail with EEXIST; nothing is lost either).
//!
//! # Threads
//!
//! A `Mover` is `Send + Sync`: every method takes `&self`, the cumulative [`MoverStats`] are
//! atomics, and the kernel serialises concurrent moves. Moves must be issued from threads of the
//! process that created the userfaultfd.

use std::sync::OnceLock;

use uffd::{ControlError, Errno, Ioctls, RegisterMode, Uffd};

use crate::inspect::{InspectError, Pagemap};
use crate::region::{PageRange, Region};

mod batch;
mod drive;
mod error;
mod options;
mod report;
mod verify;

#[cfg(test)]
mod tests;

pub use batch::Batch;
pub use error::{BatchError, MoveError, Side};
pub use options::{BusyPolicy, HolePolicy, MoveOptions, Wake};
pub use report::{MoveReport, MoverStats};

use drive::{check, Run};
use report::AtomicStats;

/// Moves pages between [`Region`]s with `UFFDIO_MOVE`: see the [module docs](self).
///
/// ```
/// use remap::mover::Mover;
/// use remap::region::Region;
///
/// let uffd = uffd::Uffd::new()?;
/// if !uffd.supports_move() {
///     return Ok(());
/// }
/// let mover = Mover::new(uffd);
/// let src = Region::builder(4 * 4096).populate(true).build()?;
/// let dst = Region::new(4 * 4096)?;
/// mover.register(&dst)?;
/// remap::pattern::fill(&src, 9);
/// let report = mover.move_range(&dst, 0, &src, 0, 4 * 4096)?;
/// assert_eq!(report.moved_bytes(), 4 * 4096);
/// assert_eq!(remap::pattern::verify(&dst, 9), Ok(()));
/// assert_eq!(mover.stats().totals.move_ioctls, 1);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct Mover {
    uffd: Uffd,
    options: MoveOptions,
    stats: AtomicStats,
    pagemap: OnceLock<Pagemap>,
}

impl Mover {
    /// A mover on `uffd` with the default [`MoveOptions`]: EBUSY and holes are errors, moves are
    /// issued with `DONTWAKE` and each coalesced range is woken once at the end
    /// ([`Wake::PerRange`]).
    ///
    /// ```
    /// let mover = remap::mover::Mover::new(uffd::Uffd::new()?);
    /// assert_eq!(*mover.options(), remap::mover::MoveOptions::default());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn new(uffd: Uffd) -> Self {
        Mover {
            uffd,
            options: MoveOptions::default(),
            stats: AtomicStats::default(),
            pagemap: OnceLock::new(),
        }
    }

    /// The same mover with `options` as its default (per call: [`move_range_with`](Self::move_range_with),
    /// [`move_pages_with`](Self::move_pages_with), [`batch_with`](Self::batch_with)).
    ///
    /// ```
    /// use remap::mover::{BusyPolicy, MoveOptions, Mover};
    ///
    /// let mover = Mover::new(uffd::Uffd::new()?)
    ///     .with_options(MoveOptions::default().busy(BusyPolicy::CopyFallback));
    /// assert_eq!(mover.options().busy, BusyPolicy::CopyFallback);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn with_options(mut self, options: MoveOptions) -> Self {
        self.options = options;
        self
    }

    /// The policies in force.
    ///
    /// ```
    /// let mover = remap::mover::Mover::new(uffd::Uffd::new()?);
    /// assert_eq!(mover.options().wake, remap::mover::Wake::PerRange);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn options(&self) -> &MoveOptions {
        &self.options
    }

    /// The userfaultfd (to read its events, or register other ranges).
    ///
    /// ```
    /// let mover = remap::mover::Mover::new(uffd::Uffd::new()?);
    /// let _supported = mover.uffd().supports_move();
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn uffd(&self) -> &Uffd {
        &self.uffd
    }

    /// Gives the userfaultfd back.
    ///
    /// ```
    /// let uffd = remap::mover::Mover::new(uffd::Uffd::new()?).into_uffd();
    /// # drop(uffd);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn into_uffd(self) -> Uffd {
        self.uffd
    }

    /// Registers the whole of `region` with the mover's userfaultfd for MISSING faults, which
    /// makes it a valid destination. Returns the ioctls usable on it.
    ///
    /// ```
    /// let mover = remap::mover::Mover::new(uffd::Uffd::new()?);
    /// let dst = remap::region::Region::new(4096)?;
    /// let ioctls = mover.register(&dst)?;
    /// if mover.uffd().supports_move() {
    ///     assert!(ioctls.contains(uffd::Ioctls::MOVE));
    /// }
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    ///
    /// As [`Uffd::register`]: EBUSY when the region is registered with another userfaultfd.
    pub fn register(&self, region: &Region) -> Result<Ioctls, ControlError> {
        region
            .all_pages()
            .register(&self.uffd, RegisterMode::MISSING)
    }

    /// Unregisters the whole of `region`.
    ///
    /// ```
    /// let mover = remap::mover::Mover::new(uffd::Uffd::new()?);
    /// let dst = remap::region::Region::new(4096)?;
    /// mover.register(&dst)?;
    /// mover.unregister(&dst)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    ///
    /// As [`Uffd::unregister`].
    pub fn unregister(&self, region: &Region) -> Result<(), ControlError> {
        region.all_pages().unregister(&self.uffd)
    }

    /// Cumulative statistics of every operation so far, from all threads.
    ///
    /// ```
    /// let mover = remap::mover::Mover::new(uffd::Uffd::new()?);
    /// assert_eq!(mover.stats(), remap::mover::MoverStats::default());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn stats(&self) -> MoverStats {
        self.stats.snapshot()
    }

    /// Moves `len` bytes from `src` at `src_off` to `dst` at `dst_off`, one ioctl unless the
    /// kernel stops early: after partial progress the rest is re-issued, refused pages follow the
    /// [`BusyPolicy`], holes the [`HolePolicy`]. `dst` must be registered with this mover's
    /// userfaultfd ([`Mover::register`]); `src` need not be. `len == 0` does nothing.
    ///
    /// ```
    /// use remap::mover::{MoveError, Mover};
    /// use remap::region::Region;
    ///
    /// let uffd = uffd::Uffd::new()?;
    /// if !uffd.supports_move() {
    ///     return Ok(());
    /// }
    /// let mover = Mover::new(uffd);
    /// let src = Region::new(2 * 4096)?;
    /// let dst = Region::new(2 * 4096)?;
    /// mover.register(&dst)?;
    /// remap::pattern::fill_page(&src, 0, 3, 0); // page 1 stays a hole
    /// match mover.move_range(&dst, 0, &src, 0, 2 * 4096) {
    ///     Err(MoveError::Hole { done }) => assert_eq!(done, 4096), // page 0 moved
    ///     other => panic!("{other:?}"),
    /// }
    /// assert_eq!(remap::pattern::verify_page(&dst, 0, 3, 0), Ok(()));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`MoveError::BadRange`] before doing anything; otherwise any other [`MoveError`], whose
    /// `done` counts the bytes from `dst_off`/`src_off` that were handled. To resume (for example
    /// after [`MoveError::EventsPending`]), call again with both offsets advanced by `done` and
    /// `len` reduced by it.
    #[inline]
    pub fn move_range(
        &self,
        dst: &Region,
        dst_off: usize,
        src: &Region,
        src_off: usize,
        len: usize,
    ) -> Result<MoveReport, MoveError> {
        self.move_range_with(&self.options, dst, dst_off, src, src_off, len)
    }

    /// [`move_range`](Self::move_range) with `options` for this call instead of the mover's
    /// own: a compactor that publishes most pages with one policy and some with another (holes
    /// skipped, EBUSY copied, no wake) shares one mover, one userfaultfd and one set of
    /// statistics.
    ///
    /// ```
    /// use remap::mover::{HolePolicy, MoveOptions, Mover};
    /// use remap::region::Region;
    ///
    /// let uffd = uffd::Uffd::new()?;
    /// if !uffd.supports_move() {
    ///     return Ok(());
    /// }
    /// let mover = Mover::new(uffd); // holes are errors by default
    /// let src = Region::new(2 * 4096)?;
    /// let dst = Region::new(2 * 4096)?;
    /// mover.register(&dst)?;
    /// src.write_u64(0, 1); // page 1 stays a hole
    /// let skip = MoveOptions::default().holes(HolePolicy::Skip).count_holes(true);
    /// let report = mover.move_range_with(&skip, &dst, 0, &src, 0, 2 * 4096)?;
    /// assert_eq!((report.moved_bytes(), report.hole_bytes), (4096, 4096));
    /// assert_eq!(mover.options().holes, HolePolicy::Error); // the mover's own are unchanged
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    ///
    /// As [`move_range`](Self::move_range), under `options`.
    pub fn move_range_with(
        &self,
        options: &MoveOptions,
        dst: &Region,
        dst_off: usize,
        src: &Region,
        src_off: usize,
        len: usize,
    ) -> Result<MoveReport, MoveError> {
        let dst = check(dst, Side::Destination, dst_off, len)?;
        let src = check(src, Side::Source, src_off, len)?;
        if len == 0 {
            return Ok(MoveReport::default());
        }
        if options.inspects() {
            return self.move_range_slow(options, dst, src, None);
        }
        // The common case, kept small (the whole hot path fits a few cache lines): one ioctl
        // that moves everything. Anything else continues from its outcome on the slow path.
        let first = dst.move_from(&self.uffd, src, options.move_flags());
        if first != Ok(len) {
            return self.move_range_slow(options, dst, src, Some(first));
        }
        let (a, b) = drive::aligned_span(dst.addr(), src.addr(), 0, len);
        let mut report = MoveReport {
            aligned_bytes: (b - a) as u64,
            pte_bytes: (len - (b - a)) as u64,
            runs: 1,
            move_ioctls: 1,
            ..MoveReport::default()
        };
        if options.wake == Wake::PerRange {
            if let Err(source) = self.wake(Some(dst), &mut report) {
                self.stats.add(&report, true);
                return Err(MoveError::Wake { done: len, source });
            }
        }
        self.stats.add(&report, false);
        Ok(report)
    }

    /// [`move_range_with`](Self::move_range_with) past its fast path: inspection, retries,
    /// refused pages, errors. `first` is the outcome of the first ioctl when the fast path
    /// already issued it.
    #[inline(never)]
    fn move_range_slow(
        &self,
        options: &MoveOptions,
        dst: PageRange<'_>,
        src: PageRange<'_>,
        first: Option<Result<usize, uffd::RangeError>>,
    ) -> Result<MoveReport, MoveError> {
        let mut report = MoveReport::default();
        let run = Run {
            dst,
            src,
            first_page: 0,
        };
        let mut progress = 0;
        report.runs = 1;
        let mut result = self.drive(options, &run, &mut progress, &mut report, first);
        if options.wake == Wake::PerRange && progress > 0 {
            let woke = self.wake(dst.get(0..progress), &mut report);
            if let (Ok(()), Err(source)) = (&result, woke) {
                result = Err(MoveError::Wake {
                    done: progress,
                    source,
                });
            }
        }
        self.stats.add(&report, result.is_err());
        result.map(|()| report)
    }

    /// Moves source page `s` to destination page `d` for every `(d, s)` in `pairs` (page indices,
    /// not byte offsets), coalescing contiguous runs: a [`Batch`] pushed and flushed in one go.
    ///
    /// ```
    /// use remap::mover::Mover;
    /// use remap::region::Region;
    ///
    /// let uffd = uffd::Uffd::new()?;
    /// if !uffd.supports_move() {
    ///     return Ok(());
    /// }
    /// let mover = Mover::new(uffd);
    /// let src = Region::builder(4 * 4096).populate(true).build()?;
    /// let dst = Region::new(4 * 4096)?;
    /// mover.register(&dst)?;
    /// remap::pattern::fill(&src, 5);
    /// // Reverse the page order: four runs of one page each.
    /// let report = mover.move_pages(&dst, &src, &[(3, 0), (2, 1), (1, 2), (0, 3)])?;
    /// assert_eq!(report.runs, 4);
    /// assert_eq!(remap::pattern::verify_page(&dst, 0, 5, 3), Ok(()));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    ///
    /// A [`BatchError`] with `source` [`MoveError::BadRange`] (nothing moved) when a page index is
    /// out of range, otherwise as [`Batch::flush`]. To resume, push the pairs from
    /// [`BatchError::page`] on into a new batch, or use a [`Batch`] directly.
    pub fn move_pages(
        &self,
        dst: &Region,
        src: &Region,
        pairs: &[(usize, usize)],
    ) -> Result<MoveReport, BatchError> {
        self.move_pages_with(&self.options, dst, src, pairs)
    }

    /// [`move_pages`](Self::move_pages) with `options` for this call instead of the mover's own
    /// (see [`move_range_with`](Self::move_range_with)).
    ///
    /// ```
    /// use remap::mover::{MoveOptions, Mover, Wake};
    /// use remap::region::Region;
    ///
    /// let uffd = uffd::Uffd::new()?;
    /// if !uffd.supports_move() {
    ///     return Ok(());
    /// }
    /// let mover = Mover::new(uffd);
    /// let src = Region::builder(2 * 4096).populate(true).build()?;
    /// let dst = Region::new(2 * 4096)?;
    /// mover.register(&dst)?;
    /// let quiet = MoveOptions::default().wake(Wake::None);
    /// let report = mover.move_pages_with(&quiet, &dst, &src, &[(1, 0), (0, 1)])?;
    /// assert_eq!((report.move_ioctls, report.wake_ioctls), (2, 0));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    ///
    /// As [`move_pages`](Self::move_pages), under `options`.
    pub fn move_pages_with(
        &self,
        options: &MoveOptions,
        dst: &Region,
        src: &Region,
        pairs: &[(usize, usize)],
    ) -> Result<MoveReport, BatchError> {
        let mut batch = self.batch_with(*options);
        for (i, &(d, s)) in pairs.iter().enumerate() {
            if let Err(run_error) = batch.push_page(dst, d, src, s) {
                return Err(BatchError {
                    run: batch.runs.len(),
                    page: i,
                    runs_done: 0,
                    batch_done: 0,
                    report: Box::default(),
                    run_error,
                });
            }
        }
        batch.flush()
    }

    /// An empty [`Batch`] on this mover.
    ///
    /// ```
    /// let mover = remap::mover::Mover::new(uffd::Uffd::new()?);
    /// let batch = mover.batch();
    /// assert!(batch.is_empty());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn batch<'r>(&self) -> Batch<'_, 'r> {
        self.batch_with(self.options)
    }

    /// An empty [`Batch`] on this mover whose flushes use `options` instead of the mover's own
    /// (see [`move_range_with`](Self::move_range_with)).
    ///
    /// ```
    /// use remap::mover::{BusyPolicy, MoveOptions, Mover};
    ///
    /// let mover = Mover::new(uffd::Uffd::new()?);
    /// let batch = mover.batch_with(MoveOptions::default().busy(BusyPolicy::CopyFallback));
    /// assert_eq!(batch.options().busy, BusyPolicy::CopyFallback);
    /// assert_eq!(mover.options().busy, BusyPolicy::Error);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn batch_with<'r>(&self, options: MoveOptions) -> Batch<'_, 'r> {
        Batch {
            mover: self,
            options,
            runs: Vec::new(),
            pages: 0,
            next: 0,
            progress: 0,
            woken: (0, 0),
        }
    }

    /// The pagemap, opened on first use (hole counting, the undercount defence).
    fn pagemap(&self) -> Result<&Pagemap, InspectError> {
        if let Some(p) = self.pagemap.get() {
            return Ok(p);
        }
        let opened = Pagemap::open()?;
        Ok(self.pagemap.get_or_init(|| opened))
    }

    /// `UFFDIO_WAKE` on `range` (`None`, which the mover never passes, is EINVAL).
    fn wake(
        &self,
        range: Option<PageRange<'_>>,
        report: &mut MoveReport,
    ) -> Result<(), ControlError> {
        report.wake_ioctls += 1;
        match range {
            Some(range) => range.wake(&self.uffd),
            None => Err(ControlError {
                op: uffd::ControlOp::Wake,
                start: 0,
                len: 0,
                errno: Errno::INVAL,
            }),
        }
    }
}
