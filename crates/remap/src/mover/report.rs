//! What the mover did: [`MoveReport`] per operation, [`MoverStats`] since the mover was made.

use std::sync::atomic::AtomicU64;

use crate::counters;

#[allow(unused_imports)] // for intra-doc links
use super::Batch;
#[allow(unused_imports)] // for intra-doc links
use super::{BusyPolicy, HolePolicy, MoveOptions, Mover};

crate::counters! {
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
    pub struct MoveReport;
    /// The live counters behind [`MoverStats::totals`], one per [`MoveReport`] field.
    pub(super) struct ReportCounters {
        /// Bytes moved in 2 MiB chunks issued aligned: source and destination both 2 MiB aligned and
        /// the whole chunk inside one ioctl. The kernel moved these whole-PMD only when the source was
        /// a PMD-mapped THP and the destination PMD empty, and page by page otherwise: an upper bound
        /// on whole-PMD moves, not a count (see [`whole_pmd_bytes`](#structfield.whole_pmd_bytes)
        /// and the [module docs](crate::mover#whole-pmd-moves)).
        aligned_bytes,
        /// With [`MoveOptions::verify_pmd`]: the part of `aligned_bytes` verified to have moved whole
        /// (the source chunk was a PMD-mapped THP before the ioctl, the destination chunk is one
        /// after it). Always 0 without verification.
        whole_pmd_bytes,
        /// The other bytes moved by `UFFDIO_MOVE`, page by page.
        pte_bytes,
        /// Bytes copied by the EBUSY fallback ([`BusyPolicy::CopyFallback`]).
        copied_bytes,
        /// Source holes skipped ([`HolePolicy::Skip`] with [`MoveOptions::count_holes`]); without
        /// `count_holes` the kernel's count of them is in `pte_bytes`/`aligned_bytes`.
        hole_bytes,
        /// Coalesced runs (contiguous destination and source ranges) processed.
        runs,
        /// `UFFDIO_MOVE` ioctls issued, failed ones included.
        move_ioctls,
        /// `UFFDIO_COPY` ioctls issued by the fallback.
        copy_ioctls,
        /// `UFFDIO_WAKE` ioctls issued.
        wake_ioctls,
        /// `MADV_DONTNEED` calls issued by the fallback.
        discards,
        /// Moves re-issued after partial progress.
        retries,
        /// Failed or short MOVE ioctls whose count the mover corrected from pagemap because the
        /// kernel had moved more pages than it reported (Linux 6.18 under page migration, see
        /// `docs/findings/move-undercounts-a-moved-page.md` and the
        /// [module docs](crate::mover#kernel-undercounts)). The pages it found moved are in the moved bytes.
        kernel_undercounts,
    }
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

/// The atomic counters behind [`MoverStats`]: the [`MoveReport`] totals, operations and errors,
/// plus `single`.
///
/// Cache-line aligned, `single` first and the byte counters right after it: the fast path's two
/// atomic adds touch one line, which nothing else in the [`Mover`] shares.
#[derive(Debug, Default)]
#[repr(C, align(64))]
pub(super) struct AtomicStats {
    /// Operations that were one run moved by one successful ioctl and nothing else: each stands
    /// for one operation, one run and one move ioctl, so the common case costs two atomic adds
    /// (this and its bytes) instead of four.
    single: AtomicU64,
    totals: ReportCounters,
    operations: AtomicU64,
    errors: AtomicU64,
}

impl AtomicStats {
    /// Adds one operation's report. Relaxed: the counters are independent tallies. Zero fields
    /// are skipped.
    #[inline]
    pub(super) fn add(&self, r: &MoveReport, failed: bool) {
        let single = MoveReport {
            aligned_bytes: r.aligned_bytes,
            pte_bytes: r.pte_bytes,
            runs: 1,
            move_ioctls: 1,
            ..MoveReport::default()
        };
        if !failed && *r == single {
            counters::bump(&self.single);
            counters::add(&self.totals.aligned_bytes, r.aligned_bytes);
            counters::add(&self.totals.pte_bytes, r.pte_bytes);
            return;
        }
        self.add_all(r, failed);
    }

    /// [`add`](Self::add) for everything but the single-ioctl case.
    #[cold]
    fn add_all(&self, r: &MoveReport, failed: bool) {
        self.totals.add(r);
        counters::add(&self.operations, u64::from(r.ioctls() != 0));
        counters::add(&self.errors, u64::from(failed));
    }

    pub(super) fn snapshot(&self) -> MoverStats {
        let single = counters::get(&self.single);
        let mut totals = self.totals.snapshot();
        totals.runs += single;
        totals.move_ioctls += single;
        MoverStats {
            totals,
            operations: counters::get(&self.operations) + single,
            errors: counters::get(&self.errors),
        }
    }
}
