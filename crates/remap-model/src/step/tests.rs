use super::locks::{global_checks, put_step, up_read};
use super::walker::verify_folio_lock_anon_vma_read_current;
use super::*;
use crate::config::{expected_table, Completeness, Version};

fn cfg(name: &str) -> Config {
    expected_table()
        .into_iter()
        .find(|e| e.config.name == name)
        .map(|e| e.config)
        .expect("configuration")
}

#[test]
fn initial_state_is_clean_and_every_thread_can_start() {
    let c = cfg("v2");
    let st = initial_state(&c);
    let mut ctx = Ctx::default();
    global_checks(&st, &mut ctx);
    assert!(ctx.violations.is_empty());
    assert_eq!(st.roles, [Role::Walker, Role::Mover, Role::Munmap]);
    for t in 0..st.threads.len() {
        let mut s = st.clone();
        assert!(step(&mut s, t, &c, &mut Ctx::default()), "thread {t}");
    }
}

#[test]
fn mmap_write_lock_blocks_while_a_mover_reads() {
    let c = cfg("v2");
    let mut st = initial_state(&c);
    assert!(step(&mut st, 1, &c, &mut Ctx::default())); // B: mmap_read_lock
    let mut s = st.clone();
    assert!(!step(&mut s, 2, &c, &mut Ctx::default())); // C: mmap_write_lock blocks
}

#[test]
fn up_read_of_an_unheld_rwsem_violates_invariant_1() {
    let c = cfg("v0");
    let mut st = initial_state(&c);
    st.av[usize::from(SLOT_R)].rwsem.count = 1;
    let mut ctx = Ctx::default();
    up_read(&mut st, SLOT_R, 0, &mut ctx, "test");
    assert_eq!(ctx.violations.len(), 1);
    assert_eq!(
        ctx.violations[0].invariant,
        Invariant::AnonVmaUnlockMatchesLock
    );
}

#[test]
fn put_anon_vma_frees_at_zero_and_double_free_is_caught() {
    let c = cfg("v0");
    let mut st = initial_state(&c);
    let mut ctx = Ctx::default();
    let mut put = Some((SLOT_X, PutPc::Dec));
    while let Some(p) = put {
        let (ran, next) = put_step(&mut st, 2, p, &mut ctx);
        assert!(ran);
        put = next;
    }
    assert!(!st.av[usize::from(SLOT_X)].live);
    assert!(ctx.violations.is_empty());
    let (_, _) = put_step(&mut st, 2, (SLOT_X, PutPc::Free), &mut ctx);
    assert_eq!(ctx.violations[0].invariant, Invariant::PutAnonVmaBalanced);
}

#[test]
fn protocol_switches_follow_the_versions() {
    let p = |v| crate::config::Protocol::new(v, None);
    assert!(!p(Version::V0).recheck_fast && !p(Version::V0).recheck_slow);
    assert!(!p(Version::V1).recheck_fast && p(Version::V1).recheck_slow);
    assert!(p(Version::V2).recheck_fast && p(Version::V2).mover_anon_lock);
    let v3 = p(Version::V3);
    assert!(v3.walker_folio_lock && !v3.mover_anon_lock && v3.completeness == Completeness::Strict);
}

#[test]
fn invariant_5_fires_only_when_no_ptl_hides_the_ptes() {
    let c = cfg("v2");
    let mut st = initial_state(&c);
    // Mid-move: S cleared, D not yet set, F still counted as mapped once.
    st.vma[usize::from(VMA_S)].pte = false;
    for held in [VMA_S, VMA_D] {
        let mut s = st.clone();
        s.vma[usize::from(held)].ptl = Some(1);
        let mut ctx = Ctx::default();
        global_checks(&s, &mut ctx);
        assert!(ctx.violations.is_empty(), "PTL of {held} held");
    }
    let mut ctx = Ctx::default();
    global_checks(&st, &mut ctx);
    assert_eq!(ctx.violations.len(), 1);
    assert_eq!(ctx.violations[0].invariant, Invariant::MovePresentPteAtomic);
    // Both PTEs set with mapcount 1 (dst set before src cleared, outside the PTLs).
    st.vma[usize::from(VMA_S)].pte = true;
    st.vma[usize::from(VMA_D)].pte = true;
    let mut ctx = Ctx::default();
    global_checks(&st, &mut ctx);
    assert_eq!(ctx.violations[0].invariant, Invariant::MovePresentPteAtomic);
}

#[test]
fn folio_lock_under_the_anon_vma_lock_violates_invariant_9() {
    let c = cfg("v2");
    let base = initial_state(&c);
    let mover_at_folio_lock = |holds_anon: bool| {
        let mut st = base.clone();
        if let Thread::Mover(m) = &mut st.threads[1] {
            m.pc = MoverPc::FolioLock;
            m.locked = holds_anon.then_some(SLOT_X);
        }
        if holds_anon {
            st.av[usize::from(SLOT_X)].rwsem = Rwsem {
                count: -1,
                readers: 0,
                writer: Some(1),
            };
        }
        let mut ctx = Ctx::default();
        assert!(step(&mut st, 1, &c, &mut ctx));
        ctx.violations
    };
    assert!(mover_at_folio_lock(false).is_empty());
    let v = mover_at_folio_lock(true);
    assert_eq!(v.len(), 1);
    assert_eq!(v[0].invariant, Invariant::LockOrderNoDeadlock);
}

#[test]
fn blocked_on_names_the_lock_and_its_holder() {
    let c = cfg("v2");
    let mut st = initial_state(&c);
    st.folio.lock = Some(0);
    if let Thread::Mover(m) = &mut st.threads[1] {
        m.pc = MoverPc::FolioLock;
    }
    assert_eq!(
        blocked_on(&st, 1, &c).as_deref(),
        Some("folio_lock(F), held by A")
    );
    assert_eq!(blocked_on(&st, 2, &c), None);
}

#[test]
fn invariant_3_is_root_equality_not_pointer_equality() {
    // Change 2a: a same-root move (COW reuse after fork) may change folio->mapping after the
    // walker's re-check; what the walk needs is that it holds the root of folio->mapping.
    let c = cfg("v2-fork-aba");
    let mut st = initial_state(&c);
    let w = Walker {
        av: SLOT_Y,
        root: SLOT_Y,
        locked: Some(SLOT_Y),
        ..match st.threads[0] {
            Thread::Walker(w) => w,
            _ => unreachable!("thread 0 is the walker"),
        }
    };
    // Z is a child of Y (anon_vma_fork) and F was moved into it: same root, no violation.
    st.av[usize::from(SLOT_Z)].live = true;
    st.av[usize::from(SLOT_Z)].root = SLOT_Y;
    st.folio.mapping = Some(SLOT_Z);
    let mut ctx = Ctx::default();
    verify_folio_lock_anon_vma_read_current(&st, &w, &mut ctx);
    assert!(ctx.violations.is_empty(), "{:?}", ctx.violations);
    // X is its own root: a different root than the one the walker holds.
    st.folio.mapping = Some(SLOT_X);
    verify_folio_lock_anon_vma_read_current(&st, &w, &mut ctx);
    assert_eq!(ctx.violations.len(), 1);
    assert_eq!(
        ctx.violations[0].invariant,
        Invariant::FolioLockAnonVmaReadCurrent
    );
}

#[test]
fn cow_reuse_refuses_a_folio_with_another_reference() {
    // wp_can_reuse_anon_folio: folio_ref_count() must be exactly 1 (the mapping's own).
    for (name, reuses) in [("v2-fork-aba", false), ("mut-walker-no-ref", true)] {
        let c = cfg(name);
        let mut st = initial_state(&c);
        let k = st
            .roles
            .iter()
            .position(|&r| r == Role::Fork)
            .expect("fork");
        // Put F in D only (as after the move), then let K fork, drop D and fault on D'.
        st.vma[usize::from(VMA_S)].pte = false;
        st.vma[usize::from(VMA_D)].pte = true;
        st.folio.mapping = Some(SLOT_Y);
        while !st.threads[k].done() {
            assert!(step(&mut st, k, &c, &mut Ctx::default()), "{name}");
        }
        assert_eq!(st.folio.mapping == Some(SLOT_Z), reuses, "{name}");
        assert_eq!(st.vma[usize::from(VMA_DC)].pte, reuses, "{name}");
    }
}

#[test]
fn put_of_the_last_child_frees_the_root_too() {
    // __put_anon_vma: freeing a child drops its reference on the root with atomic_dec_and_test
    // and frees the root when that was the last one.
    let c = cfg("v2-fork-aba");
    let mut st = initial_state(&c);
    let (y, z) = (usize::from(SLOT_Y), usize::from(SLOT_Z));
    st.av[z].live = true;
    st.av[z].root = SLOT_Y;
    st.av[z].refcount = 1;
    st.av[y].refcount = 1; // only Z's reference is left (D is gone)
    let mut ctx = Ctx {
        record: true,
        ..Ctx::default()
    };
    let mut put = Some((SLOT_Z, PutPc::Dec));
    let mut labels = Vec::new();
    while let Some(p) = put {
        let (ran, next) = put_step(&mut st, 0, p, &mut ctx);
        assert!(ran);
        labels.push(ctx.label.clone());
        put = next;
    }
    assert!(ctx.violations.is_empty(), "{:?}", ctx.violations);
    assert!(!st.av[z].live && !st.av[y].live, "{labels:?}");
    assert!(
        labels
            .iter()
            .any(|l| l.contains("atomic_dec_and_test(root Y->refcount) 1 -> 0")),
        "{labels:?}"
    );
    // With another reference left on the root, only the child goes.
    let mut st = initial_state(&c);
    st.av[z].live = true;
    st.av[z].root = SLOT_Y;
    st.av[z].refcount = 1;
    st.av[y].refcount = 2;
    let mut put = Some((SLOT_Z, PutPc::Dec));
    while let Some(p) = put {
        put = put_step(&mut st, 0, p, &mut Ctx::default()).1;
    }
    assert!(!st.av[z].live && st.av[y].live && st.av[y].refcount == 1);
}

#[test]
fn folio_referenced_preamble_skips_unmapped_folios_and_counts_mappings() {
    let c = cfg("v2");
    // folio_mapcount() == 0: return 0 without a walk.
    let mut st = initial_state(&c);
    st.folio.mapcount = 0;
    st.vma[usize::from(VMA_S)].pte = false;
    let mut ctx = Ctx {
        record: true,
        ..Ctx::default()
    };
    assert!(step(&mut st, 0, &c, &mut ctx));
    assert!(st.threads[0].done(), "{}", ctx.label);
    assert!(ctx.label.contains("folio_mapcount(F) = 0"), "{}", ctx.label);
    // folio_raw_mapping() == NULL: likewise.
    let mut st = initial_state(&c);
    st.folio.mapping = None;
    assert!(step(&mut st, 0, &c, &mut ctx));
    assert!(st.threads[0].done(), "{}", ctx.label);
    assert!(
        ctx.label.contains("folio_raw_mapping(F) = NULL"),
        "{}",
        ctx.label
    );
    // An anon, non-KSM folio is walked without the folio lock in V2, trylocked in V3; the
    // mapping count becomes the walk's budget.
    for (name, next) in [("v2", WalkerPc::S1), ("v3", WalkerPc::FolioTrylock)] {
        let c = cfg(name);
        let mut st = initial_state(&c);
        assert!(step(&mut st, 0, &c, &mut ctx));
        let Thread::Walker(w) = st.threads[0] else {
            unreachable!("thread 0 is the walker")
        };
        assert_eq!((w.pc, w.budget), (next, Some(1)), "{name}");
    }
}

/// Runs `tid` until its label contains `until` (inclusive); panics if it blocks first.
fn run_until(st: &mut State, c: &Config, tid: usize, until: &str) -> Vec<String> {
    let mut labels = Vec::new();
    loop {
        let mut ctx = Ctx {
            record: true,
            ..Ctx::default()
        };
        assert!(step(st, tid, c, &mut ctx), "blocked after {labels:?}");
        assert!(ctx.violations.is_empty(), "{:?}", ctx.violations);
        let done = ctx.label.contains(until);
        labels.push(ctx.label);
        if done {
            return labels;
        }
    }
}

#[test]
fn mover_trylocks_then_sleeps_and_retries_as_6_8_does() {
    // Change 3: anon_vma_trylock_write fails while the walker holds root X for reading; the
    // mover drops the PTE maps, sleeps in anon_vma_lock_write and re-reads the PTEs.
    let c = cfg("v2");
    let mut st = initial_state(&c);
    run_until(&mut st, &c, 0, "S5 down_read_trylock(root X) -> ok");
    let b = run_until(&mut st, &c, 1, "down_write_trylock(root X) -> busy");
    assert!(
        b.iter().any(|l| l.contains("folio_trylock(F) -> ok")),
        "{b:?}"
    );
    assert!(!step(&mut st.clone(), 1, &c, &mut Ctx::default()), "sleeps");
    run_until(&mut st, &c, 0, "rmap_walk_anon done");
    let b = run_until(&mut st, &c, 1, "UFFDIO_MOVE returns");
    assert!(b[0].contains("anon_vma_lock_write(X) = down_write(root X) (slept); goto retry"));
    assert!(
        b[1].starts_with("move_pages_pte: retry: read dst PTE"),
        "{b:?}"
    );
    assert!(
        b.last().is_some_and(|l| l.ends_with("returns 0 (moved)")),
        "{b:?}"
    );

    // folio_trylock fails while a migration-style walker holds the folio: the mover keeps its
    // folio reference, sleeps in folio_lock and retries from the PTE reads.
    let c = cfg("v2-migration");
    let mut st = initial_state(&c);
    run_until(&mut st, &c, 0, "migration: folio_lock(F)");
    let b = run_until(&mut st, &c, 1, "folio_trylock(F) -> busy");
    assert_eq!(st.folio.refcount, 3, "{b:?}");
    assert!(!step(&mut st.clone(), 1, &c, &mut Ctx::default()), "sleeps");
    run_until(&mut st, &c, 0, "folio_unlock(F)");
    let b = run_until(&mut st, &c, 1, "UFFDIO_MOVE returns");
    assert!(b[0].contains("folio_lock(F) (slept); goto retry"), "{b:?}");
    assert!(b[1].starts_with("move_pages_pte: retry:"), "{b:?}");
    assert!(
        b.last().is_some_and(|l| l.ends_with("returns 0 (moved)")),
        "{b:?}"
    );
}

#[test]
fn newest_mover_batches_under_the_held_ptls() {
    // Change 5: V3's move_present_ptes: ptep_get_and_clear, a plain index store, one
    // flush_tlb_range before double_pt_unlock, and F (a batch's middle folio) trylocked and
    // unlocked with both PTLs held.
    let c = cfg("v3-batch");
    let mut st = initial_state(&c);
    let b = run_until(&mut st, &c, 1, "folio_unlock(F) under the PTLs");
    let text = b.join("\n");
    for label in [
        "move_pages_ptes: F0, the batch's first folio",
        "move_present_ptes: double_pt_lock(D, S)",
        "check_ptes_for_batched_move(S+1): dst none, src present, PageAnonExclusive, not large, folio_trylock(F) -> ok",
        "ptep_get_and_clear(S)",
        "folio->index = linear_page_index(D) = 0x20 (plain store)",
        "set_pte_at(D, mk_pte(F))",
    ] {
        assert!(text.contains(label), "{label} not in\n{text}");
    }
    assert!(!text.contains("ptep_clear_flush") && !text.contains("WRITE_ONCE(folio->index"));
    assert_eq!(st.folio.lock, None);
    assert!(st.vma[usize::from(VMA_D)].ptl.is_some() && st.vma[usize::from(VMA_S)].ptl.is_some());
    // The walker can lock F now; its lockless map_pte sees D present and waits for D's PTL.
    run_until(&mut st, &c, 0, "map_pte: ptep_get (no PTL) -> present");
    assert!(
        !step(&mut st.clone(), 0, &c, &mut Ctx::default()),
        "waits for the PTL"
    );
    let b = run_until(&mut st, &c, 1, "double_pt_unlock");
    assert!(
        b[0].contains("flush_tlb_range(S, batch) with both PTLs held"),
        "{b:?}"
    );
    let a = run_until(&mut st, &c, 0, "rmap_walk_anon done");
    assert!(a[0].contains("check_pte -> F found"), "{a:?}");

    // A walker that holds F makes the batch's trylock fail: the batch ends without sleeping
    // and the next move_pages_ptes call takes F with the trylock-then-sleep path.
    let mut st = initial_state(&c);
    run_until(&mut st, &c, 0, "folio_trylock(F) -> ok");
    let b = run_until(&mut st, &c, 1, "folio_trylock(F) -> busy");
    assert!(b.iter().any(|l| l.contains("the batch ends")), "{b:?}");
    let b = run_until(&mut st, &c, 1, "folio_trylock(F) -> busy");
    assert!(b[0].starts_with("double_pt_unlock"), "{b:?}");
    assert!(
        !step(&mut st.clone(), 1, &c, &mut Ctx::default()),
        "sleeps in folio_lock"
    );
}
