//! Mapping: building, advising and unmapping a [`Region`], and the server's re-reservation of
//! holes left by `munmap`/`mremap`.

use std::ffi::c_void;
use std::ops::Range;
use std::ptr::{self, NonNull};

use rustix::io::Errno;
use rustix::mm::{Advice, MapFlags, ProtFlags};

use super::{Region, RegionError, RegionOp, Thp, HUGE_PAGE_SIZE};

#[cfg(test)]
#[path = "tests.rs"]
mod tests;

/// Builds a [`Region`]; see [`Region::builder`].
#[derive(Debug, Clone)]
pub struct RegionBuilder {
    pub(super) len: usize,
    pub(super) huge_aligned: bool,
    pub(super) thp: Thp,
    pub(super) dontfork: bool,
    pub(super) populate: bool,
}

impl RegionBuilder {
    /// Aligns the start of the region to [`HUGE_PAGE_SIZE`] (default `false`).
    ///
    /// remap maps `len + 2 MiB` at an address of the kernel's choosing and unmaps the unaligned
    /// head and tail, so it never maps over memory it does not own.
    pub fn huge_aligned(mut self, yes: bool) -> Self {
        self.huge_aligned = yes;
        self
    }

    /// Sets the transparent-huge-page advice (default [`Thp::Default`]: none).
    pub fn thp(mut self, thp: Thp) -> Self {
        self.thp = thp;
        self
    }

    /// Whether to apply `MADV_DONTFORK` (default `true`).
    ///
    /// `UFFDIO_MOVE` fails with `EBUSY` on pages mapped more than once, and a `fork()` from any
    /// thread maps every page of a private mapping into the child too; the parent's pages stay
    /// unmovable until it writes them again, even after the child exits. With `MADV_DONTFORK` the
    /// child does not get the mapping and nothing changes for the parent. Pass `false` if a child
    /// process must see the region, and expect `EBUSY` from moves of pages not yet rewritten.
    pub fn dontfork(mut self, yes: bool) -> Self {
        self.dontfork = yes;
        self
    }

    /// Whether to fault every page in by writing a zero byte to it (default `false`).
    ///
    /// Write faults allocate private pages (not the shared zero page), so the pages are present
    /// and exclusive afterwards, and in a [`Thp::Huge`], huge-aligned region the first write to
    /// each aligned 2 MiB range may allocate a THP.
    pub fn populate(mut self, yes: bool) -> Self {
        self.populate = yes;
        self
    }

    /// Maps and advises the region.
    ///
    /// # Errors
    ///
    /// [`RegionError::ZeroLength`] and [`RegionError::UnalignedLength`] for a bad length,
    /// [`RegionError::TooLarge`] if padding for alignment overflows, and
    /// [`RegionError::Syscall`] with the errno of a failed `mmap`, `munmap` or `madvise` (for
    /// example `EINVAL` from `MADV_HUGEPAGE` on a kernel without THP, `ENOMEM` from `mmap`). On
    /// error nothing stays mapped.
    pub fn build(self) -> Result<Region, RegionError> {
        let page_size = rustix::param::page_size();
        // Page-alignment checks use `page_size - 1` as a mask (`Region::page_range_ptr`).
        assert!(
            page_size.is_power_of_two(),
            "page size {page_size} is not a power of two"
        );
        let len = self.len;
        if len == 0 {
            return Err(RegionError::ZeroLength);
        }
        if len % page_size != 0 {
            return Err(RegionError::UnalignedLength { len, page_size });
        }
        let ptr = if self.huge_aligned {
            map_huge_aligned(len)?
        } else {
            map(len)?
        };
        // From here on the region owns the mapping: an early return unmaps it through Drop.
        let region = Region {
            ptr,
            len,
            page_size,
            thp: self.thp,
            dontfork: self.dontfork,
        };
        match self.thp {
            Thp::Default => {}
            Thp::Huge => region.advise(0..len, Advice::LinuxHugepage)?,
            Thp::NoHuge => region.advise(0..len, Advice::LinuxNoHugepage)?,
        }
        if self.dontfork {
            region.advise(0..len, Advice::LinuxDontFork)?;
        }
        if self.populate {
            for page in 0..region.pages() {
                // A plain store: one write fault per page, never a read fault first.
                region.write_u64(page * page_size, 0);
            }
        }
        tracing::trace!(addr = region.addr(), len, thp = ?self.thp, "region mapped");
        Ok(region)
    }
}

/// `mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS)`.
fn map(len: usize) -> Result<NonNull<u8>, RegionError> {
    // SAFETY: `mmap_anonymous` requires a non-null `ptr` to be page-aligned and valid to mutate;
    // we pass null, so the kernel picks a fresh range that overlaps nothing we or anyone else
    // holds (no MAP_FIXED), and no existing memory is affected.
    let raw = unsafe {
        rustix::mm::mmap_anonymous(
            ptr::null_mut(),
            len,
            ProtFlags::READ | ProtFlags::WRITE,
            MapFlags::PRIVATE,
        )
    }
    .map_err(|errno| RegionError::Syscall {
        op: RegionOp::Mmap,
        addr: 0,
        len,
        errno,
    })?;
    // A successful mmap never returns null (MAP_FAILED is reported as an error by rustix).
    NonNull::new(raw.cast::<u8>()).ok_or(RegionError::Syscall {
        op: RegionOp::Mmap,
        addr: 0,
        len,
        errno: Errno::NOMEM,
    })
}

/// Unmaps `len` bytes at `p`, (part of) a range this module mapped and no one references.
fn unmap(p: *mut u8, len: usize) -> Result<(), RegionError> {
    // SAFETY: `munmap` requires a page-aligned range valid to mutate with the pointer's provenance
    // and no Rust references into it. Callers pass (part of) a range returned by our own `mmap`
    // (page-aligned, since both `addr` and `len` are page or huge-page multiples), the pointer is
    // derived from that mapping's pointer, and this module never creates references into it.
    unsafe { rustix::mm::munmap(p.cast::<c_void>(), len) }.map_err(|errno| RegionError::Syscall {
        op: RegionOp::Munmap,
        addr: p as usize,
        len,
        errno,
    })
}

/// Maps `len` bytes starting at a [`HUGE_PAGE_SIZE`]-aligned address: over-maps by 2 MiB, then
/// unmaps the unaligned head and the tail.
fn map_huge_aligned(len: usize) -> Result<NonNull<u8>, RegionError> {
    let padded = len
        .checked_add(HUGE_PAGE_SIZE)
        .ok_or(RegionError::TooLarge { len })?;
    let base = map(padded)?.as_ptr();
    trim_to_huge_aligned(base, padded, len, unmap)
}

/// Trims the fresh mapping `[base, base + padded)` (`padded >= len + HUGE_PAGE_SIZE - page`) to
/// the `len` bytes from its first [`HUGE_PAGE_SIZE`]-aligned address, unmapping the head and the
/// tail with `unmap` (the seam for fault injection in tests); on error nothing of it stays mapped.
///
/// Once a part is unmapped it is no longer ours: another thread's `mmap` may take it at once. So
/// the cleanup after a failed trim unmaps only what is still ours, never the whole padded range:
/// the tail goes first, and if that fails everything is still ours; if the head then fails, the
/// head and the aligned range are, and the freed tail is left alone.
fn trim_to_huge_aligned(
    base: *mut u8,
    padded: usize,
    len: usize,
    mut unmap: impl FnMut(*mut u8, usize) -> Result<(), RegionError>,
) -> Result<NonNull<u8>, RegionError> {
    let base_addr = base as usize;
    let head = base_addr.next_multiple_of(HUGE_PAGE_SIZE) - base_addr;
    let tail = padded - head - len;
    // Derive the pointers from `base` so they keep the mapping's provenance.
    let aligned = base.wrapping_add(head);
    if tail > 0 {
        if let Err(e) = unmap(aligned.wrapping_add(len), tail) {
            // Nothing was freed: all of the padded range is still ours.
            let _ = unmap(base, padded);
            return Err(e);
        }
    }
    if head > 0 {
        if let Err(e) = unmap(base, head) {
            // The tail is freed (maybe someone else's now); the head and `len` are still ours.
            let _ = unmap(base, head + len);
            return Err(e);
        }
    }
    NonNull::new(aligned).ok_or(RegionError::TooLarge { len })
}

impl Region {
    /// Validates a page-aligned byte range of the region.
    fn check_range(&self, range: &Range<usize>) -> Result<(), RegionError> {
        let ok = range.start <= range.end
            && range.end <= self.len
            && range.start % self.page_size == 0
            && range.end % self.page_size == 0;
        if ok {
            Ok(())
        } else {
            Err(RegionError::BadRange {
                start: range.start,
                end: range.end,
                region_len: self.len,
            })
        }
    }

    /// `madvise` on a byte range of the region (offsets from the start).
    fn advise(&self, range: Range<usize>, advice: Advice) -> Result<(), RegionError> {
        self.check_range(&range)?;
        if range.is_empty() {
            return Ok(());
        }
        let len = range.end - range.start;
        let p = self.at(range.start, len, self.page_size);
        // SAFETY: `madvise` requires a pointer valid for the advice. `p..p+len` is a page-aligned
        // part of our own live mapping (checked by `check_range`). The advice used here only
        // changes VMA flags (HUGEPAGE, NOHUGEPAGE, DONTFORK, DOFORK), faults pages in
        // (POPULATE_WRITE) or drops or swaps out their contents (DONTNEED, PAGEOUT): contents
        // changing underneath is fine, because no reference into the mapping ever exists.
        unsafe { rustix::mm::madvise(p.cast::<c_void>(), len, advice) }.map_err(|errno| {
            RegionError::Syscall {
                op: RegionOp::Madvise(advice),
                addr: p as usize,
                len,
                errno,
            }
        })
    }

    /// `MADV_DONTNEED` on a byte range: drops the pages, which read as zero afterwards (or raise a
    /// userfaultfd MISSING fault, if registered). The mover's COPY fallback uses this to empty the
    /// source after copying.
    ///
    /// ```
    /// let region = remap::region::Region::builder(2 * 4096).populate(true).build()?;
    /// region.write_u64(0, 5);
    /// region.madvise_dontneed(0..4096)?;
    /// assert_eq!(region.read_u64(0), 0);
    /// # Ok::<(), remap::region::RegionError>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`RegionError::BadRange`] if the range is not page-aligned inside the region,
    /// [`RegionError::Syscall`] if `madvise` fails (`EINVAL` on locked pages).
    pub fn madvise_dontneed(&self, range: Range<usize>) -> Result<(), RegionError> {
        self.advise(range, Advice::LinuxDontNeed)
    }

    /// `MADV_PAGEOUT` on a byte range: asks the kernel to reclaim the pages now, writing them to
    /// swap when swap is active (Linux 5.4+). Without swap, anonymous pages stay present. Pages
    /// mapped by more than one process are skipped.
    ///
    /// # Errors
    ///
    /// [`RegionError::BadRange`] if the range is not page-aligned inside the region,
    /// [`RegionError::Syscall`] if `madvise` fails (`EINVAL` before Linux 5.4).
    pub fn pageout(&self, range: Range<usize>) -> Result<(), RegionError> {
        self.advise(range, Advice::LinuxPageOut)
    }

    /// `MADV_POPULATE_WRITE` on a byte range: faults every page in writable, without changing
    /// its contents (Linux 5.14+).
    ///
    /// # Errors
    ///
    /// [`RegionError::BadRange`] if the range is not page-aligned inside the region,
    /// [`RegionError::Syscall`] if `madvise` fails (`EINVAL` before Linux 5.14, `EFAULT` if a
    /// page cannot be populated, for example because a userfaultfd handler failed it).
    pub fn populate_write(&self, range: Range<usize>) -> Result<(), RegionError> {
        self.advise(range, Advice::LinuxPopulateWrite)
    }

    /// Write-touches every page of a byte range: reads its first byte and writes it back
    /// ([`read_u8`](Self::read_u8), [`write_u8`](Self::write_u8)). This takes a real write fault
    /// per page (unlike [`populate_write`](Self::populate_write)), which makes a page shared with
    /// a forked child exclusive again. The read and the write are not one atomic step: a
    /// concurrent write of that first byte may be undone (never one of the other bytes).
    ///
    /// # Errors
    ///
    /// [`RegionError::BadRange`] if the range is not page-aligned inside the region.
    pub fn touch(&self, range: Range<usize>) -> Result<(), RegionError> {
        self.check_range(&range)?;
        for off in range.step_by(self.page_size) {
            let byte = self.read_u8(off);
            self.write_u8(off, byte);
        }
        Ok(())
    }

    /// Sets or clears `MADV_DONTFORK` on the whole region after it was built (`MADV_DOFORK`
    /// clears it). See [`RegionBuilder::dontfork`] for why it is on by default.
    ///
    /// # Errors
    ///
    /// [`RegionError::Syscall`] if `madvise` fails.
    pub fn set_dontfork(&mut self, yes: bool) -> Result<(), RegionError> {
        let advice = if yes {
            Advice::LinuxDontFork
        } else {
            Advice::LinuxDoFork
        };
        self.advise(0..self.len, advice)?;
        self.dontfork = yes;
        Ok(())
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        if let Err(e) = unmap(self.ptr.as_ptr(), self.len) {
            // munmap of a range we mapped cannot fail short of a kernel bug; there is nobody to
            // return the error to, so leak the range and say so.
            tracing::error!(error = %e, "leaking region");
        }
    }
}
/// Re-reserves `len` bytes of `region` at `off` after `munmap` or `mremap` took them away:
/// `mmap(PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE)` at exactly that range, so
/// the region's own `munmap` on drop unmaps our reservation, never someone else's memory.
///
/// # Errors
///
/// The errno of `mmap`: `EEXIST` when anything is mapped in the range now (someone mapped into
/// the hole first; then the caller must not let the region unmap it, see [`truncate_leaking`]).
///
/// # Panics
///
/// If the range is outside the region or `off` is not page-aligned.
#[track_caller]
pub(crate) fn rereserve(region: &Region, off: usize, len: usize) -> Result<(), Errno> {
    let at = region.at(off, len, region.page_size);
    // SAFETY: `mmap_anonymous` with a non-null address requires it to be page-aligned (checked
    // by `at`) and, with a MAP_FIXED-style flag, that replacing what is mapped there is sound. We
    // pass MAP_FIXED_NOREPLACE: the kernel fails with EEXIST rather than touch any existing
    // mapping, so nothing anyone holds is affected; and the range is part of the region's own
    // address range, which the region unmaps on drop anyway. No reference into it exists.
    let got = unsafe {
        rustix::mm::mmap_anonymous(
            at.cast::<c_void>(),
            len,
            ProtFlags::empty(),
            MapFlags::PRIVATE | MapFlags::FIXED_NOREPLACE,
        )
    }?;
    if got.cast::<u8>() != at {
        // A kernel older than 4.17 treats the flag as a hint and may map elsewhere: undo that.
        let _ = unmap(got.cast::<u8>(), len);
        return Err(Errno::EXIST);
    }
    Ok(())
}

/// Gives up the part of `region` from `keep` on *without unmapping it*, because something that is
/// not ours may be mapped there now (a hole [`rereserve`] could not fill): returns the first
/// `keep` bytes as a region, or `None` (leaking all of it) when `keep` is zero. Logs a warning
/// naming the leaked range.
///
/// # Panics
///
/// If `keep` is beyond the region or not page-aligned.
#[track_caller]
pub(crate) fn truncate_leaking(region: Region, keep: usize) -> Option<Region> {
    assert!(
        keep <= region.len && keep % region.page_size == 0,
        "bad truncation"
    );
    let region = std::mem::ManuallyDrop::new(region);
    tracing::warn!(
        start = region.addr() + keep,
        len = region.len - keep,
        "leaking the tail of a served region: part of it was unmapped and someone else mapped \
         memory there since"
    );
    (keep > 0).then(|| Region {
        ptr: region.ptr,
        len: keep,
        page_size: region.page_size,
        thp: region.thp,
        dontfork: region.dontfork,
    })
}
