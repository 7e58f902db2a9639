//! Typed errors, one enum per operation family. Each keeps the kernel's errno, and those of the
//! range ioctls keep the bytes already done.

use std::fmt;

use rustix::io::Errno;

use crate::Features;

/// Why a userfaultfd could not be created or set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CreateError {
    /// Every way of creating the fd failed; each attempt says why and what would fix it.
    #[error("cannot create a userfaultfd: {}", Attempts(.attempts))]
    Unavailable {
        /// Each path tried, in order, with its errno.
        attempts: Vec<Attempt>,
    },
    /// The kernel does not support some of the requested features.
    #[error(
        "the kernel lacks requested userfaultfd features {missing:?} (it supports {supported:?})"
    )]
    MissingFeatures {
        /// What was asked for.
        requested: Features,
        /// What the kernel supports.
        supported: Features,
        /// `requested - supported`.
        missing: Features,
    },
    /// A requested feature needs a privilege this process lacks (`EVENT_FORK` needs CAP_SYS_PTRACE).
    #[error("userfaultfd features {features:?} need CAP_SYS_PTRACE: {errno}")]
    NotPermitted {
        /// The features that need the privilege.
        features: Features,
        /// The kernel's errno (EPERM).
        errno: Errno,
    },
    /// `UFFDIO_API` failed for another reason.
    #[error("UFFDIO_API failed: {errno}")]
    Api {
        /// The kernel's errno.
        errno: Errno,
    },
}

struct Attempts<'a>(&'a [Attempt]);

impl fmt::Display for Attempts<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, attempt) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{attempt}")?;
        }
        Ok(())
    }
}

/// One way of creating a userfaultfd.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CreatePath {
    /// The `userfaultfd(2)` system call.
    Syscall {
        /// Whether `UFFD_USER_MODE_ONLY` was passed.
        user_mode_only: bool,
    },
    /// `open("/dev/userfaultfd")` and `ioctl(USERFAULTFD_IOC_NEW)`.
    Device {
        /// Whether `UFFD_USER_MODE_ONLY` was passed.
        user_mode_only: bool,
    },
}

impl fmt::Display for CreatePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (name, umo) = match *self {
            CreatePath::Syscall { user_mode_only } => ("userfaultfd(2)", user_mode_only),
            CreatePath::Device { user_mode_only } => ("/dev/userfaultfd", user_mode_only),
        };
        if umo {
            write!(f, "{name} with UFFD_USER_MODE_ONLY")
        } else {
            f.write_str(name)
        }
    }
}

/// One failed attempt at creating a userfaultfd: the path, the errno, and the fix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attempt {
    /// The path tried.
    pub path: CreatePath,
    /// What the kernel said.
    pub errno: Errno,
}

impl Attempt {
    /// What would make this path work, in a sentence.
    pub fn fix(&self) -> &'static str {
        match (self.path, self.errno) {
            (_, Errno::NOSYS) => {
                "the kernel lacks CONFIG_USERFAULTFD, or a seccomp filter blocks userfaultfd(2)"
            }
            (CreatePath::Syscall { user_mode_only: false }, Errno::PERM) => {
                "kernel-mode faults need CAP_SYS_PTRACE or `sysctl vm.unprivileged_userfaultfd=1`; \
                 or allow user-mode-only faults"
            }
            (CreatePath::Syscall { user_mode_only: true }, Errno::PERM) => {
                "the kernel refused even user-mode-only faults (a security module or seccomp policy)"
            }
            (CreatePath::Device { .. }, Errno::NOENT) => {
                "there is no /dev/userfaultfd (Linux before 6.1, or the node was not created)"
            }
            (CreatePath::Device { .. }, Errno::ACCESS | Errno::PERM) => {
                "grant access to /dev/userfaultfd, e.g. `setfacl -m u:$USER:rw /dev/userfaultfd`"
            }
            (_, Errno::INVAL) => "the kernel rejected the flags (UFFD_USER_MODE_ONLY needs Linux 5.11)",
            (_, Errno::MFILE | Errno::NFILE) => "the process or system is out of file descriptors",
            _ => "unexpected error",
        }
    }
}

impl fmt::Display for Attempt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {} ({})", self.path, self.errno, self.fix())
    }
}

/// Why `UFFDIO_REGISTER`, `UFFDIO_UNREGISTER`, `UFFDIO_WAKE` or `UFFDIO_WRITEPROTECT` failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{op} of {len:#x} bytes at {start:#x}: {errno}")]
pub struct ControlError {
    /// Which ioctl failed.
    pub op: ControlOp,
    /// Start of the range.
    pub start: usize,
    /// Length of the range.
    pub len: usize,
    /// The kernel's errno: EINVAL for a bad range or mode (or MINOR on anonymous memory), and
    /// for REGISTER and UNREGISTER also for a range with no VMA at all (a partly mapped range
    /// succeeds); EBUSY for a range registered with another fd; EAGAIN (WRITEPROTECT only) while
    /// non-cooperative events are pending.
    pub errno: Errno,
}

/// The ioctls that [`ControlError`] covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ControlOp {
    /// `UFFDIO_REGISTER`.
    Register,
    /// `UFFDIO_UNREGISTER`.
    Unregister,
    /// `UFFDIO_WAKE`.
    Wake,
    /// `UFFDIO_WRITEPROTECT`.
    WriteProtect,
}

impl fmt::Display for ControlOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ControlOp::Register => "UFFDIO_REGISTER",
            ControlOp::Unregister => "UFFDIO_UNREGISTER",
            ControlOp::Wake => "UFFDIO_WAKE",
            ControlOp::WriteProtect => "UFFDIO_WRITEPROTECT",
        })
    }
}

/// Why a range ioctl (`UFFDIO_MOVE`, `UFFDIO_COPY`, `UFFDIO_ZEROPAGE`, `UFFDIO_CONTINUE`,
/// `UFFDIO_POISON`) stopped short of the whole range.
///
/// Every variant carries `done`: the bytes at the start of the range that were already handled
/// when the error was seen. A single ioctl reports an error only when it did nothing, so `done` is
/// 0 there except for [`Partial`](Self::Partial); the retrying [`Uffd::move_all`](crate::Uffd::move_all)
/// accumulates it. Nothing is lost either way: each page of a failed MOVE is still at its source
/// or already at its destination, with its contents.
///
/// ```no_run
/// # let (uffd, dst, src, len): (uffd::Uffd, *mut u8, *mut u8, usize) = todo!();
/// // SAFETY: (in a real program) no references into either range.
/// match unsafe { uffd.move_all(dst, src, len, uffd::MoveFlags::empty()) } {
///     Ok(moved) => assert_eq!(moved, len),
///     Err(uffd::RangeError::EventsPending { done }) => { /* read events, resume at `done` */ }
///     Err(uffd::RangeError::Exists { done }) => { /* a racing resolver won: wake the range */ }
///     Err(other) => panic!("move failed after {} bytes: {other}", other.done()),
/// }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RangeError {
    /// EAGAIN with progress: the first `done` bytes are handled, the rest was not attempted; the
    /// error that stopped the kernel is reported only when the rest is re-issued.
    #[error("partial progress: {done} bytes done, the rest not attempted")]
    Partial {
        /// Bytes handled.
        done: usize,
    },
    /// EAGAIN without progress: a non-cooperative event (fork, mremap, remove, unmap) is queued and
    /// unread, or a VMA lock could not be taken. Read the events, then retry; never spin on this
    /// from the thread that reads events, since the event's producer is blocked until it is read.
    #[error("non-cooperative userfaultfd events are pending (EAGAIN) after {done} bytes")]
    EventsPending {
        /// Bytes handled before.
        done: usize,
    },
    /// EEXIST: a destination page is already populated (for a fault, another resolver won).
    #[error("destination already populated (EEXIST) after {done} bytes")]
    Exists {
        /// Bytes handled before.
        done: usize,
    },
    /// ENOENT: a source page is missing (a hole, without `ALLOW_SRC_HOLES`), or no VMA at an
    /// address.
    #[error("source page or VMA missing (ENOENT) after {done} bytes")]
    Missing {
        /// Bytes handled before.
        done: usize,
    },
    /// EBUSY: a source page is mapped more than once (fork, KSM), pinned, or otherwise not movable
    /// now.
    #[error("source page not movable now (EBUSY: shared, pinned or KSM) after {done} bytes")]
    Busy {
        /// Bytes handled before.
        done: usize,
    },
    /// EINVAL: bad alignment, length or mode bits, unregistered or foreign destination, ranges
    /// spanning VMAs, mismatched protection or mlock, non-anonymous memory, or a caller outside the
    /// process that created the fd.
    #[error("invalid request (EINVAL) after {done} bytes")]
    Invalid {
        /// Bytes handled before.
        done: usize,
    },
    /// ENOMEM: the kernel could not allocate page tables (or an anon_vma).
    #[error("out of memory (ENOMEM) after {done} bytes")]
    NoMemory {
        /// Bytes handled before.
        done: usize,
    },
    /// EFAULT: an unreadable argument or source, or a source entry that cannot be moved (a guard
    /// region, a poison marker).
    #[error("bad address (EFAULT) after {done} bytes")]
    Fault {
        /// Bytes handled before.
        done: usize,
    },
    /// ESRCH: the process that owns the fd's memory is exiting.
    #[error("the address space is exiting (ESRCH) after {done} bytes")]
    Exiting {
        /// Bytes handled before.
        done: usize,
    },
    /// EINTR: a fatal signal interrupted the call.
    #[error("interrupted (EINTR) after {done} bytes")]
    Interrupted {
        /// Bytes handled before.
        done: usize,
    },
    /// Another errno.
    #[error("{errno} after {done} bytes")]
    Other {
        /// The kernel's errno.
        errno: Errno,
        /// Bytes handled before.
        done: usize,
    },
}

impl RangeError {
    /// Decodes a failed range ioctl: `errno` from the call, `out` from the struct's output field
    /// (pre-set to 0, since the kernel leaves it untouched on its early error paths).
    pub(crate) fn decode(errno: Errno, out: i64) -> Self {
        if errno == Errno::AGAIN {
            return match usize::try_from(out) {
                Ok(done) if done > 0 => RangeError::Partial { done },
                _ => RangeError::EventsPending { done: 0 },
            };
        }
        Self::from_errno(errno, 0)
    }

    /// The variant for `errno`, with `done` bytes handled before it.
    pub fn from_errno(errno: Errno, done: usize) -> Self {
        match errno {
            Errno::AGAIN => RangeError::EventsPending { done },
            Errno::EXIST => RangeError::Exists { done },
            Errno::NOENT => RangeError::Missing { done },
            Errno::BUSY => RangeError::Busy { done },
            Errno::INVAL => RangeError::Invalid { done },
            Errno::NOMEM => RangeError::NoMemory { done },
            Errno::FAULT => RangeError::Fault { done },
            Errno::SRCH => RangeError::Exiting { done },
            Errno::INTR => RangeError::Interrupted { done },
            errno => RangeError::Other { errno, done },
        }
    }

    /// The kernel's errno (EAGAIN for both `Partial` and `EventsPending`).
    pub fn errno(&self) -> Errno {
        match *self {
            RangeError::Partial { .. } | RangeError::EventsPending { .. } => Errno::AGAIN,
            RangeError::Exists { .. } => Errno::EXIST,
            RangeError::Missing { .. } => Errno::NOENT,
            RangeError::Busy { .. } => Errno::BUSY,
            RangeError::Invalid { .. } => Errno::INVAL,
            RangeError::NoMemory { .. } => Errno::NOMEM,
            RangeError::Fault { .. } => Errno::FAULT,
            RangeError::Exiting { .. } => Errno::SRCH,
            RangeError::Interrupted { .. } => Errno::INTR,
            RangeError::Other { errno, .. } => errno,
        }
    }

    /// Bytes at the start of the range handled before the error.
    pub fn done(&self) -> usize {
        match *self {
            RangeError::Partial { done }
            | RangeError::EventsPending { done }
            | RangeError::Exists { done }
            | RangeError::Missing { done }
            | RangeError::Busy { done }
            | RangeError::Invalid { done }
            | RangeError::NoMemory { done }
            | RangeError::Fault { done }
            | RangeError::Exiting { done }
            | RangeError::Interrupted { done }
            | RangeError::Other { done, .. } => done,
        }
    }

    /// The same error with `extra` more bytes counted as done before it.
    pub fn after(self, extra: usize) -> Self {
        match self {
            RangeError::Partial { done } => RangeError::Partial { done: done + extra },
            other => RangeError::from_errno(other.errno(), other.done() + extra),
        }
    }
}

/// Why reading events failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReadError {
    /// `read(2)` failed: EINVAL before a successful `UFFDIO_API`, EINTR on a signal.
    #[error("reading userfaultfd events: {errno}")]
    Read {
        /// The kernel's errno.
        errno: Errno,
    },
}

#[cfg(test)]
mod tests;
