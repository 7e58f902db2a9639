//! [`CompactError`]: why a cycle could not start, or what stopped it.

use rustix::io::Errno;

/// The operation a [`CompactError::Publish`] failed in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PublishOp {
    /// `UFFDIO_MOVE` of a buffer into to-space.
    Move,
    /// `UFFDIO_COPY` of a buffer into to-space (the `Copy` publication, or the fallback after
    /// EBUSY or another MOVE failure).
    Copy,
    /// `UFFDIO_ZEROPAGE` of a to-space page outside the compacted pages.
    Zero,
}

impl std::fmt::Display for PublishOp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            PublishOp::Move => "UFFDIO_MOVE",
            PublishOp::Copy => "UFFDIO_COPY",
            PublishOp::Zero => "UFFDIO_ZEROPAGE",
        })
    }
}

/// The memory-management call a [`CompactError::Map`] comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MapOp {
    /// `mmap(2)` of the from-space reservation or the spare buffers.
    Mmap,
    /// `mremap(2)` with `MREMAP_DONTUNMAP` (the flip).
    Mremap,
    /// `munmap(2)`.
    Munmap,
    /// `madvise(2)` (`MADV_DONTNEED` of consumed from-space, or the THP / fork advice of the
    /// engine's own mappings).
    Madvise,
}

impl std::fmt::Display for MapOp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            MapOp::Mmap => "mmap",
            MapOp::Mremap => "mremap",
            MapOp::Munmap => "munmap",
            MapOp::Madvise => "madvise",
        })
    }
}

/// Why a compaction cycle could not start, or what stopped it.
///
/// Errors keep the kernel's errno, and a publication error keeps the page and the bytes done.
/// **Nothing is lost**: a cycle stopped by an error leaves every page either published in
/// to-space or with its sources still in from-space, which the engine then keeps mapped for as
/// long as it lives (and refuses further cycles, [`CompactError::Stopped`]). A flip that fails
/// leaves the heap as it was.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CompactError {
    /// Creating the cycle's userfaultfd failed.
    #[error("creating the cycle's userfaultfd")]
    Create(#[from] uffd::CreateError),
    /// The kernel has no `UFFDIO_MOVE` (`UFFD_FEATURE_MOVE`, Linux 6.8) and the engine needs it
    /// (a `Move` or `MoveSingle` publication, or the `Move` flip).
    #[error("the kernel lacks UFFDIO_MOVE (UFFD_FEATURE_MOVE, Linux 6.8+)")]
    NoMove,
    /// Registering the heap with the userfaultfd (or unregistering it) failed.
    #[error("registering the heap")]
    Register(#[from] uffd::ControlError),
    /// A memory-management call on the engine's own mappings failed.
    #[error("{op} of {len:#x} bytes at {addr:#x} failed: {errno}")]
    Map {
        /// Which call.
        op: MapOp,
        /// Its start address (0 for `mmap(NULL, ...)`).
        addr: usize,
        /// Its length.
        len: usize,
        /// The kernel's error.
        #[source]
        errno: Errno,
    },
    /// The compactor's plan does not fit the heap: more pages than the heap has, or a
    /// [`reads`](crate::Compactor::reads) range outside it.
    #[error("bad compaction plan: {what}")]
    Plan {
        /// What is wrong.
        what: String,
    },
    /// A cycle is already running on this engine (one cycle at a time per heap).
    #[error("a cycle is already running on this engine")]
    CycleRunning,
    /// An earlier cycle stopped on an error; the engine refuses new cycles (its heap may hold
    /// pages the runtime must recover from from-space first).
    #[error("an earlier cycle failed; the engine is stopped")]
    Stopped,
    /// A publication ioctl failed with an error other than EEXIST (someone else published),
    /// EAGAIN (events pending: read and retried) or EBUSY (fallen back to COPY), and the COPY
    /// fallback failed too. The cycle stopped: pages `page..` of the run were not published;
    /// their contents are in their buffers and their sources still in from-space.
    #[error("{op} of to-space page {page} ({pages} pages) failed after {} bytes", error.done())]
    Publish {
        /// The ioctl.
        op: PublishOp,
        /// The first to-space page not published.
        page: usize,
        /// The run length in pages.
        pages: usize,
        /// The kernel's error, with the bytes done.
        #[source]
        error: uffd::RangeError,
    },
    /// Spawning a handler thread failed.
    #[error("spawning a fault handler thread")]
    Spawn(#[source] std::io::Error),
    /// Installing the SIGBUS handler failed, or every SIGBUS-mode slot is taken.
    #[error("SIGBUS mode: {what}: {errno}")]
    Sigbus {
        /// What failed.
        what: &'static str,
        /// The errno (ENOSPC when every slot is taken).
        errno: Errno,
    },
    /// A handler thread stopped on an error polling or reading the userfaultfd.
    #[error("a fault handler thread failed: {errno}")]
    Handler {
        /// The errno of the failed `poll` or `read`.
        errno: Errno,
    },
}
