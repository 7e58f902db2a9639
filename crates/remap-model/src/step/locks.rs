//! Locks and checks shared by the threads: rwsems, the lock order, `put_anon_vma`, the
//! checks after every step.

use super::{bit, ix, t8, Ctx};
use crate::invariant::Invariant;
use crate::state::*;

/// Classes of the documented lock order (top of mm/rmap.c), mmap_lock aside.
pub(super) const CLASS_FOLIO: u8 = 1;
pub(super) const CLASS_ANON: u8 = 2;
pub(super) const CLASS_PTL: u8 = 3;

/// Invariant 9: a blocking acquisition of `class` while holding a lock of a later class.
pub(super) fn verify_lock_order(st: &State, tid: usize, class: u8, what: &str, ctx: &mut Ctx) {
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

pub(super) fn try_read(st: &mut State, slot: u8, tid: usize) -> bool {
    let r = &mut st.av[ix(slot)].rwsem;
    if r.count < 0 {
        return false;
    }
    r.count += 1;
    r.readers |= bit(tid);
    true
}

pub(super) fn try_write(st: &mut State, slot: u8, tid: usize) -> bool {
    let r = &mut st.av[ix(slot)].rwsem;
    if r.count != 0 {
        return false;
    }
    r.count = -1;
    r.writer = Some(t8(tid));
    true
}

/// `up_read`; invariant 1 when this thread does not hold it for reading.
pub(super) fn up_read(st: &mut State, slot: u8, tid: usize, ctx: &mut Ctx, who: &str) {
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
pub(super) fn up_write(st: &mut State, slot: u8, tid: usize, ctx: &mut Ctx, who: &str) {
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

pub(super) fn holds_read(st: &State, slot: u8, tid: usize) -> bool {
    st.av[ix(slot)].rwsem.readers & bit(tid) != 0
}

pub(super) fn holds_write(st: &State, slot: u8, tid: usize) -> bool {
    st.av[ix(slot)].rwsem.writer == Some(t8(tid))
}

/// Checks after every step: invariants 5 (PTE count) and 7 (no negative refcount).
pub(super) fn global_checks(st: &State, ctx: &mut Ctx) {
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
pub(super) fn verify_move_present_pte_atomic(st: &State, ctx: &mut Ctx) {
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
pub(super) fn put_step(
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
pub(super) fn verify_put_anon_vma_free(st: &State, s: u8, ctx: &mut Ctx) {
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
