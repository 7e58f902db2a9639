//! The mover thread: `move_pages_pte` / `move_present_pte`.

use super::locks::{
    holds_write, put_step, try_write, up_write, verify_lock_order, CLASS_ANON, CLASS_FOLIO,
    CLASS_PTL,
};
use super::{ix, mapping_text, t8, Ctx};
use crate::config::Protocol;
use crate::invariant::Invariant;
use crate::state::*;

/// One step of the mover thread `tid` at `m.pc`; `false` when it blocks or has finished.
pub(super) fn mover_step(
    st: &mut State,
    tid: usize,
    mut m: Mover,
    p: &Protocol,
    ctx: &mut Ctx,
) -> bool {
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
pub(super) fn snap(st: &State) -> Snap {
    Snap {
        mapping: st.folio.mapping,
        index: st.folio.index,
        ptes: [st.vma[0].pte, st.vma[1].pte, st.vma[2].pte],
        mapcount: st.folio.mapcount,
    }
}

pub(super) fn first_store(p: &Protocol) -> MoverPc {
    if p.index_first {
        MoverPc::StoreIndex
    } else {
        MoverPc::StoreMapping
    }
}

pub(super) fn after_stores(p: &Protocol) -> MoverPc {
    if p.prefix_pin_order {
        MoverPc::Clear
    } else {
        set_dst(p)
    }
}

/// The step that installs the destination PTE: `set_pte_at` at once, or with `SplitPtl` first
/// the source PTL's unlock and the destination PTL's lock.
pub(super) fn set_dst(p: &Protocol) -> MoverPc {
    if p.split_ptl {
        MoverPc::SrcUnlock
    } else {
        MoverPc::SetDst
    }
}

/// Where the unwinding continues after `from` (`out:` label of `move_pages_pte`).
pub(super) fn cleanup_next(m: &Mover, from: MoverPc) -> MoverPc {
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
pub(super) fn fail(st: &State, m: &mut Mover, e: MoveErr, ctx: &mut Ctx) {
    m.err = Some(e);
    verify_move_present_pte_failure_atomic(st, m, ctx);
    m.pc = cleanup_next(m, MoverPc::PinRecheck);
}

/// Invariant 6 (`move_present_pte` error path): nothing changed since the folio lock was taken.
pub(super) fn verify_move_present_pte_failure_atomic(st: &State, m: &Mover, ctx: &mut Ctx) {
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
pub(super) fn verify_folio_move_anon_rmap_locked(
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
