//! The step functions: one call executes one atomic step of one thread.
//!
//! Every function here is deterministic and pure over [`State`]: the explorer, the shuttle harness
//! and the trace replayer all call [`step`]. A step that would block (a sleeping lock that is held)
//! returns `false`; the caller then discards the (possibly touched) copy of the state.

use crate::config::{Completeness, Config, Protocol, WalkerMode};
use crate::invariant::{Invariant, Violation};
use crate::state::*;

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

// ---------------------------------------------------------------------------------------------
// Locks and checks shared by the threads.

/// Classes of the documented lock order (top of mm/rmap.c), mmap_lock aside.
const CLASS_FOLIO: u8 = 1;
const CLASS_ANON: u8 = 2;
const CLASS_PTL: u8 = 3;

/// Invariant 9: a blocking acquisition of `class` while holding a lock of a later class.
fn verify_lock_order(st: &State, tid: usize, class: u8, what: &str, ctx: &mut Ctx) {
    let me = t8(tid);
    let mut held = 0;
    if st.folio.lock == Some(me) {
        held = CLASS_FOLIO;
    }
    if st
        .av
        .iter()
        .any(|a| a.rwsem.readers & bit(tid) != 0 || a.rwsem.writer == Some(me))
    {
        held = CLASS_ANON;
    }
    if st.vma.iter().any(|v| v.ptl == Some(me)) {
        held = CLASS_PTL;
    }
    if held > class {
        let what = what.to_string();
        ctx.violate(Invariant::LockOrderNoDeadlock, || {
            format!("{what} while holding a lock that the mm/rmap.c order puts after it")
        });
    }
}

fn try_read(st: &mut State, slot: u8, tid: usize) -> bool {
    let r = &mut st.av[ix(slot)].rwsem;
    if r.count < 0 {
        return false;
    }
    r.count += 1;
    r.readers |= bit(tid);
    true
}

fn try_write(st: &mut State, slot: u8, tid: usize) -> bool {
    let r = &mut st.av[ix(slot)].rwsem;
    if r.count != 0 {
        return false;
    }
    r.count = -1;
    r.writer = Some(t8(tid));
    true
}

/// `up_read`; invariant 1 when this thread does not hold it for reading.
fn up_read(st: &mut State, slot: u8, tid: usize, ctx: &mut Ctx, who: &str) {
    let r = &mut st.av[ix(slot)].rwsem;
    if r.readers & bit(tid) == 0 {
        let who = who.to_string();
        ctx.violate(Invariant::AnonVmaUnlockMatchesLock, || {
            format!(
                "{who}: up_read on the rwsem of slot {} which this thread does not hold for reading",
                slot_name(slot)
            )
        });
    }
    if r.count > 0 {
        r.count -= 1;
    }
    r.readers &= !bit(tid);
}

/// `up_write`; invariant 1 when this thread does not hold it for writing.
fn up_write(st: &mut State, slot: u8, tid: usize, ctx: &mut Ctx, who: &str) {
    let r = &mut st.av[ix(slot)].rwsem;
    if r.writer != Some(t8(tid)) {
        let who = who.to_string();
        ctx.violate(Invariant::AnonVmaUnlockMatchesLock, || {
            format!(
                "{who}: up_write on the rwsem of slot {} which this thread does not hold for writing",
                slot_name(slot)
            )
        });
    }
    r.count = 0;
    r.writer = None;
}

fn holds_read(st: &State, slot: u8, tid: usize) -> bool {
    st.av[ix(slot)].rwsem.readers & bit(tid) != 0
}

fn holds_write(st: &State, slot: u8, tid: usize) -> bool {
    st.av[ix(slot)].rwsem.writer == Some(t8(tid))
}

/// Checks after every step: invariants 5 (PTE count) and 7 (no negative refcount).
fn global_checks(st: &State, ctx: &mut Ctx) {
    verify_move_present_pte_atomic(st, ctx);
    for (i, a) in st.av.iter().enumerate() {
        if a.refcount < 0 {
            ctx.violate(Invariant::PutAnonVmaBalanced, || {
                format!(
                    "refcount of {} is {}",
                    slot_name(u8::try_from(i).unwrap_or(0)),
                    a.refcount
                )
            });
        }
    }
}

/// Invariant 5 (`move_present_pte`): in every state where no page-table lock of S or D is held
/// (so any thread could lock them and look), the PTEs that map F match `folio_mapped`'s count
/// (0 or 1, 2 while a fork child shares F). The check reads the real PTL holders, not the mover's idea of its section.
fn verify_move_present_pte_atomic(st: &State, ctx: &mut Ctx) {
    if st.vma.iter().any(|v| v.ptl.is_some()) {
        return;
    }
    let ptes = st.vma.iter().filter(|v| v.pte).count();
    let mc = st.folio.mapcount;
    if usize::try_from(mc).ok() != Some(ptes) {
        ctx.violate(Invariant::MovePresentPteAtomic, || {
            format!("{ptes} PTE(s) map F but folio mapcount is {mc}, and no PTL hides the PTEs")
        });
    }
}

/// One step of `put_anon_vma` -> `__put_anon_vma` -> `anon_vma_free`. Returns (ran, finished).
fn put_step(
    st: &mut State,
    tid: usize,
    put: (u8, PutPc),
    ctx: &mut Ctx,
) -> (bool, Option<(u8, PutPc)>) {
    let (s, pc) = put;
    let name = slot_name(s);
    match pc {
        PutPc::Dec => {
            let before = st.av[ix(s)].refcount;
            st.av[ix(s)].refcount -= 1;
            ctx.say(|| {
                format!(
                    "put_anon_vma({name}): atomic_dec_and_test refcount {before} -> {}",
                    before - 1
                )
            });
            if before - 1 == 0 {
                (true, Some((s, PutPc::IsLocked)))
            } else {
                (true, None)
            }
        }
        PutPc::IsLocked => {
            let r = st.av[ix(s)].root;
            let locked = st.av[ix(r)].rwsem.is_locked();
            ctx.say(|| {
                format!(
                    "__put_anon_vma -> anon_vma_free({name}): rwsem_is_locked(root {}) -> {locked}",
                    slot_name(r)
                )
            });
            if locked {
                (true, Some((s, PutPc::Handshake)))
            } else {
                (true, Some((s, PutPc::Free)))
            }
        }
        PutPc::Handshake => {
            let r = st.av[ix(s)].root;
            if st.av[ix(r)].rwsem.count != 0 {
                return (false, Some(put));
            }
            verify_lock_order(
                st,
                tid,
                CLASS_ANON,
                "anon_vma_free: anon_vma_lock_write",
                ctx,
            );
            ctx.say(|| {
                format!(
                    "anon_vma_free({name}): anon_vma_lock_write + anon_vma_unlock_write (root {})",
                    slot_name(r)
                )
            });
            (true, Some((s, PutPc::Free)))
        }
        PutPc::Free => {
            verify_put_anon_vma_free(st, s, ctx);
            let a = &mut st.av[ix(s)];
            a.live = false;
            let root = a.root;
            if root == s {
                ctx.say(|| {
                    format!("anon_vma_free({name}): kmem_cache_free (SLAB_TYPESAFE_BY_RCU: slot and rwsem survive)")
                });
                return (true, None);
            }
            // __put_anon_vma: `if (root != anon_vma && atomic_dec_and_test(&root->refcount))
            // anon_vma_free(root);`
            let before = st.av[ix(root)].refcount;
            st.av[ix(root)].refcount -= 1;
            let rn = slot_name(root);
            let last = before - 1 == 0;
            ctx.say(|| {
                format!(
                    "anon_vma_free({name}): kmem_cache_free (SLAB_TYPESAFE_BY_RCU: slot and rwsem survive); __put_anon_vma: atomic_dec_and_test(root {rn}->refcount) {before} -> {}{}",
                    before - 1,
                    if last { ": anon_vma_free(root)" } else { "" }
                )
            });
            if last {
                (true, Some((root, PutPc::IsLocked)))
            } else {
                (true, None)
            }
        }
    }
}

/// Invariant 7 (`anon_vma_free`): free only a live anon_vma whose refcount is 0.
fn verify_put_anon_vma_free(st: &State, s: u8, ctx: &mut Ctx) {
    let a = st.av[ix(s)];
    if !a.live {
        ctx.violate(Invariant::PutAnonVmaBalanced, || {
            format!("anon_vma_free({}) of an already freed slot", slot_name(s))
        });
    }
    if a.refcount != 0 {
        ctx.violate(Invariant::PutAnonVmaBalanced, || {
            format!(
                "anon_vma_free({}) with refcount {}",
                slot_name(s),
                a.refcount
            )
        });
    }
}

// ---------------------------------------------------------------------------------------------
// Walker: folio_referenced -> folio_lock_anon_vma_read -> rmap_walk_anon.

fn walker_step(
    st: &mut State,
    tid: usize,
    mut w: Walker,
    p: &Protocol,
    cfg: &Config,
    ctx: &mut Ctx,
) -> bool {
    let mode = cfg.walker;
    if let Some(put) = w.put {
        let (ran, next) = put_step(st, tid, put, ctx);
        w.put = next;
        st.threads[tid] = Thread::Walker(w);
        return ran;
    }
    let me = t8(tid);
    match w.pc {
        WalkerPc::Done => return false,
        WalkerPc::CachePgoff => {
            w.cached = Some((st.folio.index, st.folio.half_moved));
            let i = st.folio.index;
            ctx.say(|| {
                format!("pgoff = folio_pgoff(folio) = {i:#x}, cached before any lock (MUTATION)")
            });
            w.pc = walker_entry(p, mode);
        }
        WalkerPc::FolioLock => {
            if st.folio.lock.is_some() {
                return false;
            }
            verify_lock_order(st, tid, CLASS_FOLIO, "folio_lock", ctx);
            st.folio.lock = Some(me);
            w.folio_locked = true;
            ctx.say(|| "migration: folio_lock(F); rmap_walk (try_lock unset)".into());
            w.pc = WalkerPc::S1;
        }
        WalkerPc::Preamble => {
            let mc = st.folio.mapcount;
            let who = if mode == WalkerMode::TryLock {
                "folio_referenced"
            } else {
                "page_idle_clear_pte_refs/damon_folio_mkold"
            };
            if mc == 0 {
                ctx.say(|| format!("{who}: folio_mapcount(F) = 0 -> return 0 (no walk)"));
                w.pc = WalkerPc::Done;
            } else if st.folio.mapping.is_none() {
                ctx.say(|| format!("{who}: folio_raw_mapping(F) = NULL -> return 0 (no walk)"));
                w.pc = WalkerPc::Done;
            } else {
                if mode == WalkerMode::TryLock {
                    w.budget = Some(mc);
                }
                let lock = if p.walker_folio_lock {
                    "V3: folio_trylock for every folio"
                } else {
                    "folio_test_anon && !folio_test_ksm: walk without the folio lock"
                };
                ctx.say(|| {
                    format!("{who}: pra.mapcount = folio_mapcount(F) = {mc}; folio_raw_mapping(F) = {}; {lock}", mapping_text(st.folio.mapping))
                });
                w.pc = if p.walker_folio_lock {
                    WalkerPc::FolioTrylock
                } else {
                    WalkerPc::S1
                };
            }
        }
        WalkerPc::FolioTrylock => {
            if st.folio.lock.is_none() {
                st.folio.lock = Some(me);
                w.folio_locked = true;
                ctx.say(|| "folio_referenced: folio_trylock(F) -> ok".into());
                w.pc = WalkerPc::S1;
            } else {
                ctx.say(|| "folio_referenced: folio_trylock(F) -> busy, return 1 (no walk)".into());
                w.pc = WalkerPc::Done;
            }
        }
        WalkerPc::S1 => match st.folio.mapping {
            None => {
                ctx.say(|| "S1 rcu_read_lock; mapping = NULL; S2 not anon -> return NULL".into());
                w.pc = WalkerPc::Out;
            }
            Some(s) => {
                w.av = s;
                w.gen = st.av[ix(s)].gen;
                let g = w.gen;
                ctx.say(|| {
                    format!(
                        "S1 rcu_read_lock; m = READ_ONCE(folio->mapping) = {}|ANON (slot gen {g}); S2 anon",
                        slot_name(s)
                    )
                });
                w.pc = WalkerPc::S3;
            }
        },
        WalkerPc::S3 => {
            let mapped = st.folio.mapcount > 0;
            ctx.say(|| format!("S3 folio_mapped(F) -> {mapped}"));
            w.pc = if mapped { WalkerPc::S4 } else { WalkerPc::Out };
        }
        WalkerPc::S4 => {
            w.root = st.av[ix(w.av)].root;
            let (a, r) = (w.av, w.root);
            ctx.say(|| {
                format!(
                    "S4 anon_vma = {}; root_anon_vma = READ_ONCE(anon_vma->root) = {}",
                    slot_name(a),
                    slot_name(r)
                )
            });
            w.pc = WalkerPc::S5;
        }
        WalkerPc::S5 => {
            let r = w.root;
            if mode != WalkerMode::SlowOnly && try_read(st, r, tid) {
                w.locked = Some(r);
                ctx.say(|| format!("S5 down_read_trylock(root {}) -> ok", slot_name(r)));
                w.pc = if p.recheck_fast {
                    WalkerPc::S6
                } else {
                    WalkerPc::S7
                };
            } else {
                let forced = if mode == WalkerMode::SlowOnly {
                    " (contended)"
                } else {
                    ""
                };
                ctx.say(|| {
                    format!(
                        "S5 down_read_trylock(root {}) -> fail{forced}",
                        slot_name(r)
                    )
                });
                w.pc = WalkerPc::S8;
            }
        }
        WalkerPc::S6 => {
            let now = st.folio.mapping;
            if now != Some(w.av) {
                let r = w.root;
                up_read(st, r, tid, ctx, "S6");
                w.locked = None;
                ctx.say(|| {
                    format!(
                        "S6 READ_ONCE(folio->mapping) = {} != m -> up_read(saved root {}); rcu_read_unlock; goto retry",
                        mapping_text(now),
                        slot_name(r)
                    )
                });
                w.pc = WalkerPc::S1;
            } else if p.recheck_root && st.av[ix(w.av)].root != w.root {
                // Proposed hardening: the slot was reused under another root.
                let (r, now_root) = (w.root, st.av[ix(w.av)].root);
                up_read(st, r, tid, ctx, "S6");
                w.locked = None;
                ctx.say(|| {
                    format!(
                        "S6 READ_ONCE(folio->mapping) == m but READ_ONCE(anon_vma->root) = {} != saved root {} (proposed re-check) -> up_read(saved root); goto retry",
                        slot_name(now_root),
                        slot_name(r)
                    )
                });
                w.pc = WalkerPc::S1;
            } else {
                ctx.say(|| {
                    if p.recheck_root {
                        "S6 READ_ONCE(folio->mapping) == m && READ_ONCE(anon_vma->root) == root_anon_vma (proposed re-check)".into()
                    } else {
                        "S6 READ_ONCE(folio->mapping) == m".into()
                    }
                });
                w.pc = WalkerPc::S7;
            }
        }
        WalkerPc::S7 => {
            if st.folio.mapcount == 0 {
                let r = w.root;
                up_read(st, r, tid, ctx, "S7");
                w.locked = None;
                ctx.say(|| {
                    format!(
                        "S7 folio_mapped -> false: up_read(root {}); return NULL",
                        slot_name(r)
                    )
                });
                w.pc = WalkerPc::Out;
            } else {
                let a = w.av;
                ctx.say(|| format!("S7 folio_mapped -> true; return anon_vma {}", slot_name(a)));
                verify_folio_lock_anon_vma_read_current(st, &w, ctx);
                w.pc = WalkerPc::WalkStart;
            }
        }
        WalkerPc::S8 => {
            if mode == WalkerMode::TryLock {
                ctx.say(|| {
                    "S8 rwc->try_lock: contended = true; return NULL (folio_referenced returns -1)"
                        .into()
                });
                w.pc = WalkerPc::Out;
            } else {
                ctx.say(|| "S8 rwc->try_lock unset: take the slow path".into());
                w.pc = WalkerPc::S9;
            }
        }
        WalkerPc::S9 => {
            let a = w.av;
            let rc = st.av[ix(a)].refcount;
            if rc == 0 {
                ctx.say(|| {
                    format!(
                        "S9 atomic_inc_not_zero({}->refcount) -> 0, return NULL",
                        slot_name(a)
                    )
                });
                w.pc = WalkerPc::Out;
            } else {
                st.av[ix(a)].refcount += 1;
                w.has_ref = true;
                ctx.say(|| {
                    format!(
                        "S9 atomic_inc_not_zero({}->refcount) {rc} -> {}",
                        slot_name(a),
                        rc + 1
                    )
                });
                w.pc = WalkerPc::S10;
            }
        }
        WalkerPc::S10 => {
            if st.folio.mapcount == 0 {
                let a = w.av;
                ctx.say(|| {
                    format!(
                        "S10 folio_mapped -> false: rcu_read_unlock; put_anon_vma({})",
                        slot_name(a)
                    )
                });
                w.has_ref = false;
                w.put = Some((a, PutPc::Dec));
                w.pc = WalkerPc::Out;
            } else {
                ctx.say(|| "S10 folio_mapped -> true".into());
                w.pc = WalkerPc::S11;
            }
        }
        WalkerPc::S11 => {
            let a = w.av;
            let r = st.av[ix(a)].root;
            if st.av[ix(r)].rwsem.count < 0 {
                return false;
            }
            verify_lock_order(st, tid, CLASS_ANON, "anon_vma_lock_read", ctx);
            try_read(st, r, tid);
            w.locked = Some(r);
            ctx.say(|| {
                format!(
                    "S11 rcu_read_unlock; anon_vma_lock_read({}) = down_read(root {})",
                    slot_name(a),
                    slot_name(r)
                )
            });
            w.pc = if p.recheck_slow {
                WalkerPc::S12
            } else {
                WalkerPc::S13
            };
        }
        WalkerPc::S12 => {
            let now = st.folio.mapping;
            if now != Some(w.av) {
                let a = w.av;
                let r = st.av[ix(a)].root;
                up_read(st, r, tid, ctx, "S12 anon_vma_unlock_read");
                w.locked = None;
                w.has_ref = false;
                w.put = Some((a, PutPc::Dec));
                ctx.say(|| {
                    format!(
                        "S12 READ_ONCE(folio->mapping) = {} != m -> anon_vma_unlock_read({}) (root {}); put_anon_vma; goto retry",
                        mapping_text(now),
                        slot_name(a),
                        slot_name(r)
                    )
                });
                w.pc = WalkerPc::S1;
            } else {
                ctx.say(|| "S12 READ_ONCE(folio->mapping) == m".into());
                w.pc = WalkerPc::S13;
            }
        }
        WalkerPc::S13 => {
            let a = w.av;
            let rc = st.av[ix(a)].refcount;
            st.av[ix(a)].refcount -= 1;
            w.has_ref = false;
            if rc - 1 == 0 {
                let r = st.av[ix(a)].root;
                up_read(st, r, tid, ctx, "S13 anon_vma_unlock_read");
                w.locked = None;
                w.put = Some((a, PutPc::IsLocked));
                ctx.say(|| {
                    format!(
                        "S13 atomic_dec_and_test({}->refcount) 1 -> 0: anon_vma_unlock_read; __put_anon_vma; return NULL",
                        slot_name(a)
                    )
                });
                w.pc = WalkerPc::Out;
            } else {
                ctx.say(|| {
                    format!(
                        "S13 atomic_dec_and_test({}->refcount) {rc} -> {}; return anon_vma {}",
                        slot_name(a),
                        rc - 1,
                        slot_name(a)
                    )
                });
                verify_folio_lock_anon_vma_read_current(st, &w, ctx);
                w.pc = WalkerPc::WalkStart;
            }
        }
        WalkerPc::WalkStart => {
            verify_walk(st, tid, &w, ctx);
            let (pgoff, half) = match w.cached {
                Some(c) => c,
                None => (st.folio.index, st.folio.half_moved),
            };
            w.pgoff = pgoff;
            w.pgoff_half = half;
            w.walk_epoch = st.ptl_epoch;
            w.ptl_busy_at_start = ptl_held_by_other(st, tid);
            w.visited = 0;
            let a = w.av;
            let from = if w.cached.is_some() {
                "cached"
            } else {
                "folio_pgoff(folio) = folio->index (plain load)"
            };
            ctx.say(|| {
                format!(
                    "rmap_walk_anon: pgoff = {from} = {pgoff:#x}; anon_vma_interval_tree_foreach over {}",
                    slot_name(a)
                )
            });
            w.pc = next_candidate(st, &w, 0);
        }
        WalkerPc::Walk(j) if !cfg.sync_walk() => {
            // map_pte without PVMW_SYNC: pte_offset_map_nolock + ptep_get, no lock yet.
            let v = st.vma[ix(j)];
            verify_walk(st, tid, &w, ctx);
            let addr = u32::from(v.start) << 12;
            if v.pte {
                ctx.say(|| {
                    format!(
                        "rmap_one({}, addr {addr:#x}): page_vma_mapped_walk: map_pte: ptep_get (no PTL) -> present",
                        vma_name(j)
                    )
                });
                w.pc = WalkerPc::WalkLocked(j);
            } else {
                ctx.say(|| {
                    format!(
                        "rmap_one({}, addr {addr:#x}): page_vma_mapped_walk: map_pte: ptep_get (no PTL) -> none: not mapped here, PTL not taken",
                        vma_name(j)
                    )
                });
                w.pc = next_candidate(st, &w, j + 1);
            }
        }
        WalkerPc::Walk(j) | WalkerPc::WalkLocked(j) => {
            let v = st.vma[ix(j)];
            if let Some(holder) = v.ptl {
                if holder != me {
                    return false;
                }
            }
            verify_walk(st, tid, &w, ctx);
            verify_lock_order(st, tid, CLASS_PTL, "rmap_one: pte lock", ctx);
            if v.pte {
                w.visited |= 1 << j;
                if let Some(b) = w.budget.as_mut() {
                    *b -= 1;
                }
            }
            let found = v.pte;
            let how = if w.pc == WalkerPc::Walk(j) {
                "page_vma_mapped_walk (PVMW_SYNC): pte_offset_map_lock"
            } else {
                "map_pte: spin_lock(ptl)"
            };
            ctx.say(|| {
                format!(
                    "rmap_one({}, addr {:#x}): {how}; check_pte -> {}",
                    vma_name(j),
                    u32::from(v.start) << 12,
                    if found { "F found (young)" } else { "pte none" }
                )
            });
            w.pc = if w.budget == Some(0) {
                // folio_referenced_one: `if (!pra->mapcount) return false;` ends the walk.
                WalkerPc::WalkEnd
            } else {
                next_candidate(st, &w, j + 1)
            };
        }
        WalkerPc::WalkEnd => {
            verify_walk(st, tid, &w, ctx);
            verify_rmap_walk_anon_complete(st, tid, &w, p.completeness, ctx);
            let a = w.av;
            let r = st.av[ix(a)].root;
            up_read(st, r, tid, ctx, "rmap_walk_anon: anon_vma_unlock_read");
            w.locked = None;
            let visited = w.visited;
            ctx.say(|| {
                format!(
                    "rmap_walk_anon done (found F in {} VMA(s)); anon_vma_unlock_read({}) = up_read(root {})",
                    visited.count_ones(),
                    slot_name(a),
                    slot_name(r)
                )
            });
            w.pc = WalkerPc::Out;
        }
        WalkerPc::Out => {
            if w.folio_locked {
                st.folio.lock = None;
                w.folio_locked = false;
                ctx.say(|| "folio_referenced returns; folio_unlock(F)".into());
            } else {
                ctx.say(|| "rcu_read_unlock; folio_referenced returns".into());
            }
            if let Some(l) = w.locked {
                ctx.violate(Invariant::AnonVmaUnlockMatchesLock, || {
                    format!("walker returns still holding the rwsem of {}", slot_name(l))
                });
            }
            if w.has_ref {
                ctx.violate(Invariant::PutAnonVmaBalanced, || {
                    "walker returns still holding its slow-path anon_vma reference".into()
                });
            }
            w.pc = WalkerPc::Done;
        }
    }
    st.threads[tid] = Thread::Walker(w);
    true
}

fn mapping_text(m: Option<u8>) -> String {
    match m {
        Some(s) => format!("{}|ANON", slot_name(s)),
        None => "NULL".into(),
    }
}

/// The next VMA in the anon_vma's interval tree that covers `pgoff`, from `from` on.
fn next_candidate(st: &State, w: &Walker, from: u8) -> WalkerPc {
    let a = st.av[ix(w.av)];
    for j in from..u8::try_from(NVMA).unwrap_or(0) {
        let v = st.vma[ix(j)];
        if a.tree & (1 << j) != 0 && v.present && v.pgoff == w.pgoff {
            return WalkerPc::Walk(j);
        }
    }
    WalkerPc::WalkEnd
}

/// Invariant 3, first half (`folio_lock_anon_vma_read`), as the kernel needs it: the root whose
/// rwsem the walker holds is the root of `folio->mapping`'s anon_vma. The anon_vma itself may
/// already differ (a same-root move, e.g. COW reuse after fork, needs only the folio lock);
/// the tree of an ancestor still covers every VMA that maps the folio.
fn verify_folio_lock_anon_vma_read_current(st: &State, w: &Walker, ctx: &mut Ctx) {
    let mroot = st.folio.mapping.map(|m| st.av[ix(m)].root);
    if mroot.is_none() || mroot != w.locked {
        let (a, m) = (w.av, st.folio.mapping);
        let locked = w.locked.map_or("none", slot_name);
        let mroot = mroot.map_or("none", slot_name);
        ctx.violate(Invariant::FolioLockAnonVmaReadCurrent, || {
            format!(
                "folio_lock_anon_vma_read returns {} with root {locked} locked, but folio->mapping is {} (root {mroot})",
                slot_name(a),
                mapping_text(m)
            )
        });
    }
}

/// Checks at every step of `rmap_walk_anon`: invariants 1 (tree read under its root's rwsem),
/// 2 (slot alive, same generation) and 3 (root of `folio->mapping` is the root we locked).
fn verify_walk(st: &State, tid: usize, w: &Walker, ctx: &mut Ctx) {
    let a = st.av[ix(w.av)];
    let name = slot_name(w.av);
    if !a.live {
        ctx.violate(Invariant::RmapWalkAnonVmaAlive, || {
            format!("rmap_walk_anon walks {name}, which anon_vma_free has freed")
        });
    } else if a.gen != w.gen && st.folio.mapping != Some(w.av) {
        // A reused slot is a legitimate walk only when the folio itself now belongs to it
        // (moved there after the reuse); then the lock is invariant 1's and 3's business.
        let (g0, g1) = (w.gen, a.gen);
        ctx.violate(Invariant::RmapWalkAnonVmaAlive, || {
            format!("rmap_walk_anon walks {name} (gen {g0} at S1), but the slot was freed and reused (gen {g1})")
        });
    }
    if !holds_read(st, a.root, tid) {
        let r = a.root;
        ctx.violate(Invariant::AnonVmaUnlockMatchesLock, || {
            format!(
                "rmap_walk_anon reads {name}->rb_root without holding its root {} rwsem",
                slot_name(r)
            )
        });
    }
    if let Some(m) = st.folio.mapping {
        let mroot = st.av[ix(m)].root;
        if Some(mroot) != w.locked {
            let locked = w.locked.map_or("none", slot_name);
            ctx.violate(Invariant::FolioLockAnonVmaReadCurrent, || {
                format!(
                    "during rmap_walk_anon folio->mapping is {}|ANON (root {}) but the walker locked root {locked}",
                    slot_name(m),
                    slot_name(mroot)
                )
            });
        }
    }
}

/// Invariant 8 (`rmap_walk_anon`): at the end of the walk every VMA whose PTE maps F was visited,
/// except where `promise` excuses the miss.
fn verify_rmap_walk_anon_complete(
    st: &State,
    tid: usize,
    w: &Walker,
    promise: Completeness,
    ctx: &mut Ctx,
) {
    let overlapped =
        w.ptl_busy_at_start || st.ptl_epoch != w.walk_epoch || ptl_held_by_other(st, tid);
    for (j, v) in st.vma.iter().enumerate() {
        if v.present && v.pte && w.visited & (1 << j) == 0 {
            // folio_referenced stops after pra.mapcount mappings (sampled in its preamble): a
            // mapping added since (fork) is not looked for, in every version.
            if w.budget == Some(0) {
                continue;
            }
            let excused = match promise {
                Completeness::Strict => false,
                Completeness::PtlOverlap => overlapped,
                Completeness::IndexWindow => w.pgoff_half,
            };
            if excused {
                continue;
            }
            let j8 = u8::try_from(j).unwrap_or(0);
            let (pg, a) = (w.pgoff, w.av);
            let (vpg, vs) = (v.pgoff, v.start);
            ctx.violate(Invariant::RmapWalkAnonComplete, || {
                format!(
                    "F is mapped in {} (addr {:#x}, vm_pgoff {vpg:#x}) but the walk of {} with pgoff {pg:#x} missed it",
                    vma_name(j8),
                    u32::from(vs) << 12,
                    slot_name(a)
                )
            });
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Mover: move_pages_pte / move_present_pte.

fn mover_step(st: &mut State, tid: usize, mut m: Mover, p: &Protocol, ctx: &mut Ctx) -> bool {
    if let Some(put) = m.put {
        let (ran, next) = put_step(st, tid, put, ctx);
        m.put = next;
        st.threads[tid] = Thread::Mover(m);
        return ran;
    }
    let me = t8(tid);
    let (src, dst) = (m.src, m.dst);
    let (sn, dn) = (vma_name(src), vma_name(dst));
    match m.pc {
        MoverPc::Done => return false,
        MoverPc::MmapLock => {
            if st.mm < 0 {
                return false;
            }
            st.mm += 1;
            ctx.say(|| format!("UFFDIO_MOVE({sn} -> {dn}): mmap_read_lock"));
            m.pc = MoverPc::Validate;
        }
        MoverPc::Validate => {
            if !st.vma[ix(src)].present || !st.vma[ix(dst)].present {
                ctx.say(|| "move_pages: a VMA is gone -> -ENOENT".into());
                m.err = Some(MoveErr::NoEnt);
                m.pc = MoverPc::MmapUnlock;
            } else {
                ctx.say(|| "validate_move_areas: both anonymous, ok".into());
                m.pc = MoverPc::ReadPtes;
            }
        }
        MoverPc::ReadPtes => {
            if st.vma[ix(src)].ptl.is_some() || st.vma[ix(dst)].ptl.is_some() {
                return false;
            }
            // -EAGAIN from an earlier round is being retried.
            m.err = None;
            let (sp, dp) = (st.vma[ix(src)].pte, st.vma[ix(dst)].pte);
            let retry = if m.folio_locked { "retry: " } else { "" };
            let e = if dp {
                Some(MoveErr::Exist)
            } else if !sp {
                // With the folio held this is `!pte_same(src_folio_pte, orig_src_pte)`.
                Some(if m.folio_locked {
                    MoveErr::Again
                } else {
                    MoveErr::NoEnt
                })
            } else {
                None
            };
            let func = if p.mover_anon_lock {
                "move_pages_pte"
            } else {
                "move_pages_ptes"
            };
            if m.batch {
                ctx.say(|| {
                    format!("{func}: F0, the batch's first folio (at the page before F): PTEs read, folio_trylock(F0) (F0 not modelled)")
                });
                m.pc = MoverPc::DoublePtLock;
                st.threads[tid] = Thread::Mover(m);
                return true;
            }
            ctx.say(|| {
                format!(
                    "{func}: {retry}read dst PTE ({}) and src PTE ({}) under their PTLs{}",
                    if dp { "present" } else { "none" },
                    if sp { "F" } else { "none" },
                    e.map_or(String::new(), |e| format!(" -> {}", e.name()))
                )
            });
            if let Some(e) = e {
                fail(st, &mut m, e, ctx);
            } else if p.anon_lock_first {
                m.pc = MoverPc::GetAnonVma;
            } else if !m.folio_locked {
                m.pc = MoverPc::SrcFolioTrylock;
            } else if p.mover_anon_lock && m.locked.is_none() {
                m.pc = MoverPc::GetAnonVma;
            } else {
                m.pc = MoverPc::DoublePtLock;
            }
        }
        MoverPc::SrcFolioTrylock => {
            if st.vma[ix(src)].ptl.is_some() {
                return false;
            }
            if !st.vma[ix(src)].pte {
                ctx.say(|| format!("spin_lock(PTL of {sn}); !pte_same(orig_src_pte) -> -EAGAIN"));
                fail(st, &mut m, MoveErr::Again, ctx);
            } else if !st.folio.exclusive {
                ctx.say(|| format!("spin_lock(PTL of {sn}); !PageAnonExclusive(F) -> -EBUSY"));
                fail(st, &mut m, MoveErr::Busy, ctx);
            } else {
                st.folio.refcount += 1;
                m.has_ref = true;
                let locked = st.folio.lock.is_none();
                if locked {
                    st.folio.lock = Some(me);
                    m.folio_locked = true;
                    m.snap = Some(snap(st));
                }
                ctx.say(|| {
                    format!(
                        "spin_lock(PTL of {sn}); pte_same; PageAnonExclusive; folio_get(F); folio_trylock(F) -> {}; spin_unlock",
                        if locked { "ok" } else { "busy" }
                    )
                });
                m.pc = if !locked {
                    MoverPc::FolioLockSleep
                } else if p.mover_anon_lock {
                    MoverPc::GetAnonVma
                } else {
                    MoverPc::DoublePtLock
                };
            }
        }
        MoverPc::FolioLockSleep => {
            if st.folio.lock.is_some() {
                return false;
            }
            verify_lock_order(st, tid, CLASS_FOLIO, "folio_lock", ctx);
            st.folio.lock = Some(me);
            m.folio_locked = true;
            m.snap = Some(snap(st));
            ctx.say(|| "pte_unmap both; folio_lock(F) (slept); goto retry".into());
            m.pc = MoverPc::ReadPtes;
        }
        MoverPc::AnonTrylock => {
            let a = m.av.unwrap_or(0);
            let r = st.av[ix(a)].root;
            let ok = try_write(st, r, tid);
            if ok {
                m.locked = Some(r);
            }
            ctx.say(|| {
                format!(
                    "anon_vma_trylock_write({}) = down_write_trylock(root {}) -> {}",
                    slot_name(a),
                    slot_name(r),
                    if ok { "ok" } else { "busy" }
                )
            });
            m.pc = if ok {
                MoverPc::DoublePtLock
            } else {
                MoverPc::AnonLockSleep
            };
        }
        MoverPc::AnonLockSleep => {
            let a = m.av.unwrap_or(0);
            let r = st.av[ix(a)].root;
            if st.av[ix(r)].rwsem.count != 0 {
                return false;
            }
            verify_lock_order(st, tid, CLASS_ANON, "anon_vma_lock_write", ctx);
            try_write(st, r, tid);
            m.locked = Some(r);
            ctx.say(|| {
                format!(
                    "pte_unmap both; anon_vma_lock_write({}) = down_write(root {}) (slept); goto retry",
                    slot_name(a),
                    slot_name(r)
                )
            });
            m.pc = MoverPc::ReadPtes;
        }
        MoverPc::FolioLock => {
            if st.folio.lock.is_some() {
                return false;
            }
            verify_lock_order(st, tid, CLASS_FOLIO, "folio_lock", ctx);
            st.folio.lock = Some(me);
            st.folio.refcount += 1;
            m.has_ref = true;
            m.folio_locked = true;
            m.snap = Some(snap(st));
            ctx.say(|| "folio_get(F); folio_lock(F)".into());
            m.pc = if p.mover_anon_lock && !p.anon_lock_first {
                MoverPc::GetAnonVma
            } else {
                MoverPc::DoublePtLock
            };
        }
        MoverPc::GetAnonVma => {
            let mapping = st.folio.mapping;
            let ok = match mapping {
                Some(s) if st.folio.mapcount > 0 && st.av[ix(s)].refcount > 0 => {
                    st.av[ix(s)].refcount += 1;
                    m.av = Some(s);
                    true
                }
                _ => false,
            };
            if ok {
                let early = if p.anon_lock_first {
                    ", before folio_lock (MUTATION)"
                } else {
                    ""
                };
                ctx.say(|| {
                    format!(
                        "folio_get_anon_vma(F) = {} (refcount +1){early}",
                        mapping_text(mapping)
                    )
                });
            } else {
                ctx.say(|| "folio_get_anon_vma(F) = NULL -> -EAGAIN".into());
                fail(st, &mut m, MoveErr::Again, ctx);
            }
            if ok {
                m.pc = if p.anon_lock_first {
                    MoverPc::AnonLockWrite
                } else {
                    MoverPc::AnonTrylock
                };
            }
        }
        MoverPc::AnonLockWrite => {
            let a = m.av.unwrap_or(0);
            let r = st.av[ix(a)].root;
            if st.av[ix(r)].rwsem.count != 0 {
                return false;
            }
            verify_lock_order(st, tid, CLASS_ANON, "anon_vma_lock_write", ctx);
            try_write(st, r, tid);
            m.locked = Some(r);
            ctx.say(|| {
                format!(
                    "anon_vma_lock_write({}) = down_write(root {})",
                    slot_name(a),
                    slot_name(r)
                )
            });
            m.pc = if p.anon_lock_first {
                MoverPc::FolioLock
            } else {
                MoverPc::DoublePtLock
            };
        }
        MoverPc::DoublePtLock if p.split_ptl => {
            if st.vma[ix(src)].ptl.is_some() {
                return false;
            }
            verify_lock_order(st, tid, CLASS_PTL, "pte lock", ctx);
            st.vma[ix(src)].ptl = Some(me);
            m.in_ptl = true;
            ctx.say(|| {
                format!(
                    "move_present_pte: spin_lock(PTL of {sn}) only (MUTATION: no double_pt_lock)"
                )
            });
            m.pc = MoverPc::PteSame;
        }
        MoverPc::DoublePtLock => {
            if st.vma[ix(src)].ptl.is_some() || st.vma[ix(dst)].ptl.is_some() {
                return false;
            }
            verify_lock_order(st, tid, CLASS_PTL, "double_pt_lock", ctx);
            st.vma[ix(src)].ptl = Some(me);
            st.vma[ix(dst)].ptl = Some(me);
            m.in_ptl = true;
            let func = if p.mover_anon_lock {
                "move_present_pte"
            } else {
                "move_present_ptes"
            };
            ctx.say(|| format!("{func}: double_pt_lock({dn}, {sn})"));
            m.pc = if m.batch {
                MoverPc::BatchTrylock
            } else {
                MoverPc::PteSame
            };
        }
        MoverPc::PteSame => {
            if !st.vma[ix(src)].pte || st.vma[ix(dst)].pte {
                ctx.say(|| "!pte_same(src) || !pte_same(dst) -> -EAGAIN".into());
                fail(st, &mut m, MoveErr::Again, ctx);
            } else if st.folio.pinned {
                ctx.say(|| "folio_maybe_dma_pinned(F) -> -EBUSY".into());
                fail(st, &mut m, MoveErr::Busy, ctx);
            } else if !st.folio.exclusive {
                ctx.say(|| "!PageAnonExclusive(F) (shared by fork) -> -EBUSY".into());
                fail(st, &mut m, MoveErr::Busy, ctx);
            } else {
                if p.mover_anon_lock {
                    ctx.say(|| "pte_same ok; not pinned; PageAnonExclusive".into());
                } else {
                    // "It's safe to drop the reference now as the page-table is holding one."
                    st.folio.refcount -= 1;
                    m.has_ref = false;
                    ctx.say(|| {
                        "pte_same ok; not pinned; PageAnonExclusive; folio_put(F) (the page table holds one); arch_enter_lazy_mmu_mode".into()
                    });
                }
                // Before Qi Zheng's fix folio_move_anon_rmap and the index store came here,
                // ahead of ptep_clear_flush and the pin re-check.
                m.pc = if p.prefix_pin_order {
                    first_store(p)
                } else {
                    MoverPc::Clear
                };
            }
        }
        MoverPc::Clear => {
            st.vma[ix(src)].pte = false;
            if p.mover_anon_lock {
                ctx.say(|| format!("ptep_clear_flush({sn})"));
            } else {
                ctx.say(|| {
                    format!("ptep_get_and_clear({sn}) (no flush: one flush_tlb_range per batch)")
                });
            }
            m.pc = MoverPc::PinRecheck;
        }
        MoverPc::PinRecheck => {
            if st.folio.pinned {
                st.vma[ix(src)].pte = true;
                ctx.say(|| {
                    format!(
                        "folio_maybe_dma_pinned(F) after clear -> set_pte_at({sn}) back; -EBUSY"
                    )
                });
                fail(st, &mut m, MoveErr::Busy, ctx);
            } else {
                ctx.say(|| "folio_maybe_dma_pinned(F) after clear -> false".into());
                m.pc = if p.prefix_pin_order {
                    set_dst(p)
                } else {
                    first_store(p)
                };
            }
        }
        MoverPc::StoreMapping => {
            verify_folio_move_anon_rmap_locked(st, tid, &m, p, "folio_move_anon_rmap", ctx);
            let new = st.vma[ix(dst)].anon_vma;
            st.folio.mapping = Some(new);
            st.folio.half_moved = !p.index_first;
            ctx.say(|| {
                format!(
                    "folio_move_anon_rmap(F, {dn}): WRITE_ONCE(folio->mapping, {}|ANON)",
                    slot_name(new)
                )
            });
            m.pc = if p.index_first {
                after_stores(p)
            } else {
                MoverPc::StoreIndex
            };
        }
        MoverPc::StoreIndex => {
            verify_folio_move_anon_rmap_locked(st, tid, &m, p, "WRITE_ONCE(folio->index)", ctx);
            let idx = st.vma[ix(dst)].pgoff;
            st.folio.index = idx;
            st.folio.half_moved = p.index_first;
            if p.mover_anon_lock {
                ctx.say(|| format!("WRITE_ONCE(folio->index, linear_page_index({dn}) = {idx:#x})"));
            } else {
                ctx.say(|| {
                    format!("folio->index = linear_page_index({dn}) = {idx:#x} (plain store)")
                });
            }
            m.pc = if p.index_first {
                MoverPc::StoreMapping
            } else {
                after_stores(p)
            };
        }
        MoverPc::SrcUnlock => {
            st.vma[ix(src)].ptl = None;
            ctx.say(|| format!("spin_unlock(PTL of {sn}) (MUTATION: {dn} not set yet)"));
            m.pc = MoverPc::DstLock;
        }
        MoverPc::DstLock => {
            if st.vma[ix(dst)].ptl.is_some() {
                return false;
            }
            verify_lock_order(st, tid, CLASS_PTL, "pte lock", ctx);
            st.vma[ix(dst)].ptl = Some(me);
            ctx.say(|| format!("spin_lock(PTL of {dn})"));
            m.pc = MoverPc::SetDst;
        }
        MoverPc::SetDst => {
            st.vma[ix(dst)].pte = true;
            ctx.say(|| format!("set_pte_at({dn}, mk_pte(F))"));
            m.pc = if p.mover_anon_lock || p.split_ptl {
                MoverPc::DoublePtUnlock
            } else if m.batch {
                MoverPc::BatchUnlock
            } else {
                MoverPc::FlushTlbRange
            };
        }
        MoverPc::BatchTrylock => {
            let ok_ptes = st.vma[ix(src)].pte && !st.vma[ix(dst)].pte && st.folio.exclusive;
            let locked = ok_ptes && st.folio.lock.is_none();
            if locked {
                st.folio.lock = Some(me);
                m.folio_locked = true;
                m.snap = Some(snap(st));
            }
            ctx.say(|| {
                format!(
                    "F0 moved; folio_unlock(F0); check_ptes_for_batched_move({sn}+1): dst none, src present, PageAnonExclusive, not large, folio_trylock(F) -> {}",
                    if locked {
                        "ok"
                    } else if ok_ptes {
                        "busy: the batch ends; flush_tlb_range(F0); double_pt_unlock; the next move_pages_ptes call takes F"
                    } else {
                        "PTEs changed: the batch ends; the next move_pages_ptes call takes F"
                    }
                )
            });
            if locked {
                m.pc = MoverPc::Clear;
            } else {
                // The next move_pages_ptes call starts with F.
                m.batch = false;
                fail(st, &mut m, MoveErr::Again, ctx);
            }
        }
        MoverPc::BatchUnlock => {
            st.folio.lock = None;
            m.folio_locked = false;
            m.snap = None;
            ctx.say(|| {
                "folio_unlock(F) under the PTLs; check_ptes_for_batched_move(next) (not modelled): the batch ends".into()
            });
            m.pc = MoverPc::FlushTlbRange;
        }
        MoverPc::FlushTlbRange => {
            ctx.say(|| {
                format!(
                    "arch_leave_lazy_mmu_mode; flush_tlb_range({sn}, batch) with both PTLs held"
                )
            });
            m.pc = if m.folio_locked {
                MoverPc::FolioUnlockInPtl
            } else {
                MoverPc::DoublePtUnlock
            };
        }
        MoverPc::FolioUnlockInPtl => {
            st.folio.lock = None;
            m.folio_locked = false;
            m.snap = None;
            ctx.say(|| "folio_unlock(F) (the batch's last folio, under the PTLs)".into());
            m.pc = MoverPc::DoublePtUnlock;
        }
        MoverPc::DoublePtUnlock => {
            for v in [src, dst] {
                if st.vma[ix(v)].ptl == Some(me) {
                    st.vma[ix(v)].ptl = None;
                }
            }
            m.in_ptl = false;
            if m.err.is_none() {
                if let Some(s) = m.snap {
                    if s.mapcount != st.folio.mapcount {
                        let (a, b) = (s.mapcount, st.folio.mapcount);
                        ctx.violate(Invariant::MovePresentPteAtomic, || {
                            format!("the move changed folio mapcount {a} -> {b}")
                        });
                    }
                }
            }
            ctx.say(|| {
                if p.split_ptl {
                    format!("spin_unlock(PTL of {dn})")
                } else {
                    "double_pt_unlock".into()
                }
            });
            m.pc = cleanup_next(&m, MoverPc::DoublePtUnlock);
        }
        MoverPc::AnonUnlock => {
            let a = m.av.unwrap_or(0);
            let r = st.av[ix(a)].root;
            up_write(st, r, tid, ctx, "anon_vma_unlock_write");
            m.locked = None;
            ctx.say(|| {
                format!(
                    "anon_vma_unlock_write({}) = up_write(root {})",
                    slot_name(a),
                    slot_name(r)
                )
            });
            m.pc = cleanup_next(&m, MoverPc::AnonUnlock);
        }
        MoverPc::AnonPut => {
            let a = m.av.take().unwrap_or(0);
            let (ran, next) = put_step(st, tid, (a, PutPc::Dec), ctx);
            debug_assert!(ran);
            m.put = next;
            m.pc = cleanup_next(&m, MoverPc::AnonPut);
        }
        MoverPc::FolioUnlock => {
            st.folio.lock = None;
            let put = m.has_ref;
            if put {
                st.folio.refcount -= 1;
                m.has_ref = false;
            }
            m.folio_locked = false;
            m.snap = None;
            ctx.say(|| {
                if put {
                    "folio_unlock(F); folio_put(F)".into()
                } else {
                    "folio_unlock(F)".into()
                }
            });
            if m.err == Some(MoveErr::Again) {
                m.err = None;
                m.pc = MoverPc::ReadPtes;
            } else {
                m.pc = MoverPc::MmapUnlock;
            }
        }
        MoverPc::MmapUnlock => {
            st.mm -= 1;
            m.result = Some(m.err.map_or(Ok(()), Err));
            let r = m.err.map_or("0 (moved)", MoveErr::name);
            ctx.say(|| format!("mmap_read_unlock; UFFDIO_MOVE returns {r}"));
            m.pc = MoverPc::Done;
        }
    }
    st.threads[tid] = Thread::Mover(m);
    true
}

/// What a failed move must leave unchanged, taken when the mover gets the folio lock.
fn snap(st: &State) -> Snap {
    Snap {
        mapping: st.folio.mapping,
        index: st.folio.index,
        ptes: [st.vma[0].pte, st.vma[1].pte, st.vma[2].pte],
        mapcount: st.folio.mapcount,
    }
}

fn first_store(p: &Protocol) -> MoverPc {
    if p.index_first {
        MoverPc::StoreIndex
    } else {
        MoverPc::StoreMapping
    }
}

fn after_stores(p: &Protocol) -> MoverPc {
    if p.prefix_pin_order {
        MoverPc::Clear
    } else {
        set_dst(p)
    }
}

/// The step that installs the destination PTE: `set_pte_at` at once, or with `SplitPtl` first
/// the source PTL's unlock and the destination PTL's lock.
fn set_dst(p: &Protocol) -> MoverPc {
    if p.split_ptl {
        MoverPc::SrcUnlock
    } else {
        MoverPc::SetDst
    }
}

/// Where the unwinding continues after `from` (`out:` label of `move_pages_pte`).
fn cleanup_next(m: &Mover, from: MoverPc) -> MoverPc {
    let order = [
        MoverPc::DoublePtUnlock,
        MoverPc::AnonUnlock,
        MoverPc::AnonPut,
        MoverPc::FolioUnlock,
    ];
    let start = order.iter().position(|&x| x == from).map_or(0, |i| i + 1);
    for &pc in &order[start..] {
        let needed = match pc {
            MoverPc::DoublePtUnlock => m.in_ptl,
            MoverPc::AnonUnlock => m.locked.is_some(),
            MoverPc::AnonPut => m.av.is_some(),
            _ => m.folio_locked,
        };
        if needed {
            return pc;
        }
    }
    if m.err == Some(MoveErr::Again) {
        MoverPc::ReadPtes
    } else {
        MoverPc::MmapUnlock
    }
}

/// Records an error and starts unwinding; checks invariant 6 first.
fn fail(st: &State, m: &mut Mover, e: MoveErr, ctx: &mut Ctx) {
    m.err = Some(e);
    verify_move_present_pte_failure_atomic(st, m, ctx);
    m.pc = cleanup_next(m, MoverPc::PinRecheck);
}

/// Invariant 6 (`move_present_pte` error path): nothing changed since the folio lock was taken.
fn verify_move_present_pte_failure_atomic(st: &State, m: &Mover, ctx: &mut Ctx) {
    let Some(s) = m.snap else { return };
    let now = Snap {
        mapping: st.folio.mapping,
        index: st.folio.index,
        ptes: [st.vma[0].pte, st.vma[1].pte, st.vma[2].pte],
        mapcount: st.folio.mapcount,
    };
    if now != s {
        let e = m.err.map_or("error", MoveErr::name);
        ctx.violate(Invariant::MovePresentPteFailureAtomic, || {
            format!(
                "UFFDIO_MOVE fails with {e} but F changed: mapping {} -> {}, index {:#x} -> {:#x}, ptes S/D {:?} -> {:?}",
                mapping_text(s.mapping),
                mapping_text(now.mapping),
                s.index,
                now.index,
                s.ptes,
                now.ptes
            )
        });
    }
}

/// Invariant 4 (`folio_move_anon_rmap`): the store is made under the folio lock and, when some
/// walker runs without the folio lock, under the old root's rwsem held for writing.
fn verify_folio_move_anon_rmap_locked(
    st: &State,
    tid: usize,
    m: &Mover,
    p: &Protocol,
    what: &str,
    ctx: &mut Ctx,
) {
    if st.folio.lock != Some(t8(tid)) {
        let what = what.to_string();
        ctx.violate(Invariant::FolioMoveAnonRmapLocked, || {
            format!("{what} without the folio lock")
        });
    }
    if p.walker_folio_lock || st.folio.mapcount == 0 {
        return;
    }
    let old = m.snap.and_then(|s| s.mapping).unwrap_or(SLOT_X);
    let root = st.av[ix(old)].root;
    if !holds_write(st, root, tid) {
        let what = what.to_string();
        ctx.violate(Invariant::FolioMoveAnonRmapLocked, || {
            format!(
                "{what} while F is mapped, without down_write on the old root {} (walkers do not hold the folio lock)",
                slot_name(root)
            )
        });
    }
}

// ---------------------------------------------------------------------------------------------
// munmap(S), then slab reuse of the freed slot.

fn munmap_step(st: &mut State, tid: usize, mut c: Munmap, reuse: bool, ctx: &mut Ctx) -> bool {
    if let Some(put) = c.put {
        let (ran, next) = put_step(st, tid, put, ctx);
        c.put = next;
        st.threads[tid] = Thread::Munmap(c);
        return ran;
    }
    let me = t8(tid);
    let av = st.vma[ix(VMA_S)].anon_vma;
    match c.pc {
        MunmapPc::Done => return false,
        MunmapPc::MmapWriteLock => {
            if st.mm != 0 {
                return false;
            }
            st.mm = -1;
            ctx.say(|| "munmap(S): mmap_write_lock".into());
            c.pc = MunmapPc::Zap;
        }
        MunmapPc::Zap => {
            if st.vma[ix(VMA_S)].ptl.is_some() {
                return false;
            }
            let had = st.vma[ix(VMA_S)].pte;
            if had {
                st.vma[ix(VMA_S)].pte = false;
                st.folio.mapcount -= 1;
                st.folio.refcount -= 1;
            }
            ctx.say(|| {
                if had {
                    "zap_pte_range(S) under PTL: clear PTE; folio_remove_rmap_pte (mapcount -1)"
                        .into()
                } else {
                    "zap_pte_range(S) under PTL: PTE none".into()
                }
            });
            c.pc = MunmapPc::UnlinkLock;
        }
        MunmapPc::UnlinkLock => {
            let r = st.av[ix(av)].root;
            if st.av[ix(r)].rwsem.count != 0 {
                return false;
            }
            verify_lock_order(
                st,
                tid,
                CLASS_ANON,
                "unlink_anon_vmas: anon_vma_lock_write",
                ctx,
            );
            try_write(st, r, tid);
            c.locked = Some(r);
            ctx.say(|| {
                format!(
                    "unlink_anon_vmas(S): anon_vma_lock_write({}) = down_write(root {})",
                    slot_name(av),
                    slot_name(r)
                )
            });
            c.pc = MunmapPc::Unlink;
        }
        MunmapPc::Unlink => {
            let r = st.av[ix(av)].root;
            if !holds_write(st, r, tid) {
                ctx.violate(Invariant::AnonVmaUnlockMatchesLock, || {
                    format!(
                        "anon_vma_interval_tree_remove on {} without its root rwsem",
                        slot_name(av)
                    )
                });
            }
            st.av[ix(av)].tree &= !(1 << VMA_S);
            ctx.say(|| {
                format!(
                    "anon_vma_interval_tree_remove(S's avc from {}->rb_root)",
                    slot_name(av)
                )
            });
            c.pc = MunmapPc::UnlinkUnlock;
        }
        MunmapPc::UnlinkUnlock => {
            let r = st.av[ix(av)].root;
            up_write(st, r, tid, ctx, "unlink_anon_vmas: anon_vma_unlock_write");
            c.locked = None;
            ctx.say(|| {
                format!(
                    "anon_vma_unlock_write({}) = up_write(root {})",
                    slot_name(av),
                    slot_name(r)
                )
            });
            c.pc = MunmapPc::Put;
        }
        MunmapPc::Put => {
            let (ran, next) = put_step(st, tid, (av, PutPc::Dec), ctx);
            debug_assert!(ran);
            c.put = next;
            c.pc = MunmapPc::RemoveVma;
        }
        MunmapPc::RemoveVma => {
            st.vma[ix(VMA_S)].present = false;
            st.mm = 0;
            ctx.say(|| "remove_vma(S); mmap_write_unlock".into());
            c.pc = if reuse {
                MunmapPc::Reuse
            } else {
                MunmapPc::Done
            };
        }
        MunmapPc::Reuse => {
            let x = &mut st.av[ix(SLOT_X)];
            if x.live {
                ctx.say(|| "X still allocated: nothing to reuse".into());
            } else {
                x.gen = x.gen.wrapping_add(1);
                x.live = true;
                x.refcount = 1;
                x.root = SLOT_R;
                x.tree = 0;
                let g = x.gen;
                st.av[ix(SLOT_R)].refcount += 1;
                ctx.say(|| {
                    format!("anon_vma_fork in another process: anon_vma_alloc reuses slot X (gen {g}, refcount 1, root R', empty tree, rwsem NOT reset)")
                });
            }
            c.pc = MunmapPc::Done;
        }
    }
    let _ = me;
    st.threads[tid] = Thread::Munmap(c);
    true
}

// ---------------------------------------------------------------------------------------------
// fork() after the move, the parent's MADV_DONTNEED(D), the child's COW reuse of F.

fn fork_step(st: &mut State, tid: usize, mut k: Fork, ctx: &mut Ctx) -> bool {
    let me = t8(tid);
    let d = ix(VMA_D);
    let dc = ix(VMA_DC);
    match k.pc {
        ForkPc::Done => return false,
        ForkPc::MmapWriteLock => {
            if st.mm != 0 {
                return false;
            }
            st.mm = -1;
            ctx.say(|| "fork: dup_mmap: mmap_write_lock(parent)".into());
            k.pc = ForkPc::AnonVmaClone;
        }
        ForkPc::AnonVmaClone => {
            let root = st.av[ix(st.vma[d].anon_vma)].root;
            if st.av[ix(root)].rwsem.count != 0 {
                return false;
            }
            verify_lock_order(
                st,
                tid,
                CLASS_ANON,
                "anon_vma_clone: anon_vma_lock_write",
                ctx,
            );
            let parent = st.vma[d].anon_vma;
            st.av[ix(parent)].tree |= 1 << VMA_DC;
            ctx.say(|| {
                format!(
                    "anon_vma_fork(D', D) -> anon_vma_clone: anon_vma_lock_write(root {}); anon_vma_chain_link(D', {}); unlock",
                    slot_name(root),
                    slot_name(parent)
                )
            });
            k.pc = ForkPc::AnonVmaAlloc;
        }
        ForkPc::AnonVmaAlloc => {
            let parent = st.vma[d].anon_vma;
            let root = st.av[ix(parent)].root;
            if st.av[ix(root)].rwsem.count != 0 {
                return false;
            }
            verify_lock_order(
                st,
                tid,
                CLASS_ANON,
                "anon_vma_fork: anon_vma_lock_write",
                ctx,
            );
            // SLAB_TYPESAFE_BY_RCU: the slab hands out X's freed slot at once when it is free.
            let slot = if st.av[ix(SLOT_X)].live {
                SLOT_Z
            } else {
                SLOT_X
            };
            let a = &mut st.av[ix(slot)];
            a.live = true;
            a.gen = a.gen.wrapping_add(1);
            a.refcount = 1;
            a.root = root;
            a.tree = 1 << VMA_DC;
            let g = a.gen;
            st.av[ix(root)].refcount += 1;
            st.vma[dc].present = true;
            st.vma[dc].anon_vma = slot;
            ctx.say(|| {
                format!(
                    "anon_vma_fork: anon_vma_alloc reuses slot {} (gen {g}, refcount 1, rwsem NOT reset); root = parent = {} (get_anon_vma(root)); D'->anon_vma = {}; anon_vma_chain_link(D', {}) under root {}",
                    slot_name(slot),
                    slot_name(root),
                    slot_name(slot),
                    slot_name(slot),
                    slot_name(root)
                )
            });
            k.pc = ForkPc::CopyPte;
        }
        ForkPc::CopyPte => {
            if st.vma[d].ptl.is_some() || st.vma[dc].ptl.is_some() {
                return false;
            }
            k.copied = st.vma[d].pte;
            if k.copied {
                st.vma[dc].pte = true;
                st.folio.mapcount += 1;
                st.folio.refcount += 1;
                st.folio.exclusive = false;
                ctx.say(|| {
                    "copy_pte_range(D -> D') under both PTLs: folio_try_dup_anon_rmap_pte: ClearPageAnonExclusive; both PTEs write-protected; folio_get".into()
                });
            } else {
                ctx.say(|| {
                    "copy_pte_range(D -> D'): D maps nothing (the move did not happen)".into()
                });
            }
            k.pc = ForkPc::MmapWriteUnlock;
        }
        ForkPc::MmapWriteUnlock => {
            st.mm = 0;
            ctx.say(|| "dup_mmap: mmap_write_unlock(parent); the child runs".into());
            k.pc = if k.copied {
                ForkPc::ParentZap
            } else {
                ForkPc::Done
            };
        }
        ForkPc::ParentZap => {
            if st.mm < 0 || st.vma[d].ptl.is_some() {
                return false;
            }
            let had = st.vma[d].pte;
            if had {
                st.vma[d].pte = false;
                st.folio.mapcount -= 1;
                st.folio.refcount -= 1;
            }
            ctx.say(|| {
                if had {
                    "parent: madvise(D, MADV_DONTNEED): zap_pte_range(D) under PTL; folio_remove_rmap_pte (mapcount -1); folio_put".into()
                } else {
                    "parent: madvise(D, MADV_DONTNEED): PTE none".into()
                }
            });
            k.pc = ForkPc::CowFault;
        }
        ForkPc::CowFault => {
            if st.vma[dc].ptl.is_some() {
                return false;
            }
            let rc = st.folio.refcount;
            if !st.vma[dc].pte {
                ctx.say(|| "child: write fault on D': PTE none (nothing to reuse)".into());
                k.pc = ForkPc::Done;
            } else if rc != 1 {
                // wp_page_copy: D' gets a private copy; F leaves D'.
                st.vma[dc].pte = false;
                st.folio.mapcount -= 1;
                st.folio.refcount -= 1;
                ctx.say(|| {
                    format!(
                        "child: write fault on D': do_wp_page -> wp_can_reuse_anon_folio: folio_ref_count(F) = {rc} != 1 -> no reuse; wp_page_copy (D' gets a copy; F unmapped from D')"
                    )
                });
                k.pc = ForkPc::Done;
            } else if st.folio.lock.is_some() {
                st.vma[dc].pte = false;
                st.folio.mapcount -= 1;
                st.folio.refcount -= 1;
                ctx.say(|| {
                    "child: write fault on D': do_wp_page -> wp_can_reuse_anon_folio: folio_trylock(F) fails -> wp_page_copy (F unmapped from D')".into()
                });
                k.pc = ForkPc::Done;
            } else {
                st.vma[dc].ptl = Some(me);
                st.folio.lock = Some(me);
                ctx.say(|| {
                    "child: write fault on D': do_wp_page under PTL of D': wp_can_reuse_anon_folio: folio_ref_count(F) == 1; folio_trylock(F) -> ok".into()
                });
                k.pc = ForkPc::CowMove;
            }
        }
        ForkPc::CowMove => {
            let new = st.vma[dc].anon_vma;
            let old = st.folio.mapping;
            let old_root = old.map(|o| st.av[ix(o)].root);
            let new_root = st.av[ix(new)].root;
            if st.folio.lock != Some(me) || old_root != Some(new_root) {
                ctx.violate(Invariant::FolioMoveAnonRmapLocked, || {
                    "folio_move_anon_rmap by COW reuse without the folio lock or across roots"
                        .into()
                });
            }
            st.folio.mapping = Some(new);
            st.folio.exclusive = true;
            ctx.say(|| {
                format!(
                    "folio_move_anon_rmap(F, D'): WRITE_ONCE(folio->mapping, {}|ANON) (same root {}: folio lock only); SetPageAnonExclusive",
                    slot_name(new),
                    slot_name(new_root)
                )
            });
            k.pc = ForkPc::CowUnlock;
        }
        ForkPc::CowUnlock => {
            st.folio.lock = None;
            st.vma[dc].ptl = None;
            ctx.say(|| "folio_unlock(F); wp_page_reuse; pte_unmap_unlock(D')".into());
            k.pc = ForkPc::Done;
        }
    }
    st.threads[tid] = Thread::Fork(k);
    true
}

// ---------------------------------------------------------------------------------------------
// GUP-fast.

fn gup_step(st: &mut State, tid: usize, ctx: &mut Ctx) -> bool {
    let mapped = st.vma.iter().any(|v| v.pte);
    if mapped {
        st.folio.pinned = true;
        ctx.say(|| {
            "GUP-fast: lockless walk finds F; try_grab_folio(FOLL_PIN) (folio_maybe_dma_pinned)"
                .into()
        });
    } else {
        ctx.say(|| "GUP-fast: no present PTE, nothing pinned".into());
    }
    st.threads[tid] = Thread::Gup(true);
    true
}

#[cfg(test)]
mod tests;
