//! The walker thread: `folio_referenced` -> `folio_lock_anon_vma_read` -> `rmap_walk_anon`.

use super::locks::{
    holds_read, put_step, try_read, up_read, verify_lock_order, CLASS_ANON, CLASS_FOLIO, CLASS_PTL,
};
use super::{ix, mapping_text, ptl_held_by_other, t8, walker_entry, Ctx};
use crate::config::{Completeness, Config, Protocol, WalkerMode};
use crate::invariant::Invariant;
use crate::state::*;

/// One step of the walker thread `tid` at `w.pc`; `false` when it blocks or has finished.
pub(super) fn walker_step(
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

/// The next VMA in the anon_vma's interval tree that covers `pgoff`, from `from` on.
pub(super) fn next_candidate(st: &State, w: &Walker, from: u8) -> WalkerPc {
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
pub(super) fn verify_folio_lock_anon_vma_read_current(st: &State, w: &Walker, ctx: &mut Ctx) {
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
pub(super) fn verify_walk(st: &State, tid: usize, w: &Walker, ctx: &mut Ctx) {
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
pub(super) fn verify_rmap_walk_anon_complete(
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
