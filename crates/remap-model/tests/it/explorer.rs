//! The exhaustive explorer reproduces the expected table, with readable shortest traces.

use remap_model::state::thread_name;
use remap_model::step::{any_enabled, initial_state, step, Ctx};
use remap_model::{
    expected_table, explore, run_config, Bounds, Completeness, Expect, Invariant, Mutation, Outcome,
};

use crate::row;

/// Runs `name`, prints its traces, and asserts it matches the expected table.
fn check(name: &str) -> remap_model::Report {
    let report = run_config(&row(name), &Bounds::default());
    for inv in &report.invariants {
        if let Some(t) = &inv.trace {
            eprintln!("{name}: {} broken\n{}", inv.invariant, t.render());
        }
    }
    assert!(report.complete, "{name}: exploration cut short");
    for inv in &report.invariants {
        assert!(
            inv.matches,
            "{name}: invariant {} expected {:?}, got {:?}",
            inv.invariant, inv.expected, inv.actual
        );
    }
    report
}

fn broken(report: &remap_model::Report) -> Vec<u8> {
    report
        .invariants
        .iter()
        .filter(|i| i.actual == Outcome::Broken)
        .map(|i| i.number)
        .collect()
}

#[test]
fn v0_try_lock_walker_breaks_1_2_3_8() {
    assert_eq!(broken(&check("v0")), [1, 2, 3, 8]);
}

#[test]
fn v0_slow_path_breaks_without_recheck() {
    assert_eq!(broken(&check("v0-slow")), [2, 3, 8]);
}

#[test]
fn v1_try_lock_walker_breaks_1_2_3_8() {
    assert_eq!(broken(&check("v1")), [1, 2, 3, 8]);
}

#[test]
fn v1_slow_path_is_fixed_by_s12() {
    assert!(broken(&check("v1-slow")).is_empty());
}

#[test]
fn v2_holds_every_invariant() {
    for name in ["v2", "v2-blocking", "v2-aba", "v2-gup", "v2-migration"] {
        assert!(broken(&check(name)).is_empty(), "{name}");
    }
}

#[test]
fn v3_holds_every_invariant_strictly() {
    for name in ["v3", "v3-blocking", "v3-aba"] {
        let r = check(name);
        assert_eq!(r.config.protocol().completeness, Completeness::Strict);
        assert!(broken(&r).is_empty(), "{name}");
    }
}

#[test]
fn v2_strict_completeness_misses_d_during_the_ptl_section() {
    // With invariant 8 strict, V2 misses the PTE when the walk overlaps the mover's PTL section.
    let r = check("v2-strict");
    assert_eq!(broken(&r), [8]);
    let text = r.invariants[7].trace.as_ref().expect("trace").render();
    let store = text.find("folio_move_anon_rmap").expect(&text);
    let read = text.find("rmap_walk_anon: pgoff").expect(&text);
    let set = text.find("set_pte_at(D").expect(&text);
    assert!(store < read && read < set, "{text}");
}

#[test]
fn lockless_map_pte_misses_d_and_the_sync_walk_does_not() {
    // Change 1: folio_referenced_one's page_vma_mapped_walk is not PVMW_SYNC. A V2 walker reads
    // the new mapping, locks the new root Y (the mover holds X), reads the *new* index and finds
    // D's PTE still empty without taking the PTL: a miss the model's earlier invariant 8 (which
    // excused only an index read between the two stores) does not allow.
    let r = check("v2-index-window");
    assert_eq!(broken(&r), [8]);
    let t = r.invariants[7].trace.as_ref().expect("trace");
    let text = t.render();
    let index = text.find("WRITE_ONCE(folio->index").expect(&text);
    let pgoff = text.find("pgoff = folio_pgoff(folio)").expect(&text);
    let peek = text
        .find("map_pte: ptep_get (no PTL) -> none")
        .expect(&text);
    let set = text.find("set_pte_at(D").expect(&text);
    assert!(index < pgoff && pgoff < peek && peek < set, "{text}");
    assert!(
        text.contains("S5 down_read_trylock(root Y) -> ok"),
        "{text}"
    );
    assert!(text.contains("pgoff = folio_pgoff(folio) = folio->index (plain load) = 0x20"));
    // The control: the same check with the earlier PVMW_SYNC-style walk holds, and the kernel's
    // promise (no miss unless the walk overlaps a PTL section) holds for the real walk.
    assert!(broken(&check("v2-pvmw-sync")).is_empty());
    let v2 = check("v2");
    assert_eq!(v2.config.protocol().completeness, Completeness::PtlOverlap);
    assert!(broken(&v2).is_empty());
}

#[test]
fn mutations_are_caught() {
    assert_eq!(broken(&check("mut-v3-mover-only")), [3, 4, 8]);
    assert_eq!(broken(&check("mut-v3-walker-unlocked")), [1, 2, 3, 4, 8]);
    assert_eq!(broken(&check("mut-cached-pgoff")), [8]);
    assert_eq!(broken(&check("mut-prefix-pin")), [6, 8]);
    assert_eq!(broken(&check("mut-split-ptl")), [5]);
    assert_eq!(broken(&check("mut-anon-before-folio")), [9]);
    assert_eq!(broken(&check("mut-walker-no-ref")), [1, 3]);
}

#[test]
fn every_invariant_and_every_mutation_is_shown_to_fire() {
    // Each check must be seen to fail somewhere, or it could be stubbed to "holds" unnoticed.
    // Invariant 7 (refcount sanity) has no protocol bug that breaks it in the table; the unit
    // test `put_anon_vma_frees_at_zero_and_double_free_is_caught` fires it instead.
    let table = expected_table();
    let fires = |inv: Invariant| {
        table
            .iter()
            .any(|e| matches!(e.get(inv), Expect::Broken | Expect::BrokenUnderWeakMemory))
    };
    for inv in Invariant::ALL {
        if inv != Invariant::PutAnonVmaBalanced {
            assert!(fires(inv), "no configuration breaks {inv}");
        }
    }
    // Every mutation has a row, and each mutation row must break something ("each mutation must
    // be caught"); the explorer tests above check that the breaks are found.
    let all = [
        Mutation::V3MoverOnly,
        Mutation::V3WalkerNoFolioLock,
        Mutation::IndexBeforeMapping,
        Mutation::WalkerCachesPgoff,
        Mutation::PreFixPinOrder,
        Mutation::SplitPtl,
        Mutation::AnonLockBeforeFolioLock,
        Mutation::WalkerWithoutFolioRef,
    ];
    // Fails to compile when a mutation is added without extending `all`.
    let _exhaustive = |m: Mutation| match m {
        Mutation::V3MoverOnly
        | Mutation::V3WalkerNoFolioLock
        | Mutation::IndexBeforeMapping
        | Mutation::WalkerCachesPgoff
        | Mutation::PreFixPinOrder
        | Mutation::SplitPtl
        | Mutation::AnonLockBeforeFolioLock
        | Mutation::WalkerWithoutFolioRef => (),
    };
    for m in all {
        let rows: Vec<_> = table
            .iter()
            // A `fix-` row applies a proposed hardening on top of the mutation: a control.
            .filter(|e| e.config.mutation == Some(m) && !e.config.s6_recheck_root)
            .collect();
        assert!(!rows.is_empty(), "{m:?} has no configuration");
        for e in rows {
            assert!(
                e.expect
                    .iter()
                    .any(|x| matches!(x, Expect::Broken | Expect::BrokenUnderWeakMemory)),
                "{}: a mutation that breaks nothing is not caught",
                e.config.name
            );
            assert!(
                run_config(e, &Bounds::default()).matches_expected,
                "{}",
                e.config.name
            );
        }
    }
}

#[test]
fn split_ptl_leaves_f_mapped_by_no_pte_between_the_two_ptl_sections() {
    let r = check("mut-split-ptl");
    let inv = &r.invariants[4];
    assert_eq!(inv.invariant, Invariant::MovePresentPteAtomic);
    let t = inv.trace.as_ref().expect("trace");
    let text = t.render();
    let clear = text.find("ptep_clear_flush(S)").expect(&text);
    let unlock = text.find("spin_unlock(PTL of S)").expect(&text);
    assert!(clear < unlock, "{text}");
    // The violation is the unlock itself: S cleared, D not yet set, no PTL held.
    let last = t.steps.last().expect("steps");
    assert_eq!(last.thread, "B");
    assert!(last.step.starts_with("spin_unlock(PTL of S)"), "{text}");
    assert!(!text.contains("set_pte_at"), "{text}");
    assert!(
        t.violations[0].message.starts_with("0 PTE(s) map F"),
        "{text}"
    );
    // The control: with double_pt_lock the same threads keep invariant 5.
    assert!(broken(&check("v2")).is_empty());
    // Its earlier invariant-8 break rested on the walk waiting for D's PTL: with the lockless
    // map_pte, v2 misses D the same way, and every such miss overlaps a PTL section of the
    // mover, which is what the kernel allows. Strictly checked, both miss.
    let mut strict = row("mut-split-ptl");
    strict.config.completeness = Some(Completeness::Strict);
    assert!(explore(&strict.config, &Bounds::default())
        .broken()
        .contains(&Invariant::RmapWalkAnonComplete));
}

#[test]
fn anon_lock_before_folio_lock_deadlocks_with_a_migration_walker() {
    let r = check("mut-anon-before-folio");
    let inv = &r.invariants[8];
    assert_eq!(inv.invariant, Invariant::LockOrderNoDeadlock);
    let t = inv.trace.as_ref().expect("trace");
    let text = t.render();
    let msg = &t.violations[0].message;
    assert!(msg.starts_with("deadlock:"), "{text}");
    assert!(
        msg.contains("A waits for rwsem of root X, write-held by B"),
        "{text}"
    );
    assert!(
        msg.contains("B waits for folio_lock(F), held by A"),
        "{text}"
    );
    // Replaying the trace with the step functions ends in a state where nobody can run.
    let cfg = &r.config;
    let mut st = initial_state(cfg);
    let tid = |letter: &str| {
        st.roles
            .iter()
            .position(|&role| thread_name(role) == letter)
            .expect("thread")
    };
    let schedule: Vec<usize> = t.steps.iter().map(|s| tid(s.thread)).collect();
    for t in schedule {
        assert!(step(&mut st, t, cfg, &mut Ctx::default()));
    }
    assert!(!any_enabled(&st, cfg) && !st.all_done());
    // The walker took the folio lock first, the mover the anon_vma lock first.
    let folio = text.find("migration: folio_lock(F)").expect(&text);
    let anon = text.find("anon_vma_lock_write(X)").expect(&text);
    assert!(folio < anon, "{text}");
    // The control: the 6.8 order (folio lock, then anon_vma lock) against the same walker.
    assert!(broken(&check("v2-migration")).is_empty());
}

#[test]
fn index_before_mapping_is_harmless_under_sequential_consistency() {
    // The explorer (SC) finds nothing; the loom model run by run_config (tests weak_memory)
    // breaks 8 under the weak memory model.
    let r = check("mut-index-first");
    let sc: Vec<u8> = r
        .invariants
        .iter()
        .filter(|i| i.sc == Outcome::Broken)
        .map(|i| i.number)
        .collect();
    assert!(sc.is_empty(), "{sc:?}");
    assert!(explore(&r.config, &Bounds::default()).broken().is_empty());
    assert_eq!(broken(&r), [8]);
}

#[test]
fn trace_2_is_the_shortest_freed_walk() {
    let r = check("v0");
    let inv = r
        .invariants
        .iter()
        .find(|i| i.invariant == Invariant::RmapWalkAnonVmaAlive)
        .expect("invariant 2");
    let t = inv.trace.as_ref().expect("trace");
    let text = t.render();
    // The walker trylocks after anon_vma_free's rwsem_is_locked check and before the free.
    let is_locked = text.find("rwsem_is_locked(root X) -> false").expect(&text);
    let trylock = text
        .find("S5 down_read_trylock(root X) -> ok")
        .expect(&text);
    let free = text.find("kmem_cache_free").expect(&text);
    assert!(is_locked < trylock && trylock < free, "{text}");
    assert_eq!(t.steps.last().map(|s| s.thread), Some("A"));
    assert!(t.steps.iter().all(|s| !s.step.is_empty()));
}

#[test]
fn preemption_bound_is_monotone() {
    let cfg = row("v0").config;
    let mut last = 0;
    for p in 0..3u8 {
        let b = Bounds {
            max_preemptions: Some(p),
            ..Bounds::default()
        };
        let ex = explore(&cfg, &b);
        assert!(ex.complete);
        assert!(ex.states >= last);
        last = ex.states;
    }
    // Two preemptions suffice for Traces 1 and 2.
    let ex = explore(
        &cfg,
        &Bounds {
            max_preemptions: Some(2),
            ..Bounds::default()
        },
    );
    assert!(ex.broken().contains(&Invariant::RmapWalkAnonVmaAlive));
}

#[test]
fn fork_aba_through_the_pointer_only_recheck_needs_a_walker_without_a_folio_ref() {
    // Change 2b. The ABA path: X freed after move + munmap, its slot reused by anon_vma_fork as
    // a child of Y, COW reuse moves F into it, S6's pointer compare passes while the walker
    // holds X's rwsem. With the walker's folio reference (every real caller holds one) the
    // checker proves it closed: wp_can_reuse_anon_folio sees folio_ref_count() != 1 and copies.
    for name in ["v2-fork-aba", "v3-fork-aba", "fix-s6-root-recheck"] {
        assert!(broken(&check(name)).is_empty(), "{name}");
    }
    let r = check("mut-walker-no-ref");
    assert_eq!(broken(&r), [1, 3]);
    let t = r.invariants[2].trace.as_ref().expect("trace");
    let text = t.render();
    let s4 = text.find("S4 anon_vma = X; root_anon_vma").expect(&text);
    let reuse = text.find("anon_vma_alloc reuses slot X").expect(&text);
    let cow = text
        .find("folio_move_anon_rmap(F, D'): WRITE_ONCE(folio->mapping, X|ANON) (same root Y")
        .expect(&text);
    let s6 = text.find("S6 READ_ONCE(folio->mapping) == m").expect(&text);
    assert!(s4 < reuse && reuse < cow && cow < s6, "{text}");
    assert!(
        t.violations[0].message.contains("root X locked")
            && t.violations[0].message.contains("(root Y)"),
        "{text}"
    );
    // The walk then reads X'->rb_root under the wrong rwsem and anon_vma_unlock_read releases
    // root Y, which it never took.
    let inv1 = r.invariants[0].trace.as_ref().expect("trace").render();
    assert!(
        inv1.contains("without holding its root Y rwsem") || inv1.contains("slot Y"),
        "{inv1}"
    );
}

#[test]
fn pre_fix_order_stores_before_ptep_clear_flush() {
    // Change 4: before Qi Zheng's fix, move_present_pte called folio_move_anon_rmap and stored
    // the index right after the pte_same/pin checks, before ptep_clear_flush.
    let r = check("mut-prefix-pin");
    let t = r.invariants[5].trace.as_ref().expect("trace");
    let text = t.render();
    let checks = text.find("pte_same ok; not pinned").expect(&text);
    let mapping = text.find("folio_move_anon_rmap(F, D)").expect(&text);
    let index = text.find("WRITE_ONCE(folio->index").expect(&text);
    let clear = text.find("ptep_clear_flush(S)").expect(&text);
    let recheck = text
        .find("after clear -> set_pte_at(S) back; -EBUSY")
        .expect(&text);
    assert!(
        checks < mapping && mapping < index && index < clear && clear < recheck,
        "{text}"
    );
    // The fixed order (v2-gup, same threads) stores only after the re-check.
    assert!(broken(&check("v2-gup")).is_empty());
}
