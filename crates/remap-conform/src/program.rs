//! Differential programs: a few VMAs, then a sequence of steps, generated from a seed and
//! printable as JSON for replay. This file is the program itself; `program/generate.rs` makes
//! them from a seed.
//!
//! Steps name pages relative to a VMA ([`Loc`]), so a program means the same wherever its window
//! lands, and dropping steps (shrinking) never invalidates the others.

use remap_oracle::{
    Caller, Environment, Op, Space, ThpAdvice, Vma, VmaKind, PAGES_PER_PMD, PAGE_SIZE,
};
use serde::{Deserialize, Serialize};

mod generate;

pub use generate::{generate, runnable, GenConfig, Rng};

/// The userfaultfd every MOVE, COPY and ZEROPAGE goes through.
pub const OURS: u32 = 0;
/// A second userfaultfd, for "registered with another uffd".
pub const OTHER: u32 = 1;

/// A VMA's userfaultfd registration in a program.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reg {
    /// [`OURS`] or [`OTHER`].
    pub uffd: u32,
    /// `MODE_MISSING`.
    pub missing: bool,
    /// `MODE_WP`.
    pub wp: bool,
}

/// One VMA of a program.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmaSpec {
    /// Start, in pages from the window's base (which is 2 MiB aligned).
    pub offset: u64,
    /// Length in pages.
    pub pages: u64,
    /// `PROT_*` bits.
    pub prot: u8,
    /// `MAP_SHARED | MAP_ANONYMOUS` instead of private.
    pub shared: bool,
    /// `mlock2(MLOCK_ONFAULT)`.
    pub mlocked: bool,
    /// THP advice.
    pub thp: ThpAdvice,
    /// `MADV_DONTFORK`.
    pub dontfork: bool,
    /// Registration at set-up.
    pub register: Option<Reg>,
}

/// A page relative to a VMA: `page` may lie outside it (negative, or past its end).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Loc {
    /// The VMA's index.
    pub vma: usize,
    /// The page index within it.
    pub page: i64,
}

/// One step of a program.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Step {
    /// `UFFDIO_MOVE` of `pages` pages with `mode`.
    Move {
        /// Destination.
        dst: Loc,
        /// Source.
        src: Loc,
        /// Length in pages.
        pages: u64,
        /// `mode` bits.
        mode: u64,
    },
    /// `UFFDIO_MOVE` with byte-level adjustments (for the argument checks): `dst`/`src` plus the
    /// deltas, `len` bytes. Not generated; used by the conformance cases.
    MoveBytes {
        /// Destination page.
        dst: Loc,
        /// Bytes added to the destination address.
        dst_delta: i64,
        /// Source page.
        src: Loc,
        /// Bytes added to the source address.
        src_delta: i64,
        /// Length in bytes.
        len: u64,
        /// `mode` bits.
        mode: u64,
    },
    /// `UFFDIO_WRITEPROTECT` of unpopulated pages (installs WP markers). Not generated.
    WriteProtect {
        /// Start.
        at: Loc,
        /// Length in pages.
        pages: u64,
    },
    /// `UFFDIO_COPY` of `pages` pages holding tags `tag..`.
    Copy {
        /// Destination.
        dst: Loc,
        /// Length in pages.
        pages: u64,
        /// The first page's tag.
        tag: u64,
    },
    /// `UFFDIO_ZEROPAGE`.
    ZeroPage {
        /// Destination.
        dst: Loc,
        /// Length in pages.
        pages: u64,
    },
    /// `MADV_DONTNEED`.
    DontNeed {
        /// Start.
        at: Loc,
        /// Length in pages.
        pages: u64,
    },
    /// A write of `tag` over one page.
    Write {
        /// The page.
        at: Loc,
        /// The contents.
        tag: u64,
    },
    /// A read of one page.
    Read {
        /// The page.
        at: Loc,
    },
    /// `fork()`; the child lives until [`Step::ChildExit`].
    Fork,
    /// The child exits.
    ChildExit,
    /// `MADV_PAGEOUT` of one page.
    SwapOut {
        /// The page.
        at: Loc,
    },
    /// `MADV_COLLAPSE` of the `pmd`-th PMD of a VMA.
    Collapse {
        /// The VMA.
        vma: usize,
        /// The PMD index within it (its start must be PMD aligned).
        pmd: u64,
    },
    /// Split the PMD mapping of the `pmd`-th PMD (an `mprotect` round trip of its second page).
    SplitPmd {
        /// The VMA.
        vma: usize,
        /// The PMD index within it.
        pmd: u64,
    },
    /// `UFFDIO_REGISTER` of a whole VMA.
    Register {
        /// The VMA.
        vma: usize,
        /// Registration.
        reg: Reg,
    },
    /// `UFFDIO_UNREGISTER` of a whole VMA.
    Unregister {
        /// The VMA.
        vma: usize,
        /// [`OURS`] or [`OTHER`].
        uffd: u32,
    },
    /// `MADV_GUARD_INSTALL`.
    Guard {
        /// Start.
        at: Loc,
        /// Length in pages.
        pages: u64,
    },
}

impl Step {
    /// The step's kind, for reports and for the shrinker ("the same kind of mismatch").
    pub fn kind(&self) -> &'static str {
        match self {
            Step::Move { .. } | Step::MoveBytes { .. } => "move",
            Step::WriteProtect { .. } => "writeprotect",
            Step::Copy { .. } => "copy",
            Step::ZeroPage { .. } => "zeropage",
            Step::DontNeed { .. } => "dontneed",
            Step::Write { .. } => "write",
            Step::Read { .. } => "read",
            Step::Fork => "fork",
            Step::ChildExit => "child_exit",
            Step::SwapOut { .. } => "swap_out",
            Step::Collapse { .. } => "collapse",
            Step::SplitPmd { .. } => "split_pmd",
            Step::Register { .. } => "register",
            Step::Unregister { .. } => "unregister",
            Step::Guard { .. } => "guard",
        }
    }
}

/// A differential program.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Program {
    /// The VMAs, with gaps between them (adjacent VMAs would merge).
    pub vmas: Vec<VmaSpec>,
    /// The steps.
    pub steps: Vec<Step>,
}

impl Program {
    /// The window a program needs: past its last VMA, rounded up to 2 MiB, plus 2 MiB of slack.
    pub fn window_len(&self) -> usize {
        let end = self
            .vmas
            .iter()
            .map(|v| (v.offset + v.pages) * PAGE_SIZE)
            .max()
            .unwrap_or(0);
        let pmd = remap_oracle::PMD_SIZE;
        usize::try_from(end.next_multiple_of(pmd) + pmd).expect("usize")
    }

    /// The address of `loc` for a window at `base`.
    pub fn addr(&self, base: u64, loc: Loc) -> u64 {
        let v = &self.vmas[loc.vma];
        let page = i64::try_from(v.offset).expect("i64") + loc.page;
        base.wrapping_add_signed(page * i64::try_from(PAGE_SIZE).expect("i64"))
    }

    /// The address of the `pmd`-th PMD of VMA `vma`.
    pub fn pmd_addr(&self, base: u64, vma: usize, pmd: u64) -> u64 {
        base + (self.vmas[vma].offset + pmd * PAGES_PER_PMD) * PAGE_SIZE
    }

    /// The oracle's state right after set-up.
    pub fn initial_space(&self, base: u64, env: Environment) -> Space {
        let vmas = self
            .vmas
            .iter()
            .map(|v| {
                let mut o = Vma::anon(base + v.offset * PAGE_SIZE, v.pages * PAGE_SIZE)
                    .prot(v.prot)
                    .thp(v.thp)
                    .dontfork(v.dontfork)
                    .mlocked(v.mlocked);
                if v.shared {
                    o = o.kind(VmaKind::SharedAnon);
                }
                if let Some(r) = v.register {
                    o = o.registered(r.uffd, r.missing, r.wp);
                }
                o
            })
            .collect();
        Space::new(env, vmas)
    }

    /// The oracle's operation for `step`, with the window at `base`.
    pub fn op(&self, base: u64, step: &Step) -> Op {
        let a = |l: Loc| self.addr(base, l);
        let bytes = |pages: u64| pages * PAGE_SIZE;
        match *step {
            Step::Move {
                dst,
                src,
                pages,
                mode,
            } => Op::Move {
                uffd: OURS,
                dst: a(dst),
                src: a(src),
                len: bytes(pages),
                mode,
                caller: Caller::Owner,
            },
            Step::MoveBytes {
                dst,
                dst_delta,
                src,
                src_delta,
                len,
                mode,
            } => Op::Move {
                uffd: OURS,
                dst: a(dst).wrapping_add_signed(dst_delta),
                src: a(src).wrapping_add_signed(src_delta),
                len,
                mode,
                caller: Caller::Owner,
            },
            Step::WriteProtect { at, pages } => Op::WriteProtect {
                uffd: OURS,
                addr: a(at),
                len: bytes(pages),
            },
            Step::Copy { dst, pages, tag } => Op::Copy {
                uffd: OURS,
                dst: a(dst),
                len: bytes(pages),
                mode: 0,
                first_tag: tag,
            },
            Step::ZeroPage { dst, pages } => Op::ZeroPage {
                uffd: OURS,
                dst: a(dst),
                len: bytes(pages),
                mode: 0,
            },
            Step::DontNeed { at, pages } => Op::DontNeed {
                addr: a(at),
                len: bytes(pages),
            },
            Step::Write { at, tag } => Op::WriteTouch { addr: a(at), tag },
            Step::Read { at } => Op::ReadTouch { addr: a(at) },
            Step::Fork => Op::Fork,
            Step::ChildExit => Op::ChildExit,
            Step::SwapOut { at } => Op::SwapOut { addr: a(at) },
            Step::Collapse { vma, pmd } => Op::Collapse {
                addr: self.pmd_addr(base, vma, pmd),
            },
            Step::SplitPmd { vma, pmd } => Op::SplitPmd {
                addr: self.pmd_addr(base, vma, pmd),
            },
            Step::Register { vma, reg } => Op::Register {
                uffd: reg.uffd,
                vma: base + self.vmas[vma].offset * PAGE_SIZE,
                missing: reg.missing,
                wp: reg.wp,
            },
            Step::Unregister { vma, uffd } => Op::Unregister {
                uffd,
                vma: base + self.vmas[vma].offset * PAGE_SIZE,
            },
            Step::Guard { at, pages } => Op::GuardInstall {
                addr: a(at),
                len: bytes(pages),
            },
        }
    }

    /// Parses a program printed by [`Program::to_json`].
    ///
    /// # Errors
    ///
    /// The JSON error.
    pub fn from_json(text: &str) -> Result<Program, serde_json::Error> {
        serde_json::from_str(text)
    }

    /// The program as one line of JSON (the replay format).
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a program serializes")
    }

    /// Number of operations.
    pub fn len(&self) -> usize {
        self.steps.len()
    }

    /// Whether there are no steps.
    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }
}
