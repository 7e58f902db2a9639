//! Re-running this test binary as a child process for one scenario, with a timeout: a hang or
//! a crash is then a failed assertion in the parent instead of a stuck or dead test run.

use std::io::Read;
use std::time::{Duration, Instant};

const CHILD_ENV: &str = "REMAP_COMPACT_CHILD";

/// How a child scenario ended.
pub(crate) struct Outcome {
    pub(crate) status: std::process::ExitStatus,
    pub(crate) output: String,
}

/// Runs `scenario` in a child (killed after `timeout`: a hang fails the test).
pub(crate) fn run(scenario: &str, timeout: Duration) -> Outcome {
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "child::scenarios",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, scenario)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Drain both pipes while waiting: a child blocked on a full pipe would look like a hang.
    let drain = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = pipe.read_to_string(&mut text);
            text
        })
    };
    let out = drain(Box::new(child.stdout.take().unwrap()));
    let err = drain(Box::new(child.stderr.take().unwrap()));
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            let (out, err) = (out.join().unwrap(), err.join().unwrap());
            panic!("child scenario {scenario} hangs (killed after {timeout:?}):\n{out}\n{err}");
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let (out, err) = (out.join().unwrap(), err.join().unwrap());
    Outcome {
        status,
        output: format!("{out}\n--- stderr\n{err}"),
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
