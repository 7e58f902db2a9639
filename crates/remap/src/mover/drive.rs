//! The drive loop: one run moved ioctl by ioctl, with retries after partial progress, the
//! kernel-undercount defence, and the EBUSY and hole policies.

use std::ptr;

use uffd::{Errno, RangeError};

use super::verify::{is_hole, Inspect};
use super::{BusyPolicy, HolePolicy, MoveError, MoveOptions, MoveReport, Mover, Side};
use crate::region::{PageRange, Region, HUGE_PAGE_SIZE};

/// One contiguous move: all of `src` to `dst` (ranges of the same length).
#[derive(Debug, Clone, Copy)]
pub(super) struct Run<'r> {
    pub(super) dst: PageRange<'r>,
    pub(super) src: PageRange<'r>,
    /// Index (in push order, counting pages) of the run's first page.
    pub(super) first_page: usize,
}

impl<'r> Run<'r> {
    pub(super) fn len(&self) -> usize {
        self.dst.len()
    }

    pub(super) fn page_size(&self) -> usize {
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
    pub(super) fn continued_by(&self, dst: &PageRange<'_>, src: &PageRange<'_>) -> bool {
        ptr::eq(self.dst.region(), dst.region())
            && ptr::eq(self.src.region(), src.region())
            && self.dst.offsets().end == dst.offset()
            && self.src.offsets().end == src.offset()
    }
}

/// The page range `off..off + len` of `region`, checked: a page-aligned range inside it.
#[inline(always)]
pub(super) fn check<'r>(
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
pub(super) fn aligned_span(
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

impl Mover {
    /// Moves what is left of `run` after `*progress` bytes, advancing `*progress` as pages arrive
    /// and counting into `report`.
    ///
    /// The common path is [`drive_with`](Self::drive_with) without inspection. Hole counting and
    /// PMD verification read `/proc` and allocate, so they live in a separate, cold function: kept
    /// out of line, the hot loop holds no `Vec` (whose drop code, even unused, made it touch one
    /// more page right after the ioctl in the 4 KiB bench).
    #[inline]
    pub(super) fn drive(
        &self,
        options: &MoveOptions,
        run: &Run<'_>,
        progress: &mut usize,
        report: &mut MoveReport,
        first: Option<Result<usize, RangeError>>,
    ) -> Result<(), MoveError> {
        if options.inspects() {
            let counting = options.holes == HolePolicy::Skip && options.count_holes;
            return self.drive_inspecting(options, run, progress, report, counting);
        }
        self.drive_with(options, run, progress, report, None, first)
    }

    /// [`drive`](Self::drive) with hole counting and/or PMD verification.
    #[cold]
    #[inline(never)]
    fn drive_inspecting(
        &self,
        options: &MoveOptions,
        run: &Run<'_>,
        progress: &mut usize,
        report: &mut MoveReport,
        counting: bool,
    ) -> Result<(), MoveError> {
        let from = *progress;
        let holes = if counting || options.verify_counts {
            Some((self.read_holes(run, from)?, from))
        } else {
            None
        };
        let mut inspect = Inspect {
            holes,
            count_holes: counting,
            verify: options.verify_pmd,
            source_thp: Vec::new(),
            planned_from: 0,
            whole_pmd: 0,
        };
        self.drive_with(options, run, progress, report, Some(&mut inspect), None)
    }

    /// The move loop.
    #[inline(always)]
    fn drive_with(
        &self,
        options: &MoveOptions,
        run: &Run<'_>,
        progress: &mut usize,
        report: &mut MoveReport,
        mut inspect: Option<&mut Inspect>,
        mut first: Option<Result<usize, RangeError>>,
    ) -> Result<(), MoveError> {
        let flags = options.move_flags();
        let dst_addr = run.dst.addr();
        let src_addr = run.src.addr();
        let len = run.len();
        // No `tracing` event here: even disabled, its level check reads a global that the
        // previous ioctl has evicted (~10 ns of a ~1.6 us whole-PMD move, measured); the cold
        // paths (errors, retries, undercounts) log.
        while *progress < len {
            let off = *progress;
            if let Some(inspect) = inspect.as_deref_mut() {
                inspect.before(dst_addr, src_addr, off, len - off);
            }
            report.move_ioctls += 1;
            // The whole run on the first ioctl (almost always the only one): no sub-ranges; its
            // outcome may come from the caller's fast path (`first`, without inspection).
            let step = if let Some(step) = first.take() {
                step
            } else if off == 0 {
                run.dst.move_from(&self.uffd, run.src, flags)
            } else {
                match run.rest(off) {
                    Some((dst, src)) => dst.move_from(&self.uffd, src, flags),
                    None => Err(RangeError::Invalid { done: 0 }),
                }
            };
            let moved = match step {
                Ok(n) => n,
                Err(RangeError::Partial { done }) => {
                    report.retries += 1;
                    let before = inspect.as_deref().and_then(Inspect::source_before);
                    done + self.recount(options, run, off, done, Errno::AGAIN, before, report)
                }
                Err(err @ (RangeError::Exists { done } | RangeError::EventsPending { done })) => {
                    let before = inspect.as_deref().and_then(Inspect::source_before);
                    match self.recount(options, run, off, done, err.errno(), before, report) {
                        0 => {
                            self.refused(options, run, err, progress, report)?;
                            continue;
                        }
                        extra => {
                            report.retries += 1;
                            done + extra
                        }
                    }
                }
                Err(err) => {
                    self.refused(options, run, err, progress, report)?;
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
    /// After a MOVE of `run` from `off` that failed or came back short with the kernel counting
    /// `done` bytes: the bytes after those that the kernel moved all the same (see the
    /// [module docs](crate::mover#kernel-undercounts)).
    ///
    /// A page counts only when it left the source *and* arrived: pagemap shows the source page
    /// gone (neither present nor swapped) and the destination page there (present, or a swap or
    /// migration entry), and the source page was populated before the ioctl. That last part is
    /// what tells a moved page from a source hole moved onto a destination populated before the
    /// ioctl, which the kernel refuses with EEXIST and which looks the same afterwards:
    ///
    /// - with `before` (the source's state read before the run: [`MoveOptions::verify_counts`]
    ///   or hole counting), exactly;
    /// - otherwise, under [`HolePolicy::Error`], on the caller's word that the source has no
    ///   holes; under [`HolePolicy::Skip`] holes are expected, so nothing is counted (the kernel's
    ///   count is believed: a page it moved uncounted then makes the resumed move fail with
    ///   EEXIST, and nothing is lost).
    ///
    /// (The kernel reports a stop after progress as a short count, whatever stopped it, EEXIST
    /// included, so the kind of error does not tell the two apart either.)
    ///
    /// Walks pagemap page by page (one `pread` each); 0 at once for a page still at its source,
    /// or if pagemap cannot be read (the kernel's count is then believed).
    #[cold]
    #[inline(never)]
    #[allow(clippy::too_many_arguments)]
    fn recount(
        &self,
        options: &MoveOptions,
        run: &Run<'_>,
        off: usize,
        done: usize,
        errno: Errno,
        before: Option<(&[bool], usize)>,
        report: &mut MoveReport,
    ) -> usize {
        let Ok(pagemap) = self.pagemap() else {
            return 0;
        };
        let from = off + done;
        let page = run.page_size();
        let (src, dst) = (run.src.addr(), run.dst.addr());
        // Whether the source page at run offset `at` was populated before the ioctl.
        let populated_before = |at: usize| match before {
            Some((holes, start)) => {
                at >= start && holes.get((at - start) / page).is_some_and(|&hole| !hole)
            }
            None => options.holes == HolePolicy::Error,
        };
        // An entry that cannot be read counts as neither gone nor there: the count is believed.
        let gone = |addr: usize| pagemap.entry(addr).is_some_and(is_hole);
        let there = |addr: usize| pagemap.entry(addr).is_some_and(|e| !is_hole(e));
        let mut extra = 0;
        while from + extra < run.len()
            && populated_before(from + extra)
            && gone(src + from + extra)
            && there(dst + from + extra)
        {
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

    /// Handles a failed move at `*progress` of `run`: a refused page under
    /// [`BusyPolicy::CopyFallback`] is copied (`Ok`, go on); everything else is the error.
    #[cold]
    #[inline(never)]
    fn refused(
        &self,
        options: &MoveOptions,
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
            RangeError::Busy { .. } if options.busy == BusyPolicy::CopyFallback => {
                self.copy_fallback(options, run, progress, report)
            }
            RangeError::Busy { .. } => Err(MoveError::Busy { done }),
            RangeError::Missing { .. } if options.holes == HolePolicy::Error => {
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
        options: &MoveOptions,
        run: &Run<'_>,
        progress: &mut usize,
        report: &mut MoveReport,
    ) -> Result<(), MoveError> {
        let off = *progress;
        let page = run.page_size();
        tracing::debug!(src = run.src.addr() + off, "mover: EBUSY, copying the page");
        report.copy_ioctls += 1;
        let copied = match run.page_at(off) {
            Some((dst, src)) => dst.copy_from(&self.uffd, src, options.copy_flags()),
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
