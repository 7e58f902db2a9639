//! loom: the questions the sequentially consistent explorer cannot answer.
//!
//! `folio->mapping` and `folio->index` are plain `WRITE_ONCE`/`READ_ONCE` (modelled as `Relaxed`);
//! the anon_vma rwsem word uses Acquire (lock) and Release (unlock). loom explores the C11
//! behaviours of these orderings with a bounded number of preemptions (3), so it can show which
//! ordering carries the protocol. loom cannot produce every `Relaxed` behaviour (load buffering),
//! so a pass here is weaker than a proof; a failure is a real C11 execution.

use std::panic::{catch_unwind, AssertUnwindSafe};

use loom::sync::atomic::{AtomicIsize, AtomicUsize, Ordering};
use loom::sync::Arc;

const X: usize = 1;
const Y: usize = 2;
const IDX_S: usize = 0x10;
const IDX_D: usize = 0x20;

/// Text of a panic payload (`panic!`/`assert!` give a `String` or a `&str`).
fn panic_text(payload: &(dyn std::any::Any + Send)) -> Option<&str> {
    payload
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| payload.downcast_ref::<&str>().copied())
}

/// Runs `f` under loom with a preemption bound; returns whether loom found an execution that
/// fails with `violation` (the message of the model's own assertion). Any other panic -- loom's
/// own errors (a deadlock, "Model exceeded maximum number of branches", a leaked thread) or a
/// different assertion -- is not "a violation found": it is re-raised so the test fails.
fn loom_finds_violation(violation: &'static str, f: impl Fn() + Sync + Send + 'static) -> bool {
    let mut b = loom::model::Builder::new();
    b.preemption_bound = Some(3);
    let prev = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let r = catch_unwind(AssertUnwindSafe(|| b.check(f)));
    std::panic::set_hook(prev);
    match r {
        Ok(()) => false,
        Err(payload) => match panic_text(payload.as_ref()) {
            Some(text) if text.contains(violation) => true,
            Some(text) => panic!("loom failed for another reason than {violation:?}: {text}"),
            None => panic!("loom failed with a non-text panic, not {violation:?}"),
        },
    }
}

#[test]
fn another_failure_is_not_counted_as_the_violation() {
    // A model that fails for a reason other than the violation asked about (a foreign
    // assertion here; loom's own errors are panics with their own text too) must fail the
    // test, not pass for a found violation.
    let r = catch_unwind(AssertUnwindSafe(|| {
        loom_finds_violation("walker saw mapping Y with the old index", || {
            let flag = Arc::new(AtomicUsize::new(0));
            let f2 = Arc::clone(&flag);
            let t = loom::thread::spawn(move || f2.store(1, Ordering::Relaxed));
            t.join().unwrap();
            assert_eq!(flag.load(Ordering::Relaxed), 0, "not the model's violation");
        })
    }));
    let payload = r.expect_err("a foreign failure must fail the test, not count as found");
    let text = panic_text(payload.as_ref()).unwrap_or_default();
    assert!(text.contains("another reason"), "{text}");
}

/// The mover stores index, then mapping (mutation `index-before-mapping`), with `mapping_order`;
/// the walker reads mapping with `load_order`, then index (as `rmap_walk_anon` does after taking
/// the *new* root's rwsem, which pairs with nothing the mover did).
fn index_first(mapping_order: Ordering, load_order: Ordering) -> bool {
    loom_finds_violation("walker saw mapping Y with the old index", move || {
        let mapping = Arc::new(AtomicUsize::new(X));
        let index = Arc::new(AtomicUsize::new(IDX_S));
        let (m2, i2) = (Arc::clone(&mapping), Arc::clone(&index));
        let mover = loom::thread::spawn(move || {
            i2.store(IDX_D, Ordering::Relaxed);
            m2.store(Y, mapping_order);
        });
        if mapping.load(load_order) == Y {
            assert_eq!(
                index.load(Ordering::Relaxed),
                IDX_D,
                "walker saw mapping Y with the old index"
            );
        }
        mover.join().unwrap();
    })
}

#[test]
fn index_before_mapping_needs_a_barrier() {
    // WRITE_ONCE order alone does not close V2's window on a weakly ordered CPU.
    assert!(index_first(Ordering::Relaxed, Ordering::Relaxed));
    // smp_store_release / smp_load_acquire (or smp_wmb + smp_rmb) would.
    assert!(!index_first(Ordering::Release, Ordering::Acquire));
}

/// Walker fast path against a V2 mover, on real C11 orderings: the rwsem word is the only
/// ordering between them. Returns whether loom found the walker using a stale anon_vma.
fn fast_path(recheck: bool) -> bool {
    loom_finds_violation("walk of X with D's index", move || {
        let rwsem = Arc::new(AtomicIsize::new(0)); // root X's rwsem: >0 readers, -1 writer
        let mapping = Arc::new(AtomicUsize::new(X));
        let index = Arc::new(AtomicUsize::new(IDX_S));
        let (r2, m2, i2) = (Arc::clone(&rwsem), Arc::clone(&mapping), Arc::clone(&index));
        let mover = loom::thread::spawn(move || {
            // anon_vma_lock_write(X): down_write (Acquire), spinning while readers hold it.
            while r2
                .compare_exchange(0, -1, Ordering::Acquire, Ordering::Relaxed)
                .is_err()
            {
                loom::thread::yield_now();
            }
            m2.store(Y, Ordering::Relaxed); // folio_move_anon_rmap
            i2.store(IDX_D, Ordering::Relaxed);
            r2.store(0, Ordering::Release); // anon_vma_unlock_write
        });
        // S1: m = READ_ONCE(folio->mapping)
        if mapping.load(Ordering::Relaxed) == X {
            // S5: down_read_trylock(root X)
            let cur = rwsem.load(Ordering::Relaxed);
            if cur >= 0
                && rwsem
                    .compare_exchange(cur, cur + 1, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
            {
                // S6 (V2 only): re-check folio->mapping
                let current = !recheck || mapping.load(Ordering::Relaxed) == X;
                if current {
                    // rmap_walk_anon on X: the index must belong to X's VMA S.
                    assert_eq!(
                        index.load(Ordering::Relaxed),
                        IDX_S,
                        "walk of X with D's index"
                    );
                }
                rwsem.fetch_sub(1, Ordering::Release);
            }
        }
        mover.join().unwrap();
    })
}

#[test]
fn v0_fast_path_without_recheck_walks_a_stale_anon_vma() {
    assert!(fast_path(false));
}

#[test]
fn v2_recheck_is_ordered_by_the_rwsem_not_by_read_once() {
    assert!(!fast_path(true));
}
