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
//! region.fill(0, 4096, 0xab);
//! assert_eq!(region.read_u8(4095), 0xab);
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

//!
//! # Layout
//!
//! The module is split by job: `map` maps, advises and unmaps (and builds regions,
//! [`RegionBuilder`]), `access` reads and writes contents word by word, and `pages` holds
//! [`PageRange`], a bounds-checked page range of a region, with the userfaultfd operations on
//! it (move, copy, zero, poison, wake, register) and the presence query. Pattern fill and
//! verification helpers are in [`crate::pattern`].

#![allow(unsafe_code)]

use std::fmt;
use std::ops::Range;
use std::ptr::NonNull;

use rustix::io::Errno;
use rustix::mm::Advice;

mod access;
mod map;
mod pages;

pub use map::RegionBuilder;
pub(crate) use map::{rereserve, truncate_leaking};
pub use pages::PageRange;
pub(crate) use pages::{copy_from_slice, move_between, register_range, wake_in};

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

/// A page-aligned private anonymous mapping that remap owns; unmapped on drop.
///
/// Build one with [`Region::new`] or [`Region::builder`]. Contents are reached only through
/// raw-pointer accessors ([`read_u64`](Self::read_u64), [`copy_in`](Self::copy_in),
/// [`fill`](Self::fill), ...), never through references: see the [module docs](self). The
/// userfaultfd operations (move, copy, zero, wake, register) work on [`PageRange`]s of it
/// ([`Region::page_range`], [`Region::all_pages`]).
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
}
