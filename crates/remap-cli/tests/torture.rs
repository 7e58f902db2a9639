//! `remap torture` end to end: a short run keeps every invariant with every walker driver active,
//! and each injected fault makes the run fail with a replay command. Each run is a child process
//! killed after a timeout (a torture run that hangs is a finding too, never a stuck test).
//!
//! A test binary of its own: the runs drive system-wide compaction, reclaim and KSM, which would
//! disturb tests running beside them in one binary (cargo runs binaries one after another).

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use test_support::{require, Need};

/// One torture run at a time: runs change KSM and the swap, and refuse to overlap.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

fn torture(args: &[&str], timeout: Duration) -> Run {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let mut child = Command::new(env!("CARGO_BIN_EXE_remap"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running remap");
    let mut out = child.stdout.take().expect("stdout");
    let mut err = child.stderr.take().expect("stderr");
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().expect("waiting for remap") {
            break Some(status);
        }
        if Instant::now() > deadline {
            // SIGTERM first: the run restores the machine on it, which can take a while (the
            // cgroup's removal, swapoff of a full zram), so it gets up to a minute.
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let grace = Instant::now() + Duration::from_secs(60);
            while Instant::now() < grace && child.try_wait().ok().flatten().is_none() {
                std::thread::sleep(Duration::from_millis(200));
            }
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let run = Run {
        code: status.and_then(|s| s.code()),
        stdout: reader.join().unwrap_or_default(),
        stderr: err_reader.join().unwrap_or_default(),
    };
    assert!(
        status.is_some(),
        "remap {args:?} did not finish within {timeout:?}\nstdout:\n{}\nstderr:\n{}",
        run.stdout,
        run.stderr
    );
    run
}

fn json_lines(text: &str) -> Vec<serde_json::Value> {
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

#[test]
fn torture_short_run_keeps_every_invariant_with_every_walker() {
    require!(Need::Root, Need::Move);
    let run = torture(
        &[
            "--json",
            "torture",
            "--duration",
            "20s",
            "--seed",
            "0x5eed",
            "--reruns",
            "0",
        ],
        Duration::from_secs(240),
    );
    let lines = json_lines(&run.stdout);
    // Everything a failure needs: the exit code and the end of stderr (the reason of an exit 2).
    let context = || {
        let tail: Vec<&str> = run.stderr.lines().rev().take(20).collect();
        format!(
            "exit code {:?}\n--- stderr (last lines, newest first)\n{}",
            run.code,
            tail.join("\n")
        )
    };
    assert_eq!(lines[0]["type"], "config", "{}", context());
    assert_eq!(lines[0]["data"]["seed"], 0x5eed);
    let summary = &lines.last().expect("a summary line")["data"];
    assert_eq!(lines.last().unwrap()["type"], "summary", "{}", context());
    let moved = summary["pages_moved"].as_u64().expect("pages_moved");
    assert!(moved > 10_000, "only {moved} pages moved: {summary}");
    for w in summary["walkers"].as_array().expect("walkers") {
        assert_eq!(w["ran"], true, "walker did not run: {w}\n{}", run.stderr);
    }
    assert_eq!(summary["walkers"].as_array().unwrap().len(), 7);
    assert!(
        summary["vmstat"]["pswpout"].as_i64().unwrap_or(0) > 0,
        "{summary}"
    );
    assert!(
        summary["results"]["ok"].as_u64().unwrap_or(0) > 0,
        "{summary}"
    );
    // Kernel findings (a result the contract does not allow, the kernel misreporting what it
    // moved: docs/findings/move-undercounts-a-moved-page.md) are findings of the run, reported
    // with their state and replay command; any other violation (a page lost, duplicated or
    // changed, an unexpected fault, the kernel log, a baseline, an idle walker, the harness) is a
    // broken invariant and fails the test.
    let violations: Vec<&serde_json::Value> =
        lines.iter().filter(|l| l["type"] == "violation").collect();
    for v in &violations {
        let kind = v["data"]["kind"].as_str().unwrap_or("");
        assert!(
            kind == "kernel-misreport" || kind == "disallowed-result",
            "a violation that is not a kernel finding: {v}"
        );
        eprintln!("kernel finding: {}", v["data"]["message"]);
    }
    let count = summary["violation_count"].as_u64().unwrap();
    assert_eq!(count, violations.len() as u64, "{summary}");
    assert_eq!(
        run.code,
        Some(if count == 0 { 0 } else { 1 }),
        "{}",
        run.stderr
    );
    assert_eq!(summary["clean"], count == 0);
    assert!(summary["replay"]
        .as_str()
        .unwrap()
        .starts_with("remap torture --seed 0x5eed"));
    assert_eq!(
        summary["kernel_log"].as_array().map(Vec::len),
        Some(0),
        "{summary}"
    );
    let fds = summary["fds"].as_array().unwrap();
    assert_eq!(fds[0], fds[1], "fd count back to baseline");
}

fn injected(fault: &str, kind: &str) {
    let run = torture(
        &[
            "torture",
            "--duration",
            "4s",
            "--seed",
            "11",
            "--walkers",
            "none",
            "--pairs",
            "2",
            "--region-mib",
            "8",
            "--reruns",
            "1",
            "--inject",
            fault,
        ],
        Duration::from_secs(180),
    );
    assert_eq!(
        run.code,
        Some(1),
        "stdout:\n{}\nstderr:\n{}",
        run.stdout,
        run.stderr
    );
    assert!(
        run.stdout.contains(&format!("VIOLATION {kind}")),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("FAILED"), "{}", run.stdout);
    assert!(run.stdout.contains("hit rate: "), "{}", run.stdout);
    let replay = run
        .stdout
        .lines()
        .rev()
        .find(|l| l.starts_with("replay: "))
        .expect("a replay command");
    assert!(replay.contains("--seed 0xb"), "{replay}");
    assert!(replay.contains(&format!("--inject {fault}")), "{replay}");
    assert!(
        replay.contains("--pairs 2") && replay.contains("--region-mib 8"),
        "{replay}"
    );
}

#[test]
fn torture_catches_a_dropped_page() {
    require!(Need::Root, Need::Move);
    injected("drop", "LostPage");
}

#[test]
fn torture_catches_a_duplicated_page() {
    require!(Need::Root, Need::Move);
    injected("duplicate", "DuplicatePage");
}

#[test]
fn torture_catches_a_misreported_result() {
    require!(Need::Root, Need::Move);
    injected("misreport", "KernelMisreport");
}

#[test]
fn torture_without_root_says_why_and_exits_2() {
    require!(Need::Move, Need::Root);
    // As nobody (uid 65534): the run needs root and must say so. nobody may not be able to reach
    // the build directory, so it runs a world-executable copy of the binary.
    let dir = std::env::temp_dir().join(format!("remap-torture-nobody-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).expect("chmod dir");
    let exe = dir.join("remap");
    std::fs::copy(env!("CARGO_BIN_EXE_remap"), &exe).expect("copying the binary");
    std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).expect("chmod binary");
    let out = Command::new(&exe)
        .args(["torture", "--duration", "1s"])
        .uid(65534)
        .gid(65534)
        .output()
        .expect("running remap torture as nobody");
    let _ = std::fs::remove_dir_all(&dir);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("needs root"), "{stderr}");
}
