//! `remap bench --quick --json --chart FILE`: the run finishes, stdout is JSON Lines only, every
//! record carries its fields, every measured figure verified, and the chart names every method.

use std::process::Command;

use test_support::{require, Need};

#[test]
fn quick_json_run_reports_every_method_and_writes_the_chart() {
    require!(Need::Move);
    let dir = std::env::temp_dir().join(format!("remap-bench-it-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let chart = dir.join("chart.svg");
    let started = std::time::Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_remap"))
        .args(["bench", "--quick", "--reps", "2", "--json", "--chart"])
        .arg(&chart)
        .output()
        .expect("running remap bench");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "stderr:\n{stderr}");
    assert!(
        started.elapsed().as_secs() < 30,
        "--quick took {:?}",
        started.elapsed()
    );
    assert!(
        stderr.contains("chart: "),
        "chart path goes to stderr with --json: {stderr}"
    );

    let stdout = String::from_utf8(out.stdout).unwrap();
    let records: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l:?}: {e}")))
        .collect();
    let types: Vec<&str> = records
        .iter()
        .map(|r| r["type"].as_str().unwrap())
        .collect();
    assert_eq!(types.first(), Some(&"config"));
    assert_eq!(types.last(), Some(&"summary"));
    assert_eq!(types.iter().filter(|t| **t == "config").count(), 1);
    assert_eq!(types.iter().filter(|t| **t == "summary").count(), 1);

    let config = &records[0]["data"];
    for key in [
        "kernel",
        "arch",
        "cpu_model",
        "cores",
        "page_size",
        "thp_mode",
        "swap_on",
        "mem_total_bytes",
    ] {
        assert!(
            !config["machine"][key].is_null(),
            "machine.{key} missing: {config}"
        );
    }
    for key in [
        "size_bytes",
        "reps",
        "fault_reps",
        "warmup",
        "chunks",
        "methods",
        "quick",
        "seed",
    ] {
        assert!(!config[key].is_null(), "config.{key} missing");
    }

    let measurements: Vec<&serde_json::Value> = records
        .iter()
        .filter(|r| r["type"] == "measurement")
        .map(|r| &r["data"])
        .collect();
    assert!(!measurements.is_empty());
    for m in &measurements {
        for key in [
            "method",
            "chunk_bytes",
            "thp",
            "interference",
            "bytes",
            "reps",
            "time_ns",
            "gb_per_s",
            "ns_per_page",
            "ioctls",
            "vs_raw",
            "vs_memcpy",
            "vs_copy",
            "verified",
        ] {
            assert!(m.get(key).is_some(), "measurement.{key} missing: {m}");
        }
        assert_eq!(m["verified"], true, "{m}");
        assert!(m["gb_per_s"].as_f64().unwrap() > 0.0, "{m}");
        assert!(m["time_ns"]["min"].as_f64() <= m["time_ns"]["max"].as_f64());
    }
    let methods: std::collections::BTreeSet<&str> = measurements
        .iter()
        .map(|m| m["method"].as_str().unwrap())
        .collect();
    for expected in [
        "move-raw",
        "copy",
        "memcpy-prefaulted",
        "memcpy-fresh",
        "mremap",
    ] {
        assert!(
            methods.contains(expected),
            "{expected} not measured: {methods:?}"
        );
    }
    // Ratios are computed in the run: move-raw against itself is exactly 1.
    let raw = measurements
        .iter()
        .find(|m| m["method"] == "move-raw")
        .unwrap();
    assert_eq!(raw["vs_raw"].as_f64(), Some(1.0));

    let faults: Vec<&serde_json::Value> = records
        .iter()
        .filter(|r| r["type"] == "fault")
        .map(|r| &r["data"])
        .collect();
    assert!(faults.iter().any(|f| f["method"] == "raw-loop"));
    for f in &faults {
        for key in [
            "handlers",
            "mutators",
            "pages",
            "faults",
            "p50_ns",
            "p99_ns",
            "p999_ns",
            "faults_per_s",
        ] {
            assert!(f.get(key).is_some(), "fault.{key} missing: {f}");
        }
        assert_eq!(f["verified"], true, "{f}");
        assert!(f["p50_ns"].as_f64().unwrap() <= f["p999_ns"].as_f64().unwrap());
    }
    let summary = &records.last().unwrap()["data"];
    assert_eq!(summary["failures"], 0);
    assert_eq!(
        summary["measurements"].as_u64(),
        Some(measurements.len() as u64)
    );

    let svg = std::fs::read_to_string(&chart).expect("chart written");
    assert!(svg.contains("<svg"), "not an SVG");
    assert!(svg.trim_end().ends_with("</svg>"), "SVG not closed");
    for method in &methods {
        assert!(
            svg.contains(&format!("{method} THP off")),
            "legend lacks {method}"
        );
    }
    assert!(
        svg.contains("raw-loop 1h/1m"),
        "legend lacks the fault series"
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn bad_size_exits_2() {
    require!(Need::Move);
    let out = Command::new(env!("CARGO_BIN_EXE_remap"))
        .args(["bench", "--size", "3M", "--json"])
        .output()
        .expect("running remap bench");
    assert_eq!(out.status.code(), Some(2));
    assert!(
        out.stdout.is_empty(),
        "nothing on stdout when the run cannot start"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("2 MiB"));
}
