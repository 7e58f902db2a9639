//! remap-compact: a reusable concurrent page-compaction engine on `UFFDIO_MOVE`.
//!
//! A garbage collector that compacts its heap while application threads ("mutators") keep
//! running needs a read barrier: after the flip the heap is empty, a mutator's first touch of a
//! page faults, and the fault is resolved by publishing the page's compacted contents. This
//! crate is that machinery, with the object model left out: the runtime says, through one trait
//! ([`Compactor`]), what to-space page `i` contains and which from-space pages it reads; the
//! engine does the rest:
//!
//! - **the flip** ([`Engine::flip`]): register the heap for MISSING faults, then empty it into a
//!   from-space with `mremap(MREMAP_DONTUNMAP)` (or by MOVE, [`FlipMethod`]);
//! - **per-page states** in one atomic word each, so the compaction thread and any number of
//!   mutators race for a page and exactly one fills and publishes it;
//! - **recycling**: a from-space page whose readers are all filled becomes a buffer (first of
//!   all for the to-space page at the same index, which keeps runs contiguous and PMD-aligned),
//!   published by MOVE, so the page itself travels; a bounded reserve serves fault-time fills,
//!   and surplus is given back in large `MADV_DONTNEED` chunks;
//! - **publication** by [`Publication::Move`] (contiguous runs, one ioctl each),
//!   [`Publication::MoveSingle`] or [`Publication::Copy`] (ART's pre-MOVE baseline), with the
//!   error policy: EBUSY falls back to COPY for that page, EEXIST means someone else published
//!   it, EAGAIN reads pending events and retries, anything else stops the cycle with a typed
//!   [`CompactError`] and nothing lost; a MOVE that failed at a page it did move (Linux 6.18
//!   under migration: EEXIST, or one page short) is settled from the buffer's pagemap entry and
//!   counted as published ([`CycleStats::misreported_moves`]);
//! - **fault modes**: handler threads ([`Engine::flip`]) or SIGBUS mode, where the faulting
//!   mutator fills and publishes the page in its signal handler ([`Engine::flip_sigbus`], only
//!   for a [`SignalSafeCompactor`]);
//! - **the compaction thread** ([`Cycle::compact`]): walks the pages in ascending order, publishes
//!   aligned batches, and finishes the cycle (every page mapped, the heap unregistered,
//!   from-space released), again and again on the same heap;
//! - **statistics** per cycle ([`CycleStats`]).
//!
//! # Example: a runtime plugging in
//!
//! A toy "runtime" whose heap holds one live 8-byte object per 512-byte slot in the even slots
//! only; compaction slides the live objects down, so to-space page `i` takes its objects from
//! from-space pages `2i` and `2i + 1`. The plan (here: nothing but arithmetic) is fixed before
//! the flip; mutators keep reading during the cycle and see compacted contents.
//!
//! ```
//! use std::ops::Range;
//! use std::sync::Arc;
//! use remap::Region;
//! use remap_compact::{Compactor, Engine, FromSpace, PageBuffer, Publication};
//!
//! const SLOT: usize = 512;
//!
//! /// Every other slot is live; compaction packs the live ones.
//! struct Plan { page: usize, heap_pages: usize }
//!
//! impl Plan {
//!     fn slots_per_page(&self) -> usize { self.page / SLOT }
//! }
//!
//! impl Compactor for Plan {
//!     fn pages(&self) -> usize { self.heap_pages / 2 }
//!     fn reads(&self, page: usize) -> Range<usize> { 2 * page..2 * page + 2 }
//!     fn fill(&self, page: usize, src: &FromSpace<'_>, dst: &mut PageBuffer<'_>) {
//!         dst.fill(0, dst.len(), 0); // the buffer holds stale bytes: define every byte
//!         for k in 0..self.slots_per_page() {
//!             // Live object number `n` (the n-th even slot) lands in slot `n` of to-space.
//!             let n = page * self.slots_per_page() + k;
//!             let old = 2 * n * SLOT; // its from-space (old heap) offset
//!             dst.copy_from(k * SLOT, src, old, 8);
//!         }
//!     }
//! }
//!
//! let uffd = uffd::Uffd::new()?;
//! if !uffd.supports_move() {
//!     return Ok(()); // a kernel before 6.8
//! }
//! let page = uffd::page_size();
//! let heap_pages = 64;
//! let heap = Region::builder(heap_pages * page).populate(true).build()?;
//! let slots = heap_pages * page / SLOT;
//! for s in (0..slots).step_by(2) {
//!     heap.write_u64(s * SLOT, 1000 + s as u64); // the live objects
//! }
//!
//! let engine = Engine::builder(heap).publication(Publication::Move).build()?;
//! let plan = Arc::new(Plan { page, heap_pages });
//! // Mutators are stopped here (the runtime's pause): flip.
//! let cycle = engine.flip(Arc::clone(&plan))?;
//! let stats = std::thread::scope(|s| {
//!     // A mutator runs during the cycle: each first touch faults and is served compacted.
//!     s.spawn(|| {
//!         for n in (0..slots / 2).rev() {
//!             assert_eq!(engine.heap().read_u64(n * SLOT), 1000 + 2 * n as u64);
//!         }
//!     });
//!     cycle.compact() // the compaction thread: this one
//! })?;
//! assert_eq!(stats.pages, heap_pages / 2);
//! assert_eq!(stats.published(), (heap_pages / 2) as u64);
//! assert_eq!(stats.by_compactor + stats.by_faults(), (heap_pages / 2) as u64);
//! // Past the compacted pages the heap is empty.
//! assert_eq!(engine.heap().read_u64((heap_pages / 2) * page), 0);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! A complete program to start from, run by CI: `examples/compact.rs` (`cargo run --release -p
//! remap-compact --example compact [-- <heap MiB> <mutators>]`), a toy heap of fixed-size objects
//! compacted by sliding while mutator threads read it, with each publication and fault mode,
//! printing each cycle's statistics. The object heap built on this engine is `remap-heap`
//! (`remap compact`).
//!
//! # Panics
//!
//! A [`Compactor::fill`] that panics aborts the process, in every mode: the page it was filling
//! cannot be produced, and every mutator that touches it would otherwise wait for ever (or, if
//! the engine gave up and unregistered the heap, read zeros where its objects were). On handler
//! threads and the compaction thread the engine catches the panic, logs it with `tracing`, and
//! calls `std::process::abort`; in SIGBUS mode the panic cannot unwind out of the signal
//! handler (an `extern "C"` function), which aborts too.
//!
//! # Flip pause
//!
//! [`FlipMethod::Mremap`] is the default because it measured faster where it matters: on a
//! populated 16 MiB heap of 4 KiB pages the `mremap(MREMAP_DONTUNMAP)` flip took 75-105 µs and
//! the MOVE flip 0.76-1.26 ms (10-12x longer: MOVE works page by page, `mremap` moves whole page
//! tables); on the same heap backed by transparent huge pages both move PMDs and MOVE was a
//! little faster (13-21 µs against 16-25 µs, 0.83-0.91x). Figures from
//! `cargo bench -p remap-compact --bench publish` (Linux 6.18, 2 shared vCPUs), which prints
//! them side by side.
//!
//! # Fork
//!
//! Regions are `MADV_DONTFORK` by default, and from-space inherits that, so a `fork()` during a
//! cycle changes nothing for the parent. A heap built with `dontfork(false)` has its from-space
//! pages shared with the child after a fork: MOVE refuses them (EBUSY) and the engine publishes
//! those pages with COPY instead ([`CycleStats::busy_fallbacks`]). The cycle's userfaultfd has
//! no `EVENT_FORK`, so a fork never waits for the engine.
//!
//! # Limits
//!
//! One compaction thread per cycle (the caller of [`Cycle::compact`]); one cycle at a time per
//! engine; at most 2^32 pages per heap; do not `munmap` or `mremap` part of the heap during a
//! cycle. The walk is ascending, which frees from-space earliest for sliding compaction
//! (`reads` monotone), the case this engine is built for.
//!
//! # Where `unsafe` lives
//!
//! Only in the private `raw` module: the engine's own mappings, the flip's `mremap`, plain
//! memory access to pages the claim protocol gives one owner, the ioctls, and the SIGBUS
//! handler. See ARCHITECTURE.md.

#![deny(unsafe_code)]

mod compactor;
mod config;
mod cycle;
mod engine;
mod error;
mod handler;
mod raw;
mod state;
mod stats;

pub use compactor::{Compactor, Filler, FromSpace, PageBuffer, SignalSafeCompactor};
pub use config::{
    EngineBuilder, EngineConfig, FlipMethod, Publication, DEFAULT_BATCH_PAGES,
    DEFAULT_FAULT_BUFFERS, DEFAULT_RELEASE_CHUNK, DEFAULT_RESERVE_PAGES,
};
pub use engine::{Cycle, Engine};
pub use error::{CompactError, MapOp, PublishOp};
pub use stats::{CompactorTime, CycleStats, FaultSpan, Phase};

/// Hints the CPU to start loading the cache line holding `ptr` (ordinary memory a fill reads at
/// scattered places, such as a runtime's forwarding tables), so that several cache misses overlap
/// instead of coming one after another. A hint only: it never dereferences `ptr` (any address is
/// allowed, mapped or not), never faults and changes nothing; async-signal-safe.
///
/// ```
/// let table = vec![0u64; 1 << 16];
/// let wanted = [17usize, 40_000, 3];
/// for &i in &wanted {
///     remap_compact::prefetch(table[i..].as_ptr().cast());
/// }
/// let sum: u64 = wanted.iter().map(|&i| table[i]).sum();
/// assert_eq!(sum, 0);
/// ```
#[inline(always)]
pub fn prefetch(ptr: *const u8) {
    raw::prefetch_address(ptr);
}
