//! Operations on memory remap owns: [`PageRange`], a page range of a [`Region`] bounds-checked
//! once, when it is made, and the userfaultfd operations on it, destination first as the kernel's
//! structs and [`Uffd`] order them.
//!
//! The `uffd` binding's memory ioctls are `unsafe fn`s because they take raw addresses. A
//! `PageRange` can only name pages of a live `Region` (a mapping this module made and owns, and
//! into which no Rust reference ever exists), so every operation on it is safe. None of them
//! panics, allocates, locks or logs: the fault server's SIGBUS mode calls them from a signal
//! handler.

use std::ops::Range;

use rustix::io::Errno;
use uffd::{
    ControlError, ControlOp, CopyFlags, Ioctls, MoveFlags, PoisonFlags, RangeError, RegisterMode,
    Uffd, ZeropageFlags,
};

use super::{Region, RegionError};
use crate::inspect::{InspectError, PageState, Pagemap};

/// A page-aligned range of a [`Region`], checked once when made ([`Region::page_range`],
/// [`Region::all_pages`], [`PageRange::get`]): the operand of every userfaultfd operation on
/// regions.
///
/// Operations take the destination as `self` and the source as the argument, the order of the
/// kernel's structs and of [`Uffd`]: `dst.move_from(&uffd, src, flags)` moves `src` into `dst`.
///
/// ```
/// use remap::region::Region;
///
/// let uffd = uffd::Uffd::new()?;
/// if !uffd.supports_move() {
///     return Ok(()); // a kernel before 6.8
/// }
/// let src = Region::builder(4 * 4096).populate(true).build()?;
/// let dst = Region::new(4 * 4096)?;
/// dst.all_pages().register(&uffd, uffd::RegisterMode::MISSING)?;
/// src.write_u64(4096, 7);
///
/// // Move source pages 1..3 to destination pages 0..2.
/// let to = dst.page_range(0..2 * 4096)?;
/// let from = src.page_range(4096..3 * 4096)?;
/// assert_eq!(to.move_from(&uffd, from, uffd::MoveFlags::empty())?, 2 * 4096);
/// assert_eq!(dst.read_u64(0), 7);
/// assert!(src.page_range(8192..12288)?.is_empty() == false);
/// assert!(dst.page_range(1..4096).is_err()); // not page-aligned
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Copy)]
pub struct PageRange<'r> {
    region: &'r Region,
    off: usize,
    len: usize,
}

impl Region {
    /// The page range `range` (byte offsets from the region start), checked here once: both ends
    /// page multiples, inside the region. An empty range is allowed (the kernel refuses empty
    /// ranges with EINVAL, so operations on one fail).
    ///
    /// ```
    /// let region = remap::region::Region::new(4 * 4096)?;
    /// let pages = region.page_range(4096..3 * 4096)?;
    /// assert_eq!((pages.offset(), pages.len(), pages.pages()), (4096, 8192, 2));
    /// assert!(region.page_range(0..5 * 4096).is_err());
    /// # Ok::<(), remap::region::RegionError>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`RegionError::BadRange`] if the range is reversed, not page-aligned or not inside the
    /// region.
    pub fn page_range(&self, range: Range<usize>) -> Result<PageRange<'_>, RegionError> {
        let bad = RegionError::BadRange {
            start: range.start,
            end: range.end,
            region_len: self.len,
        };
        if range.start > range.end {
            return Err(bad);
        }
        self.pages_at(range.start, range.end - range.start)
            .ok_or(bad)
    }

    /// Every page of the region, as a [`PageRange`].
    ///
    /// ```
    /// let region = remap::region::Region::new(2 * 4096)?;
    /// assert_eq!(region.all_pages().len(), region.len());
    /// # Ok::<(), remap::region::RegionError>(())
    /// ```
    pub fn all_pages(&self) -> PageRange<'_> {
        PageRange {
            region: self,
            off: 0,
            len: self.len,
        }
    }

    /// The page range of `len` bytes at `off`, or `None` unless both are page multiples and the
    /// range lies inside the region. Never panics, allocates or formats.
    #[inline]
    pub(crate) fn pages_at(&self, off: usize, len: usize) -> Option<PageRange<'_>> {
        self.page_range_ptr(off, len)?;
        Some(PageRange {
            region: self,
            off,
            len,
        })
    }
}

impl<'r> PageRange<'r> {
    /// The region the range belongs to.
    pub fn region(&self) -> &'r Region {
        self.region
    }

    /// The byte offset of the range's start in its region.
    pub fn offset(&self) -> usize {
        self.off
    }

    /// The length of the range in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the range is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The number of pages in the range.
    pub fn pages(&self) -> usize {
        self.len / self.region.page_size()
    }

    /// The byte offsets `offset()..offset() + len()` in the region.
    pub fn offsets(&self) -> Range<usize> {
        self.off..self.off + self.len
    }

    /// The start address of the range.
    #[inline]
    pub fn addr(&self) -> usize {
        self.region.addr() + self.off
    }

    /// The start of the range as a raw pointer (for the `unsafe` raw-address APIs of the `uffd`
    /// binding). Do not turn it into a reference: see the [module docs](crate::region#safety).
    #[inline]
    pub fn as_ptr(&self) -> *mut u8 {
        // In bounds: the range was checked inside the region when it was made (`wrapping_add`
        // keeps the mapping's provenance without re-checking on every ioctl).
        self.region.as_ptr().wrapping_add(self.off)
    }

    /// The sub-range `range` of this range (byte offsets from this range's start), or `None`
    /// unless it is page-aligned and inside. Never panics.
    ///
    /// ```
    /// let region = remap::region::Region::new(4 * 4096)?;
    /// let all = region.all_pages();
    /// let tail = all.get(4096..4 * 4096).expect("inside");
    /// assert_eq!(tail.offset(), 4096);
    /// assert!(all.get(0..5 * 4096).is_none());
    /// # Ok::<(), remap::region::RegionError>(())
    /// ```
    #[inline]
    pub fn get(&self, range: Range<usize>) -> Option<PageRange<'r>> {
        if range.start > range.end || range.end > self.len {
            return None;
        }
        self.region
            .pages_at(self.off + range.start, range.end - range.start)
    }

    /// `UFFDIO_MOVE` of `src` into this range: exactly one ioctl, with the kernel's outcome
    /// (`Ok(bytes)`, or a [`RangeError`] with the bytes done). `self` must be registered with
    /// `uffd`; `src` need not be. Pages that leave the source read as missing there afterwards.
    ///
    /// See [`PageRange`] for an example.
    ///
    /// # Errors
    ///
    /// As [`Uffd::move_pages`]: `Partial`, `EventsPending`, `Exists` (a destination page is
    /// already populated), `Missing` (a source hole), `Busy`, ... Ranges of different lengths are
    /// refused without an ioctl as [`RangeError::Invalid`] with `done: 0`.
    #[inline]
    pub fn move_from(
        &self,
        uffd: &Uffd,
        src: PageRange<'_>,
        flags: MoveFlags,
    ) -> Result<usize, RangeError> {
        if src.len != self.len {
            return Err(RangeError::Invalid { done: 0 });
        }
        // SAFETY: `Uffd::move_pages` requires that no Rust reference points into either range
        // during (and, for the source, after) the call, and that both ranges are memory the
        // caller controls. Both lie inside live mappings that `Region`s own (checked when the
        // `PageRange`s were made; their borrows keep the regions, so the mappings, alive for the
        // call); a `Region` never hands out a reference into its mapping and its own accesses hold
        // one only for a single atomic word access, which cannot span this call on the calling
        // thread, and for other threads is an atomic access the kernel's page replacement is
        // allowed to race with (module docs of `region`).
        unsafe { uffd.move_pages(self.as_ptr(), src.as_ptr(), self.len, flags) }
    }

    /// `UFFDIO_COPY` of the contents of `src` into this range: one ioctl; the source is only read.
    /// `self` must be registered with `uffd`.
    ///
    /// # Errors
    ///
    /// As [`Uffd::copy`]: `Exists` (EEXIST) when a destination page is already present, ...
    /// Ranges of different lengths are refused without an ioctl as [`RangeError::Invalid`] with
    /// `done: 0`.
    #[inline]
    pub fn copy_from(
        &self,
        uffd: &Uffd,
        src: PageRange<'_>,
        flags: CopyFlags,
    ) -> Result<usize, RangeError> {
        if src.len != self.len {
            return Err(RangeError::Invalid { done: 0 });
        }
        // SAFETY: `copy_raw` requires the source readable for `len` bytes for the call and not
        // written through a reference during it: it lies inside a live, readable `Region` mapping
        // (checked when the range was made; the borrow keeps it mapped), into which no reference
        // ever exists. The kernel reads it with `copy_from_user`, so a concurrent atomic write
        // through the `Region` API can at worst make the copied bytes a mix of old and new words,
        // never undefined behaviour.
        unsafe { self.copy_raw(uffd, src.as_ptr(), flags) }
    }

    /// `UFFDIO_COPY` of `contents` (a buffer of the caller's) into this range: the safe way to
    /// put contents into pages of a registered destination, one ioctl, atomically per page (a
    /// thread faulting on a page sees it missing, then whole). `self` must be registered with
    /// `uffd`.
    ///
    /// ```
    /// use remap::region::Region;
    /// use uffd::{CopyFlags, RangeError, RegisterMode, Uffd};
    ///
    /// let uffd = Uffd::new()?;
    /// let dst = Region::new(2 * 4096)?;
    /// dst.all_pages().register(&uffd, RegisterMode::MISSING)?;
    /// let page = dst.page_range(4096..8192)?;
    /// page.copy_from_slice(&uffd, &[7u8; 4096], CopyFlags::empty())?;
    /// assert_eq!(dst.read_u8(4096 + 100), 7);
    /// // A second copy finds the page present.
    /// assert!(matches!(
    ///     page.copy_from_slice(&uffd, &[8u8; 4096], CopyFlags::empty()),
    ///     Err(RangeError::Exists { done: 0 })
    /// ));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    ///
    /// As [`Uffd::copy`], the errno kept: [`RangeError::Exists`] (EEXIST) when a page is already
    /// present (the copy stopped there: `done` bytes before it were copied),
    /// [`RangeError::Missing`] (ENOENT) when the range is not registered with `uffd`, and
    /// [`RangeError::Invalid`] when `contents.len()` differs from the range's length (refused
    /// without an ioctl, `done: 0`).
    #[inline]
    pub fn copy_from_slice(
        &self,
        uffd: &Uffd,
        contents: &[u8],
        flags: CopyFlags,
    ) -> Result<usize, RangeError> {
        if contents.len() != self.len {
            return Err(RangeError::Invalid { done: 0 });
        }
        // SAFETY: `copy_raw` requires the source readable for `len` bytes and unwritten during
        // the call: it is a shared slice of that length, which no one can write while the borrow
        // lives.
        unsafe { self.copy_raw(uffd, contents.as_ptr(), flags) }
    }

    /// The one `UFFDIO_COPY` call behind [`copy_from`](Self::copy_from) and
    /// [`copy_from_slice`](Self::copy_from_slice).
    ///
    /// # Safety
    ///
    /// `src` must be readable for `self.len()` bytes for the duration of the call, and nothing
    /// may write those bytes through a Rust reference meanwhile.
    #[inline]
    unsafe fn copy_raw(
        &self,
        uffd: &Uffd,
        src: *const u8,
        flags: CopyFlags,
    ) -> Result<usize, RangeError> {
        // SAFETY: `Uffd::copy` requires no Rust reference into the destination range, and a
        // source readable and unwritten during the call. The destination lies inside a live
        // mapping a `Region` owns (checked when the range was made), into which no reference ever
        // exists beyond single atomic word accesses; the caller guarantees the source. They
        // cannot overlap in a way that matters: the kernel copies only into missing pages.
        unsafe { uffd.copy(self.as_ptr(), src, self.len, flags) }
    }

    /// `UFFDIO_ZEROPAGE` on this range: maps the zero page into each missing page. `self` must
    /// be registered with `uffd`.
    ///
    /// ```
    /// let uffd = uffd::Uffd::new()?;
    /// let region = remap::region::Region::new(4096)?;
    /// let all = region.all_pages();
    /// all.register(&uffd, uffd::RegisterMode::MISSING)?;
    /// assert_eq!(all.zero(&uffd, uffd::ZeropageFlags::empty())?, 4096);
    /// assert_eq!(region.read_u64(0), 0); // present now: does not block
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    ///
    /// As [`Uffd::zeropage`]: `Exists` for a present page, ...
    #[inline]
    pub fn zero(&self, uffd: &Uffd, flags: ZeropageFlags) -> Result<usize, RangeError> {
        // SAFETY: `Uffd::zeropage` requires that no Rust reference points into the range. It
        // lies inside a live mapping a `Region` owns (checked when the range was made; the borrow
        // keeps it mapped for the call), and a `Region` never hands out references into it.
        unsafe { uffd.zeropage(self.as_ptr(), self.len, flags) }
    }

    /// `UFFDIO_POISON` on this range: later accesses raise SIGBUS. Crate-only: a poisoned page
    /// makes the region's own accessors raise SIGBUS, which only a fault server's
    /// `FailurePolicy` should decide.
    #[inline]
    pub(crate) fn poison(&self, uffd: &Uffd) -> Result<usize, RangeError> {
        // SAFETY: `Uffd::poison` requires that no Rust reference points into the range and that
        // nothing accesses it expecting memory. The range lies inside a live mapping a `Region`
        // owns, into which no reference ever exists; every access to it goes through the
        // `Region`'s raw-pointer accessors, which see SIGBUS like any other access (the
        // documented outcome of a poisoning page source).
        unsafe { uffd.poison(self.as_ptr(), self.len, PoisonFlags::empty()) }
    }

    /// `UFFDIO_WAKE` on this range: wakes threads waiting on faults in it.
    ///
    /// # Errors
    ///
    /// As [`Uffd::wake`] (EINVAL for an empty range).
    #[inline]
    pub fn wake(&self, uffd: &Uffd) -> Result<(), ControlError> {
        uffd.wake(self.as_ptr(), self.len)
    }

    /// `UFFDIO_REGISTER` of this range with `uffd` for `mode`; returns the ioctls usable on it.
    ///
    /// ```
    /// let uffd = uffd::Uffd::new()?;
    /// let region = remap::region::Region::new(4096)?;
    /// let ioctls = region.all_pages().register(&uffd, uffd::RegisterMode::MISSING)?;
    /// assert!(ioctls.contains(uffd::Ioctls::COPY));
    /// region.all_pages().unregister(&uffd)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    ///
    /// As [`Uffd::register`]: EBUSY when the range is registered with another userfaultfd.
    pub fn register(&self, uffd: &Uffd, mode: RegisterMode) -> Result<Ioctls, ControlError> {
        uffd.register(self.as_ptr(), self.len, mode)
    }

    /// `UFFDIO_UNREGISTER` of this range.
    ///
    /// # Errors
    ///
    /// As [`Uffd::unregister`].
    pub fn unregister(&self, uffd: &Uffd) -> Result<(), ControlError> {
        uffd.unregister(self.as_ptr(), self.len)
    }

    /// The pagemap state of each page of the range, read from `pagemap` without touching the
    /// pages (so never blocking on a registered missing page). One `pread`.
    ///
    /// # Errors
    ///
    /// As [`Pagemap::entries`].
    pub fn states(&self, pagemap: &Pagemap) -> Result<Vec<PageState>, InspectError> {
        pagemap.states(self.addr(), self.pages())
    }

    /// Which pages of the range are populated (present in RAM, or swapped out or migrating: a
    /// read would not raise a MISSING fault), from `pagemap`, without touching the pages: the
    /// non-blocking way to ask whether reading a page of a registered range would block. One
    /// `pread`. Another thread may populate or drop a page right after the read.
    ///
    /// ```
    /// use remap::inspect::Pagemap;
    ///
    /// let uffd = uffd::Uffd::new()?;
    /// let region = remap::region::Region::new(2 * 4096)?;
    /// let all = region.all_pages();
    /// all.register(&uffd, uffd::RegisterMode::MISSING)?;
    /// region.page_range(4096..8192)?.copy_from_slice(&uffd, &[1u8; 4096], uffd::CopyFlags::empty())?;
    /// assert_eq!(all.populated(&Pagemap::open()?)?, [false, true]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    ///
    /// As [`Pagemap::entries`].
    pub fn populated(&self, pagemap: &Pagemap) -> Result<Vec<bool>, InspectError> {
        Ok(self
            .states(pagemap)?
            .into_iter()
            .map(|s| s != PageState::Absent)
            .collect())
    }
}

// -------------------------------------------------------------------------------------------------
// The crate-internal forms by offset, for the pool and fault-around, which hold a region and an
// offset computed from a slot or a fault rather than a range. Each is a thin wrapper over
// `PageRange` that checks the bounds once (in `pages_at`) and never panics, so the SIGBUS
// handler may call it (`register_range` alone panics on a bad range, as it always did). The
// engine itself works on `PageRange`s.
// -------------------------------------------------------------------------------------------------

/// `UFFDIO_MOVE` of `len` bytes from `src` at `src_off` to `dst` at `dst_off`
/// ([`PageRange::move_from`]). A bad range is [`RangeError::Invalid`] with `done: 0`, without an
/// ioctl.
#[inline]
pub(crate) fn move_between(
    uffd: &Uffd,
    dst: &Region,
    dst_off: usize,
    src: &Region,
    src_off: usize,
    len: usize,
    flags: MoveFlags,
) -> Result<usize, RangeError> {
    match (dst.pages_at(dst_off, len), src.pages_at(src_off, len)) {
        (Some(d), Some(s)) => d.move_from(uffd, s, flags),
        _ => Err(RangeError::Invalid { done: 0 }),
    }
}

/// `UFFDIO_COPY` of `src` into `dst` at `dst_off` ([`PageRange::copy_from_slice`]).
#[inline]
pub(crate) fn copy_from_slice(
    uffd: &Uffd,
    dst: &Region,
    dst_off: usize,
    src: &[u8],
    flags: CopyFlags,
) -> Result<usize, RangeError> {
    match dst.pages_at(dst_off, src.len()) {
        Some(d) => d.copy_from_slice(uffd, src, flags),
        None => Err(RangeError::Invalid { done: 0 }),
    }
}

/// `UFFDIO_WAKE` on `len` bytes of `region` at `off` ([`PageRange::wake`]); a bad range is a
/// [`ControlError`] with `EINVAL`, without an ioctl.
#[inline]
pub(crate) fn wake_in(
    uffd: &Uffd,
    region: &Region,
    off: usize,
    len: usize,
) -> Result<(), ControlError> {
    match region.pages_at(off, len) {
        Some(range) => range.wake(uffd),
        None => Err(ControlError {
            op: ControlOp::Wake,
            start: region.addr().wrapping_add(off),
            len,
            errno: Errno::INVAL,
        }),
    }
}

/// `UFFDIO_REGISTER` for MISSING (or, with `register == false`, `UFFDIO_UNREGISTER`) of `len`
/// bytes of `region` at `off` ([`PageRange::register`]).
///
/// # Panics
///
/// If the range is not a page range inside the region.
#[track_caller]
pub(crate) fn register_range(
    uffd: &Uffd,
    region: &Region,
    off: usize,
    len: usize,
    register: bool,
) -> Result<(), ControlError> {
    let Some(range) = region.pages_at(off, len) else {
        panic!(
            "range {off:#x}+{len:#x} is not a page range inside the region of {:#x} bytes",
            region.len()
        );
    };
    if register {
        range.register(uffd, RegisterMode::MISSING).map(drop)
    } else {
        range.unregister(uffd)
    }
}
