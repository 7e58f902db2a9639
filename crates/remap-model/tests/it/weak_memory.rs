//! The weak-memory dimension of `run_config`: loom catches `mut-index-first` in the product,
//! and V2's correct order is its control.

use remap_model::weak_memory::weak_memory_check;
use remap_model::{run_config, Bounds, Checker, Expect, Invariant, Outcome};

use crate::row;

#[test]
fn index_first_is_caught_under_weak_memory_through_run_config() {
    let r = run_config(&row("mut-index-first"), &Bounds::default());
    assert!(r.matches_expected, "{r:#?}");
    let wm = r.weak_memory.as_ref().expect("loom ran");
    assert!(wm.complete, "{:?}", wm.error);
    let inv8 = &r.invariants[7];
    assert_eq!(inv8.invariant, Invariant::RmapWalkAnonComplete);
    assert_eq!(inv8.expected, Expect::BrokenUnderWeakMemory);
    assert_eq!(inv8.sc, Outcome::Holds, "harmless under SC");
    assert_eq!(inv8.wm, Some(Outcome::Broken));
    assert_eq!(inv8.actual, Outcome::Broken);
    assert_eq!(inv8.found_by, Some(Checker::Loom));
    // Currency holds: the walker's mapping and rwsem agree; only the index is stale.
    assert_eq!(r.invariants[2].wm, Some(Outcome::Holds));
    let t = inv8.trace.as_ref().expect("loom trace");
    assert_eq!(t.checker, Checker::Loom);
    let text = t.render();
    eprintln!("{text}");
    let mapping = text
        .find("S1 READ_ONCE(folio->mapping) = Y|ANON (new")
        .expect(&text);
    let index = text
        .find("folio_pgoff(folio) = 0x10 (plain load; old: B's store of 0x20 is not yet visible")
        .expect(&text);
    let stored = text.find("WRITE_ONCE(folio->index").expect(&text);
    // B stored the index before A read the (new) mapping, and A still read the old index.
    assert!(stored < mapping && mapping < index, "{text}");
    assert!(text.contains("replay: loom execution #"), "{text}");
    assert!(text.contains("missed it"), "{text}");
}

#[test]
fn v2_correct_order_is_the_control() {
    let r = run_config(&row("v2"), &Bounds::default());
    assert!(r.matches_expected, "{r:#?}");
    let wm = r.weak_memory.as_ref().expect("loom ran");
    assert!(wm.complete && wm.executions > 10, "{wm:?}");
    assert!(wm.broken().is_empty(), "{:?}", wm.traces);
    for inv in &r.invariants {
        assert_eq!(inv.actual, Outcome::Holds, "{}", inv.invariant);
    }
    assert_eq!(r.invariants[2].wm, Some(Outcome::Holds));
    assert_eq!(r.invariants[7].wm, Some(Outcome::Holds));
    // Invariant 1 is not in the loom model: no weak-memory outcome for it.
    assert_eq!(r.invariants[0].wm, None);
}

#[test]
fn v0_loom_model_sees_the_missing_recheck() {
    // Positive control of the loom model itself: without S6 it finds currency and completeness.
    let wm = weak_memory_check(&row("v0").config, 3);
    assert!(wm.complete);
    assert_eq!(
        wm.broken(),
        [
            Invariant::FolioLockAnonVmaReadCurrent,
            Invariant::RmapWalkAnonComplete
        ]
    );
}

#[test]
fn strict_v2_order_also_fails_under_weak_memory() {
    // Storing the index first makes no difference on a weakly ordered CPU: V2's order under
    // strict 8 fails the same way (the SC explorer already shows it for v2-strict).
    let mut cfg = row("v2-strict").config;
    cfg.weak_memory = true;
    let wm = weak_memory_check(&cfg, 3);
    assert_eq!(wm.broken(), [Invariant::RmapWalkAnonComplete]);
}
