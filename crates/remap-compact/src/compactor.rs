//! The runtime's part: the [`Compactor`] trait, and the two views it works through,
//! [`FromSpace`] (read-only, the pages a to-space page reads) and [`PageBuffer`] (the page being
//! built).
//!
//! Neither view hands out a Rust reference into memory the kernel moves: both are a
//! `Span` (an address range, in the `raw` module), and every access is a bounds-checked copy (see
//! the `raw` module for why plain copies are sound there).

use std::ops::Range;

use crate::raw::Span;

/// What a runtime supplies to the engine: the compacted contents of each to-space page, and which
/// from-space pages each one reads. Nothing else of the object model enters the engine.
///
/// The engine calls [`fill`](Self::fill) exactly once per to-space page `0..pages()`, from the
/// compaction thread or from a mutator's fault (a handler thread, or in SIGBUS mode the faulting
/// thread itself), in any order and concurrently for different pages. So the trait takes `&self`:
/// everything the fill needs (per-chunk live counts, prefix sums, a forwarding table) is computed
/// before the flip and only read during the cycle.
///
/// # The dependency contract
///
/// `reads(page)` must name every from-space page that `fill(page)` reads: the engine recycles a
/// from-space page (writes new contents into it and moves it away) as soon as every to-space page
/// that reads it has been filled, so a read outside `reads(page)` could see another page's
/// contents. [`FromSpace`] enforces this: it covers exactly `reads(page)` and panics on any access
/// outside it. `reads` is called for every page once, when the cycle is set up, and again by each
/// `fill`; it must return the same range each time.
///
/// # The buffer
///
/// `dst` holds arbitrary stale bytes (it is usually a recycled from-space page): the fill must
/// write every byte of the page whose value matters, including the zero tail after the last
/// object ([`PageBuffer::fill`]). The engine does not zero buffers, because that would cost a
/// memset per page on the path MOVE exists to make cheap.
///
/// # Panics
///
/// A fill must not panic. If one does, the engine aborts the process (logging the panic first
/// when not in a signal handler): a page that cannot be produced would leave every mutator that
/// touches it waiting for ever, and publishing anything else there would hand mutators wrong
/// contents. See [`crate#panics`].
///
/// # Example
///
/// A compactor whose to-space page `i` is the word-wise sum of from-space pages `i` and `i + 1`
/// (the synthetic plan the tests use):
///
/// ```
/// use std::ops::Range;
/// use remap_compact::{Compactor, FromSpace, PageBuffer};
///
/// struct Sum { pages: usize, heap_pages: usize }
///
/// impl Compactor for Sum {
///     fn pages(&self) -> usize { self.pages }
///     fn reads(&self, page: usize) -> Range<usize> { page..(page + 2).min(self.heap_pages) }
///     fn fill(&self, page: usize, src: &FromSpace<'_>, dst: &mut PageBuffer<'_>) {
///         let size = dst.len();
///         for word in (0..size).step_by(8) {
///             let mut v = src.read_u64(page * size + word);
///             if src.pages().contains(&(page + 1)) {
///                 v = v.wrapping_add(src.read_u64((page + 1) * size + word));
///             }
///             dst.write_u64(word, v);
///         }
///     }
/// }
/// # let _ = Sum { pages: 1, heap_pages: 2 };
/// ```
pub trait Compactor: Send + Sync + 'static {
    /// Number of to-space pages this cycle fills, from page 0 up. The rest of the heap stays
    /// empty: it reads as zero (a fault there is answered with the zero page) and is ordinary
    /// memory once the cycle ends.
    fn pages(&self) -> usize;

    /// The from-space pages (a contiguous range of page indices, possibly empty) that
    /// [`fill`](Self::fill)`(page)` reads.
    fn reads(&self, page: usize) -> Range<usize>;

    /// Writes the compacted contents of to-space page `page` into `dst`, reading from-space
    /// through `src` (which covers [`reads`](Self::reads)`(page)`).
    ///
    /// In SIGBUS mode this runs inside a signal handler on the faulting mutator thread: it must be
    /// async-signal-safe (no allocation, no locks, no I/O, no logging, no panics); see
    /// [`SignalSafeCompactor`].
    fn fill(&self, page: usize, src: &FromSpace<'_>, dst: &mut PageBuffer<'_>);
}

/// A [`Compactor`] whose [`reads`](Compactor::reads) and [`fill`](Compactor::fill) are
/// async-signal-safe, so that [`Engine::flip_sigbus`](crate::Engine::flip_sigbus) may call them
/// from a SIGBUS handler on the faulting thread.
///
/// The type system enforces what it can: the engine only runs SIGBUS mode for compactors that
/// implement this trait, the views passed to `fill` never allocate or lock, and everything else
/// the engine does in the handler is atomics and system calls. What it cannot check is the body
/// of your `fill`; that is what implementing this trait promises.
///
/// # Safety
///
/// `reads` and `fill` must not allocate or free memory, take locks (`Mutex`, `RwLock`, lazy
/// `Once`/`OnceLock` initialisation, stdio, `tracing`), panic (including by indexing out of
/// bounds or arithmetic overflow in debug builds), or call any function that is not
/// async-signal-safe. They may read the compactor's own data (computed before the flip), use
/// atomics, and use the [`FromSpace`] and [`PageBuffer`] methods. They run inside a signal
/// handler that may have interrupted any code of the process, including the allocator.
///
/// ```
/// use remap_compact::{Compactor, FromSpace, PageBuffer, SignalSafeCompactor};
///
/// struct Zeros;
/// impl Compactor for Zeros {
///     fn pages(&self) -> usize { 1 }
///     fn reads(&self, _: usize) -> std::ops::Range<usize> { 0..0 }
///     fn fill(&self, _: usize, _: &FromSpace<'_>, dst: &mut PageBuffer<'_>) {
///         dst.fill(0, dst.len(), 0);
///     }
/// }
/// // SAFETY: `reads` returns a constant; `fill` only calls `PageBuffer::fill`, which is a
/// // bounds-checked memset that cannot fail for the whole page.
/// unsafe impl SignalSafeCompactor for Zeros {}
/// ```
// Declaring an `unsafe trait` is what the lint calls unsafe code; it runs nothing unchecked: it
// only makes implementors promise the contract above (ARCHITECTURE.md lists this exception).
#[allow(unsafe_code)]
pub unsafe trait SignalSafeCompactor: Compactor {}

/// Who fills a page: told to the fill through [`PageBuffer::filler`], and counted in
/// [`CycleStats`](crate::CycleStats).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Filler {
    /// The compaction thread, walking the heap.
    Compactor,
    /// A handler thread, on behalf of a mutator that faulted on the page.
    Handler,
    /// The faulting mutator itself, in its SIGBUS handler.
    Mutator,
}

/// Read-only view of the from-space pages a to-space page reads ([`Compactor::reads`]).
///
/// Offsets are from-space byte offsets, which are the heap offsets the data had before the flip:
/// an object that lived at heap offset `o` is read at `o` here. Every access outside
/// [`pages`](Self::pages) panics (a broken [dependency contract](Compactor#the-dependency-contract)).
///
/// No method allocates, locks or makes a system call, so all of them may be used in SIGBUS mode
/// (as long as the access is in bounds).
#[derive(Debug)]
pub struct FromSpace<'a> {
    /// Exactly the bytes of `pages` (span offset 0 is from-space offset `pages.start * page_size`).
    span: Span<'a>,
    page_size: usize,
    pages: Range<usize>,
}

impl<'a> FromSpace<'a> {
    /// A view of from-space `pages`, whose bytes are `span`.
    ///
    /// Crate-internal: the engine builds views only over from-space pages that nothing writes
    /// while the view lives (their dependents are not all filled yet).
    pub(crate) fn new(span: Span<'a>, page_size: usize, pages: Range<usize>) -> Self {
        FromSpace {
            span,
            page_size,
            pages,
        }
    }

    /// The from-space page indices this view covers.
    #[inline]
    pub fn pages(&self) -> Range<usize> {
        self.pages.clone()
    }

    /// The byte range (from-space offsets) this view covers.
    #[inline]
    pub fn bytes(&self) -> Range<usize> {
        self.pages.start * self.page_size..self.pages.end * self.page_size
    }

    /// The page size.
    #[inline]
    pub fn page_size(&self) -> usize {
        self.page_size
    }

    /// Checks the access and returns its offset in the span.
    #[inline]
    #[track_caller]
    fn check(&self, off: usize, len: usize) -> usize {
        let bytes = self.bytes();
        let in_bounds = off >= bytes.start && off.checked_add(len).is_some_and(|e| e <= bytes.end);
        if !in_bounds {
            out_of_bounds("from-space", off, len, bytes);
        }
        off - bytes.start
    }

    /// Reads the 8-byte word at from-space offset `off` (need not be aligned).
    ///
    /// # Panics
    ///
    /// If the word is not inside [`bytes`](Self::bytes).
    #[inline]
    #[track_caller]
    pub fn read_u64(&self, off: usize) -> u64 {
        let at = self.check(off, 8);
        self.span.read_u64(at)
    }

    /// Hints the CPU to start loading the cache line holding from-space offset `off`, so that a
    /// later read of it does not wait for memory (a fill that knows which objects it will read
    /// next prefetches them, overlapping their cache misses). Never faults and never panics; an
    /// offset outside [`bytes`](Self::bytes) is ignored.
    ///
    /// ```
    /// # fn fill(src: &remap_compact::FromSpace<'_>) -> u64 {
    /// let next = src.bytes().start + 4096;
    /// src.prefetch(next); // ... work on what is already in cache ...
    /// # src.read_u64(src.bytes().start)
    /// # }
    /// ```
    #[inline]
    pub fn prefetch(&self, off: usize) {
        let bytes = self.bytes();
        if off >= bytes.start {
            self.span.prefetch(off - bytes.start);
        }
    }

    /// Reads the byte at from-space offset `off`.
    ///
    /// # Panics
    ///
    /// If `off` is not inside [`bytes`](Self::bytes).
    #[inline]
    #[track_caller]
    pub fn read_u8(&self, off: usize) -> u8 {
        let at = self.check(off, 1);
        self.span.read_u8(at)
    }

    /// Copies `dst.len()` bytes from from-space offset `off` into `dst` (a plain `memcpy`).
    ///
    /// # Panics
    ///
    /// If the range is not inside [`bytes`](Self::bytes).
    #[inline]
    #[track_caller]
    pub fn copy_to_slice(&self, off: usize, dst: &mut [u8]) {
        let at = self.check(off, dst.len());
        self.span.copy_out(at, dst);
    }
}

/// The page a fill writes: one page-sized buffer the filling thread owns exclusively until the
/// engine publishes it into to-space.
///
/// Offsets are within the page (`0..len()`). The buffer holds arbitrary stale bytes when the fill
/// starts (see [the buffer](Compactor#the-buffer)). No method allocates, locks or makes a system
/// call, so all of them may be used in SIGBUS mode (as long as the access is in bounds); each
/// panics on an access outside the page.
#[derive(Debug)]
pub struct PageBuffer<'a> {
    /// Exactly the page.
    span: Span<'a>,
    page: usize,
    filler: Filler,
}

impl<'a> PageBuffer<'a> {
    /// A buffer for to-space page `page` over `span` (one page), filled by `filler`.
    ///
    /// Crate-internal: the engine builds it only over a page it claimed for this one filler.
    pub(crate) fn new(span: Span<'a>, page: usize, filler: Filler) -> Self {
        PageBuffer { span, page, filler }
    }

    /// The page size.
    #[inline]
    pub fn len(&self) -> usize {
        self.span.len()
    }

    /// Always `false`: a page is never empty (for clippy's `len_without_is_empty`).
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.span.len() == 0
    }

    /// The to-space page index being filled.
    #[inline]
    pub fn page(&self) -> usize {
        self.page
    }

    /// Who is filling it.
    #[inline]
    pub fn filler(&self) -> Filler {
        self.filler
    }

    #[inline]
    #[track_caller]
    fn check(&self, off: usize, len: usize) {
        if off.checked_add(len).is_none_or(|e| e > self.span.len()) {
            out_of_bounds("page buffer", off, len, 0..self.span.len());
        }
    }

    /// Writes the 8-byte word `v` at offset `off` (need not be aligned).
    ///
    /// # Panics
    ///
    /// If the word is not inside the page.
    #[inline]
    #[track_caller]
    pub fn write_u64(&mut self, off: usize, v: u64) {
        self.check(off, 8);
        self.span.write_u64(off, v);
    }

    /// Reads back the 8-byte word at offset `off`.
    ///
    /// # Panics
    ///
    /// If the word is not inside the page.
    #[inline]
    #[track_caller]
    pub fn read_u64(&self, off: usize) -> u64 {
        self.check(off, 8);
        self.span.read_u64(off)
    }

    /// Writes the byte `v` at offset `off`.
    ///
    /// # Panics
    ///
    /// If `off` is not inside the page.
    #[inline]
    #[track_caller]
    pub fn write_u8(&mut self, off: usize, v: u8) {
        self.check(off, 1);
        self.span.write_u8(off, v);
    }

    /// Sets `len` bytes at offset `off` to `byte` (a plain `memset`).
    ///
    /// # Panics
    ///
    /// If the range is not inside the page.
    #[inline]
    #[track_caller]
    pub fn fill(&mut self, off: usize, len: usize, byte: u8) {
        self.check(off, len);
        self.span.fill(off, len, byte);
    }

    /// Copies `src` to offset `off` (a plain `memcpy`).
    ///
    /// # Panics
    ///
    /// If the range is not inside the page.
    #[inline]
    #[track_caller]
    pub fn copy_from_slice(&mut self, off: usize, src: &[u8]) {
        self.check(off, src.len());
        self.span.copy_in(off, src);
    }

    /// Copies `len` bytes from from-space offset `src_off` (through `src`) to offset `dst_off`
    /// of this page: a plain `memcpy`, so a fill that slides whole objects runs at memcpy speed.
    ///
    /// # Panics
    ///
    /// If either range is out of its view's bounds.
    #[inline]
    #[track_caller]
    pub fn copy_from(&mut self, dst_off: usize, src: &FromSpace<'_>, src_off: usize, len: usize) {
        self.check(dst_off, len);
        let at = src.check(src_off, len);
        self.span.copy_within_from(dst_off, &src.span, at, len);
    }
}

#[cold]
#[track_caller]
fn out_of_bounds(what: &'static str, off: usize, len: usize, bounds: Range<usize>) -> ! {
    panic!(
        "{what} access of {len} bytes at {off:#x} is outside {:#x}..{:#x}",
        bounds.start, bounds.end
    )
}
