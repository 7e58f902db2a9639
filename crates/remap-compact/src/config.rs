//! Engine configuration: [`EngineBuilder`], [`Publication`], [`FlipMethod`].

use remap::Region;

use crate::engine::Engine;
use crate::error::CompactError;

/// How processed pages are published into to-space.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Publication {
    /// `UFFDIO_MOVE` of contiguous runs of processed pages, one ioctl per run (whole-PMD when a
    /// run covers an aligned 2 MiB and its source is a huge page), buffers recycled from
    /// consumed from-space pages. The default.
    #[default]
    Move,
    /// `UFFDIO_MOVE` of one page per ioctl (for the comparison with batching).
    MoveSingle,
    /// ART's baseline before MOVE: compact into a buffer the engine owns, `UFFDIO_COPY` it
    /// (contiguous runs per ioctl), and give consumed from-space back with `MADV_DONTNEED` in
    /// chunks of at least [`EngineBuilder::release_chunk`].
    Copy,
}

/// How the flip empties the heap while keeping its contents reachable in from-space. Both
/// register the heap for MISSING faults first, so no page is ever neither here nor there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FlipMethod {
    /// `mremap(MREMAP_MAYMOVE | MREMAP_FIXED | MREMAP_DONTUNMAP)` of the whole heap onto the
    /// from-space reservation: page tables move (by PMD where aligned), the heap VMA stays,
    /// empty and registered. ART's way, and the default: it measured 10-12x faster on 4 KiB
    /// pages (see the crate docs, [flip pause](crate#flip-pause)).
    #[default]
    Mremap,
    /// `UFFDIO_MOVE` (with `ALLOW_SRC_HOLES`) of the whole heap into the from-space
    /// reservation, which is registered for the call and unregistered again. Slightly faster
    /// than `Mremap` on a THP-backed heap; fails (and moves everything back) if a heap page is
    /// shared after a fork (EBUSY).
    Move,
}

/// The default number of pages a compaction-thread batch holds: 512, one 2 MiB PMD.
pub const DEFAULT_BATCH_PAGES: usize = 512;
/// The default bound of the recycled-page reserve: 128 pages, ART's.
pub const DEFAULT_RESERVE_PAGES: usize = 128;
/// The default smallest `MADV_DONTNEED` chunk for giving from-space back: 8 MiB, ART's.
pub const DEFAULT_RELEASE_CHUNK: usize = 8 << 20;
/// The default number of buffers for pages filled on a fault (handler threads, SIGBUS mutators)
/// when no recycled page is free: 64.
pub const DEFAULT_FAULT_BUFFERS: usize = 64;

/// The engine's settings, as built by [`EngineBuilder`].
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// How pages are published.
    pub publication: Publication,
    /// How the flip is done.
    pub flip: FlipMethod,
    /// Handler threads for [`Engine::flip`] (at least 1).
    pub handler_threads: usize,
    /// Pages per compaction-thread batch (the longest run one ioctl publishes).
    pub batch_pages: usize,
    /// Bound of the recycled-page reserve kept for fault-time fills.
    pub reserve_pages: usize,
    /// Smallest `MADV_DONTNEED` chunk, in bytes, for giving surplus from-space back (the last
    /// one of a cycle may be smaller).
    pub release_chunk: usize,
    /// Buffers for fault-time fills when no recycled page is free.
    pub fault_buffers: usize,
    /// Whether to read the TLB line of `/proc/interrupts` before and after each cycle.
    pub count_tlb: bool,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            publication: Publication::default(),
            flip: FlipMethod::default(),
            handler_threads: 1,
            batch_pages: DEFAULT_BATCH_PAGES,
            reserve_pages: DEFAULT_RESERVE_PAGES,
            release_chunk: DEFAULT_RELEASE_CHUNK,
            fault_buffers: DEFAULT_FAULT_BUFFERS,
            count_tlb: true,
        }
    }
}

/// Builds an [`Engine`] over a heap [`Region`]; see [`Engine::builder`].
#[derive(Debug)]
pub struct EngineBuilder {
    pub(crate) region: Region,
    pub(crate) config: EngineConfig,
}

impl EngineBuilder {
    pub(crate) fn new(region: Region) -> Self {
        EngineBuilder {
            region,
            config: EngineConfig::default(),
        }
    }

    /// How pages are published (default [`Publication::Move`]).
    pub fn publication(mut self, publication: Publication) -> Self {
        self.config.publication = publication;
        self
    }

    /// How the flip is done (default [`FlipMethod::Mremap`]).
    pub fn flip(mut self, flip: FlipMethod) -> Self {
        self.config.flip = flip;
        self
    }

    /// Handler threads serving mutator faults in [`Engine::flip`] (default 1; 0 is taken as 1).
    pub fn handler_threads(mut self, n: usize) -> Self {
        self.config.handler_threads = n.max(1);
        self
    }

    /// Pages per compaction-thread batch (default [`DEFAULT_BATCH_PAGES`]; 0 is taken as 1).
    pub fn batch_pages(mut self, n: usize) -> Self {
        self.config.batch_pages = n.max(1);
        self
    }

    /// Bound of the recycled-page reserve (default [`DEFAULT_RESERVE_PAGES`]).
    pub fn reserve_pages(mut self, n: usize) -> Self {
        self.config.reserve_pages = n;
        self
    }

    /// Smallest `MADV_DONTNEED` chunk in bytes (default [`DEFAULT_RELEASE_CHUNK`]).
    pub fn release_chunk(mut self, bytes: usize) -> Self {
        self.config.release_chunk = bytes;
        self
    }

    /// Buffers for fault-time fills when no recycled page is free (default
    /// [`DEFAULT_FAULT_BUFFERS`]; 0 is taken as 1). A fault that finds none free waits for one.
    pub fn fault_buffers(mut self, n: usize) -> Self {
        self.config.fault_buffers = n.max(1);
        self
    }

    /// Whether to count TLB shootdowns from `/proc/interrupts` per cycle (default `true`).
    pub fn count_tlb(mut self, yes: bool) -> Self {
        self.config.count_tlb = yes;
        self
    }

    /// Builds the engine: checks the kernel, maps the from-space reservation and the spare
    /// buffers (address space only; nothing is populated).
    ///
    /// # Errors
    ///
    /// [`CompactError::Create`] if no userfaultfd can be created, [`CompactError::NoMove`] if the
    /// configuration needs `UFFDIO_MOVE` and the kernel lacks it, [`CompactError::Map`] if a
    /// mapping fails.
    pub fn build(self) -> Result<Engine, CompactError> {
        Engine::from_builder(self)
    }
}
