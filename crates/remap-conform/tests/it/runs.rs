//! The case table, a CI-sized differential run, and the shrinker on an injected oracle bug.

use remap_conform::cases;
use remap_conform::check::Injection;
use remap_conform::diff::{self, DiffConfig};
use test_support::{require, Need};

use crate::{harness, run_in_child};

#[test]
fn every_case_agrees_with_the_oracle_on_this_kernel() {
    // Swap held for the run: the swap cases (and swap-out steps) run, not skip.
    require!(Need::Move, Need::Swap);
    if run_in_child() {
        return;
    }
    let (h, m) = harness();
    let report = cases::run_all(&h, &m).unwrap();
    for c in &report.cases {
        if let Some(why) = &c.skipped {
            test_support::skip(c.name, why.trim_start_matches("needs "));
        }
        assert_ne!(c.agree, Some(false), "{}: {:?}", c.name, c.detail);
    }
    assert!(report.cases.len() >= 45, "{} cases", report.cases.len());
    assert!(
        report.rows_matched.contains(&m.behaviour.name) || !report.later_row_cases.is_empty(),
        "this kernel matches no row of its own: {:?}",
        report.rows_matched
    );
}

#[test]
fn a_ci_sized_differential_run_finds_no_mismatch() {
    // Swap held for the run: the swap cases (and swap-out steps) run, not skip.
    require!(Need::Move, Need::Swap);
    if run_in_child() {
        return;
    }
    let (h, m) = harness();
    let cfg = DiffConfig {
        seed: 7,
        programs: 150,
        ..DiffConfig::default()
    };
    let r = diff::differential(&h, &m, &cfg, |_, _| {}).unwrap();
    assert_eq!(r.programs, 150);
    assert!(r.steps_run > 600, "only {} steps ran", r.steps_run);
    assert!(
        r.mismatches.is_empty(),
        "mismatches: {:#?}",
        r.mismatches
            .iter()
            .map(|mm| (&mm.mismatch, mm.shrunk.as_ref().map(|p| p.to_json())))
            .collect::<Vec<_>>()
    );
}

#[test]
fn the_shrinker_reduces_an_injected_oracle_bug_to_a_few_steps() {
    // Swap held for the run: the machine seen at its start keeps its swap to the end.
    require!(Need::Move, Need::Swap);
    if run_in_child() {
        return;
    }
    let (h, m) = harness();
    let cfg = DiffConfig {
        seed: 3,
        programs: 60,
        replays: 1,
        inject: Some(Injection::ExistAsNoEnt),
        ..DiffConfig::default()
    };
    let r = diff::differential(&h, &m, &cfg, |_, _| {}).unwrap();
    assert!(!r.mismatches.is_empty(), "the injected bug was never hit");
    for mm in &r.mismatches {
        assert_eq!(mm.mismatch.kind, "move");
        let small = mm.shrunk.as_ref().expect("shrunk");
        assert!(
            small.len() <= 4 && small.len() < mm.program.len().max(5),
            "shrunk only to {} steps (from {}): {}",
            small.len(),
            mm.program.len(),
            small.to_json()
        );
        let again = diff::run_program(&h, &m, small, cfg.inject).unwrap();
        let found = again.mismatch.expect("the shrunk program still mismatches");
        assert!(
            found.disagreement.observed.starts_with("EEXIST"),
            "{found:?}"
        );
        // Without the injected bug, the same program agrees.
        assert_eq!(
            diff::run_program(&h, &m, small, None).unwrap().mismatch,
            None
        );
    }
}

#[test]
fn copy_installs_over_a_guard_region() {
    // Kept as the reproducer of docs/findings/copy-overwrites-guard-regions.md.
    // Swap held for the run: the machine seen at its start keeps its swap to the end.
    require!(Need::Move, Need::Swap);
    if run_in_child() {
        return;
    }
    let (h, m) = harness();
    if !m.guard {
        test_support::skip(
            "copy_installs_over_a_guard_region",
            "MADV_GUARD_INSTALL (6.13)",
        );
        return;
    }
    let prog = remap_conform::program::Program::from_json(
        r#"{"vmas":[{"offset":962,"pages":6,"prot":3,"shared":false,"mlocked":false,"thp":"Default","dontfork":false,"register":{"uffd":0,"missing":true,"wp":false}}],"steps":[{"op":"guard","at":{"vma":0,"page":4},"pages":1},{"op":"copy","dst":{"vma":0,"page":3},"pages":2,"tag":77}]}"#,
    )
    .unwrap();
    let r = diff::run_program(&h, &m, &prog, None).unwrap();
    assert_eq!(r.steps_run, 2);
    assert_eq!(
        r.mismatch, None,
        "the oracle models COPY over a guard marker as installing"
    );
}
