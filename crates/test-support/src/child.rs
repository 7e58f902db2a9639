//! Running one test in a child process of its own, with a timeout.
//!
//! A test that forks, frees address ranges and then checks them, or may hang, must not run in the
//! shared multi-threaded test process: a `fork()` there shares every concurrently running test's
//! pages with the child for a moment, another test's `mmap` can land in a range just freed, and a
//! hang stalls the whole suite. [`run_in_child`] re-runs the test binary on that one test
//! (`--exact <name> --test-threads=1`), kills it after a timeout, and fails the test unless the
//! child ran it and it passed.
//!
//! ```no_run
//! #[test]
//! fn forks() {
//!     if test_support::child::run_in_child(std::time::Duration::from_secs(60)) {
//!         return; // the parent: the child passed
//!     }
//!     // The child: the test body, alone in its process.
//! }
//! ```

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The environment variable naming the test a child process was started for.
pub const CHILD_ENV: &str = "TEST_SUPPORT_CHILD";

/// Whether this process is the child started for the running test.
pub fn is_child() -> bool {
    std::env::var(CHILD_ENV).is_ok_and(|v| v == crate::test_name("?"))
}

/// Runs the current test in a child process of its own and asserts that it passed there within
/// `timeout`. Returns `true` in the parent (which should then return) and `false` in the child
/// (which should run the test body).
///
/// # Panics
///
/// In the parent, when the child fails, does not run exactly this test, or outlives `timeout`
/// (it is killed then).
#[track_caller]
pub fn run_in_child(timeout: Duration) -> bool {
    if is_child() {
        return false;
    }
    let name = crate::test_name("?");
    let mut command = Command::new(std::env::current_exe().expect("the test binary's path"));
    command
        .args(["--exact", &name, "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, &name);
    let Finished {
        status,
        stdout,
        stderr,
    } = run_with_timeout(&mut command, timeout, None);
    let Some(status) = status else {
        panic!(
            "child run of {name} did not finish within {timeout:?} (killed):\n--- stdout\n{stdout}\n--- stderr\n{stderr}"
        );
    };
    assert!(
        status.success() && stdout.contains("1 passed"),
        "child run of {name} failed ({status}):\n--- stdout\n{stdout}\n--- stderr\n{stderr}"
    );
    // Forward a skip notice from the child, so it is visible in the parent's output.
    for line in stderr.lines().filter(|l| l.starts_with("skipping ")) {
        eprintln!("{line}");
    }
    true
}

/// What a command run by [`output_within`] left: its exit status (`None` when it outlived the
/// timeout and was killed) and its output.
#[derive(Debug)]
pub struct Finished {
    /// The exit status, or `None` when the command was killed at the timeout.
    pub status: Option<std::process::ExitStatus>,
    /// Everything it wrote on stdout.
    pub stdout: String,
    /// Everything it wrote on stderr.
    pub stderr: String,
}

/// Runs `command` with stdin closed and both output pipes drained on threads (so a chatty
/// command never blocks on a full pipe), killing it after `timeout`.
///
/// # Panics
///
/// When the command cannot be started, or outlives `timeout` (it is killed, and the panic shows
/// what it printed).
#[track_caller]
pub fn output_within(command: &mut Command, timeout: Duration) -> Finished {
    let finished = run_with_timeout(command, timeout, None);
    finish_or_panic(command, timeout, finished)
}

/// [`output_within`] for a command that must clean up after itself when stopped (one that changes
/// the machine and restores it on SIGTERM): at the timeout it gets SIGTERM and up to `grace` to
/// exit before it is killed.
///
/// # Panics
///
/// When the command cannot be started, or outlives `timeout` (it is stopped, and the panic shows
/// what it printed).
#[track_caller]
pub fn output_within_terminating(
    command: &mut Command,
    timeout: Duration,
    grace: Duration,
) -> Finished {
    let finished = run_with_timeout(command, timeout, Some(grace));
    finish_or_panic(command, timeout, finished)
}

#[track_caller]
fn finish_or_panic(command: &Command, timeout: Duration, finished: Finished) -> Finished {
    if finished.status.is_none() {
        panic!(
            "{command:?} did not finish within {timeout:?} (killed):\n--- stdout\n{}\n--- stderr\n{}",
            finished.stdout, finished.stderr
        );
    }
    finished
}

/// Runs `command` until it exits or `timeout` passes; then it is killed, after SIGTERM and up to
/// `term_grace` to exit when that is given.
fn run_with_timeout(
    command: &mut Command,
    timeout: Duration,
    term_grace: Option<Duration>,
) -> Finished {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting the child process");
    // A grandchild (a test that forks) may keep a pipe open after the child is gone: the output
    // is then waited for only a little while.
    let drain = |mut pipe: Box<dyn Read + Send>| {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = pipe.read_to_string(&mut text);
            let _ = tx.send(text);
        });
        rx
    };
    let stdout = drain(Box::new(child.stdout.take().expect("piped stdout")));
    let stderr = drain(Box::new(child.stderr.take().expect("piped stderr")));
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().expect("waiting for the child") {
            break Some(status);
        }
        if Instant::now() >= deadline {
            if let Some(grace) = term_grace {
                terminate(&mut child, grace);
            }
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let grace = Duration::from_secs(5);
    Finished {
        status,
        stdout: stdout.recv_timeout(grace).unwrap_or_default(),
        stderr: stderr.recv_timeout(grace).unwrap_or_default(),
    }
}

/// Sends `child` SIGTERM and waits up to `grace` for it to exit.
fn terminate(child: &mut std::process::Child, grace: Duration) {
    let pid = i32::try_from(child.id())
        .ok()
        .and_then(rustix::process::Pid::from_raw);
    if let Some(pid) = pid {
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
    }
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline && child.try_wait().ok().flatten().is_none() {
        std::thread::sleep(Duration::from_millis(50));
    }
}
