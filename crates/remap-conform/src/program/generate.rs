//! Programs from a seed: the generator ([`generate`]), its deterministic [`Rng`], what it may
//! use on this machine ([`GenConfig`]), and which steps the oracle can run ([`runnable`]).

use remap_oracle::{
    Environment, Op, Outcome, Signal, Space, ThpAdvice, PAGES_PER_PMD, PROT_EXEC, PROT_READ,
    PROT_WRITE,
};

use super::{Loc, Program, Reg, Step, VmaSpec, OTHER, OURS};

/// A small deterministic generator (SplitMix64): programs must be reproducible from a seed on
/// any build.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator for `seed`.
    pub fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x9e37_79b9_7f4a_7c15)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A value in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// True with probability `percent`/100.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// What the generator may use on this machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GenConfig {
    /// Swap is active: emit `SwapOut`.
    pub swap: bool,
    /// `MADV_GUARD_INSTALL` works: emit `Guard`.
    pub guard: bool,
    /// THP is usable: emit THP-sized VMAs, `Collapse` and `SplitPmd`.
    pub thp: bool,
    /// The userfaultfds have `WP_UNPOPULATED`: emit `WriteProtect` (uffd-wp markers).
    pub wp_markers: bool,
}

/// Pages per slot: each VMA gets its own 8 MiB slot, so VMAs never touch.
const SLOT_PAGES: u64 = 4 * PAGES_PER_PMD;

fn gen_vma(r: &mut Rng, slot: u64, cfg: &GenConfig) -> VmaSpec {
    let huge_sized = cfg.thp && r.chance(30);
    let (start, pages) = if huge_sized {
        let pmds = 1 + r.below(2);
        let start = if r.chance(85) { 0 } else { 1 + r.below(8) };
        (start, pmds * PAGES_PER_PMD)
    } else {
        let start = match r.below(4) {
            0 => PAGES_PER_PMD - 1 - r.below(4),
            1 => 0,
            _ => r.below(PAGES_PER_PMD),
        };
        (start, 1 + r.below(12))
    };
    let prot = match r.below(100) {
        0..=5 => PROT_READ,
        6..=8 => PROT_READ | PROT_WRITE | PROT_EXEC,
        _ => PROT_READ | PROT_WRITE,
    };
    let thp = match r.below(10) {
        0..=5 if huge_sized => ThpAdvice::Huge,
        0..=1 => ThpAdvice::Huge,
        2 => ThpAdvice::NoHuge,
        _ => ThpAdvice::Default,
    };
    let register = r.chance(45).then(|| Reg {
        uffd: if r.chance(90) { OURS } else { OTHER },
        missing: r.chance(85),
        wp: r.chance(15),
    });
    let register = register.map(|mut g| {
        if !g.missing && !g.wp {
            g.missing = true;
        }
        g
    });
    VmaSpec {
        offset: slot * SLOT_PAGES + PAGES_PER_PMD + start,
        pages,
        prot,
        shared: r.chance(5),
        mlocked: r.chance(5),
        thp,
        dontfork: r.chance(40),
        register,
    }
}

fn gen_loc(r: &mut Rng, prog: &Program, vma: usize) -> Loc {
    let pages = i64::try_from(prog.vmas[vma].pages).expect("i64");
    let page = match r.below(20) {
        0 => -1,
        1 => pages,
        _ => i64::try_from(r.below(prog.vmas[vma].pages)).expect("i64"),
    };
    Loc { vma, page }
}

fn pick_vma(r: &mut Rng, prog: &Program, pred: impl Fn(&VmaSpec) -> bool) -> usize {
    let ok: Vec<usize> = (0..prog.vmas.len())
        .filter(|i| pred(&prog.vmas[*i]))
        .collect();
    if ok.is_empty() {
        usize::try_from(r.below(prog.vmas.len() as u64)).expect("usize")
    } else {
        ok[usize::try_from(r.below(ok.len() as u64)).expect("usize")]
    }
}

fn gen_step(r: &mut Rng, prog: &Program, cfg: &GenConfig, tag: &mut u64) -> Step {
    let n = prog.vmas.len() as u64;
    let any = |r: &mut Rng| usize::try_from(r.below(n)).expect("usize");
    let mut next_tag = |count: u64| {
        let t = *tag;
        *tag += count.max(1);
        t
    };
    let registered = |v: &VmaSpec| v.register.is_some_and(|g| g.uffd == OURS);
    let source = |v: &VmaSpec| v.register.is_none();
    match r.below(100) {
        0..=27 => {
            let vma = pick_vma(r, prog, source);
            let at = gen_loc(r, prog, vma);
            Step::Write {
                at,
                tag: next_tag(1),
            }
        }
        28..=55 => {
            let d = if r.chance(85) {
                pick_vma(r, prog, registered)
            } else {
                any(r)
            };
            let s = if r.chance(10) {
                d
            } else {
                pick_vma(r, prog, source)
            };
            let (dv, sv) = (&prog.vmas[d], &prog.vmas[s]);
            let huge = dv.pages >= PAGES_PER_PMD && sv.pages >= PAGES_PER_PMD && r.chance(50);
            let (dst, src, pages) = if huge {
                let dp = if r.chance(80) { 0 } else { 1 };
                let sp = if r.chance(80) { 0 } else { 1 };
                let pages = if r.chance(70) {
                    PAGES_PER_PMD
                } else {
                    PAGES_PER_PMD / 2
                };
                (Loc { vma: d, page: dp }, Loc { vma: s, page: sp }, pages)
            } else {
                (gen_loc(r, prog, d), gen_loc(r, prog, s), 1 + r.below(6))
            };
            let mode = match r.below(20) {
                0..=7 => 0,
                8..=13 => remap_oracle::MOVE_ALLOW_SRC_HOLES,
                14..=16 => remap_oracle::MOVE_DONTWAKE,
                17..=18 => remap_oracle::MOVE_ALLOW_SRC_HOLES | remap_oracle::MOVE_DONTWAKE,
                _ => 1 << 2,
            };
            Step::Move {
                dst,
                src,
                pages,
                mode,
            }
        }
        56..=63 => {
            let vma = any(r);
            Step::Read {
                at: gen_loc(r, prog, vma),
            }
        }
        64..=71 => {
            let vma = any(r);
            let at = gen_loc(r, prog, vma);
            let pages = if r.chance(20) {
                prog.vmas[vma].pages
            } else {
                1 + r.below(3)
            };
            Step::DontNeed {
                at: Loc {
                    page: at.page.max(0),
                    ..at
                },
                pages,
            }
        }
        72..=76 => {
            let vma = pick_vma(r, prog, registered);
            let pages = 1 + r.below(3);
            Step::Copy {
                dst: gen_loc(r, prog, vma),
                pages,
                tag: next_tag(pages),
            }
        }
        77..=79 => {
            let vma = pick_vma(r, prog, registered);
            Step::ZeroPage {
                dst: gen_loc(r, prog, vma),
                pages: 1 + r.below(2),
            }
        }
        80..=82 => Step::Fork,
        83..=85 => Step::ChildExit,
        86..=88 if cfg.swap => {
            let vma = pick_vma(r, prog, source);
            Step::SwapOut {
                at: gen_loc(r, prog, vma),
            }
        }
        89..=91 if cfg.thp => {
            let vma = pick_vma(r, prog, |v| v.pages >= PAGES_PER_PMD);
            if r.chance(50) {
                Step::Collapse { vma, pmd: 0 }
            } else {
                Step::SplitPmd { vma, pmd: 0 }
            }
        }
        92..=95 => {
            let vma = any(r);
            if prog.vmas[vma].register.is_some() || r.chance(30) {
                Step::Unregister {
                    vma,
                    uffd: prog.vmas[vma].register.map_or(OURS, |g| g.uffd),
                }
            } else {
                Step::Register {
                    vma,
                    reg: Reg {
                        uffd: OURS,
                        missing: true,
                        wp: r.chance(20),
                    },
                }
            }
        }
        96..=97 if cfg.wp_markers => {
            let vma = pick_vma(r, prog, |v| {
                v.register.is_some_and(|g| g.uffd == OURS && g.wp)
            });
            let at = gen_loc(r, prog, vma);
            Step::WriteProtect {
                at: Loc {
                    page: at.page.max(0),
                    ..at
                },
                pages: 1 + r.below(2),
            }
        }
        96..=99 if cfg.guard => {
            let vma = pick_vma(r, prog, source);
            let at = gen_loc(r, prog, vma);
            Step::Guard {
                at: Loc {
                    page: at.page.max(0),
                    ..at
                },
                pages: 1,
            }
        }
        _ => {
            let vma = pick_vma(r, prog, source);
            Step::Write {
                at: gen_loc(r, prog, vma),
                tag: next_tag(1),
            }
        }
    }
}

/// Whether `step` can run in `space`: the oracle models it and no allowed outcome is a signal.
pub fn runnable(space: &Space, op: &Op) -> bool {
    let b = remap_oracle::Behaviour::newest();
    match space.predict(op, b) {
        Ok(p) => !p
            .outcomes()
            .iter()
            .any(|o| matches!(o, Outcome::Signal(Signal::Segv | Signal::Userfault))),
        Err(_) => false,
    }
}

/// The program of `seed`: 2-4 VMAs and 3-16 steps, each step one the oracle models from the
/// state the generator expects (it follows one allowed alternative; the runner re-checks).
pub fn generate(seed: u64, cfg: &GenConfig) -> Program {
    let mut r = Rng::new(seed);
    let n = 2 + r.below(3);
    let mut prog = Program {
        vmas: (0..n).map(|slot| gen_vma(&mut r, slot, cfg)).collect(),
        steps: Vec::new(),
    };
    // At least one plain private destination registered with our fd.
    if !prog
        .vmas
        .iter()
        .any(|v| v.register.is_some_and(|g| g.uffd == OURS))
    {
        prog.vmas[1].register = Some(Reg {
            uffd: OURS,
            missing: true,
            wp: false,
        });
    }
    let base = 0x7000_0000_0000;
    let mut shadow = prog.initial_space(base, Environment::default());
    let mut tag = (seed << 24) | 1;
    let len = 3 + r.below(14);
    let b = remap_oracle::Behaviour::newest();
    while (prog.steps.len() as u64) < len {
        let mut chosen = None;
        for _ in 0..8 {
            let step = gen_step(&mut r, &prog, cfg, &mut tag);
            let op = prog.op(base, &step);
            if runnable(&shadow, &op) {
                chosen = Some((step, op));
                break;
            }
        }
        let Some((step, op)) = chosen else { break };
        let p = shadow.predict(&op, b).expect("runnable");
        let k = usize::try_from(r.below(p.alternatives.len() as u64)).expect("usize");
        shadow = p.alternatives[k].after.clone();
        prog.steps.push(step);
    }
    prog
}
