//! Everything the torture run does to memory and processes below the safe APIs: mappings it owns,
//! `madvise`, `mremap(MREMAP_DONTUNMAP)`, word reads and writes, the MOVE / COPY / ZEROPAGE
//! ioctls on those mappings, the fork of a sharing child, and the SIGINT/SIGTERM flag.
//!
//! # Safety
//!
//! This is the crate's only module with `unsafe`. Every raw address handed to the kernel or read
//! here lies inside a [`Mapping`] this crate mapped itself (bounds-checked by `page_ptr`), and no
//! Rust reference ever points into one: contents are reached with volatile word accesses only,
//! since MOVE, reclaim, KSM and compaction rewrite the page tables underneath.

#![allow(unsafe_code)]

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rustix::io::Errno;
use uffd::{CopyFlags, MoveFlags, RangeError, Uffd, ZeropageFlags};

/// 2 MiB: the PMD size on x86-64 (and the THP size the regions are aligned to).
pub(crate) const PMD_BYTES: usize = 2 << 20;

/// The `madvise` advice the run uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Advice {
    DontNeed,
    PageOut,
    Cold,
    Collapse,
    Mergeable,
    Unmergeable,
    HugePage,
    NoHugePage,
}

impl Advice {
    fn raw(self) -> libc::c_int {
        match self {
            Advice::DontNeed => libc::MADV_DONTNEED,
            Advice::PageOut => libc::MADV_PAGEOUT,
            Advice::Cold => libc::MADV_COLD,
            // Not in every libc release yet: the value from include/uapi/asm-generic/mman-common.h.
            Advice::Collapse => 25,
            Advice::Mergeable => libc::MADV_MERGEABLE,
            Advice::Unmergeable => libc::MADV_UNMERGEABLE,
            Advice::HugePage => libc::MADV_HUGEPAGE,
            Advice::NoHugePage => libc::MADV_NOHUGEPAGE,
        }
    }
}

/// A private anonymous read-write mapping the run owns; unmapped on drop.
#[derive(Debug)]
pub(crate) struct Mapping {
    addr: usize,
    len: usize,
    /// Bytes of our own `PROT_NONE` guard after the end, unmapped with it.
    guard: usize,
}

fn last_errno() -> Errno {
    Errno::from_raw_os_error(std::io::Error::last_os_error().raw_os_error().unwrap_or(0))
}

impl Mapping {
    /// Maps `len` bytes (a multiple of the page size), starting on a 2 MiB boundary, with a
    /// `PROT_NONE` guard of at least 2 MiB after it so no neighbouring VMA merges with it.
    pub(crate) fn new(len: usize) -> Result<Mapping, Errno> {
        let reserve = len + 3 * PMD_BYTES;
        // SAFETY: a fresh anonymous PROT_NONE reservation at an address the kernel picks; it
        // overlaps nothing.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                reserve,
                libc::PROT_NONE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(last_errno());
        }
        let base = base as usize;
        let start = (base + PMD_BYTES).next_multiple_of(PMD_BYTES);
        // SAFETY: `[start, start + len)` lies inside the reservation just made, which nothing
        // else uses, so MAP_FIXED replaces only our own PROT_NONE pages.
        let got = unsafe {
            libc::mmap(
                start as *mut libc::c_void,
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED,
                -1,
                0,
            )
        };
        if got == libc::MAP_FAILED {
            let errno = last_errno();
            // SAFETY: unmapping our own reservation.
            unsafe { libc::munmap(base as *mut libc::c_void, reserve) };
            return Err(errno);
        }
        // Give back the guard's slack below `start` and keep at least 2 MiB above the end.
        if start > base + PMD_BYTES {
            // SAFETY: the part of our reservation below `start - 2 MiB`, unused.
            unsafe { libc::munmap(base as *mut libc::c_void, start - PMD_BYTES - base) };
        }
        Ok(Mapping {
            addr: start,
            len,
            guard: base + reserve - (start + len),
        })
    }

    pub(crate) fn addr(&self) -> usize {
        self.addr
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn pages(&self) -> usize {
        self.len / page_size()
    }

    /// The address of page `page` (panics outside the mapping: every caller derives indices
    /// from the mapping's own page count).
    pub(crate) fn page_ptr(&self, page: usize) -> *mut u8 {
        assert!(
            page < self.pages(),
            "page {page} outside a {}-page mapping",
            self.pages()
        );
        (self.addr + page * page_size()) as *mut u8
    }

    fn check_range(&self, first: usize, pages: usize) -> *mut u8 {
        assert!(
            pages > 0 && first + pages <= self.pages(),
            "pages {first}..{} outside a {}-page mapping",
            first + pages,
            self.pages()
        );
        self.page_ptr(first)
    }

    /// `madvise(advice)` on pages `[first, first + pages)`.
    pub(crate) fn madvise(&self, first: usize, pages: usize, advice: Advice) -> Result<(), Errno> {
        let ptr = self.check_range(first, pages);
        // SAFETY: the range lies in our mapping; no advice used here changes what a reference
        // would see (we hold none), DONTNEED only drops pages whose loss the caller accounts.
        let rc = unsafe { libc::madvise(ptr.cast(), pages * page_size(), advice.raw()) };
        if rc == 0 {
            Ok(())
        } else {
            Err(last_errno())
        }
    }

    /// Reads the 64-bit word `word` of page `page`.
    pub(crate) fn read_word(&self, page: usize, word: usize) -> u64 {
        assert!(word < page_size() / 8);
        let ptr = self.page_ptr(page).cast::<u64>().wrapping_add(word);
        // SAFETY: in bounds and 8-byte aligned within our live read-write mapping; every access to
        // the mapping from our threads is atomic (ARCHITECTURE.md's raw-memory rule), so this one
        // races with none, and no Rust reference points into it.
        let word = unsafe { std::sync::atomic::AtomicU64::from_ptr(ptr) };
        word.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Writes the 64-bit word `word` of page `page`.
    pub(crate) fn write_word(&self, page: usize, word: usize, value: u64) {
        assert!(word < page_size() / 8);
        let ptr = self.page_ptr(page).cast::<u64>().wrapping_add(word);
        // SAFETY: as in `read_word`: in bounds, aligned, read-write, accessed only atomically.
        let word = unsafe { std::sync::atomic::AtomicU64::from_ptr(ptr) };
        word.store(value, std::sync::atomic::Ordering::Relaxed);
    }

    /// `mremap(MREMAP_MAYMOVE | MREMAP_DONTUNMAP)`: the pages move to a new mapping, this one
    /// stays mapped (and registered) but empty. This is ART's flip.
    pub(crate) fn mremap_dontunmap(&self) -> Result<Mapping, Errno> {
        // SAFETY: the whole of our own mapping; the kernel picks the new address, so nothing
        // else is overwritten. No reference points into the old range.
        let new = unsafe {
            libc::mremap(
                self.addr as *mut libc::c_void,
                self.len,
                self.len,
                libc::MREMAP_MAYMOVE | libc::MREMAP_DONTUNMAP,
            )
        };
        if new == libc::MAP_FAILED {
            return Err(last_errno());
        }
        Ok(Mapping {
            addr: new as usize,
            len: self.len,
            guard: 0,
        })
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: our own mapping (plus the guard above it), never used after this.
        unsafe { libc::munmap(self.addr as *mut libc::c_void, self.len + self.guard) };
    }
}

/// The page size.
pub(crate) fn page_size() -> usize {
    rustix::param::page_size()
}

/// One `UFFDIO_MOVE` of `pages` pages from `src[src_page..]` to `dst[dst_page..]`.
pub(crate) fn move_pages(
    uffd: &Uffd,
    dst: &Mapping,
    dst_page: usize,
    src: &Mapping,
    src_page: usize,
    pages: usize,
    flags: MoveFlags,
) -> Result<usize, RangeError> {
    let d = dst.check_range(dst_page, pages);
    let s = src.check_range(src_page, pages);
    // SAFETY: both ranges lie in mappings this crate owns and no reference points into them.
    unsafe { uffd.move_pages(d, s, pages * page_size(), flags) }
}

/// `UFFDIO_COPY` of one page whose first, second and last words are `words` (the rest zero)
/// into page `page` of `dst`.
pub(crate) fn copy_page(
    uffd: &Uffd,
    dst: &Mapping,
    page: usize,
    words: [u64; 3],
) -> Result<usize, RangeError> {
    let words_per_page = page_size() / 8;
    let mut buf = vec![0u64; words_per_page];
    buf[0] = words[0];
    buf[1] = words[1];
    buf[words_per_page - 1] = words[2];
    let d = dst.check_range(page, 1);
    // SAFETY: the destination page is ours with no reference into it; the source is our own
    // buffer, alive and unchanged for the call.
    unsafe { uffd.copy(d, buf.as_ptr().cast(), page_size(), CopyFlags::empty()) }
}

/// `UFFDIO_ZEROPAGE` of the page at `addr`: resolves a fault nobody expected, so the faulting
/// thread does not hang (the caller records it as a violation).
pub(crate) fn zero_page_at(uffd: &Uffd, addr: u64) -> Result<usize, RangeError> {
    let page = usize::try_from(addr).unwrap_or(usize::MAX) & !(page_size() - 1);
    // SAFETY: the address came from a fault in a range registered with this uffd (ours); the
    // faulting thread waits, and no reference points into the page.
    unsafe { uffd.zeropage(page as *mut u8, page_size(), ZeropageFlags::empty()) }
}

/// Forks a child that shares every page of the process (copy-on-write) for `hold`, reading one
/// word of each address in `touch` every millisecond or so, then `_exit(0)`s. Returns its pid.
///
/// The child of a multi-threaded process may only call async-signal-safe functions: it reads
/// memory, calls `nanosleep` and `_exit`, nothing else (no allocation, no locks, no Drop).
pub(crate) fn fork_sharer(hold: Duration, touch: &[usize]) -> Result<libc::pid_t, Errno> {
    let ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 1_000_000,
    };
    let rounds = hold.as_millis().max(1);
    // SAFETY: see the function docs: the child runs only the async-signal-safe loop below and
    // `_exit`s; `touch` holds addresses of pages in our mappings, readable in the child (its
    // copies of registered VMAs are not registered, so holes read as zero).
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(last_errno());
    }
    if pid == 0 {
        for _ in 0..rounds {
            for &addr in touch {
                // SAFETY: an aligned word of one of our mappings, copied into the child.
                unsafe { (addr as *const u64).read_volatile() };
            }
            // SAFETY: nanosleep is async-signal-safe; `ts` lives on this stack.
            unsafe { libc::nanosleep(&ts, std::ptr::null_mut()) };
        }
        // SAFETY: `_exit` is async-signal-safe and skips every atexit handler and destructor.
        unsafe { libc::_exit(0) };
    }
    Ok(pid)
}

/// Waits for the child `pid`; returns its exit status word.
pub(crate) fn wait_child(pid: libc::pid_t) -> Result<i32, Errno> {
    let mut status = 0;
    loop {
        // SAFETY: waiting for our own child; `status` is a valid out-pointer.
        let rc = unsafe { libc::waitpid(pid, &mut status, 0) };
        if rc == pid {
            return Ok(status);
        }
        let errno = last_errno();
        if errno != Errno::INTR {
            return Err(errno);
        }
    }
}

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    // Only an atomic store: async-signal-safe.
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// Whether SIGINT or SIGTERM arrived since [`SignalGuard::install`].
pub(crate) fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

/// SIGINT and SIGTERM set a flag instead of killing the process, so the run stops and restores
/// the machine; the previous handlers come back on drop.
#[derive(Debug)]
pub(crate) struct SignalGuard {
    old: [(libc::c_int, libc::sigaction); 2],
}

impl SignalGuard {
    pub(crate) fn install() -> SignalGuard {
        INTERRUPTED.store(false, Ordering::SeqCst);
        let signals = [libc::SIGINT, libc::SIGTERM];
        // SAFETY: sigaction is plain old data; all-zero is a valid initial value.
        let mut old: [(libc::c_int, libc::sigaction); 2] =
            signals.map(|s| (s, unsafe { std::mem::zeroed() }));
        for (signal, saved) in old.iter_mut() {
            // SAFETY: as above.
            let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
            action.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as usize;
            // A second Ctrl-C kills as usual, in case restoration itself hangs.
            action.sa_flags = libc::SA_RESETHAND;
            // SAFETY: installing a handler that only stores to an atomic; `saved` receives the
            // previous action.
            unsafe {
                libc::sigemptyset(&mut action.sa_mask);
                libc::sigaction(*signal, &action, saved);
            }
        }
        SignalGuard { old }
    }
}

impl Drop for SignalGuard {
    fn drop(&mut self) {
        for (signal, saved) in &self.old {
            // SAFETY: restoring the action saved by `install`.
            unsafe { libc::sigaction(*signal, saved, std::ptr::null_mut()) };
        }
    }
}
