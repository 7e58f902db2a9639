//! Which results of one `UFFDIO_MOVE` the contract allows for the state the run knows, and
//! whether what the kernel reported matches what it did.
//!
//! The rules are those of `docs/move-contract.md` sections 2.3 and 2.7 (and Appendix A, kernel
//! 6.18), per page in ascending address order: a populated destination stops the move with
//! EEXIST; a source hole with ENOENT unless `ALLOW_SRC_HOLES` (then it counts as moved and the
//! destination stays empty); a page that may be shared (a fork since it was last written, a KSM
//! twin or zero page while KSM runs, a swapped page of a THP region whose large folio may sit in
//! the swap cache, a page of a large folio whose split failed) may stop it with EBUSY; anything
//! else moves. A stop after progress is reported
//! as EAGAIN with the bytes done; EAGAIN with nothing done is allowed only while non-cooperative
//! events can be pending, ENOMEM only under the run's memory limit. Nothing else is allowed:
//! in particular an errno when pages moved, or bytes reported that did not move, is a kernel
//! finding, never an allowed result.

use rustix::io::Errno;
use uffd::RangeError;

/// What the run knows about page `i` of a MOVE before it is issued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PageCase {
    /// The destination slot holds something (EEXIST there).
    pub(crate) dst_occupied: bool,
    /// The source slot holds something (else it is a hole).
    pub(crate) src_occupied: bool,
    /// The source page may be refused with EBUSY (shared, KSM, large swap-cache folio).
    pub(crate) may_busy: bool,
}

/// What may interfere with any MOVE of the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Context {
    /// `ALLOW_SRC_HOLES` was passed.
    pub(crate) allow_src_holes: bool,
    /// Non-cooperative events (remove, remap) may be pending: EAGAIN with nothing done.
    pub(crate) events_possible: bool,
    /// The run is under a memory limit: ENOMEM (page tables not allocatable) is possible.
    pub(crate) nomem_possible: bool,
}

/// A MOVE's result, in pages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Returned 0: all pages.
    All,
    /// EAGAIN with this many pages done (> 0).
    Partial(usize),
    /// An errno with nothing done (EAGAIN here means events pending).
    Failed(Errno),
}

impl Outcome {
    pub(crate) fn from_result(result: &Result<usize, RangeError>, page_size: usize) -> Outcome {
        match result {
            Ok(_) => Outcome::All,
            Err(RangeError::Partial { done }) => Outcome::Partial(done / page_size),
            Err(err) => Outcome::Failed(err.errno()),
        }
    }

    /// Pages the kernel says it moved, of a MOVE of `n` pages.
    pub(crate) fn moved(self, n: usize) -> usize {
        match self {
            Outcome::All => n,
            Outcome::Partial(m) => m,
            Outcome::Failed(_) => 0,
        }
    }

    /// The histogram bucket: `ok`, `partial`, or the errno's name.
    pub(crate) fn bucket(self) -> &'static str {
        match self {
            Outcome::All => "ok",
            Outcome::Partial(_) => "partial",
            Outcome::Failed(e) if e == Errno::AGAIN => "eagain-events",
            Outcome::Failed(e) if e == Errno::EXIST => "eexist",
            Outcome::Failed(e) if e == Errno::NOENT => "enoent",
            Outcome::Failed(e) if e == Errno::BUSY => "ebusy",
            Outcome::Failed(e) if e == Errno::NOMEM => "enomem",
            Outcome::Failed(e) if e == Errno::INVAL => "einval",
            Outcome::Failed(e) if e == Errno::FAULT => "efault",
            Outcome::Failed(_) => "other",
        }
    }
}

/// The C name of an errno (`EEXIST`), for messages.
pub(crate) fn errno_name(e: Errno) -> &'static str {
    match e {
        Errno::AGAIN => "EAGAIN",
        Errno::EXIST => "EEXIST",
        Errno::NOENT => "ENOENT",
        Errno::BUSY => "EBUSY",
        Errno::NOMEM => "ENOMEM",
        Errno::INVAL => "EINVAL",
        Errno::FAULT => "EFAULT",
        Errno::SRCH => "ESRCH",
        Errno::INTR => "EINTR",
        _ => "another errno",
    }
}

/// The errnos that may stop a MOVE at page `i` (with `done` pages before it).
fn stop_reasons(case: PageCase, ctx: Context, done: usize) -> Vec<Errno> {
    let mut reasons = Vec::new();
    if case.dst_occupied {
        reasons.push(Errno::EXIST);
    } else if !case.src_occupied {
        if !ctx.allow_src_holes {
            reasons.push(Errno::NOENT);
        }
    } else if case.may_busy {
        reasons.push(Errno::BUSY);
    }
    if ctx.nomem_possible {
        reasons.push(Errno::NOMEM);
    }
    if ctx.events_possible && done == 0 {
        reasons.push(Errno::AGAIN);
    }
    reasons
}

fn movable(case: PageCase, ctx: Context) -> bool {
    !case.dst_occupied && (case.src_occupied || ctx.allow_src_holes)
}

/// Whether `outcome` is allowed for a MOVE whose pages are `cases`; `Err` says why not.
pub(crate) fn judge(cases: &[PageCase], ctx: Context, outcome: Outcome) -> Result<(), String> {
    let n = cases.len();
    let moved = outcome.moved(n);
    if let Outcome::Partial(m) = outcome {
        if m == 0 || m >= n {
            return Err(format!(
                "EAGAIN reporting {m} of {n} pages as partial progress"
            ));
        }
    }
    if let Some(i) = (0..moved).find(|&i| !movable(cases[i], ctx)) {
        let why = if cases[i].dst_occupied {
            "its destination was populated"
        } else {
            "its source was a hole and ALLOW_SRC_HOLES was not set"
        };
        return Err(format!(
            "reported {moved} of {n} pages moved, but page {i} could not move: {why}"
        ));
    }
    if moved == n {
        return Ok(());
    }
    let reasons = stop_reasons(cases[moved], ctx, moved);
    match outcome {
        Outcome::Partial(_) if reasons.is_empty() => Err(format!(
            "EAGAIN after {moved} of {n} pages, but nothing could stop the move at page {moved}"
        )),
        Outcome::Partial(_) => Ok(()),
        Outcome::Failed(errno) if reasons.contains(&errno) => Ok(()),
        Outcome::Failed(errno) => Err(format!(
            "{} with nothing moved, but page 0 allows only {:?}",
            errno_name(errno),
            reasons.iter().map(|e| errno_name(*e)).collect::<Vec<_>>()
        )),
        Outcome::All => unreachable!("handled above"),
    }
}

/// Occupancy of one page before and after a MOVE, from pagemap (present or swapped).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Seen {
    pub(crate) src_before: bool,
    pub(crate) dst_before: bool,
    pub(crate) src_after: bool,
    pub(crate) dst_after: bool,
}

impl Seen {
    /// The page observably went from source to destination.
    pub(crate) fn moved(self) -> bool {
        self.src_before && !self.dst_before && !self.src_after && self.dst_after
    }

    /// Nothing changed at this page.
    pub(crate) fn unchanged(self) -> bool {
        self.src_before == self.src_after && self.dst_before == self.dst_after
    }
}

/// Checks that the pages the kernel reported moved are the pages that moved: the first `moved`
/// sources are holes now (a moved source reads as a hole) with their pages at the destination,
/// and nothing else changed. `Err` names the first page that disagrees.
pub(crate) fn consistent(seen: &[Seen], moved: usize) -> Result<(), String> {
    for (i, s) in seen.iter().enumerate() {
        if i < moved {
            if s.src_after {
                return Err(format!(
                    "page {i} reported moved but its source is still populated"
                ));
            }
            if s.src_before && !s.dst_after {
                return Err(format!(
                    "page {i} reported moved but its destination is empty: the page is lost"
                ));
            }
            if !s.src_before && s.dst_after {
                return Err(format!(
                    "page {i} was a source hole but its destination is populated now"
                ));
            }
        } else if !s.unchanged() {
            let what = if s.moved() {
                "moved although the result did not count it"
            } else {
                "changed although the result did not count it"
            };
            return Err(format!("page {i} {what} ({s:?}), result counted {moved}"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAGE: PageCase = PageCase {
        dst_occupied: false,
        src_occupied: true,
        may_busy: false,
    };
    const HOLE: PageCase = PageCase {
        src_occupied: false,
        ..PAGE
    };
    const FULL_DST: PageCase = PageCase {
        dst_occupied: true,
        ..PAGE
    };
    const SHARED: PageCase = PageCase {
        may_busy: true,
        ..PAGE
    };

    #[test]
    fn all_movable_pages_must_move() {
        let ctx = Context::default();
        assert!(judge(&[PAGE, PAGE], ctx, Outcome::All).is_ok());
        assert!(judge(&[PAGE, PAGE], ctx, Outcome::Partial(1)).is_err());
        assert!(judge(&[PAGE], ctx, Outcome::Failed(Errno::EXIST)).is_err());
        assert!(judge(&[PAGE], ctx, Outcome::Failed(Errno::BUSY)).is_err());
        assert!(judge(&[PAGE], ctx, Outcome::Failed(Errno::AGAIN)).is_err());
    }

    #[test]
    fn populated_destination_stops_with_eexist_or_partial() {
        let ctx = Context::default();
        assert!(judge(&[FULL_DST], ctx, Outcome::Failed(Errno::EXIST)).is_ok());
        assert!(judge(&[PAGE, PAGE, FULL_DST], ctx, Outcome::Partial(2)).is_ok());
        assert!(judge(&[PAGE, PAGE, FULL_DST], ctx, Outcome::All).is_err());
        assert!(judge(&[PAGE, FULL_DST], ctx, Outcome::Failed(Errno::EXIST)).is_err());
    }

    #[test]
    fn holes_need_the_flag() {
        let plain = Context::default();
        let holes = Context {
            allow_src_holes: true,
            ..plain
        };
        assert!(judge(&[HOLE], plain, Outcome::Failed(Errno::NOENT)).is_ok());
        assert!(judge(&[HOLE], holes, Outcome::All).is_ok());
        assert!(judge(&[HOLE], holes, Outcome::Failed(Errno::NOENT)).is_err());
        assert!(judge(&[PAGE, HOLE], plain, Outcome::Partial(1)).is_ok());
    }

    #[test]
    fn ebusy_only_where_sharing_is_possible() {
        let ctx = Context::default();
        assert!(judge(&[SHARED], ctx, Outcome::Failed(Errno::BUSY)).is_ok());
        assert!(judge(&[SHARED], ctx, Outcome::All).is_ok());
        assert!(judge(&[PAGE, SHARED], ctx, Outcome::Partial(1)).is_ok());
        assert!(judge(&[PAGE, SHARED], ctx, Outcome::Failed(Errno::BUSY)).is_err());
    }

    #[test]
    fn events_allow_eagain_with_nothing_done_only() {
        let ctx = Context {
            events_possible: true,
            ..Context::default()
        };
        assert!(judge(&[PAGE], ctx, Outcome::Failed(Errno::AGAIN)).is_ok());
        assert!(judge(&[PAGE, PAGE], ctx, Outcome::Partial(1)).is_err());
    }

    #[test]
    fn eexist_although_the_page_moved_is_inconsistent() {
        let moved = Seen {
            src_before: true,
            dst_before: false,
            src_after: false,
            dst_after: true,
        };
        let stayed = Seen {
            src_after: true,
            dst_after: false,
            ..moved
        };
        assert!(consistent(&[moved, stayed], 1).is_ok());
        assert!(
            consistent(&[moved], 0).is_err(),
            "an error although it moved"
        );
        assert!(
            consistent(&[stayed], 1).is_err(),
            "counted but did not move"
        );
    }
}
