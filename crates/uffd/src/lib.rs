//! A safe, complete userfaultfd binding with first-class `UFFDIO_MOVE`.
//!
//! `UFFDIO_MOVE` (Linux 6.8) moves anonymous pages from one address range to another by rewriting
//! page tables and each page's reverse map: no byte is copied, no page allocated, no VMA split.
//! This crate gives it, and every other userfaultfd ioctl, a typed Rust API:
//!
//! - creation that works for unprivileged users (user-mode-only faults by default), trying the
//!   syscall and `/dev/userfaultfd`, with one error naming every path tried and its fix;
//! - capabilities probed at run time on a throw-away fd, as bitflags ([`Capabilities`]);
//! - every ioctl, with those that rewrite memory as `unsafe fn`;
//! - results as data: `Ok(len)`, or a [`RangeError`] that keeps the errno and the bytes done,
//!   including both ways the kernel says "nothing done, events pending";
//! - a retrying move ([`Uffd::move_all`]) that follows the kernel's contract;
//! - events read many per `read(2)` into a reusable [`EventBuffer`] and decoded into [`Event`]s.
//!
//! # Example: move pages
//!
//! ```
//! use std::ptr;
//! use uffd::{MoveFlags, RegisterMode, Uffd};
//!
//! let uffd = Uffd::new()?;
//! if !uffd.supports_move() {
//!     return Ok(()); // a kernel before 6.8
//! }
//! let len = 4 * 4096;
//! // Two private anonymous mappings (the `remap` crate's `Region` does this for you).
//! let map = || {
//!     // SAFETY: a fresh private anonymous mapping at an address the kernel chooses.
//!     let p = unsafe {
//!         libc::mmap(ptr::null_mut(), len, libc::PROT_READ | libc::PROT_WRITE,
//!                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS, -1, 0)
//!     };
//!     assert_ne!(p, libc::MAP_FAILED, "mmap failed");
//!     p.cast::<u8>()
//! };
//! let (src, dst) = (map(), map());
//! // SAFETY: `src` is a live, writable mapping of ours; volatile, so no reference is made.
//! unsafe { ptr::write_volatile(src, 42) };
//!
//! // The destination must be registered with this fd; the source need not be.
//! uffd.register(dst, len, RegisterMode::MISSING)?;
//! // SAFETY: no references point into either mapping.
//! let moved = unsafe { uffd.move_all(dst, src, len, MoveFlags::ALLOW_SRC_HOLES) }?;
//! assert_eq!(moved, len);
//! // SAFETY: both are live mappings of ours, read without making references. `dst` is served
//! // (its page arrived) and `src` is not registered, so neither read can block.
//! let (at_dst, at_src) = unsafe { (ptr::read_volatile(dst), ptr::read_volatile(src)) };
//! assert_eq!(at_dst, 42); // the very same page, now at dst
//! assert_eq!(at_src, 0); // the source reads zero again
//! # // SAFETY: both mappings are ours and no longer used.
//! # unsafe { libc::munmap(src.cast(), len); libc::munmap(dst.cast(), len); }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # EAGAIN while events are pending
//!
//! While a non-cooperative event (fork, mremap, `MADV_DONTNEED`, munmap) is queued and unread,
//! every memory ioctl fails with EAGAIN and does nothing: [`RangeError::EventsPending`]. The
//! producer of the event is blocked until someone reads it, so the thread that reads events must
//! read them before retrying; spinning on the ioctl there deadlocks.
//!
//! # Event ordering
//!
//! A REMOVE event can arrive while page faults for the same range are still queued: resolving
//! such a fault after the remove fills memory that was just dropped. Handlers apply events in the
//! order read and treat EEXIST from a resolve as "someone else resolved it" (wake the range).
//!
//! # Who may call
//!
//! The memory ioctls work only from threads of the process that created the fd (the kernel checks
//! `ctx->mm == current->mm`): a forked child or a monitor process holding the fd gets EINVAL.
//!
//! # References
//!
//! `userfaultfd(2)`, `ioctl_userfaultfd(2)`, `UFFDIO_MOVE(2const)`, and the kernel's
//! `Documentation/admin-guide/mm/userfaultfd.rst`.

#![deny(unsafe_code)]
#![deny(missing_docs)]

mod create;
mod error;
mod event;
mod flags;
mod sys;
mod uffd;

pub mod raw;

pub use create::{try_path, Capabilities, CreateOrder, UffdBuilder};
pub use error::{Attempt, ControlError, ControlOp, CreateError, CreatePath, RangeError, ReadError};
pub use event::{Drain, Event, EventBuffer, ForkedUffd, Pagefault};
pub use flags::{
    ContinueFlags, CopyFlags, Features, Ioctls, MoveFlags, PagefaultFlags, PoisonFlags,
    RegisterMode, WriteProtectFlags, ZeropageFlags,
};
pub use rustix::io::Errno;
pub use uffd::Uffd;

/// The system page size.
pub fn page_size() -> usize {
    rustix::param::page_size()
}
