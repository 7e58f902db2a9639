//! The crate's only `unsafe`: the engine's own mappings (from-space, spare buffers), the flip's
//! `mremap`, plain memory access to from-space and buffer pages, the MOVE / COPY / ZEROPAGE
//! ioctls on the heap, and the registration of a cycle's heap with remap's SIGBUS handler.
//!
//! # Why plain (non-atomic) copies are sound here
//!
//! `remap::Region` reaches its memory only through relaxed atomic words, because anyone may
//! access any byte of a region at any time. The pages this module hands out as [`Span`]s are
//! different: the engine's claim protocol (see `state.rs` and `cycle.rs`) gives each of them one
//! owner at a time, so no access here ever races with another access:
//!
//! - a **from-space page** is read (by the fills of the to-space pages whose
//!   [`reads`](crate::Compactor::reads) name it) only while its dependency count is above zero,
//!   and becomes a buffer (written by one filler, then moved away by the kernel) only after the
//!   count reached zero, that is after every one of those fills returned; the count's
//!   `fetch_sub` (release) and the claim's compare-exchange (acquire) order the two;
//! - a **buffer page** (a from-space page claimed as buffer, or a spare slot) is written by the
//!   one thread that claimed it, and published by `UFFDIO_MOVE` or `UFFDIO_COPY` only after the
//!   fill returned, by the same thread or by one that acquired the page's state word after the
//!   filler released it.
//!
//! A `Span` lives for one fill call and is never turned into a Rust reference; the kernel
//! replacing a page underneath (a MOVE out of a buffer) only happens after the span is gone. So
//! `memcpy` speed is available to the runtime's fill without a data race.
//!
//! The heap (`remap::Region`) itself is never read or written here, only named by address in the
//! ioctls and in `mremap`, whose callers guarantee no cycle is active at the flip.

#![allow(unsafe_code)]

use std::ffi::c_void;
use std::marker::PhantomData;
use std::ptr::{self, NonNull};
use std::sync::Arc;

use remap::region::HUGE_PAGE_SIZE;
use remap::{Region, Thp};
use rustix::io::Errno;
use rustix::mm::{Advice, MapFlags, MremapFlags, ProtFlags};

use crate::error::{CompactError, MapOp};

fn map_err(op: MapOp, addr: usize, len: usize) -> impl FnOnce(Errno) -> CompactError {
    move |errno| CompactError::Map {
        op,
        addr,
        len,
        errno,
    }
}

// -------------------------------------------------------------------------------------------------
// Spans: bounds-checked plain access to a page the caller owns under the claim protocol.
// -------------------------------------------------------------------------------------------------

/// `len` bytes at `ptr` inside a [`Mapping`], owned under the claim protocol (module docs) for
/// the lifetime `'a`. Every access is bounds-checked against `len`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Span<'a> {
    ptr: *mut u8,
    len: usize,
    _mapping: PhantomData<&'a Mapping>,
}

impl Span<'_> {
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    #[inline]
    fn at(&self, off: usize, len: usize) -> *mut u8 {
        assert!(
            off.checked_add(len).is_some_and(|e| e <= self.len),
            "span access out of bounds"
        );
        self.ptr.wrapping_add(off)
    }

    #[inline]
    pub(crate) fn read_u64(&self, off: usize) -> u64 {
        let p = self.at(off, 8);
        // SAFETY: `p..p+8` is inside the span (checked), a live mapping the span borrows; no
        // one writes it concurrently (claim protocol, module docs). Unaligned read allowed.
        unsafe { p.cast::<u64>().read_unaligned() }
    }

    /// Asks the CPU to bring the cache line holding span offset `off` closer (a hint: no fault,
    /// no effect on what any read returns). An offset outside the span is ignored.
    #[inline]
    pub(crate) fn prefetch(&self, off: usize) {
        if off < self.len {
            prefetch_address(self.ptr.wrapping_add(off));
        }
    }

    #[inline]
    pub(crate) fn read_u8(&self, off: usize) -> u8 {
        let p = self.at(off, 1);
        // SAFETY: as `read_u64`, one byte.
        unsafe { p.read() }
    }

    #[inline]
    pub(crate) fn write_u64(&self, off: usize, v: u64) {
        let p = self.at(off, 8);
        // SAFETY: inside the span (checked) and writable (our mappings are read-write); this
        // thread owns the page (claim protocol), so no other access races.
        unsafe { p.cast::<u64>().write_unaligned(v) }
    }

    #[inline]
    pub(crate) fn write_u8(&self, off: usize, v: u8) {
        let p = self.at(off, 1);
        // SAFETY: as `write_u64`, one byte.
        unsafe { p.write(v) }
    }

    #[inline]
    pub(crate) fn fill(&self, off: usize, len: usize, byte: u8) {
        let p = self.at(off, len);
        // SAFETY: as `write_u64`, `len` bytes.
        unsafe { ptr::write_bytes(p, byte, len) }
    }

    #[inline]
    pub(crate) fn copy_in(&self, off: usize, src: &[u8]) {
        let p = self.at(off, src.len());
        // SAFETY: destination as `write_u64`; `src` is a shared slice of the caller's own memory,
        // which cannot overlap a page of ours (no reference into our mappings exists).
        unsafe { ptr::copy_nonoverlapping(src.as_ptr(), p, src.len()) }
    }

    #[inline]
    pub(crate) fn copy_out(&self, off: usize, dst: &mut [u8]) {
        let p = self.at(off, dst.len());
        // SAFETY: source as `read_u64`; `dst` is the caller's exclusive slice, not in our
        // mappings.
        unsafe { ptr::copy_nonoverlapping(p, dst.as_mut_ptr(), dst.len()) }
    }

    /// Copies `len` bytes from `src` at `src_off` to this span at `dst_off`.
    #[inline]
    pub(crate) fn copy_within_from(
        &self,
        dst_off: usize,
        src: &Span<'_>,
        src_off: usize,
        len: usize,
    ) {
        let d = self.at(dst_off, len);
        let s = src.at(src_off, len);
        // SAFETY: `d` as `write_u64`, `s` as `read_u64`, each for `len` bytes. They do not
        // overlap: a buffer page is never a page a fill reads (it is a buffer only after every
        // reader finished), and `ptr::copy` would be correct even if they did.
        unsafe { ptr::copy(s, d, len) }
    }
}

/// Asks the CPU to start loading the cache line holding `ptr` into its caches.
///
/// A prefetch is a hint: it never faults, whatever the address (unmapped, a page a MOVE just
/// took away), and changes no value any load returns. Fills use it to overlap the cache misses
/// of an object graph (the next objects' headers, the plan entries of the references), which
/// otherwise come one after another. A no-op on targets without a prefetch instruction.
#[inline(always)]
pub(crate) fn prefetch_address(ptr: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: `_mm_prefetch` is `unsafe` for its `#[target_feature(enable = "sse")]`, which every
    // x86_64 CPU has (SSE is part of the x86_64 baseline the compiler targets), and because it
    // takes a raw pointer; but the instruction never dereferences `ptr` architecturally and
    // raises no fault for any address, mapped or not, so any pointer value is fine.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(ptr.cast::<i8>());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = ptr;
}

// -------------------------------------------------------------------------------------------------
// The engine's own mappings.
// -------------------------------------------------------------------------------------------------

/// A private anonymous read-write mapping the engine made and owns (from-space reservation,
/// spare buffers); unmapped on drop. Its start is congruent to a chosen address modulo 2 MiB, so
/// that runs between it and the heap can be whole-PMD moves.
#[derive(Debug)]
pub(crate) struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: a `Mapping` is an address range the engine owns; every access to its memory goes
// through `Span`s under the claim protocol or through system calls, so sharing the handle
// between threads shares no unsynchronised Rust state.
unsafe impl Send for Mapping {}
// SAFETY: as for `Send`: `&Mapping` offers only system calls and claim-protocol spans.
unsafe impl Sync for Mapping {}

impl Mapping {
    /// Maps `len` bytes (a page multiple) starting at an address congruent to `like` modulo
    /// 2 MiB, with `thp` advice and `MADV_DONTFORK` when `dontfork`.
    pub(crate) fn new(
        len: usize,
        like: usize,
        thp: Thp,
        dontfork: bool,
    ) -> Result<Self, CompactError> {
        let padded = len.checked_add(HUGE_PAGE_SIZE).ok_or(CompactError::Map {
            op: MapOp::Mmap,
            addr: 0,
            len,
            errno: Errno::NOMEM,
        })?;
        // SAFETY: `mmap_anonymous` with a null address lets the kernel pick a fresh range that
        // overlaps nothing anyone holds; no existing memory is affected.
        let raw = unsafe {
            rustix::mm::mmap_anonymous(
                ptr::null_mut(),
                padded,
                ProtFlags::READ | ProtFlags::WRITE,
                MapFlags::PRIVATE | MapFlags::NORESERVE,
            )
        }
        .map_err(map_err(MapOp::Mmap, 0, padded))?;
        let base = raw as usize;
        let want = like % HUGE_PAGE_SIZE;
        let start = base + (want + HUGE_PAGE_SIZE - base % HUGE_PAGE_SIZE) % HUGE_PAGE_SIZE;
        let head = start - base;
        let tail = padded - head - len;
        if head > 0 {
            unmap(base as *mut u8, head)?;
        }
        if tail > 0 {
            unmap((start + len) as *mut u8, tail)?;
        }
        let ptr = NonNull::new(start as *mut u8).ok_or(CompactError::Map {
            op: MapOp::Mmap,
            addr: 0,
            len,
            errno: Errno::NOMEM,
        })?;
        let mapping = Mapping { ptr, len };
        match thp {
            Thp::Huge => mapping.advise(0, len, Advice::LinuxHugepage)?,
            Thp::NoHuge => mapping.advise(0, len, Advice::LinuxNoHugepage)?,
            Thp::Default => {}
        }
        if dontfork {
            mapping.advise(0, len, Advice::LinuxDontFork)?;
        }
        Ok(mapping)
    }

    pub(crate) fn addr(&self) -> usize {
        self.ptr.as_ptr() as usize
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    fn check(&self, off: usize, len: usize) -> *mut u8 {
        assert!(
            off.checked_add(len).is_some_and(|e| e <= self.len),
            "mapping access out of bounds"
        );
        self.ptr.as_ptr().wrapping_add(off)
    }

    /// The span of `len` bytes at `off`. Crate-internal: the caller must own those bytes under
    /// the claim protocol (module docs) for as long as the span lives.
    pub(crate) fn span(&self, off: usize, len: usize) -> Span<'_> {
        Span {
            ptr: self.check(off, len),
            len,
            _mapping: PhantomData,
        }
    }

    fn advise(&self, off: usize, len: usize, advice: Advice) -> Result<(), CompactError> {
        let p = self.check(off, len);
        // SAFETY: `madvise` requires the range to be valid memory of ours: it lies inside this
        // mapping (checked). The advice used (THP, fork, DONTNEED) never invalidates a Rust
        // reference: none exists into the mapping, and DONTNEED is applied only to pages no span
        // covers (released pages, claim protocol).
        unsafe { rustix::mm::madvise(p.cast::<c_void>(), len, advice) }.map_err(map_err(
            MapOp::Madvise,
            p as usize,
            len,
        ))
    }

    /// `MADV_DONTNEED` of `len` bytes at `off`: gives the pages back (they read as zero after).
    pub(crate) fn dontneed(&self, off: usize, len: usize) -> Result<(), CompactError> {
        self.advise(off, len, Advice::LinuxDontNeed)
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        if let Err(e) = unmap(self.ptr.as_ptr(), self.len) {
            tracing::error!(error = %e, "leaking an engine mapping");
        }
    }
}

fn unmap(p: *mut u8, len: usize) -> Result<(), CompactError> {
    // SAFETY: callers pass (part of) a range this module mapped, page-aligned, into which no Rust
    // reference exists.
    unsafe { rustix::mm::munmap(p.cast::<c_void>(), len) }.map_err(map_err(
        MapOp::Munmap,
        p as usize,
        len,
    ))
}

/// The flip: `mremap(heap, len, len, MREMAP_MAYMOVE | MREMAP_FIXED | MREMAP_DONTUNMAP, from)`.
/// The heap's pages (and page tables) move to `from`'s address, replacing the reservation; the
/// heap VMA stays, empty (and registered, so the next touch faults to us).
pub(crate) fn flip_mremap(heap: &Region, from: &Mapping) -> Result<(), CompactError> {
    assert_eq!(heap.len(), from.len(), "from-space must match the heap");
    // SAFETY: `mremap_fixed` requires both ranges page-aligned and valid to mutate, with no Rust
    // references into them. The heap is a live `Region` (which never hands out references into
    // its memory, module docs of `remap::region`) and `from` is our own mapping of the same
    // length, for which no span exists (the engine flips only between cycles). MREMAP_FIXED
    // replaces exactly our reservation; DONTUNMAP keeps the heap's VMA.
    unsafe {
        rustix::mm::mremap_fixed(
            heap.as_ptr().cast::<c_void>(),
            heap.len(),
            from.len(),
            MremapFlags::MAYMOVE | MremapFlags::DONTUNMAP,
            from.ptr.as_ptr().cast::<c_void>(),
        )
    }
    .map(drop)
    .map_err(map_err(MapOp::Mremap, heap.addr(), heap.len()))
}

// -------------------------------------------------------------------------------------------------
// Ioctls between the heap and the engine's mappings. None panics (bounds are checked with a
// `RangeError::Invalid` answer), allocates, locks or logs: the SIGBUS handler uses them.
// -------------------------------------------------------------------------------------------------

fn heap_ptr(heap: &Region, off: usize, len: usize) -> Option<*mut u8> {
    let page = heap.page_size();
    (off % page == 0 && len % page == 0 && off.checked_add(len)? <= heap.len())
        .then(|| heap.as_ptr().wrapping_add(off))
}

fn map_ptr(m: &Mapping, off: usize, len: usize) -> Option<*mut u8> {
    (off.checked_add(len)? <= m.len).then(|| m.ptr.as_ptr().wrapping_add(off))
}

/// How a filled buffer is published into the heap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Publish {
    /// `UFFDIO_MOVE`: the buffer's pages themselves go into the heap.
    Move,
    /// `UFFDIO_COPY`: the kernel copies them into fresh pages.
    Copy,
    /// `UFFDIO_MOVE` that wakes no one (`DONTWAKE`): the tests' stand-in for a MOVE the kernel
    /// did and did not count, so did not wake.
    #[cfg(test)]
    MoveUnwoken,
}

/// `UFFDIO_MOVE` or `UFFDIO_COPY` (`how`) of `len` bytes of `src` at `src_off` into the heap at
/// `heap_off` (one ioctl). Returns the bytes done.
pub(crate) fn publish_in(
    how: Publish,
    uffd: &uffd::Uffd,
    heap: &Region,
    heap_off: usize,
    src: &Mapping,
    src_off: usize,
    len: usize,
) -> Result<usize, uffd::RangeError> {
    let (Some(d), Some(s)) = (heap_ptr(heap, heap_off, len), map_ptr(src, src_off, len)) else {
        return Err(uffd::RangeError::Invalid { done: 0 });
    };
    match how {
        // SAFETY: `move_pages` requires no Rust reference into either range during or (source)
        // after the call, and memory the caller controls. The heap range is inside a live
        // `Region` (no references into it ever exist); the source is inside our own mapping, in
        // buffer pages whose fill (and span) is over (claim protocol), and nothing references
        // them afterwards.
        Publish::Move => unsafe { uffd.move_pages(d, s, len, uffd::MoveFlags::empty()) },
        // SAFETY: as for `Move`.
        #[cfg(test)]
        Publish::MoveUnwoken => unsafe { uffd.move_pages(d, s, len, uffd::MoveFlags::DONTWAKE) },
        // SAFETY: `copy` requires no reference into the destination (a live `Region`'s missing
        // pages: none exists) and a readable source not written during the call: buffer pages
        // of our own mapping whose fill is over, written by no one until the engine releases
        // them after this call (claim protocol).
        Publish::Copy => unsafe { uffd.copy(d, s, len, uffd::CopyFlags::empty()) },
    }
}

/// `UFFDIO_ZEROPAGE` of `len` bytes of the heap at `off`.
pub(crate) fn zero_in(
    uffd: &uffd::Uffd,
    heap: &Region,
    off: usize,
    len: usize,
) -> Result<usize, uffd::RangeError> {
    let Some(d) = heap_ptr(heap, off, len) else {
        return Err(uffd::RangeError::Invalid { done: 0 });
    };
    // SAFETY: `zeropage` requires no Rust reference into the range: it is inside a live
    // `Region`, which never hands one out.
    unsafe { uffd.zeropage(d, len, uffd::ZeropageFlags::empty()) }
}

/// The MOVE flip: `UFFDIO_MOVE` with `ALLOW_SRC_HOLES` of the whole heap into `from` (which the
/// caller registered with `uffd`), following the retry contract. Returns the bytes done.
pub(crate) fn move_out_all(
    uffd: &uffd::Uffd,
    from: &Mapping,
    heap: &Region,
) -> Result<usize, uffd::RangeError> {
    assert_eq!(heap.len(), from.len(), "from-space must match the heap");
    // SAFETY: as `publish_in`'s MOVE, with the roles swapped: the heap (a live `Region`, never referenced)
    // is the source, and our own reservation (no span exists between cycles) the destination.
    unsafe {
        uffd.move_all(
            from.ptr.as_ptr(),
            heap.as_ptr(),
            heap.len(),
            uffd::MoveFlags::ALLOW_SRC_HOLES,
        )
    }
}

/// Undoes a failed MOVE flip: `UFFDIO_MOVE` with `ALLOW_SRC_HOLES` of the first `len` bytes of
/// `from` back into the heap (registered with `uffd`, so a valid destination). Returns the bytes
/// moved back.
///
/// Every page of the range is tried, not only the ones the failed flip counted: a MOVE racing
/// migration can move pages it does not count (docs/findings/move-undercounts-a-moved-page.md).
/// A page that never left the heap answers EEXIST and is stepped over.
pub(crate) fn move_back(
    uffd: &uffd::Uffd,
    heap: &Region,
    from: &Mapping,
    len: usize,
) -> Result<usize, uffd::RangeError> {
    let page = heap.page_size();
    let (mut offset, mut moved) = (0, 0);
    while offset < len {
        let rest = len - offset;
        let (Some(d), Some(s)) = (heap_ptr(heap, offset, rest), map_ptr(from, offset, rest)) else {
            return Err(uffd::RangeError::Invalid { done: moved });
        };
        // SAFETY: as `publish_in`'s MOVE: the heap (a live `Region`, never referenced) is the destination,
        // our own from-space mapping (no span exists: the cycle never started) the source.
        match unsafe { uffd.move_all(d, s, rest, uffd::MoveFlags::ALLOW_SRC_HOLES) } {
            Ok(done) => return Ok(moved + done),
            // The page at `done` is still in the heap: step over it.
            Err(uffd::RangeError::Exists { done }) => {
                moved += done;
                offset += done + page;
            }
            Err(e) => return Err(e),
        }
    }
    Ok(moved)
}

// -------------------------------------------------------------------------------------------------
// SIGBUS mode: a cycle's heap in the process-wide registry of `remap::sigbus` (one handler per
// process, shared with remap's `SigbusServer`).
// -------------------------------------------------------------------------------------------------

/// What the SIGBUS handler calls for a fault inside a registered heap: `remap`'s
/// [`SigbusHandler`](remap::sigbus::SigbusHandler). Implementations must be async-signal-safe (no
/// allocation, locks, logging or panics).
pub(crate) use remap::sigbus::SigbusHandler as SigbusTarget;

/// A registered SIGBUS target; retired (waiting for handlers using it) on drop.
pub(crate) type SigbusRegistration = remap::sigbus::SigbusRegistration;

/// Installs the handler (once per process) and registers `target` for `[start, end)`.
pub(crate) fn register_sigbus(
    start: usize,
    end: usize,
    target: Arc<dyn SigbusTarget>,
) -> Result<SigbusRegistration, CompactError> {
    // SAFETY: `register` needs an async-signal-safe `on_sigbus`. The only `SigbusTarget` the
    // crate registers is `Shared<C>` with `C: SignalSafeCompactor` (engine.rs), whose
    // `on_sigbus` runs the claim protocol on atomics, the compactor's fill (async-signal-safe:
    // the `SignalSafeCompactor` promise), the heap ioctls and `sched_yield`.
    unsafe { remap::sigbus::register(start..end, target) }.map_err(|err| CompactError::Sigbus {
        what: match err {
            remap::sigbus::SigbusError::Full => "every SIGBUS-mode slot is taken",
            _ => "installing the SIGBUS handler",
        },
        errno: err.errno(),
    })
}
