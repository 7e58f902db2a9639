//! The mover's policies: [`MoveOptions`] and the choices in it.

use uffd::{CopyFlags, MoveFlags};

#[allow(unused_imports)] // for intra-doc links
use super::{MoveError, MoveReport, Mover};

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
/// [module docs](crate::mover#waking) for the trade-off.
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
    /// destination overlaps their source too (see the [module docs](crate::mover#refused-pages-ebusy-and-holes)),
    /// unless another thread populates or drops source pages concurrently.
    pub count_holes: bool,
    /// Verify whole-PMD moves: read `/proc` around every ioctl and report the aligned 2 MiB
    /// chunks that were PMD-mapped THPs at the source before it and are at the destination after
    /// it in [`MoveReport::whole_pmd_bytes`] (see the
    /// [module docs](crate::mover#whole-pmd-moves)). Off by default: it costs several `/proc` reads per
    /// chunk and an allocation per run.
    pub verify_pmd: bool,
    /// Read the source's pagemap once per run before moving it (one `pread` of 8 bytes per page
    /// and an allocation per run, like [`count_holes`](#structfield.count_holes), which implies
    /// it), so the kernel-undercount correction is exact: a page that was a hole before the ioctl
    /// is never counted as moved. Without it, an EEXIST with nothing counted, whose source page
    /// is a hole afterwards and whose destination page is populated, is taken for the kernel's
    /// undercount under [`HolePolicy::Error`] (the caller said there are no holes) and for a
    /// genuine EEXIST under [`HolePolicy::Skip`] (see the
    /// [module docs](crate::mover#kernel-undercounts)). Off by default: the read costs about as
    /// much as a whole-PMD move.
    pub verify_counts: bool,
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

    /// Sets whether the undercount correction reads the source's state before each run (see
    /// [`MoveOptions::verify_counts`](#structfield.verify_counts)).
    ///
    /// ```
    /// let o = remap::mover::MoveOptions::default().verify_counts(true);
    /// assert!(o.verify_counts);
    /// ```
    pub fn verify_counts(mut self, yes: bool) -> Self {
        self.verify_counts = yes;
        self
    }

    /// Whether moves read `/proc` around the ioctls (hole counting, count verification, PMD
    /// verification): the inspecting path, off the fast one.
    pub(super) fn inspects(&self) -> bool {
        (self.holes == HolePolicy::Skip && self.count_holes)
            || self.verify_counts
            || self.verify_pmd
    }

    pub(super) fn move_flags(&self) -> MoveFlags {
        let mut flags = match self.wake {
            Wake::Kernel => MoveFlags::empty(),
            Wake::PerRange | Wake::None => MoveFlags::DONTWAKE,
        };
        if self.holes == HolePolicy::Skip {
            flags |= MoveFlags::ALLOW_SRC_HOLES;
        }
        flags
    }

    pub(super) fn copy_flags(&self) -> CopyFlags {
        match self.wake {
            Wake::Kernel => CopyFlags::empty(),
            Wake::PerRange | Wake::None => CopyFlags::DONTWAKE,
        }
    }
}
