//! Why a move stopped: [`MoveError`] for one range or run, [`BatchError`] for a batch.

use std::fmt;

use uffd::{ControlError, Errno, RangeError};

use super::MoveReport;
#[allow(unused_imports)] // for intra-doc links
use super::{Batch, BusyPolicy, HolePolicy, Mover};
use crate::inspect::InspectError;
use crate::region::RegionError;

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
/// range that were done before it, counted from where the operation started: for
/// [`Mover::move_range`], from its offsets; inside a [`BatchError`], from the start of the failing
/// *run* (the batch's count is [`BatchError::batch_done`]). Nothing is lost: each page is at its source or at its destination.
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
/// batch got, and the run's [`MoveError`].
///
/// Two byte counts, named apart: [`batch_done`](#structfield.batch_done) counts the whole batch
/// (every run before the failed one, by this and earlier flushes, plus the failed run's part);
/// [`run_error`](#structfield.run_error)`.done()` ([`BatchError::run_done`]) counts only the
/// failed run, from its start.
///
/// The batch keeps its place: after reading pending events (or fixing the cause), calling
/// [`Batch::flush`] again resumes at the failed page.
///
/// ```
/// use remap::mover::{BatchError, MoveError};
///
/// let err = BatchError {
///     run: 1, page: 5, runs_done: 1, batch_done: 5 * 4096,
///     report: Box::default(), run_error: MoveError::EventsPending { done: 4096 },
/// };
/// assert!(err.is_events_pending());
/// assert_eq!(err.errno(), Some(uffd::Errno::AGAIN));
/// assert_eq!((err.batch_done, err.run_done()), (5 * 4096, 4096));
/// ```
#[derive(Debug, thiserror::Error)]
#[error(
    "batch stopped in run {run} at page {page} ({runs_done} runs and {batch_done} bytes of the \
     batch done)"
)]
pub struct BatchError {
    /// Index of the failed run (runs are coalesced pushes, in push order).
    pub run: usize,
    /// Index, in push order counting every page pushed, of the first page not done.
    pub page: usize,
    /// Runs completed before the failed one (by this and earlier flushes of the batch).
    pub runs_done: usize,
    /// Bytes of the whole batch done (by this and earlier flushes), the failed run's part
    /// included. Not to be confused with [`run_done`](Self::run_done).
    pub batch_done: usize,
    /// What this flush did before stopping (boxed to keep the error small).
    pub report: Box<MoveReport>,
    /// The failed run's error; its [`done`](MoveError::done) counts bytes of that run only.
    #[source]
    pub run_error: MoveError,
}

impl BatchError {
    /// Bytes of the failed run done before the error, from the run's start (the
    /// [`run_error`](#structfield.run_error)'s [`done`](MoveError::done)); the batch's are
    /// [`batch_done`](#structfield.batch_done).
    ///
    /// ```
    /// # use remap::mover::{BatchError, MoveError};
    /// let err = BatchError { run: 2, page: 9, runs_done: 2, batch_done: 9 * 4096,
    ///     report: Box::default(), run_error: MoveError::Hole { done: 4096 } };
    /// assert_eq!(err.run_done(), 4096);
    /// ```
    pub fn run_done(&self) -> usize {
        self.run_error.done()
    }

    /// Whether the cause is [`MoveError::EventsPending`].
    ///
    /// ```
    /// # use remap::mover::{BatchError, MoveError};
    /// let err = BatchError { run: 0, page: 0, runs_done: 0, batch_done: 0,
    ///     report: Box::default(), run_error: MoveError::Hole { done: 0 } };
    /// assert!(!err.is_events_pending());
    /// ```
    pub fn is_events_pending(&self) -> bool {
        self.run_error.is_events_pending()
    }

    /// The cause's errno ([`MoveError::errno`]).
    ///
    /// ```
    /// # use remap::mover::{BatchError, MoveError};
    /// let err = BatchError { run: 0, page: 0, runs_done: 0, batch_done: 0,
    ///     report: Box::default(), run_error: MoveError::Hole { done: 0 } };
    /// assert_eq!(err.errno(), Some(uffd::Errno::NOENT));
    /// ```
    pub fn errno(&self) -> Option<Errno> {
        self.run_error.errno()
    }
}
