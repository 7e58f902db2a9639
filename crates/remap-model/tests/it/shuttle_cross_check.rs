//! shuttle cross-check: the same step functions as real threads under shuttle's random and PCT
//! schedulers, for every configuration of the expected table. Configurations that hold under
//! sequential consistency must show no violation; every other one must be caught, and only with
//! invariants its row expects broken (no false positives).

use std::collections::BTreeSet;

use remap_model::shuttle_check::{shuttle_check, ShuttleScheduler};
use remap_model::{expected_table, Expect, Expected, Invariant};

/// Executions per scheduler (random, then PCT depth 3) for every configuration.
const ITER: usize = 300;
/// PCT depth-4 executions for an unsafe configuration the first budget missed (v2-strict,
/// v2-index-window): the walker's whole fast path (S1 to the lockless PTE read, seven steps) must
/// fit between the mover's mapping store and its `set_pte_at`, which takes three priority changes.
const DEEP_ITER: usize = 1500;
/// Seeds tried one after another for the deeper PCT runs (the windows are small enough that one
/// seed's budget can miss them).
const DEEP_SEEDS: u64 = 6;
const SEED: u64 = 0x5eed;

/// The per-scheduler budget: the five-thread fork configurations run longer executions (the
/// explorer covers them exhaustively; shuttle only cross-checks), so they get a third.
fn iterations(r: &Expected) -> usize {
    if r.config.fork {
        ITER / 3
    } else {
        ITER
    }
}

fn shuttle_found(r: &Expected) -> BTreeSet<Invariant> {
    let iterations = iterations(r);
    let mut found = shuttle_check(
        &r.config,
        ShuttleScheduler::Random {
            seed: SEED,
            iterations,
        },
    );
    found.extend(shuttle_check(
        &r.config,
        ShuttleScheduler::Pct {
            seed: SEED,
            depth: 3,
            iterations,
        },
    ));
    found
}

/// The invariants the row expects the SC explorer to find broken (shuttle is SC too, so
/// `BrokenUnderWeakMemory` cells must hold under it).
fn sc_broken(r: &Expected) -> BTreeSet<Invariant> {
    Invariant::ALL
        .into_iter()
        .filter(|&i| r.get(i) == Expect::Broken)
        .collect()
}

#[test]
fn safe_versions_show_no_violation() {
    let safe: Vec<Expected> = expected_table()
        .into_iter()
        .filter(|r| sc_broken(r).is_empty())
        .collect();
    assert!(safe.len() >= 10, "{} safe configurations", safe.len());
    for r in &safe {
        let found = shuttle_found(r);
        assert!(
            found.is_empty(),
            "{}: shuttle found {found:?} (seed {SEED:#x})",
            r.config.name
        );
    }
}

#[test]
fn unsafe_versions_are_caught() {
    let unsafe_rows: Vec<Expected> = expected_table()
        .into_iter()
        .filter(|r| !sc_broken(r).is_empty())
        .collect();
    assert!(
        unsafe_rows.len() >= 9,
        "{} unsafe configurations",
        unsafe_rows.len()
    );
    for r in &unsafe_rows {
        let name = &r.config.name;
        let expected = sc_broken(r);
        let mut found = shuttle_found(r);
        // Deeper PCT runs, one seed after another, until one finds something.
        for seed in SEED..SEED + DEEP_SEEDS {
            if !found.is_empty() {
                break;
            }
            found = shuttle_check(
                &r.config,
                ShuttleScheduler::Pct {
                    seed,
                    depth: 4,
                    iterations: DEEP_ITER,
                },
            );
        }
        assert!(
            !found.is_empty(),
            "{name}: shuttle found no violation (seed {SEED:#x}), expected some of {expected:?}"
        );
        assert!(
            found.is_subset(&expected),
            "{name}: shuttle found {:?}, not in the expected row {expected:?}",
            found.difference(&expected).collect::<Vec<_>>()
        );
        let missed: Vec<_> = expected.difference(&found).collect();
        if !missed.is_empty() {
            eprintln!("{name}: shuttle's budget did not reach {missed:?} (the explorer does)");
        }
    }
}
