//! shuttle cross-check: the same step functions as real threads under shuttle's random and PCT
//! schedulers. Safe versions must show no violation; unsafe ones must be caught.

use remap_model::shuttle_check::{shuttle_check, ShuttleScheduler};
use remap_model::{Expect, Invariant};

use crate::row;

const ITER: usize = 300;

fn run(name: &str) -> (Vec<Invariant>, Vec<Invariant>) {
    let r = row(name);
    let mut found = shuttle_check(
        &r.config,
        ShuttleScheduler::Random {
            seed: 0x5eed,
            iterations: ITER,
        },
    );
    found.extend(shuttle_check(
        &r.config,
        ShuttleScheduler::Pct {
            seed: 0x5eed,
            depth: 3,
            iterations: ITER,
        },
    ));
    let expected: Vec<Invariant> = Invariant::ALL
        .into_iter()
        .filter(|&i| r.get(i) == Expect::Broken)
        .collect();
    (found.into_iter().collect(), expected)
}

#[test]
fn safe_versions_show_no_violation() {
    for name in ["v2", "v2-blocking", "v2-aba", "v3", "v3-aba", "v1-slow"] {
        let (found, _) = run(name);
        assert!(
            found.is_empty(),
            "{name}: shuttle found {found:?} (seed 0x5eed)"
        );
    }
}

#[test]
fn unsafe_versions_are_caught() {
    for name in [
        "v0",
        "v1",
        "mut-v3-walker-unlocked",
        "mut-v3-mover-only",
        "mut-prefix-pin",
    ] {
        let (found, expected) = run(name);
        assert!(
            !found.is_empty(),
            "{name}: shuttle found nothing (seed 0x5eed)"
        );
        for inv in &found {
            assert!(
                expected.contains(inv),
                "{name}: {inv} not in the expected row"
            );
        }
    }
}
