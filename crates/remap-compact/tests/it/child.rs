//! Re-running this test binary as a child process for one scenario, with a timeout: a hang or
//! a crash is then a failed assertion in the parent instead of a stuck or dead test run.

use std::time::Duration;

const CHILD_ENV: &str = "REMAP_COMPACT_CHILD";

/// How a child scenario ended.
pub(crate) struct Outcome {
    pub(crate) status: std::process::ExitStatus,
    pub(crate) output: String,
}

/// Runs `scenario` in a child (killed after `timeout`: a hang fails the test), with both pipes
/// drained while it runs (`test_support::child::output_within`).
pub(crate) fn run(scenario: &str, timeout: Duration) -> Outcome {
    let out = test_support::child::output_within(
        std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "child::scenarios",
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, scenario),
        timeout,
    );
    Outcome {
        status: out
            .status
            .expect("output_within returns only finished children"),
        output: format!("{}\n--- stderr\n{}", out.stdout, out.stderr),
    }
}

/// Runs a scenario that must pass (and really ran: a mistyped name would exit 0 after
/// "0 passed").
#[track_caller]
pub(crate) fn run_ok(scenario: &str) -> String {
    let out = run(scenario, Duration::from_secs(60));
    assert!(
        out.status.success()
            && out.output.contains("1 passed")
            && out.output.contains("scenario done"),
        "child scenario {scenario} failed ({}):\n{}",
        out.status,
        out.output
    );
    out.output
}

/// Not a test on its own: the body of the child processes (does nothing in the parent run).
#[test]
fn scenarios() {
    let Ok(scenario) = std::env::var(CHILD_ENV) else {
        return;
    };
    match scenario.split(':').collect::<Vec<_>>().as_slice() {
        ["matrix", publication, mode] => crate::matrix::child(publication, mode),
        ["race", who, mode] => crate::faults::race_child(who, mode),
        ["fork"] => crate::faults::fork_child(),
        ["thp"] => crate::matrix::thp_child(),
        ["events"] => crate::faults::events_child(),
        ["panic", mode] => crate::faults::panic_child(mode),
        ["cycles", publication, mode] => crate::cycles::ten_cycles_child(publication, mode),
        _ => panic!("unknown scenario {scenario}"),
    }
    println!("scenario done");
}
