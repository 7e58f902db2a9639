//! `remap torture` end to end: a short run keeps every invariant with every walker driver running,
//! and each injected fault makes the run fail with a replay command. Each run is a child process
//! killed after a timeout (a torture run that hangs is a finding too, never a stuck test).
//!
//! A test binary of its own: the runs drive system-wide compaction, reclaim and KSM, which would
//! disturb tests running beside them in one binary (cargo runs binaries one after another).

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::sync::Mutex;
use std::time::Duration;

use test_support::{require, Need};

/// One torture run at a time: runs change KSM and the swap, and refuse to overlap.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

struct Run {
    code: Option<i32>,
    /// The signal that killed the run, if one did.
    signal: Option<i32>,
    stdout: String,
    stderr: String,
}

fn torture(args: &[&str], timeout: Duration) -> Run {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    // At the timeout SIGTERM first: the run restores the machine on it, which can take a while
    // (the cgroup's removal, swapoff of a full zram), so it gets up to a minute.
    let out = test_support::child::output_within_terminating(
        Command::new(env!("CARGO_BIN_EXE_remap")).args(args),
        timeout,
        Duration::from_secs(60),
    );
    Run {
        code: out.status.and_then(|s| s.code()),
        signal: out.status.and_then(|s| {
            use std::os::unix::process::ExitStatusExt;
            s.signal()
        }),
        stdout: out.stdout,
        stderr: out.stderr,
    }
}

fn json_lines(text: &str) -> Vec<serde_json::Value> {
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

#[test]
fn torture_short_run_keeps_every_invariant_with_every_walker() {
    require!(Need::Root, Need::Move);
    let args = [
        "--json",
        "torture",
        "--duration",
        "20s",
        "--seed",
        "0x5eed",
        "--reruns",
        "0",
        // Whether the kernel's counters show a walker's effect within 20 s (ksmd merged a twin
        // page, reclaim refaulted one, a THP split) depends on the kernel's own threads and on
        // races with the movers: reported, and printed below, but not asserted.
        "--idle-walkers-ok",
    ];
    // No retry: the one run in ten that died of SIGSEGV (or hung) had its whole process in the
    // run's memory cgroup, where a full cgroup with oom_kill_disable kills a thread whose rseq
    // area was swapped out (docs/findings/memcg-oom-disabled-rseq-sigsegv.md). The run now puts
    // only the regions' pages and the kernel's copies of them there (its threads' control blocks
    // stay charged at home); a death by a signal is a failure like any other.
    let run = torture(&args, Duration::from_secs(240));
    // Everything a failure needs: the exit code and the end of stderr (the reason of an exit 2).
    let context = || {
        let tail: Vec<&str> = run.stderr.lines().rev().take(20).collect();
        format!(
            "exit code {:?}, signal {:?}\n--- stderr (last lines, newest first)\n{}",
            run.code,
            run.signal,
            tail.join("\n")
        )
    };
    assert_eq!(run.signal, None, "the run was killed: {}", context());
    let lines = json_lines(&run.stdout);
    assert_eq!(lines[0]["type"], "config", "{}", context());
    assert_eq!(lines[0]["data"]["seed"], 0x5eed);
    let summary = &lines.last().expect("a summary line")["data"];
    assert_eq!(lines.last().unwrap()["type"], "summary", "{}", context());
    // What is guaranteed however the races go: pages moved, and every MOVE issued is judged
    // and counted in exactly one result bucket. How many, and how many succeeded whole, depends
    // on how often the walkers win (EBUSY, EAGAIN), so no threshold.
    let moved = summary["pages_moved"].as_u64().expect("pages_moved");
    assert!(moved > 0, "no page moved: {summary}");
    let moves = summary["moves"].as_u64().expect("moves");
    let judged: u64 = summary["results"]
        .as_object()
        .expect("results")
        .values()
        .map(|n| n.as_u64().expect("a count"))
        .sum();
    assert_eq!(judged, moves, "every MOVE in one result bucket: {summary}");
    // Every driver was started, ran to the end of the run and reported what it did. Each but KSM
    // issues an operation on its first round; KSM's driver (un)merges one round in twenty and
    // otherwise watches pages_sharing, which it always reports.
    let walkers = summary["walkers"].as_array().expect("walkers");
    assert_eq!(walkers.len(), 7, "{summary}");
    for w in walkers {
        let name = w["walker"].as_str().expect("a walker name");
        let ops = w["ops"].as_u64().expect("ops");
        if name == "ksm" {
            assert!(w["detail"].get("max_pages_sharing").is_some(), "{w}");
        } else {
            assert!(ops > 0, "the {name} driver issued nothing: {w}");
        }
        if w["ran"] != true {
            eprintln!(
                "note: the kernel's counters show no effect of {name}: {}",
                w["evidence"]
            );
        }
    }
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
    let out = test_support::child::output_within(
        Command::new(&exe)
            .args(["torture", "--duration", "1s"])
            .uid(65534)
            .gid(65534),
        Duration::from_secs(60),
    );
    let _ = std::fs::remove_dir_all(&dir);
    let stderr = &out.stderr;
    assert_eq!(out.status.and_then(|s| s.code()), Some(2), "{stderr}");
    assert!(stderr.contains("needs root"), "{stderr}");
}
