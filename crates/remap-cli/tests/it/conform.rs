//! `remap conform` end to end: the case table, a CI-sized differential run, the JSON Lines
//! envelope, and an injected oracle bug caught, shrunk and replayed (exit 1).

use std::os::unix::process::ExitStatusExt;
use std::process::{Command, ExitStatus, Output};
use std::time::Duration;

use test_support::{require, Need};

/// Runs `remap ARGS`, killed (and the test failed) after ten minutes.
fn remap(args: &[&str]) -> Output {
    let out = test_support::child::output_within(
        Command::new(env!("CARGO_BIN_EXE_remap")).args(args),
        Duration::from_secs(600),
    );
    Output {
        status: out.status.unwrap_or(ExitStatus::from_raw(-1)),
        stdout: out.stdout.into_bytes(),
        stderr: out.stderr.into_bytes(),
    }
}

fn lines(out: &Output) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

fn context(out: &Output) -> String {
    format!(
        "status {}\n--- stdout\n{}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn conform_cases_agree_and_name_the_matched_rows() {
    // Swap held while `remap conform` runs: under UFFD_TESTS_REQUIRED=1 a skipped swap case
    // fails it.
    require!(Need::Move, Need::Swap);
    let out = remap(&["conform"]);
    assert_eq!(out.status.code(), Some(0), "{}", context(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("present page"), "{text}");
    assert!(text.contains("0 disagree"), "{text}");
    let rows = text
        .lines()
        .find(|l| l.starts_with("behaviour rows matched by every case:"))
        .unwrap_or_else(|| panic!("no rows line:\n{text}"));
    assert!(rows.contains("this kernel's row"), "{rows}");
}

#[test]
fn conform_json_is_the_envelope_with_one_case_per_line() {
    // Swap held while `remap conform` runs: under UFFD_TESTS_REQUIRED=1 a skipped swap case
    // fails it.
    require!(Need::Move, Need::Swap);
    let out = remap(&["--json", "conform"]);
    assert_eq!(out.status.code(), Some(0), "{}", context(&out));
    let recs = lines(&out);
    assert_eq!(recs[0]["type"], "machine");
    assert!(recs[0]["data"]["kernel_release"].is_string(), "{}", recs[0]);
    assert_eq!(recs[1]["type"], "kernel");
    assert!(recs[1]["data"]["behaviour"]["name"].is_string());
    let cases: Vec<_> = recs.iter().filter(|r| r["type"] == "case").collect();
    assert!(cases.len() >= 45, "{} cases", cases.len());
    for c in &cases {
        let d = &c["data"];
        assert!(
            d["agree"] == true || d["skipped"].is_string(),
            "disagreement or neither: {d}"
        );
        assert!(d["rows"].is_array() && d["expected"].is_array(), "{d}");
    }
    let summary = recs.last().unwrap();
    assert_eq!(summary["type"], "summary");
    assert_eq!(summary["data"]["disagree"], 0);
    assert_eq!(summary["data"]["cases"], cases.len());
    assert!(summary["data"]["rows_matched"].is_array());
}

#[test]
fn conform_differential_ci_run_finds_no_mismatch() {
    // Swap held: the programs' swap-out steps run.
    require!(Need::Move, Need::Swap);
    let out = remap(&[
        "--json",
        "conform",
        "--differential",
        "--programs",
        "200",
        "--seed",
        "11",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", context(&out));
    let recs = lines(&out);
    let summary = recs.last().unwrap();
    assert_eq!(summary["type"], "summary", "{summary}");
    assert_eq!(summary["data"]["programs"], 200);
    assert_eq!(summary["data"]["mismatches"], 0, "{}", context(&out));
    assert!(summary["data"]["steps_run"].as_u64().unwrap() > 800);
}

#[test]
fn conform_catches_an_injected_oracle_bug_shrinks_and_replays_it() {
    // Swap held for the run: the machine seen at its start keeps its swap to the end.
    require!(Need::Move, Need::Swap);
    let out = remap(&[
        "--json",
        "conform",
        "--differential",
        "--programs",
        "40",
        "--seed",
        "3",
        "--inject",
        "exist-as-noent",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", context(&out));
    let recs = lines(&out);
    let mismatch = recs
        .iter()
        .find(|r| r["type"] == "mismatch")
        .unwrap_or_else(|| panic!("no mismatch record: {}", context(&out)));
    let d = &mismatch["data"];
    let shrunk = &d["shrunk"];
    let steps = shrunk["steps"].as_array().unwrap().len();
    assert!(steps <= 4, "shrunk only to {steps} steps: {shrunk}");
    let replay = d["replay"].as_str().unwrap();
    assert!(replay.starts_with("remap conform --replay '"), "{replay}");
    let json = serde_json::to_string(shrunk).unwrap();
    // The replay with the bug still disagrees; without it, the kernel and the oracle agree.
    let again = remap(&["conform", "--replay", &json, "--inject", "exist-as-noent"]);
    assert_eq!(again.status.code(), Some(1), "{}", context(&again));
    assert!(String::from_utf8_lossy(&again.stdout).contains("kernel:  EEXIST"));
    let clean = remap(&["conform", "--replay", &json]);
    assert_eq!(clean.status.code(), Some(0), "{}", context(&clean));
}
