//! Operations on the space, their outcomes, and predictions (sets of allowed outcomes).

use std::fmt;

use crate::{Errno, Space, UffdId};

/// `UFFDIO_MOVE_MODE_DONTWAKE`.
pub const MOVE_DONTWAKE: u64 = 1 << 0;
/// `UFFDIO_MOVE_MODE_ALLOW_SRC_HOLES`.
pub const MOVE_ALLOW_SRC_HOLES: u64 = 1 << 1;
/// `UFFDIO_COPY_MODE_DONTWAKE` (and `UFFDIO_ZEROPAGE_MODE_DONTWAKE`).
pub const COPY_DONTWAKE: u64 = 1 << 0;
/// `UFFDIO_COPY_MODE_WP`.
pub const COPY_WP: u64 = 1 << 1;

/// Who issues an ioctl.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
pub enum Caller {
    /// A thread of the process that created the userfaultfd.
    Owner,
    /// A forked child using the parent's userfaultfd (`ctx->mm != current->mm`).
    ForkedChild,
}

/// One operation. Addresses are absolute; ranges are `[addr, addr + len)`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize)]
pub enum Op {
    /// `UFFDIO_MOVE` with any `mode` bits (unknown bits are EINVAL).
    Move {
        /// The userfaultfd.
        uffd: UffdId,
        /// Destination start.
        dst: u64,
        /// Source start.
        src: u64,
        /// Length in bytes.
        len: u64,
        /// `mode`.
        mode: u64,
        /// Who calls.
        caller: Caller,
    },
    /// `UFFDIO_COPY` from a buffer of our own whose page `i` holds tag `first_tag + i`.
    Copy {
        /// The userfaultfd.
        uffd: UffdId,
        /// Destination start.
        dst: u64,
        /// Length in bytes.
        len: u64,
        /// `mode`.
        mode: u64,
        /// The tag of the first source page.
        first_tag: u64,
    },
    /// `UFFDIO_ZEROPAGE`.
    ZeroPage {
        /// The userfaultfd.
        uffd: UffdId,
        /// Destination start.
        dst: u64,
        /// Length in bytes.
        len: u64,
        /// `mode`.
        mode: u64,
    },
    /// `madvise(MADV_DONTNEED)`.
    DontNeed {
        /// Start.
        addr: u64,
        /// Length.
        len: u64,
    },
    /// A write of `tag` to the page at `addr` (the whole page's contents become `tag`).
    WriteTouch {
        /// The page.
        addr: u64,
        /// The new contents.
        tag: u64,
    },
    /// A read of the page at `addr`.
    ReadTouch {
        /// The page.
        addr: u64,
    },
    /// `fork()`: the child stays alive (and touches nothing) until [`Op::ChildExit`].
    Fork,
    /// The forked child exits.
    ChildExit,
    /// `madvise(MADV_PAGEOUT)` of one page.
    SwapOut {
        /// The page.
        addr: u64,
    },
    /// `madvise(MADV_COLLAPSE)` of the PMD at `addr` (PMD aligned).
    Collapse {
        /// The PMD.
        addr: u64,
    },
    /// Split the PMD mapping at `addr` (PMD aligned) without unmapping anything (conform does it
    /// by an `mprotect` round trip of one page): a THP becomes PTE-mapped, the huge zero page
    /// becomes zero-page PTEs.
    SplitPmd {
        /// The PMD.
        addr: u64,
    },
    /// `UFFDIO_REGISTER` of the whole VMA starting at `vma`.
    Register {
        /// The userfaultfd.
        uffd: UffdId,
        /// The VMA's start.
        vma: u64,
        /// `MODE_MISSING`.
        missing: bool,
        /// `MODE_WP`.
        wp: bool,
    },
    /// `UFFDIO_UNREGISTER` of the whole VMA starting at `vma`.
    Unregister {
        /// The userfaultfd.
        uffd: UffdId,
        /// The VMA's start.
        vma: u64,
    },
    /// `madvise(MADV_GUARD_INSTALL)`.
    GuardInstall {
        /// Start.
        addr: u64,
        /// Length.
        len: u64,
    },
    /// `UFFDIO_WRITEPROTECT` (WP) of unpopulated pages with `WP_UNPOPULATED`: installs markers.
    WriteProtect {
        /// The userfaultfd.
        uffd: UffdId,
        /// Start.
        addr: u64,
        /// Length.
        len: u64,
    },
    /// A non-cooperative event (REMOVE, UNMAP, REMAP, FORK) for `uffd` is queued and unread.
    QueueEvent {
        /// The userfaultfd.
        uffd: UffdId,
    },
    /// The events of `uffd` are read.
    ReadEvents {
        /// The userfaultfd.
        uffd: UffdId,
    },
}

/// What the kernel leaves in an ioctl's result field (`move`, `copy`, `zeropage`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
pub enum Field {
    /// Not written (the caller's preset value survives).
    Untouched,
    /// Written: bytes done (> 0) or `-errno`.
    Value(i64),
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Field::Untouched => f.write_str("untouched"),
            Field::Value(v) => write!(f, "{v}"),
        }
    }
}

/// A signal an access raises instead of completing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
pub enum Signal {
    /// No permission (a guard region, a read-only VMA, outside every VMA).
    Segv,
    /// A userfault (missing or write-protect) on a registered range: with
    /// `UFFD_FEATURE_SIGBUS` a SIGBUS, otherwise the thread blocks until resolved.
    Userfault,
}

/// The result of one operation, in the kernel's own encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
pub enum Outcome {
    /// An ioctl with a result field: `errno` is `None` when it returned 0.
    Ioctl {
        /// The errno, `None` on success.
        errno: Option<Errno>,
        /// The result field.
        field: Field,
    },
    /// A call without a result field: `None` on success.
    Call(Option<Errno>),
    /// A best-effort call that failed with some errno and changed nothing (`MADV_COLLAPSE`
    /// fails with EAGAIN, ENOMEM or EINVAL depending on why).
    AnyError,
    /// The access raises a signal (conform never performs it).
    Signal(Signal),
}

impl Outcome {
    /// Success of an ioctl that did all `len` bytes.
    pub fn done(len: u64) -> Outcome {
        Outcome::Ioctl {
            errno: None,
            field: Field::Value(i64::try_from(len).expect("i64")),
        }
    }

    /// An ioctl failure with `-errno` written to the field.
    pub fn failed(errno: Errno) -> Outcome {
        Outcome::Ioctl {
            errno: Some(errno),
            field: Field::Value(-i64::from(errno.raw())),
        }
    }

    /// An ioctl failure that left the field untouched.
    pub fn rejected(errno: Errno) -> Outcome {
        Outcome::Ioctl {
            errno: Some(errno),
            field: Field::Untouched,
        }
    }

    /// EAGAIN with `done` bytes of partial progress.
    pub fn partial(done: u64) -> Outcome {
        Outcome::Ioctl {
            errno: Some(Errno::Again),
            field: Field::Value(i64::try_from(done).expect("i64")),
        }
    }

    /// A successful call without a result field.
    pub const OK: Outcome = Outcome::Call(None);

    /// Whether `self` (an observed outcome) is what `predicted` allows. Equal outcomes agree,
    /// and [`Outcome::AnyError`] allows every failed call.
    pub fn agrees_with(&self, predicted: &Outcome) -> bool {
        match (predicted, self) {
            (Outcome::AnyError, Outcome::Call(Some(_)) | Outcome::AnyError) => true,
            (p, o) => p == o,
        }
    }

    /// The bytes an ioctl outcome reports done (0 for failures and other calls).
    pub fn bytes_done(&self) -> u64 {
        match self {
            Outcome::Ioctl {
                field: Field::Value(v),
                ..
            } if *v > 0 => v.unsigned_abs(),
            _ => 0,
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Ioctl { errno: None, field } => write!(f, "0 / {field}"),
            Outcome::Ioctl {
                errno: Some(e),
                field,
            } => write!(f, "{e} / {field}"),
            Outcome::Call(None) => f.write_str("ok"),
            Outcome::Call(Some(e)) => write!(f, "{e}"),
            Outcome::AnyError => f.write_str("an error"),
            Outcome::Signal(Signal::Segv) => f.write_str("SIGSEGV"),
            Outcome::Signal(Signal::Userfault) => f.write_str("userfault"),
        }
    }
}

/// One allowed result of an operation: the outcome and the state after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alternative {
    /// What the call returns.
    pub outcome: Outcome,
    /// The space afterwards.
    pub after: Space,
    /// Why this alternative exists, when there are several (for reports).
    pub why: &'static str,
}

/// Everything the kernel may legitimately do for one operation: usually one [`Alternative`],
/// several where the kernel may choose (a THP allocated or not, a THP split or not, a page
/// reclaimed or not, a page table freed or not).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prediction {
    /// The allowed results, without duplicates.
    pub alternatives: Vec<Alternative>,
}

impl Prediction {
    pub(crate) fn new(mut alternatives: Vec<Alternative>) -> Prediction {
        let mut unique: Vec<Alternative> = Vec::with_capacity(alternatives.len());
        for alt in alternatives.drain(..) {
            if !unique
                .iter()
                .any(|u| u.outcome == alt.outcome && u.after == alt.after)
            {
                unique.push(alt);
            }
        }
        Prediction {
            alternatives: unique,
        }
    }

    /// Whether the kernel may return `outcome` (for some resulting state).
    pub fn allows(&self, outcome: &Outcome) -> bool {
        self.alternatives
            .iter()
            .any(|a| outcome.agrees_with(&a.outcome))
    }

    /// The distinct outcomes allowed.
    pub fn outcomes(&self) -> Vec<Outcome> {
        let mut out: Vec<Outcome> = Vec::new();
        for a in &self.alternatives {
            if !out.contains(&a.outcome) {
                out.push(a.outcome);
            }
        }
        out
    }

    /// The states allowed after `outcome`.
    pub fn states_after(&self, outcome: &Outcome) -> Vec<&Space> {
        self.alternatives
            .iter()
            .filter(|a| outcome.agrees_with(&a.outcome))
            .map(|a| &a.after)
            .collect()
    }

    /// The single alternative, when the prediction is deterministic.
    pub fn unique(&self) -> Option<&Alternative> {
        match self.alternatives.as_slice() {
            [one] => Some(one),
            _ => None,
        }
    }
}

/// The oracle does not model this operation in this state (it would have to guess).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unmodelled(pub &'static str);

impl fmt::Display for Unmodelled {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "not modelled: {}", self.0)
    }
}

impl std::error::Error for Unmodelled {}
