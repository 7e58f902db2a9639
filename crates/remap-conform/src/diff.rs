//! Differential testing: run random programs on the kernel and through the [`Checker`], and
//! shrink each mismatch to a minimal program (a ddmin over the steps, then over the VMAs).

use std::time::Instant;

use crate::check::{Checker, Disagreement, Injection};
use crate::exec::Harness;
use crate::program::{generate, GenConfig, Program, Rng, Step};
use crate::{ConformError, Machine};

/// Where and how a program disagreed with the oracle.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Mismatch {
    /// The step's index (`None`: right after set-up).
    pub step: Option<usize>,
    /// The step's kind (`"move"`, ...), or `"setup"`.
    pub kind: String,
    /// The oracle's operation, with absolute addresses of that run.
    pub op: String,
    /// What differed.
    pub disagreement: Disagreement,
}

/// The result of one program.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProgramRun {
    /// Steps performed.
    pub steps_run: usize,
    /// Steps refused (the oracle does not model them in the state reached, or they would fault).
    pub skipped: usize,
    /// The first disagreement.
    pub mismatch: Option<Mismatch>,
}

/// Runs `prog` on the kernel, checking every step.
///
/// # Errors
///
/// A [`ConformError`] when the program cannot be set up or observed (not a disagreement).
pub fn run_program(
    h: &Harness,
    m: &Machine,
    prog: &Program,
    inject: Option<Injection>,
) -> Result<ProgramRun, ConformError> {
    let mut run = h.setup(prog)?;
    let base = run.base();
    let mut checker = Checker::new(prog.initial_space(base, m.env), m.behaviour, inject);
    let mut out = ProgramRun {
        steps_run: 0,
        skipped: 0,
        mismatch: None,
    };
    let obs = run.observe()?;
    if let Err(why) = checker.check_initial(prog, &obs) {
        out.mismatch = Some(Mismatch {
            step: None,
            kind: "setup".into(),
            op: String::new(),
            disagreement: Disagreement {
                predicted: Vec::new(),
                observed: String::new(),
                outcome_allowed: true,
                state: Some(why),
            },
        });
        return Ok(out);
    }
    for (i, step) in prog.steps.iter().enumerate() {
        let op = prog.op(base, step);
        if checker.refuse(&op).is_some() {
            out.skipped += 1;
            continue;
        }
        let outcome = run.exec(step);
        out.steps_run += 1;
        let obs = run.observe()?;
        if let Err(d) = checker.step(prog, &op, outcome, &obs) {
            out.mismatch = Some(Mismatch {
                step: Some(i),
                kind: step.kind().into(),
                op: format!("{op:?}"),
                disagreement: d,
            });
            return Ok(out);
        }
    }
    Ok(out)
}

/// Shrinks `prog` while it still disagrees at a step of the same kind as `kind`.
///
/// # Errors
///
/// As [`run_program`].
pub fn shrink(
    h: &Harness,
    m: &Machine,
    prog: &Program,
    kind: &str,
    inject: Option<Injection>,
) -> Result<Program, ConformError> {
    let fails = |p: &Program| -> Result<Option<usize>, ConformError> {
        let r = run_program(h, m, p, inject)?;
        Ok(r.mismatch
            .filter(|mm| mm.kind == kind)
            .map(|mm| mm.step.unwrap_or(0)))
    };
    let mut best = prog.clone();
    let Some(at) = fails(&best)? else {
        return Ok(best);
    };
    best.steps.truncate(at + 1);
    // ddmin over the steps.
    let mut n = 2usize;
    while best.steps.len() >= 2 {
        let len = best.steps.len();
        let chunk = len.div_ceil(n);
        let mut smaller = None;
        for i in 0..n {
            let (lo, hi) = (i * chunk, ((i + 1) * chunk).min(len));
            if lo >= hi {
                continue;
            }
            let mut trial = best.clone();
            trial.steps.drain(lo..hi);
            if let Some(at) = fails(&trial)? {
                trial.steps.truncate(at + 1);
                smaller = Some(trial);
                break;
            }
        }
        match smaller {
            Some(trial) => {
                best = trial;
                n = (n - 1).max(2);
            }
            None if n >= len => break,
            None => n = (n * 2).min(len),
        }
    }
    // Drop VMAs no step names, then plain-ify the flags of the rest, one at a time.
    let mut j = best.vmas.len();
    while j > 0 {
        j -= 1;
        if best.vmas.len() <= 1 || steps_use(&best.steps, j) {
            continue;
        }
        let mut trial = best.clone();
        trial.vmas.remove(j);
        for s in &mut trial.steps {
            renumber(s, j);
        }
        if fails(&trial)?.is_some() {
            best = trial;
        }
    }
    for j in 0..best.vmas.len() {
        let plain: [fn(&mut crate::program::VmaSpec); 4] = [
            |v| v.dontfork = false,
            |v| v.mlocked = false,
            |v| v.thp = remap_oracle::ThpAdvice::Default,
            |v| v.prot = remap_oracle::PROT_READ | remap_oracle::PROT_WRITE,
        ];
        for f in plain {
            let mut trial = best.clone();
            f(&mut trial.vmas[j]);
            if trial != best && fails(&trial)?.is_some() {
                best = trial;
            }
        }
    }
    Ok(best)
}

fn locs(s: &Step) -> Vec<usize> {
    match *s {
        Step::Move { dst, src, .. } | Step::MoveBytes { dst, src, .. } => vec![dst.vma, src.vma],
        Step::Copy { dst, .. } | Step::ZeroPage { dst, .. } => vec![dst.vma],
        Step::DontNeed { at, .. }
        | Step::Write { at, .. }
        | Step::Read { at }
        | Step::SwapOut { at }
        | Step::Guard { at, .. }
        | Step::WriteProtect { at, .. } => vec![at.vma],
        Step::Collapse { vma, .. }
        | Step::SplitPmd { vma, .. }
        | Step::Register { vma, .. }
        | Step::Unregister { vma, .. } => vec![vma],
        Step::Fork | Step::ChildExit => vec![],
    }
}

fn steps_use(steps: &[Step], vma: usize) -> bool {
    steps.iter().any(|s| locs(s).contains(&vma))
}

fn renumber(s: &mut Step, removed: usize) {
    let fix = |v: &mut usize| {
        if *v > removed {
            *v -= 1;
        }
    };
    match s {
        Step::Move { dst, src, .. } | Step::MoveBytes { dst, src, .. } => {
            fix(&mut dst.vma);
            fix(&mut src.vma);
        }
        Step::Copy { dst, .. } | Step::ZeroPage { dst, .. } => fix(&mut dst.vma),
        Step::DontNeed { at, .. }
        | Step::Write { at, .. }
        | Step::Read { at }
        | Step::SwapOut { at }
        | Step::Guard { at, .. }
        | Step::WriteProtect { at, .. } => fix(&mut at.vma),
        Step::Collapse { vma, .. }
        | Step::SplitPmd { vma, .. }
        | Step::Register { vma, .. }
        | Step::Unregister { vma, .. } => fix(vma),
        Step::Fork | Step::ChildExit => {}
    }
}

/// Options of a differential run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiffConfig {
    /// The master seed.
    pub seed: u64,
    /// How many programs.
    pub programs: u64,
    /// Shrink mismatches.
    pub shrink: bool,
    /// Replays of a mismatching program to tell a reproducible mismatch from a flaky one.
    pub replays: u32,
    /// A deliberate oracle bug.
    #[doc(hidden)]
    pub inject: Option<Injection>,
}

impl Default for DiffConfig {
    fn default() -> Self {
        DiffConfig {
            seed: 1,
            programs: 10_000,
            shrink: true,
            replays: 2,
            inject: None,
        }
    }
}

/// One mismatching program.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct MismatchReport {
    /// The program's index in the run.
    pub index: u64,
    /// The program's own seed.
    pub program_seed: u64,
    /// The program as generated.
    pub program: Program,
    /// Its mismatch.
    pub mismatch: Mismatch,
    /// How many of the replays mismatched again.
    pub reproduced: u32,
    /// How many replays were run.
    pub replays: u32,
    /// The shrunk program (when shrinking ran and the mismatch reproduces).
    pub shrunk: Option<Program>,
    /// The shrunk program's mismatch.
    pub shrunk_mismatch: Option<Mismatch>,
}

/// The result of a differential run.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct DiffReport {
    /// The master seed.
    pub seed: u64,
    /// Programs run.
    pub programs: u64,
    /// Steps performed on the kernel.
    pub steps_run: u64,
    /// Steps refused.
    pub steps_skipped: u64,
    /// Reproducible mismatches.
    pub mismatches: Vec<MismatchReport>,
    /// Mismatches that did not reproduce on replay (asynchronous kernel activity: khugepaged,
    /// compaction, reclaim).
    pub flaky: Vec<MismatchReport>,
    /// Wall time in seconds.
    pub elapsed_s: f64,
}

/// The seed of program `index` of a run with master seed `seed`.
pub fn program_seed(seed: u64, index: u64) -> u64 {
    Rng::new(seed.wrapping_mul(0x2545_f491_4f6c_dd1d) ^ index).next_u64()
}

/// The generator's configuration for this machine.
pub fn gen_config(h: &Harness, m: &Machine) -> GenConfig {
    GenConfig {
        swap: m.swap,
        guard: m.guard,
        thp: m.thp_usable(),
        wp_markers: h.features.contains(uffd::Features::WP_UNPOPULATED),
    }
}

/// Runs `cfg.programs` programs; calls `progress` after each with the index done.
///
/// # Errors
///
/// As [`run_program`].
pub fn differential(
    h: &Harness,
    m: &Machine,
    cfg: &DiffConfig,
    mut progress: impl FnMut(u64, &DiffReport),
) -> Result<DiffReport, ConformError> {
    let start = Instant::now();
    let gen = gen_config(h, m);
    let mut report = DiffReport {
        seed: cfg.seed,
        programs: 0,
        steps_run: 0,
        steps_skipped: 0,
        mismatches: Vec::new(),
        flaky: Vec::new(),
        elapsed_s: 0.0,
    };
    for index in 0..cfg.programs {
        let program_seed = program_seed(cfg.seed, index);
        let prog = generate(program_seed, &gen);
        let r = run_program(h, m, &prog, cfg.inject)?;
        report.programs += 1;
        report.steps_run += r.steps_run as u64;
        report.steps_skipped += r.skipped as u64;
        if let Some(mismatch) = r.mismatch {
            tracing::warn!(index, program_seed, kind = %mismatch.kind, "mismatch");
            let mut reproduced = 0;
            for _ in 0..cfg.replays {
                let again = run_program(h, m, &prog, cfg.inject)?;
                if again.mismatch.is_some_and(|mm| mm.kind == mismatch.kind) {
                    reproduced += 1;
                }
            }
            let mut rep = MismatchReport {
                index,
                program_seed,
                program: prog.clone(),
                mismatch: mismatch.clone(),
                reproduced,
                replays: cfg.replays,
                shrunk: None,
                shrunk_mismatch: None,
            };
            if reproduced == 0 && cfg.replays > 0 {
                report.flaky.push(rep);
            } else {
                if cfg.shrink && report.mismatches.len() < 20 {
                    let small = shrink(h, m, &prog, &mismatch.kind, cfg.inject)?;
                    rep.shrunk_mismatch = run_program(h, m, &small, cfg.inject)?.mismatch;
                    rep.shrunk = Some(small);
                }
                report.mismatches.push(rep);
            }
        }
        report.elapsed_s = start.elapsed().as_secs_f64();
        progress(index + 1, &report);
    }
    report.elapsed_s = start.elapsed().as_secs_f64();
    Ok(report)
}
