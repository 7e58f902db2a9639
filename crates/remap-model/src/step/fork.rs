//! The fork thread: `fork()` after the move, the parent's `MADV_DONTNEED(D)`, the child's COW
//! reuse of F.

use super::locks::{verify_lock_order, CLASS_ANON};
use super::{ix, t8, Ctx};
use crate::invariant::Invariant;
use crate::state::*;

/// One step of the fork thread `tid` at `k.pc`; `false` when it blocks or has finished.
pub(super) fn fork_step(st: &mut State, tid: usize, mut k: Fork, ctx: &mut Ctx) -> bool {
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
