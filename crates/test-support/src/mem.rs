//! Anonymous mappings for tests of the `uffd` crate, which must not depend on `remap`.
//!
//! [`Mapping`] owns one `mmap(2)` region and offers the few things the tests do to it: madvise,
//! mprotect, mlock, volatile reads and writes, page patterns and checksums, and the
//! `/proc/self/smaps` and `/proc/self/pagemap` views of it.
//!
//! # Safety
//!
//! This module opts back into `unsafe` (the crate denies it) because mapping and touching memory
//! are raw-pointer operations. The invariants every block relies on:
//!
//! - a `Mapping` owns `[ptr, ptr + len)` from creation to drop: it was returned by `mmap(2)` for
//!   exactly that length (or trimmed to it), and only `Drop`, [`Mapping::unmap`] and
//!   [`Mapping::mremap_into`] unmap it;
//! - memory is only ever accessed through volatile loads and stores of `u64`s (8-byte aligned,
//!   bounds-checked against `len`), never through Rust references, because userfaultfd moves
//!   pages in and out underneath the tests;
//! - madvise, mprotect and mlock change how the range is backed, never whether it is mapped
//!   (except `MADV_DONTNEED`/`MADV_PAGEOUT`, which drop or swap out contents and leave the range
//!   mapped: a later read sees zeros or the swapped-in data).
//!
//! A read of a page registered with a userfaultfd for missing faults waits until someone resolves
//! the fault: that is the tests' business, not a safety matter.

#![allow(unsafe_code)]

use std::fs;
use std::io::{self, BufRead, BufReader};
use std::os::unix::fs::FileExt;
use std::ptr;

/// The size of a PMD-mapped transparent huge page on x86-64 and arm64 with 4 KiB pages.
pub const HUGE_PAGE: usize = 2 << 20;

/// `MADV_GUARD_INSTALL` (Linux 6.13): install guard markers that fault on access.
pub const MADV_GUARD_INSTALL: i32 = 102;

/// `/proc/self/pagemap`: the page is present in RAM.
pub const PM_PRESENT: u64 = 1 << 63;
/// `/proc/self/pagemap`: the page is swapped out (or a swap-like entry).
pub const PM_SWAPPED: u64 = 1 << 62;
/// `/proc/kpageflags`: the page belongs to a transparent huge page.
pub const KPF_THP: u64 = 1 << 22;

/// The system page size.
pub fn page_size() -> usize {
    rustix::param::page_size()
}

/// An `madvise(2)` advice the tests use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Advice {
    /// `MADV_HUGEPAGE`: back the range with THPs where aligned.
    HugePage,
    /// `MADV_NOHUGEPAGE`: never back the range with THPs.
    NoHugePage,
    /// `MADV_DONTFORK`: a child of `fork(2)` does not get the range.
    DontFork,
    /// `MADV_DOFORK`: undo `DontFork`.
    DoFork,
    /// `MADV_DONTNEED`: drop the contents (the range reads as zeros, or faults as missing).
    DontNeed,
    /// `MADV_PAGEOUT`: reclaim the pages now (swap them out, if swap is active).
    PageOut,
    /// `MADV_GUARD_INSTALL` (Linux 6.13): accesses raise SIGSEGV.
    GuardInstall,
}

impl Advice {
    fn raw(self) -> i32 {
        match self {
            Advice::HugePage => libc::MADV_HUGEPAGE,
            Advice::NoHugePage => libc::MADV_NOHUGEPAGE,
            Advice::DontFork => libc::MADV_DONTFORK,
            Advice::DoFork => libc::MADV_DOFORK,
            Advice::DontNeed => libc::MADV_DONTNEED,
            Advice::PageOut => libc::MADV_PAGEOUT,
            Advice::GuardInstall => MADV_GUARD_INSTALL,
        }
    }
}

/// One anonymous mapping, unmapped on drop.
///
/// [`Mapping::new`] maps private anonymous read-write memory and applies `MADV_DONTFORK`: tests
/// share a process with tests that fork (or spawn children through `fork`), and a fork would
/// otherwise make every page of this mapping shared for a moment, which `UFFDIO_MOVE` refuses
/// with EBUSY. Tests that want a forkable mapping apply [`Advice::DoFork`].
///
/// ```
/// use test_support::mem::Mapping;
///
/// let m = Mapping::new(4 * 4096).unwrap();
/// m.fill_page(1, 7);
/// assert!(m.page_holds(1, 7));
/// assert_eq!(m.read_u64(0), 0);
/// ```
#[derive(Debug)]
pub struct Mapping {
    ptr: *mut u8,
    len: usize,
}

// SAFETY: a `Mapping` is an address range owned by the process, not by a thread; every access goes
// through volatile loads and stores on raw pointers, which any thread may issue.
unsafe impl Send for Mapping {}
// SAFETY: as for `Send`: `&Mapping` allows only volatile accesses and syscalls on the range.
unsafe impl Sync for Mapping {}

impl Mapping {
    /// Maps `len` bytes of private anonymous read-write memory, with `MADV_DONTFORK`.
    ///
    /// # Errors
    ///
    /// The errno of `mmap(2)` or `madvise(2)`.
    pub fn new(len: usize) -> io::Result<Mapping> {
        let m = Self::with_flags(
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
        )?;
        m.madvise(Advice::DontFork)?;
        Ok(m)
    }

    /// Maps `len` bytes with the given `mmap(2)` protection and flags (`MAP_ANONYMOUS` is added),
    /// without any advice.
    ///
    /// # Errors
    ///
    /// The errno of `mmap(2)`.
    pub fn with_flags(len: usize, prot: i32, flags: i32) -> io::Result<Mapping> {
        assert!(
            len > 0 && len % page_size() == 0,
            "bad mapping length {len}"
        );
        // SAFETY: a new anonymous mapping at an address of the kernel's choosing (no MAP_FIXED)
        // replaces nothing; the result is checked before use.
        let ptr = unsafe {
            libc::mmap(
                ptr::null_mut(),
                len,
                prot,
                flags | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Mapping {
            ptr: ptr.cast(),
            len,
        })
    }

    /// Maps `len` bytes of private anonymous read-write memory starting on a [`HUGE_PAGE`]
    /// boundary (over-maps, then trims), with `MADV_DONTFORK` and no THP advice.
    ///
    /// # Errors
    ///
    /// The errno of `mmap(2)`, `munmap(2)` or `madvise(2)`.
    pub fn huge_aligned(len: usize) -> io::Result<Mapping> {
        let over = Self::with_flags(
            len + HUGE_PAGE,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
        )?;
        let base = over.addr();
        let start = (base + HUGE_PAGE - 1) & !(HUGE_PAGE - 1);
        let head = start - base;
        let tail = HUGE_PAGE - head;
        let (ptr, total) = over.into_raw();
        // SAFETY: `[ptr, ptr + total)` is our own mapping, just released from its `Mapping`; we
        // unmap only its parts outside `[start, start + len)`, which nothing refers to.
        unsafe {
            if head > 0 && libc::munmap(ptr.cast(), head) != 0 {
                return Err(io::Error::last_os_error());
            }
            if tail > 0 && libc::munmap(ptr.add(head + len).cast(), tail) != 0 {
                return Err(io::Error::last_os_error());
            }
        }
        debug_assert_eq!(head + len + tail, total);
        let m = Mapping {
            ptr: ptr.wrapping_add(head),
            len,
        };
        m.madvise(Advice::DontFork)?;
        Ok(m)
    }

    /// Takes ownership of an existing mapping.
    ///
    /// # Safety
    ///
    /// `[ptr, ptr + len)` must be a mapping that nothing else will unmap, and no Rust reference
    /// may point into it.
    pub unsafe fn from_raw(ptr: *mut u8, len: usize) -> Mapping {
        Mapping { ptr, len }
    }

    /// Gives up ownership without unmapping: returns the start and length.
    pub fn into_raw(self) -> (*mut u8, usize) {
        let parts = (self.ptr, self.len);
        std::mem::forget(self);
        parts
    }

    /// The start of the mapping.
    pub fn as_ptr(&self) -> *mut u8 {
        self.ptr
    }

    /// The start of the mapping, as a number.
    pub fn addr(&self) -> usize {
        self.ptr as usize
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Never true: mappings have at least one page.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The address of page `index`.
    pub fn page(&self, index: usize) -> *mut u8 {
        let off = index * page_size();
        assert!(off < self.len, "page {index} beyond the mapping");
        self.ptr.wrapping_add(off)
    }

    fn check(&self, offset: usize, len: usize) {
        assert!(
            offset.checked_add(len).is_some_and(|end| end <= self.len),
            "range {offset:#x}+{len:#x} beyond the mapping of {:#x} bytes",
            self.len
        );
    }

    /// `madvise(2)` on the whole mapping.
    ///
    /// # Errors
    ///
    /// The errno of `madvise(2)`.
    pub fn madvise(&self, advice: Advice) -> io::Result<()> {
        self.madvise_range(0, self.len, advice)
    }

    /// `madvise(2)` on `[offset, offset + len)` of the mapping.
    ///
    /// # Errors
    ///
    /// The errno of `madvise(2)`.
    pub fn madvise_range(&self, offset: usize, len: usize, advice: Advice) -> io::Result<()> {
        self.check(offset, len);
        // SAFETY: the range lies within our mapping; the advice values used here change backing,
        // THP use or fork behaviour, or drop contents that are only ever read through volatile
        // loads, and never unmap the range.
        let rc = unsafe { libc::madvise(self.ptr.add(offset).cast(), len, advice.raw()) };
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }

    /// `mprotect(2)` on `[offset, offset + len)` of the mapping.
    ///
    /// # Errors
    ///
    /// The errno of `mprotect(2)`.
    pub fn mprotect(&self, offset: usize, len: usize, prot: i32) -> io::Result<()> {
        self.check(offset, len);
        // SAFETY: the range lies within our mapping; changing its protection cannot invalidate a
        // Rust reference because none points into it (accesses are volatile and checked by the
        // caller against the protection it set).
        let rc = unsafe { libc::mprotect(self.ptr.add(offset).cast(), len, prot) };
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }

    /// `mlock(2)` on the whole mapping (populates it).
    ///
    /// # Errors
    ///
    /// The errno of `mlock(2)` (ENOMEM or EPERM beyond `RLIMIT_MEMLOCK`).
    pub fn mlock(&self) -> io::Result<()> {
        // SAFETY: the range is our mapping; locking only pins and populates it.
        let rc = unsafe { libc::mlock(self.ptr.cast(), self.len) };
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }

    /// Unmaps now, reporting the errno (drop ignores it).
    ///
    /// # Errors
    ///
    /// The errno of `munmap(2)`.
    pub fn unmap(self) -> io::Result<()> {
        let (ptr, len) = self.into_raw();
        // SAFETY: we owned `[ptr, ptr + len)` and gave up ownership just now; nothing refers to it.
        if unsafe { libc::munmap(ptr.cast(), len) } == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }

    /// `mremap(2)` this mapping onto `target`'s address (same length, `MREMAP_MAYMOVE |
    /// MREMAP_FIXED`): `target` now holds this mapping's pages and VMA flags, this range is gone.
    ///
    /// # Errors
    ///
    /// The errno of `mremap(2)`; on error nothing changed and `self` is unmapped on drop.
    pub fn mremap_into(self, target: &Mapping) -> io::Result<()> {
        assert_eq!(self.len, target.len, "mremap_into needs equal lengths");
        // SAFETY: both ranges are our own mappings of `len` bytes; MREMAP_FIXED replaces
        // `target`'s pages (which `target` keeps owning, as an address range) and unmaps ours,
        // whose ownership we give up below only on success.
        let rc = unsafe {
            libc::mremap(
                self.ptr.cast(),
                self.len,
                target.len,
                libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED,
                target.ptr.cast::<libc::c_void>(),
            )
        };
        if rc == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        std::mem::forget(self);
        Ok(())
    }

    /// Volatile load of the `u64` at `offset` (8-byte aligned).
    pub fn read_u64(&self, offset: usize) -> u64 {
        self.check(offset, 8);
        assert_eq!(offset % 8, 0, "unaligned offset {offset:#x}");
        // SAFETY: in bounds and aligned (checked above) within our live mapping; volatile, and no
        // reference is formed.
        unsafe { ptr::read_volatile(self.ptr.add(offset).cast::<u64>()) }
    }

    /// Volatile store of `value` at `offset` (8-byte aligned).
    pub fn write_u64(&self, offset: usize, value: u64) {
        self.check(offset, 8);
        assert_eq!(offset % 8, 0, "unaligned offset {offset:#x}");
        // SAFETY: in bounds and aligned (checked above) within our live mapping; volatile, and no
        // reference is formed.
        unsafe { ptr::write_volatile(self.ptr.add(offset).cast::<u64>(), value) }
    }

    /// Fills page `index` with the pattern of `tag` (every word non-zero, differing per tag).
    pub fn fill_page(&self, index: usize, tag: u64) {
        let base = index * page_size();
        for w in 0..page_size() / 8 {
            self.write_u64(base + w * 8, pattern_word(tag, w));
        }
    }

    /// Fills pages `[0, pages)` with tags `seed + index`.
    pub fn fill_pages(&self, pages: usize, seed: u64) {
        for i in 0..pages {
            self.fill_page(i, seed + i as u64);
        }
    }

    /// A checksum of page `index` (reads every word).
    pub fn page_checksum(&self, index: usize) -> u64 {
        let base = index * page_size();
        (0..page_size() / 8).fold(0, |acc, w| mix(acc, self.read_u64(base + w * 8)))
    }

    /// Whether page `index` holds exactly the pattern of `tag`.
    pub fn page_holds(&self, index: usize, tag: u64) -> bool {
        self.page_checksum(index) == pattern_checksum(tag)
    }

    /// Whether page `index` reads as zeros.
    pub fn page_is_zero(&self, index: usize) -> bool {
        let base = index * page_size();
        (0..page_size() / 8).all(|w| self.read_u64(base + w * 8) == 0)
    }

    /// The `AnonHugePages` of `/proc/self/smaps`, in kB, summed over the VMAs that overlap this
    /// mapping.
    ///
    /// # Errors
    ///
    /// Reading `/proc/self/smaps`.
    pub fn anon_huge_kb(&self) -> io::Result<u64> {
        anon_huge_kb(self.addr(), self.len)
    }

    /// The `/proc/self/pagemap` entries of pages `[first, first + count)`.
    ///
    /// # Errors
    ///
    /// Reading `/proc/self/pagemap`.
    pub fn pagemap(&self, first: usize, count: usize) -> io::Result<Vec<u64>> {
        self.check(first * page_size(), count * page_size());
        pagemap(self.addr() + first * page_size(), count)
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: we own `[ptr, ptr + len)` (see the module docs) and nothing refers into it.
        unsafe {
            libc::munmap(self.ptr.cast(), self.len);
        }
    }
}

/// Word `w` of the page pattern of `tag`: never zero, different for every tag and word.
pub fn pattern_word(tag: u64, w: usize) -> u64 {
    let x = tag
        .wrapping_add(1)
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add((w as u64).wrapping_mul(0xBF58_476D_1CE4_E5B9));
    (x ^ (x >> 31)) | 1
}

fn mix(acc: u64, word: u64) -> u64 {
    (acc.rotate_left(7) ^ word).wrapping_mul(0x94D0_49BB_1331_11EB)
}

/// The [`Mapping::page_checksum`] of a page filled with the pattern of `tag`.
pub fn pattern_checksum(tag: u64) -> u64 {
    (0..page_size() / 8).fold(0, |acc, w| mix(acc, pattern_word(tag, w)))
}

/// `AnonHugePages` in kB, summed over the VMAs of `/proc/self/smaps` overlapping
/// `[addr, addr + len)`.
///
/// # Errors
///
/// Reading `/proc/self/smaps`.
pub fn anon_huge_kb(addr: usize, len: usize) -> io::Result<u64> {
    let file = fs::File::open("/proc/self/smaps")?;
    let mut total = 0;
    let mut inside = false;
    for line in BufReader::new(file).lines() {
        let line = line?;
        if let Some((start, end)) = vma_header(&line) {
            inside = start < addr + len && addr < end;
        } else if inside {
            if let Some(rest) = line.strip_prefix("AnonHugePages:") {
                let kb = rest.trim().trim_end_matches("kB").trim();
                total += kb.parse::<u64>().map_err(|e| {
                    io::Error::new(io::ErrorKind::InvalidData, format!("{line:?}: {e}"))
                })?;
            }
        }
    }
    Ok(total)
}

/// The range of a `/proc/<pid>/smaps` VMA header line (`start-end perms offset dev inode path`).
fn vma_header(line: &str) -> Option<(usize, usize)> {
    let range = line.split_whitespace().next()?;
    let (start, end) = range.split_once('-')?;
    let start = usize::from_str_radix(start, 16).ok()?;
    let end = usize::from_str_radix(end, 16).ok()?;
    Some((start, end))
}

/// The number of VMAs of `/proc/self/maps` that overlap `[addr, addr + len)`.
///
/// # Errors
///
/// Reading `/proc/self/maps`.
pub fn vma_count(addr: usize, len: usize) -> io::Result<usize> {
    let text = fs::read_to_string("/proc/self/maps")?;
    Ok(text
        .lines()
        .filter_map(vma_header)
        .filter(|&(start, end)| start < addr + len && addr < end)
        .count())
}

/// `count` entries of `/proc/self/pagemap` from the page containing `addr`.
///
/// # Errors
///
/// Reading `/proc/self/pagemap`.
pub fn pagemap(addr: usize, count: usize) -> io::Result<Vec<u64>> {
    let file = fs::File::open("/proc/self/pagemap")?;
    let mut bytes = vec![0u8; count * 8];
    let offset = (addr / page_size()) as u64 * 8;
    file.read_exact_at(&mut bytes, offset)?;
    Ok(bytes
        .chunks_exact(8)
        .map(|c| u64::from_ne_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
        .collect())
}

/// Whether the page at `addr` is mapped from a transparent huge page, by `/proc/self/pagemap`
/// and `/proc/kpageflags` (needs root for the PFN).
///
/// # Errors
///
/// Reading either file; `PermissionDenied` when the PFN is hidden (not root).
pub fn is_thp(addr: usize) -> io::Result<bool> {
    let entry = pagemap(addr, 1)?[0];
    if entry & PM_PRESENT == 0 {
        return Ok(false);
    }
    let pfn = entry & ((1 << 55) - 1);
    if pfn == 0 {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            "pagemap hides PFNs (not root)",
        ));
    }
    let file = fs::File::open("/proc/kpageflags")?;
    let mut flags = [0u8; 8];
    file.read_exact_at(&mut flags, pfn * 8)?;
    Ok(u64::from_ne_bytes(flags) & KPF_THP != 0)
}

/// An address range of `len` bytes that no one maps: a test can hand it to the kernel as
/// "unmapped" without risking that another thread's `mmap(2)` lands there, because nothing maps
/// at fixed addresses this far below the mmap base.
///
/// # Panics
///
/// When every candidate address is in use (never on a normal 64-bit process).
pub fn unmapped_range(len: usize) -> *mut u8 {
    const CANDIDATES: [usize; 4] = [
        0x2000_0000_0000,
        0x2100_0000_0000,
        0x2200_0000_0000,
        0x2300_0000_0000,
    ];
    for addr in CANDIDATES {
        // SAFETY: MAP_FIXED_NOREPLACE never replaces an existing mapping: it fails with EEXIST
        // instead. A successful probe is unmapped at once.
        let probe = unsafe {
            libc::mmap(
                addr as *mut libc::c_void,
                len,
                libc::PROT_NONE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED_NOREPLACE,
                -1,
                0,
            )
        };
        if probe == libc::MAP_FAILED {
            continue;
        }
        // SAFETY: `probe` is the mapping just created above, of `len` bytes, known to no one.
        unsafe {
            libc::munmap(probe, len);
        }
        if probe as usize == addr {
            return addr as *mut u8;
        }
    }
    panic!("no unmapped candidate range of {len:#x} bytes");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_differ_and_checksums_match() {
        let m = Mapping::new(2 * page_size()).unwrap();
        m.fill_page(0, 1);
        m.fill_page(1, 2);
        assert!(m.page_holds(0, 1));
        assert!(m.page_holds(1, 2));
        assert!(!m.page_holds(0, 2));
        assert!(!m.page_is_zero(0));
    }

    #[test]
    fn huge_aligned_is_aligned_and_pagemap_sees_writes() {
        let m = Mapping::huge_aligned(HUGE_PAGE).unwrap();
        assert_eq!(m.addr() % HUGE_PAGE, 0);
        m.madvise(Advice::NoHugePage).unwrap();
        m.write_u64(page_size(), 5);
        let entries = m.pagemap(0, 2).unwrap();
        assert_eq!(entries[0] & PM_PRESENT, 0);
        assert_ne!(entries[1] & PM_PRESENT, 0);
    }

    #[test]
    fn unmapped_range_is_unmapped() {
        let addr = unmapped_range(4 * page_size());
        assert_eq!(vma_count(addr as usize, 4 * page_size()).unwrap(), 0);
    }
}
