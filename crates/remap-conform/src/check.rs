//! Judging the kernel: the oracle's allowed states are followed like a nondeterministic
//! automaton. After each step, every candidate state is advanced by every alternative the
//! oracle allows; the alternatives that agree with the kernel's outcome and with the observed
//! state survive. No survivor is a mismatch.

use std::collections::BTreeMap;

use remap_oracle::{Behaviour, Errno, Field, Folio, Op, Outcome, Page, Signal, Space};

use crate::exec::{Content, Observation, Seen, SeenPresent};
use crate::program::Program;

/// The most candidate states followed at once (beyond, the oldest alternatives are dropped).
const MAX_CANDIDATES: usize = 64;

/// A deliberate oracle bug, for showing that a wrong oracle is caught and shrunk.
#[doc(hidden)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum Injection {
    /// The oracle predicts ENOENT wherever MOVE really gives EEXIST.
    #[cfg_attr(feature = "clap", value(name = "exist-as-noent"))]
    ExistAsNoEnt,
}

impl Injection {
    fn apply(self, op: &Op, outcome: Outcome) -> Outcome {
        match (self, op, outcome) {
            (
                Injection::ExistAsNoEnt,
                Op::Move { .. },
                Outcome::Ioctl {
                    errno: Some(Errno::Exist),
                    ..
                },
            ) => Outcome::failed(Errno::NoEnt),
            _ => outcome,
        }
    }
}

#[derive(Debug, Clone)]
struct Candidate {
    space: Space,
    /// Abstract frame -> PFN, for the frames seen so far.
    frames: BTreeMap<u64, u64>,
}

/// Why the kernel disagreed with the oracle at one step.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Disagreement {
    /// The outcomes the oracle allowed.
    pub predicted: Vec<String>,
    /// What the kernel returned.
    pub observed: String,
    /// Whether the outcome was allowed (then the state differed).
    pub outcome_allowed: bool,
    /// The first state difference, when the outcome was allowed.
    pub state: Option<String>,
}

/// Follows one program's allowed states.
#[derive(Debug, Clone)]
pub struct Checker {
    behaviour: &'static Behaviour,
    candidates: Vec<Candidate>,
    inject: Option<Injection>,
}

impl Checker {
    /// Starts from `space` (the state after set-up) for kernel behaviour `behaviour`.
    pub fn new(space: Space, behaviour: &'static Behaviour, inject: Option<Injection>) -> Checker {
        Checker {
            behaviour,
            candidates: vec![Candidate {
                space,
                frames: BTreeMap::new(),
            }],
            inject,
        }
    }

    /// The candidate states (for reports).
    pub fn states(&self) -> impl Iterator<Item = &Space> {
        self.candidates.iter().map(|c| &c.space)
    }

    /// Why `op` must not be performed now, if it must not: some candidate state predicts a
    /// signal or a userfault, or the oracle does not model it.
    pub fn refuse(&self, op: &Op) -> Option<String> {
        for c in &self.candidates {
            match c.space.predict(op, self.behaviour) {
                Err(u) => return Some(u.to_string()),
                Ok(p) => {
                    for o in p.outcomes() {
                        if let Outcome::Signal(s) = o {
                            return Some(match s {
                                Signal::Segv => "would raise SIGSEGV".into(),
                                Signal::Userfault => "would raise a userfault".into(),
                            });
                        }
                    }
                }
            }
        }
        None
    }

    /// The outcomes the oracle allows for `op` now.
    pub fn predicted(&self, op: &Op) -> Vec<Outcome> {
        let mut out: Vec<Outcome> = Vec::new();
        for c in &self.candidates {
            if let Ok(p) = c.space.predict(op, self.behaviour) {
                for a in &p.alternatives {
                    let o = self.inject.map_or(a.outcome, |i| i.apply(op, a.outcome));
                    if !out.contains(&o) {
                        out.push(o);
                    }
                }
            }
        }
        out
    }

    /// The first observation, right after set-up.
    ///
    /// # Errors
    ///
    /// The difference, when the set-up state is not what the oracle expects.
    pub fn check_initial(&mut self, prog: &Program, obs: &Observation) -> Result<(), String> {
        let c = &mut self.candidates[0];
        c.frames = compare(prog, &c.space, obs, &c.frames)?;
        Ok(())
    }

    /// Advances by `op`, which the kernel answered with `observed`, leaving `obs`.
    ///
    /// # Errors
    ///
    /// A [`Disagreement`] when no allowed alternative matches.
    pub fn step(
        &mut self,
        prog: &Program,
        op: &Op,
        observed: Outcome,
        obs: &Observation,
    ) -> Result<(), Disagreement> {
        let mut next: Vec<Candidate> = Vec::new();
        let mut predicted: Vec<Outcome> = Vec::new();
        let mut first_diff = None;
        let mut allowed = false;
        for c in &self.candidates {
            let Ok(p) = c.space.predict(op, self.behaviour) else {
                continue;
            };
            for a in p.alternatives {
                let o = self.inject.map_or(a.outcome, |i| i.apply(op, a.outcome));
                if !predicted.contains(&o) {
                    predicted.push(o);
                }
                if !observed.agrees_with(&o) {
                    continue;
                }
                allowed = true;
                match compare(prog, &a.after, obs, &c.frames) {
                    Ok(frames) => {
                        if !next.iter().any(|n| n.space == a.after) {
                            next.push(Candidate {
                                space: a.after,
                                frames,
                            });
                        }
                    }
                    Err(d) => {
                        first_diff.get_or_insert(d);
                    }
                }
            }
        }
        if next.is_empty() {
            return Err(Disagreement {
                predicted: predicted.iter().map(ToString::to_string).collect(),
                observed: observed.to_string(),
                outcome_allowed: allowed,
                state: first_diff,
            });
        }
        next.truncate(MAX_CANDIDATES);
        self.candidates = next;
        Ok(())
    }
}

/// Compares the oracle's `space` with the observation; returns the frame bindings extended by
/// this observation.
///
/// # Errors
///
/// The first difference, in words.
pub fn compare(
    prog: &Program,
    space: &Space,
    obs: &Observation,
    frames: &BTreeMap<u64, u64>,
) -> Result<BTreeMap<u64, u64>, String> {
    let mut bound: BTreeMap<u64, u64> = BTreeMap::new();
    let mut by_pfn: BTreeMap<u64, u64> = BTreeMap::new();
    for (vi, (v, seen)) in space.vmas.iter().zip(&obs.vmas).enumerate() {
        if !seen.intact {
            return Err(format!("vma {vi}: no longer one VMA in smaps"));
        }
        if v.anon_huge_bytes() != seen.anon_huge {
            return Err(format!(
                "vma {vi}: AnonHugePages {} kB, the oracle expects {} kB",
                seen.anon_huge / 1024,
                v.anon_huge_bytes() / 1024
            ));
        }
        let private = !prog.vmas[vi].shared;
        for (i, (page, s)) in v.pages.iter().zip(&seen.pages).enumerate() {
            let at = || format!("vma {vi} page {i}");
            let bad = |what: &str| {
                Err(format!(
                    "{}: {what}; the oracle has {page:?}, the kernel shows {s:?}",
                    at()
                ))
            };
            match (page, s) {
                (Page::None, Seen::Absent) => {}
                (Page::WpMarker, Seen::WpMarker) => {}
                // Kernels before 6.15 show a guard region as a plain swap entry.
                (Page::Guard, Seen::Guard | Seen::Swapped) => {}
                (Page::Swapped { .. }, Seen::Swapped) => {}
                (Page::Zero | Page::HugeZero, Seen::Present(p)) => {
                    if p.content != Content::Zero {
                        return bad("a zero page with contents");
                    }
                    if p.zero == Some(false) {
                        return bad("not the zero page");
                    }
                    if p.exclusive {
                        return bad("the zero page marked exclusive");
                    }
                }
                (Page::Present(q), Seen::Present(p)) => {
                    let want = if q.tag == 0 {
                        Content::Zero
                    } else {
                        Content::Tag(q.tag)
                    };
                    if p.content != want {
                        return bad("wrong contents");
                    }
                    if p.zero == Some(true) {
                        return bad("the zero page where data should be");
                    }
                    if private {
                        if let Err(w) = check_present_bits(q, p) {
                            return bad(w);
                        }
                        if p.pfn != 0 && q.frame != 0 {
                            if let Some(old) = frames.get(&q.frame) {
                                if *old != p.pfn {
                                    return bad(&format!(
                                        "moved to another frame (PFN {old:#x} before)"
                                    ));
                                }
                            }
                            if let Some(other) = by_pfn.insert(p.pfn, q.frame) {
                                if other != q.frame {
                                    return bad("two pages share one frame");
                                }
                            }
                            bound.insert(q.frame, p.pfn);
                        }
                    }
                }
                _ => return bad("different kind of page"),
            }
        }
    }
    Ok(bound)
}

fn check_present_bits(q: &remap_oracle::Present, p: &SeenPresent) -> Result<(), &'static str> {
    if p.exclusive == q.shared {
        return Err(if q.shared {
            "exclusive, but a live child maps it"
        } else {
            "not exclusive"
        });
    }
    if let Some(large) = p.large {
        if large != matches!(q.folio, Folio::Large { .. }) {
            return Err(if large {
                "part of a large folio"
            } else {
                "a small folio"
            });
        }
    }
    Ok(())
}

/// Whether `o` is an ioctl outcome whose field was left untouched.
pub fn untouched(o: &Outcome) -> bool {
    matches!(
        o,
        Outcome::Ioctl {
            field: Field::Untouched,
            ..
        }
    )
}
