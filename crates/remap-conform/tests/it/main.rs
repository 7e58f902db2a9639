//! Integration tests of `remap-conform` on the real kernel. Conformance and differential runs
//! fork, so each test re-runs this binary on itself (`run_in_child`): the child is the test
//! binary with one test thread, whose forks share no other test's pages or locks.

mod cross_check;
mod runs;

/// Runs the current test alone in a child process (this binary, `--exact <test>`) and asserts
/// that it passed there; `true` in the parent, `false` in the child (which runs the body). A hung
/// program (a fault nobody serves, a child that never exits) is killed after ten minutes.
fn run_in_child() -> bool {
    test_support::child::run_in_child(std::time::Duration::from_secs(600))
}

/// The harness and machine, or a skip.
fn harness() -> (remap_conform::exec::Harness, remap_conform::Machine) {
    (
        remap_conform::exec::Harness::new().expect("a userfaultfd with MOVE"),
        remap_conform::Machine::detect(),
    )
}
