//! Regions: private anonymous mappings that remap maps, owns and unmaps.
//!
//! A [`Region`] is the only kind of memory the safe `remap` API moves pages between. remap maps it
//! itself with `mmap(NULL, ...)` (never `MAP_FIXED` over memory someone else owns), optionally
//! aligned to [`HUGE_PAGE_SIZE`] and advised for or against transparent huge pages, and unmaps it
//! on drop.
//!
//! ```
//! use remap::region::{Region, Thp};
//!
//! let region = Region::builder(4 * 4096).thp(Thp::NoHuge).populate(true).build()?;
//! region.fill_pattern(7);
//! assert_eq!(region.verify_pattern(7), Ok(()));
//! region.write_u64(8, 0xdead_beef);
//! assert_eq!(region.read_u64(8), 0xdead_beef);
//! # Ok::<(), remap::region::RegionError>(())
//! ```
//!
//! # No references into a region
//!
//! The kernel changes a region's memory underneath us: `UFFDIO_MOVE` takes pages out (the address
//! then reads as zero or faults), fault handlers install pages, `MADV_DONTNEED` zaps them. A Rust
//! reference (`&[u8]`, `&mut u64`) into such memory would promise the compiler that nothing else
//! changes it, which is false. So a `Region` never hands one out: every access goes through a raw
//! pointer, either volatile (single words and bytes, the pattern helpers) or
//! [`ptr::copy_nonoverlapping`] / [`ptr::write_bytes`] (bulk copies and fills), always to or from
//! the caller's own buffers.
//!
//! # Fork
//!
//! `UFFDIO_MOVE` refuses (`EBUSY`) a page that is mapped more than once. After a `fork()` — from
//! *any* thread of the process, including a library's `posix_spawn` fallback — every page of a
//! private mapping is shared with the child, and it stays shared (so unmovable) until the parent
//! writes it again, even after the child has exited. So regions are created with
//! `MADV_DONTFORK` by default: the child does not inherit the mapping at all and the parent's
//! pages stay exclusive. Opt out with [`RegionBuilder::dontfork`]`(false)` when a child must see
//! the memory, and expect `EBUSY` from moves until the pages are written again.
//!
//! # Safety
//!
//! This module holds the only `unsafe` code of `remap` outside the `uffd` binding: `mmap`,
//! `munmap` and `madvise` on the region's own range, and raw-pointer accesses inside it. Every
//! access is bounds-checked against the mapping before the pointer is formed; the mapping lives as
//! long as the `Region`; and no reference into it ever exists, so the kernel rewriting the memory
//! cannot invalidate anything the compiler assumed.

#![allow(unsafe_code)]

use std::ffi::c_void;
use std::fmt;
use std::ops::Range;
use std::ptr::{self, NonNull};

use rustix::io::Errno;
use rustix::mm::{Advice, MapFlags, ProtFlags};

/// The size of a PMD-mapped transparent huge page: 2 MiB on x86-64 and on 4 KiB-page arm64.
pub const HUGE_PAGE_SIZE: usize = 2 * 1024 * 1024;

/// Transparent-huge-page advice for a region.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Thp {
    /// No advice: the system-wide mode (`/sys/kernel/mm/transparent_hugepage/enabled`) decides.
    #[default]
    Default,
    /// `MADV_HUGEPAGE`: THPs wherever an aligned 2 MiB range fits (when the mode is `madvise` or
    /// `always`).
    Huge,
    /// `MADV_NOHUGEPAGE`: never fault in THPs here. (A `UFFDIO_MOVE` of a whole PMD into such a
    /// region still installs one: the kernel does not consult the destination's THP setting.)
    NoHuge,
}

/// The system call a [`RegionError::Syscall`] comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegionOp {
    /// `mmap(2)`.
    Mmap,
    /// `munmap(2)`.
    Munmap,
    /// `madvise(2)` with this advice.
    Madvise(Advice),
}

impl fmt::Display for RegionOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RegionOp::Mmap => f.write_str("mmap"),
            RegionOp::Munmap => f.write_str("munmap"),
            RegionOp::Madvise(advice) => write!(f, "madvise({})", advice_name(*advice)),
        }
    }
}

fn advice_name(advice: Advice) -> &'static str {
    match advice {
        Advice::LinuxHugepage => "MADV_HUGEPAGE",
        Advice::LinuxNoHugepage => "MADV_NOHUGEPAGE",
        Advice::LinuxDontFork => "MADV_DONTFORK",
        Advice::LinuxDoFork => "MADV_DOFORK",
        Advice::LinuxDontNeed => "MADV_DONTNEED",
        Advice::LinuxPageOut => "MADV_PAGEOUT",
        Advice::LinuxPopulateWrite => "MADV_POPULATE_WRITE",
        _ => "other advice",
    }
}

/// Why a region could not be built or advised.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegionError {
    /// The requested length is zero.
    #[error("region length is zero")]
    ZeroLength,
    /// The requested length is not a multiple of the page size.
    #[error("region length {len:#x} is not a multiple of the page size {page_size:#x}")]
    UnalignedLength {
        /// The requested length.
        len: usize,
        /// The system page size.
        page_size: usize,
    },
    /// The requested length overflows the address space once padded for alignment.
    #[error("region length {len:#x} is too large")]
    TooLarge {
        /// The requested length.
        len: usize,
    },
    /// A byte range given to an advice helper is not page-aligned or not inside the region.
    #[error("range {start:#x}..{end:#x} is not a page-aligned range inside the region of {region_len:#x} bytes")]
    BadRange {
        /// Start offset of the range, in bytes from the region start.
        start: usize,
        /// End offset (exclusive).
        end: usize,
        /// The region's length.
        region_len: usize,
    },
    /// A system call failed.
    #[error("{op} of {len:#x} bytes at {addr:#x} failed: {errno}")]
    Syscall {
        /// Which call.
        op: RegionOp,
        /// The start address passed to it (0 for `mmap(NULL, ...)`).
        addr: usize,
        /// The length passed to it.
        len: usize,
        /// The kernel's error.
        #[source]
        errno: Errno,
    },
}

/// A pattern word that did not match in [`Region::verify_pattern`] or [`Region::verify_page`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("pattern mismatch at offset {offset:#x}: expected {expected:#018x}, found {found:#018x}")]
pub struct Mismatch {
    /// Byte offset of the word from the start of the region.
    pub offset: usize,
    /// The word the pattern expects there.
    pub expected: u64,
    /// The word read.
    pub found: u64,
}

/// The pattern word number `word_no` of logical page `page_no` for `seed`.
///
/// The word depends only on its three arguments, so a page filled as logical page `n` can be
/// verified wherever it ends up (for example in another region after a move) by passing `n` again
/// (see [`Region::verify_page`]). The low bit is always set, so no pattern word is zero and a page
/// replaced by a zero page never verifies.
///
/// ```
/// use remap::region::pattern_word;
///
/// assert_eq!(pattern_word(1, 2, 3), pattern_word(1, 2, 3));
/// assert_ne!(pattern_word(1, 2, 3), pattern_word(1, 3, 3));
/// assert_ne!(pattern_word(0, 0, 0), 0);
/// ```
pub fn pattern_word(seed: u64, page_no: u64, word_no: u64) -> u64 {
    // splitmix64 finaliser over a combination of the three inputs.
    let mut z = seed
        .wrapping_mul(0x9e37_79b9_7f4a_7c15)
        .wrapping_add(page_no.wrapping_mul(0xbf58_476d_1ce4_e5b9))
        .wrapping_add(word_no.wrapping_mul(0x94d0_49bb_1331_11eb))
        .wrapping_add(0x2545_f491_4f6c_dd1d);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    (z ^ (z >> 31)) | 1
}

/// Builds a [`Region`]; see [`Region::builder`].
#[derive(Debug, Clone)]
pub struct RegionBuilder {
    len: usize,
    huge_aligned: bool,
    thp: Thp,
    dontfork: bool,
    populate: bool,
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
                region.write_u8(page * page_size, 0);
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
    let base_addr = base as usize;
    let head = base_addr.next_multiple_of(HUGE_PAGE_SIZE) - base_addr;
    let tail = padded - head - len;
    // Derive the pointers from `base` so they keep the mapping's provenance.
    let aligned = base.wrapping_add(head);
    let trimmed = (|| {
        if head > 0 {
            unmap(base, head)?;
        }
        if tail > 0 {
            unmap(aligned.wrapping_add(len), tail)?;
        }
        Ok(())
    })();
    if let Err(e) = trimmed {
        // Best effort: unmapping an already unmapped part is not an error.
        let _ = unmap(base, padded);
        return Err(e);
    }
    NonNull::new(aligned).ok_or(RegionError::TooLarge { len })
}

/// A page-aligned private anonymous mapping that remap owns; unmapped on drop.
///
/// Build one with [`Region::new`] or [`Region::builder`]. Contents are reached only through
/// raw-pointer accessors ([`read_u64`](Self::read_u64), [`copy_in`](Self::copy_in),
/// [`fill_pattern`](Self::fill_pattern), ...), never through references: see the
/// [module docs](self).
///
/// Accessors panic, with a message naming the offset and the region length, when asked for bytes
/// outside the region or for a misaligned `u64`: those are programming errors. The advice helpers
/// ([`madvise_dontneed`](Self::madvise_dontneed), ...) return [`RegionError::BadRange`] instead,
/// since their ranges often come from computation.
#[derive(Debug)]
pub struct Region {
    ptr: NonNull<u8>,
    len: usize,
    page_size: usize,
    thp: Thp,
    dontfork: bool,
}

// SAFETY: `Region` owns its mapping outright (like a `Box<[u8]>` would) and the raw pointer is
// only not `Send` because raw pointers never are; nothing in it is tied to the creating thread, and
// munmap from another thread is fine.
unsafe impl Send for Region {}
// SAFETY: every `&self` access is a volatile access or a raw-pointer copy to or from the caller's
// own buffer, with no reference into the mapping, exactly as if the kernel (which also rewrites
// this memory concurrently) were another thread; concurrent overlapping writes from several
// threads leave unspecified bytes but create no reference that could alias.
unsafe impl Sync for Region {}

impl Region {
    /// Maps a region of `len` bytes with the defaults: no alignment beyond the page, no THP
    /// advice, `MADV_DONTFORK`, not populated.
    ///
    /// ```
    /// let region = remap::region::Region::new(8 * 4096)?;
    /// assert_eq!(region.pages(), 8 * 4096 / region.page_size());
    /// assert_eq!(region.read_u64(0), 0);
    /// # Ok::<(), remap::region::RegionError>(())
    /// ```
    ///
    /// # Errors
    ///
    /// As for [`RegionBuilder::build`].
    pub fn new(len: usize) -> Result<Region, RegionError> {
        Region::builder(len).build()
    }

    /// Starts building a region of `len` bytes, a non-zero multiple of the page size.
    ///
    /// ```
    /// use remap::region::{Region, Thp, HUGE_PAGE_SIZE};
    ///
    /// let region = Region::builder(2 * HUGE_PAGE_SIZE)
    ///     .huge_aligned(true)
    ///     .thp(Thp::Huge)
    ///     .build()?;
    /// assert_eq!(region.addr() % HUGE_PAGE_SIZE, 0);
    /// # Ok::<(), remap::region::RegionError>(())
    /// ```
    pub fn builder(len: usize) -> RegionBuilder {
        RegionBuilder {
            len,
            huge_aligned: false,
            thp: Thp::Default,
            dontfork: true,
            populate: false,
        }
    }

    /// The start of the region, as a raw pointer (for the `unsafe` raw-address APIs of the `uffd`
    /// binding). Do not turn it into a reference: see the [module docs](self).
    pub fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    /// The start address of the region.
    pub fn addr(&self) -> usize {
        self.ptr.as_ptr() as usize
    }

    /// The length of the region in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Always `false`: a region is never empty. (Present for the `len`/`is_empty` convention.)
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The address range `addr()..addr() + len()`.
    pub fn range(&self) -> Range<usize> {
        self.addr()..self.addr() + self.len
    }

    /// The system page size (`rustix::param::page_size`).
    pub fn page_size(&self) -> usize {
        self.page_size
    }

    /// The number of pages in the region.
    pub fn pages(&self) -> usize {
        self.len / self.page_size
    }

    /// The THP advice the region was built with.
    pub fn thp(&self) -> Thp {
        self.thp
    }

    /// Whether the region was built with `MADV_DONTFORK`.
    pub fn dontfork(&self) -> bool {
        self.dontfork
    }

    /// Whether `addr` lies inside the region.
    pub fn contains(&self, addr: usize) -> bool {
        self.range().contains(&addr)
    }

    /// The offset of `addr` from the start of the region, if it lies inside.
    pub fn offset_of(&self, addr: usize) -> Option<usize> {
        self.contains(addr).then(|| addr - self.addr())
    }

    /// The address of page `index`.
    ///
    /// # Panics
    ///
    /// If `index >= self.pages()`.
    #[track_caller]
    pub fn page_addr(&self, index: usize) -> usize {
        assert!(
            index < self.pages(),
            "page index {index} out of range for a region of {} pages",
            self.pages()
        );
        self.addr() + index * self.page_size
    }

    /// Panics unless `off..off + len` lies inside the region and `off` is a multiple of `align`;
    /// returns the pointer to `off`.
    #[track_caller]
    fn at(&self, off: usize, len: usize, align: usize) -> *mut u8 {
        let end = off.checked_add(len);
        assert!(
            end.is_some_and(|end| end <= self.len),
            "offset {off:#x} + {len:#x} bytes is outside the region of {:#x} bytes",
            self.len
        );
        assert!(
            off % align == 0,
            "offset {off:#x} is not {align}-byte aligned"
        );
        // SAFETY: `add` requires the result to stay inside the same allocation; `off <= self.len`
        // was checked above and the mapping is `self.len` bytes long.
        unsafe { self.ptr.as_ptr().add(off) }
    }

    /// Reads the byte at `off` (volatile).
    ///
    /// # Panics
    ///
    /// If `off` is outside the region.
    #[track_caller]
    pub fn read_u8(&self, off: usize) -> u8 {
        let p = self.at(off, 1, 1);
        // SAFETY: `read_volatile` requires `p` valid for reads and aligned: it lies inside our
        // live, readable mapping (checked by `at`) and `u8` has alignment 1. A fault-in by the
        // kernel during the read is transparent.
        unsafe { p.read_volatile() }
    }

    /// Writes the byte `v` at `off` (volatile).
    ///
    /// # Panics
    ///
    /// If `off` is outside the region.
    #[track_caller]
    pub fn write_u8(&self, off: usize, v: u8) {
        let p = self.at(off, 1, 1);
        // SAFETY: `write_volatile` requires `p` valid for writes and aligned: it lies inside our
        // live, writable mapping (checked by `at`) and `u8` has alignment 1. No reference into
        // the mapping exists that the write could invalidate.
        unsafe { p.write_volatile(v) }
    }

    /// Reads the native-endian `u64` at `off` (volatile, one access: never torn).
    ///
    /// # Panics
    ///
    /// If `off` is not 8-byte aligned or `off + 8` exceeds the region.
    #[track_caller]
    pub fn read_u64(&self, off: usize) -> u64 {
        let p = self.at(off, 8, 8).cast::<u64>();
        // SAFETY: `read_volatile` requires `p` valid for reads and aligned for `u64`: it lies
        // inside our live, readable mapping and is 8-byte aligned (both checked by `at`, and the
        // region start is page-aligned).
        unsafe { p.read_volatile() }
    }

    /// Writes the native-endian `u64` `v` at `off` (volatile, one access).
    ///
    /// # Panics
    ///
    /// If `off` is not 8-byte aligned or `off + 8` exceeds the region.
    #[track_caller]
    pub fn write_u64(&self, off: usize, v: u64) {
        let p = self.at(off, 8, 8).cast::<u64>();
        // SAFETY: `write_volatile` requires `p` valid for writes and aligned for `u64`: it lies
        // inside our live, writable mapping and is 8-byte aligned (checked by `at`). No reference
        // into the mapping exists that the write could invalidate.
        unsafe { p.write_volatile(v) }
    }

    /// Copies `src` into the region at `off`.
    ///
    /// This is a plain `memcpy` through raw pointers, so it runs at memory bandwidth. It creates
    /// no reference into the region. If the kernel moves or zaps a page of the destination
    /// concurrently, the bytes written to that page before the move went with it; the kernel only
    /// changes which physical page backs an address, it never tears a byte.
    ///
    /// ```
    /// let region = remap::region::Region::new(4096)?;
    /// region.copy_in(100, b"hello");
    /// let mut out = [0u8; 5];
    /// region.copy_out(100, &mut out);
    /// assert_eq!(&out, b"hello");
    /// # Ok::<(), remap::region::RegionError>(())
    /// ```
    ///
    /// # Panics
    ///
    /// If `off + src.len()` exceeds the region.
    #[track_caller]
    pub fn copy_in(&self, off: usize, src: &[u8]) {
        let dst = self.at(off, src.len(), 1);
        // SAFETY: `copy_nonoverlapping` requires `src` valid for reads and `dst` valid for writes
        // of `src.len()` bytes, and the two not to overlap. `src` is a live slice; `dst..dst+len`
        // is inside our writable mapping (checked by `at`); they cannot overlap because no slice
        // into the mapping is ever created, so `src` lives elsewhere. Writing memory the kernel
        // may remap underneath is fine: no reference to it exists, and page-table changes are
        // atomic per page.
        unsafe { ptr::copy_nonoverlapping(src.as_ptr(), dst, src.len()) }
    }

    /// Copies `dst.len()` bytes of the region starting at `off` into `dst`.
    ///
    /// A plain `memcpy` through raw pointers, like [`copy_in`](Self::copy_in). If pages of the
    /// range are moved out concurrently, each byte read is either its old value or what the
    /// address holds afterwards (zero, or the page a fault handler installs).
    ///
    /// # Panics
    ///
    /// If `off + dst.len()` exceeds the region.
    #[track_caller]
    pub fn copy_out(&self, off: usize, dst: &mut [u8]) {
        let src = self.at(off, dst.len(), 1);
        // SAFETY: `copy_nonoverlapping` requires `src` valid for reads and `dst` valid for writes
        // of `dst.len()` bytes, not overlapping. `src..src+len` is inside our readable mapping
        // (checked by `at`); `dst` is a live exclusive slice, which cannot point into the mapping
        // because no reference into it is ever created.
        unsafe { ptr::copy_nonoverlapping(src, dst.as_mut_ptr(), dst.len()) }
    }

    /// Sets `len` bytes starting at `off` to `byte` (a `memset` through a raw pointer).
    ///
    /// # Panics
    ///
    /// If `off + len` exceeds the region.
    #[track_caller]
    pub fn fill(&self, off: usize, len: usize, byte: u8) {
        let dst = self.at(off, len, 1);
        // SAFETY: `write_bytes` requires `dst` valid for writes of `len` bytes: the range is
        // inside our writable mapping (checked by `at`), and no reference into it exists.
        unsafe { ptr::write_bytes(dst, byte, len) }
    }

    /// Fills page `index` with the pattern of logical page `page_no` (see [`pattern_word`]).
    ///
    /// # Panics
    ///
    /// If `index >= self.pages()`.
    #[track_caller]
    pub fn fill_page(&self, index: usize, seed: u64, page_no: u64) {
        let base = self.page_addr(index) - self.addr();
        for word in 0..self.page_size / 8 {
            self.write_u64(base + word * 8, pattern_word(seed, page_no, word as u64));
        }
    }

    /// Fills every page `i` with the pattern of logical page `i` for `seed`.
    pub fn fill_pattern(&self, seed: u64) {
        for index in 0..self.pages() {
            self.fill_page(index, seed, index as u64);
        }
    }

    /// Checks that page `index` holds the pattern of logical page `source_page_no` for `seed`,
    /// for example a page filled as page `source_page_no` of another region and then moved here.
    ///
    /// ```
    /// use remap::region::Region;
    ///
    /// let src = Region::new(2 * 4096)?;
    /// let dst = Region::new(4096)?;
    /// src.fill_pattern(42);
    /// // Stand-in for a move: copy src's page 1 into dst's page 0.
    /// let mut page = vec![0u8; 4096];
    /// src.copy_out(4096, &mut page);
    /// dst.copy_in(0, &page);
    /// assert_eq!(dst.verify_page(0, 42, 1), Ok(()));
    /// assert!(dst.verify_page(0, 42, 0).is_err());
    /// # Ok::<(), remap::region::RegionError>(())
    /// ```
    ///
    /// # Errors
    ///
    /// The first [`Mismatch`] found.
    ///
    /// # Panics
    ///
    /// If `index >= self.pages()`.
    #[track_caller]
    pub fn verify_page(
        &self,
        index: usize,
        seed: u64,
        source_page_no: u64,
    ) -> Result<(), Mismatch> {
        let base = self.page_addr(index) - self.addr();
        for word in 0..self.page_size / 8 {
            let offset = base + word * 8;
            let expected = pattern_word(seed, source_page_no, word as u64);
            let found = self.read_u64(offset);
            if found != expected {
                return Err(Mismatch {
                    offset,
                    expected,
                    found,
                });
            }
        }
        Ok(())
    }

    /// Checks that every page `i` holds the pattern of logical page `i` for `seed`, as written by
    /// [`fill_pattern`](Self::fill_pattern).
    ///
    /// # Errors
    ///
    /// The first [`Mismatch`] found, in address order.
    pub fn verify_pattern(&self, seed: u64) -> Result<(), Mismatch> {
        (0..self.pages()).try_for_each(|index| self.verify_page(index, seed, index as u64))
    }

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
    /// (volatile). This takes a real write fault per page (unlike
    /// [`populate_write`](Self::populate_write)), which makes a page shared with a forked child
    /// exclusive again. The read and the write are not one atomic step: do not race it with other
    /// writers of those bytes.
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

// -------------------------------------------------------------------------------------------------
// Moving and copying pages between regions (used by `crate::mover`).
//
// The `uffd` binding's memory ioctls are `unsafe fn`s because they take raw addresses. The safe
// remap API only ever moves between `Region`s, mappings this module made and owns, so the calls
// live here, next to the mapping code, bounds-checked against both regions.
// -------------------------------------------------------------------------------------------------

/// `UFFDIO_MOVE` of `len` bytes from `src` at `src_off` to `dst` at `dst_off`: exactly one ioctl,
/// with the kernel's outcome (`Ok(len)`, or a [`uffd::RangeError`] with the bytes done).
///
/// # Panics
///
/// If either range is outside its region or an offset is not page-aligned.
#[track_caller]
#[inline(always)] // the mover's hot path: one ioctl, no call frame around it
pub(crate) fn move_between(
    uffd: &uffd::Uffd,
    dst: &Region,
    dst_off: usize,
    src: &Region,
    src_off: usize,
    len: usize,
    flags: uffd::MoveFlags,
) -> Result<usize, uffd::RangeError> {
    let d = dst.at(dst_off, len, dst.page_size);
    let s = src.at(src_off, len, src.page_size);
    // SAFETY: `Uffd::move_pages` requires that no Rust reference points into either range during
    // (and, for the source, after) the call, and that both ranges are memory the caller controls.
    // Both ranges lie inside live mappings that `Region`s own (checked by `at`, and the borrows
    // keep the regions, so the mappings, alive for the call); a `Region` never hands out a
    // reference into its mapping, only volatile and raw-pointer accesses, so no reference exists
    // that the pages leaving or arriving could invalidate.
    unsafe { uffd.move_pages(d, s, len, flags) }
}

/// `UFFDIO_COPY` of `len` bytes from `src` at `src_off` into `dst` at `dst_off`: exactly one
/// ioctl. The source is only read.
///
/// # Panics
///
/// If either range is outside its region or an offset is not page-aligned.
#[track_caller]
pub(crate) fn copy_between(
    uffd: &uffd::Uffd,
    dst: &Region,
    dst_off: usize,
    src: &Region,
    src_off: usize,
    len: usize,
    flags: uffd::CopyFlags,
) -> Result<usize, uffd::RangeError> {
    let d = dst.at(dst_off, len, dst.page_size);
    let s = src.at(src_off, len, src.page_size);
    // SAFETY: `Uffd::copy` requires no Rust reference into the destination range, and a readable
    // source that no one writes during the call. The destination lies inside a live mapping a
    // `Region` owns, into which no reference ever exists (see the module docs). The source lies
    // inside another live, readable `Region` mapping; the kernel reads it with `copy_from_user`,
    // so a concurrent volatile write through the `Region` API could at worst make the copied bytes
    // a mix of old and new values, never undefined behaviour, and no reference is involved.
    unsafe { uffd.copy(d, s, len, flags) }
}

/// `UFFDIO_WAKE` on `len` bytes of `region` at `off`.
///
/// # Panics
///
/// If the range is outside the region or `off` is not page-aligned.
#[track_caller]
pub(crate) fn wake_in(
    uffd: &uffd::Uffd,
    region: &Region,
    off: usize,
    len: usize,
) -> Result<(), uffd::ControlError> {
    uffd.wake(region.at(off, len, region.page_size), len)
}

// ---- fault resolution (server) ----
//
// `crate::server` resolves page faults of a `Region` it owns with `UFFDIO_ZEROPAGE`, `UFFDIO_COPY`,
// `UFFDIO_MOVE` and `UFFDIO_POISON`, all `unsafe fn`s of the binding because they take raw
// addresses. The calls live here, bounds-checked against the regions. None of these functions
// allocates, locks or logs: the SIGBUS mode calls them from a signal handler.
// -------------------------------------------------------------------------------------------------

/// `UFFDIO_ZEROPAGE` on `len` bytes of `region` at `off`.
///
/// # Panics
///
/// If the range is outside the region or `off` is not page-aligned.
#[track_caller]
pub(crate) fn resolve_zero(
    uffd: &uffd::Uffd,
    region: &Region,
    off: usize,
    len: usize,
    flags: uffd::ZeropageFlags,
) -> Result<usize, uffd::RangeError> {
    let dst = region.at(off, len, region.page_size);
    // SAFETY: `Uffd::zeropage` requires that no Rust reference points into the range. It lies
    // inside a live mapping the `Region` owns (checked by `at`; the borrow keeps it mapped for the
    // call), and a `Region` never hands out references into its mapping.
    unsafe { uffd.zeropage(dst, len, flags) }
}

/// `UFFDIO_COPY` of `src` (the page source's own buffer, not a region) into `region` at `off`.
///
/// # Panics
///
/// If `off..off + src.len()` is outside the region or `off` is not page-aligned.
#[track_caller]
pub(crate) fn resolve_copy(
    uffd: &uffd::Uffd,
    region: &Region,
    off: usize,
    src: &[u8],
    flags: uffd::CopyFlags,
) -> Result<usize, uffd::RangeError> {
    let dst = region.at(off, src.len(), region.page_size);
    // SAFETY: `Uffd::copy` requires no Rust reference into the destination range and a source
    // readable and unwritten during the call. The destination lies inside a live mapping the
    // `Region` owns (checked by `at`), into which no reference ever exists. The source is a shared
    // slice: readable for its whole length, and no one can write it while the borrow lives. It
    // cannot overlap the destination, since no slice into a region mapping is ever created.
    unsafe { uffd.copy(dst, src.as_ptr(), src.len(), flags) }
}

/// `UFFDIO_MOVE` of `len` bytes from `src` at `src_off` into `dst` at `dst_off`: one ioctl.
///
/// # Panics
///
/// If either range is outside its region or an offset is not page-aligned.
#[track_caller]
pub(crate) fn resolve_move(
    uffd: &uffd::Uffd,
    dst: &Region,
    dst_off: usize,
    src: &Region,
    src_off: usize,
    len: usize,
    flags: uffd::MoveFlags,
) -> Result<usize, uffd::RangeError> {
    let d = dst.at(dst_off, len, dst.page_size);
    let s = src.at(src_off, len, src.page_size);
    // SAFETY: `Uffd::move_pages` requires that no Rust reference points into either range during
    // the call (and into the source afterwards), and that both ranges are memory the caller
    // controls. Both lie inside live mappings owned by `Region`s (checked by `at`; the borrows keep
    // them mapped), and a `Region` never hands out references into its mapping.
    unsafe { uffd.move_pages(d, s, len, flags) }
}

/// `UFFDIO_POISON` on `len` bytes of `region` at `off`: later accesses there raise SIGBUS.
///
/// # Panics
///
/// If the range is outside the region or `off` is not page-aligned.
#[track_caller]
pub(crate) fn resolve_poison(
    uffd: &uffd::Uffd,
    region: &Region,
    off: usize,
    len: usize,
) -> Result<usize, uffd::RangeError> {
    let dst = region.at(off, len, region.page_size);
    // SAFETY: `Uffd::poison` requires that no Rust reference points into the range and that
    // nothing accesses it expecting memory. The range lies inside a live mapping the `Region` owns
    // (checked by `at`), into which no reference ever exists; every access to it goes through the
    // `Region`'s raw-pointer accessors, which see SIGBUS like any other access (the documented
    // outcome of a poisoning page source).
    unsafe { uffd.poison(dst, len, uffd::PoisonFlags::empty()) }
}

/// `UFFDIO_REGISTER` (or, with `register == false`, `UFFDIO_UNREGISTER`) of `len` bytes of
/// `region` at `off`.
///
/// # Panics
///
/// If the range is outside the region or `off` is not page-aligned.
#[track_caller]
pub(crate) fn register_range(
    uffd: &uffd::Uffd,
    region: &Region,
    off: usize,
    len: usize,
    register: bool,
) -> Result<(), uffd::ControlError> {
    let start = region.at(off, len, region.page_size);
    if register {
        uffd.register(start, len, uffd::RegisterMode::MISSING)
            .map(drop)
    } else {
        uffd.unregister(start, len)
    }
}

/// Whether `off..off + len` is a page-aligned range inside `region`: the check
/// [`resolve_move`] and friends make with a panic, made without one (for the SIGBUS path, where a
/// panic would abort the process).
pub(crate) fn fits(region: &Region, off: usize, len: usize) -> bool {
    off % region.page_size == 0 && off.checked_add(len).is_some_and(|end| end <= region.len)
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
