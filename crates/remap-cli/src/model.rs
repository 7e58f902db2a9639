//! `remap model`: model-check every version and mutation of the rmap / UFFDIO_MOVE protocol.
//!
//! The checking lives in `remap-model`; this module only selects configurations and renders the
//! reports.
//!
//! # JSON output (`--json`)
//!
//! JSON Lines, each `{"type": ..., "data": ...}`:
//! - `config`: one per configuration before it runs: `remap_model::Config` plus the derived
//!   `protocol` switches and the `bounds`.
//! - `result`: one per configuration: a `remap_model::Report`: per invariant `expected`
//!   (`holds`, `broken`, `broken-under-weak-memory`), `actual`, the outcome per memory model
//!   (`sc` from the explorer, `wm` from loom or `null` when loom did not check that cell),
//!   `found_by` (`explorer` or `loom`: the checker whose counterexample is shown), `matches` and,
//!   unless `--no-trace`, the `trace` (numbered steps; for loom a log of one C11 execution with
//!   a `note` on how to replay it); `weak_memory` holds the loom run (`preemption_bound`,
//!   `executions`, `complete`, `elapsed_ms`) or `null`.
//! - `summary`: last line: `configs`, `matching`, `mismatching`, `incomplete`, `broken_cells`,
//!   `broken_cells_wm` (found only under the weak memory model) and `elapsed_total` (seconds).
//!
//! ```text
//! {"type":"config","data":{"name":"v2","version":"V2",...}}
//! {"type":"result","data":{"config":{...},"states":1097,"invariants":[...],"matches_expected":true}}
//! {"type":"summary","data":{"configs":27,"matching":27,"mismatching":0,"incomplete":0,"broken_cells":29,"broken_cells_wm":1,"elapsed_total":0.4}}
//! ```

use std::fmt::Write as _;
use std::io::Write as _;
use std::time::Instant;

use anyhow::bail;
use remap_model::{
    expected_table, run_config, Bounds, Checker, Expect, Expected, Invariant, InvariantResult,
    Outcome, Report,
};

use crate::output::json_line;
use crate::Output;

/// Options of `remap model`.
#[derive(Debug, clap::Args)]
pub(crate) struct ModelArgs {
    /// Run only these configurations (repeat or comma-separate), e.g. `v2,mut-prefix-pin`.
    #[arg(long, value_name = "NAME", value_delimiter = ',')]
    only: Vec<String>,

    /// Bound the explorer to N preemptions (default: unbounded, every interleaving).
    #[arg(long, value_name = "N")]
    max_preemptions: Option<u8>,

    /// Give up on a configuration after this many distinct states (it then counts as a mismatch).
    #[arg(long, value_name = "N", default_value_t = 4_000_000)]
    max_states: usize,

    /// loom preemption bound for the weak-memory check (configurations marked `wm`).
    #[arg(long, value_name = "N", default_value_t = remap_model::weak_memory::DEFAULT_LOOM_PREEMPTIONS)]
    loom_preemptions: usize,

    /// Do not print the counterexample traces.
    #[arg(long)]
    no_trace: bool,

    /// List the configurations and their expected rows, then exit.
    #[arg(long)]
    list: bool,
}

/// The `summary` record of `--json`.
#[derive(Debug, serde::Serialize)]
struct Summary {
    configs: usize,
    matching: usize,
    mismatching: usize,
    incomplete: usize,
    broken_cells: usize,
    broken_cells_wm: usize,
    elapsed_total: f64,
}

/// The `config` record of `--json`.
#[derive(Debug, serde::Serialize)]
struct ConfigRecord<'a> {
    #[serde(flatten)]
    config: &'a remap_model::Config,
    protocol: remap_model::Protocol,
    bounds: Bounds,
}

/// Runs `remap model`.
pub(crate) fn run(args: &ModelArgs, out: Output) -> anyhow::Result<crate::Outcome> {
    let rows = select(&args.only)?;
    let bounds = Bounds {
        max_preemptions: args.max_preemptions,
        max_states: args.max_states,
        loom_preemptions: args.loom_preemptions,
    };
    let stdout = std::io::stdout();
    let mut w = stdout.lock();
    if args.list {
        if out.json {
            for row in &rows {
                writeln!(w, "{}", json_line("expected", row)?)?;
            }
        } else {
            w.write_all(render_list(&rows).as_bytes())?;
        }
        return Ok(crate::Outcome::Clean);
    }
    let start = Instant::now();
    let mut reports = Vec::with_capacity(rows.len());
    for row in &rows {
        if out.json {
            let rec = ConfigRecord {
                config: &row.config,
                protocol: row.config.protocol(),
                bounds,
            };
            writeln!(w, "{}", json_line("config", &rec)?)?;
        }
        if out.progress {
            eprintln!("checking {} ...", row.config.name);
        }
        let mut report = run_config(row, &bounds);
        if args.no_trace {
            for inv in &mut report.invariants {
                inv.trace = None;
            }
        }
        if out.json {
            writeln!(w, "{}", json_line("result", &report)?)?;
        }
        reports.push(report);
    }
    let summary = summarize(&reports, start.elapsed().as_secs_f64());
    if out.json {
        writeln!(w, "{}", json_line("summary", &summary)?)?;
    } else {
        w.write_all(render_human(&reports, &bounds, !args.no_trace, &summary).as_bytes())?;
    }
    w.flush()?;
    Ok(outcome(&summary))
}

/// The expected-table rows selected by `--only` (all when empty).
fn select(only: &[String]) -> anyhow::Result<Vec<Expected>> {
    let table = expected_table();
    if only.is_empty() {
        return Ok(table);
    }
    for name in only {
        if !table.iter().any(|e| &e.config.name == name) {
            let names: Vec<&str> = table.iter().map(|e| e.config.name.as_str()).collect();
            bail!(
                "no configuration named {name:?} (known: {})",
                names.join(", ")
            );
        }
    }
    Ok(table
        .into_iter()
        .filter(|e| only.contains(&e.config.name))
        .collect())
}

fn summarize(reports: &[Report], elapsed: f64) -> Summary {
    let matching = reports.iter().filter(|r| r.matches_expected).count();
    Summary {
        configs: reports.len(),
        matching,
        mismatching: reports.len() - matching,
        incomplete: reports.iter().filter(|r| !r.complete).count(),
        broken_cells: reports
            .iter()
            .flat_map(|r| &r.invariants)
            .filter(|i| i.actual == Outcome::Broken)
            .count(),
        broken_cells_wm: reports
            .iter()
            .flat_map(|r| &r.invariants)
            .filter(|i| i.found_by == Some(Checker::Loom))
            .count(),
        elapsed_total: elapsed,
    }
}

/// Clean when every result matches the expected table, found otherwise.
fn outcome(summary: &Summary) -> crate::Outcome {
    crate::Outcome::found_unless(summary.mismatching == 0)
}

/// One table cell: `holds`, `broken` (SC explorer) or `broken(wm)` (only loom, under the weak
/// memory model), `n/a`; a trailing `!` marks a mismatch with the expected table.
fn cell(inv: &InvariantResult) -> String {
    let text = match (inv.expected, inv.actual, inv.found_by) {
        (Expect::NotApplicable, _, _) => "n/a",
        (_, Outcome::Holds, _) => "holds",
        (_, Outcome::Broken, Some(Checker::Loom)) => "broken(wm)",
        (_, Outcome::Broken, _) => "broken",
    };
    if inv.matches {
        text.to_string()
    } else {
        format!("{text}!")
    }
}

const CELL: usize = 10;

fn header(s: &mut String) {
    let _ = write!(s, "{:<24}", "configuration");
    for inv in Invariant::ALL {
        let _ = write!(s, " {:>CELL$}", inv.number());
    }
    let _ = writeln!(s, " {:>7} {:>6} {:>6}  expected", "states", "loom", "ms");
}

fn legend(s: &mut String) {
    let _ = writeln!(s, "\ninvariants (docs/rmap-protocol.md section 4):");
    for inv in Invariant::ALL {
        let _ = writeln!(
            s,
            "  {:>2} {:<18} {:?}: {}",
            inv.number(),
            inv.short(),
            inv,
            inv.kernel_function()
        );
    }
    let _ = writeln!(
        s,
        "  (8 is strict for V3 and for *-strict/mut-index-first (no miss at all); for V0-V2 and *-fork-aba"
    );
    let _ = writeln!(
        s,
        "   it is what the kernel promises: no miss unless the walk overlaps another thread's PTL section"
    );
    let _ = writeln!(
        s,
        "   (happens-before form under loom); v2-index-window/v2-pvmw-sync check the model's earlier form,"
    );
    let _ = writeln!(
        s,
        "   a miss only for an index read between the two stores; a walk stops after pra.mapcount finds;"
    );
    let _ = writeln!(
        s,
        "   broken = found by the SC explorer (shortest trace); broken(wm) = holds under SC, found"
    );
    let _ = writeln!(
        s,
        "   by loom under the weak memory model (Relaxed WRITE_ONCE/READ_ONCE, Acquire/Release rwsem);"
    );
    let _ = writeln!(
        s,
        "   loom = loom executions for the configurations that also run it (checks 3 and 8), - otherwise;"
    );
    let _ = writeln!(
        s,
        "   a trailing ! marks a cell that differs from the expected table)"
    );
}

/// The human table, then a trace per broken cell, then the summary.
fn render_human(reports: &[Report], bounds: &Bounds, traces: bool, summary: &Summary) -> String {
    let mut s = String::new();
    let pre = bounds
        .max_preemptions
        .map_or_else(|| "unbounded".to_string(), |p| p.to_string());
    let _ = writeln!(
        s,
        "remap model: {} configuration(s); explorer (SC): preemptions {pre}, at most {} states each; \
         loom (wm): preemption bound {}\n",
        reports.len(),
        bounds.max_states,
        bounds.loom_preemptions
    );
    header(&mut s);
    for r in reports {
        let _ = write!(s, "{:<24}", r.config.name);
        for inv in &r.invariants {
            let _ = write!(s, " {:>CELL$}", cell(inv));
        }
        let loom = r
            .weak_memory
            .as_ref()
            .map_or_else(|| "-".to_string(), |w| w.executions.to_string());
        let verdict = match (r.matches_expected, r.complete) {
            (true, _) => "yes",
            (false, false) => "NO (incomplete)",
            (false, true) => "NO",
        };
        let _ = writeln!(
            s,
            " {:>7} {:>6} {:>6}  {verdict}",
            r.states, loom, r.elapsed_ms
        );
    }
    for r in reports {
        if let Some(err) = r.weak_memory.as_ref().and_then(|w| w.error.as_ref()) {
            let _ = writeln!(s, "\n{}: weak-memory check not run: {err}", r.config.name);
        }
    }
    legend(&mut s);
    if traces {
        for r in reports {
            for inv in &r.invariants {
                if let Some(t) = &inv.trace {
                    let kind = match t.checker {
                        Checker::Explorer => "shortest trace (SC explorer)",
                        Checker::Loom => "weak memory (loom execution log)",
                    };
                    let _ = writeln!(
                        s,
                        "\n== {}: invariant {} broken ({}), {kind}, {} steps ==",
                        r.config.name,
                        inv.invariant,
                        inv.kernel_function,
                        t.steps.len()
                    );
                    let _ = writeln!(s, "   {}", r.config.description);
                    s.push_str(&t.render());
                }
            }
        }
    }
    let _ = writeln!(
        s,
        "\n{} configuration(s): {} match the expected table, {} do not ({} incomplete); {} broken cell(s), {} only under weak memory; {:.2}s",
        summary.configs,
        summary.matching,
        summary.mismatching,
        summary.incomplete,
        summary.broken_cells,
        summary.broken_cells_wm,
        summary.elapsed_total
    );
    s
}

fn render_list(rows: &[Expected]) -> String {
    let mut s = String::new();
    for row in rows {
        let broken: Vec<String> = Invariant::ALL
            .into_iter()
            .filter_map(|i| match row.get(i) {
                Expect::Broken => Some(i.number().to_string()),
                Expect::BrokenUnderWeakMemory => Some(format!("{}(wm)", i.number())),
                Expect::Holds | Expect::NotApplicable => None,
            })
            .collect();
        let _ = writeln!(
            s,
            "{:<24} expect broken [{}]  {}",
            row.config.name,
            broken.join(","),
            row.config.description
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run_rows(names: &[&str]) -> Vec<Report> {
        let only: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        select(&only)
            .unwrap()
            .iter()
            .map(|r| run_config(r, &Bounds::default()))
            .collect()
    }

    #[test]
    fn whole_table_matches_and_exits_zero() {
        let reports: Vec<Report> = expected_table()
            .iter()
            .map(|r| run_config(r, &Bounds::default()))
            .collect();
        let summary = summarize(&reports, 0.0);
        assert_eq!(
            summary.mismatching,
            0,
            "{}",
            render_human(&reports, &Bounds::default(), false, &summary)
        );
        assert_eq!(outcome(&summary), crate::Outcome::Clean);
    }

    #[test]
    fn a_wrong_expectation_exits_one() {
        let mut row = select(&["v0".to_string()]).unwrap().remove(0);
        row.expect = [Expect::Holds; 9];
        let report = run_config(&row, &Bounds::default());
        let summary = summarize(&[report], 0.0);
        assert_eq!(summary.mismatching, 1);
        assert_eq!(outcome(&summary), crate::Outcome::Found);
    }

    #[test]
    fn table_marks_the_weak_memory_cell() {
        let reports = run_rows(&["v2", "mut-index-first"]);
        let summary = summarize(&reports, 0.0);
        assert_eq!(summary.mismatching, 0);
        assert_eq!(summary.broken_cells_wm, 1);
        let text = render_human(&reports, &Bounds::default(), true, &summary);
        let line = |name: &str| {
            text.lines()
                .find(|l| l.starts_with(&format!("{name} ")))
                .unwrap_or_else(|| panic!("no row {name} in\n{text}"))
                .to_string()
        };
        let mif = line("mut-index-first");
        assert!(mif.contains("broken(wm)"), "{mif}");
        assert!(mif.ends_with("yes"), "{mif}");
        // The 8th cell is the weak-memory one.
        let cells: Vec<&str> = mif.split_whitespace().collect();
        assert_eq!(cells[8], "broken(wm)", "{mif}");
        let v2 = line("v2");
        assert!(!v2.contains("broken"), "{v2}");
        assert!(
            text.contains("== mut-index-first: invariant 8 completeness broken"),
            "{text}"
        );
        assert!(text.contains("weak memory (loom execution log)"), "{text}");
        assert!(text.contains("replay: loom execution #"), "{text}");
        // --json carries the checker per cell.
        let json: serde_json::Value =
            serde_json::from_str(&json_line("result", &reports[1]).unwrap()).unwrap();
        let inv8 = &json["data"]["invariants"][7];
        assert_eq!(inv8["found_by"], "loom");
        assert_eq!(inv8["sc"], "holds");
        assert_eq!(inv8["wm"], "broken");
        assert_eq!(inv8["expected"], "broken-under-weak-memory");
        assert_eq!(json["data"]["invariants"][0]["wm"], serde_json::Value::Null);
        assert!(json["data"]["weak_memory"]["executions"].as_u64().unwrap() > 0);
    }

    #[test]
    fn table_has_the_fidelity_rows_with_kernel_readable_traces() {
        let names = [
            "v2-index-window",
            "v2-pvmw-sync",
            "v2-fork-aba",
            "v3-batch",
            "v3-fork-aba",
            "mut-walker-no-ref",
            "fix-s6-root-recheck",
        ];
        let reports = run_rows(&names);
        let summary = summarize(&reports, 0.0);
        assert_eq!(summary.mismatching, 0);
        let text = render_human(&reports, &Bounds::default(), true, &summary);
        let line = |name: &str| {
            text.lines()
                .find(|l| l.starts_with(&format!("{name} ")))
                .unwrap_or_else(|| panic!("no row {name} in\n{text}"))
                .split_whitespace()
                .map(str::to_string)
                .collect::<Vec<_>>()
        };
        // Change 1: the lockless map_pte breaks the earlier invariant 8; its sync control holds.
        assert_eq!(line("v2-index-window")[8], "broken");
        assert_eq!(line("v2-pvmw-sync")[8], "holds");
        // Change 2: the fork/COW ABA is closed by the walker's folio reference, found without it.
        assert!(!line("v2-fork-aba").iter().any(|c| c.starts_with("broken")));
        let nr = line("mut-walker-no-ref");
        assert_eq!(&nr[1..4], ["broken", "holds", "broken"]);
        assert!(!line("fix-s6-root-recheck")
            .iter()
            .any(|c| c.starts_with("broken")));
        assert!(
            text.contains("anon_vma_fork: anon_vma_alloc reuses slot X"),
            "{text}"
        );
        assert!(
            text.contains("map_pte: ptep_get (no PTL) -> none: not mapped here, PTL not taken"),
            "{text}"
        );
        assert!(text.contains("no miss unless the walk overlaps"), "{text}");
    }

    #[test]
    fn unknown_only_is_an_error() {
        assert!(select(&["v9".to_string()]).is_err());
    }

    #[test]
    fn human_output_has_table_and_kernel_trace() {
        let reports = run_rows(&["v0", "v2"]);
        let summary = summarize(&reports, 0.0);
        let text = render_human(&reports, &Bounds::default(), true, &summary);
        assert!(text.contains("configuration"));
        assert!(text.contains("v0"));
        assert!(text.contains("== v0: invariant 2 no-freed-walk"));
        assert!(
            text.contains("A  S5 down_read_trylock(root X) -> ok"),
            "{text}"
        );
        assert!(text.contains("anon_vma_free"));
        assert!(!text.contains("== v2:"));
    }

    #[test]
    fn json_lines_parse_with_envelope() {
        let reports = run_rows(&["v1"]);
        let summary = summarize(&reports, 0.5);
        let rec = ConfigRecord {
            config: &reports[0].config,
            protocol: reports[0].config.protocol(),
            bounds: Bounds::default(),
        };
        let lines = [
            json_line("config", &rec).unwrap(),
            json_line("result", &reports[0]).unwrap(),
            json_line("summary", &summary).unwrap(),
        ];
        let types: Vec<String> = lines
            .iter()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                assert!(v["data"].is_object());
                v["type"].as_str().unwrap().to_string()
            })
            .collect();
        assert_eq!(types, ["config", "result", "summary"]);
        let result: serde_json::Value = serde_json::from_str(&lines[1]).unwrap();
        assert_eq!(result["data"]["matches_expected"], true);
        let inv2 = &result["data"]["invariants"][1];
        assert_eq!(inv2["actual"], "broken");
        assert!(inv2["trace"]["steps"].as_array().unwrap().len() > 10);
        let summary: serde_json::Value = serde_json::from_str(&lines[2]).unwrap();
        assert_eq!(summary["data"]["elapsed_total"], 0.5);
    }
}
