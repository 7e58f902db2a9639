//! The [`Uffd`] handle and its ioctls.
//!
//! The memory ioctls are `unsafe fn`s because of the contract they put on their callers (no
//! references into the ranges); the only `unsafe` blocks here call `sys`, which holds the
//! crate's syscalls, and pass that same contract on.

#![allow(unsafe_code)]

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use rustix::io::Errno;

use crate::error::{ControlError, ControlOp, CreatePath, RangeError, ReadError};
use crate::event::{EventBuffer, ForkedUffd};
use crate::{
    sys, ContinueFlags, CopyFlags, Features, Ioctls, MoveFlags, PoisonFlags, RegisterMode,
    UffdBuilder, WriteProtectFlags, ZeropageFlags,
};

/// An open userfaultfd whose API has been negotiated.
///
/// Owns its fd (closed on drop) and lends it through [`AsFd`], so a non-blocking one can be polled
/// with any event loop. It is `Send` and `Sync`: it holds only an fd and plain values, and every
/// ioctl and read on a userfaultfd is safe to issue from several threads at once (the kernel
/// serialises what must be).
///
/// # Polling needs a non-blocking fd
///
/// `poll(2)` on a userfaultfd opened without `O_NONBLOCK` always reports `POLLERR`: the kernel
/// expects a blocking fd to be read, not polled. To wait with a timeout, or next to other fds,
/// create it with [`UffdBuilder::non_blocking`]`(true)`.
///
/// # Reading fork events
///
/// With [`Features::EVENT_FORK`], the thread that calls `fork()` waits inside the kernel until the
/// fork event is read, and glibc's `fork()` holds the allocator's locks meanwhile. The thread that
/// reads events must therefore not allocate between noticing the fd is readable and reading the
/// fork event, or the two deadlock; [`EventBuffer`] is allocated up front for this reason.
///
/// The caller of the memory ioctls must be a thread of the process that created the fd: from any
/// other mm (a forked child, or a monitor that received the fd over a socket) the kernel answers
/// EINVAL.
#[derive(Debug)]
pub struct Uffd {
    fd: OwnedFd,
    enabled: Features,
    supported: Features,
    path: CreatePath,
}

fn range(start: *const u8, len: usize) -> sys::uffdio_range {
    sys::uffdio_range {
        start: start as u64,
        len: len as u64,
    }
}

/// Maps a range ioctl's outcome to `Ok(len)` or the decoded error.
fn outcome(result: Result<(), Errno>, out: i64, len: usize) -> Result<usize, RangeError> {
    match result {
        Ok(()) => Ok(len),
        Err(errno) => Err(RangeError::decode(errno, out)),
    }
}

impl Uffd {
    /// Creates a userfaultfd with the default builder: user-mode-only faults, blocking reads, no
    /// features.
    ///
    /// # Errors
    ///
    /// See [`UffdBuilder::create`].
    pub fn new() -> Result<Self, crate::CreateError> {
        UffdBuilder::new().create()
    }

    /// A builder for the other choices.
    pub fn builder() -> UffdBuilder {
        UffdBuilder::new()
    }

    pub(crate) fn from_parts(
        fd: OwnedFd,
        enabled: Features,
        supported: Features,
        path: CreatePath,
    ) -> Self {
        Self {
            fd,
            enabled,
            supported,
            path,
        }
    }

    /// Wraps the fd of a `UFFD_EVENT_FORK` event: the child's userfaultfd, which inherits this
    /// one's features.
    ///
    /// Only a fork event read from the kernel carries such an fd: any other fd (a pipe, a file)
    /// is refused at compile time, since reading events from it would let forged fork messages
    /// claim fd numbers this process does not own.
    ///
    /// ```compile_fail,E0308
    /// let parent = uffd::Uffd::new()?;
    /// let not_a_uffd = std::os::fd::OwnedFd::from(std::fs::File::open("/dev/null")?);
    /// let forged = uffd::Uffd::from_fork(not_a_uffd, &parent);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn from_fork(forked: ForkedUffd, parent: &Uffd) -> Self {
        Self {
            fd: OwnedFd::from(forked),
            enabled: parent.enabled,
            supported: parent.supported,
            path: parent.path,
        }
    }

    /// The features enabled on this fd.
    pub fn features(&self) -> Features {
        self.enabled
    }

    /// Every feature the kernel supports (reported by `UFFDIO_API`).
    pub fn supported_features(&self) -> Features {
        self.supported
    }

    /// How the fd was created.
    pub fn path(&self) -> CreatePath {
        self.path
    }

    /// Whether `UFFDIO_MOVE` is available (`UFFD_FEATURE_MOVE`).
    pub fn supports_move(&self) -> bool {
        self.supported.contains(Features::MOVE)
    }

    /// `UFFDIO_REGISTER`: report faults of `mode` in `[start, start + len)` to this fd.
    ///
    /// Returns the ioctls usable on the range. Registering changes how future faults are handled,
    /// never the contents of memory; a thread that touches a registered missing page waits until
    /// someone resolves the fault, so register only memory that will be served.
    ///
    /// # Errors
    ///
    /// EINVAL for an unaligned or empty range, a range with no VMA at all, or a mode the memory
    /// does not support (MINOR on anonymous memory); EBUSY when it is registered with another
    /// userfaultfd.
    ///
    /// A range that is only partly mapped is not an error: the VMAs inside it are registered and
    /// the holes are skipped (a mapping made in a hole later is not registered).
    ///
    /// # References
    ///
    /// `ioctl_userfaultfd(2)`, `UFFDIO_REGISTER(2const)`, the kernel's `admin-guide/mm/userfaultfd.rst`.
    #[doc(alias = "UFFDIO_REGISTER")]
    pub fn register(
        &self,
        start: *mut u8,
        len: usize,
        mode: RegisterMode,
    ) -> Result<Ioctls, ControlError> {
        let mut arg = sys::uffdio_register {
            range: range(start, len),
            mode: mode.bits(),
            ioctls: 0,
        };
        sys::register(&self.fd, &mut arg)
            .map(|()| Ioctls::from_bits_retain(arg.ioctls))
            .map_err(|errno| control(ControlOp::Register, start, len, errno))
    }

    /// `UFFDIO_UNREGISTER`: stop reporting faults in the range. Threads waiting on faults there are
    /// woken and retry the access.
    ///
    /// # Errors
    ///
    /// EINVAL for an unaligned or empty range, or a range with no VMA at all. A partly mapped
    /// range is not an error: the VMAs inside it are unregistered.
    ///
    /// # References
    ///
    /// `ioctl_userfaultfd(2)`, `UFFDIO_UNREGISTER(2const)`, the kernel's `admin-guide/mm/userfaultfd.rst`.
    #[doc(alias = "UFFDIO_UNREGISTER")]
    pub fn unregister(&self, start: *mut u8, len: usize) -> Result<(), ControlError> {
        sys::unregister(&self.fd, range(start, len))
            .map_err(|errno| control(ControlOp::Unregister, start, len, errno))
    }

    /// `UFFDIO_WAKE`: wake threads waiting on faults in the range (after `DONTWAKE` operations, or
    /// when another resolver won with EEXIST).
    ///
    /// # Errors
    ///
    /// EINVAL for an unaligned or empty range.
    ///
    /// # References
    ///
    /// `ioctl_userfaultfd(2)`, `UFFDIO_WAKE(2const)`, the kernel's `admin-guide/mm/userfaultfd.rst`.
    #[doc(alias = "UFFDIO_WAKE")]
    pub fn wake(&self, start: *mut u8, len: usize) -> Result<(), ControlError> {
        sys::wake(&self.fd, range(start, len))
            .map_err(|errno| control(ControlOp::Wake, start, len, errno))
    }

    /// `UFFDIO_WRITEPROTECT`: write-protect (`WP`) or unprotect the range, registered with
    /// [`RegisterMode::WP`]. Changes protections only; a write to a protected page waits for
    /// resolution.
    ///
    /// # Errors
    ///
    /// EINVAL for a bad range or a range not registered for WP, EAGAIN while non-cooperative
    /// events are pending, ENOENT for an unmapped range.
    ///
    /// # References
    ///
    /// `ioctl_userfaultfd(2)`, `UFFDIO_WRITEPROTECT(2const)`, the kernel's `admin-guide/mm/userfaultfd.rst`.
    #[doc(alias = "UFFDIO_WRITEPROTECT")]
    pub fn writeprotect(
        &self,
        start: *mut u8,
        len: usize,
        flags: WriteProtectFlags,
    ) -> Result<(), ControlError> {
        let mut arg = sys::uffdio_writeprotect {
            range: range(start, len),
            mode: flags.bits(),
        };
        sys::writeprotect(&self.fd, &mut arg)
            .map_err(|errno| control(ControlOp::WriteProtect, start, len, errno))
    }

    /// `UFFDIO_MOVE`: move the pages of `[src, src + len)` to `[dst, dst + len)` by rewriting page
    /// tables; no byte is copied. One ioctl: `Ok(len)` when it moved everything.
    ///
    /// `dst` must lie in one private anonymous VMA registered with this fd, `src` in one private
    /// anonymous writable VMA (registered or not) with the same protection and mlock state. Source
    /// pages must be mapped only once: after a `fork()` they are shared and refused with EBUSY (use
    /// `MADV_DONTFORK` on the source). Unless [`MoveFlags::DONTWAKE`], threads waiting on the moved
    /// part of `dst` are woken.
    ///
    /// # Safety
    ///
    /// No Rust reference (`&T`, `&mut T`, `&[u8]`) may point into either range for the duration of
    /// the call and, for the source, afterwards: the source pages leave (later reads see zeros or
    /// fault), and the destination pages appear underneath any reader. Both ranges must belong to
    /// memory the caller controls; the kernel checks alignment and VMAs, not ownership.
    ///
    /// # Errors
    ///
    /// A [`RangeError`]: [`Partial`](RangeError::Partial) with the bytes moved (re-issue the rest
    /// to learn what stopped it), [`EventsPending`](RangeError::EventsPending) (read events, then
    /// retry), `Exists` (populated destination), `Missing` (hole without
    /// [`MoveFlags::ALLOW_SRC_HOLES`], or no VMA), `Busy` (shared or pinned page), `Invalid`,
    /// `NoMemory`, `Fault`, `Exiting`, `Interrupted`.
    ///
    /// # References
    ///
    /// `UFFDIO_MOVE(2const)`, `ioctl_userfaultfd(2)`, the kernel's `admin-guide/mm/userfaultfd.rst`.
    #[doc(alias = "UFFDIO_MOVE")]
    pub unsafe fn move_pages(
        &self,
        dst: *mut u8,
        src: *mut u8,
        len: usize,
        flags: MoveFlags,
    ) -> Result<usize, RangeError> {
        // `move_` stays 0 when the kernel fails before writing it (EINVAL, EFAULT, ESRCH, and the
        // first mmap_changing check before 6.15), which `decode` reads as "nothing done".
        let mut arg = sys::uffdio_move {
            dst: dst as u64,
            src: src as u64,
            len: len as u64,
            mode: flags.bits(),
            move_: 0,
        };
        // SAFETY: the caller guarantees that no reference points into either range.
        let result = unsafe { sys::move_(&self.fd, &mut arg) };
        outcome(result, arg.move_, len)
    }

    /// Moves the whole range, following the kernel's retry contract: after partial progress it
    /// continues with the rest; it stops when events are pending (the caller must read them
    /// first, and must not spin) and at the first hard error. Returns `len` on success.
    ///
    /// The error's [`done`](RangeError::done) counts the bytes moved before it, across all calls.
    ///
    /// It always issues at least one ioctl, so it answers every argument as
    /// [`Uffd::move_pages`] does: an empty range (`len == 0`) is `Invalid` (EINVAL), as the
    /// kernel says, not a successful move of nothing.
    ///
    /// # Safety
    ///
    /// As [`Uffd::move_pages`].
    ///
    /// # Errors
    ///
    /// The variants of [`Uffd::move_pages`] except `Partial`, each with the bytes moved before it
    /// across all calls; `Invalid { done: 0 }` for `len == 0`.
    ///
    /// # References
    ///
    /// The retry contract of `UFFDIO_MOVE(2const)` (EAGAIN with progress).
    pub unsafe fn move_all(
        &self,
        dst: *mut u8,
        src: *mut u8,
        len: usize,
        flags: MoveFlags,
    ) -> Result<usize, RangeError> {
        let mut done = 0;
        // A do-while: the first ioctl is issued even for `len == 0`, so the kernel judges it.
        loop {
            // SAFETY: the sub-ranges lie within the ranges the caller vouched for.
            let step = unsafe {
                self.move_pages(
                    dst.wrapping_add(done),
                    src.wrapping_add(done),
                    len - done,
                    flags,
                )
            };
            match step {
                Ok(moved) => done += moved,
                Err(RangeError::Partial { done: moved }) => done += moved,
                Err(err) => return Err(err.after(done)),
            }
            if done >= len {
                return Ok(done);
            }
        }
    }

    /// `UFFDIO_COPY`: allocate pages at `[dst, dst + len)` and copy `[src, src + len)` into them.
    ///
    /// # Safety
    ///
    /// No Rust reference may point into the destination range; the source must be readable memory
    /// that no one writes during the call.
    ///
    /// # Errors
    ///
    /// A [`RangeError`]: `Partial` (EAGAIN with bytes copied; re-issue the rest), `EventsPending`
    /// (EAGAIN, nothing done: read events, then retry), `Exists` (EEXIST: a destination page is
    /// already populated), `Invalid` (EINVAL: alignment, length, mode, or a destination not
    /// registered with this fd), `Missing` (ENOENT: no VMA at the destination), `NoMemory`
    /// (ENOMEM), `Fault` (EFAULT: the source is unreadable), `Exiting` (ESRCH).
    ///
    /// # References
    ///
    /// `ioctl_userfaultfd(2)`, `UFFDIO_COPY(2const)`, the kernel's `admin-guide/mm/userfaultfd.rst`.
    #[doc(alias = "UFFDIO_COPY")]
    pub unsafe fn copy(
        &self,
        dst: *mut u8,
        src: *const u8,
        len: usize,
        flags: CopyFlags,
    ) -> Result<usize, RangeError> {
        let mut arg = sys::uffdio_copy {
            dst: dst as u64,
            src: src as u64,
            len: len as u64,
            mode: flags.bits(),
            copy: 0,
        };
        // SAFETY: the caller guarantees the range contract above.
        let result = unsafe { sys::copy(&self.fd, &mut arg) };
        outcome(result, arg.copy, len)
    }

    /// `UFFDIO_ZEROPAGE`: map the shared zero page at every missing page of the range.
    ///
    /// # Safety
    ///
    /// No Rust reference may point into the range.
    ///
    /// # Errors
    ///
    /// A [`RangeError`]: `Partial`, `EventsPending`, `Exists` (EEXIST: already populated),
    /// `Invalid` (EINVAL: alignment, length, mode, unregistered range, or memory that has no zero
    /// page such as hugetlbfs), `Missing` (ENOENT: no VMA), `NoMemory`, `Exiting` (ESRCH).
    ///
    /// # References
    ///
    /// `ioctl_userfaultfd(2)`, `UFFDIO_ZEROPAGE(2const)`, the kernel's
    /// `admin-guide/mm/userfaultfd.rst`.
    #[doc(alias = "UFFDIO_ZEROPAGE")]
    pub unsafe fn zeropage(
        &self,
        dst: *mut u8,
        len: usize,
        flags: ZeropageFlags,
    ) -> Result<usize, RangeError> {
        let mut arg = sys::uffdio_zeropage {
            range: range(dst, len),
            mode: flags.bits(),
            zeropage: 0,
        };
        // SAFETY: the caller guarantees the range contract above.
        let result = unsafe { sys::zeropage(&self.fd, &mut arg) };
        outcome(result, arg.zeropage, len)
    }

    /// `UFFDIO_CONTINUE`: map the page-cache pages behind a minor fault (shmem, hugetlbfs).
    ///
    /// # Safety
    ///
    /// No Rust reference may point into the range.
    ///
    /// # Errors
    ///
    /// A [`RangeError`]: `Partial`, `EventsPending`, `Exists` (EEXIST: already mapped), `Invalid`
    /// (EINVAL: alignment, mode, or a range not registered for MINOR faults), `Fault` (EFAULT: the
    /// page is not in the page cache), `NoMemory`, `Exiting` (ESRCH).
    ///
    /// # References
    ///
    /// `ioctl_userfaultfd(2)`, `UFFDIO_CONTINUE(2const)`, the kernel's
    /// `admin-guide/mm/userfaultfd.rst`.
    #[doc(alias = "UFFDIO_CONTINUE")]
    pub unsafe fn continue_pages(
        &self,
        dst: *mut u8,
        len: usize,
        flags: ContinueFlags,
    ) -> Result<usize, RangeError> {
        let mut arg = sys::uffdio_continue {
            range: range(dst, len),
            mode: flags.bits(),
            mapped: 0,
        };
        // SAFETY: the caller guarantees the range contract above.
        let result = unsafe { sys::continue_(&self.fd, &mut arg) };
        outcome(result, arg.mapped, len)
    }

    /// `UFFDIO_POISON`: mark the missing pages of the range poisoned; touching them raises
    /// SIGBUS.
    ///
    /// # Safety
    ///
    /// No Rust reference may point into the range, and nothing may access it afterwards expecting
    /// memory.
    ///
    /// # Errors
    ///
    /// A [`RangeError`]: `Partial`, `EventsPending`, `Exists` (EEXIST: a page is already present),
    /// `Invalid` (EINVAL: alignment, mode, unregistered range, or `POISON` not supported),
    /// `NoMemory`, `Exiting` (ESRCH).
    ///
    /// # References
    ///
    /// `ioctl_userfaultfd(2)`, `UFFDIO_POISON(2const)`, the kernel's
    /// `admin-guide/mm/userfaultfd.rst`.
    #[doc(alias = "UFFDIO_POISON")]
    pub unsafe fn poison(
        &self,
        dst: *mut u8,
        len: usize,
        flags: PoisonFlags,
    ) -> Result<usize, RangeError> {
        let mut arg = sys::uffdio_poison {
            range: range(dst, len),
            mode: flags.bits(),
            updated: 0,
        };
        // SAFETY: the caller guarantees the range contract above.
        let result = unsafe { sys::poison(&self.fd, &mut arg) };
        outcome(result, arg.updated, len)
    }

    /// Reads as many events as are queued and fit in `buf` with one `read(2)`, replacing what
    /// `buf` held. Returns how many were read: on a non-blocking fd, 0 when none are queued; on a
    /// blocking fd it waits for at least one.
    ///
    /// Fork events that were read but never taken out of `buf` have their fds closed here.
    /// Page-fault events carry a thread id when [`Features::THREAD_ID`] is enabled.
    ///
    /// # Errors
    ///
    /// [`ReadError::Read`] with the errno: EINTR on a signal, EINVAL before a successful
    /// `UFFDIO_API`.
    ///
    /// # References
    ///
    /// `userfaultfd(2)` (reading from the userfaultfd structure).
    pub fn read_events(&self, buf: &mut EventBuffer) -> Result<usize, ReadError> {
        buf.discard();
        buf.thread_id = self.enabled.contains(Features::THREAD_ID);
        let (msgs, fds) = buf.storage();
        match sys::read_msgs(&self.fd, msgs, fds) {
            Ok(n) => {
                buf.filled(n);
                Ok(n)
            }
            Err(Errno::AGAIN) => Ok(0),
            Err(errno) => Err(ReadError::Read { errno }),
        }
    }
}

fn control(op: ControlOp, start: *mut u8, len: usize, errno: Errno) -> ControlError {
    ControlError {
        op,
        start: start as usize,
        len,
        errno,
    }
}

impl AsFd for Uffd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl From<Uffd> for OwnedFd {
    fn from(uffd: Uffd) -> OwnedFd {
        uffd.fd
    }
}
