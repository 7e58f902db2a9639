//! The contract case by case: every row of `docs/move-contract.md`'s Appendix A and the errno paths of its
//! section 2, each run on this kernel and judged by the oracle under every row of the behaviour
//! table.
//!
//! Most cases are small [`Program`]s whose last step (or `subject` step) is the call the case is
//! about; every step is checked, so the state around the call is judged as well. A few need
//! more than a program can say (an event queued by another thread, a forked caller, a file
//! mapping, a second `UFFDIO_API`) and are written out by hand (`cases/special.rs`, whose raw
//! ioctls and stores act on windows of their own).
//!
//! This file is the table: the case types and [`all_cases`]. `cases/run.rs` runs and judges it
//! ([`run_all`], [`run_case`]).

use remap_oracle::{MOVE_ALLOW_SRC_HOLES, PAGES_PER_PMD, PAGE_SIZE, PROT_READ, PROT_WRITE};

use crate::program::{Loc, Program, Reg, Step, VmaSpec, OTHER, OURS};
use crate::Machine;

mod run;
mod special;

pub use run::{run_all, run_case};

/// Something a case needs from the machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Need {
    /// THP usable.
    Thp,
    /// Swap active.
    Swap,
    /// `MADV_GUARD_INSTALL`.
    Guard,
    /// `UFFD_FEATURE_WP_UNPOPULATED`.
    WpUnpopulated,
    /// Root (to see PFNs and tell the huge zero page).
    Root,
}

impl Need {
    fn describe(self) -> &'static str {
        match self {
            Need::Thp => "transparent huge pages",
            Need::Swap => "active swap (root can set up zram)",
            Need::Guard => "MADV_GUARD_INSTALL (Linux 6.13)",
            Need::WpUnpopulated => "UFFD_FEATURE_WP_UNPOPULATED",
            Need::Root => "root",
        }
    }
}

/// What a case runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Body {
    /// A program; `subject` is the index of the step the case is about.
    Program {
        /// The program.
        program: Program,
        /// The step the case is about.
        subject: usize,
    },
    /// A case written out by hand.
    Special(Special),
}

/// The hand-written cases.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Special {
    /// MOVE while an `EVENT_REMOVE` is queued and unread.
    PendingEvents,
    /// MOVE from a forked child on the parent's userfaultfd.
    ForkedChildCaller,
    /// A user-mode-only fd created with `features = MOVE`.
    UserModeOnly,
    /// A second `UFFDIO_API` on one fd.
    SecondApi,
    /// A source that is a private file mapping.
    PrivateFileSrc,
}

/// One conformance case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Case {
    /// Short name.
    pub name: &'static str,
    /// Where the contract states it (an Appendix A row or a section).
    pub spec: &'static str,
    /// What the machine must offer.
    pub needs: Vec<Need>,
    /// What runs.
    pub body: Body,
}

/// The result of one case.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CaseResult {
    /// The case's name.
    pub name: &'static str,
    /// Where the contract states it.
    pub spec: &'static str,
    /// What this kernel returned for the subject call (`None` when skipped).
    pub kernel: Option<String>,
    /// What the oracle allows for this kernel's behaviour row.
    pub expected: Vec<String>,
    /// Whether they agree, state included (`None` when skipped).
    pub agree: Option<bool>,
    /// The behaviour rows whose predictions the kernel matched (every step of the case).
    pub rows: Vec<&'static str>,
    /// Why the case was skipped.
    pub skipped: Option<String>,
    /// The disagreement, when there is one.
    pub detail: Option<String>,
}

/// The whole conformance report.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ConformReport {
    /// The machine.
    pub machine: Machine,
    /// Per case.
    pub cases: Vec<CaseResult>,
    /// The rows every non-skipped case matched.
    pub rows_matched: Vec<&'static str>,
    /// Cases whose matching rows exclude this kernel's row but include a later one (a backported
    /// change, or an oracle bug).
    pub later_row_cases: Vec<&'static str>,
}

impl ConformReport {
    /// Cases that disagree.
    pub fn disagreements(&self) -> usize {
        self.cases.iter().filter(|c| c.agree == Some(false)).count()
    }

    /// Cases skipped.
    pub fn skipped(&self) -> usize {
        self.cases.iter().filter(|c| c.skipped.is_some()).count()
    }
}

const P: u64 = PAGE_SIZE;
/// The page size as a `usize` (4096 fits every target).
#[allow(clippy::cast_possible_truncation)]
const PAGE: usize = PAGE_SIZE as usize;
const HUGE: u64 = PAGES_PER_PMD;

/// A private read-write VMA of `pages` pages in slot `slot`, `start` pages past a PMD boundary,
/// `MADV_DONTFORK` (so later forks of other cases' programs share nothing by accident).
fn vma(slot: u64, start: u64, pages: u64) -> VmaSpec {
    VmaSpec {
        offset: slot * 4 * HUGE + HUGE + start,
        pages,
        prot: PROT_READ | PROT_WRITE,
        shared: false,
        mlocked: false,
        thp: remap_oracle::ThpAdvice::NoHuge,
        dontfork: true,
        register: None,
    }
}

fn registered(mut v: VmaSpec) -> VmaSpec {
    v.register = Some(Reg {
        uffd: OURS,
        missing: true,
        wp: false,
    });
    v
}

fn huge(mut v: VmaSpec) -> VmaSpec {
    v.thp = remap_oracle::ThpAdvice::Huge;
    v
}

fn at(vma: usize, page: i64) -> Loc {
    Loc { vma, page }
}

fn write(vma: usize, page: i64, tag: u64) -> Step {
    Step::Write {
        at: at(vma, page),
        tag,
    }
}

fn writes(vma: usize, pages: u64, first: u64) -> Vec<Step> {
    (0..pages)
        .map(|i| write(vma, i64::try_from(i).expect("i64"), first + i))
        .collect()
}

fn mv(dst: Loc, src: Loc, pages: u64, mode: u64) -> Step {
    Step::Move {
        dst,
        src,
        pages,
        mode,
    }
}

/// src = VMA 0, dst = VMA 1.
fn src_dst(src: VmaSpec, dst: VmaSpec, steps: Vec<Step>) -> Body {
    let subject = steps.len() - 1;
    Body::Program {
        program: Program {
            vmas: vec![src, dst],
            steps,
        },
        subject,
    }
}

fn with_subject(body: Body, subject: usize) -> Body {
    match body {
        Body::Program { program, .. } => Body::Program { program, subject },
        other => other,
    }
}

fn case(name: &'static str, spec: &'static str, needs: &[Need], body: Body) -> Case {
    Case {
        name,
        spec,
        needs: needs.to_vec(),
        body,
    }
}

fn reg_step(vma: usize) -> Step {
    Step::Register {
        vma,
        reg: Reg {
            uffd: OURS,
            missing: true,
            wp: false,
        },
    }
}

/// Every case, in the order of Appendix A, then the further errno paths of section 2.
pub fn all_cases() -> Vec<Case> {
    let (s, d) = (0usize, 1usize);
    let one = |steps| src_dst(vma(0, 0, 1), registered(vma(1, 0, 1)), steps);
    let two = |src: VmaSpec, dst: VmaSpec, pre: Vec<Step>, last: Step| {
        let mut steps = pre;
        steps.push(last);
        src_dst(src, dst, steps)
    };
    let a = "Appendix A";
    let mut cases = vec![
        case(
            "present page",
            a,
            &[],
            one(vec![write(s, 0, 1), mv(at(d, 0), at(s, 0), 1, 0)]),
        ),
        case(
            "hole, no flag",
            a,
            &[],
            one(vec![mv(at(d, 0), at(s, 0), 1, 0)]),
        ),
        case(
            "hole, ALLOW_SRC_HOLES",
            a,
            &[],
            one(vec![mv(at(d, 0), at(s, 0), 1, MOVE_ALLOW_SRC_HOLES)]),
        ),
        case(
            "populated dst",
            a,
            &[],
            two(
                vma(0, 0, 1),
                vma(1, 0, 1),
                vec![write(s, 0, 1), write(d, 0, 2), reg_step(d)],
                mv(at(d, 0), at(s, 0), 1, 0),
            ),
        ),
        case(
            "4 pages, 4th dst populated",
            a,
            &[],
            two(
                vma(0, 0, 4),
                vma(1, 0, 4),
                [writes(s, 4, 10), vec![write(d, 3, 99), reg_step(d)]].concat(),
                mv(at(d, 0), at(s, 0), 4, 0),
            ),
        ),
    ];
    for (name, dd, sd, len, mode) in [
        ("len=0", 0, 0, 0, 0),
        ("unaligned dst", 8, 0, P, 0),
        ("unaligned src", 0, 8, P, 0),
        ("mode bit 4", 0, 0, P, 1 << 4),
        ("len not a page multiple (2.1)", 0, 0, P + 512, 0),
    ] {
        cases.push(case(
            name,
            a,
            &[],
            one(vec![
                write(s, 0, 1),
                Step::MoveBytes {
                    dst: at(d, 0),
                    dst_delta: dd,
                    src: at(s, 0),
                    src_delta: sd,
                    len,
                    mode,
                },
            ]),
        ));
    }
    let mut other = vma(1, 0, 1);
    other.register = Some(Reg {
        uffd: OTHER,
        missing: true,
        wp: false,
    });
    let mut ro = vma(0, 0, 1);
    ro.prot = PROT_READ;
    let mut shared = vma(0, 0, 1);
    shared.shared = true;
    let mut locked = vma(0, 0, 1);
    locked.mlocked = true;
    let mut ro_dst = registered(vma(1, 0, 1));
    ro_dst.prot = PROT_READ;
    let mut zero_src = vma(0, 0, 1);
    zero_src.thp = remap_oracle::ThpAdvice::NoHuge;
    let mut forkable = vma(0, 0, 2);
    forkable.dontfork = false;
    let mut wp_dst = registered(vma(1, 0, 2));
    wp_dst.register = Some(Reg {
        uffd: OURS,
        missing: true,
        wp: true,
    });
    let mut wp_only = vma(1, 0, 2);
    wp_only.register = Some(Reg {
        uffd: OURS,
        missing: false,
        wp: true,
    });
    let move1 = mv(at(d, 0), at(s, 0), 1, 0);
    cases.extend([
        case(
            "dst not registered",
            a,
            &[],
            two(vma(0, 0, 1), vma(1, 0, 1), vec![write(s, 0, 1)], move1),
        ),
        case(
            "dst registered to another uffd",
            a,
            &[],
            two(vma(0, 0, 1), other, vec![write(s, 0, 1)], move1),
        ),
        case(
            "dst start unmapped",
            a,
            &[],
            one(vec![write(s, 0, 1), mv(at(d, -1), at(s, 0), 1, 0)]),
        ),
        case(
            "src start unmapped",
            a,
            &[],
            one(vec![mv(at(d, 0), at(s, -1), 1, 0)]),
        ),
        case(
            "src range beyond its VMA",
            a,
            &[],
            two(
                vma(0, 0, 2),
                registered(vma(1, 0, 4)),
                writes(s, 2, 1),
                mv(at(d, 0), at(s, 0), 3, 0),
            ),
        ),
        case(
            "dst range beyond its VMA",
            a,
            &[],
            two(
                vma(0, 0, 4),
                registered(vma(1, 0, 2)),
                writes(s, 4, 1),
                mv(at(d, 0), at(s, 0), 3, 0),
            ),
        ),
    ]);
    // dst range spans two VMAs: two adjacent registered VMAs that differ in MADV_DONTFORK.
    let (mut lo, mut hi) = (registered(vma(1, 0, 2)), registered(vma(1, 2, 2)));
    lo.dontfork = true;
    hi.dontfork = false;
    cases.push(case(
        "dst range spans two VMAs",
        a,
        &[],
        Body::Program {
            program: Program {
                vmas: vec![vma(0, 0, 4), lo, hi],
                steps: [writes(s, 4, 1), vec![mv(at(1, 0), at(s, 0), 4, 0)]].concat(),
            },
            subject: 4,
        },
    ));
    cases.extend([
        case(
            "PROT mismatch",
            a,
            &[],
            two(ro, registered(vma(1, 0, 1)), vec![], move1),
        ),
        case(
            "src MAP_SHARED|ANON",
            a,
            &[],
            two(
                shared,
                registered(vma(1, 0, 1)),
                vec![write(s, 0, 1)],
                move1,
            ),
        ),
        case(
            "mlock mismatch",
            a,
            &[],
            two(locked, registered(vma(1, 0, 1)), vec![], move1),
        ),
        case(
            "zero-page src",
            a,
            &[],
            two(
                zero_src,
                registered(vma(1, 0, 1)),
                vec![Step::Read { at: at(s, 0) }],
                move1,
            ),
        ),
        case(
            "COW-shared with live child",
            a,
            &[],
            with_subject(
                src_dst(
                    forkable.clone(),
                    registered(vma(1, 0, 2)),
                    [
                        writes(s, 2, 1),
                        vec![Step::Fork, mv(at(d, 0), at(s, 0), 2, 0), Step::ChildExit],
                    ]
                    .concat(),
                ),
                3,
            ),
        ),
        case(
            "after child exit, before write",
            a,
            &[],
            src_dst(
                forkable.clone(),
                registered(vma(1, 0, 2)),
                [
                    writes(s, 2, 1),
                    vec![Step::Fork, Step::ChildExit, mv(at(d, 0), at(s, 0), 2, 0)],
                ]
                .concat(),
            ),
        ),
        case(
            "after child exit, after write",
            a,
            &[],
            src_dst(
                forkable,
                registered(vma(1, 0, 2)),
                [
                    writes(s, 2, 1),
                    vec![Step::Fork, Step::ChildExit],
                    writes(s, 2, 1),
                    vec![mv(at(d, 0), at(s, 0), 2, 0)],
                ]
                .concat(),
            ),
        ),
        case(
            "MADV_DONTFORK",
            a,
            &[],
            with_subject(
                src_dst(
                    vma(0, 0, 2),
                    registered(vma(1, 0, 2)),
                    [
                        writes(s, 2, 1),
                        vec![Step::Fork, mv(at(d, 0), at(s, 0), 2, 0), Step::ChildExit],
                    ]
                    .concat(),
                ),
                3,
            ),
        ),
        case(
            "child using parent's uffd",
            a,
            &[],
            Body::Special(Special::ForkedChildCaller),
        ),
        case(
            "same-VMA overlap upward",
            a,
            &[],
            Body::Program {
                program: Program {
                    vmas: vec![vma(0, 0, 3)],
                    steps: vec![
                        write(0, 0, 1),
                        write(0, 1, 2),
                        reg_step(0),
                        mv(at(0, 1), at(0, 0), 2, 0),
                    ],
                },
                subject: 3,
            },
        ),
        case(
            "same-VMA overlap downward",
            a,
            &[],
            Body::Program {
                program: Program {
                    vmas: vec![vma(0, 0, 3)],
                    steps: vec![
                        write(0, 1, 1),
                        write(0, 2, 2),
                        reg_step(0),
                        mv(at(0, 0), at(0, 1), 2, 0),
                    ],
                },
                subject: 3,
            },
        ),
        case(
            "THP 2 MiB aligned",
            a,
            &[Need::Thp],
            two(
                huge(vma(0, 0, HUGE)),
                registered(huge(vma(1, 0, HUGE))),
                vec![write(s, 0, 1)],
                mv(at(d, 0), at(s, 0), HUGE, 0),
            ),
        ),
        case(
            "THP 4 MiB aligned",
            a,
            &[Need::Thp],
            two(
                huge(vma(0, 0, 2 * HUGE)),
                registered(huge(vma(1, 0, 2 * HUGE))),
                vec![write(s, 0, 1), write(s, 512, 2)],
                mv(at(d, 0), at(s, 0), 2 * HUGE, 0),
            ),
        ),
        case(
            "THP unaligned (+4 KiB)",
            a,
            &[Need::Thp],
            two(
                huge(vma(0, 0, HUGE)),
                registered(huge(vma(1, 0, 2 * HUGE))),
                vec![write(s, 0, 1)],
                mv(at(d, 1), at(s, 0), HUGE, 0),
            ),
        ),
        case(
            "huge zero page",
            a,
            &[Need::Thp],
            two(
                huge(vma(0, 0, HUGE)),
                registered(huge(vma(1, 0, HUGE))),
                vec![Step::Read { at: at(s, 0) }],
                mv(at(d, 0), at(s, 0), HUGE, 0),
            ),
        ),
        case(
            "src THP, len 1 MiB",
            a,
            &[Need::Thp],
            two(
                huge(vma(0, 0, HUGE)),
                registered(huge(vma(1, 0, HUGE))),
                vec![write(s, 0, 1)],
                mv(at(d, 0), at(s, 0), HUGE / 2, 0),
            ),
        ),
        case(
            "8 paged-out pages",
            a,
            &[Need::Swap],
            two(
                vma(0, 0, 8),
                registered(vma(1, 0, 8)),
                [
                    writes(s, 8, 1),
                    (0..16)
                        .map(|i| Step::SwapOut { at: at(s, i % 8) })
                        .collect(),
                ]
                .concat(),
                mv(at(d, 0), at(s, 0), 8, 0),
            ),
        ),
        case(
            "dst WP marker",
            a,
            &[Need::WpUnpopulated],
            two(
                vma(0, 0, 2),
                wp_dst,
                [
                    writes(s, 2, 1),
                    vec![Step::WriteProtect {
                        at: at(d, 0),
                        pages: 2,
                    }],
                ]
                .concat(),
                mv(at(d, 0), at(s, 0), 2, 0),
            ),
        ),
        case(
            "src guard region",
            a,
            &[Need::Guard],
            two(
                vma(0, 0, 4),
                registered(vma(1, 0, 4)),
                vec![
                    write(s, 0, 1),
                    write(s, 1, 2),
                    write(s, 3, 4),
                    Step::Guard {
                        at: at(s, 2),
                        pages: 1,
                    },
                    mv(at(d, 0), at(s, 0), 4, MOVE_ALLOW_SRC_HOLES),
                ],
                mv(at(d, 2), at(s, 2), 2, MOVE_ALLOW_SRC_HOLES),
            ),
        ),
        case(
            "pending EVENT_REMOVE",
            a,
            &[],
            Body::Special(Special::PendingEvents),
        ),
        case(
            "dst registered WP-only",
            a,
            &[],
            two(
                vma(0, 0, 2),
                wp_only,
                writes(s, 2, 1),
                mv(at(d, 0), at(s, 0), 2, 0),
            ),
        ),
        case(
            "src also registered",
            a,
            &[],
            two(
                vma(0, 0, 2),
                registered(vma(1, 0, 2)),
                [writes(s, 2, 1), vec![reg_step(s)]].concat(),
                mv(at(d, 0), at(s, 0), 2, 0),
            ),
        ),
        case(
            "UFFD_USER_MODE_ONLY fd with features=MOVE",
            a,
            &[],
            Body::Special(Special::UserModeOnly),
        ),
        case(
            "second UFFDIO_API",
            a,
            &[],
            Body::Special(Special::SecondApi),
        ),
        case(
            "src private file mapping (2.2)",
            "2.2",
            &[],
            Body::Special(Special::PrivateFileSrc),
        ),
        case(
            "both read-only: src not writable (2.2)",
            "2.2",
            &[],
            two(ro_src(), ro_dst, vec![Step::Read { at: at(s, 0) }], move1),
        ),
        case(
            "dst PMD is a THP (2.3)",
            "2.3",
            &[Need::Thp],
            two(
                vma(0, 0, 1),
                huge(vma(1, 0, HUGE)),
                vec![write(s, 0, 1), write(d, 0, 2), reg_step(d)],
                mv(at(d, 0), at(s, 0), 1, 0),
            ),
        ),
        case(
            "src THP shared after fork (2.4)",
            "2.4",
            &[Need::Thp],
            with_subject(
                src_dst(
                    {
                        let mut v = huge(vma(0, 0, HUGE));
                        v.dontfork = false;
                        v
                    },
                    registered(huge(vma(1, 0, HUGE))),
                    vec![
                        write(s, 0, 1),
                        Step::Fork,
                        mv(at(d, 0), at(s, 0), HUGE, 0),
                        Step::ChildExit,
                    ],
                ),
                2,
            ),
        ),
        case(
            "swap entry shared after fork (2.3)",
            "2.3",
            &[Need::Swap],
            with_subject(
                src_dst(
                    {
                        let mut v = vma(0, 0, 1);
                        v.dontfork = false;
                        v
                    },
                    registered(vma(1, 0, 1)),
                    vec![
                        write(s, 0, 1),
                        Step::SwapOut { at: at(s, 0) },
                        Step::SwapOut { at: at(s, 0) },
                        Step::Fork,
                        mv(at(d, 0), at(s, 0), 1, 0),
                        Step::ChildExit,
                    ],
                ),
                4,
            ),
        ),
        case(
            "COPY into a populated dst",
            "COPY",
            &[],
            one(vec![
                Step::Copy {
                    dst: at(d, 0),
                    pages: 1,
                    tag: 5,
                },
                Step::Copy {
                    dst: at(d, 0),
                    pages: 1,
                    tag: 6,
                },
            ]),
        ),
        case(
            "COPY beyond the dst VMA",
            "COPY",
            &[],
            one(vec![Step::Copy {
                dst: at(d, 0),
                pages: 2,
                tag: 5,
            }]),
        ),
        case(
            "ZEROPAGE",
            "ZEROPAGE",
            &[],
            one(vec![Step::ZeroPage {
                dst: at(d, 0),
                pages: 1,
            }]),
        ),
        case(
            "ZEROPAGE over a guard region",
            "ZEROPAGE",
            &[Need::Guard],
            one(vec![
                Step::Guard {
                    at: at(d, 0),
                    pages: 1,
                },
                Step::ZeroPage {
                    dst: at(d, 0),
                    pages: 1,
                },
            ]),
        ),
        case(
            "COPY over a guard region",
            "COPY",
            &[Need::Guard],
            one(vec![
                Step::Guard {
                    at: at(d, 0),
                    pages: 1,
                },
                Step::Copy {
                    dst: at(d, 0),
                    pages: 1,
                    tag: 5,
                },
            ]),
        ),
    ]);
    cases
}

fn ro_src() -> VmaSpec {
    let mut v = vma(0, 0, 1);
    v.prot = PROT_READ;
    v
}
