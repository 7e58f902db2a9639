//! Integration tests of `remap-conform` on the real kernel. Conformance and differential runs
//! fork, so each test re-runs this binary on itself (`run_in_child`): the child is the test
//! binary with one test thread, whose forks share no other test's pages or locks.

mod cross_check;
mod runs;

use std::process::Command;

/// The environment variable that tells a re-run of this binary which test to act out.
const CHILD_ENV: &str = "REMAP_CONFORM_IT_CHILD";

/// Runs the current test in a child process (this binary, `--exact <test>`) and asserts that it
/// passed there. Returns `true` in the parent, `false` in the child (which runs the body).
fn run_in_child() -> bool {
    let name = test_support::test_name("?");
    if std::env::var(CHILD_ENV).is_ok_and(|v| v == name) {
        return false;
    }
    // A hung program (a fault nobody serves, a child that never exits) is killed, not waited on.
    let out = test_support::child::output_within(
        Command::new(std::env::current_exe().unwrap())
            .args(["--exact", &name, "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, &name),
        std::time::Duration::from_secs(600),
    );
    let (stdout, stderr) = (&out.stdout, &out.stderr);
    let status = out
        .status
        .expect("output_within returns only finished runs");
    assert!(
        status.success() && stdout.contains("1 passed"),
        "child run of {name} failed ({status}):\n--- stdout\n{stdout}\n--- stderr\n{stderr}"
    );
    for line in stderr.lines().filter(|l| l.starts_with("skipping ")) {
        eprintln!("{line}");
    }
    true
}

/// The harness and machine, or a skip.
fn harness() -> (remap_conform::exec::Harness, remap_conform::Machine) {
    (
        remap_conform::exec::Harness::new().expect("a userfaultfd with MOVE"),
        remap_conform::Machine::detect(),
    )
}
