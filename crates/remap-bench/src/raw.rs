//! The raw baselines: the only `unsafe` code of the harness.
//!
//! A benchmark's floor must be the bare ioctl or system call, not a wrapper around it, so the
//! baselines call [`uffd::Uffd::move_pages`] and [`uffd::Uffd::copy`] (one ioctl each, no retry
//! policy), `memcpy` between two regions, `mremap(MREMAP_MAYMOVE | MREMAP_FIXED)`, and the peer
//! crate's `copy` directly. Those are `unsafe fn`s whose contract is "no Rust reference into the
//! ranges, and the ranges belong to the caller". Every function here takes [`Region`]s, which
//! own their mappings and never hand out references (see `remap::region`), checks the byte range
//! against both regions, and only then makes the call, so the functions themselves are safe.
//! Like `uffd` and `remap::region::PageRange`, every function takes the destination first.

#![allow(unsafe_code)]

use std::mem::ManuallyDrop;

use remap::region::Region;
use rustix::io::Errno;
use uffd::{CopyFlags, MoveFlags, RangeError, Uffd};

/// Panics unless `off..off + len` lies inside `region`.
#[track_caller]
fn check(region: &Region, off: usize, len: usize) {
    assert!(
        off.checked_add(len).is_some_and(|end| end <= region.len()),
        "range {off:#x}+{len:#x} outside a region of {:#x} bytes",
        region.len()
    );
}

/// One `UFFDIO_MOVE` ioctl of `len` bytes from `src + src_off` to `dst + dst_off` (destination
/// first, as the kernel's struct and [`uffd::Uffd`] order them).
///
/// # Panics
///
/// If either range is outside its region.
#[track_caller]
pub(crate) fn move_range(
    uffd: &Uffd,
    dst: &Region,
    dst_off: usize,
    src: &Region,
    src_off: usize,
    len: usize,
    flags: MoveFlags,
) -> Result<usize, RangeError> {
    check(dst, dst_off, len);
    check(src, src_off, len);
    // SAFETY: `move_pages` requires that no Rust reference points into either range and that both
    // belong to the caller. Both ranges lie inside `Region`s we hold (checked above), which own
    // their mappings and never create references into them.
    unsafe {
        uffd.move_pages(
            dst.as_ptr().wrapping_add(dst_off),
            src.as_ptr().wrapping_add(src_off),
            len,
            flags,
        )
    }
}

/// One `UFFDIO_COPY` ioctl of `len` bytes from `src + src_off` into `dst + dst_off`.
///
/// # Panics
///
/// If either range is outside its region.
#[track_caller]
pub(crate) fn copy_range(
    uffd: &Uffd,
    dst: &Region,
    dst_off: usize,
    src: &Region,
    src_off: usize,
    len: usize,
) -> Result<usize, RangeError> {
    check(dst, dst_off, len);
    check(src, src_off, len);
    // SAFETY: `copy` requires no reference into the destination and a readable source that no one
    // writes during the call. The destination lies inside a `Region` (checked above; regions never
    // create references); the source lies inside another live `Region` that only this thread
    // writes, and it does not write during the call.
    unsafe {
        uffd.copy(
            dst.as_ptr().wrapping_add(dst_off),
            src.as_ptr().wrapping_add(src_off),
            len,
            CopyFlags::empty(),
        )
    }
}

/// `memcpy` of `len` bytes from `src + src_off` to `dst + dst_off` (two distinct regions).
///
/// # Panics
///
/// If either range is outside its region, or if `src` and `dst` are the same region.
#[track_caller]
pub(crate) fn memcpy_range(dst: &Region, dst_off: usize, src: &Region, src_off: usize, len: usize) {
    check(dst, dst_off, len);
    check(src, src_off, len);
    assert!(
        src.addr() != dst.addr(),
        "memcpy_range needs two distinct regions"
    );
    // SAFETY: `copy_nonoverlapping` requires `len` readable bytes at the source, `len` writable
    // bytes at the destination, and no overlap. Both ranges lie inside live, readable and writable
    // regions (checked above); two distinct live regions are disjoint mappings, so they cannot
    // overlap; and no reference into either exists that the write could invalidate.
    unsafe {
        std::ptr::copy_nonoverlapping(
            src.as_ptr().wrapping_add(src_off),
            dst.as_ptr().wrapping_add(dst_off),
            len,
        );
    }
}

/// A source region consumed chunk by chunk by `mremap(MREMAP_MAYMOVE | MREMAP_FIXED)`.
///
/// `mremap` takes the pages *and the address range* away from the source: after it, the source
/// range is a hole that any other thread's `mmap` may reuse. So the region is never unmapped by
/// us again (its `Drop` would unmap whatever was mapped into the holes since): once the first
/// chunk has moved, the region is leaked on drop. The remaining, unmoved chunks leak with it,
/// which only happens after an error.
#[derive(Debug)]
pub(crate) struct MremapSource {
    region: ManuallyDrop<Region>,
    touched: bool,
}

impl MremapSource {
    /// Takes ownership of `region`.
    pub(crate) fn new(region: Region) -> Self {
        Self {
            region: ManuallyDrop::new(region),
            touched: false,
        }
    }

    /// Moves `len` bytes at `off` of the source onto the same offset of `dst`, replacing what `dst`
    /// had mapped there. Each range of the source may be moved once.
    ///
    /// # Errors
    ///
    /// The `mremap` errno (`EINVAL` for unaligned ranges, `EFAULT` for a range moved already).
    ///
    /// # Panics
    ///
    /// If the range is outside either region.
    #[track_caller]
    pub(crate) fn mremap_to(&mut self, off: usize, dst: &Region, len: usize) -> Result<(), Errno> {
        check(&self.region, off, len);
        check(dst, off, len);
        self.touched = true;
        // SAFETY: `mremap_fixed` requires the old range to be mapped memory owned by the caller
        // with no references into it, and the new range to be memory the caller may replace.
        // The old range is part of our source region (checked above), which we own and will never
        // unmap or access again once moved (we leak it, see the type docs); a range moved twice
        // fails with EFAULT instead of touching anything. The new range is part of `dst`, a region
        // the caller holds: MREMAP_FIXED replaces its pages, leaving the range mapped and owned by
        // `dst`, which never has references into it.
        unsafe {
            rustix::mm::mremap_fixed(
                self.region.as_ptr().wrapping_add(off).cast(),
                len,
                len,
                rustix::mm::MremapFlags::MAYMOVE,
                dst.as_ptr().wrapping_add(off).cast(),
            )
        }
        .map(drop)
    }
}

impl Drop for MremapSource {
    fn drop(&mut self) {
        if !self.touched {
            // SAFETY: `ManuallyDrop::drop` requires the value not to be used afterwards; this is
            // the drop of the owner, and `region` is not used again.
            unsafe { ManuallyDrop::drop(&mut self.region) }
        }
    }
}

/// The peer crate's `copy` (one `UFFDIO_COPY`, waking waiters) of `len` bytes.
///
/// # Panics
///
/// If either range is outside its region.
#[cfg(feature = "peer")]
#[track_caller]
pub(crate) fn peer_copy_range(
    peer: &userfaultfd::Uffd,
    dst: &Region,
    dst_off: usize,
    src: &Region,
    src_off: usize,
    len: usize,
) -> Result<usize, userfaultfd::Error> {
    check(dst, dst_off, len);
    check(src, src_off, len);
    // SAFETY: the peer's `copy` has the contract of `UFFDIO_COPY`: no reference into the
    // destination and a stable, readable source. Both ranges lie in `Region`s we hold (checked
    // above), regions never create references, and this thread does not write the source during
    // the call.
    unsafe {
        peer.copy(
            src.as_ptr().wrapping_add(src_off).cast(),
            dst.as_ptr().wrapping_add(dst_off).cast(),
            len,
            true,
        )
    }
}
