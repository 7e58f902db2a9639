//! The inspecting path: hole counting ([`MoveOptions::count_holes`]) and whole-PMD verification
//! ([`MoveOptions::verify_pmd`]) from `/proc`, kept out of the hot loop.

use super::drive::{aligned_span, Run};
#[allow(unused_imports)] // for intra-doc links
use super::MoveOptions;
use super::{MoveError, Mover};
use crate::inspect::{PM_PRESENT, PM_SWAPPED};
use crate::region::HUGE_PAGE_SIZE;

/// Whether a raw pagemap entry describes a hole (neither present nor swapped).
pub(super) fn is_hole(entry: u64) -> bool {
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
pub(super) fn walk_holes(entries: &[u64], shift: Option<usize>) -> Vec<bool> {
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
pub(super) struct Inspect {
    pub(super) holes: Option<(Vec<bool>, usize)>,
    /// Whether `holes` are counted into [`MoveReport::hole_bytes`](super::MoveReport) (hole
    /// counting), or only kept as the source's state before the run (for the undercount
    /// correction).
    pub(super) count_holes: bool,
    pub(super) verify: bool,
    pub(super) source_thp: Vec<bool>,
    /// Run offset of the first chunk in `source_thp`.
    pub(super) planned_from: usize,
    /// Verified whole-PMD bytes of the last ioctl.
    pub(super) whole_pmd: usize,
}

impl Inspect {
    /// The source's state before the run, for the undercount correction: which pages (from the
    /// run offset given) the kernel's walk finds to be holes.
    pub(super) fn source_before(&self) -> Option<(&[bool], usize)> {
        self.holes
            .as_ref()
            .map(|(holes, from)| (holes.as_slice(), *from))
    }

    /// Before an ioctl over `[off, off + len)` of a run: with verification, records which aligned
    /// chunks of it are PMD-mapped THPs at the source.
    #[cold]
    pub(super) fn before(&mut self, dst_addr: usize, src_addr: usize, off: usize, len: usize) {
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
    pub(super) fn after(
        &mut self,
        dst_addr: usize,
        off: usize,
        moved: usize,
        span: (usize, usize),
        page: usize,
    ) -> (usize, usize) {
        let (a, b) = span;
        let holes = match &self.holes {
            Some((holes, from)) if self.count_holes => {
                count_holes(holes, *from, off, moved, page, |p| (a..b).contains(&p))
            }
            _ => (0, 0),
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
    /// Which pages of `run` from `from` on the kernel's walk will find to be holes, from the
    /// source's pagemap now (for hole counting; see [`walk_holes`]).
    #[cold]
    #[inline(never)]
    pub(super) fn read_holes(&self, run: &Run<'_>, from: usize) -> Result<Vec<bool>, MoveError> {
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
}
