//! The step functions: one call executes one atomic step of one thread.
//!
//! Every function here is deterministic and pure over [`State`]: the explorer, the shuttle harness
//! and the trace replayer all call [`step`]. A step that would block (a sleeping lock that is held)
//! returns `false`; the caller then discards the (possibly touched) copy of the state.
//!
//! This file holds the per-step context, the initial state and the dispatch; each kind of thread
//! has a file of its own (`walker`, `mover`, `munmap`, `fork`, `gup`), and `locks` has the lock
//! primitives, `put_anon_vma` and the checks they share.

use crate::config::{Config, Protocol, WalkerMode};
use crate::invariant::{Invariant, Violation};
use crate::state::*;

mod fork;
mod gup;
mod locks;
mod mover;
mod munmap;
mod walker;

use fork::fork_step;
use gup::gup_step;
use locks::global_checks;
use mover::mover_step;
use munmap::munmap_step;
use walker::walker_step;

/// Per-step context: the label of the step (only built when `record` is set) and violations.
#[derive(Debug, Default)]
pub struct Ctx {
    /// Build human-readable labels (trace replay); off while exploring.
    pub record: bool,
    /// Label of the last step, e.g. `S5 down_read_trylock(root X) -> ok`.
    pub label: String,
    /// Violations found by the last step.
    pub violations: Vec<Violation>,
}

impl Ctx {
    fn say(&mut self, f: impl FnOnce() -> String) {
        if self.record {
            self.label = f();
        }
    }

    fn violate(&mut self, invariant: Invariant, message: impl FnOnce() -> String) {
        self.violations.push(Violation {
            invariant,
            message: message(),
        });
    }
}

fn bit(t: usize) -> u8 {
    1 << t
}

fn t8(t: usize) -> u8 {
    u8::try_from(t).expect("fewer than 8 threads")
}

fn ix(slot: u8) -> usize {
    usize::from(slot)
}

/// `folio->mapping` as a label: the anon_vma slot with the `PAGE_MAPPING_ANON` bit, or NULL.
fn mapping_text(m: Option<u8>) -> String {
    match m {
        Some(s) => format!("{}|ANON", slot_name(s)),
        None => "NULL".into(),
    }
}

/// Builds the initial state of `cfg`: F mapped in S (anon_vma X, own root), D empty (Y, own root),
/// R' an unrelated live root.
pub fn initial_state(cfg: &Config) -> State {
    let p = cfg.protocol();
    let av = |root: u8, tree: u8| AnonVma {
        live: true,
        gen: 0,
        root,
        refcount: 1,
        tree,
        rwsem: Rwsem::default(),
    };
    let mut threads = Vec::new();
    let mut roles = Vec::new();
    let walker_pc = if p.cache_pgoff {
        WalkerPc::CachePgoff
    } else {
        walker_entry(&p, cfg.walker)
    };
    threads.push(Thread::Walker(Walker {
        pc: walker_pc,
        av: 0,
        gen: 0,
        root: 0,
        locked: None,
        has_ref: false,
        folio_locked: false,
        cached: None,
        pgoff: 0,
        pgoff_half: false,
        walk_epoch: 0,
        ptl_busy_at_start: false,
        visited: 0,
        budget: None,
        put: None,
    }));
    roles.push(Role::Walker);
    let mover = |src: u8, dst: u8, batch: bool| {
        Thread::Mover(Mover {
            pc: MoverPc::MmapLock,
            src,
            dst,
            av: None,
            locked: None,
            folio_locked: false,
            has_ref: false,
            batch,
            in_ptl: false,
            snap: None,
            err: None,
            result: None,
            put: None,
        })
    };
    threads.push(mover(VMA_S, VMA_D, cfg.batched && !p.mover_anon_lock));
    roles.push(Role::Mover);
    if cfg.munmap {
        threads.push(Thread::Munmap(Munmap {
            pc: MunmapPc::MmapWriteLock,
            locked: None,
            put: None,
        }));
        roles.push(Role::Munmap);
    }
    if cfg.aba {
        threads.push(mover(VMA_D, VMA_S, false));
        roles.push(Role::MoverBack);
    }
    if cfg.gup {
        threads.push(Thread::Gup(false));
        roles.push(Role::Gup);
    }
    if cfg.fork {
        threads.push(Thread::Fork(Fork {
            pc: ForkPc::MmapWriteLock,
            copied: false,
        }));
        roles.push(Role::Fork);
    }
    State {
        folio: Folio {
            lock: None,
            mapping: Some(SLOT_X),
            index: 0x10,
            mapcount: 1,
            // The mapping's reference, plus the walker's (reclaim's isolate_lru_folios,
            // page_idle's and DAMON's folio_try_get) unless a mutation drops it.
            refcount: 1 + i8::from(p.walker_folio_ref),
            pinned: false,
            exclusive: true,
            half_moved: false,
        },
        av: [
            av(SLOT_X, 1 << VMA_S),
            av(SLOT_Y, 1 << VMA_D),
            av(SLOT_R, 0),
            AnonVma {
                live: false,
                refcount: 0,
                ..av(SLOT_Z, 0)
            },
        ],
        vma: [
            Vma {
                present: true,
                anon_vma: SLOT_X,
                start: 0x10,
                pgoff: 0x10,
                pte: true,
                ptl: None,
            },
            Vma {
                present: true,
                anon_vma: SLOT_Y,
                start: 0x20,
                pgoff: 0x20,
                pte: false,
                ptl: None,
            },
            Vma {
                present: false,
                anon_vma: SLOT_Z,
                start: 0x20,
                pgoff: 0x20,
                pte: false,
                ptl: None,
            },
        ],
        mm: 0,
        threads,
        roles,
        last: u8::MAX,
        preemptions: 0,
        ptl_epoch: 0,
    }
}

/// Runs one step of thread `tid`. Returns `false` when the thread is blocked (or done).
pub fn step(st: &mut State, tid: usize, cfg: &Config, ctx: &mut Ctx) -> bool {
    let p = cfg.protocol();
    let ptes_before = ptl_view(st);
    let ran = match st.threads[tid] {
        Thread::Walker(w) => walker_step(st, tid, w, &p, cfg, ctx),
        Thread::Mover(m) => mover_step(st, tid, m, &p, ctx),
        Thread::Munmap(c) => munmap_step(st, tid, c, cfg.reuse, ctx),
        Thread::Gup(done) => !done && gup_step(st, tid, ctx),
        Thread::Fork(k) => fork_step(st, tid, k, ctx),
    };
    if ran {
        if st.roles[tid] != Role::Walker && ptl_view(st) != ptes_before {
            st.ptl_epoch = st.ptl_epoch.wrapping_add(1);
        }
        global_checks(st, ctx);
    }
    ran
}

/// The PTEs and PTL holders of every VMA (what a page-table-lock section changes).
fn ptl_view(st: &State) -> [(bool, Option<u8>); NVMA] {
    let mut v = [(false, None); NVMA];
    for (o, vma) in v.iter_mut().zip(st.vma.iter()) {
        *o = (vma.pte, vma.ptl);
    }
    v
}

/// Another thread than `tid` holds a page-table lock.
fn ptl_held_by_other(st: &State, tid: usize) -> bool {
    st.vma
        .iter()
        .any(|v| v.ptl.is_some_and(|h| usize::from(h) != tid))
}

/// The walker's first step after the optional pgoff caching: the folio lock when the walker takes
/// one (`folio_lock` for a migration-style walker, `folio_trylock` in V3), else S1.
fn walker_entry(_p: &Protocol, mode: WalkerMode) -> WalkerPc {
    if mode == WalkerMode::FolioLocked {
        WalkerPc::FolioLock
    } else {
        WalkerPc::Preamble
    }
}

/// What thread `tid` waits for when its next step cannot run, e.g.
/// `"folio_lock(F), held by A"`; `None` when it can run or has finished.
///
/// The explorer uses it to describe a deadlock.
pub fn blocked_on(st: &State, tid: usize, cfg: &Config) -> Option<String> {
    if st.threads[tid].done() || step(&mut st.clone(), tid, cfg, &mut Ctx::default()) {
        return None;
    }
    let holder = |o: Option<u8>| match o {
        Some(t) => format!("held by {}", thread_name(st.roles[usize::from(t)])),
        None => "free".to_string(),
    };
    let rwsem = |slot: u8| {
        let r = &st.av[ix(slot)].rwsem;
        let mut who: Vec<&str> = (0..st.roles.len())
            .filter(|&t| r.readers & bit(t) != 0)
            .map(|t| thread_name(st.roles[t]))
            .collect();
        let mode = if let Some(w) = r.writer {
            who = vec![thread_name(st.roles[usize::from(w)])];
            "write-held"
        } else {
            "read-held"
        };
        format!(
            "rwsem of root {}, {mode} by {}",
            slot_name(slot),
            if who.is_empty() {
                "nobody".to_string()
            } else {
                who.join(",")
            }
        )
    };
    let folio = || format!("folio_lock(F), {}", holder(st.folio.lock));
    let ptl = |v: u8| format!("PTL of {}, {}", vma_name(v), holder(st.vma[ix(v)].ptl));
    let mmap = || {
        format!(
            "mmap_lock, {}",
            match st.mm {
                -1 => "write-held".to_string(),
                n => format!("read-held x{n}"),
            }
        )
    };
    let put = |p: Option<(u8, PutPc)>| p.map(|(s, _)| rwsem(st.av[ix(s)].root));
    let what = match st.threads[tid] {
        Thread::Walker(w) => put(w.put).unwrap_or_else(|| match w.pc {
            WalkerPc::FolioLock => folio(),
            WalkerPc::S11 => rwsem(st.av[ix(w.av)].root),
            WalkerPc::Walk(j) | WalkerPc::WalkLocked(j) => ptl(j),
            pc => format!("{pc:?}"),
        }),
        Thread::Mover(m) => put(m.put).unwrap_or_else(|| match m.pc {
            MoverPc::MmapLock => mmap(),
            MoverPc::FolioLock => folio(),
            MoverPc::AnonLockWrite | MoverPc::AnonLockSleep => {
                rwsem(st.av[ix(m.av.unwrap_or(0))].root)
            }
            MoverPc::FolioLockSleep => folio(),
            MoverPc::SrcFolioTrylock => ptl(m.src),
            MoverPc::ReadPtes | MoverPc::DoublePtLock => {
                let busy = if st.vma[ix(m.src)].ptl.is_some() {
                    m.src
                } else {
                    m.dst
                };
                ptl(busy)
            }
            MoverPc::DstLock => ptl(m.dst),
            pc => format!("{pc:?}"),
        }),
        Thread::Munmap(c) => put(c.put).unwrap_or_else(|| match c.pc {
            MunmapPc::MmapWriteLock => mmap(),
            MunmapPc::Zap => ptl(VMA_S),
            MunmapPc::UnlinkLock => rwsem(st.av[ix(st.vma[ix(VMA_S)].anon_vma)].root),
            pc => format!("{pc:?}"),
        }),
        Thread::Gup(_) => "nothing".to_string(),
        Thread::Fork(k) => match k.pc {
            ForkPc::MmapWriteLock => mmap(),
            ForkPc::AnonVmaClone | ForkPc::AnonVmaAlloc => rwsem(SLOT_Y),
            ForkPc::CopyPte | ForkPc::ParentZap => ptl(VMA_D),
            ForkPc::CowFault => ptl(VMA_DC),
            pc => format!("{pc:?}"),
        },
    };
    Some(what)
}

/// Whether any thread can take a step (used for deadlock detection).
pub fn any_enabled(st: &State, cfg: &Config) -> bool {
    (0..st.threads.len()).any(|t| {
        let mut s = st.clone();
        step(&mut s, t, cfg, &mut Ctx::default())
    })
}

#[cfg(test)]
mod tests;
