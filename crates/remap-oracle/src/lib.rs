//! The MOVE oracle: a semantic model of what `UFFDIO_MOVE` (and `UFFDIO_COPY`,
//! `UFFDIO_ZEROPAGE`, `MADV_DONTNEED`, page touches, fork, swap-out, THP collapse and split,
//! registration, pending events) does to an abstract address space, **per kernel version**.
//!
//! Pure: no syscalls, no workspace dependencies, no `unsafe`.
//!
//! - [`Space`] is the state: [`Vma`]s (start, length, protection, [`VmaKind`], mlock, THP advice,
//!   `MADV_DONTFORK`, [`Registration`]) with one [`Page`] per virtual page (none, present with a
//!   contents tag, frame, exclusivity and [`Folio`], the zero page, the huge zero page, swapped,
//!   a WP marker, a guard region), which PMDs have a page table, pending events per
//!   userfaultfd, and whether a forked child is alive.
//! - [`Op`] is one operation; [`Space::predict`] gives a [`Prediction`]: every [`Alternative`]
//!   the kernel may legitimately produce, each an [`Outcome`] (in the kernel's encoding: errno
//!   and what the result [`Field`] holds) and the state after it. Most operations have one
//!   alternative; a fault that may or may not allocate a THP, a reclaim that may or may not
//!   take a page, have several.
//! - [`Behaviour`] is one row of [`BEHAVIOUR_TABLE`], the behaviour changes of `docs/move-contract.md` section
//!   2.12 as data; [`Behaviour::for_version`] picks the row of a [`KernelVersion`].
//!
//! Judging a result: "is this outcome allowed for this state?" is
//! `space.predict(&op, behaviour)?.allows(&observed)`; the states to continue from are
//! [`Prediction::states_after`].
//!
//! ```
//! use remap_oracle::*;
//! let (src, dst) = (0x100_0000, 0x200_0000);
//! let space = Space::new(
//!     Environment::default(),
//!     vec![
//!         Vma::anon(src, 4 * PAGE_SIZE),
//!         Vma::anon(dst, 4 * PAGE_SIZE).registered(1, true, false),
//!     ],
//! );
//! let b = Behaviour::for_version(KernelVersion::parse("6.18.44").unwrap()).unwrap();
//! // Populate src pages 0..3 and dst page 3, then move 4 pages: EAGAIN after 3 pages.
//! let mut s = space;
//! for (addr, tag) in [(src, 1), (src + PAGE_SIZE, 2), (src + 2 * PAGE_SIZE, 3), (src + 3 * PAGE_SIZE, 4)] {
//!     s = s.predict(&Op::WriteTouch { addr, tag }, b).unwrap().alternatives.remove(0).after;
//! }
//! s = s.predict(&Op::Unregister { uffd: 1, vma: dst }, b).unwrap().alternatives.remove(0).after;
//! s = s.predict(&Op::WriteTouch { addr: dst + 3 * PAGE_SIZE, tag: 9 }, b).unwrap().alternatives.remove(0).after;
//! s = s.predict(&Op::Register { uffd: 1, vma: dst, missing: true, wp: false }, b).unwrap().alternatives.remove(0).after;
//! let mv = Op::Move { uffd: 1, dst, src, len: 4 * PAGE_SIZE, mode: 0, caller: Caller::Owner };
//! let p = s.predict(&mv, b).unwrap();
//! assert_eq!(p.outcomes(), vec![Outcome::partial(3 * PAGE_SIZE)]);
//! assert!(!p.allows(&Outcome::done(4 * PAGE_SIZE)));
//! ```
//!
//! Model limits (each reported as [`Unmodelled`] rather than guessed): one live child at a
//! time; no VMA splitting (operations that change VMA flags act on whole VMAs); no uffd-wp bits on
//! present pages; no swap-out of large folios; no migration, KSM, pins or `ENOMEM`. Constants are
//! x86_64's with 4 KiB pages ([`PAGE_SIZE`], [`PMD_SIZE`], [`TASK_SIZE`]).

#![forbid(unsafe_code)]

mod errno;
mod op;
mod predict;
mod space;
mod version;

pub use errno::Errno;
pub use op::{
    Alternative, Caller, Field, Op, Outcome, Prediction, Signal, Unmodelled, COPY_DONTWAKE,
    COPY_WP, MOVE_ALLOW_SRC_HOLES, MOVE_DONTWAKE,
};
pub use predict::MMAP_MIN_ADDR;
pub use space::{
    pmd_base, Environment, Folio, Page, Present, Registration, Space, ThpAdvice, ThpMode, UffdId,
    Vma, VmaKind, PAGES_PER_PMD, PAGE_SIZE, PMD_SIZE, PROT_EXEC, PROT_READ, PROT_WRITE, TASK_SIZE,
};
pub use version::{Behaviour, KernelVersion, BEHAVIOUR_TABLE};

#[cfg(test)]
mod tests;
