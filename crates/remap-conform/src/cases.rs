//! The contract case by case: every row of `docs/move-contract.md`'s Appendix A and the errno paths of its
//! section 2, each run on this kernel and judged by the oracle under every row of the behaviour
//! table.
//!
//! Most cases are small [`Program`]s whose last step (or `subject` step) is the call the case is
//! about; every step is checked, so the state around the call is judged as well. A few need
//! more than a program can say (an event queued by another thread, a forked caller, a file
//! mapping, a second `UFFDIO_API`) and are written out by hand; their raw ioctls and stores act
//! on windows of their own (`unsafe` is allowed here for those calls only).

#![allow(unsafe_code)]

use std::os::fd::AsFd;
use std::time::Duration;

use remap_oracle::{
    Behaviour, Caller, Errno, Op, Outcome, Space, Vma, VmaKind, BEHAVIOUR_TABLE,
    MOVE_ALLOW_SRC_HOLES, PAGES_PER_PMD, PAGE_SIZE, PROT_READ, PROT_WRITE,
};
use uffd::{Features, RegisterMode, Uffd};

use crate::check::Checker;
use crate::exec::Harness;
use crate::program::{Loc, Program, Reg, Step, VmaSpec, OTHER, OURS};
use crate::sys::{self, Window};
use crate::{ConformError, Machine};

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

/// Runs every case.
///
/// # Errors
///
/// [`ConformError`] when the harness itself fails (not when a case disagrees).
pub fn run_all(h: &Harness, m: &Machine) -> Result<ConformReport, ConformError> {
    let mut results = Vec::new();
    for c in all_cases() {
        results.push(run_case(h, m, &c)?);
    }
    let mut rows_matched: Vec<&'static str> = BEHAVIOUR_TABLE.iter().map(|b| b.name).collect();
    let mut later = Vec::new();
    for r in results.iter().filter(|r| r.skipped.is_none()) {
        rows_matched.retain(|row| r.rows.contains(row));
        let own = m.behaviour.index();
        let matches_own = r.rows.contains(&m.behaviour.name);
        let matches_later = r
            .rows
            .iter()
            .any(|n| Behaviour::named(n).is_some_and(|b| b.index() > own));
        if !matches_own && matches_later {
            later.push(r.name);
        }
    }
    Ok(ConformReport {
        machine: m.clone(),
        cases: results,
        rows_matched,
        later_row_cases: later,
    })
}

fn missing_need(h: &Harness, m: &Machine, needs: &[Need]) -> Option<String> {
    let lacking: Vec<&str> = needs
        .iter()
        .filter(|n| match n {
            Need::Thp => !m.thp_usable(),
            Need::Swap => !m.swap,
            Need::Guard => !m.guard,
            Need::WpUnpopulated => !h.features.contains(Features::WP_UNPOPULATED),
            Need::Root => !m.root,
        })
        .map(|n| n.describe())
        .collect();
    (!lacking.is_empty()).then(|| format!("needs {}", lacking.join(", ")))
}

/// Re-runs of a program case that disagreed, before the disagreement counts.
const CASE_RETRIES: u32 = 2;

/// Runs one case. A program case that disagrees is re-run up to twice (asynchronous kernel
/// activity can change a page between steps); it agrees if a re-run agrees, and its `detail`
/// then keeps the first run's disagreement.
///
/// # Errors
///
/// [`ConformError`] when the harness fails.
pub fn run_case(h: &Harness, m: &Machine, c: &Case) -> Result<CaseResult, ConformError> {
    let mut result = CaseResult {
        name: c.name,
        spec: c.spec,
        kernel: None,
        expected: Vec::new(),
        agree: None,
        rows: Vec::new(),
        skipped: None,
        detail: None,
    };
    if let Some(why) = missing_need(h, m, &c.needs) {
        result.skipped = Some(why);
        return Ok(result);
    }
    match &c.body {
        Body::Program { program, subject } => {
            run_program_case(h, m, program, *subject, &mut result)?;
            // Asynchronous kernel work (khugepaged, compaction moving a page, reclaim) can change
            // a page between two steps; a disagreement counts only if it happens again.
            for retry in 1..=CASE_RETRIES {
                if result.agree != Some(false) {
                    break;
                }
                let first = result.detail.clone().unwrap_or_default();
                let mut again = CaseResult {
                    kernel: None,
                    expected: Vec::new(),
                    detail: None,
                    ..result.clone()
                };
                run_program_case(h, m, program, *subject, &mut again)?;
                if again.agree == Some(true) {
                    again.detail = Some(format!(
                        "agreed on retry {retry}; the first run disagreed: {first}"
                    ));
                }
                result = again;
            }
        }
        Body::Special(s) => run_special(h, m, *s, &mut result)?,
    }
    Ok(result)
}

fn run_program_case(
    h: &Harness,
    m: &Machine,
    prog: &Program,
    subject: usize,
    result: &mut CaseResult,
) -> Result<(), ConformError> {
    let mut run = h.setup(prog)?;
    let base = run.base();
    let mut checkers: Vec<(&'static Behaviour, Checker, Option<String>)> = BEHAVIOUR_TABLE
        .iter()
        .map(|b| {
            (
                b,
                Checker::new(prog.initial_space(base, m.env), b, None),
                None,
            )
        })
        .collect();
    let obs = run.observe()?;
    for (_, c, failed) in &mut checkers {
        if let Err(e) = c.check_initial(prog, &obs) {
            *failed = Some(format!("after set-up: {e}"));
        }
    }
    let own = m.behaviour.index();
    for (i, step) in prog.steps.iter().enumerate() {
        let op = prog.op(base, step);
        if let Some(why) = checkers[own].1.refuse(&op) {
            result.detail = Some(format!("step {i} not run: {why}"));
            continue;
        }
        if i == subject {
            result.expected = checkers[own]
                .1
                .predicted(&op)
                .iter()
                .map(ToString::to_string)
                .collect();
        }
        let outcome = run.exec(step);
        if i == subject {
            result.kernel = Some(outcome.to_string());
        }
        let obs = run.observe()?;
        for (_, c, failed) in &mut checkers {
            if failed.is_none() {
                if let Err(d) = c.step(prog, &op, outcome, &obs) {
                    *failed = Some(format!(
                        "step {i} ({}): kernel {}, oracle allows [{}]{}",
                        step.kind(),
                        d.observed,
                        d.predicted.join(", "),
                        d.state.map(|s| format!("; state: {s}")).unwrap_or_default()
                    ));
                }
            }
        }
    }
    result.rows = checkers
        .iter()
        .filter(|(_, _, f)| f.is_none())
        .map(|(b, _, _)| b.name)
        .collect();
    let own_failure = checkers[own].2.clone();
    result.agree = Some(own_failure.is_none() && result.kernel.is_some());
    if own_failure.is_some() {
        result.detail = own_failure;
    } else if result.kernel.is_none() {
        result
            .detail
            .get_or_insert_with(|| "the subject step did not run".into());
    }
    Ok(())
}

/// Judges a hand-written case's one outcome under every row: `predict(row)` gives the allowed
/// outcomes.
fn judge(
    m: &Machine,
    kernel: Outcome,
    result: &mut CaseResult,
    predict: impl Fn(&'static Behaviour) -> Vec<Outcome>,
) {
    result.kernel = Some(kernel.to_string());
    result.expected = predict(m.behaviour)
        .iter()
        .map(ToString::to_string)
        .collect();
    result.rows = BEHAVIOUR_TABLE
        .iter()
        .filter(|b| predict(b).iter().any(|o| kernel.agrees_with(o)))
        .map(|b| b.name)
        .collect();
    let agree = result.rows.contains(&m.behaviour.name);
    result.agree = Some(agree);
    if !agree {
        result.detail = Some(format!(
            "kernel {kernel}, oracle allows [{}]",
            result.expected.join(", ")
        ));
    }
}

fn raw_outcome(rc: Result<(), rustix::io::Errno>, field: i64) -> Outcome {
    let field = if field == sys::UNTOUCHED {
        remap_oracle::Field::Untouched
    } else {
        remap_oracle::Field::Value(field)
    };
    Outcome::Ioctl {
        errno: rc
            .err()
            .map(|e| Errno::from_raw(e.raw_os_error()).unwrap_or(Errno::Perm)),
        field,
    }
}

/// A window with a 1-page source at slot 0 (written with `tag`) and a 2·`pages`-page destination
/// at slot 1; returns the window, src and dst addresses.
fn small_pair(pages: usize) -> Result<(Window, usize, usize), ConformError> {
    let page = PAGE;
    let w = Window::reserve(8 << 20).map_err(ConformError::Setup)?;
    let rw = libc::PROT_READ | libc::PROT_WRITE;
    w.map(1 << 20, pages * page, rw, false)
        .map_err(ConformError::Setup)?;
    w.map(4 << 20, 2 * pages * page, rw, false)
        .map_err(ConformError::Setup)?;
    let (src, dst) = (w.base() + (1 << 20), w.base() + (4 << 20));
    for i in 0..pages {
        // SAFETY: a present-or-none private page of our window, not registered: a plain fault.
        unsafe { sys::write_u64(src + i * page, 0x77 + i as u64) };
    }
    Ok((w, src, dst))
}

fn oracle_pair(src: usize, dst: usize, pages: u64, reg: bool) -> Space {
    let mut d = Vma::anon(dst as u64, 2 * pages * P);
    if reg {
        d = d.registered(OURS, true, false);
    }
    let mut s = Space::new(
        Default::default(),
        vec![Vma::anon(src as u64, pages * P), d],
    );
    for i in 0..pages {
        s = s
            .predict(
                &Op::WriteTouch {
                    addr: src as u64 + i * P,
                    tag: 0x77 + i,
                },
                Behaviour::newest(),
            )
            .expect("modelled")
            .alternatives
            .pop()
            .expect("an alternative")
            .after;
    }
    s
}

fn predict_outcomes(space: &Space, op: &Op, b: &Behaviour) -> Vec<Outcome> {
    space
        .predict(op, b)
        .map(|p| p.outcomes())
        .unwrap_or_default()
}

fn run_special(
    h: &Harness,
    m: &Machine,
    s: Special,
    result: &mut CaseResult,
) -> Result<(), ConformError> {
    let page = PAGE;
    match s {
        Special::PendingEvents => {
            let uffd = Uffd::builder()
                .features(Features::EVENT_REMOVE)
                .non_blocking(true)
                .create()?;
            let pages = 4;
            let (_w, src, dst) = small_pair(pages)?;
            uffd.register(dst as *mut u8, 2 * pages * page, RegisterMode::MISSING)
                .map_err(ConformError::Register)?;
            let kernel = std::thread::scope(|scope| {
                // MADV_DONTNEED of the registered upper half queues a REMOVE event and blocks
                // until it is read.
                let upper = dst + pages * page;
                let remover = scope.spawn(move || sys::madvise(upper, pages * page, 4));
                let mut fds = [rustix::event::PollFd::new(
                    &uffd,
                    rustix::event::PollFlags::IN,
                )];
                let ts = rustix::event::Timespec {
                    tv_sec: 5,
                    tv_nsec: 0,
                };
                let ready = rustix::event::poll(&mut fds, Some(&ts)).unwrap_or(0) > 0;
                // SAFETY: both ranges are in our window.
                let (rc, f) = unsafe { sys::raw_move(uffd.as_fd(), dst, src, pages * page, 0) };
                let mut buf = uffd::EventBuffer::new(4);
                let deadline = std::time::Instant::now() + Duration::from_secs(5);
                while !remover.is_finished() && std::time::Instant::now() < deadline {
                    let _ = uffd.read_events(&mut buf);
                    buf.drain().for_each(drop);
                    std::thread::sleep(Duration::from_millis(1));
                }
                let _ = remover.join();
                ready.then(|| raw_outcome(rc, f))
            });
            let Some(kernel) = kernel else {
                result.skipped = Some("no REMOVE event was queued within 5 s".into());
                return Ok(());
            };
            let space = oracle_pair(src, dst, pages as u64, true)
                .predict(&Op::QueueEvent { uffd: OURS }, Behaviour::newest())
                .expect("modelled")
                .alternatives
                .remove(0)
                .after;
            let op = Op::Move {
                uffd: OURS,
                dst: dst as u64,
                src: src as u64,
                len: pages as u64 * P,
                mode: 0,
                caller: Caller::Owner,
            };
            judge(m, kernel, result, |b| predict_outcomes(&space, &op, b));
        }
        Special::ForkedChildCaller => {
            let (_w, src, dst) = small_pair(1)?;
            h.ours()
                .register(dst as *mut u8, 2 * page, RegisterMode::MISSING)
                .map_err(ConformError::Register)?;
            // SAFETY: both ranges are in our window; this process is single-threaded here.
            let (rc, f) = unsafe { sys::move_in_child(h.ours(), dst, src, page) }
                .map_err(ConformError::Setup)?;
            let space = oracle_pair(src, dst, 1, true);
            let op = Op::Move {
                uffd: OURS,
                dst: dst as u64,
                src: src as u64,
                len: P,
                mode: 0,
                caller: Caller::ForkedChild,
            };
            judge(m, raw_outcome(rc, f), result, |b| {
                predict_outcomes(&space, &op, b)
            });
            let _ = h.ours().unregister(dst as *mut u8, 2 * page);
        }
        Special::UserModeOnly => {
            let uffd = Uffd::builder().features(Features::MOVE).create()?;
            let (_w, src, dst) = small_pair(1)?;
            uffd.register(dst as *mut u8, 2 * page, RegisterMode::MISSING)
                .map_err(ConformError::Register)?;
            // SAFETY: both ranges are in our window.
            let (rc, f) = unsafe { sys::raw_move(uffd.as_fd(), dst, src, page, 0) };
            let space = oracle_pair(src, dst, 1, true);
            let op = Op::Move {
                uffd: OURS,
                dst: dst as u64,
                src: src as u64,
                len: P,
                mode: 0,
                caller: Caller::Owner,
            };
            judge(m, raw_outcome(rc, f), result, |b| {
                predict_outcomes(&space, &op, b)
            });
        }
        Special::SecondApi => {
            // Not a MOVE rule: `docs/move-contract.md` section 1.4, which the oracle does not model.
            let kernel = Outcome::Call(
                sys::second_api(h.ours())
                    .err()
                    .map(|e| Errno::from_raw(e.raw_os_error()).unwrap_or(Errno::Perm)),
            );
            judge(m, kernel, result, |_| {
                vec![Outcome::Call(Some(Errno::Inval))]
            });
        }
        Special::PrivateFileSrc => {
            let path = std::env::temp_dir().join(format!("remap-conform-{}", std::process::id()));
            std::fs::write(&path, vec![0u8; page]).map_err(ConformError::Setup)?;
            let file = std::fs::File::open(&path).map_err(ConformError::Setup);
            let _ = std::fs::remove_file(&path);
            let file = file?;
            let w = Window::reserve(8 << 20).map_err(ConformError::Setup)?;
            w.map_file(1 << 20, page, &file)
                .map_err(ConformError::Setup)?;
            w.map(4 << 20, page, libc::PROT_READ | libc::PROT_WRITE, false)
                .map_err(ConformError::Setup)?;
            let (src, dst) = (w.base() + (1 << 20), w.base() + (4 << 20));
            h.ours()
                .register(dst as *mut u8, page, RegisterMode::MISSING)
                .map_err(ConformError::Register)?;
            // SAFETY: both ranges are in our window.
            let (rc, f) = unsafe { sys::raw_move(h.ours(), dst, src, page, 0) };
            let space = Space::new(
                Default::default(),
                vec![
                    Vma::anon(src as u64, P).kind(VmaKind::PrivateFile),
                    Vma::anon(dst as u64, P).registered(OURS, true, false),
                ],
            );
            let op = Op::Move {
                uffd: OURS,
                dst: dst as u64,
                src: src as u64,
                len: P,
                mode: 0,
                caller: Caller::Owner,
            };
            judge(m, raw_outcome(rc, f), result, |b| {
                predict_outcomes(&space, &op, b)
            });
            let _ = h.ours().unregister(dst as *mut u8, page);
        }
    }
    Ok(())
}
