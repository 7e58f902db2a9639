//! `remap compact`: a small run prints JSON Lines only, with every mode measured side by side
//! and verified; an injected wrong byte or dangling reference exits 1; each run is a child
//! process with a timeout.

use std::os::unix::process::ExitStatusExt;
use std::process::{Command, ExitStatus, Output};
use std::time::Duration;

use serde_json::Value;
use test_support::{require, Need};

/// Runs `remap compact ARGS`, killing it after `timeout`.
fn compact(args: &[&str], timeout: Duration) -> Output {
    // Both pipes are drained while it runs, so a chatty run never blocks on a full pipe.
    let out = test_support::child::output_within(
        Command::new(env!("CARGO_BIN_EXE_remap"))
            .arg("compact")
            .args(args),
        timeout,
    );
    Output {
        status: out.status.unwrap_or(ExitStatus::from_raw(-1)),
        stdout: out.stdout.into_bytes(),
        stderr: out.stderr.into_bytes(),
    }
}

const SMALL: &[&str] = &["--heap-size", "8M", "--reps", "1"];

#[test]
fn compact_json_measures_every_mode_side_by_side() {
    require!(Need::Move);
    let args: Vec<&str> = SMALL
        .iter()
        .copied()
        .chain(["--json", "--workload", "kv"])
        .collect();
    let out = compact(&args, Duration::from_secs(300));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "stderr: {stderr}");
    let records: Vec<Value> = std::str::from_utf8(&out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l:?}: {e}")))
        .collect();
    let types: Vec<&str> = records
        .iter()
        .map(|r| r["type"].as_str().unwrap())
        .collect();
    assert_eq!(types.first(), Some(&"config"));
    assert_eq!(types.last(), Some(&"summary"));
    let of = |t: &str| -> Vec<&Value> {
        records
            .iter()
            .filter(|r| r["type"] == t)
            .map(|r| &r["data"])
            .collect()
    };
    let cycles = of("cycle");
    assert_eq!(
        cycles.len(),
        3 * 2,
        "three modes, one warm-up and one measured cycle each"
    );
    for c in &cycles {
        assert_eq!(c["verified"], true, "{c}");
        assert!(c["compaction_cpu_ns"].as_u64().unwrap() > 0);
        assert!(c["floor_cpu_ns"].as_u64().unwrap() > 0);
        assert!(c["pages"].as_u64().unwrap() > 0);
        let pages = c["pages"].as_u64().unwrap();
        let published =
            c["published_move"].as_u64().unwrap() + c["published_copy"].as_u64().unwrap();
        assert_eq!(published, pages, "every page published once: {c}");
        assert_eq!(
            c["by_compactor"].as_u64().unwrap() + c["by_faults"].as_u64().unwrap(),
            pages
        );
        assert_eq!(c["mmu"].as_array().unwrap().len(), 12);
    }
    let modes = of("mode");
    let names: Vec<&str> = modes.iter().map(|m| m["mode"].as_str().unwrap()).collect();
    assert_eq!(names, ["move", "move-single", "copy"]);
    for m in &modes {
        for key in [
            "compaction_wall_ms",
            "compaction_cpu_ms",
            "vs_floor",
            "flip_pause_us",
            "mark_pause_ms",
        ] {
            assert!(m[key]["median"].as_f64().unwrap() > 0.0, "{key} in {m}");
        }
        assert!(m["vs_copy"]["median"].as_f64().unwrap() > 0.0);
        assert_eq!(m["verified"], true);
    }
    assert_eq!(
        modes[2]["vs_copy"]["median"].as_f64(),
        Some(1.0),
        "COPY against itself"
    );
    let move_cycles: Vec<&&Value> = cycles.iter().filter(|c| c["mode"] == "move").collect();
    assert!(move_cycles
        .iter()
        .all(|c| c["published_copy"].as_u64() == Some(0)
            || c["published_move"].as_u64().unwrap() > 0));
    let summary = of("summary")[0];
    assert_eq!(summary["verified"], true);
    assert_eq!(summary["cycles"], 6);
}

#[test]
fn compact_table_names_every_figure() {
    require!(Need::Move);
    let dir = std::env::temp_dir().join(format!("remap-compact-it-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let chart = dir.join("c.svg");
    let chart_arg = chart.to_str().unwrap();
    let args: Vec<&str> = SMALL
        .iter()
        .copied()
        .chain([
            "--faults",
            "threads",
            "--mutators",
            "2",
            "--chart",
            chart_arg,
        ])
        .collect();
    let out = compact(&args, Duration::from_secs(300));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for row in [
        "compaction thread wall",
        "compaction thread CPU",
        "CPU / COPY",
        "memcpy floor",
        "flip pause",
        "marking pause",
        "stall per fault p99",
        "MMU 10 ms",
        "peak RSS",
        "TLB shootdowns",
        "pages by mutator faults",
        "verified",
    ] {
        assert!(stdout.contains(row), "{row} missing from:\n{stdout}");
    }
    let svg = std::fs::read_to_string(&chart).unwrap();
    assert!(
        svg.contains("MMU") && svg.contains("move-single"),
        "chart lacks series"
    );
    std::fs::remove_dir_all(&dir).ok();
}

fn corrupted(kind: &str) -> Output {
    let args: Vec<&str> = SMALL
        .iter()
        .copied()
        .chain([
            "--publication",
            "move",
            "--json",
            "--inject-corruption",
            kind,
        ])
        .collect();
    compact(&args, Duration::from_secs(300))
}

#[test]
fn compact_a_wrong_byte_exits_1() {
    require!(Need::Move);
    let out = corrupted("wrong-byte");
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("checksum"));
}

#[test]
fn compact_a_dangling_reference_exits_1() {
    require!(Need::Move);
    let out = corrupted("dangling-ref");
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn compact_bad_usage_exits_2() {
    let out = compact(&["--live", "99%"], Duration::from_secs(30));
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn compact_sweep_prints_per_page_costs_for_every_point_and_mode() {
    require!(Need::Move);
    let out = compact(
        &[
            "--sweep",
            "--quick",
            "--sweep-heaps",
            "8M",
            "--sweep-mutators",
            "1,2",
            "--workload",
            "kv",
            "--json",
        ],
        Duration::from_secs(300),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "stderr: {stderr}");
    let records: Vec<Value> = std::str::from_utf8(&out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l:?}: {e}")))
        .collect();
    assert_eq!(records.first().unwrap()["type"], "config");
    assert_eq!(
        records[0]["data"]["points"].as_array().unwrap().len(),
        2,
        "8 MiB with 1 and with 2 mutators"
    );
    let costs: Vec<&Value> = records
        .iter()
        .filter(|r| r["type"] == "page_cost")
        .map(|r| &r["data"])
        .collect();
    assert_eq!(costs.len(), 2 * 2, "two points, move and copy each");
    for c in &costs {
        assert_eq!(c["verified"], true, "{c}");
        assert!(c["pages"].as_u64().unwrap() > 0, "{c}");
        assert!(
            c["cpu_ns_per_page"]["median"].as_f64().unwrap() > 0.0,
            "{c}"
        );
        assert!(
            c["floor_cpu_ns_per_page"]["median"].as_f64().unwrap() > 0.0,
            "{c}"
        );
        assert!(c["vs_floor_cpu"]["median"].as_f64().unwrap() > 0.0, "{c}");
        let share = c["compactor_share"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&share), "{c}");
    }
    let mutators: Vec<u64> = costs
        .iter()
        .map(|c| c["point"]["mutators"].as_u64().unwrap())
        .collect();
    assert_eq!(mutators, [1, 1, 2, 2]);
    for c in costs.iter().filter(|c| c["mode"] == "copy") {
        assert_eq!(c["vs_copy_cpu"]["median"].as_f64(), Some(1.0), "{c}");
    }
    for c in costs.iter().filter(|c| c["mode"] == "move") {
        assert!(c["vs_copy_cpu"]["median"].as_f64().unwrap() > 0.0, "{c}");
    }
    let summary = &records.last().unwrap();
    assert_eq!(summary["type"], "summary");
    assert_eq!(summary["data"]["verified"], true);
    assert_eq!(summary["data"]["points"], 2);
}

#[test]
fn compact_sweep_table_has_one_row_per_point_and_mode() {
    require!(Need::Move);
    let out = compact(
        &[
            "--sweep",
            "--quick",
            "--sweep-heaps",
            "8M",
            "--sweep-mutators",
            "1",
        ],
        Duration::from_secs(300),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    for column in ["CPU ns/page", "CPU / COPY", "CPU / floor", "by compactor"] {
        assert!(stdout.contains(column), "{column} missing from:\n{stdout}");
    }
    let rows = stdout
        .lines()
        .filter(|l| l.trim_start().starts_with("8 MiB"))
        .count();
    assert_eq!(rows, 2, "move and copy at 8 MiB:\n{stdout}");
}

/// `remap bench`'s compaction section (here, not in the bench's own test binary: it drives whole
/// compaction cycles, which must not run beside the tests that count MOVEs exactly).
#[test]
fn bench_compaction_section_reports_every_mode_against_copy_and_the_floor() {
    require!(Need::Move);
    let dir = std::env::temp_dir().join(format!("remap-bench-compaction-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let chart = dir.join("bench.svg");
    let out = test_support::child::output_within(
        Command::new(env!("CARGO_BIN_EXE_remap"))
            .args([
                "bench",
                "--quick",
                "--only",
                "compaction",
                "--json",
                "--chart",
            ])
            .arg(&chart),
        Duration::from_secs(300),
    );
    let code = out.status.and_then(|s| s.code());
    assert_eq!(code, Some(0), "stderr: {}", out.stderr);
    let records: Vec<Value> = out
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l:?}: {e}")))
        .collect();
    let figures: Vec<&Value> = records
        .iter()
        .filter(|r| r["type"] == "compaction")
        .map(|r| &r["data"])
        .collect();
    let modes: Vec<&str> = figures
        .iter()
        .map(|f| f["mode"].as_str().unwrap())
        .collect();
    assert_eq!(modes, ["move", "move-single", "copy"]);
    for f in &figures {
        assert_eq!(f["verified"], true, "{f}");
        assert!(
            f["compaction_cpu_ms"]["median"].as_f64().unwrap() > 0.0,
            "{f}"
        );
        assert!(f["vs_floor_cpu"]["median"].as_f64().unwrap() > 0.0, "{f}");
        assert!(
            f["cpu_ns_per_page"]["median"].as_f64().unwrap() > 0.0,
            "{f}"
        );
        assert!(f["vs_copy_cpu"]["median"].as_f64().unwrap() > 0.0, "{f}");
    }
    assert_eq!(figures[2]["vs_copy_cpu"]["median"].as_f64(), Some(1.0));
    let summary = &records.last().unwrap()["data"];
    assert_eq!(summary["failures"], 0, "{summary}");
    assert_eq!(summary["measurements"], 0, "no bulk figure was asked for");
    let svg = std::fs::read_to_string(&chart).unwrap();
    assert!(
        svg.contains("CPU / COPY"),
        "the chart lacks the compaction row"
    );
    std::fs::remove_dir_all(&dir).ok();
}
