//! Child processes for scenarios that can hang, crash or fork: the test binary re-runs itself
//! with one scenario named in [`CHILD_ENV`], and the parent kills it after a timeout (a hang is
//! a failure, never a hung CI).
//!
//! Each test file with child scenarios has one dispatcher test (`<file>::child_scenarios`),
//! marked `#[ignore]` so that it never passes trivially in a normal run. Run as a child it runs
//! the scenario named in the environment; run by hand without it (`--ignored`), it runs every
//! scenario of its table as a child and checks each one's outcome, like the tests do one by one.

use std::os::unix::process::ExitStatusExt;
use std::process::{Command, ExitStatus};
use std::time::Duration;

use test_support::Need;

/// Set in a re-run of this test binary to run one child scenario.
pub(crate) const CHILD_ENV: &str = "REMAP_SERVER_CHILD";

/// How long a child may run before it counts as hung.
pub(crate) const CHILD_TIMEOUT: Duration = Duration::from_secs(60);

/// What a child scenario must end with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Exit 0 after running its one test.
    Pass,
    /// Death by this signal.
    Killed(i32),
}

/// One scenario of a dispatcher's table.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Scenario {
    /// The name the dispatcher matches.
    pub(crate) name: &'static str,
    /// What the child must end with.
    pub(crate) outcome: Outcome,
    /// What the machine must offer for the scenario to run.
    pub(crate) needs: &'static [Need],
}

/// The scenario this process runs as a child, if it is one.
pub(crate) fn scenario() -> Option<String> {
    std::env::var(CHILD_ENV).ok()
}

/// Re-runs this test binary for `scenario` through the dispatcher test `dispatcher` (its full
/// path, e.g. `server::child_scenarios`), killed after [`CHILD_TIMEOUT`]: a hang panics.
pub(crate) fn run(dispatcher: &str, scenario: &str) -> (ExitStatus, String) {
    let out = test_support::child::output_within(
        Command::new(std::env::current_exe().unwrap())
            .args([
                dispatcher,
                "--exact",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, scenario),
        CHILD_TIMEOUT,
    );
    let status = out
        .status
        .expect("output_within returns only finished runs");
    let (out, err) = (out.stdout, out.stderr);
    (status, format!("{out}\n--- stderr\n{err}"))
}

/// Runs `scenario` and checks it ended with `outcome` (for [`Outcome::Pass`]: that it really
/// ran, since a mistyped test name exits 0 after "0 passed").
#[track_caller]
pub(crate) fn expect(dispatcher: &str, scenario: &str, outcome: Outcome) {
    let (status, out) = run(dispatcher, scenario);
    match outcome {
        Outcome::Pass => assert!(
            status.success() && out.contains("1 passed"),
            "child scenario {scenario} failed ({status}):\n{out}"
        ),
        Outcome::Killed(signal) => assert_eq!(
            status.signal(),
            Some(signal),
            "child scenario {scenario}: {status:?}:\n{out}"
        ),
    }
}

/// The dispatcher run by hand (not as a child): every scenario of `table` whose needs are met,
/// as a child, with its outcome checked.
#[track_caller]
pub(crate) fn run_table(dispatcher: &str, table: &[Scenario]) {
    for s in table {
        let name = format!("{dispatcher} {}", s.name);
        // Held while the scenario's child runs (swap set up for it is undone after).
        let held: Option<Vec<_>> = s
            .needs
            .iter()
            .map(|&n| test_support::hold(&name, n))
            .collect();
        if held.is_none() {
            continue;
        }
        expect(dispatcher, s.name, s.outcome);
    }
}

/// Runs `scenario` through `dispatcher` after checking it is in `table` with `outcome`: the
/// table that a hand run of the dispatcher replays is then the one the tests use.
#[track_caller]
pub(crate) fn expect_listed(
    dispatcher: &str,
    table: &[Scenario],
    scenario: &str,
    outcome: Outcome,
) {
    assert!(
        table
            .iter()
            .any(|s| s.name == scenario && s.outcome == outcome),
        "scenario {scenario} ({outcome:?}) is missing from the table of {dispatcher}"
    );
    expect(dispatcher, scenario, outcome);
}
