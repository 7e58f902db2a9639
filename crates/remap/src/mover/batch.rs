//! [`Batch`]: page moves collected across region pairs, coalesced into runs, flushed together.

use std::ptr;

use super::drive::{check, Run};
use super::{BatchError, MoveError, MoveOptions, MoveReport, Mover, Side, Wake};
use crate::region::{PageRange, Region};

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
    pub(super) mover: &'m Mover,
    /// The policies of this batch's flushes.
    pub(super) options: MoveOptions,
    pub(super) runs: Vec<Run<'r>>,
    /// Pages pushed so far.
    pub(super) pages: usize,
    /// The first run not completed.
    pub(super) next: usize,
    /// Bytes of `runs[next]` done.
    pub(super) progress: usize,
    /// Everything before `(run, bytes)` has been woken (with [`Wake::PerRange`]).
    pub(super) woken: (usize, usize),
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

    /// The policies this batch's flushes use ([`Mover::batch_with`], or the mover's own).
    ///
    /// ```
    /// # let mover = remap::mover::Mover::new(uffd::Uffd::new()?);
    /// assert_eq!(*mover.batch().options(), *mover.options());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn options(&self) -> &MoveOptions {
        &self.options
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
            if let Err(run_error) =
                mover.drive(&self.options, &run, &mut self.progress, &mut report, None)
            {
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
                    batch_done: self.done(),
                    report: Box::new(report),
                    run_error,
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
            Err(run_error) => Err(BatchError {
                run: self.runs.len(),
                page: self.pages,
                runs_done: self.runs.len(),
                batch_done: self.done(),
                report: Box::new(report),
                run_error,
            }),
        }
    }

    /// With [`Wake::PerRange`], wakes everything done and not yet woken, merging adjacent
    /// destination ranges of one region.
    fn wake_done(&mut self, report: &mut MoveReport) -> Result<(), MoveError> {
        if self.options.wake != Wake::PerRange {
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
