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
//! are unchanged. One case pagemap cannot tell apart: a source page that was a hole while another
//! thread populated its destination page looks moved and is counted as moved (nothing is lost
//! either way: the destination holds a page, the source none).
//!
//! # Threads
//!
//! A `Mover` is `Send + Sync`: every method takes `&self`, the cumulative [`MoverStats`] are
//! atomics, and the kernel serialises concurrent moves. Moves must be issued from threads of the
//! process that created the userfaultfd.

use std::fmt;
use std::ptr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use uffd::{ControlError, CopyFlags, Errno, Ioctls, MoveFlags, RangeError, RegisterMode, Uffd};

use crate::inspect::{InspectError, Pagemap, PM_PRESENT, PM_SWAPPED};
use crate::region::{PageRange, Region, RegionError, HUGE_PAGE_SIZE};

#[cfg(test)]
mod tests;

/// What to do with pages `UFFDIO_MOVE` refuses with EBUSY (shared after `fork()`, KSM, pinned).
///
/// ```
/// use remap::mover::{BusyPolicy, MoveOptions};
///
/// let options = MoveOptions::default().busy(BusyPolicy::CopyFallback);
/// assert_eq!(options.busy, BusyPolicy::CopyFallback);
/// assert_eq!(MoveOptions::default().busy, BusyPolicy::Error);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BusyPolicy {
    /// Stop with [`MoveError::Busy`] (the default).
    #[default]
    Error,
    /// Copy each refused page into the destination with `UFFDIO_COPY`, then drop it from the
    /// source with `MADV_DONTNEED`, and go on moving after it. The source must not be registered
    /// with a userfaultfd that has `EVENT_REMOVE` enabled unless another thread reads its events:
    /// the `MADV_DONTNEED` would wait for that event to be read.
    CopyFallback,
}

/// What to do with source pages that were never populated (holes).
///
/// ```
/// use remap::mover::{HolePolicy, MoveOptions};
///
/// let options = MoveOptions::default().holes(HolePolicy::Skip).count_holes(true);
/// assert_eq!(options.holes, HolePolicy::Skip);
/// assert!(options.count_holes);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HolePolicy {
    /// Stop with [`MoveError::Hole`] at the first hole (the default).
    #[default]
    Error,
    /// Move with `UFFDIO_MOVE_MODE_ALLOW_SRC_HOLES`: holes are skipped and the destination stays
    /// empty there (a later access faults again).
    Skip,
}

/// When threads waiting on faults in the destination are woken; see the
/// [module docs](self#waking) for the trade-off.
///
/// ```
/// use remap::mover::{MoveOptions, Wake};
///
/// assert_eq!(MoveOptions::default().wake, Wake::PerRange);
/// let options = MoveOptions::default().wake(Wake::Kernel);
/// assert_eq!(options.wake, Wake::Kernel);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Wake {
    /// Move with `DONTWAKE`, then issue one `UFFDIO_WAKE` per coalesced destination range at the
    /// end of the operation, so no waiter runs before the whole operation has moved (the
    /// default). Adjacent destination ranges share one wake.
    #[default]
    PerRange,
    /// Move with `DONTWAKE` and never wake: the caller wakes (for example after publishing
    /// several batches).
    None,
    /// Move without `DONTWAKE`: each ioctl wakes the waiters on the part it moved, as it returns.
    /// No extra ioctl; for a run moved by one ioctl it wakes exactly the range
    /// [`Wake::PerRange`] would, but without its publication order across runs.
    Kernel,
}

/// The mover's policies; see [`Mover::with_options`].
///
/// ```
/// use remap::mover::{BusyPolicy, HolePolicy, MoveOptions, Wake};
///
/// let options = MoveOptions::default()
///     .busy(BusyPolicy::CopyFallback)
///     .holes(HolePolicy::Skip)
///     .wake(Wake::PerRange);
/// assert_eq!(options.wake, Wake::PerRange);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct MoveOptions {
    /// Pages refused with EBUSY.
    pub busy: BusyPolicy,
    /// Source holes.
    pub holes: HolePolicy,
    /// Waking the destination.
    pub wake: Wake,
    /// With [`HolePolicy::Skip`]: read the source's pagemap once per run before moving it and
    /// report holes in [`MoveReport::hole_bytes`] (rather than as moved). Off by default: it costs
    /// a `pread` of 8 bytes per page and an allocation per run. Counts are exact, for runs whose
    /// destination overlaps their source too (see the [module docs](self#refused-pages-ebusy-and-holes)),
    /// unless another thread populates or drops source pages concurrently.
    pub count_holes: bool,
    /// Verify whole-PMD moves: read `/proc` around every ioctl and report the aligned 2 MiB
    /// chunks that were PMD-mapped THPs at the source before it and are at the destination after
    /// it in [`MoveReport::whole_pmd_bytes`] (see the
    /// [module docs](self#whole-pmd-moves)). Off by default: it costs several `/proc` reads per
    /// chunk and an allocation per run.
    pub verify_pmd: bool,
}

impl MoveOptions {
    /// Sets the EBUSY policy.
    ///
    /// ```
    /// let o = remap::mover::MoveOptions::default().busy(remap::mover::BusyPolicy::CopyFallback);
    /// assert_eq!(o.busy, remap::mover::BusyPolicy::CopyFallback);
    /// ```
    pub fn busy(mut self, busy: BusyPolicy) -> Self {
        self.busy = busy;
        self
    }

    /// Sets the hole policy.
    ///
    /// ```
    /// let o = remap::mover::MoveOptions::default().holes(remap::mover::HolePolicy::Skip);
    /// assert_eq!(o.holes, remap::mover::HolePolicy::Skip);
    /// ```
    pub fn holes(mut self, holes: HolePolicy) -> Self {
        self.holes = holes;
        self
    }

    /// Sets the wake mode.
    ///
    /// ```
    /// let o = remap::mover::MoveOptions::default().wake(remap::mover::Wake::None);
    /// assert_eq!(o.wake, remap::mover::Wake::None);
    /// ```
    pub fn wake(mut self, wake: Wake) -> Self {
        self.wake = wake;
        self
    }

    /// Sets whether holes are counted (see [`MoveOptions::count_holes`](#structfield.count_holes)).
    ///
    /// ```
    /// let o = remap::mover::MoveOptions::default().count_holes(true);
    /// assert!(o.count_holes);
    /// ```
    pub fn count_holes(mut self, yes: bool) -> Self {
        self.count_holes = yes;
        self
    }

    /// Sets whether whole-PMD moves are verified (see
    /// [`MoveOptions::verify_pmd`](#structfield.verify_pmd)).
    ///
    /// ```
    /// let o = remap::mover::MoveOptions::default().verify_pmd(true);
    /// assert!(o.verify_pmd);
    /// ```
    pub fn verify_pmd(mut self, yes: bool) -> Self {
        self.verify_pmd = yes;
        self
    }

    fn move_flags(&self) -> MoveFlags {
        let mut flags = match self.wake {
            Wake::Kernel => MoveFlags::empty(),
            Wake::PerRange | Wake::None => MoveFlags::DONTWAKE,
        };
        if self.holes == HolePolicy::Skip {
            flags |= MoveFlags::ALLOW_SRC_HOLES;
        }
        flags
    }

    fn copy_flags(&self) -> CopyFlags {
        match self.wake {
            Wake::Kernel => CopyFlags::empty(),
            Wake::PerRange | Wake::None => CopyFlags::DONTWAKE,
        }
    }
}

/// What one operation did: bytes by path, and ioctls issued.
///
/// `aligned_bytes + pte_bytes + copied_bytes` is what arrived at the destination (plus holes, when
/// not counted separately): see [`MoveReport::moved_bytes`]. `whole_pmd_bytes` is a part of
/// `aligned_bytes`, counted only with [`MoveOptions::verify_pmd`].
///
/// ```
/// use remap::mover::MoveReport;
///
/// let mut a = MoveReport { pte_bytes: 4096, move_ioctls: 1, ..MoveReport::default() };
/// a += MoveReport { copied_bytes: 4096, copy_ioctls: 1, ..MoveReport::default() };
/// assert_eq!(a.moved_bytes(), 8192);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MoveReport {
    /// Bytes moved in 2 MiB chunks issued aligned: source and destination both 2 MiB aligned and
    /// the whole chunk inside one ioctl. The kernel moved these whole-PMD only when the source was
    /// a PMD-mapped THP and the destination PMD empty, and page by page otherwise: an upper bound
    /// on whole-PMD moves, not a count (see [`whole_pmd_bytes`](#structfield.whole_pmd_bytes)
    /// and the [module docs](self#whole-pmd-moves)).
    pub aligned_bytes: u64,
    /// With [`MoveOptions::verify_pmd`]: the part of `aligned_bytes` verified to have moved whole
    /// (the source chunk was a PMD-mapped THP before the ioctl, the destination chunk is one
    /// after it). Always 0 without verification.
    pub whole_pmd_bytes: u64,
    /// The other bytes moved by `UFFDIO_MOVE`, page by page.
    pub pte_bytes: u64,
    /// Bytes copied by the EBUSY fallback ([`BusyPolicy::CopyFallback`]).
    pub copied_bytes: u64,
    /// Source holes skipped ([`HolePolicy::Skip`] with [`MoveOptions::count_holes`]); without
    /// `count_holes` the kernel's count of them is in `pte_bytes`/`aligned_bytes`.
    pub hole_bytes: u64,
    /// Coalesced runs (contiguous destination and source ranges) processed.
    pub runs: u64,
    /// `UFFDIO_MOVE` ioctls issued, failed ones included.
    pub move_ioctls: u64,
    /// `UFFDIO_COPY` ioctls issued by the fallback.
    pub copy_ioctls: u64,
    /// `UFFDIO_WAKE` ioctls issued.
    pub wake_ioctls: u64,
    /// `MADV_DONTNEED` calls issued by the fallback.
    pub discards: u64,
    /// Moves re-issued after partial progress.
    pub retries: u64,
    /// Failed or short MOVE ioctls whose count the mover corrected from pagemap because the
    /// kernel had moved more pages than it reported (Linux 6.18 under page migration, see
    /// `docs/findings/move-undercounts-a-moved-page.md` and the
    /// [module docs](self#kernel-undercounts)). The pages it found moved are in the moved bytes.
    pub kernel_undercounts: u64,
}

impl MoveReport {
    /// Bytes that reached the destination: `aligned_bytes + pte_bytes + copied_bytes`.
    ///
    /// ```
    /// let r = remap::mover::MoveReport { aligned_bytes: 1, pte_bytes: 2, copied_bytes: 3, ..Default::default() };
    /// assert_eq!(r.moved_bytes(), 6);
    /// ```
    pub fn moved_bytes(&self) -> u64 {
        self.aligned_bytes + self.pte_bytes + self.copied_bytes
    }

    /// All ioctls issued: moves, copies and wakes.
    ///
    /// ```
    /// let r = remap::mover::MoveReport { move_ioctls: 2, wake_ioctls: 1, ..Default::default() };
    /// assert_eq!(r.ioctls(), 3);
    /// ```
    pub fn ioctls(&self) -> u64 {
        self.move_ioctls + self.copy_ioctls + self.wake_ioctls
    }
}

impl std::ops::AddAssign for MoveReport {
    fn add_assign(&mut self, o: MoveReport) {
        self.aligned_bytes += o.aligned_bytes;
        self.whole_pmd_bytes += o.whole_pmd_bytes;
        self.pte_bytes += o.pte_bytes;
        self.copied_bytes += o.copied_bytes;
        self.hole_bytes += o.hole_bytes;
        self.runs += o.runs;
        self.move_ioctls += o.move_ioctls;
        self.copy_ioctls += o.copy_ioctls;
        self.wake_ioctls += o.wake_ioctls;
        self.discards += o.discards;
        self.retries += o.retries;
        self.kernel_undercounts += o.kernel_undercounts;
    }
}

/// Cumulative statistics of a [`Mover`] since it was created: see [`Mover::stats`].
///
/// ```
/// let stats = remap::mover::MoverStats::default();
/// assert_eq!(stats.operations, 0);
/// assert_eq!(stats.totals.moved_bytes(), 0);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MoverStats {
    /// The sum of every operation's [`MoveReport`], failed operations included.
    pub totals: MoveReport,
    /// Operations: calls of [`Mover::move_range`] and [`Batch::flush`] (including
    /// [`Mover::move_pages`]) that issued at least one ioctl.
    pub operations: u64,
    /// Operations that returned an error.
    pub errors: u64,
}

/// The atomic counters behind [`MoverStats`]: one per [`MoveReport`] field, plus operations and
/// errors, plus `single`.
#[derive(Debug, Default)]
struct AtomicStats {
    /// Operations that were one run moved by one successful ioctl and nothing else: each stands
    /// for one operation, one run and one move ioctl, so the common case costs two atomic adds
    /// (this and its bytes) instead of four. Measured: ~1-2% of a 2 MiB whole-PMD move.
    single: AtomicU64,
    aligned_bytes: AtomicU64,
    whole_pmd_bytes: AtomicU64,
    pte_bytes: AtomicU64,
    copied_bytes: AtomicU64,
    hole_bytes: AtomicU64,
    runs: AtomicU64,
    move_ioctls: AtomicU64,
    copy_ioctls: AtomicU64,
    wake_ioctls: AtomicU64,
    discards: AtomicU64,
    retries: AtomicU64,
    kernel_undercounts: AtomicU64,
    operations: AtomicU64,
    errors: AtomicU64,
}

impl AtomicStats {
    /// Adds one operation's report. Relaxed: the counters are independent tallies. Zero fields
    /// are skipped.
    #[inline]
    fn add(&self, r: &MoveReport, failed: bool) {
        let single = MoveReport {
            aligned_bytes: r.aligned_bytes,
            pte_bytes: r.pte_bytes,
            runs: 1,
            move_ioctls: 1,
            ..MoveReport::default()
        };
        if !failed && *r == single {
            self.single.fetch_add(1, Ordering::Relaxed);
            if r.aligned_bytes != 0 {
                self.aligned_bytes
                    .fetch_add(r.aligned_bytes, Ordering::Relaxed);
            }
            if r.pte_bytes != 0 {
                self.pte_bytes.fetch_add(r.pte_bytes, Ordering::Relaxed);
            }
            return;
        }
        self.add_all(r, failed);
    }

    /// [`add`](Self::add) for everything but the single-ioctl case.
    fn add_all(&self, r: &MoveReport, failed: bool) {
        fn add(c: &AtomicU64, v: u64) {
            if v != 0 {
                c.fetch_add(v, Ordering::Relaxed);
            }
        }
        add(&self.aligned_bytes, r.aligned_bytes);
        add(&self.whole_pmd_bytes, r.whole_pmd_bytes);
        add(&self.pte_bytes, r.pte_bytes);
        add(&self.copied_bytes, r.copied_bytes);
        add(&self.hole_bytes, r.hole_bytes);
        add(&self.runs, r.runs);
        add(&self.move_ioctls, r.move_ioctls);
        add(&self.copy_ioctls, r.copy_ioctls);
        add(&self.wake_ioctls, r.wake_ioctls);
        add(&self.discards, r.discards);
        add(&self.retries, r.retries);
        add(&self.kernel_undercounts, r.kernel_undercounts);
        add(&self.operations, u64::from(r.ioctls() != 0));
        add(&self.errors, u64::from(failed));
    }

    fn snapshot(&self) -> MoverStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let single = get(&self.single);
        MoverStats {
            totals: MoveReport {
                aligned_bytes: get(&self.aligned_bytes),
                whole_pmd_bytes: get(&self.whole_pmd_bytes),
                pte_bytes: get(&self.pte_bytes),
                copied_bytes: get(&self.copied_bytes),
                hole_bytes: get(&self.hole_bytes),
                runs: get(&self.runs) + single,
                move_ioctls: get(&self.move_ioctls) + single,
                copy_ioctls: get(&self.copy_ioctls),
                wake_ioctls: get(&self.wake_ioctls),
                discards: get(&self.discards),
                retries: get(&self.retries),
                kernel_undercounts: get(&self.kernel_undercounts),
            },
            operations: get(&self.operations) + single,
            errors: get(&self.errors),
        }
    }
}

/// Which side of a move a [`MoveError::BadRange`] is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The destination region.
    Destination,
    /// The source region.
    Source,
}

impl fmt::Display for Side {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Side::Destination => "destination",
            Side::Source => "source",
        })
    }
}

/// Why a move stopped. Every variant that can follow progress carries `done`: the bytes of the
/// range (for a [`Batch`], of the failing run) that were done before it, counted from where the
/// operation started. Nothing is lost: each page is at its source or at its destination.
///
/// ```
/// use remap::mover::MoveError;
///
/// let err = MoveError::Busy { done: 8192 };
/// assert_eq!(err.done(), 8192);
/// assert_eq!(err.errno(), Some(uffd::Errno::BUSY));
/// assert!(!err.is_events_pending());
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MoveError {
    /// A range is not page-aligned (offset or length) or not inside its region. Nothing was done.
    #[error("{side} range {off:#x}+{len:#x} is not a page-aligned range inside its region of {region_len:#x} bytes")]
    BadRange {
        /// Which region.
        side: Side,
        /// The offset asked for.
        off: usize,
        /// The length asked for.
        len: usize,
        /// The region's length.
        region_len: usize,
    },
    /// Non-cooperative userfaultfd events are queued and unread (EAGAIN with nothing done). Read
    /// them (the mover cannot), then resume after `done`.
    #[error("userfaultfd events pending after {done} bytes: read them, then resume")]
    EventsPending {
        /// Bytes done before.
        done: usize,
    },
    /// A source page is mapped more than once (shared after `fork()`, KSM) or pinned (EBUSY), under
    /// [`BusyPolicy::Error`]. The page is still at its source.
    #[error(
        "source page not movable (EBUSY: shared after fork, KSM or pinned) after {done} bytes"
    )]
    Busy {
        /// Bytes done before; the refused page is the next one.
        done: usize,
    },
    /// A source page was never populated (ENOENT), under [`HolePolicy::Error`].
    #[error("source hole (ENOENT) after {done} bytes")]
    Hole {
        /// Bytes done before; the hole is the next page.
        done: usize,
    },
    /// `UFFDIO_MOVE` failed otherwise: EEXIST (destination populated), EINVAL (destination not
    /// registered with this fd, protections differ, called from another process), ENOMEM, EFAULT,
    /// ESRCH, EINTR.
    #[error("UFFDIO_MOVE failed after {done} bytes")]
    Move {
        /// Bytes done before.
        done: usize,
        /// The kernel's error for the failing call.
        #[source]
        source: RangeError,
    },
    /// The fallback `UFFDIO_COPY` of a refused page failed; the page is still at its source.
    #[error("fallback UFFDIO_COPY failed after {done} bytes")]
    Copy {
        /// Bytes done before; the page is the next one.
        done: usize,
        /// The kernel's error.
        #[source]
        source: RangeError,
    },
    /// The fallback copied a refused page into the destination but could not drop it from the
    /// source: the page is at both. It is counted in `done`, so a resume goes on after it.
    #[error("dropping a copied source page failed after {done} bytes (the page is at both ends)")]
    Discard {
        /// Bytes done, the copied page included.
        done: usize,
        /// The `madvise` error.
        #[source]
        source: RegionError,
    },
    /// `UFFDIO_WAKE` failed; everything counted in `done` was moved.
    #[error("UFFDIO_WAKE failed after {done} bytes")]
    Wake {
        /// Bytes done.
        done: usize,
        /// The kernel's error.
        #[source]
        source: ControlError,
    },
    /// Reading the source's pagemap to count holes failed; nothing more was moved.
    #[error("reading the source pagemap to count holes failed after {done} bytes")]
    Inspect {
        /// Bytes done before.
        done: usize,
        /// The error.
        #[source]
        source: InspectError,
    },
}

impl MoveError {
    /// Bytes done before the error (0 for [`MoveError::BadRange`]).
    ///
    /// ```
    /// assert_eq!(remap::mover::MoveError::Hole { done: 4096 }.done(), 4096);
    /// ```
    pub fn done(&self) -> usize {
        match *self {
            MoveError::BadRange { .. } => 0,
            MoveError::EventsPending { done }
            | MoveError::Busy { done }
            | MoveError::Hole { done }
            | MoveError::Move { done, .. }
            | MoveError::Copy { done, .. }
            | MoveError::Discard { done, .. }
            | MoveError::Wake { done, .. }
            | MoveError::Inspect { done, .. } => done,
        }
    }

    /// The kernel's errno, when the error came from a system call.
    ///
    /// ```
    /// use remap::mover::MoveError;
    /// assert_eq!(MoveError::EventsPending { done: 0 }.errno(), Some(uffd::Errno::AGAIN));
    /// ```
    pub fn errno(&self) -> Option<Errno> {
        match self {
            MoveError::BadRange { .. } | MoveError::Inspect { .. } => None,
            MoveError::EventsPending { .. } => Some(Errno::AGAIN),
            MoveError::Busy { .. } => Some(Errno::BUSY),
            MoveError::Hole { .. } => Some(Errno::NOENT),
            MoveError::Move { source, .. } | MoveError::Copy { source, .. } => Some(source.errno()),
            MoveError::Discard { source, .. } => match source {
                RegionError::Syscall { errno, .. } => Some(*errno),
                _ => None,
            },
            MoveError::Wake { source, .. } => Some(source.errno),
        }
    }

    /// Whether this is [`MoveError::EventsPending`]: read the events, then resume.
    ///
    /// ```
    /// assert!(remap::mover::MoveError::EventsPending { done: 0 }.is_events_pending());
    /// ```
    pub fn is_events_pending(&self) -> bool {
        matches!(self, MoveError::EventsPending { .. })
    }
}

/// Why a [`Batch::flush`] (or [`Mover::move_pages`]) stopped: the run that failed, how far the
/// batch got, and the [`MoveError`].
///
/// The batch keeps its place: after reading pending events (or fixing the cause), calling
/// [`Batch::flush`] again resumes at the failed page.
///
/// ```
/// use remap::mover::{BatchError, MoveError};
///
/// let err = BatchError {
///     run: 1, page: 5, runs_done: 1, done: 5 * 4096,
///     report: Box::default(), source: MoveError::EventsPending { done: 4096 },
/// };
/// assert!(err.is_events_pending());
/// assert_eq!(err.errno(), Some(uffd::Errno::AGAIN));
/// ```
#[derive(Debug, thiserror::Error)]
#[error("batch stopped in run {run} at page {page} ({runs_done} runs and {done} bytes done)")]
pub struct BatchError {
    /// Index of the failed run (runs are coalesced pushes, in push order).
    pub run: usize,
    /// Index, in push order counting every page pushed, of the first page not done.
    pub page: usize,
    /// Runs completed before the failed one (by this and earlier flushes of the batch).
    pub runs_done: usize,
    /// Bytes of the batch done (by this and earlier flushes).
    pub done: usize,
    /// What this flush did before stopping (boxed to keep the error small).
    pub report: Box<MoveReport>,
    /// The error; its `done` counts bytes of the failed run.
    #[source]
    pub source: MoveError,
}

impl BatchError {
    /// Whether the cause is [`MoveError::EventsPending`].
    ///
    /// ```
    /// # use remap::mover::{BatchError, MoveError};
    /// let err = BatchError { run: 0, page: 0, runs_done: 0, done: 0,
    ///     report: Box::default(), source: MoveError::Hole { done: 0 } };
    /// assert!(!err.is_events_pending());
    /// ```
    pub fn is_events_pending(&self) -> bool {
        self.source.is_events_pending()
    }

    /// The cause's errno ([`MoveError::errno`]).
    ///
    /// ```
    /// # use remap::mover::{BatchError, MoveError};
    /// let err = BatchError { run: 0, page: 0, runs_done: 0, done: 0,
    ///     report: Box::default(), source: MoveError::Hole { done: 0 } };
    /// assert_eq!(err.errno(), Some(uffd::Errno::NOENT));
    /// ```
    pub fn errno(&self) -> Option<Errno> {
        self.source.errno()
    }
}

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

/// One contiguous move: all of `src` to `dst` (ranges of the same length).
#[derive(Debug, Clone, Copy)]
struct Run<'r> {
    dst: PageRange<'r>,
    src: PageRange<'r>,
    /// Index (in push order, counting pages) of the run's first page.
    first_page: usize,
}

impl<'r> Run<'r> {
    fn len(&self) -> usize {
        self.dst.len()
    }

    fn page_size(&self) -> usize {
        self.src.region().page_size()
    }

    /// The parts of the run from byte `off` on: (destination, source). Never `None` for
    /// `off <= len()`.
    #[inline(always)]
    fn rest(&self, off: usize) -> Option<(PageRange<'r>, PageRange<'r>)> {
        let len = self.len();
        Some((self.dst.get(off..len)?, self.src.get(off..len)?))
    }

    /// One page of the run at byte `off`: (destination, source).
    fn page_at(&self, off: usize) -> Option<(PageRange<'r>, PageRange<'r>)> {
        let end = off + self.page_size();
        Some((self.dst.get(off..end)?, self.src.get(off..end)?))
    }

    /// Whether `dst`/`src` continue this run on both sides (same regions, contiguous ranges).
    fn continued_by(&self, dst: &PageRange<'_>, src: &PageRange<'_>) -> bool {
        ptr::eq(self.dst.region(), dst.region())
            && ptr::eq(self.src.region(), src.region())
            && self.dst.offsets().end == dst.offset()
            && self.src.offsets().end == src.offset()
    }
}

/// The page range `off..off + len` of `region`, checked: a page-aligned range inside it.
#[inline(always)]
fn check<'r>(
    region: &'r Region,
    side: Side,
    off: usize,
    len: usize,
) -> Result<PageRange<'r>, MoveError> {
    off.checked_add(len)
        .and_then(|end| region.page_range(off..end).ok())
        .ok_or(MoveError::BadRange {
            side,
            off,
            len,
            region_len: region.len(),
        })
}

/// The part of `[off, off + n)` of a run (destination at `dst_addr`, source at `src_addr`, both
/// run starts) made of whole 2 MiB chunks whose source and destination are both 2 MiB aligned:
/// `(start, end)` offsets, empty when there are none. A chunk counts only if it lies entirely
/// inside `[off, off + n)`, the range of one ioctl.
#[inline(always)]
pub(crate) fn aligned_span(
    dst_addr: usize,
    src_addr: usize,
    off: usize,
    n: usize,
) -> (usize, usize) {
    let (d, s) = (dst_addr + off, src_addr + off);
    if d % HUGE_PAGE_SIZE != s % HUGE_PAGE_SIZE {
        return (off, off);
    }
    let head = (HUGE_PAGE_SIZE - d % HUGE_PAGE_SIZE) % HUGE_PAGE_SIZE;
    if head >= n {
        return (off, off);
    }
    let chunks = (n - head) / HUGE_PAGE_SIZE;
    let start = off + head;
    (start, start + chunks * HUGE_PAGE_SIZE)
}

/// Whether a raw pagemap entry describes a hole (neither present nor swapped).
fn is_hole(entry: u64) -> bool {
    entry & (PM_PRESENT | PM_SWAPPED) == 0
}

/// Which steps of the kernel's walk over a run meet a hole, given the source's pagemap `entries`
/// read right before the walk (one per page, in order), when the destination starts `shift` pages
/// above the source (`None`: it does not overlap the source from above).
///
/// The kernel moves page by page in address order, and re-reads each source page when it gets
/// there. Where the destination overlaps the source from above, step `i` writes source page
/// `i + shift`, so that page is present at its own step when it was populated before the walk or
/// when step `i` moved a page into it (it never was both: that step would have failed with
/// EEXIST). A page can so cascade to the end of the run; below the source nothing is read twice.
fn walk_holes(entries: &[u64], shift: Option<usize>) -> Vec<bool> {
    let mut holes: Vec<bool> = entries.iter().map(|&e| is_hole(e)).collect();
    if let Some(shift) = shift.filter(|&s| s > 0) {
        for i in shift..holes.len() {
            if !holes[i - shift] {
                holes[i] = false;
            }
        }
    }
    holes
}

/// Hole bytes among the pages `[off, off + n)` of a run, given the walk's `holes` (see
/// [`walk_holes`]) from offset `from`: `(inside the aligned span, outside it)`.
#[cold]
#[inline(never)]
fn count_holes(
    holes: &[bool],
    from: usize,
    off: usize,
    n: usize,
    page: usize,
    in_span: impl Fn(usize) -> bool,
) -> (usize, usize) {
    let (mut inside, mut outside) = (0, 0);
    for p in (off..off + n).step_by(page) {
        if holes[(p - from) / page] {
            if in_span(p) {
                inside += page;
            } else {
                outside += page;
            }
        }
    }
    (inside, outside)
}

/// The inspecting path's state for one run: the source's pagemap entries for hole counting (and
/// the run offset they start at), and, for PMD verification, which aligned 2 MiB source chunks of
/// the next ioctl were PMD-mapped THPs right before it.
struct Inspect {
    holes: Option<(Vec<bool>, usize)>,
    verify: bool,
    source_thp: Vec<bool>,
    /// Run offset of the first chunk in `source_thp`.
    planned_from: usize,
    /// Verified whole-PMD bytes of the last ioctl.
    whole_pmd: usize,
}

impl Inspect {
    /// Before an ioctl over `[off, off + len)` of a run: with verification, records which aligned
    /// chunks of it are PMD-mapped THPs at the source.
    #[cold]
    fn before(&mut self, dst_addr: usize, src_addr: usize, off: usize, len: usize) {
        if !self.verify {
            return;
        }
        let (a, b) = aligned_span(dst_addr, src_addr, off, len);
        self.planned_from = a;
        self.source_thp.clear();
        let chunks = (a..b).step_by(HUGE_PAGE_SIZE);
        self.source_thp
            .extend(chunks.map(|c| thp_mapped(src_addr + c)));
    }

    /// After an ioctl moved `[off, off + moved)` of a run, with aligned span `span`: returns the
    /// hole bytes (inside the span, outside it), and with verification sets `whole_pmd` to the
    /// bytes of chunks that were THPs at the source before and are THPs at the destination now.
    #[cold]
    fn after(
        &mut self,
        dst_addr: usize,
        off: usize,
        moved: usize,
        span: (usize, usize),
        page: usize,
    ) -> (usize, usize) {
        let (a, b) = span;
        let holes = match &self.holes {
            Some((holes, from)) => {
                count_holes(holes, *from, off, moved, page, |p| (a..b).contains(&p))
            }
            None => (0, 0),
        };
        if self.verify {
            for c in (a..b).step_by(HUGE_PAGE_SIZE) {
                let index = (c - self.planned_from) / HUGE_PAGE_SIZE;
                let was_thp = self.source_thp.get(index).copied().unwrap_or(false);
                if was_thp && thp_mapped(dst_addr + c) {
                    self.whole_pmd += HUGE_PAGE_SIZE;
                }
            }
        }
        holes
    }
}

/// [`crate::inspect::is_thp_mapped`] for verification: a failure to read `/proc` counts as "not
/// verified" (the statistic stays a lower bound) and is logged.
fn thp_mapped(addr: usize) -> bool {
    crate::inspect::is_thp_mapped(addr).unwrap_or_else(|error| {
        tracing::debug!(addr, %error, "mover: PMD verification could not read /proc");
        false
    })
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

    /// The same mover with `options`.
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
    pub fn move_range(
        &self,
        dst: &Region,
        dst_off: usize,
        src: &Region,
        src_off: usize,
        len: usize,
    ) -> Result<MoveReport, MoveError> {
        let dst = check(dst, Side::Destination, dst_off, len)?;
        let src = check(src, Side::Source, src_off, len)?;
        let mut report = MoveReport::default();
        if len == 0 {
            return Ok(report);
        }
        let run = Run {
            dst,
            src,
            first_page: 0,
        };
        let mut progress = 0;
        report.runs = 1;
        let mut result = self.drive(&run, &mut progress, &mut report);
        if self.options.wake == Wake::PerRange && progress > 0 {
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
        let mut batch = self.batch();
        for (i, &(d, s)) in pairs.iter().enumerate() {
            if let Err(source) = batch.push_page(dst, d, src, s) {
                return Err(BatchError {
                    run: batch.runs.len(),
                    page: i,
                    runs_done: 0,
                    done: 0,
                    report: Box::default(),
                    source,
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
        Batch {
            mover: self,
            runs: Vec::new(),
            pages: 0,
            next: 0,
            progress: 0,
            woken: (0, 0),
        }
    }

    /// The pagemap, opened on first use (only for hole counting).
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

    /// Moves what is left of `run` after `*progress` bytes, advancing `*progress` as pages arrive
    /// and counting into `report`.
    ///
    /// The common path is [`drive_with`](Self::drive_with) without inspection. Hole counting and
    /// PMD verification read `/proc` and allocate, so they live in a separate, cold function: kept
    /// out of line, the hot loop holds no `Vec` (whose drop code, even unused, made it touch one
    /// more page right after the ioctl in the 4 KiB bench).
    #[inline]
    fn drive(
        &self,
        run: &Run<'_>,
        progress: &mut usize,
        report: &mut MoveReport,
    ) -> Result<(), MoveError> {
        let counting = self.options.holes == HolePolicy::Skip && self.options.count_holes;
        if counting || self.options.verify_pmd {
            return self.drive_inspecting(run, progress, report, counting);
        }
        self.drive_with(run, progress, report, None)
    }

    /// [`drive`](Self::drive) with hole counting and/or PMD verification.
    #[cold]
    #[inline(never)]
    fn drive_inspecting(
        &self,
        run: &Run<'_>,
        progress: &mut usize,
        report: &mut MoveReport,
        counting: bool,
    ) -> Result<(), MoveError> {
        let from = *progress;
        let holes = if counting {
            Some((self.read_holes(run, from)?, from))
        } else {
            None
        };
        let mut inspect = Inspect {
            holes,
            verify: self.options.verify_pmd,
            source_thp: Vec::new(),
            planned_from: 0,
            whole_pmd: 0,
        };
        self.drive_with(run, progress, report, Some(&mut inspect))
    }

    /// The move loop.
    #[inline(always)]
    fn drive_with(
        &self,
        run: &Run<'_>,
        progress: &mut usize,
        report: &mut MoveReport,
        mut inspect: Option<&mut Inspect>,
    ) -> Result<(), MoveError> {
        let flags = self.options.move_flags();
        let dst_addr = run.dst.addr();
        let src_addr = run.src.addr();
        let len = run.len();
        tracing::trace!(dst = dst_addr, src = src_addr, len, "mover: run");
        while *progress < len {
            let off = *progress;
            if let Some(inspect) = inspect.as_deref_mut() {
                inspect.before(dst_addr, src_addr, off, len - off);
            }
            report.move_ioctls += 1;
            let step = match run.rest(off) {
                Some((dst, src)) => dst.move_from(&self.uffd, src, flags),
                None => Err(RangeError::Invalid { done: 0 }),
            };
            let moved = match step {
                Ok(n) => n,
                Err(RangeError::Partial { done }) => {
                    report.retries += 1;
                    done + self.recount(run, off + done, Errno::AGAIN, report)
                }
                Err(err @ (RangeError::Exists { done } | RangeError::EventsPending { done })) => {
                    match self.recount(run, off + done, err.errno(), report) {
                        0 => {
                            self.refused(run, err, progress, report)?;
                            continue;
                        }
                        extra => {
                            report.retries += 1;
                            done + extra
                        }
                    }
                }
                Err(err) => {
                    self.refused(run, err, progress, report)?;
                    continue;
                }
            };
            let (a, b) = aligned_span(dst_addr, src_addr, off, moved);
            let (mut aligned, mut pte) = (b - a, moved - (b - a));
            if let Some(inspect) = inspect.as_deref_mut() {
                let page = run.page_size();
                let (hole_aligned, hole_pte) = inspect.after(dst_addr, off, moved, (a, b), page);
                report.hole_bytes += (hole_aligned + hole_pte) as u64;
                aligned -= hole_aligned;
                pte -= hole_pte;
                report.whole_pmd_bytes += inspect.whole_pmd as u64;
                inspect.whole_pmd = 0;
            }
            report.aligned_bytes += aligned as u64;
            report.pte_bytes += pte as u64;
            *progress += moved;
        }
        Ok(())
    }

    /// Which pages of `run` from `from` on the kernel's walk will find to be holes, from the
    /// source's pagemap now (for hole counting; see [`walk_holes`]).
    #[cold]
    #[inline(never)]
    fn read_holes(&self, run: &Run<'_>, from: usize) -> Result<Vec<bool>, MoveError> {
        let page = run.page_size();
        let pages = (run.len() - from) / page;
        let (src, dst) = (run.src.addr() + from, run.dst.addr() + from);
        let entries = self
            .pagemap()
            .and_then(|p| p.entries(src, pages))
            .map_err(|source| MoveError::Inspect { done: from, source })?;
        // The destination overlaps the rest of the run's source from above.
        let shift = (dst > src && dst < src + (run.len() - from)).then(|| (dst - src) / page);
        Ok(walk_holes(&entries, shift))
    }

    /// Handles a failed move at `*progress` of `run`: a refused page under
    /// [`BusyPolicy::CopyFallback`] is copied (`Ok`, go on); everything else is the error.
    /// After a MOVE of `run` that failed or came back short with the kernel counting the run's
    /// bytes before `from`: the bytes from `from` on that the kernel moved all the same (see the
    /// [module docs](self#kernel-undercounts)). Walks pagemap page by page (one `pread` each)
    /// while the source page is gone (neither present nor swapped) and the destination page is
    /// there (present, or a swap or migration entry); 0 at once for a page still at its source,
    /// or if pagemap cannot be read (the kernel's count is then believed).
    #[cold]
    #[inline(never)]
    fn recount(&self, run: &Run<'_>, from: usize, errno: Errno, report: &mut MoveReport) -> usize {
        let Ok(pagemap) = self.pagemap() else {
            return 0;
        };
        let page = run.page_size();
        let (src, dst) = (run.src.addr(), run.dst.addr());
        // An entry that cannot be read counts as neither gone nor there: the count is believed.
        let gone = |addr: usize| pagemap.entry(addr).is_some_and(is_hole);
        let there = |addr: usize| pagemap.entry(addr).is_some_and(|e| !is_hole(e));
        let mut extra = 0;
        while from + extra < run.len() && gone(src + from + extra) && there(dst + from + extra) {
            extra += page;
        }
        if extra > 0 {
            report.kernel_undercounts += 1;
            tracing::warn!(
                %errno,
                counted = from,
                uncounted = extra,
                src = src + from,
                dst = dst + from,
                "mover: UFFDIO_MOVE moved pages it did not count (kernel bug, see \
                 docs/findings/move-undercounts-a-moved-page.md); counting them from pagemap"
            );
        }
        extra
    }

    #[cold]
    #[inline(never)]
    fn refused(
        &self,
        run: &Run<'_>,
        err: RangeError,
        progress: &mut usize,
        report: &mut MoveReport,
    ) -> Result<(), MoveError> {
        let done = *progress;
        match err {
            RangeError::EventsPending { .. } => {
                tracing::debug!(done, "mover: events pending");
                Err(MoveError::EventsPending { done })
            }
            RangeError::Busy { .. } if self.options.busy == BusyPolicy::CopyFallback => {
                self.copy_fallback(run, progress, report)
            }
            RangeError::Busy { .. } => Err(MoveError::Busy { done }),
            RangeError::Missing { .. } if self.options.holes == HolePolicy::Error => {
                Err(MoveError::Hole { done })
            }
            source => Err(MoveError::Move { done, source }),
        }
    }

    /// Copies the page at `*progress` of `run`, which the kernel refused to move, and drops it from
    /// the source.
    #[cold]
    #[inline(never)]
    fn copy_fallback(
        &self,
        run: &Run<'_>,
        progress: &mut usize,
        report: &mut MoveReport,
    ) -> Result<(), MoveError> {
        let off = *progress;
        let page = run.page_size();
        tracing::debug!(src = run.src.addr() + off, "mover: EBUSY, copying the page");
        report.copy_ioctls += 1;
        let copied = match run.page_at(off) {
            Some((dst, src)) => dst.copy_from(&self.uffd, src, self.options.copy_flags()),
            None => Err(RangeError::Invalid { done: 0 }),
        };
        match copied {
            Ok(_) => {}
            Err(RangeError::EventsPending { .. }) => {
                return Err(MoveError::EventsPending { done: off })
            }
            Err(source) => return Err(MoveError::Copy { done: off, source }),
        }
        report.copied_bytes += page as u64;
        *progress += page;
        report.discards += 1;
        let s = run.src.offset() + off;
        run.src
            .region()
            .madvise_dontneed(s..s + page)
            .map_err(|source| MoveError::Discard {
                done: *progress,
                source,
            })
    }
}

/// Page moves collected for one [`flush`](Batch::flush), possibly across several region pairs.
///
/// Pushes are kept in order; a push that continues the previous one on both sides (same region
/// pair, contiguous destination and source) extends it, and each resulting run is one
/// `UFFDIO_MOVE`. After an error the batch keeps its place, so a second `flush` resumes at the
/// page that failed; after a successful flush it is empty and can be reused (its allocation is
/// kept).
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
/// let (src_a, src_b) = (Region::builder(2 * 4096).populate(true).build()?, Region::builder(4096).populate(true).build()?);
/// let dst = Region::new(4 * 4096)?;
/// mover.register(&dst)?;
/// remap::pattern::fill(&src_a, 1);
/// remap::pattern::fill(&src_b, 2);
///
/// let mut batch = mover.batch();
/// batch.push_page(&dst, 0, &src_a, 0)?;
/// batch.push_page(&dst, 1, &src_a, 1)?; // coalesced with the first
/// batch.push_page(&dst, 3, &src_b, 0)?; // another region pair: a new run
/// assert_eq!(batch.runs(), 2);
/// let report = batch.flush()?;
/// assert_eq!((report.runs, report.move_ioctls), (2, 2));
/// assert_eq!(remap::pattern::verify_page(&dst, 3, 2, 0), Ok(()));
/// assert!(batch.is_empty());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct Batch<'m, 'r> {
    mover: &'m Mover,
    runs: Vec<Run<'r>>,
    /// Pages pushed so far.
    pages: usize,
    /// The first run not completed.
    next: usize,
    /// Bytes of `runs[next]` done.
    progress: usize,
    /// Everything before `(run, bytes)` has been woken (with [`Wake::PerRange`]).
    woken: (usize, usize),
}

impl<'r> Batch<'_, 'r> {
    /// Adds a move of source page `src_page` to destination page `dst_page` (page indices).
    ///
    /// ```
    /// # let mover = remap::mover::Mover::new(uffd::Uffd::new()?);
    /// # let (dst, src) = (remap::region::Region::new(4096)?, remap::region::Region::new(4096)?);
    /// let mut batch = mover.batch();
    /// batch.push_page(&dst, 0, &src, 0)?;
    /// assert!(batch.push_page(&dst, 1, &src, 0).is_err()); // out of range
    /// assert_eq!(batch.pages(), 1);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`MoveError::BadRange`] if a page index is outside its region; nothing is added.
    pub fn push_page(
        &mut self,
        dst: &'r Region,
        dst_page: usize,
        src: &'r Region,
        src_page: usize,
    ) -> Result<(), MoveError> {
        let page = src.page_size();
        let off = |index: usize| index.saturating_mul(page);
        self.push_range(dst, off(dst_page), src, off(src_page), page)
    }

    /// Adds a move of `len` bytes from `src` at `src_off` to `dst` at `dst_off` (byte offsets,
    /// page-aligned).
    ///
    /// ```
    /// # let mover = remap::mover::Mover::new(uffd::Uffd::new()?);
    /// # let (dst, src) = (remap::region::Region::new(4 * 4096)?, remap::region::Region::new(4 * 4096)?);
    /// let mut batch = mover.batch();
    /// batch.push_range(&dst, 0, &src, 0, 2 * 4096)?;
    /// batch.push_range(&dst, 2 * 4096, &src, 2 * 4096, 4096)?; // extends the run
    /// assert_eq!((batch.runs(), batch.pages()), (1, 3));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`MoveError::BadRange`] if a range is unaligned or outside its region; nothing is added.
    pub fn push_range(
        &mut self,
        dst: &'r Region,
        dst_off: usize,
        src: &'r Region,
        src_off: usize,
        len: usize,
    ) -> Result<(), MoveError> {
        let dst = check(dst, Side::Destination, dst_off, len)?;
        let src = check(src, Side::Source, src_off, len)?;
        self.push(dst, src)
    }

    /// Adds a move of all of `src` to `dst`, checked page ranges of the same length.
    ///
    /// ```
    /// # let mover = remap::mover::Mover::new(uffd::Uffd::new()?);
    /// # let (dst, src) = (remap::region::Region::new(4 * 4096)?, remap::region::Region::new(4 * 4096)?);
    /// let mut batch = mover.batch();
    /// batch.push(dst.page_range(0..8192)?, src.page_range(4096..12288)?)?;
    /// assert_eq!(batch.pages(), 2);
    /// assert!(batch.push(dst.page_range(0..4096)?, src.page_range(0..8192)?).is_err());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`MoveError::BadRange`] (naming the source) if the lengths differ; nothing is added.
    pub fn push(&mut self, dst: PageRange<'r>, src: PageRange<'r>) -> Result<(), MoveError> {
        if dst.len() != src.len() {
            return Err(MoveError::BadRange {
                side: Side::Source,
                off: src.offset(),
                len: src.len(),
                region_len: src.region().len(),
            });
        }
        if dst.is_empty() {
            return Ok(());
        }
        let pages = dst.pages();
        let next = self.next;
        let len_runs = self.runs.len();
        if let Some(last) = self.runs.last_mut() {
            if len_runs > next && last.continued_by(&dst, &src) {
                let len = last.len() + dst.len();
                // Cannot fail: both continue the run inside their regions.
                if let (Some(d), Some(s)) = (
                    dst.region()
                        .page_range(last.dst.offset()..last.dst.offset() + len)
                        .ok(),
                    src.region()
                        .page_range(last.src.offset()..last.src.offset() + len)
                        .ok(),
                ) {
                    last.dst = d;
                    last.src = s;
                    self.pages += pages;
                    return Ok(());
                }
            }
        }
        self.runs.push(Run {
            dst,
            src,
            first_page: self.pages,
        });
        self.pages += pages;
        Ok(())
    }

    /// Runs collected (after coalescing), completed ones of an interrupted flush included.
    ///
    /// ```
    /// # let mover = remap::mover::Mover::new(uffd::Uffd::new()?);
    /// assert_eq!(mover.batch().runs(), 0);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn runs(&self) -> usize {
        self.runs.len()
    }

    /// Pages pushed.
    ///
    /// ```
    /// # let mover = remap::mover::Mover::new(uffd::Uffd::new()?);
    /// assert_eq!(mover.batch().pages(), 0);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn pages(&self) -> usize {
        self.pages
    }

    /// Whether nothing is left to flush.
    ///
    /// ```
    /// # let mover = remap::mover::Mover::new(uffd::Uffd::new()?);
    /// assert!(mover.batch().is_empty());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn is_empty(&self) -> bool {
        self.next >= self.runs.len()
    }

    /// Forgets everything pushed (and where an interrupted flush stopped).
    ///
    /// ```
    /// # let mover = remap::mover::Mover::new(uffd::Uffd::new()?);
    /// # let (dst, src) = (remap::region::Region::new(4096)?, remap::region::Region::new(4096)?);
    /// let mut batch = mover.batch();
    /// batch.push_page(&dst, 0, &src, 0)?;
    /// batch.clear();
    /// assert!(batch.is_empty());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn clear(&mut self) {
        self.runs.clear();
        self.pages = 0;
        self.next = 0;
        self.progress = 0;
        self.woken = (0, 0);
    }

    /// Bytes of the batch done so far.
    fn done(&self) -> usize {
        self.runs[..self.next]
            .iter()
            .map(|r| r.len())
            .sum::<usize>()
            + self.progress
    }

    /// Moves every run not yet done, in push order, then (with [`Wake::PerRange`]) wakes each
    /// coalesced destination range. On success the batch is emptied.
    ///
    /// See [`Batch`] for an example.
    ///
    /// # Errors
    ///
    /// A [`BatchError`] naming the run and page where it stopped. What was moved before is woken
    /// (with [`Wake::PerRange`]) and stays moved; the batch keeps its place, so calling `flush`
    /// again resumes there, for example after reading the events behind
    /// [`MoveError::EventsPending`].
    pub fn flush(&mut self) -> Result<MoveReport, BatchError> {
        let mover = self.mover;
        let mut report = MoveReport::default();
        while self.next < self.runs.len() {
            let run = self.runs[self.next];
            if self.progress == 0 {
                report.runs += 1;
            }
            if let Err(source) = mover.drive(&run, &mut self.progress, &mut report) {
                // Wake what arrived, so no faulting thread waits on a page that is there.
                // The move error is the one to report; a failed wake (EINVAL, only for a range
                // the kernel finds invalid) is logged.
                if let Err(wake) = self.wake_done(&mut report) {
                    tracing::debug!(error = %wake, "mover: wake after error failed");
                }
                let err = BatchError {
                    run: self.next,
                    page: run.first_page + self.progress / run.page_size(),
                    runs_done: self.next,
                    done: self.done(),
                    report: Box::new(report),
                    source,
                };
                mover.stats.add(&report, true);
                tracing::debug!(run = err.run, page = err.page, "mover: batch stopped");
                return Err(err);
            }
            self.next += 1;
            self.progress = 0;
        }
        let result = self.wake_done(&mut report);
        mover.stats.add(&report, result.is_err());
        match result {
            Ok(()) => {
                self.clear();
                Ok(report)
            }
            Err(source) => Err(BatchError {
                run: self.runs.len(),
                page: self.pages,
                runs_done: self.runs.len(),
                done: self.done(),
                report: Box::new(report),
                source,
            }),
        }
    }

    /// With [`Wake::PerRange`], wakes everything done and not yet woken, merging adjacent
    /// destination ranges of one region.
    fn wake_done(&mut self, report: &mut MoveReport) -> Result<(), MoveError> {
        if self.mover.options.wake != Wake::PerRange {
            return Ok(());
        }
        let (from_run, from_off) = self.woken;
        let end_run = self.next.min(self.runs.len().saturating_sub(1));
        let mut pending: Option<(&Region, usize, usize)> = None;
        let mut first_err = None;
        let mover = self.mover;
        let mut flush_pending = |p: Option<(&Region, usize, usize)>, report: &mut MoveReport| {
            if let Some((region, off, len)) = p {
                let range = region.page_range(off..off + len).ok();
                if let Err(source) = mover.wake(range, report) {
                    first_err.get_or_insert(source);
                }
            }
        };
        for i in from_run..=end_run.max(from_run) {
            let Some(run) = self.runs.get(i) else { break };
            let start = if i == from_run { from_off } else { 0 };
            let end = if i == self.next {
                self.progress
            } else {
                run.len()
            };
            if end <= start {
                continue;
            }
            let (off, len) = (run.dst.offset() + start, end - start);
            match pending {
                Some((region, p_off, p_len))
                    if ptr::eq(region, run.dst.region()) && p_off + p_len == off =>
                {
                    pending = Some((region, p_off, p_len + len));
                }
                _ => {
                    flush_pending(pending.take(), report);
                    pending = Some((run.dst.region(), off, len));
                }
            }
        }
        flush_pending(pending, report);
        self.woken = (self.next, self.progress);
        match first_err {
            None => Ok(()),
            // After a fully successful flush `progress` is 0 (the last run completed), so the
            // bytes done are the batch's, not the current run's.
            Some(source) => Err(MoveError::Wake {
                done: self.done(),
                source,
            }),
        }
    }
}
