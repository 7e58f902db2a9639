//! Typed flag sets for features, ioctls, registration modes and per-ioctl modes.

use bitflags::bitflags;

use crate::sys;

bitflags! {
    /// `UFFD_FEATURE_*`: what `UFFDIO_API` negotiates and reports.
    ///
    /// The names of the known bits, in bit order, are bitflags' own:
    /// `Features::all().iter_names()` yields `("PAGEFAULT_FLAG_WP", ..)` to `("MOVE", ..)`.
    ///
    /// ```
    /// let caps = uffd::Capabilities::probe()?;
    /// if caps.features().contains(uffd::Features::MOVE) {
    ///     // UFFDIO_MOVE is available
    /// }
    /// // A report: every known feature by name, and whether this kernel has it.
    /// let report: Vec<(&str, bool)> = uffd::Features::all()
    ///     .iter_names()
    ///     .map(|(name, bit)| (name, caps.features().contains(bit)))
    ///     .collect();
    /// assert_eq!(report[0].0, "PAGEFAULT_FLAG_WP");
    /// # Ok::<(), uffd::CreateError>(())
    /// ```
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
    pub struct Features: u64 {
        /// `UFFD_FEATURE_PAGEFAULT_FLAG_WP`: write-protect faults carry `PagefaultFlags::WP`.
        const PAGEFAULT_FLAG_WP = 1 << 0;
        /// `UFFD_FEATURE_EVENT_FORK`: fork events with a new fd (needs CAP_SYS_PTRACE).
        const EVENT_FORK = 1 << 1;
        /// `UFFD_FEATURE_EVENT_REMAP`: mremap events.
        const EVENT_REMAP = 1 << 2;
        /// `UFFD_FEATURE_EVENT_REMOVE`: MADV_DONTNEED / MADV_REMOVE events.
        const EVENT_REMOVE = 1 << 3;
        /// `UFFD_FEATURE_MISSING_HUGETLBFS`.
        const MISSING_HUGETLBFS = 1 << 4;
        /// `UFFD_FEATURE_MISSING_SHMEM`.
        const MISSING_SHMEM = 1 << 5;
        /// `UFFD_FEATURE_EVENT_UNMAP`: munmap events.
        const EVENT_UNMAP = 1 << 6;
        /// `UFFD_FEATURE_SIGBUS`: missing faults raise SIGBUS instead of queueing an event.
        const SIGBUS = 1 << 7;
        /// `UFFD_FEATURE_THREAD_ID`: page-fault events carry the faulting thread's id.
        const THREAD_ID = 1 << 8;
        /// `UFFD_FEATURE_MINOR_HUGETLBFS`.
        const MINOR_HUGETLBFS = 1 << 9;
        /// `UFFD_FEATURE_MINOR_SHMEM`.
        const MINOR_SHMEM = 1 << 10;
        /// `UFFD_FEATURE_EXACT_ADDRESS`: fault addresses are not page-masked.
        const EXACT_ADDRESS = 1 << 11;
        /// `UFFD_FEATURE_WP_HUGETLBFS_SHMEM`.
        const WP_HUGETLBFS_SHMEM = 1 << 12;
        /// `UFFD_FEATURE_WP_UNPOPULATED`.
        const WP_UNPOPULATED = 1 << 13;
        /// `UFFD_FEATURE_POISON`: `UFFDIO_POISON` is available.
        const POISON = 1 << 14;
        /// `UFFD_FEATURE_WP_ASYNC`.
        const WP_ASYNC = 1 << 15;
        /// `UFFD_FEATURE_MOVE` (Linux 6.8): `UFFDIO_MOVE` is available. A capability indicator
        /// only: MOVE works without requesting it.
        const MOVE = 1 << 16;
        /// Bits this crate does not know yet, kept as reported.
        const _ = !0;
    }
}

bitflags! {
    /// Which ioctls an fd (`UFFDIO_API`) or a registered range (`UFFDIO_REGISTER`) supports: bit
    /// `1 << _UFFDIO_*`.
    ///
    /// `Ioctls::all().iter_names()` names the known bits in bit order, `("REGISTER", ..)` to
    /// `("API", ..)`.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
    pub struct Ioctls: u64 {
        /// `UFFDIO_REGISTER`.
        const REGISTER = 1 << sys::_UFFDIO_REGISTER;
        /// `UFFDIO_UNREGISTER`.
        const UNREGISTER = 1 << sys::_UFFDIO_UNREGISTER;
        /// `UFFDIO_WAKE`.
        const WAKE = 1 << sys::_UFFDIO_WAKE;
        /// `UFFDIO_COPY`.
        const COPY = 1 << sys::_UFFDIO_COPY;
        /// `UFFDIO_ZEROPAGE`.
        const ZEROPAGE = 1 << sys::_UFFDIO_ZEROPAGE;
        /// `UFFDIO_MOVE`. Reported for every non-hugetlb range; advertised does not mean usable
        /// (MOVE needs private anonymous memory on both sides).
        const MOVE = 1 << sys::_UFFDIO_MOVE;
        /// `UFFDIO_WRITEPROTECT`.
        const WRITEPROTECT = 1 << sys::_UFFDIO_WRITEPROTECT;
        /// `UFFDIO_CONTINUE`.
        const CONTINUE = 1 << sys::_UFFDIO_CONTINUE;
        /// `UFFDIO_POISON`.
        const POISON = 1 << sys::_UFFDIO_POISON;
        /// `UFFDIO_API`.
        const API = 1 << sys::_UFFDIO_API;
        /// Bits this crate does not know yet, kept as reported.
        const _ = !0;
    }
}

bitflags! {
    /// `UFFDIO_REGISTER_MODE_*`: which faults of a range are reported.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    pub struct RegisterMode: u64 {
        /// Faults on missing pages.
        const MISSING = 1 << 0;
        /// Writes to write-protected pages.
        const WP = 1 << 1;
        /// Minor faults (page in the page cache, not mapped): shmem and hugetlbfs only.
        const MINOR = 1 << 2;
    }
}

bitflags! {
    /// `UFFDIO_MOVE_MODE_*`.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
    pub struct MoveFlags: u64 {
        /// Do not wake threads waiting on the destination; issue [`Uffd::wake`](crate::Uffd::wake)
        /// later (batching, or removing memory from the address space).
        const DONTWAKE = 1 << 0;
        /// Treat unpopulated source pages as moved: the destination stays empty there.
        const ALLOW_SRC_HOLES = 1 << 1;
    }
}

bitflags! {
    /// `UFFDIO_COPY_MODE_*`.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
    pub struct CopyFlags: u64 {
        /// Do not wake waiting threads.
        const DONTWAKE = 1 << 0;
        /// Map the copied pages write-protected.
        const WP = 1 << 1;
    }
}

bitflags! {
    /// `UFFDIO_ZEROPAGE_MODE_*`.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
    pub struct ZeropageFlags: u64 {
        /// Do not wake waiting threads.
        const DONTWAKE = 1 << 0;
    }
}

bitflags! {
    /// `UFFDIO_WRITEPROTECT_MODE_*`.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
    pub struct WriteProtectFlags: u64 {
        /// Protect the range (without it: unprotect).
        const WP = 1 << 0;
        /// Do not wake waiting threads when unprotecting.
        const DONTWAKE = 1 << 1;
    }
}

bitflags! {
    /// `UFFDIO_CONTINUE_MODE_*`.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
    pub struct ContinueFlags: u64 {
        /// Do not wake waiting threads.
        const DONTWAKE = 1 << 0;
        /// Map the pages write-protected.
        const WP = 1 << 1;
    }
}

bitflags! {
    /// `UFFDIO_POISON_MODE_*`.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
    pub struct PoisonFlags: u64 {
        /// Do not wake waiting threads.
        const DONTWAKE = 1 << 0;
    }
}

bitflags! {
    /// `UFFD_PAGEFAULT_FLAG_*`: what kind of fault a page-fault event reports.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
    pub struct PagefaultFlags: u64 {
        /// The fault was a write.
        const WRITE = 1 << 0;
        /// A write to a write-protected page.
        const WP = 1 << 1;
        /// A minor fault.
        const MINOR = 1 << 2;
        /// Bits this crate does not know yet, kept as reported.
        const _ = !0;
    }
}

#[cfg(test)]
mod tests;
