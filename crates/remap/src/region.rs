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
//! pointer, as a relaxed atomic access of one aligned 8-byte word (see [Safety](#safety)), always
//! to or from the caller's own buffers.
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
//! long as the `Region`; and no reference into it outlives a single word access, so the kernel
//! rewriting the memory cannot invalidate anything the compiler assumed.
//!
//! **Concurrent use.** A `Region` is `Sync`: several threads may read, write, copy and fill the
//! same bytes at once through `&Region`. In Rust's memory model two unsynchronised accesses to
//! the same byte, at least one a write, are a data race and undefined behaviour unless both are
//! atomic, of the same size. Raw pointers do not change that (a `memcpy` racing a `memcpy` is UB
//! whether or not a reference exists), and neither does `volatile` (volatile racing volatile is
//! still a data race: volatile only stops the compiler from eliding or merging the access). So
//! every access this module makes to region memory is a **relaxed atomic access of one naturally
//! aligned 8-byte word** (`AtomicU64::from_ptr`): words are loaded and stored whole, and the bytes
//! of a word that an access only partly covers (unaligned heads and tails of
//! [`copy_in`](Region::copy_in)/[`fill`](Region::fill), [`write_u8`](Region::write_u8)) are merged
//! with a compare-and-swap loop on that word, so other bytes of it written concurrently are never
//! lost. One size for every access also avoids racing *mixed-size* atomics, which Rust does not
//! allow either. Relaxed is enough: the accessors promise no ordering between different words (a
//! concurrent reader may see some words of a copy new and others old), only that each word read
//! is a value some access stored whole.
//!
//! `AtomicU64::from_ptr` creates a `&AtomicU64` for the duration of one access. That reference
//! asserts alignment and dereferenceability of those 8 bytes while it lives, and nothing about
//! their contents (an atomic is an `UnsafeCell`): the mapping is live and writable for the whole
//! life of the `Region`, and changes by anyone else are exactly what atomics allow. The kernel is
//! outside Rust's memory model: when it moves a page out, installs one or zaps one, it changes
//! which physical page backs the address, through page-table updates, never by writing the object
//! through Rust. We treat that, like memory shared with another process, as if another thread had
//! stored new whole words: an aligned 8-byte load reads either the old page or the new one, never
//! a mix, and a word of a page that left reads as the value the new state gives it (zero, or what
//! a fault handler installed). That is the same assumption every shared-memory Rust program
//! makes, and no stronger one. Code that reaches region memory through [`Region::as_ptr`] must
//! follow the same rule (aligned 8-byte atomics) to race with these accessors soundly.

#![allow(unsafe_code)]

use std::ffi::c_void;
use std::fmt;
use std::ops::Range;
use std::ptr::{self, NonNull};
use std::sync::atomic::{AtomicU64, Ordering};

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
                // A plain store: one write fault per page, never a read fault first.
                region.write_u64(page * page_size, 0);
            }
        }
        tracing::trace!(addr = region.addr(), len, thp = ?self.thp, "region mapped");
        Ok(region)
    }
}

#[cfg(test)]
mod tests;

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

/// Loads the 8-byte word at `p` (relaxed atomic).
///
/// # Safety
///
/// `p` must be 8-byte aligned and lie, with the 7 bytes after it, inside a live region mapping
/// (readable and writable) for the duration of the call, and every concurrent access to those
/// bytes from Rust must be an 8-byte atomic access (all of this module's are).
#[inline(always)]
unsafe fn load_word(p: *mut u8) -> u64 {
    // SAFETY: `AtomicU64::from_ptr` requires `p` aligned to 8, valid for reads and writes for the
    // reference's lifetime, and no non-atomic or different-size access racing with atomic
    // accesses through it; the caller guarantees all three, and the reference lives for this one
    // load only.
    unsafe { AtomicU64::from_ptr(p.cast::<u64>()) }.load(Ordering::Relaxed)
}

/// Stores `v` to the 8-byte word at `p` (relaxed atomic).
///
/// # Safety
///
/// As for [`load_word`].
#[inline(always)]
unsafe fn store_word(p: *mut u8, v: u64) {
    // SAFETY: as in `load_word`; the caller guarantees alignment, validity for writes and
    // same-size atomic access by everyone else; the reference lives for this one store only.
    unsafe { AtomicU64::from_ptr(p.cast::<u64>()) }.store(v, Ordering::Relaxed)
}

/// Replaces the bytes `bytes` of the 8-byte word at `p` starting at byte `at` (in memory order),
/// keeping the others: a compare-and-swap loop, so bytes of the word that other threads write
/// concurrently are not lost.
///
/// The first attempt assumes the word is zero, so the first access is the locked
/// compare-and-swap itself: on a missing page that is a write fault, as a plain store would
/// take, not a read fault followed by a write fault.
///
/// # Safety
///
/// As for [`load_word`]; also `at + bytes.len() <= 8`.
#[inline]
unsafe fn merge_word(p: *mut u8, at: usize, bytes: &[u8]) {
    let (mut value, mut mask) = ([0u8; 8], [0u8; 8]);
    value[at..at + bytes.len()].copy_from_slice(bytes);
    mask[at..at + bytes.len()].fill(0xff);
    let (value, mask) = (u64::from_ne_bytes(value), u64::from_ne_bytes(mask));
    // SAFETY: as in `load_word`; the caller guarantees alignment, validity and same-size atomic
    // access by everyone else; the reference lives for this loop only.
    let word = unsafe { AtomicU64::from_ptr(p.cast::<u64>()) };
    let mut current = 0;
    loop {
        let new = (current & !mask) | value;
        match word.compare_exchange_weak(current, new, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return,
            Err(seen) => current = seen,
        }
    }
}

/// Reads bytes `at..at + out.len()` of the 8-byte word at `p` into `out`.
///
/// # Safety
///
/// As for [`load_word`]; also `at + out.len() <= 8`.
#[inline]
unsafe fn load_bytes(p: *mut u8, at: usize, out: &mut [u8]) {
    // SAFETY: forwarded from the caller.
    let word = unsafe { load_word(p) }.to_ne_bytes();
    out.copy_from_slice(&word[at..at + out.len()]);
}

/// The native-endian word of an 8-byte chunk.
#[inline(always)]
fn ne_word(chunk: &[u8]) -> u64 {
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(chunk);
    u64::from_ne_bytes(bytes)
}

/// Part of a byte range split at word boundaries: `len` bytes starting at byte `at` of the
/// 8-byte word at `word` (for the body, `len` is a multiple of 8 and `at` is 0).
#[derive(Clone, Copy)]
struct Part {
    word: *mut u8,
    at: usize,
    len: usize,
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
// SAFETY: `Sync` requires that sharing `&Region` between threads cannot cause a data race. Every
// `&self` method either makes a system call on the region's range (the kernel serialises those)
// or accesses region memory only through `load_word`/`store_word`/`merge_word`: relaxed atomic
// accesses of whole, naturally aligned 8-byte words. Unsynchronised atomic accesses of the same
// size never race in Rust's memory model, so threads reading, writing, copying and filling
// overlapping bytes at once get unspecified interleavings per word, never undefined behaviour. No
// reference into the mapping outlives one such access (see the module's Safety section, which
// also covers the kernel changing the pages underneath).
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

    /// The pointer to `off` when `off..off + len` lies inside the region, `None` otherwise.
    ///
    /// Never panics, allocates or formats: the fault-resolution helpers call it from a signal
    /// handler.
    #[inline]
    pub(crate) fn range_ptr(&self, off: usize, len: usize) -> Option<*mut u8> {
        let end = off.checked_add(len)?;
        if end > self.len {
            return None;
        }
        // SAFETY: `add` requires the result to stay inside the same allocation (or one past it);
        // `off <= end <= self.len`, and the mapping is `self.len` bytes long.
        Some(unsafe { self.ptr.as_ptr().add(off) })
    }

    /// [`range_ptr`](Self::range_ptr) for the page-granular ioctls: also `None` unless `off` and
    /// `len` are multiples of the page size. Never panics.
    #[inline]
    pub(crate) fn page_range_ptr(&self, off: usize, len: usize) -> Option<*mut u8> {
        if off % self.page_size != 0 || len % self.page_size != 0 {
            return None;
        }
        self.range_ptr(off, len)
    }

    /// Panics unless `off..off + len` lies inside the region and `off` is a multiple of `align`;
    /// returns the pointer to `off`.
    #[track_caller]
    fn at(&self, off: usize, len: usize, align: usize) -> *mut u8 {
        let Some(p) = self.range_ptr(off, len) else {
            panic!(
                "offset {off:#x} + {len:#x} bytes is outside the region of {:#x} bytes",
                self.len
            );
        };
        assert!(
            off % align == 0,
            "offset {off:#x} is not {align}-byte aligned"
        );
        p
    }

    /// The word containing byte `off` (the region start is page-aligned, so word boundaries are
    /// multiples of 8 from it) and the byte's index in it.
    #[inline(always)]
    fn word_of(&self, p: *mut u8, off: usize) -> (*mut u8, usize) {
        let at = off % 8;
        (p.wrapping_sub(at), at)
    }

    /// Reads the byte at `off` (a relaxed atomic load of the 8-byte word containing it).
    ///
    /// # Panics
    ///
    /// If `off` is outside the region.
    #[track_caller]
    pub fn read_u8(&self, off: usize) -> u8 {
        let (word, at) = self.word_of(self.at(off, 1, 1), off);
        let mut byte = [0u8];
        // SAFETY: `load_bytes` requires an 8-byte aligned word inside a live region mapping,
        // accessed by everyone else only with 8-byte atomics, and `at + 1 <= 8`. The byte is
        // inside the region (checked by `at`); its word starts at a multiple of 8 from the
        // page-aligned region start, so it is aligned and, since the region length is a page
        // multiple, wholly inside; this module accesses region memory only with 8-byte atomics.
        unsafe { load_bytes(word, at, &mut byte) };
        byte[0]
    }

    /// Writes the byte `v` at `off`, leaving the other bytes of its 8-byte word as they are,
    /// even when other threads write them concurrently (a compare-and-swap on that word).
    ///
    /// # Panics
    ///
    /// If `off` is outside the region.
    #[track_caller]
    pub fn write_u8(&self, off: usize, v: u8) {
        let (word, at) = self.word_of(self.at(off, 1, 1), off);
        // SAFETY: `merge_word` requires what `read_u8` establishes for its `load_bytes` (same
        // reasoning) and `at + 1 <= 8`.
        unsafe { merge_word(word, at, &[v]) }
    }

    /// Reads the native-endian `u64` at `off` (one relaxed atomic load: never torn).
    ///
    /// # Panics
    ///
    /// If `off` is not 8-byte aligned or `off + 8` exceeds the region.
    #[track_caller]
    pub fn read_u64(&self, off: usize) -> u64 {
        let p = self.at(off, 8, 8);
        // SAFETY: `load_word` requires an 8-byte aligned word inside a live region mapping that
        // everyone else accesses with 8-byte atomics: `at` checked bounds and alignment (the
        // region start is page-aligned), and this module only uses 8-byte atomics on it.
        unsafe { load_word(p) }
    }

    /// Writes the native-endian `u64` `v` at `off` (one relaxed atomic store).
    ///
    /// # Panics
    ///
    /// If `off` is not 8-byte aligned or `off + 8` exceeds the region.
    #[track_caller]
    pub fn write_u64(&self, off: usize, v: u64) {
        let p = self.at(off, 8, 8);
        // SAFETY: as in `read_u64`, for `store_word`.
        unsafe { store_word(p, v) }
    }

    /// Copies `src` into the region at `off`.
    ///
    /// Word by word: relaxed atomic 8-byte stores, with the partial words at an unaligned head or
    /// tail merged by compare-and-swap (see the [module docs](self#safety)), so concurrent use
    /// from several threads is sound; each 8-byte word ends up with one writer's bytes for the
    /// bytes that writer covered. If the kernel moves or zaps a page of the destination
    /// concurrently, the words written to that page before the move went with it.
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
        let start = self.at(off, src.len(), 1);
        let (head, body, tail) = self.split_words(start, off, src.len());
        let (src_head, rest) = src.split_at(head.len);
        let (src_body, src_tail) = rest.split_at(body.len);
        // SAFETY (all three blocks below): `merge_word` and `store_word` require 8-byte aligned
        // words inside a live region mapping, accessed by everyone else only with 8-byte
        // atomics, and `merge_word` bytes within the word. `split_words` returns aligned words
        // covering exactly `off..off + src.len()`, which `at` checked lies inside the region;
        // words are wholly inside since the region start and length are page multiples; this
        // module accesses region memory only with 8-byte atomics.
        if head.len > 0 {
            // SAFETY: see above.
            unsafe { merge_word(head.word, head.at, src_head) };
        }
        let mut p = body.word;
        for chunk in src_body.chunks_exact(8) {
            // SAFETY: see above; `p` advances by 8 over the body words.
            unsafe { store_word(p, ne_word(chunk)) };
            p = p.wrapping_add(8);
        }
        if tail.len > 0 {
            // SAFETY: see above.
            unsafe { merge_word(tail.word, 0, src_tail) };
        }
    }

    /// Splits `off..off + len` (at `start`, checked inside the region) into a partial head word,
    /// whole aligned body words and a partial tail word.
    #[inline(always)]
    fn split_words(&self, start: *mut u8, off: usize, len: usize) -> (Part, Part, Part) {
        let (head_word, at) = self.word_of(start, off);
        let head_len = if at == 0 { 0 } else { (8 - at).min(len) };
        let body_len = (len - head_len) / 8 * 8;
        let tail_len = len - head_len - body_len;
        let body = start.wrapping_add(head_len);
        (
            Part {
                word: head_word,
                at,
                len: head_len,
            },
            Part {
                word: body,
                at: 0,
                len: body_len,
            },
            Part {
                word: body.wrapping_add(body_len),
                at: 0,
                len: tail_len,
            },
        )
    }

    /// Copies `dst.len()` bytes of the region starting at `off` into `dst`.
    ///
    /// Word by word, relaxed atomic 8-byte loads, like [`copy_in`](Self::copy_in). Each aligned
    /// word read is a value some access stored whole; different words may come from different
    /// moments. If pages of the range are moved out concurrently, each word read is either its
    /// old value or what the address holds afterwards (zero, or the page a fault handler
    /// installs).
    ///
    /// # Panics
    ///
    /// If `off + dst.len()` exceeds the region.
    #[track_caller]
    pub fn copy_out(&self, off: usize, dst: &mut [u8]) {
        let start = self.at(off, dst.len(), 1);
        let (head, body, tail) = self.split_words(start, off, dst.len());
        let (dst_head, rest) = dst.split_at_mut(head.len);
        let (dst_body, dst_tail) = rest.split_at_mut(body.len);
        // SAFETY (all three blocks below): `load_bytes` and `load_word` require what `copy_in`
        // establishes for its stores (same reasoning: aligned words covering exactly the checked
        // range, wholly inside the region, 8-byte atomics only).
        if head.len > 0 {
            // SAFETY: see above.
            unsafe { load_bytes(head.word, head.at, dst_head) };
        }
        let mut p = body.word;
        for chunk in dst_body.chunks_exact_mut(8) {
            // SAFETY: see above; `p` advances by 8 over the body words.
            chunk.copy_from_slice(&unsafe { load_word(p) }.to_ne_bytes());
            p = p.wrapping_add(8);
        }
        if tail.len > 0 {
            // SAFETY: see above.
            unsafe { load_bytes(tail.word, 0, dst_tail) };
        }
    }

    /// Sets `len` bytes starting at `off` to `byte`: relaxed atomic 8-byte stores, partial words
    /// at the ends merged by compare-and-swap, like [`copy_in`](Self::copy_in).
    ///
    /// # Panics
    ///
    /// If `off + len` exceeds the region.
    #[track_caller]
    pub fn fill(&self, off: usize, len: usize, byte: u8) {
        let start = self.at(off, len, 1);
        let (head, body, tail) = self.split_words(start, off, len);
        let bytes = [byte; 8];
        let word = u64::from_ne_bytes(bytes);
        // SAFETY (all three blocks below): as in `copy_in`.
        if head.len > 0 {
            // SAFETY: see above.
            unsafe { merge_word(head.word, head.at, &bytes[..head.len]) };
        }
        let mut p = body.word;
        for _ in 0..body.len / 8 {
            // SAFETY: see above; `p` advances by 8 over the body words.
            unsafe { store_word(p, word) };
            p = p.wrapping_add(8);
        }
        if tail.len > 0 {
            // SAFETY: see above.
            unsafe { merge_word(tail.word, 0, &bytes[..tail.len]) };
        }
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
/// Never panics, allocates, locks or logs, so the fault server may call it from a signal handler.
/// A range outside its region, or an offset or length that is not a page multiple, is refused
/// without an ioctl as [`uffd::RangeError::Invalid`] with `done: 0` (what the kernel answers for
/// a bad range).
#[inline]
pub(crate) fn move_between(
    uffd: &uffd::Uffd,
    dst: &Region,
    dst_off: usize,
    src: &Region,
    src_off: usize,
    len: usize,
    flags: uffd::MoveFlags,
) -> Result<usize, uffd::RangeError> {
    let (Some(d), Some(s)) = (
        dst.page_range_ptr(dst_off, len),
        src.page_range_ptr(src_off, len),
    ) else {
        return Err(uffd::RangeError::Invalid { done: 0 });
    };
    // SAFETY: `Uffd::move_pages` requires that no Rust reference points into either range during
    // (and, for the source, after) the call, and that both ranges are memory the caller controls.
    // Both ranges lie inside live mappings that `Region`s own (checked by `page_range_ptr`, and
    // the borrows keep the regions, so the mappings, alive for the call); a `Region` never hands
    // out a reference into its mapping and its own accesses hold one only for a single atomic
    // word access, which cannot span this call on the calling thread, and for other threads is
    // an atomic access the kernel's page replacement is allowed to race with (module docs).
    unsafe { uffd.move_pages(d, s, len, flags) }
}

/// `UFFDIO_COPY` of `len` bytes from `src` at `src_off` into `dst` at `dst_off`: exactly one
/// ioctl. The source is only read.
///
/// Never panics, allocates, locks or logs; a bad range is [`uffd::RangeError::Invalid`] with
/// `done: 0`, as for [`move_between`].
#[inline]
pub(crate) fn copy_between(
    uffd: &uffd::Uffd,
    dst: &Region,
    dst_off: usize,
    src: &Region,
    src_off: usize,
    len: usize,
    flags: uffd::CopyFlags,
) -> Result<usize, uffd::RangeError> {
    let Some(s) = src.range_ptr(src_off, len) else {
        return Err(uffd::RangeError::Invalid { done: 0 });
    };
    // SAFETY: `copy_raw` requires `s` readable for `len` bytes for the call and not written
    // through a reference during it: it lies inside a live, readable `Region` mapping (checked
    // by `range_ptr`; the borrow keeps it mapped), into which no reference ever exists. The
    // kernel reads it with `copy_from_user`, so a concurrent atomic write through the `Region`
    // API can at worst make the copied bytes a mix of old and new words, never undefined
    // behaviour.
    unsafe { copy_raw(uffd, dst, dst_off, s, len, flags) }
}

/// `UFFDIO_COPY` of `src` (a buffer of the caller's, not a region) into `dst` at `dst_off`: one
/// ioctl. Never panics, allocates, locks or logs; a bad range is [`uffd::RangeError::Invalid`]
/// with `done: 0`, as for [`move_between`].
#[inline]
pub(crate) fn copy_from_slice(
    uffd: &uffd::Uffd,
    dst: &Region,
    dst_off: usize,
    src: &[u8],
    flags: uffd::CopyFlags,
) -> Result<usize, uffd::RangeError> {
    // SAFETY: `copy_raw` requires `src` readable for `src.len()` bytes and unwritten during the
    // call: it is a shared slice, readable for its whole length, which no one can write while the
    // borrow lives.
    unsafe { copy_raw(uffd, dst, dst_off, src.as_ptr(), src.len(), flags) }
}

/// The one `UFFDIO_COPY` call behind [`copy_between`] and [`copy_from_slice`].
///
/// # Safety
///
/// `src` must be readable for `len` bytes for the duration of the call, and nothing may write
/// those bytes through a Rust reference meanwhile.
#[inline]
unsafe fn copy_raw(
    uffd: &uffd::Uffd,
    dst: &Region,
    dst_off: usize,
    src: *const u8,
    len: usize,
    flags: uffd::CopyFlags,
) -> Result<usize, uffd::RangeError> {
    let Some(d) = dst.page_range_ptr(dst_off, len) else {
        return Err(uffd::RangeError::Invalid { done: 0 });
    };
    // SAFETY: `Uffd::copy` requires no Rust reference into the destination range, and a source
    // readable and unwritten during the call. The destination lies inside a live mapping a
    // `Region` owns (checked by `page_range_ptr`), into which no reference ever exists beyond
    // single atomic word accesses (module docs); the caller guarantees the source. They cannot
    // overlap in a way that matters: the kernel copies into a page that was missing.
    unsafe { uffd.copy(d, src, len, flags) }
}

/// `UFFDIO_WAKE` on `len` bytes of `region` at `off`.
///
/// Never panics, allocates, locks or logs; a bad range is a [`uffd::ControlError`] with
/// `EINVAL`, without an ioctl.
#[inline]
pub(crate) fn wake_in(
    uffd: &uffd::Uffd,
    region: &Region,
    off: usize,
    len: usize,
) -> Result<(), uffd::ControlError> {
    match region.page_range_ptr(off, len) {
        Some(start) => uffd.wake(start, len),
        None => Err(uffd::ControlError {
            op: uffd::ControlOp::Wake,
            start: region.addr().wrapping_add(off),
            len,
            errno: Errno::INVAL,
        }),
    }
}

// ---- fault resolution (server) ----
//
// `crate::server` resolves page faults of a `Region` it owns with `UFFDIO_ZEROPAGE` and
// `UFFDIO_POISON` below, and with `move_between` and `copy_from_slice` above (the same calls the
// mover makes). None of them panics, allocates, locks or logs: the SIGBUS mode calls them from a
// signal handler.
// -------------------------------------------------------------------------------------------------

/// `UFFDIO_ZEROPAGE` on `len` bytes of `region` at `off`. Never panics; a bad range is
/// [`uffd::RangeError::Invalid`] with `done: 0`, as for [`move_between`].
pub(crate) fn resolve_zero(
    uffd: &uffd::Uffd,
    region: &Region,
    off: usize,
    len: usize,
    flags: uffd::ZeropageFlags,
) -> Result<usize, uffd::RangeError> {
    let Some(dst) = region.page_range_ptr(off, len) else {
        return Err(uffd::RangeError::Invalid { done: 0 });
    };
    // SAFETY: `Uffd::zeropage` requires that no Rust reference points into the range. It lies
    // inside a live mapping the `Region` owns (checked by `page_range_ptr`; the borrow keeps it
    // mapped for the call), and a `Region` never hands out references into its mapping.
    unsafe { uffd.zeropage(dst, len, flags) }
}

/// `UFFDIO_POISON` on `len` bytes of `region` at `off`: later accesses there raise SIGBUS. Never
/// panics; a bad range is [`uffd::RangeError::Invalid`] with `done: 0`.
pub(crate) fn resolve_poison(
    uffd: &uffd::Uffd,
    region: &Region,
    off: usize,
    len: usize,
) -> Result<usize, uffd::RangeError> {
    let Some(dst) = region.page_range_ptr(off, len) else {
        return Err(uffd::RangeError::Invalid { done: 0 });
    };
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
