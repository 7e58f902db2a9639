//! The munmap thread: `munmap(S)`, then slab reuse of the freed slot.

use super::locks::{holds_write, put_step, try_write, up_write, verify_lock_order, CLASS_ANON};
use super::{ix, t8, Ctx};
use crate::invariant::Invariant;
use crate::state::*;

/// One step of the munmap thread `tid` at `c.pc` (`reuse`: the freed slot is reallocated);
/// `false` when it blocks or has finished.
pub(super) fn munmap_step(
    st: &mut State,
    tid: usize,
    mut c: Munmap,
    reuse: bool,
    ctx: &mut Ctx,
) -> bool {
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
